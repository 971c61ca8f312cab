//! A node running from its directory ([`Server`]): its Raft log and volume on real devices,
//! its Raft on TCP, its listener serving the other nodes and the commands. What
//! `smlog cluster serve` runs.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use smlog::io::{open_dir, Device, DeviceOptions};
use smlog::EngineOptions;
use smlog_recovery::OpenOptions;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::node::{
    raft_config, Node, StartError, ELECTION_TIMEOUT_MAX, ELECTION_TIMEOUT_MIN, HEARTBEAT_INTERVAL,
};
use crate::node_dir::NodeDir;
use crate::raft::NodeInfo;
use crate::state_machine::Observer;
use crate::tcp::{serve, TcpNetwork};

/// Why a node could not start serving.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A device could not be opened.
    #[error("{0}")]
    Device(#[from] smlog::io::IoError),
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// The node did not start.
    #[error(transparent)]
    Start(#[from] StartError),
    /// Starting a new cluster failed.
    #[error("cannot start the cluster: {0}")]
    Bootstrap(String),
    /// The volume holds applied entries but the Raft log is gone: the node lost its vote
    /// and log, so it must not take part as the member it was.
    #[error(
        "{raft} holds no Raft log but {volume} holds a volume: the node's log and vote are \
         lost; remove this node from the cluster, make its directory anew \
         (`smlog cluster init`) and add it again"
    )]
    LostLog {
        /// The Raft log's directory.
        raft: String,
        /// The volume's directory.
        volume: String,
    },
}

/// A node serving.
pub struct Server {
    /// The node.
    pub node: Arc<Node<Box<dyn Device>>>,
    /// The address it listens on.
    pub addr: SocketAddr,
    listener: JoinHandle<()>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("id", &self.node.id())
            .field("addr", &self.addr)
            .finish()
    }
}

impl Server {
    /// Recovers the node in `dir` (its Raft log, then its volume) and serves it; a node made
    /// to start a cluster makes itself its only voter on its first start.
    pub async fn start(
        dir: &NodeDir,
        devices: DeviceOptions,
        engine: EngineOptions,
    ) -> Result<Server, ServeError> {
        Server::start_observed(dir, devices, engine, None).await
    }

    /// [`Server::start`] with an observer of what the volume applies and installs (a file
    /// server on the node: [`crate::served::changes`]).
    pub async fn start_observed(
        dir: &NodeDir,
        devices: DeviceOptions,
        engine: EngineOptions,
        observer: Option<Observer>,
    ) -> Result<Server, ServeError> {
        let has_log = |path: std::path::PathBuf| path.join("LOG").exists();
        if !has_log(dir.raft_dir()) && has_log(dir.volume_dir()) {
            return Err(ServeError::LostLog {
                raft: dir.raft_dir().display().to_string(),
                volume: dir.volume_dir().display().to_string(),
            });
        }
        let raft_device = open_dir(&dir.raft_dir(), devices)?;
        let volume_device = open_dir(&dir.volume_dir(), devices)?;
        let listener =
            TcpListener::bind(&dir.listen)
                .await
                .map_err(|source| ServeError::Listen {
                    addr: dir.listen.clone(),
                    source,
                })?;
        let addr = listener.local_addr().map_err(|source| ServeError::Listen {
            addr: dir.listen.clone(),
            source,
        })?;
        let options = OpenOptions {
            engine,
            device: devices,
            create: true,
            ..OpenOptions::default()
        };
        let config = raft_config(
            HEARTBEAT_INTERVAL,
            ELECTION_TIMEOUT_MIN,
            ELECTION_TIMEOUT_MAX,
        );
        let node = Node::start_observed(
            dir.id,
            (Arc::new(raft_device), Arc::new(volume_device)),
            options,
            config,
            TcpNetwork::new(dir.key.clone(), dir.peer()),
            observer,
        )
        .await?;
        let node = Arc::new(node);
        let listener = tokio::spawn(serve(
            listener,
            Arc::clone(&node),
            dir.key.clone(),
            dir.incarnation,
        ));
        if dir.bootstrap && node.log().is_pristine() {
            let members = BTreeMap::from([(
                dir.id,
                NodeInfo {
                    addr: dir.listen.clone(),
                    incarnation: dir.incarnation,
                },
            )]);
            node.raft()
                .initialize(members)
                .await
                .map_err(|e| ServeError::Bootstrap(e.to_string()))?;
        }
        Ok(Server {
            node,
            addr,
            listener,
        })
    }

    /// Stops serving, stops Raft, and closes the volume cleanly (synced and checkpointed).
    pub async fn stop(self) {
        self.listener.abort();
        self.node.shutdown().await;
        let engine = self.node.engine();
        let closed = tokio::task::spawn_blocking(move || engine.shutdown()).await;
        if let Ok(Err(e)) = closed {
            log::warn!(
                "node {}: the volume did not close cleanly: {e}",
                self.node.id()
            );
        }
    }
}
