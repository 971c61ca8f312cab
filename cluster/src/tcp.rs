//! Nodes over TCP: the dialling side of Raft's messages ([`TcpNetwork`]), the listening side
//! that serves them and the `smlog cluster` commands ([`serve`]), and a command client
//! ([`Client`]). Every connection is authenticated first ([`crate::auth`]); a peer that
//! fails the handshake, sends a frame past its bound, a frame that does not decode, or an
//! entry that is not valid is dropped, and nothing it sent is applied.

use std::collections::BTreeSet;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use smlog::io::Device;
use tokio::net::{TcpListener, TcpStream};

use crate::auth::{self, AuthError, ClusterKey, Peer, COMMAND_NODE_ID};
use crate::command::{Command, Reply};
use crate::node::{Node, WriteError};
use crate::raft::{
    address_of, admits, append_outcome_wire, append_request_of, append_request_wire,
    append_response_of, snapshot_meta_of, snapshot_meta_record, status_report, vote_of,
    vote_record, vote_request_of, vote_request_wire, vote_response_of, vote_response_wire,
    AppendEntriesRequest, AppendEntriesResponse, NodeId, NodeInfo, OptionalSend, RPCError,
    RPCOption, RaftNetworkFactory, RaftNetworkV2, ReplicationClosed, Snapshot, SnapshotResponse,
    StreamingError, TypeConfig, Unreachable, Vote, VoteRequest, VoteResponse,
};
use crate::snapshot::{Incoming, SnapshotError, SnapshotFile, SNAPSHOT_CHUNK_BYTES};
use crate::wire::{
    read_frame, write_frame, Request, Response, WriteRefusal, Written, FRAME_BYTES_MAX,
};

/// How long a snapshot's last piece may take to be installed.
const SNAPSHOT_INSTALL_TIMEOUT: Duration = Duration::from_secs(120);

/// How long a command waits to connect and authenticate.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// An authenticated connection to one node.
#[derive(Debug)]
pub(crate) struct Link {
    stream: TcpStream,
}

impl Link {
    pub(crate) async fn open(
        addr: &str,
        key: &ClusterKey,
        me: Peer,
    ) -> Result<(Link, Peer), String> {
        let connect = async {
            let mut stream = TcpStream::connect(addr)
                .await
                .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
            stream.set_nodelay(true).map_err(|e| e.to_string())?;
            let peer = auth::dial(&mut stream, key, me)
                .await
                .map_err(|e| format!("{addr}: {e}"))?;
            Ok::<_, String>((Link { stream }, peer))
        };
        tokio::time::timeout(CONNECT_TIMEOUT, connect)
            .await
            .map_err(|_| format!("{addr}: no answer within {CONNECT_TIMEOUT:?}"))?
    }

    pub(crate) async fn call(&mut self, request: &Request) -> Result<Response, String> {
        write_frame(&mut self.stream, request)
            .await
            .map_err(|e| e.to_string())?;
        read_frame(&mut self.stream, FRAME_BYTES_MAX)
            .await
            .map_err(|e| e.to_string())
    }
}

/// One node's dialling side: openraft's network factory.
#[derive(Clone, Debug)]
pub struct TcpNetwork {
    key: ClusterKey,
    me: Peer,
}

impl TcpNetwork {
    /// The network node `me` reaches the others with, holding `key`.
    pub fn new(key: ClusterKey, me: Peer) -> TcpNetwork {
        TcpNetwork { key, me }
    }
}

/// A connection to another node, opened on first use and again after a failure.
#[derive(Debug)]
pub struct TcpConnection {
    key: ClusterKey,
    me: Peer,
    to: NodeId,
    addr: String,
    /// The target's incarnation as the membership names it (0: not checked).
    incarnation: u64,
    link: Option<Link>,
}

impl RaftNetworkFactory<TypeConfig> for TcpNetwork {
    type Network = TcpConnection;

    async fn new_client(&mut self, target: NodeId, node: &NodeInfo) -> TcpConnection {
        TcpConnection {
            key: self.key.clone(),
            me: self.me,
            to: target,
            addr: node.addr.clone(),
            incarnation: node.incarnation,
            link: None,
        }
    }
}

impl TcpConnection {
    /// Sends `request` and reads the answer within `ttl`; any failure drops the link (the
    /// next call opens a new one).
    async fn call(&mut self, request: &Request, ttl: Duration) -> Result<Response, Unreachable> {
        let attempt = async {
            if self.link.is_none() {
                let (link, peer) = Link::open(&self.addr, &self.key, self.me).await?;
                if peer.id != self.to {
                    return Err(format!(
                        "{} answers as node {}, not node {}",
                        self.addr, peer.id, self.to
                    ));
                }
                if self.incarnation != 0 && peer.incarnation != self.incarnation {
                    let refused = AuthError::OtherIncarnation {
                        id: peer.id,
                        seen: peer.incarnation,
                        added: self.incarnation,
                    };
                    log::warn!("node {}: {refused}", self.me.id);
                    return Err(refused.to_string());
                }
                self.link = Some(link);
            }
            let link = self.link.as_mut().expect("opened above");
            link.call(request).await
        };
        let result = match tokio::time::timeout(ttl, attempt).await {
            Ok(result) => result,
            Err(_) => Err(format!("node {} did not answer within {ttl:?}", self.to)),
        };
        if matches!(result, Ok(Response::Failed(_))) {
            // The process that answered may be going (a stopped node whose connections
            // outlive it): the next call dials again, and finds what serves there now.
            self.link = None;
        }
        result.map_err(|why| {
            self.link = None;
            Unreachable::from_string(why)
        })
    }
}

fn unexpected(response: &Response) -> Unreachable {
    Unreachable::from_string(format!("unexpected answer {response:?}"))
}

impl RaftNetworkV2<TypeConfig> for TcpConnection {
    type SnapshotData = SnapshotFile;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse, RPCError> {
        let request = append_request_wire(&rpc);
        match self.call(&request, option.hard_ttl()).await? {
            Response::Append(outcome) => Ok(append_response_of(&outcome)),
            other => Err(unexpected(&other).into()),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest,
        option: RPCOption,
    ) -> Result<VoteResponse, RPCError> {
        match self
            .call(&vote_request_wire(&rpc), option.hard_ttl())
            .await?
        {
            Response::Vote {
                vote,
                granted,
                last,
            } => Ok(vote_response_of(&vote, granted, last.as_ref())),
            other => Err(unexpected(&other).into()),
        }
    }

    /// Sends the file in pieces of 1 MiB on this connection; the last one's answer comes
    /// once the receiver installed it.
    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot<SnapshotFile>,
        cancel: impl std::future::Future<Output = ReplicationClosed> + OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse, StreamingError> {
        tokio::select! {
            closed = cancel => Err(StreamingError::Closed(closed)),
            sent = self.send_snapshot(vote, snapshot, option) => sent,
        }
    }
}

impl TcpConnection {
    async fn send_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot<SnapshotFile>,
        option: RPCOption,
    ) -> Result<SnapshotResponse, StreamingError> {
        let meta = snapshot_meta_record(&snapshot.meta);
        let file = Arc::new(snapshot.snapshot);
        let len = file.len();
        let mut offset = 0;
        while offset < len {
            let n = (len - offset).min(SNAPSHOT_CHUNK_BYTES as u64) as usize;
            let reader = Arc::clone(&file);
            let bytes = tokio::task::spawn_blocking(move || {
                let mut bytes = vec![0u8; n];
                reader.read_at(offset, &mut bytes).map(|()| bytes)
            })
            .await
            .map_err(|e| Unreachable::from_string(e.to_string()))?
            .map_err(|e| Unreachable::from_string(format!("reading the snapshot: {e}")))?;
            let request = Request::Snapshot {
                vote: vote_record(&vote),
                meta: meta.clone(),
                len,
                offset,
                bytes,
            };
            offset += n as u64;
            // The last piece waits for the install.
            let ttl = if offset == len {
                option.hard_ttl().max(SNAPSHOT_INSTALL_TIMEOUT)
            } else {
                option.hard_ttl()
            };
            match self.call(&request, ttl).await? {
                Response::Done if offset < len => {}
                Response::SnapshotInstalled { vote } if offset == len => {
                    return Ok(SnapshotResponse::new(vote_of(&vote)));
                }
                Response::Failed(why) => return Err(Unreachable::from_string(why).into()),
                other => return Err(unexpected(&other).into()),
            }
        }
        Err(Unreachable::from_string("an empty snapshot").into())
    }
}

/// Serves `node` (of directory incarnation `incarnation`) on `listener` until the task is
/// dropped: each connection authenticated on `key`, then its requests answered in order.
pub async fn serve<D: Device>(
    listener: TcpListener,
    node: Arc<Node<D>>,
    key: ClusterKey,
    incarnation: u64,
) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                log::warn!("node {}: accept failed: {e}", node.id());
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let node = Arc::clone(&node);
        let key = key.clone();
        tokio::spawn(async move {
            let me = Peer {
                id: node.id(),
                incarnation,
            };
            if let Err(why) = connection(stream, &node, &key, me).await {
                log::info!("node {}: connection from {peer} dropped: {why}", node.id());
            }
        });
    }
}

/// One connection: the handshake, then requests until the peer leaves or misbehaves.
async fn connection<D: Device>(
    mut stream: TcpStream,
    node: &Node<D>,
    key: &ClusterKey,
    me: Peer,
) -> Result<(), String> {
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    let metrics = node.metrics();
    let handshake = auth::accept(&mut stream, key, me, |peer| {
        if peer.id == COMMAND_NODE_ID {
            return Ok(());
        }
        admits(&metrics, peer.id, peer.incarnation)
    });
    let peer = tokio::time::timeout(CONNECT_TIMEOUT, handshake)
        .await
        .map_err(|_| "no handshake within the timeout".to_string())?
        .map_err(|e| e.to_string())?
        .id;
    let mut receiving: Option<Receiving> = None;
    loop {
        let request: Request = match read_frame(&mut stream, FRAME_BYTES_MAX).await {
            Ok(request) => request,
            Err(crate::wire::FrameError::Io(e))
                if e.kind() == std::io::ErrorKind::UnexpectedEof =>
            {
                return Ok(())
            }
            Err(e) => return Err(e.to_string()),
        };
        let response = match request {
            Request::Snapshot {
                vote,
                meta,
                len,
                offset,
                bytes,
            } if peer != COMMAND_NODE_ID => {
                let piece = Piece {
                    vote,
                    meta,
                    len,
                    offset,
                    bytes,
                };
                receive_piece(node, &mut receiving, piece).await?
            }
            Request::Snapshot { .. } => return Err("a command sent a snapshot".into()),
            request => answer(node, key, me, peer, request).await?,
        };
        write_frame(&mut stream, &response)
            .await
            .map_err(|e| e.to_string())?;
    }
}

/// A snapshot being received on one connection.
struct Receiving {
    meta: crate::snapshot::SnapshotMetaRecord,
    incoming: Incoming,
}

/// One piece of a snapshot.
struct Piece {
    vote: crate::log_store::records::VoteRecord,
    meta: crate::snapshot::SnapshotMetaRecord,
    len: u64,
    offset: u64,
    bytes: Vec<u8>,
}

/// Stores a piece of a snapshot; the last one installs it. A piece out of order, of
/// another snapshot or past the announced length ends the connection (and what was
/// received is removed).
async fn receive_piece<D: Device>(
    node: &Node<D>,
    receiving: &mut Option<Receiving>,
    piece: Piece,
) -> Result<Response, String> {
    let mut current = match receiving.take() {
        Some(current) if current.meta == piece.meta && current.incoming.len() == piece.len => {
            current
        }
        // A new snapshot starts at 0 (one that was under way is dropped).
        _ if piece.offset == 0 => Receiving {
            incoming: node
                .snapshot_inbox()
                .receive(piece.len)
                .map_err(|e| e.to_string())?,
            meta: piece.meta.clone(),
        },
        _ => return Err("a snapshot's piece without its start".into()),
    };
    if piece.offset != current.incoming.written() {
        return Err(format!(
            "a snapshot's piece at {}, expected at {}",
            piece.offset,
            current.incoming.written()
        ));
    }
    let bytes = piece.bytes;
    let mut incoming = current.incoming;
    let incoming = tokio::task::spawn_blocking(move || incoming.write(&bytes).map(|()| incoming))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    if incoming.written() < incoming.len() {
        current.incoming = incoming;
        *receiving = Some(current);
        return Ok(Response::Done);
    }
    let file = tokio::task::spawn_blocking(move || incoming.finish())
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e: SnapshotError| e.to_string())?;
    let meta = snapshot_meta_of(&current.meta).ok_or("a snapshot with an invalid membership")?;
    if file.header().meta != current.meta {
        return Err("a snapshot whose file holds other metadata than it was sent with".into());
    }
    let snapshot = Snapshot {
        meta,
        snapshot: file,
    };
    Ok(
        match node
            .raft()
            .install_full_snapshot(vote_of(&piece.vote), snapshot)
            .await
        {
            Ok(response) => Response::SnapshotInstalled {
                vote: vote_record(&response.vote),
            },
            Err(e) => Response::Failed(e.to_string()),
        },
    )
}

/// What `node` answers to `request` from `peer`. An invalid request ends the connection.
async fn answer<D: Device>(
    node: &Node<D>,
    key: &ClusterKey,
    me: Peer,
    peer: NodeId,
    request: Request,
) -> Result<Response, String> {
    let raft = node.raft();
    let is_node = peer != COMMAND_NODE_ID;
    Ok(match request {
        Request::Append {
            vote,
            prev,
            entries,
            commit,
        } if is_node => {
            let rpc = append_request_of(&vote, prev.as_ref(), entries, commit.as_ref())
                .ok_or("an entry holds an invalid membership")?;
            match raft.append_entries(rpc).await {
                Ok(response) => Response::Append(append_outcome_wire(&response)),
                Err(e) => Response::Failed(e.to_string()),
            }
        }
        Request::Vote { vote, last } if is_node => {
            match raft.vote(vote_request_of(&vote, last.as_ref())).await {
                Ok(response) => vote_response_wire(&response),
                Err(e) => Response::Failed(e.to_string()),
            }
        }
        Request::Append { .. } | Request::Vote { .. } | Request::Snapshot { .. } => {
            return Err("a command sent a Raft message".into())
        }
        Request::Write(command) => {
            let forward_with = (!is_node).then_some((key, me));
            Response::Write(write(node, command, forward_with).await)
        }
        Request::Status => {
            let log = node.log().log().stats();
            Response::Status(status_report(node.id(), &node.metrics(), &log))
        }
        Request::AddLearner { id, addr } => match learn_incarnation(key, me, id, &addr).await {
            Err(why) => Response::Failed(why),
            Ok(incarnation) => {
                let info = NodeInfo { addr, incarnation };
                match raft.add_learner(id, info, true).await {
                    Ok(_) => Response::Done,
                    Err(e) => Response::Failed(e.to_string()),
                }
            }
        },
        Request::ChangeMembership {
            voters,
            keep_learners,
        } => {
            let voters: BTreeSet<NodeId> = voters.into_iter().collect();
            match raft.change_membership(voters, keep_learners).await {
                Ok(_) => Response::Done,
                Err(e) => Response::Failed(e.to_string()),
            }
        }
    })
}

/// The incarnation of node `id` serving at `addr`, from a handshake with it: what the
/// membership will hold for it.
async fn learn_incarnation(
    key: &ClusterKey,
    me: Peer,
    id: NodeId,
    addr: &str,
) -> Result<u64, String> {
    let (_, peer) = Link::open(addr, key, me)
        .await
        .map_err(|why| format!("cannot reach node {id} to add it: {why}"))?;
    if peer.id != id {
        return Err(format!("{addr} answers as node {}, not node {id}", peer.id));
    }
    Ok(peer.incarnation)
}

/// A write: applied here when this node leads; else, for a command (not a node, so no
/// write is forwarded twice), forwarded once to the leader this node knows, whose answer
/// is returned. When that fails too, the answer names the leader, for the client to go.
async fn write<D: Device>(
    node: &Node<D>,
    command: Command,
    forward_with: Option<(&ClusterKey, Peer)>,
) -> Result<Written, WriteRefusal> {
    let refusal = match node.write(command.clone()).await {
        Ok(written) => return Ok(written),
        Err(WriteError::NotLeader { leader }) => WriteRefusal::NotLeader {
            leader,
            addr: match leader {
                Some(id) => leader_address(node, id).await,
                None => None,
            },
        },
        Err(WriteError::Unknown) => return Err(WriteRefusal::Unknown),
        Err(WriteError::Stopped(why)) => return Err(WriteRefusal::Stopped(why)),
    };
    let (
        Some((key, me)),
        WriteRefusal::NotLeader {
            addr: Some(addr), ..
        },
    ) = (forward_with, &refusal)
    else {
        return Err(refusal);
    };
    let forwarded = async {
        let (mut link, _) = Link::open(addr, key, me).await.ok()?;
        match link.call(&Request::Write(command)).await.ok()? {
            Response::Write(result) => Some(result),
            _ => None,
        }
    };
    forwarded.await.unwrap_or(Err(refusal))
}

/// The address of leader `id` from this node's membership. A node that has heard from
/// its leader may not yet hold the membership entry naming it (a learner just added):
/// it waits up to 2 s for it rather than answer with a leader and no address.
async fn leader_address<D: Device>(node: &Node<D>, id: NodeId) -> Option<String> {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(2);
    loop {
        if let Some(addr) = address_of(&node.metrics(), id) {
            return Some(addr);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// A `smlog cluster` command's connection to a node.
#[derive(Debug)]
pub struct Client {
    link: Link,
    /// The node it reached.
    pub node_id: NodeId,
}

impl Client {
    /// Connects to the node at `addr` and authenticates on `key`.
    pub async fn connect(addr: &str, key: &ClusterKey) -> Result<Client, String> {
        let command = Peer {
            id: COMMAND_NODE_ID,
            incarnation: 0,
        };
        let (link, peer) = Link::open(addr, key, command).await?;
        Ok(Client {
            link,
            node_id: peer.id,
        })
    }

    /// Sends `request` and reads the answer.
    pub async fn call(&mut self, request: &Request) -> Result<Response, String> {
        self.link.call(request).await
    }
}

/// Binds `addr` (a loopback address in tests).
pub async fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// How long a [`Writer`] keeps trying a command before it gives up.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(60);

/// A client of the cluster (a command, not a node) that sends commands to the leader on one
/// connection, which it opens again (on the leader a refusal names, or on the next node)
/// when it fails, for up to [`WRITE_TIMEOUT`]. Give each command a request key: a retry
/// after a lost answer then never takes effect twice.
pub struct Writer {
    addrs: Vec<String>,
    key: ClusterKey,
    target: usize,
    client: Option<Client>,
}

impl fmt::Debug for Writer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Writer")
            .field("addrs", &self.addrs)
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

impl Writer {
    /// A writer reaching the cluster through the nodes at `addrs`, on the cluster `key`.
    pub fn new(addrs: Vec<String>, key: ClusterKey) -> Writer {
        Writer {
            addrs,
            key,
            target: 0,
            client: None,
        }
    }

    /// Sends `command` until a node applies it, following "not the leader" answers.
    pub async fn write(&mut self, command: &Command) -> Result<Reply, String> {
        let deadline = tokio::time::Instant::now() + WRITE_TIMEOUT;
        while tokio::time::Instant::now() < deadline && !self.addrs.is_empty() {
            if self.client.is_none() {
                let addr = &self.addrs[self.target % self.addrs.len()];
                self.client = Client::connect(addr, &self.key).await.ok();
            }
            if let Some(client) = &mut self.client {
                match client.call(&Request::Write(command.clone())).await {
                    Ok(Response::Write(Ok(written))) => return Ok(written.reply),
                    Ok(Response::Write(Err(WriteRefusal::NotLeader {
                        addr: Some(leader),
                        ..
                    }))) => {
                        if let Some(i) = self.addrs.iter().position(|a| *a == leader) {
                            self.target = i;
                        }
                        self.client = None;
                        continue;
                    }
                    _ => {}
                }
            }
            // No leader known yet, or that node is gone: the next one.
            self.client = None;
            self.target += 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Err(format!(
            "no node applied {command} within {WRITE_TIMEOUT:?}"
        ))
    }
}
