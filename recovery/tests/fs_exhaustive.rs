//! Exhaustive small bounds, as ACE does: every sequence of up to three operations from an
//! alphabet over two directories and three names, crashed at every device operation, with
//! the write in flight lost, kept or torn; after each crash the store is the model after
//! the acknowledged operations (and possibly the next, whole), fsck is clean, and a second
//! recovery changes nothing.
//!
//! CI runs every sequence of one and two operations and every `SMLOG_EXHAUSTIVE_STRIDE`-th
//! (default 13) sequence of three; `SMLOG_EXHAUSTIVE_STRIDE=1` runs all of them.

mod fs_common;

use fs_common::*;
use smlog::RenameFlags;

fn v(s: &str) -> Vec<u8> {
    s.as_bytes().to_vec()
}

fn alphabet() -> Vec<FsOp> {
    let plain = RenameFlags::default();
    vec![
        FsOp::Create(v("d"), v("c")),
        FsOp::Mkdir(v(""), v("c")),
        FsOp::Unlink(v(""), v("a")),
        FsOp::Unlink(v("d"), v("b")),
        FsOp::Rmdir(v(""), v("c")),
        FsOp::Rename(v(""), v("a"), v("d"), v("a"), plain),
        FsOp::Rename(v("d"), v("b"), v(""), v("a"), plain),
        FsOp::Rename(
            v(""),
            v("a"),
            v("d"),
            v("b"),
            RenameFlags {
                exchange: true,
                no_replace: false,
            },
        ),
        FsOp::Rename(v(""), v("d"), v(""), v("c"), plain),
        FsOp::Link(v("a"), v("d"), v("c")),
        FsOp::Write(v("a"), 10, 100, 5),
        FsOp::Write(v("d/b"), 0, 70_000, 6),
        FsOp::Truncate(v("a"), 7),
    ]
}

fn setup() -> Vec<FsOp> {
    vec![
        FsOp::Mkdir(v(""), v("d")),
        FsOp::Create(v(""), v("a")),
        FsOp::Write(v("a"), 0, 9000, 1),
        FsOp::Create(v("d"), v("b")),
    ]
}

#[test]
fn every_short_sequence_survives_a_crash_at_every_step() {
    let stride: usize = std::env::var("SMLOG_EXHAUSTIVE_STRIDE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(13);
    let ops = alphabet();
    let n = ops.len();
    let mut sequences: Vec<Vec<usize>> = Vec::new();
    for a in 0..n {
        sequences.push(vec![a]);
        for b in 0..n {
            sequences.push(vec![a, b]);
        }
    }
    let mut index = 0usize;
    for a in 0..n {
        for b in 0..n {
            for c in 0..n {
                if index.is_multiple_of(stride) {
                    sequences.push(vec![a, b, c]);
                }
                index += 1;
            }
        }
    }
    let mut total = StepCrashStats::default();
    for sequence in &sequences {
        let seq: Vec<FsOp> = sequence.iter().map(|&i| ops[i].clone()).collect();
        let stats = crash_at_every_step(&setup(), &seq, &format!("{seq:?}"));
        total.runs += stats.runs;
        total.resumed += stats.resumed;
        total.rolled_back += stats.rolled_back;
    }
    eprintln!(
        "exhaustive: {} sequences, {} crash-recover runs, {} resumed, {} rolled back",
        sequences.len(),
        total.runs,
        total.resumed,
        total.rolled_back
    );
    assert!(total.resumed > 0 && total.rolled_back > 0, "{total:?}");
}
