//! `smlog`: inspect, verify and recover logs, mount the engine, run the crash demo, the
//! torture run and smlog's own benchmarks. Each command owns its arguments in its module;
//! the comparison with other engines is `smlog-bench compare` (package `smlog-benches`).

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod bench;
mod bench_cluster;
mod bench_nfs;
mod cli;
mod cluster;
mod demo;
mod demo_cluster;
mod inspect;
mod local_cluster;
mod mount;
mod mount_cluster;
mod nfs;
mod posix;
mod torture;
mod torture_cluster;
mod txn;

pub use cli::{DirArgs, OpenArgs};

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
    Log(inspect::LogCommand),
    /// Recover after a crash: discard a torn tail, refuse corruption, and (for an engine)
    /// resume or roll back every transaction that was in flight.
    Recover(txn::RecoverArgs),
    /// Serve the engine in DIR as a file system on MOUNTPOINT through FUSE: recovers DIR
    /// (creating a file system when it is empty), serves until unmounted or signalled
    /// (SIGINT, SIGTERM: unmount, sync, checkpoint). A directory holding anything else is
    /// never formatted over. With --node, DIR is a cluster node's directory: the mount
    /// runs the node and serves the replicated volume.
    Mount(mount::MountArgs),
    /// Serve the engine in DIR over NFSv3 (MOUNT on the same port: no portmapper): recovers
    /// DIR, serves until SIGINT or SIGTERM (then sync, checkpoint). Writes are durable at
    /// COMMIT (or at once when the client asks, or with --sync); a retransmitted request,
    /// even after a crash, gets its first outcome.
    Nfs(nfs::NfsArgs),
    /// Create a new, empty file system in DIR (made when missing; it must be empty).
    Format(txn::FormatArgs),
    /// Append from several threads in a child process, SIGKILL it mid-flight, recover, and
    /// check that every acknowledged record is intact. Repeats for several rounds.
    Demo(demo::DemoArgs),
    /// The child process of `smlog demo` (not for direct use).
    #[command(hide = true)]
    DemoChild(demo::DemoChildArgs),
    /// Benchmarks, each beside its baseline in the same run.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Run the file-system workload on the simulated device through crashes and faults,
    /// checked against a reference model; one seed gives the same run every time. Without
    /// --seed, random seeds until the time is up.
    Torture(torture::TortureArgs),
    /// File transactions in an engine's log: list them, or show one step by step.
    #[command(subcommand)]
    Txn(txn::TxnCommand),
    /// Recover an engine's directory, then write a checkpoint (the log before it is
    /// reused; the next open replays nothing).
    Checkpoint(DirArgs),
    /// Check an engine's store: namespace, link counts, data blocks and free space agree.
    /// Exit 0 when clean, 1 with what is wrong. Writes nothing.
    Fsck(DirArgs),
    /// A volume replicated by Raft over several nodes: make a node, run it, add or remove
    /// one, show the cluster.
    #[command(subcommand)]
    Cluster(cluster::ClusterCommand),
    /// A differential POSIX tester: random sequences of system calls on the host's ext4
    /// and on an smlog mount, compared answer for answer and tree for tree.
    #[command(subcommand)]
    Posix(posix::PosixCommand),
}

/// Commands that print reports die quietly when the reader of their output goes away
/// (`smlog log stat DIR | head -1`), as Unix tools do, rather than panic on the closed
/// pipe. The mount and the demo keep ignoring SIGPIPE: they must finish their work; so
/// does `bench cluster`, which must stop its node processes and remove their directories
/// (a closed pipe ends it with an error instead).
fn quiet_on_closed_pipe(command: &Command) {
    if matches!(
        command,
        Command::Mount(_)
            | Command::Nfs(_)
            | Command::Demo(_)
            | Command::DemoChild(_)
            | Command::Cluster(_)
            | Command::Bench(bench::BenchCommand::Cluster { .. })
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
    if !matches!(cli.command, Command::Torture(_)) {
        let _ = log::set_logger(&LOGGER).map(|()| log::set_max_level(log::LevelFilter::Warn));
    }
    quiet_on_closed_pipe(&cli.command);
    let result = match cli.command {
        Command::Log(command) => inspect::run(command),
        Command::Recover(args) => txn::recover(args),
        Command::Mount(args) => mount::run(args),
        Command::Nfs(args) => nfs::run(args),
        Command::Format(args) => txn::format(args),
        Command::Demo(args) => demo::run(args),
        Command::DemoChild(args) => demo::child(args),
        Command::Bench(command) => bench::run(command),
        Command::Torture(args) => torture::run(args),
        Command::Txn(command) => txn::run(command),
        Command::Checkpoint(args) => txn::checkpoint(args),
        Command::Fsck(args) => txn::fsck(args),
        Command::Cluster(command) => cluster::run(command),
        Command::Posix(command) => posix::run(command),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("smlog: {error}");
            ExitCode::from(3)
        }
    }
}
