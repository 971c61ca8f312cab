//! A real process appends through the io_uring device and reports each acknowledged LSN on
//! a pipe; the test SIGKILLs it at random moments, reopens the log, and checks that every
//! acknowledged record is there with the payload the child reported. 20 kills by default
//! (`SMLOG_SIGKILL_ROUNDS` for more).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use smlog::io::uring::UringDevice;
use smlog::io::{open_dir, DeviceOptions};
use smlog_recovery::{open_log, RecoveryOptions};

#[test]
fn sigkill_at_random_moments_loses_no_acknowledged_record() {
    let dir = tempfile::Builder::new()
        .prefix("smlog-sigkill-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap();
    let log_dir = dir.path().join("log");
    std::fs::create_dir_all(&log_dir).unwrap();
    if let Err(error) = UringDevice::open(&dir.path().join("probe"), DeviceOptions::default()) {
        eprintln!("skipped: io_uring is not available here: {error}");
        return;
    }
    let rounds: u32 = std::env::var("SMLOG_SIGKILL_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let mut acked: BTreeMap<u64, u32> = BTreeMap::new();
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut total_recovered = 0;
    for round in 1..=rounds {
        let mut child = Command::new(env!("CARGO_BIN_EXE_smlog"))
            .args(["demo-child", "--threads", "4", "--round"])
            .arg(round.to_string())
            .arg("--dir")
            .arg(&log_dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        assert_eq!(lines.next().unwrap().unwrap(), "ready", "round {round}");
        let reader = std::thread::spawn(move || {
            let mut acks = Vec::new();
            for line in lines {
                let Ok(line) = line else { break };
                let parts: Vec<&str> = line.split_whitespace().collect();
                if let ["ack", lsn, crc] = parts[..] {
                    acks.push((lsn.parse::<u64>().unwrap(), crc.parse::<u32>().unwrap()));
                }
            }
            acks
        });
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        std::thread::sleep(Duration::from_millis(20 + state % 180));
        kill(Pid::from_raw(child.id() as i32), Signal::SIGKILL).unwrap();
        child.wait().unwrap();
        let acks = reader.join().unwrap();
        for (lsn, crc) in acks {
            assert!(
                acked.insert(lsn, crc).is_none(),
                "round {round}: LSN {lsn} acknowledged twice"
            );
        }

        let device = Arc::new(open_dir(&log_dir, DeviceOptions::default()).unwrap());
        let mut recovered = BTreeMap::new();
        let (log, report) = open_log(device, RecoveryOptions::default(), |r| {
            recovered.insert(r.lsn, crc32fast::hash(&r.payload));
        })
        .unwrap_or_else(|e| panic!("round {round}: recovery failed: {e}"));
        drop(log);
        for (lsn, crc) in &acked {
            assert_eq!(
                recovered.get(lsn),
                Some(crc),
                "round {round}: acknowledged LSN {lsn} lost or changed"
            );
        }
        assert!(report.record_count as usize >= acked.len());
        total_recovered = report.record_count;
    }
    assert!(!acked.is_empty(), "the child never acknowledged anything");
    eprintln!(
        "{rounds} SIGKILLs: {} acknowledged records checked, {total_recovered} recovered",
        acked.len()
    );
}
