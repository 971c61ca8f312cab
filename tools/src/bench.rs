//! `smlog bench log`.

use std::path::Path;
use std::process::ExitCode;

use smlog_benches::{log_bench, recovery_bench, LogBenchOptions, RecoveryBenchOptions};

use crate::OpenArgs;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

pub fn log(
    threads: &[usize],
    record_bytes: &[usize],
    seconds: f64,
    dir: &Path,
    in_flight: usize,
    args: OpenArgs,
    as_json: bool,
) -> Result<ExitCode> {
    let options = args.device_options(true);
    if !as_json {
        println!(
            "{:>7} {:>7} {:>12} {:>9} {:>9} {:>9} {:>9} {:>8} {:>12} {:>7} {:>8}",
            "threads",
            "bytes",
            "commits/s",
            "MB/s",
            "p50 us",
            "p99 us",
            "p99.9 us",
            "rec/bat",
            "baseline/s",
            "ratio",
            "p50 x"
        );
    }
    for &bytes in record_bytes {
        for &count in threads {
            let report = log_bench(&LogBenchOptions {
                threads: count,
                record_bytes: bytes,
                seconds,
                dir: dir.to_path_buf(),
                device: options.kind,
                direct_io: options.direct_io,
                batches_in_flight: in_flight,
            })?;
            if as_json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                println!(
                    "{:>7} {:>7} {:>12.0} {:>9.1} {:>9.0} {:>9.0} {:>9.0} {:>8.1} {:>12.0} {:>7.2} {:>8.2}",
                    report.threads,
                    report.record_bytes,
                    report.commits_per_sec,
                    report.mb_per_sec,
                    report.p50_us,
                    report.p99_us,
                    report.p999_us,
                    report.records_per_batch,
                    report.baseline_commits_per_sec,
                    report.ratio,
                    report.p50_ratio
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn recovery(
    megabytes: u64,
    record_bytes: usize,
    dir: &Path,
    args: OpenArgs,
    as_json: bool,
) -> Result<ExitCode> {
    let report = recovery_bench(&RecoveryBenchOptions {
        log_bytes: megabytes * 1024 * 1024,
        record_bytes,
        dir: dir.to_path_buf(),
        device: args.device_options(true).kind,
    })?;
    if as_json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "recovered {} records, {:.0} MB of log, in {:.3} s: {:.0} MB/s; sequential O_DIRECT read of the same files {:.0} MB/s; ratio {:.2}",
            report.records,
            report.log_bytes as f64 / 1e6,
            report.recovery_secs,
            report.scan_mb_per_sec,
            report.read_mb_per_sec,
            report.ratio
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `smlog bench fs`.
pub fn fs(
    threads: &[usize],
    ops: &[smlog_benches::fs::FsOp],
    seconds: f64,
    dir: &Path,
    args: OpenArgs,
    as_json: bool,
) -> Result<ExitCode> {
    let device = args.device_options(true);
    if !as_json {
        println!(
            "{:>8} {:>7} {:>10} {:>8} {:>8} {:>9} {:>12} {:>10} {:>7}",
            "op",
            "threads",
            "ops/s",
            "p50 us",
            "p99 us",
            "p99.9 us",
            "ext4+fsync/s",
            "p50 us",
            "ratio"
        );
    }
    for &op in ops {
        for &count in threads {
            let report = smlog_benches::fs::fs_bench(&smlog_benches::fs::FsBenchOptions {
                threads: count,
                op,
                seconds,
                dir: dir.to_path_buf(),
                device: device.kind,
                direct_io: device.direct_io,
            })?;
            if as_json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                println!(
                    "{:>8} {:>7} {:>10.0} {:>8.0} {:>8.0} {:>9.0} {:>12.0} {:>10.0} {:>7.1}",
                    format!("{:?}", report.op).to_lowercase(),
                    report.threads,
                    report.ops_per_sec,
                    report.p50_us,
                    report.p99_us,
                    report.p999_us,
                    report.baseline_ops_per_sec,
                    report.baseline_p50_us,
                    report.ratio
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `smlog bench scale`.
pub fn scale(
    files: u64,
    threads: usize,
    dir: &Path,
    args: OpenArgs,
    as_json: bool,
) -> Result<ExitCode> {
    let device = args.device_options(true);
    let report = smlog_benches::fs::scale_bench(files, threads, dir, device.kind)?;
    if as_json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "{} files: {:.0} creates/s; checkpoint with {} MiB dirty {:.0} ms (commits held off {} us, \
             image {} MiB); reopen from it {:.0} ms; reopen replaying {} records {:.0} ms; peak RSS {:.0} MiB",
            report.files,
            report.creates_per_sec,
            report.dirty_bytes >> 20,
            report.checkpoint_ms,
            report.checkpoint_stall_us,
            report.image_bytes >> 20,
            report.recovery_ms,
            report.replayed_records,
            report.replay_recovery_ms,
            report.peak_rss_mib
        );
    }
    Ok(ExitCode::SUCCESS)
}
