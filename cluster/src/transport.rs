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
    AppendEntriesRequest, AppendEntriesResponse, BasicNode, NodeId, OptionalSend, RPCError,
    RPCOption, Raft, RaftNetworkFactory, RaftNetworkV2, ReplicationClosed, SnapshotResponse,
    StreamingError, TypeConfig, Unreachable, Vote, VoteRequest, VoteResponse,
};

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

struct Routes<D: Device> {
    nodes: BTreeMap<NodeId, Raft<D>>,
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

    /// Makes node `id` reachable through `raft`.
    pub fn add(&self, id: NodeId, raft: Raft<D>) {
        self.lock().nodes.insert(id, raft);
    }

    /// Takes node `id` away (it crashed, or stopped): messages to it fail.
    pub fn remove(&self, id: NodeId) -> Option<Raft<D>> {
        self.lock().nodes.remove(&id)
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
    fn route(&self, from: NodeId, to: NodeId) -> Result<(Raft<D>, Fate), Unreachable<TypeConfig>> {
        let mut routes = self.lock();
        if routes.cut.contains(&(from, to)) {
            return Err(Unreachable::from_string(format!(
                "the link from node {from} to node {to} is cut"
            )));
        }
        let back_cut = routes.cut.contains(&(to, from));
        let raft = routes
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
        Ok((raft, fate))
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

    async fn new_client(&mut self, target: NodeId, _node: &BasicNode) -> MemoryConnection<D> {
        MemoryConnection {
            router: self.router.clone(),
            from: self.from,
            to: target,
        }
    }
}

impl<D: Device> MemoryConnection<D> {
    /// Delivers one message through the link: `call` runs on the target's Raft unless the
    /// message is lost; its answer comes back unless the reply is lost.
    async fn deliver<T, E, F, Fut>(&self, call: F) -> Result<T, RPCError>
    where
        F: FnOnce(Raft<D>) -> Fut,
        Fut: std::future::Future<Output = Result<T, E>>,
        E: std::error::Error + 'static,
    {
        let (raft, fate) = self.router.route(self.from, self.to)?;
        let (delay, reply_lost) = match fate {
            Fate::Lost => {
                return Err(Unreachable::from_string("the message was lost").into());
            }
            Fate::Delivered { delay, reply_lost } => (delay, reply_lost),
        };
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let answer = call(raft).await;
        if reply_lost {
            return Err(Unreachable::from_string("the reply was lost").into());
        }
        answer.map_err(|e| RPCError::Unreachable(Unreachable::new(&e)))
    }
}

impl<D: Device> RaftNetworkV2<TypeConfig> for MemoryConnection<D> {
    type SnapshotData = Vec<u8>;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse, RPCError> {
        self.deliver(|raft| async move { raft.append_entries(rpc).await })
            .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest,
        _option: RPCOption,
    ) -> Result<VoteResponse, RPCError> {
        self.deliver(|raft| async move { raft.vote(rpc).await })
            .await
    }

    async fn full_snapshot(
        &mut self,
        _vote: Vote,
        _snapshot: Snapshot<Vec<u8>>,
        _cancel: impl std::future::Future<Output = ReplicationClosed> + OptionalSend + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse, StreamingError> {
        Err(crate::state_machine::no_snapshot_transfer())
    }
}
