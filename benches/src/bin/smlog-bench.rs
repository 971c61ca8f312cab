//! `smlog-bench`: smlog against the engines people would pick instead. Its own binary, so
//! that `smlog` (the main job) builds none of them.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use smlog_benches::compare::{compare, markdown, CompareOptions};
use smlog_benches::peers::System;

/// smlog against raft-engine, okaywal, SQLite, RocksDB (feature peer-rocksdb) and the device.
#[derive(Debug, Parser)]
#[command(name = "smlog-bench", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// smlog's log against raft-engine, okaywal, SQLite (and RocksDB with the feature
    /// peer-rocksdb) and the device, over threads x record sizes, interleaved; then reopen
    /// after a long log; then file operations against the host and SQLite. Writes
    /// results.json, results.md and charts to --out.
    Compare(CompareArgs),
}

/// `smlog-bench compare`.
#[derive(Debug, Args)]
struct CompareArgs {
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
}

impl CompareArgs {
    fn options(self) -> Result<CompareOptions, String> {
        let mut options = if self.quick {
            CompareOptions::quick(self.dir, self.out)
        } else {
            CompareOptions::full(self.dir, self.out)
        };
        if let Some(seconds) = self.seconds {
            options.seconds = seconds;
        }
        if !self.threads.is_empty() {
            options.threads = self.threads;
        }
        if !self.record_bytes.is_empty() {
            options.record_bytes = self.record_bytes;
        }
        if let Some(mb) = self.recovery_megabytes {
            options.recovery_bytes = mb << 20;
        }
        if !self.systems.is_empty() {
            options.systems = self
                .systems
                .iter()
                .map(|s| System::parse(s))
                .collect::<Result<_, _>>()?;
        }
        if !self.fs_threads.is_empty() {
            options.fs_threads = self.fs_threads.into_iter().filter(|&t| t > 0).collect();
        }
        Ok(options)
    }
}

fn run_compare(args: CompareArgs) -> Result<ExitCode, String> {
    let options = args.options()?;
    let report = compare(&options, |line| println!("{line}"))?;
    println!();
    print!("{}", markdown(&report));
    println!(
        "\nresults.json, results.md and the charts (SVG, PNG) are in {}",
        options.out.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Compare(args) => run_compare(args),
    };
    result.unwrap_or_else(|error| {
        eprintln!("smlog-bench: {error}");
        ExitCode::from(3)
    })
}
