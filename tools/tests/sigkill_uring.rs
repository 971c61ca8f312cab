//! Real processes: `smlog demo` runs a file workload in a child process on the io_uring
//! device, SIGKILLs it at random moments, recovers, and checks every file the child
//! acknowledged byte for byte (and fsck) after each kill. 20 kills by default
//! (`SMLOG_SIGKILL_ROUNDS` for more); then `smlog fsck` must find the store clean and
//! `smlog txn list --in-flight` nothing left in flight.

use std::process::Command;

use smlog::io::uring::UringDevice;
use smlog::io::DeviceOptions;

#[test]
fn sigkill_during_file_transactions_loses_no_acknowledged_file() {
    let dir = tempfile::Builder::new()
        .prefix("smlog-sigkill-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap();
    if let Err(error) = UringDevice::open(&dir.path().join("probe"), DeviceOptions::default()) {
        eprintln!("skipped: io_uring is not available here: {error}");
        return;
    }
    let engine_dir = dir.path().join("engine");
    let rounds: u32 = std::env::var("SMLOG_SIGKILL_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let smlog = env!("CARGO_BIN_EXE_smlog");
    let output = Command::new(smlog)
        .args(["demo", "--threads", "4", "--rounds"])
        .arg(rounds.to_string())
        .arg("--dir")
        .arg(&engine_dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    eprintln!("{stdout}");
    assert!(
        output.status.success(),
        "demo failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains(&format!(
        "{rounds} SIGKILLs: every acknowledged file survived whole"
    )));
    assert!(!stdout.contains("PROBLEM"));
    let fsck = Command::new(smlog)
        .arg("fsck")
        .arg(&engine_dir)
        .output()
        .unwrap();
    assert!(
        fsck.status.success(),
        "fsck: {}",
        String::from_utf8_lossy(&fsck.stdout)
    );
    let in_flight = Command::new(smlog)
        .args(["txn", "list", "--in-flight"])
        .arg(&engine_dir)
        .output()
        .unwrap();
    assert!(in_flight.status.success());
    assert!(
        in_flight.stdout.is_empty(),
        "left in flight: {}",
        String::from_utf8_lossy(&in_flight.stdout)
    );
}
