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
