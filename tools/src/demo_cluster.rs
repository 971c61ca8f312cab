//! `smlog demo --cluster`: three node processes on loopback serve one replicated volume; a
//! writer publishes files through them (create under a temporary name, write, rename into
//! place), each step a replicated command with its own request key; the leader is
//! SIGKILLed several times mid-stream and started again; at the end every published file
//! is checked byte for byte on every node's volume, the trees compared and fsck run.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use smlog::{NewAttrs, RenameFlags, RequestKey, Time, TxnResult, ROOT_INO};
use smlog_cluster::command::WRITE_BYTES_MAX;
use smlog_cluster::{Command, FileOp, Reply};
use smlog_recovery::harness::fs::tree_of;
use smlog_recovery::OpenOptions;

use crate::local_cluster::{LocalCluster, Writer};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// Files published between two kills.
const FILES_PER_ROUND: u64 = 20;

/// The bytes of published file `n`.
pub fn content(n: u64) -> Vec<u8> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(n ^ 0xC1u64 << 40);
    let len = if rng.gen_bool(0.2) {
        rng.gen_range(64 * 1024..300 * 1024)
    } else {
        rng.gen_range(1..16 * 1024)
    };
    let mut bytes = vec![0u8; len];
    rng.fill(&mut bytes[..]);
    bytes
}

/// The command for step `step` of publishing file `n`.
fn command(n: u64, step: u64, op: FileOp) -> Command {
    Command {
        key: Some(RequestKey {
            client_id: 0xDE40,
            request_id: n * 64 + step,
        }),
        now: Time::now(),
        op,
    }
}

/// Publishes file `n` as `f-n`: created as `tmp-n`, written (in pieces of at most 64 KiB,
/// one command each), renamed into place.
pub async fn publish(writer: &mut Writer, n: u64) -> Result<()> {
    let tmp = format!("tmp-{n}").into_bytes();
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
    let ino = match writer.write(&command(n, 0, create)).await? {
        Reply(Ok(TxnResult::Ino(ino))) => ino,
        other => return Err(format!("creating tmp-{n}: {other:?}").into()),
    };
    let bytes = content(n);
    for (i, piece) in bytes.chunks(WRITE_BYTES_MAX).enumerate() {
        let write = FileOp::Write {
            ino,
            offset: (i * WRITE_BYTES_MAX) as u64,
            data: piece.to_vec(),
        };
        if let Reply(Err(errno)) = writer.write(&command(n, 1 + i as u64, write)).await? {
            return Err(format!("writing tmp-{n}: errno {errno}").into());
        }
    }
    let rename = FileOp::Rename {
        from_parent: ROOT_INO,
        from_name: tmp,
        to_parent: ROOT_INO,
        to_name: format!("f-{n}").into_bytes(),
        flags: RenameFlags::default(),
    };
    if let Reply(Err(errno)) = writer.write(&command(n, 63, rename)).await? {
        return Err(format!("renaming tmp-{n}: errno {errno}").into());
    }
    Ok(())
}

/// `smlog demo --cluster`.
pub fn run(dir: Option<PathBuf>, kills: u32) -> Result<ExitCode> {
    let root = dir.unwrap_or_else(|| {
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        PathBuf::from(format!("/var/tmp/smlog-demo-cluster-{stamp}"))
    });
    std::fs::create_dir_all(&root)?;
    println!("smlog demo --cluster: three node processes on loopback replicate one volume");
    println!("(Raft on smlog's log). A writer publishes files through them (create, write,");
    println!("rename into place); the leader is SIGKILLed {kills} times mid-stream and started");
    println!("again. Then every file is checked byte for byte on every node, and fsck runs.");
    println!("Nodes in {}\n", root.display());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let (published, failovers, mut cluster) =
        runtime.block_on(publish_through_kills(&root, kills))?;
    cluster.stop_all();
    let mut ok = true;
    let mut trees = Vec::new();
    for (i, dir) in cluster.dirs.iter().enumerate() {
        let (engine, _) = smlog_recovery::open(&dir.join("volume"), OpenOptions::default())?;
        let mut bad = Vec::new();
        for n in 0..published {
            let name = format!("f-{n}");
            let same = engine
                .lookup(ROOT_INO, name.as_bytes())
                .and_then(|stat| engine.read(stat.ino, 0, 1 << 20));
            if !matches!(&same, Ok(bytes) if *bytes == content(n)) {
                bad.push(name);
            }
        }
        let fsck = engine.fsck();
        let verdict = if bad.is_empty() && fsck.is_clean() {
            "every file intact, fsck clean".to_string()
        } else {
            ok = false;
            format!("WRONG: files {bad:?}, fsck {:?}", fsck.problems)
        };
        println!("node {}: {published} files: {verdict}", i + 1);
        trees.push(tree_of(&engine)?);
        engine.shutdown()?;
    }
    if trees.windows(2).any(|pair| pair[0] != pair[1]) {
        ok = false;
        println!("WRONG: the nodes' trees differ");
    } else {
        println!("the three trees are equal");
    }
    let mut sorted = failovers.clone();
    sorted.sort();
    if let (Some(p50), Some(max)) = (sorted.get(sorted.len() / 2), sorted.last()) {
        println!(
            "failover (SIGKILL of the leader to the next file published): p50 {:.2} s, max {:.2} s \
             over {} kills",
            p50.as_secs_f64(),
            max.as_secs_f64(),
            sorted.len()
        );
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Starts the nodes and publishes files, killing the leader `kills` times; returns how many
/// files were published, each failover's time, and the running cluster.
async fn publish_through_kills(
    root: &std::path::Path,
    kills: u32,
) -> Result<(u64, Vec<Duration>, LocalCluster)> {
    let mut cluster = LocalCluster::create(root, 3).await?;
    let mut writer = cluster.writer();
    let mut published = 0;
    let mut failovers = Vec::new();
    for kill in 0..=kills {
        for _ in 0..FILES_PER_ROUND {
            publish(&mut writer, published).await?;
            published += 1;
        }
        if kill == kills {
            break;
        }
        let victim = cluster.leader().await?;
        cluster.kill(victim);
        let killed = Instant::now();
        publish(&mut writer, published).await?;
        published += 1;
        failovers.push(killed.elapsed());
        println!(
            "kill {}: node {} (the leader) SIGKILLed; the next file was published {:.2} s later",
            kill + 1,
            victim + 1,
            killed.elapsed().as_secs_f64()
        );
        cluster.serve(victim)?;
    }
    cluster.settle().await?;
    Ok((published, failovers, cluster))
}
