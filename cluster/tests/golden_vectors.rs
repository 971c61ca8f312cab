//! The Raft log's record format (docs/FORMAT.md, "The Raft log") pinned byte for byte:
//! every variant of `RaftRecord`, `PayloadRecord` and `FileOp` encodes to the bytes below,
//! and its tag is the number FORMAT.md gives it. A change to the format fails here; after a
//! deliberate one, `SMLOG_PRINT_GOLDEN=1 cargo test -p smlog-cluster --test golden_vectors`
//! prints the new vectors.

use std::collections::BTreeMap;

use smlog::TxnResult;
use smlog::{
    FallocMode, FileKind, Ino, NewAttrs, RenameFlags, RequestKey, SetAttrChanges, Time, XattrFlags,
};
use smlog_cluster::auth::{Challenge, Hello, Proof};
use smlog_cluster::log_store::records::{
    EntryRecord, LogIdRecord, MembershipRecord, PayloadRecord, RaftRecord, StateRecord, VoteRecord,
};
use smlog_cluster::snapshot::{SnapshotHeader, SnapshotMetaRecord};
use smlog_cluster::wire::{
    AppendOutcome, Member, Request, Response, StatusReport, WriteRefusal, Written,
};
use smlog_cluster::{Command, FileOp, Reply};

const KEY: RequestKey = RequestKey {
    client_id: 7,
    request_id: 300,
};
const NOW: Time = Time {
    secs: 1_700_000_000,
    nanos: 5,
};
const ATTRS: NewAttrs = NewAttrs {
    mode: 0o644,
    uid: 1000,
    gid: 100,
    umask: 0o022,
};

fn ops() -> Vec<FileOp> {
    let name = b"f".to_vec();
    vec![
        FileOp::Create {
            parent: Ino(1),
            name: name.clone(),
            attrs: ATTRS,
        },
        FileOp::Mkdir {
            parent: Ino(1),
            name: name.clone(),
            attrs: ATTRS,
        },
        FileOp::Symlink {
            parent: Ino(1),
            name: name.clone(),
            target: b"t".to_vec(),
            attrs: ATTRS,
        },
        FileOp::Link {
            ino: Ino(42),
            parent: Ino(1),
            name: name.clone(),
        },
        FileOp::Unlink {
            parent: Ino(1),
            name: name.clone(),
        },
        FileOp::Rmdir {
            parent: Ino(1),
            name: name.clone(),
        },
        FileOp::Rename {
            from_parent: Ino(1),
            from_name: name.clone(),
            to_parent: Ino(2),
            to_name: b"g".to_vec(),
            flags: RenameFlags {
                no_replace: true,
                exchange: false,
            },
        },
        FileOp::Write {
            ino: Ino(42),
            offset: 4096,
            data: b"xyz".to_vec(),
        },
        FileOp::SetAttr {
            ino: Ino(42),
            changes: SetAttrChanges {
                size: Some(5),
                ..SetAttrChanges::default()
            },
        },
        FileOp::Mknod {
            parent: Ino(1),
            name: b"f".to_vec(),
            kind: FileKind::BlockDevice { rdev: 0x0801 },
            attrs: NewAttrs {
                mode: 0o600,
                uid: 0,
                gid: 6,
                umask: 0,
            },
        },
        FileOp::SetXattr {
            ino: Ino(42),
            name: b"user.k".to_vec(),
            value: Some(b"v".to_vec()),
            flags: XattrFlags {
                create: false,
                replace: true,
            },
        },
        FileOp::Fallocate {
            ino: Ino(42),
            offset: 4095,
            len: 70000,
            mode: FallocMode::ZeroRange { keep_size: true },
        },
    ]
}

fn log_id() -> LogIdRecord {
    LogIdRecord {
        term: 2,
        index: 70_000,
    }
}

fn vote() -> VoteRecord {
    VoteRecord {
        term: 2,
        node_id: 3,
        committed: true,
    }
}

fn payloads() -> Vec<PayloadRecord> {
    vec![
        PayloadRecord::Blank,
        PayloadRecord::Normal(Command {
            key: Some(KEY),
            now: NOW,
            op: FileOp::Unlink {
                parent: Ino(1),
                name: b"f".to_vec(),
            },
        }),
        PayloadRecord::Membership(MembershipRecord {
            configs: vec![vec![1, 2, 3]],
            nodes: vec![
                (1, "127.0.0.1:7001".into(), 0x1234),
                (2, "127.0.0.1:7002".into(), 0),
                (3, "127.0.0.1:7003".into(), 1),
            ],
        }),
    ]
}

fn records() -> Vec<RaftRecord> {
    vec![
        RaftRecord::Entry(EntryRecord {
            log_id: log_id(),
            payload: PayloadRecord::Blank,
        }),
        RaftRecord::Vote(vote()),
        RaftRecord::Committed(Some(log_id())),
        RaftRecord::TruncateAfter(None),
        RaftRecord::State(StateRecord {
            vote: Some(vote()),
            committed: Some(log_id()),
            purged: Some(LogIdRecord { term: 1, index: 9 }),
        }),
    ]
}

fn requests() -> Vec<Request> {
    vec![
        Request::Append {
            vote: vote(),
            prev: Some(log_id()),
            entries: vec![EntryRecord {
                log_id: log_id(),
                payload: PayloadRecord::Blank,
            }],
            commit: None,
        },
        Request::Vote {
            vote: vote(),
            last: None,
        },
        Request::Write(Command {
            key: None,
            now: NOW,
            op: FileOp::Rmdir {
                parent: Ino(1),
                name: b"d".to_vec(),
            },
        }),
        Request::Status,
        Request::AddLearner {
            id: 4,
            addr: "127.0.0.1:7004".into(),
        },
        Request::ChangeMembership {
            voters: vec![1, 2, 4],
            keep_learners: false,
        },
        Request::Snapshot {
            vote: vote(),
            meta: snapshot_meta(),
            len: 8192,
            offset: 4096,
            bytes: vec![0xee; 2],
        },
    ]
}

fn snapshot_meta() -> SnapshotMetaRecord {
    SnapshotMetaRecord {
        last_log_id: Some(log_id()),
        membership_log_id: Some(LogIdRecord { term: 1, index: 1 }),
        membership: MembershipRecord {
            configs: vec![vec![1]],
            nodes: vec![(1, "a".into(), 5)],
        },
    }
}

fn responses() -> Vec<Response> {
    vec![
        Response::Append(AppendOutcome::Success),
        Response::Vote {
            vote: vote(),
            granted: true,
            last: Some(log_id()),
        },
        Response::Write(Ok(Written {
            index: 300,
            reply: Reply(Err(17)),
        })),
        Response::Status(StatusReport {
            id: 1,
            state: "Leader".into(),
            term: 2,
            leader: Some(1),
            last_log_index: Some(9),
            committed: Some(9),
            applied: Some(8),
            members: vec![Member {
                id: 1,
                addr: "a".into(),
                voter: true,
                matched: Some(9),
            }],
            log_records: 300,
            log_batches: 20,
        }),
        Response::Done,
        Response::Failed("no".into()),
        Response::SnapshotInstalled { vote: vote() },
    ]
}

fn outcomes() -> Vec<AppendOutcome> {
    vec![
        AppendOutcome::Success,
        AppendOutcome::PartialSuccess(Some(log_id())),
        AppendOutcome::Conflict,
        AppendOutcome::HigherVote(vote()),
    ]
}

fn refusals() -> Vec<WriteRefusal> {
    vec![
        WriteRefusal::NotLeader {
            leader: Some(2),
            addr: Some("b".into()),
        },
        WriteRefusal::Unknown,
        WriteRefusal::Stopped("x".into()),
    ]
}

fn variant_of<T: std::fmt::Debug>(value: &T) -> String {
    format!("{value:?}")
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric())
        .collect()
}

/// (name, enum, variant, bytes): the tag is at offset 0 of each.
fn cases() -> Vec<(String, &'static str, String, Vec<u8>)> {
    let mut cases = Vec::new();
    for record in records() {
        let variant = variant_of(&record);
        cases.push((
            format!("RaftRecord::{variant}"),
            "RaftRecord",
            variant,
            record.encode(),
        ));
    }
    for payload in payloads() {
        let variant = variant_of(&payload);
        let bytes = postcard::to_stdvec(&payload).unwrap();
        cases.push((
            format!("PayloadRecord::{variant}"),
            "PayloadRecord",
            variant,
            bytes,
        ));
    }
    for op in ops() {
        let variant = variant_of(&op);
        let bytes = postcard::to_stdvec(&op).unwrap();
        cases.push((format!("FileOp::{variant}"), "FileOp", variant, bytes));
    }
    fn push_all<T: serde::Serialize + std::fmt::Debug>(
        cases: &mut Vec<(String, &'static str, String, Vec<u8>)>,
        enum_name: &'static str,
        values: Vec<T>,
    ) {
        for value in values {
            let variant = variant_of(&value);
            let bytes = postcard::to_stdvec(&value).unwrap();
            cases.push((format!("{enum_name}::{variant}"), enum_name, variant, bytes));
        }
    }
    push_all(&mut cases, "Request", requests());
    push_all(&mut cases, "Response", responses());
    push_all(&mut cases, "AppendOutcome", outcomes());
    push_all(&mut cases, "WriteRefusal", refusals());
    cases
}

/// The handshake's frames (structs: no tag), pinned.
fn handshake() -> Vec<(String, Vec<u8>)> {
    let hello = Hello {
        version: 3,
        cluster_id: 0x0123_4567_89ab_cdef,
        node_id: 2,
        incarnation: 0xfeed,
        nonce: [0xaa; 32],
    };
    let challenge = Challenge {
        node_id: 3,
        incarnation: 0xbeef,
        nonce: [0xbb; 32],
        proof: [0xcc; 32],
    };
    let proof = Proof { proof: [0xdd; 32] };
    let header = SnapshotHeader {
        meta: snapshot_meta(),
        image_len: 5000,
        image_crc: 0x1234_5678,
        block_count: 3,
    };
    let header_block = header.encode().unwrap();
    let used = 20 + header_block[12] as usize;
    assert!(header_block[used..].iter().all(|&b| b == 0));
    assert_eq!(SnapshotHeader::decode(&header_block).unwrap(), header);
    vec![
        ("Hello".into(), postcard::to_stdvec(&hello).unwrap()),
        ("Challenge".into(), postcard::to_stdvec(&challenge).unwrap()),
        ("Proof".into(), postcard::to_stdvec(&proof).unwrap()),
        ("SnapshotHeader".into(), header_block[..used].to_vec()),
        (
            "Reply::Ok".into(),
            postcard::to_stdvec(&Reply(Ok(TxnResult::Bytes(5)))).unwrap(),
        ),
    ]
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The pinned bytes, by case name.
const GOLDEN: &[(&str, &str)] = &[
    ("RaftRecord::Entry", "0002f0a20400"),
    ("RaftRecord::Vote", "01020301"),
    ("RaftRecord::Committed", "020102f0a204"),
    ("RaftRecord::TruncateAfter", "0300"),
    ("RaftRecord::State", "04010203010102f0a204010109"),
    ("PayloadRecord::Blank", "00"),
    ("PayloadRecord::Normal", "010107ac0280c49fd50c0504010166"),
    ("PayloadRecord::Membership", "02010301020303010e3132372e302e302e313a37303031b424020e3132372e302e302e313a3730303200030e3132372e302e302e313a3730303301"),
    ("FileOp::Create", "00010166a403e8076412"),
    ("FileOp::Mkdir", "01010166a403e8076412"),
    ("FileOp::Symlink", "020101660174a403e8076412"),
    ("FileOp::Link", "032a010166"),
    ("FileOp::Unlink", "04010166"),
    ("FileOp::Rmdir", "05010166"),
    ("FileOp::Rename", "060101660201670100"),
    ("FileOp::Write", "072a80200378797a"),
    ("FileOp::SetAttr", "082a00000001050000"),
    ("FileOp::Mknod", "090101660681108003000600"),
    ("FileOp::SetXattr", "0a2a06757365722e6b0101760001"),
    ("FileOp::Fallocate", "0b2aff1ff0a2040201"),
    ("Request::Append", "000203010102f0a2040102f0a2040000"),
    ("Request::Vote", "0102030100"),
    ("Request::Write", "020080c49fd50c0505010164"),
    ("Request::Status", "03"),
    ("Request::AddLearner", "04040e3132372e302e302e313a37303034"),
    ("Request::ChangeMembership", "050301020400"),
    ("Request::Snapshot", "060203010102f0a20401010101010101010161058040802002eeee"),
    ("Response::Append", "0000"),
    ("Response::Vote", "01020301010102f0a204"),
    ("Response::Write", "0200ac020122"),
    ("Response::Status", "0301064c656164657202010101090109010801010161010109ac0214"),
    ("Response::Done", "04"),
    ("Response::Failed", "05026e6f"),
    ("Response::SnapshotInstalled", "06020301"),
    ("AppendOutcome::Success", "00"),
    ("AppendOutcome::PartialSuccess", "010102f0a204"),
    ("AppendOutcome::Conflict", "02"),
    ("AppendOutcome::HigherVote", "03020301"),
    ("WriteRefusal::NotLeader", "000102010162"),
    ("WriteRefusal::Unknown", "01"),
    ("WriteRefusal::Stopped", "020178"),
    ("Hello", "03ef9bafcdf8acd1910102edfd03aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"),
    ("Challenge", "03effd02bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbcccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc"),
    ("Proof", "dddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd"),
    ("SnapshotHeader", "534d4c47534e41500100000018000000bbbe97860102f0a20401010101010101010161058827f8acd1910103"),
    ("Reply::Ok", "000205"),
];

#[test]
fn every_raft_record_variant_encodes_to_its_pinned_bytes() {
    let mut cases: Vec<(String, Vec<u8>)> = cases()
        .into_iter()
        .map(|(name, _, _, bytes)| (name, bytes))
        .collect();
    cases.extend(handshake());
    if std::env::var_os("SMLOG_PRINT_GOLDEN").is_some() {
        for (name, bytes) in &cases {
            println!("    ({name:?}, \"{}\"),", hex(bytes));
        }
    }
    let golden: BTreeMap<&str, &str> = GOLDEN.iter().copied().collect();
    assert_eq!(golden.len(), GOLDEN.len(), "a case is pinned twice");
    assert_eq!(golden.len(), cases.len(), "a case or a vector is missing");
    for (name, bytes) in &cases {
        let want = golden
            .get(name.as_str())
            .unwrap_or_else(|| panic!("{name} has no golden vector"));
        assert_eq!(&hex(bytes), want, "{name}: the encoding changed");
    }
}

#[test]
fn every_raft_record_tag_is_the_one_format_md_gives() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/FORMAT.md");
    let documented = smlog::testing::documented_tags(&std::fs::read_to_string(path).unwrap());
    let cases = cases();
    for (name, enum_name, variant, bytes) in &cases {
        let key = (enum_name.to_string(), variant.clone());
        let want = documented
            .get(&key)
            .unwrap_or_else(|| panic!("FORMAT.md does not number {enum_name}::{variant}"));
        assert_eq!(smlog::testing::varint(bytes), *want, "{name}");
    }
    // Every variant FORMAT.md numbers for these enums has a case.
    for (enum_name, variant) in documented.keys() {
        let ours = [
            "RaftRecord",
            "PayloadRecord",
            "FileOp",
            "Request",
            "Response",
            "AppendOutcome",
            "WriteRefusal",
        ];
        if ours.contains(&enum_name.as_str()) {
            assert!(
                cases
                    .iter()
                    .any(|(_, e, v, _)| e == enum_name && v == variant),
                "FORMAT.md numbers {enum_name}::{variant}, which no case encodes"
            );
        }
    }
    // Each record's kind is its tag + 16.
    for record in records() {
        assert_eq!(
            u64::from(record.kind()),
            smlog::testing::varint(&record.encode()) + 16
        );
    }
}
