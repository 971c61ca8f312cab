//! Request keys: what became of a file server's recent requests, so a retransmission
//! is answered exactly once.

use serde::{Deserialize, Serialize};

use super::{cautious, Ino};

/// A file server's name for one request: a client and its request number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RequestKey {
    /// The client.
    pub client_id: u64,
    /// The client's request number.
    pub request_id: u64,
}

/// The entry of a replicated log (Raft's term and index) a transaction applies, when the
/// engine is the state machine of a replica: the engine remembers the newest one whose
/// outcome it holds ([`FsMeta::applied_entry`](super::FsMeta::applied_entry)), so after a
/// crash the replica knows exactly which entries to apply again.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct EntryId {
    /// The term of the leader that wrote the entry.
    pub term: u64,
    /// The entry's index in the replicated log.
    pub index: u64,
}

/// What a committed transaction returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TxnResult {
    /// Nothing beyond success.
    Done,
    /// The inode it created.
    Ino(Ino),
    /// The bytes it wrote.
    Bytes(u64),
}

/// What became of a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Outcome {
    /// It committed, with this result.
    Committed(TxnResult),
    /// It was rolled back; nothing of it is in the store.
    RolledBack {
        /// The errno the request failed with (0 when recovery rolled it back).
        errno: i32,
    },
}

/// The request keys of the last transactions, oldest first, at most a configured number.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestTable {
    #[serde(deserialize_with = "cautious::hash_map")]
    outcomes: imbl::HashMap<RequestKey, Outcome>,
    #[serde(deserialize_with = "cautious::vector")]
    order: imbl::Vector<RequestKey>,
}

impl RequestTable {
    /// Records what became of `key`, forgetting the oldest keys past `keys_max`.
    pub fn record(&mut self, key: RequestKey, outcome: Outcome, keys_max: usize) {
        if self.outcomes.insert(key, outcome).is_none() {
            self.order.push_back(key);
        }
        while self.order.len() > keys_max {
            if let Some(old) = self.order.pop_front() {
                self.outcomes.remove(&old);
            }
        }
    }

    /// What became of `key`, if it is remembered.
    pub fn get(&self, key: &RequestKey) -> Option<Outcome> {
        self.outcomes.get(key).copied()
    }

    /// How many keys are remembered.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Whether no key is remembered.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}
