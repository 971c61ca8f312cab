//! Recovery of the engine: load the newest checkpoint, scan the log from where that
//! checkpoint says, redo what the image is missing, then resume or roll back every
//! transaction that was in flight.
//!
//! 1. **Analysis and redo** (one pass over the log from the checkpoint's scan start):
//!    every record feeds the transaction table; a record past the image's applied LSN has
//!    its redo applied where the object's LSN shows the effect missing (repeating history,
//!    in-flight transactions included).
//! 2. **Finish**: each transaction with no commit or abort is resumed or rolled back by the
//!    decision table of [`smlog::internals::TxnTrack::decision`]; both log records as they go, so
//!    a crash during recovery leaves a log the next recovery continues from.

use std::path::Path;
use std::sync::Arc;

use serde::Serialize;
use smlog::constants::BLOCK_SIZE_BYTES;
use smlog::internals::image::{self, Superblock};
use smlog::internals::{
    initial_meta, Analysis, DataFile, Decision, FsMeta, Machine, Store, TxnRecord, TxnTrack,
    DATA_FILE_NAME,
};
use smlog::io::{open_dir, AlignedBuf, Device, DeviceOptions, LOCK_FILE_NAME};
use smlog::log::segment::{parse_segment_file_name, read_meta, META_TEMP_FILE_NAME};
use smlog::log::META_FILE_NAME;
use smlog::CorruptKind;
use smlog::{Engine, EngineOptions, FsError, LayoutProblem, LogError, Lsn, Record, RequestKey};

use crate::{reopen_after_scan, scan, RecoveryOptions, RecoveryReport};
use smlog::SegmentSeq;
use smlog::TxnId;

/// How to open an engine.
#[derive(Clone, Copy, Debug, Default)]
pub struct OpenOptions {
    /// Recovery mode, and dry run (scan and decide, write nothing).
    pub recovery: RecoveryOptions,
    /// How the engine runs.
    pub engine: EngineOptions,
    /// The device (io_uring or posix, O_DIRECT or not).
    pub device: DeviceOptions,
    /// Create an empty file system when the directory holds none.
    pub create: bool,
}

/// What became of one transaction that was in flight.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct InFlight {
    /// Transaction id.
    pub txn_id: TxnId,
    /// The operation and its arguments.
    pub op: String,
    /// The caller's request key: (client, request).
    pub key: Option<(u64, u64)>,
    /// Steps logged before the crash.
    pub steps_logged: usize,
    /// Compensations logged before the crash (a rollback under way).
    pub compensations_logged: usize,
    /// The machine's state after its last logged step.
    pub state: String,
    /// Resumed or rolled back.
    pub decision: Decision,
    /// Records recovery wrote for it (0 in a dry run).
    pub records_written: u32,
}

/// What recovery of the engine found and did.
#[derive(Clone, Debug)]
pub struct EngineRecoveryReport {
    /// The log's recovery (records, torn tail, gaps).
    pub log: RecoveryReport,
    /// The checkpoint loaded (None: no checkpoint yet, the log replayed from its start).
    pub checkpoint: Option<Superblock>,
    /// Records read from the checkpoint's scan start.
    pub scanned_records: u64,
    /// Records whose redo was applied.
    pub redone_records: u64,
    /// Transactions that committed after the checkpoint.
    pub committed_txns: u64,
    /// Transactions in flight at the crash, and what became of them.
    pub in_flight: Vec<InFlight>,
    /// Orphans (files unlinked while open at the crash) reclaimed; in a dry run, those
    /// that would be.
    pub orphans_reclaimed: u64,
    /// Whether a new, empty file system was created.
    pub created: bool,
    /// Whether this was a dry run (nothing written).
    pub dry_run: bool,
}

/// Opens the engine in `dir`: recovers it (or, with `options.create`, creates it).
pub fn open(
    dir: &Path,
    options: OpenOptions,
) -> Result<(Engine<Box<dyn Device>>, EngineRecoveryReport), FsError> {
    let device = open_dir(dir, options.device)?;
    open_device(Arc::new(device), options)
}

/// [`open`] on a device (the simulated one in tests).
pub fn open_device<D: Device>(
    device: Arc<D>,
    options: OpenOptions,
) -> Result<(Engine<D>, EngineRecoveryReport), FsError> {
    if options.recovery.dry_run {
        return Err(FsError::Log(LogError::InvalidOptions(
            "a dry run opens no engine; call smlog_recovery::inspect".into(),
        )));
    }
    match read_meta(&*device) {
        Err(LogError::NotALog { .. }) if options.create => {
            check_formattable(&*device)?;
            let engine = Engine::format(Arc::clone(&device), options.engine)?;
            image::keep_reserve(&*device, 0);
            let report = EngineRecoveryReport {
                log: empty_log_report(&engine),
                checkpoint: None,
                scanned_records: 0,
                redone_records: 0,
                committed_txns: 0,
                in_flight: Vec::new(),
                orphans_reclaimed: 0,
                created: true,
                dry_run: false,
            };
            return Ok((engine, report));
        }
        Err(e) => return Err(not_a_log(&*device, e)),
        Ok(_) => {}
    }
    let (sb, meta) = load_checkpoint(&*device, &options)?;
    let data = Arc::new(open_data_file(&device, &meta, true)?);
    let mut pass = Pass::new(Store::new(meta, data), sb, &options);
    // Scan and check everything before the first write: a refusal leaves the store as it
    // was.
    let mut log_report = scan(&*device, options.recovery.mode, |record| {
        pass.observe(record)
    })?;
    pass.finish_scan(&log_report)?;
    check_data_len(&*device, &pass.store)?;
    let log = reopen_after_scan(Arc::clone(&device), &mut log_report)?;
    let Pass {
        store,
        analysis,
        scanned_records,
        redone_records,
        committed_txns,
        ..
    } = pass;
    let seq = sb.map_or(0, |s| s.seq);
    let engine = Engine::from_recovery(log, store, seq, options.engine);
    engine.advance_txn_id(analysis.max_txn_id);
    let mut in_flight = Vec::new();
    for track in analysis.in_flight() {
        let mut report = describe(track);
        report.records_written = match report.decision {
            Decision::Resume => {
                let machine = track.machine().cloned().ok_or_else(|| {
                    FsError::corrupt(
                        CorruptKind::Record,
                        format!("transaction {} resumes without a step", track.txn_id),
                    )
                })?;
                engine.resume(
                    track.txn_id,
                    track.key,
                    track.entry,
                    track.last_step_no,
                    machine,
                )?
            }
            Decision::RollBack => {
                let undo = track.steps_to_undo();
                engine.roll_back(track.txn_id, track.key, track.last_step_no, &undo)?;
                undo.len() as u32 + 1
            }
        };
        in_flight.push(report);
    }
    // No file is open after a crash: every orphan goes.
    let orphans_reclaimed = engine.reclaim_orphans()?;
    engine.sync()?;
    // Room for the next checkpoint's image, where the host has it.
    image::keep_reserve(&*device, sb.map_or(0, |s| s.image_len));
    Ok((
        engine,
        EngineRecoveryReport {
            log: log_report,
            checkpoint: sb,
            scanned_records,
            redone_records,
            committed_txns,
            in_flight,
            orphans_reclaimed,
            created: false,
            dry_run: false,
        },
    ))
}

/// A dry run: loads the checkpoint, scans the log and decides what recovery would do,
/// writing nothing. Also returns the store as recovery would have it before finishing the
/// transactions in flight, and, when `keep_finished` is set, every transaction still in
/// the log (those before the checkpoint's scan start included).
pub fn inspect<D: Device>(
    device: Arc<D>,
    options: OpenOptions,
    keep_finished: bool,
) -> Result<(EngineRecoveryReport, Store<D>, Analysis), FsError> {
    read_meta(&*device).map_err(|e| not_a_log(&*device, e))?;
    let (sb, meta) = load_checkpoint(&*device, &options)?;
    let data = Arc::new(open_data_file(&device, &meta, false)?);
    let mut pass = Pass::new(Store::new(meta, data), sb, &options);
    pass.keep_finished = keep_finished;
    let log_report = scan(&*device, options.recovery.mode, |record| {
        pass.observe(record)
    })?;
    pass.finish_scan(&log_report)?;
    check_data_len(&*device, &pass.store)?;
    let in_flight = pass.analysis.in_flight().map(describe).collect();
    let report = EngineRecoveryReport {
        log: log_report,
        checkpoint: sb,
        scanned_records: pass.scanned_records,
        redone_records: pass.redone_records,
        committed_txns: pass.committed_txns,
        in_flight,
        orphans_reclaimed: pass.store.meta.orphans().len() as u64,
        created: false,
        dry_run: true,
    };
    Ok((report, pass.store, pass.analysis))
}

fn describe(track: &TxnTrack) -> InFlight {
    InFlight {
        txn_id: track.txn_id,
        op: track
            .machine()
            .map_or_else(|| "(no step logged)".into(), |m| m.describe()),
        key: track.key.map(|k: RequestKey| (k.client_id, k.request_id)),
        steps_logged: track.steps.len(),
        compensations_logged: track.compensations.len(),
        state: track
            .machine()
            .map_or_else(|| "Start".into(), |m| m.state_name().to_string()),
        decision: track.decision(),
        records_written: 0,
    }
}

fn empty_log_report<D: Device>(engine: &Engine<D>) -> RecoveryReport {
    let meta = engine.log().meta();
    RecoveryReport {
        mode: Default::default(),
        meta,
        segment_count: 1,
        record_count: 0,
        batch_count: 0,
        batch_bytes: 0,
        read_bytes: 0,
        kind_counts: Default::default(),
        torn_tail: None,
        gaps: Vec::new(),
        tail: smlog::log::Tail::empty(&meta),
        scrubbed_bytes: 0,
    }
}

fn layout_error<D: Device + ?Sized>(device: &D, problem: LayoutProblem) -> FsError {
    FsError::Layout {
        path: device.path_of(""),
        problem,
    }
}

/// A directory without a `LOG` file that holds other store files lost its `LOG`: say so,
/// rather than that it is no log.
fn not_a_log<D: Device + ?Sized>(device: &D, error: LogError) -> FsError {
    match error {
        LogError::NotALog { .. } => match check_formattable(device) {
            Err(
                e @ FsError::Layout {
                    problem: LayoutProblem::LogMissing { .. },
                    ..
                },
            ) => e,
            _ => error.into(),
        },
        error => error.into(),
    }
}

/// Whether `name` is one of the files a store is made of.
fn is_store_file(name: &str) -> bool {
    name == META_FILE_NAME
        || name == META_TEMP_FILE_NAME
        || name == image::SUPER_FILE_NAME
        || name == DATA_FILE_NAME
        || parse_segment_file_name(name).is_some()
        || image::parse_image_file_name(name).is_some()
        || name == image::RESERVE_FILE_NAME
        || name.ends_with(smlog::log::segment::FILLING_SUFFIX)
}

/// A new file system is made only in a directory that holds nothing, or what an
/// interrupted format leaves (`Engine::format` writes `SUPER`, then the first segment,
/// then `LOG` last): an empty `SUPER`, a first segment no batch was written to, `LOG.tmp`.
/// Store files without their `LOG` are a store that lost it, never formatted over; any
/// other file means the directory is not ours.
fn check_formattable<D: Device + ?Sized>(device: &D) -> Result<(), FsError> {
    let names = device.list()?;
    let foreign: Vec<String> = names
        .iter()
        .filter(|n| !is_store_file(n) && n.as_str() != LOCK_FILE_NAME)
        .cloned()
        .collect();
    if !foreign.is_empty() {
        return Err(layout_error(
            device,
            LayoutProblem::NotEmpty { files: foreign },
        ));
    }
    let mut kept = Vec::new();
    for name in names.iter().filter(|n| is_store_file(n)) {
        let leftover = match name.as_str() {
            META_TEMP_FILE_NAME => true,
            // A first segment whose zero-fill a crash cut short.
            _ if name.ends_with(smlog::log::segment::FILLING_SUFFIX) => true,
            image::SUPER_FILE_NAME => {
                matches!(image::read_super(device), Ok(None)) || is_blank(device, name)?
            }
            _ if parse_segment_file_name(name) == Some(SegmentSeq(1)) => {
                first_block_is_zero(device, name)?
            }
            _ => false,
        };
        if !leftover {
            kept.push(name.clone());
        }
    }
    if !kept.is_empty() {
        return Err(layout_error(
            device,
            LayoutProblem::LogMissing { files: kept },
        ));
    }
    Ok(())
}

/// Whether every byte of `name` is zero.
fn is_blank<D: Device + ?Sized>(device: &D, name: &str) -> Result<bool, FsError> {
    let file = device.open(name, false)?;
    let result = device.len(file).and_then(|len| {
        // Only a small, whole-block file (SUPER is two blocks) is looked at.
        if len == 0 {
            return Ok(true);
        }
        if len % BLOCK_SIZE_BYTES as u64 != 0 || len > 16 * BLOCK_SIZE_BYTES as u64 {
            return Ok(false);
        }
        let mut buf = AlignedBuf::new_zeroed(len as usize);
        device
            .read_at(file, 0, &mut buf)
            .map(|()| buf.iter().all(|b| *b == 0))
    });
    device.close(file);
    Ok(result?)
}

/// Whether the first block of `name` holds nothing (or the file is shorter than a block).
fn first_block_is_zero<D: Device + ?Sized>(device: &D, name: &str) -> Result<bool, FsError> {
    let file = device.open(name, false)?;
    let mut buf = AlignedBuf::new_zeroed(BLOCK_SIZE_BYTES);
    let result = match device.len(file) {
        Ok(len) if len < BLOCK_SIZE_BYTES as u64 => Ok(true),
        Ok(_) => device
            .read_at(file, 0, &mut buf)
            .map(|()| buf.iter().all(|b| *b == 0)),
        Err(e) => Err(e),
    };
    device.close(file);
    Ok(result?)
}

/// Opens `DATA`. A missing one is created only while the store maps no block of it
/// (`create`); otherwise it is named as missing, never silently made anew.
fn open_data_file<D: Device>(
    device: &Arc<D>,
    meta: &FsMeta,
    create: bool,
) -> Result<DataFile<D>, FsError> {
    let present = device.list()?.iter().any(|n| n == DATA_FILE_NAME);
    if !present {
        // O(mapped blocks), so only when it matters; the length of a present DATA is
        // checked once, after the scan (`check_data_len`).
        let need_bytes = mapped_bytes(meta);
        if need_bytes > 0 || !create {
            return Err(layout_error(
                &**device,
                LayoutProblem::DataMissing { need_bytes },
            ));
        }
    }
    if create {
        DataFile::open(Arc::clone(device))
    } else {
        DataFile::open_existing(Arc::clone(device))
    }
}

/// Bytes of `DATA` up to the end of the highest block the store maps.
fn mapped_bytes(meta: &FsMeta) -> u64 {
    meta.highest_mapped_block()
        .map_or(0, |block| (block + 1) * BLOCK_SIZE_BYTES as u64)
}

/// Refuses a `DATA` shorter than the blocks the recovered store maps (every mapped block
/// was written, and made durable, before a record or an image named it; blocks merely
/// allocated by a transaction that is then rolled back may lie past the end): a truncated
/// data file would read as zeros, or fail, where acknowledged data was.
fn check_data_len<D: Device + ?Sized, S: Device>(
    device: &D,
    store: &Store<S>,
) -> Result<(), FsError> {
    let need_bytes = mapped_bytes(&store.meta);
    let len_bytes = store.data.len_bytes();
    if len_bytes < need_bytes {
        return Err(layout_error(
            device,
            LayoutProblem::DataShort {
                len_bytes,
                need_bytes,
            },
        ));
    }
    Ok(())
}

/// The newest checkpoint, or the empty file system when there is none.
fn load_checkpoint<D: Device + ?Sized>(
    device: &D,
    options: &OpenOptions,
) -> Result<(Option<Superblock>, FsMeta), FsError> {
    let log_meta = read_meta(device)?;
    // `Engine::format` writes SUPER before LOG, so a log without it lost it.
    if !device.list()?.iter().any(|n| n == image::SUPER_FILE_NAME) {
        return Err(layout_error(device, LayoutProblem::SuperMissing));
    }
    let sb = image::read_super(device)?;
    let mut meta = match &sb {
        None => initial_meta(&log_meta, options.engine.capacity_blocks()),
        Some(sb) => {
            if sb.log_id != log_meta.log_id {
                return Err(FsError::corrupt(
                    CorruptKind::LogGap,
                    format!(
                        "the checkpoint belongs to log {:#x}, the directory holds log {:#x}",
                        sb.log_id, log_meta.log_id
                    ),
                ));
            }
            image::read_image(device, sb)?
        }
    };
    // The image no longer names its quarantined blocks, and it is now the base.
    let quarantine = meta.space.take_quarantine();
    meta.space.make_free(&quarantine)?;
    meta.space.capacity_blocks = options
        .engine
        .capacity_blocks()
        .max(meta.space.high_water_blocks);
    Ok((sb, meta))
}

/// The analysis-and-redo pass.
struct Pass<D: Device> {
    store: Store<D>,
    scan_start_lsn: Lsn,
    analysis: Analysis,
    keep_finished: bool,
    keys_max: usize,
    scanned_records: u64,
    redone_records: u64,
    committed_txns: u64,
    first_lsn_seen: Option<Lsn>,
    error: Option<FsError>,
}

impl<D: Device> Pass<D> {
    fn new(store: Store<D>, sb: Option<Superblock>, options: &OpenOptions) -> Pass<D> {
        Pass {
            store,
            scan_start_lsn: sb.map_or(Lsn(1), |s| s.scan_start_lsn),
            analysis: Analysis::default(),
            keep_finished: false,
            keys_max: options.engine.request_keys_max,
            scanned_records: 0,
            redone_records: 0,
            committed_txns: 0,
            first_lsn_seen: None,
            error: None,
        }
    }

    fn observe(&mut self, record: &Record) {
        if self.error.is_some() {
            return;
        }
        if record.lsn < self.scan_start_lsn {
            // Before what recovery needs: only listed (smlog txn list), never redone.
            if self.keep_finished {
                if let Ok(txn_record) = TxnRecord::decode(record.fields.kind, &record.payload) {
                    self.analysis.observe(
                        record.lsn,
                        record.fields.txn_id,
                        record.fields.step,
                        &txn_record,
                        true,
                    );
                }
            }
            return;
        }
        if let Err(e) = self.observe_inner(record) {
            self.error = Some(e);
        }
    }

    fn observe_inner(&mut self, record: &Record) -> Result<(), FsError> {
        self.first_lsn_seen.get_or_insert(record.lsn);
        self.scanned_records += 1;
        let txn_record = TxnRecord::decode(record.fields.kind, &record.payload).map_err(|e| {
            FsError::corrupt(
                CorruptKind::Record,
                format!(
                    "record LSN {} (transaction {}): {e}",
                    record.lsn, record.fields.txn_id
                ),
            )
        })?;
        let txn_id = record.fields.txn_id;
        if record.lsn > self.store.meta.applied_lsn {
            smlog::internals::apply_logged(
                &mut self.store,
                &txn_record,
                record.lsn,
                self.keys_max,
            )?;
            self.redone_records += 1;
            if matches!(txn_record, TxnRecord::Commit { .. }) {
                self.committed_txns += 1;
            }
        }
        self.analysis.observe(
            record.lsn,
            txn_id,
            record.fields.step,
            &txn_record,
            self.keep_finished,
        );
        Ok(())
    }

    fn finish_scan(&mut self, log: &RecoveryReport) -> Result<(), FsError> {
        if let Some(e) = self.error.take() {
            return Err(e);
        }
        // The image reflects records up to its applied LSN, which were durable before it
        // was written: a log ending before that lost durable records.
        let applied = self.store.meta.applied_lsn;
        if log.tail.next_lsn <= applied {
            return Err(FsError::corrupt(
                CorruptKind::LogGap,
                format!(
                    "the checkpoint reflects LSN {applied} but the log ends at {}",
                    log.tail.next_lsn - 1
                ),
            ));
        }
        if let Some(first) = self.first_lsn_seen {
            if first > self.scan_start_lsn {
                return Err(FsError::corrupt(
                    CorruptKind::LogGap,
                    format!(
                        "recovery needs the log from LSN {}, but it starts at {first}",
                        self.scan_start_lsn
                    ),
                ));
            }
        } else if log.tail.next_lsn > self.scan_start_lsn {
            return Err(FsError::corrupt(
                CorruptKind::LogGap,
                format!(
                    "recovery needs the log from LSN {}; none of it was found",
                    self.scan_start_lsn
                ),
            ));
        }
        Ok(())
    }
}
