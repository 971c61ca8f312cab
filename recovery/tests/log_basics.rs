//! The log's basic promises on the simulated device: what is acknowledged reads back, in
//! order, across segments, after a clean close and after a power loss.

mod common;

use std::sync::Arc;

use common::*;
use smlog::io::sim::{CrashPlan, SimDevice};
use smlog::Lsn;
use smlog::TxnId;
use smlog_recovery::RecoveryOptions;

#[test]
fn acknowledged_records_survive_power_loss_across_segments() {
    let device = Arc::new(SimDevice::new(1));
    let log = create(&device);
    let mut expected = Vec::new();
    for lsn in 1..=2000u64 {
        let payload = payload_for(0, lsn);
        let got = log.append_durable(&[record_for(0, lsn, &payload)]).unwrap();
        assert_eq!(got, Lsn(lsn));
        expected.push(payload);
    }
    assert!(log.stats().batch_count >= 2000);
    drop(log);
    crash(&device, &CrashPlan::power_loss());
    let (log, report, records) = recover(&device, RecoveryOptions::default()).unwrap();
    assert_eq!(records.len(), 2000);
    for (record, payload) in records.iter().zip(&expected) {
        assert_eq!(&record.payload, payload);
    }
    assert!(report.segment_count > 5, "{}", report.segment_count);
    assert_eq!(report.tail.next_lsn, Lsn(2001));
    assert_eq!(log.last_lsn(), Lsn(2000));
    let payload = payload_for(1, 2001);
    assert_eq!(
        log.append_durable(&[record_for(1, 2001, &payload)])
            .unwrap(),
        Lsn(2001)
    );
}

#[test]
fn many_threads_group_commit_into_fewer_batches() {
    let device = Arc::new(SimDevice::new(2));
    let log = Arc::new(create(&device));
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                let mut acked = Vec::new();
                for i in 0..300u64 {
                    let payload = vec![(t * 31 + i) as u8 | 1; 100];
                    let lsn = log
                        .append_durable(&[smlog::NewRecord {
                            txn_id: TxnId(t),
                            step: i as u32,
                            kind: 1,
                            payload: &payload,
                        }])
                        .unwrap();
                    acked.push((lsn, payload));
                }
                acked
            })
        })
        .collect();
    let mut acked: Vec<_> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    acked.sort();
    assert_eq!(acked.len(), 2400);
    assert!(acked.windows(2).all(|w| w[0].0 + 1 == w[1].0));
    let log = Arc::into_inner(log).unwrap();
    log.close().unwrap();
    let (_log, report, records) = recover(&device, RecoveryOptions::default()).unwrap();
    assert!(report.torn_tail.is_none());
    assert_eq!(records.len(), 2400);
    for (record, (lsn, payload)) in records.iter().zip(&acked) {
        assert_eq!(record.lsn, *lsn);
        assert_eq!(&record.payload, payload);
    }
}
