//! `smlog cluster` as a user runs it: three node processes on loopback made with `init`,
//! grown with `add`, a writer publishing files (create, write, rename into place) through
//! the nodes while the leader is SIGKILLed ten times and restarted each time; afterwards
//! every acknowledged file is byte for byte on every node, the trees are equal and fsck is
//! clean everywhere. Failover times are printed (a figure, not an assertion).

mod cluster_common;

use std::process::Command as Process;
use std::time::{Duration, Instant};

use cluster_common::{leader, smlog, status, volume, Nodes};

use smlog::{Ino, NewAttrs, RenameFlags, RequestKey, SetAttrChanges, Time, TxnResult, ROOT_INO};
use smlog_cluster::auth::ClusterKey;
use smlog_cluster::tcp::Writer;
use smlog_cluster::{Command, FileOp, Reply};
use smlog_recovery::harness::fs::tree_of;

/// Sends `command` until a node applies it, following "not the leader" answers; a retry
/// carries the same request key, so it never takes effect twice.
async fn write(nodes: &[String], key: &ClusterKey, command: &Command) -> Reply {
    Writer::new(nodes.to_vec(), key.clone())
        .write(command)
        .await
        .unwrap_or_else(|why| panic!("{why}"))
}

fn content(i: u64) -> Vec<u8> {
    (0..9_000 + i * 37).map(|b| (b * 31 + i) as u8).collect()
}

/// Publishes file `i`: create `tmp-i`, write its bytes, rename it to `f-i`.
async fn publish(nodes: &[String], key: &ClusterKey, i: u64) {
    let command = |n: u64, op: FileOp| Command {
        key: Some(RequestKey {
            client_id: 77,
            request_id: i * 3 + n,
        }),
        now: Time {
            secs: 1_000 + i as i64,
            nanos: 0,
        },
        op,
    };
    let tmp = format!("tmp-{i}").into_bytes();
    let create = FileOp::Create {
        parent: ROOT_INO,
        name: tmp.clone(),
        attrs: NewAttrs {
            mode: 0o644,
            uid: 0,
            gid: 0,
            umask: 0,
        },
    };
    let Reply(Ok(TxnResult::Ino(ino))) = write(nodes, key, &command(0, create)).await else {
        panic!("create of file {i} refused");
    };
    let data = FileOp::Write {
        ino,
        offset: 0,
        data: content(i),
    };
    let written = write(nodes, key, &command(1, data)).await;
    assert!(matches!(written, Reply(Ok(_))), "{written:?}");
    let rename = FileOp::Rename {
        from_parent: ROOT_INO,
        from_name: tmp,
        to_parent: ROOT_INO,
        to_name: format!("f-{i}").into_bytes(),
        flags: RenameFlags::default(),
    };
    let renamed = write(nodes, key, &command(2, rename)).await;
    assert!(matches!(renamed, Reply(Ok(_))), "{renamed:?}");
    let _: Ino = ino;
}

#[test]
fn three_node_processes_keep_every_acknowledged_file_through_ten_leader_kills() {
    let root = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let mut nodes = Nodes::init(root.path(), 3);
    let (addrs, dirs, key) = (nodes.addrs.clone(), nodes.dirs.clone(), nodes.key.clone());
    let key_file = nodes.key_file.clone();
    for i in 0..3 {
        nodes.serve(i);
    }
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        leader(&nodes, &key).await;
    });
    for i in 1..3 {
        nodes.add(i);
    }
    let shown = smlog(&[
        "cluster",
        "status",
        &addrs[0],
        "--key",
        key_file.to_str().unwrap(),
        "--json",
    ]);
    let shown: serde_json::Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(shown["members"].as_array().unwrap().len(), 3, "{shown}");

    let mut published = 0u64;
    let mut failovers = Vec::new();
    runtime.block_on(async {
        for _ in 0..5 {
            publish(&addrs, &key, published).await;
            published += 1;
        }
        for _kill in 0..10 {
            let victim = leader(&nodes, &key).await;
            nodes.kill(victim);
            let killed_at = Instant::now();
            // The first write a survivor applies after the kill (a chmod of the root,
            // which changes no file).
            let probe = Command {
                key: Some(RequestKey {
                    client_id: 78,
                    request_id: failovers.len() as u64,
                }),
                now: Time { secs: 1, nanos: 0 },
                op: FileOp::SetAttr {
                    ino: ROOT_INO,
                    changes: SetAttrChanges {
                        mode: Some(0o755),
                        ..SetAttrChanges::default()
                    },
                },
            };
            write(&addrs, &key, &probe).await;
            failovers.push(killed_at.elapsed());
            for _ in 0..3 {
                publish(&addrs, &key, published).await;
                published += 1;
            }
            nodes.serve(victim);
        }
        // Every node catches up with the leader's log.
        let lead = leader(&nodes, &key).await;
        let last = status(&addrs[lead], &key).await.unwrap().last_log_index;
        for addr in &addrs {
            for _ in 0..200 {
                if status(addr, &key).await.and_then(|r| r.applied) >= last {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    });
    failovers.sort();
    eprintln!(
        "cluster: failover (leader SIGKILLed until a survivor applied a write) over {} \
         kills: p50 {:?}, max {:?}",
        failovers.len(),
        failovers[failovers.len() / 2],
        failovers.last().unwrap()
    );
    nodes.stop_all();

    let mut trees = Vec::new();
    for dir in &dirs {
        let engine = volume(dir);
        for i in 0..published {
            let name = format!("f-{i}");
            let stat = engine
                .lookup(ROOT_INO, name.as_bytes())
                .unwrap_or_else(|e| panic!("{}: {name} lost: {e}", dir.display()));
            let bytes = engine.read(stat.ino, 0, 1 << 20).unwrap();
            assert_eq!(bytes, content(i), "{}: {name}", dir.display());
        }
        let fsck = engine.fsck();
        assert!(fsck.is_clean(), "{}: {:?}", dir.display(), fsck.problems);
        trees.push(tree_of(&engine).unwrap());
    }
    assert_eq!(trees[0], trees[1]);
    assert_eq!(trees[0], trees[2]);
    assert_eq!(trees[0].len() as u64, published, "no stray temporary file");
}

/// `smlog torture --cluster` runs a seed of the cluster simulation and reports what it
/// checked.
#[test]
fn torture_cluster_runs_a_seed_and_reports_what_it_checked() {
    let out = smlog(&[
        "torture",
        "--cluster",
        "--seed",
        "7",
        "--nodes",
        "3",
        "--json",
    ]);
    let report: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(report["failed"], false, "{report}");
    assert_eq!(report["seeds"], 1);
    assert!(report["entries_checked"].as_u64().unwrap() > 0, "{report}");
    assert!(report["acknowledged"].as_u64().unwrap() > 0, "{report}");
}

/// `smlog demo --cluster` as the README runs it (one kill here): it exits 0 and says every
/// file is intact on every node.
#[test]
fn demo_cluster_checks_every_file_on_every_node() {
    let root = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let dir = root.path().join("demo");
    let out = Process::new(cluster_common::SMLOG)
        .args(["demo", "--cluster", "--kills", "1", "--dir"])
        .arg(&dir)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for node in 1..=3 {
        assert!(
            said.contains(&format!(
                "node {node}: 41 files: every file intact, fsck clean"
            )),
            "{said}"
        );
    }
    assert!(said.contains("the three trees are equal"), "{said}");
}

/// `smlog bench cluster --json` reports every row and figure (values are not checked: a
/// benchmark is not a test of speed).
#[test]
fn bench_cluster_reports_its_rows() {
    let root = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let out = Process::new(cluster_common::SMLOG)
        .args([
            "bench",
            "cluster",
            "--clients",
            "1,4",
            "--seconds",
            "0.3",
            "--kills",
            "1",
            "--catch-up-mb",
            "1",
            "--json",
            "--dir",
        ])
        .arg(root.path())
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<serde_json::Value> = said
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(rows.len(), 5, "{said}");
    for row in &rows[..4] {
        assert!(row["cluster_ops_per_sec"].as_f64().unwrap() > 0.0, "{row}");
        assert!(row["single_ops_per_sec"].as_f64().unwrap() > 0.0, "{row}");
        // Every replicated change is a record of the leader's log: at least one per sync.
        assert!(
            row["leader_records_per_sync"].as_f64().unwrap() >= 1.0,
            "{row}"
        );
    }
    assert_eq!(rows[4]["kills"], 1, "{said}");
    assert!(rows[4]["catch_up_mb"].as_f64().unwrap() >= 1.0, "{said}");
    // The nodes went with the run.
    let left: Vec<_> = std::fs::read_dir(root.path()).unwrap().collect();
    assert!(left.is_empty(), "{left:?}");
}

/// A node whose Raft log alone was lost (its `raft/` removed, its volume kept) is refused
/// at `serve`, with what to do: it lost its vote, and must not rejoin as the member it was.
#[test]
fn serve_refuses_a_node_whose_raft_log_was_lost() {
    let root = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let mut nodes = Nodes::init(root.path(), 1);
    let (dir, key) = (nodes.dirs[0].clone(), nodes.key.clone());
    nodes.serve(0);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        leader(&nodes, &key).await;
    });
    nodes.stop_all();
    std::fs::remove_dir_all(dir.join("raft")).unwrap();
    let out = Process::new(cluster_common::SMLOG)
        .args(["cluster", "serve"])
        .arg(&dir)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{said}");
    assert!(said.contains("log and vote are lost"), "{said}");
    assert!(!said.contains("panicked"), "{said}");
}
