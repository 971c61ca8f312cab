//! `smlog::serve::DirStream`: a directory read while it changes never skips or repeats an
//! entry that stays, and an offset means the same on every stream of the directory (a
//! reader may go on with another stream: a kernel's dropped listing, an NFS client moved to
//! another server).

mod fs_common;

use std::collections::BTreeSet;
use std::sync::Arc;

use fs_common::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use smlog::io::sim::SimDevice;
use smlog::serve::{DirStream, ListingKey, StreamEntry, FIRST_NAME_OFFSET};
use smlog::{Durability, NewAttrs, ROOT_INO};

const FILE: NewAttrs = NewAttrs {
    mode: 0o644,
    uid: 0,
    gid: 0,
    umask: 0,
};

const KEY: ListingKey = ListingKey(*b"0123456789abcdef");

fn names(entries: &[StreamEntry]) -> Vec<String> {
    entries
        .iter()
        .map(|e| String::from_utf8_lossy(&e.name).into_owned())
        .collect()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|n| n.to_string()).collect()
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
    let mut stream = DirStream::new(dir, KEY);
    let whole = stream.read(&engine, 0, 100).unwrap();
    assert_eq!(names(&whole[..2]), [".", ".."]);
    assert_eq!((whole[0].ino, whole[1].ino), (dir, ROOT_INO));
    assert_eq!(
        names(&whole[2..]).into_iter().collect::<BTreeSet<_>>(),
        set(&["b", "d", "f", "h", "j"])
    );
    // Offsets rise along the stream, and the end of it is empty.
    assert!(whole.windows(2).all(|w| w[0].offset < w[1].offset));
    let end = whole.last().unwrap().offset;
    assert!(stream.read(&engine, end, 100).unwrap().is_empty());

    let first = stream.read(&engine, 0, 3).unwrap();
    assert_eq!(first, whole[..3]);
    let cursor = first[2].offset;
    let (read, unread) = (names(&first[2..]), names(&whole[3..]));

    // Between reads: the entry the cursor names goes, one not yet read goes, two come.
    engine
        .unlink(dir, read[0].as_bytes(), Durability::Async)
        .unwrap();
    engine
        .unlink(dir, unread[1].as_bytes(), Durability::Async)
        .unwrap();
    engine.create(dir, b"a", FILE, Durability::Async).unwrap();
    engine.create(dir, b"e", FILE, Durability::Async).unwrap();
    // The stream goes on with the names as they are now (it sees the directory changed):
    // the unread ones less the removed one, and the new ones past the cursor.
    let rest = stream.read(&engine, cursor, 100).unwrap();
    let rest_names = names(&rest);
    let mut expected = unread.clone();
    expected.remove(1);
    let stayed: Vec<&String> = rest_names
        .iter()
        .filter(|n| *n != "a" && *n != "e")
        .collect();
    assert_eq!(stayed, expected.iter().collect::<Vec<_>>());
    assert!(rest.iter().all(|e| e.offset > cursor));

    // A new stream of the directory, from the same cursor, gives the same entries with the
    // same offsets.
    let mut other = DirStream::new(dir, KEY);
    let elsewhere = other.read(&engine, cursor, 100).unwrap();
    assert_eq!(elsewhere, rest);
    // A name replaced by a rename over it is listed as what it names now.
    let target = expected[0].clone();
    let replacement = engine.create(dir, b"tmp", FILE, Durability::Async).unwrap();
    engine
        .rename(
            dir,
            b"tmp",
            dir,
            target.as_bytes(),
            Default::default(),
            Durability::Async,
        )
        .unwrap();
    let after = stream.read(&engine, cursor, 100).unwrap();
    let renamed = after.iter().find(|e| e.name == target.as_bytes()).unwrap();
    assert_eq!(renamed.ino, replacement.ino);
    // A pass from the start takes the names again: the new ones are in it.
    let again = stream.read(&engine, 0, 100).unwrap();
    let mut listed: Vec<String> = names(&again[2..]);
    listed.sort();
    let mut now = vec!["a", "e"];
    now.extend(
        ["b", "d", "f", "h", "j"]
            .iter()
            .filter(|n| **n != read[0] && **n != unread[1]),
    );
    now.sort();
    assert_eq!(listed, now);

    // Offsets no name can have are refused.
    for bad in [3, FIRST_NAME_OFFSET - 1, u64::MAX] {
        let error = stream.read(&engine, bad, 10).unwrap_err();
        assert_eq!(error.errno(), libc::EINVAL, "offset {bad}");
    }
    // A directory removed while open reads as gone.
    for entry in &again[2..] {
        engine.unlink(dir, &entry.name, Durability::Async).unwrap();
    }
    engine.rmdir(ROOT_INO, b"d", Durability::Async).unwrap();
    assert_eq!(
        stream.read(&engine, 0, 10).unwrap_err().errno(),
        libc::ENOENT
    );
}

/// Readers that change streams at random points while names come and go, to a new stream or
/// to one left from an earlier pass (whose names are older than the reader's pass): each pass
/// returns every name that stayed through it exactly once, and nothing that was never there.
#[test]
fn readers_that_move_between_streams_neither_skip_nor_repeat_a_name_that_stayed() {
    let device = Arc::new(SimDevice::new(2));
    let (engine, _) = open_sim(&device, test_options()).unwrap();
    let dir = engine
        .mkdir(ROOT_INO, b"d", FILE, Durability::Async)
        .unwrap()
        .ino;
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let mut present: BTreeSet<String> = BTreeSet::new();
    let mut next = 0u32;
    let mut add = |present: &mut BTreeSet<String>, rng: &mut ChaCha8Rng| {
        let name = format!("n{next}-{}", rng.gen_range(0..1000));
        next += 1;
        engine
            .create(dir, name.as_bytes(), FILE, Durability::Async)
            .unwrap();
        present.insert(name.clone());
        name
    };
    for _ in 0..300 {
        add(&mut present, &mut rng);
    }
    let mut old: Vec<DirStream> = Vec::new();
    for pass in 0..40 {
        let before = present.clone();
        let mut ever = before.clone();
        let mut seen: Vec<String> = Vec::new();
        let mut stream = DirStream::new(dir, KEY);
        let mut offset = 0;
        loop {
            let limit = rng.gen_range(1..40);
            let batch = stream.read(&engine, offset, limit).unwrap();
            if batch.is_empty() {
                break;
            }
            offset = batch.last().unwrap().offset;
            seen.extend(names(&batch).into_iter().filter(|n| n != "." && n != ".."));
            // Changes between reads, and now and then the reader goes on with a new stream.
            for _ in 0..rng.gen_range(0..4) {
                if rng.gen_bool(0.5) || present.is_empty() {
                    ever.insert(add(&mut present, &mut rng));
                } else {
                    let victim = present
                        .iter()
                        .nth(rng.gen_range(0..present.len()))
                        .unwrap()
                        .clone();
                    engine
                        .unlink(dir, victim.as_bytes(), Durability::Async)
                        .unwrap();
                    present.remove(&victim);
                }
            }
            if rng.gen_bool(0.3) {
                let next = if !old.is_empty() && rng.gen_bool(0.5) {
                    old.swap_remove(rng.gen_range(0..old.len()))
                } else {
                    DirStream::new(dir, KEY)
                };
                old.push(std::mem::replace(&mut stream, next));
            }
        }
        old.push(stream);
        old.truncate(8);
        let stayed: BTreeSet<&String> = before.intersection(&present).collect();
        let mut counts = std::collections::BTreeMap::new();
        for name in &seen {
            *counts.entry(name).or_insert(0) += 1;
        }
        for name in &stayed {
            assert_eq!(counts.get(name), Some(&1), "pass {pass}: {name} stayed");
        }
        for (name, count) in &counts {
            assert_eq!(*count, 1, "pass {pass}: {name} listed twice");
            assert!(ever.contains(*name), "pass {pass}: {name} was never there");
        }
    }
}

/// Shared streams, one per directory, bounded: a stream dropped for room is taken again at
/// its next read, and a reader part way through goes on where it was.
#[test]
fn shared_streams_are_bounded_and_a_dropped_one_goes_on_where_it_was() {
    let device = Arc::new(SimDevice::new(3));
    let (engine, _) = open_sim(&device, test_options()).unwrap();
    let mut dirs = Vec::new();
    for d in 0..3 {
        let dir = engine
            .mkdir(
                ROOT_INO,
                format!("d{d}").as_bytes(),
                FILE,
                Durability::Async,
            )
            .unwrap()
            .ino;
        for i in 0..20 {
            engine
                .create(dir, format!("f{i}").as_bytes(), FILE, Durability::Async)
                .unwrap();
        }
        dirs.push(dir);
    }
    // Two directories, or 30 names, at most.
    let mut streams = smlog::serve::DirStreams::new(KEY, 2, 30);
    let first = streams.read(&engine, dirs[0], 0, 7).unwrap();
    assert_eq!(streams.stream(dirs[0]).names_held(), 20);
    // Reading another drops the first (40 names > 30), and a third is over the count too.
    streams.read(&engine, dirs[1], 0, 5).unwrap();
    assert_eq!(
        streams.stream(dirs[0]).names_held(),
        0,
        "dropped, made anew"
    );
    streams.read(&engine, dirs[2], 0, 5).unwrap();
    // The first reader goes on from its offset in a new stream: the rest, once each.
    let rest = streams
        .read(&engine, dirs[0], first.last().unwrap().offset, 100)
        .unwrap();
    let mut all: Vec<String> = names(&first).into_iter().chain(names(&rest)).collect();
    all.sort();
    let mut want: Vec<String> = (0..20).map(|i| format!("f{i}")).collect();
    want.extend([".".to_string(), "..".to_string()]);
    want.sort();
    assert_eq!(all, want);
}
