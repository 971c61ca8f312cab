//! Golden vectors: the exact bytes of every postcard-encoded variant the engine writes to
//! disk (transaction records in the log, the checkpoint image), and their variant tags
//! checked against `docs/FORMAT.md`.
//!
//! postcard numbers an enum's variants in declaration order, so reordering, inserting or
//! removing a variant (or a field) changes what old logs and images decode as, while every
//! round-trip test still passes. This test fails on any such change. A change that must
//! happen bumps the store version (`docs/FORMAT.md`, "Versions") and then updates these
//! vectors; `SMLOG_PRINT_GOLDEN=1 cargo test -p smlog --test golden_vectors` prints them.
//!
//! Every enum is matched exhaustively below (`*_variant`), so a new variant does not
//! compile until it has a vector and a line in FORMAT.md.

use std::collections::BTreeMap;

use smlog::internals::machines::{
    Create, CreateState, FallocMode, Fallocate, Link, NewAttrs, NewNode, Reclaim, Rename,
    RenameState, SetAttr, SetAttrState, SetXattr, Unlink, UnlinkState, Write, WriteState,
    XattrFlags,
};
use smlog::internals::{Attrs, FsMeta, Name, Op, Run};
use smlog::internals::{FileTxn, StepRecord, TxnRecord};
use smlog::Ino;
use smlog::Lsn;
use smlog::{EntryId, FileKind, Outcome, RenameFlags, RequestKey, SetAttrChanges, Time, TxnResult};

/// One encoded value: a unique name, its bytes, and the variant tags in them: (enum,
/// variant, offset of the tag in the bytes).
struct Case {
    name: String,
    bytes: Vec<u8>,
    tags: Vec<(&'static str, &'static str, usize)>,
}

fn name(text: &str) -> Name {
    Name::new(text.as_bytes()).unwrap()
}

const NOW: Time = Time {
    secs: 1_700_000_000,
    nanos: 123_456_789,
};

const ATTRS: Attrs = Attrs {
    mode: 0o100644,
    uid: 1000,
    gid: 100,
    size: 4096,
    nlink: 1,
    atime: NOW,
    mtime: NOW,
    ctime: NOW,
};

const KEY: RequestKey = RequestKey {
    client_id: 7,
    request_id: 300,
};

/// A replicated-log entry: term 2, index 70,000 (a three-byte varint).
const ENTRY: EntryId = EntryId {
    term: 2,
    index: 70_000,
};

fn runs() -> Vec<Run> {
    vec![Run { start: 5, len: 2 }, Run { start: 130, len: 1 }]
}

fn file_kind_variant(kind: FileKind) -> &'static str {
    match kind {
        FileKind::File => "File",
        FileKind::Dir => "Dir",
        FileKind::Symlink => "Symlink",
        FileKind::Fifo => "Fifo",
        FileKind::Socket => "Socket",
        FileKind::CharDevice { .. } => "CharDevice",
        FileKind::BlockDevice { .. } => "BlockDevice",
    }
}

fn txn_result_variant(result: TxnResult) -> &'static str {
    match result {
        TxnResult::Done => "Done",
        TxnResult::Ino(_) => "Ino",
        TxnResult::Bytes(_) => "Bytes",
    }
}

fn outcome_variant(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::Committed(_) => "Committed",
        Outcome::RolledBack { .. } => "RolledBack",
    }
}

fn new_node_variant(node: &NewNode) -> &'static str {
    match node {
        NewNode::File => "File",
        NewNode::Dir => "Dir",
        NewNode::Symlink(_) => "Symlink",
        NewNode::Special(_) => "Special",
    }
}

fn op_variant(op: &Op) -> &'static str {
    match op {
        Op::PutInode { .. } => "PutInode",
        Op::DropInode { .. } => "DropInode",
        Op::SetAttrs { .. } => "SetAttrs",
        Op::SetParent { .. } => "SetParent",
        Op::DirInsert { .. } => "DirInsert",
        Op::DirRemove { .. } => "DirRemove",
        Op::DirSet { .. } => "DirSet",
        Op::AllocBlocks { .. } => "AllocBlocks",
        Op::FreeBlocks { .. } => "FreeBlocks",
        Op::MapBlocks { .. } => "MapBlocks",
        Op::WriteInline { .. } => "WriteInline",
        Op::TruncateData { .. } => "TruncateData",
        Op::SetXattr { .. } => "SetXattr",
        Op::ZeroBlocks { .. } => "ZeroBlocks",
        Op::PunchData { .. } => "PunchData",
    }
}

fn file_txn_variant(txn: &FileTxn) -> &'static str {
    match txn {
        FileTxn::Create(_) => "Create",
        FileTxn::Link(_) => "Link",
        FileTxn::Unlink(_) => "Unlink",
        FileTxn::Rename(_) => "Rename",
        FileTxn::Write(_) => "Write",
        FileTxn::SetAttr(_) => "SetAttr",
        FileTxn::Reclaim(_) => "Reclaim",
        FileTxn::SetXattr(_) => "SetXattr",
        FileTxn::Fallocate(_) => "Fallocate",
    }
}

fn txn_record_variant(record: &TxnRecord) -> &'static str {
    match record {
        TxnRecord::Step(_) => "Step",
        TxnRecord::Commit { .. } => "Commit",
        TxnRecord::Compensation { .. } => "Compensation",
        TxnRecord::Abort { .. } => "Abort",
    }
}

fn create_state_variant(state: CreateState) -> &'static str {
    match state {
        CreateState::Start => "Start",
        CreateState::Allocated { .. } => "Allocated",
        CreateState::Linked { .. } => "Linked",
    }
}

fn unlink_state_variant(state: UnlinkState) -> &'static str {
    match state {
        UnlinkState::Start => "Start",
        UnlinkState::Removed { .. } => "Removed",
        UnlinkState::Freed => "Freed",
    }
}

fn rename_state_variant(state: RenameState) -> &'static str {
    match state {
        RenameState::Start => "Start",
        RenameState::TargetRemoved { .. } => "TargetRemoved",
        RenameState::SourceRemoved { .. } => "SourceRemoved",
        RenameState::Inserted { .. } => "Inserted",
        RenameState::TargetFreed => "TargetFreed",
        RenameState::Exchanged1 { .. } => "Exchanged1",
        RenameState::Exchanged2 => "Exchanged2",
    }
}

fn write_state_variant(state: &WriteState) -> &'static str {
    match state {
        WriteState::Start => "Start",
        WriteState::Allocated { .. } => "Allocated",
        WriteState::DataWritten { .. } => "DataWritten",
        WriteState::Linked => "Linked",
    }
}

fn set_attr_state_variant(state: SetAttrState) -> &'static str {
    match state {
        SetAttrState::Start => "Start",
        SetAttrState::Set { .. } => "Set",
        SetAttrState::Truncated => "Truncated",
    }
}

fn falloc_mode_variant(mode: FallocMode) -> &'static str {
    match mode {
        FallocMode::Allocate { .. } => "Allocate",
        FallocMode::PunchHole => "PunchHole",
        FallocMode::ZeroRange { .. } => "ZeroRange",
    }
}

fn encode<T: serde::Serialize>(value: &T) -> Vec<u8> {
    postcard::to_stdvec(value).unwrap()
}

fn ops() -> Vec<Op> {
    vec![
        Op::PutInode {
            ino: Ino(42),
            kind: FileKind::Symlink,
            attrs: ATTRS,
            parent: Ino(0),
            target: b"to".to_vec(),
        },
        Op::DropInode { ino: Ino(42) },
        Op::SetAttrs {
            ino: Ino(42),
            attrs: ATTRS,
        },
        Op::SetParent {
            ino: Ino(42),
            parent: Ino(1),
        },
        Op::DirInsert {
            dir: Ino(1),
            name: name("a"),
            ino: Ino(42),
        },
        Op::DirRemove {
            dir: Ino(1),
            name: name("a"),
        },
        Op::DirSet {
            dir: Ino(1),
            name: name("a"),
            ino: Ino(43),
        },
        Op::AllocBlocks { runs: runs() },
        Op::FreeBlocks { runs: runs() },
        Op::MapBlocks {
            ino: Ino(42),
            first_block: 3,
            runs: runs(),
            crcs: vec![0xdead_beef, 1, 0x8000_0000],
        },
        Op::WriteInline {
            ino: Ino(42),
            offset: 4095,
            bytes: b"xyz".to_vec(),
        },
        Op::TruncateData {
            ino: Ino(42),
            size: 1,
        },
        Op::SetXattr {
            ino: Ino(42),
            name: b"user.k".to_vec(),
            value: Some(b"v".to_vec()),
        },
        Op::ZeroBlocks {
            ino: Ino(42),
            first_block: 2,
            count: 300,
        },
        Op::PunchData {
            ino: Ino(42),
            offset: 4095,
            len: 8194,
        },
    ]
}

fn create(node: NewNode, state: CreateState) -> FileTxn {
    FileTxn::Create(Create {
        parent: Ino(1),
        name: name("f"),
        node,
        attrs: NewAttrs {
            mode: 0o644,
            uid: 1000,
            gid: 100,
            umask: 0o022,
        },
        now: NOW,
        state,
    })
}

fn unlink(state: UnlinkState) -> FileTxn {
    FileTxn::Unlink(Unlink {
        parent: Ino(1),
        name: name("f"),
        dir: false,
        now: NOW,
        state,
    })
}

fn rename(state: RenameState) -> FileTxn {
    FileTxn::Rename(Rename {
        from_parent: Ino(1),
        from_name: name("a"),
        to_parent: Ino(2),
        to_name: name("b"),
        flags: RenameFlags {
            no_replace: false,
            exchange: true,
        },
        now: NOW,
        state,
    })
}

fn write(state: WriteState) -> FileTxn {
    FileTxn::Write(Write {
        ino: Ino(42),
        offset: 8192,
        len: 70000,
        now: NOW,
        state,
        data: Default::default(),
    })
}

fn set_attr(state: SetAttrState) -> FileTxn {
    FileTxn::SetAttr(SetAttr {
        ino: Ino(42),
        changes: SetAttrChanges {
            mode: Some(0o600),
            uid: None,
            gid: Some(5),
            size: Some(0),
            atime: None,
            mtime: Some(NOW),
        },
        now: NOW,
        state,
    })
}

/// Every machine in every state, with the enum and variant of the state or node inside.
fn machines() -> Vec<(FileTxn, Vec<(&'static str, &'static str)>)> {
    let mut all = Vec::new();
    for state in [
        CreateState::Start,
        CreateState::Allocated { ino: Ino(42) },
        CreateState::Linked { ino: Ino(42) },
    ] {
        all.push((
            create(NewNode::File, state),
            vec![
                ("NewNode", "File"),
                ("CreateState", create_state_variant(state)),
            ],
        ));
    }
    for node in [
        NewNode::Dir,
        NewNode::Symlink(b"target".to_vec()),
        NewNode::Special(FileKind::CharDevice { rdev: 0x0103 }),
    ] {
        let variant = new_node_variant(&node);
        all.push((
            create(node, CreateState::Start),
            vec![("NewNode", variant), ("CreateState", "Start")],
        ));
    }
    for linked in [false, true] {
        let txn = FileTxn::Link(Link {
            ino: Ino(42),
            parent: Ino(1),
            name: name("l"),
            now: NOW,
            linked,
        });
        all.push((txn, vec![]));
    }
    for state in [
        UnlinkState::Start,
        UnlinkState::Removed {
            ino: Ino(42),
            last: true,
        },
        UnlinkState::Freed,
    ] {
        all.push((
            unlink(state),
            vec![("UnlinkState", unlink_state_variant(state))],
        ));
    }
    for state in [
        RenameState::Start,
        RenameState::TargetRemoved {
            src: Ino(42),
            dst: Ino(43),
            dst_last: true,
        },
        RenameState::SourceRemoved {
            src: Ino(42),
            drop: Some(Ino(43)),
        },
        RenameState::Inserted { drop: None },
        RenameState::TargetFreed,
        RenameState::Exchanged1 {
            src: Ino(42),
            dst: Ino(43),
        },
        RenameState::Exchanged2,
    ] {
        all.push((
            rename(state),
            vec![("RenameState", rename_state_variant(state))],
        ));
    }
    for state in [
        WriteState::Start,
        WriteState::Allocated { runs: runs() },
        WriteState::DataWritten { runs: runs() },
        WriteState::Linked,
    ] {
        let variant = write_state_variant(&state);
        all.push((write(state), vec![("WriteState", variant)]));
    }
    for state in [
        SetAttrState::Start,
        SetAttrState::Set { shrink: true },
        SetAttrState::Truncated,
    ] {
        all.push((
            set_attr(state),
            vec![("SetAttrState", set_attr_state_variant(state))],
        ));
    }
    for freed in [false, true] {
        all.push((
            FileTxn::Reclaim(Reclaim {
                ino: Ino(42),
                freed,
            }),
            vec![],
        ));
    }
    for (value, done) in [(Some(b"v".to_vec()), false), (None, true)] {
        all.push((
            FileTxn::SetXattr(SetXattr {
                ino: Ino(42),
                name: b"user.k".to_vec(),
                value,
                flags: XattrFlags {
                    create: true,
                    replace: false,
                },
                now: NOW,
                done,
            }),
            vec![],
        ));
    }
    for (mode, done) in [
        (FallocMode::Allocate { keep_size: true }, false),
        (FallocMode::PunchHole, true),
        (FallocMode::ZeroRange { keep_size: false }, false),
    ] {
        let txn = FileTxn::Fallocate(Fallocate {
            ino: Ino(42),
            offset: 4095,
            len: 70000,
            mode,
            now: NOW,
            done,
        });
        all.push((txn, vec![("FallocMode", falloc_mode_variant(mode))]));
    }
    all
}

/// Where the tag of the state (or node) of `txn` is in its encoding: the bytes of the
/// fields before it.
fn inner_offset(txn: &FileTxn, enum_name: &str) -> usize {
    let bytes = encode(txn);
    let tail = match (txn, enum_name) {
        (FileTxn::Create(c), "CreateState") => encode(&c.state),
        (FileTxn::Create(c), "NewNode") => {
            let mut tail = encode(&c.node);
            tail.extend(encode(&(c.attrs, c.now, c.state)));
            tail
        }
        (FileTxn::Unlink(u), "UnlinkState") => encode(&u.state),
        (FileTxn::Rename(r), "RenameState") => encode(&r.state),
        (FileTxn::Write(w), "WriteState") => encode(&w.state),
        (FileTxn::SetAttr(s), "SetAttrState") => encode(&s.state),
        (FileTxn::Fallocate(f), "FallocMode") => encode(&(f.mode, f.now, f.done)),
        _ => panic!("no {enum_name} in {txn:?}"),
    };
    assert!(bytes.ends_with(&tail), "{txn:?}");
    bytes.len() - tail.len()
}

fn cases() -> Vec<Case> {
    let mut cases = Vec::new();
    let mut push = |name: String, bytes: Vec<u8>, tags| cases.push(Case { name, bytes, tags });
    for kind in [
        FileKind::File,
        FileKind::Dir,
        FileKind::Symlink,
        FileKind::Fifo,
        FileKind::Socket,
        FileKind::CharDevice { rdev: 0x0103 },
        FileKind::BlockDevice { rdev: 0x0801 },
    ] {
        let variant = file_kind_variant(kind);
        let tags = vec![("FileKind", variant, 0)];
        push(format!("FileKind::{variant}"), encode(&kind), tags);
    }
    for result in [
        TxnResult::Done,
        TxnResult::Ino(Ino(42)),
        TxnResult::Bytes(70000),
    ] {
        let variant = txn_result_variant(result);
        let tags = vec![("TxnResult", variant, 0)];
        push(format!("TxnResult::{variant}"), encode(&result), tags);
    }
    for outcome in [
        Outcome::Committed(TxnResult::Ino(Ino(42))),
        Outcome::RolledBack { errno: -2 },
    ] {
        let variant = outcome_variant(outcome);
        let tags = vec![("Outcome", variant, 0)];
        push(format!("Outcome::{variant}"), encode(&outcome), tags);
    }
    for op in ops() {
        let variant = op_variant(&op);
        push(
            format!("Op::{variant}"),
            encode(&op),
            vec![("Op", variant, 0)],
        );
    }
    for (i, (txn, inner)) in machines().into_iter().enumerate() {
        let outer = file_txn_variant(&txn);
        let mut tags = vec![("FileTxn", outer, 0)];
        let mut label = format!("FileTxn::{outer} #{i}");
        for (enum_name, variant) in inner {
            tags.push((enum_name, variant, inner_offset(&txn, enum_name)));
            label.push_str(&format!(" {enum_name}::{variant}"));
        }
        push(label, encode(&txn), tags);
    }
    let records = [
        TxnRecord::Step(StepRecord {
            machine: unlink(UnlinkState::Removed {
                ino: Ino(42),
                last: false,
            }),
            key: Some(KEY),
            entry: Some(ENTRY),
            redo: vec![Op::DirRemove {
                dir: Ino(1),
                name: name("f"),
            }],
            undo: vec![Op::DirInsert {
                dir: Ino(1),
                name: name("f"),
                ino: Ino(42),
            }],
        }),
        TxnRecord::Commit {
            key: Some(KEY),
            entry: Some(ENTRY),
            result: TxnResult::Bytes(3),
        },
        TxnRecord::Compensation {
            undoes_lsn: Lsn(1000),
            redo: vec![Op::DropInode { ino: Ino(42) }],
            undo_next_lsn: Lsn(0),
        },
        TxnRecord::Abort {
            key: None,
            entry: None,
            errno: 28,
        },
    ];
    for record in records {
        let variant = txn_record_variant(&record);
        let bytes = record.encode();
        assert_eq!(bytes, encode(&record), "TxnRecord::encode is postcard");
        let tags = vec![("TxnRecord", variant, 0)];
        push(format!("TxnRecord::{variant}"), bytes, tags);
    }
    // The image of a new file system with one request remembered, and one that applied a
    // replicated-log entry.
    let mut meta = FsMeta::new(NOW, 1 << 20);
    meta.keys
        .record(KEY, Outcome::Committed(TxnResult::Done), 16);
    let image = smlog::internals::image::encode_image(&meta).unwrap();
    push("FsMeta (a new file system, one key)".into(), image, vec![]);
    meta.applied_entry = Some(ENTRY);
    let image = smlog::internals::image::encode_image(&meta).unwrap();
    push("FsMeta (one key, an applied entry)".into(), image, vec![]);
    let mut root = meta.inodes.get(&Ino(1)).unwrap().clone();
    root.xattrs.insert(b"user.k".to_vec(), b"v".to_vec());
    meta.inodes.insert(Ino(1), root);
    let image = smlog::internals::image::encode_image(&meta).unwrap();
    push(
        "FsMeta (a root with an extended attribute)".into(),
        image,
        vec![],
    );
    cases
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The pinned bytes, by case name.
const GOLDEN: &[(&str, &str)] = &[
    ("FileKind::File", "00"),
    ("FileKind::Dir", "01"),
    ("FileKind::Symlink", "02"),
    ("FileKind::Fifo", "03"),
    ("FileKind::Socket", "04"),
    ("FileKind::CharDevice", "058302"),
    ("FileKind::BlockDevice", "068110"),
    ("TxnResult::Done", "00"),
    ("TxnResult::Ino", "012a"),
    ("TxnResult::Bytes", "02f0a204"),
    ("Outcome::Committed", "00012a"),
    ("Outcome::RolledBack", "0103"),
    ("Op::PutInode", "002a02a48302e8076480200180c49fd50c959aef3a80c49fd50c959aef3a80c49fd50c959aef3a0002746f"),
    ("Op::DropInode", "012a"),
    ("Op::SetAttrs", "022aa48302e8076480200180c49fd50c959aef3a80c49fd50c959aef3a80c49fd50c959aef3a"),
    ("Op::SetParent", "032a01"),
    ("Op::DirInsert", "040101612a"),
    ("Op::DirRemove", "05010161"),
    ("Op::DirSet", "060101612b"),
    ("Op::AllocBlocks", "07020502820101"),
    ("Op::FreeBlocks", "08020502820101"),
    ("Op::MapBlocks", "092a0302050282010103effdb6f50d018080808008"),
    ("Op::WriteInline", "0a2aff1f0378797a"),
    ("Op::TruncateData", "0b2a01"),
    ("Op::SetXattr", "0c2a06757365722e6b010176"),
    ("Op::ZeroBlocks", "0d2a02ac02"),
    ("Op::PunchData", "0e2aff1f8240"),
    ("FileTxn::Create #0 NewNode::File CreateState::Start", "0001016600a403e807641280c49fd50c959aef3a00"),
    ("FileTxn::Create #1 NewNode::File CreateState::Allocated", "0001016600a403e807641280c49fd50c959aef3a012a"),
    ("FileTxn::Create #2 NewNode::File CreateState::Linked", "0001016600a403e807641280c49fd50c959aef3a022a"),
    ("FileTxn::Create #3 NewNode::Dir CreateState::Start", "0001016601a403e807641280c49fd50c959aef3a00"),
    ("FileTxn::Create #4 NewNode::Symlink CreateState::Start", "000101660206746172676574a403e807641280c49fd50c959aef3a00"),
    ("FileTxn::Create #5 NewNode::Special CreateState::Start", "0001016603058302a403e807641280c49fd50c959aef3a00"),
    ("FileTxn::Link #6", "012a01016c80c49fd50c959aef3a00"),
    ("FileTxn::Link #7", "012a01016c80c49fd50c959aef3a01"),
    ("FileTxn::Unlink #8 UnlinkState::Start", "020101660080c49fd50c959aef3a00"),
    ("FileTxn::Unlink #9 UnlinkState::Removed", "020101660080c49fd50c959aef3a012a01"),
    ("FileTxn::Unlink #10 UnlinkState::Freed", "020101660080c49fd50c959aef3a02"),
    ("FileTxn::Rename #11 RenameState::Start", "03010161020162000180c49fd50c959aef3a00"),
    ("FileTxn::Rename #12 RenameState::TargetRemoved", "03010161020162000180c49fd50c959aef3a012a2b01"),
    ("FileTxn::Rename #13 RenameState::SourceRemoved", "03010161020162000180c49fd50c959aef3a022a012b"),
    ("FileTxn::Rename #14 RenameState::Inserted", "03010161020162000180c49fd50c959aef3a0300"),
    ("FileTxn::Rename #15 RenameState::TargetFreed", "03010161020162000180c49fd50c959aef3a04"),
    ("FileTxn::Rename #16 RenameState::Exchanged1", "03010161020162000180c49fd50c959aef3a052a2b"),
    ("FileTxn::Rename #17 RenameState::Exchanged2", "03010161020162000180c49fd50c959aef3a06"),
    ("FileTxn::Write #18 WriteState::Start", "042a8040f0a20480c49fd50c959aef3a00"),
    ("FileTxn::Write #19 WriteState::Allocated", "042a8040f0a20480c49fd50c959aef3a01020502820101"),
    ("FileTxn::Write #20 WriteState::DataWritten", "042a8040f0a20480c49fd50c959aef3a02020502820101"),
    ("FileTxn::Write #21 WriteState::Linked", "042a8040f0a20480c49fd50c959aef3a03"),
    ("FileTxn::SetAttr #22 SetAttrState::Start", "052a0180030001050100000180c49fd50c959aef3a80c49fd50c959aef3a00"),
    ("FileTxn::SetAttr #23 SetAttrState::Set", "052a0180030001050100000180c49fd50c959aef3a80c49fd50c959aef3a0101"),
    ("FileTxn::SetAttr #24 SetAttrState::Truncated", "052a0180030001050100000180c49fd50c959aef3a80c49fd50c959aef3a02"),
    ("FileTxn::Reclaim #25", "062a00"),
    ("FileTxn::Reclaim #26", "062a01"),
    ("FileTxn::SetXattr #27", "072a06757365722e6b010176010080c49fd50c959aef3a00"),
    ("FileTxn::SetXattr #28", "072a06757365722e6b00010080c49fd50c959aef3a01"),
    ("FileTxn::Fallocate #29 FallocMode::Allocate", "082aff1ff0a204000180c49fd50c959aef3a00"),
    ("FileTxn::Fallocate #30 FallocMode::PunchHole", "082aff1ff0a2040180c49fd50c959aef3a01"),
    ("FileTxn::Fallocate #31 FallocMode::ZeroRange", "082aff1ff0a204020080c49fd50c959aef3a00"),
    ("TxnRecord::Step", "00020101660080c49fd50c959aef3a012a000107ac020102f0a204010501016601040101662a"),
    ("TxnRecord::Commit", "010107ac020102f0a2040203"),
    ("TxnRecord::Compensation", "02e80701012a00"),
    ("TxnRecord::Abort", "03000038"),
    ("FsMeta (a new file system, one key)", "00020101010101ed030000000280c49fd50c959aef3a80c49fd50c959aef3a80c49fd50c959aef3a010000000001010080804000000000000107ac0200000107ac0200"),
    ("FsMeta (one key, an applied entry)", "00020101010101ed030000000280c49fd50c959aef3a80c49fd50c959aef3a80c49fd50c959aef3a010000000001010080804000000000000107ac0200000107ac020102f0a204"),
    ("FsMeta (a root with an extended attribute)", "00020101010101ed030000000280c49fd50c959aef3a80c49fd50c959aef3a80c49fd50c959aef3a010000000106757365722e6b017601010080804000000000000107ac0200000107ac020102f0a204"),
];

#[test]
fn every_postcard_variant_encodes_to_its_pinned_bytes() {
    let cases = cases();
    if std::env::var_os("SMLOG_PRINT_GOLDEN").is_some() {
        for case in &cases {
            println!("    ({:?}, \"{}\"),", case.name, hex(&case.bytes));
        }
    }
    let golden: BTreeMap<&str, &str> = GOLDEN.iter().copied().collect();
    assert_eq!(golden.len(), GOLDEN.len(), "a case is pinned twice");
    let mut names = std::collections::BTreeSet::new();
    for case in &cases {
        assert!(
            names.insert(case.name.as_str()),
            "two cases named {}",
            case.name
        );
        let want = golden
            .get(case.name.as_str())
            .unwrap_or_else(|| panic!("{} has no golden vector", case.name));
        assert_eq!(
            &hex(&case.bytes),
            want,
            "{}: the encoding changed",
            case.name
        );
    }
    assert_eq!(names.len(), golden.len(), "a golden vector has no case");
}

/// `docs/FORMAT.md`'s numbering of each enum.
fn documented_tags() -> BTreeMap<(String, String), u64> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/FORMAT.md");
    smlog::testing::documented_tags(&std::fs::read_to_string(path).unwrap())
}

#[test]
fn every_variant_tag_is_the_one_format_md_gives() {
    let documented = documented_tags();
    let mut checked = std::collections::BTreeSet::new();
    for case in cases() {
        for (enum_name, variant, offset) in case.tags {
            let key = (enum_name.to_string(), variant.to_string());
            let want = documented
                .get(&key)
                .unwrap_or_else(|| panic!("FORMAT.md does not number {enum_name}::{variant}"));
            let tag = smlog::testing::varint(&case.bytes[offset..]);
            assert_eq!(
                tag, *want,
                "{} {enum_name}::{variant}: tag {tag}, FORMAT.md says {want}",
                case.name
            );
            checked.insert(key);
        }
    }
    // Every variant FORMAT.md numbers for these enums has a case.
    for key in documented.keys() {
        let ours = checked.iter().any(|(e, _)| e == &key.0);
        assert!(
            !ours || checked.contains(key),
            "FORMAT.md numbers {}::{}, which no case encodes",
            key.0,
            key.1
        );
    }
    assert!(checked.len() >= 50, "{} variants checked", checked.len());
}
