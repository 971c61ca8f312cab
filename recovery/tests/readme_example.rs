//! The README's "Using the log" example, run as written against a real directory.

use std::sync::Arc;

use smlog::io::{open_dir, DeviceOptions};
use smlog::log::writer::CreateOptions;
use smlog::NewRecord;
use smlog::TxnId;

#[test]
fn the_readme_example_runs_and_its_records_come_back() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::Builder::new()
        .prefix("smlog-readme-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))?;
    let path = dir.path().join("mylog");
    for round in 0..2 {
        let device = Arc::new(open_dir(&path, DeviceOptions::default())?);
        let mut seen = Vec::new();
        let (log, report) = smlog_recovery::open_or_create(
            device,
            Default::default(),
            CreateOptions::default(),
            |record| seen.push(record.payload.clone()),
        )?;
        assert_eq!(report.is_some(), round == 1);
        let lsn = log.append_durable(&[NewRecord {
            txn_id: TxnId(7),
            step: 1,
            kind: 1,
            payload: b"hello",
        }])?;
        let later = log.append(&[NewRecord {
            txn_id: TxnId(8),
            step: 1,
            kind: 1,
            payload: b"world",
        }])?;
        log.wait_durable(later)?;
        assert_eq!(later, lsn + 1);
        log.close()?;
        if round == 1 {
            assert_eq!(seen, vec![b"hello".to_vec(), b"world".to_vec()]);
        }
    }
    Ok(())
}

/// The README's "Using the engine" example, run as written (twice: the second run recovers).
#[test]
fn the_readme_engine_example_runs() -> Result<(), Box<dyn std::error::Error>> {
    use smlog::{Durability, NewAttrs, RenameFlags, TxnOptions, ROOT_INO};
    use smlog_recovery::OpenOptions;
    let base = tempfile::Builder::new()
        .prefix("smlog-readme-fs-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))?;
    let path = base.path().join("myfs");
    // The example, once.
    let options = OpenOptions {
        create: true,
        ..OpenOptions::default()
    };
    let (engine, report) = smlog_recovery::open(&path, options)?;
    for txn in &report.in_flight {
        println!("txn {} {}: {:?}", txn.txn_id, txn.op, txn.decision);
    }
    let attrs = NewAttrs {
        mode: 0o644,
        uid: 1000,
        gid: 1000,
        umask: 0,
    };
    let dir = engine.mkdir(ROOT_INO, b"docs", attrs, Durability::Sync)?;
    let file = engine.create(dir.ino, b"draft", attrs, Durability::Sync)?;
    engine.write(file.ino, 0, b"hello", Durability::Async)?;
    engine.sync()?;
    engine.rename(
        dir.ino,
        b"draft",
        dir.ino,
        b"final",
        RenameFlags::default(),
        TxnOptions::keyed(42, 7),
    )?;
    assert_eq!(engine.read(file.ino, 0, 100)?, b"hello");
    engine.shutdown()?;
    drop(engine);
    // Reopened: the state is there, and the keyed rename's retransmission succeeds.
    let (engine, report) = smlog_recovery::open(&path, options)?;
    assert!(report.in_flight.is_empty());
    assert_eq!(
        report.scanned_records, 0,
        "the checkpoint left nothing to replay"
    );
    let file = engine.lookup(dir.ino, b"final")?;
    assert_eq!(engine.read(file.ino, 0, 100)?, b"hello");
    engine.rename(
        dir.ino,
        b"draft",
        dir.ino,
        b"final",
        RenameFlags::default(),
        TxnOptions::keyed(42, 7),
    )?;
    assert!(engine.lookup(dir.ino, b"draft").is_err());
    Ok(())
}
