//! A store whose files were removed, truncated or tampered with from outside is named as
//! such and never silently shortened, formatted over or opened twice: a missing segment,
//! a deleted `LOG` or `SUPER`, a truncated or missing `DATA`, a removed `LOCK`, a directory
//! that is not a store. Each case checks that the refusal writes nothing.

mod cli_common;

use cli_common::smlog;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use smlog::io::{DeviceKind, DeviceOptions};
use smlog::SegmentSeq;
use smlog::{Durability, FsError, LayoutProblem, LogError, NewAttrs, ROOT_INO};
use smlog_recovery::OpenOptions;

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("smlog-store-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap()
}

fn options(create: bool) -> OpenOptions {
    let mut options = OpenOptions {
        create,
        device: DeviceOptions {
            kind: DeviceKind::Posix,
            create_dir: create,
            ..DeviceOptions::default()
        },
        ..OpenOptions::default()
    };
    // Small segments, so the log spans several.
    options.engine.segment_size_bytes = 256 * 1024;
    options.engine.checkpoint_log_bytes = 0;
    options.engine.checkpoint_dirty_bytes = 0;
    options
}

const ATTRS: NewAttrs = NewAttrs {
    mode: 0o644,
    uid: 0,
    gid: 0,
    umask: 0,
};

/// A store with a checkpoint, data blocks in DATA, and a log of several segments after the
/// checkpoint; every change acknowledged durable. Returns the directory.
fn make_store(base: &Path) -> PathBuf {
    let dir = base.join("store");
    let (engine, _) = smlog_recovery::open(&dir, options(true)).unwrap();
    let big = engine
        .create(ROOT_INO, b"big", ATTRS, Durability::Sync)
        .unwrap();
    engine
        .write(big.ino, 0, &vec![0x5a; 512 * 1024], Durability::Sync)
        .unwrap();
    engine.checkpoint().unwrap();
    for i in 0..300u32 {
        let name = format!("f{i}");
        let file = engine
            .create(ROOT_INO, name.as_bytes(), ATTRS, Durability::Sync)
            .unwrap();
        engine
            .write(file.ino, 0, &[i as u8; 3000], Durability::Sync)
            .unwrap();
    }
    drop(engine);
    dir
}

/// Every file but LOCK and a digest of its bytes: what a refusal must leave as it was.
fn files(dir: &Path) -> BTreeMap<String, (u64, u32)> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_name() != "LOCK")
        .map(|e| {
            let bytes = std::fs::read(e.path()).unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                (bytes.len() as u64, crc32fast::hash(&bytes)),
            )
        })
        .collect()
}

fn segments(dir: &Path) -> Vec<String> {
    files(dir)
        .into_keys()
        .filter(|n| n.ends_with(".seg"))
        .collect()
}

fn layout_problem(result: Result<impl Sized, FsError>) -> LayoutProblem {
    match result {
        Err(FsError::Layout { problem, .. }) => problem,
        Err(other) => panic!("not a layout error: {other}"),
        Ok(_) => panic!("opened"),
    }
}

#[test]
fn a_segment_removed_from_the_middle_is_corruption_naming_it_in_every_mode() {
    let base = tempdir();
    let dir = make_store(base.path());
    let names = segments(&dir);
    assert!(names.len() >= 4, "{names:?}");
    std::fs::remove_file(dir.join(&names[1])).unwrap();
    let before = files(&dir);
    let out = smlog(&["log", "verify"], &dir);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("segment 2 is missing"),
        "{}",
        text(&out)
    );
    for args in [
        &["log", "stat"][..],
        &["log", "dump"][..],
        &["recover", "--dry-run"][..],
        &["recover"][..],
        &["recover", "--mode", "strict"][..],
        &["fsck"][..],
    ] {
        let out = smlog(args, &dir);
        assert_ne!(out.status.code(), Some(0), "{args:?}: {}", text(&out));
        assert!(
            text(&out).contains("segment 2 is missing"),
            "{args:?}: {}",
            text(&out)
        );
    }
    match smlog_recovery::open(&dir, options(false)) {
        Err(FsError::Log(LogError::MissingSegment { segment_seq, .. })) => {
            assert_eq!(segment_seq, SegmentSeq(2))
        }
        Err(other) => panic!("{other}"),
        Ok(_) => panic!("opened without segment 2"),
    }
    assert_eq!(files(&dir), before, "a refusal wrote something");
}

#[test]
fn a_store_that_lost_its_log_file_is_never_formatted_over() {
    let base = tempdir();
    let dir = make_store(base.path());
    std::fs::remove_file(dir.join("LOG")).unwrap();
    let before = files(&dir);
    match layout_problem(smlog_recovery::open(&dir, options(true))) {
        LayoutProblem::LogMissing { files } => {
            for name in ["SUPER", "DATA", "00000000000000000002.seg"] {
                assert!(files.iter().any(|f| f == name), "{files:?}");
            }
        }
        other => panic!("{other}"),
    }
    for args in [&["recover"][..], &["fsck"][..], &["format"][..]] {
        let out = smlog(args, &dir);
        assert_eq!(out.status.code(), Some(3), "{args:?}: {}", text(&out));
        assert!(
            text(&out).contains("LOG file is missing"),
            "{args:?}: {}",
            text(&out)
        );
    }
    assert_eq!(files(&dir), before, "a refusal wrote something");
}

#[test]
fn a_log_without_its_super_is_named_up_front() {
    let base = tempdir();
    let dir = make_store(base.path());
    std::fs::remove_file(dir.join("SUPER")).unwrap();
    let before = files(&dir);
    assert_eq!(
        layout_problem(smlog_recovery::open(&dir, options(true))),
        LayoutProblem::SuperMissing
    );
    for args in [
        &["recover"][..],
        &["recover", "--dry-run"][..],
        &["fsck"][..],
    ] {
        let out = smlog(args, &dir);
        assert_eq!(out.status.code(), Some(3), "{args:?}: {}", text(&out));
        assert!(text(&out).contains("SUPER"), "{args:?}: {}", text(&out));
    }
    assert_eq!(files(&dir), before);
}

#[test]
fn a_truncated_or_missing_data_file_is_refused_with_its_sizes() {
    let base = tempdir();
    let dir = make_store(base.path());
    let data = dir.join("DATA");
    let len = std::fs::metadata(&data).unwrap().len();
    assert!(len >= 512 * 1024, "{len}");
    let cut = 64 * 1024;
    std::fs::OpenOptions::new()
        .write(true)
        .open(&data)
        .unwrap()
        .set_len(cut)
        .unwrap();
    let before = files(&dir);
    match layout_problem(smlog_recovery::open(&dir, options(true))) {
        LayoutProblem::DataShort {
            len_bytes,
            need_bytes,
        } => {
            assert_eq!(len_bytes, cut);
            assert!(need_bytes >= 512 * 1024, "{need_bytes}");
        }
        other => panic!("{other}"),
    }
    for args in [&["recover"][..], &["fsck"][..]] {
        let out = smlog(args, &dir);
        assert_eq!(out.status.code(), Some(3), "{args:?}: {}", text(&out));
        assert!(text(&out).contains("truncated"), "{args:?}: {}", text(&out));
    }
    assert_eq!(files(&dir), before);
    std::fs::remove_file(&data).unwrap();
    assert!(matches!(
        layout_problem(smlog_recovery::open(&dir, options(true))),
        LayoutProblem::DataMissing { need_bytes } if need_bytes >= 512 * 1024
    ));
    assert!(!data.exists(), "a missing DATA was made anew");
}

#[test]
fn a_new_file_system_is_made_only_in_an_empty_directory() {
    let base = tempdir();
    // Not empty, not a store.
    let other = base.path().join("other");
    std::fs::create_dir(&other).unwrap();
    std::fs::write(other.join("notes.txt"), b"mine").unwrap();
    match layout_problem(smlog_recovery::open(&other, options(true))) {
        LayoutProblem::NotEmpty { files } => assert_eq!(files, vec!["notes.txt".to_string()]),
        other => panic!("{other}"),
    }
    let out = smlog(&["format"], &other);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(text(&out).contains("not empty"), "{}", text(&out));
    assert_eq!(
        std::fs::read_dir(&other)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n != "LOCK")
            .collect::<Vec<_>>(),
        vec!["notes.txt".to_string()]
    );
    // `smlog format` makes the directory and a file system; a second format refuses.
    let fresh = base.path().join("fresh");
    let out = smlog(&["format"], &fresh);
    assert!(out.status.success(), "{}", text(&out));
    assert!(fresh.join("LOG").exists() && fresh.join("SUPER").exists());
    let out = smlog(&["format"], &fresh);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(text(&out).contains("already holds"), "{}", text(&out));
    // An interrupted format (SUPER written, no LOG yet) is formatted over.
    let interrupted = base.path().join("interrupted");
    std::fs::create_dir(&interrupted).unwrap();
    std::fs::write(interrupted.join("SUPER"), vec![0u8; 8192]).unwrap();
    let (engine, report) = smlog_recovery::open(&interrupted, options(true)).unwrap();
    assert!(report.created);
    drop(engine);
}

#[test]
fn mount_makes_a_missing_directory_only_when_asked() {
    if !Path::new("/dev/fuse").exists() {
        eprintln!("skipped: /dev/fuse is missing");
        return;
    }
    let base = tempdir();
    let missing = base.path().join("missing");
    let mnt = base.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_smlog"))
        .arg("mount")
        .arg(&missing)
        .arg(&mnt)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(text(&out).contains("--create"), "{}", text(&out));
    assert!(!missing.exists());
    // A regular file is not a directory, with or without --create.
    let file = base.path().join("file");
    std::fs::write(&file, b"x").unwrap();
    for create in [false, true] {
        let mut command = Command::new(env!("CARGO_BIN_EXE_smlog"));
        command.arg("mount").arg(&file).arg(&mnt);
        if create {
            command.arg("--create");
        }
        let out = command.output().unwrap();
        assert_eq!(out.status.code(), Some(3), "{}", text(&out));
        let said = text(&out);
        assert!(said.contains("not a directory"), "{said}");
        assert!(!said.contains("offset"), "{said}");
    }
}

#[test]
fn removing_lock_while_open_lets_no_second_opener_in() {
    let base = tempdir();
    let dir = make_store(base.path());
    let (engine, _) = smlog_recovery::open(&dir, options(false)).unwrap();
    std::fs::remove_file(dir.join("LOCK")).unwrap();
    // The holder's pid is named where the kernel shows it (not in every container); the
    // second opener is refused either way.
    let shown = smlog::io::kernel_lock_holder(&dir);
    if shown.is_none() {
        println!("/proc/locks does not show this process's lock here");
    }
    match smlog_recovery::open(&dir, options(false)) {
        Err(FsError::Io(e)) => {
            assert_eq!(e.kind, smlog::io::IoErrorKind::Locked { pid: shown })
        }
        Err(other) => panic!("{other}"),
        Ok(_) => panic!("a second opener got in"),
    }
    let out = smlog(&["recover"], &dir);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let said = text(&out);
    let named = shown.map_or("its pid is unknown".to_owned(), |pid| format!("pid {pid}"));
    assert!(said.contains(&format!("({named})")), "{said}");
    assert!(!said.contains("Some("), "{said}");
    drop(engine);
    let (engine, _) = smlog_recovery::open(&dir, options(false)).unwrap();
    drop(engine);
}

#[test]
fn a_short_log_file_says_how_long_it_is_and_reports_exit_with_what_they_found() {
    let base = tempdir();
    let dir = make_store(base.path());
    // A pipe closed after one line is no panic.
    for args in [
        &["log", "dump"][..],
        &["txn", "list"][..],
        &["log", "stat"][..],
    ] {
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "'{}' {} '{}' | head -1 >/dev/null; echo ${{PIPESTATUS:-}}",
                env!("CARGO_BIN_EXE_smlog"),
                args.join(" "),
                dir.display()
            ))
            .output()
            .unwrap();
        let said = text(&out);
        assert!(!said.contains("panicked"), "{args:?}: {said}");
    }
    let log = std::fs::read(dir.join("LOG")).unwrap();
    std::fs::write(dir.join("LOG"), &log[..30]).unwrap();
    let out = smlog(&["log", "stat"], &dir);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(text(&out).contains("30 bytes"), "{}", text(&out));
}

#[test]
fn flipped_data_bytes_are_eio_on_read_and_named_by_fsck_never_returned() {
    let base = tempdir();
    let dir = make_store(base.path());
    let (engine, _) = smlog_recovery::open(&dir, options(false)).unwrap();
    let big = engine.lookup(ROOT_INO, b"big").unwrap();
    let mapped = engine
        .meta()
        .inode(big.ino)
        .unwrap()
        .blocks
        .get(&3)
        .unwrap();
    drop(engine);
    // One bit of file block 3 (bytes 12288..16384) rots in DATA.
    let data = dir.join("DATA");
    let mut bytes = std::fs::read(&data).unwrap();
    bytes[mapped.data_block as usize * 4096 + 100] ^= 0x10;
    std::fs::write(&data, &bytes).unwrap();
    let (engine, _) = smlog_recovery::open(&dir, options(false)).unwrap();
    // The blocks around it read; the damaged one is EIO, whole reads over it too.
    assert_eq!(engine.read(big.ino, 0, 12288).unwrap(), vec![0x5a; 12288]);
    assert_eq!(engine.read(big.ino, 16384, 4096).unwrap(), vec![0x5a; 4096]);
    for (offset, len) in [(12288, 4096), (12300, 10), (0, 512 * 1024)] {
        match engine.read(big.ino, offset, len) {
            Err(e @ FsError::Checksum { .. }) => {
                assert_eq!(e.errno(), libc_eio());
                let said = e.to_string();
                assert!(
                    said.contains(&format!("inode {}", big.ino))
                        && said.contains("offset 12288")
                        && said.contains(&format!("data block {}", mapped.data_block)),
                    "{said}"
                );
            }
            other => panic!("read at {offset}: {other:?}"),
        }
    }
    let fsck = engine.fsck();
    assert_eq!(fsck.bad_blocks, 1, "{:?}", fsck.problems);
    drop(engine);
    let out = smlog(&["fsck"], &dir);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("fails its checksum"), "{}", text(&out));
}

fn libc_eio() -> i32 {
    5
}
