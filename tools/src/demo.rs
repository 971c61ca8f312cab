//! `smlog demo`: appenders in a child process, SIGKILLed mid-flight, then recovery and a
//! check that every record the child acknowledged is intact. Several rounds on one log.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use rand::Rng;
use smlog::io::open_dir;
use smlog::log::writer::CreateOptions;
use smlog::NewRecord;
use smlog_recovery::{open_log, open_or_create, RecoveryOptions};

use crate::OpenArgs;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// The payload a child appends: a function of (round, thread, counter), so it is different
/// for every record and its CRC identifies it.
fn payload(round: u32, thread: usize, counter: u64) -> Vec<u8> {
    let len = 64 + ((counter * 37 + thread as u64 * 101) % 900) as usize;
    let mut state =
        (u64::from(round) << 40) ^ ((thread as u64) << 32) ^ counter ^ 0x9E37_79B9_7F4A_7C15;
    (0..len)
        .map(|_| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (state >> 33) as u8
        })
        .collect()
}

/// Runs in the child: recovers (or creates) the log, then appends from `threads` threads
/// and prints `ack LSN CRC` for every record once it is durable, until killed.
pub fn child(dir: &Path, threads: usize, round: u32, args: OpenArgs) -> Result<ExitCode> {
    let device = Arc::new(open_dir(dir, args.device_options(true))?);
    let (log, _) = open_or_create(
        device,
        RecoveryOptions::default(),
        CreateOptions {
            segment_size_bytes: 4 * 1024 * 1024,
        },
        |_| {},
    )?;
    let log = Arc::new(log);
    let out = Arc::new(Mutex::new(std::io::stdout()));
    {
        let mut out = out.lock().unwrap_or_else(|e| e.into_inner());
        writeln!(out, "ready")?;
        out.flush()?;
    }
    let workers: Vec<_> = (0..threads)
        .map(|t| {
            let log = Arc::clone(&log);
            let out = Arc::clone(&out);
            std::thread::spawn(move || -> std::result::Result<(), String> {
                for counter in 0.. {
                    let bytes = payload(round, t, counter);
                    let lsn = log
                        .append_durable(&[NewRecord {
                            txn_id: (u64::from(round) << 32) | t as u64,
                            step: counter as u32,
                            kind: 1 + (counter % 3) as u16,
                            payload: &bytes,
                        }])
                        .map_err(|e| e.to_string())?;
                    let crc = crc32fast::hash(&bytes);
                    let mut out = out.lock().unwrap_or_else(|e| e.into_inner());
                    writeln!(out, "ack {lsn} {crc}").map_err(|e| e.to_string())?;
                    out.flush().map_err(|e| e.to_string())?;
                }
                Ok(())
            })
        })
        .collect();
    for worker in workers {
        worker.join().map_err(|_| "an appender panicked")??;
    }
    Ok(ExitCode::SUCCESS)
}

fn default_dir() -> PathBuf {
    PathBuf::from(format!("/var/tmp/smlog-demo-{}", std::process::id()))
}

pub fn run(dir: Option<PathBuf>, rounds: u32, threads: usize, args: OpenArgs) -> Result<ExitCode> {
    let chosen = dir.is_some();
    let dir = dir.unwrap_or_else(default_dir);
    std::fs::create_dir_all(&dir)?;
    println!("smlog demo: {threads} threads append durable records in a child process, which is");
    println!(
        "SIGKILLed mid-flight; recovery then checks every acknowledged record. {rounds} rounds,"
    );
    println!("one log: {}\n", dir.display());
    // Open (and release) the directory here first, so that a file system that refuses
    // O_DIRECT, or a log held by another process, is reported plainly.
    drop(open_dir(&dir, args.device_options(true))?);
    let exe = std::env::current_exe()?;
    let mut acked: BTreeMap<u64, u32> = BTreeMap::new();
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1);
    let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(seed);
    let mut all_ok = true;
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
        let reader = std::thread::spawn(move || {
            let mut acks = Vec::new();
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if line == "ready" {
                    let _ = ready_tx.send(());
                    continue;
                }
                let mut parts = line.split_whitespace();
                if let (Some("ack"), Some(lsn), Some(crc)) =
                    (parts.next(), parts.next(), parts.next())
                {
                    if let (Ok(lsn), Ok(crc)) = (lsn.parse::<u64>(), crc.parse::<u32>()) {
                        acks.push((lsn, crc));
                    }
                }
            }
            acks
        });
        if ready_rx.recv_timeout(Duration::from_secs(60)).is_err() {
            let _ = child.kill();
            return Err("the child did not become ready".into());
        }
        let run_ms = rng.gen_range(150..600);
        std::thread::sleep(Duration::from_millis(run_ms));
        kill(Pid::from_raw(child.id() as i32), Signal::SIGKILL)?;
        let _ = child.wait()?;
        let acks = reader.join().map_err(|_| "reader thread panicked")?;
        let round_acks = acks.len();
        let (lo, hi) = (
            acks.iter().map(|a| a.0).min().unwrap_or(0),
            acks.iter().map(|a| a.0).max().unwrap_or(0),
        );
        acked.extend(acks);

        let started = Instant::now();
        let device = Arc::new(open_dir(&dir, args.device_options(false))?);
        let mut recovered: BTreeMap<u64, u32> = BTreeMap::new();
        let (log, report) = open_log(device, RecoveryOptions::default(), |r| {
            recovered.insert(r.lsn, crc32fast::hash(&r.payload));
        })?;
        let recovery_ms = started.elapsed().as_secs_f64() * 1e3;
        drop(log);
        let missing: Vec<u64> = acked
            .iter()
            .filter(|(lsn, crc)| recovered.get(lsn) != Some(crc))
            .map(|(lsn, _)| *lsn)
            .collect();
        println!(
            "round {round}: killed after {run_ms} ms; the child had acknowledged {round_acks} records (LSN {lo}..{hi})"
        );
        println!(
            "         recovered {} records in {recovery_ms:.1} ms, next LSN {}; torn tail: {}",
            report.record_count,
            report.tail.next_lsn,
            report
                .torn_tail
                .as_ref()
                .map(|d| format!("segment {} offset {} (discarded)", d.segment_seq, d.offset))
                .unwrap_or_else(|| "none".into())
        );
        if missing.is_empty() {
            println!(
                "         all {} records acknowledged so far are intact",
                acked.len()
            );
        } else {
            all_ok = false;
            println!(
                "         LOST OR CHANGED: {} acknowledged records, first LSN {}",
                missing.len(),
                missing[0]
            );
        }
    }
    println!();
    if all_ok {
        println!(
            "every acknowledged record survived {rounds} SIGKILLs ({} records)",
            acked.len()
        );
        if !chosen {
            let _ = std::fs::remove_dir_all(&dir);
        }
        Ok(ExitCode::SUCCESS)
    } else {
        println!(
            "FAILED: acknowledged records were lost; the log is kept at {}",
            dir.display()
        );
        Ok(ExitCode::FAILURE)
    }
}
