//! `smlog txn list|show`, `smlog recover --dry-run` and `smlog fsck` on an engine killed
//! in the middle of its work.

mod cli_common;

use cli_common::smlog;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// Every file in `dir` and its bytes.
fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().unwrap().is_file() && e.file_name() != "LOCK")
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect()
}

/// An engine directory whose writer was SIGKILLed mid-flight.
fn killed_engine(base: &Path) -> std::path::PathBuf {
    let dir = base.join("engine");
    let mut child = Command::new(env!("CARGO_BIN_EXE_smlog"))
        .args([
            "demo-child",
            "--threads",
            "4",
            "--round",
            "1",
            "--posix",
            "--dir",
        ])
        .arg(&dir)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut first = [0u8; 5];
    std::io::Read::read_exact(&mut stdout, &mut first).unwrap();
    assert_eq!(&first, b"ready");
    std::thread::sleep(Duration::from_millis(300));
    child.kill().unwrap();
    child.wait().unwrap();
    dir
}

#[test]
fn txn_tools_show_the_log_and_recover_finishes_what_was_in_flight() {
    let base = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let dir = killed_engine(base.path());

    // txn list: one JSON object per transaction.
    let list = smlog(&["txn", "list", "--posix", "--json"], &dir);
    assert!(
        list.status.success(),
        "{}",
        String::from_utf8_lossy(&list.stderr)
    );
    let rows: Vec<serde_json::Value> = String::from_utf8_lossy(&list.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(rows.len() > 10, "{} transactions", rows.len());
    let committed = rows
        .iter()
        .find(|r| {
            r["end"]["state"] == "committed" && r["op"].as_str().unwrap().starts_with("rename")
        })
        .expect("a committed rename");
    let txn_id = committed["txn_id"].as_u64().unwrap();

    // txn show: its steps with state, redo and undo, then the commit.
    let show = Command::new(env!("CARGO_BIN_EXE_smlog"))
        .args(["txn", "show", "--posix", "--json"])
        .arg(&dir)
        .arg(txn_id.to_string())
        .output()
        .unwrap();
    assert!(show.status.success());
    let steps: Vec<serde_json::Value> = String::from_utf8_lossy(&show.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(steps.last().unwrap()["kind"], "commit");
    assert!(steps.iter().any(|s| s["state"] == "Inserted"), "{steps:?}");
    assert!(steps
        .iter()
        .any(|s| s["redo"].as_str().unwrap().contains("DirInsert")));
    let missing = Command::new(env!("CARGO_BIN_EXE_smlog"))
        .args(["txn", "show", "--posix"])
        .arg(&dir)
        .arg("999999999")
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(1));

    // recover --dry-run writes nothing and says what it would do.
    let before = files(&dir);
    let dry = smlog(&["recover", "--posix", "--dry-run", "--json"], &dir);
    assert!(
        dry.status.success(),
        "{}",
        String::from_utf8_lossy(&dry.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&dry.stdout).unwrap();
    assert_eq!(report["dry_run"], true);
    let in_flight = report["in_flight"].as_array().unwrap().len();
    assert_eq!(files(&dir), before, "a dry run changed files");
    let listed = smlog(&["txn", "list", "--posix", "--in-flight"], &dir);
    assert_eq!(
        String::from_utf8_lossy(&listed.stdout).lines().count(),
        in_flight
    );

    // recover, then nothing is in flight and fsck is clean.
    let recover = smlog(&["recover", "--posix"], &dir);
    assert!(
        recover.status.success(),
        "{}",
        String::from_utf8_lossy(&recover.stderr)
    );
    let listed = smlog(&["txn", "list", "--posix", "--in-flight"], &dir);
    assert!(
        listed.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&listed.stdout)
    );
    let fsck = smlog(&["fsck", "--posix", "--json"], &dir);
    assert!(
        fsck.status.success(),
        "{}",
        String::from_utf8_lossy(&fsck.stdout)
    );
    let fsck: serde_json::Value = serde_json::from_slice(&fsck.stdout).unwrap();
    assert_eq!(fsck["clean"], true);
    assert!(fsck["inode_count"].as_u64().unwrap() > 4);
}

#[test]
fn fsck_refuses_a_damaged_checkpoint_with_an_error() {
    let base = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let dir = killed_engine(base.path());
    let checkpoint = smlog(&["checkpoint", "--posix", "--json"], &dir);
    assert!(
        checkpoint.status.success(),
        "{}",
        String::from_utf8_lossy(&checkpoint.stderr)
    );
    let stats: serde_json::Value = serde_json::from_slice(&checkpoint.stdout).unwrap();
    let seq = stats["seq"].as_u64().unwrap();
    let image = dir.join(format!("ckpt-{seq:020}.img"));
    assert!(smlog(&["fsck", "--posix"], &dir).status.success());
    let mut bytes = std::fs::read(&image).unwrap();
    bytes[100] ^= 0xFF;
    std::fs::write(&image, bytes).unwrap();
    let fsck = smlog(&["fsck", "--posix"], &dir);
    assert!(!fsck.status.success());
    assert!(
        String::from_utf8_lossy(&fsck.stderr).contains("CRC"),
        "{}",
        String::from_utf8_lossy(&fsck.stderr)
    );
}
