//! An in-process transport ([`MemoryRouter`]): nodes of one process call each other's Raft
//! directly, with links that can be cut (a partition, one way or both) and nodes that can
//! be taken away (a crash). Tests and the deterministic cluster simulation use it; real
//! nodes talk over authenticated TCP.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};

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
}

impl<D: Device> Default for MemoryRouter<D> {
    fn default() -> Self {
        MemoryRouter {
            shared: Arc::new(Mutex::new(Routes {
                nodes: BTreeMap::new(),
                cut: BTreeSet::new(),
            })),
        }
    }
}

impl<D: Device> MemoryRouter<D> {
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

    /// The Raft of `to`, when `from` can reach it.
    fn route(&self, from: NodeId, to: NodeId) -> Result<Raft<D>, Unreachable<TypeConfig>> {
        let routes = self.lock();
        if routes.cut.contains(&(from, to)) {
            return Err(Unreachable::from_string(format!(
                "the link from node {from} to node {to} is cut"
            )));
        }
        routes
            .nodes
            .get(&to)
            .cloned()
            .ok_or_else(|| Unreachable::from_string(format!("node {to} is down")))
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
    /// The target's Raft, if the link works both ways for this call (a reply crosses the
    /// link back).
    fn target(&self) -> Result<Raft<D>, Unreachable<TypeConfig>> {
        let raft = self.router.route(self.from, self.to)?;
        self.router.route(self.to, self.from)?;
        Ok(raft)
    }
}

impl<D: Device> RaftNetworkV2<TypeConfig> for MemoryConnection<D> {
    type SnapshotData = Vec<u8>;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse, RPCError> {
        let raft = self.target()?;
        raft.append_entries(rpc)
            .await
            .map_err(|e| RPCError::Unreachable(Unreachable::new(&e)))
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest,
        _option: RPCOption,
    ) -> Result<VoteResponse, RPCError> {
        let raft = self.target()?;
        raft.vote(rpc)
            .await
            .map_err(|e| RPCError::Unreachable(Unreachable::new(&e)))
    }

    async fn full_snapshot(
        &mut self,
        _vote: Vote,
        _snapshot: Snapshot<Vec<u8>>,
        _cancel: impl std::future::Future<Output = ReplicationClosed> + OptionalSend + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse, StreamingError> {
        Err(StreamingError::Unreachable(Unreachable::from_string(
            "volume snapshots are not built yet",
        )))
    }
}
