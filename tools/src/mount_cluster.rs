//! `smlog mount --node DIR MOUNTPOINT`: a cluster node, run in the mount's own process as
//! `smlog cluster serve DIR` would run it, with its replicated volume mounted.
//!
//! What a mount on a node promises:
//! - **Read-your-writes**: a change made through this mount returns once it is durable on
//!   a quorum's Raft logs and applied on this node, so this mount reads it back at once.
//!   `fsync` has nothing left to do.
//! - **Others' changes**: a change made through another node reaches this node's volume
//!   when this node applies its entry; right after (on a thread of its own, so typically
//!   within milliseconds) the kernel is told to drop what it cached of it: the names the
//!   change touched, the attributes of the inodes it changed, and the pages it wrote. So a
//!   file written and closed on node 1 reads the same here once node 2 applied the change
//!   (close-to-open, and in fact open-to-read: an open file sees the new pages too).
//! - **Bounds**: attributes and names are cached at most `--cache-seconds` (1 s by
//!   default), and the kernel drops a file's pages when it sees its size or mtime change
//!   (FUSE_AUTO_INVAL_DATA). What no notification names is stale at most that long: the
//!   link count of an inode another node unlinked through another name, and everything
//!   after a snapshot is installed under a live mount.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::process::ExitCode;
use std::sync::{mpsc, Arc};

use fuser::{INodeNo, Notifier};
use nix::sys::signal::SigSet;
use smlog::io::Device;
use smlog::{
    Engine, EngineOptions, FallocMode, FileKind, Ino, NewAttrs, RenameFlags, SetAttrChanges, Stat,
    XattrFlags,
};
use smlog_cluster::node_dir::NodeDir;
use smlog_cluster::served::{self, Pages, ServedVolume, VolumeChange};
use smlog_cluster::server::Server;

use crate::mount::{Backend, Changed, MountArgs, SmlogFs};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// A node's replicated volume: reads from its engine, changes through Raft. The FUSE
/// threads wait for each change on the node's runtime.
pub struct ClusterVolume<D: Device> {
    served: Arc<ServedVolume<D>>,
    runtime: tokio::runtime::Handle,
}

impl<D: Device> std::fmt::Debug for ClusterVolume<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterVolume")
            .field("served", &self.served)
            .finish_non_exhaustive()
    }
}

impl<D: Device> ClusterVolume<D> {
    /// Serves `served`, waiting for its changes on `runtime` (from threads outside it).
    pub fn new(served: Arc<ServedVolume<D>>, runtime: tokio::runtime::Handle) -> Self {
        ClusterVolume { served, runtime }
    }
}

impl<D: Device + 'static> Backend for ClusterVolume<D> {
    type Device = D;

    fn engine(&self) -> Arc<Engine<D>> {
        self.served.engine()
    }

    fn create(&self, parent: Ino, name: &[u8], attrs: NewAttrs) -> Changed<Stat> {
        self.runtime
            .block_on(self.served.create(parent, name, attrs))
    }

    fn mkdir(&self, parent: Ino, name: &[u8], attrs: NewAttrs) -> Changed<Stat> {
        self.runtime
            .block_on(self.served.mkdir(parent, name, attrs))
    }

    fn symlink(&self, parent: Ino, name: &[u8], target: &[u8], attrs: NewAttrs) -> Changed<Stat> {
        self.runtime
            .block_on(self.served.symlink(parent, name, target, attrs))
    }

    fn mknod(&self, parent: Ino, name: &[u8], kind: FileKind, attrs: NewAttrs) -> Changed<Stat> {
        self.runtime
            .block_on(self.served.mknod(parent, name, kind, attrs))
    }

    fn setxattr(
        &self,
        ino: Ino,
        name: &[u8],
        value: Option<&[u8]>,
        flags: XattrFlags,
    ) -> Changed<()> {
        self.runtime
            .block_on(self.served.setxattr(ino, name, value, flags))
    }

    fn fallocate(&self, ino: Ino, offset: u64, len: u64, mode: FallocMode) -> Changed<()> {
        self.runtime
            .block_on(self.served.fallocate(ino, offset, len, mode))
    }

    fn link(&self, ino: Ino, parent: Ino, name: &[u8]) -> Changed<Stat> {
        self.runtime.block_on(self.served.link(ino, parent, name))
    }

    fn unlink(&self, parent: Ino, name: &[u8]) -> Changed<()> {
        self.runtime.block_on(self.served.unlink(parent, name))
    }

    fn rmdir(&self, parent: Ino, name: &[u8]) -> Changed<()> {
        self.runtime.block_on(self.served.rmdir(parent, name))
    }

    fn rename(&self, from: (Ino, &[u8]), to: (Ino, &[u8]), flags: RenameFlags) -> Changed<()> {
        self.runtime.block_on(self.served.rename(from, to, flags))
    }

    fn write(&self, ino: Ino, offset: u64, data: &[u8]) -> Changed<u64> {
        self.runtime.block_on(self.served.write(ino, offset, data))
    }

    fn setattr(&self, ino: Ino, changes: SetAttrChanges) -> Changed<Stat> {
        self.runtime.block_on(self.served.setattr(ino, changes))
    }

    fn sync(&self) -> Changed<()> {
        // Every change returned once durable on a quorum's Raft logs.
        Ok(())
    }
}

/// Tells the kernel to drop what it cached of each change another client made, as this
/// node applies it, until the node stops or the mount is gone.
fn invalidate(notifier: Notifier, changes: mpsc::Receiver<VolumeChange>, own: u64) {
    let gone = |e: &std::io::Error| e.raw_os_error() == Some(libc::ENOTCONN);
    for change in changes {
        let touched = match change {
            VolumeChange::Applied {
                client_id: Some(client),
                ..
            } if client == own => continue,
            VolumeChange::Applied { touched, .. } => touched,
            VolumeChange::Installed => {
                eprintln!(
                    "smlog mount: a snapshot of the volume was installed under the mount: \
                     what the kernel cached is stale for up to --cache-seconds"
                );
                continue;
            }
        };
        // ENOENT: the kernel holds nothing of it, the usual case.
        for (parent, name) in &touched.names {
            let parent = INodeNo(parent.get());
            if let Err(e) = notifier.inval_entry(parent, OsStr::from_bytes(name)) {
                if gone(&e) {
                    return;
                }
            }
        }
        for (ino, pages) in &touched.inodes {
            // A negative offset: the attributes only; a length of 0: to the end.
            let (offset, len) = match *pages {
                Pages::None => (-1, 0),
                Pages::Range { offset, len } => (offset as i64, len.max(1) as i64),
                Pages::All => (0, 0),
            };
            if let Err(e) = notifier.inval_inode(INodeNo(ino.get()), offset, len) {
                if gone(&e) {
                    return;
                }
            }
        }
    }
}

/// `smlog mount --node`: start the node, mount its volume, serve until unmounted or
/// signalled, then stop the node (its volume synced and checkpointed).
pub fn run(args: MountArgs, signals: SigSet) -> Result<ExitCode> {
    if args.writeback_cache {
        return Err(
            "--writeback-cache is for a mount of one engine, not of a cluster node \
                    (the kernel would hold changes the cluster has not seen)"
                .into(),
        );
    }
    if args.create {
        return Err(
            "--create is for a mount of one engine; a node's directory is made by \
                    `smlog cluster init`"
                .into(),
        );
    }
    let dir = NodeDir::open(&args.dir)?;
    let mut engine = EngineOptions::default();
    if let Some(bytes) = args.capacity_bytes {
        engine.data_capacity_bytes = bytes;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let (observer, changes) = served::changes();
    let devices = args.open.device_options(true);
    let server = runtime.block_on(Server::start_observed(
        &dir,
        devices,
        engine,
        Some(observer),
    ))?;
    eprintln!(
        "smlog mount: node {} of the cluster serving on {}",
        dir.id, server.addr
    );
    let served = Arc::new(ServedVolume::new(
        Arc::clone(&server.node),
        dir.key.clone(),
        dir.peer(),
    ));
    let own = served.client_id();
    let fs = SmlogFs::new(
        ClusterVolume::new(served, runtime.handle().clone()),
        args.ttl(),
        true,
        false,
    );
    let how = "a cluster node: every change durable on a quorum before it returns";
    let session = crate::mount::serve(fs, &args, signals, how, |notifier| {
        std::thread::Builder::new()
            .name("smlog-invalidate".into())
            .spawn(move || invalidate(notifier, changes, own))?;
        Ok(())
    });
    eprintln!("smlog mount: node {} stopping", dir.id);
    runtime.block_on(server.stop());
    match session? {
        Ok(()) => {
            eprintln!("smlog mount: unmounted; node {} stopped", dir.id);
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("smlog mount: the FUSE session ended with an error: {e}");
            Ok(ExitCode::from(1))
        }
    }
}
