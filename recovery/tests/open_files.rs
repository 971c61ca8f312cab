//! Files unlinked while open: the inode stays as an orphan (nameless, no link, data
//! readable and writable) until its last handle is released, and a crash reclaims it in
//! recovery. Faults injected through the simulated device.

mod fs_common;

use std::sync::Arc;

use fs_common::*;
use smlog::io::sim::{CrashPlan, FaultConfig, SimDevice};
use smlog::{Durability, Ino, NewAttrs, RenameFlags, TxnOptions, ROOT_INO};

const FILE: NewAttrs = NewAttrs {
    mode: 0o644,
    uid: 1,
    gid: 1,
    umask: 0,
};

const ASYNC: Durability = Durability::Async;
const SYNC: Durability = Durability::Sync;

/// 100 KiB: a large write (data blocks) plus a small one (inline).
fn content() -> Vec<u8> {
    (0..100 * 1024 + 123).map(|i| (i * 7 % 251) as u8).collect()
}

fn free_blocks_after_checkpoint(engine: &SimEngine) -> u64 {
    engine.checkpoint().unwrap();
    // Freed blocks leave quarantine once a checkpoint no longer names them.
    engine.checkpoint().unwrap();
    engine.statfs().unwrap().blocks_free
}

fn file_with_content(engine: &SimEngine, name: &[u8]) -> Ino {
    let ino = engine.create(ROOT_INO, name, FILE, SYNC).unwrap().ino;
    let data = content();
    engine.write(ino, 0, &data, SYNC).unwrap();
    ino
}

#[test]
fn an_unlinked_open_file_keeps_its_data_until_its_last_release() {
    let device = Arc::new(SimDevice::new(1));
    let (engine, _) = open_sim(&device, test_options()).unwrap();
    let free_before = free_blocks_after_checkpoint(&engine);
    let ino = file_with_content(&engine, b"f");
    engine.open(ino).unwrap();
    engine.open(ino).unwrap();
    engine.unlink(ROOT_INO, b"f", SYNC).unwrap();

    assert_eq!(
        engine.lookup(ROOT_INO, b"f").unwrap_err().errno(),
        libc::ENOENT
    );
    let attr = engine.getattr(ino).unwrap();
    assert_eq!(attr.nlink, 0);
    assert_eq!(engine.read(ino, 0, 1 << 20).unwrap(), content());
    engine.write(ino, 5, b"still writable", ASYNC).unwrap();
    assert_eq!(engine.read(ino, 5, 14).unwrap(), b"still writable");
    // No new name for an orphan, as on Linux.
    let relink = engine.link(ino, ROOT_INO, b"back", SYNC).unwrap_err();
    assert_eq!(relink.errno(), libc::ENOENT);
    let report = engine.fsck();
    assert!(report.is_clean(), "{:?}", report.problems);
    assert_eq!(report.orphan_count, 1);
    assert_eq!(engine.orphans(), vec![ino]);

    engine.release(ino).unwrap();
    assert!(engine.getattr(ino).is_ok(), "gone with a handle still open");
    engine.release(ino).unwrap();
    assert_eq!(engine.getattr(ino).unwrap_err().errno(), libc::ENOENT);
    assert_eq!(engine.open_count(), 0);
    let report = engine.fsck();
    assert!(report.is_clean(), "{:?}", report.problems);
    assert_eq!(report.orphan_count, 0);
    assert_eq!(free_blocks_after_checkpoint(&engine), free_before);
    // A release with no handle open is refused, and changes nothing.
    assert!(engine.release(ino).is_err());
}

#[test]
fn a_file_not_open_goes_with_its_last_name() {
    let device = Arc::new(SimDevice::new(2));
    let (engine, _) = open_sim(&device, test_options()).unwrap();
    let ino = file_with_content(&engine, b"f");
    engine.open(ino).unwrap();
    engine.release(ino).unwrap();
    engine.unlink(ROOT_INO, b"f", SYNC).unwrap();
    assert_eq!(engine.getattr(ino).unwrap_err().errno(), libc::ENOENT);
    assert!(engine.orphans().is_empty());
}

#[test]
fn a_rename_over_an_open_file_keeps_the_old_target_until_its_release() {
    let device = Arc::new(SimDevice::new(3));
    let (engine, _) = open_sim(&device, test_options()).unwrap();
    let old = file_with_content(&engine, b"target");
    let new = engine.create(ROOT_INO, b"new", FILE, SYNC).unwrap().ino;
    engine.write(new, 0, b"new content", SYNC).unwrap();
    engine.open(old).unwrap();
    engine
        .rename(
            ROOT_INO,
            b"new",
            ROOT_INO,
            b"target",
            RenameFlags::default(),
            SYNC,
        )
        .unwrap();
    assert_eq!(engine.lookup(ROOT_INO, b"target").unwrap().ino, new);
    assert_eq!(engine.read(old, 0, 1 << 20).unwrap(), content());
    assert_eq!(engine.getattr(old).unwrap().nlink, 0);
    assert!(engine.fsck().is_clean());
    engine.release(old).unwrap();
    assert!(engine.getattr(old).is_err());
    assert!(engine.fsck().is_clean());
}

#[test]
fn a_crash_with_an_orphan_open_reclaims_it_in_recovery() {
    let device = Arc::new(SimDevice::new(4));
    let (engine, _) = open_sim(&device, test_options()).unwrap();
    let free_before = free_blocks_after_checkpoint(&engine);
    let ino = file_with_content(&engine, b"f");
    let kept = file_with_content(&engine, b"kept");
    engine.open(ino).unwrap();
    engine.unlink(ROOT_INO, b"f", SYNC).unwrap();
    // The orphan reaches a checkpoint image too, so recovery finds it there.
    engine.checkpoint().unwrap();
    drop(engine);
    device.crash();
    device.restart(&CrashPlan::power_loss());

    let dry = smlog_recovery::inspect(Arc::clone(&device), test_options(), false).unwrap();
    assert_eq!(dry.0.orphans_reclaimed, 1, "the dry run counts the orphan");
    let (engine, report) = open_sim(&device, test_options()).unwrap();
    assert_eq!(report.orphans_reclaimed, 1);
    assert_eq!(engine.getattr(ino).unwrap_err().errno(), libc::ENOENT);
    assert_eq!(engine.read(kept, 0, 1 << 20).unwrap(), content());
    let fsck = engine.fsck();
    assert!(fsck.is_clean(), "{:?}", fsck.problems);
    assert_eq!(fsck.orphan_count, 0);
    let kept_blocks = engine.getattr(kept).unwrap().blocks;
    assert_eq!(
        free_blocks_after_checkpoint(&engine),
        free_before - kept_blocks,
        "the orphan's blocks came back"
    );
    // The reclaim is logged: a second crash and recovery finds nothing to do.
    drop(engine);
    device.crash();
    device.restart(&CrashPlan::power_loss());
    let (_, report) = open_sim(&device, test_options()).unwrap();
    assert_eq!(report.orphans_reclaimed, 0);
}

/// Crashes at every device operation of: open, unlink (the file becomes an orphan),
/// write to the orphan, release (the reclaim). Whatever the crash point, recovery leaves
/// no orphan, fsck is clean, and the name is there with its whole content exactly when
/// the unlink was not made durable.
#[test]
fn a_crash_at_any_point_of_an_orphans_life_leaves_a_clean_store() {
    let mut crashed_as_orphan = 0;
    let mut crashed_before_unlink = 0;
    for crash_at in 1..200 {
        for plan in [
            CrashPlan::power_loss(),
            CrashPlan {
                keep_percent: 100,
                ..CrashPlan::power_loss()
            },
        ] {
            let device = Arc::new(SimDevice::new(crash_at));
            let mut options = test_options();
            options.engine.sync_every_step = true;
            let (engine, _) = open_sim(&device, options).unwrap();
            let ino = file_with_content(&engine, b"f");
            device.set_faults(FaultConfig {
                crash_after_ops: Some(crash_at),
                ..FaultConfig::default()
            });
            let finished = (|| {
                engine.open(ino)?;
                engine.unlink(ROOT_INO, b"f", TxnOptions::from(SYNC))?;
                engine.write(ino, 0, &[9; 70_000], SYNC)?;
                engine.release(ino)?;
                engine.sync()
            })()
            .is_ok();
            let orphaned = engine.lookup(ROOT_INO, b"f").is_err() && engine.getattr(ino).is_ok();
            drop(engine);
            device.crash();
            device.restart(&plan);
            let (engine, report) = open_sim(&device, test_options()).unwrap();
            let context = format!("crash at {crash_at} ({plan:?})");
            let fsck = engine.fsck();
            assert!(fsck.is_clean(), "{context}: {:?}", fsck.problems);
            assert_eq!(fsck.orphan_count, 0, "{context}");
            match engine.lookup(ROOT_INO, b"f") {
                Ok(attr) => {
                    assert_eq!(attr.ino, ino, "{context}");
                    let data = engine.read(ino, 0, 1 << 20).unwrap();
                    assert_eq!(data, content(), "{context}: the named file changed");
                    crashed_before_unlink += 1;
                }
                Err(_) => {
                    assert!(engine.getattr(ino).is_err(), "{context}: orphan left");
                    if report.orphans_reclaimed == 1 {
                        crashed_as_orphan += 1;
                    }
                }
            }
            if finished {
                assert!(!orphaned);
                assert_eq!(report.orphans_reclaimed, 0, "{context}");
                assert!(engine.lookup(ROOT_INO, b"f").is_err(), "{context}");
                assert!(crashed_as_orphan > 0, "no crash left an orphan to reclaim");
                assert!(crashed_before_unlink > 0, "no crash fell before the unlink");
                return;
            }
        }
    }
    panic!("the sequence never finished within 200 device operations");
}

/// A directory removed while open (an `opendir` handle): it stays, empty, with no link,
/// answering getattr and readdir; nothing is made in it (ENOENT, as Linux); its release
/// drops it; a crash meanwhile and recovery reclaim it.
#[test]
fn a_directory_removed_while_open_stays_empty_until_its_release() {
    let device = Arc::new(SimDevice::new(6));
    let (engine, _) = open_sim(&device, test_options()).unwrap();
    let dir = engine.mkdir(ROOT_INO, b"d", FILE, SYNC).unwrap().ino;
    let root_links = engine.getattr(ROOT_INO).unwrap().nlink;
    engine.open(dir).unwrap();
    engine.rmdir(ROOT_INO, b"d", SYNC).unwrap();
    let attr = engine.getattr(dir).unwrap();
    assert_eq!(attr.nlink, 0);
    assert_eq!(engine.getattr(ROOT_INO).unwrap().nlink, root_links - 1);
    assert!(engine.readdir(dir, None, 10).unwrap().is_empty());
    let errno = |r: Result<smlog::Stat, smlog::FsError>| r.unwrap_err().errno();
    assert_eq!(errno(engine.create(dir, b"f", FILE, SYNC)), libc::ENOENT);
    assert_eq!(errno(engine.mkdir(dir, b"e", FILE, SYNC)), libc::ENOENT);
    let f = engine.create(ROOT_INO, b"f", FILE, SYNC).unwrap().ino;
    assert_eq!(errno(engine.link(f, dir, b"f", SYNC)), libc::ENOENT);
    let moved = engine.rename(ROOT_INO, b"f", dir, b"f", RenameFlags::default(), SYNC);
    assert_eq!(moved.unwrap_err().errno(), libc::ENOENT);
    let report = engine.fsck();
    assert!(report.is_clean(), "{:?}", report.problems);
    assert_eq!(report.orphan_count, 1);
    engine.release(dir).unwrap();
    assert_eq!(engine.getattr(dir).unwrap_err().errno(), libc::ENOENT);
    assert!(engine.fsck().is_clean());

    // Open again, removed, then a crash: recovery reclaims it.
    let dir = engine.mkdir(ROOT_INO, b"d", FILE, SYNC).unwrap().ino;
    engine.open(dir).unwrap();
    engine.rmdir(ROOT_INO, b"d", SYNC).unwrap();
    drop(engine);
    device.crash();
    device.restart(&CrashPlan::power_loss());
    let (engine, report) = open_sim(&device, test_options()).unwrap();
    assert_eq!(report.orphans_reclaimed, 1);
    assert_eq!(engine.getattr(dir).unwrap_err().errno(), libc::ENOENT);
    let report = engine.fsck();
    assert!(report.is_clean(), "{:?}", report.problems);
    assert_eq!(report.orphan_count, 0);
}
