//! The public [`Engine`]: runs file transactions, owns durability and checkpoints.
//!
//! Every change is a machine ([`crate::txn`]) run under the engine lock: each step is
//! appended to the log, then applied to the in-memory store; the last step and the commit
//! share one append. The lock is released before the caller waits for durability, so
//! concurrent committers share one log write and one fdatasync (group commit). A large
//! write leaves the lock while its data goes to newly allocated blocks.
//!
//! A checkpoint holds the lock for an O(1) snapshot of the metadata plus the assignment of
//! new blocks to the dirty cache (copy on write), then writes data, image and superblock
//! without it, and finally reuses the log before the oldest transaction it still needs.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use crate::constants::{BLOCK_SIZE_BYTES, REQUEST_KEYS_DEFAULT};
use crate::error::FsError;
use crate::io::{AlignedBuf, Device};
use crate::log::{Log, LogError, Lsn, NewRecord};
use crate::store::fsck::{self, FsckReport};
use crate::store::image::{self, Superblock};
use crate::store::{
    block_crc, runs_of, Attr, Block, DataFile, FileKind, Ino, Mapped, Meta, Name, Op, Outcome,
    RequestKey, Run, Store, Time, TxnResult,
};
use crate::txn::machines::{
    Create, CreateState, Link, NewAttrs, Reclaim, SetAttr, SetAttrState, Unlink, UnlinkState,
    Write, WriteState,
};
use crate::txn::{
    Context, FileTxn, Machine, NewNode, RenameFlags, SetAttrChanges, StepRecord, Transition,
    TxnRecord,
};

/// When a call returns relative to durability.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Durability {
    /// Return once the commit is durable (shared with concurrent commits). The default.
    #[default]
    Sync,
    /// Return at once; a later `Sync` commit or [`Engine::sync`] makes it durable (NFS
    /// UNSTABLE writes and COMMIT).
    Async,
}

/// Per-call options: durability and the caller's request key.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TxnOptions {
    /// When to return.
    pub durability: Durability,
    /// The request, so a retransmission is answered exactly once (see [`Engine::outcome`]).
    pub key: Option<RequestKey>,
}

impl TxnOptions {
    /// Sync, with `key`.
    pub fn keyed(client_id: u64, request_id: u64) -> TxnOptions {
        TxnOptions {
            durability: Durability::Sync,
            key: Some(RequestKey {
                client_id,
                request_id,
            }),
        }
    }
}

impl From<Durability> for TxnOptions {
    fn from(durability: Durability) -> TxnOptions {
        TxnOptions {
            durability,
            key: None,
        }
    }
}

/// How an engine runs.
#[derive(Clone, Copy, Debug)]
pub struct EngineOptions {
    /// Largest data file, in bytes (ENOSPC past it).
    pub data_capacity_bytes: u64,
    /// Request keys remembered (the window in which a retransmission is recognised).
    pub request_keys_max: usize,
    /// Checkpoint automatically after this many bytes of log (0: only on request).
    pub checkpoint_log_bytes: u64,
    /// Checkpoint automatically when this many bytes of data are dirty (0: only on request).
    pub checkpoint_dirty_bytes: u64,
    /// For crash tests: make every step durable before the next, so that a crash can fall
    /// between any two steps of a transaction. Slow.
    pub sync_every_step: bool,
    /// Segment size of a newly created log.
    pub segment_size_bytes: u64,
    /// The clock that stamps times on inodes. Crash harnesses fix it, so that a seed
    /// gives the same bytes in the log every run.
    pub clock: fn() -> Time,
}

impl Default for EngineOptions {
    fn default() -> EngineOptions {
        EngineOptions {
            data_capacity_bytes: 64 << 30,
            request_keys_max: REQUEST_KEYS_DEFAULT,
            checkpoint_log_bytes: 256 << 20,
            checkpoint_dirty_bytes: 64 << 20,
            sync_every_step: false,
            segment_size_bytes: crate::constants::SEGMENT_SIZE_BYTES_DEFAULT,
            clock: Time::now,
        }
    }
}

impl EngineOptions {
    /// The data file's capacity in blocks.
    pub fn capacity_blocks(&self) -> u64 {
        (self.data_capacity_bytes / BLOCK_SIZE_BYTES as u64).min(crate::constants::DATA_BLOCKS_MAX)
    }
}

/// A directory entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirEntry {
    /// Its name.
    pub name: Vec<u8>,
    /// The inode it names.
    pub ino: Ino,
    /// What that is.
    pub kind: FileKind,
}

/// Space and inode counts, for statfs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StatFs {
    /// Bytes per block.
    pub block_size_bytes: u64,
    /// Blocks the data file may hold.
    pub blocks_total: u64,
    /// Blocks that can be allocated now (quarantined and reserved ones excluded).
    pub blocks_free: u64,
    /// Inodes in use.
    pub inodes: u64,
}

/// What a checkpoint did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckpointStats {
    /// Its sequence number.
    pub seq: u64,
    /// The image reflects every record up to here.
    pub applied_lsn: Lsn,
    /// Recovery reads the log from here.
    pub scan_start_lsn: Lsn,
    /// Dirty blocks written back.
    pub written_blocks: u64,
    /// Bytes of the image.
    pub image_bytes: u64,
    /// Log segments released for reuse.
    pub released_segments: u64,
    /// The longest time commits were held off (the engine lock held by the checkpoint).
    pub stall: Duration,
    /// How long the whole checkpoint took.
    pub elapsed: Duration,
}

/// A transaction in flight, as the checkpoint and fsck need to know.
#[derive(Clone, Copy, Debug)]
struct Active {
    first_lsn: Lsn,
    allocated_blocks: u64,
}

#[derive(Debug)]
struct Inner<D: Device> {
    store: Store<D>,
    active: BTreeMap<u64, Active>,
    stopped: Option<String>,
    checkpoint_seq: u64,
    log_bytes_at_checkpoint: u64,
    /// Blocks a checkpoint allocated and has not yet mapped in the live store.
    checkpoint_blocks: u64,
    /// Inodes a file server holds open, with their handle counts.
    open: HashMap<Ino, u32>,
}

#[derive(Debug)]
struct Shared<D: Device> {
    log: Log<D>,
    data: Arc<DataFile<D>>,
    inner: Mutex<Inner<D>>,
    checkpoint_lock: Mutex<()>,
    options: EngineOptions,
    closing: AtomicBool,
    checkpointer: Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// The storage engine. Cheap to clone (one shared engine); every method takes `&self`.
#[derive(Debug)]
pub struct Engine<D: Device> {
    shared: Arc<Shared<D>>,
}

impl<D: Device> Clone for Engine<D> {
    fn clone(&self) -> Self {
        Engine {
            shared: Arc::clone(&self.shared),
        }
    }
}

/// A transaction being run.
struct Running {
    txn_id: u64,
    key: Option<RequestKey>,
    machine: FileTxn,
    step_no: u32,
    /// Applied steps: (LSN, undo), oldest first.
    steps: Vec<(Lsn, Vec<Op>)>,
    /// Resumed by recovery: a commit is logged even without a further step.
    resumed: bool,
}

type Guard<'a, D> = MutexGuard<'a, Inner<D>>;

impl<D: Device> Engine<D> {
    /// Creates a new, empty file system on `device` (like mkfs), which must hold no log.
    pub fn format(device: Arc<D>, options: EngineOptions) -> Result<Engine<D>, FsError> {
        // SUPER first, LOG last: a directory with a LOG always has its SUPER, and one
        // without a LOG holds at most what an interrupted format leaves.
        image::create_super(&*device)?;
        let log = Log::create(
            Arc::clone(&device),
            crate::log::writer::CreateOptions {
                segment_size_bytes: options.segment_size_bytes,
            },
        )?;
        let meta = Meta::new(created_time(&log), options.capacity_blocks());
        let data = Arc::new(DataFile::open(device)?);
        Ok(Engine::from_recovery(
            log,
            Store::new(meta, data),
            0,
            options,
        ))
    }

    /// Wraps a log and a store recovered to the log's tail (smlog-recovery calls this,
    /// then finishes the transactions that were in flight with [`Engine::resume`] and
    /// [`Engine::roll_back`]).
    pub fn from_recovery(
        log: Log<D>,
        store: Store<D>,
        checkpoint_seq: u64,
        options: EngineOptions,
    ) -> Engine<D> {
        let data = Arc::clone(&store.data);
        let log_bytes = log.stats().written_bytes;
        let engine = Engine {
            shared: Arc::new(Shared {
                log,
                data,
                inner: Mutex::new(Inner {
                    store,
                    active: BTreeMap::new(),
                    stopped: None,
                    checkpoint_seq,
                    log_bytes_at_checkpoint: log_bytes,
                    checkpoint_blocks: 0,
                    open: HashMap::new(),
                }),
                checkpoint_lock: Mutex::new(()),
                options,
                closing: AtomicBool::new(false),
                checkpointer: Mutex::new(None),
            }),
        };
        if options.checkpoint_log_bytes > 0 || options.checkpoint_dirty_bytes > 0 {
            let weak = Arc::downgrade(&engine.shared);
            let handle = std::thread::Builder::new()
                .name("smlog-checkpoint".into())
                .spawn(move || checkpointer(weak))
                .expect("spawning the checkpoint thread");
            *engine
                .shared
                .checkpointer
                .lock()
                .unwrap_or_else(|e| e.into_inner()) = Some(handle);
        }
        engine
    }

    /// The log.
    pub fn log(&self) -> &Log<D> {
        &self.shared.log
    }

    /// The options it runs with.
    pub fn options(&self) -> EngineOptions {
        self.shared.options
    }

    fn lock(&self) -> Guard<'_, D> {
        self.shared.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_usable(&self) -> Result<Guard<'_, D>, FsError> {
        let inner = self.lock();
        if let Some(why) = &inner.stopped {
            return Err(FsError::Stopped(why.clone()));
        }
        Ok(inner)
    }

    /// Why the engine stopped, if it did.
    pub fn stopped(&self) -> Option<String> {
        self.lock().stopped.clone()
    }

    // --- Reads ---
    //
    // Reads go on after the engine stops (fail-stop makes it read-only, as a file
    // system remounts read-only on an error); they may show commits not yet durable.

    /// Attributes of `ino`.
    pub fn getattr(&self, ino: Ino) -> Result<Attr, FsError> {
        Ok(self.lock().store.meta.inode(ino)?.attr())
    }

    /// The directory holding directory `ino` (the root's is itself).
    pub fn parent(&self, ino: Ino) -> Result<Ino, FsError> {
        let inner = self.lock();
        let inode = inner.store.meta.inode(ino)?;
        if inode.kind != FileKind::Dir {
            return Err(FsError::NotDir);
        }
        Ok(inode.parent)
    }

    /// Attributes of what `name` in directory `parent` names.
    pub fn lookup(&self, parent: Ino, name: &[u8]) -> Result<Attr, FsError> {
        let name = Name::new(name)?;
        let inner = self.lock();
        let ino = inner.store.meta.lookup(parent, &name)?;
        Ok(inner.store.meta.inode(ino)?.attr())
    }

    /// Up to `limit` entries of directory `ino` in name order, after `after` (exclusive;
    /// `None` from the start). A name is a cursor that survives concurrent changes.
    pub fn readdir(
        &self,
        ino: Ino,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<DirEntry>, FsError> {
        let inner = self.lock();
        let meta = &inner.store.meta;
        let entries = meta.dir(ino)?;
        let iter: Box<dyn Iterator<Item = (&Name, &Ino)>> = match after {
            None => Box::new(entries.iter()),
            Some(after) => {
                let after = Name::new(after)?;
                Box::new(
                    entries.range((std::ops::Bound::Excluded(after), std::ops::Bound::Unbounded)),
                )
            }
        };
        let mut out = Vec::new();
        for (name, &child) in iter.take(limit) {
            out.push(DirEntry {
                name: name.as_bytes().to_vec(),
                ino: child,
                kind: meta.inode(child)?.kind,
            });
        }
        Ok(out)
    }

    /// Up to `len` bytes (at most 16 MiB per call) of file `ino` from `offset` (fewer at
    /// its end).
    pub fn read(&self, ino: Ino, offset: u64, len: usize) -> Result<Vec<u8>, FsError> {
        let len = len.min(crate::constants::WRITE_SIZE_BYTES_MAX * 16);
        self.lock().store.read(ino, offset, len)
    }

    /// The target of symbolic link `ino`.
    pub fn readlink(&self, ino: Ino) -> Result<Vec<u8>, FsError> {
        let inner = self.lock();
        let inode = inner.store.meta.inode(ino)?;
        if inode.kind != FileKind::Symlink {
            return Err(FsError::NotSymlink);
        }
        Ok(inode.target.clone())
    }

    /// What became of request `key`: committed (with its result) or rolled back; `None`
    /// when it is not remembered (never seen, or older than the window).
    pub fn outcome(&self, key: RequestKey) -> Option<Outcome> {
        self.lock().store.meta.keys.get(&key)
    }

    /// Space and inode counts.
    ///
    /// The truth, whichever is less: the engine's own capacity, or what the host file
    /// system can still give the data file (blocks free inside `DATA` need none of it).
    pub fn statfs(&self) -> Result<StatFs, FsError> {
        let host_free_blocks = self
            .shared
            .data
            .device()
            .free_bytes()
            .map(|bytes| bytes / BLOCK_SIZE_BYTES as u64);
        let inner = self.lock();
        let space = &inner.store.meta.space;
        let engine_free = space
            .available_blocks()
            .saturating_sub(inner.store.cache.dirty.len() as u64);
        let used = space.capacity_blocks.saturating_sub(engine_free);
        // Free blocks below DATA's end are reusable without the host's space.
        let in_file_blocks = (self.shared.data.len_bytes() / BLOCK_SIZE_BYTES as u64)
            .saturating_sub(space.high_water_blocks)
            + space.free.values().sum::<u64>();
        let blocks_free = match host_free_blocks {
            Some(host) => engine_free.min(in_file_blocks.saturating_add(host)),
            None => engine_free,
        };
        Ok(StatFs {
            block_size_bytes: BLOCK_SIZE_BYTES as u64,
            blocks_total: space.capacity_blocks.min(used.saturating_add(blocks_free)),
            blocks_free,
            inodes: inner.store.meta.inodes.len() as u64,
        })
    }

    /// Checks the live store (namespace, link counts, data blocks, free space).
    pub fn fsck(&self) -> FsckReport {
        let inner = self.lock();
        let allocated: u64 = inner.active.values().map(|a| a.allocated_blocks).sum();
        fsck::check(&inner.store, allocated + inner.checkpoint_blocks)
    }

    /// A copy of the metadata (O(1)), for tools and tests.
    pub fn meta(&self) -> Meta {
        self.lock().store.meta.clone()
    }

    // --- Changes ---

    /// Creates a regular file.
    pub fn create(
        &self,
        parent: Ino,
        name: &[u8],
        attrs: NewAttrs,
        options: impl Into<TxnOptions>,
    ) -> Result<Attr, FsError> {
        self.create_node(parent, name, NewNode::File, attrs, options.into())
    }

    /// Creates a directory.
    pub fn mkdir(
        &self,
        parent: Ino,
        name: &[u8],
        attrs: NewAttrs,
        options: impl Into<TxnOptions>,
    ) -> Result<Attr, FsError> {
        self.create_node(parent, name, NewNode::Dir, attrs, options.into())
    }

    /// Creates a symbolic link to `target`.
    pub fn symlink(
        &self,
        parent: Ino,
        name: &[u8],
        target: &[u8],
        attrs: NewAttrs,
        options: impl Into<TxnOptions>,
    ) -> Result<Attr, FsError> {
        let node = NewNode::Symlink(target.to_vec());
        self.create_node(parent, name, node, attrs, options.into())
    }

    fn create_node(
        &self,
        parent: Ino,
        name: &[u8],
        node: NewNode,
        attrs: NewAttrs,
        options: TxnOptions,
    ) -> Result<Attr, FsError> {
        let machine = FileTxn::Create(Create {
            parent,
            name: Name::new(name)?,
            node,
            attrs,
            now: (self.shared.options.clock)(),
            state: CreateState::Start,
        });
        let result = self.run(machine, options)?;
        self.attr_of(result)
    }

    fn attr_of(&self, result: TxnResult) -> Result<Attr, FsError> {
        match result {
            TxnResult::Ino(ino) => self.getattr(ino),
            other => Err(FsError::Corrupt(format!("unexpected result {other:?}"))),
        }
    }

    /// Adds the name `name` in `parent` for inode `ino`.
    pub fn link(
        &self,
        ino: Ino,
        parent: Ino,
        name: &[u8],
        options: impl Into<TxnOptions>,
    ) -> Result<Attr, FsError> {
        let machine = FileTxn::Link(Link {
            ino,
            parent,
            name: Name::new(name)?,
            now: (self.shared.options.clock)(),
            linked: false,
        });
        let result = self.run(machine, options.into())?;
        self.attr_of(result)
    }

    /// Removes a name that is not a directory; the inode goes with its last name.
    pub fn unlink(
        &self,
        parent: Ino,
        name: &[u8],
        options: impl Into<TxnOptions>,
    ) -> Result<(), FsError> {
        self.remove(parent, name, false, options.into())
    }

    /// Removes an empty directory.
    pub fn rmdir(
        &self,
        parent: Ino,
        name: &[u8],
        options: impl Into<TxnOptions>,
    ) -> Result<(), FsError> {
        self.remove(parent, name, true, options.into())
    }

    fn remove(
        &self,
        parent: Ino,
        name: &[u8],
        dir: bool,
        options: TxnOptions,
    ) -> Result<(), FsError> {
        let machine = FileTxn::Unlink(Unlink {
            parent,
            name: Name::new(name)?,
            dir,
            now: (self.shared.options.clock)(),
            state: UnlinkState::Start,
        });
        self.run(machine, options).map(|_| ())
    }

    /// Renames `from_parent/from_name` to `to_parent/to_name`.
    pub fn rename(
        &self,
        from_parent: Ino,
        from_name: &[u8],
        to_parent: Ino,
        to_name: &[u8],
        flags: RenameFlags,
        options: impl Into<TxnOptions>,
    ) -> Result<(), FsError> {
        let machine = FileTxn::Rename(crate::txn::machines::Rename {
            from_parent,
            from_name: Name::new(from_name)?,
            to_parent,
            to_name: Name::new(to_name)?,
            flags,
            now: (self.shared.options.clock)(),
            state: crate::txn::machines::RenameState::Start,
        });
        self.run(machine, options.into()).map(|_| ())
    }

    /// Writes `data` at `offset` of file `ino`; returns the bytes written.
    pub fn write(
        &self,
        ino: Ino,
        offset: u64,
        data: &[u8],
        options: impl Into<TxnOptions>,
    ) -> Result<u64, FsError> {
        let machine = FileTxn::Write(Write {
            ino,
            offset,
            len: data.len() as u64,
            now: (self.shared.options.clock)(),
            state: WriteState::Start,
            data: Arc::new(data.to_vec()),
        });
        match self.run(machine, options.into())? {
            TxnResult::Bytes(n) => Ok(n),
            other => Err(FsError::Corrupt(format!("unexpected result {other:?}"))),
        }
    }

    /// Sets the size of file `ino` (data past it is released; growth reads as zeros).
    pub fn truncate(
        &self,
        ino: Ino,
        size: u64,
        options: impl Into<TxnOptions>,
    ) -> Result<Attr, FsError> {
        let changes = SetAttrChanges {
            size: Some(size),
            ..SetAttrChanges::default()
        };
        self.setattr(ino, changes, options)
    }

    /// Changes attributes of `ino`.
    pub fn setattr(
        &self,
        ino: Ino,
        changes: SetAttrChanges,
        options: impl Into<TxnOptions>,
    ) -> Result<Attr, FsError> {
        let machine = FileTxn::SetAttr(SetAttr {
            ino,
            changes,
            now: (self.shared.options.clock)(),
            state: SetAttrState::Start,
        });
        self.run(machine, options.into())?;
        self.getattr(ino)
    }

    // --- Open files ---

    /// A file server opened `ino`: while any handle is open, an inode that loses its last
    /// name stays, nameless, as an orphan (reads and writes go on), until
    /// [`Engine::release`] of its last handle reclaims it. Handles are not durable: after
    /// a crash recovery reclaims every orphan.
    pub fn open(&self, ino: Ino) -> Result<Attr, FsError> {
        // Not a change: a stopped (read-only) engine still opens files to read.
        let mut inner = self.lock();
        let attr = inner.store.meta.inode(ino)?.attr();
        *inner.open.entry(ino).or_insert(0) += 1;
        Ok(attr)
    }

    /// A file server released a handle of `ino` opened by [`Engine::open`]. The last
    /// handle of an orphan reclaims it (an `Async` transaction; recovery reclaims it
    /// should the crash come first).
    pub fn release(&self, ino: Ino) -> Result<(), FsError> {
        let mut inner = self.lock();
        match inner.open.get_mut(&ino) {
            Some(count) if *count > 1 => {
                *count -= 1;
                return Ok(());
            }
            Some(_) => {
                inner.open.remove(&ino);
            }
            None => return Err(FsError::Invalid("release of an inode not open")),
        }
        let orphan = inner
            .store
            .meta
            .inodes
            .get(&ino)
            .is_some_and(|inode| inode.attrs.nlink == 0 && inode.kind != FileKind::Dir);
        drop(inner);
        if orphan {
            self.reclaim(ino, Durability::Async.into())?;
        }
        Ok(())
    }

    /// Inodes held open by a file server.
    pub fn open_count(&self) -> usize {
        self.lock().open.len()
    }

    /// Orphans: inodes with no name and no link (unlinked while open).
    pub fn orphans(&self) -> Vec<Ino> {
        self.lock().store.meta.orphans()
    }

    /// Recovery: reclaims every orphan not held open (after a crash, all of them).
    /// Returns how many.
    pub fn reclaim_orphans(&self) -> Result<u64, FsError> {
        let mut reclaimed = 0;
        for ino in self.orphans() {
            if self.lock().open.contains_key(&ino) {
                continue;
            }
            self.reclaim(ino, Durability::Async.into())?;
            reclaimed += 1;
        }
        Ok(reclaimed)
    }

    fn reclaim(&self, ino: Ino, options: TxnOptions) -> Result<(), FsError> {
        let machine = FileTxn::Reclaim(Reclaim { ino, freed: false });
        self.run(machine, options).map(|_| ())
    }

    /// Makes every commit so far durable.
    pub fn sync(&self) -> Result<(), FsError> {
        if let Some(why) = self.stopped() {
            return Err(FsError::Stopped(why));
        }
        self.shared.log.sync().map_err(|e| self.stop(e.into()))?;
        Ok(())
    }

    fn stop(&self, error: FsError) -> FsError {
        let mut inner = self.lock();
        if inner.stopped.is_none() {
            inner.stopped = Some(error.to_string());
        }
        error
    }

    // --- Running machines ---

    /// Runs a transaction. One refused for space runs again once after a checkpoint taken
    /// now when that checkpoint can give space back: blocks freed since the last one (the
    /// durable image still names them, so they are not reused before a checkpoint), or log
    /// segments it releases when the host file system had no room for new ones. Space a
    /// delete freed is usable at once, not only after the next timed checkpoint.
    fn run(&self, machine: FileTxn, options: TxnOptions) -> Result<TxnResult, FsError> {
        match self.run_once(machine.clone(), options) {
            Err(FsError::NoSpace(why))
                if self.lock().store.meta.space.quarantined_blocks() > 0
                    || self.shared.log.out_of_space() =>
            {
                match self.checkpoint() {
                    Ok(_) => self.run_once(machine, options),
                    // The checkpoint needs blocks for dirty data too; without them the
                    // first answer stands.
                    Err(FsError::NoSpace(_)) => Err(FsError::NoSpace(why)),
                    Err(e) => Err(e),
                }
            }
            other => other,
        }
    }

    fn run_once(&self, machine: FileTxn, options: TxnOptions) -> Result<TxnResult, FsError> {
        let mut inner = self.lock_usable()?;
        if let Some(key) = options.key {
            if let Some(Outcome::Committed(result)) = inner.store.meta.keys.get(&key) {
                return Ok(result);
            }
        }
        let txn_id = inner.store.meta.next_txn_id;
        inner.store.meta.next_txn_id += 1;
        let mut running = Running {
            txn_id,
            key: options.key,
            machine,
            step_no: 0,
            steps: Vec::new(),
            resumed: false,
        };
        let (mut inner, outcome) = self.drive(inner, &mut running);
        let wait_lsn = match outcome {
            Ok((result, lsn)) => {
                drop(inner);
                if options.durability == Durability::Sync {
                    self.wait_durable(lsn)?;
                }
                return Ok(result);
            }
            Err(error) if is_transaction_failure(&error) && inner.stopped.is_none() => {
                let undo: Vec<(Lsn, Vec<Op>)> = running.steps.iter().rev().cloned().collect();
                if undo.is_empty() && running.key.is_none() {
                    // A refusal observed what is logged before it: a sync caller waits
                    // for that, so the answer holds after a crash.
                    inner.active.remove(&txn_id);
                    let observed = inner.store.meta.applied_lsn;
                    drop(inner);
                    if options.durability == Durability::Sync {
                        self.wait_durable(observed)?;
                    }
                    return Err(error);
                }
                match self.roll_back_locked(
                    &mut inner,
                    txn_id,
                    running.key,
                    running.step_no,
                    &undo,
                    error.errno(),
                ) {
                    Ok(lsn) => (lsn, error),
                    Err(failure) => {
                        inner.stopped.get_or_insert_with(|| failure.to_string());
                        return Err(failure);
                    }
                }
            }
            Err(error) => {
                inner.stopped.get_or_insert_with(|| error.to_string());
                return Err(error);
            }
        };
        drop(inner);
        let (lsn, error) = wait_lsn;
        if options.durability == Durability::Sync {
            self.wait_durable(lsn)?;
        }
        Err(error)
    }

    fn wait_durable(&self, lsn: Lsn) -> Result<(), FsError> {
        if lsn == 0 {
            return Ok(());
        }
        self.shared
            .log
            .wait_durable(lsn)
            .map_err(|e| self.stop(e.into()))
    }

    fn append(
        &self,
        inner: &mut Inner<D>,
        txn_id: u64,
        first_step_no: u32,
        records: &[TxnRecord],
    ) -> Result<Lsn, FsError> {
        let payloads: Vec<Vec<u8>> = records.iter().map(TxnRecord::encode).collect();
        let new: Vec<NewRecord<'_>> = records
            .iter()
            .zip(&payloads)
            .enumerate()
            .map(|(i, (record, payload))| NewRecord {
                txn_id,
                step: first_step_no + i as u32,
                kind: record.kind(),
                payload,
            })
            .collect();
        let appended = if uses_reserve(first_step_no, records) {
            self.shared.log.append_reserved(&new)
        } else {
            self.shared.log.append(&new)
        };
        let lsn = match appended {
            Ok(lsn) => lsn,
            Err(LogError::NoSpace) => {
                return Err(FsError::NoSpace(
                    "the host file system has no room for the log's next segment",
                ))
            }
            Err(e) => return Err(e.into()),
        };
        inner.store.meta.applied_lsn = lsn;
        if self.shared.options.sync_every_step {
            self.shared.log.wait_durable(lsn)?;
        }
        Ok(lsn)
    }

    fn record_outcome(&self, inner: &mut Inner<D>, key: Option<RequestKey>, outcome: Outcome) {
        if let Some(key) = key {
            let keys_max = self.shared.options.request_keys_max;
            inner.store.meta.keys.record(key, outcome, keys_max);
        }
    }

    /// Runs `running` until it is done; returns the lock (it may have been released during
    /// a large write's data IO) and the result with the commit's LSN.
    fn drive<'a>(
        &'a self,
        mut inner: Guard<'a, D>,
        running: &mut Running,
    ) -> (Guard<'a, D>, Result<(TxnResult, Lsn), FsError>) {
        loop {
            let context = Context {
                reserved_blocks: inner.store.cache.dirty.len() as u64,
                open: Some(&inner.open),
            };
            let transition = match running.machine.next(&inner.store.meta, &context) {
                Ok(t) => t,
                Err(e) => return (inner, Err(e)),
            };
            match transition {
                Transition::Done(result) => {
                    // A transaction with nothing to log still observed what is logged
                    // before it: a sync caller waits for that.
                    let mut lsn = inner.store.meta.applied_lsn;
                    if running.step_no > 0 || running.key.is_some() || running.resumed {
                        let commit = TxnRecord::Commit {
                            key: running.key,
                            result,
                        };
                        running.step_no += 1;
                        lsn = match self.append(
                            &mut inner,
                            running.txn_id,
                            running.step_no,
                            &[commit],
                        ) {
                            Ok(lsn) => lsn,
                            Err(e) => return (inner, Err(e)),
                        };
                    }
                    inner.active.remove(&running.txn_id);
                    self.record_outcome(&mut inner, running.key, Outcome::Committed(result));
                    return (inner, Ok((result, lsn)));
                }
                Transition::Step {
                    next,
                    redo,
                    undo,
                    result,
                } => {
                    // Blocks allocated now, and dirty data's blocks at the next checkpoint:
                    // the data file holds room for them all on the host before the step is
                    // taken, so no later write of them fails for space.
                    let wanted: u64 = redo
                        .iter()
                        .map(|op| match op {
                            Op::WriteInline { offset, bytes, .. } if !bytes.is_empty() => {
                                let block = BLOCK_SIZE_BYTES as u64;
                                (offset + bytes.len() as u64).div_ceil(block) - offset / block
                            }
                            Op::AllocBlocks { runs } => runs.iter().map(|r| r.len).sum(),
                            _ => 0,
                        })
                        .sum();
                    if wanted > 0 {
                        let dirty = inner.store.cache.dirty.len() as u64;
                        let hold = inner.store.meta.space.blocks_to_hold(dirty + wanted);
                        if let Err(e) = self.shared.data.ensure_len(hold) {
                            return (inner, Err(e));
                        }
                    }
                    running.step_no += 1;
                    let mut records = vec![TxnRecord::Step(StepRecord {
                        machine: next.clone(),
                        key: running.key,
                        redo,
                        undo,
                    })];
                    if let Some(result) = result {
                        records.push(TxnRecord::Commit {
                            key: running.key,
                            result,
                        });
                    }
                    let last_lsn =
                        match self.append(&mut inner, running.txn_id, running.step_no, &records) {
                            Ok(lsn) => lsn,
                            Err(e) => return (inner, Err(e)),
                        };
                    let step_lsn = last_lsn + 1 - records.len() as u64;
                    if result.is_some() {
                        running.step_no += 1;
                    }
                    let TxnRecord::Step(step) = records.swap_remove(0) else {
                        unreachable!("the first record is the step");
                    };
                    if let Err(e) = inner.store.apply(&step.redo, step_lsn) {
                        return (inner, Err(e));
                    }
                    let allocated: u64 = step
                        .redo
                        .iter()
                        .map(|op| match op {
                            Op::AllocBlocks { runs } => runs.iter().map(|r| r.len).sum(),
                            _ => 0,
                        })
                        .sum();
                    let active = inner.active.entry(running.txn_id).or_insert(Active {
                        first_lsn: step_lsn,
                        allocated_blocks: 0,
                    });
                    active.allocated_blocks = allocated;
                    running.steps.push((step_lsn, step.undo));
                    running.machine = next;
                    if let Some(result) = result {
                        inner.active.remove(&running.txn_id);
                        self.record_outcome(&mut inner, running.key, Outcome::Committed(result));
                        return (inner, Ok((result, last_lsn)));
                    }
                }
                Transition::WriteData {
                    next,
                    runs,
                    data_offset,
                } => {
                    let FileTxn::Write(write) = &running.machine else {
                        let e = FsError::Corrupt("only a write writes data".into());
                        return (inner, Err(e));
                    };
                    let data = Arc::clone(&write.data);
                    // Room for these blocks and for every dirty block's, at the next
                    // checkpoint, on the host.
                    let dirty = inner.store.cache.dirty.len() as u64;
                    let hold = inner.store.meta.space.blocks_to_hold(dirty);
                    if let Err(e) = self.shared.data.ensure_len(hold) {
                        return (inner, Err(e));
                    }
                    drop(inner);
                    let written = write_runs(&self.shared.data, &runs, &data[data_offset..]);
                    inner = self.lock();
                    if let Err(e) = written {
                        return (inner, Err(e));
                    }
                    if let Some(why) = &inner.stopped {
                        let e = FsError::Stopped(why.clone());
                        return (inner, Err(e));
                    }
                    running.machine = next;
                }
            }
        }
    }

    fn roll_back_locked(
        &self,
        inner: &mut Inner<D>,
        txn_id: u64,
        key: Option<RequestKey>,
        mut step_no: u32,
        undo: &[(Lsn, Vec<Op>)],
        errno: i32,
    ) -> Result<Lsn, FsError> {
        for (i, (undoes_lsn, ops)) in undo.iter().enumerate() {
            let undo_next_lsn = undo.get(i + 1).map_or(0, |(lsn, _)| *lsn);
            step_no += 1;
            let record = TxnRecord::Compensation {
                undoes_lsn: *undoes_lsn,
                redo: ops.clone(),
                undo_next_lsn,
            };
            let lsn = self.append(inner, txn_id, step_no, &[record])?;
            inner.store.apply(ops, lsn)?;
        }
        step_no += 1;
        let lsn = self.append(inner, txn_id, step_no, &[TxnRecord::Abort { key, errno }])?;
        inner.active.remove(&txn_id);
        self.record_outcome(inner, key, Outcome::RolledBack { errno });
        Ok(lsn)
    }

    /// Recovery: rolls back transaction `txn_id`, undoing `undo` (LSN and undo of each
    /// applied step not yet compensated, newest first), then logging its abort.
    pub fn roll_back(
        &self,
        txn_id: u64,
        key: Option<RequestKey>,
        last_step_no: u32,
        undo: &[(Lsn, Vec<Op>)],
    ) -> Result<(), FsError> {
        let mut inner = self.lock_usable()?;
        let result = self.roll_back_locked(&mut inner, txn_id, key, last_step_no, undo, 0);
        if let Err(e) = &result {
            inner.stopped.get_or_insert_with(|| e.to_string());
        }
        result.map(|_| ())
    }

    /// Recovery: runs the remaining steps of transaction `txn_id` from `machine` (its state
    /// after its last logged step) and commits it. Returns the steps logged.
    pub fn resume(
        &self,
        txn_id: u64,
        key: Option<RequestKey>,
        last_step_no: u32,
        machine: FileTxn,
    ) -> Result<u32, FsError> {
        let inner = self.lock_usable()?;
        let mut running = Running {
            txn_id,
            key,
            machine,
            step_no: last_step_no,
            steps: Vec::new(),
            resumed: true,
        };
        let (mut inner, outcome) = self.drive(inner, &mut running);
        match outcome {
            Ok(_) => Ok(running.step_no - last_step_no),
            Err(e) => {
                let e = FsError::Corrupt(format!(
                    "resuming transaction {txn_id} ({}) failed: {e}",
                    running.machine.describe()
                ));
                inner.stopped.get_or_insert_with(|| e.to_string());
                Err(e)
            }
        }
    }

    /// Recovery: makes transaction ids continue above `max_seen`.
    pub fn advance_txn_id(&self, max_seen: u64) {
        let mut inner = self.lock();
        let next = &mut inner.store.meta.next_txn_id;
        *next = (*next).max(max_seen + 1);
    }

    // --- Checkpoints ---

    /// Writes the dirty state back and a new superblock, then reuses the log before the
    /// oldest record recovery still needs. Commits go on meanwhile, held off only for the
    /// snapshot ([`CheckpointStats::stall`]).
    pub fn checkpoint(&self) -> Result<CheckpointStats, FsError> {
        let _one_at_a_time = self
            .shared
            .checkpoint_lock
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let started = Instant::now();
        let log_id = self.shared.log.meta().log_id;
        // 1. Under the lock, O(dirty blocks) of cheap steps: the dirty cache becomes the
        //    flushing cache (still read from), blocks are allocated for it, and the
        //    metadata is snapshot (O(1)).
        let (mut snapshot, writes, runs, quarantine, scan_start_lsn, seq, stall) = {
            let mut inner = self.lock_usable()?;
            let stall_started = Instant::now();
            let store = &mut inner.store;
            if !store.cache.flushing.is_empty() {
                return Err(self.stop_in(
                    &mut inner,
                    FsError::Corrupt("a checkpoint found another's blocks unfinished".into()),
                ));
            }
            std::mem::swap(&mut store.cache.dirty, &mut store.cache.flushing);
            let writes: Vec<((Ino, u64), Arc<Block>)> = store
                .cache
                .flushing
                .iter()
                .map(|(key, block)| (*key, Arc::clone(block)))
                .collect();
            let mut runs = Vec::new();
            if !writes.is_empty() {
                runs = match store.meta.space.plan(writes.len() as u64) {
                    Ok(runs) => runs,
                    Err(e) => {
                        // Nothing changed yet: the cache goes back.
                        std::mem::swap(&mut store.cache.dirty, &mut store.cache.flushing);
                        return Err(e);
                    }
                };
                // Writers made room for these blocks on the host already; after a crash
                // (the data file's length not yet durable) it may take growing here.
                let end = runs.iter().map(Run::end).max().unwrap_or(0);
                if let Err(e) = self.shared.data.ensure_len(end) {
                    // Nothing changed yet: the cache goes back.
                    let store = &mut inner.store;
                    std::mem::swap(&mut store.cache.dirty, &mut store.cache.flushing);
                    return Err(e);
                }
                let store = &mut inner.store;
                store.meta.space.mark_used(&runs)?;
                inner.checkpoint_blocks = writes.len() as u64;
            }
            let snapshot = inner.store.meta.clone();
            let quarantine = inner.store.meta.space.take_quarantine();
            let scan_start_lsn = inner
                .active
                .values()
                .map(|a| a.first_lsn)
                .min()
                .unwrap_or(snapshot.applied_lsn + 1)
                .min(snapshot.applied_lsn + 1);
            inner.checkpoint_seq += 1;
            inner.log_bytes_at_checkpoint = self.shared.log.stats().written_bytes;
            let seq = inner.checkpoint_seq;
            (
                snapshot,
                writes,
                runs,
                quarantine,
                scan_start_lsn,
                seq,
                stall_started.elapsed(),
            )
        };
        // The snapshot is this checkpoint's own: map the new blocks in it (copy on write:
        // the blocks it names now were never live data).
        // Each block's checksum is taken here, from the bytes about to be written.
        let mut assigned: Vec<((Ino, u64), Mapped, Arc<Block>)> = Vec::with_capacity(writes.len());
        {
            let mut writes = writes;
            writes.sort_unstable_by_key(|(key, _)| *key);
            let blocks = runs.iter().flat_map(|r| r.start..r.end());
            for (((ino, file_block), block), data_block) in writes.into_iter().zip(blocks) {
                let mapped = Mapped {
                    data_block,
                    crc: block_crc(&block[..]),
                };
                assigned.push(((ino, file_block), mapped, block));
            }
            let mut released = Vec::new();
            for ((ino, file_block), mapped, _) in &assigned {
                let Some(inode) = snapshot.inodes.get_mut(ino) else {
                    return Err(self.stop(FsError::Corrupt(format!(
                        "dirty data for missing inode {ino}"
                    ))));
                };
                if let Some(old) = inode.blocks.insert(*file_block, *mapped) {
                    released.push(old);
                }
            }
            if let Err(e) = snapshot.space.release(&runs_of(released.into_iter())) {
                return Err(self.stop(e));
            }
        }
        let writes: Vec<(u64, Arc<Block>)> = assigned
            .iter()
            .map(|(_, mapped, block)| (mapped.data_block, Arc::clone(block)))
            .collect();
        // 2. Without it: the log first (write-ahead), then data, image, superblock.
        let written = (|| {
            self.shared.log.wait_durable(snapshot.applied_lsn)?;
            write_blocks(&self.shared.data, &writes)?;
            if !writes.is_empty() {
                self.shared.data.sync()?;
            }
            let image_bytes = image::encode_image(&snapshot)?;
            let device = self.shared.data.device();
            image::write_image(&**device, seq, &image_bytes)?;
            image::write_super(
                &**device,
                &Superblock {
                    seq,
                    applied_lsn: snapshot.applied_lsn,
                    scan_start_lsn,
                    image_len: image_bytes.len() as u64,
                    image_crc: crc32fast::hash(&image_bytes),
                    log_id,
                },
            )?;
            Ok::<u64, FsError>(image_bytes.len() as u64)
        })();
        let image_bytes = match written {
            Ok(n) => n,
            // The live mapping names blocks that may not hold their data: stop.
            Err(e) => return Err(self.stop(e)),
        };
        // 3. The old image no longer names the quarantined blocks: reuse them. Then the
        //    live store maps the written blocks too, a chunk per lock hold, where no later
        //    change superseded them (a superseded block is only the new image's: released).
        {
            let mut inner = self.lock();
            if let Err(e) = inner.store.meta.space.make_free(&quarantine) {
                return Err(self.stop_in(&mut inner, e));
            }
        }
        const CHUNK: usize = 256;
        let mut stall = stall;
        for chunk in assigned.chunks(CHUNK) {
            let mut inner = self.lock();
            let held = Instant::now();
            let store = &mut inner.store;
            let mut released = Vec::new();
            for (key, mapped, block) in chunk {
                let current = store
                    .cache
                    .flushing
                    .get(key)
                    .is_some_and(|f| Arc::ptr_eq(f, block));
                if current {
                    store.cache.flushing.remove(key);
                    let Some(inode) = store.meta.inodes.get_mut(&key.0) else {
                        return Err(self.stop_in(
                            &mut inner,
                            FsError::Corrupt(format!("flushing data of missing inode {}", key.0)),
                        ));
                    };
                    if let Some(old) = inode.blocks.insert(key.1, *mapped) {
                        released.push(old);
                    }
                } else {
                    released.push(mapped.data_block);
                }
            }
            released.sort_unstable();
            if let Err(e) = store.meta.space.release(&runs_of(released.into_iter())) {
                return Err(self.stop_in(&mut inner, e));
            }
            inner.checkpoint_blocks -= chunk.len() as u64;
            stall = stall.max(held.elapsed());
        }
        // 4. Reuse the log before what recovery needs, and remove older images.
        let released_segments = self
            .shared
            .log
            .release_prefix(scan_start_lsn.saturating_sub(1))
            .map_err(|e| self.stop(e.into()))?;
        self.shared.log.retry_segments();
        image::retire_images(&**self.shared.data.device(), seq, image_bytes);
        Ok(CheckpointStats {
            seq,
            applied_lsn: snapshot.applied_lsn,
            scan_start_lsn,
            written_blocks: writes.len() as u64,
            image_bytes,
            released_segments,
            stall,
            elapsed: started.elapsed(),
        })
    }

    fn stop_in(&self, inner: &mut Inner<D>, error: FsError) -> FsError {
        inner.stopped.get_or_insert_with(|| error.to_string());
        error
    }

    /// Stops automatic checkpoints, checkpoints and makes everything durable; the engine
    /// still takes calls. Call before exit (or before another process opens the directory)
    /// so the next open replays little and finds no thread of this one running.
    pub fn shutdown(&self) -> Result<(), FsError> {
        self.shared.closing.store(true, Ordering::Release);
        let handle = self
            .shared
            .checkpointer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(handle) = handle {
            if handle.thread().id() != std::thread::current().id() {
                let _ = handle.join();
            }
        }
        self.checkpoint()?;
        self.sync()
    }
}

/// A transaction that fails with this error is rolled back and the engine goes on: a
/// refusal, or a data-file write that failed (its blocks are never linked).
/// Whether an append of `records` (the first numbered `first_step_no`) may use the log's
/// reserve on a full host file system: work that frees space or finishes work begun (a
/// later step, a commit or rollback records alone, a delete, rename or setattr). New work
/// that fills space (the first step of a create, link or write, even with its commit) is
/// refused first.
fn uses_reserve(first_step_no: u32, records: &[TxnRecord]) -> bool {
    let first_step = records.iter().find_map(|record| match record {
        TxnRecord::Step(step) => Some(&step.machine),
        _ => None,
    });
    first_step_no > 1
        || first_step.is_none_or(|machine| {
            matches!(
                machine,
                FileTxn::Unlink(_) | FileTxn::Reclaim(_) | FileTxn::SetAttr(_) | FileTxn::Rename(_)
            )
        })
}

fn is_transaction_failure(error: &FsError) -> bool {
    error.is_refusal() || matches!(error, FsError::Io(_))
}

fn created_time<D: Device>(log: &Log<D>) -> Time {
    Time {
        secs: log.meta().created_unix_secs as i64,
        nanos: 0,
    }
}

/// The root's times in a store that has no checkpoint yet: the log's creation time.
pub fn initial_meta<D: Device>(log: &Log<D>, options: &EngineOptions) -> Meta {
    Meta::new(created_time(log), options.capacity_blocks())
}

/// Writes `data` (whole blocks, in order) to `runs` and makes it durable.
fn write_runs<D: Device>(
    data_file: &DataFile<D>,
    runs: &[Run],
    data: &[u8],
) -> Result<(), FsError> {
    let mut offset = 0usize;
    for run in runs {
        let len = run.len as usize * BLOCK_SIZE_BYTES;
        let mut buf = AlignedBuf::new_zeroed(len);
        buf.copy_from_slice(&data[offset..offset + len]);
        data_file.write_blocks(run.start, &buf)?;
        offset += len;
    }
    data_file.sync()
}

/// Writes checkpoint blocks, grouping consecutive data blocks into one write.
fn write_blocks<D: Device>(
    data_file: &DataFile<D>,
    writes: &[(u64, Arc<Block>)],
) -> Result<(), FsError> {
    const GROUP_BLOCKS_MAX: usize = 256;
    let mut buf = AlignedBuf::new_zeroed(GROUP_BLOCKS_MAX * BLOCK_SIZE_BYTES);
    let mut i = 0;
    while i < writes.len() {
        let start = writes[i].0;
        let mut count = 0usize;
        while i + count < writes.len()
            && count < GROUP_BLOCKS_MAX
            && writes[i + count].0 == start + count as u64
        {
            let at = count * BLOCK_SIZE_BYTES;
            buf[at..at + BLOCK_SIZE_BYTES].copy_from_slice(&writes[i + count].1[..]);
            count += 1;
        }
        data_file.write_blocks(start, &buf[..count * BLOCK_SIZE_BYTES])?;
        i += count;
    }
    Ok(())
}

/// The automatic checkpoint thread: checkpoints when enough log or dirty data has piled up.
fn checkpointer<D: Device>(weak: Weak<Shared<D>>) {
    loop {
        std::thread::sleep(Duration::from_millis(20));
        let Some(shared) = weak.upgrade() else {
            return;
        };
        if shared.closing.load(Ordering::Acquire) {
            return;
        }
        let (log_bytes, dirty_bytes, stopped) = {
            let inner = shared.inner.lock().unwrap_or_else(|e| e.into_inner());
            (
                shared.log.stats().written_bytes - inner.log_bytes_at_checkpoint,
                inner.store.cache.dirty_bytes(),
                inner.stopped.is_some(),
            )
        };
        if stopped {
            return;
        }
        let options = shared.options;
        let due = (options.checkpoint_log_bytes > 0 && log_bytes >= options.checkpoint_log_bytes)
            || (options.checkpoint_dirty_bytes > 0
                && dirty_bytes >= options.checkpoint_dirty_bytes);
        if due {
            let engine = Engine { shared };
            if let Err(e) = engine.checkpoint() {
                if !matches!(e, FsError::NoSpace(_)) {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod reserve_tests {
    use super::*;
    use crate::txn::machines::{Reclaim, Write, WriteState};
    use crate::txn::StepRecord;

    fn step(machine: FileTxn) -> TxnRecord {
        TxnRecord::Step(StepRecord {
            machine,
            key: None,
            redo: Vec::new(),
            undo: Vec::new(),
        })
    }

    /// New work that fills space never takes the reserve kept for work that frees it.
    #[test]
    fn only_work_that_frees_space_or_finishes_work_uses_the_log_reserve() {
        let commit = TxnRecord::Commit {
            key: None,
            result: TxnResult::Done,
        };
        let reclaim = FileTxn::Reclaim(Reclaim {
            ino: 5,
            freed: false,
        });
        let write = FileTxn::Write(Write {
            ino: 5,
            offset: 0,
            len: 0,
            now: Time { secs: 0, nanos: 0 },
            state: WriteState::Start,
            data: Arc::new(Vec::new()),
        });
        // A write's first step, even with its commit, fills space: never the reserve.
        assert!(!uses_reserve(1, &[step(write.clone())]));
        assert!(!uses_reserve(1, &[step(write.clone()), commit.clone()]));
        assert!(uses_reserve(2, &[step(write)]));
        // A delete's first step, alone or with its commit.
        assert!(uses_reserve(1, &[step(reclaim.clone())]));
        assert!(uses_reserve(1, &[step(reclaim.clone()), commit.clone()]));
        // A later step of anything, and a commit alone.
        assert!(uses_reserve(2, &[step(reclaim)]));
        assert!(uses_reserve(3, std::slice::from_ref(&commit)));
        assert!(uses_reserve(1, std::slice::from_ref(&commit)));
    }
}
