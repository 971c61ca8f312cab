//! A snapshot install cut by a crash at every device operation it makes (writes and syncs:
//! the rename to `SNAPSHOT.install`, the removal of the store, the import, `MEMBERSHIP`,
//! the rename to `SNAPSHOT`), with a power loss or random lost, kept and torn writes:
//! opening the volume afterwards gives either the volume as it was (the install had not
//! begun durably) or exactly the snapshot's, never a mix, and fsck is clean; once
//! `SNAPSHOT.install` is durable, always the snapshot's.

use std::collections::BTreeMap;
use std::sync::Arc;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use smlog::io::sim::{CrashPlan, FaultConfig, SimDevice};
use smlog::io::Device;
use smlog::{EntryId, TxnOptions};
use smlog_cluster::log_store::records::{LogIdRecord, MembershipRecord};
use smlog_cluster::raft::{snapshot_meta_of, RaftStateMachine};
use smlog_cluster::sim::engine_options;
use smlog_cluster::snapshot::{
    self, SnapshotFile, SnapshotMetaRecord, SNAPSHOT_FILE, SNAPSHOT_INSTALL_FILE,
};
use smlog_cluster::state_machine::VolumeMachine;
use smlog_recovery::harness::fs::{random_op, run_op, setup_ops, tree_of, Tree};

const DIRS: &[&[u8]] = &[b"", b"d", b"d/e"];
const NAMES: &[&[u8]] = &[b"a", b"b", b"c", b"d", b"e"];
/// The received snapshot (an incoming file is removed when the volume opens: this one
/// stands for one received while the node runs).
const INCOMING: &str = "SNAPSHOT.received";

fn meta() -> SnapshotMetaRecord {
    SnapshotMetaRecord {
        last_log_id: Some(LogIdRecord { term: 4, index: 90 }),
        membership_log_id: Some(LogIdRecord { term: 1, index: 1 }),
        membership: MembershipRecord {
            configs: vec![vec![1, 2, 3]],
            nodes: (1..=3).map(|id| (id, format!("sim:{id}"), 0)).collect(),
        },
    }
}

/// A volume (the node's, before the install) holding `ops` of `seed`, and beside it the
/// snapshot of another volume, received; returns the device and both trees.
fn prepared(seed: u64) -> (SimDevice, Tree, Tree) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    // The snapshot's volume, somewhere else.
    let source = Arc::new(SimDevice::new(seed));
    let (engine, _) = smlog_recovery::open_device(Arc::clone(&source), engine_options()).unwrap();
    for op in setup_ops(DIRS) {
        run_op(&engine, &op, TxnOptions::default()).unwrap();
    }
    for i in 0..40 {
        let _ = run_op(
            &engine,
            &random_op(&mut rng, i, DIRS, NAMES),
            TxnOptions::default(),
        );
    }
    let new_tree = tree_of(&engine).unwrap();
    let mut export = engine.export().unwrap();
    export
        .set_applied_entry(Some(EntryId { term: 4, index: 90 }))
        .unwrap();
    snapshot::write_snapshot(&*source, INCOMING, meta(), &export).unwrap();
    drop(export);
    // The node's own volume, with other files.
    let device = Arc::new(SimDevice::new(seed ^ 0xFF));
    let (engine, _) = smlog_recovery::open_device(Arc::clone(&device), engine_options()).unwrap();
    for op in setup_ops(&[b"", b"old"]) {
        run_op(&engine, &op, TxnOptions::default()).unwrap();
    }
    let old_tree = tree_of(&engine).unwrap();
    engine.sync().unwrap();
    drop(engine);
    // The snapshot arrives (as the inbox writes it: whole, synced, named durably).
    let received = SnapshotFile::open(Arc::clone(&source) as Arc<dyn Device>, INCOMING).unwrap();
    let inbox = snapshot::SnapshotInbox::new(Arc::clone(&device) as Arc<dyn Device>);
    let mut incoming = inbox.receive(received.len()).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    while incoming.written() < received.len() {
        let n = (received.len() - incoming.written()).min(1 << 20) as usize;
        received.read_at(incoming.written(), &mut buf[..n]).unwrap();
        incoming.write(&buf[..n]).unwrap();
    }
    let file = incoming.finish().unwrap();
    let name = file.name().to_owned();
    drop(file);
    device.rename(&name, INCOMING).unwrap();
    device.sync_dir().unwrap();
    (device.clone_durable(), old_tree, new_tree)
}

/// The install as the state machine runs it: the old engine retired, the store replaced,
/// the membership saved, the snapshot made current.
async fn install(device: &Arc<SimDevice>) -> Result<(), String> {
    let meta = snapshot_meta_of(&meta()).unwrap();
    let mut machine =
        VolumeMachine::open(Arc::clone(device), engine_options()).map_err(|e| e.to_string())?;
    let file = SnapshotFile::open(Arc::clone(device) as Arc<dyn Device>, INCOMING)
        .map_err(|e| e.to_string())?;
    machine
        .install_snapshot(&meta, file)
        .await
        .map_err(|e| e.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_install_cut_at_any_operation_leaves_the_old_volume_or_the_snapshot() {
    let mut outcomes: BTreeMap<&str, u64> = BTreeMap::new();
    for seed in 0..3u64 {
        let (prepared, old_tree, new_tree) = prepared(seed);
        // A run with no crash: how many operations the install takes.
        let whole = Arc::new(prepared.clone_durable());
        whole.set_faults(FaultConfig::default());
        install(&whole).await.unwrap();
        let span = whole.mutating_op_count();
        assert!(span > 10, "the install took {span} operations");
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        for crash_at in 1..=span {
            let device = Arc::new(prepared.clone_durable());
            device.set_faults(FaultConfig {
                crash_after_ops: Some(crash_at),
                ..FaultConfig::default()
            });
            let _ = install(&device).await;
            device.crash();
            let plan = match rng.gen_range(0..3) {
                0 => CrashPlan::power_loss(),
                1 => CrashPlan::keep_all(),
                _ => CrashPlan::random_unsynced(&mut rng),
            };
            device.restart(&plan);
            let context = format!("seed {seed}, crash at {crash_at} of {span}, {plan:?}");
            let install_durable = device
                .list()
                .unwrap()
                .iter()
                .any(|n| n == SNAPSHOT_INSTALL_FILE);
            let machine = VolumeMachine::open(Arc::clone(&device), engine_options())
                .unwrap_or_else(|e| panic!("{context}: the volume does not open: {e}"));
            let engine = machine.volume().engine();
            let tree = tree_of(&engine).unwrap();
            let fsck = engine.fsck();
            assert!(fsck.is_clean(), "{context}: {:?}", fsck.problems);
            let names = device.list().unwrap();
            if tree == new_tree {
                assert_eq!(
                    engine.applied_entry(),
                    Some(EntryId { term: 4, index: 90 }),
                    "{context}"
                );
                assert!(
                    names.iter().any(|n| n == SNAPSHOT_FILE),
                    "{context}: {names:?}"
                );
                let (applied, membership) = {
                    let mut machine = machine;
                    machine.applied_state().await.unwrap()
                };
                assert_eq!(applied.map(|l| l.index), Some(90), "{context}");
                assert_eq!(membership.log_id().map(|l| l.index), Some(1), "{context}");
                *outcomes.entry("snapshot").or_default() += 1;
            } else {
                assert!(!install_durable, "{context}: SNAPSHOT.install was durable");
                assert_eq!(
                    tree, old_tree,
                    "{context}: neither the old volume nor the new"
                );
                *outcomes.entry("old volume").or_default() += 1;
            }
            assert!(
                !names.iter().any(|n| n == SNAPSHOT_INSTALL_FILE),
                "{context}: {names:?}"
            );
        }
    }
    eprintln!("install crash sweep: {outcomes:?}");
    assert!(outcomes.get("snapshot").copied().unwrap_or(0) > 0);
    assert!(outcomes.get("old volume").copied().unwrap_or(0) > 0);
}
