//! The engine's promises one by one: request keys, ENOSPC, checkpoints reusing the log,
//! bad input, fail-stop, damaged checkpoints.

mod fs_common;

use std::sync::Arc;

use fs_common::*;
use smlog::internals::image::{image_file_name, read_super};
use smlog::io::sim::{CrashPlan, FaultConfig, SimDevice};
use smlog::io::IoErrorKind;
use smlog::Ino;
use smlog::{
    Durability, FsError, NewAttrs, Outcome, RenameFlags, RequestKey, TxnOptions, TxnResult,
    ROOT_INO,
};

const FILE: NewAttrs = NewAttrs {
    mode: 0o644,
    uid: 1,
    gid: 1,
    umask: 0,
};

fn reopen(device: &Arc<SimDevice>, options: smlog_recovery::OpenOptions) -> SimEngine {
    device.crash();
    device.restart(&CrashPlan::power_loss());
    open_sim(device, options).unwrap().0
}

#[test]
fn a_request_key_answers_a_retransmission_exactly_once_across_recovery() {
    let device = Arc::new(SimDevice::new(1));
    let (engine, _) = open_sim(&device, test_options()).unwrap();
    let key = RequestKey {
        client_id: 7,
        request_id: 1,
    };
    let keyed = TxnOptions::keyed(7, 1);
    let attr = engine.create(ROOT_INO, b"f", FILE, keyed).unwrap();
    assert_eq!(
        engine.outcome(key),
        Some(Outcome::Committed(TxnResult::Ino(attr.ino)))
    );
    // A refused keyed request is remembered with its errno.
    let refused = engine.mkdir(ROOT_INO, b"f", FILE, TxnOptions::keyed(7, 2));
    assert!(matches!(refused, Err(FsError::Exists)));
    drop(engine);
    let engine = reopen(&device, test_options());
    assert_eq!(
        engine.outcome(key),
        Some(Outcome::Committed(TxnResult::Ino(attr.ino)))
    );
    assert_eq!(
        engine.outcome(RequestKey {
            client_id: 7,
            request_id: 2
        }),
        Some(Outcome::RolledBack {
            errno: libc::EEXIST
        })
    );
    // The retransmission gets the first answer, not EEXIST, and changes nothing.
    let again = engine.create(ROOT_INO, b"f", FILE, keyed).unwrap();
    assert_eq!(again.ino, attr.ino);
    assert_eq!(engine.readdir(ROOT_INO, None, 10).unwrap().len(), 1);
    assert_eq!(
        engine.outcome(RequestKey {
            client_id: 9,
            request_id: 9
        }),
        None
    );
    // After a checkpoint the keys come from the image.
    engine.checkpoint().unwrap();
    drop(engine);
    let engine = reopen(&device, test_options());
    assert_eq!(
        engine.outcome(key),
        Some(Outcome::Committed(TxnResult::Ino(attr.ino)))
    );
}

#[test]
fn request_keys_are_kept_for_a_bounded_window() {
    let device = Arc::new(SimDevice::new(2));
    let mut options = test_options();
    options.engine.request_keys_max = 4;
    let (engine, _) = open_sim(&device, options).unwrap();
    for request in 0..10u64 {
        let name = format!("f{request}");
        engine
            .create(
                ROOT_INO,
                name.as_bytes(),
                FILE,
                TxnOptions::keyed(1, request),
            )
            .unwrap();
    }
    let known = |engine: &SimEngine, request| {
        engine
            .outcome(RequestKey {
                client_id: 1,
                request_id: request,
            })
            .is_some()
    };
    assert!(!known(&engine, 0));
    assert!(!known(&engine, 5));
    assert!((6..10).all(|r| known(&engine, r)));
    drop(engine);
    let engine = reopen(&device, options);
    assert!(!known(&engine, 5));
    assert!((6..10).all(|r| known(&engine, r)));
}

#[test]
fn a_keyed_request_in_flight_at_a_crash_reports_what_recovery_did() {
    let mut seen_rolled_back = false;
    let mut seen_committed = false;
    for crash_at in 1..40 {
        let device = Arc::new(SimDevice::new(crash_at));
        let mut options = test_options();
        options.engine.sync_every_step = true;
        let (engine, _) = open_sim(&device, options).unwrap();
        engine
            .create(ROOT_INO, b"a", FILE, Durability::Sync)
            .unwrap();
        let d = engine
            .mkdir(ROOT_INO, b"d", FILE, Durability::Sync)
            .unwrap()
            .ino;
        engine.create(d, b"b", FILE, Durability::Sync).unwrap();
        device.set_faults(FaultConfig {
            crash_after_ops: Some(crash_at),
            ..FaultConfig::default()
        });
        let acked = engine
            .rename(
                ROOT_INO,
                b"a",
                d,
                b"b",
                RenameFlags::default(),
                TxnOptions::keyed(3, 3),
            )
            .is_ok();
        drop(engine);
        device.crash();
        device.restart(&CrashPlan::power_loss());
        let (engine, report) = open_sim(&device, test_options()).unwrap();
        let outcome = engine.outcome(RequestKey {
            client_id: 3,
            request_id: 3,
        });
        let renamed = engine.lookup(ROOT_INO, b"a").is_err();
        match outcome {
            Some(Outcome::Committed(_)) => {
                assert!(renamed, "crash at {crash_at}");
                seen_committed |= !report.in_flight.is_empty();
            }
            Some(Outcome::RolledBack { errno: 0 }) => {
                assert!(
                    !acked,
                    "crash at {crash_at}: acknowledged, then rolled back"
                );
                assert!(engine.lookup(ROOT_INO, b"a").is_ok(), "crash at {crash_at}");
                seen_rolled_back = true;
            }
            None => assert!(!acked && !renamed, "crash at {crash_at}"),
            other => panic!("crash at {crash_at}: {other:?}"),
        }
        if acked {
            break;
        }
    }
    assert!(
        seen_rolled_back,
        "no crash point left the request to roll back"
    );
    assert!(seen_committed, "no crash point left the request to resume");
}

#[test]
fn a_full_data_file_fails_the_write_cleanly_and_the_engine_goes_on() {
    let device = Arc::new(SimDevice::new(3));
    let mut options = test_options();
    options.engine.data_capacity_bytes = 64 * 4096;
    let (engine, _) = open_sim(&device, options).unwrap();
    let f = engine
        .create(ROOT_INO, b"f", FILE, Durability::Sync)
        .unwrap();
    let big = vec![7u8; 128 * 1024];
    let mut offset = 0;
    let error = loop {
        match engine.write(f.ino, offset, &big, Durability::Sync) {
            Ok(_) => offset += big.len() as u64,
            Err(e) => break e,
        }
    };
    assert!(matches!(error, FsError::NoSpace(_)), "{error}");
    assert_eq!(error.errno(), libc::ENOSPC);
    let before = tree_of(&engine).unwrap();
    // Still usable: metadata changes and reads work, nothing half-written is visible.
    engine
        .create(ROOT_INO, b"g", FILE, Durability::Sync)
        .unwrap();
    assert_eq!(engine.read(f.ino, 0, 16).unwrap(), vec![7u8; 16]);
    let fsck = engine.fsck();
    assert!(fsck.is_clean(), "{:?}", fsck.problems);
    // Freed space comes back after a checkpoint.
    engine.unlink(ROOT_INO, b"f", Durability::Sync).unwrap();
    engine.checkpoint().unwrap();
    let g = engine.lookup(ROOT_INO, b"g").unwrap();
    engine.write(g.ino, 0, &big, Durability::Sync).unwrap();
    assert!(before.contains_key(b"f".as_slice()));
    drop(engine);
    let engine = reopen(&device, options);
    assert_eq!(engine.read(g.ino, 0, big.len()).unwrap(), big);
    assert!(engine.fsck().is_clean());
}

#[test]
fn checkpoints_reuse_the_log_and_recovery_starts_from_them() {
    let device = Arc::new(SimDevice::new(4));
    let (engine, _) = open_sim(&device, test_options()).unwrap();
    let f = engine
        .create(ROOT_INO, b"f", FILE, Durability::Sync)
        .unwrap();
    let mut model = Vec::new();
    let mut released = 0;
    for round in 0..40u64 {
        let data = data_for(round, 3000);
        engine
            .write(f.ino, round * 1000, &data, Durability::Async)
            .unwrap();
        let end = (round * 1000) as usize + data.len();
        if model.len() < end {
            model.resize(end, 0);
        }
        model[(round * 1000) as usize..end].copy_from_slice(&data);
        for i in 0..20 {
            let name = format!("n{round}-{i}");
            engine
                .create(ROOT_INO, name.as_bytes(), FILE, Durability::Async)
                .unwrap();
            engine
                .unlink(ROOT_INO, name.as_bytes(), Durability::Async)
                .unwrap();
        }
        if round % 10 == 9 {
            let stats = engine.checkpoint().unwrap();
            released += stats.released_segments;
            assert!(stats.applied_lsn >= stats.scan_start_lsn - 1);
        }
    }
    assert!(released > 0, "no segment was released");
    engine.sync().unwrap();
    let segments = smlog::io::Device::list(&*device)
        .unwrap()
        .iter()
        .filter(|n| n.ends_with(".seg"))
        .count();
    drop(engine);
    let (engine, report) = {
        device.crash();
        device.restart(&CrashPlan::power_loss());
        open_sim(&device, test_options()).unwrap()
    };
    let sb = report.checkpoint.expect("a checkpoint");
    assert_eq!(sb.seq, 4);
    assert!(report.scanned_records < 500, "{}", report.scanned_records);
    assert_eq!(engine.read(f.ino, 0, model.len()).unwrap(), model);
    assert!(engine.fsck().is_clean());
    // Old images are removed; segments stay bounded.
    let names = smlog::io::Device::list(&*device).unwrap();
    assert!(names.contains(&image_file_name(4)));
    assert!(!names.contains(&image_file_name(3)));
    assert!(segments < 12, "{segments} segments");
}

#[test]
fn bad_names_and_arguments_are_refused_and_log_nothing() {
    let device = Arc::new(SimDevice::new(5));
    let (engine, _) = open_sim(&device, test_options()).unwrap();
    let d = engine
        .mkdir(ROOT_INO, b"d", FILE, Durability::Sync)
        .unwrap();
    let sub = engine.mkdir(d.ino, b"sub", FILE, Durability::Sync).unwrap();
    let f = engine
        .create(ROOT_INO, b"f", FILE, Durability::Sync)
        .unwrap();
    let before = engine.log().last_lsn();
    let long = vec![b'x'; 256];
    let cases: Vec<(Result<(), FsError>, i32)> = vec![
        (
            engine
                .create(ROOT_INO, &long, FILE, Durability::Sync)
                .map(drop),
            libc::ENAMETOOLONG,
        ),
        (
            engine
                .create(ROOT_INO, b"a/b", FILE, Durability::Sync)
                .map(drop),
            libc::EINVAL,
        ),
        (
            engine
                .create(ROOT_INO, b"..", FILE, Durability::Sync)
                .map(drop),
            libc::EINVAL,
        ),
        (
            engine
                .create(ROOT_INO, b"", FILE, Durability::Sync)
                .map(drop),
            libc::EINVAL,
        ),
        (
            engine
                .create(ROOT_INO, b"a\0", FILE, Durability::Sync)
                .map(drop),
            libc::EINVAL,
        ),
        (
            engine
                .create(ROOT_INO, b"f", FILE, Durability::Sync)
                .map(drop),
            libc::EEXIST,
        ),
        (
            engine.create(f.ino, b"x", FILE, Durability::Sync).map(drop),
            libc::ENOTDIR,
        ),
        (
            engine
                .create(Ino(999), b"x", FILE, Durability::Sync)
                .map(drop),
            libc::ENOENT,
        ),
        (
            engine.rmdir(ROOT_INO, b"d", Durability::Sync),
            libc::ENOTEMPTY,
        ),
        (
            engine.rmdir(ROOT_INO, b"f", Durability::Sync),
            libc::ENOTDIR,
        ),
        (
            engine.unlink(ROOT_INO, b"d", Durability::Sync),
            libc::EISDIR,
        ),
        (
            engine.rename(
                ROOT_INO,
                b"d",
                sub.ino,
                b"x",
                RenameFlags::default(),
                Durability::Sync,
            ),
            libc::EINVAL,
        ),
        (
            engine.rename(
                ROOT_INO,
                b"d",
                d.ino,
                b"x",
                RenameFlags::default(),
                Durability::Sync,
            ),
            libc::EINVAL,
        ),
        (
            engine.write(d.ino, 0, b"x", Durability::Sync).map(drop),
            libc::EISDIR,
        ),
        (
            engine
                .write(f.ino, 1 << 50, b"x", Durability::Sync)
                .map(drop),
            libc::EFBIG,
        ),
        (
            engine.truncate(f.ino, 1 << 50, Durability::Sync).map(drop),
            libc::EFBIG,
        ),
        (
            engine
                .link(d.ino, ROOT_INO, b"l", Durability::Sync)
                .map(drop),
            libc::EPERM,
        ),
        (engine.readlink(f.ino).map(drop), libc::EINVAL),
        (engine.read(d.ino, 0, 1).map(drop), libc::EISDIR),
        (engine.readdir(f.ino, None, 1).map(drop), libc::ENOTDIR),
        (
            engine
                .symlink(ROOT_INO, b"s", b"", FILE, Durability::Sync)
                .map(drop),
            libc::EINVAL,
        ),
    ];
    for (i, (result, errno)) in cases.into_iter().enumerate() {
        let error = result.expect_err(&format!("case {i} succeeded"));
        assert_eq!(error.errno(), errno, "case {i}: {error}");
    }
    assert_eq!(
        engine.log().last_lsn(),
        before,
        "a refusal logged something"
    );
    assert!(engine.fsck().is_clean());
}

#[test]
fn a_failed_log_sync_stops_the_engine_and_nothing_after_is_acknowledged() {
    let device = Arc::new(SimDevice::new(6));
    let (engine, _) = open_sim(&device, test_options()).unwrap();
    engine
        .create(ROOT_INO, b"a", FILE, Durability::Sync)
        .unwrap();
    device.set_faults(FaultConfig {
        fail_sync_at_op: Some(1),
        fail_write_at_op: Some((1, IoErrorKind::Io)),
        ..FaultConfig::default()
    });
    let failed = engine.create(ROOT_INO, b"b", FILE, Durability::Sync);
    assert!(failed.is_err());
    device.set_faults(FaultConfig::default());
    let after = engine.create(ROOT_INO, b"c", FILE, Durability::Sync);
    assert_eq!(
        after.map_err(|e| e.errno()).err(),
        Some(libc::EIO),
        "acknowledged after a failed sync"
    );
    assert!(engine.stopped().is_some());
    // Stopped is read-only: reads go on, changes fail with EIO.
    assert!(engine.lookup(ROOT_INO, b"a").is_ok());
    assert!(engine.readdir(ROOT_INO, None, 10).is_ok());
    assert_eq!(engine.sync().map_err(|e| e.errno()).err(), Some(libc::EIO));
    drop(engine);
    let engine = reopen(&device, test_options());
    assert!(engine.lookup(ROOT_INO, b"a").is_ok());
    assert!(engine.lookup(ROOT_INO, b"c").is_err());
}

#[test]
fn a_damaged_checkpoint_image_is_an_error_never_a_silent_loss() {
    let device = Arc::new(SimDevice::new(7));
    let (engine, _) = open_sim(&device, test_options()).unwrap();
    engine
        .create(ROOT_INO, b"a", FILE, Durability::Sync)
        .unwrap();
    engine.checkpoint().unwrap();
    drop(engine);
    let sb = read_super(&*device).unwrap().unwrap();
    device.poke(&image_file_name(sb.seq), 10, &[0xAA; 4]);
    device.crash();
    device.restart(&CrashPlan::power_loss());
    let error = open_sim(&device, test_options()).unwrap_err();
    assert!(matches!(error, FsError::Corrupt { .. }), "{error}");
    assert!(error.to_string().contains("CRC"), "{error}");
}

#[test]
fn a_failed_data_write_rolls_the_large_write_back_and_the_engine_goes_on() {
    // The failing write op is searched for: the log's writes come first, and a failure
    // there stops the engine (fail-stop), which is not this test's case.
    let mut seen = 0;
    for kind in [IoErrorKind::NoSpace, IoErrorKind::Io] {
        for at_op in 1..12 {
            let device = Arc::new(SimDevice::new(8));
            // No preparer thread: its writes would shift the numbering of the device's
            // write operations from run to run.
            device.set_deterministic(true);
            let (engine, _) = open_sim(&device, test_options()).unwrap();
            let f = engine
                .create(ROOT_INO, b"f", FILE, Durability::Sync)
                .unwrap();
            engine.write(f.ino, 0, b"before", Durability::Sync).unwrap();
            device.set_faults(FaultConfig {
                fail_write_at_op: Some((at_op, kind)),
                ..FaultConfig::default()
            });
            let big = vec![9u8; 256 * 1024];
            let result = engine.write(f.ino, 0, &big, Durability::Async);
            device.set_faults(FaultConfig::default());
            let Err(error) = result else { continue };
            if engine.stopped().is_some() {
                continue;
            }
            seen += 1;
            assert_eq!(error.errno(), kind.errno(), "{error}");
            assert_eq!(engine.read(f.ino, 0, 100).unwrap(), b"before");
            let fsck = engine.fsck();
            assert!(fsck.is_clean(), "{:?}", fsck.problems);
            // The engine goes on, and the write succeeds when the device does.
            engine.write(f.ino, 0, &big, Durability::Sync).unwrap();
            drop(engine);
            let engine = reopen(&device, test_options());
            assert_eq!(engine.read(f.ino, 0, big.len()).unwrap(), big);
            assert!(engine.fsck().is_clean());
            // The failed write's blocks were given back (quarantined until a checkpoint).
            assert_eq!(engine.meta().space.used_blocks, 64, "{kind:?}");
            break;
        }
    }
    assert_eq!(seen, 2, "no write op failed the data write alone");
}

/// FIFOs, sockets and devices are inodes like any other: made with their device numbers,
/// renamed, linked, chmodded and unlinked, kept across a power loss, counted by fsck; one
/// cannot be written or truncated, and mknod makes no directory or link. A setgid directory
/// gives what is made in it its group, and a new directory its setgid bit.
#[test]
fn special_files_and_setgid_directories() {
    use smlog::{FileKind, SetAttrChanges};
    let device = Arc::new(SimDevice::new(3));
    let (engine, _) = open_sim(&device, test_options()).unwrap();
    let sync = Durability::Sync;
    let kinds = [
        (&b"fifo"[..], FileKind::Fifo),
        (b"sock", FileKind::Socket),
        (b"chr", FileKind::CharDevice { rdev: 0x0103 }),
        (
            b"blk",
            FileKind::BlockDevice {
                rdev: 0x1_0000_0801,
            },
        ),
    ];
    for (name, kind) in kinds {
        let stat = engine.mknod(ROOT_INO, name, kind, FILE, sync).unwrap();
        assert_eq!((stat.kind, stat.size, stat.nlink), (kind, 0, 1));
    }
    let fifo = engine.lookup(ROOT_INO, b"fifo").unwrap().ino;
    assert!(matches!(
        engine.write(fifo, 0, b"x", sync),
        Err(FsError::Invalid(_))
    ));
    assert!(matches!(
        engine.truncate(fifo, 0, sync),
        Err(FsError::Invalid(_))
    ));
    for kind in [FileKind::Dir, FileKind::Symlink] {
        assert!(matches!(
            engine.mknod(ROOT_INO, b"x", kind, FILE, sync),
            Err(FsError::Invalid(_))
        ));
    }
    assert!(matches!(
        engine.mknod(ROOT_INO, b"fifo", FileKind::Fifo, FILE, sync),
        Err(FsError::Exists)
    ));
    let file = engine
        .mknod(ROOT_INO, b"plain", FileKind::File, FILE, sync)
        .unwrap();
    assert_eq!(file.kind, FileKind::File);
    engine.link(fifo, ROOT_INO, b"fifo2", sync).unwrap();
    engine
        .rename(
            ROOT_INO,
            b"chr",
            ROOT_INO,
            b"chr2",
            RenameFlags::default(),
            sync,
        )
        .unwrap();
    let chmod = SetAttrChanges {
        mode: Some(0o600),
        uid: Some(5),
        ..SetAttrChanges::default()
    };
    engine.setattr(fifo, chmod, sync).unwrap();
    engine.unlink(ROOT_INO, b"sock", sync).unwrap();

    // setgid: the group and, for a directory, the bit pass down.
    let g = engine
        .mkdir(
            ROOT_INO,
            b"g",
            NewAttrs {
                mode: 0o2775,
                uid: 0,
                gid: 77,
                umask: 0,
            },
            sync,
        )
        .unwrap();
    assert_eq!(g.mode, 0o2775);
    let inner = engine.create(g.ino, b"f", FILE, sync).unwrap();
    assert_eq!((inner.gid, inner.mode), (77, 0o644));
    let sub = engine.mkdir(g.ino, b"d", FILE, sync).unwrap();
    assert_eq!((sub.gid, sub.mode), (77, 0o2644));
    let node = engine
        .mknod(sub.ino, b"p", FileKind::Fifo, FILE, sync)
        .unwrap();
    assert_eq!((node.gid, node.mode), (77, 0o644));
    let plain = engine.mkdir(ROOT_INO, b"plain-dir", FILE, sync).unwrap();
    assert_eq!((plain.gid, plain.mode), (1, 0o644));

    drop(engine);
    let engine = reopen(&device, test_options());
    let stat = |name: &[u8]| engine.lookup(ROOT_INO, name).unwrap();
    assert_eq!(stat(b"fifo").kind, FileKind::Fifo);
    assert_eq!(
        (stat(b"fifo").nlink, stat(b"fifo").mode, stat(b"fifo").uid),
        (2, 0o600, 5)
    );
    assert_eq!(stat(b"fifo2").ino, fifo);
    assert_eq!(stat(b"chr2").kind, FileKind::CharDevice { rdev: 0x0103 });
    assert_eq!(
        stat(b"blk").kind,
        FileKind::BlockDevice {
            rdev: 0x1_0000_0801
        }
    );
    assert!(matches!(
        engine.lookup(ROOT_INO, b"sock"),
        Err(FsError::NotFound)
    ));
    let sub = engine.lookup(g.ino, b"d").unwrap();
    assert_eq!((sub.gid, sub.mode), (77, 0o2644));
    let report = engine.fsck();
    assert!(report.is_clean(), "{:?}", report.problems);
    assert_eq!(report.special_count, 4, "fifo, chr2, blk and g/d/p");
}

/// Extended attributes: set, replace, list, remove, with the flags and errnos of
/// `setxattr(2)`; bounded names, values and room; user attributes only on files and
/// directories; every change a transaction that survives a power loss and sets ctime.
#[test]
fn extended_attributes_as_setxattr_gives_them() {
    use smlog::{FileKind, XattrFlags};
    let device = Arc::new(SimDevice::new(4));
    let (engine, _) = open_sim(&device, test_options()).unwrap();
    let sync = Durability::Sync;
    let none = XattrFlags::default();
    let create = XattrFlags {
        create: true,
        replace: false,
    };
    let replace = XattrFlags {
        create: false,
        replace: true,
    };
    let f = engine.create(ROOT_INO, b"f", FILE, sync).unwrap().ino;
    let before = engine.getattr(f).unwrap().ctime;
    engine.setxattr(f, b"user.b", b"2", none, sync).unwrap();
    engine.setxattr(f, b"user.a", b"1", create, sync).unwrap();
    engine.setxattr(f, b"trusted.t", b"", none, sync).unwrap();
    assert!(engine.getattr(f).unwrap().ctime > before);
    assert_eq!(engine.getxattr(f, b"user.a").unwrap(), b"1");
    assert_eq!(engine.getxattr(f, b"trusted.t").unwrap(), b"");
    let names = engine.listxattr(f).unwrap();
    assert_eq!(names, [&b"trusted.t"[..], b"user.a", b"user.b"]);
    let errno = |r: Result<(), FsError>| r.unwrap_err().errno();
    assert_eq!(
        errno(engine.setxattr(f, b"user.a", b"x", create, sync)),
        libc::EEXIST
    );
    assert_eq!(
        errno(engine.setxattr(f, b"user.z", b"x", replace, sync)),
        libc::ENODATA
    );
    engine
        .setxattr(f, b"user.a", b"one", replace, sync)
        .unwrap();
    assert_eq!(engine.getxattr(f, b"user.a").unwrap(), b"one");
    assert_eq!(
        engine.getxattr(f, b"user.z").unwrap_err().errno(),
        libc::ENODATA
    );
    assert_eq!(errno(engine.removexattr(f, b"user.z", sync)), libc::ENODATA);
    assert_eq!(
        errno(engine.setxattr(f, b"os2.x", b"x", none, sync)),
        libc::EOPNOTSUPP
    );
    // A namespace alone is no name (EINVAL, as Linux answers; the differential tester
    // found the difference).
    assert_eq!(
        errno(engine.setxattr(f, b"user.", b"x", none, sync)),
        libc::EINVAL
    );
    let long = [b"user.".to_vec(), vec![b'n'; 251]].concat();
    assert_eq!(
        errno(engine.setxattr(f, &long, b"x", none, sync)),
        libc::ERANGE
    );
    let big = vec![7u8; 64 * 1024 + 1];
    assert_eq!(
        errno(engine.setxattr(f, b"user.big", &big, none, sync)),
        libc::E2BIG
    );
    // 32 KiB of room per inode: two values of 15 KiB fit, a third does not.
    let piece = vec![9u8; 15 * 1024];
    engine.setxattr(f, b"user.p1", &piece, none, sync).unwrap();
    engine.setxattr(f, b"user.p2", &piece, none, sync).unwrap();
    assert_eq!(
        errno(engine.setxattr(f, b"user.p3", &piece, none, sync)),
        libc::ENOSPC
    );
    // Replacing a value counts its new size only.
    engine
        .setxattr(f, b"user.p2", &piece, replace, sync)
        .unwrap();
    engine.removexattr(f, b"user.b", sync).unwrap();
    let fifo = engine
        .mknod(ROOT_INO, b"p", FileKind::Fifo, FILE, sync)
        .unwrap()
        .ino;
    assert_eq!(
        errno(engine.setxattr(fifo, b"user.a", b"x", none, sync)),
        libc::EPERM
    );
    engine
        .setxattr(fifo, b"security.s", b"label", none, sync)
        .unwrap();

    drop(engine);
    let engine = reopen(&device, test_options());
    assert_eq!(engine.getxattr(f, b"user.a").unwrap(), b"one");
    assert_eq!(engine.getxattr(f, b"user.p2").unwrap(), piece);
    assert_eq!(
        engine.getxattr(f, b"user.b").unwrap_err().errno(),
        libc::ENODATA
    );
    assert_eq!(engine.getxattr(fifo, b"security.s").unwrap(), b"label");
    let names = engine.listxattr(f).unwrap();
    assert_eq!(
        names,
        [&b"trusted.t"[..], b"user.a", b"user.p1", b"user.p2"]
    );
    // A checkpoint carries them in the image.
    engine.checkpoint().unwrap();
    drop(engine);
    let engine = reopen(&device, test_options());
    assert_eq!(engine.getxattr(f, b"user.a").unwrap(), b"one");
    // They go with the inode.
    engine.unlink(ROOT_INO, b"f", sync).unwrap();
    let g = engine.create(ROOT_INO, b"f", FILE, sync).unwrap().ino;
    assert!(engine.listxattr(g).unwrap().is_empty());
    assert!(engine.fsck().is_clean());
}

/// fallocate in each mode, `SEEK_DATA` / `SEEK_HOLE` and the blocks a file holds, as ext4
/// gives them; across a power loss and a checkpoint.
#[test]
fn fallocate_punch_and_zero_ranges_and_seek_data() {
    use smlog::FallocMode;
    let device = Arc::new(SimDevice::new(5));
    let (engine, _) = open_sim(&device, test_options()).unwrap();
    let sync = Durability::Sync;
    const B: u64 = 4096;
    let ones = vec![1u8; 3 * B as usize];
    let f = engine.create(ROOT_INO, b"f", FILE, sync).unwrap().ino;
    // Data in blocks 0..3; mode 0 from block 5 to 8 (the last partly): the size grows,
    // four blocks are held, they read zeros and seek as a hole.
    engine.write(f, 0, &ones, sync).unwrap();
    assert_eq!(engine.getattr(f).unwrap().blocks, 3);
    engine
        .fallocate(
            f,
            5 * B,
            3 * B + 10,
            FallocMode::Allocate { keep_size: false },
            sync,
        )
        .unwrap();
    let stat = engine.getattr(f).unwrap();
    assert_eq!((stat.size, stat.blocks), (8 * B + 10, 7));
    assert_eq!(engine.read(f, 5 * B, 100).unwrap(), vec![0u8; 100]);
    assert_eq!(engine.seek(f, 0, true).unwrap(), 0);
    assert_eq!(engine.seek(f, 100, false).unwrap(), 3 * B);
    assert_eq!(
        engine.seek(f, 3 * B, true).unwrap_err().errno(),
        libc::ENXIO
    );
    assert_eq!(
        engine.seek(f, 8 * B + 10, false).unwrap_err().errno(),
        libc::ENXIO
    );
    // Keep size past the end: held, not in the size.
    engine
        .fallocate(
            f,
            10 * B,
            2 * B,
            FallocMode::Allocate { keep_size: true },
            sync,
        )
        .unwrap();
    let stat = engine.getattr(f).unwrap();
    assert_eq!((stat.size, stat.blocks), (8 * B + 10, 9));
    // Punch the middle of the data: block 1 freed, the halves of 0 and 2 zeroed.
    engine
        .fallocate(f, B / 2, 2 * B, FallocMode::PunchHole, sync)
        .unwrap();
    let data = engine.read(f, 0, 3 * B as usize).unwrap();
    let mut want = ones.clone();
    want[B as usize / 2..B as usize * 5 / 2].fill(0);
    assert_eq!(data, want);
    assert_eq!(engine.getattr(f).unwrap().blocks, 8);
    assert_eq!(engine.seek(f, 100, false).unwrap(), B);
    assert_eq!(engine.seek(f, B, true).unwrap(), 2 * B);
    // Zero a range over data and holes without keeping the size: every block it touches
    // held, the size grows, the bytes are zeros.
    engine.write(f, 4 * B, &ones[..B as usize], sync).unwrap();
    engine
        .fallocate(
            f,
            4 * B + 7,
            6 * B,
            FallocMode::ZeroRange { keep_size: false },
            sync,
        )
        .unwrap();
    let stat = engine.getattr(f).unwrap();
    assert_eq!(stat.size, 10 * B + 7);
    assert_eq!(engine.read(f, 4 * B, 8).unwrap(), [1, 1, 1, 1, 1, 1, 1, 0]);
    assert!(engine
        .read(f, 4 * B + 7, 6 * B as usize)
        .unwrap()
        .iter()
        .all(|&b| b == 0));
    // Blocks 0, 2, 4..=11 (10 and 11 preallocated earlier).
    assert_eq!(stat.blocks, 10);
    // Errors: no bytes, a directory, past the largest file.
    let errno = |r: Result<(), FsError>| r.unwrap_err().errno();
    let all = FallocMode::Allocate { keep_size: false };
    assert_eq!(errno(engine.fallocate(f, 0, 0, all, sync)), libc::EINVAL);
    assert_eq!(
        errno(engine.fallocate(ROOT_INO, 0, 1, all, sync)),
        libc::EISDIR
    );
    assert_eq!(
        errno(engine.fallocate(f, 1 << 44, 1, all, sync)),
        libc::EFBIG
    );
    // More than the data file holds: ENOSPC, nothing changed.
    let before = engine.getattr(f).unwrap();
    assert_eq!(
        errno(engine.fallocate(
            f,
            0,
            1 << 40,
            FallocMode::Allocate { keep_size: true },
            sync
        )),
        libc::ENOSPC
    );
    assert_eq!(engine.getattr(f).unwrap().blocks, before.blocks);
    let check = |engine: &SimEngine| {
        let stat = engine.getattr(f).unwrap();
        assert_eq!((stat.size, stat.blocks), (10 * B + 7, 10));
        let data = engine.read(f, 0, 3 * B as usize).unwrap();
        assert_eq!(data, want);
        assert_eq!(engine.seek(f, 100, false).unwrap(), B);
        assert_eq!(engine.seek(f, 3 * B, true).unwrap(), 4 * B);
        assert!(engine.fsck().is_clean(), "{:?}", engine.fsck());
    };
    check(&engine);
    drop(engine);
    let engine = reopen(&device, test_options());
    check(&engine);
    // In the data file: blocks of zeros past the end are allowed, and seek as holes.
    engine.checkpoint().unwrap();
    check(&engine);
    drop(engine);
    let engine = reopen(&device, test_options());
    check(&engine);
    // A truncation to the same size releases what is held past the end (as ext4).
    engine.truncate(f, 10 * B + 7, sync).unwrap();
    assert_eq!(engine.getattr(f).unwrap().blocks, 9);
    // Growing keeps what is held past the end.
    engine
        .fallocate(f, 20 * B, B, FallocMode::Allocate { keep_size: true }, sync)
        .unwrap();
    engine.truncate(f, 15 * B, sync).unwrap();
    assert_eq!(engine.getattr(f).unwrap().blocks, 10);
    assert!(engine.fsck().is_clean());
}

/// POSIX ACLs as ext4 keeps them: an access ACL sets the permission bits (a minimal one is
/// not kept), a chmod rewrites it, a default ACL is inherited instead of the umask (a new
/// directory takes it as its default too), a default ACL on a file is EACCES, a malformed
/// one EINVAL; each change one step, all of it across a power loss.
#[test]
fn posix_acls_set_the_mode_and_are_inherited() {
    use smlog::XattrFlags;
    const ACCESS: &[u8] = b"system.posix_acl_access";
    const DEFAULT: &[u8] = b"system.posix_acl_default";
    fn acl(entries: &[(u16, u16, u32)]) -> Vec<u8> {
        let mut out = 2u32.to_le_bytes().to_vec();
        for &(tag, perm, id) in entries {
            out.extend_from_slice(&tag.to_le_bytes());
            out.extend_from_slice(&perm.to_le_bytes());
            out.extend_from_slice(&id.to_le_bytes());
        }
        out
    }
    const NONE: u32 = u32::MAX;
    let device = Arc::new(SimDevice::new(6));
    let (engine, _) = open_sim(&device, test_options()).unwrap();
    let sync = Durability::Sync;
    let flags = XattrFlags::default();
    let f = engine.create(ROOT_INO, b"f", FILE, sync).unwrap().ino;
    // user::rw- user:1000:r-- group::r-- mask::rw- other::---
    let full = acl(&[
        (1, 6, NONE),
        (2, 4, 1000),
        (4, 4, NONE),
        (0x10, 6, NONE),
        (0x20, 0, NONE),
    ]);
    engine.setxattr(f, ACCESS, &full, flags, sync).unwrap();
    assert_eq!(engine.getattr(f).unwrap().mode, 0o660);
    assert_eq!(engine.getxattr(f, ACCESS).unwrap(), full);
    // chmod 0o640: owner rw, mask r, other none; the named entry stays.
    let changes = smlog::SetAttrChanges {
        mode: Some(0o640),
        ..Default::default()
    };
    engine.setattr(f, changes, sync).unwrap();
    let after = acl(&[
        (1, 6, NONE),
        (2, 4, 1000),
        (4, 4, NONE),
        (0x10, 4, NONE),
        (0x20, 0, NONE),
    ]);
    assert_eq!(engine.getxattr(f, ACCESS).unwrap(), after);
    // A minimal ACL is the mode alone: not kept.
    let minimal = acl(&[(1, 7, NONE), (4, 5, NONE), (0x20, 1, NONE)]);
    engine.setxattr(f, ACCESS, &minimal, flags, sync).unwrap();
    assert_eq!(engine.getattr(f).unwrap().mode, 0o751);
    assert_eq!(
        engine.getxattr(f, ACCESS).unwrap_err().errno(),
        libc::ENODATA
    );
    let errno = |r: Result<(), FsError>| r.unwrap_err().errno();
    let no_mask = acl(&[(1, 6, NONE), (2, 4, 1000), (4, 4, NONE), (0x20, 0, NONE)]);
    assert_eq!(
        errno(engine.setxattr(f, ACCESS, &no_mask, flags, sync)),
        libc::EINVAL
    );
    assert_eq!(
        errno(engine.setxattr(f, DEFAULT, &full, flags, sync)),
        libc::EACCES
    );
    assert_eq!(
        errno(engine.setxattr(f, b"system.other", b"x", flags, sync)),
        libc::EOPNOTSUPP
    );
    // A directory with a default ACL: new inodes take it, not the umask.
    let d = engine.mkdir(ROOT_INO, b"d", FILE, sync).unwrap().ino;
    let default = acl(&[
        (1, 7, NONE),
        (2, 7, 1000),
        (4, 5, NONE),
        (0x10, 5, NONE),
        (0x20, 0, NONE),
    ]);
    engine.setxattr(d, DEFAULT, &default, flags, sync).unwrap();
    let asked = NewAttrs {
        mode: 0o666,
        uid: 1,
        gid: 1,
        umask: 0o077,
    };
    let g = engine.create(d, b"g", asked, sync).unwrap();
    // 0o666 masked by the default ACL (owner rwx, mask r-x, other ---): 0o640.
    assert_eq!(g.mode, 0o640);
    let inherited = acl(&[
        (1, 6, NONE),
        (2, 7, 1000),
        (4, 5, NONE),
        (0x10, 4, NONE),
        (0x20, 0, NONE),
    ]);
    assert_eq!(engine.getxattr(g.ino, ACCESS).unwrap(), inherited);
    let sub = engine
        .mkdir(
            d,
            b"sub",
            NewAttrs {
                mode: 0o777,
                ..asked
            },
            sync,
        )
        .unwrap();
    assert_eq!(sub.mode, 0o750);
    assert_eq!(engine.getxattr(sub.ino, DEFAULT).unwrap(), default);
    // Without a default ACL the umask applies.
    let h = engine.create(ROOT_INO, b"h", asked, sync).unwrap();
    assert_eq!(h.mode, 0o600);
    assert!(engine.listxattr(h.ino).unwrap().is_empty());
    // Removing the default ACL; removing it again is no error (as Linux).
    engine.removexattr(sub.ino, DEFAULT, sync).unwrap();
    engine.removexattr(sub.ino, DEFAULT, sync).unwrap();

    drop(engine);
    let engine = reopen(&device, test_options());
    assert_eq!(engine.getattr(f).unwrap().mode, 0o751);
    assert_eq!(engine.getxattr(g.ino, ACCESS).unwrap(), inherited);
    assert_eq!(engine.getxattr(d, DEFAULT).unwrap(), default);
    assert_eq!(
        engine.getxattr(sub.ino, DEFAULT).unwrap_err().errno(),
        libc::ENODATA
    );
    assert!(engine.fsck().is_clean());
}

#[test]
fn a_long_read_fetches_runs_of_blocks_and_still_checks_each_one() {
    let device = Arc::new(SimDevice::new(71));
    let (engine, _) = open_sim(&device, test_options()).unwrap();
    let file = engine
        .create(ROOT_INO, b"f", FILE, Durability::Sync)
        .unwrap();
    // 40 blocks, each its own bytes; block 7 rewritten after the checkpoint (cached), so
    // runs break around it.
    let block = |i: u64| -> Vec<u8> { (0..4096).map(|j| (i * 13 + j / 7) as u8).collect() };
    let mut data = Vec::new();
    for i in 0..40 {
        data.extend(block(i));
    }
    engine.write(file.ino, 0, &data, Durability::Sync).unwrap();
    engine.checkpoint().unwrap();
    let changed = vec![0xeeu8; 4096];
    engine
        .write(file.ino, 7 * 4096, &changed, Durability::Sync)
        .unwrap();
    data[7 * 4096..8 * 4096].copy_from_slice(&changed);
    // Whole, and from odd offsets to odd ends.
    assert!(engine.read(file.ino, 0, data.len()).unwrap() == data);
    for (from, len) in [(100, 50_000), (4095, 4098), (30 * 4096 + 1, 1_000_000)] {
        let want = &data[from..(from + len).min(data.len())];
        assert!(
            engine.read(file.ino, from as u64, len).unwrap() == want,
            "{from}+{len}"
        );
    }
    // Damage file block 20 in the data file: a read over it fails naming that block;
    // a read that ends before it does not.
    let image = device.durable_image("DATA").unwrap();
    let at = image
        .chunks(4096)
        .position(|b| b == block(20).as_slice())
        .expect("block 20 is in the data file") as u64;
    device.poke("DATA", at * 4096 + 10, &[0x42]);
    match engine.read(file.ino, 0, data.len()) {
        Err(FsError::Checksum { offset, .. }) => assert_eq!(offset, 20 * 4096),
        other => panic!("a damaged block read as {:?}", other.map(|d| d.len())),
    }
    assert!(engine.read(file.ino, 0, 20 * 4096).unwrap() == data[..20 * 4096]);
}

#[test]
fn readers_beside_writers_and_checkpoints_see_only_whole_transactions() {
    use std::sync::atomic::{AtomicUsize, Ordering};

    let device = Arc::new(SimDevice::new(11));
    let (engine, _) = open_sim(&device, test_options()).unwrap();
    const FILES: usize = 3;
    const SIZE: usize = 40 * 1024;
    const VERSIONS: u8 = 200;
    let async_ = || TxnOptions::from(Durability::Async);
    let inos: Vec<Ino> = (0..FILES)
        .map(|i| {
            let ino = engine
                .create(ROOT_INO, format!("f{i}").as_bytes(), FILE, async_())
                .unwrap()
                .ino;
            engine.write(ino, 0, &[0; SIZE], Durability::Async).unwrap();
            ino
        })
        .collect();
    let writers_done = AtomicUsize::new(0);
    let reads = AtomicUsize::new(0);
    std::thread::scope(|s| {
        // Each writer rewrites its file whole, one version after another, and replaces
        // `n{i}` by a rename of a new `t{i}`.
        for (i, &ino) in inos.iter().enumerate() {
            let (engine, writers_done) = (&engine, &writers_done);
            s.spawn(move || {
                for v in 1..=VERSIONS {
                    engine.write(ino, 0, &[v; SIZE], Durability::Async).unwrap();
                    let tmp = format!("t{i}");
                    engine
                        .create(ROOT_INO, tmp.as_bytes(), FILE, async_())
                        .unwrap();
                    let to = format!("n{i}");
                    let flags = RenameFlags::default();
                    engine
                        .rename(
                            ROOT_INO,
                            tmp.as_bytes(),
                            ROOT_INO,
                            to.as_bytes(),
                            flags,
                            async_(),
                        )
                        .unwrap();
                }
                writers_done.fetch_add(1, Ordering::SeqCst);
            });
        }
        // Checkpoints, one after another, while the others run.
        {
            let (engine, writers_done) = (&engine, &writers_done);
            s.spawn(move || {
                while writers_done.load(Ordering::SeqCst) < FILES {
                    engine.checkpoint().unwrap();
                }
            });
        }
        // Readers: a file reads as one version whole, never older than one read before;
        // once `n{i}` is listed it stays listed (a rename over it never leaves a gap).
        for _ in 0..3 {
            let (engine, inos, writers_done, reads) = (&engine, &inos, &writers_done, &reads);
            s.spawn(move || {
                let mut seen = [0u8; FILES];
                let mut named = [false; FILES];
                while writers_done.load(Ordering::SeqCst) < FILES {
                    for (i, &ino) in inos.iter().enumerate() {
                        let bytes = engine.read(ino, 0, SIZE).unwrap();
                        assert_eq!(bytes.len(), SIZE);
                        let v = bytes[0];
                        assert!(bytes.iter().all(|&b| b == v), "file {i}: a torn version");
                        assert!(v >= seen[i], "file {i}: version {v} after {}", seen[i]);
                        seen[i] = v;
                        assert_eq!(engine.getattr(ino).unwrap().size, SIZE as u64);
                    }
                    let names: Vec<Vec<u8>> = engine
                        .readdir(ROOT_INO, None, 100)
                        .unwrap()
                        .into_iter()
                        .map(|e| e.name)
                        .collect();
                    for (i, was_named) in named.iter_mut().enumerate() {
                        let listed = names.contains(&format!("n{i}").into_bytes());
                        assert!(
                            listed || !*was_named,
                            "n{i} vanished during a rename over it"
                        );
                        *was_named |= listed;
                    }
                    reads.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
    });
    assert!(reads.load(Ordering::Relaxed) > 0);
    eprintln!(
        "{} rounds of reads beside the writers",
        reads.load(Ordering::Relaxed)
    );
    for (i, &ino) in inos.iter().enumerate() {
        assert_eq!(
            engine.read(ino, 0, SIZE).unwrap(),
            vec![VERSIONS; SIZE],
            "file {i}"
        );
    }
    let report = engine.fsck();
    assert!(report.is_clean(), "{report:?}");
}
