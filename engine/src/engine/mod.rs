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
//!
//! The rooms: this file holds the engine's state, opening and closing; [`mod@self`]'s
//! `reads` the read API, `changes` the calls that change the file system, `run` the run
//! loop with the write-ahead rule, `checkpoint` the checkpoint in phases.

mod changes;
mod checkpoint;
mod export;
mod reads;
mod run;
mod types;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::error::FsError;
use crate::format::LogMeta;
use crate::ids::TxnId;
use crate::io::Device;
use crate::log::{Log, Lsn};
use crate::store::image;
use crate::store::{DataFile, FsMeta, Ino, Store, Time};

pub use export::{Export, ReadBlocks};
pub use types::{CheckpointStats, DirEntry, Durability, EngineOptions, StatFs, TxnOptions};

/// A transaction in flight, as the checkpoint and fsck need to know.
#[derive(Clone, Copy, Debug)]
pub(super) struct Active {
    pub(super) first_lsn: Lsn,
    pub(super) allocated_blocks: u64,
}

#[derive(Debug)]
struct Inner<D: Device> {
    store: Store<D>,
    active: BTreeMap<TxnId, Active>,
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
    /// The store and the transactions running: changes take it exclusively, reads shared
    /// (a read's device calls for uncached blocks run beside other reads').
    inner: RwLock<Inner<D>>,
    checkpoint_lock: Mutex<()>,
    options: EngineOptions,
    closing: AtomicBool,
    checkpointer: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Exports alive ([`Export`]): while any is, checkpoints leave the quarantine be, so no
    /// block an export names is reused.
    exports: AtomicUsize,
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

type Guard<'a, D> = RwLockWriteGuard<'a, Inner<D>>;
type View<'a, D> = RwLockReadGuard<'a, Inner<D>>;

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
        let meta = initial_meta(&log.meta(), options.capacity_blocks());
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
    #[doc(hidden)]
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
                inner: RwLock::new(Inner {
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
                exports: AtomicUsize::new(0),
            }),
        };
        if options.checkpoint_log_bytes > 0 || options.checkpoint_dirty_bytes > 0 {
            let weak = Arc::downgrade(&engine.shared);
            let handle = std::thread::Builder::new()
                .name("smlog-checkpoint".into())
                .spawn(move || checkpoint::checkpointer(weak))
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
        self.shared.inner.write().unwrap_or_else(|e| e.into_inner())
    }

    /// The store, shared with other readers: for what changes nothing.
    fn view(&self) -> View<'_, D> {
        self.shared.inner.read().unwrap_or_else(|e| e.into_inner())
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

    fn stop_in(&self, inner: &mut Inner<D>, error: FsError) -> FsError {
        inner.stopped.get_or_insert_with(|| error.to_string());
        error
    }

    /// Stops automatic checkpoints, checkpoints and makes everything durable; the engine
    /// still takes calls. Call before exit (or before another process opens the directory)
    /// so the next open replays little and finds no thread of this one running.
    pub fn shutdown(&self) -> Result<(), FsError> {
        self.stop_checkpointer();
        self.checkpoint()?;
        self.sync()
    }

    /// Stops this engine for good and writes nothing more to its directory: automatic
    /// checkpoints end, the log prepares no more segments, and every later change,
    /// checkpoint and sync is refused with [`FsError::Stopped`] naming `why`. Reads of
    /// what it holds in memory still answer. For when its directory is about to be
    /// replaced (a replica installing a snapshot) while others may still hold the engine.
    pub fn retire(&self, why: &str) {
        self.stop_checkpointer();
        self.lock().stopped.get_or_insert_with(|| why.to_owned());
        self.shared.log.stop_preparing();
    }

    fn stop_checkpointer(&self) {
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
    }
}

/// The metadata of a store that has no checkpoint yet: an empty file system whose root's
/// times are the log's creation time, so that every recovery of it starts alike.
pub fn initial_meta(log_meta: &LogMeta, capacity_blocks: u64) -> FsMeta {
    let created = Time {
        secs: log_meta.created_unix_secs as i64,
        nanos: 0,
    };
    FsMeta::new(created, capacity_blocks)
}
