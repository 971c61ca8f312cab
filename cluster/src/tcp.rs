//! Nodes over TCP: the dialling side of Raft's messages ([`TcpNetwork`]), the listening side
//! that serves them and the `smlog cluster` commands ([`serve`]), and a command client
//! ([`Client`]). Every connection is authenticated first ([`crate::auth`]); a peer that
//! fails the handshake, sends a frame past its bound, a frame that does not decode, or an
//! entry that is not valid is dropped, and nothing it sent is applied.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use smlog::io::Device;
use tokio::net::{TcpListener, TcpStream};

use crate::auth::{self, ClusterKey, COMMAND_NODE_ID};
use crate::node::{Node, WriteError};
use crate::raft::{
    address_of, admits, append_outcome_wire, append_request_of, append_request_wire,
    append_response_of, status_report, vote_request_of, vote_request_wire, vote_response_of,
    vote_response_wire, AppendEntriesRequest, AppendEntriesResponse, BasicNode, NodeId,
    OptionalSend, RPCError, RPCOption, RaftNetworkFactory, RaftNetworkV2, ReplicationClosed,
    Snapshot, SnapshotResponse, StreamingError, TypeConfig, Unreachable, Vote, VoteRequest,
    VoteResponse,
};
use crate::wire::{read_frame, write_frame, Request, Response, WriteRefusal, FRAME_BYTES_MAX};

/// How long a command waits to connect and authenticate.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// An authenticated connection to one node.
#[derive(Debug)]
struct Link {
    stream: TcpStream,
}

impl Link {
    async fn open(addr: &str, key: &ClusterKey, from: NodeId) -> Result<(Link, NodeId), String> {
        let connect = async {
            let mut stream = TcpStream::connect(addr)
                .await
                .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
            stream.set_nodelay(true).map_err(|e| e.to_string())?;
            let peer = auth::dial(&mut stream, key, from)
                .await
                .map_err(|e| format!("{addr}: {e}"))?;
            Ok::<_, String>((Link { stream }, peer))
        };
        tokio::time::timeout(CONNECT_TIMEOUT, connect)
            .await
            .map_err(|_| format!("{addr}: no answer within {CONNECT_TIMEOUT:?}"))?
    }

    async fn call(&mut self, request: &Request) -> Result<Response, String> {
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
    from: NodeId,
}

impl TcpNetwork {
    /// The network node `from` reaches the others with, holding `key`.
    pub fn new(key: ClusterKey, from: NodeId) -> TcpNetwork {
        TcpNetwork { key, from }
    }
}

/// A connection to another node, opened on first use and again after a failure.
#[derive(Debug)]
pub struct TcpConnection {
    key: ClusterKey,
    from: NodeId,
    to: NodeId,
    addr: String,
    link: Option<Link>,
}

impl RaftNetworkFactory<TypeConfig> for TcpNetwork {
    type Network = TcpConnection;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> TcpConnection {
        TcpConnection {
            key: self.key.clone(),
            from: self.from,
            to: target,
            addr: node.addr.clone(),
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
                let (link, peer) = Link::open(&self.addr, &self.key, self.from).await?;
                if peer != self.to {
                    return Err(format!(
                        "{} answers as node {peer}, not node {}",
                        self.addr, self.to
                    ));
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
    type SnapshotData = Vec<u8>;

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

    async fn full_snapshot(
        &mut self,
        _vote: Vote,
        _snapshot: Snapshot<Vec<u8>>,
        _cancel: impl std::future::Future<Output = ReplicationClosed> + OptionalSend + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse, StreamingError> {
        Err(crate::state_machine::no_snapshot_transfer())
    }
}

/// Serves `node` on `listener` until the task is dropped: each connection authenticated
/// on `key`, then its requests answered in order.
pub async fn serve<D: Device>(listener: TcpListener, node: Arc<Node<D>>, key: ClusterKey) {
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
            if let Err(why) = connection(stream, &node, &key).await {
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
) -> Result<(), String> {
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    let metrics = node.metrics();
    let handshake = auth::accept(&mut stream, key, node.id(), |peer| {
        peer == COMMAND_NODE_ID || admits(&metrics, peer)
    });
    let peer = tokio::time::timeout(CONNECT_TIMEOUT, handshake)
        .await
        .map_err(|_| "no handshake within the timeout".to_string())?
        .map_err(|e| e.to_string())?;
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
        let response = answer(node, key, peer, request).await?;
        write_frame(&mut stream, &response)
            .await
            .map_err(|e| e.to_string())?;
    }
}

/// What `node` answers to `request` from `peer`. An invalid request ends the connection.
async fn answer<D: Device>(
    node: &Node<D>,
    key: &ClusterKey,
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
        Request::Append { .. } | Request::Vote { .. } => {
            return Err("a command sent a Raft message".into())
        }
        Request::Write(command) => {
            let forward_with = (!is_node).then_some(key);
            Response::Write(write(node, command, forward_with).await)
        }
        Request::Status => Response::Status(status_report(node.id(), &node.metrics())),
        Request::AddLearner { id, addr } => {
            match raft.add_learner(id, BasicNode { addr }, true).await {
                Ok(_) => Response::Done,
                Err(e) => Response::Failed(e.to_string()),
            }
        }
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

/// A write: applied here when this node leads; else, for a command (not a node, so no
/// write is forwarded twice), forwarded once to the leader this node knows, whose answer
/// is returned. When that fails too, the answer names the leader, for the client to go.
async fn write<D: Device>(
    node: &Node<D>,
    command: crate::command::Command,
    forward_with: Option<&ClusterKey>,
) -> Result<crate::command::Reply, WriteRefusal> {
    let refusal = match node.write(command.clone()).await {
        Ok(reply) => return Ok(reply),
        Err(WriteError::NotLeader { leader }) => WriteRefusal::NotLeader {
            leader,
            addr: leader.and_then(|id| address_of(&node.metrics(), id)),
        },
        Err(WriteError::Unknown) => return Err(WriteRefusal::Unknown),
        Err(WriteError::Stopped(why)) => return Err(WriteRefusal::Stopped(why)),
    };
    let (
        Some(key),
        WriteRefusal::NotLeader {
            addr: Some(addr), ..
        },
    ) = (forward_with, &refusal)
    else {
        return Err(refusal);
    };
    let forwarded = async {
        let (mut link, _) = Link::open(addr, key, node.id()).await.ok()?;
        match link.call(&Request::Write(command)).await.ok()? {
            Response::Write(result) => Some(result),
            _ => None,
        }
    };
    forwarded.await.unwrap_or(Err(refusal))
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
        let (link, node_id) = Link::open(addr, key, COMMAND_NODE_ID).await?;
        Ok(Client { link, node_id })
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
