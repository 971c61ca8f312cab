//! Each machine crashed at every step: recovery resumes a transaction past its point of no
//! return and rolls back one before it, and the store is always the state before the
//! operation or after it, never between.

mod fs_common;

use fs_common::*;
use smlog::RenameFlags;

fn v(s: &str) -> Vec<u8> {
    s.as_bytes().to_vec()
}

fn setup() -> Vec<FsOp> {
    vec![
        FsOp::Mkdir(v(""), v("d")),
        FsOp::Create(v(""), v("a")),
        FsOp::Write(v("a"), 0, 70_000, 1),
        FsOp::Create(v("d"), v("b")),
        FsOp::Write(v("d/b"), 100, 3000, 2),
        FsOp::Mkdir(v("d"), v("e")),
    ]
}

fn check(name: &str, op: FsOp, want_resume: bool, want_rollback: bool) {
    let stats = crash_at_every_step(&setup(), &[op], name);
    assert!(stats.runs > 0, "{name}");
    if want_resume {
        assert!(stats.resumed > 0, "{name}: never resumed: {stats:?}");
    }
    if want_rollback {
        assert!(
            stats.rolled_back > 0,
            "{name}: never rolled back: {stats:?}"
        );
    }
}

#[test]
fn create_rolls_back_when_the_crash_falls_after_the_inode_step() {
    check("create", FsOp::Create(v("d"), v("new")), false, true);
    check("mkdir", FsOp::Mkdir(v(""), v("new")), false, true);
    check(
        "symlink",
        FsOp::Symlink(v("d"), v("s"), v("../a")),
        false,
        true,
    );
}

#[test]
fn unlink_of_the_last_link_resumes_freeing_the_data_after_the_name_step() {
    check("unlink", FsOp::Unlink(v(""), v("a")), true, false);
    check("rmdir", FsOp::Rmdir(v("d"), v("e")), true, false);
}

#[test]
fn rename_over_existing_survives_crash_after_every_step() {
    // Over an existing file that then loses its last link and frees its data.
    check(
        "rename over file",
        FsOp::Rename(v(""), v("a"), v("d"), v("b"), RenameFlags::default()),
        true,
        true,
    );
    check(
        "rename to a new name in another directory",
        FsOp::Rename(v("d"), v("b"), v(""), v("c"), RenameFlags::default()),
        false,
        true,
    );
    check(
        "rename a directory over an empty directory",
        FsOp::Rename(v("d"), v("e"), v(""), v("d2"), RenameFlags::default()),
        false,
        true,
    );
    check(
        "rename exchange",
        FsOp::Rename(
            v(""),
            v("a"),
            v("d"),
            v("e"),
            RenameFlags {
                exchange: true,
                no_replace: false,
            },
        ),
        false,
        true,
    );
}

#[test]
fn large_write_rolls_back_before_its_blocks_are_linked() {
    check(
        "large write",
        FsOp::Write(v("d/b"), 4000, 200_000, 9),
        false,
        true,
    );
    check("small write", FsOp::Write(v("a"), 5, 100, 10), false, false);
}

#[test]
fn truncate_resumes_releasing_the_data_after_the_size_step() {
    check("truncate", FsOp::Truncate(v("a"), 10), true, false);
    check("link", FsOp::Link(v("a"), v("d"), v("l")), false, false);
    check("chmod", FsOp::Chmod(v("a"), 0o600), false, false);
}

#[test]
fn mknod_and_extended_attributes_are_whole_or_absent_after_a_crash_at_every_step() {
    use smlog::FileKind;
    check(
        "mknod of a device",
        FsOp::Mknod(v("d"), v("dev"), FileKind::CharDevice { rdev: 0x0103 }),
        false,
        true,
    );
    check(
        "mknod of a FIFO",
        FsOp::Mknod(v(""), v("p"), FileKind::Fifo),
        false,
        true,
    );
    // One step each: a crash before it leaves the attribute as it was (nothing to roll
    // back), a crash after it keeps the change.
    let stats = crash_at_every_step(
        &[
            setup(),
            vec![FsOp::Xattr(
                v("a"),
                v("user.k"),
                Some((300, 9)),
                false,
                false,
            )],
        ]
        .concat(),
        &[
            FsOp::Xattr(v("a"), v("user.k"), Some((40, 10)), false, true),
            FsOp::Xattr(v("d"), v("trusted.t"), Some((5, 11)), true, false),
            FsOp::Xattr(v("a"), v("user.k"), None, false, false),
        ],
        "set, replace, remove",
    );
    assert!(stats.runs >= 3, "{stats:?}");
}

#[test]
fn fallocate_is_whole_or_absent_after_a_crash_at_every_step() {
    use smlog::FallocMode;
    // One step each: allocate past the end, punch through data, zero a range growing the
    // file, allocate keeping the size: a crash leaves each before or after, never between.
    let stats = crash_at_every_step(
        &setup(),
        &[
            FsOp::Fallocate(
                v("a"),
                69_000,
                20_000,
                FallocMode::Allocate { keep_size: false },
            ),
            FsOp::Fallocate(v("a"), 1000, 30_000, FallocMode::PunchHole),
            FsOp::Fallocate(
                v("d/b"),
                50,
                9000,
                FallocMode::ZeroRange { keep_size: false },
            ),
            FsOp::Fallocate(
                v("d/b"),
                0,
                90_000,
                FallocMode::Allocate { keep_size: true },
            ),
        ],
        "allocate, punch, zero, allocate keeping the size",
    );
    assert!(stats.runs >= 4, "{stats:?}");
}
