//! The engine as Raft's state machine on the simulated device: after a power loss the
//! machine reports as applied exactly what its engine and its saved membership hold, so
//! applying the entries after that again gives the state of a machine that never crashed
//! (same tree, same inode numbers); a damaged `MEMBERSHIP` refuses the open.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use smlog::io::sim::{CrashPlan, SimDevice};
use smlog::{NewAttrs, Time, ROOT_INO};
use smlog_cluster::raft::{Entry, EntryPayload, LogId, Membership, NodeInfo, RaftStateMachine};
use smlog_cluster::sim::engine_options;
use smlog_cluster::state_machine::{MachineError, MEMBERSHIP_FILE};
use smlog_cluster::{Command, FileOp, VolumeMachine};
use smlog_recovery::harness::fs::tree_of;

fn create(index: u64) -> Entry {
    Entry {
        log_id: LogId::new_term_index(2, index),
        payload: EntryPayload::Normal(Command {
            key: None,
            now: Time {
                secs: index as i64,
                nanos: 0,
            },
            op: FileOp::Create {
                parent: ROOT_INO,
                name: format!("f{index}").into_bytes(),
                attrs: NewAttrs {
                    mode: 0o644,
                    uid: 0,
                    gid: 0,
                    umask: 0,
                },
            },
        }),
    }
}

fn membership(index: u64) -> Entry {
    let voters: BTreeSet<u64> = [1, 2, 3].into();
    let nodes: BTreeMap<u64, NodeInfo> = [1, 2, 3]
        .map(|id| {
            let addr = format!("memory:{id}");
            (id, NodeInfo::new(addr))
        })
        .into();
    Entry {
        log_id: LogId::new_term_index(2, index),
        payload: EntryPayload::Membership(Membership::new(vec![voters], nodes).unwrap()),
    }
}

async fn apply(machine: &mut VolumeMachine<SimDevice>, entries: Vec<Entry>) {
    let stream = futures_util::stream::iter(entries.into_iter().map(|e| Ok((e, None))));
    machine.apply(stream).await.unwrap();
}

fn power_loss(device: &Arc<SimDevice>) {
    device.crash();
    device.restart(&CrashPlan::power_loss());
}

/// The machine that never crashed: entries 1..=10 (a membership at `membership_at`).
async fn reference(membership_at: u64) -> VolumeMachine<SimDevice> {
    let mut machine = VolumeMachine::open(Arc::new(SimDevice::new(1)), engine_options()).unwrap();
    for index in 1..=10 {
        let entry = if index == membership_at {
            membership(index)
        } else {
            create(index)
        };
        apply(&mut machine, vec![entry]).await;
    }
    machine
}

fn same_state(a: &VolumeMachine<SimDevice>, b: &VolumeMachine<SimDevice>) {
    assert_eq!(
        tree_of(&a.volume().engine()).unwrap(),
        tree_of(&b.volume().engine()).unwrap()
    );
    assert_eq!(
        a.volume().engine().meta().next_ino,
        b.volume().engine().meta().next_ino
    );
    for index in 2..=10u64 {
        let name = format!("f{index}");
        let ino = |m: &VolumeMachine<SimDevice>| {
            m.volume()
                .engine()
                .lookup(ROOT_INO, name.as_bytes())
                .map(|s| s.ino)
                .ok()
        };
        assert_eq!(ino(a), ino(b), "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_power_loss_the_machine_applies_again_exactly_what_its_engine_lost() {
    let device = Arc::new(SimDevice::new(1));
    let mut machine = VolumeMachine::open(Arc::clone(&device), engine_options()).unwrap();
    apply(&mut machine, vec![membership(1)]).await;
    apply(&mut machine, (2..=5).map(create).collect()).await;
    machine.volume().engine().sync().unwrap();
    apply(&mut machine, (6..=10).map(create).collect()).await;
    assert_eq!(
        machine.applied_state().await.unwrap().0,
        Some(LogId::new_term_index(2, 10))
    );
    drop(machine);
    power_loss(&device);

    let mut machine = VolumeMachine::open(Arc::clone(&device), engine_options()).unwrap();
    let (applied, stored) = machine.applied_state().await.unwrap();
    assert_eq!(
        applied,
        Some(LogId::new_term_index(2, 5)),
        "the engine synced to 5"
    );
    assert_eq!(stored.log_id(), &Some(LogId::new_term_index(2, 1)));
    apply(&mut machine, (6..=10).map(create).collect()).await;
    same_state(&machine, &reference(1).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_membership_entry_makes_the_engine_durable_before_it_is_saved() {
    let device = Arc::new(SimDevice::new(2));
    let mut machine = VolumeMachine::open(Arc::clone(&device), engine_options()).unwrap();
    apply(&mut machine, (1..=5).map(create).collect()).await;
    apply(&mut machine, vec![membership(6)]).await;
    apply(&mut machine, (7..=10).map(create).collect()).await;
    drop(machine);
    power_loss(&device);

    let mut machine = VolumeMachine::open(Arc::clone(&device), engine_options()).unwrap();
    let (applied, stored) = machine.applied_state().await.unwrap();
    assert_eq!(applied, Some(LogId::new_term_index(2, 6)));
    assert_eq!(stored.log_id(), &Some(LogId::new_term_index(2, 6)));
    assert!(
        machine.volume().engine().lookup(ROOT_INO, b"f5").is_ok(),
        "entry 5 lost"
    );
    apply(&mut machine, (7..=10).map(create).collect()).await;
    same_state(&machine, &reference(6).await);
}

#[test]
fn a_damaged_membership_file_refuses_the_open() {
    let device = Arc::new(SimDevice::new(3));
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let mut machine = VolumeMachine::open(Arc::clone(&device), engine_options()).unwrap();
        apply(&mut machine, vec![membership(1)]).await;
    });
    device.poke(MEMBERSHIP_FILE, 20, b"garbage");
    let error = VolumeMachine::open(Arc::clone(&device), engine_options()).unwrap_err();
    assert!(
        matches!(&error, MachineError::Membership { why, .. } if why.contains("CRC")),
        "{error}"
    );
}
