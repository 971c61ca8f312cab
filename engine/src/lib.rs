//! smlog: a crash-safe logged storage engine for file servers.
//!
//! # Start here
//!
//! Open an engine directory with `smlog_recovery::open` (crate `smlog-recovery`): it
//! recovers whatever a crash left (every acknowledged transaction is there, none is half
//! visible) or, with `create`, makes a new file system, and hands back an [`Engine`]:
//!
//! ```no_run
//! use smlog::{Durability, NewAttrs, ROOT_INO};
//! use smlog_recovery::OpenOptions;
//!
//! let options = OpenOptions { create: true, ..OpenOptions::default() };
//! let (engine, report) = smlog_recovery::open("/var/tmp/myfs".as_ref(), options)?;
//! println!("{} transactions were in flight", report.in_flight.len());
//! let attrs = NewAttrs { mode: 0o644, uid: 0, gid: 0, umask: 0 };
//! let file = engine.create(ROOT_INO, b"hello", attrs, Durability::Sync)?;
//! engine.write(file.ino, 0, b"world", Durability::Sync)?;
//! engine.shutdown()?;
//! # Ok::<(), smlog::FsError>(())
//! ```
//!
//! Recovery lives in its own crate because it drives the engine from a log it reads; this
//! crate is the engine those calls return.
//!
//! # The parts
//!
//! - [`Engine`]: runs every file operation as a logged transaction, owns durability and
//!   checkpoints; its options, errors ([`FsError`]) and the types of its calls are at the
//!   crate root.
//! - [`mod@log`]: the group-commit log on its own (a write-ahead log for any use), and a
//!   reader that tells a torn tail from corruption; [`mod@format`]: its bytes on disk.
//! - [`io`]: the device layer (io_uring, posix, and a simulated device with crash faults
//!   behind the `sim` feature); [`serve`]: what a file server maps between its protocol
//!   and the engine; [`constants`]: every limit.
//!
//! The store and the transaction machines are private: what recovery, the tools and the
//! tests need of them is [`internals`] (hidden from these docs, not an API for file
//! servers). `docs/FORMAT.md` describes every byte on disk.

pub mod constants;
mod engine;
mod error;
pub mod format;
mod ids;
pub mod io;
pub mod log;
pub mod serve;
mod store;
#[cfg(feature = "sim")]
pub mod testing;
mod txn;

pub use engine::{
    CheckpointStats, DirEntry, Durability, Engine, EngineOptions, Export, StatFs, TxnOptions,
};
pub use error::{CorruptKind, FsError, LayoutProblem};
pub use ids::{Ino, Lsn, SegmentSeq, TxnId, ROOT_INO};
pub use log::{Log, LogError, LogReader, NewRecord, Record, RecoveryMode, ScanItem};
pub use store::fsck::FsckReport;
pub use store::{EntryId, FileKind, Outcome, RequestKey, Stat, Time, TxnResult};
pub use txn::machines::{FallocMode, NewAttrs, XattrFlags};
pub use txn::{RenameFlags, SetAttrChanges};

/// The engine's insides that `smlog-recovery`, the `smlog` tool and the tests need: the
/// store (metadata, data file, images, fsck), the transaction machines and records, the
/// recovery decision table, and the hooks recovery drives the engine with
/// ([`Engine::from_recovery`], [`Engine::resume`], [`Engine::roll_back`],
/// [`Engine::advance_txn_id`], [`Log::open_at`]). Not an API for file servers: it changes
/// with any release.
#[doc(hidden)]
pub mod internals {
    pub use crate::engine::{initial_meta, ReadBlocks};
    pub use crate::store::{
        block_crc, check_symlink_target, fsck, image, runs_of, space, Attrs, Block, BlockMap,
        Cache, DataFile, FsMeta, Inode, Mapped, Name, Op, RequestTable, Run, Space, Store,
        DATA_FILE_NAME,
    };
    pub use crate::txn::machines;
    pub use crate::txn::{
        apply_logged, kind, Analysis, Context, Decision, FileTxn, Machine, NewNode, StepRecord,
        Transition, TxnEnd, TxnRecord, TxnTrack,
    };
}
