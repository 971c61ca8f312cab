//! Shared by the file-system tests: the harness's reference model and operations, plus
//! helpers for the sweeps.
#![allow(dead_code)]

use std::sync::Arc;

use rand::Rng;
use smlog::io::sim::SimDevice;
use smlog::{Durability, Engine, EngineOptions, FsError, TxnOptions};
pub use smlog_recovery::harness::fs::*;
use smlog_recovery::{open_device, EngineRecoveryReport, OpenOptions};

/// Options for tests: small segments, no background checkpoints.
pub fn test_options() -> OpenOptions {
    OpenOptions {
        engine: EngineOptions {
            checkpoint_log_bytes: 0,
            checkpoint_dirty_bytes: 0,
            segment_size_bytes: 256 * 1024,
            ..EngineOptions::default()
        },
        create: true,
        ..OpenOptions::default()
    }
}

pub type SimEngine = Engine<SimDevice>;

pub fn open_sim(
    device: &Arc<SimDevice>,
    options: OpenOptions,
) -> Result<(SimEngine, EngineRecoveryReport), FsError> {
    open_device(Arc::clone(device), options)
}

pub fn sync_or_async<R: Rng>(rng: &mut R) -> TxnOptions {
    if rng.gen_bool(0.5) {
        Durability::Sync.into()
    } else {
        Durability::Async.into()
    }
}

/// What [`crash_at_every_step`] saw.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StepCrashStats {
    /// Crash points tried (runs).
    pub runs: u64,
    /// Transactions recovery resumed.
    pub resumed: u64,
    /// Transactions recovery rolled back.
    pub rolled_back: u64,
}

/// Runs `setup` durably, then `ops` with every step durable on its own, crashing at each
/// device operation in turn, each with the write in flight lost, kept and torn; after each
/// crash recovers and checks the tree is the model after every acknowledged op and
/// possibly the next (whole), that fsck is clean, and that recovering again changes
/// nothing.
pub fn crash_at_every_step(setup: &[FsOp], ops: &[FsOp], context: &str) -> StepCrashStats {
    let mut options = test_options();
    options.engine.sync_every_step = true;
    // The model after each prefix of `ops`.
    let mut base = Model::new();
    for op in setup {
        base.apply(op)
            .unwrap_or_else(|e| panic!("{context}: setup {op:?}: errno {e}"));
    }
    let mut states = vec![base.tree()];
    let mut model = base.clone();
    for op in ops {
        let _ = model.apply(op);
        states.push(model.tree());
    }
    let fresh = |seed: u64| {
        let device = Arc::new(SimDevice::new(seed));
        let (engine, _) = open_device(Arc::clone(&device), options).unwrap();
        for op in setup {
            run_op(&engine, op, Durability::Sync.into()).unwrap();
        }
        (device, engine)
    };
    // Count the device operations of `ops`.
    let (device, engine) = fresh(0);
    device.set_faults(smlog::io::sim::FaultConfig::default());
    for op in ops {
        let _ = run_op(&engine, op, Durability::Sync.into());
    }
    let total = device.mutating_op_count();
    drop(engine);
    let plans = [
        smlog::io::sim::CrashPlan::power_loss(),
        smlog::io::sim::CrashPlan::keep_all(),
        smlog::io::sim::CrashPlan {
            torn_percent: 100,
            ..smlog::io::sim::CrashPlan::power_loss()
        },
    ];
    let mut stats = StepCrashStats::default();
    for crash_at in 1..=total {
        for (p, plan) in plans.iter().enumerate() {
            let context = format!("{context}, crash at op {crash_at} of {total}, plan {p}");
            let (device, engine) = fresh(crash_at * 3 + p as u64);
            device.set_faults(smlog::io::sim::FaultConfig {
                crash_after_ops: Some(crash_at),
                ..Default::default()
            });
            let mut acked = 0;
            for op in ops {
                match run_op(&engine, op, Durability::Sync.into()) {
                    Err(e) if !e.is_refusal() => break,
                    _ => acked += 1,
                }
            }
            drop(engine);
            device.crash();
            device.restart(plan);
            let (engine, report) = open_device(Arc::clone(&device), options)
                .unwrap_or_else(|e| panic!("{context}: recovery failed: {e}"));
            for txn in &report.in_flight {
                match txn.decision {
                    smlog::internals::Decision::Resume => stats.resumed += 1,
                    smlog::internals::Decision::RollBack => stats.rolled_back += 1,
                }
            }
            let tree = tree_of(&engine).unwrap();
            let ok = (acked..=(acked + 1).min(ops.len())).any(|k| states[k] == tree);
            assert!(
                ok,
                "{context}: {acked} ops acknowledged; recovered tree {:?} is no allowed state\n\
                 in flight: {:?}",
                tree.keys()
                    .map(|k| String::from_utf8_lossy(k))
                    .collect::<Vec<_>>(),
                report.in_flight
            );
            let fsck = engine.fsck();
            assert!(fsck.is_clean(), "{context}: fsck {:?}", fsck.problems);
            drop(engine);
            device.crash();
            device.restart(&smlog::io::sim::CrashPlan::power_loss());
            let (engine, again) = open_device(Arc::clone(&device), options).unwrap();
            assert!(
                again.in_flight.is_empty(),
                "{context}: {:?}",
                again.in_flight
            );
            assert_eq!(
                tree_of(&engine).unwrap(),
                tree,
                "{context}: second recovery"
            );
            stats.runs += 1;
        }
    }
    stats
}
