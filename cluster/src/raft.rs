//! The one module that names openraft. openraft is young (pinned exactly in the workspace's
//! `Cargo.toml`): its types are declared, aliased and converted here, so a bump touches
//! this file, and nothing of openraft's own serialization reaches the disk or the wire:
//! what smlog stores is its own records ([`crate::log_store::records`]), converted here.
//!
//! Raft flavour: standard Raft leader ids (at most one leader per term; a log id is a term
//! and an index), node ids `u64`, a node's address a string.

use std::collections::{BTreeMap, BTreeSet};

use crate::command::{Command, Reply};
use crate::log_store::records::{
    EntryRecord, LogIdRecord, MembershipRecord, PayloadRecord, VoteRecord,
};

pub use openraft::entry::RaftEntry;
pub use openraft::errors::ReplicationClosed;
pub use openraft::network::{NetSnapshot, RPCOption, RaftNetworkFactory, RaftNetworkV2};
pub use openraft::storage::{
    EntryResponder, IOFlushed, LogState, RaftLogReader, RaftLogStorage, RaftSnapshotBuilder,
    RaftStateMachine,
};
pub use openraft::type_config::TypeConfigExt;
pub use openraft::{Config, OptionalSend, ServerState, SnapshotPolicy};

/// A member as Raft's membership holds it: the address it listens on, and the incarnation
/// of its directory the cluster added (`smlog cluster init` draws one at random; a
/// directory made anew has another, and its node is refused). 0 is not checked (nodes in
/// one process).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NodeInfo {
    /// Where it listens.
    pub addr: String,
    /// Its directory's incarnation (0: not checked).
    pub incarnation: u64,
}

impl NodeInfo {
    /// A node at `addr` whose incarnation is not checked.
    pub fn new(addr: impl Into<String>) -> NodeInfo {
        NodeInfo {
            addr: addr.into(),
            incarnation: 0,
        }
    }
}

/// openraft's storage test suite ([`testing::log::Suite`]), which smlog's Raft storage
/// passes on every device.
pub use openraft::testing;

openraft::declare_raft_types!(
    /// smlog's Raft types: entries carry [`Command`]s, applying one gives a [`Reply`].
    pub TypeConfig:
        D = Command,
        R = Reply,
        NodeId = u64,
        Node = NodeInfo,
        Term = u64,
        LeaderId = openraft::impls::leader_id_std::LeaderId<u64, u64>,
);

/// A node's id.
pub type NodeId = u64;
/// A Raft log entry.
pub type Entry = <TypeConfig as openraft::RaftTypeConfig>::Entry;
/// A Raft log id (term and index).
pub type LogId = openraft::type_config::alias::LogIdOf<TypeConfig>;
/// A vote (term, candidate, committed).
pub type Vote = openraft::type_config::alias::VoteOf<TypeConfig>;
/// A cluster membership (voters and learners with their addresses).
pub type Membership = openraft::Membership<NodeId, NodeInfo>;
/// A membership and the log id of the entry that set it.
pub type StoredMembership = openraft::type_config::alias::StoredMembershipOf<TypeConfig>;
/// A snapshot's metadata.
pub type SnapshotMeta = openraft::type_config::alias::SnapshotMetaOf<TypeConfig>;
/// A snapshot: its metadata and its data.
pub type Snapshot<Data> = openraft::type_config::alias::SnapshotOf<TypeConfig, Data>;
/// A storage failure as openraft reports it.
pub type StorageError = openraft::StorageError<TypeConfig>;
/// A Raft node whose state machine is a volume on device type `D`.
pub type Raft<D> = openraft::Raft<TypeConfig, crate::state_machine::VolumeMachine<D>>;
/// Replication request and reply.
pub type AppendEntriesRequest = openraft::raft::AppendEntriesRequest<TypeConfig>;
/// Replication reply.
pub type AppendEntriesResponse = openraft::raft::AppendEntriesResponse<TypeConfig>;
/// Election request.
pub type VoteRequest = openraft::raft::VoteRequest<TypeConfig>;
/// Election reply.
pub type VoteResponse = openraft::raft::VoteResponse<TypeConfig>;
/// Snapshot installation reply.
pub type SnapshotResponse = openraft::raft::SnapshotResponse<TypeConfig>;
/// A failed call to another node.
pub type RPCError = openraft::errors::RPCError<TypeConfig>;
/// A failed snapshot transfer.
pub type StreamingError = openraft::errors::StreamingError<TypeConfig>;
/// A node that cannot be reached.
pub type Unreachable<C = TypeConfig> = openraft::errors::Unreachable<C>;
/// Why a write was not applied.
pub type ClientWriteError = openraft::errors::ClientWriteError<TypeConfig>;
/// A Raft API failure.
pub type RaftError<E = std::convert::Infallible> = openraft::errors::RaftError<TypeConfig, E>;
/// A node's view of the cluster (leader, term, log and applied indexes, replication).
pub type RaftMetrics = openraft::RaftMetrics<TypeConfig>;
/// An entry's payload.
pub type EntryPayload = openraft::EntryPayload<Command, NodeId, NodeInfo>;

/// What `raft` sees now (leader, term, log and applied indexes, replication).
pub fn metrics_of<D: smlog::io::Device>(raft: &Raft<D>) -> RaftMetrics {
    use openraft::async_runtime::WatchReceiver;
    raft.metrics().borrow_watched().clone()
}

/// An IO failure of the store as openraft's storage error.
pub fn storage_error(error: std::io::Error) -> StorageError {
    StorageError::from_io_error(
        openraft::ErrorSubject::Store,
        openraft::ErrorVerb::Read,
        error,
    )
}

/// A log id as stored.
pub fn log_id_record(log_id: &LogId) -> LogIdRecord {
    LogIdRecord {
        term: log_id.leader_id.term,
        index: log_id.index,
    }
}

/// A stored log id as openraft's.
pub fn log_id_of(record: &LogIdRecord) -> LogId {
    LogId::new_term_index(record.term, record.index)
}

/// A vote as stored.
pub fn vote_record(vote: &Vote) -> VoteRecord {
    VoteRecord {
        term: vote.leader_id.term,
        node_id: vote.leader_id.voted_for,
        committed: vote.committed,
    }
}

/// A stored vote as openraft's.
pub fn vote_of(record: &VoteRecord) -> Vote {
    if record.committed {
        Vote::new_committed(record.term, record.node_id)
    } else {
        Vote::new(record.term, record.node_id)
    }
}

/// A membership as stored.
pub fn membership_record(membership: &Membership) -> MembershipRecord {
    MembershipRecord {
        configs: membership
            .get_joint_config()
            .iter()
            .map(|config| config.iter().copied().collect())
            .collect(),
        nodes: membership
            .nodes()
            .map(|(id, node)| (*id, node.addr.clone(), node.incarnation))
            .collect(),
    }
}

/// A stored membership as openraft's; `None` when it is not a valid membership (a config
/// with no voter, a voter without an address).
pub fn membership_of(record: &MembershipRecord) -> Option<Membership> {
    let configs: Vec<BTreeSet<NodeId>> = record
        .configs
        .iter()
        .map(|config| config.iter().copied().collect())
        .collect();
    let nodes: BTreeMap<NodeId, NodeInfo> = record
        .nodes
        .iter()
        .map(|(id, addr, incarnation)| {
            let node = NodeInfo {
                addr: addr.clone(),
                incarnation: *incarnation,
            };
            (*id, node)
        })
        .collect();
    Membership::new(configs, nodes).ok()
}

/// A snapshot's metadata as stored and sent.
pub fn snapshot_meta_record(meta: &SnapshotMeta) -> crate::snapshot::SnapshotMetaRecord {
    crate::snapshot::SnapshotMetaRecord {
        last_log_id: meta.last_log_id.as_ref().map(log_id_record),
        membership_log_id: meta.last_membership.log_id().as_ref().map(log_id_record),
        membership: membership_record(meta.last_membership.membership()),
    }
}

/// Stored snapshot metadata as openraft's; `None` when its membership is not valid (an
/// empty one is valid only with no log id).
pub fn snapshot_meta_of(record: &crate::snapshot::SnapshotMetaRecord) -> Option<SnapshotMeta> {
    let membership = match &record.membership_log_id {
        None if record.membership.configs.is_empty() && record.membership.nodes.is_empty() => {
            Membership::default()
        }
        _ => membership_of(&record.membership)?,
    };
    Some(SnapshotMeta {
        last_log_id: record.last_log_id.as_ref().map(log_id_of),
        last_membership: StoredMembership::new(
            record.membership_log_id.as_ref().map(log_id_of),
            membership,
        ),
    })
}

/// An entry as stored.
pub fn entry_record(entry: &Entry) -> EntryRecord {
    let payload = match &entry.payload {
        EntryPayload::Blank => PayloadRecord::Blank,
        EntryPayload::Normal(command) => PayloadRecord::Normal(command.clone()),
        EntryPayload::Membership(membership) => {
            PayloadRecord::Membership(membership_record(membership))
        }
    };
    EntryRecord {
        log_id: log_id_record(&entry.log_id),
        payload,
    }
}

/// A stored entry as openraft's; `None` when its membership is not valid.
pub fn entry_of(record: EntryRecord) -> Option<Entry> {
    let payload = match record.payload {
        PayloadRecord::Blank => EntryPayload::Blank,
        PayloadRecord::Normal(command) => EntryPayload::Normal(command),
        PayloadRecord::Membership(membership) => {
            EntryPayload::Membership(membership_of(&membership)?)
        }
    };
    Some(Entry {
        log_id: log_id_of(&record.log_id),
        payload,
    })
}

/// Raft's replication request as sent on the wire.
pub fn append_request_wire(rpc: &AppendEntriesRequest) -> crate::wire::Request {
    crate::wire::Request::Append {
        vote: vote_record(&rpc.vote),
        prev: rpc.prev_log_id.as_ref().map(log_id_record),
        entries: rpc.entries.iter().map(entry_record).collect(),
        commit: rpc.leader_commit.as_ref().map(log_id_record),
    }
}

/// A replication request from the wire; `None` when an entry holds an invalid membership.
pub fn append_request_of(
    vote: &VoteRecord,
    prev: Option<&LogIdRecord>,
    entries: Vec<EntryRecord>,
    commit: Option<&LogIdRecord>,
) -> Option<AppendEntriesRequest> {
    let entries = entries
        .into_iter()
        .map(entry_of)
        .collect::<Option<Vec<Entry>>>()?;
    Some(AppendEntriesRequest {
        vote: vote_of(vote),
        prev_log_id: prev.map(log_id_of),
        entries,
        leader_commit: commit.map(log_id_of),
    })
}

/// A follower's answer to replication, as sent on the wire.
pub fn append_outcome_wire(response: &AppendEntriesResponse) -> crate::wire::AppendOutcome {
    use crate::wire::AppendOutcome;
    match response {
        AppendEntriesResponse::Success => AppendOutcome::Success,
        AppendEntriesResponse::PartialSuccess(matched) => {
            AppendOutcome::PartialSuccess(matched.as_ref().map(log_id_record))
        }
        AppendEntriesResponse::Conflict => AppendOutcome::Conflict,
        AppendEntriesResponse::HigherVote(vote) => AppendOutcome::HigherVote(vote_record(vote)),
    }
}

/// A follower's answer to replication, from the wire.
pub fn append_response_of(outcome: &crate::wire::AppendOutcome) -> AppendEntriesResponse {
    use crate::wire::AppendOutcome;
    match outcome {
        AppendOutcome::Success => AppendEntriesResponse::Success,
        AppendOutcome::PartialSuccess(matched) => {
            AppendEntriesResponse::PartialSuccess(matched.as_ref().map(log_id_of))
        }
        AppendOutcome::Conflict => AppendEntriesResponse::Conflict,
        AppendOutcome::HigherVote(vote) => AppendEntriesResponse::HigherVote(vote_of(vote)),
    }
}

/// An election request as sent on the wire.
pub fn vote_request_wire(rpc: &VoteRequest) -> crate::wire::Request {
    crate::wire::Request::Vote {
        vote: vote_record(&rpc.vote),
        last: rpc.last_log_id.as_ref().map(log_id_record),
    }
}

/// An election request from the wire.
pub fn vote_request_of(vote: &VoteRecord, last: Option<&LogIdRecord>) -> VoteRequest {
    VoteRequest::new(vote_of(vote), last.map(log_id_of))
}

/// An election answer as sent on the wire.
pub fn vote_response_wire(response: &VoteResponse) -> crate::wire::Response {
    crate::wire::Response::Vote {
        vote: vote_record(&response.vote),
        granted: response.vote_granted,
        last: response.last_log_id.as_ref().map(log_id_record),
    }
}

/// An election answer from the wire.
pub fn vote_response_of(
    vote: &VoteRecord,
    granted: bool,
    last: Option<&LogIdRecord>,
) -> VoteResponse {
    VoteResponse::new(vote_of(vote), last.map(log_id_of), granted)
}

/// The node's view of the cluster, for `status`, with its Raft log's counters `log`.
pub fn status_report(
    id: NodeId,
    metrics: &RaftMetrics,
    log: &smlog::log::LogStats,
) -> crate::wire::StatusReport {
    let membership = metrics.membership_config.membership();
    let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
    let members = membership
        .nodes()
        .map(|(id, node)| crate::wire::Member {
            id: *id,
            addr: node.addr.clone(),
            voter: voters.contains(id),
            matched: match &metrics.replication {
                // The leader has what it has.
                Some(_) if *id == metrics.id => metrics.last_log_index,
                Some(replication) => replication.get(id).cloned().flatten().map(|l| l.index),
                None => None,
            },
        })
        .collect();
    crate::wire::StatusReport {
        id,
        state: format!("{:?}", metrics.state),
        term: metrics.current_term,
        leader: metrics.current_leader,
        last_log_index: metrics.last_log_index,
        committed: metrics.cluster_committed.map(|log_id| log_id.index),
        applied: metrics.last_applied.map(|log_id| log_id.index),
        members,
        log_records: log.record_count,
        log_batches: log.batch_count,
    }
}

/// The address of node `id` in `metrics`' membership.
pub fn address_of(metrics: &RaftMetrics, id: NodeId) -> Option<String> {
    metrics
        .membership_config
        .membership()
        .get_node(&id)
        .map(|node| node.addr.clone())
}

/// Whether node `id`, of directory incarnation `incarnation`, may talk to this node: it is
/// a member (voter or learner) in `metrics`' membership, of the incarnation the cluster
/// added, or the membership is empty (a node not yet added hears from any node holding
/// the key).
pub fn admits(
    metrics: &RaftMetrics,
    id: NodeId,
    incarnation: u64,
) -> Result<(), crate::auth::AuthError> {
    let membership = metrics.membership_config.membership();
    if membership.nodes().next().is_none() {
        return Ok(());
    }
    match membership.get_node(&id) {
        None => Err(crate::auth::AuthError::NotMember(id)),
        Some(node) if node.incarnation != 0 && node.incarnation != incarnation => {
            Err(crate::auth::AuthError::OtherIncarnation {
                id,
                seen: incarnation,
                added: node.incarnation,
            })
        }
        Some(_) => Ok(()),
    }
}

/// The incarnation the membership in `metrics` names for node `id` (0: not checked, or not
/// a member).
pub fn incarnation_of(metrics: &RaftMetrics, id: NodeId) -> u64 {
    metrics
        .membership_config
        .membership()
        .get_node(&id)
        .map_or(0, |node| node.incarnation)
}
