//! `smlog bench fs`: durable file operations through the engine, against the same
//! operations on a directory of the host file system with fsync of the file and of its
//! directory per operation, in the same run. And the scale run (`smlog bench scale`).

use std::fs::{File, OpenOptions as FsOpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;
use smlog::io::{Device, DeviceKind, DeviceOptions};
use smlog::{Durability, Engine, Ino, NewAttrs, RenameFlags, ROOT_INO};
use smlog_recovery::OpenOptions;

/// A file operation to measure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum FsOp {
    /// Create an empty file.
    Create,
    /// Overwrite 4 KiB of a file.
    Write4k,
    /// Rename a file within its directory.
    Rename,
    /// create, write4k, rename, unlink in turn.
    Mixed,
}

impl std::str::FromStr for FsOp {
    type Err = String;
    fn from_str(text: &str) -> Result<FsOp, String> {
        match text {
            "create" => Ok(FsOp::Create),
            "write4k" => Ok(FsOp::Write4k),
            "rename" => Ok(FsOp::Rename),
            "mixed" => Ok(FsOp::Mixed),
            other => Err(format!(
                "unknown op {other:?}: create, write4k, rename or mixed"
            )),
        }
    }
}

impl FsOp {
    /// The `n`-th operation of a thread: mixed cycles create, write4k, rename, then an
    /// unlink (its fourth, `Mixed` here) of the file created three operations before.
    pub(crate) fn nth(self, n: u64) -> FsOp {
        match self {
            FsOp::Mixed => {
                [FsOp::Create, FsOp::Write4k, FsOp::Rename, FsOp::Mixed][(n % 4) as usize]
            }
            other => other,
        }
    }
}

/// What to run.
#[derive(Clone, Debug)]
pub struct FsBenchOptions {
    /// Threads, each in its own directory.
    pub threads: usize,
    /// The operation.
    pub op: FsOp,
    /// Seconds per measured run (smlog and baseline each).
    pub seconds: f64,
    /// Directory on the file system to measure (fresh subdirectories are used and removed).
    pub dir: PathBuf,
    /// Device for smlog.
    pub device: DeviceKind,
    /// O_DIRECT (default) or buffered.
    pub direct_io: bool,
}

/// Figures of one run.
#[derive(Clone, Debug, Serialize)]
pub struct FsBenchReport {
    /// The operation.
    pub op: FsOp,
    /// Threads.
    pub threads: usize,
    /// Durable operations per second through smlog.
    pub ops_per_sec: f64,
    /// Latency percentiles through smlog, microseconds.
    pub p50_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// 99.9th percentile.
    pub p999_us: f64,
    /// Durable operations per second on the host file system (fsync of file and directory).
    pub baseline_ops_per_sec: f64,
    /// Baseline p50, microseconds.
    pub baseline_p50_us: f64,
    /// Baseline p99, microseconds.
    pub baseline_p99_us: f64,
    /// smlog over baseline operations per second.
    pub ratio: f64,
}

pub(crate) fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds")
}

/// One thread's loop, for any system.
pub(crate) trait Target: Send + Sync {
    type Dir: Send;
    fn setup(&self, thread: usize) -> Result<Self::Dir, String>;
    fn op(&self, dir: &mut Self::Dir, op: FsOp, n: u64) -> Result<(), String>;
}

/// The engine: each thread works in `/t{i}`.
struct EngineTarget<D: Device> {
    engine: Engine<D>,
}

const ATTRS: NewAttrs = NewAttrs {
    mode: 0o644,
    uid: 0,
    gid: 0,
    umask: 0,
};

struct EngineDir {
    dir: Ino,
    file: Ino,
    block: Vec<u8>,
    renames: u64,
}

impl<D: Device> Target for EngineTarget<D> {
    type Dir = EngineDir;
    fn setup(&self, thread: usize) -> Result<EngineDir, String> {
        let e = |e: smlog::FsError| e.to_string();
        let dir = self
            .engine
            .mkdir(
                ROOT_INO,
                format!("t{thread}").as_bytes(),
                ATTRS,
                Durability::Sync,
            )
            .map_err(e)?
            .ino;
        let file = self
            .engine
            .create(dir, b"data", ATTRS, Durability::Sync)
            .map_err(e)?
            .ino;
        self.engine
            .create(dir, b"r0", ATTRS, Durability::Sync)
            .map_err(e)?;
        Ok(EngineDir {
            dir,
            file,
            block: vec![0x5A; 4096],
            renames: 0,
        })
    }

    fn op(&self, d: &mut EngineDir, op: FsOp, n: u64) -> Result<(), String> {
        let e = |e: smlog::FsError| e.to_string();
        let engine = &self.engine;
        let op = op.nth(n);
        match op {
            FsOp::Create => engine
                .create(d.dir, format!("f{n}").as_bytes(), ATTRS, Durability::Sync)
                .map(drop)
                .map_err(e),
            FsOp::Write4k => {
                d.block[0] = n as u8;
                engine
                    .write(d.file, (n % 256) * 4096, &d.block, Durability::Sync)
                    .map(drop)
                    .map_err(e)
            }
            FsOp::Rename => {
                d.renames += 1;
                let (from, to) = if d.renames % 2 == 1 {
                    ("r0", "r1")
                } else {
                    ("r1", "r0")
                };
                engine
                    .rename(
                        d.dir,
                        from.as_bytes(),
                        d.dir,
                        to.as_bytes(),
                        RenameFlags::default(),
                        Durability::Sync,
                    )
                    .map_err(e)
            }
            // Mixed's fourth: unlink the file created three operations before.
            FsOp::Mixed => engine
                .unlink(d.dir, format!("f{}", n - 3).as_bytes(), Durability::Sync)
                .map_err(e),
        }
    }
}

/// The host file system: each thread works in `<dir>/t{i}`, fsyncing file and directory.
struct HostTarget {
    root: PathBuf,
}

struct HostDir {
    path: PathBuf,
    dir: File,
    file: File,
    block: Vec<u8>,
    renames: u64,
}

impl Target for HostTarget {
    type Dir = HostDir;
    fn setup(&self, thread: usize) -> Result<HostDir, String> {
        let path = self.root.join(format!("t{thread}"));
        std::fs::create_dir_all(&path).map_err(|e| e.to_string())?;
        let file = FsOpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(path.join("data"))
            .map_err(|e| e.to_string())?;
        file.set_len(256 * 4096).map_err(|e| e.to_string())?;
        File::create(path.join("r0")).map_err(|e| e.to_string())?;
        let dir = File::open(&path).map_err(|e| e.to_string())?;
        dir.sync_all().map_err(|e| e.to_string())?;
        file.sync_all().map_err(|e| e.to_string())?;
        Ok(HostDir {
            path,
            dir,
            file,
            block: vec![0x5A; 4096],
            renames: 0,
        })
    }

    fn op(&self, d: &mut HostDir, op: FsOp, n: u64) -> Result<(), String> {
        let e = |e: std::io::Error| e.to_string();
        let op = op.nth(n);
        match op {
            FsOp::Create => {
                let f = File::create(d.path.join(format!("f{n}"))).map_err(e)?;
                f.sync_all().map_err(e)?;
                d.dir.sync_all().map_err(e)
            }
            FsOp::Write4k => {
                d.block[0] = n as u8;
                d.file.write_all_at(&d.block, (n % 256) * 4096).map_err(e)?;
                d.file.sync_all().map_err(e)?;
                d.dir.sync_all().map_err(e)
            }
            FsOp::Rename => {
                d.renames += 1;
                let (from, to) = if d.renames % 2 == 1 {
                    ("r0", "r1")
                } else {
                    ("r1", "r0")
                };
                std::fs::rename(d.path.join(from), d.path.join(to)).map_err(e)?;
                d.dir.sync_all().map_err(e)
            }
            FsOp::Mixed => {
                std::fs::remove_file(d.path.join(format!("f{}", n - 3))).map_err(e)?;
                d.dir.sync_all().map_err(e)
            }
        }
    }
}

/// Runs `threads` threads of `op` against `target` for `seconds`: (ops/s, histogram).
pub(crate) fn measure<T: Target + 'static>(
    target: Arc<T>,
    threads: usize,
    op: FsOp,
    seconds: f64,
) -> Result<(f64, Histogram<u64>), String> {
    let mut dirs = Vec::new();
    for t in 0..threads {
        dirs.push(target.setup(t)?);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let handles: Vec<_> = dirs
        .into_iter()
        .map(|mut dir| {
            let target = Arc::clone(&target);
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || -> Result<(u64, Histogram<u64>), String> {
                let mut hist = histogram();
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let at = Instant::now();
                    target.op(&mut dir, op, n)?;
                    let us = (at.elapsed().as_nanos() as u64 / 1000).clamp(1, 60_000_000);
                    let _ = hist.record(us);
                    n += 1;
                }
                Ok((n, hist))
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs_f64(seconds));
    stop.store(true, Ordering::Relaxed);
    let mut total = 0u64;
    let mut all = histogram();
    for handle in handles {
        let (n, hist) = handle.join().map_err(|_| "a bench thread panicked")??;
        total += n;
        all.add(hist).map_err(|e| e.to_string())?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    Ok((total as f64 / elapsed, all))
}

fn engine_options(options: &FsBenchOptions) -> OpenOptions {
    OpenOptions {
        device: DeviceOptions {
            kind: options.device,
            direct_io: options.direct_io,
            create_dir: true,
        },
        create: true,
        ..OpenOptions::default()
    }
}

/// Runs smlog, then the host baseline, and reports both.
pub fn fs_bench(options: &FsBenchOptions) -> Result<FsBenchReport, String> {
    let base = options
        .dir
        .join(format!("smlog-bench-fs-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    let result = (|| {
        let (engine, _) = smlog_recovery::open(&base.join("engine"), engine_options(options))
            .map_err(|e| e.to_string())?;
        let target = Arc::new(EngineTarget { engine });
        let (ops, hist) = measure(
            Arc::clone(&target),
            options.threads,
            options.op,
            options.seconds,
        )?;
        target.engine.shutdown().map_err(|e| e.to_string())?;
        drop(target);
        let host = Arc::new(HostTarget {
            root: base.join("host"),
        });
        let (base_ops, base_hist) = measure(host, options.threads, options.op, options.seconds)?;
        let q = |h: &Histogram<u64>, p: f64| h.value_at_quantile(p) as f64;
        Ok(FsBenchReport {
            op: options.op,
            threads: options.threads,
            ops_per_sec: ops,
            p50_us: q(&hist, 0.5),
            p99_us: q(&hist, 0.99),
            p999_us: q(&hist, 0.999),
            baseline_ops_per_sec: base_ops,
            baseline_p50_us: q(&base_hist, 0.5),
            baseline_p99_us: q(&base_hist, 0.99),
            ratio: ops / base_ops.max(1e-9),
        })
    })();
    let _ = std::fs::remove_dir_all(&base);
    result
}

/// What the scale run measured.
#[derive(Clone, Debug, Serialize)]
pub struct ScaleReport {
    /// Files created.
    pub files: u64,
    /// Files created per second (async creates from the threads, one sync at the end).
    pub creates_per_sec: f64,
    /// Bytes of small writes (in the log, dirty in memory) the checkpoint wrote back.
    pub dirty_bytes: u64,
    /// The checkpoint after the creates: milliseconds in all.
    pub checkpoint_ms: f64,
    /// How long that checkpoint held commits off, microseconds.
    pub checkpoint_stall_us: u64,
    /// Bytes of its image.
    pub image_bytes: u64,
    /// Reopening from that checkpoint: milliseconds.
    pub recovery_ms: f64,
    /// Reopening after more creates with no checkpoint (the log replayed): milliseconds.
    pub replay_recovery_ms: f64,
    /// Records replayed in that second recovery.
    pub replayed_records: u64,
    /// Peak resident memory of the process (VmHWM), MiB.
    pub peak_rss_mib: f64,
}

fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Creates `files` files (1000 per directory) from `threads` threads, checkpoints,
/// reopens, creates 10% more, reopens again without a checkpoint.
pub fn scale_bench(
    files: u64,
    threads: usize,
    dir: &Path,
    device: DeviceKind,
) -> Result<ScaleReport, String> {
    let base = dir.join(format!("smlog-bench-scale-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    let result = (|| {
        let mut options = OpenOptions {
            device: DeviceOptions {
                kind: device,
                ..DeviceOptions::default()
            },
            create: true,
            ..OpenOptions::default()
        };
        options.engine.checkpoint_log_bytes = 0;
        options.engine.checkpoint_dirty_bytes = 0;
        let e = |e: smlog::FsError| e.to_string();
        let (engine, _) = smlog_recovery::open(&base, options).map_err(e)?;
        let create = |engine: &Engine<Box<dyn Device>>, first: u64, count: u64| {
            let started = Instant::now();
            let per_thread = count.div_ceil(threads as u64);
            std::thread::scope(|scope| -> Result<(), String> {
                let handles: Vec<_> = (0..threads as u64)
                    .map(|t| {
                        scope.spawn(move || -> Result<(), String> {
                            let from = first + t * per_thread;
                            let to = (from + per_thread).min(first + count);
                            let mut dir = ROOT_INO;
                            for n in from..to {
                                if n % 1000 == 0 || n == from {
                                    let name = format!("d{}", n / 1000);
                                    dir = match engine.lookup(ROOT_INO, name.as_bytes()) {
                                        Ok(a) => a.ino,
                                        Err(_) => {
                                            engine
                                                .mkdir(
                                                    ROOT_INO,
                                                    name.as_bytes(),
                                                    ATTRS,
                                                    Durability::Async,
                                                )
                                                .map_err(|e| e.to_string())?
                                                .ino
                                        }
                                    };
                                }
                                engine
                                    .create(
                                        dir,
                                        format!("f{n}").as_bytes(),
                                        ATTRS,
                                        Durability::Async,
                                    )
                                    .map_err(|e| e.to_string())?;
                            }
                            Ok(())
                        })
                    })
                    .collect();
                for h in handles {
                    h.join().map_err(|_| "a create thread panicked")??;
                }
                Ok(())
            })?;
            engine.sync().map_err(|e| e.to_string())?;
            Ok::<f64, String>(count as f64 / started.elapsed().as_secs_f64())
        };
        let creates_per_sec = create(&engine, 0, files)?;
        // Dirty data for the checkpoint to write back: 4 KiB into every tenth file.
        let block = vec![0xA5u8; 4096];
        let mut dirty_bytes = 0u64;
        for n in (0..files).step_by(10) {
            let dir = engine
                .lookup(ROOT_INO, format!("d{}", n / 1000).as_bytes())
                .map_err(e)?;
            let file = engine
                .lookup(dir.ino, format!("f{n}").as_bytes())
                .map_err(e)?;
            engine
                .write(file.ino, 0, &block, Durability::Async)
                .map_err(e)?;
            dirty_bytes += block.len() as u64;
        }
        engine.sync().map_err(e)?;
        let stats = engine.checkpoint().map_err(e)?;
        drop(engine);
        let started = Instant::now();
        let (engine, _) = smlog_recovery::open(&base, options).map_err(e)?;
        let recovery_ms = started.elapsed().as_secs_f64() * 1e3;
        let more = (files / 10).max(1000);
        // The extra files go into fresh directories, so no name collides.
        let first = (files.div_ceil(1000) + 1) * 1000;
        create(&engine, first, more)?;
        drop(engine);
        let started = Instant::now();
        let (engine, report) = smlog_recovery::open(&base, options).map_err(e)?;
        let replay_recovery_ms = started.elapsed().as_secs_f64() * 1e3;
        let inodes = engine.meta().inodes.len() as u64;
        if inodes < files + more {
            return Err(format!(
                "{inodes} inodes after recovery, {} created",
                files + more
            ));
        }
        Ok(ScaleReport {
            files,
            creates_per_sec,
            dirty_bytes,
            checkpoint_ms: stats.elapsed.as_secs_f64() * 1e3,
            checkpoint_stall_us: stats.stall.as_micros() as u64,
            image_bytes: stats.image_bytes,
            recovery_ms,
            replay_recovery_ms,
            replayed_records: report.scanned_records,
            peak_rss_mib: peak_rss_mib(),
        })
    })();
    let _ = std::fs::remove_dir_all(&base);
    result
}
