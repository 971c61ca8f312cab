//! `smlog demo`: the file-transaction story. A child process runs a file workload from
//! several threads (create, write, rename into place, delete, mkdir) on an engine with the
//! io_uring device; it is SIGKILLed mid-flight; recovery resumes or rolls back what was in
//! flight; every file the child acknowledged is checked byte for byte; fsck runs. Several
//! rounds on one directory.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use rand::{Rng, SeedableRng};
use smlog::internals::Decision;
use smlog::io::Device;
use smlog::{Durability, Engine, FsError, Ino, NewAttrs, RenameFlags, ROOT_INO};
use smlog_recovery::{open, OpenOptions};

use crate::OpenArgs;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

const FILE: NewAttrs = NewAttrs {
    mode: 0o644,
    uid: 0,
    gid: 0,
    umask: 0,
};

/// The bytes of file `n` of thread `t` in round `round`: a function of the three.
fn content(round: u32, t: usize, n: u64) -> Vec<u8> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(
        (u64::from(round) << 48) ^ ((t as u64) << 32) ^ n ^ 0x5EED,
    );
    let len = if rng.gen_bool(0.3) {
        rng.gen_range(64 * 1024..400 * 1024)
    } else {
        rng.gen_range(1..12 * 1024)
    };
    let mut bytes = vec![0u8; len];
    rng.fill(&mut bytes[..]);
    bytes
}

fn engine_options(args: OpenArgs) -> OpenOptions {
    let mut options = OpenOptions {
        device: args.device_options(true),
        create: true,
        ..OpenOptions::default()
    };
    // Small enough that the demo checkpoints (and reuses log segments) as it goes.
    options.engine.checkpoint_log_bytes = 16 << 20;
    options.engine.checkpoint_dirty_bytes = 16 << 20;
    options.engine.segment_size_bytes = 4 << 20;
    options
}

fn lookup_or_mkdir<D: Device>(
    engine: &Engine<D>,
    name: &[u8],
) -> std::result::Result<Ino, FsError> {
    match engine.lookup(ROOT_INO, name) {
        Ok(attr) => Ok(attr.ino),
        Err(FsError::NotFound) => Ok(engine.mkdir(ROOT_INO, name, FILE, Durability::Sync)?.ino),
        Err(e) => Err(e),
    }
}

/// One thread of the child: publishes files by create, write, rename, and deletes old ones.
/// Prints `intent`, `pub` and `del` lines as its operations are acknowledged durable.
fn worker<D: Device>(
    engine: &Engine<D>,
    round: u32,
    t: usize,
    out: &Mutex<std::io::Stdout>,
) -> std::result::Result<(), String> {
    let say = |line: String| {
        let mut out = out.lock().unwrap_or_else(|e| e.into_inner());
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    };
    let dir_name = format!("r{round}w{t}");
    let dir = lookup_or_mkdir(engine, dir_name.as_bytes()).map_err(|e| e.to_string())?;
    let err = |e: FsError| e.to_string();
    for n in 0u64.. {
        let bytes = content(round, t, n);
        let tmp = format!("tmp{n}");
        let file = engine
            .create(dir, tmp.as_bytes(), FILE, Durability::Sync)
            .map_err(err)?;
        for (i, chunk) in bytes.chunks(256 * 1024).enumerate() {
            // Writes are unstable (NFS-style); the rename below makes them durable.
            engine
                .write(file.ino, (i * 256 * 1024) as u64, chunk, Durability::Async)
                .map_err(err)?;
        }
        say(format!(
            "intent {t} {n} {} {}",
            crc32fast::hash(&bytes),
            bytes.len()
        ));
        let name = format!("file{n}");
        engine
            .rename(
                dir,
                tmp.as_bytes(),
                dir,
                name.as_bytes(),
                RenameFlags::default(),
                Durability::Sync,
            )
            .map_err(err)?;
        say(format!("pub {t} {n}"));
        if n >= 3 {
            let old = format!("file{}", n - 3);
            engine
                .unlink(dir, old.as_bytes(), Durability::Sync)
                .map_err(err)?;
            say(format!("del {t} {}", n - 3));
        }
    }
    Ok(())
}

/// Runs in the child: recovers (or creates) the engine, then runs `threads` workers
/// until killed.
pub fn child(args: DemoChildArgs) -> Result<ExitCode> {
    let DemoChildArgs {
        dir,
        threads,
        round,
        open: args,
    } = args;
    let dir = dir.as_path();
    let (engine, _) = open(dir, engine_options(args))?;
    let out = Arc::new(Mutex::new(std::io::stdout()));
    {
        let mut out = out.lock().unwrap_or_else(|e| e.into_inner());
        writeln!(out, "ready")?;
        out.flush()?;
    }
    let workers: Vec<_> = (0..threads)
        .map(|t| {
            let engine = engine.clone();
            let out = Arc::clone(&out);
            std::thread::spawn(move || worker(&engine, round, t, &out))
        })
        .collect();
    for worker in workers {
        worker.join().map_err(|_| "a worker panicked")??;
    }
    Ok(ExitCode::SUCCESS)
}

fn default_dir() -> PathBuf {
    PathBuf::from(format!("/var/tmp/smlog-demo-{}", std::process::id()))
}

/// What the child said in one round, per thread.
#[derive(Default)]
struct Acks {
    /// File number -> (CRC, length) of what it will hold once published.
    intents: BTreeMap<(usize, u64), (u32, usize)>,
    published: BTreeSet<(usize, u64)>,
    deleted: BTreeSet<(usize, u64)>,
}

fn read_acks(stdout: std::process::ChildStdout, ready: std::sync::mpsc::Sender<()>) -> Acks {
    let mut acks = Acks::default();
    for line in BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        let parts: Vec<&str> = line.split_whitespace().collect();
        let num = |i: usize| parts.get(i).and_then(|p| p.parse::<u64>().ok());
        match (parts.first().copied(), num(1), num(2)) {
            (Some("ready"), _, _) => {
                let _ = ready.send(());
            }
            (Some("intent"), Some(t), Some(n)) => {
                if let (Some(crc), Some(len)) = (num(3), num(4)) {
                    acks.intents
                        .insert((t as usize, n), (crc as u32, len as usize));
                }
            }
            (Some("pub"), Some(t), Some(n)) => {
                acks.published.insert((t as usize, n));
            }
            (Some("del"), Some(t), Some(n)) => {
                acks.deleted.insert((t as usize, n));
            }
            _ => {}
        }
    }
    acks
}

/// Checks one round's files against what the child acknowledged. Returns problems.
fn verify<D: Device>(engine: &Engine<D>, round: u32, acks: &Acks) -> Vec<String> {
    let mut problems = Vec::new();
    let threads: BTreeSet<usize> = acks.intents.keys().map(|(t, _)| *t).collect();
    for t in threads {
        let Ok(dir) = engine.lookup(ROOT_INO, format!("r{round}w{t}").as_bytes()) else {
            problems.push(format!("thread {t}'s directory is missing"));
            continue;
        };
        for (&(tt, n), &(crc, len)) in acks.intents.range((t, 0)..(t + 1, 0)) {
            debug_assert_eq!(tt, t);
            let found = engine.lookup(dir.ino, format!("file{n}").as_bytes());
            // Once file n+3 is published the worker deletes file n, so file n may be gone
            // (the delete committed, its acknowledgement cut off by the kill).
            let must_exist =
                acks.published.contains(&(t, n)) && !acks.published.contains(&(t, n + 3));
            let must_not = acks.deleted.contains(&(t, n));
            match found {
                Ok(attr) => {
                    if must_not {
                        problems.push(format!("r{round}w{t}/file{n} was deleted, yet exists"));
                        continue;
                    }
                    // Published or not, a file under its final name is whole.
                    match engine.read(attr.ino, 0, len + 1) {
                        Ok(bytes) if bytes.len() == len && crc32fast::hash(&bytes) == crc => {}
                        Ok(bytes) => problems.push(format!(
                            "r{round}w{t}/file{n}: {} bytes, CRC {:08x}; acknowledged {len} bytes, CRC {crc:08x}",
                            bytes.len(),
                            crc32fast::hash(&bytes)
                        )),
                        Err(e) => problems.push(format!("r{round}w{t}/file{n}: {e}")),
                    }
                }
                Err(FsError::NotFound) if must_exist => problems.push(format!(
                    "r{round}w{t}/file{n} was published, yet is missing"
                )),
                Err(FsError::NotFound) => {}
                Err(e) => problems.push(format!("r{round}w{t}/file{n}: {e}")),
            }
        }
    }
    problems
}

/// `smlog demo`.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Directory for the demo's log (default: a new directory under /var/tmp).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Kill-and-recover rounds.
    #[arg(long, default_value_t = 5)]
    rounds: u32,
    /// Appending threads in the child.
    #[arg(long, default_value_t = 8)]
    threads: usize,
    /// The cluster's story instead: three node processes on loopback, files published
    /// through them while the leader is SIGKILLed, every file checked on every node.
    #[arg(long)]
    cluster: bool,
    /// With --cluster: leader kills.
    #[arg(long, default_value_t = 3)]
    kills: u32,
    #[command(flatten)]
    open: OpenArgs,
}

/// `smlog demo-child`, which `smlog demo` starts.
#[derive(Debug, clap::Args)]
pub struct DemoChildArgs {
    #[arg(long)]
    dir: PathBuf,
    #[arg(long)]
    threads: usize,
    #[arg(long)]
    round: u32,
    #[command(flatten)]
    open: OpenArgs,
}

/// `smlog demo`: rounds of a child killed mid-flight, each recovered and checked.
pub fn run(args: DemoArgs) -> Result<ExitCode> {
    let DemoArgs {
        dir,
        rounds,
        threads,
        cluster,
        kills,
        open: args,
    } = args;
    if cluster {
        return crate::demo_cluster::run(dir, kills);
    }
    let chosen = dir.is_some();
    let dir = dir.unwrap_or_else(default_dir);
    std::fs::create_dir_all(&dir)?;
    println!(
        "smlog demo: {threads} threads in a child process publish files (create, write, rename"
    );
    println!("into place, delete old ones) through file transactions on the io_uring device.");
    println!(
        "The child is SIGKILLed mid-flight; recovery resumes or rolls back what was in flight;"
    );
    println!("every acknowledged file is checked byte for byte, then fsck. {rounds} rounds,");
    println!("one directory: {}\n", dir.display());
    // Open (and release) the directory here first, so that a file system that refuses
    // O_DIRECT, or an engine held by another process, is reported plainly.
    open(&dir, engine_options(args))?.0.shutdown()?;
    let exe = std::env::current_exe()?;
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut history: Vec<Acks> = Vec::new();
    let mut all_ok = true;
    let (mut resumed, mut rolled_back, mut files_checked) = (0usize, 0usize, 0usize);
    for round in 1..=rounds {
        let mut command = Command::new(&exe);
        command
            .arg("demo-child")
            .arg("--dir")
            .arg(&dir)
            .arg("--threads")
            .arg(threads.to_string())
            .arg("--round")
            .arg(round.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if args.posix {
            command.arg("--posix");
        }
        if args.buffered {
            command.arg("--buffered");
        }
        let mut child = command.spawn()?;
        let stdout = child.stdout.take().ok_or("no child stdout")?;
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || read_acks(stdout, ready_tx));
        if ready_rx.recv_timeout(Duration::from_secs(60)).is_err() {
            let _ = child.kill();
            return Err("the child did not become ready".into());
        }
        let run_ms = rng.gen_range(200..700);
        std::thread::sleep(Duration::from_millis(run_ms));
        kill(Pid::from_raw(child.id() as i32), Signal::SIGKILL)?;
        let _ = child.wait()?;
        let acks = reader.join().map_err(|_| "reader thread panicked")?;
        history.push(acks);

        let started = Instant::now();
        let (engine, report) = open(&dir, engine_options(args))?;
        let recovery_ms = started.elapsed().as_secs_f64() * 1e3;
        let acks = history.last().expect("pushed above");
        println!(
            "round {round}: killed after {run_ms} ms; {} files published, {} deleted, acknowledged",
            acks.published.len(),
            acks.deleted.len()
        );
        println!(
            "         recovered in {recovery_ms:.1} ms from {}: {} records read, {} transactions committed since",
            report
                .checkpoint
                .map(|sb| format!("checkpoint {}", sb.seq))
                .unwrap_or_else(|| "the log's start".into()),
            report.scanned_records,
            report.committed_txns,
        );
        for txn in &report.in_flight {
            let verb = match txn.decision {
                Decision::Resume => {
                    resumed += 1;
                    "resumed"
                }
                Decision::RollBack => {
                    rolled_back += 1;
                    "rolled back"
                }
            };
            println!(
                "         in flight: txn {} {} ({} of its steps logged, state {}): {verb}",
                txn.txn_id, txn.op, txn.steps_logged, txn.state
            );
        }
        let mut problems = Vec::new();
        for (r, acks) in history.iter().enumerate() {
            problems.extend(verify(&engine, r as u32 + 1, acks));
            files_checked += acks.intents.len();
        }
        let fsck = engine.fsck();
        problems.extend(fsck.problems.iter().map(|p| format!("fsck: {p}")));
        if problems.is_empty() {
            println!(
                "         every acknowledged file is intact; fsck clean ({} inodes, {} data blocks)",
                fsck.inode_count, fsck.mapped_blocks
            );
        } else {
            all_ok = false;
            for problem in problems.iter().take(10) {
                println!("         PROBLEM: {problem}");
            }
        }
        engine.shutdown()?;
    }
    println!();
    if all_ok {
        println!(
            "{rounds} SIGKILLs: every acknowledged file survived whole ({files_checked} checks); \
             {resumed} transactions resumed, {rolled_back} rolled back"
        );
        if !chosen {
            let _ = std::fs::remove_dir_all(&dir);
        }
        Ok(ExitCode::SUCCESS)
    } else {
        println!(
            "FAILED: see the problems above; the directory is kept at {}",
            dir.display()
        );
        Ok(ExitCode::FAILURE)
    }
}
