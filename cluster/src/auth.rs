//! Mutual authentication of a connection on the cluster key (challenge-response with
//! HMAC-SHA-256), before any other message is read.
//!
//! The cluster key (32 random bytes) is made by `smlog cluster init` and copied to every
//! node and to whoever runs the `smlog cluster` commands. The dialling side sends a
//! [`Hello`] (protocol version, cluster id, its node id (0 for a command), a fresh nonce);
//! the listening side checks version and cluster, answers with a [`Challenge`]: its own node
//! id and nonce, and its proof: HMAC(key, "smlog-server" | both nonces | cluster id | both
//! node ids). The dialler checks that proof (so it talks to the cluster it meant) and sends
//! its own ([`Proof`], the same with "smlog-client"). A wrong key, cluster or version ends
//! the connection, each side having read at most two frames of at most
//! [`HANDSHAKE_BYTES_MAX`] bytes. Proofs are compared in constant time.

use hmac::{Hmac, Mac};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::wire::{read_frame, write_frame, FrameError, HANDSHAKE_BYTES_MAX, WIRE_VERSION};

/// The node id a `smlog cluster` command (not a node) presents.
pub const COMMAND_NODE_ID: u64 = 0;

/// The cluster's shared secret and identity.
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterKey {
    /// The cluster's id (random, made at `init`): a node of another cluster is refused.
    pub cluster_id: u64,
    /// The secret.
    pub secret: [u8; 32],
}

impl std::fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterKey")
            .field("cluster_id", &format_args!("{:016x}", self.cluster_id))
            .finish_non_exhaustive()
    }
}

impl ClusterKey {
    /// A new cluster: a random id and secret from the operating system.
    pub fn generate() -> ClusterKey {
        let mut rng = rand::rngs::OsRng;
        let mut secret = [0u8; 32];
        rng.fill_bytes(&mut secret);
        ClusterKey {
            cluster_id: rng.next_u64(),
            secret,
        }
    }

    fn proof(
        &self,
        role: &[u8],
        hello: &Hello,
        challenge_nonce: &[u8; 32],
        (server, server_incarnation): (u64, u64),
    ) -> Hmac<Sha256> {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.secret).expect("HMAC takes a key of any size");
        mac.update(role);
        mac.update(&hello.nonce);
        mac.update(challenge_nonce);
        mac.update(&self.cluster_id.to_le_bytes());
        mac.update(&hello.node_id.to_le_bytes());
        mac.update(&server.to_le_bytes());
        mac.update(&hello.incarnation.to_le_bytes());
        mac.update(&server_incarnation.to_le_bytes());
        mac
    }
}

/// The dialler's first frame.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// [`WIRE_VERSION`].
    pub version: u32,
    /// The cluster it means.
    pub cluster_id: u64,
    /// Its node id ([`COMMAND_NODE_ID`] for a command).
    pub node_id: u64,
    /// Its directory's incarnation (0 for a command).
    pub incarnation: u64,
    /// Fresh random bytes.
    pub nonce: [u8; 32],
}

/// The listener's answer: its id, its nonce, its proof.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Challenge {
    /// The listening node's id.
    pub node_id: u64,
    /// Its directory's incarnation.
    pub incarnation: u64,
    /// Fresh random bytes.
    pub nonce: [u8; 32],
    /// HMAC(key, "smlog-server" | hello nonce | this nonce | cluster | dialler |
    /// listener | dialler's incarnation | listener's incarnation).
    pub proof: [u8; 32],
}

/// The dialler's proof.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proof {
    /// HMAC(key, "smlog-client" | hello nonce | challenge nonce | cluster | dialler |
    /// listener).
    pub proof: [u8; 32],
}

/// Why a handshake failed.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The connection failed or sent a bad frame.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// Another protocol version.
    #[error("the peer speaks protocol version {0}, this node {WIRE_VERSION}")]
    Version(u32),
    /// Another cluster.
    #[error("the peer belongs to cluster {0:016x}, not this one")]
    OtherCluster(u64),
    /// The proof does not match: the peer does not hold the cluster key.
    #[error("the peer's proof does not match the cluster key")]
    BadProof,
    /// The listener refused this dialler (not a member).
    #[error("node {0} is not a member of this cluster")]
    NotMember(u64),
    /// The node's directory is not the one the cluster added: it was made anew (wiped and
    /// `smlog cluster init` again), so it lost its Raft log and vote.
    #[error(
        "node {id}'s directory is incarnation {seen:016x}, not the {added:016x} the cluster          added: it was made anew; remove node {id} and add it again"
    )]
    OtherIncarnation {
        /// The node.
        id: u64,
        /// The incarnation it presented.
        seen: u64,
        /// The incarnation in the membership.
        added: u64,
    },
}

fn nonce() -> [u8; 32] {
    let mut nonce = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    nonce
}

/// Who is at the other end of a connection, as its handshake proved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Peer {
    /// Its node id ([`COMMAND_NODE_ID`] for a command).
    pub id: u64,
    /// Its directory's incarnation (0 for a command).
    pub incarnation: u64,
}

/// The dialling side: proves itself as `me` and checks that the listener holds the key.
/// Returns who the listener is.
pub async fn dial<S>(stream: &mut S, key: &ClusterKey, me: Peer) -> Result<Peer, AuthError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let hello = Hello {
        version: WIRE_VERSION,
        cluster_id: key.cluster_id,
        node_id: me.id,
        incarnation: me.incarnation,
        nonce: nonce(),
    };
    write_frame(stream, &hello).await?;
    let challenge: Challenge = read_frame(stream, HANDSHAKE_BYTES_MAX).await?;
    let server = (challenge.node_id, challenge.incarnation);
    key.proof(b"smlog-server", &hello, &challenge.nonce, server)
        .verify_slice(&challenge.proof)
        .map_err(|_| AuthError::BadProof)?;
    let proof = key
        .proof(b"smlog-client", &hello, &challenge.nonce, server)
        .finalize()
        .into_bytes()
        .into();
    write_frame(stream, &Proof { proof }).await?;
    Ok(Peer {
        id: challenge.node_id,
        incarnation: challenge.incarnation,
    })
}

/// The listening side, as `me`: checks the dialler's hello and proof; `admit` decides
/// whether that node may talk to this one (a member of the incarnation added, or a
/// command), and why not. Returns who the dialler is.
pub async fn accept<S>(
    stream: &mut S,
    key: &ClusterKey,
    me: Peer,
    admit: impl FnOnce(Peer) -> Result<(), AuthError>,
) -> Result<Peer, AuthError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let hello: Hello = read_frame(stream, HANDSHAKE_BYTES_MAX).await?;
    if hello.version != WIRE_VERSION {
        return Err(AuthError::Version(hello.version));
    }
    if hello.cluster_id != key.cluster_id {
        return Err(AuthError::OtherCluster(hello.cluster_id));
    }
    let challenge_nonce = nonce();
    let server = (me.id, me.incarnation);
    let proof = key
        .proof(b"smlog-server", &hello, &challenge_nonce, server)
        .finalize()
        .into_bytes()
        .into();
    let challenge = Challenge {
        node_id: me.id,
        incarnation: me.incarnation,
        nonce: challenge_nonce,
        proof,
    };
    write_frame(stream, &challenge).await?;
    let answer: Proof = read_frame(stream, HANDSHAKE_BYTES_MAX).await?;
    key.proof(b"smlog-client", &hello, &challenge_nonce, server)
        .verify_slice(&answer.proof)
        .map_err(|_| AuthError::BadProof)?;
    let peer = Peer {
        id: hello.node_id,
        incarnation: hello.incarnation,
    };
    admit(peer)?;
    Ok(peer)
}
