//! # smlog-cluster: a file-system volume replicated by Raft
//!
//! A volume is one smlog file system replicated by one Raft group. Consensus (election,
//! membership, replication) is [openraft]'s, pinned exactly and wrapped in one module
//! ([`raft`]); smlog provides the two halves openraft leaves to its user:
//!
//! - **the Raft log** ([`log_store::LogStore`]): smlog's own group-committed log, one per
//!   group, with entries, votes, truncations and purges as records in one ordered stream;
//! - **the state machine**: the smlog engine, applying each entry's [`command::Command`]
//!   with the leader's inode numbers, time and request key, and remembering the newest
//!   entry it applied ([`smlog::Engine::applied_entry`]) so a crash costs no entry and
//!   applies none twice.
//!
//! A [`Node`] joins the two under openraft on a network of the caller's choosing; the
//! in-process one ([`MemoryRouter`]) serves tests and the simulation.
//!
//! Status: the log storage passes openraft's storage suite on the io_uring and the
//! simulated device; three nodes in one process replicate a volume through crashes and a
//! failover. Not built yet: snapshots (so the Raft log is never purged), the TCP network
//! with mutual authentication, the node process and `smlog cluster` commands, forwarding
//! of writes to the leader, the deterministic cluster simulation.

pub mod command;
pub mod log_store;
pub mod node;
pub mod raft;
pub mod state_machine;
pub mod transport;

pub use command::{Command, FileOp, Reply};
pub use log_store::LogStore;
pub use node::{Node, WriteError};
pub use state_machine::VolumeMachine;
pub use transport::MemoryRouter;
