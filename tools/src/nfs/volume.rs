//! What `smlog nfs` serves: one engine ([`Local`]) or a cluster node's replicated volume
//! ([`Replicated`]), behind one [`Volume`] trait. Reads come from an engine either way (the
//! node's own, with every change it acknowledged applied); changes go through the volume,
//! each under the request key the server derived from the call.

use std::sync::Arc;

use smlog::io::Device;
use smlog::{Durability, Engine, FsError, Ino, RequestKey, TxnOptions, TxnResult};
use smlog_cluster::command::FileOp;
use smlog_cluster::served::{ChangeError, ServedVolume};
use smlog_cluster::state_machine::apply_op;

/// Why a change was not made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Refused (or failed) with this errno: the reply says so.
    Errno(i32),
    /// Nobody knows whether it took effect (no leader answered in time): no reply is
    /// sent, so the client sends the call again under the same xid, and that resend gets
    /// the first attempt's outcome from the request table.
    Unknown,
}

impl From<FsError> for Failure {
    fn from(e: FsError) -> Failure {
        if !e.is_refusal() {
            log::warn!("smlog nfs: {e}");
        }
        Failure::Errno(e.errno())
    }
}

impl From<ChangeError> for Failure {
    fn from(e: ChangeError) -> Failure {
        match e {
            ChangeError::Refused(errno) => Failure::Errno(errno),
            ChangeError::Local(e) => e.into(),
            ChangeError::Unavailable(_) => {
                log::warn!("smlog nfs: {e}");
                Failure::Unknown
            }
            // This node will answer nothing any more: an error now, rather than a client
            // hanging on resends it never gets answered.
            ChangeError::Stopped(_) => {
                log::warn!("smlog nfs: {e}");
                Failure::Errno(libc::EIO)
            }
        }
    }
}

/// What a change gives back.
pub type Changed<T> = Result<T, Failure>;

/// A volume served over NFS.
pub trait Volume: Send + Sync + 'static {
    /// The engine's device.
    type Device: Device;
    /// The engine reads come from now: take it again for each call (a node installing a
    /// snapshot replaces its engine).
    fn engine(&self) -> Arc<Engine<Self::Device>>;
    /// The volume's id in file handles and `fsid`: the same on every server of the volume,
    /// so a handle from one is good on another.
    fn id(&self) -> u64;
    /// Whether every change is durable once it returns, whatever durability it asked
    /// (a cluster's are, on a quorum): then every write is FILE_SYNC and COMMIT has
    /// nothing to do.
    fn changes_are_durable(&self) -> bool;
    /// Makes `op` under request `key` (`None` for an idempotent one), durable before it
    /// returns when `durability` asks.
    fn change(
        &self,
        op: FileOp,
        key: Option<RequestKey>,
        durability: Durability,
    ) -> Changed<TxnResult>;
    /// Writes `data` at `offset` of `ino` (a write is idempotent: no key); the bytes
    /// written, fewer than asked only when a failure stopped it midway.
    fn write(&self, ino: Ino, offset: u64, data: &[u8], durability: Durability) -> Changed<u64>;
    /// Makes every change acknowledged before it durable.
    fn sync(&self) -> Changed<()>;
}

/// One engine, changed directly.
#[derive(Debug)]
pub struct Local<D: Device> {
    engine: Arc<Engine<D>>,
}

impl<D: Device> Local<D> {
    /// Serves `engine`.
    pub fn new(engine: Arc<Engine<D>>) -> Local<D> {
        Local { engine }
    }
}

impl<D: Device + 'static> Volume for Local<D> {
    type Device = D;

    fn engine(&self) -> Arc<Engine<D>> {
        Arc::clone(&self.engine)
    }

    fn id(&self) -> u64 {
        self.engine.volume_id()
    }

    fn changes_are_durable(&self) -> bool {
        false
    }

    fn change(
        &self,
        op: FileOp,
        key: Option<RequestKey>,
        durability: Durability,
    ) -> Changed<TxnResult> {
        let options = TxnOptions {
            durability,
            key,
            ..TxnOptions::default()
        };
        Ok(apply_op(&self.engine, &op, options)?)
    }

    fn write(&self, ino: Ino, offset: u64, data: &[u8], durability: Durability) -> Changed<u64> {
        Ok(self.engine.write(ino, offset, data, durability)?)
    }

    fn sync(&self) -> Changed<()> {
        Ok(self.engine.sync()?)
    }
}

/// A cluster node's replicated volume: reads from the node's engine, changes through
/// Raft (forwarded to the leader when this node does not lead), each answered once it is
/// durable on a quorum and applied here. The volume's id is the cluster's, so every node
/// hands out the same handles (inode numbers are the same on every node: each applies the
/// same log).
pub struct Replicated<D: Device> {
    served: Arc<ServedVolume<D>>,
    runtime: tokio::runtime::Handle,
    id: u64,
}

impl<D: Device> std::fmt::Debug for Replicated<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replicated")
            .field("served", &self.served)
            .field("id", &format_args!("{:016x}", self.id))
            .finish_non_exhaustive()
    }
}

impl<D: Device> Replicated<D> {
    /// Serves `served` as volume `id` (the cluster's id), waiting for its changes on
    /// `runtime` from the blocking threads calls run on.
    pub fn new(
        served: Arc<ServedVolume<D>>,
        runtime: tokio::runtime::Handle,
        id: u64,
    ) -> Replicated<D> {
        Replicated {
            served,
            runtime,
            id,
        }
    }
}

impl<D: Device + 'static> Volume for Replicated<D> {
    type Device = D;

    fn engine(&self) -> Arc<Engine<D>> {
        self.served.engine()
    }

    fn id(&self) -> u64 {
        self.id
    }

    fn changes_are_durable(&self) -> bool {
        true
    }

    fn change(
        &self,
        op: FileOp,
        key: Option<RequestKey>,
        _durability: Durability,
    ) -> Changed<TxnResult> {
        let changed = match key {
            Some(key) => self.runtime.block_on(self.served.change_keyed(op, key)),
            None => self.runtime.block_on(self.served.change(op)),
        };
        Ok(changed?)
    }

    fn write(&self, ino: Ino, offset: u64, data: &[u8], _durability: Durability) -> Changed<u64> {
        Ok(self
            .runtime
            .block_on(self.served.write(ino, offset, data))?)
    }

    fn sync(&self) -> Changed<()> {
        // Every change returned once durable on a quorum's Raft logs.
        Ok(())
    }
}
