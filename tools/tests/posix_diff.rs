//! The differential POSIX tester (`smlog posix diff`) on an smlog mount against the host's
//! file system (ext4 here; in CI an overlay on ext4): random sequences of system calls, as
//! root and as another user, every answer and the trees they leave compared. Sizes:
//! `SMLOG_POSIX_SEQUENCES` (default 500 per user) of `SMLOG_POSIX_CALLS` (default 50).

mod mount_common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use mount_common::*;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Runs `smlog posix diff` and returns its report; fails the test on any difference.
fn diff(
    reference: &Path,
    subject: &Path,
    first_seed: u64,
    uid: Option<u32>,
    root_calls: usize,
) -> String {
    let sequences = env_or("SMLOG_POSIX_SEQUENCES", 500);
    let calls = env_or("SMLOG_POSIX_CALLS", 50);
    let mut command = Command::new(env!("CARGO_BIN_EXE_smlog"));
    command
        .args(["posix", "diff", "--reference"])
        .arg(reference)
        .arg("--subject")
        .arg(subject)
        .args(["--first-seed", &first_seed.to_string()])
        .args(["--sequences", &sequences.to_string()])
        .args(["--calls", &calls.to_string()])
        .args(["--shrink-seconds", "60"]);
    if let Some(uid) = uid {
        command.args(["--uid", &uid.to_string()]);
        command.args(["--root-calls", &root_calls.to_string()]);
    }
    let output = run_output(&mut command);
    let report = String::from_utf8_lossy(&output.stdout).into_owned();
    eprintln!("{report}{}", String::from_utf8_lossy(&output.stderr));
    assert!(
        output.status.success(),
        "smlog (subject) and the host (reference) answered differently:\n{report}"
    );
    report
}

#[test]
fn random_system_calls_answer_as_on_the_host_file_system() {
    if let Some(why) = fuse_missing() {
        eprintln!("skipped: {why}");
        return;
    }
    let tmp = test_dir("posix");
    let root = tmp.path();
    // Another user must reach both directories.
    fs::set_permissions(root, fs::Permissions::from_mode(0o755)).unwrap();
    let host = root.join("host");
    fs::create_dir(&host).unwrap();
    let dir = root.join("engine");
    let mnt = root.join("mnt");
    let m = match Mounted::start(&dir, &mnt, &["-o", "allow_other,dev"]) {
        Ok(m) => m,
        Err(NotPermitted(log)) => {
            eprintln!("skipped: mounting is not permitted here: {log}");
            return;
        }
    };
    let report = diff(&host, &mnt, 1, None, 0);
    // The sequences reach the errors they are for.
    for errno in [
        "ENOENT",
        "EEXIST",
        "ENOTDIR",
        "EISDIR",
        "ENOTEMPTY",
        "EBADF",
        "ENODATA",
    ] {
        assert!(report.contains(errno), "no {errno} answered: {report}");
    }
    if program_exists("setpriv") {
        for (seed, root_calls) in [(100_000, 0), (200_000, 25)] {
            let report = diff(&host, &mnt, seed, Some(1000), root_calls);
            for errno in ["EACCES", "EPERM"] {
                assert!(report.contains(errno), "no {errno} answered: {report}");
            }
        }
    } else {
        eprintln!("skipped the run as uid 1000: setpriv is missing (util-linux)");
    }
    m.unmount();
    assert_fsck_clean(&dir);
}

/// The sequences through a crash: the mount SIGKILLed right after a random call answered,
/// recovered and remounted, its tree is the host's after some prefix of the calls that
/// holds every one up to the last fsync answered (`SMLOG_POSIX_CRASH_ROUNDS`, default 8,
/// of 300 calls, one in ten an fsync).
#[test]
fn through_a_crash_the_tree_is_a_prefix_holding_every_fsynced_call() {
    if let Some(why) = fuse_missing() {
        eprintln!("skipped: {why}");
        return;
    }
    let tmp = test_dir("posix-crash");
    let root = tmp.path();
    let host = root.join("host");
    fs::create_dir(&host).unwrap();
    let rounds = env_or("SMLOG_POSIX_CRASH_ROUNDS", 8);
    let output = run_output(
        Command::new(env!("CARGO_BIN_EXE_smlog"))
            .args(["posix", "crash", "--reference"])
            .arg(&host)
            .arg("--engine")
            .arg(root.join("engine"))
            .arg("--mountpoint")
            .arg(root.join("mnt"))
            .args(["--rounds", &rounds.to_string(), "--calls", "300"]),
    );
    let report = String::from_utf8_lossy(&output.stdout).into_owned();
    eprintln!("{report}{}", String::from_utf8_lossy(&output.stderr));
    assert!(
        output.status.success(),
        "a crash lost or half applied calls:\n{report}"
    );
    // Most rounds' mounts die while calls still run (a kill after one of the last calls
    // may land after them all).
    let mid: u64 = report
        .split(" killed mid-sequence")
        .next()
        .and_then(|s| s.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(
        mid * 2 >= rounds,
        "{mid} of {rounds} killed mid-sequence: {report}"
    );
    assert_fsck_clean(&root.join("engine"));
}
