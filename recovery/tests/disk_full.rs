//! A full data file: space a delete frees is usable at once (a checkpoint taken under
//! space pressure), and what fills it is refused with ENOSPC while the engine goes on.
//! (The engine's capacity limit stands in for a full host file system here.)

mod fs_common;

use std::sync::Arc;

use fs_common::*;
use smlog::io::sim::SimDevice;
use smlog::{Durability, FsError, NewAttrs, ROOT_INO};

const FILE: NewAttrs = NewAttrs {
    mode: 0o644,
    uid: 0,
    gid: 0,
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
