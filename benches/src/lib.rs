//! Benchmark harnesses for smlog, each run beside its baseline in the same process.
//!
//! [`log_bench`] measures durable commits through the group-commit log from many threads,
//! then, on the same file system, the device's limit for the same pattern: back-to-back
//! O_DIRECT `pwrite` + `fdatasync` of batches of the size smlog formed. A benchmark
//! reports figures; nothing here asserts on timing.
//!
//! With the feature `peers` (on by default, off for the `smlog` binary), [`compare`] runs
//! smlog against the engines people would pick instead (raft-engine, okaywal, SQLite, and
//! RocksDB with `peer-rocksdb`): the binary `smlog-bench compare`.

#[cfg(feature = "peers")]
pub mod compare;
pub mod fs;
#[cfg(feature = "peers")]
pub mod peers;
#[cfg(feature = "peers")]
pub mod sqlite_fs;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;
use smlog::constants::{align_up, BLOCK_SIZE_BYTES};
use smlog::io::{open_dir, AlignedBuf, Device, DeviceKind, DeviceOptions};
use smlog::log::writer::CreateOptions;
use smlog::TxnId;
use smlog::{Log, NewRecord};

/// What to run.
#[derive(Clone, Debug)]
pub struct LogBenchOptions {
    /// Committing threads.
    pub threads: usize,
    /// Payload bytes per record.
    pub record_bytes: usize,
    /// Seconds per measured run (smlog and baseline each).
    pub seconds: f64,
    /// Directory on the file system to measure (a fresh subdirectory is used and removed).
    pub dir: PathBuf,
    /// Device for smlog.
    pub device: DeviceKind,
    /// O_DIRECT (default) or buffered.
    pub direct_io: bool,
    /// Batches in flight at once (see `Log::set_batches_in_flight`).
    pub batches_in_flight: usize,
}

/// Figures of one run.
#[derive(Clone, Debug, Serialize)]
pub struct LogBenchReport {
    /// Threads.
    pub threads: usize,
    /// Record payload bytes.
    pub record_bytes: usize,
    /// Durable commits per second through smlog.
    pub commits_per_sec: f64,
    /// Payload megabytes per second through smlog.
    pub mb_per_sec: f64,
    /// Commit latency percentiles, microseconds.
    pub p50_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// 99.9th percentile.
    pub p999_us: f64,
    /// Records per batch, on average.
    pub records_per_batch: f64,
    /// Bytes per batch written, on average (padding included).
    pub batch_bytes: u64,
    /// Commits per second the baseline reaches: the same number of threads each writing
    /// batches of that size with pwrite + fdatasync.
    pub baseline_commits_per_sec: f64,
    /// Commits per second one thread reaches writing those batches back to back.
    pub sequential_commits_per_sec: f64,
    /// Baseline p50 of one batch write + fdatasync, microseconds.
    pub baseline_p50_us: f64,
    /// Baseline p99, microseconds.
    pub baseline_p99_us: f64,
    /// smlog over baseline commits per second.
    pub ratio: f64,
    /// smlog p50 over the baseline's p50 (one committer: over one raw 4 KiB write + sync).
    pub p50_ratio: f64,
    /// The device smlog used.
    pub device: String,
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds")
}

fn record_ns(histogram: &mut Histogram<u64>, elapsed: Duration) {
    let ns = (elapsed.as_nanos() as u64).clamp(1, 60_000_000_000);
    let _ = histogram.record(ns / 1000 + 1);
}

fn prepare_dir(base: &std::path::Path, name: &str) -> Result<PathBuf, String> {
    let dir = base.join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    Ok(dir)
}

/// Runs smlog with `options.threads` committers, then the baseline, and reports both.
pub fn log_bench(options: &LogBenchOptions) -> Result<LogBenchReport, String> {
    let dir = prepare_dir(&options.dir, "smlog-bench-log")?;
    let result = run_both(options, &dir);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn run_both(options: &LogBenchOptions, dir: &std::path::Path) -> Result<LogBenchReport, String> {
    let device = open_dir(
        &dir.join("log"),
        DeviceOptions {
            kind: options.device,
            direct_io: options.direct_io,
            create_dir: true,
        },
    )
    .map_err(|e| e.to_string())?;
    let describe = device.describe();
    let log = Arc::new(
        Log::create(Arc::new(device), CreateOptions::default()).map_err(|e| e.to_string())?,
    );
    // Segments are created and zero-filled ahead of the timed run, as a log that has been
    // running a while reuses its segments.
    log.set_batches_in_flight(options.batches_in_flight)
        .map_err(|e| e.to_string())?;
    let estimate_bytes = (options.seconds * 400e6) as u64;
    let segments = (estimate_bytes / log.meta().segment_size_bytes).clamp(2, 24);
    log.reserve_segments(segments).map_err(|e| e.to_string())?;

    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let workers: Vec<_> = (0..options.threads)
        .map(|t| {
            let log = Arc::clone(&log);
            let stop = Arc::clone(&stop);
            let payload = vec![(t as u8) | 1; options.record_bytes];
            std::thread::spawn(move || -> Result<(Histogram<u64>, u64), String> {
                let mut hist = histogram();
                let mut commits = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let began = Instant::now();
                    log.append_durable(&[NewRecord {
                        txn_id: TxnId(t as u64),
                        step: commits as u32,
                        kind: 1,
                        payload: &payload,
                    }])
                    .map_err(|e| e.to_string())?;
                    record_ns(&mut hist, began.elapsed());
                    commits += 1;
                }
                Ok((hist, commits))
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs_f64(options.seconds));
    stop.store(true, Ordering::Relaxed);
    let mut hist = histogram();
    let mut commits = 0u64;
    for worker in workers {
        let (h, c) = worker.join().map_err(|_| "a bench thread panicked")??;
        hist.add(h).map_err(|e| e.to_string())?;
        commits += c;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let stats = log.stats();
    drop(log);

    let records_per_batch = stats.record_count as f64 / stats.batch_count.max(1) as f64;
    let batch_bytes = align_up(
        (stats.written_bytes / stats.batch_count.max(1)) as usize,
        BLOCK_SIZE_BYTES,
    ) as u64;
    let (baseline_batches_per_sec, baseline_hist) = baseline(
        &dir.join("baseline"),
        batch_bytes as usize,
        options.threads,
        options,
    )?;
    let (sequential_batches_per_sec, _) =
        baseline(&dir.join("baseline"), batch_bytes as usize, 1, options)?;
    let commits_per_sec = commits as f64 / elapsed;
    let baseline_commits_per_sec = baseline_batches_per_sec * records_per_batch;
    let us = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64;
    Ok(LogBenchReport {
        threads: options.threads,
        record_bytes: options.record_bytes,
        commits_per_sec,
        mb_per_sec: commits_per_sec * options.record_bytes as f64 / 1e6,
        p50_us: us(&hist, 0.5),
        p99_us: us(&hist, 0.99),
        p999_us: us(&hist, 0.999),
        records_per_batch,
        batch_bytes,
        baseline_commits_per_sec,
        sequential_commits_per_sec: sequential_batches_per_sec * records_per_batch,
        baseline_p50_us: us(&baseline_hist, 0.5),
        baseline_p99_us: us(&baseline_hist, 0.99),
        ratio: commits_per_sec / baseline_commits_per_sec.max(1e-9),
        p50_ratio: us(&hist, 0.5) / us(&baseline_hist, 0.5).max(1.0),
        device: describe,
    })
}

/// O_DIRECT pwrite + fdatasync of `batch_bytes`, back to back, from `threads` threads (each
/// in its own region of one preallocated, zero-filled file): the device's limit for the
/// batches smlog wrote. Returns batches per second and the latency of each write + sync.
fn baseline(
    dir: &std::path::Path,
    batch_bytes: usize,
    threads: usize,
    options: &LogBenchOptions,
) -> Result<(f64, Histogram<u64>), String> {
    let device = Arc::new(
        open_dir(
            dir,
            DeviceOptions {
                kind: DeviceKind::Posix,
                direct_io: options.direct_io,
                create_dir: true,
            },
        )
        .map_err(|e| e.to_string())?,
    );
    let file_bytes: u64 = 256 * 1024 * 1024;
    let file = device.open("baseline", true).map_err(|e| e.to_string())?;
    device
        .set_len(file, file_bytes)
        .map_err(|e| e.to_string())?;
    let zeros = AlignedBuf::new_zeroed(1024 * 1024);
    let mut offset = 0;
    while offset < file_bytes {
        device
            .write_at(file, offset, &zeros)
            .map_err(|e| e.to_string())?;
        offset += zeros.len() as u64;
    }
    device.sync(file).map_err(|e| e.to_string())?;
    let write_bytes = batch_bytes.max(BLOCK_SIZE_BYTES);
    let region_bytes =
        (file_bytes / threads as u64) / BLOCK_SIZE_BYTES as u64 * BLOCK_SIZE_BYTES as u64;
    let deadline = Duration::from_secs_f64(options.seconds);
    let start = Instant::now();
    let workers: Vec<_> = (0..threads as u64)
        .map(|t| {
            let device = Arc::clone(&device);
            std::thread::spawn(move || -> Result<(Histogram<u64>, u64), String> {
                let mut buf = AlignedBuf::new_zeroed(write_bytes);
                buf.fill(0x5A);
                let mut hist = histogram();
                let mut batches = 0u64;
                let base = t * region_bytes;
                let mut offset = 0u64;
                while start.elapsed() < deadline {
                    if offset + write_bytes as u64 > region_bytes {
                        offset = 0;
                    }
                    let began = Instant::now();
                    device
                        .write_at(file, base + offset, &buf)
                        .and_then(|()| device.sync(file))
                        .map_err(|e| e.to_string())?;
                    record_ns(&mut hist, began.elapsed());
                    offset += write_bytes as u64;
                    batches += 1;
                }
                Ok((hist, batches))
            })
        })
        .collect();
    let mut hist = histogram();
    let mut batches = 0;
    for worker in workers {
        let (h, b) = worker.join().map_err(|_| "a baseline thread panicked")??;
        hist.add(h).map_err(|e| e.to_string())?;
        batches += b;
    }
    let elapsed = start.elapsed().as_secs_f64();
    device.close(file);
    Ok((batches as f64 / elapsed, hist))
}

/// What to run for [`recovery_bench`].
#[derive(Clone, Debug)]
pub struct RecoveryBenchOptions {
    /// Bytes of log to write and then recover.
    pub log_bytes: u64,
    /// Payload bytes per record.
    pub record_bytes: usize,
    /// Directory on the file system to measure.
    pub dir: PathBuf,
    /// Device for smlog.
    pub device: DeviceKind,
}

/// Figures of a recovery run.
#[derive(Clone, Debug, Serialize)]
pub struct RecoveryBenchReport {
    /// Bytes of log scanned (batches, padding included).
    pub log_bytes: u64,
    /// Records recovered.
    pub records: u64,
    /// Seconds to recover the log (scan, scrub, reopen).
    pub recovery_secs: f64,
    /// Recovery scan rate, MB/s of log.
    pub scan_mb_per_sec: f64,
    /// Sequential O_DIRECT read rate of the same segment files, MB/s.
    pub read_mb_per_sec: f64,
    /// Scan rate over read rate.
    pub ratio: f64,
}

/// Writes about `log_bytes` of log, closes it, then times its recovery against a plain
/// sequential O_DIRECT read of the same files, in the same run.
pub fn recovery_bench(options: &RecoveryBenchOptions) -> Result<RecoveryBenchReport, String> {
    let dir = prepare_dir(&options.dir, "smlog-bench-recovery")?;
    let result = recovery_run(options, &dir);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn recovery_run(
    options: &RecoveryBenchOptions,
    dir: &std::path::Path,
) -> Result<RecoveryBenchReport, String> {
    let device_options = DeviceOptions {
        kind: options.device,
        direct_io: true,
        create_dir: true,
    };
    let log_dir = dir.join("log");
    {
        let device = open_dir(&log_dir, device_options).map_err(|e| e.to_string())?;
        let log =
            Log::create(Arc::new(device), CreateOptions::default()).map_err(|e| e.to_string())?;
        let segments = options.log_bytes / log.meta().segment_size_bytes + 2;
        log.reserve_segments(segments).map_err(|e| e.to_string())?;
        let payload = vec![0xA5u8; options.record_bytes];
        let per_append = ((512 * 1024) / (options.record_bytes + 64)).max(1);
        let records: Vec<NewRecord<'_>> = (0..per_append)
            .map(|i| NewRecord {
                txn_id: TxnId(i as u64),
                step: 0,
                kind: 1,
                payload: &payload,
            })
            .collect();
        while log.stats().written_bytes < options.log_bytes {
            log.append_durable(&records).map_err(|e| e.to_string())?;
        }
        log.close().map_err(|e| e.to_string())?;
    }
    let started = Instant::now();
    let device = Arc::new(open_dir(&log_dir, device_options).map_err(|e| e.to_string())?);
    let (log, report) = smlog_recovery::open_log(Arc::clone(&device), Default::default(), |_| {})
        .map_err(|e| e.to_string())?;
    let recovery_secs = started.elapsed().as_secs_f64();
    drop(log);
    // The same files, read sequentially with O_DIRECT in 4 MiB requests.
    let names: Vec<String> = device
        .list()
        .map_err(|e| e.to_string())?
        .into_iter()
        .filter(|n| n.ends_with(".seg"))
        .collect();
    let mut buf = AlignedBuf::new_zeroed(4 * 1024 * 1024);
    let mut read_bytes = 0u64;
    let started = Instant::now();
    for name in names {
        let file = device.open(&name, false).map_err(|e| e.to_string())?;
        let len = device.len(file).map_err(|e| e.to_string())?;
        let mut offset = 0;
        while offset < len && read_bytes < report.read_bytes {
            let n = ((len - offset) as usize).min(buf.len());
            device
                .read_at(file, offset, &mut buf[..n])
                .map_err(|e| e.to_string())?;
            offset += n as u64;
            read_bytes += n as u64;
        }
        device.close(file);
    }
    let read_secs = started.elapsed().as_secs_f64();
    let scan_mb_per_sec = report.read_bytes as f64 / recovery_secs / 1e6;
    let read_mb_per_sec = read_bytes as f64 / read_secs / 1e6;
    Ok(RecoveryBenchReport {
        log_bytes: report.batch_bytes,
        records: report.record_count,
        recovery_secs,
        scan_mb_per_sec,
        read_mb_per_sec,
        ratio: scan_mb_per_sec / read_mb_per_sec,
    })
}
