//! smlog: a crash-safe logged storage engine for file servers.
//!
//! - [`mod@format`]: the log's on-disk records; [`io`]: the device layer (io_uring, posix,
//!   and a simulated device with crash faults behind the `sim` feature); [`log`]: group
//!   commit and a reader that tells a torn tail from corruption.
//! - [`store`]: the file system's state, checkpoints and the data file; [`txn`]: file
//!   transactions as logged state machines; [`Engine`]: runs them, owns durability;
//!   [`serve`]: what a file server maps between its protocol and the engine.
//!
//! Recovery (`smlog-recovery`) reopens an engine after a crash, resuming or rolling back
//! every transaction that was in flight; `docs/FORMAT.md` describes every byte on disk.

pub mod constants;
pub mod engine;
pub mod error;
pub mod format;
pub mod io;
pub mod log;
pub mod serve;
pub mod store;
#[cfg(feature = "sim")]
pub mod testing;
pub mod txn;

pub use engine::{
    CheckpointStats, DirEntry, Durability, Engine, EngineOptions, StatFs, TxnOptions,
};
pub use error::{CorruptKind, FsError, LayoutProblem};
pub use log::{Log, LogError, LogReader, Lsn, NewRecord, Record, RecoveryMode, ScanItem};
pub use store::{Attr, FileKind, Ino, Outcome, RequestKey, Time, TxnResult, ROOT_INO};
pub use txn::machines::NewAttrs;
pub use txn::{RenameFlags, SetAttrChanges};
