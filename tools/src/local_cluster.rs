//! Node processes on loopback, for `smlog demo --cluster` and `smlog bench cluster`: each
//! node's directory made as `smlog cluster init` makes it, the node run as a child `smlog
//! cluster serve`, the others added as `smlog cluster add` adds them; nodes SIGKILLed and
//! started again; and a writer that sends commands to the leader, following "not the
//! leader" answers and trying again under the same request key.

use std::path::{Path, PathBuf};
use std::process::{Child, Command as Process, Stdio};
use std::time::{Duration, Instant};

use smlog_cluster::auth::ClusterKey;
use smlog_cluster::node_dir::{read_key, NodeDir};
pub use smlog_cluster::tcp::Writer;
use smlog_cluster::wire::StatusReport;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// Node processes serving one volume, stopped (SIGKILL) when dropped.
pub struct LocalCluster {
    exe: PathBuf,
    /// Each node's directory (node `i + 1` in `dirs[i]`).
    pub dirs: Vec<PathBuf>,
    /// Each node's address.
    pub addrs: Vec<String>,
    /// The cluster key.
    pub key: ClusterKey,
    children: Vec<Option<Child>>,
}

impl std::fmt::Debug for LocalCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalCluster")
            .field("dirs", &self.dirs)
            .field("addrs", &self.addrs)
            .finish_non_exhaustive()
    }
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

impl LocalCluster {
    /// Makes `nodes` node directories under `root` (`n1`, `n2`, ...), starts them all, and
    /// adds every node after the first as a voter.
    pub async fn create(root: &Path, nodes: usize) -> Result<LocalCluster> {
        let mut dirs: Vec<PathBuf> = Vec::new();
        let mut addrs = Vec::new();
        for i in 0..nodes {
            let dir = root.join(format!("n{}", i + 1));
            let addr = format!("127.0.0.1:{}", free_port()?);
            let key = if i == 0 {
                None
            } else {
                Some(read_key(&dirs[0].join("KEY"))?)
            };
            NodeDir::init(&dir, i as u64 + 1, &addr, key)?;
            dirs.push(dir);
            addrs.push(addr);
        }
        let key = read_key(&dirs[0].join("KEY"))?;
        let mut cluster = LocalCluster {
            exe: std::env::current_exe()?,
            dirs,
            addrs,
            key,
            children: (0..nodes).map(|_| None).collect(),
        };
        for i in 0..nodes {
            cluster.serve(i)?;
        }
        cluster.leader().await?;
        for i in 1..nodes {
            let addr = cluster.addrs[i].clone();
            crate::cluster::add_voter(&cluster.addrs[0], &cluster.key, i as u64 + 1, &addr).await?;
        }
        Ok(cluster)
    }

    /// Starts node `i`'s process. It dies with the thread that starts it (call from the
    /// thread that owns the cluster): a demo or bench killed, or cut off by a closed pipe,
    /// leaves no node running.
    pub fn serve(&mut self, i: usize) -> Result<()> {
        use std::os::unix::process::CommandExt;
        let parent = std::process::id() as libc::pid_t;
        let mut command = Process::new(&self.exe);
        command
            .args(["cluster", "serve"])
            .arg(&self.dirs[i])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // SAFETY: between fork and exec the child calls only prctl, getppid and _exit,
        // which are async-signal-safe, and touches no memory of the parent's.
        unsafe {
            command.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // The parent died before the request took: go now.
                if libc::getppid() != parent {
                    libc::_exit(1);
                }
                Ok(())
            });
        }
        let child = command.spawn()?;
        self.children[i] = Some(child);
        Ok(())
    }

    /// SIGKILLs node `i`'s process.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.children[i].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops every node cleanly (SIGTERM: each syncs and checkpoints its volume).
    pub fn stop_all(&mut self) {
        for child in self.children.iter_mut().filter_map(Option::take) {
            let mut child = child;
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let _ = child.wait();
        }
    }

    /// What node `i` sees, if it answers.
    pub async fn status(&self, i: usize) -> Option<StatusReport> {
        crate::cluster::report(&self.addrs[i], &self.key).await.ok()
    }

    /// The leading node's index, waiting up to 20 s for one.
    pub async fn leader(&self) -> Result<usize> {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            for i in 0..self.addrs.len() {
                if let Some(report) = self.status(i).await {
                    if report.state == "Leader" {
                        return Ok((report.id - 1) as usize);
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err("no node leads after 20 s".into())
    }

    /// Waits until every node applied what the leader has (up to 60 s).
    pub async fn settle(&self) -> Result<()> {
        let lead = self.leader().await?;
        let last = self
            .status(lead)
            .await
            .and_then(|r| r.last_log_index)
            .ok_or("the leader reports no log")?;
        for i in 0..self.addrs.len() {
            self.wait_applied(i, last, Duration::from_secs(60)).await?;
        }
        Ok(())
    }

    /// Waits until node `i` applied entry `index`.
    pub async fn wait_applied(&self, i: usize, index: u64, within: Duration) -> Result<()> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if self.status(i).await.and_then(|r| r.applied) >= Some(index) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Err(format!(
            "node {} did not apply entry {index} within {within:?}",
            i + 1
        )
        .into())
    }

    /// A writer reaching the cluster through its nodes.
    pub fn writer(&self) -> Writer {
        Writer::new(self.addrs.clone(), self.key.clone())
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        for i in 0..self.children.len() {
            self.kill(i);
        }
    }
}
