//! The log: preallocated segments, a group-commit writer, and a reader that tells a torn
//! tail from corruption.
//!
//! - [`segment`]: segment names, the `LOG` metadata file, and the thread that keeps the next
//!   segments created and zero-filled off the commit path;
//! - [`writer`]: [`Log`], many appenders sharing one write + one fdatasync per batch;
//! - [`reader`]: [`LogReader`], yielding records, a torn tail, or corruption with its place.
//!
//! Recovery (finding the tail, discarding a torn one for good, refusing corruption) lives in
//! the `smlog-recovery` crate; it drives the reader and reopens the writer at the tail.

use std::path::PathBuf;

use crate::format::DecodeError;
use crate::ids::SegmentSeq;
use crate::io::IoError;

pub mod reader;
pub mod segment;
pub mod writer;

pub use reader::{Damage, LogReader, Record, ScanItem, Tail};
pub use segment::{segment_file_name, META_FILE_NAME};
pub use writer::{Log, LogStats, NewRecord};

pub use crate::ids::Lsn;

/// Everything the log can fail with. Every variant names where.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LogError {
    /// A device operation failed.
    #[error(transparent)]
    Io(#[from] IoError),
    /// The directory holds no `LOG` file.
    #[error("{} is not an smlog log directory (no LOG file); create one first", path.display())]
    NotALog {
        /// The directory.
        path: PathBuf,
    },
    /// The directory already holds a log.
    #[error("{} already holds a log", path.display())]
    AlreadyExists {
        /// The `LOG` file.
        path: PathBuf,
    },
    /// The `LOG` file is damaged or of another version.
    #[error("{}: {why}", path.display())]
    BadMeta {
        /// The `LOG` file.
        path: PathBuf,
        /// What is wrong.
        why: DecodeError,
    },
    /// A segment the log needs is missing.
    #[error("segment {segment_seq} is missing: {}", path.display())]
    MissingSegment {
        /// Its sequence number.
        segment_seq: SegmentSeq,
        /// The path it should have.
        path: PathBuf,
    },
    /// Damage before the durable mark: records that were durable cannot be read.
    #[error(
        "corruption in segment {segment_seq} ({}) at offset {offset}, LSN {lsn}: {why}",
        path.display()
    )]
    Corrupt {
        /// Segment sequence number.
        segment_seq: SegmentSeq,
        /// Segment path.
        path: PathBuf,
        /// Byte offset in the segment.
        offset: u64,
        /// The LSN expected there.
        lsn: Lsn,
        /// What is wrong.
        why: String,
    },
    /// Strict recovery found a torn tail.
    #[error(
        "torn tail in segment {segment_seq} ({}) at offset {offset}, LSN {lsn}: {why} \
         (strict mode refuses it; torn-tail mode discards it)",
        path.display()
    )]
    TornTail {
        /// Segment sequence number.
        segment_seq: SegmentSeq,
        /// Segment path.
        path: PathBuf,
        /// Byte offset in the segment.
        offset: u64,
        /// The LSN expected there.
        lsn: Lsn,
        /// What is wrong.
        why: String,
    },
    /// An earlier write or sync failed: nothing after it is acknowledged (fail-stop).
    #[error("the log stopped after a failed write or sync and refuses commits: {cause}")]
    Failed {
        /// The first failure.
        cause: Box<LogError>,
    },
    /// The log was closed.
    #[error("the log is closed")]
    Closed,
    /// A record is larger than the format allows.
    #[error("record payload of {len_bytes} bytes exceeds the maximum of {max_bytes}")]
    RecordTooLarge {
        /// Payload length.
        len_bytes: usize,
        /// Maximum.
        max_bytes: usize,
    },
    /// An append's records together do not fit in one batch.
    #[error("append of {size_bytes} bytes does not fit in one batch of {max_bytes}")]
    AppendTooLarge {
        /// Bytes the records need.
        size_bytes: usize,
        /// Bytes a batch holds.
        max_bytes: usize,
    },
    /// Kind 0 is reserved.
    #[error("record kind 0 is reserved")]
    InvalidKind,
    /// The host file system has no room for the log's next segment: the append is refused
    /// and nothing else fails (a checkpoint that releases a segment makes room again).
    #[error(
        "no space left on the host file system for the log's next segment (ENOSPC): free \
         at least one segment's size there"
    )]
    NoSpace,
    /// Options out of bounds.
    #[error("invalid options: {0}")]
    InvalidOptions(String),
}

impl LogError {
    /// The errno a file server would return.
    pub fn errno(&self) -> i32 {
        match self {
            LogError::Io(e) => e.kind.errno(),
            LogError::RecordTooLarge { .. } | LogError::AppendTooLarge { .. } => libc::EFBIG,
            LogError::InvalidKind | LogError::InvalidOptions(_) => libc::EINVAL,
            LogError::NoSpace => libc::ENOSPC,
            LogError::NotALog { .. } | LogError::MissingSegment { .. } => libc::ENOENT,
            LogError::AlreadyExists { .. } => libc::EEXIST,
            LogError::Failed { cause } => cause.errno(),
            LogError::BadMeta { .. }
            | LogError::Corrupt { .. }
            | LogError::TornTail { .. }
            | LogError::Closed => libc::EIO,
        }
    }
}

/// How recovery treats damage in the log.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RecoveryMode {
    /// Any damage, even a torn tail, is an error.
    Strict,
    /// A torn tail is discarded; damage before the durable mark is an error. The default.
    #[default]
    TornTail,
    /// Keep every valid record and report every gap. For an operator, never automatic.
    Salvage,
}

impl std::str::FromStr for RecoveryMode {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "strict" => Ok(RecoveryMode::Strict),
            "torn-tail" => Ok(RecoveryMode::TornTail),
            "salvage" => Ok(RecoveryMode::Salvage),
            other => Err(format!(
                "unknown recovery mode {other:?}: strict, torn-tail or salvage"
            )),
        }
    }
}

impl std::fmt::Display for RecoveryMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RecoveryMode::Strict => "strict",
            RecoveryMode::TornTail => "torn-tail",
            RecoveryMode::Salvage => "salvage",
        })
    }
}
