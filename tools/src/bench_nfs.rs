//! `smlog bench nfs`: `smlog nfs` against NFS-Ganesha (its VFS back end on a directory of
//! the host file system), through the same NFSv3 client (`nfs3_client`, in this process),
//! interleaved run by run; medians.
//!
//! Ganesha registers its programs with rpcbind and will not start without it; rpcbind
//! listens on every address, so the bench answers Ganesha's registrations itself on
//! rpcbind's local socket (`/run/rpcbind.sock`, a unix socket: nothing on the network),
//! when no rpcbind runs.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use nfs3_client::nfs3_types::nfs3::*;
use nfs3_client::nfs3_types::rpc::{auth_unix, opaque_auth};
use nfs3_client::nfs3_types::xdr_codec::Opaque;
use nfs3_client::tokio::{TokioConnector, TokioIo};
use nfs3_client::{Nfs3Connection, Nfs3ConnectionBuilder};

/// Errors cross the bench's tasks.
type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;
type Client = Nfs3Connection<TokioIo<tokio::net::TcpStream>>;

const RPCBIND_SOCKET: &str = "/run/rpcbind.sock";

/// What `bench nfs` measures.
#[derive(Debug, Clone, Copy)]
pub struct NfsBenchOptions {
    /// Megabytes of the sequential write and read.
    pub megabytes: usize,
    /// Concurrent clients (connections) for creates and metadata.
    pub clients: usize,
    /// Seconds per create and metadata measurement.
    pub seconds: f64,
    /// Runs of each server (interleaved).
    pub runs: usize,
}

/// One of a run's figures.
type Figure = fn(&Figures) -> f64;

/// One server's figures of one run.
#[derive(Debug, Clone, Copy, Default)]
struct Figures {
    write_mbps: f64,
    read_mbps: f64,
    creates: f64,
    metadata: f64,
}

/// A server under test.
struct Served {
    name: &'static str,
    child: Child,
    port: u16,
    mount_port: u16,
    export: String,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the benchmark in a scratch directory under `dir`.
pub fn run(options: NfsBenchOptions, dir: &Path, json: bool) -> Result<ExitCode> {
    if !program_exists("ganesha.nfsd") {
        eprintln!(
            "smlog bench nfs: ganesha.nfsd is missing (apt-get install -y nfs-ganesha \
             nfs-ganesha-vfs): no baseline to measure against"
        );
        return Ok(ExitCode::from(2));
    }
    let scratch = tempfile::Builder::new()
        .prefix("smlog-bench-nfs-")
        .tempdir_in(dir)?;
    let _rpcbind = RpcbindStub::start()?;
    let smlog = start_smlog(&scratch.path().join("smlog"))?;
    let ganesha = start_ganesha(scratch.path())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let mut results: Vec<(&'static str, Vec<Figures>)> =
        vec![(smlog.name, Vec::new()), (ganesha.name, Vec::new())];
    for run in 0..options.runs {
        for (i, served) in [&smlog, &ganesha].into_iter().enumerate() {
            let figures = runtime.block_on(measure(served, options, run))?;
            eprintln!(
                "run {} {}: write {:.0} MB/s, read {:.0} MB/s, creates {:.0}/s, metadata {:.0}/s",
                run + 1,
                served.name,
                figures.write_mbps,
                figures.read_mbps,
                figures.creates,
                figures.metadata
            );
            results[i].1.push(figures);
        }
    }
    let med = |i: usize, f: Figure| median(results[i].1.iter().map(f).collect());
    let rows: [(&str, Figure); 4] = [
        ("sequential write, MB/s", |f| f.write_mbps),
        ("sequential read, MB/s", |f| f.read_mbps),
        ("creates (create + 4 KiB FILE_SYNC write)/s", |f| f.creates),
        ("metadata (LOOKUP + GETATTR)/s", |f| f.metadata),
    ];
    if json {
        let mut object = serde_json::Map::new();
        for (label, f) in rows {
            object.insert(
                label.to_owned(),
                serde_json::json!({"smlog": med(0, f), "ganesha": med(1, f), "ratio": med(0, f) / med(1, f)}),
            );
        }
        println!("{}", serde_json::Value::Object(object));
    } else {
        println!(
            "medians of {} runs, {} MB sequential, {} clients, {} s per rate",
            options.runs, options.megabytes, options.clients, options.seconds
        );
        println!("| | smlog nfs | NFS-Ganesha (VFS) | ratio |");
        println!("|---|---|---|---|");
        for (label, f) in rows {
            println!(
                "| {label} | {:.0} | {:.0} | {:.2} |",
                med(0, f),
                med(1, f),
                med(0, f) / med(1, f)
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}

fn program_exists(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn start_smlog(dir: &Path) -> Result<Served> {
    let mut child = Command::new(std::env::current_exe()?)
        .arg("nfs")
        .arg(dir)
        .args(["--create", "--listen", "127.0.0.1:0", "--no-root-squash"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let mut line = String::new();
    let stdout = child.stdout.take().ok_or("no stdout")?;
    BufReader::new(stdout).read_line(&mut line)?;
    let port = line
        .trim()
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| format!("smlog nfs said {line:?}"))?;
    Ok(Served {
        name: "smlog nfs",
        child,
        port,
        mount_port: port,
        export: "/".to_owned(),
    })
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn start_ganesha(scratch: &Path) -> Result<Served> {
    let export = scratch.join("ganesha-export");
    std::fs::create_dir_all(&export)?;
    let port = free_port()?;
    // Ganesha serves MOUNT on a port of its own.
    let mount_port = free_port()?;
    let config = scratch.join("ganesha.conf");
    std::fs::write(
        &config,
        format!(
            "NFS_CORE_PARAM {{ Bind_addr = 127.0.0.1; NFS_Port = {port}; MNT_Port = {mount_port}; \
             NFS_Protocols = 3; Enable_NLM = false; Enable_RQUOTA = false; Enable_UDP = false; }}\n\
             NFSV4 {{ Graceless = true; }}\n\
             EXPORT {{ Export_Id = 1; Path = {path}; Pseudo = {path}; Access_Type = RW; \
             Squash = No_Root_Squash; Protocols = 3; Transports = TCP; SecType = sys; \
             FSAL {{ Name = VFS; }} }}\n",
            path = export.display()
        ),
    )?;
    let log: PathBuf = scratch.join("ganesha.log");
    let child = Command::new("ganesha.nfsd")
        .arg("-F")
        .arg("-f")
        .arg(&config)
        .arg("-L")
        .arg(&log)
        .arg("-p")
        .arg(scratch.join("ganesha.pid"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let mut served = Served {
        name: "NFS-Ganesha",
        child,
        port,
        mount_port,
        export: export.display().to_string(),
    };
    // Up when its port answers (it takes a few seconds).
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Some(status) = served.child.try_wait()? {
            let log = std::fs::read_to_string(&log).unwrap_or_default();
            return Err(format!("ganesha.nfsd exited ({status}):\n{log}").into());
        }
        if Instant::now() > deadline {
            return Err("ganesha.nfsd did not listen within 30 s".into());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(served)
}

async fn connect(served: &Served) -> Result<Client> {
    let cred = opaque_auth::auth_unix(&auth_unix {
        stamp: 1,
        machinename: Opaque::owned(b"bench".to_vec()),
        uid: 0,
        gid: 0,
        gids: vec![],
    });
    Ok(
        Nfs3ConnectionBuilder::new(TokioConnector, "127.0.0.1", &served.export)
            .mount_port(served.mount_port)
            .nfs3_port(served.port)
            .connect_from_privileged_port(false)
            .credential(cred)
            .mount()
            .await?,
    )
}

fn name(text: &str) -> filename3<'static> {
    filename3(Opaque::owned(text.as_bytes().to_vec()))
}

fn ok<T, E>(res: Nfs3Result<T, E>, what: &str) -> Result<T> {
    match res {
        Nfs3Result::Ok(ok) => Ok(ok),
        Nfs3Result::Err((status, _)) => Err(format!("{what}: {status}").into()),
    }
}

async fn create(c: &mut Client, dir: &nfs_fh3, file: &str) -> Result<nfs_fh3> {
    let made = c
        .create(&CREATE3args {
            where_: diropargs3 {
                dir: dir.clone(),
                name: name(file),
            },
            how: createhow3::UNCHECKED(sattr3 {
                mode: Nfs3Option::Some(0o644),
                ..sattr3::default()
            }),
        })
        .await?;
    match ok(made, "CREATE")?.obj {
        Nfs3Option::Some(fh) => Ok(fh),
        Nfs3Option::None => Err("CREATE gave no handle".into()),
    }
}

async fn mkdir(c: &mut Client, dir: &nfs_fh3, sub: &str) -> Result<nfs_fh3> {
    let made = c
        .mkdir(&MKDIR3args {
            where_: diropargs3 {
                dir: dir.clone(),
                name: name(sub),
            },
            attributes: sattr3 {
                mode: Nfs3Option::Some(0o755),
                ..sattr3::default()
            },
        })
        .await?;
    match ok(made, "MKDIR")?.obj {
        Nfs3Option::Some(fh) => Ok(fh),
        Nfs3Option::None => Err("MKDIR gave no handle".into()),
    }
}

async fn measure(served: &Served, options: NfsBenchOptions, run: usize) -> Result<Figures> {
    let mut c = connect(served).await?;
    let root = c.root_nfs_fh3();
    let top = mkdir(&mut c, &root, &format!("run{run}")).await?;
    let mut figures = Figures::default();

    // Sequential: 1 MiB UNSTABLE writes, one COMMIT; then 1 MiB reads.
    let chunk: Vec<u8> = (0..1usize << 20).map(|i| (i * 7 + run) as u8).collect();
    let file = create(&mut c, &top, "seq").await?;
    let start = Instant::now();
    for i in 0..options.megabytes {
        let w = c
            .write(&WRITE3args {
                file: file.clone(),
                offset: (i << 20) as u64,
                count: chunk.len() as u32,
                stable: stable_how::UNSTABLE,
                data: Opaque::borrowed(&chunk),
            })
            .await?;
        ok(w, "WRITE")?;
    }
    let commit = c
        .commit(&COMMIT3args {
            file: file.clone(),
            offset: 0,
            count: 0,
        })
        .await?;
    ok(commit, "COMMIT")?;
    figures.write_mbps = options.megabytes as f64 / start.elapsed().as_secs_f64();
    let start = Instant::now();
    for i in 0..options.megabytes {
        let r = c
            .read(&READ3args {
                file: file.clone(),
                offset: (i << 20) as u64,
                count: 1 << 20,
            })
            .await?;
        ok(r, "READ")?;
    }
    figures.read_mbps = options.megabytes as f64 / start.elapsed().as_secs_f64();

    // Creates and metadata: each client in a directory of its own, at once.
    let seconds = Duration::from_secs_f64(options.seconds);
    let mut tasks = Vec::new();
    for client in 0..options.clients {
        let dir = mkdir(&mut c, &top, &format!("c{client}")).await?;
        let mut conn = connect(served).await?;
        tasks.push(tokio::spawn(async move {
            let page = vec![0x5au8; 4096];
            let start = Instant::now();
            let mut made = Vec::new();
            while start.elapsed() < seconds {
                let fh = create(&mut conn, &dir, &format!("f{}", made.len())).await?;
                let w = conn
                    .write(&WRITE3args {
                        file: fh.clone(),
                        offset: 0,
                        count: 4096,
                        stable: stable_how::FILE_SYNC,
                        data: Opaque::borrowed(&page),
                    })
                    .await?;
                ok(w, "WRITE")?;
                made.push(fh);
            }
            let creates = made.len() as f64 / start.elapsed().as_secs_f64();
            let start = Instant::now();
            let mut ops = 0u64;
            while start.elapsed() < seconds {
                let i = ops as usize % made.len().max(1);
                let look = conn
                    .lookup(&LOOKUP3args {
                        what: diropargs3 {
                            dir: dir.clone(),
                            name: name(&format!("f{i}")),
                        },
                    })
                    .await?;
                let found = ok(look, "LOOKUP")?;
                let attr = conn
                    .getattr(&GETATTR3args {
                        object: found.object,
                    })
                    .await?;
                ok(attr, "GETATTR")?;
                ops += 2;
            }
            let metadata = ops as f64 / start.elapsed().as_secs_f64();
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>((creates, metadata))
        }));
    }
    for task in tasks {
        let (creates, metadata) = task.await??;
        figures.creates += creates;
        figures.metadata += metadata;
    }
    Ok(figures)
}

/// Answers rpcbind's local socket while the bench runs: every registration succeeds.
struct RpcbindStub {
    stop: Option<std::sync::mpsc::Sender<()>>,
    made: bool,
}

impl RpcbindStub {
    fn start() -> Result<RpcbindStub> {
        if Path::new(RPCBIND_SOCKET).exists()
            && std::os::unix::net::UnixStream::connect(RPCBIND_SOCKET).is_ok()
        {
            // A real rpcbind answers.
            return Ok(RpcbindStub {
                stop: None,
                made: false,
            });
        }
        let _ = std::fs::remove_file(RPCBIND_SOCKET);
        let listener = UnixListener::bind(RPCBIND_SOCKET)?;
        listener.set_nonblocking(true)?;
        let (stop, stopped) = std::sync::mpsc::channel();
        std::thread::spawn(move || loop {
            if stopped.try_recv().is_ok() {
                return;
            }
            match listener.accept() {
                Ok((stream, _)) => {
                    std::thread::spawn(move || answer_registrations(stream));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        });
        Ok(RpcbindStub {
            stop: Some(stop),
            made: true,
        })
    }
}

impl Drop for RpcbindStub {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if self.made {
            let _ = std::fs::remove_file(RPCBIND_SOCKET);
        }
    }
}

/// Every call on `stream` (record-marked RPC) is answered SUCCESS with the boolean TRUE,
/// which is what SET and UNSET answer.
#[allow(clippy::big_endian_bytes)] // RPC is big-endian.
fn answer_registrations(mut stream: std::os::unix::net::UnixStream) {
    let _ = stream.set_nonblocking(false);
    loop {
        let mut header = [0u8; 4];
        if stream.read_exact(&mut header).is_err() {
            return;
        }
        let len = (u32::from_be_bytes(header) & 0x7fff_ffff) as usize;
        if !(4..=64 * 1024).contains(&len) {
            return;
        }
        let mut call = vec![0u8; len];
        if stream.read_exact(&mut call).is_err() {
            return;
        }
        let mut reply = Vec::new();
        reply.extend_from_slice(&call[..4]); // xid
        for word in [1u32, 0, 0, 0, 0, 1] {
            // REPLY, MSG_ACCEPTED, verifier AUTH_NONE (flavor, length), SUCCESS, TRUE
            reply.extend_from_slice(&word.to_be_bytes());
        }
        let mut out = (reply.len() as u32 | 0x8000_0000).to_be_bytes().to_vec();
        out.extend_from_slice(&reply);
        if stream.write_all(&out).is_err() {
            return;
        }
    }
}
