//! `smlog bench log|fs|recovery|scale|mount`: smlog beside the device or the host file
//! system in the same run. Other engines are compared by `smlog-bench compare`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use smlog_benches::fs::FsOp;
use smlog_benches::{log_bench, recovery_bench, LogBenchOptions, RecoveryBenchOptions};

use crate::OpenArgs;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// `smlog bench ...`.
#[derive(Debug, clap::Subcommand)]
pub enum BenchCommand {
    /// Durable file operations through the engine against the host file system with
    /// fsync of file and directory, in the same run (SQLite too: `smlog-bench compare`).
    Fs {
        /// Threads, each in its own directory (a comma-separated list runs each).
        #[arg(long, value_delimiter = ',', default_value = "16")]
        threads: Vec<usize>,
        /// create, write4k, rename or mixed (a comma-separated list runs each).
        #[arg(long, value_delimiter = ',', default_value = "create")]
        op: Vec<FsOp>,
        /// Seconds per run.
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
        /// Directory on the file system to measure.
        #[arg(long, default_value = "/var/tmp")]
        dir: PathBuf,
        #[command(flatten)]
        open: OpenArgs,
        /// One JSON object per run.
        #[arg(long)]
        json: bool,
    },
    /// Moved: the comparison with other engines is `smlog-bench compare` (package
    /// smlog-benches), so that this binary builds no peer.
    #[command(hide = true)]
    Compare {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        rest: Vec<String>,
    },
    /// dbench on an `smlog mount` against dbench on the host file system, in the same
    /// run (interleaved; medians).
    Mount {
        /// Seconds per dbench run.
        #[arg(long, default_value_t = 20)]
        seconds: u32,
        /// dbench clients.
        #[arg(long, default_value_t = 4)]
        clients: u32,
        /// Runs of each (interleaved); the medians are reported.
        #[arg(long, default_value_t = 1)]
        runs: usize,
        /// Mount with --sync (every change durable before it returns).
        #[arg(long)]
        sync: bool,
        /// Mount with --writeback-cache.
        #[arg(long)]
        writeback_cache: bool,
        /// Directory on the host file system (the baseline, and the engine's files).
        #[arg(long, default_value = "/var/tmp")]
        dir: PathBuf,
        /// Print one JSON object (keys mbps, baseline_mbps, ratio, ...).
        #[arg(long)]
        json: bool,
    },
    /// `smlog nfs` against NFS-Ganesha (VFS, on the host file system) through the same
    /// NFSv3 client, interleaved (medians): sequential write and read MB/s, small-file
    /// creates/s, metadata ops/s. Needs `nfs-ganesha` and `nfs-ganesha-vfs`.
    Nfs {
        /// Megabytes written, then read, sequentially.
        #[arg(long, default_value_t = 512)]
        megabytes: usize,
        /// Concurrent clients for creates and metadata.
        #[arg(long, default_value_t = 8)]
        clients: usize,
        /// Seconds per rate.
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
        /// Runs of each server (interleaved); the medians are reported.
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// Directory on the host file system (both servers' files).
        #[arg(long, default_value = "/var/tmp")]
        dir: PathBuf,
        /// One JSON object.
        #[arg(long)]
        json: bool,
    },
    /// A replicated volume (three node processes on loopback) against one node's engine,
    /// in the same run: durable creates/s and 4 KiB writes/s, failover time over leader
    /// SIGKILLs, and a stopped follower's catch-up rate.
    Cluster {
        /// Concurrent clients (a comma-separated list runs each).
        #[arg(long, value_delimiter = ',', default_value = "1,16")]
        clients: Vec<usize>,
        /// Seconds per measurement.
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
        /// Leader kills for the failover figures.
        #[arg(long, default_value_t = 5)]
        kills: u32,
        /// Megabytes written while a follower is stopped, for its catch-up rate.
        #[arg(long, default_value_t = 64)]
        catch_up_mb: u64,
        /// Directory on the host file system for the nodes and the single engine.
        #[arg(long, default_value = "/var/tmp")]
        dir: PathBuf,
        /// One JSON object per row.
        #[arg(long)]
        json: bool,
    },
    /// Scale: create many files, checkpoint, reopen; times and peak memory.
    Scale {
        /// Files to create.
        #[arg(long, default_value_t = 1_000_000)]
        files: u64,
        /// Creating threads.
        #[arg(long, default_value_t = 8)]
        threads: usize,
        /// Directory on the file system to measure.
        #[arg(long, default_value = "/var/tmp")]
        dir: PathBuf,
        #[command(flatten)]
        open: OpenArgs,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Time to recover a log of a given size, against reading its files sequentially.
    Recovery {
        /// Megabytes of log to write and recover.
        #[arg(long, default_value_t = 1024)]
        megabytes: u64,
        /// Payload bytes per record.
        #[arg(long, default_value_t = 4096)]
        record_bytes: usize,
        /// Directory on the file system to measure.
        #[arg(long, default_value = "/var/tmp")]
        dir: PathBuf,
        #[command(flatten)]
        open: OpenArgs,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Durable commits through the log against plain pwrite + fdatasync of the same batches.
    Log {
        /// Committing threads (a comma-separated list runs each).
        #[arg(long, value_delimiter = ',', default_value = "16")]
        threads: Vec<usize>,
        /// Payload bytes per record (a comma-separated list runs each).
        #[arg(long, value_delimiter = ',', default_value = "512")]
        record_bytes: Vec<usize>,
        /// Seconds per run.
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
        /// Directory on the file system to measure.
        #[arg(long, default_value = "/var/tmp")]
        dir: PathBuf,
        /// Batches in flight at once (1 ..= 4).
        #[arg(long, default_value_t = smlog::constants::BATCHES_IN_FLIGHT_DEFAULT)]
        in_flight: usize,
        #[command(flatten)]
        open: OpenArgs,
        /// One JSON object per run.
        #[arg(long)]
        json: bool,
    },
}

/// Runs `smlog bench ...`.
pub fn run(command: BenchCommand) -> Result<ExitCode> {
    match command {
        BenchCommand::Log {
            threads,
            record_bytes,
            seconds,
            dir,
            in_flight,
            open,
            json,
        } => log(
            &threads,
            &record_bytes,
            seconds,
            &dir,
            in_flight,
            open,
            json,
        ),
        BenchCommand::Fs {
            threads,
            op,
            seconds,
            dir,
            open,
            json,
        } => fs(&threads, &op, seconds, &dir, open, json),
        BenchCommand::Compare { .. } => {
            eprintln!(
                "smlog: the comparison with other engines is its own binary, so that smlog \
                 builds none of them: cargo run --release -p smlog-benches --bin smlog-bench -- compare"
            );
            Ok(ExitCode::from(2))
        }
        BenchCommand::Mount {
            seconds,
            clients,
            runs,
            sync,
            writeback_cache,
            dir,
            json,
        } => mount(seconds, clients, runs, sync, writeback_cache, &dir, json),
        BenchCommand::Nfs {
            megabytes,
            clients,
            seconds,
            runs,
            dir,
            json,
        } => crate::bench_nfs::run(
            crate::bench_nfs::NfsBenchOptions {
                megabytes,
                clients,
                seconds,
                runs,
            },
            &dir,
            json,
        )
        .map_err(|e| -> Box<dyn std::error::Error> { e }),
        BenchCommand::Scale {
            files,
            threads,
            dir,
            open,
            json,
        } => scale(files, threads, &dir, open, json),
        BenchCommand::Cluster {
            clients,
            seconds,
            kills,
            catch_up_mb,
            dir,
            json,
        } => crate::bench_cluster::run(&clients, seconds, kills, catch_up_mb, &dir, json),
        BenchCommand::Recovery {
            megabytes,
            record_bytes,
            dir,
            open,
            json,
        } => recovery(megabytes, record_bytes, &dir, open, json),
    }
}

fn log(
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

fn recovery(
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
fn fs(
    threads: &[usize],
    ops: &[FsOp],
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
fn scale(
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

/// One dbench run: throughput and the worst latency it reported.
#[derive(Clone, Copy, Debug, serde::Serialize)]
struct Dbench {
    mbps: f64,
    max_latency_ms: f64,
}

fn dbench(dir: &Path, clients: u32, seconds: u32) -> Result<Dbench> {
    let out = std::process::Command::new("dbench")
        .args(["-t", &seconds.to_string(), "-D"])
        .arg(dir)
        .arg(clients.to_string())
        .output()
        .map_err(|e| format!("dbench: {e} (apt-get install -y dbench)"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    // "Throughput 61.8953 MB/sec  4 clients  4 procs  max_latency=53.241 ms"
    let line = stdout
        .lines()
        .find(|l| l.starts_with("Throughput"))
        .ok_or_else(|| format!("dbench printed no throughput ({}):\n{stdout}", out.status))?;
    let mbps = line
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("cannot read dbench's line: {line}"))?;
    let max_latency_ms = line
        .split("max_latency=")
        .nth(1)
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("cannot read dbench's line: {line}"))?;
    Ok(Dbench {
        mbps,
        max_latency_ms,
    })
}

fn is_mounted(mountpoint: &Path) -> bool {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let want = mountpoint.to_string_lossy().replace(' ', "\\040");
    mounts
        .lines()
        .any(|line| line.split(' ').nth(1) == Some(want.as_str()))
}

/// dbench on an `smlog mount` (this binary, in a child process) and on the host file
/// system.
fn dbench_on_mount(
    root: &Path,
    run: usize,
    clients: u32,
    seconds: u32,
    mount_args: &[&str],
) -> Result<Dbench> {
    let engine = root.join(format!("engine-{run}"));
    let mnt = root.join(format!("mnt-{run}"));
    std::fs::create_dir_all(&mnt)?;
    let mut command = std::process::Command::new(std::env::current_exe()?);
    command
        .arg("mount")
        .arg(&engine)
        .arg(&mnt)
        .arg("--create")
        .args(mount_args);
    let mut child = command.stderr(std::process::Stdio::null()).spawn()?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !is_mounted(&mnt) {
        if child.try_wait()?.is_some() || std::time::Instant::now() > deadline {
            let _ = child.kill();
            return Err("smlog mount did not mount (see `smlog mount` by hand)".into());
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let db = mnt.join("db");
    let result = std::fs::create_dir(&db)
        .map_err(Into::into)
        .and_then(|()| dbench(&db, clients, seconds));
    let unmounted = std::process::Command::new("fusermount3")
        .arg("-u")
        .arg(&mnt)
        .status()?;
    if !unmounted.success() {
        let _ = child.kill();
    }
    child.wait()?;
    std::fs::remove_dir_all(&engine)?;
    result
}

/// `smlog bench mount`: dbench on an smlog mount against the host file system, runs
/// interleaved; medians.
fn mount(
    seconds: u32,
    clients: u32,
    runs: usize,
    sync: bool,
    writeback_cache: bool,
    dir: &Path,
    as_json: bool,
) -> Result<ExitCode> {
    let mut mount_args = Vec::new();
    if sync {
        mount_args.push("--sync");
    }
    if writeback_cache {
        mount_args.push("--writeback-cache");
    }
    let root = tempfile::Builder::new()
        .prefix("smlog-bench-mount-")
        .tempdir_in(dir)?;
    let mut smlog = Vec::new();
    let mut host = Vec::new();
    for run in 0..runs.max(1) {
        let host_dir = root.path().join(format!("host-{run}"));
        std::fs::create_dir(&host_dir)?;
        let baseline = dbench(&host_dir, clients, seconds)?;
        std::fs::remove_dir_all(&host_dir)?;
        let mounted = dbench_on_mount(root.path(), run, clients, seconds, &mount_args)?;
        if !as_json {
            println!(
                "run {run}: smlog mount {:.1} MB/s (max latency {:.1} ms), host {:.1} MB/s \
                 (max latency {:.1} ms), ratio {:.3}",
                mounted.mbps,
                mounted.max_latency_ms,
                baseline.mbps,
                baseline.max_latency_ms,
                mounted.mbps / baseline.mbps
            );
        }
        smlog.push(mounted);
        host.push(baseline);
    }
    let median = |runs: &[Dbench], f: fn(&Dbench) -> f64| {
        let mut values: Vec<f64> = runs.iter().map(f).collect();
        values.sort_by(f64::total_cmp);
        values[values.len() / 2]
    };
    let mbps = median(&smlog, |d| d.mbps);
    let baseline_mbps = median(&host, |d| d.mbps);
    let report = serde_json::json!({
        "mbps": mbps,
        "baseline_mbps": baseline_mbps,
        "ratio": mbps / baseline_mbps,
        "max_latency_ms": median(&smlog, |d| d.max_latency_ms),
        "baseline_max_latency_ms": median(&host, |d| d.max_latency_ms),
        "clients": clients,
        "seconds": seconds,
        "runs": runs,
        "sync": sync,
        "writeback_cache": writeback_cache,
        "dir": dir,
    });
    if as_json {
        println!("{report}");
    } else {
        println!(
            "dbench {clients} clients, {seconds} s, median of {runs}: smlog mount {mbps:.1} MB/s, \
             host file system {baseline_mbps:.1} MB/s, ratio {:.3}",
            mbps / baseline_mbps
        );
    }
    Ok(ExitCode::SUCCESS)
}
