//! The writer on the simulated device: group commit, batches in flight, release and reuse of
//! segments.

use super::*;
use crate::io::sim::SimDevice;
use crate::log::reader::{LogReader, ScanItem};

fn new_log() -> Log<SimDevice> {
    Log::create(
        Arc::new(SimDevice::new(1)),
        CreateOptions {
            segment_size_bytes: SEGMENT_SIZE_BYTES_MIN,
        },
    )
    .unwrap()
}

fn record(payload: &[u8]) -> NewRecord<'_> {
    NewRecord {
        txn_id: TxnId(1),
        step: 2,
        kind: 3,
        payload,
    }
}

fn read_all(device: &SimDevice) -> Vec<u64> {
    LogReader::open(device)
        .unwrap()
        .map(|item| match item.unwrap() {
            ScanItem::Record(r) => r.lsn.get(),
            other => panic!("{other:?}"),
        })
        .collect()
}

#[test]
fn bad_appends_are_refused_before_anything_is_written() {
    let log = new_log();
    let big = vec![1u8; RECORD_PAYLOAD_SIZE_BYTES_MAX + 1];
    assert!(matches!(
        log.append(&[record(&big)]),
        Err(LogError::RecordTooLarge { .. })
    ));
    let zero_kind = NewRecord {
        kind: 0,
        ..record(b"x")
    };
    assert!(matches!(
        log.append(&[zero_kind]),
        Err(LogError::InvalidKind)
    ));
    let full = vec![1u8; RECORD_PAYLOAD_SIZE_BYTES_MAX];
    let too_many = [record(&full), record(&full)];
    assert!(matches!(
        log.append(&too_many),
        Err(LogError::AppendTooLarge { .. })
    ));
    assert_eq!(log.last_lsn(), Lsn(0));
    assert!(matches!(
        log.set_batches_in_flight(0),
        Err(LogError::InvalidOptions(_))
    ));
    assert!(matches!(
        log.set_batches_in_flight(BATCHES_IN_FLIGHT_MAX + 1),
        Err(LogError::InvalidOptions(_))
    ));
}

#[test]
fn records_of_one_append_share_a_batch_and_consecutive_lsns() {
    let log = new_log();
    let last = log
        .append(&[record(b"a"), record(b"b"), record(b"c")])
        .unwrap();
    assert_eq!(last, Lsn(3));
    assert_eq!(log.durable_lsn(), Lsn(0));
    log.wait_durable(Lsn(3)).unwrap();
    assert_eq!(log.stats().batch_count, 1);
    assert_eq!(log.stats().record_count, 3);
    assert_eq!(log.durable_lsn(), Lsn(3));
}

#[test]
fn async_appends_become_durable_at_sync_and_close_writes_the_mark() {
    let log = new_log();
    for _ in 0..10 {
        log.append(&[record(b"unstable")]).unwrap();
    }
    assert_eq!(log.durable_lsn(), Lsn(0));
    assert_eq!(log.sync().unwrap(), Lsn(10));
    assert_eq!(log.durable_lsn(), Lsn(10));
    assert!(log.mark_lsn() < Lsn(10));
    let device = Arc::clone(log.device());
    assert_eq!(log.close().unwrap(), Lsn(10));
    assert_eq!(read_all(&device), (1..=10).collect::<Vec<_>>());
}

#[test]
fn a_record_that_does_not_fit_starts_the_next_segment() {
    let log = new_log();
    let payload = vec![7u8; 100 * 1024];
    for _ in 0..6 {
        log.append_durable(&[record(&payload)]).unwrap();
    }
    let device = Arc::clone(log.device());
    log.close().unwrap();
    assert_eq!(read_all(&device), (1..=6).collect::<Vec<_>>());
    let names = device.list().unwrap();
    assert!(
        names.contains(&segment::segment_file_name(SegmentSeq(3))),
        "{names:?}"
    );
}

#[test]
fn release_prefix_keeps_the_segment_being_written() {
    let log = new_log();
    assert_eq!(log.release_prefix(Lsn(100)).unwrap(), 0);
    let payload = vec![7u8; 100 * 1024];
    for _ in 0..8 {
        log.append_durable(&[record(&payload)]).unwrap();
    }
    let released = log.release_prefix(log.durable_lsn()).unwrap();
    assert!(released >= 2, "{released}");
    assert!(log.meta().first_segment_seq > SegmentSeq(1));
    let device = Arc::clone(log.device());
    log.close().unwrap();
    let lsns = read_all(&device);
    assert_eq!(*lsns.last().unwrap(), 8);
    assert!(lsns[0] > 1);
}

#[test]
fn many_batches_in_flight_still_complete_in_order() {
    let log = Arc::new(new_log());
    log.set_batches_in_flight(BATCHES_IN_FLIGHT_MAX).unwrap();
    let threads: Vec<_> = (0..6)
        .map(|_| {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                for _ in 0..200 {
                    log.append_durable(&[record(b"concurrent")]).unwrap();
                }
            })
        })
        .collect();
    threads.into_iter().for_each(|t| t.join().unwrap());
    assert_eq!(log.durable_lsn(), Lsn(1200));
    let log = Arc::into_inner(log).unwrap();
    let device = Arc::clone(log.device());
    log.close().unwrap();
    assert_eq!(read_all(&device), (1..=1200).collect::<Vec<_>>());
}
