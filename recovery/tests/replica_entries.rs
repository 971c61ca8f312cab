//! An engine as a replica's state machine: each operation applies one entry of a replicated
//! log (`TxnOptions::entry`), asynchronously, and after a crash `Engine::applied_entry`
//! names exactly the newest entry whose outcome survived. Applying the entries after it
//! again then gives the tree of a run that never crashed: nothing applied twice, nothing
//! missing. Crashes are injected through the simulated device at random device operations
//! with random crash plans (lost, kept, torn and reordered writes).

mod fs_common;

use std::sync::Arc;

use fs_common::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use smlog::io::sim::{CrashPlan, FaultConfig, SimDevice};
use smlog::{Durability, EntryId, NewAttrs, Time, TxnOptions, ROOT_INO};

const DIRS: &[&[u8]] = &[b"", b"d", b"d/e"];
const NAMES: &[&[u8]] = &[b"a", b"b", b"c", b"d", b"e"];

/// The options a replica applies entry `index` with: its leader's time, its entry, and
/// (when `sync`) a wait for durability.
fn entry_options(index: u64, sync: bool) -> TxnOptions {
    TxnOptions {
        durability: if sync {
            Durability::Sync
        } else {
            Durability::Async
        },
        key: None,
        now: Some(Time {
            secs: 1_000_000 + index as i64,
            nanos: 7,
        }),
        entry: Some(EntryId { term: 3, index }),
    }
}

fn model_after(setup: &[FsOp], ops: &[FsOp]) -> Tree {
    let mut model = Model::new();
    for op in setup.iter().chain(ops) {
        let _ = model.apply(op);
    }
    model.tree()
}

/// One seed: setup (durable), then `ops` as entries 1.., mostly asynchronous with a sync
/// now and then, crashing at a random device operation. Returns whether the crash fell
/// before the last entry was durable (some were applied again).
fn crash_and_apply_again(seed: u64) -> (u64, u64) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let setup = setup_ops(DIRS);
    let ops: Vec<FsOp> = (0..40)
        .map(|_| random_op(&mut rng, seed, DIRS, NAMES))
        .collect();
    let syncs: Vec<bool> = ops.iter().map(|_| rng.gen_bool(0.15)).collect();
    // Half the seeds make every step durable on its own, so crashes fall between the
    // steps of one transaction too (recovery then resumes or rolls it back).
    let mut options = test_options();
    options.engine.sync_every_step = seed.is_multiple_of(2);
    let run = |device: &Arc<SimDevice>, from: usize| {
        let (engine, _) = open_sim(device, options).unwrap();
        for (i, op) in ops.iter().enumerate().skip(from) {
            let index = i as u64 + 1;
            if run_op(&engine, op, entry_options(index, syncs[i])).is_err()
                && engine.stopped().is_some()
            {
                break;
            }
        }
        engine
    };
    // A run that never crashes tells how many device operations the entries take.
    let whole = Arc::new(SimDevice::new(seed));
    {
        let (engine, _) = open_sim(&whole, test_options()).unwrap();
        for op in &setup {
            run_op(&engine, op, TxnOptions::default()).unwrap();
        }
    }
    let before = whole.mutating_op_count();
    let engine = run(&whole, 0);
    let whole_tree = tree_of(&engine).unwrap();
    assert_eq!(
        whole_tree,
        model_after(&setup, &ops),
        "seed {seed}: no crash"
    );
    let newest_logged = engine.applied_entry();
    drop(engine);
    let span = whole.mutating_op_count() - before;

    let device = Arc::new(SimDevice::new(seed));
    {
        let (engine, _) = open_sim(&device, test_options()).unwrap();
        for op in &setup {
            run_op(&engine, op, TxnOptions::default()).unwrap();
        }
    }
    let crash_at = device.mutating_op_count() + rng.gen_range(1..=span.max(1));
    device.set_faults(FaultConfig {
        crash_after_ops: Some(crash_at),
        ..FaultConfig::default()
    });
    drop(run(&device, 0));
    device.crash();
    let plan = match rng.gen_range(0..3) {
        0 => CrashPlan::power_loss(),
        1 => CrashPlan::keep_all(),
        _ => CrashPlan::random_unsynced(&mut rng),
    };
    device.restart(&plan);
    let context = format!("seed {seed}, crash at op {crash_at}, {plan:?}");

    let (engine, _) = open_sim(&device, test_options()).unwrap();
    let applied = engine.applied_entry().map_or(0, |entry| {
        assert_eq!(entry.term, 3, "{context}");
        entry.index
    });
    assert!(
        Some(EntryId {
            term: 3,
            index: applied
        }) <= newest_logged
            || applied == 0,
        "{context}: entry {applied} was never applied"
    );
    let fsck = engine.fsck();
    assert!(fsck.is_clean(), "{context}: {:?}", fsck.problems);
    assert_eq!(
        tree_of(&engine).unwrap(),
        model_after(&setup, &ops[..applied as usize]),
        "{context}: the tree is not the entries up to {applied}, the applied entry"
    );
    drop(engine);
    // The replica applies again what came after.
    let engine = run(&device, applied as usize);
    assert_eq!(
        tree_of(&engine).unwrap(),
        whole_tree,
        "{context}: applying the entries after {applied} again"
    );
    assert_eq!(engine.applied_entry(), newest_logged, "{context}");
    (applied, ops.len() as u64)
}

#[test]
fn after_a_crash_the_applied_entry_is_exactly_what_survived() {
    let mut replayed = 0;
    let mut whole = 0;
    for seed in 0..200 {
        let (applied, total) = crash_and_apply_again(seed);
        if applied < total {
            replayed += 1;
        } else {
            whole += 1;
        }
    }
    // The sweep meets both: crashes that cost applied entries, and ones that kept them.
    assert!(replayed > 10, "only {replayed} crashes lost entries");
    assert!(whole > 0, "no crash kept every entry");
}

/// The leader's time, not the replica's clock, is what a replica stamps.
#[test]
fn a_replica_stamps_its_leaders_time() {
    let device = Arc::new(SimDevice::new(9));
    let (engine, _) = open_sim(&device, test_options()).unwrap();
    let attrs = NewAttrs {
        mode: 0o600,
        uid: 5,
        gid: 6,
        umask: 0,
    };
    let stat = engine
        .create(ROOT_INO, b"f", attrs, entry_options(1, true))
        .unwrap();
    let want = Time {
        secs: 1_000_001,
        nanos: 7,
    };
    assert_eq!((stat.mtime, stat.ctime), (want, want));
    engine
        .write(stat.ino, 0, b"hello", entry_options(2, false))
        .unwrap();
    let stat = engine.getattr(stat.ino).unwrap();
    let want = Time {
        secs: 1_000_002,
        nanos: 7,
    };
    assert_eq!((stat.mtime, stat.ctime), (want, want));
    assert_eq!(engine.getattr(ROOT_INO).unwrap().mtime.secs, 1_000_001);
    assert_eq!(engine.applied_entry(), Some(EntryId { term: 3, index: 2 }));
    // A refusal that logged nothing leaves the applied entry where it was.
    let missing = engine.unlink(ROOT_INO, b"missing", entry_options(3, true));
    assert_eq!(missing.unwrap_err().errno(), libc::ENOENT);
    assert_eq!(engine.applied_entry(), Some(EntryId { term: 3, index: 2 }));
    // The applied entry survives a checkpoint and a clean restart.
    engine.checkpoint().unwrap();
    drop(engine);
    device.crash();
    device.restart(&CrashPlan::power_loss());
    let (engine, _) = open_sim(&device, test_options()).unwrap();
    assert_eq!(engine.applied_entry(), Some(EntryId { term: 3, index: 2 }));
}
