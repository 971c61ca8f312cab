//! The engine against the reference model, without crashes: every operation gives the
//! model's errno and leaves the model's tree; checkpoints and clean reopen change nothing.

mod fs_common;

use std::sync::Arc;

use fs_common::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use smlog::io::sim::{CrashPlan, SimDevice};
use smlog::Durability;

const DIRS: &[&[u8]] = &[b"", b"a", b"b", b"a/c"];
const NAMES: &[&[u8]] = &[b"a", b"b", b"c", b"x", b"y"];

#[test]
fn random_operations_match_the_model_errno_for_errno() {
    let mut total_succeeded = 0;
    for seed in 0..40u64 {
        let device = Arc::new(SimDevice::new(seed));
        let (engine, report) = open_sim(&device, test_options()).unwrap();
        assert!(report.created);
        let mut model = Model::new();
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut succeeded = 0;
        let setup = setup_ops(DIRS);
        for i in 0..300 + setup.len() {
            let op = match setup.get(i) {
                Some(op) => op.clone(),
                None => random_op(&mut rng, seed * 1000 + i as u64, DIRS, NAMES),
            };
            let want = model.apply(&op);
            let got = run_op(&engine, &op, Durability::Async.into()).map_err(|e| e.errno());
            assert_eq!(got, want, "seed {seed} op {i}: {op:?}");
            succeeded += usize::from(got.is_ok());
            if rng.gen_bool(0.03) {
                engine.checkpoint().unwrap();
            }
        }
        total_succeeded += succeeded;
        assert_eq!(tree_of(&engine).unwrap(), model.tree(), "seed {seed}");
        let fsck = engine.fsck();
        assert!(fsck.is_clean(), "seed {seed}: {:?}", fsck.problems);
        engine.sync().unwrap();
        drop(engine);
        device.crash();
        device.restart(&CrashPlan::power_loss());
        let (engine, report) = open_sim(&device, test_options()).unwrap();
        assert!(
            report.in_flight.is_empty(),
            "seed {seed}: {:?}",
            report.in_flight
        );
        assert_eq!(
            tree_of(&engine).unwrap(),
            model.tree(),
            "seed {seed} after reopen"
        );
        let fsck = engine.fsck();
        assert!(
            fsck.is_clean(),
            "seed {seed} after reopen: {:?}",
            fsck.problems
        );
    }
    // The workload must do real work, not only collect errors.
    assert!(
        total_succeeded > 40 * 60,
        "only {total_succeeded} operations succeeded"
    );
}
