//! A replicated volume served by one of its nodes to a file server on that node (the FUSE
//! mount, an NFS or SMB front end): [`ServedVolume`].
//!
//! **Reads** are the node's own engine: what this node has applied. **Changes** are
//! commands replicated through Raft: applied here when this node leads, else forwarded to
//! the leader on a connection this node keeps. Either way the answer waits until *this*
//! node applied the change's entry, so whoever made a change through a node reads it back
//! there at once (read-your-writes), and an acknowledged change is durable on a quorum
//! (there is nothing more for `fsync` to do). Every change carries a request key of this
//! served volume's own: a change whose answer was lost (a leader killed, a connection cut)
//! is sent again under the same key, and the leader that takes the retry answers from the
//! request table if the first attempt committed: one effect, never two.
//!
//! **What others changed** reaches the file server as [`VolumeChange`]s, in apply order,
//! from the node's state machine ([`changes`]): the inodes and names an entry touched, for
//! the file server to invalidate what it (or the kernel on its behalf) caches. The file
//! server handles them on a thread of its own, never in the apply path: a kernel
//! invalidation can wait for a request that is itself waiting for an apply.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use smlog::io::Device;
use smlog::TxnResult;
use smlog::{
    Engine, FallocMode, FileKind, FsError, Ino, NewAttrs, RenameFlags, RequestKey, SetAttrChanges,
    Stat, Time, XattrFlags,
};

use crate::auth::{ClusterKey, Peer};
use crate::command::{Command, FileOp, WRITE_BYTES_MAX};
use crate::node::{Node, WriteError};
use crate::raft::{address_of, EntryPayload};
use crate::state_machine::{MachineEvent, Observer};
use crate::tcp::Link;
use crate::wire::{Request, Response, WriteRefusal, Written};

/// How long a change keeps trying (leaders failing over, connections cut) before its
/// outcome is reported unknown, unless [`ServedVolume::with_change_timeout`] says otherwise.
pub const CHANGE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one attempt (applied here, or forwarded) may take before it is tried again.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
/// The pause before another attempt, while leadership settles.
const RETRY_PAUSE: Duration = Duration::from_millis(50);
/// Connections to the leader kept for forwarding (one per change in flight).
const IDLE_LINKS_MAX: usize = 16;

/// Why a change was not made.
#[derive(Debug, thiserror::Error)]
pub enum ChangeError {
    /// The volume refused it with this errno (on every node alike: it is in the log).
    #[error("refused: errno {0}")]
    Refused(i32),
    /// No leader took it within the change timeout: it may still take effect.
    #[error("no leader took the change within {0:?}; its outcome is unknown")]
    Unavailable(Duration),
    /// The node stopped (a storage failure or a shutdown).
    #[error("the node stopped: {0}")]
    Stopped(String),
    /// Reading the change's result back from this node's engine failed.
    #[error(transparent)]
    Local(#[from] FsError),
}

impl ChangeError {
    /// The errno a file server answers with: the volume's own, else EIO.
    pub fn errno(&self) -> i32 {
        match self {
            ChangeError::Refused(errno) => *errno,
            ChangeError::Local(e) => e.errno(),
            ChangeError::Unavailable(_) | ChangeError::Stopped(_) => {
                FsError::Stopped(String::new()).errno()
            }
        }
    }
}

/// Which of an inode's cached pages an applied change made stale.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pages {
    /// None: only its attributes changed.
    None,
    /// `len` bytes from `offset`.
    Range {
        /// Where.
        offset: u64,
        /// How many.
        len: u64,
    },
    /// Any (a truncation).
    All,
}

/// What one applied change touched.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Touched {
    /// Inodes whose attributes changed, with the pages that did.
    pub inodes: Vec<(Ino, Pages)>,
    /// Names (directory, name) that now lead elsewhere or nowhere.
    pub names: Vec<(Ino, Vec<u8>)>,
}

/// A change this node's volume took, as a file server on the node hears it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VolumeChange {
    /// An entry was applied.
    Applied {
        /// Its index in the Raft log.
        index: u64,
        /// The client of its request key: a served volume skips its own changes (it
        /// answered them with their new state already).
        client_id: Option<u64>,
        /// What it touched.
        touched: Touched,
    },
    /// A snapshot was installed in place of the volume: anything cached may be stale.
    Installed,
}

/// What applying `op` touches.
pub fn touched(op: &FileOp) -> Touched {
    let attrs = |ino: Ino| (ino, Pages::None);
    match op {
        FileOp::Create { parent, name, .. }
        | FileOp::Mkdir { parent, name, .. }
        | FileOp::Symlink { parent, name, .. }
        | FileOp::Mknod { parent, name, .. } => Touched {
            inodes: vec![attrs(*parent)],
            names: vec![(*parent, name.clone())],
        },
        FileOp::Link { ino, parent, name } => Touched {
            inodes: vec![attrs(*ino), attrs(*parent)],
            names: vec![(*parent, name.clone())],
        },
        FileOp::Unlink { parent, name } | FileOp::Rmdir { parent, name } => Touched {
            inodes: vec![attrs(*parent)],
            names: vec![(*parent, name.clone())],
        },
        FileOp::Rename {
            from_parent,
            from_name,
            to_parent,
            to_name,
            ..
        } => {
            let mut inodes = vec![attrs(*from_parent)];
            if to_parent != from_parent {
                inodes.push(attrs(*to_parent));
            }
            Touched {
                inodes,
                names: vec![
                    (*from_parent, from_name.clone()),
                    (*to_parent, to_name.clone()),
                ],
            }
        }
        FileOp::Write { ino, offset, data } => Touched {
            inodes: vec![(
                *ino,
                Pages::Range {
                    offset: *offset,
                    len: data.len() as u64,
                },
            )],
            names: Vec::new(),
        },
        FileOp::Fallocate {
            ino, offset, len, ..
        } => Touched {
            inodes: vec![(
                *ino,
                Pages::Range {
                    offset: *offset,
                    len: *len,
                },
            )],
            names: Vec::new(),
        },
        FileOp::SetXattr { ino, .. } => Touched {
            inodes: vec![attrs(*ino)],
            names: Vec::new(),
        },
        FileOp::SetAttr { ino, changes } => Touched {
            inodes: vec![(
                *ino,
                if changes.size.is_some() {
                    Pages::All
                } else {
                    Pages::None
                },
            )],
            names: Vec::new(),
        },
    }
}

/// An observer for [`Node::start_observed`] and the receiving end of what it hears: every
/// entry the node applies and every snapshot it installs, as [`VolumeChange`]s in order.
/// The channel is unbounded: the observer runs in the apply path and never waits.
pub fn changes() -> (Observer, mpsc::Receiver<VolumeChange>) {
    let (sender, receiver) = mpsc::channel();
    let sender = Mutex::new(sender);
    let observer: Observer = Arc::new(move |event| {
        let change = match event {
            MachineEvent::Applied(entry) => match &entry.payload {
                EntryPayload::Normal(command) => VolumeChange::Applied {
                    index: entry.log_id.index,
                    client_id: command.key.map(|key| key.client_id),
                    touched: touched(&command.op),
                },
                EntryPayload::Blank | EntryPayload::Membership(_) => return,
            },
            MachineEvent::Installed(_) => VolumeChange::Installed,
        };
        // Nobody listening any more (the file server stopped): nothing to tell.
        let _ = sender
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .send(change);
    });
    (observer, receiver)
}

/// One node's volume as a file server on that node uses it.
pub struct ServedVolume<D: Device> {
    node: Arc<Node<D>>,
    key: ClusterKey,
    me: Peer,
    client_id: u64,
    next_request: AtomicU64,
    change_timeout: Duration,
    /// Idle connections to the leader, by its address.
    links: Mutex<Vec<(String, Link)>>,
}

impl<D: Device> std::fmt::Debug for ServedVolume<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServedVolume")
            .field("node", &self.node.id())
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

/// How one attempt at a change ended.
enum Attempt {
    Done(Written),
    Retry(String),
    Stopped(String),
}

impl<D: Device> ServedVolume<D> {
    /// Serves `node`'s volume; changes are forwarded to the leader as `me` (this node, on
    /// the cluster `key`). The request keys are a new client's (a random id).
    pub fn new(node: Arc<Node<D>>, key: ClusterKey, me: Peer) -> ServedVolume<D> {
        ServedVolume {
            node,
            key,
            me,
            client_id: rand::RngCore::next_u64(&mut rand::rngs::OsRng) | 1,
            next_request: AtomicU64::new(1),
            change_timeout: CHANGE_TIMEOUT,
            links: Mutex::new(Vec::new()),
        }
    }

    /// Changes keep trying for `timeout` (instead of [`CHANGE_TIMEOUT`]) before their
    /// outcome is reported unknown.
    pub fn with_change_timeout(mut self, timeout: Duration) -> ServedVolume<D> {
        self.change_timeout = timeout;
        self
    }

    /// The client id of this served volume's request keys (its own changes, heard back
    /// as [`VolumeChange`]s, carry it).
    pub fn client_id(&self) -> u64 {
        self.client_id
    }

    /// The node.
    pub fn node(&self) -> &Arc<Node<D>> {
        &self.node
    }

    /// The node's engine now, for reads: every change this served volume acknowledged is
    /// in it. Take it again for each operation (a snapshot install replaces it).
    pub fn engine(&self) -> Arc<Engine<D>> {
        self.node.engine()
    }

    fn next_key(&self) -> RequestKey {
        RequestKey {
            client_id: self.client_id,
            request_id: self.next_request.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// Makes `op` on the volume: replicated, applied on a quorum's logs durably, and
    /// applied on this node, then answered with what applying it gave.
    pub async fn change(&self, op: FileOp) -> Result<TxnResult, ChangeError> {
        self.change_keyed(op, self.next_key()).await
    }

    /// [`Self::change`] under the caller's request key `key` instead of one of this served
    /// volume's: a file server whose client resends a request (an NFS call under the same
    /// xid, to this node or, after a failover, to another) derives the same key from it, so
    /// a resend of a change that committed gets the first outcome from the request table
    /// instead of making it twice. Keys of different clients must differ.
    pub async fn change_keyed(
        &self,
        op: FileOp,
        key: RequestKey,
    ) -> Result<TxnResult, ChangeError> {
        let command = Command {
            key: Some(key),
            now: Time::now(),
            op,
        };
        let timeout = self.change_timeout;
        let deadline = Instant::now() + timeout;
        let written = loop {
            match self.attempt(&command).await {
                Attempt::Done(written) => break written,
                Attempt::Stopped(why) => return Err(ChangeError::Stopped(why)),
                Attempt::Retry(why) => {
                    if Instant::now() >= deadline {
                        log::warn!(
                            "node {}: {command} not taken within {timeout:?}: {why}",
                            self.node.id()
                        );
                        return Err(ChangeError::Unavailable(timeout));
                    }
                    log::debug!("node {}: {command} tried again: {why}", self.node.id());
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
            }
        };
        // Read-your-writes: the entry is committed; wait until this node applied it.
        let left = deadline.saturating_duration_since(Instant::now());
        self.node
            .raft()
            .wait(Some(left.max(ATTEMPT_TIMEOUT)))
            .applied_index_at_least(Some(written.index), "read-your-writes")
            .await
            .map_err(|e| {
                log::warn!(
                    "node {}: {command} committed at {} but is not applied here: {e}",
                    self.node.id(),
                    written.index
                );
                ChangeError::Unavailable(timeout)
            })?;
        written.reply.0.map_err(ChangeError::Refused)
    }

    /// One attempt: here when this node leads, else on a connection to the leader.
    async fn attempt(&self, command: &Command) -> Attempt {
        let metrics = self.node.metrics();
        // A follower forwards at once: no copy of the command for a write Raft here would
        // refuse.
        let leader = match metrics.current_leader {
            Some(leader) if leader != self.node.id() => leader,
            _ => {
                let here =
                    tokio::time::timeout(ATTEMPT_TIMEOUT, self.node.write(command.clone())).await;
                match here {
                    Err(_) => return Attempt::Retry("no answer from Raft here".into()),
                    Ok(Ok(written)) => return Attempt::Done(written),
                    Ok(Err(WriteError::Stopped(why))) => return Attempt::Stopped(why),
                    Ok(Err(WriteError::Unknown)) => {
                        return Attempt::Retry("leadership changed".into())
                    }
                    Ok(Err(WriteError::NotLeader { leader: None })) => {
                        return Attempt::Retry("no leader known".into())
                    }
                    Ok(Err(WriteError::NotLeader {
                        leader: Some(leader),
                    })) => leader,
                }
            }
        };
        let Some(addr) = address_of(&metrics, leader) else {
            return Attempt::Retry(format!("no address known for leader {leader}"));
        };
        let mut link = match self.idle_link(&addr) {
            Some(link) => link,
            None => match Link::open(&addr, &self.key, self.me).await {
                Ok((link, _)) => link,
                Err(why) => return Attempt::Retry(why),
            },
        };
        let request = Request::Write(command.clone());
        let answer = tokio::time::timeout(ATTEMPT_TIMEOUT, link.call(&request)).await;
        let outcome = match answer {
            Err(_) => return Attempt::Retry(format!("no answer from the leader at {addr}")),
            Ok(Err(why)) => return Attempt::Retry(why),
            Ok(Ok(Response::Write(Ok(written)))) => Attempt::Done(written),
            Ok(Ok(Response::Write(Err(refusal)))) => Attempt::Retry(match refusal {
                WriteRefusal::NotLeader { .. } => format!("{addr} no longer leads"),
                WriteRefusal::Unknown => "leadership changed".into(),
                WriteRefusal::Stopped(why) => format!("the leader stopped: {why}"),
            }),
            Ok(Ok(other)) => return Attempt::Retry(format!("{addr} answered {other:?}")),
        };
        self.keep_link(addr, link);
        outcome
    }

    fn idle_link(&self, addr: &str) -> Option<Link> {
        let mut links = self.links.lock().unwrap_or_else(|e| e.into_inner());
        let i = links.iter().position(|(a, _)| a == addr)?;
        Some(links.swap_remove(i).1)
    }

    fn keep_link(&self, addr: String, link: Link) {
        let mut links = self.links.lock().unwrap_or_else(|e| e.into_inner());
        // Links to a former leader are of no more use.
        links.retain(|(a, _)| *a == addr);
        if links.len() < IDLE_LINKS_MAX {
            links.push((addr, link));
        }
    }

    /// Makes `op` and answers the attributes, on this node, of the inode it made or named.
    async fn make(&self, op: FileOp) -> Result<Stat, ChangeError> {
        match self.change(op).await? {
            TxnResult::Ino(ino) => Ok(self.engine().getattr(ino)?),
            TxnResult::Done | TxnResult::Bytes(_) => {
                Err(FsError::Invalid("a change answered without its inode").into())
            }
        }
    }

    /// [`Engine::create`] on the volume.
    pub async fn create(
        &self,
        parent: Ino,
        name: &[u8],
        attrs: NewAttrs,
    ) -> Result<Stat, ChangeError> {
        let name = name.to_vec();
        self.make(FileOp::Create {
            parent,
            name,
            attrs,
        })
        .await
    }

    /// [`Engine::mkdir`] on the volume.
    pub async fn mkdir(
        &self,
        parent: Ino,
        name: &[u8],
        attrs: NewAttrs,
    ) -> Result<Stat, ChangeError> {
        let name = name.to_vec();
        self.make(FileOp::Mkdir {
            parent,
            name,
            attrs,
        })
        .await
    }

    /// [`Engine::symlink`] on the volume.
    pub async fn symlink(
        &self,
        parent: Ino,
        name: &[u8],
        target: &[u8],
        attrs: NewAttrs,
    ) -> Result<Stat, ChangeError> {
        let op = FileOp::Symlink {
            parent,
            name: name.to_vec(),
            target: target.to_vec(),
            attrs,
        };
        self.make(op).await
    }

    /// [`Engine::mknod`] on the volume.
    pub async fn mknod(
        &self,
        parent: Ino,
        name: &[u8],
        kind: FileKind,
        attrs: NewAttrs,
    ) -> Result<Stat, ChangeError> {
        let op = FileOp::Mknod {
            parent,
            name: name.to_vec(),
            kind,
            attrs,
        };
        self.make(op).await
    }

    /// [`Engine::setxattr`] (a value) or [`Engine::removexattr`] (`None`) on the volume.
    pub async fn setxattr(
        &self,
        ino: Ino,
        name: &[u8],
        value: Option<&[u8]>,
        flags: XattrFlags,
    ) -> Result<(), ChangeError> {
        let op = FileOp::SetXattr {
            ino,
            name: name.to_vec(),
            value: value.map(<[u8]>::to_vec),
            flags,
        };
        self.change(op).await?;
        Ok(())
    }

    /// [`Engine::fallocate`] on the volume.
    pub async fn fallocate(
        &self,
        ino: Ino,
        offset: u64,
        len: u64,
        mode: FallocMode,
    ) -> Result<(), ChangeError> {
        let op = FileOp::Fallocate {
            ino,
            offset,
            len,
            mode,
        };
        self.change(op).await?;
        Ok(())
    }

    /// [`Engine::link`] on the volume.
    pub async fn link(&self, ino: Ino, parent: Ino, name: &[u8]) -> Result<Stat, ChangeError> {
        let name = name.to_vec();
        self.make(FileOp::Link { ino, parent, name }).await
    }

    /// [`Engine::unlink`] on the volume.
    pub async fn unlink(&self, parent: Ino, name: &[u8]) -> Result<(), ChangeError> {
        let name = name.to_vec();
        self.change(FileOp::Unlink { parent, name }).await?;
        Ok(())
    }

    /// [`Engine::rmdir`] on the volume.
    pub async fn rmdir(&self, parent: Ino, name: &[u8]) -> Result<(), ChangeError> {
        let name = name.to_vec();
        self.change(FileOp::Rmdir { parent, name }).await?;
        Ok(())
    }

    /// [`Engine::rename`] on the volume.
    pub async fn rename(
        &self,
        (from_parent, from_name): (Ino, &[u8]),
        (to_parent, to_name): (Ino, &[u8]),
        flags: RenameFlags,
    ) -> Result<(), ChangeError> {
        let op = FileOp::Rename {
            from_parent,
            from_name: from_name.to_vec(),
            to_parent,
            to_name: to_name.to_vec(),
            flags,
        };
        self.change(op).await?;
        Ok(())
    }

    /// [`Engine::write`] on the volume: one replicated change per [`WRITE_BYTES_MAX`]
    /// bytes, in order (a larger write is several transactions: after a failure in the
    /// middle, the bytes before it are written, as with a short write).
    pub async fn write(&self, ino: Ino, offset: u64, data: &[u8]) -> Result<u64, ChangeError> {
        let mut written = 0u64;
        for piece in data.chunks(WRITE_BYTES_MAX) {
            let op = FileOp::Write {
                ino,
                offset: offset + written,
                data: piece.to_vec(),
            };
            match self.change(op).await {
                Ok(TxnResult::Bytes(n)) => written += n,
                Ok(_) => return Err(FsError::Invalid("a write answered without its length").into()),
                Err(e) if written > 0 => {
                    log::info!("a write stopped after {written} bytes: {e}");
                    return Ok(written);
                }
                Err(e) => return Err(e),
            }
        }
        Ok(written)
    }

    /// [`Engine::setattr`] on the volume.
    pub async fn setattr(&self, ino: Ino, changes: SetAttrChanges) -> Result<Stat, ChangeError> {
        self.change(FileOp::SetAttr { ino, changes }).await?;
        Ok(self.engine().getattr(ino)?)
    }
}
