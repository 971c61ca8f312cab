//! A node of a replicated volume ([`Node`]): its Raft log ([`LogStore`]), its engine as
//! state machine ([`VolumeMachine`]) and openraft's Raft between them, on a network of
//! the caller's choosing (in-process for tests and the simulation, TCP for processes).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use smlog::io::Device;
use smlog::Engine;
use smlog_recovery::OpenOptions;

use crate::command::Command;
use crate::log_store::{LogStore, OpenError};
use crate::raft::{
    metrics_of, ClientWriteError, Config, NetSnapshot, NodeId, Raft, RaftError, RaftMetrics,
    RaftNetworkFactory, SnapshotPolicy, TypeConfig,
};
use crate::snapshot::{SnapshotFile, SnapshotInbox};
use crate::state_machine::{MachineError, Observer, Volume, VolumeMachine};
use crate::wire::Written;

/// Heartbeats every 250 ms; a follower campaigns after 1.5-2 s without hearing its leader.
///
/// openraft's followers keep a leader lease as long as the longest election timeout, and
/// campaign only once lease and their own (random) timeout have both passed since they last
/// heard the leader: silence of `ELECTION_TIMEOUT_MAX + [MIN, MAX]`, here 1 s + 0.5-1 s. So
/// a leader's death is followed by an election 1.5-2 s after its last heartbeat, and no
/// load pause shorter than 1.5 s (6 heartbeats) starts one. (With timeouts of 1-2 s, the
/// silence was 3-4 s: measured p50 3.7 s from SIGKILL to the next applied write.)
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_millis(250);
/// The shortest election timeout (after the lease).
pub const ELECTION_TIMEOUT_MIN: Duration = Duration::from_millis(500);
/// The longest election timeout, and openraft's leader lease.
pub const ELECTION_TIMEOUT_MAX: Duration = Duration::from_millis(1000);

/// Entries per replication message: with at most 64 KiB of data per entry, a message
/// stays far below [`crate::wire::FRAME_BYTES_MAX`].
pub const ENTRIES_PER_APPEND_MAX: u64 = 128;

/// A snapshot is built once this many entries were applied since the last one.
pub const SNAPSHOT_EVERY_ENTRIES: u64 = 100_000;
/// The Raft log keeps its entries in memory, so its size is bounded too: once it holds this
/// many bytes of entries, the log behind the snapshot is purged down to a quarter of this,
/// and a snapshot is built when more than half of it lies past the last one. (The count
/// alone would let large writes grow it to 100,000 × 64 KiB.)
pub const SNAPSHOT_LOG_BYTES: u64 = 256 << 20;
/// How often a node compares its Raft log's size with [`SNAPSHOT_LOG_BYTES`].
const SNAPSHOT_SIZE_CHECK_INTERVAL: Duration = Duration::from_millis(200);
/// How long a snapshot asked for by size is waited for before it is asked for again.
const SNAPSHOT_REQUEST_PATIENCE: Duration = Duration::from_secs(30);

/// Entries kept in the Raft log behind the snapshot, so a follower a little behind catches
/// up from the log rather than with a whole snapshot.
pub const ENTRIES_KEPT_BEHIND_SNAPSHOT: u64 = 2_000;

/// The Raft configuration of a volume's group, with the timeouts above (tests of the
/// deterministic simulation scale them, and snapshot more often).
pub fn raft_config(heartbeat: Duration, election_min: Duration, election_max: Duration) -> Config {
    Config {
        cluster_name: "smlog".into(),
        heartbeat_interval: heartbeat.as_millis() as u64,
        election_timeout_min: election_min.as_millis() as u64,
        election_timeout_max: election_max.as_millis() as u64,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(SNAPSHOT_EVERY_ENTRIES),
        max_in_snapshot_log_to_keep: ENTRIES_KEPT_BEHIND_SNAPSHOT,
        max_payload_entries: ENTRIES_PER_APPEND_MAX,
        // Standard Raft: a restarted leader runs a new election (a new term). openraft's
        // default restores its leadership in the same term, and a leader that lost its last,
        // unflushed entries in a power loss then writes other entries at those indexes under
        // the same term: a follower holding the first ones takes them for the same entries,
        // and the committed logs diverge (found by the cluster simulation, seed 609 of 5
        // nodes: two different entries 1.3).
        enable_leader_restore: Some(false),
        ..Config::default()
    }
}

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The Raft log.
    #[error("the Raft log: {0}")]
    Log(#[from] OpenError),
    /// The engine or the saved membership.
    #[error("the volume: {0}")]
    Machine(#[from] MachineError),
    /// The Raft configuration.
    #[error("the Raft configuration: {0}")]
    Config(String),
    /// openraft refused to start.
    #[error("Raft: {0}")]
    Raft(String),
}

/// Why a write was not applied.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// This node is not the leader; the leader, when known, is named.
    #[error("node is not the leader (leader: {leader:?})")]
    NotLeader {
        /// The leader this node knows of.
        leader: Option<NodeId>,
    },
    /// The entry was appended but this node lost leadership before it committed: it may
    /// still commit through another leader. Retry under the same request key.
    #[error("leadership changed before the write committed; retry under its request key")]
    Unknown,
    /// The node stopped (a storage failure or a shutdown).
    #[error("the node stopped: {0}")]
    Stopped(String),
}

/// One member of a volume's Raft group.
pub struct Node<D: Device> {
    id: NodeId,
    raft: Raft<D>,
    volume: Volume<D>,
    inbox: SnapshotInbox,
    log: LogStore<D>,
    /// The size bound of the Raft log that makes a snapshot ([`SNAPSHOT_LOG_BYTES`]).
    snapshot_log_bytes: Arc<AtomicU64>,
    by_size: tokio::task::JoinHandle<()>,
}

impl<D: Device> Drop for Node<D> {
    fn drop(&mut self) {
        self.by_size.abort();
    }
}

impl<D: Device> std::fmt::Debug for Node<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node").field("id", &self.id).finish()
    }
}

impl<D: Device> Node<D> {
    /// Opens (or creates) the node's Raft log on `log_device` and its volume on
    /// `engine_device` (both recovered after a crash), and starts Raft on `network`.
    pub async fn start<N>(
        id: NodeId,
        log_device: Arc<D>,
        engine_device: Arc<D>,
        engine_options: OpenOptions,
        config: Config,
        network: N,
    ) -> Result<Node<D>, StartError>
    where
        N: RaftNetworkFactory<TypeConfig>,
        N::Network: NetSnapshot<TypeConfig, SnapshotData = SnapshotFile>,
    {
        let devices = (log_device, engine_device);
        Node::start_observed(id, devices, engine_options, config, network, None).await
    }

    /// [`Node::start`] with an observer of what the volume applies and installs.
    pub async fn start_observed<N>(
        id: NodeId,
        (log_device, engine_device): (Arc<D>, Arc<D>),
        engine_options: OpenOptions,
        config: Config,
        network: N,
        observer: Option<Observer>,
    ) -> Result<Node<D>, StartError>
    where
        N: RaftNetworkFactory<TypeConfig>,
        N::Network: NetSnapshot<TypeConfig, SnapshotData = SnapshotFile>,
    {
        let config = config
            .validate()
            .map_err(|e| StartError::Config(e.to_string()))?;
        let opened = tokio::task::spawn_blocking(move || {
            let log = LogStore::open(log_device)?;
            let machine = VolumeMachine::open(engine_device, engine_options)?
                .with_log(log.clone())
                .with_observer(observer);
            Ok::<_, StartError>((log, machine))
        })
        .await
        .map_err(|e| StartError::Raft(e.to_string()))??;
        let (log, machine) = opened;
        let volume = machine.volume().clone();
        let inbox = machine.snapshot_inbox();
        let raft = Raft::new(id, Arc::new(config), network, log.clone(), machine)
            .await
            .map_err(|e| StartError::Raft(e.to_string()))?;
        let snapshot_log_bytes = Arc::new(AtomicU64::new(SNAPSHOT_LOG_BYTES));
        let by_size = tokio::spawn(snapshot_by_size(
            raft.clone(),
            log.clone(),
            Arc::clone(&snapshot_log_bytes),
        ));
        Ok(Node {
            id,
            raft,
            volume,
            inbox,
            log,
            snapshot_log_bytes,
            by_size,
        })
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// openraft's handle (membership changes, metrics).
    pub fn raft(&self) -> &Raft<D> {
        &self.raft
    }

    /// This node's engine now: reads are served from it (what this node has applied). An
    /// installed snapshot replaces it (the old one then refuses changes): take it again
    /// for each operation.
    pub fn engine(&self) -> Arc<Engine<D>> {
        self.volume.engine()
    }

    /// Where this node receives a snapshot.
    pub fn snapshot_inbox(&self) -> &SnapshotInbox {
        &self.inbox
    }

    /// What this node sees now: leader, term, log and applied indexes, replication.
    pub fn metrics(&self) -> RaftMetrics {
        metrics_of(&self.raft)
    }

    /// This node's Raft log.
    pub fn log(&self) -> &LogStore<D> {
        &self.log
    }

    /// Replicates `command` (this node must be the leader) and returns its entry's index
    /// and what applying it gave, once a quorum has it durably and this node applied it.
    pub async fn write(&self, command: Command) -> Result<Written, WriteError> {
        match self.raft.client_write(command).await {
            Ok(response) => Ok(Written {
                index: response.log_id.index,
                reply: response.data,
            }),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(forward))) => {
                Err(WriteError::NotLeader {
                    leader: forward.leader_id,
                })
            }
            Err(RaftError::APIError(other)) => {
                log::info!("node {}: a write's outcome is unknown: {other}", self.id);
                Err(WriteError::Unknown)
            }
            Err(RaftError::Fatal(fatal)) => Err(WriteError::Stopped(fatal.to_string())),
        }
    }

    /// Sets the Raft log's size that makes a snapshot (tests make it small).
    pub fn set_snapshot_log_bytes(&self, bytes: u64) {
        self.snapshot_log_bytes.store(bytes, Ordering::Relaxed);
    }

    /// Stops Raft (the engine and log close when the node is dropped).
    pub async fn shutdown(&self) {
        self.by_size.abort();
        if let Err(e) = self.raft.shutdown().await {
            log::warn!("node {}: Raft did not stop cleanly: {e}", self.id);
        }
    }
}

/// Bounds the Raft log's size. Whenever it holds more than `limit` bytes of entries: the
/// log behind the newest snapshot is purged down to `limit / 4` bytes, and when more than
/// `limit / 2` lie past that snapshot, Raft is asked for a new one (one at a time: another
/// once it is built, or after [`SNAPSHOT_REQUEST_PATIENCE`]). Ends when Raft stops.
async fn snapshot_by_size<D: Device>(raft: Raft<D>, log: LogStore<D>, limit: Arc<AtomicU64>) {
    let mut tick = tokio::time::interval(SNAPSHOT_SIZE_CHECK_INTERVAL);
    let mut asked: Option<(u64, tokio::time::Instant)> = None;
    loop {
        tick.tick().await;
        let limit = limit.load(Ordering::Relaxed);
        if log.held_bytes() < limit {
            continue;
        }
        let metrics = metrics_of(&raft);
        let snapshot = metrics.snapshot.map(|id| id.index);
        let purged = metrics.purged.map(|id| id.index);
        if let Some(upto) = snapshot.and_then(|s| log.purge_point(s, limit / 4)) {
            if Some(upto) > purged && raft.trigger().purge_log(upto).await.is_err() {
                return;
            }
        }
        let Some(applied) = metrics.last_applied.map(|id| id.index) else {
            continue;
        };
        let waiting = asked.is_some_and(|(at, when)| {
            snapshot < Some(at) && when.elapsed() < SNAPSHOT_REQUEST_PATIENCE
        });
        if Some(applied) > snapshot && !waiting && log.bytes_after(snapshot) > limit / 2 {
            log::debug!(
                "the Raft log holds {} bytes: a snapshot up to entry {applied}",
                log.held_bytes()
            );
            asked = Some((applied, tokio::time::Instant::now()));
            if raft.trigger().snapshot().await.is_err() {
                return;
            }
        }
    }
}
