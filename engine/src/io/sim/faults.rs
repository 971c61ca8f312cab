//! What the simulated device can be told to do: faults while running ([`FaultConfig`]),
//! what a crash keeps ([`CrashPlan`]), and the record of what it did ([`FaultEvent`]).

use rand::Rng;

use super::IoErrorKind;

/// What a torn write leaves in the part that did not make it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TornFill {
    /// The bytes that were there before.
    Old,
    /// Zeros.
    Zeros,
    /// Random bytes.
    Garbage,
}

/// Faults injected while the device runs. Probabilities are per operation, in percent.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FaultConfig {
    /// Crash when this many mutating operations (writes, syncs) have started; that
    /// operation's write is in flight (fault 4) and it fails with `Crashed`.
    pub crash_after_ops: Option<u64>,
    /// The write operation with this number fails with this error (fault 11).
    pub fail_write_at_op: Option<(u64, IoErrorKind)>,
    /// The write operation with this number applies only its first half, then fails with
    /// ENOSPC (a short write, fault 11).
    pub short_write_at_op: Option<u64>,
    /// The sync operation with this number fails with EIO (fault 11).
    pub fail_sync_at_op: Option<u64>,
    /// Percent of writes that are acknowledged but never reach the durable image (fault 7).
    pub lost_write_percent: u8,
    /// The write operation with this number is acknowledged but never reaches the durable
    /// image (fault 7, at an exact place).
    pub lose_write_at_op: Option<u64>,
    /// Percent of writes that land at another block of the same file (fault 6).
    pub misdirected_write_percent: u8,
    /// The write operation with this number lands at another block (fault 6, at an exact
    /// place).
    pub misdirect_write_at_op: Option<u64>,
    /// Percent of reads that return another block of the same file (fault 8).
    pub misdirected_read_percent: u8,
    /// Files the misdirected and lost writes and misdirected reads above never touch (a
    /// harness spares files whose format cannot detect such damage).
    pub spared_files: Vec<String>,
}

/// What happens at a crash to what was not durable, and to what was.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CrashPlan {
    /// Percent of pending writes kept whole (fault 2).
    pub keep_percent: u8,
    /// Percent of pending writes torn (fault 3); the rest are lost (fault 1).
    pub torn_percent: u8,
    /// Apply the surviving writes in a random order rather than the order they completed.
    pub reorder: bool,
    /// Bits to flip in durable, written data of random files (fault 10).
    pub bit_rot_count: u32,
    /// Old writes to resurrect over all-zero sectors (fault 5: stale data past the tail).
    pub resurrect_count: u32,
    /// Sectors of written data that return EIO on every read from now on (fault 9).
    pub bad_sector_count: u32,
    /// Files bit rot, resurrection and unreadable sectors never touch.
    pub spared_files: Vec<String>,
}

impl CrashPlan {
    /// Power loss: every unsynced write is lost.
    pub fn power_loss() -> CrashPlan {
        CrashPlan {
            keep_percent: 0,
            torn_percent: 0,
            reorder: false,
            bit_rot_count: 0,
            resurrect_count: 0,
            bad_sector_count: 0,
            spared_files: Vec::new(),
        }
    }

    /// Every unsynced write survives whole (a clean stop).
    pub fn keep_all() -> CrashPlan {
        CrashPlan {
            keep_percent: 100,
            ..CrashPlan::power_loss()
        }
    }

    /// A random mix of kept, torn and lost writes in a random order, without damage to
    /// durable data (faults 1-5).
    pub fn random_unsynced<R: Rng>(rng: &mut R) -> CrashPlan {
        let keep_percent = rng.gen_range(0..=100u8);
        let torn_percent = rng.gen_range(0..=(100 - keep_percent));
        CrashPlan {
            keep_percent,
            torn_percent,
            reorder: rng.gen_bool(0.5),
            bit_rot_count: 0,
            resurrect_count: rng.gen_range(0..3),
            bad_sector_count: 0,
            spared_files: Vec::new(),
        }
    }
}

/// One fault the device applied, for tests that check a fault was reached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FaultEvent {
    /// An unsynced write was lost at a crash.
    Lost {
        /// File name.
        file: String,
        /// Offset of the write.
        offset: u64,
    },
    /// An unsynced write survived whole.
    Kept {
        /// File name.
        file: String,
        /// Offset of the write.
        offset: u64,
    },
    /// An unsynced write was torn.
    Torn {
        /// File name.
        file: String,
        /// Offset of the write.
        offset: u64,
        /// Tearing unit: 512 or 4096.
        unit_bytes: usize,
        /// Bytes that survived.
        kept_bytes: usize,
        /// Whether the surviving part is the prefix (else the suffix).
        prefix: bool,
        /// What replaced the rest.
        fill: TornFill,
    },
    /// The surviving writes were applied out of order.
    Reordered,
    /// The operation in flight at the crash.
    InFlight {
        /// File name.
        file: String,
        /// Offset of the write.
        offset: u64,
    },
    /// A stale write came back over zeroed sectors.
    Resurrected {
        /// File name.
        file: String,
        /// Offset of the sector run.
        offset: u64,
    },
    /// A bit flipped in durable data.
    BitRot {
        /// File name.
        file: String,
        /// Byte offset.
        offset: u64,
    },
    /// A sector became unreadable.
    BadSector {
        /// File name.
        file: String,
        /// Byte offset of the sector.
        offset: u64,
    },
    /// A write was acknowledged and lost.
    LostWrite {
        /// File name.
        file: String,
        /// Offset of the write.
        offset: u64,
    },
    /// A write landed elsewhere.
    MisdirectedWrite {
        /// File name.
        file: String,
        /// Intended offset.
        offset: u64,
        /// Where it landed.
        landed: u64,
    },
    /// A read returned another block.
    MisdirectedRead {
        /// File name.
        file: String,
        /// Requested offset.
        offset: u64,
    },
    /// A read hit an unreadable sector.
    ReadError {
        /// File name.
        file: String,
        /// Offset of the read.
        offset: u64,
    },
    /// A write failed.
    WriteFailed {
        /// File name.
        file: String,
        /// Offset.
        offset: u64,
        /// Whether part of it was applied first.
        short: bool,
    },
    /// A sync failed.
    SyncFailed {
        /// File name.
        file: String,
    },
    /// A name created or renamed since the last directory sync was lost at a crash.
    NameLost {
        /// The name.
        name: String,
    },
}

impl FaultEvent {
    /// The fault's kind, with its number in DESIGN section 6: `"torn (3)"`.
    pub fn kind(&self) -> &'static str {
        match self {
            FaultEvent::Lost { .. } => "unsynced write lost (1)",
            FaultEvent::Kept { .. } => "unsynced write kept (2)",
            FaultEvent::Torn { .. } => "torn write (3)",
            FaultEvent::Reordered => "writes reordered (2)",
            FaultEvent::InFlight { .. } => "write in flight (4)",
            FaultEvent::Resurrected { .. } => "stale data resurrected (5)",
            FaultEvent::MisdirectedWrite { .. } => "misdirected write (6)",
            FaultEvent::LostWrite { .. } => "lost write (7)",
            FaultEvent::MisdirectedRead { .. } => "misdirected read (8)",
            FaultEvent::BadSector { .. } => "unreadable sector (9)",
            FaultEvent::ReadError { .. } => "read EIO (9)",
            FaultEvent::BitRot { .. } => "bit rot (10)",
            FaultEvent::WriteFailed { short: true, .. } => "short write (11)",
            FaultEvent::WriteFailed { .. } => "write failed (11)",
            FaultEvent::SyncFailed { .. } => "fdatasync failed (11)",
            FaultEvent::NameLost { .. } => "unsynced name lost (14)",
        }
    }
}
