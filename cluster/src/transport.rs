//! An in-process transport ([`MemoryRouter`]): nodes of one process call each other's Raft
//! directly, with links that can be cut (a partition, one way or both), nodes that can be
//! taken away (a crash), and, from a seeded generator, messages lost on the way, replies
//! lost on the way back (the sender cannot tell whether its message took effect), and
//! delays (which reorder messages). Tests and the cluster simulation use it; real nodes
//! talk over authenticated TCP.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use smlog::io::Device;

use crate::raft::Snapshot;
use crate::raft::{
    AppendEntriesRequest, AppendEntriesResponse, NodeId, NodeInfo, OptionalSend, RPCError,
    RPCOption, Raft, RaftNetworkFactory, RaftNetworkV2, ReplicationClosed, SnapshotResponse,
    StreamingError, TypeConfig, Unreachable, Vote, VoteRequest, VoteResponse,
};
use crate::snapshot::{SnapshotFile, SnapshotInbox, SNAPSHOT_CHUNK_BYTES};

/// The nodes of one process and the links between them. Clones share them.
pub struct MemoryRouter<D: Device> {
    shared: Arc<Mutex<Routes<D>>>,
}

impl<D: Device> Clone for MemoryRouter<D> {
    fn clone(&self) -> Self {
        MemoryRouter {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<D: Device> std::fmt::Debug for MemoryRouter<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let routes = self.lock();
        f.debug_struct("MemoryRouter")
            .field("nodes", &routes.nodes.keys().collect::<Vec<_>>())
            .field("cut", &routes.cut)
            .finish()
    }
}

/// A node as the router reaches it: its Raft, and where it receives snapshots.
struct Peer<D: Device> {
    raft: Raft<D>,
    inbox: SnapshotInbox,
}

impl<D: Device> Clone for Peer<D> {
    fn clone(&self) -> Self {
        Peer {
            raft: self.raft.clone(),
            inbox: self.inbox.clone(),
        }
    }
}

struct Routes<D: Device> {
    nodes: BTreeMap<NodeId, Peer<D>>,
    /// Links that drop every message: (from, to).
    cut: BTreeSet<(NodeId, NodeId)>,
    faults: LinkFaults,
    rng: ChaCha8Rng,
}

/// What every link does to messages, at random.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinkFaults {
    /// Percent of messages lost before they arrive.
    pub loss_percent: u8,
    /// Percent of replies lost after the message took effect.
    pub reply_loss_percent: u8,
    /// Each message waits up to this long before it arrives (so messages reorder).
    pub delay_max: Duration,
}

/// What the link does to one message.
enum Fate {
    Lost,
    Delivered { delay: Duration, reply_lost: bool },
}

impl<D: Device> Default for MemoryRouter<D> {
    fn default() -> Self {
        MemoryRouter::with_faults(LinkFaults::default(), 0)
    }
}

impl<D: Device> MemoryRouter<D> {
    /// A router whose links lose and delay messages as `faults` says, drawing from a
    /// generator seeded with `seed`.
    pub fn with_faults(faults: LinkFaults, seed: u64) -> MemoryRouter<D> {
        MemoryRouter {
            shared: Arc::new(Mutex::new(Routes {
                nodes: BTreeMap::new(),
                cut: BTreeSet::new(),
                faults,
                rng: ChaCha8Rng::seed_from_u64(seed),
            })),
        }
    }

    /// Changes what the links do to messages from now on.
    pub fn set_faults(&self, faults: LinkFaults) {
        self.lock().faults = faults;
    }

    fn lock(&self) -> MutexGuard<'_, Routes<D>> {
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes node `id` reachable through `raft`, receiving snapshots in `inbox`.
    pub fn add(&self, id: NodeId, raft: Raft<D>, inbox: SnapshotInbox) {
        self.lock().nodes.insert(id, Peer { raft, inbox });
    }

    /// Takes node `id` away (it crashed, or stopped): messages to it fail.
    pub fn remove(&self, id: NodeId) -> Option<Raft<D>> {
        self.lock().nodes.remove(&id).map(|peer| peer.raft)
    }

    /// Cuts the link from `from` to `to` (one way).
    pub fn cut(&self, from: NodeId, to: NodeId) {
        self.lock().cut.insert((from, to));
    }

    /// Cuts every link between `group` and the other nodes, both ways.
    pub fn isolate(&self, group: &[NodeId], others: &[NodeId]) {
        let mut routes = self.lock();
        for a in group {
            for b in others {
                routes.cut.insert((*a, *b));
                routes.cut.insert((*b, *a));
            }
        }
    }

    /// Restores every link.
    pub fn heal(&self) {
        self.lock().cut.clear();
    }

    /// The transport node `from` uses to reach the others.
    pub fn network_of(&self, from: NodeId) -> MemoryNetwork<D> {
        MemoryNetwork {
            router: self.clone(),
            from,
        }
    }

    /// The Raft of `to` and what happens to a message from `from`: lost when the link from
    /// `from` to `to` is cut, its reply lost when the link back is.
    fn route(&self, from: NodeId, to: NodeId) -> Result<(Peer<D>, Fate), Unreachable<TypeConfig>> {
        let mut routes = self.lock();
        if routes.cut.contains(&(from, to)) {
            return Err(Unreachable::from_string(format!(
                "the link from node {from} to node {to} is cut"
            )));
        }
        let back_cut = routes.cut.contains(&(to, from));
        let peer = routes
            .nodes
            .get(&to)
            .cloned()
            .ok_or_else(|| Unreachable::from_string(format!("node {to} is down")))?;
        let faults = routes.faults;
        let rng = &mut routes.rng;
        let fate = if rng.gen_range(0..100) < faults.loss_percent {
            Fate::Lost
        } else {
            let delay_max = faults.delay_max.as_micros() as u64;
            Fate::Delivered {
                delay: Duration::from_micros(rng.gen_range(0..=delay_max)),
                reply_lost: back_cut || rng.gen_range(0..100) < faults.reply_loss_percent,
            }
        };
        Ok((peer, fate))
    }
}

/// One node's view of the router: openraft's network factory.
#[derive(Debug)]
pub struct MemoryNetwork<D: Device> {
    router: MemoryRouter<D>,
    from: NodeId,
}

/// A connection from one node to another.
#[derive(Debug)]
pub struct MemoryConnection<D: Device> {
    router: MemoryRouter<D>,
    from: NodeId,
    to: NodeId,
}

impl<D: Device> RaftNetworkFactory<TypeConfig> for MemoryNetwork<D> {
    type Network = MemoryConnection<D>;

    async fn new_client(&mut self, target: NodeId, _node: &NodeInfo) -> MemoryConnection<D> {
        MemoryConnection {
            router: self.router.clone(),
            from: self.from,
            to: target,
        }
    }
}

impl<D: Device> MemoryConnection<D> {
    /// Delivers one message through the link: `call` runs on the target unless the
    /// message is lost; its answer comes back unless the reply is lost.
    async fn deliver<T, E, F, Fut>(&self, call: F) -> Result<T, RPCError>
    where
        F: FnOnce(Peer<D>) -> Fut,
        Fut: std::future::Future<Output = Result<T, E>>,
        E: std::error::Error + 'static,
    {
        let (peer, fate) = self.router.route(self.from, self.to)?;
        let (delay, reply_lost) = match fate {
            Fate::Lost => {
                return Err(Unreachable::from_string("the message was lost").into());
            }
            Fate::Delivered { delay, reply_lost } => (delay, reply_lost),
        };
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let answer = call(peer).await;
        if reply_lost {
            return Err(Unreachable::from_string("the reply was lost").into());
        }
        answer.map_err(|e| RPCError::Unreachable(Unreachable::new(&e)))
    }
}

impl<D: Device> RaftNetworkV2<TypeConfig> for MemoryConnection<D> {
    type SnapshotData = SnapshotFile;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse, RPCError> {
        self.deliver(|peer| async move { peer.raft.append_entries(rpc).await })
            .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest,
        _option: RPCOption,
    ) -> Result<VoteResponse, RPCError> {
        self.deliver(|peer| async move { peer.raft.vote(rpc).await })
            .await
    }

    /// The snapshot file is copied into the target's inbox, then installed there: one
    /// message, lost or delayed as a whole.
    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot<SnapshotFile>,
        _cancel: impl std::future::Future<Output = ReplicationClosed> + OptionalSend + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse, StreamingError> {
        let Snapshot { meta, snapshot } = snapshot;
        let snapshot = Arc::new(snapshot);
        let answer = self
            .deliver(|peer| async move {
                let received = tokio::task::spawn_blocking(move || copy(&snapshot, &peer.inbox))
                    .await
                    .map_err(std::io::Error::other)?
                    .map_err(std::io::Error::other)?;
                let snapshot = Snapshot {
                    meta,
                    snapshot: received,
                };
                peer.raft
                    .install_full_snapshot(vote, snapshot)
                    .await
                    .map_err(std::io::Error::other)
            })
            .await;
        answer.map_err(|e| match e {
            RPCError::Unreachable(e) => StreamingError::Unreachable(e),
            other => StreamingError::Unreachable(Unreachable::new(&other)),
        })
    }
}

/// Copies `snapshot` into a new file of `inbox`.
fn copy(
    snapshot: &SnapshotFile,
    inbox: &SnapshotInbox,
) -> Result<SnapshotFile, crate::snapshot::SnapshotError> {
    let mut incoming = inbox.receive(snapshot.len())?;
    let mut buf = vec![0u8; SNAPSHOT_CHUNK_BYTES];
    while incoming.written() < snapshot.len() {
        let n = (snapshot.len() - incoming.written()).min(SNAPSHOT_CHUNK_BYTES as u64) as usize;
        snapshot.read_at(incoming.written(), &mut buf[..n])?;
        incoming.write(&buf[..n])?;
    }
    incoming.finish()
}
