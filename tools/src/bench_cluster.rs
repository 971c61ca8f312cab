//! `smlog bench cluster`: a replicated volume (three node processes on loopback) against
//! one node's engine, in the same run. Durable creates/s and 4 KiB writes/s at each client
//! count (replicated: acknowledged once a quorum has the entry durably; one node: the
//! engine's `Sync` calls), their ratio; failover time over leader SIGKILLs; and the rate a
//! follower that was stopped catches up at.

use std::io::Write as _;
use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use smlog::{Durability, FileKind, Ino, NewAttrs, RequestKey, SetAttrChanges, Time, TxnResult};
use smlog::{TxnOptions, ROOT_INO};
use smlog_cluster::{Command, FileOp, Reply};
use smlog_recovery::OpenOptions;

use crate::local_cluster::LocalCluster;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

const ATTRS: NewAttrs = NewAttrs {
    mode: 0o644,
    uid: 0,
    gid: 0,
    umask: 0,
};

/// What is measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Create,
    Write4k,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Create => "create",
            Op::Write4k => "write4k",
        }
    }
}

/// `smlog bench cluster`.
pub fn run(
    clients: &[usize],
    seconds: f64,
    kills: u32,
    catch_up_mb: u64,
    dir: &Path,
    as_json: bool,
) -> Result<ExitCode> {
    let root = tempfile::Builder::new()
        .prefix("smlog-bench-cluster-")
        .tempdir_in(dir)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let mut cluster = runtime.block_on(LocalCluster::create(&root.path().join("cluster"), 3))?;
    let single_dir = root.path().join("single");
    // Rows go out with their errors seen: a closed pipe ends the run cleanly (the nodes
    // stopped, their directories removed).
    let mut out = std::io::stdout();
    if !as_json {
        writeln!(
            out,
            "{:>8} {:>7} {:>12} {:>12} {:>7} {:>9}",
            "op", "clients", "cluster/s", "one node/s", "ratio", "per sync"
        )?;
    }
    let run_for = Duration::from_secs_f64(seconds);
    for op in [Op::Create, Op::Write4k] {
        for &count in clients {
            let (replicated, per_sync) =
                runtime.block_on(cluster_rate(&cluster, op, count, run_for))?;
            let single = single_rate(&single_dir, op, count, run_for)?;
            let ratio = replicated / single.max(f64::MIN_POSITIVE);
            if as_json {
                writeln!(
                    out,
                    "{}",
                    json!({"op": op.name(), "clients": count, "cluster_ops_per_sec": replicated,
                           "single_ops_per_sec": single, "ratio": ratio,
                           "leader_records_per_sync": per_sync})
                )?;
            } else {
                writeln!(
                    out,
                    "{:>8} {count:>7} {replicated:>12.0} {single:>12.0} {ratio:>7.2} {per_sync:>9.1}",
                    op.name()
                )?;
            }
        }
    }
    let failovers = runtime.block_on(failovers(&mut cluster, kills))?;
    let (caught_mb, catch_up) = runtime.block_on(catch_up(&mut cluster, catch_up_mb))?;
    let rate = caught_mb / catch_up.as_secs_f64().max(1e-9);
    let mut sorted = failovers.clone();
    sorted.sort();
    let p50 = sorted.get(sorted.len() / 2).copied().unwrap_or_default();
    let max = sorted.last().copied().unwrap_or_default();
    if as_json {
        writeln!(
            out,
            "{}",
            json!({"failover_p50_s": p50.as_secs_f64(), "failover_max_s": max.as_secs_f64(),
                   "kills": sorted.len(), "catch_up_mb": caught_mb,
                   "catch_up_s": catch_up.as_secs_f64(), "catch_up_mb_per_sec": rate})
        )?;
    } else {
        writeln!(
            out,
            "failover (leader SIGKILLed to the next applied write): p50 {:.2} s, max {:.2} s \
             over {} kills",
            p50.as_secs_f64(),
            max.as_secs_f64(),
            sorted.len()
        )?;
        writeln!(
            out,
            "catch-up of a follower stopped while {caught_mb:.0} MB were written: {:.2} s, \
             {rate:.1} MB/s",
            catch_up.as_secs_f64()
        )?;
    }
    cluster.stop_all();
    Ok(ExitCode::SUCCESS)
}

/// A unique request key per command of a run.
fn key(client: u64, n: u64) -> Option<RequestKey> {
    Some(RequestKey {
        client_id: client,
        request_id: n,
    })
}

/// Replicated operations per second with `count` clients, each on its own connection, and
/// the records the leader's Raft log wrote per durable write meanwhile.
async fn cluster_rate(
    cluster: &LocalCluster,
    op: Op,
    count: usize,
    run_for: Duration,
) -> Result<(f64, f64)> {
    static RUN: AtomicU64 = AtomicU64::new(1);
    let run = RUN.fetch_add(1, Ordering::Relaxed);
    // Each client's directory (creates) or file (writes), made first.
    let mut setup = cluster.writer();
    let mut targets = Vec::new();
    for c in 0..count as u64 {
        let client = run << 32 | c;
        let name = format!("{}-{run}-{c}", op.name()).into_bytes();
        let create = match op {
            Op::Create => FileOp::Mkdir {
                parent: ROOT_INO,
                name,
                attrs: NewAttrs {
                    mode: 0o755,
                    ..ATTRS
                },
            },
            Op::Write4k => FileOp::Create {
                parent: ROOT_INO,
                name,
                attrs: ATTRS,
            },
        };
        let command = Command {
            key: key(client, u64::MAX),
            now: Time::now(),
            op: create,
        };
        match setup.write(&command).await? {
            Reply(Ok(TxnResult::Ino(ino))) => targets.push((client, ino)),
            other => return Err(format!("setting up client {c}: {other:?}").into()),
        }
    }
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for (client, target) in targets {
        let mut writer = cluster.writer();
        let done = Arc::clone(&done);
        let stop = Arc::clone(&stop);
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let op = match op {
                    Op::Create => FileOp::Create {
                        parent: target,
                        name: format!("f{n}").into_bytes(),
                        attrs: ATTRS,
                    },
                    Op::Write4k => FileOp::Write {
                        ino: target,
                        offset: (n % 4096) * 4096,
                        data: vec![n as u8; 4096],
                    },
                };
                let command = Command {
                    key: key(client, n),
                    now: Time::now(),
                    op,
                };
                writer.write(&command).await?;
                n += 1;
                done.fetch_add(1, Ordering::Relaxed);
            }
            Ok::<_, String>(())
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let leader = cluster.leader().await?;
    let log_before = cluster.status(leader).await;
    let start_count = done.load(Ordering::Relaxed);
    let started = Instant::now();
    tokio::time::sleep(run_for).await;
    let ops = done.load(Ordering::Relaxed) - start_count;
    let elapsed = started.elapsed();
    let log_after = cluster.status(leader).await;
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await??;
    }
    let per_sync = match (log_before, log_after) {
        (Some(before), Some(after)) if after.log_batches > before.log_batches => {
            (after.log_records - before.log_records) as f64
                / (after.log_batches - before.log_batches) as f64
        }
        _ => 0.0,
    };
    Ok((ops as f64 / elapsed.as_secs_f64(), per_sync))
}

/// One node's engine: durable operations per second from `count` threads.
fn single_rate(dir: &Path, op: Op, count: usize, run_for: Duration) -> Result<f64> {
    let options = OpenOptions {
        create: true,
        ..OpenOptions::default()
    };
    let (engine, _) = smlog_recovery::open(dir, options)?;
    static RUN: AtomicU64 = AtomicU64::new(1);
    let run = RUN.fetch_add(1, Ordering::Relaxed);
    let sync = TxnOptions::from(Durability::Sync);
    let mut targets: Vec<Ino> = Vec::new();
    for c in 0..count {
        let name = format!("{}-{run}-{c}", op.name()).into_bytes();
        let stat = match op {
            Op::Create => engine.mkdir(
                ROOT_INO,
                &name,
                NewAttrs {
                    mode: 0o755,
                    ..ATTRS
                },
                sync,
            )?,
            Op::Write4k => engine.create(ROOT_INO, &name, ATTRS, sync)?,
        };
        debug_assert!(matches!(stat.kind, FileKind::Dir | FileKind::File));
        targets.push(stat.ino);
    }
    let done = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    let (ops, elapsed) = std::thread::scope(|scope| {
        for &target in &targets {
            let (engine, done, stop) = (&engine, &done, &stop);
            scope.spawn(move || {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let result = match op {
                        Op::Create => engine
                            .create(target, format!("f{n}").as_bytes(), ATTRS, sync)
                            .map(drop),
                        Op::Write4k => engine
                            .write(target, (n % 4096) * 4096, &[n as u8; 4096], sync)
                            .map(drop),
                    };
                    if result.is_err() {
                        return;
                    }
                    n += 1;
                    done.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        std::thread::sleep(Duration::from_millis(300));
        let start_count = done.load(Ordering::Relaxed);
        let started = Instant::now();
        std::thread::sleep(run_for);
        let ops = done.load(Ordering::Relaxed) - start_count;
        let elapsed = started.elapsed();
        stop.store(true, Ordering::Relaxed);
        (ops, elapsed)
    });
    engine.shutdown()?;
    Ok(ops as f64 / elapsed.as_secs_f64())
}

/// SIGKILLs the leader `kills` times; each failover is the time to the next write a
/// survivor applies (a chmod of the root); the killed node is started again after.
async fn failovers(cluster: &mut LocalCluster, kills: u32) -> Result<Vec<Duration>> {
    let mut times = Vec::new();
    let mut writer = cluster.writer();
    for k in 0..kills {
        let victim = cluster.leader().await?;
        cluster.kill(victim);
        let killed = Instant::now();
        let probe = Command {
            key: key(0xFA11, u64::from(k)),
            now: Time::now(),
            op: FileOp::SetAttr {
                ino: ROOT_INO,
                changes: SetAttrChanges {
                    mode: Some(0o755),
                    ..SetAttrChanges::default()
                },
            },
        };
        writer.write(&probe).await?;
        times.push(killed.elapsed());
        cluster.serve(victim)?;
        cluster.settle().await?;
    }
    Ok(times)
}

/// Stops a follower, writes `megabytes` through the others, starts it again: how long it
/// takes to apply everything (MB written, time).
async fn catch_up(cluster: &mut LocalCluster, megabytes: u64) -> Result<(f64, Duration)> {
    let leader = cluster.leader().await?;
    let follower = (leader + 1) % cluster.addrs.len();
    cluster.kill(follower);
    let mut writer = cluster.writer();
    let create = Command {
        key: key(0xCA7C, u64::MAX),
        now: Time::now(),
        op: FileOp::Create {
            parent: ROOT_INO,
            name: b"catch-up".to_vec(),
            attrs: ATTRS,
        },
    };
    let Reply(Ok(TxnResult::Ino(ino))) = writer.write(&create).await? else {
        return Err("creating the catch-up file was refused".into());
    };
    let piece = smlog_cluster::command::WRITE_BYTES_MAX as u64;
    let pieces = megabytes * (1 << 20) / piece;
    for n in 0..pieces {
        let write = Command {
            key: key(0xCA7C, n),
            now: Time::now(),
            op: FileOp::Write {
                ino,
                offset: n * piece,
                data: vec![n as u8; piece as usize],
            },
        };
        writer.write(&write).await?;
    }
    let lead = cluster.leader().await?;
    let last = cluster
        .status(lead)
        .await
        .and_then(|r| r.last_log_index)
        .ok_or("the leader reports no log")?;
    let started = Instant::now();
    cluster.serve(follower)?;
    cluster
        .wait_applied(follower, last, Duration::from_secs(600))
        .await?;
    Ok((
        (pieces * piece) as f64 / f64::from(1 << 20),
        started.elapsed(),
    ))
}
