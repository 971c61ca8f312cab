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
//! A [`Node`] joins the two under openraft on a network of the caller's choosing: the
//! in-process one ([`MemoryRouter`]) for tests and the simulation, or TCP ([`tcp`]), where
//! every connection first proves both ends hold the cluster key ([`auth`]) and every
//! message is a bounded frame of smlog's own encoding ([`wire`]).
//!
//! Status: the log storage passes openraft's storage suite on the io_uring and the
//! simulated device; nodes replicate a volume through crashes and failovers, in one process
//! and over TCP, run by `smlog cluster` ([`node_dir`], [`server`]); the cluster simulation
//! (feature `sim`) checks seeded histories for linearizability; a node behind the purged
//! log installs a snapshot of the leader's volume ([`snapshot`]); a file server on a node
//! (the FUSE mount, an NFS front end) serves the volume through [`served`], with
//! read-your-writes and the node's applied changes to invalidate its caches. Not built
//! yet: fully deterministic replay of a simulation seed.

pub mod auth;
pub mod command;
pub mod log_store;
pub mod node;
pub mod node_dir;
pub mod raft;
pub mod served;
pub mod server;
#[cfg(feature = "sim")]
pub mod sim;
pub mod snapshot;
pub mod state_machine;
pub mod tcp;
pub mod transport;
pub mod wire;

pub use command::{Command, FileOp, Reply};
pub use log_store::LogStore;
pub use node::{Node, WriteError};
pub use state_machine::VolumeMachine;
pub use transport::MemoryRouter;
