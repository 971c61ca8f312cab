//! The engine's public option and report types.

use std::time::Duration;

use crate::constants::{BLOCK_SIZE_BYTES, REQUEST_KEYS_DEFAULT};
use crate::ids::Lsn;
use crate::store::{EntryId, FileKind, Ino, RequestKey, Time};

/// When a call returns relative to durability.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Durability {
    /// Return once the commit is durable (shared with concurrent commits). The default.
    #[default]
    Sync,
    /// Return at once; a later `Sync` commit or [`Engine::sync`](super::Engine::sync) makes it durable (NFS
    /// UNSTABLE writes and COMMIT).
    Async,
}

/// Per-call options: durability, the caller's request key, and what a replica needs to
/// apply a replicated operation exactly as its leader did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TxnOptions {
    /// When to return.
    pub durability: Durability,
    /// The request, so a retransmission is answered exactly once (see [`Engine::outcome`](super::Engine::outcome)).
    pub key: Option<RequestKey>,
    /// The time stamped on what the call changes, instead of the engine's clock: a replica
    /// applies an operation with the time its leader chose.
    pub now: Option<Time>,
    /// The replicated-log entry this call applies: logged with its outcome, so that after
    /// a crash [`Engine::applied_entry`](super::Engine::applied_entry) names the newest one
    /// the engine holds.
    pub entry: Option<EntryId>,
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
            ..TxnOptions::default()
        }
    }
}

impl From<Durability> for TxnOptions {
    fn from(durability: Durability) -> TxnOptions {
        TxnOptions {
            durability,
            ..TxnOptions::default()
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
