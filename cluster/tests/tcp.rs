//! Nodes over TCP on loopback, authenticated on the cluster key: three nodes replicate
//! writes sent by a command client, report their status, fail over when the leader dies;
//! and bad input on the wire (garbage, a truncated frame, a huge length, a wrong key or
//! cluster, a node not in the membership, a command sending Raft messages) drops the
//! connection, applies nothing, panics nothing, and the node goes on serving.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use smlog::io::sim::SimDevice;
use smlog::{NewAttrs, RequestKey, Time, TxnResult, ROOT_INO};
use smlog_cluster::auth::{self, ClusterKey, Peer};
use smlog_cluster::log_store::records::{LogIdRecord, VoteRecord};
use smlog_cluster::node::raft_config;
use smlog_cluster::raft::{NodeInfo, SnapshotPolicy};
use smlog_cluster::tcp::{serve, Client, TcpNetwork, Writer};
use smlog_cluster::wire::{read_frame, write_frame, Request, Response, Written, FRAME_BYTES_MAX};
use smlog_cluster::{Command, FileOp, Node, Reply};
use smlog_recovery::harness::fs::tree_of;
use smlog_recovery::OpenOptions;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

struct Running {
    node: Arc<Node<SimDevice>>,
    server: JoinHandle<()>,
    addr: String,
}

/// The incarnation node `id`'s directory has in these tests.
fn incarnation(id: u64) -> u64 {
    1000 + id
}

/// A node snapshotting every `snapshots.0` entries and keeping `snapshots.1` behind (else
/// the defaults).
async fn start_with(
    id: u64,
    key: &ClusterKey,
    listener: TcpListener,
    snapshots: Option<(u64, u64)>,
) -> Running {
    start_as(id, incarnation(id), key, listener, snapshots).await
}

/// Node `id` with fresh devices, of directory incarnation `incarnation`.
async fn start_as(
    id: u64,
    incarnation: u64,
    key: &ClusterKey,
    listener: TcpListener,
    snapshots: Option<(u64, u64)>,
) -> Running {
    let mut options = OpenOptions {
        create: true,
        ..OpenOptions::default()
    };
    options.engine.segment_size_bytes = 1 << 20;
    let mut config = raft_config(
        Duration::from_millis(50),
        Duration::from_millis(300),
        Duration::from_millis(600),
    );
    if let Some((every, keep)) = snapshots {
        config.snapshot_policy = SnapshotPolicy::LogsSinceLast(every);
        config.max_in_snapshot_log_to_keep = keep;
        config.purge_batch_size = 1;
    }
    let node = Node::start(
        id,
        Arc::new(SimDevice::new(id)),
        Arc::new(SimDevice::new(id + 100)),
        options,
        config,
        TcpNetwork::new(key.clone(), Peer { id, incarnation }),
    )
    .await
    .unwrap();
    let node = Arc::new(node);
    let addr = listener.local_addr().unwrap().to_string();
    let server = tokio::spawn(serve(listener, Arc::clone(&node), key.clone(), incarnation));
    Running { node, server, addr }
}

async fn three_nodes(key: &ClusterKey) -> BTreeMap<u64, Running> {
    three_nodes_with(key, None).await
}

async fn three_nodes_with(
    key: &ClusterKey,
    snapshots: Option<(u64, u64)>,
) -> BTreeMap<u64, Running> {
    let mut nodes = BTreeMap::new();
    for id in 1..=3 {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        nodes.insert(id, start_with(id, key, listener, snapshots).await);
    }
    let members: BTreeMap<u64, NodeInfo> = nodes
        .iter()
        .map(|(id, running)| {
            (
                *id,
                NodeInfo {
                    addr: running.addr.clone(),
                    incarnation: incarnation(*id),
                },
            )
        })
        .collect();
    nodes[&1].node.raft().initialize(members).await.unwrap();
    nodes
}

fn create(name: &str, request_id: u64) -> Command {
    Command {
        key: Some(RequestKey {
            client_id: 9,
            request_id,
        }),
        now: Time {
            secs: 100 + request_id as i64,
            nanos: 0,
        },
        op: FileOp::Create {
            parent: ROOT_INO,
            name: name.as_bytes().to_vec(),
            attrs: NewAttrs {
                mode: 0o644,
                uid: 0,
                gid: 0,
                umask: 0,
            },
        },
    }
}

/// Sends `command` to any node, following "not the leader" answers to the leader.
async fn write(key: &ClusterKey, nodes: &BTreeMap<u64, Running>, command: &Command) -> Reply {
    let addrs = nodes.values().map(|r| r.addr.clone()).collect();
    Writer::new(addrs, key.clone())
        .write(command)
        .await
        .unwrap_or_else(|why| panic!("{why}"))
}

async fn status(key: &ClusterKey, addr: &str) -> smlog_cluster::wire::StatusReport {
    let mut client = Client::connect(addr, key).await.unwrap();
    match client.call(&Request::Status).await.unwrap() {
        Response::Status(report) => report,
        other => panic!("{other:?}"),
    }
}

async fn settle(nodes: &BTreeMap<u64, Running>, last: u64) {
    for running in nodes.values() {
        running
            .node
            .raft()
            .wait(Some(Duration::from_secs(10)))
            .applied_index_at_least(Some(last), "caught up")
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_over_tcp_replicate_report_and_fail_over() {
    let key = ClusterKey::generate();
    let mut nodes = three_nodes(&key).await;
    let first = write(&key, &nodes, &create("a", 1)).await;
    assert!(matches!(first, Reply(Ok(TxnResult::Ino(_)))), "{first:?}");
    let again = write(&key, &nodes, &create("a", 1)).await;
    assert_eq!(again, first, "a retried request ran twice");
    for i in 2..20 {
        write(&key, &nodes, &create(&format!("f{i}"), i)).await;
    }
    let leader = loop {
        let report = status(&key, &nodes[&1].addr).await;
        if let Some(leader) = report.leader {
            break leader;
        }
    };
    // A write sent to a follower is forwarded to the leader and answered.
    let follower = nodes.keys().copied().find(|id| *id != leader).unwrap();
    let mut client = Client::connect(&nodes[&follower].addr, &key).await.unwrap();
    let forwarded = client
        .call(&Request::Write(create("via-follower", 500)))
        .await
        .unwrap();
    assert!(
        matches!(
            forwarded,
            Response::Write(Ok(Written {
                reply: Reply(Ok(TxnResult::Ino(_))),
                ..
            }))
        ),
        "{forwarded:?}"
    );
    // The leader reports every member a voter, each with its replication progress.
    let mut report = status(&key, &nodes[&leader].addr).await;
    for _ in 0..100 {
        if report
            .members
            .iter()
            .all(|m| m.matched == report.last_log_index)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        report = status(&key, &nodes[&leader].addr).await;
    }
    assert_eq!(report.state, "Leader");
    assert_eq!(report.members.len(), 3);
    assert!(
        report
            .members
            .iter()
            .all(|m| m.voter && m.matched == report.last_log_index),
        "{report:?}"
    );
    settle(&nodes, report.last_log_index.unwrap()).await;

    // The leader dies: its server stops answering, its Raft stops.
    let dead = nodes.remove(&leader).unwrap();
    dead.server.abort();
    dead.node.shutdown().await;
    for i in 20..30 {
        write(&key, &nodes, &create(&format!("f{i}"), i)).await;
    }
    let survivor = nodes.values().next().unwrap();
    let report = status(&key, &survivor.addr).await;
    assert_ne!(report.leader, Some(leader));
    // Every acknowledged write is on both survivors once they applied the same prefix
    // (a follower learns the last commit with the next heartbeat).
    let last = nodes
        .values()
        .filter_map(|r| r.node.metrics().last_log_index)
        .max()
        .unwrap();
    settle(&nodes, last).await;
    let trees: Vec<_> = nodes
        .values()
        .map(|r| tree_of(&r.node.engine()).unwrap())
        .collect();
    assert_eq!(trees[0], trees[1]);
    assert_eq!(trees[0].len(), 30, "a, via-follower, f2 ..= f29");
    for running in nodes.values() {
        running.node.shutdown().await;
        running.server.abort();
    }
}

/// Opens a raw connection to `addr`.
async fn raw(addr: &str) -> TcpStream {
    TcpStream::connect(addr).await.unwrap()
}

/// Whether the server closed the connection (reads end or fail).
async fn closed(mut stream: TcpStream) -> bool {
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_on_the_wire_drops_the_connection_and_applies_nothing() {
    let key = ClusterKey::generate();
    let nodes = three_nodes(&key).await;
    write(&key, &nodes, &create("before", 1)).await;
    // Every node knows the membership (a node that knows none hears any key holder).
    let last = nodes[&1].node.metrics().last_log_index.unwrap();
    settle(&nodes, last).await;
    let target = &nodes[&2];
    let before = target.node.metrics().last_log_index;

    // Garbage instead of a hello.
    let mut stream = raw(&target.addr).await;
    stream.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    assert!(closed(stream).await, "garbage");
    // A huge length prefix: refused before anything is allocated.
    let mut stream = raw(&target.addr).await;
    stream.write_all(&u32::MAX.to_le_bytes()).await.unwrap();
    assert!(closed(stream).await, "huge length");
    // A truncated frame, then the peer goes quiet and leaves.
    let mut stream = raw(&target.addr).await;
    stream.write_all(&100u32.to_le_bytes()).await.unwrap();
    stream.write_all(&[1, 2, 3]).await.unwrap();
    stream.shutdown().await.unwrap();
    assert!(closed(stream).await, "truncated");
    // The wrong key, and the right key of another cluster.
    let wrong = ClusterKey {
        cluster_id: key.cluster_id,
        secret: [7; 32],
    };
    let error = Client::connect(&target.addr, &wrong).await.unwrap_err();
    assert!(error.contains("proof"), "{error}");
    let other = ClusterKey::generate();
    assert!(Client::connect(&target.addr, &other).await.is_err());
    // A node that holds the key but is not a member.
    let mut stream = raw(&target.addr).await;
    let stranger = Peer {
        id: 9,
        incarnation: 9,
    };
    let refused = auth::dial(&mut stream, &key, stranger).await;
    let append = Request::Append {
        vote: VoteRecord {
            term: 99,
            node_id: 9,
            committed: true,
        },
        prev: None,
        entries: Vec::new(),
        commit: Some(LogIdRecord {
            term: 99,
            index: 1_000,
        }),
    };
    if refused.is_ok() {
        // The listener checks membership after the proofs: the frame is never read.
        let _ = write_frame(&mut stream, &append).await;
    }
    assert!(closed(stream).await, "a node not in the membership");
    // A member sending a snapshot piece announcing an absurd length: stored as it comes
    // (nothing reserved for the length), and a piece out of order ends the connection.
    let mut stream = raw(&target.addr).await;
    let member = Peer {
        id: 2,
        incarnation: incarnation(2),
    };
    auth::dial(&mut stream, &key, member).await.unwrap();
    let piece = |offset: u64| Request::Snapshot {
        vote: VoteRecord {
            term: 1,
            node_id: 2,
            committed: true,
        },
        meta: smlog_cluster::snapshot::SnapshotMetaRecord {
            last_log_id: Some(LogIdRecord { term: 1, index: 5 }),
            membership_log_id: None,
            membership: smlog_cluster::log_store::records::MembershipRecord {
                configs: Vec::new(),
                nodes: Vec::new(),
            },
        },
        len: 1 << 62,
        offset,
        bytes: vec![0; 4096],
    };
    write_frame(&mut stream, &piece(0)).await.unwrap();
    let answer: Response = read_frame(&mut stream, FRAME_BYTES_MAX).await.unwrap();
    assert_eq!(answer, Response::Done);
    write_frame(&mut stream, &piece(1 << 20)).await.unwrap();
    assert!(closed(stream).await, "a snapshot piece out of order");
    // A command (no node id) sending a Raft message.
    let mut client = Client::connect(&target.addr, &key).await.unwrap();
    assert!(
        client.call(&append).await.is_err(),
        "a command's Raft message"
    );

    // Nothing was applied, and the node still serves.
    let report = status(&key, &target.addr).await;
    assert!(report.term < 99, "the forged vote took effect: {report:?}");
    assert_eq!(target.node.metrics().last_log_index, before);
    write(&key, &nodes, &create("after", 2)).await;
    for running in nodes.values() {
        running.node.shutdown().await;
        running.server.abort();
    }
}

/// A node added after the leader purged the start of its log gets the leader's snapshot
/// over TCP (several 1 MiB pieces), installs it, and then holds what the others hold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_added_after_the_log_was_purged_gets_a_snapshot_over_tcp() {
    let key = ClusterKey::generate();
    let mut nodes = three_nodes_with(&key, Some((10, 2))).await;
    let Reply(Ok(TxnResult::Ino(ino))) = write(&key, &nodes, &create("big", 1)).await else {
        panic!("create failed");
    };
    for i in 0..40u64 {
        let data: Vec<u8> = (0..64 * 1024).map(|b| (b as u64 * 7 + i) as u8).collect();
        let command = Command {
            key: Some(RequestKey {
                client_id: 9,
                request_id: 100 + i,
            }),
            now: Time {
                secs: 200,
                nanos: 0,
            },
            op: FileOp::Write {
                ino,
                offset: i * 64 * 1024,
                data,
            },
        };
        write(&key, &nodes, &command).await;
    }
    for i in 2..20 {
        write(&key, &nodes, &create(&format!("f{i}"), i)).await;
    }
    let report = status(&key, &nodes[&1].addr).await;
    let leader = report.leader.unwrap();
    let leader_node = Arc::clone(&nodes[&leader].node);
    leader_node
        .raft()
        .wait(Some(Duration::from_secs(10)))
        .metrics(|m| m.purged.is_some(), "purged")
        .await
        .unwrap();

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let fourth = start_with(4, &key, listener, Some((10, 2))).await;
    let mut client = Client::connect(&nodes[&leader].addr, &key).await.unwrap();
    let added = client
        .call(&Request::AddLearner {
            id: 4,
            addr: fourth.addr.clone(),
        })
        .await
        .unwrap();
    assert_eq!(added, Response::Done);
    nodes.insert(4, fourth);
    let last = leader_node.metrics().last_log_index.unwrap();
    settle(&nodes, last).await;
    let installed = nodes[&4].node.metrics().snapshot;
    assert!(installed.is_some(), "node 4 caught up without a snapshot");
    let want = tree_of(&leader_node.engine()).unwrap();
    assert_eq!(tree_of(&nodes[&4].node.engine()).unwrap(), want);
    assert!(nodes[&4].node.engine().fsck().is_clean());
    for running in nodes.values() {
        running.node.shutdown().await;
        running.server.abort();
    }
}

/// A node whose directory was made anew (the same id, another incarnation: its Raft log
/// and vote are gone) is refused both ways: the leader sends it nothing, the members
/// answer none of its connections; the others go on and nothing panics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_directory_was_made_anew_is_refused() {
    let key = ClusterKey::generate();
    let mut nodes = three_nodes(&key).await;
    for i in 1..6 {
        write(&key, &nodes, &create(&format!("f{i}"), i)).await;
    }
    let report = status(&key, &nodes[&1].addr).await;
    settle(&nodes, report.last_log_index.unwrap()).await;
    let leader = report.leader.unwrap();
    let wiped = (1..=3).find(|id| *id != leader).unwrap();
    let old = nodes.remove(&wiped).unwrap();
    old.server.abort();
    old.node.shutdown().await;
    let _ = old.server.await;
    // The same id at the same address, from a directory made anew.
    let listener = TcpListener::bind(&old.addr).await.unwrap();
    let anew = start_as(wiped, 7777, &key, listener, None).await;
    for i in 6..12 {
        write(&key, &nodes, &create(&format!("f{i}"), i)).await;
    }
    // Time for a few heartbeats: what the leader would send, it would have sent (without
    // the check, the new directory gets entries, and openraft's leader panics at the log
    // that went back).
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let seen = anew.node.metrics();
    assert_eq!(
        seen.last_log_index, None,
        "the new directory was sent entries"
    );
    // It cannot speak to a member either.
    let mut stream = raw(&nodes[&leader].addr).await;
    let me = Peer {
        id: wiped,
        incarnation: 7777,
    };
    let _ = auth::dial(&mut stream, &key, me).await;
    assert!(closed(stream).await, "a member answered the new directory");
    // The others went on: both hold every write.
    let last = nodes[&leader].node.metrics().last_log_index.unwrap();
    settle(&nodes, last).await;
    let trees: Vec<_> = nodes
        .values()
        .map(|r| tree_of(&r.node.engine()).unwrap())
        .collect();
    assert_eq!(trees[0], trees[1]);
    assert_eq!(trees[0].len(), 11);
    anew.node.shutdown().await;
    anew.server.abort();
    for running in nodes.values() {
        running.node.shutdown().await;
        running.server.abort();
    }
}
