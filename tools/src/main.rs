//! `smlog`: inspect, verify and recover logs, run the crash demo and the benchmarks.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use smlog::io::{DeviceKind, DeviceOptions};
use smlog::RecoveryMode;

mod bench;
mod demo;
mod inspect;
mod mount;
mod torture;
mod txn;

/// smlog: a crash-safe logged storage engine for file servers.
#[derive(Debug, Parser)]
#[command(name = "smlog", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Inspect a log: dump its records, summarise it, or verify it.
    #[command(subcommand)]
    Log(LogCommand),
    /// Recover after a crash: discard a torn tail, refuse corruption, and (for an engine)
    /// resume or roll back every transaction that was in flight.
    Recover {
        /// The log directory.
        dir: PathBuf,
        /// Report what recovery would do; write nothing.
        #[arg(long)]
        dry_run: bool,
        /// strict, torn-tail (default) or salvage.
        #[arg(long, default_value = "torn-tail")]
        mode: RecoveryMode,
        #[command(flatten)]
        open: OpenArgs,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Serve the engine in DIR as a file system on MOUNTPOINT through FUSE: recovers DIR
    /// (creating a file system when it is empty), serves until unmounted or signalled
    /// (SIGINT, SIGTERM: unmount, sync, checkpoint). A directory holding anything else is
    /// never formatted over.
    Mount {
        /// The engine's directory.
        dir: PathBuf,
        /// Create DIR, with a new file system, when it does not exist.
        #[arg(long)]
        create: bool,
        /// Largest data file (bytes, or with K, M, G): writes past it get ENOSPC, and df
        /// shows it, so a full disk can be tried without filling one.
        #[arg(long, value_parser = parse_bytes)]
        capacity: Option<u64>,
        /// Where to mount it.
        mountpoint: PathBuf,
        /// Make every change durable before it returns (default: at fsync, like a local
        /// file system).
        #[arg(long)]
        sync: bool,
        /// Mount options: allow_other, allow_root, default_permissions (always on), ro,
        /// auto_unmount, noatime, ...
        #[arg(short = 'o', value_delimiter = ',')]
        options: Vec<String>,
        /// Threads serving requests.
        #[arg(long, default_value_t = 4)]
        threads: usize,
        /// Let the kernel cache writes and send them in large batches (FUSE writeback
        /// cache). fsync still writes them back and makes them durable first.
        #[arg(long)]
        writeback_cache: bool,
        #[command(flatten)]
        open: OpenArgs,
    },
    /// Create a new, empty file system in DIR (made when missing; it must be empty).
    Format {
        /// The engine's directory.
        dir: PathBuf,
        #[command(flatten)]
        open: OpenArgs,
    },
    /// Append from several threads in a child process, SIGKILL it mid-flight, recover, and
    /// check that every acknowledged record is intact. Repeats for several rounds.
    Demo {
        /// Directory for the demo's log (default: a new directory under /var/tmp).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Kill-and-recover rounds.
        #[arg(long, default_value_t = 5)]
        rounds: u32,
        /// Appending threads in the child.
        #[arg(long, default_value_t = 8)]
        threads: usize,
        #[command(flatten)]
        open: OpenArgs,
    },
    /// The child process of `smlog demo` (not for direct use).
    #[command(hide = true)]
    DemoChild {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        threads: usize,
        #[arg(long)]
        round: u32,
        #[command(flatten)]
        open: OpenArgs,
    },
    /// Benchmarks, each beside its baseline in the same run.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Run the file-system workload on the simulated device through crashes and faults,
    /// checked against a reference model; one seed gives the same run every time. Without
    /// --seed, random seeds until the time is up.
    Torture {
        /// Run (replay) this seed only.
        #[arg(long)]
        seed: Option<u64>,
        /// Seconds to keep trying new seeds (without --seed).
        #[arg(long, default_value_t = 60.0)]
        seconds: f64,
        /// Without --seed: start the sequence of seeds here (default: from the clock), so a
        /// timed run covers the same seeds every time.
        #[arg(long)]
        first_seed: Option<u64>,
        /// Without --seed: stop after this many seeds (or at --seconds, whichever first).
        #[arg(long)]
        seeds: Option<u64>,
        /// Faults: comma-separated crash, io-error, recovery-crash, steps, damage; or
        /// default (all but damage), all.
        #[arg(long, default_value = "default")]
        faults: smlog_recovery::harness::Faults,
        /// Crash-recover cycles per seed.
        #[arg(long, default_value_t = 8)]
        cycles: u64,
        /// Stop a seed after this many operations (to replay a shortened failure).
        #[arg(long)]
        ops: Option<u64>,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// File transactions in an engine's log: list them, or show one step by step.
    #[command(subcommand)]
    Txn(TxnCommand),
    /// Recover an engine's directory, then write a checkpoint (the log before it is
    /// reused; the next open replays nothing).
    Checkpoint {
        /// The engine's directory.
        dir: PathBuf,
        #[command(flatten)]
        open: OpenArgs,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Check an engine's store: namespace, link counts, data blocks and free space agree.
    /// Exit 0 when clean, 1 with what is wrong. Writes nothing.
    Fsck {
        /// The engine's directory.
        dir: PathBuf,
        #[command(flatten)]
        open: OpenArgs,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum TxnCommand {
    /// One line per transaction in the log: operation, steps, how it ended.
    List {
        /// The engine's directory.
        dir: PathBuf,
        /// Only transactions without a commit or abort (what recovery would finish).
        #[arg(long)]
        in_flight: bool,
        #[command(flatten)]
        open: OpenArgs,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Every record of one transaction: state, redo and undo of each step.
    Show {
        /// The engine's directory.
        dir: PathBuf,
        /// Transaction id.
        txn_id: u64,
        #[command(flatten)]
        open: OpenArgs,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum LogCommand {
    /// One line per record: LSN, transaction, step, kind, length, CRC, place.
    Dump {
        /// The log directory.
        dir: PathBuf,
        #[command(flatten)]
        open: OpenArgs,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Segments, records, bytes, durable mark, torn tail, records per kind.
    Stat {
        /// The log directory.
        dir: PathBuf,
        #[command(flatten)]
        open: OpenArgs,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Exit 0 when clean, 1 when a torn tail is found, 2 on corruption (with its place).
    Verify {
        /// The log directory.
        dir: PathBuf,
        #[command(flatten)]
        open: OpenArgs,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// Durable file operations through the engine against the host file system with
    /// fsync of file and directory, in the same run.
    Fs {
        /// Threads, each in its own directory (a comma-separated list runs each).
        #[arg(long, value_delimiter = ',', default_value = "16")]
        threads: Vec<usize>,
        /// create, write4k, rename or mixed (a comma-separated list runs each).
        #[arg(long, value_delimiter = ',', default_value = "create")]
        op: Vec<smlog_benches::fs::FsOp>,
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
    /// smlog's log against raft-engine, okaywal, SQLite (and RocksDB with the feature
    /// peer-rocksdb) and the device, over threads x record sizes, interleaved; then reopen
    /// after a long log. Writes results.json, results.md and charts to --out.
    Compare {
        /// About two minutes: 0.6 s per cell, recovery after 256 MB.
        #[arg(long)]
        quick: bool,
        /// Where results.json, results.md and the charts go.
        #[arg(long, default_value = "bench-results")]
        out: PathBuf,
        /// Seconds per cell (default 3, or 0.6 with --quick).
        #[arg(long)]
        seconds: Option<f64>,
        /// Threads (default 1,4,16,64).
        #[arg(long, value_delimiter = ',')]
        threads: Vec<usize>,
        /// Record sizes (default 128,512,4096,65536).
        #[arg(long, value_delimiter = ',')]
        record_bytes: Vec<usize>,
        /// Megabytes of log for the recovery comparison (default 1024, or 256 with
        /// --quick; 0 skips it).
        #[arg(long)]
        recovery_megabytes: Option<u64>,
        /// Systems (default all built in): smlog, raft-engine, okaywal, sqlite, rocksdb,
        /// device-pwrite, device-uring.
        #[arg(long, value_delimiter = ',')]
        systems: Vec<String>,
        /// Thread counts of the file-operation rows (default 1,16; 0 skips them).
        #[arg(long, value_delimiter = ',')]
        fs_threads: Vec<usize>,
        /// Directory on the file system to measure.
        #[arg(long, default_value = "/var/tmp")]
        dir: PathBuf,
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

/// A size in bytes: digits, then optionally K, M or G (powers of 1024).
fn parse_bytes(text: &str) -> Result<u64, String> {
    let (digits, shift) = match text.as_bytes().last() {
        Some(b'K' | b'k') => (&text[..text.len() - 1], 10),
        Some(b'M' | b'm') => (&text[..text.len() - 1], 20),
        Some(b'G' | b'g') => (&text[..text.len() - 1], 30),
        _ => (text, 0),
    };
    let value: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a size (digits, then K, M or G)"))?;
    value
        .checked_mul(1 << shift)
        .ok_or_else(|| format!("{text} is too large"))
}

/// How to open a log directory.
#[derive(Debug, Clone, Copy, Args)]
struct OpenArgs {
    /// Use pwrite + fdatasync instead of io_uring.
    #[arg(long)]
    posix: bool,
    /// Buffered IO instead of O_DIRECT (for file systems that refuse O_DIRECT, like tmpfs).
    #[arg(long)]
    buffered: bool,
}

impl OpenArgs {
    fn device_options(self, create_dir: bool) -> DeviceOptions {
        DeviceOptions {
            kind: if self.posix {
                DeviceKind::Posix
            } else {
                DeviceKind::Uring
            },
            direct_io: !self.buffered,
            create_dir,
        }
    }
}

/// Commands that print reports die quietly when the reader of their output goes away
/// (`smlog log stat DIR | head -1`), as Unix tools do, rather than panic on the closed
/// pipe. The mount and the demo keep ignoring SIGPIPE: they must finish their work.
fn quiet_on_closed_pipe(command: &Command) {
    if matches!(
        command,
        Command::Mount { .. } | Command::Demo { .. } | Command::DemoChild { .. }
    ) {
        return;
    }
    // SAFETY: restoring the default disposition of SIGPIPE, before any thread starts, has
    // no handler to race with.
    unsafe {
        let _ = nix::sys::signal::signal(
            nix::sys::signal::Signal::SIGPIPE,
            nix::sys::signal::SigHandler::SigDfl,
        );
    }
}

/// The engine's log lines (a data block failing its checksum, ...) on stderr, one per
/// line, `smlog: ` first.
struct StderrLogger;

impl log::Log for StderrLogger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::Level::Warn
    }
    fn log(&self, record: &log::Record<'_>) {
        if self.enabled(record.metadata()) {
            eprintln!("smlog: {}", record.args());
        }
    }
    fn flush(&self) {}
}

static LOGGER: StderrLogger = StderrLogger;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Torture runs damage data on purpose: its checksum failures are counted, not printed.
    if !matches!(cli.command, Command::Torture { .. }) {
        let _ = log::set_logger(&LOGGER).map(|()| log::set_max_level(log::LevelFilter::Warn));
    }
    quiet_on_closed_pipe(&cli.command);
    let result = match cli.command {
        Command::Log(LogCommand::Dump { dir, open, json }) => inspect::dump(&dir, open, json),
        Command::Log(LogCommand::Stat { dir, open, json }) => inspect::stat(&dir, open, json),
        Command::Log(LogCommand::Verify { dir, open, json }) => inspect::verify(&dir, open, json),
        Command::Recover {
            dir,
            dry_run,
            mode,
            open,
            json,
        } => {
            if txn::is_engine_dir(&dir) {
                txn::recover(&dir, open, mode, dry_run, json)
            } else {
                inspect::recover(&dir, open, mode, dry_run, json)
            }
        }
        Command::Txn(TxnCommand::List {
            dir,
            in_flight,
            open,
            json,
        }) => txn::list(&dir, open, in_flight, json),
        Command::Txn(TxnCommand::Show {
            dir,
            txn_id,
            open,
            json,
        }) => txn::show(&dir, open, txn_id, json),
        Command::Fsck { dir, open, json } => txn::fsck(&dir, open, json),
        Command::Torture {
            seed,
            seconds,
            first_seed,
            seeds,
            faults,
            cycles,
            ops,
            json,
        } => torture::run(torture::TortureArgs {
            seed,
            seconds,
            first_seed,
            seed_count: seeds,
            faults,
            cycles,
            ops,
            json,
        }),
        Command::Format { dir, open } => txn::format(&dir, open),
        Command::Mount {
            dir,
            create,
            capacity,
            mountpoint,
            sync,
            options,
            threads,
            writeback_cache,
            open,
        } => mount::run(mount::MountArgs {
            dir,
            create,
            capacity_bytes: capacity,
            mountpoint,
            sync,
            options,
            threads,
            writeback_cache,
            open,
        }),
        Command::Checkpoint { dir, open, json } => txn::checkpoint(&dir, open, json),
        Command::Demo {
            dir,
            rounds,
            threads,
            open,
        } => demo::run(dir, rounds, threads, open),
        Command::DemoChild {
            dir,
            threads,
            round,
            open,
        } => demo::child(&dir, threads, round, open),
        Command::Bench(BenchCommand::Log {
            threads,
            record_bytes,
            seconds,
            dir,
            in_flight,
            open,
            json,
        }) => bench::log(
            &threads,
            &record_bytes,
            seconds,
            &dir,
            in_flight,
            open,
            json,
        ),
        Command::Bench(BenchCommand::Fs {
            threads,
            op,
            seconds,
            dir,
            open,
            json,
        }) => bench::fs(&threads, &op, seconds, &dir, open, json),
        Command::Bench(BenchCommand::Compare {
            quick,
            out,
            seconds,
            threads,
            record_bytes,
            recovery_megabytes,
            systems,
            fs_threads,
            dir,
        }) => bench::compare(bench::CompareArgs {
            quick,
            out,
            seconds,
            threads,
            record_bytes,
            recovery_megabytes,
            systems,
            fs_threads,
            dir,
        }),
        Command::Bench(BenchCommand::Mount {
            seconds,
            clients,
            runs,
            sync,
            writeback_cache,
            dir,
            json,
        }) => bench::mount(seconds, clients, runs, sync, writeback_cache, &dir, json),
        Command::Bench(BenchCommand::Scale {
            files,
            threads,
            dir,
            open,
            json,
        }) => bench::scale(files, threads, &dir, open, json),
        Command::Bench(BenchCommand::Recovery {
            megabytes,
            record_bytes,
            dir,
            open,
            json,
        }) => bench::recovery(megabytes, record_bytes, &dir, open, json),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("smlog: {error}");
            ExitCode::from(3)
        }
    }
}
