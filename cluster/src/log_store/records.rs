//! The Raft log's records in smlog's log (docs/FORMAT.md, "The Raft log"): one record per
//! entry, and records for the vote, the committed index, a truncation and a purge. Read
//! back in LSN order they rebuild the log: an entry adds itself, a truncation removes the
//! entries after its log id; the last vote and committed index seen hold. A purge is a
//! state record (vote, committed and the purge marker together), made durable before the
//! segments holding the purged entries, and the earlier votes, are released.
//!
//! Payloads are postcard, like the engine's; the record kind names the variant, and a
//! payload of another variant is refused.

use serde::{Deserialize, Serialize};

use crate::command::Command;

/// Record kinds (the engine's file transactions use 1-4).
pub mod kind {
    /// An entry.
    pub const ENTRY: u16 = 16;
    /// The vote.
    pub const VOTE: u16 = 17;
    /// The committed log id.
    pub const COMMITTED: u16 = 18;
    /// Entries after a log id are gone.
    pub const TRUNCATE: u16 = 19;
    /// Vote, committed and purge marker together (entries up to the marker are gone).
    pub const STATE: u16 = 20;
}

/// A log id: term and index.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct LogIdRecord {
    /// The term of the leader that wrote the entry.
    pub term: u64,
    /// The entry's index.
    pub index: u64,
}

/// A vote.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VoteRecord {
    /// Its term.
    pub term: u64,
    /// The node voted for.
    pub node_id: u64,
    /// Granted by a quorum (the node is leader of the term).
    pub committed: bool,
}

/// A membership: the voter sets (two while joint) and every node's address.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MembershipRecord {
    /// Voter sets, each ascending.
    pub configs: Vec<Vec<u64>>,
    /// Every node (voters and learners), ascending by id: id, address, and the incarnation
    /// of its directory the cluster added (0: not checked, an in-process node).
    pub nodes: Vec<(u64, String, u64)>,
}

/// What an entry carries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PayloadRecord {
    /// Nothing (a new leader's first entry).
    Blank,
    /// A file operation.
    Normal(Command),
    /// A membership change.
    Membership(MembershipRecord),
}

/// An entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryRecord {
    /// Its log id.
    pub log_id: LogIdRecord,
    /// What it carries.
    pub payload: PayloadRecord,
}

/// Vote, committed log id and purge marker at once.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateRecord {
    /// The vote.
    pub vote: Option<VoteRecord>,
    /// The committed log id.
    pub committed: Option<LogIdRecord>,
    /// The last purged log id.
    pub purged: Option<LogIdRecord>,
}

/// A record of the Raft log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RaftRecord {
    /// An entry.
    Entry(EntryRecord),
    /// The vote.
    Vote(VoteRecord),
    /// The committed log id.
    Committed(Option<LogIdRecord>),
    /// Every entry after this log id (all, for `None`) is gone.
    TruncateAfter(Option<LogIdRecord>),
    /// Vote, committed log id and purge marker: every entry up to the marker is gone.
    State(StateRecord),
}

/// A record that cannot be what it claims.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("Raft log record of kind {kind}: {why}")]
pub struct RecordError {
    /// The record kind.
    pub kind: u16,
    /// What is wrong.
    pub why: String,
}

impl RaftRecord {
    /// The log record kind of this payload.
    pub fn kind(&self) -> u16 {
        match self {
            RaftRecord::Entry(_) => kind::ENTRY,
            RaftRecord::Vote(_) => kind::VOTE,
            RaftRecord::Committed(_) => kind::COMMITTED,
            RaftRecord::TruncateAfter(_) => kind::TRUNCATE,
            RaftRecord::State(_) => kind::STATE,
        }
    }

    /// Whether `kind` is a Raft log record's.
    pub fn is_raft_kind(kind: u16) -> bool {
        (kind::ENTRY..=kind::STATE).contains(&kind)
    }

    /// Encodes the payload.
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_stdvec(self).expect("encoding into a Vec cannot fail")
    }

    /// Decodes the payload of a record of `kind`. Every length in it is bounded by the
    /// payload's own (postcard refuses a count past the bytes left).
    pub fn decode(kind: u16, payload: &[u8]) -> Result<RaftRecord, RecordError> {
        let record: RaftRecord = postcard::from_bytes(payload).map_err(|e| RecordError {
            kind,
            why: format!("undecodable: {e}"),
        })?;
        if record.kind() != kind {
            return Err(RecordError {
                kind,
                why: format!("holds a payload of kind {}", record.kind()),
            });
        }
        Ok(record)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_a_kind_mismatch_or_garbage_is_refused() {
        let record = RaftRecord::Vote(VoteRecord {
            term: 3,
            node_id: 2,
            committed: true,
        });
        let bytes = record.encode();
        assert_eq!(RaftRecord::decode(kind::VOTE, &bytes).unwrap(), record);
        assert!(RaftRecord::decode(kind::ENTRY, &bytes).is_err());
        assert!(RaftRecord::decode(kind::VOTE, &bytes[..2]).is_err());
        // A count far past the bytes left fails to decode, never allocates the count.
        let huge = [0u8, 0xff, 0xff, 0xff, 0xff, 0x0f];
        assert!(RaftRecord::decode(kind::ENTRY, &huge).is_err());
        assert!(RaftRecord::is_raft_kind(kind::STATE));
        assert!(!RaftRecord::is_raft_kind(4));
    }
}
