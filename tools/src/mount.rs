//! `smlog mount DIR MOUNTPOINT`: the engine served as a file system through FUSE.
//!
//! The glue is thin on purpose: each FUSE operation is one engine call (one file
//! transaction for a change), attributes, times and directory streams come from
//! [`smlog::serve`], errors map with [`FsError::errno`]. Changes are `Async` by default and
//! `fsync`/`fsyncdir` make everything before them durable (one group commit), like a local
//! file system; `--sync` makes each change durable before it returns.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use fuser::{
    Config, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo,
    InitFlags, KernelConfig, LockOwner, MountOption, Notifier, OpenFlags,
    RenameFlags as FuseRenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory,
    ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyLseek, ReplyOpen, ReplyStatfs, ReplyWrite,
    ReplyXattr, Request, Session, SessionACL, TimeOrNow, WriteFlags,
};
use nix::sys::signal::{SigSet, Signal};
use smlog::constants::{NAME_SIZE_BYTES_MAX, WRITE_SIZE_BYTES_MAX};
use smlog::io::Device;
use smlog::serve::{
    privileges_to_drop, st_blocks, system_time, time_of, DirStream, DirStreams, ListingKey,
    STAT_BLOCK_SIZE_BYTES,
};
use smlog::{
    Durability, Engine, FallocMode, FileKind, Ino, NewAttrs, RenameFlags, SetAttrChanges, Stat,
    Time, TxnOptions, XattrFlags,
};
use smlog_cluster::served::ChangeError;
use smlog_recovery::OpenOptions;

use crate::OpenArgs;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// How long the kernel may cache attributes and names, by default (`--cache-seconds`).
const TTL_DEFAULT_SECONDS: u64 = 1;

/// A busy unmount on a signal is tried this many more times, this far apart (5 s).
const UNMOUNT_TRIES: u32 = 50;
const UNMOUNT_RETRY_INTERVAL: Duration = Duration::from_millis(100);

/// `smlog mount`.
#[derive(Debug, clap::Args)]
pub struct MountArgs {
    /// The engine's directory: a new file system is made in it when it is empty.
    pub dir: PathBuf,
    /// Create DIR, with a new file system, when it does not exist.
    #[arg(long)]
    pub create: bool,
    /// Largest data file (bytes, or with K, M, G): writes past it get ENOSPC, and df
    /// shows it, so a full disk can be tried without filling one.
    #[arg(long = "capacity", value_parser = crate::cli::parse_bytes)]
    pub capacity_bytes: Option<u64>,
    /// Where to mount it.
    pub mountpoint: PathBuf,
    /// Make every change durable before it returns (default: at fsync, like a local
    /// file system).
    #[arg(long)]
    pub sync: bool,
    /// Mount options: allow_other, allow_root, default_permissions (always on), ro,
    /// auto_unmount, noatime, ...
    #[arg(short = 'o', value_delimiter = ',')]
    pub options: Vec<String>,
    /// Threads serving requests.
    #[arg(long, default_value_t = 4)]
    pub threads: usize,
    /// DIR is a cluster node's directory (`smlog cluster init`): run the node, as `smlog
    /// cluster serve` does, and mount the replicated volume. Changes go through Raft (to
    /// the leader), each durable on a quorum before it returns; reads are this node's;
    /// what other nodes change is invalidated in this kernel's caches as it is applied.
    #[arg(long)]
    pub node: bool,
    /// How long the kernel may cache attributes and names, in seconds.
    #[arg(long = "cache-seconds", default_value_t = TTL_DEFAULT_SECONDS)]
    pub cache_seconds: u64,
    /// Let the kernel cache writes and send them in large batches (FUSE writeback
    /// cache). fsync still writes them back and makes them durable first; data not yet
    /// written back is lost with the mount process, as with any unsynced write.
    #[arg(long)]
    pub writeback_cache: bool,
    #[command(flatten)]
    pub open: OpenArgs,
}

/// What a change through a [`Backend`] gives.
pub type Changed<T> = std::result::Result<T, ChangeError>;

/// What a mount serves: an engine's reads, and its changes made through the engine itself
/// ([`LocalVolume`]) or replicated through a cluster ([`crate::mount_cluster`]).
pub trait Backend: Send + Sync + 'static {
    /// The engine's device.
    type Device: Device;
    /// The engine reads come from now.
    fn engine(&self) -> Arc<Engine<Self::Device>>;
    /// [`Engine::create`].
    fn create(&self, parent: Ino, name: &[u8], attrs: NewAttrs) -> Changed<Stat>;
    /// [`Engine::mkdir`].
    fn mkdir(&self, parent: Ino, name: &[u8], attrs: NewAttrs) -> Changed<Stat>;
    /// [`Engine::symlink`].
    fn symlink(&self, parent: Ino, name: &[u8], target: &[u8], attrs: NewAttrs) -> Changed<Stat>;
    /// [`Engine::mknod`].
    fn mknod(&self, parent: Ino, name: &[u8], kind: FileKind, attrs: NewAttrs) -> Changed<Stat>;
    /// [`Engine::setxattr`] (a value) or [`Engine::removexattr`] (`None`).
    fn setxattr(
        &self,
        ino: Ino,
        name: &[u8],
        value: Option<&[u8]>,
        flags: XattrFlags,
    ) -> Changed<()>;
    /// [`Engine::fallocate`].
    fn fallocate(&self, ino: Ino, offset: u64, len: u64, mode: FallocMode) -> Changed<()>;
    /// [`Engine::link`].
    fn link(&self, ino: Ino, parent: Ino, name: &[u8]) -> Changed<Stat>;
    /// [`Engine::unlink`].
    fn unlink(&self, parent: Ino, name: &[u8]) -> Changed<()>;
    /// [`Engine::rmdir`].
    fn rmdir(&self, parent: Ino, name: &[u8]) -> Changed<()>;
    /// [`Engine::rename`].
    fn rename(&self, from: (Ino, &[u8]), to: (Ino, &[u8]), flags: RenameFlags) -> Changed<()>;
    /// [`Engine::write`].
    fn write(&self, ino: Ino, offset: u64, data: &[u8]) -> Changed<u64>;
    /// [`Engine::setattr`].
    fn setattr(&self, ino: Ino, changes: SetAttrChanges) -> Changed<Stat>;
    /// Makes every change acknowledged before it durable.
    fn sync(&self) -> Changed<()>;
}

/// One engine, changed directly: `Async` changes made durable by `fsync`, or `Sync` ones.
#[derive(Debug)]
pub struct LocalVolume<D: Device> {
    engine: Arc<Engine<D>>,
    options: TxnOptions,
}

impl<D: Device> LocalVolume<D> {
    /// Serves `engine`, each change with `durability`.
    pub fn new(engine: Engine<D>, durability: Durability) -> LocalVolume<D> {
        LocalVolume {
            engine: Arc::new(engine),
            options: durability.into(),
        }
    }
}

impl<D: Device + 'static> Backend for LocalVolume<D> {
    type Device = D;

    fn engine(&self) -> Arc<Engine<D>> {
        Arc::clone(&self.engine)
    }

    fn create(&self, parent: Ino, name: &[u8], attrs: NewAttrs) -> Changed<Stat> {
        Ok(self.engine.create(parent, name, attrs, self.options)?)
    }

    fn mkdir(&self, parent: Ino, name: &[u8], attrs: NewAttrs) -> Changed<Stat> {
        Ok(self.engine.mkdir(parent, name, attrs, self.options)?)
    }

    fn symlink(&self, parent: Ino, name: &[u8], target: &[u8], attrs: NewAttrs) -> Changed<Stat> {
        Ok(self
            .engine
            .symlink(parent, name, target, attrs, self.options)?)
    }

    fn mknod(&self, parent: Ino, name: &[u8], kind: FileKind, attrs: NewAttrs) -> Changed<Stat> {
        Ok(self.engine.mknod(parent, name, kind, attrs, self.options)?)
    }

    fn setxattr(
        &self,
        ino: Ino,
        name: &[u8],
        value: Option<&[u8]>,
        flags: XattrFlags,
    ) -> Changed<()> {
        match value {
            Some(value) => self
                .engine
                .setxattr(ino, name, value, flags, self.options)?,
            None => self.engine.removexattr(ino, name, self.options)?,
        }
        Ok(())
    }

    fn fallocate(&self, ino: Ino, offset: u64, len: u64, mode: FallocMode) -> Changed<()> {
        Ok(self
            .engine
            .fallocate(ino, offset, len, mode, self.options)?)
    }

    fn link(&self, ino: Ino, parent: Ino, name: &[u8]) -> Changed<Stat> {
        Ok(self.engine.link(ino, parent, name, self.options)?)
    }

    fn unlink(&self, parent: Ino, name: &[u8]) -> Changed<()> {
        Ok(self.engine.unlink(parent, name, self.options)?)
    }

    fn rmdir(&self, parent: Ino, name: &[u8]) -> Changed<()> {
        Ok(self.engine.rmdir(parent, name, self.options)?)
    }

    fn rename(
        &self,
        (from_parent, from_name): (Ino, &[u8]),
        (to_parent, to_name): (Ino, &[u8]),
        flags: RenameFlags,
    ) -> Changed<()> {
        Ok(self.engine.rename(
            from_parent,
            from_name,
            to_parent,
            to_name,
            flags,
            self.options,
        )?)
    }

    fn write(&self, ino: Ino, offset: u64, data: &[u8]) -> Changed<u64> {
        Ok(self.engine.write(ino, offset, data, self.options)?)
    }

    fn setattr(&self, ino: Ino, changes: SetAttrChanges) -> Changed<Stat> {
        Ok(self.engine.setattr(ino, changes, self.options)?)
    }

    fn sync(&self) -> Changed<()> {
        Ok(self.engine.sync()?)
    }
}

impl MountArgs {
    /// How long the kernel may cache attributes and names.
    pub fn ttl(&self) -> Duration {
        Duration::from_secs(self.cache_seconds)
    }
}

/// The file system: a backend and the open directory streams.
#[derive(Debug)]
pub struct SmlogFs<B: Backend> {
    backend: B,
    /// How long the kernel may cache attributes and names.
    ttl: Duration,
    /// Others change the volume too (a cluster): the kernel drops cached pages of a file
    /// whose size or mtime it sees change (FUSE_AUTO_INVAL_DATA), and a write is at most
    /// one replicated command.
    shared: bool,
    writeback_cache: bool,
    /// Open directories by handle (a `shared` mount); each is read under its own lock.
    streams: Mutex<HashMap<u64, Arc<Mutex<DirStream>>>>,
    /// Directories read without a handle (the kernel sends no OPENDIR where this mount alone
    /// changes the volume: see `opendir`), one stream each.
    dirs: Mutex<DirStreams>,
    /// Directories removed (by rmdir or a rename over them) while the kernel may still hold
    /// them, with their last attributes and no links, until the kernel forgets the inode:
    /// `fstat` of a handle still open on one answers as on a local file system.
    removed_dirs: Mutex<HashMap<u64, Stat>>,
    /// Orders every listing of this mount: offsets mean the same on every handle of a
    /// directory, which a listing the kernel keeps needs. New at each mount (the kernel
    /// keeps no listing across one), and secret, so nobody can choose names that collide.
    listing_key: ListingKey,
    /// The kernel leaves revoking setuid and setgid to the mount (FUSE_HANDLE_KILLPRIV_V2).
    kill_privileges: bool,
    /// The kernel opens directories itself when OPENDIR answers ENOSYS (Linux 5.1+).
    no_opendir: bool,
    /// The kernel opens files itself (OPEN and CREATE answer ENOSYS: see `open`), where
    /// this mount alone changes the volume and the kernel takes that (Linux 3.16+).
    no_open: bool,
    /// Where the kernel opens files itself: its lookup count of every inode it was told
    /// of, and whether the engine holds the inode open for it (see `told`).
    kernel_refs: Mutex<HashMap<u64, KernelRef>>,
    next_fh: AtomicU64,
    said_stopped: AtomicBool,
}

/// Whether the caller of `req` is in group `gid`: its own group, or one of its
/// supplementary groups (from /proc, read only here: a setgid file without group execute).
fn in_group(req: &Request, gid: u32) -> bool {
    if req.gid() == gid {
        return true;
    }
    let Ok(status) = std::fs::read_to_string(format!("/proc/{}/status", req.pid())) else {
        return false;
    };
    status
        .lines()
        .find_map(|line| line.strip_prefix("Groups:"))
        .is_some_and(|groups| {
            groups
                .split_whitespace()
                .any(|g| g.parse::<u32>() == Ok(gid))
        })
}

/// Whether process `pid` may hold inode `ino` open for writing (from /proc's fdinfo, which
/// asks nothing of this mount): then an empty SETATTR from it is the kernel revoking before
/// its write, not a chown. Where fdinfo cannot tell (not readable by this process, no `ino:`
/// line before Linux 5.14, a pid from another namespace), yes: the write's own flag revokes,
/// and a non-owner's chown(-1, -1) answers OK, changing nothing, where Linux says EPERM. So
/// does an inode of the same number open for writing on another file system.
fn writing(pid: u32, ino: u64) -> bool {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return true;
    };
    let mut told = false;
    let found = fds.flatten().any(|fd| {
        let Ok(info) = std::fs::read_to_string(fd.path()) else {
            return false;
        };
        let field = |name: &str| {
            info.lines()
                .find_map(|line| line.strip_prefix(name))
                .map(str::trim)
        };
        let Some(fd_ino) = field("ino:").and_then(|v| v.parse::<u64>().ok()) else {
            return false;
        };
        told = true;
        let flags = field("flags:").and_then(|v| u32::from_str_radix(v, 8).ok());
        fd_ino == ino && flags.is_some_and(|f| f & libc::O_ACCMODE as u32 != libc::O_RDONLY as u32)
    });
    found || !told
}

/// The kernel's hold on an inode, where it opens files without telling the mount: each
/// entry the mount replies is a lookup the kernel counts, FORGET gives them back, and the
/// kernel forgets an inode only when nothing has it open. While it holds a file the engine
/// holds it open, so a file unlinked (or renamed over) while open stays, as an orphan,
/// until the kernel lets it go; directories are answered from `removed_dirs` instead.
#[derive(Debug, Default)]
struct KernelRef {
    lookups: u64,
    /// The engine holds the inode open ([`Engine::open`]) until the count falls to 0.
    held: bool,
}

/// A listing key no one can guess: from the random keys the standard library seeds its
/// hash maps with.
fn random_listing_key() -> ListingKey {
    use std::hash::BuildHasher;
    let state = std::collections::hash_map::RandomState::new();
    let mut key = [0u8; 16];
    key[..8].copy_from_slice(&state.hash_one(1u8).to_le_bytes());
    key[8..].copy_from_slice(&state.hash_one(2u8).to_le_bytes());
    ListingKey(key)
}

fn file_type(kind: FileKind) -> FileType {
    match kind {
        FileKind::File => FileType::RegularFile,
        FileKind::Dir => FileType::Directory,
        FileKind::Symlink => FileType::Symlink,
        FileKind::Fifo => FileType::NamedPipe,
        FileKind::Socket => FileType::Socket,
        FileKind::CharDevice { .. } => FileType::CharDevice,
        FileKind::BlockDevice { .. } => FileType::BlockDevice,
    }
}

/// The kind `mknod` makes for `mode`'s type bits and `rdev` (the kernel's device number,
/// the same as `st_rdev` for every number it can carry); `None` for a type it does not make.
fn mknod_kind(mode: u32, rdev: u32) -> Option<FileKind> {
    let rdev = u64::from(rdev);
    match mode & libc::S_IFMT {
        libc::S_IFREG | 0 => Some(FileKind::File),
        libc::S_IFIFO => Some(FileKind::Fifo),
        libc::S_IFSOCK => Some(FileKind::Socket),
        libc::S_IFCHR => Some(FileKind::CharDevice { rdev }),
        libc::S_IFBLK => Some(FileKind::BlockDevice { rdev }),
        _ => None,
    }
}

fn file_attr(attr: &Stat) -> FileAttr {
    FileAttr {
        ino: INodeNo(attr.ino.get()),
        size: attr.size,
        blocks: st_blocks(attr),
        atime: system_time(attr.atime),
        mtime: system_time(attr.mtime),
        ctime: system_time(attr.ctime),
        crtime: system_time(attr.ctime),
        kind: file_type(attr.kind),
        perm: (attr.mode & 0o7777) as u16,
        nlink: attr.nlink,
        uid: attr.uid,
        gid: attr.gid,
        // FUSE carries 32 bits: every number the kernel's mknod passes fits.
        rdev: u32::try_from(attr.kind.rdev()).unwrap_or(0),
        blksize: STAT_BLOCK_SIZE_BYTES,
        flags: 0,
    }
}

fn time_or_now(time: TimeOrNow) -> Time {
    match time {
        TimeOrNow::SpecificTime(t) => time_of(t),
        TimeOrNow::Now => time_of(SystemTime::now()),
    }
}

/// The attributes of a negative entry: inode 0 tells the kernel the name is not there.
const NEGATIVE_ENTRY: FileAttr = FileAttr {
    ino: INodeNo(0),
    size: 0,
    blocks: 0,
    atime: SystemTime::UNIX_EPOCH,
    mtime: SystemTime::UNIX_EPOCH,
    ctime: SystemTime::UNIX_EPOCH,
    crtime: SystemTime::UNIX_EPOCH,
    kind: FileType::RegularFile,
    perm: 0,
    nlink: 0,
    uid: 0,
    gid: 0,
    rdev: 0,
    blksize: STAT_BLOCK_SIZE_BYTES,
    flags: 0,
};

/// Inode numbers are never reused: one generation for all.
const GENERATION: Generation = Generation(0);

/// Directories whose listings the mount keeps at once (each the names of one pass); past
/// it, or past [`LISTED_NAMES_MAX`] names in all, the least recently read is dropped.
const DIR_STREAMS_MAX: usize = 1024;
/// Names kept in all the listings at once.
const LISTED_NAMES_MAX: usize = 1 << 20;
/// Removed directories remembered for `fstat` of handles still open on them.
const REMOVED_DIRS_MAX: usize = 4096;

impl<B: Backend> SmlogFs<B> {
    /// Serves `backend`; the kernel caches attributes and names for `ttl`.
    pub fn new(backend: B, ttl: Duration, shared: bool, writeback_cache: bool) -> SmlogFs<B> {
        let key = random_listing_key();
        SmlogFs {
            backend,
            ttl,
            shared,
            writeback_cache,
            streams: Mutex::new(HashMap::new()),
            dirs: Mutex::new(DirStreams::new(key, DIR_STREAMS_MAX, LISTED_NAMES_MAX)),
            removed_dirs: Mutex::new(HashMap::new()),
            listing_key: key,
            kill_privileges: false,
            no_opendir: false,
            no_open: false,
            kernel_refs: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            said_stopped: AtomicBool::new(false),
        }
    }

    /// The errno for `error`; the first sign that the engine stopped is logged, once.
    fn errno(&self, error: impl Into<ChangeError>) -> Errno {
        let error = error.into();
        if let Some(why) = self.backend.engine().stopped() {
            if !self.said_stopped.swap(true, Ordering::Relaxed) {
                eprintln!(
                    "smlog mount: the engine stopped ({why}); the file system is read-only \
                     from now on, changes fail with EIO"
                );
            }
        }
        Errno::from_i32(error.errno())
    }

    /// Revokes the setuid and setgid bits of file `ino` that a change of its contents by
    /// `req` (without CAP_FSETID) revokes ([`privileges_to_drop`]), where the kernel leaves
    /// that to the mount. Its own transaction, before the change (as the kernel did it).
    fn revoke_privileges(&self, req: &Request, ino: Ino) -> std::result::Result<(), Errno> {
        if !self.kill_privileges {
            return Ok(());
        }
        let attr = self
            .backend
            .engine()
            .getattr(ino)
            .map_err(|e| self.errno(e))?;
        if attr.kind != FileKind::File || attr.mode & (libc::S_ISUID | libc::S_ISGID) == 0 {
            return Ok(());
        }
        let drop = privileges_to_drop(attr.mode, in_group(req, attr.gid));
        if drop == 0 {
            return Ok(());
        }
        let changes = SetAttrChanges {
            mode: Some(attr.mode & 0o7777 & !drop),
            ..SetAttrChanges::default()
        };
        self.backend
            .setattr(ino, changes)
            .map(|_| ())
            .map_err(|e| self.errno(e))
    }

    /// The attributes of directory `name` in `parent`, which a change is about to remove,
    /// where the kernel opens directories without OPENDIR (see `opendir`). This mount alone
    /// changes the volume then, and the kernel holds both directories' locks across the
    /// change, so what is read here is what the change removes.
    fn dir_to_remove(&self, parent: Ino, name: &[u8]) -> Option<Stat> {
        if self.shared {
            return None;
        }
        match self.backend.engine().lookup(parent, name) {
            Ok(attr) if attr.kind == FileKind::Dir => Some(attr),
            _ => None,
        }
    }

    /// Directory `gone` was removed: kept, with no links, for `fstat` of handles still open
    /// on it until the kernel forgets it (at most [`REMOVED_DIRS_MAX`]; past it the oldest
    /// inode goes, and an `fstat` of a handle on it answers ENOENT).
    fn removed(&self, gone: Option<Stat>) {
        let Some(mut attr) = gone else { return };
        attr.nlink = 0;
        let mut removed = self.removed_dirs.lock().unwrap_or_else(|e| e.into_inner());
        if removed.len() >= REMOVED_DIRS_MAX {
            if let Some(&oldest) = removed.keys().min() {
                removed.remove(&oldest);
            }
        }
        removed.insert(attr.ino.get(), attr);
    }

    /// The kernel is about to be told of the inode `attr` (an entry replied: a lookup it
    /// counts). Called before the reply goes, so that the FORGET which gives it back cannot
    /// come first. Where the kernel opens files itself, the first lookup of a file holds
    /// it open in the engine (see [`KernelRef`]). A reply the kernel then drops (an
    /// interrupted request) is counted all the same: the file is held until the unmount.
    fn told(&self, attr: &Stat) {
        if !self.no_open {
            return;
        }
        let mut refs = self.kernel_refs.lock().unwrap_or_else(|e| e.into_inner());
        let kernel_ref = refs.entry(attr.ino.get()).or_default();
        kernel_ref.lookups += 1;
        // Under the lock: a FORGET of this count, which can only follow the reply, finds
        // the engine's hold already taken. An inode reclaimed meanwhile (an orphan a stale
        // listing still named) is not held.
        if kernel_ref.lookups == 1 && attr.kind != FileKind::Dir {
            kernel_ref.held = self.backend.engine().open(attr.ino).is_ok();
        }
    }

    /// The kernel gives back `lookups` of its count of `ino`; at none left, the engine's
    /// hold goes (an orphan is reclaimed then).
    fn forgotten(&self, ino: u64, lookups: u64) {
        let release = {
            let mut refs = self.kernel_refs.lock().unwrap_or_else(|e| e.into_inner());
            let Some(kernel_ref) = refs.get_mut(&ino) else {
                return;
            };
            kernel_ref.lookups = kernel_ref.lookups.saturating_sub(lookups);
            if kernel_ref.lookups > 0 {
                return;
            }
            refs.remove(&ino).is_some_and(|gone| gone.held)
        };
        // Outside the table's lock: reclaiming an orphan is a transaction.
        if release {
            self.let_go(ino);
        }
    }

    /// Ends the engine's hold on `ino` taken for the kernel (`told`). A failure leaves the
    /// orphan to the next recovery (and says so if the engine stopped).
    fn let_go(&self, ino: u64) {
        if let Err(e) = self.backend.engine().release(Ino(ino)) {
            let _ = self.errno(e);
        }
    }

    fn stream_fh(&self) -> u64 {
        self.next_fh.fetch_add(1, Ordering::Relaxed)
    }

    /// Up to `limit` entries of directory `ino` from `offset`: through handle `fh`, or
    /// (handle 0: the kernel opened it without OPENDIR) the directory's own stream.
    fn read_stream(
        &self,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        limit: usize,
    ) -> std::result::Result<Vec<smlog::serve::StreamEntry>, Errno> {
        if fh.0 == 0 {
            let mut dirs = self.dirs.lock().unwrap_or_else(|e| e.into_inner());
            return dirs
                .read(&self.backend.engine(), Ino(ino.0), offset, limit)
                .map_err(|e| self.errno(e));
        }
        let streams = self.streams.lock().unwrap_or_else(|e| e.into_inner());
        let stream = Arc::clone(streams.get(&fh.0).ok_or(Errno::EBADF)?);
        drop(streams);
        let mut stream = stream.lock().unwrap_or_else(|e| e.into_inner());
        stream
            .read(&self.backend.engine(), offset, limit)
            .map_err(|e| self.errno(e))
    }

    /// The kernel passes the mode unmasked (FUSE_DONT_MASK) and the umask: the engine
    /// applies it, or the directory's default ACL instead.
    fn new_attrs(req: &Request, mode: u32, umask: u32) -> NewAttrs {
        NewAttrs {
            mode: mode & 0o7777,
            uid: req.uid(),
            gid: req.gid(),
            umask,
        }
    }

    fn reply_entry<E: Into<ChangeError>>(
        &self,
        result: std::result::Result<Stat, E>,
        reply: ReplyEntry,
    ) {
        match result {
            Ok(attr) => {
                self.told(&attr);
                reply.entry(&self.ttl, &file_attr(&attr), GENERATION)
            }
            Err(e) => reply.error(self.errno(e)),
        }
    }

    fn reply_attr<E: Into<ChangeError>>(
        &self,
        result: std::result::Result<Stat, E>,
        reply: ReplyAttr,
    ) {
        match result {
            Ok(attr) => reply.attr(&self.ttl, &file_attr(&attr)),
            Err(e) => reply.error(self.errno(e)),
        }
    }

    fn reply_empty<E: Into<ChangeError>>(
        &self,
        result: std::result::Result<(), E>,
        reply: ReplyEmpty,
    ) {
        match result {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(self.errno(e)),
        }
    }
}

impl<B: Backend> Filesystem for SmlogFs<B> {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // Larger writes are fewer transactions; the kernel lowers it to what it can do. A
        // replicated write is at most one command.
        let max_write = if self.shared {
            smlog_cluster::command::WRITE_BYTES_MAX
        } else {
            WRITE_SIZE_BYTES_MAX
        };
        let _ = config.set_max_write(max_write as u32);
        if self.shared {
            let _ = config.add_capabilities(InitFlags::FUSE_AUTO_INVAL_DATA);
        }
        // POSIX ACLs: the kernel enforces them (with default_permissions) from the
        // system.posix_acl_* attributes; the engine keeps the mode in step and applies
        // default ACLs, so the kernel must leave the umask to it. Without both, ACLs are
        // refused (EOPNOTSUPP) and the kernel applies the umask.
        if config
            .add_capabilities(InitFlags::FUSE_POSIX_ACL | InitFlags::FUSE_DONT_MASK)
            .is_err()
        {
            eprintln!("smlog mount: this kernel offers no POSIX ACLs through FUSE");
        }
        // Each is optional: a kernel without one serves without it.
        let _ = config.add_capabilities(InitFlags::FUSE_PARALLEL_DIROPS);
        // setuid and setgid are revoked here (`revoke_privileges`), not by the kernel:
        // then the kernel may remember that a file has nothing to revoke (S_NOSEC) instead
        // of asking for its `security.capability` before every write (a round trip per
        // write, 8% of what dbench sends).
        self.kill_privileges = config
            .add_capabilities(InitFlags::FUSE_HANDLE_KILLPRIV_V2)
            .is_ok();
        // Whether the kernel takes ENOSYS for "open directories yourself" (`opendir`).
        self.no_opendir = config
            .add_capabilities(InitFlags::FUSE_NO_OPENDIR_SUPPORT)
            .is_ok();
        // And for "open files yourself" (`open`): only where this mount alone changes the
        // volume. FUSE_ATOMIC_O_TRUNC must stay off then (it is: the kernel truncates with
        // a SETATTR), as no OPEN would carry the truncation.
        self.no_open = !self.shared
            && config
                .add_capabilities(InitFlags::FUSE_NO_OPEN_SUPPORT)
                .is_ok();
        let _ = config
            .add_capabilities(InitFlags::FUSE_DO_READDIRPLUS | InitFlags::FUSE_READDIRPLUS_AUTO);
        if self.writeback_cache
            && config
                .add_capabilities(InitFlags::FUSE_WRITEBACK_CACHE)
                .is_err()
        {
            eprintln!("smlog mount: this kernel offers no writeback cache; serving without");
        }
        Ok(())
    }

    fn destroy(&mut self) {
        // The kernel holds nothing after an unmount (and sends no FORGET for it): orphans
        // it still held are reclaimed now rather than by the next recovery.
        let held: Vec<u64> = {
            let mut refs = self.kernel_refs.lock().unwrap_or_else(|e| e.into_inner());
            refs.drain()
                .filter_map(|(ino, kernel_ref)| kernel_ref.held.then_some(ino))
                .collect()
        };
        for ino in held {
            self.let_go(ino);
        }
        if let Err(e) = self.backend.sync() {
            eprintln!("smlog mount: the final sync failed: {e}");
        }
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self.backend.engine().lookup(Ino(parent.0), name.as_bytes()) {
            // A name that is not there is remembered as such for the TTL (an entry of
            // inode 0), where this mount is the only one changing the volume: whatever
            // creates the name goes through this kernel, which drops the negative entry.
            Err(smlog::FsError::NotFound) if !self.shared => {
                reply.entry(&self.ttl, &NEGATIVE_ENTRY, GENERATION)
            }
            result => self.reply_entry(result, reply),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.backend.engine().getattr(Ino(ino.0)) {
            Err(smlog::FsError::NotFound) if !self.shared => {
                let removed = self.removed_dirs.lock().unwrap_or_else(|e| e.into_inner());
                match removed.get(&ino.0) {
                    Some(attr) => reply.attr(&self.ttl, &file_attr(attr)),
                    None => reply.error(Errno::ENOENT),
                }
            }
            result => self.reply_attr(result, reply),
        }
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.forgotten(ino.0, nlookup);
        // The kernel holds the inode no more (at its eviction FORGET comes once, with its
        // whole lookup count; only an entry of a listing it failed to take is given back
        // alone, and a removed directory is never listed): no handle is left on a removed
        // directory.
        let mut removed = self.removed_dirs.lock().unwrap_or_else(|e| e.into_inner());
        if !removed.is_empty() {
            removed.remove(&ino.0);
        }
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let mut changes = SetAttrChanges {
            mode: mode.map(|m| m & 0o7777),
            uid,
            gid,
            size,
            atime: atime.map(time_or_now),
            mtime: mtime.map(time_or_now),
        };
        // The kernel leaves revoking setuid and setgid to us: at a chown of a file (by
        // anyone), and at a truncation by someone without CAP_FSETID (the kernel says so
        // in FATTR_KILL_SUIDGID, which fuser 0.18 does not pass on: root stands for it).
        // In the same transaction.
        // chown(path, -1, -1) revokes them too, and arrives with nothing to change (as does
        // the kernel's own revoking before a write, which the same rule then answers).
        let nothing = [mode, uid, gid].iter().all(Option::is_none)
            && size.is_none()
            && atime.is_none()
            && mtime.is_none();
        let chown = uid.is_some() || gid.is_some() || nothing;
        if self.kill_privileges && mode.is_none() && (chown || size.is_some()) {
            match self.backend.engine().getattr(Ino(ino.0)) {
                // A chown revokes them on anything but a directory; a truncation, on a
                // regular file.
                Ok(attr) if attr.kind != FileKind::Dir => {
                    let root = req.uid() == 0;
                    let mut drop = if chown {
                        privileges_to_drop(attr.mode, root || in_group(req, attr.gid))
                    } else if !root && attr.kind == FileKind::File {
                        privileges_to_drop(attr.mode, in_group(req, attr.gid))
                    } else {
                        0
                    };
                    if nothing && drop != 0 && !root && req.uid() != attr.uid {
                        // Not the owner: the kernel revoking before this caller's write
                        // (the write revokes them), or chown(-1, -1), which Linux refuses
                        // a non-owner when there is something to revoke.
                        if !writing(req.pid(), ino.0) {
                            return reply.error(Errno::EPERM);
                        }
                        drop = 0;
                    }
                    if drop != 0 {
                        changes.mode = Some(attr.mode & 0o7777 & !drop);
                    }
                }
                Ok(_) => {}
                Err(e) => return reply.error(self.errno(e)),
            }
        }
        self.reply_attr(self.backend.setattr(Ino(ino.0), changes), reply);
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.backend.engine().readlink(Ino(ino.0)) {
            Ok(target) => reply.data(&target),
            Err(e) => reply.error(self.errno(e)),
        }
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        let Some(kind) = mknod_kind(mode, rdev) else {
            return reply.error(Errno::EINVAL);
        };
        let attrs = Self::new_attrs(req, mode, umask);
        let result = self
            .backend
            .mknod(Ino(parent.0), name.as_bytes(), kind, attrs);
        self.reply_entry(result, reply);
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let attrs = Self::new_attrs(req, mode, umask);
        let result = self.backend.mkdir(Ino(parent.0), name.as_bytes(), attrs);
        self.reply_entry(result, reply);
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let result = self.backend.unlink(Ino(parent.0), name.as_bytes());
        self.reply_empty(result, reply);
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let gone = self.dir_to_remove(Ino(parent.0), name.as_bytes());
        let result = self.backend.rmdir(Ino(parent.0), name.as_bytes());
        if result.is_ok() {
            self.removed(gone);
        }
        self.reply_empty(result, reply);
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let attrs = NewAttrs {
            mode: 0o777,
            uid: req.uid(),
            gid: req.gid(),
            umask: 0,
        };
        let result = self.backend.symlink(
            Ino(parent.0),
            link_name.as_bytes(),
            target.as_os_str().as_bytes(),
            attrs,
        );
        self.reply_entry(result, reply);
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: FuseRenameFlags,
        reply: ReplyEmpty,
    ) {
        let known = FuseRenameFlags::RENAME_NOREPLACE | FuseRenameFlags::RENAME_EXCHANGE;
        if !known.contains(flags) {
            return reply.error(Errno::EINVAL);
        }
        let flags = RenameFlags {
            no_replace: flags.contains(FuseRenameFlags::RENAME_NOREPLACE),
            exchange: flags.contains(FuseRenameFlags::RENAME_EXCHANGE),
        };
        let gone = if flags.exchange {
            None
        } else {
            self.dir_to_remove(Ino(newparent.0), newname.as_bytes())
        };
        let result = self.backend.rename(
            (Ino(parent.0), name.as_bytes()),
            (Ino(newparent.0), newname.as_bytes()),
            flags,
        );
        if result.is_ok() {
            self.removed(gone);
        }
        self.reply_empty(result, reply);
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let result = self
            .backend
            .link(Ino(ino.0), Ino(newparent.0), newname.as_bytes());
        self.reply_entry(result, reply);
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        if self.no_open {
            // Where this mount alone changes the volume, no OPEN: ENOSYS tells the kernel to
            // open files itself from now on (no OPEN, no RELEASE: two round trips less per
            // open, a fifth of what dbench sends), keeping their cached pages
            // (FOPEN_KEEP_CACHE). Reads and writes come with handle 0, which they need
            // not. The engine holds a file open while the kernel holds its inode
            // (`told`), which covers every open handle.
            return reply.error(Errno::ENOSYS);
        }
        match self.backend.engine().open(Ino(ino.0)) {
            // Every change comes through this mount, or (a cluster) invalidates the pages
            // it changed: cached pages stay valid across opens.
            Ok(_) => reply.opened(FileHandle(ino.0), FopenFlags::FOPEN_KEEP_CACHE),
            Err(e) => reply.error(self.errno(e)),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        match self
            .backend
            .engine()
            .read(Ino(ino.0), offset, size as usize)
        {
            Ok(data) => reply.data(&data),
            Err(e) => reply.error(self.errno(e)),
        }
    }

    fn write(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        // The kernel sets this for a writer without CAP_FSETID.
        if write_flags.contains(WriteFlags::FUSE_WRITE_KILL_SUIDGID) {
            if let Err(errno) = self.revoke_privileges(req, Ino(ino.0)) {
                return reply.error(errno);
            }
        }
        match self.backend.write(Ino(ino.0), offset, data) {
            Ok(n) => reply.written(n as u32),
            Err(e) => reply.error(self.errno(e)),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // close() promises no durability on a local file system either, and there is
        // nothing else to do at a close: ENOSYS tells the kernel to send no more FLUSHes
        // (one round trip less per close; it still writes back cached pages itself).
        reply.error(Errno::ENOSYS);
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        if self.no_open {
            // No handle was given out (`open`, `create`): the hold is the kernel's count's
            // (`told`), which a stray RELEASE must not undo.
            return reply.ok();
        }
        self.reply_empty(self.backend.engine().release(Ino(ino.0)), reply);
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        self.reply_empty(self.backend.sync(), reply);
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        if !self.shared {
            // Where this mount alone changes the volume, no OPENDIR: ENOSYS tells the kernel
            // to open directories itself from now on (no OPENDIR, no RELEASEDIR: two round
            // trips less per open, a third of what dbench sends) and to keep their listings
            // (FOPEN_CACHE_DIR), which it drops when a change through it touches the
            // directory. Reads come with handle 0 and share the directory's stream; a reader
            // part way through a dropped listing goes on from its offsets, which mean the
            // same on every stream (`DirStream`). A directory removed while open is
            // answered from `removed_dirs`. A kernel before Linux 5.1 takes ENOSYS for a
            // failure: it gets handle 0 and the same flags instead, and a RELEASEDIR.
            if self.no_opendir {
                return reply.error(Errno::ENOSYS);
            }
            let flags = FopenFlags::FOPEN_CACHE_DIR | FopenFlags::FOPEN_KEEP_CACHE;
            return reply.opened(FileHandle(0), flags);
        }
        match self.backend.engine().getattr(Ino(ino.0)) {
            Ok(attr) if attr.kind == FileKind::Dir => {
                // Held open: removed meanwhile, it stays (empty, as an orphan) until
                // released, so fstat of the handle still answers.
                if let Err(e) = self.backend.engine().open(Ino(ino.0)) {
                    return reply.error(self.errno(e));
                }
                let fh = self.stream_fh();
                let mut streams = self.streams.lock().unwrap_or_else(|e| e.into_inner());
                let stream = DirStream::new(Ino(ino.0), self.listing_key);
                streams.insert(fh, Arc::new(Mutex::new(stream)));
                drop(streams);
                // Others change the volume: no listing kept by the kernel.
                reply.opened(FileHandle(fh), FopenFlags::empty());
            }
            Ok(_) => reply.error(Errno::ENOTDIR),
            Err(e) => reply.error(self.errno(e)),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        match self.read_stream(ino, fh, offset, 128) {
            Ok(entries) => {
                for entry in entries {
                    let name = OsStr::from_bytes(&entry.name);
                    let kind = file_type(entry.kind);
                    if reply.add(INodeNo(entry.ino.get()), entry.offset, kind, name) {
                        break;
                    }
                }
                reply.ok();
            }
            Err(errno) => reply.error(errno),
        }
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        match self.read_stream(ino, fh, offset, 64) {
            Ok(entries) => {
                let engine = self.backend.engine();
                for entry in entries {
                    // Removed since the stream read it: skip rather than fail the batch.
                    let Ok(attr) = engine.getattr(entry.ino) else {
                        continue;
                    };
                    let name = OsStr::from_bytes(&entry.name);
                    let fuse_attr = file_attr(&attr);
                    let ino = INodeNo(entry.ino.get());
                    if reply.add(ino, entry.offset, name, &self.ttl, &fuse_attr, GENERATION) {
                        break;
                    }
                    // Every entry the kernel takes is a lookup, but for "." and "..".
                    if entry.name != b"." && entry.name != b".." {
                        self.told(&attr);
                    }
                }
                reply.ok();
            }
            Err(errno) => reply.error(errno),
        }
    }

    fn releasedir(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        if fh.0 == 0 {
            // Opened without a stream of its own, nor the engine's hold (`opendir`).
            return reply.ok();
        }
        let mut streams = self.streams.lock().unwrap_or_else(|e| e.into_inner());
        streams.remove(&fh.0);
        drop(streams);
        self.reply_empty(self.backend.engine().release(Ino(ino.0)), reply);
    }

    /// No ioctl is served: ENOTTY, as a local file system answers one it does not know
    /// (isatty's TCGETS, sent at every open by many programs, among them).
    fn ioctl(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: fuser::IoctlFlags,
        _cmd: u32,
        _in_data: &[u8],
        _out_size: u32,
        reply: fuser::ReplyIoctl,
    ) {
        reply.error(Errno::ENOTTY);
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        self.reply_empty(self.backend.sync(), reply);
    }

    fn fallocate(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        // As ext4 does (`file_modified`): FUSE says nothing of CAP_FSETID here, so root
        // stands for it.
        if req.uid() != 0 {
            if let Err(errno) = self.revoke_privileges(req, Ino(ino.0)) {
                return reply.error(errno);
            }
        }
        let keep_size = mode & libc::FALLOC_FL_KEEP_SIZE != 0;
        let mode = match mode & !libc::FALLOC_FL_KEEP_SIZE {
            0 => FallocMode::Allocate { keep_size },
            libc::FALLOC_FL_PUNCH_HOLE if keep_size => FallocMode::PunchHole,
            libc::FALLOC_FL_ZERO_RANGE => FallocMode::ZeroRange { keep_size },
            // COLLAPSE_RANGE and INSERT_RANGE: the kernel passes neither to FUSE.
            _ => return reply.error(Errno::EOPNOTSUPP),
        };
        let result = self.backend.fallocate(Ino(ino.0), offset, length, mode);
        self.reply_empty(result, reply);
    }

    /// copy_file_range: the engine reads and writes the bytes itself (no round trip of
    /// them through the kernel), a write (one transaction) per chunk of at most a write's
    /// size, as the kernel's own copy is not atomic either. The kernel checked the
    /// descriptors, the ranges and the flags.
    fn copy_file_range(
        &self,
        req: &Request,
        ino_in: INodeNo,
        _fh_in: FileHandle,
        offset_in: u64,
        ino_out: INodeNo,
        _fh_out: FileHandle,
        offset_out: u64,
        len: u64,
        flags: fuser::CopyFileRangeFlags,
        reply: ReplyWrite,
    ) {
        if flags.bits() != 0 {
            return reply.error(Errno::EINVAL);
        }
        // A write to the destination (`file_modified`), root standing for CAP_FSETID.
        if req.uid() != 0 && len > 0 {
            if let Err(errno) = self.revoke_privileges(req, Ino(ino_out.0)) {
                return reply.error(errno);
            }
        }
        let chunk = if self.shared {
            smlog_cluster::command::WRITE_BYTES_MAX
        } else {
            WRITE_SIZE_BYTES_MAX
        } as u64;
        // The answer's count is 32 bits.
        let len = len.min(u64::from(u32::MAX) & !(chunk - 1));
        let mut done = 0u64;
        let mut failed = None;
        while done < len {
            let want = chunk.min(len - done);
            let read = self
                .backend
                .engine()
                .read(Ino(ino_in.0), offset_in + done, want as usize);
            let data = match read {
                Ok(data) if data.is_empty() => break,
                Ok(data) => data,
                Err(e) => {
                    failed = Some(self.errno(e));
                    break;
                }
            };
            match self.backend.write(Ino(ino_out.0), offset_out + done, &data) {
                Ok(n) => done += n,
                Err(e) => {
                    failed = Some(self.errno(e));
                    break;
                }
            }
            if (data.len() as u64) < want {
                break;
            }
        }
        match failed {
            Some(errno) if done == 0 => reply.error(errno),
            _ => reply.written(done as u32),
        }
    }

    fn lseek(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: i64,
        whence: i32,
        reply: ReplyLseek,
    ) {
        let data = match whence {
            libc::SEEK_DATA => true,
            libc::SEEK_HOLE => false,
            // The kernel answers SEEK_SET, SEEK_CUR and SEEK_END itself.
            _ => return reply.error(Errno::EINVAL),
        };
        let Ok(offset) = u64::try_from(offset) else {
            return reply.error(Errno::ENXIO);
        };
        match self.backend.engine().seek(Ino(ino.0), offset, data) {
            Ok(at) => reply.offset(at as i64),
            Err(e) => reply.error(self.errno(e)),
        }
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        match self.backend.engine().statfs() {
            Ok(s) => {
                let files_max = u64::from(u32::MAX);
                reply.statfs(
                    s.blocks_total,
                    s.blocks_free,
                    s.blocks_free,
                    files_max,
                    files_max.saturating_sub(s.inodes),
                    s.block_size_bytes as u32,
                    NAME_SIZE_BYTES_MAX as u32,
                    s.block_size_bytes as u32,
                );
            }
            Err(e) => reply.error(self.errno(e)),
        }
    }

    fn setxattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        position: u32,
        reply: ReplyEmpty,
    ) {
        if position != 0 || flags & !(libc::XATTR_CREATE | libc::XATTR_REPLACE) != 0 {
            return reply.error(Errno::EINVAL);
        }
        let flags = XattrFlags {
            create: flags & libc::XATTR_CREATE != 0,
            replace: flags & libc::XATTR_REPLACE != 0,
        };
        let result = self
            .backend
            .setxattr(Ino(ino.0), name.as_bytes(), Some(value), flags);
        self.reply_empty(result, reply);
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        match self.backend.engine().getxattr(Ino(ino.0), name.as_bytes()) {
            Ok(value) => reply_xattr(&value, size, reply),
            Err(e) => reply.error(self.errno(e)),
        }
    }

    fn listxattr(&self, req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        match self.backend.engine().listxattr(Ino(ino.0)) {
            Ok(names) => {
                let mut list = Vec::new();
                // As ext4: trusted attributes are listed to the privileged only (here:
                // root; FUSE does not pass the caller's capabilities).
                for name in names
                    .into_iter()
                    .filter(|n| req.uid() == 0 || !n.starts_with(b"trusted."))
                {
                    list.extend_from_slice(&name);
                    list.push(0);
                }
                reply_xattr(&list, size, reply);
            }
            Err(e) => reply.error(self.errno(e)),
        }
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let flags = XattrFlags::default();
        let result = self
            .backend
            .setxattr(Ino(ino.0), name.as_bytes(), None, flags);
        self.reply_empty(result, reply);
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: fuser::AccessFlags, reply: ReplyEmpty) {
        // The kernel checks permissions (default_permissions).
        reply.ok();
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        if self.no_open {
            // ENOSYS: the kernel makes the file with MKNOD and opens it itself, without a
            // handle to RELEASE (see `open`), from now on.
            return reply.error(Errno::ENOSYS);
        }
        if mode & libc::S_IFMT != libc::S_IFREG && mode & libc::S_IFMT != 0 {
            return reply.error(Errno::EPERM);
        }
        let attrs = Self::new_attrs(req, mode, umask);
        let created = self
            .backend
            .create(Ino(parent.0), name.as_bytes(), attrs)
            .and_then(|attr| Ok(self.backend.engine().open(attr.ino)?));
        match created {
            Ok(attr) => reply.created(
                &self.ttl,
                &file_attr(&attr),
                GENERATION,
                FileHandle(attr.ino.get()),
                FopenFlags::FOPEN_KEEP_CACHE,
            ),
            Err(e) => reply.error(self.errno(e)),
        }
    }
}

/// Answers a getxattr or listxattr of `size` bytes: the length when asked for it (0),
/// ERANGE when `bytes` do not fit, else the bytes.
fn reply_xattr(bytes: &[u8], size: u32, reply: ReplyXattr) {
    if size == 0 {
        reply.size(bytes.len() as u32);
    } else if bytes.len() > size as usize {
        reply.error(Errno::ERANGE);
    } else {
        reply.data(bytes);
    }
}

/// The mount configuration for `-o` options.
fn config(options: &[String], dir: &Path, threads: usize) -> Result<Config> {
    let mut config = Config::default();
    config.mount_options = vec![
        MountOption::FSName(format!("smlog:{}", dir.display())),
        MountOption::Subtype("smlog".into()),
        MountOption::DefaultPermissions,
    ];
    for option in options.iter().flat_map(|o| o.split(',')) {
        match option {
            "" | "default_permissions" => {}
            "allow_other" => config.acl = SessionACL::All,
            "allow_root" => config.acl = SessionACL::RootAndOwner,
            "auto_unmount" => config.mount_options.push(MountOption::AutoUnmount),
            "ro" => config.mount_options.push(MountOption::RO),
            "noatime" => config.mount_options.push(MountOption::NoAtime),
            "nosuid" => config.mount_options.push(MountOption::NoSuid),
            "nodev" => config.mount_options.push(MountOption::NoDev),
            "dev" => config.mount_options.push(MountOption::Dev),
            "suid" => config.mount_options.push(MountOption::Suid),
            "noexec" => config.mount_options.push(MountOption::NoExec),
            other => config.mount_options.push(MountOption::CUSTOM(other.into())),
        }
    }
    config.n_threads = Some(threads.max(1));
    config.clone_fd = true;
    Ok(config)
}

/// Unmounts `mountpoint` once: `umount(2)` as root, else the setuid `fusermount3 -u`. The
/// FUSE session then ends by itself (its device reads fail), as when a user unmounts.
fn unmount(mountpoint: &Path) -> std::io::Result<()> {
    match nix::mount::umount(mountpoint) {
        Ok(()) => Ok(()),
        Err(nix::errno::Errno::EPERM) => {
            let status = std::process::Command::new("fusermount3")
                .arg("-u")
                .arg("--")
                .arg(mountpoint)
                .stderr(std::process::Stdio::null())
                .status()?;
            if status.success() {
                Ok(())
            } else {
                // Busy is what a refusal of our own mount means here; retried as such.
                Err(std::io::Error::from_raw_os_error(libc::EBUSY))
            }
        }
        Err(e) => Err(e.into()),
    }
}

/// `smlog mount`: recover, mount, serve until unmounted or signalled, then sync and
/// checkpoint; or, with `--node`, run a cluster node and mount its replicated volume.
pub fn run(args: MountArgs) -> Result<ExitCode> {
    if !Path::new("/dev/fuse").exists() {
        return Err("/dev/fuse is missing: this kernel offers no FUSE".into());
    }
    if !args.mountpoint.is_dir() {
        return Err(format!("{}: not a directory", args.mountpoint.display()).into());
    }
    // Every thread (the engine's, FUSE's, the node's) inherits this mask; one thread takes
    // the signals.
    let mut signals = SigSet::empty();
    for signal in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        signals.add(signal);
    }
    signals.thread_block()?;
    if args.node {
        return crate::mount_cluster::run(args, signals);
    }

    let engine = open_local(
        "mount",
        &args.dir,
        args.create,
        args.capacity_bytes,
        args.open,
    )?;
    let durability = if args.sync {
        Durability::Sync
    } else {
        Durability::Async
    };
    let fs = SmlogFs::new(
        LocalVolume::new(engine.clone(), durability),
        args.ttl(),
        false,
        args.writeback_cache,
    );
    let how = if args.sync {
        "every change durable before it returns"
    } else {
        "changes durable at fsync"
    };
    let served = serve(fs, &args, signals, how, |_| Ok(()))?;
    let finish = engine
        .sync()
        .and_then(|()| engine.checkpoint())
        .and_then(|stats| engine.shutdown().map(|()| stats));
    if let Err(e) = served {
        eprintln!("smlog mount: the FUSE session ended with an error: {e}");
    }
    match finish {
        Ok(stats) => {
            eprintln!(
                "smlog mount: unmounted; checkpoint {} written ({} data blocks)",
                stats.seq, stats.written_blocks
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("smlog mount: closing the engine failed: {e}; recovery will finish it");
            Ok(ExitCode::from(1))
        }
    }
}

/// Recovers the engine in `dir` for a file server (`tool`: `mount`, `nfs`), making a new
/// file system when `create` allows or the directory is empty, and says what it found.
pub(crate) fn open_local(
    tool: &str,
    dir: &Path,
    create: bool,
    capacity_bytes: Option<u64>,
    open: OpenArgs,
) -> Result<Engine<Box<dyn Device>>> {
    let mut options = OpenOptions {
        device: open.device_options(create),
        create: true,
        ..OpenOptions::default()
    };
    if let Some(bytes) = capacity_bytes {
        options.engine.data_capacity_bytes = bytes;
    }
    if !create && !dir.exists() {
        return Err(format!(
            "{}: no such directory (--create makes it, with a new file system; or smlog format)",
            dir.display()
        )
        .into());
    }
    let (engine, report) = smlog_recovery::open(dir, options)?;
    if report.created {
        eprintln!(
            "smlog {tool}: created a new file system in {}",
            dir.display()
        );
    } else {
        eprintln!(
            "smlog {tool}: recovered {}: {} records scanned, {} transactions in flight \
             finished, {} orphans reclaimed",
            dir.display(),
            report.scanned_records,
            report.in_flight.len(),
            report.orphans_reclaimed
        );
    }
    Ok(engine)
}

/// Mounts `fs` on `args.mountpoint` and serves it until it is unmounted, or a signal in
/// `signals` unmounts it; `started` gets the session's notifier before serving starts.
/// Returns how the session ended.
pub(crate) fn serve<B: Backend>(
    fs: SmlogFs<B>,
    args: &MountArgs,
    signals: SigSet,
    how: &str,
    started: impl FnOnce(Notifier) -> Result<()>,
) -> Result<std::io::Result<()>> {
    let config = config(&args.options, &args.dir, args.threads)?;
    let session = Session::new(fs, &args.mountpoint, &config)?;
    started(session.notifier())?;
    let mountpoint = args.mountpoint.clone();
    std::thread::Builder::new()
        .name("smlog-signals".into())
        .spawn(move || loop {
            let Ok(signal) = signals.wait() else {
                return;
            };
            eprintln!("smlog mount: {signal}: unmounting {}", mountpoint.display());
            // A file just closed may still be held by the kernel for a moment (FUSE
            // releases it after close returns): busy is retried a while before giving up.
            // (fuser's own unmounter forgets the mount at its first try, busy or not, so a
            // retry through it would report success and leave the file system mounted.)
            let mut tries = 0;
            loop {
                match unmount(&mountpoint) {
                    Ok(()) => break,
                    Err(e) if e.raw_os_error() == Some(libc::EBUSY) && tries < UNMOUNT_TRIES => {
                        tries += 1;
                        std::thread::sleep(UNMOUNT_RETRY_INTERVAL);
                    }
                    Err(e) => {
                        eprintln!(
                            "smlog mount: cannot unmount: {e} (something on it is in use); \
                             send the signal again to retry"
                        );
                        break;
                    }
                }
            }
        })?;
    eprintln!(
        "smlog mount: serving {} on {} ({how})",
        args.dir.display(),
        args.mountpoint.display(),
    );
    Ok(session.run())
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::Arc;

    use smlog::io::sim::{FaultConfig, SimDevice};
    use smlog::io::IoErrorKind;

    use super::*;

    /// A failed log sync stops the engine: the mount stays up, read-only. Changes fail with
    /// EIO, reads go on. The fault comes through the simulated device, mounted in-process.
    #[test]
    fn a_failed_sync_turns_the_mount_read_only() {
        if !Path::new("/dev/fuse").exists()
            || std::process::Command::new("fusermount3")
                .arg("-V")
                .output()
                .is_err()
        {
            eprintln!("skipped: FUSE is not available here (/dev/fuse, fusermount3)");
            return;
        }
        let device = Arc::new(SimDevice::new(11));
        let options = OpenOptions {
            create: true,
            ..OpenOptions::default()
        };
        let (engine, _) = smlog_recovery::open_device(Arc::clone(&device), options).unwrap();
        // The store is the simulated device: the mount point may be anywhere.
        let tmp = tempfile::tempdir().unwrap();
        let mnt = tmp.path().join("mnt");
        std::fs::create_dir(&mnt).unwrap();
        let fs = SmlogFs::new(
            LocalVolume::new(engine.clone(), Durability::Async),
            Duration::from_secs(1),
            false,
            false,
        );
        let config = config(&[], tmp.path(), 2).unwrap();
        let session = match Session::new(fs, &mnt, &config) {
            Ok(session) => session,
            Err(e) => {
                eprintln!("skipped: mounting is not permitted here: {e}");
                return;
            }
        };
        let background = session.spawn().unwrap();

        std::fs::write(mnt.join("kept"), b"durable").unwrap();
        std::fs::File::open(&mnt).unwrap().sync_all().unwrap();
        device.set_faults(FaultConfig {
            fail_sync_at_op: Some(1),
            fail_write_at_op: Some((1, IoErrorKind::Io)),
            ..FaultConfig::default()
        });
        let mut file = std::fs::File::create(mnt.join("lost")).unwrap();
        let written = file
            .write_all(b"never durable")
            .and_then(|()| file.sync_all());
        assert_eq!(written.unwrap_err().raw_os_error(), Some(libc::EIO));
        device.set_faults(FaultConfig::default());
        assert!(engine.stopped().is_some());

        let errno = |r: std::io::Result<()>| r.unwrap_err().raw_os_error();
        assert_eq!(
            errno(std::fs::write(mnt.join("new"), b"x")),
            Some(libc::EIO)
        );
        assert_eq!(errno(std::fs::create_dir(mnt.join("dir"))), Some(libc::EIO));
        assert_eq!(
            errno(std::fs::remove_file(mnt.join("kept"))),
            Some(libc::EIO)
        );
        assert_eq!(std::fs::read(mnt.join("kept")).unwrap(), b"durable");
        assert!(std::fs::read_dir(&mnt).unwrap().count() >= 1);
        drop(file);
        background.umount_and_join().unwrap();
    }
}
