//! The `smlog` command on real logs: exit codes and output of `log verify|stat|dump` and
//! `recover`, on clean, torn and corrupted logs, and its errors on bad input.

mod cli_common;

use cli_common::smlog;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use smlog::io::{open_dir, DeviceKind, DeviceOptions};
use smlog::log::writer::CreateOptions;
use smlog::TxnId;
use smlog::{Log, NewRecord};

fn posix() -> DeviceOptions {
    DeviceOptions {
        kind: DeviceKind::Posix,
        ..DeviceOptions::default()
    }
}

/// A log of `count` records, one block-sized batch each, closed or not.
fn make_log(dir: &Path, count: u64, close: bool) {
    let device = Arc::new(open_dir(dir, posix()).unwrap());
    let log = Log::create(device, CreateOptions::default()).unwrap();
    for i in 1..=count {
        let payload = vec![i as u8 | 1; 300];
        log.append_durable(&[NewRecord {
            txn_id: TxnId(i),
            step: 1,
            kind: 2,
            payload: &payload,
        }])
        .unwrap();
    }
    if close {
        log.close().unwrap();
    }
}

fn segment(dir: &Path) -> std::path::PathBuf {
    dir.join("00000000000000000001.seg")
}

fn poke(path: &Path, offset: u64, bytes: &[u8]) {
    use std::os::unix::fs::FileExt;
    let file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    file.write_all_at(bytes, offset).unwrap();
    file.sync_all().unwrap();
}

fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("smlog-cli-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap()
}

#[test]
fn verify_exits_0_on_a_clean_log_and_stat_counts_it() {
    let dir = tempdir();
    make_log(dir.path(), 20, true);
    let out = smlog(&["log", "verify", "--json"], dir.path());
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let value: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(value["status"], "clean");
    assert_eq!(value["records"], 20);
    assert_eq!(value["durable_lsn"], 20);
    let out = smlog(&["log", "stat", "--json"], dir.path());
    let value: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(value["kinds"]["2"], 20);
    assert_eq!(value["next_lsn"], 21);
}

#[test]
fn verify_exits_1_on_a_torn_tail_and_recover_discards_it() {
    let dir = tempdir();
    make_log(dir.path(), 10, false);
    // The last batch (LSN 10, at 4096 + 9 * 4096) loses its record: a torn write.
    poke(&segment(dir.path()), 4096 + 9 * 4096 + 100, &[0xEE; 64]);
    let out = smlog(&["log", "verify"], dir.path());
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("torn tail") && text.contains("LSN 10"),
        "{text}"
    );
    let out = smlog(&["recover", "--dry-run", "--json"], dir.path());
    let value: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(value["next_lsn"], 10);
    // A dry run wrote nothing: still torn.
    assert_eq!(smlog(&["log", "verify"], dir.path()).status.code(), Some(1));
    let out = smlog(&["recover"], dir.path());
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(smlog(&["log", "verify"], dir.path()).status.code(), Some(0));
    let out = smlog(&["recover", "--mode", "strict"], dir.path());
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn verify_exits_2_on_corruption_naming_segment_offset_and_lsn() {
    let dir = tempdir();
    make_log(dir.path(), 10, true);
    poke(&segment(dir.path()), 4096 + 3 * 4096 + 200, &[0x00, 0x11]);
    let out = smlog(&["log", "verify", "--json"], dir.path());
    assert_eq!(out.status.code(), Some(2));
    let value: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(value["status"], "corrupt");
    assert_eq!(value["corruption"][0]["lsn"], 4);
    assert_eq!(value["corruption"][0]["offset"], 4096 + 3 * 4096);
    assert_eq!(value["corruption"][0]["segment"], 1);
    // Recovery refuses, with the place, and changes nothing.
    let out = smlog(&["recover"], dir.path());
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("corruption in segment 1") && err.contains("LSN 4"),
        "{err}"
    );
    // Salvage keeps the nine other records.
    let out = smlog(
        &["recover", "--mode", "salvage", "--dry-run", "--json"],
        dir.path(),
    );
    let value: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(value["records"], 9);
    let out = smlog(&["log", "dump", "--json"], dir.path());
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.iter().filter(|l| l["type"] == "record").count(), 9);
    assert_eq!(lines.iter().filter(|l| l["type"] == "corrupt").count(), 1);
}

#[test]
fn bad_input_gets_a_typed_error_never_a_panic() {
    let dir = tempdir();
    // Not a log.
    let out = smlog(&["log", "stat"], dir.path());
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not an smlog log directory"));
    // A truncated segment.
    make_log(dir.path(), 10, true);
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(segment(dir.path()))
        .unwrap();
    file.set_len(4096 * 5).unwrap();
    let out = smlog(&["log", "verify", "--json"], dir.path());
    let code = out.status.code();
    assert!(
        code == Some(2),
        "{code:?} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A LOG file of another version.
    poke(&dir.path().join("LOG"), 8, &7u32.to_le_bytes());
    let out = smlog(&["log", "stat"], dir.path());
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("LOG"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn a_second_opener_is_told_the_holder_pid() {
    let dir = tempdir();
    make_log(dir.path(), 1, true);
    let _held = open_dir(dir.path(), posix()).unwrap();
    let out = smlog(&["log", "stat"], dir.path());
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    // The kernel's name for this process where it shows one, else the LOCK file's.
    let pid = smlog::io::kernel_lock_holder(dir.path()).unwrap_or(std::process::id());
    assert!(
        err.contains(&format!("in use by another process (pid {pid})")),
        "{err}"
    );
}

/// ramfs refuses O_DIRECT (tmpfs accepts it since Linux 6.6): the error names the path and
/// the option that selects buffered IO, and `--buffered` works there.
#[test]
fn a_file_system_that_refuses_o_direct_is_named_with_the_way_out() {
    let base = tempdir();
    let mount_point = base.path().join("ramfs");
    std::fs::create_dir_all(&mount_point).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "ramfs", "none"])
        .arg(&mount_point)
        .output();
    match mounted {
        Ok(out) if out.status.success() => {}
        _ => {
            eprintln!("skipped: cannot mount a ramfs here (needs root); O_DIRECT refusal untested");
            return;
        }
    }
    let dir = mount_point.join("log");
    let out = Command::new(env!("CARGO_BIN_EXE_smlog"))
        .args(["demo", "--rounds", "1", "--dir"])
        .arg(&dir)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    let buffered = Command::new(env!("CARGO_BIN_EXE_smlog"))
        .args(["demo", "--rounds", "1", "--buffered", "--dir"])
        .arg(&dir)
        .output()
        .unwrap();
    let _ = Command::new("umount").arg(&mount_point).status();
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("refuses O_DIRECT"), "{err}");
    assert!(
        err.contains("--buffered") && err.contains(&dir.display().to_string()),
        "{err}"
    );
    assert!(
        buffered.status.success(),
        "{}",
        String::from_utf8_lossy(&buffered.stderr)
    );
}

#[test]
fn bench_compare_points_to_its_own_binary() {
    let dir = tempdir();
    let out = smlog(&["bench", "compare", "--quick", "--out"], dir.path());
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--bin smlog-bench -- compare"), "{err}");
}
