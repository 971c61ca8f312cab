//! `smlog::serve::DirStream`: a directory read while it changes never skips or repeats an
//! entry that stays, and its offsets stay valid.

mod fs_common;

use std::sync::Arc;

use fs_common::*;
use smlog::io::sim::SimDevice;
use smlog::serve::DirStream;
use smlog::{Durability, NewAttrs, ROOT_INO};

const FILE: NewAttrs = NewAttrs {
    mode: 0o644,
    uid: 0,
    gid: 0,
    umask: 0,
};

fn names(entries: &[smlog::serve::StreamEntry]) -> Vec<String> {
    entries
        .iter()
        .map(|e| String::from_utf8_lossy(&e.name).into_owned())
        .collect()
}

#[test]
fn a_directory_stream_survives_changes_between_reads() {
    let device = Arc::new(SimDevice::new(1));
    let (engine, _) = open_sim(&device, test_options()).unwrap();
    let dir = engine
        .mkdir(ROOT_INO, b"d", FILE, Durability::Async)
        .unwrap()
        .ino;
    for name in ["b", "d", "f", "h", "j"] {
        engine
            .create(dir, name.as_bytes(), FILE, Durability::Async)
            .unwrap();
    }
    let mut stream = DirStream::new(dir);
    let first = stream.read(&engine, 0, 3).unwrap();
    assert_eq!(names(&first), [".", "..", "b"]);
    assert_eq!(first[0].ino, dir);
    assert_eq!(first[1].ino, ROOT_INO);
    let after_b = first[2].offset;

    // Between reads: the entry the cursor names goes, one before it and one after it
    // come, one not yet read goes.
    engine.unlink(dir, b"b", Durability::Async).unwrap();
    engine.create(dir, b"a", FILE, Durability::Async).unwrap();
    engine.create(dir, b"e", FILE, Durability::Async).unwrap();
    engine.unlink(dir, b"f", Durability::Async).unwrap();
    let rest = stream.read(&engine, after_b, 100).unwrap();
    assert_eq!(names(&rest), ["d", "e", "h", "j"]);

    // An offset handed out earlier still works, and gives the same offsets again.
    let again = stream.read(&engine, first[1].offset, 2).unwrap();
    assert_eq!(names(&again), ["a", "d"]);
    assert_eq!(again[1].offset, rest[0].offset);
    let from_start = stream.read(&engine, 0, 100).unwrap();
    assert_eq!(names(&from_start), [".", "..", "a", "d", "e", "h", "j"]);
    // The end of the stream is empty, and an offset never handed out is refused.
    let end = from_start.last().unwrap().offset;
    assert!(stream.read(&engine, end, 100).unwrap().is_empty());
    let bad = stream.read(&engine, end + 1000, 10).unwrap_err();
    assert_eq!(bad.errno(), libc::EINVAL);
    // A directory removed while open reads as gone.
    for name in ["a", "d", "e", "h", "j"] {
        engine
            .unlink(dir, name.as_bytes(), Durability::Async)
            .unwrap();
    }
    engine.rmdir(ROOT_INO, b"d", Durability::Async).unwrap();
    assert_eq!(
        stream.read(&engine, 0, 10).unwrap_err().errno(),
        libc::ENOENT
    );
}
