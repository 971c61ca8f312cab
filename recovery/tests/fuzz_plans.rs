//! Every fault kind of DESIGN section 6 is reachable from the crash fuzz targets' input: a
//! test per fault builds an `fs_crash` plan with it and sees the device apply it.

use smlog_recovery::harness::fuzz::{
    run_fs_plan, FsCrashPlan, FsCycle, FuzzCrashPlan, FuzzFault, FuzzFsOp,
};
use smlog_recovery::harness::Stats;

fn ops() -> Vec<FuzzFsOp> {
    let op = |kind: u8, a: u8, b: u8, len: u32, durable: bool| FuzzFsOp {
        client: a % 3,
        kind,
        a,
        b,
        c: b,
        d: 0,
        offset: 1000,
        len,
        durable,
    };
    vec![
        op(0, 0, 0, 0, true),        // create /a
        op(7, 0, 0, 120_000, false), // a large write to /a
        op(7, 0, 0, 3000, true),     // a small write
        op(1, 0, 2, 0, false),       // mkdir /c
        op(0, 2, 1, 0, false),       // create /c/b ... (a/c: dir 3 -> "a/c")
        op(6, 0, 0, 0, true),        // rename /a -> /a (no-op) or over
        op(7, 1, 3, 70_000, true),   // write /a/x
        op(4, 0, 0, 0, false),       // unlink /a
        op(8, 1, 3, 10, true),       // truncate /a/x
        op(0, 0, 4, 0, true),        // create /y
    ]
}

fn plan(
    seed: u64,
    fault: FuzzFault,
    crash: FuzzCrashPlan,
    recovery_crashes: Vec<u8>,
) -> FsCrashPlan {
    let cycle = FsCycle {
        ops: ops(),
        checkpoint_at: Some(5),
        steps: seed.is_multiple_of(2),
        fault,
        plan: crash,
        recovery_crashes,
    };
    FsCrashPlan {
        seed,
        cycles: vec![cycle.clone(), cycle],
    }
}

fn calm() -> FuzzCrashPlan {
    FuzzCrashPlan {
        keep: 50,
        torn: 30,
        reorder: false,
        bit_rot: 0,
        bad_sector: false,
        resurrect: 0,
    }
}

/// Runs plans made by `make(n)` for n in 0..60 until `kind` shows up; panics if it never does.
fn reaches(kind: &str, make: impl Fn(u8) -> FsCrashPlan) -> Stats {
    for n in 0..60u8 {
        let stats = run_fs_plan(&make(n));
        if stats.fault_kinds.get(kind).copied().unwrap_or(0) > 0 {
            return stats;
        }
    }
    panic!("{kind} never reached from a plan");
}

#[test]
fn fault_1_unsynced_writes_lost() {
    reaches("unsynced write lost (1)", |n| {
        plan(
            u64::from(n),
            FuzzFault::CrashAfter(n),
            FuzzCrashPlan {
                keep: 0,
                torn: 0,
                ..calm()
            },
            vec![],
        )
    });
}

#[test]
fn fault_2_unsynced_writes_kept_and_reordered() {
    reaches("unsynced write kept (2)", |n| {
        plan(
            u64::from(n),
            FuzzFault::CrashAfter(n),
            FuzzCrashPlan {
                keep: 100,
                ..calm()
            },
            vec![],
        )
    });
    reaches("writes reordered (2)", |n| {
        plan(
            u64::from(n),
            FuzzFault::CrashAfter(n),
            FuzzCrashPlan {
                keep: 100,
                reorder: true,
                ..calm()
            },
            vec![],
        )
    });
}

#[test]
fn fault_3_torn_writes() {
    reaches("torn write (3)", |n| {
        plan(
            u64::from(n),
            FuzzFault::CrashAfter(n),
            FuzzCrashPlan {
                keep: 0,
                torn: 100,
                ..calm()
            },
            vec![],
        )
    });
}

#[test]
fn fault_4_the_write_in_flight() {
    reaches("write in flight (4)", |n| {
        plan(u64::from(n), FuzzFault::CrashAfter(n), calm(), vec![])
    });
}

#[test]
fn fault_5_stale_data_resurrected() {
    reaches("stale data resurrected (5)", |n| {
        plan(
            u64::from(n),
            FuzzFault::CrashAfter(n),
            FuzzCrashPlan {
                resurrect: 2,
                ..calm()
            },
            vec![],
        )
    });
}

#[test]
fn fault_6_misdirected_writes() {
    reaches("misdirected write (6)", |n| {
        plan(u64::from(n), FuzzFault::MisdirectedWrite(n), calm(), vec![])
    });
}

#[test]
fn fault_7_lost_writes() {
    reaches("lost write (7)", |n| {
        plan(u64::from(n), FuzzFault::LostWrite(n), calm(), vec![])
    });
}

#[test]
fn fault_8_misdirected_reads() {
    reaches("misdirected read (8)", |n| {
        plan(u64::from(n), FuzzFault::MisdirectedReads, calm(), vec![])
    });
}

#[test]
fn fault_9_unreadable_sectors() {
    reaches("unreadable sector (9)", |n| {
        plan(
            u64::from(n),
            FuzzFault::None,
            FuzzCrashPlan {
                bad_sector: true,
                ..calm()
            },
            vec![],
        )
    });
}

#[test]
fn fault_10_bit_rot() {
    reaches("bit rot (10)", |n| {
        plan(
            u64::from(n),
            FuzzFault::None,
            FuzzCrashPlan {
                bit_rot: 1,
                ..calm()
            },
            vec![],
        )
    });
}

#[test]
fn fault_11_failed_and_short_writes_and_failed_syncs() {
    reaches("write failed (11)", |n| {
        plan(
            u64::from(n),
            FuzzFault::WriteFails(n, n % 2 == 0),
            calm(),
            vec![],
        )
    });
    reaches("fdatasync failed (11)", |n| {
        plan(u64::from(n), FuzzFault::SyncFails(n), calm(), vec![])
    });
    reaches("short write (11)", |n| {
        plan(u64::from(n), FuzzFault::ShortWrite(n), calm(), vec![])
    });
}

#[test]
fn fault_12_crashes_during_recovery() {
    for n in 0..60u8 {
        let stats = run_fs_plan(&plan(
            u64::from(n),
            FuzzFault::CrashAfter(n),
            calm(),
            vec![n % 7, 2, 5],
        ));
        if stats.recovery_crashes >= 2 {
            return;
        }
    }
    panic!("recovery was never crashed twice");
}

#[test]
fn fault_13_corruption_in_the_log_is_refused_not_truncated() {
    // Bit rot below the durable mark: recovery refuses with an explicit error (counted as
    // a refusal), never a silent truncation (which the model check would catch).
    for n in 0..60u8 {
        let stats = run_fs_plan(&plan(
            u64::from(n),
            FuzzFault::None,
            FuzzCrashPlan {
                bit_rot: 2,
                ..calm()
            },
            vec![],
        ));
        if stats.refused > 0 {
            return;
        }
    }
    panic!("no damage was ever refused");
}

#[test]
fn fault_14_names_not_yet_durable() {
    reaches("unsynced name lost (14)", |n| {
        plan(
            u64::from(n),
            FuzzFault::CrashAfter(n),
            FuzzCrashPlan {
                keep: 0,
                torn: 0,
                ..calm()
            },
            vec![],
        )
    });
}
