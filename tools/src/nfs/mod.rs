//! `smlog nfs DIR --listen ADDR`: the engine served over NFSv3 (RFC 1813), with the MOUNT
//! protocol on the same port, so a client needs no portmapper. With `--node`, DIR is a
//! cluster node's: the node runs in this process and its replicated volume is served
//! ([`volume::Replicated`]); every node so served hands out the same file handles, so a
//! client moves from one node's address to another's with the handles it has.
//!
//! The RPC layer is ours on `nfs3_types`' wire types ([`xdr`]): the request's xid and
//! credentials reach the engine, which the crate's own server does not allow. One TCP
//! connection carries many calls at once; each runs on a blocking thread ([`Server::call`])
//! and its reply goes back when it is ready, in whatever order they finish.

// XDR is big-endian by definition (RFC 4506); the workspace's guard against big-endian
// bytes is for smlog's own disk formats.
#![allow(clippy::big_endian_bytes)]

mod handle;
mod server;
pub mod volume;
mod xdr;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use smlog::EngineOptions;
use smlog_cluster::node_dir::NodeDir;
use smlog_cluster::served::ServedVolume;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};

pub use server::{Config, Server};
use volume::{Local, Replicated, Volume};

use crate::OpenArgs;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;
/// A connection's errors cross threads.
type NetResult<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// Calls one connection may have in flight; past it, reading the connection waits.
const CALLS_IN_FLIGHT_MAX: usize = 64;
/// Calls running at once, over all connections: each holds a blocking thread while it
/// runs, and the runtime keeps as many again for the engine's and the node's own blocking
/// work (a cluster change waits for the node's log and apply, which need threads too).
const CALLS_RUNNING_MAX: usize = 64;
/// How long a stop waits for the calls in flight to finish before the engine is closed
/// under them (with `--node`: the change timeout and 10 s more).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(35);

/// The calls running: each holds a read guard while it runs; a stop takes the write side,
/// which waits for those running and lets no other start (tokio's lock is fair: a writer
/// waiting holds back new readers). At most [`CALLS_RUNNING_MAX`] run at once.
#[derive(Clone, Debug)]
struct Calls {
    stop: Arc<tokio::sync::RwLock<()>>,
    running: Arc<Semaphore>,
}

impl Calls {
    fn new() -> Calls {
        Calls {
            stop: Arc::default(),
            running: Arc::new(Semaphore::new(CALLS_RUNNING_MAX)),
        }
    }

    /// Waits until no call runs: while the guard it gives is held, none starts. `None`
    /// when calls still ran after `timeout` (they are left to the close).
    async fn drain(&self, timeout: Duration) -> Option<tokio::sync::OwnedRwLockWriteGuard<()>> {
        let drained = tokio::time::timeout(timeout, Arc::clone(&self.stop).write_owned()).await;
        if drained.is_err() {
            eprintln!("smlog nfs: calls still running after {timeout:?} are cut off");
        }
        drained.ok()
    }
}

/// `smlog nfs`.
#[derive(Debug, clap::Args)]
pub struct NfsArgs {
    /// The engine's directory: a new file system is made in it when it is empty (with
    /// `--node`, a cluster node's directory).
    pub dir: PathBuf,
    /// DIR is a cluster node's directory (`smlog cluster init`): run the node, as `smlog
    /// cluster serve` would, and serve its replicated volume. Every change is durable on a
    /// quorum before its reply (every write is FILE_SYNC); reads are this node's; handles
    /// are the same on every node.
    #[arg(long, conflicts_with = "create")]
    pub node: bool,
    /// With `--node`: how long a change waits for a leader to take it before its call is
    /// left unanswered (the connection closed, so the client resends it).
    #[arg(long, default_value = "30", requires = "node")]
    pub change_timeout_seconds: u64,
    /// Create DIR, with a new file system, when it does not exist.
    #[arg(long)]
    pub create: bool,
    /// Largest data file (bytes, or with K, M, G).
    #[arg(long = "capacity", value_parser = crate::cli::parse_bytes)]
    pub capacity_bytes: Option<u64>,
    /// Address to serve NFS and MOUNT on (port 0: any free port, printed at start).
    #[arg(long, default_value = "127.0.0.1:2049")]
    pub listen: SocketAddr,
    /// Make every write durable before it returns, whatever the client asks.
    #[arg(long)]
    pub sync: bool,
    /// Networks allowed to connect (ADDR/BITS, repeatable).
    #[arg(long = "allow", default_value = "127.0.0.1/32", value_parser = parse_net)]
    pub allow: Vec<(std::net::IpAddr, u8)>,
    /// Serve uid 0 as uid 0 (by default it is mapped to the anonymous user).
    #[arg(long)]
    pub no_root_squash: bool,
    /// Take calls with no credential (AUTH_NONE), as the anonymous user.
    #[arg(long)]
    pub auth_none: bool,
    /// The anonymous user, for squashed root and AUTH_NONE: UID:GID.
    #[arg(long, default_value = "65534:65534", value_parser = parse_ids)]
    pub anon: (u32, u32),
    /// Print a line per call on stderr (xid, program, procedure, how it was answered).
    #[arg(long)]
    pub trace: bool,
    /// The export's path, as clients mount it.
    #[arg(long, default_value = "/")]
    pub export: String,
    #[command(flatten)]
    pub open: OpenArgs,
}

fn parse_net(text: &str) -> std::result::Result<(std::net::IpAddr, u8), String> {
    xdr::parse_net(text)
}

fn parse_ids(text: &str) -> std::result::Result<(u32, u32), String> {
    let (uid, gid) = text
        .split_once(':')
        .ok_or_else(|| format!("{text}: UID:GID"))?;
    let id = |s: &str| s.parse::<u32>().map_err(|e| format!("{s}: {e}"));
    Ok((id(uid)?, id(gid)?))
}

impl NfsArgs {
    fn config(&self) -> Config {
        Config {
            export: self.export.clone().into_bytes(),
            sync: self.sync,
            root_squash: !self.no_root_squash,
            auth_none: self.auth_none,
            anon: self.anon,
            allow: self.allow.clone(),
            trace: self.trace,
        }
    }
}

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(CALLS_RUNNING_MAX * 2)
        .enable_all()
        .build()
}

/// `smlog nfs`: recover, serve until SIGINT or SIGTERM, then sync and checkpoint (or, with
/// `--node`, stop the node).
pub fn run(args: NfsArgs) -> Result<ExitCode> {
    if args.node {
        return run_node(args);
    }
    let engine = crate::mount::open_local(
        "nfs",
        &args.dir,
        args.create,
        args.capacity_bytes,
        args.open,
    )?;
    let server = Arc::new(Server::new(Local::new(Arc::new(engine)), args.config()));
    let runtime = runtime()?;
    let calls = Calls::new();
    runtime.block_on(serve(Arc::clone(&server), args.listen, calls.clone()))?;
    // Held to the end: no call starts on the engine being closed.
    let _drained = runtime.block_on(calls.drain(DRAIN_TIMEOUT));
    runtime.shutdown_timeout(Duration::from_secs(1));
    let engine = server.volume().engine();
    let finish = engine
        .sync()
        .and_then(|()| engine.checkpoint())
        .and_then(|stats| engine.shutdown().map(|()| stats));
    match finish {
        Ok(stats) => {
            eprintln!(
                "smlog nfs: stopped; checkpoint {} written ({} data blocks)",
                stats.seq, stats.written_blocks
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("smlog nfs: closing the engine failed: {e}; recovery will finish it");
            Ok(ExitCode::from(1))
        }
    }
}

/// `smlog nfs --node`: the node started (its Raft, its peers' connections) and its volume
/// served until SIGINT or SIGTERM; then the node stops as `smlog cluster serve` does.
fn run_node(args: NfsArgs) -> Result<ExitCode> {
    let dir = NodeDir::open(&args.dir)?;
    let mut engine = EngineOptions::default();
    if let Some(bytes) = args.capacity_bytes {
        engine.data_capacity_bytes = bytes;
    }
    let runtime = runtime()?;
    let devices = args.open.device_options(true);
    let node = runtime.block_on(smlog_cluster::server::Server::start(&dir, devices, engine))?;
    eprintln!(
        "smlog nfs: node {} of cluster {:016x} serving its peers on {}",
        dir.id, dir.key.cluster_id, node.addr
    );
    let served = Arc::new(
        ServedVolume::new(Arc::clone(&node.node), dir.key.clone(), dir.peer())
            .with_change_timeout(Duration::from_secs(args.change_timeout_seconds)),
    );
    let volume = Replicated::new(served, runtime.handle().clone(), dir.key.cluster_id);
    let server = Arc::new(Server::new(volume, args.config()));
    let calls = Calls::new();
    let served = runtime.block_on(serve(server, args.listen, calls.clone()));
    eprintln!("smlog nfs: node {} stopping", dir.id);
    let drain = Duration::from_secs(args.change_timeout_seconds.saturating_add(10));
    let _drained = runtime.block_on(calls.drain(drain));
    runtime.block_on(node.stop());
    runtime.shutdown_timeout(Duration::from_secs(1));
    served?;
    eprintln!("smlog nfs: node {} stopped", dir.id);
    Ok(ExitCode::SUCCESS)
}

/// Accepts connections on `listen` until SIGINT or SIGTERM.
async fn serve<V: Volume>(server: Arc<Server<V>>, listen: SocketAddr, calls: Calls) -> Result<()> {
    let listener = TcpListener::bind(listen).await?;
    // The line a script (or a test) waits for: the port is known and calls are answered.
    println!("smlog nfs: serving on {}", listener.local_addr()?);
    use std::io::Write;
    std::io::stdout().flush()?;
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = terminate.recv() => break,
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        eprintln!("smlog nfs: accept: {e}");
                        continue;
                    }
                };
                if !server.admits(peer.ip()) {
                    eprintln!("smlog nfs: {peer} is not in --allow: connection closed");
                    continue;
                }
                let server = Arc::clone(&server);
                let calls = calls.clone();
                tokio::spawn(async move {
                    if let Err(e) = connection(server, stream, peer, calls).await {
                        log::debug!("smlog nfs: {peer}: {e}");
                    }
                });
            }
        }
    }
    eprintln!("smlog nfs: stopping");
    Ok(())
}

/// Serves one connection: reads records (each bounded), answers each call on a blocking
/// thread, writes replies as they are ready.
async fn connection<V: Volume>(
    server: Arc<Server<V>>,
    stream: TcpStream,
    peer: SocketAddr,
    calls: Calls,
) -> NetResult<()> {
    stream.set_nodelay(true)?;
    let (mut reader, mut writer) = stream.into_split();
    let (replies, mut outgoing) = mpsc::channel::<Vec<u8>>(CALLS_IN_FLIGHT_MAX);
    let write_task = tokio::spawn(async move {
        while let Some(reply) = outgoing.recv().await {
            // A call left unanswered: the connection closes, and the client, reconnecting,
            // resends what it has not had answered.
            if reply.is_empty() {
                let _ = writer.shutdown().await;
                break;
            }
            // One fragment, the last, per reply.
            let header = (reply.len() as u32 | 0x8000_0000).to_be_bytes();
            if writer.write_all(&header).await.is_err() || writer.write_all(&reply).await.is_err() {
                break;
            }
        }
    });
    let slots = Arc::new(Semaphore::new(CALLS_IN_FLIGHT_MAX));
    let result = loop {
        let record = match read_record(&mut reader).await {
            Ok(Some(record)) => record,
            Ok(None) => break Ok(()),
            Err(e) => break Err(e),
        };
        // What is no call at all (garbage, a reply) ends the connection: nothing in it
        // can be trusted to be framed right.
        if let Err(e) = xdr::Call::parse(&record) {
            break Err(e.into());
        }
        let permit = Arc::clone(&slots).acquire_owned().await?;
        let server = Arc::clone(&server);
        let replies = replies.clone();
        let calls = calls.clone();
        tokio::spawn(async move {
            // After a stop began, this waits for good: the call never runs.
            let running = Arc::clone(&calls.stop).read_owned().await;
            let Ok(thread) = Arc::clone(&calls.running).acquire_owned().await else {
                return;
            };
            let reply = tokio::task::spawn_blocking(move || server.call(&record, peer.ip())).await;
            drop((thread, running));
            match reply {
                Ok(Some(reply)) => {
                    // The slot is held until the reply is handed to the writer: a client
                    // that does not read its replies stops being read, rather than making
                    // the server hold them all.
                    let _ = replies.send(reply).await;
                }
                // Unanswered (its outcome is unknown): the connection is closed.
                Ok(None) => {
                    let _ = replies.send(Vec::new()).await;
                }
                Err(e) => eprintln!("smlog nfs: {peer}: a call failed: {e}"),
            }
            drop(permit);
        });
    };
    drop(replies);
    let _ = write_task.await;
    result
}

/// Reads one RPC record (its fragments joined); `None` at a clean end of the stream. A
/// record longer than [`xdr::RECORD_SIZE_BYTES_MAX`] is an error, found from the fragment
/// headers before its bytes are read.
async fn read_record(reader: &mut (impl AsyncReadExt + Unpin)) -> NetResult<Option<Vec<u8>>> {
    let mut record = Vec::new();
    loop {
        let mut header = [0u8; 4];
        match reader.read_exact(&mut header).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && record.is_empty() => {
                return Ok(None)
            }
            Err(e) => return Err(e.into()),
        }
        let header = u32::from_be_bytes(header);
        let last = header & 0x8000_0000 != 0;
        let len = (header & 0x7fff_ffff) as usize;
        if record.len() + len > xdr::RECORD_SIZE_BYTES_MAX {
            return Err(format!(
                "a record of more than {} bytes: connection closed",
                xdr::RECORD_SIZE_BYTES_MAX
            )
            .into());
        }
        // Memory grows with the bytes that arrive, not with what the header claims.
        let start = record.len();
        (&mut *reader)
            .take(len as u64)
            .read_to_end(&mut record)
            .await?;
        if record.len() - start != len {
            return Err("the connection ended inside a record".into());
        }
        if last {
            return Ok(Some(record));
        }
    }
}
