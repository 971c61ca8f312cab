//! A full data file: space a delete frees is usable at once (a checkpoint taken under
//! space pressure), and what fills it is refused with ENOSPC while the engine goes on.
//! (The engine's capacity limit stands in for a full host file system here.)

mod fs_common;

use std::sync::Arc;

use fs_common::*;
use smlog::io::sim::SimDevice;
use smlog::TxnId;
use smlog::{Durability, FsError, LogError, NewAttrs, ROOT_INO};

const FILE: NewAttrs = NewAttrs {
    mode: 0o644,
    uid: 0,
    gid: 0,
    umask: 0,
};

#[test]
fn space_freed_by_a_delete_is_usable_at_once_when_the_data_file_is_full() {
    let device = Arc::new(SimDevice::new(3));
    device.set_deterministic(true);
    let mut options = test_options();
    // 64 blocks of data file.
    options.engine.data_capacity_bytes = 64 * 4096;
    let (engine, _) = open_sim(&device, options).unwrap();
    let chunk = vec![7u8; 40 * 4096];
    let a = engine
        .create(ROOT_INO, b"a", FILE, Durability::Sync)
        .unwrap();
    engine.write(a.ino, 0, &chunk, Durability::Sync).unwrap();
    let b = engine
        .create(ROOT_INO, b"b", FILE, Durability::Sync)
        .unwrap();
    let full = engine
        .write(b.ino, 0, &chunk, Durability::Sync)
        .unwrap_err();
    assert!(matches!(full, FsError::NoSpace(_)), "{full}");
    assert_eq!(full.errno(), libc::ENOSPC);
    assert_eq!(engine.statfs().unwrap().blocks_free, 24);
    // Deleting `a` frees its blocks; the next write needing them gets them.
    engine.unlink(ROOT_INO, b"a", Durability::Sync).unwrap();
    engine.write(b.ino, 0, &chunk, Durability::Sync).unwrap();
    assert_eq!(engine.read(b.ino, 0, chunk.len()).unwrap(), chunk);
    assert!(engine.fsck().is_clean(), "{:?}", engine.fsck().problems);
    // And all of it survives a crash.
    drop(engine);
    device.crash();
    device.restart(&smlog::io::sim::CrashPlan::power_loss());
    let (engine, _) = open_sim(&device, options).unwrap();
    assert_eq!(engine.read(b.ino, 0, chunk.len()).unwrap(), chunk);
    assert!(engine.lookup(ROOT_INO, b"a").is_err());
    assert!(engine.fsck().is_clean());
}

/// A small ext4 file system on a loop device, mounted for one test and unmounted after it.
struct SmallDisk {
    mount_point: std::path::PathBuf,
}

impl SmallDisk {
    /// `None`, after one line saying why, where this machine cannot make one (not root,
    /// no loop devices, no mkfs.ext4).
    fn new(name: &str, size_mib: u64) -> Option<SmallDisk> {
        use std::process::Command;
        let base = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
        let image = base.with_extension("img");
        let mount_point = base.join("mnt");
        let _ = Command::new("umount").arg(&mount_point).output();
        std::fs::create_dir_all(&mount_point).unwrap();
        let _ = std::fs::remove_file(&image);
        let file = std::fs::File::create(&image).unwrap();
        file.set_len(size_mib << 20).unwrap();
        drop(file);
        let steps: [&[&str]; 2] = [
            &["mkfs.ext4", "-q", "-F", "-m", "0"],
            &["mount", "-o", "loop"],
        ];
        for (i, step) in steps.iter().enumerate() {
            let mut command = Command::new(step[0]);
            command.args(&step[1..]).arg(&image);
            if i == 1 {
                command.arg(&mount_point);
            }
            match command.output() {
                Ok(out) if out.status.success() => {}
                Ok(out) => {
                    eprintln!(
                        "skipped: {} failed here ({}); a small loop-mounted ext4 needs root and \
                         loop devices",
                        step[0],
                        String::from_utf8_lossy(&out.stderr).trim()
                    );
                    return None;
                }
                Err(e) => {
                    eprintln!("skipped: cannot run {}: {e}", step[0]);
                    return None;
                }
            }
        }
        Some(SmallDisk { mount_point })
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.mount_point)
            .output();
    }
}

/// The host file system itself fills (a 40 MiB ext4 on a loop device): new work is
/// refused with ENOSPC and nothing else fails; deletes go on and their space is usable at
/// once; a checkpoint and a recovery work on the full disk; no log segment is ever sparse;
/// `statfs` says how little is left.
#[test]
fn a_full_host_file_system_refuses_new_work_and_nothing_else() {
    use std::os::unix::fs::MetadataExt;
    let Some(disk) = SmallDisk::new("disk-full-host", 40) else {
        return;
    };
    let dir = disk.mount_point.join("store");
    let options = smlog_recovery::OpenOptions {
        engine: smlog::EngineOptions {
            checkpoint_log_bytes: 0,
            checkpoint_dirty_bytes: 0,
            segment_size_bytes: 1 << 20,
            ..smlog::EngineOptions::default()
        },
        create: true,
        ..smlog_recovery::OpenOptions::default()
    };
    let (engine, _) = smlog_recovery::open(&dir, options).unwrap();
    // Large writes (straight to the data file) and small ones (logged, written at the next
    // checkpoint), until the host refuses.
    let big = vec![0xA5u8; 256 * 1024];
    let mut files = Vec::new();
    let mut refused = None;
    for i in 0..1000u32 {
        let name = format!("f{i}");
        let file = match engine.create(ROOT_INO, name.as_bytes(), FILE, Durability::Sync) {
            Ok(file) => file,
            Err(e) => {
                refused = Some(e);
                break;
            }
        };
        let data = if i % 2 == 0 { &big[..] } else { &big[..3000] };
        match engine.write(file.ino, 0, data, Durability::Sync) {
            Ok(_) => files.push((name, file.ino, data.len())),
            Err(e) => {
                refused = Some(e);
                break;
            }
        }
    }
    let refused = refused.expect("40 MiB filled");
    assert_eq!(refused.errno(), libc::ENOSPC, "{refused}");
    assert!(engine.stopped().is_none(), "{:?}", engine.stopped());
    // Small creates (the log, and the image, grow; checkpoints under space pressure give
    // the log's segments back) succeed or are refused with ENOSPC; nothing fails.
    let mut small_refused = 0;
    for i in 0..3000u32 {
        let name = format!("s{i}");
        if let Err(e) = engine.create(ROOT_INO, name.as_bytes(), FILE, Durability::Sync) {
            assert_eq!(e.errno(), libc::ENOSPC, "{e}");
            small_refused += 1;
        }
    }
    eprintln!("{small_refused} of 3000 small creates refused on the full disk");
    assert!(engine.stopped().is_none(), "{:?}", engine.stopped());
    let host_free = nix_free_bytes(&dir);
    let statfs = engine.statfs().unwrap();
    assert!(
        statfs.blocks_free * statfs.block_size_bytes <= host_free + (1 << 20),
        "statfs says {} blocks free, the host has {host_free} bytes",
        statfs.blocks_free
    );
    // Reads go on.
    for (_, ino, len) in files.iter().take(3) {
        assert_eq!(engine.read(*ino, 0, *len).unwrap(), big[..*len]);
    }
    // Deletes go on, and their space is usable at once.
    let removed = files.len() / 2;
    for (name, _, _) in files.drain(..removed) {
        engine
            .unlink(ROOT_INO, name.as_bytes(), Durability::Sync)
            .unwrap_or_else(|e| panic!("unlink {name} on a full disk: {e}"));
    }
    let again = engine
        .create(ROOT_INO, b"again", FILE, Durability::Sync)
        .unwrap();
    engine.write(again.ino, 0, &big, Durability::Sync).unwrap();
    files.push(("again".into(), again.ino, big.len()));
    // A checkpoint works on the full disk; so does recovery after a crash.
    engine.checkpoint().unwrap();
    drop(engine);
    let (engine, _) = smlog_recovery::open(&dir, options).unwrap();
    for (name, ino, len) in &files {
        let found = engine.lookup(ROOT_INO, name.as_bytes()).unwrap();
        assert_eq!(found.ino, *ino);
        assert_eq!(engine.read(*ino, 0, *len).unwrap(), big[..*len], "{name}");
    }
    assert!(engine.fsck().is_clean(), "{:?}", engine.fsck().problems);
    engine.shutdown().unwrap();
    drop(engine);
    // No segment file has a hole, and no half-filled one is left.
    for entry in std::fs::read_dir(&dir).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().into_string().unwrap();
        assert!(!name.ends_with(".filling"), "{name} left behind");
        if name.ends_with(".seg") {
            let meta = entry.metadata().unwrap();
            assert!(meta.blocks() * 512 >= meta.len(), "{name} is sparse");
        }
    }
    let (engine, _) = smlog_recovery::open(&dir, options).unwrap();
    assert!(engine.fsck().is_clean());
}

fn nix_free_bytes(dir: &std::path::Path) -> u64 {
    let stat = nix::sys::statvfs::statvfs(dir).unwrap();
    stat.blocks_available() as u64 * stat.fragment_size() as u64
}

/// The host file system has no room for the log's next segment (a 24 MiB ext4 filled by
/// another file): appends are refused with `LogError::NoSpace` and the log does not fail;
/// the end of the last ready segment stays for `append_reserved` (deletes, later steps);
/// once space is back, appends go on, and every acknowledged record is recovered.
#[test]
fn the_log_refuses_appends_but_keeps_a_reserve_when_the_host_has_no_room_for_segments() {
    let Some(disk) = SmallDisk::new("log-full-host", 24) else {
        return;
    };
    let dir = disk.mount_point.join("log");
    std::fs::create_dir_all(&dir).unwrap();
    let device: Arc<Box<dyn smlog::io::Device>> =
        Arc::new(smlog::io::open_dir(&dir, smlog::io::DeviceOptions::default()).unwrap());
    let log = smlog::Log::create(
        Arc::clone(&device),
        smlog::log::writer::CreateOptions {
            segment_size_bytes: 1 << 20,
        },
    )
    .unwrap();
    // Another file takes all but 512 KiB of the host.
    let filler = std::fs::File::create(disk.mount_point.join("filler")).unwrap();
    let free = nix_free_bytes(&dir);
    nix::fcntl::fallocate(
        std::os::fd::AsRawFd::as_raw_fd(&filler),
        nix::fcntl::FallocateFlags::empty(),
        0,
        (free - (512 << 10)) as i64,
    )
    .unwrap();
    let payload = vec![0x3Cu8; 2000];
    let record = |lsn: u64| smlog::NewRecord {
        txn_id: TxnId(lsn),
        step: 1,
        kind: 1,
        payload: &payload,
    };
    let mut acknowledged = 0u64;
    let refused = loop {
        match log.append_durable(&[record(acknowledged + 1)]) {
            Ok(_) => acknowledged += 1,
            Err(e) => break e,
        }
        assert!(acknowledged < 10_000, "never refused");
    };
    assert!(matches!(refused, LogError::NoSpace), "{refused}");
    assert_eq!(refused.errno(), libc::ENOSPC);
    assert!(log.failure().is_none(), "{:?}", log.failure());
    // The reserve: work that frees space still gets in, up to the end of the segment.
    let mut reserved = 0;
    let end = loop {
        match log.append_reserved(&[record(acknowledged + 1)]) {
            Ok(lsn) => {
                log.wait_durable(lsn).unwrap();
                acknowledged += 1;
                reserved += 1;
            }
            Err(e) => break e,
        }
        assert!(reserved < 10_000, "the reserve never ended");
    };
    assert!(reserved >= 8, "only {reserved} appends in the reserve");
    assert!(matches!(end, LogError::NoSpace), "{end}");
    assert!(log.failure().is_none(), "{:?}", log.failure());
    // Space back: appends go on into a new, whole segment.
    drop(filler);
    std::fs::remove_file(disk.mount_point.join("filler")).unwrap();
    log.retry_segments();
    for _ in 0..600 {
        log.append_durable(&[record(acknowledged + 1)]).unwrap();
        acknowledged += 1;
    }
    log.close().unwrap();
    let mut recovered = 0u64;
    smlog_recovery::scan(&**device, smlog::RecoveryMode::Strict, |_| recovered += 1).unwrap();
    assert_eq!(recovered, acknowledged);
}
