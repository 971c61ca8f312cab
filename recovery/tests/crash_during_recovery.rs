//! A crash during recovery, at every device operation of recovery and repeatedly, ends in
//! the same store as an uninterrupted recovery (fault 12).

mod fs_common;

use std::sync::Arc;

use fs_common::*;
use smlog::io::sim::{CrashPlan, FaultConfig, SimDevice};
use smlog::{Durability, RenameFlags};
use smlog_recovery::{inspect, open_device};

fn v(s: &str) -> Vec<u8> {
    s.as_bytes().to_vec()
}

/// Devices crashed with a transaction in flight (one per crash point that leaves one).
fn crashed_in_flight(setup: &[FsOp], op: &FsOp) -> Vec<Arc<SimDevice>> {
    let mut options = test_options();
    options.engine.sync_every_step = true;
    let mut devices = Vec::new();
    for crash_at in 1..200 {
        let device = Arc::new(SimDevice::new(crash_at));
        let (engine, _) = open_device(Arc::clone(&device), options).unwrap();
        for op in setup {
            run_op(&engine, op, Durability::Sync.into()).unwrap();
        }
        device.set_faults(FaultConfig {
            crash_after_ops: Some(crash_at),
            ..FaultConfig::default()
        });
        let finished = run_op(&engine, op, Durability::Sync.into()).is_ok();
        drop(engine);
        if finished && !device.is_crashed() {
            break;
        }
        device.crash();
        device.restart(&CrashPlan::power_loss());
        let (report, _, _) = inspect(Arc::clone(&device), options, false).unwrap();
        if !report.in_flight.is_empty() {
            devices.push(device);
        }
    }
    devices
}

fn snapshot(device: &SimDevice) -> SimDevice {
    device.clone_durable()
}

fn recovered_tree(device: Arc<SimDevice>) -> (Tree, u64) {
    device.set_faults(FaultConfig::default());
    let (engine, _) = open_device(Arc::clone(&device), test_options()).unwrap();
    let fsck = engine.fsck();
    assert!(fsck.is_clean(), "{:?}", fsck.problems);
    let tree = tree_of(&engine).unwrap();
    drop(engine);
    (tree, device.mutating_op_count())
}

fn every_recovery_crash(setup: &[FsOp], op: FsOp, name: &str) -> u64 {
    let devices = crashed_in_flight(setup, &op);
    assert!(
        !devices.is_empty(),
        "{name}: no crash point leaves it in flight"
    );
    let mut runs = 0;
    for (d, crashed) in devices.iter().enumerate() {
        let (want, recovery_ops) = recovered_tree(Arc::new(snapshot(crashed)));
        assert!(recovery_ops > 0, "{name}: recovery wrote nothing");
        for crash_at in 1..=recovery_ops {
            for (p, plan) in [CrashPlan::power_loss(), CrashPlan::keep_all()]
                .iter()
                .enumerate()
            {
                for repeats in [1, 3] {
                    let device = Arc::new(snapshot(crashed));
                    for _ in 0..repeats {
                        device.set_faults(FaultConfig {
                            crash_after_ops: Some(crash_at),
                            ..FaultConfig::default()
                        });
                        if let Ok((engine, _)) = open_device(Arc::clone(&device), test_options()) {
                            drop(engine);
                        }
                        device.crash();
                        device.restart(plan);
                    }
                    let (got, _) = recovered_tree(device);
                    assert_eq!(
                        got, want,
                        "{name}: device {d}, recovery crashed at op {crash_at} x{repeats}, plan {p}"
                    );
                    runs += 1;
                }
            }
        }
    }
    runs
}

#[test]
fn recovery_crashed_at_every_step_ends_where_an_uninterrupted_one_does() {
    let setup = vec![
        FsOp::Mkdir(v(""), v("d")),
        FsOp::Create(v(""), v("a")),
        FsOp::Write(v("a"), 0, 70_000, 1),
        FsOp::Create(v("d"), v("b")),
    ];
    let mut runs = 0;
    // Rolled back: two steps to undo.
    runs += every_recovery_crash(
        &setup,
        FsOp::Rename(v(""), v("a"), v("d"), v("b"), RenameFlags::default()),
        "rename over existing",
    );
    // Resumed: the data is freed by recovery.
    runs += every_recovery_crash(&setup, FsOp::Unlink(v(""), v("a")), "unlink");
    // Rolled back: allocated blocks freed.
    runs += every_recovery_crash(&setup, FsOp::Write(v("d/b"), 0, 300_000, 4), "large write");
    eprintln!("crash during recovery: {runs} runs");
    assert!(runs > 20);
}
