//! The recovery pass for smlog: scan a log after a crash, find its durable tail, discard a
//! torn tail for good, refuse corruption before the durable mark (or, in salvage mode, keep
//! every valid record and report every gap), and reopen the log for writing.
//!
//! ```no_run
//! use std::sync::Arc;
//! use smlog::io::{open_dir, DeviceOptions};
//! use smlog_recovery::{open_log, RecoveryOptions};
//!
//! let device = Arc::new(open_dir("/var/tmp/log".as_ref(), DeviceOptions::default())?);
//! let (log, report) = open_log(device, RecoveryOptions::default(), |_record| {})?;
//! println!("{} records, next LSN {}", report.record_count, report.tail.next_lsn);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Recovery is idempotent: running it again, or crashing while it runs and running it
//! again, finds the same records and the same tail.

use std::collections::BTreeMap;
use std::sync::Arc;

use smlog::constants::{batch_size_bytes_max, BATCHES_IN_FLIGHT_MAX, SEGMENT_HEADER_SIZE_BYTES};
use smlog::format::LogMeta;
use smlog::io::{AlignedBuf, Device, IoErrorKind};
use smlog::log::reader::Damage;
use smlog::log::{segment_file_name, Tail};
use smlog::{Log, LogError, LogReader, Record, RecoveryMode, ScanItem};

mod engine;
#[cfg(feature = "sim")]
pub mod harness;

pub use engine::{inspect, open, open_device, EngineRecoveryReport, InFlight, OpenOptions};

/// How to recover.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RecoveryOptions {
    /// What damage is acceptable.
    pub mode: RecoveryMode,
    /// Scan and report only; write nothing.
    pub dry_run: bool,
}

/// What recovery found and did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecoveryReport {
    /// The mode used.
    pub mode: RecoveryMode,
    /// The log's metadata.
    pub meta: LogMeta,
    /// Segment files from the first live one.
    pub segment_count: usize,
    /// Valid records.
    pub record_count: u64,
    /// Valid batches.
    pub batch_count: u64,
    /// Bytes of valid batches.
    pub batch_bytes: u64,
    /// Bytes read.
    pub read_bytes: u64,
    /// Records per kind.
    pub kind_counts: BTreeMap<u16, u64>,
    /// The torn tail that was discarded (or would be, in a dry run).
    pub torn_tail: Option<Damage>,
    /// Gaps skipped in salvage mode.
    pub gaps: Vec<Damage>,
    /// Where the writer resumes.
    pub tail: Tail,
    /// Bytes zeroed past the tail so discarded bytes can never come back.
    pub scrubbed_bytes: u64,
}

/// Scans the log on `device`, calling `on_record` for every valid record in LSN order,
/// and applies `options.mode` to the damage it finds. Writes nothing.
pub fn scan<D: Device + ?Sized>(
    device: &D,
    mode: RecoveryMode,
    mut on_record: impl FnMut(&Record),
) -> Result<RecoveryReport, LogError> {
    std::thread::scope(|scope| {
        let mut reader = LogReader::open(device)?;
        // The next chunk is read while this one is checked (not when the device wants its
        // IO on the calling thread, for deterministic runs).
        if !device.wants_inline_io() {
            reader.read_ahead(scope);
        }
        scan_with(reader, mode, &mut on_record)
    })
}

fn scan_with<D: Device + ?Sized>(
    mut reader: LogReader<'_, D>,
    mode: RecoveryMode,
    on_record: &mut impl FnMut(&Record),
) -> Result<RecoveryReport, LogError> {
    let mut torn_tail = None;
    let mut gaps = Vec::new();
    while let Some(item) = reader.next_item()? {
        match item {
            ScanItem::Record(record) => on_record(&record),
            ScanItem::TornTail(damage) => {
                if mode == RecoveryMode::Strict {
                    return Err(LogError::TornTail {
                        segment_seq: damage.segment_seq,
                        path: damage.path,
                        offset: damage.offset,
                        lsn: damage.lsn,
                        why: damage.why,
                    });
                }
                torn_tail = Some(damage);
            }
            ScanItem::Corrupt(damage) => {
                if mode != RecoveryMode::Salvage {
                    return Err(LogError::Corrupt {
                        segment_seq: damage.segment_seq,
                        path: damage.path,
                        offset: damage.offset,
                        lsn: damage.lsn,
                        why: damage.why,
                    });
                }
                gaps.push(damage);
            }
        }
    }
    let stats = reader.stats().clone();
    Ok(RecoveryReport {
        mode,
        meta: *reader.meta(),
        segment_count: reader.segment_count(),
        record_count: stats.record_count,
        batch_count: stats.batch_count,
        batch_bytes: stats.batch_bytes,
        read_bytes: stats.read_bytes,
        kind_counts: stats.kind_counts,
        torn_tail,
        gaps,
        tail: reader.tail(),
        scrubbed_bytes: 0,
    })
}

/// Zeroes, durably, every byte past the tail that the last writer could have written
/// without syncing (as many batches as may be in flight, in the tail's segment and at the
/// start of the next), so that nothing discarded now can be read as part of the log later.
fn scrub_past_tail<D: Device + ?Sized>(
    device: &D,
    meta: &LogMeta,
    tail: &Tail,
) -> Result<u64, LogError> {
    let batch_max = batch_size_bytes_max(meta.segment_size_bytes) as u64;
    let reach = SEGMENT_HEADER_SIZE_BYTES as u64 + BATCHES_IN_FLIGHT_MAX as u64 * batch_max;
    let zeros = AlignedBuf::new_zeroed(reach as usize);
    let mut scrubbed = 0u64;
    let ranges = [
        (tail.segment_seq, tail.segment_offset),
        (tail.segment_seq + 1, 0),
    ];
    for (seq, from) in ranges {
        let file = match device.open(&segment_file_name(seq), false) {
            Ok(file) => file,
            Err(e) if e.kind == IoErrorKind::NotFound => continue,
            Err(e) => return Err(e.into()),
        };
        let result = (|| {
            let len = device.len(file)?.min(meta.segment_size_bytes);
            let end = (from + zeros.len() as u64).min(len);
            if end <= from {
                return Ok(0);
            }
            let bytes = (end - from) as usize;
            device.write_durable_at(file, from, &zeros[..bytes])?;
            Ok(bytes as u64)
        })();
        device.close(file);
        scrubbed += result.map_err(LogError::Io)?;
    }
    Ok(scrubbed)
}

/// Recovers the log on `device` and opens it for writing at its tail. `on_record` sees every
/// valid record in LSN order. With `options.dry_run` nothing is written and no log is
/// returned: use [`scan`].
pub fn open_log<D: Device>(
    device: Arc<D>,
    options: RecoveryOptions,
    on_record: impl FnMut(&Record),
) -> Result<(Log<D>, RecoveryReport), LogError> {
    if options.dry_run {
        return Err(LogError::InvalidOptions(
            "a dry run opens no log; call smlog_recovery::scan".into(),
        ));
    }
    let mut report = scan(&*device, options.mode, on_record)?;
    let log = reopen_after_scan(device, &mut report)?;
    Ok((log, report))
}

/// The writing half of [`open_log`], after a scan whose report the caller has checked:
/// scrubs past the tail, opens the writer there and writes its durable mark. Nothing is
/// written before this, so a caller that refuses what the scan found leaves the log as it
/// was.
pub(crate) fn reopen_after_scan<D: Device>(
    device: Arc<D>,
    report: &mut RecoveryReport,
) -> Result<Log<D>, LogError> {
    report.scrubbed_bytes = scrub_past_tail(&*device, &report.meta, &report.tail)?;
    let log = Log::open_at(device, report.meta, &report.tail)?;
    log.write_mark()?;
    Ok(log)
}

/// Opens the log in `device`'s directory, creating it when there is none.
pub fn open_or_create<D: Device>(
    device: Arc<D>,
    options: RecoveryOptions,
    create: smlog::log::writer::CreateOptions,
    on_record: impl FnMut(&Record),
) -> Result<(Log<D>, Option<RecoveryReport>), LogError> {
    match smlog::log::segment::read_meta(&*device) {
        Err(LogError::NotALog { .. }) => Ok((Log::create(device, create)?, None)),
        Err(e) => Err(e),
        Ok(_) => {
            let (log, report) = open_log(device, options, on_record)?;
            Ok((log, Some(report)))
        }
    }
}
