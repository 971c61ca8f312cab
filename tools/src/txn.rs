//! `smlog txn list|show`, `smlog fsck`, and `smlog recover` on an engine's directory.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use serde_json::json;
use smlog::internals::fsck;
use smlog::internals::Store;
use smlog::internals::{Decision, Machine, TxnEnd, TxnRecord, TxnTrack};
use smlog::io::{open_dir, Device};
use smlog::RecoveryMode;
use smlog::ROOT_INO;
use smlog_recovery::{inspect, open_device, EngineRecoveryReport, OpenOptions, RecoveryOptions};

use crate::{inspect as log_inspect, DirArgs, OpenArgs};
use smlog::TxnId;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// `smlog txn ...`.
#[derive(Debug, clap::Subcommand)]
pub enum TxnCommand {
    /// One line per transaction in the log: operation, steps, how it ended.
    List {
        #[command(flatten)]
        dir: DirArgs,
        /// Only transactions without a commit or abort (what recovery would finish).
        #[arg(long)]
        in_flight: bool,
    },
    /// Every record of one transaction: state, redo and undo of each step.
    Show {
        #[command(flatten)]
        dir: DirArgs,
        /// Transaction id.
        txn_id: u64,
    },
}

/// Runs `smlog txn ...`.
pub fn run(command: TxnCommand) -> Result<ExitCode> {
    match command {
        TxnCommand::List { dir: a, in_flight } => list(&a.dir, a.open, in_flight, a.json),
        TxnCommand::Show { dir: a, txn_id } => show(&a.dir, a.open, txn_id, a.json),
    }
}

/// `smlog recover`.
#[derive(Debug, clap::Args)]
pub struct RecoverArgs {
    #[command(flatten)]
    dir: DirArgs,
    /// Report what recovery would do; write nothing.
    #[arg(long)]
    dry_run: bool,
    /// strict, torn-tail (default) or salvage.
    #[arg(long, default_value = "torn-tail")]
    mode: RecoveryMode,
}

/// `smlog format`.
#[derive(Debug, clap::Args)]
pub struct FormatArgs {
    /// The engine's directory.
    dir: std::path::PathBuf,
    #[command(flatten)]
    open: OpenArgs,
}

/// `smlog recover`: an engine's directory is recovered as an engine, a bare log as a log.
pub fn recover(args: RecoverArgs) -> Result<ExitCode> {
    let RecoverArgs { dir, dry_run, mode } = args;
    if is_engine_dir(&dir.dir) {
        recover_engine(&dir.dir, dir.open, mode, dry_run, dir.json)
    } else {
        log_inspect::recover(&dir.dir, dir.open, mode, dry_run, dir.json)
    }
}

/// Whether `dir` holds an engine (a store beside the log), not a bare log.
fn is_engine_dir(dir: &Path) -> bool {
    // An engine always has both; one that lost SUPER still has DATA, and recovery names
    // the missing file.
    dir.join(smlog::internals::image::SUPER_FILE_NAME).exists()
        || dir.join(smlog::internals::DATA_FILE_NAME).exists()
}

fn open(dir: &Path, args: OpenArgs) -> Result<Arc<Box<dyn Device>>> {
    if !dir.is_dir() {
        return Err(format!("{}: no such directory", dir.display()).into());
    }
    Ok(Arc::new(open_dir(dir, args.device_options(false))?))
}

/// `smlog format`: a new, empty file system in `dir` (made when missing), which must be
/// empty.
pub fn format(args: FormatArgs) -> Result<ExitCode> {
    let FormatArgs { dir, open: args } = args;
    let dir = dir.as_path();
    let device = Arc::new(open_dir(dir, args.device_options(true))?);
    if smlog::log::segment::read_meta(&**device).is_ok() {
        return Err(format!("{}: already holds a file system", dir.display()).into());
    }
    let mut options = options(args, RecoveryMode::TornTail, false);
    options.create = true;
    let (engine, _) = open_device(device, options)?;
    engine.shutdown()?;
    println!("created a new file system in {}", dir.display());
    Ok(ExitCode::SUCCESS)
}

fn options(args: OpenArgs, mode: RecoveryMode, dry_run: bool) -> OpenOptions {
    let mut options = OpenOptions {
        recovery: RecoveryOptions { mode, dry_run },
        device: args.device_options(false),
        ..OpenOptions::default()
    };
    options.engine.checkpoint_log_bytes = 0;
    options.engine.checkpoint_dirty_bytes = 0;
    options
}

fn decision_text(decision: Decision, dry_run: bool) -> &'static str {
    match (decision, dry_run) {
        (Decision::Resume, true) => "would resume",
        (Decision::Resume, false) => "resumed",
        (Decision::RollBack, true) => "would roll back",
        (Decision::RollBack, false) => "rolled back",
    }
}

fn end_json(track: &TxnTrack) -> serde_json::Value {
    match track.end {
        Some(TxnEnd::Committed { lsn, result }) => {
            json!({"state": "committed", "lsn": lsn, "result": format!("{result:?}")})
        }
        Some(TxnEnd::Aborted { lsn, errno }) => {
            json!({"state": "aborted", "lsn": lsn, "errno": errno})
        }
        None => json!({
            "state": "in flight",
            "recovery": match track.decision() {
                Decision::Resume => "resume",
                Decision::RollBack => "roll back",
            }
        }),
    }
}

fn end_text(track: &TxnTrack) -> String {
    match track.end {
        Some(TxnEnd::Committed { lsn, result }) => format!("committed at {lsn} ({result:?})"),
        Some(TxnEnd::Aborted { lsn, errno }) => format!("aborted at {lsn} (errno {errno})"),
        None => format!(
            "IN FLIGHT: recovery {}",
            decision_text(track.decision(), true).trim_start_matches("would ")
        ),
    }
}

fn describe(track: &TxnTrack) -> (String, String) {
    match track.machine() {
        Some(m) => (m.describe(), m.state_name().to_string()),
        None => ("(no step logged)".into(), "-".into()),
    }
}

/// `smlog txn list`.
fn list(dir: &Path, args: OpenArgs, in_flight_only: bool, as_json: bool) -> Result<ExitCode> {
    let device = open(dir, args)?;
    let (_, _, analysis) = inspect(device, options(args, RecoveryMode::TornTail, true), true)?;
    for track in analysis.txns.values() {
        if in_flight_only && track.end.is_some() {
            continue;
        }
        let (op, state) = describe(track);
        if as_json {
            let value = json!({
                "txn_id": track.txn_id,
                "first_lsn": track.first_lsn,
                "op": op,
                "state": state,
                "steps": track.steps.len(),
                "compensations": track.compensations.len(),
                "key": track.key.map(|k| json!({"client_id": k.client_id, "request_id": k.request_id})),
                "end": end_json(track),
            });
            println!("{value}");
        } else {
            println!(
                "txn {:>8}  lsn {:>8}  {:<40} steps {} last {:<14} {}",
                track.txn_id,
                track.first_lsn,
                op,
                track.steps.len(),
                state,
                end_text(track)
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `smlog txn show`.
fn show(dir: &Path, args: OpenArgs, txn_id: u64, as_json: bool) -> Result<ExitCode> {
    let device = open(dir, args)?;
    let mut rows = Vec::new();
    let mut error = None;
    smlog_recovery::scan(&**device, RecoveryMode::TornTail, |record| {
        if record.fields.txn_id != TxnId(txn_id) || error.is_some() {
            return;
        }
        match TxnRecord::decode(record.fields.kind, &record.payload) {
            Ok(decoded) => rows.push((record.lsn, record.fields.step, decoded)),
            Err(e) => error = Some(e),
        }
    })?;
    if let Some(e) = error {
        return Err(e.into());
    }
    if rows.is_empty() {
        eprintln!("transaction {txn_id} is not in the log");
        return Ok(ExitCode::from(1));
    }
    for (lsn, step, record) in &rows {
        let (kind, state, redo, undo, extra) = match record {
            TxnRecord::Step(s) => (
                "step",
                s.machine.state_name().to_string(),
                format!("{:?}", s.redo),
                format!("{:?}", s.undo),
                s.machine.describe(),
            ),
            TxnRecord::Commit { result, .. } => (
                "commit",
                String::new(),
                String::new(),
                String::new(),
                format!("{result:?}"),
            ),
            TxnRecord::Compensation {
                undoes_lsn,
                redo,
                undo_next_lsn,
            } => (
                "compensation",
                String::new(),
                format!("{redo:?}"),
                String::new(),
                format!("undoes {undoes_lsn}, next to undo {undo_next_lsn}"),
            ),
            TxnRecord::Abort { errno, .. } => (
                "abort",
                String::new(),
                String::new(),
                String::new(),
                format!("errno {errno}"),
            ),
        };
        if as_json {
            println!(
                "{}",
                json!({"lsn": lsn, "step": step, "kind": kind, "state": state,
                       "redo": redo, "undo": undo, "note": extra})
            );
        } else {
            println!("LSN {lsn:>8} step {step:>2} {kind:<12} {state:<14} {extra}");
            if !redo.is_empty() {
                println!("    redo {redo}");
            }
            if !undo.is_empty() {
                println!("    undo {undo}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn report_json(report: &EngineRecoveryReport) -> serde_json::Value {
    json!({
        "dry_run": report.dry_run,
        "checkpoint": report.checkpoint.map(|sb| json!({
            "seq": sb.seq, "applied_lsn": sb.applied_lsn, "scan_start_lsn": sb.scan_start_lsn,
        })),
        "log_records": report.log.record_count,
        "torn_tail": report.log.torn_tail.as_ref().map(|d| json!({
            "segment": d.segment_seq, "offset": d.offset, "lsn": d.lsn, "why": d.why,
        })),
        "scanned_records": report.scanned_records,
        "redone_records": report.redone_records,
        "committed_txns": report.committed_txns,
        "in_flight": report.in_flight,
        "orphans_reclaimed": report.orphans_reclaimed,
    })
}

/// `smlog recover` on an engine's directory.
fn recover_engine(
    dir: &Path,
    args: OpenArgs,
    mode: RecoveryMode,
    dry_run: bool,
    as_json: bool,
) -> Result<ExitCode> {
    let device = open(dir, args)?;
    let report = if dry_run {
        inspect(device, options(args, mode, true), false)?.0
    } else {
        let (engine, report) = open_device(device, options(args, mode, false))?;
        drop(engine);
        report
    };
    if as_json {
        println!("{}", report_json(&report));
        return Ok(ExitCode::SUCCESS);
    }
    print_report(&report);
    Ok(ExitCode::SUCCESS)
}

/// Prints a recovery report for people.
pub fn print_report(report: &EngineRecoveryReport) {
    match &report.checkpoint {
        Some(sb) => println!(
            "checkpoint {} (reflects LSN {}); log read from LSN {}",
            sb.seq, sb.applied_lsn, sb.scan_start_lsn
        ),
        None => println!("no checkpoint yet; log read from its start"),
    }
    if let Some(d) = &report.log.torn_tail {
        let verb = if report.dry_run {
            "would be discarded"
        } else {
            "discarded"
        };
        println!(
            "torn tail in segment {} at offset {} (LSN {}): {} ({verb})",
            d.segment_seq, d.offset, d.lsn, d.why
        );
    }
    println!(
        "{} records read, {} redone, {} transactions committed since the checkpoint",
        report.scanned_records, report.redone_records, report.committed_txns
    );
    if report.in_flight.is_empty() {
        println!("no transaction was in flight");
    }
    for txn in &report.in_flight {
        println!(
            "txn {} {}: {} step(s) logged, last state {}: {}",
            txn.txn_id,
            txn.op,
            txn.steps_logged,
            txn.state,
            decision_text(txn.decision, report.dry_run)
        );
    }
    if report.orphans_reclaimed > 0 {
        let verb = if report.dry_run {
            "would be reclaimed"
        } else {
            "reclaimed"
        };
        println!(
            "{} orphan(s) (files unlinked while open at the crash) {verb}",
            report.orphans_reclaimed
        );
    }
}

/// Checks a store: exit 0 when clean, 1 with what is wrong.
pub fn check_store<D: Device>(
    store: &Store<D>,
    in_flight: &[smlog_recovery::InFlight],
) -> fsck::FsckReport {
    let mut report = fsck::check(store, 0);
    for txn in in_flight {
        report.problems.insert(
            0,
            format!(
                "transaction {} ({}) is in flight: run `smlog recover` first",
                txn.txn_id, txn.op
            ),
        );
    }
    // Every mapped data block is read back and checked against its checksum by the
    // engine's fsck.
    let _ = ROOT_INO;
    report
}

/// `smlog fsck`.
pub fn fsck(args: DirArgs) -> Result<ExitCode> {
    let as_json = args.json;
    let device = open(&args.dir, args.open)?;
    let (recovery, store, _) = inspect(
        device,
        options(args.open, RecoveryMode::TornTail, true),
        false,
    )?;
    let report = check_store(&store, &recovery.in_flight);
    if as_json {
        let mut value = serde_json::to_value(&report)?;
        value["clean"] = json!(report.is_clean());
        println!("{value}");
    } else {
        println!(
            "{} inodes ({} directories, {} files, {} symbolic links, {} FIFOs, sockets and \
             devices), {} names, \
             {} data blocks mapped ({} failing their checksum), {} dirty in the log, {} free, \
             {} quarantined",
            report.inode_count,
            report.dir_count,
            report.file_count,
            report.symlink_count,
            report.special_count,
            report.entry_count,
            report.mapped_blocks,
            report.bad_blocks,
            report.dirty_blocks,
            report.free_blocks,
            report.quarantined_blocks
        );
        if report.is_clean() {
            println!("clean");
        }
        for problem in &report.problems {
            println!("PROBLEM: {problem}");
        }
    }
    Ok(if report.is_clean() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// `smlog checkpoint`: recover, then write a checkpoint so the next open replays nothing.
pub fn checkpoint(args: DirArgs) -> Result<ExitCode> {
    let as_json = args.json;
    let device = open(&args.dir, args.open)?;
    let (engine, report) = open_device(device, options(args.open, RecoveryMode::TornTail, false))?;
    let stats = engine.checkpoint()?;
    engine.sync()?;
    if as_json {
        println!(
            "{}",
            json!({
                "seq": stats.seq,
                "applied_lsn": stats.applied_lsn,
                "scan_start_lsn": stats.scan_start_lsn,
                "written_blocks": stats.written_blocks,
                "image_bytes": stats.image_bytes,
                "released_segments": stats.released_segments,
                "stall_us": stats.stall.as_micros() as u64,
                "elapsed_ms": stats.elapsed.as_secs_f64() * 1e3,
                "in_flight_finished": report.in_flight.len(),
            })
        );
    } else {
        println!(
            "checkpoint {}: reflects LSN {}, {} dirty blocks written, image {} bytes, \
             {} log segments released; commits held off {} us, {:.1} ms in all",
            stats.seq,
            stats.applied_lsn,
            stats.written_blocks,
            stats.image_bytes,
            stats.released_segments,
            stats.stall.as_micros(),
            stats.elapsed.as_secs_f64() * 1e3
        );
    }
    Ok(ExitCode::SUCCESS)
}
