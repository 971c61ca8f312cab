//! The README's "Using the log" example, run as written against a real directory.

use std::sync::Arc;

use smlog::io::{open_dir, DeviceOptions};
use smlog::log::writer::CreateOptions;
use smlog::NewRecord;

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
            txn_id: 7,
            step: 1,
            kind: 1,
            payload: b"hello",
        }])?;
        let later = log.append(&[NewRecord {
            txn_id: 8,
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
