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
//! Status: the log storage passes openraft's storage suite on the io_uring and the
//! simulated device; the engine state machine, the network, the node process and the
//! `smlog cluster` commands come next (see the project's issue on the cluster).

pub mod command;
pub mod log_store;
pub mod raft;

pub use command::{Command, FileOp, Reply};
pub use log_store::LogStore;
