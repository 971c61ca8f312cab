//! smlog's Raft log storage: openraft's storage suite on the simulated device and on the
//! io_uring device, and crashes (through the simulated device) that keep exactly the
//! durable prefix: the vote, a truncation and a purge survive, nothing after a lost append
//! comes back, and a purge releases segments without losing the vote.
//!
//! The suite also drives a state machine; here it is a small in-memory one (applied log id,
//! membership, snapshots as bytes), since the suite's subject is the log storage. The
//! engine as state machine has its own tests.

use std::io;
use std::sync::{Arc, Mutex};

use futures_util::StreamExt;
use smlog::io::sim::{CrashPlan, SimDevice};
use smlog::io::{open_dir, Device, DeviceOptions};
use smlog::log::writer::CreateOptions;
use smlog::TxnResult;
use smlog_cluster::raft::testing::log::{StoreBuilder, Suite};
use smlog_cluster::raft::{
    storage_error, EntryPayload, EntryResponder, IOFlushed, LogId, OptionalSend, RaftLogReader,
    RaftLogStorage, RaftSnapshotBuilder, RaftStateMachine, Snapshot, SnapshotMeta, StorageError,
    StoredMembership, TypeConfig, TypeConfigExt, Vote,
};
use smlog_cluster::{Command, FileOp, LogStore, Reply};

/// Small segments: a purge releases some, and the suite's many stores stay small.
const SEGMENTS: CreateOptions = CreateOptions {
    segment_size_bytes: 256 * 1024,
};

/// The last snapshot built or installed, shared with the snapshot builder.
type CurrentSnapshot = Arc<Mutex<Option<(SnapshotMeta, Vec<u8>)>>>;

/// The state machine half the suite needs.
#[derive(Debug, Default)]
struct MemMachine {
    applied: Option<LogId>,
    membership: StoredMembership,
    current: CurrentSnapshot,
}

#[derive(Debug)]
struct MemSnapshotBuilder {
    meta: SnapshotMeta,
    current: CurrentSnapshot,
}

impl RaftSnapshotBuilder<TypeConfig> for MemSnapshotBuilder {
    type SnapshotData = Vec<u8>;

    async fn build_snapshot(&mut self) -> Result<Snapshot<Vec<u8>>, io::Error> {
        let data = format!("{:?}", self.meta).into_bytes();
        *self.current.lock().unwrap() = Some((self.meta.clone(), data.clone()));
        Ok(Snapshot {
            meta: self.meta.clone(),
            snapshot: data,
        })
    }
}

impl RaftStateMachine<TypeConfig> for MemMachine {
    type SnapshotData = Vec<u8>;
    type SnapshotBuilder = MemSnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
        Ok((self.applied, self.membership.clone()))
    }

    async fn apply<S>(&mut self, mut entries: S) -> Result<(), io::Error>
    where
        S: futures_util::Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>>
            + Unpin
            + OptionalSend,
    {
        while let Some(item) = entries.next().await {
            let (entry, responder) = item?;
            self.applied = Some(entry.log_id);
            if let EntryPayload::Membership(membership) = entry.payload {
                self.membership = StoredMembership::new(Some(entry.log_id), membership);
            }
            if let Some(responder) = responder {
                responder.send(Reply(Ok(TxnResult::Done)));
            }
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        MemSnapshotBuilder {
            meta: SnapshotMeta {
                last_log_id: self.applied,
                last_membership: self.membership.clone(),
            },
            current: Arc::clone(&self.current),
        }
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Vec<u8>,
    ) -> Result<(), io::Error> {
        self.applied = meta.last_log_id;
        self.membership = meta.last_membership.clone();
        *self.current.lock().unwrap() = Some((meta.clone(), snapshot));
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<Vec<u8>>>, io::Error> {
        Ok(self
            .current
            .lock()
            .unwrap()
            .clone()
            .map(|(meta, snapshot)| Snapshot { meta, snapshot }))
    }
}

/// Each store on a fresh simulated device.
struct SimBuilder;

impl StoreBuilder<TypeConfig, LogStore<SimDevice>, MemMachine> for SimBuilder {
    async fn build(&self) -> Result<((), LogStore<SimDevice>, MemMachine), StorageError> {
        let store = LogStore::open_with(Arc::new(SimDevice::new(7)), SEGMENTS)
            .map_err(|e| storage_error(io::Error::other(e)))?;
        Ok(((), store, MemMachine::default()))
    }
}

/// Each store in a fresh directory under the target directory (O_DIRECT needs a real
/// file system), on io_uring; the directory goes when the suite drops the guard.
struct UringBuilder;

impl StoreBuilder<TypeConfig, LogStore<Box<dyn Device>>, MemMachine, tempfile::TempDir>
    for UringBuilder
{
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, LogStore<Box<dyn Device>>, MemMachine), StorageError> {
        let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR"))
            .map_err(|e| storage_error(io::Error::other(e)))?;
        let device = open_dir(dir.path(), DeviceOptions::default())
            .map_err(|e| storage_error(io::Error::other(e)))?;
        let store = LogStore::open_with(Arc::new(device), SEGMENTS)
            .map_err(|e| storage_error(io::Error::other(e)))?;
        Ok((dir, store, MemMachine::default()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openraft_storage_suite_on_the_simulated_device() {
    Suite::test_all(SimBuilder).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openraft_storage_suite_on_io_uring() {
    Suite::test_all(UringBuilder).await.unwrap();
}

fn command(n: u64) -> Command {
    Command {
        key: None,
        now: smlog::Time {
            secs: n as i64,
            nanos: 0,
        },
        op: FileOp::Write {
            ino: smlog::Ino(2),
            offset: n * 10,
            data: vec![n as u8; 2000 + n as usize],
        },
    }
}

fn entry(term: u64, index: u64) -> smlog_cluster::raft::Entry {
    smlog_cluster::raft::Entry {
        log_id: LogId::new_term_index(term, index),
        payload: EntryPayload::Normal(command(index)),
    }
}

/// Appends and waits for the `IOFlushed` callback (the group commit).
async fn append_durable<D: Device>(
    store: &mut LogStore<D>,
    entries: Vec<smlog_cluster::raft::Entry>,
) {
    let (tx, rx) = TypeConfig::oneshot();
    store.append(entries, IOFlushed::signal(tx)).await.unwrap();
    rx.await.unwrap().unwrap();
}

async fn indexes<D: Device>(store: &mut LogStore<D>) -> Vec<(u64, u64)> {
    store
        .try_get_log_entries(..)
        .await
        .unwrap()
        .iter()
        .map(|e| (e.log_id.leader_id.term, e.log_id.index))
        .collect()
}

fn reopen(device: &Arc<SimDevice>, plan: &CrashPlan) -> LogStore<SimDevice> {
    device.crash();
    device.restart(plan);
    LogStore::open(Arc::clone(device)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_keeps_the_durable_prefix_vote_truncation_and_entries() {
    let device = Arc::new(SimDevice::new(3));
    let mut store = LogStore::open_with(Arc::clone(&device), SEGMENTS).unwrap();
    store.save_vote(&Vote::new(1, 1)).await.unwrap();
    append_durable(&mut store, (1..=5).map(|i| entry(1, i)).collect()).await;
    // A new leader of term 2 replaces entries 4 and 5.
    store.save_vote(&Vote::new_committed(2, 2)).await.unwrap();
    store
        .truncate_after(Some(LogId::new_term_index(1, 3)))
        .await
        .unwrap();
    append_durable(&mut store, vec![entry(2, 4)]).await;
    store
        .save_committed(Some(LogId::new_term_index(2, 4)))
        .await
        .unwrap();
    // Appended, never flushed: a power loss takes it (and the committed id with it, or not).
    let (tx, _never) = TypeConfig::oneshot();
    store
        .append(vec![entry(2, 5)], IOFlushed::signal(tx))
        .await
        .unwrap();
    assert_eq!(indexes(&mut store).await.last(), Some(&(2, 5)));
    drop(store);

    let mut store = reopen(&device, &CrashPlan::power_loss());
    let want = vec![(1, 1), (1, 2), (1, 3), (2, 4)];
    let got = indexes(&mut store).await;
    assert!(
        got == want || got == [want.clone(), vec![(2, 5)]].concat(),
        "after the crash: {got:?}"
    );
    assert_eq!(
        store.read_vote().await.unwrap(),
        Some(Vote::new_committed(2, 2))
    );
    // Entries read back whole.
    let back = store.try_get_log_entries(2..3).await.unwrap();
    assert_eq!(back[0].payload, EntryPayload::Normal(command(2)));

    // A purge releases segments and keeps the vote and the committed id.
    store
        .truncate_after(Some(LogId::new_term_index(2, 4)))
        .await
        .unwrap();
    let big: Vec<_> = (5..=400).map(|i| entry(2, i)).collect();
    append_durable(&mut store, big).await;
    store
        .save_committed(Some(LogId::new_term_index(2, 390)))
        .await
        .unwrap();
    let segments_before = store.log().meta().first_segment_seq;
    store.purge(LogId::new_term_index(2, 380)).await.unwrap();
    assert!(
        store.log().meta().first_segment_seq > segments_before,
        "the purge released no segment"
    );
    drop(store);
    let mut store = reopen(&device, &CrashPlan::power_loss());
    let state = store.get_log_state().await.unwrap();
    assert_eq!(
        state.last_purged_log_id,
        Some(LogId::new_term_index(2, 380))
    );
    assert_eq!(state.last_log_id, Some(LogId::new_term_index(2, 400)));
    assert_eq!(indexes(&mut store).await.first(), Some(&(2, 381)));
    assert_eq!(
        store.read_vote().await.unwrap(),
        Some(Vote::new_committed(2, 2))
    );
    assert_eq!(
        store.read_committed().await.unwrap(),
        Some(LogId::new_term_index(2, 390))
    );
    // A hole is refused, on the way in.
    let (tx, _rx) = TypeConfig::oneshot();
    let hole = store
        .append(vec![entry(2, 402)], IOFlushed::signal(tx))
        .await;
    assert_eq!(hole.unwrap_err().kind(), io::ErrorKind::InvalidInput);
}

/// A log that holds a record no Raft log writes (an engine's file transaction) is refused
/// with a typed error when opened, never read as entries.
#[test]
fn a_foreign_record_is_refused_when_the_log_is_opened() {
    let device = Arc::new(SimDevice::new(5));
    {
        let log = smlog::Log::create(Arc::clone(&device), SEGMENTS).unwrap();
        let record = smlog::NewRecord {
            txn_id: smlog::TxnId(1),
            step: 1,
            kind: 2,
            payload: b"not a raft record",
        };
        log.append_durable(&[record]).unwrap();
        log.close().unwrap();
    }
    let error = LogStore::open(Arc::clone(&device)).unwrap_err();
    assert!(error.to_string().contains("kind 2"), "{error}");
}
