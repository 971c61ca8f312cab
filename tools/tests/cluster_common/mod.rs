//! Cluster node processes for the tests: node directories made with `smlog cluster init`,
//! nodes run with `smlog cluster serve` (or by a mount), grown with `smlog cluster add`.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command as Process, Stdio};
use std::time::Duration;

use smlog_cluster::auth::ClusterKey;
use smlog_cluster::node_dir::read_key;
use smlog_cluster::tcp::Client;
use smlog_cluster::wire::{Request, Response, StatusReport};
use smlog_recovery::OpenOptions;

pub const SMLOG: &str = env!("CARGO_BIN_EXE_smlog");

pub fn smlog(args: &[&str]) -> String {
    let out = Process::new(SMLOG).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "smlog {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub struct Nodes {
    pub dirs: Vec<PathBuf>,
    pub addrs: Vec<String>,
    pub children: Vec<Option<Child>>,
    /// The cluster's KEY file.
    pub key_file: PathBuf,
    /// The cluster key.
    pub key: ClusterKey,
}

impl Nodes {
    /// Makes `n` node directories under `root` (`n1`, `n2`, ...) with `smlog cluster
    /// init`, node 1 starting the cluster and the others joining its key. Nothing runs yet.
    pub fn init(root: &Path, n: usize) -> Nodes {
        let addrs: Vec<String> = (0..n)
            .map(|_| format!("127.0.0.1:{}", free_port()))
            .collect();
        let dirs: Vec<PathBuf> = (1..=n).map(|i| root.join(format!("n{i}"))).collect();
        let key_file = dirs[0].join("KEY");
        for i in 0..n {
            let id = (i + 1).to_string();
            let dir = dirs[i].to_str().unwrap();
            let mut args = vec!["cluster", "init", dir, "--id", &id, "--listen", &addrs[i]];
            if i > 0 {
                args.extend(["--key", key_file.to_str().unwrap()]);
            }
            smlog(&args);
        }
        let key = read_key(&key_file).unwrap();
        Nodes {
            dirs,
            addrs,
            children: (0..n).map(|_| None).collect(),
            key_file,
            key,
        }
    }

    /// `smlog cluster add` of node `i` (running), through node 1 (running).
    pub fn add(&self, i: usize) {
        let id = (i + 1).to_string();
        let key = self.key_file.to_str().unwrap();
        let (addr, to) = (&self.addrs[i], &self.addrs[0]);
        smlog(&[
            "cluster", "add", "--id", &id, "--addr", addr, "--to", to, "--key", key,
        ]);
    }

    pub fn serve(&mut self, i: usize) {
        let child = Process::new(SMLOG)
            .args(["cluster", "serve"])
            .arg(&self.dirs[i])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.children[i] = Some(child);
    }

    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.children[i].take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    pub fn stop_all(&mut self) {
        for child in self.children.iter_mut().filter_map(Option::take) {
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            )
            .unwrap();
            let mut child = child;
            child.wait().unwrap();
        }
    }
}

impl Drop for Nodes {
    fn drop(&mut self) {
        for i in 0..self.children.len() {
            self.kill(i);
        }
    }
}

/// What the node at `addr` sees, if it answers.
pub async fn status(addr: &str, key: &ClusterKey) -> Option<StatusReport> {
    let mut client = Client::connect(addr, key).await.ok()?;
    match client.call(&Request::Status).await.ok()? {
        Response::Status(report) => Some(report),
        _ => None,
    }
}

/// The leading node's index, waiting up to 10 s for one.
pub async fn leader(nodes: &Nodes, key: &ClusterKey) -> usize {
    for _ in 0..200 {
        for addr in &nodes.addrs {
            if let Some(report) = status(addr, key).await {
                if report.state == "Leader" {
                    return (report.id - 1) as usize;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no leader");
}

/// Node `dir`'s volume, recovered (the node stopped).
pub fn volume(dir: &Path) -> smlog::Engine<Box<dyn smlog::io::Device>> {
    let options = OpenOptions::default();
    smlog_recovery::open(&dir.join("volume"), options)
        .unwrap()
        .0
}
