//! What nodes (and the `smlog cluster` commands) say to each other over TCP
//! (docs/FORMAT.md, "The cluster's wire protocol").
//!
//! A connection starts with a handshake that proves both ends hold the cluster key
//! ([`crate::auth`]); nothing else is read before it. Then the dialling side sends
//! [`Request`]s and reads one [`Response`] each. Every message is a frame: its length (u32
//! LE, bounded before anything is allocated: [`HANDSHAKE_BYTES_MAX`] before
//! authentication, [`FRAME_BYTES_MAX`] after), then a postcard payload. Raft's messages
//! travel as smlog's own records ([`crate::log_store::records`]), converted in
//! [`crate::raft`], never in openraft's serialization.

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::command::{Command, Reply};
use crate::log_store::records::{EntryRecord, LogIdRecord, VoteRecord};
use crate::snapshot::SnapshotMetaRecord;

/// The protocol version a [`crate::auth::Hello`] names; another is refused.
pub const WIRE_VERSION: u32 = 4;
/// The largest frame after authentication (32 MiB: a batch of at most
/// [`crate::node::ENTRIES_PER_APPEND_MAX`] entries of at most 64 KiB of data each, with room).
pub const FRAME_BYTES_MAX: u32 = 32 << 20;
/// The largest frame of the handshake.
pub const HANDSHAKE_BYTES_MAX: u32 = 256;

/// A request to a node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Raft replication (and heartbeat).
    Append {
        /// The leader's vote.
        vote: VoteRecord,
        /// The entry before `entries`.
        prev: Option<LogIdRecord>,
        /// Entries to append.
        entries: Vec<EntryRecord>,
        /// The leader's committed log id.
        commit: Option<LogIdRecord>,
    },
    /// A Raft election.
    Vote {
        /// The candidate's vote.
        vote: VoteRecord,
        /// The candidate's last log id.
        last: Option<LogIdRecord>,
    },
    /// A file operation to replicate (the node must be the leader).
    Write(Command),
    /// The node's view of the cluster.
    Status,
    /// Adds a node as a learner and waits until it has caught up (the node must be the
    /// leader).
    AddLearner {
        /// Its id.
        id: u64,
        /// Its address.
        addr: String,
    },
    /// Makes `voters` the voters (the node must be the leader); other members stay
    /// learners when `keep_learners`, else they leave.
    ChangeMembership {
        /// The new voters.
        voters: Vec<u64>,
        /// Whether nodes that stop being voters stay as learners.
        keep_learners: bool,
    },
    /// A piece of a snapshot file, sent in order from offset 0 on one connection; the
    /// last one (ending at `len`) makes the node install it.
    Snapshot {
        /// The leader's vote.
        vote: VoteRecord,
        /// The snapshot's metadata (the same in every piece).
        meta: SnapshotMetaRecord,
        /// The file's length (the same in every piece).
        len: u64,
        /// Where this piece starts.
        offset: u64,
        /// The bytes (whole 4 KiB blocks, at most 1 MiB).
        bytes: Vec<u8>,
    },
}

/// How a follower took an append.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AppendOutcome {
    /// Every entry is appended.
    Success,
    /// Appended up to this log id.
    PartialSuccess(Option<LogIdRecord>),
    /// `prev` does not match the follower's log.
    Conflict,
    /// The follower saw a higher vote.
    HigherVote(VoteRecord),
}

/// A write applied on the leader: its entry's index (a node serving a file server waits
/// until it applied that index itself before answering: read-your-writes) and what
/// applying it gave.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Written {
    /// The entry's index in the Raft log.
    pub index: u64,
    /// What applying it gave (the same on every node).
    pub reply: Reply,
}

/// Why a write was refused.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WriteRefusal {
    /// The node is not the leader; the leader, when it knows one, with its address.
    NotLeader {
        /// The leader's id.
        leader: Option<u64>,
        /// The leader's address.
        addr: Option<String>,
    },
    /// Leadership changed before the write committed: retry under its request key.
    Unknown,
    /// The node stopped.
    Stopped(String),
}

/// A member as `status` reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Its id.
    pub id: u64,
    /// Its address.
    pub addr: String,
    /// A voter (else a learner).
    pub voter: bool,
    /// On the leader: the last log index known replicated to it.
    pub matched: Option<u64>,
}

/// A node's view of the cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusReport {
    /// The node.
    pub id: u64,
    /// Leader, Follower, Candidate, Learner or Shutdown.
    pub state: String,
    /// Its current term.
    pub term: u64,
    /// The leader it knows of.
    pub leader: Option<u64>,
    /// Its last log index.
    pub last_log_index: Option<u64>,
    /// The committed index it knows.
    pub committed: Option<u64>,
    /// The last index it applied.
    pub applied: Option<u64>,
    /// The members, with each one's replication progress when this node leads.
    pub members: Vec<Member>,
    /// Records this node's Raft log wrote since it started (entries, votes, ...).
    pub log_records: u64,
    /// Durable writes of its Raft log since it started (each a group commit).
    pub log_batches: u64,
}

/// A node's answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// To [`Request::Append`].
    Append(AppendOutcome),
    /// To [`Request::Vote`].
    Vote {
        /// The voter's vote.
        vote: VoteRecord,
        /// Whether it granted the candidate's.
        granted: bool,
        /// The voter's last log id.
        last: Option<LogIdRecord>,
    },
    /// To [`Request::Write`].
    Write(Result<Written, WriteRefusal>),
    /// To [`Request::Status`].
    Status(StatusReport),
    /// A membership change is done, or a snapshot's piece is stored.
    Done,
    /// The request failed (the node stopped, a membership change was refused, ...).
    Failed(String),
    /// To the last piece of a [`Request::Snapshot`]: the receiver's vote after installing
    /// it (or refusing it for a higher vote).
    SnapshotInstalled {
        /// The receiver's vote.
        vote: VoteRecord,
    },
}

/// A frame that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The connection failed or closed.
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    /// A length past the bound: the peer is refused before anything is allocated.
    #[error("a frame of {len} bytes, past the bound of {max}")]
    TooLong {
        /// The length the peer sent.
        len: u32,
        /// The bound.
        max: u32,
    },
    /// A payload that does not decode.
    #[error("an undecodable frame: {0}")]
    Decode(String),
}

/// Writes `value` as one frame.
pub async fn write_frame<W, T>(writer: &mut W, value: &T) -> Result<(), FrameError>
where
    W: AsyncWriteExt + Unpin,
    T: Serialize,
{
    let payload = postcard::to_stdvec(value).expect("encoding into a Vec cannot fail");
    let len = u32::try_from(payload.len()).map_err(|_| FrameError::TooLong {
        len: u32::MAX,
        max: FRAME_BYTES_MAX,
    })?;
    let mut frame = Vec::with_capacity(4 + payload.len());
    frame.extend_from_slice(&len.to_le_bytes());
    frame.extend_from_slice(&payload);
    writer.write_all(&frame).await?;
    writer.flush().await?;
    Ok(())
}

/// Reads one frame of at most `max` bytes and decodes it.
pub async fn read_frame<R, T>(reader: &mut R, max: u32) -> Result<T, FrameError>
where
    R: AsyncReadExt + Unpin,
    T: for<'de> Deserialize<'de>,
{
    let mut len = [0u8; 4];
    reader.read_exact(&mut len).await?;
    let len = u32::from_le_bytes(len);
    if len > max {
        return Err(FrameError::TooLong { len, max });
    }
    let mut payload = vec![0u8; len as usize];
    reader.read_exact(&mut payload).await?;
    postcard::from_bytes(&payload).map_err(|e| FrameError::Decode(e.to_string()))
}
