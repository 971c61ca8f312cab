//! The Raft log's record format (docs/FORMAT.md, "The Raft log") pinned byte for byte:
//! every variant of `RaftRecord`, `PayloadRecord` and `FileOp` encodes to the bytes below,
//! and its tag is the number FORMAT.md gives it. A change to the format fails here; after a
//! deliberate one, `SMLOG_PRINT_GOLDEN=1 cargo test -p smlog-cluster --test golden_vectors`
//! prints the new vectors.

use std::collections::BTreeMap;

use smlog::{Ino, NewAttrs, RenameFlags, RequestKey, SetAttrChanges, Time};
use smlog_cluster::log_store::records::{
    EntryRecord, LogIdRecord, MembershipRecord, PayloadRecord, RaftRecord, StateRecord, VoteRecord,
};
use smlog_cluster::{Command, FileOp};

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
                (1, "127.0.0.1:7001".into()),
                (2, "127.0.0.1:7002".into()),
                (3, "127.0.0.1:7003".into()),
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
    cases
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
    ("PayloadRecord::Membership", "02010301020303010e3132372e302e302e313a37303031020e3132372e302e302e313a37303032030e3132372e302e302e313a37303033"),
    ("FileOp::Create", "00010166a403e80764"),
    ("FileOp::Mkdir", "01010166a403e80764"),
    ("FileOp::Symlink", "020101660174a403e80764"),
    ("FileOp::Link", "032a010166"),
    ("FileOp::Unlink", "04010166"),
    ("FileOp::Rmdir", "05010166"),
    ("FileOp::Rename", "060101660201670100"),
    ("FileOp::Write", "072a80200378797a"),
    ("FileOp::SetAttr", "082a00000001050000"),
];

#[test]
fn every_raft_record_variant_encodes_to_its_pinned_bytes() {
    let cases = cases();
    if std::env::var_os("SMLOG_PRINT_GOLDEN").is_some() {
        for (name, _, _, bytes) in &cases {
            println!("    ({name:?}, \"{}\"),", hex(bytes));
        }
    }
    let golden: BTreeMap<&str, &str> = GOLDEN.iter().copied().collect();
    assert_eq!(golden.len(), GOLDEN.len(), "a case is pinned twice");
    assert_eq!(golden.len(), cases.len(), "a case or a vector is missing");
    for (name, _, _, bytes) in &cases {
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
        if ["RaftRecord", "PayloadRecord", "FileOp"].contains(&enum_name.as_str()) {
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
