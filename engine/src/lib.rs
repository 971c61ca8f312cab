//! smlog: a crash-safe logged storage engine for file servers.
//!
//! This crate is the foundation: the on-disk [`mod@format`], the [`io`] device layer (io_uring,
//! posix, and a simulated device with crash faults behind the `sim` feature), and the
//! [`log`] with group commit and a reader that tells a torn tail from corruption.
//! Recovery (`smlog-recovery`) reopens a log after a crash; `docs/FORMAT.md` describes
//! every byte on disk.

pub mod constants;
pub mod format;
pub mod io;
pub mod log;
#[cfg(feature = "sim")]
pub mod testing;

pub use log::{Log, LogError, LogReader, Lsn, NewRecord, Record, RecoveryMode, ScanItem};
