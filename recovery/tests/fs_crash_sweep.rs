//! The file-system crash sweep: random file workloads on the simulated device, crashed at
//! a random device operation (or hit by a failed write or sync), recovered (sometimes
//! crashing during recovery first, repeatedly), and checked against the reference model:
//!
//! - the recovered tree equals the model after some prefix of the operations that is at
//!   least every operation acknowledged durable (every transaction whole or not at all);
//! - fsck is clean;
//! - a second recovery changes nothing and finds nothing in flight;
//! - the engine keeps working: the next cycle goes on from the recovered tree.
//!
//! Single-threaded workloads check exact prefixes across directories (cross-directory
//! renames included); the multi-threaded sweep gives each thread its own directory and
//! checks each one's prefix. Some cycles make every step durable on its own, so crashes
//! fall between the steps of one transaction and recovery must resume or roll back.
//!
//! Size: `SMLOG_FS_SWEEP_SEEDS` (default 300) seeds x `SMLOG_FS_SWEEP_CYCLES` (default 5).

mod fs_common;

use std::sync::Arc;

use fs_common::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use smlog::internals::Decision;
use smlog::io::sim::{CrashPlan, FaultConfig, SimDevice};
use smlog::io::IoErrorKind;
use smlog::{Durability, FsError, TxnOptions};
use smlog_recovery::OpenOptions;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

const DIRS: &[&[u8]] = &[b"", b"a", b"b", b"a/c"];
const NAMES: &[&[u8]] = &[b"a", b"b", b"c", b"x", b"y"];

fn random_faults(rng: &mut ChaCha8Rng) -> FaultConfig {
    let ops = rng.gen_range(1..=120);
    match rng.gen_range(0..10) {
        0 => FaultConfig {
            fail_write_at_op: Some((
                ops / 2 + 1,
                if rng.gen_bool(0.5) {
                    IoErrorKind::Io
                } else {
                    IoErrorKind::NoSpace
                },
            )),
            ..FaultConfig::default()
        },
        1 => FaultConfig {
            fail_sync_at_op: Some(ops / 2 + 1),
            ..FaultConfig::default()
        },
        2 => FaultConfig {
            short_write_at_op: Some(ops / 2 + 1),
            ..FaultConfig::default()
        },
        _ => FaultConfig {
            crash_after_ops: Some(ops),
            ..FaultConfig::default()
        },
    }
}

/// Faults 1-4 at a crash. Not fault 5 (stale sectors resurrected over zeros): the sim
/// applies it to any all-zero sector, and a file's data blocks hold zeros as data and carry
/// no checksum, so stale bytes there cannot be told from written ones. The log's sweep
/// covers fault 5 for the log, where it matters.
fn crash_plan(rng: &mut ChaCha8Rng) -> CrashPlan {
    CrashPlan {
        resurrect_count: 0,
        ..CrashPlan::random_unsynced(rng)
    }
}

fn options(rng: &mut ChaCha8Rng) -> OpenOptions {
    let mut options = test_options();
    options.engine.sync_every_step = rng.gen_bool(0.3);
    options
}

/// Recovers, sometimes crashing during recovery first (fault 12), any number of times.
fn recover(
    device: &Arc<SimDevice>,
    rng: &mut ChaCha8Rng,
    context: &str,
    fates: &mut [u64; 2],
) -> SimEngine {
    while rng.gen_bool(0.35) {
        device.set_faults(FaultConfig {
            crash_after_ops: Some(rng.gen_range(1..=12)),
            ..FaultConfig::default()
        });
        match open_sim(device, options(rng)) {
            Ok((engine, _)) => drop(engine),
            Err(error) => assert!(
                !error.is_refusal(),
                "{context}: recovery interrupted by a crash failed otherwise: {error}"
            ),
        }
        device.crash();
        device.restart(&crash_plan(rng));
    }
    device.set_faults(FaultConfig::default());
    let (engine, report) = open_sim(device, options(rng))
        .unwrap_or_else(|e| panic!("{context}: recovery failed: {e}"));
    for txn in &report.in_flight {
        fates[usize::from(txn.decision == Decision::RollBack)] += 1;
    }
    engine
}

/// The paths where two trees differ, for failure messages.
fn diff(want: &Tree, got: &Tree) -> String {
    let mut out = Vec::new();
    for (path, view) in want {
        match got.get(path) {
            None => out.push(format!("{} missing", String::from_utf8_lossy(path))),
            Some(other) if other != view => {
                let short = |v: &View| match v {
                    View::File { mode, nlink, data } => {
                        format!("file mode {mode:o} nlink {nlink} {} bytes", data.len())
                    }
                    other => format!("{other:?}"),
                };
                let first_diff = match (view, other) {
                    (View::File { data: a, .. }, View::File { data: b, .. }) => a
                        .iter()
                        .zip(b)
                        .position(|(x, y)| x != y)
                        .map(|at| {
                            let end = (at + 4096).min(a.len()).min(b.len());
                            let differ = (at..end).filter(|&i| a[i] != b[i]).count();
                            format!(" first difference at {at} ({differ} of the next 4096 differ; got zero: {})", b[at] == 0)
                        })
                        .unwrap_or_default(),
                    _ => String::new(),
                };
                out.push(format!(
                    "{}: want {} got {}{first_diff}",
                    String::from_utf8_lossy(path),
                    short(view),
                    short(other)
                ))
            }
            Some(_) => {}
        }
    }
    for path in got.keys().filter(|p| !want.contains_key(*p)) {
        out.push(format!("{} unexpected", String::from_utf8_lossy(path)));
    }
    out.join("; ")
}

/// One seed: cycles of workload, crash, recovery, check. Returns the checks made.
fn sweep_seed(seed: u64, cycles: u64, fates: &mut [u64; 2]) -> u64 {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let device = Arc::new(SimDevice::new(seed));
    let (mut engine, _) = open_sim(&device, options(&mut rng)).unwrap();
    let mut model = Model::new();
    for op in setup_ops(DIRS) {
        model.apply(&op).unwrap();
        run_op(&engine, &op, Durability::Sync.into()).unwrap();
    }
    let mut checks = 0;
    for cycle in 0..cycles {
        let context = format!("seed {seed} cycle {cycle}");
        device.set_faults(random_faults(&mut rng));
        // states[i]: the model after the first i operations of this cycle.
        let mut states = vec![model.clone()];
        let mut durable = 0usize;
        let mut ops = Vec::new();
        let mut log: Vec<String> = Vec::new();
        for i in 0..rng.gen_range(5..50u64) {
            if rng.gen_bool(0.05) && std::env::var("NO_CKPT").is_err() {
                match engine.checkpoint() {
                    Ok(_) => {}
                    Err(e) if e.is_refusal() => {}
                    Err(_) => break,
                }
            }
            if rng.gen_bool(0.05) {
                log.push("sync".into());
                match engine.sync() {
                    Ok(()) => durable = states.len() - 1,
                    Err(_) => break,
                }
            }
            let op = random_op(&mut rng, seed << 20 | cycle << 10 | i, DIRS, NAMES);
            let options: TxnOptions = sync_or_async(&mut rng);
            let mut next = states.last().unwrap().clone();
            let want = next.apply(&op);
            let result = run_op(&engine, &op, options);
            log.push(format!(
                "{i}: {op:?} {:?} -> {result:?}",
                options.durability
            ));
            match result {
                Err(e) if !e.is_refusal() => {
                    // Failed: applied whole or not at all.
                    ops.push(op);
                    states.push(next);
                    break;
                }
                got => {
                    let got = got.map_err(|e: FsError| e.errno());
                    assert_eq!(got, want, "{context} op {i}: {op:?}");
                    ops.push(op);
                    states.push(next);
                    if got.is_ok() && options.durability == Durability::Sync {
                        durable = states.len() - 1;
                    }
                }
            }
        }
        drop(engine);
        device.crash();
        device.restart(&crash_plan(&mut rng));
        let recovered = recover(&device, &mut rng, &context, fates);
        let tree = tree_of(&recovered).unwrap_or_else(|e| panic!("{context}: {e}"));
        let Some(k) = (durable..states.len())
            .rev()
            .find(|&k| states[k].tree() == tree)
        else {
            let diffs: Vec<String> = (durable..states.len())
                .map(|k| format!("after {k} ops: {}", diff(&states[k].tree(), &tree)))
                .collect();
            panic!(
                "{context}: recovered tree matches no prefix from {durable} of {} ops\n\
                 ops: {:#?}\n{}",
                states.len() - 1,
                log,
                diffs.join("\n")
            );
        };
        let fsck = recovered.fsck();
        assert!(fsck.is_clean(), "{context}: fsck: {:?}", fsck.problems);
        // A second recovery changes nothing.
        drop(recovered);
        device.crash();
        device.restart(&CrashPlan::power_loss());
        let (again, report) = open_sim(&device, options(&mut rng)).unwrap();
        assert!(
            report.in_flight.is_empty(),
            "{context}: {:?}",
            report.in_flight
        );
        assert_eq!(
            tree_of(&again).unwrap(),
            tree,
            "{context}: second recovery differs"
        );
        model = states.swap_remove(k);
        engine = again;
        checks += 1;
    }
    checks
}

#[test]
fn crash_sweep_every_acknowledged_transaction_survives_whole() {
    let seeds = env_or("SMLOG_FS_SWEEP_SEEDS", 300);
    let cycles = env_or("SMLOG_FS_SWEEP_CYCLES", 5);
    let first = env_or("SMLOG_FS_SWEEP_FIRST_SEED", 0);
    let mut checks = 0;
    let mut fates = [0u64; 2];
    for seed in first..first + seeds {
        checks += sweep_seed(seed, cycles, &mut fates);
    }
    eprintln!(
        "fs crash sweep: {seeds} seeds x {cycles} cycles = {checks} checks; \
         in flight at the crash: {} resumed, {} rolled back",
        fates[0], fates[1]
    );
    assert_eq!(checks, seeds * cycles);
    if seeds * cycles >= 500 {
        // The sweep must reach both ends of the decision table.
        assert!(fates[0] > 0 && fates[1] > 0, "{fates:?}");
    }
}

/// What one thread of the multi-threaded sweep did: the model after each of its operations
/// and how many were acknowledged durable.
struct ThreadRun {
    states: Vec<Model>,
    durable: usize,
}

fn subtree(tree: &Tree, prefix: &[u8]) -> Tree {
    let mut with_slash = prefix.to_vec();
    with_slash.push(b'/');
    tree.iter()
        .filter(|(path, _)| path.starts_with(&with_slash))
        .map(|(path, view)| (path.clone(), view.clone()))
        .collect()
}

fn multi_seed(seed: u64, cycles: u64, fates: &mut [u64; 2]) -> u64 {
    const THREADS: usize = 3;
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x7EAD);
    let device = Arc::new(SimDevice::new(seed));
    let (mut engine, _) = open_sim(&device, options(&mut rng)).unwrap();
    let prefixes: Vec<Vec<u8>> = (0..THREADS).map(|t| format!("t{t}").into_bytes()).collect();
    let mut models: Vec<Model> = Vec::new();
    for prefix in &prefixes {
        let dirs: Vec<Vec<u8>> = vec![prefix.clone(), join(prefix, b"a"), join(prefix, b"b")];
        let dirs: Vec<&[u8]> = dirs.iter().map(|d| d.as_slice()).collect();
        let mut model = Model::new();
        for op in setup_ops(&dirs) {
            model.apply(&op).unwrap();
            run_op(&engine, &op, Durability::Sync.into()).unwrap();
        }
        models.push(model);
    }
    let mut checks = 0;
    for cycle in 0..cycles {
        let context = format!("threads: seed {seed} cycle {cycle}");
        device.set_faults(random_faults(&mut rng));
        let engine_ref = Arc::new(engine);
        let stop_checkpoints = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let checkpointer = {
            let engine = Arc::clone(&engine_ref);
            let stop = Arc::clone(&stop_checkpoints);
            std::thread::spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Acquire) {
                    if engine.checkpoint().is_err() {
                        return;
                    }
                    std::thread::sleep(std::time::Duration::from_micros(300));
                }
            })
        };
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let engine = Arc::clone(&engine_ref);
                let prefix = prefixes[t].clone();
                let model = models[t].clone();
                let thread_seed = seed << 24 | cycle << 8 | t as u64;
                std::thread::spawn(move || {
                    let mut rng = ChaCha8Rng::seed_from_u64(thread_seed);
                    let dirs: Vec<Vec<u8>> =
                        vec![prefix.clone(), join(&prefix, b"a"), join(&prefix, b"b")];
                    let dirs: Vec<&[u8]> = dirs.iter().map(|d| d.as_slice()).collect();
                    let mut run = ThreadRun {
                        states: vec![model],
                        durable: 0,
                    };
                    for i in 0..rng.gen_range(5..30u64) {
                        let op = random_op(&mut rng, thread_seed << 8 | i, &dirs, NAMES);
                        let options: TxnOptions = sync_or_async(&mut rng);
                        let mut next = run.states.last().unwrap().clone();
                        let want = next.apply(&op);
                        match run_op(&engine, &op, options) {
                            Err(e) if !e.is_refusal() => {
                                run.states.push(next);
                                break;
                            }
                            got => {
                                let got = got.map_err(|e: FsError| e.errno());
                                assert_eq!(got, want, "thread {t} op {i}: {op:?}");
                                run.states.push(next);
                                if got.is_ok() && options.durability == Durability::Sync {
                                    run.durable = run.states.len() - 1;
                                }
                            }
                        }
                    }
                    run
                })
            })
            .collect();
        let runs: Vec<ThreadRun> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        stop_checkpoints.store(true, std::sync::atomic::Ordering::Release);
        checkpointer.join().unwrap();
        let engine_owned = Arc::try_unwrap(engine_ref).expect("threads joined");
        drop(engine_owned);
        device.crash();
        device.restart(&crash_plan(&mut rng));
        let recovered = recover(&device, &mut rng, &context, fates);
        let tree = tree_of(&recovered).unwrap_or_else(|e| panic!("{context}: {e}"));
        for (t, run) in runs.into_iter().enumerate() {
            let mine = subtree(&tree, &prefixes[t]);
            let Some(k) = (run.durable..run.states.len())
                .rev()
                .find(|&k| subtree(&run.states[k].tree(), &prefixes[t]) == mine)
            else {
                panic!(
                    "{context}: thread {t}'s directory matches no prefix from {} of {}:\n{}",
                    run.durable,
                    run.states.len() - 1,
                    diff(
                        &subtree(&run.states.last().unwrap().tree(), &prefixes[t]),
                        &mine
                    )
                );
            };
            models[t] = run.states[k].clone();
        }
        let fsck = recovered.fsck();
        assert!(fsck.is_clean(), "{context}: fsck: {:?}", fsck.problems);
        engine = recovered;
        checks += 1;
    }
    checks
}

#[test]
fn crash_sweep_threads_with_concurrent_checkpoints() {
    let seeds = env_or("SMLOG_FS_SWEEP_SEEDS", 300) / 3;
    let cycles = env_or("SMLOG_FS_SWEEP_CYCLES", 5);
    let first = env_or("SMLOG_FS_SWEEP_FIRST_SEED", 0);
    let mut checks = 0;
    let mut fates = [0u64; 2];
    for seed in first..first + seeds {
        checks += multi_seed(seed, cycles, &mut fates);
    }
    eprintln!(
        "fs crash sweep with threads: {seeds} seeds x {cycles} cycles = {checks} checks; \
         in flight at the crash: {} resumed, {} rolled back",
        fates[0], fates[1]
    );
    assert_eq!(checks, seeds * cycles);
}
