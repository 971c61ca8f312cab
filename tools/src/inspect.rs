//! `smlog log dump|stat|verify` and `smlog recover`.

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use smlog::io::{open_dir, Device};
use smlog::log::reader::Damage;
use smlog::{LogError, LogReader, RecoveryMode, ScanItem};
use smlog_recovery::{open_log, scan, RecoveryOptions, RecoveryReport};

use crate::{DirArgs, OpenArgs};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// `smlog log ...`.
#[derive(Debug, clap::Subcommand)]
pub enum LogCommand {
    /// One line per record: LSN, transaction, step, kind, length, CRC, place.
    Dump(DirArgs),
    /// Segments, records, bytes, durable mark, torn tail, records per kind.
    Stat(DirArgs),
    /// Exit 0 when clean, 1 when a torn tail is found, 2 on corruption (with its place).
    Verify(DirArgs),
}

/// Runs `smlog log ...`.
pub fn run(command: LogCommand) -> Result<ExitCode> {
    match command {
        LogCommand::Dump(a) => dump(&a.dir, a.open, a.json),
        LogCommand::Stat(a) => stat(&a.dir, a.open, a.json),
        LogCommand::Verify(a) => verify(&a.dir, a.open, a.json),
    }
}

fn open(dir: &Path, args: OpenArgs) -> Result<Box<dyn Device>> {
    if !dir.is_dir() {
        return Err(format!("{}: not a directory", dir.display()).into());
    }
    if !dir.join(smlog::log::META_FILE_NAME).exists() {
        // Checked before opening, which would lock the directory (creating LOCK).
        return Err(smlog::LogError::NotALog {
            path: dir.to_path_buf(),
        }
        .into());
    }
    Ok(open_dir(dir, args.device_options(false))?)
}

/// A progress bar on stderr over the bytes of the log, when stderr is a terminal.
fn progress(total_bytes: u64) -> Option<ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = ProgressBar::new(total_bytes);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} scanning {bytes}/{total_bytes} {bytes_per_sec} {wide_bar} {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    Some(bar)
}

fn damage_json(kind: &str, damage: &Damage) -> serde_json::Value {
    json!({
        "type": kind,
        "segment": damage.segment_seq,
        "path": damage.path.display().to_string(),
        "offset": damage.offset,
        "lsn": damage.lsn,
        "why": damage.why,
        "resume_lsn": damage.resume_lsn,
    })
}

fn damage_line(kind: &str, damage: &Damage) -> String {
    format!(
        "{kind}: segment {} ({}) offset {} LSN {}: {}{}",
        damage.segment_seq,
        damage.path.display(),
        damage.offset,
        damage.lsn,
        damage.why,
        damage
            .resume_lsn
            .map(|l| format!(" (resumed at LSN {l})"))
            .unwrap_or_default()
    )
}

fn dump(dir: &Path, args: OpenArgs, as_json: bool) -> Result<ExitCode> {
    match dump_to_stdout(dir, args, as_json) {
        Err(e)
            if e.downcast_ref::<std::io::Error>()
                .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe) =>
        {
            // The reader (`head`, a pager) has seen enough.
            Ok(ExitCode::SUCCESS)
        }
        other => other,
    }
}

fn dump_to_stdout(dir: &Path, args: OpenArgs, as_json: bool) -> Result<ExitCode> {
    let device = open(dir, args)?;
    let mut reader = LogReader::open(&*device)?;
    let bar = progress(reader.segment_count() as u64 * reader.meta().segment_size_bytes);
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    if !as_json {
        writeln!(
            out,
            "{:>10} {:>12} {:>6} {:>5} {:>7} {:>10} crc  place",
            "lsn", "txn", "step", "kind", "length", "crc"
        )?;
    }
    let mut count = 0u64;
    let mut found = Found::Clean;
    loop {
        let item = match reader.next_item() {
            Ok(Some(item)) => item,
            Ok(None) => break,
            Err(e) if is_damage(&e) => {
                writeln!(out, "CORRUPT: {e}")?;
                found = Found::Corrupt;
                break;
            }
            Err(e) => return Err(e.into()),
        };
        match item {
            ScanItem::Record(r) => {
                if as_json {
                    let value = json!({
                        "type": "record", "lsn": r.lsn, "txn": r.fields.txn_id, "step": r.fields.step,
                        "kind": r.fields.kind, "length": r.payload.len(), "crc": r.crc, "crc_ok": true,
                        "segment": r.segment_seq, "batch_offset": r.batch_offset,
                    });
                    writeln!(out, "{value}")?;
                } else {
                    writeln!(
                        out,
                        "{:>10} {:>12} {:>6} {:>5} {:>7} {:#010x} ok   {}:{}",
                        r.lsn,
                        r.fields.txn_id,
                        r.fields.step,
                        r.fields.kind,
                        r.payload.len(),
                        r.crc,
                        r.segment_seq,
                        r.batch_offset
                    )?;
                }
                count += 1;
                if count.is_multiple_of(4096) {
                    if let Some(bar) = &bar {
                        bar.set_position(reader.position_bytes());
                    }
                }
            }
            ScanItem::TornTail(d) => {
                found = found.max(Found::TornTail);
                if as_json {
                    writeln!(out, "{}", damage_json("torn_tail", &d))?;
                } else {
                    writeln!(out, "{}", damage_line("torn tail", &d))?;
                }
            }
            ScanItem::Corrupt(d) => {
                found = Found::Corrupt;
                if as_json {
                    writeln!(out, "{}", damage_json("corrupt", &d))?;
                } else {
                    writeln!(out, "{}", damage_line("CORRUPT", &d))?;
                }
            }
        }
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    out.flush()?;
    Ok(found.exit_code())
}

/// What a scan found, worst last: the exit code of `log dump`, `stat` and `verify`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Found {
    /// 0.
    Clean,
    /// 1: a torn tail (recovery discards it).
    TornTail,
    /// 2: corruption before the durable mark, or a segment missing.
    Corrupt,
}

impl Found {
    fn of(report: &RecoveryReport) -> Found {
        if !report.gaps.is_empty() {
            Found::Corrupt
        } else if report.torn_tail.is_some() {
            Found::TornTail
        } else {
            Found::Clean
        }
    }

    fn exit_code(self) -> ExitCode {
        ExitCode::from(self as u8)
    }
}

/// Damage a scan stops at (rather than an error of the device or of the caller).
fn is_damage(error: &LogError) -> bool {
    matches!(
        error,
        LogError::Corrupt { .. } | LogError::MissingSegment { .. } | LogError::BadMeta { .. }
    )
}

/// Scans in salvage mode so that every damage is seen; returns the report, or the damage
/// that stopped the scan (a segment missing).
fn scan_all(device: &dyn Device) -> Result<std::result::Result<RecoveryReport, LogError>> {
    let reader = LogReader::open(device)?;
    let bar = progress(reader.segment_count() as u64 * reader.meta().segment_size_bytes);
    drop(reader);
    let mut seen = 0u64;
    let report = scan(device, RecoveryMode::Salvage, |r| {
        seen += 1;
        if seen.is_multiple_of(4096) {
            if let Some(bar) = &bar {
                bar.inc(4096 * (r.payload.len() as u64 + 48));
            }
        }
    });
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    match report {
        Ok(report) => Ok(Ok(report)),
        Err(e) if is_damage(&e) => Ok(Err(e)),
        Err(e) => Err(e.into()),
    }
}

/// Prints damage that stopped a scan, as `verify` and `stat` do, and gives exit code 2.
fn print_stopped(error: &LogError, as_json: bool) -> ExitCode {
    if as_json {
        println!(
            "{}",
            json!({"status": "corrupt", "error": error.to_string()})
        );
    } else {
        println!("CORRUPTION: {error}");
    }
    Found::Corrupt.exit_code()
}

fn report_json(report: &RecoveryReport) -> serde_json::Value {
    json!({
        "log_id": format!("{:#018x}", report.meta.log_id),
        "segment_size_bytes": report.meta.segment_size_bytes,
        "first_segment": report.meta.first_segment_seq,
        "segments": report.segment_count,
        "records": report.record_count,
        "batches": report.batch_count,
        "bytes": report.batch_bytes,
        "first_lsn": report.tail.next_lsn - report.record_count.min(report.tail.next_lsn.get().saturating_sub(1)),
        "next_lsn": report.tail.next_lsn,
        "durable_lsn": report.tail.mark_lsn,
        "epoch": report.tail.epoch,
        "torn_tail": report.torn_tail.as_ref().map(|d| damage_json("torn_tail", d)),
        "corruption": report.gaps.iter().map(|d| damage_json("corrupt", d)).collect::<Vec<_>>(),
        "kinds": report.kind_counts.iter().map(|(k, c)| (k.to_string(), json!(c))).collect::<serde_json::Map<_, _>>(),
    })
}

fn stat(dir: &Path, args: OpenArgs, as_json: bool) -> Result<ExitCode> {
    let device = open(dir, args)?;
    let report = match scan_all(&*device)? {
        Ok(report) => report,
        Err(e) => return Ok(print_stopped(&e, as_json)),
    };
    if as_json {
        println!("{}", report_json(&report));
        return Ok(Found::of(&report).exit_code());
    }
    println!(
        "log            {}  ({:#018x})",
        dir.display(),
        report.meta.log_id
    );
    println!("device         {}", device.describe());
    println!(
        "segments       {} of {} bytes, first live segment {}",
        report.segment_count, report.meta.segment_size_bytes, report.meta.first_segment_seq
    );
    println!(
        "records        {} in {} batches, {} bytes",
        report.record_count, report.batch_count, report.batch_bytes
    );
    println!("next LSN       {}", report.tail.next_lsn);
    println!(
        "durable mark   LSN {} (every record up to it is vouched durable by a later batch)",
        report.tail.mark_lsn
    );
    println!("writer epoch   {}", report.tail.epoch);
    match &report.torn_tail {
        Some(d) => println!("{}", damage_line("torn tail     ", d)),
        None => println!("torn tail      none"),
    }
    for gap in &report.gaps {
        println!("{}", damage_line("CORRUPTION    ", gap));
    }
    println!("records by kind");
    for (kind, count) in &report.kind_counts {
        println!("  kind {kind:>5}  {count}");
    }
    Ok(Found::of(&report).exit_code())
}

fn verify(dir: &Path, args: OpenArgs, as_json: bool) -> Result<ExitCode> {
    let device = open(dir, args)?;
    let report = match scan_all(&*device)? {
        Ok(report) => report,
        Err(e) => return Ok(print_stopped(&e, as_json)),
    };
    let found = Found::of(&report);
    let status = match found {
        Found::Corrupt => "corrupt",
        Found::TornTail => "torn_tail",
        Found::Clean => "clean",
    };
    if as_json {
        let mut value = report_json(&report);
        value["status"] = json!(status);
        println!("{value}");
    } else {
        match status {
            "corrupt" => {
                for gap in &report.gaps {
                    println!("{}", damage_line("CORRUPTION", gap));
                }
            }
            "torn_tail" => {
                if let Some(d) = &report.torn_tail {
                    println!("{}", damage_line("torn tail", d));
                }
            }
            _ => println!(
                "clean: {} records, LSN {}..{}",
                report.record_count,
                report.tail.next_lsn - report.record_count.min(report.tail.next_lsn.get() - 1),
                report.tail.next_lsn - 1
            ),
        }
    }
    Ok(found.exit_code())
}

pub fn recover(
    dir: &Path,
    args: OpenArgs,
    mode: RecoveryMode,
    dry_run: bool,
    as_json: bool,
) -> Result<ExitCode> {
    let device: Arc<Box<dyn Device>> = Arc::new(open(dir, args)?);
    let report = if dry_run {
        scan(&**device, mode, |_| {})?
    } else {
        let (log, report) = open_log(
            Arc::clone(&device),
            RecoveryOptions { mode, dry_run },
            |_| {},
        )?;
        drop(log);
        report
    };
    if as_json {
        let mut value = report_json(&report);
        value["dry_run"] = json!(dry_run);
        value["mode"] = json!(mode.to_string());
        value["scrubbed_bytes"] = json!(report.scrubbed_bytes);
        println!("{value}");
        return Ok(ExitCode::SUCCESS);
    }
    let verb = if dry_run { "would resume" } else { "resumes" };
    println!(
        "{} records up to LSN {}; the writer {verb} at LSN {}",
        report.record_count,
        report.tail.next_lsn - 1,
        report.tail.next_lsn
    );
    if let Some(d) = &report.torn_tail {
        let what = if dry_run {
            "would be discarded"
        } else {
            "discarded"
        };
        println!("{} ({what})", damage_line("torn tail", d));
    }
    for gap in &report.gaps {
        println!("{} (salvage: skipped)", damage_line("CORRUPTION", gap));
    }
    if !dry_run {
        println!(
            "zeroed {} bytes past the tail and wrote a recovery mark",
            report.scrubbed_bytes
        );
    }
    Ok(ExitCode::SUCCESS)
}
