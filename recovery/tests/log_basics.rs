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

/// Committers sleep without the log's lock and read the durable LSN from an atomic; a leader
/// wakes the committers of one batch while it writes the next. A power loss in the middle of
/// that loses nothing any committer was told is durable, and every committer still waiting
/// is woken with the failure.
#[test]
fn every_commit_acknowledged_before_a_power_loss_survives_it() {
    for in_flight in [1, smlog::constants::BATCHES_IN_FLIGHT_MAX] {
        for seed in 1..=4u64 {
            let device = Arc::new(SimDevice::new(seed));
            let log = Arc::new(create(&device));
            log.set_batches_in_flight(in_flight).unwrap();
            let acked_count = Arc::new(std::sync::atomic::AtomicU64::new(0));
            let threads: Vec<_> = (0..12u64)
                .map(|t| {
                    let log = Arc::clone(&log);
                    let acked_count = Arc::clone(&acked_count);
                    std::thread::spawn(move || {
                        let mut acked = Vec::new();
                        for i in 0.. {
                            let payload = payload_for(t, i);
                            match log.append_durable(&[record_for(t, i, &payload)]) {
                                Ok(lsn) => acked.push((lsn, payload)),
                                Err(error) => return (acked, error),
                            }
                            acked_count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                        unreachable!()
                    })
                })
                .collect();
            let crash_after = 500 + 137 * seed;
            while acked_count.load(std::sync::atomic::Ordering::Relaxed) < crash_after {
                std::thread::yield_now();
            }
            let survivor = Arc::new(device.power_cycle(&CrashPlan::power_loss()));
            let mut acked = Vec::new();
            for thread in threads {
                let (mine, error) = thread.join().unwrap();
                assert!(
                    matches!(
                        error,
                        smlog::LogError::Io(_) | smlog::LogError::Failed { .. }
                    ),
                    "{error:?}"
                );
                acked.extend(mine);
            }
            assert!(acked.len() as u64 >= crash_after);
            let (_log, _report, records) = recover(&survivor, RecoveryOptions::default()).unwrap();
            let found: std::collections::HashMap<_, _> =
                records.iter().map(|r| (r.lsn, &r.payload)).collect();
            for (lsn, payload) in &acked {
                assert_eq!(
                    found.get(lsn).map(|p| p.as_slice()),
                    Some(payload.as_slice()),
                    "in flight {in_flight}, seed {seed}: acknowledged LSN {lsn} lost"
                );
            }
        }
    }
}

/// The same on io_uring and O_DIRECT, where a leader really wakes the committers of one
/// batch while the device writes the next: 16 threads, every acknowledged record recovered
/// with its payload and LSN, none missing, none extra.
#[test]
fn many_committers_on_io_uring_all_recover() {
    use smlog::io::uring::UringDevice;
    use smlog::io::DeviceOptions;
    let dir = tempfile::Builder::new()
        .prefix("smlog-group-commit-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap();
    let device = match UringDevice::open(
        dir.path(),
        DeviceOptions {
            create_dir: true,
            ..DeviceOptions::default()
        },
    ) {
        Ok(device) => Arc::new(device),
        Err(error) => {
            eprintln!("skipped: io_uring is not available here: {error}");
            return;
        }
    };
    for in_flight in [1, smlog::constants::BATCHES_IN_FLIGHT_MAX] {
        let log = Arc::new(match in_flight {
            1 => smlog::Log::create(
                Arc::clone(&device),
                smlog::log::writer::CreateOptions::default(),
            )
            .unwrap(),
            _ => {
                smlog_recovery::open_log(Arc::clone(&device), RecoveryOptions::default(), |_| {})
                    .unwrap()
                    .0
            }
        });
        log.set_batches_in_flight(in_flight).unwrap();
        let first = log.last_lsn().get() + 1;
        let threads: Vec<_> = (0..16u64)
            .map(|t| {
                let log = Arc::clone(&log);
                std::thread::spawn(move || {
                    (0..400u64)
                        .map(|i| {
                            let payload = payload_for(t, i);
                            let lsn = log.append_durable(&[record_for(t, i, &payload)]).unwrap();
                            (lsn, payload)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut acked: Vec<_> = threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect();
        acked.sort();
        let stats = log.stats();
        assert!(stats.batch_count < stats.record_count, "{stats:?}");
        Arc::into_inner(log).unwrap().close().unwrap();
        let mut records = Vec::new();
        let (_log, _report) =
            smlog_recovery::open_log(Arc::clone(&device), RecoveryOptions::default(), |r| {
                if r.lsn.get() >= first {
                    records.push((r.lsn, r.payload.clone()));
                }
            })
            .unwrap();
        assert_eq!(records.len(), 16 * 400, "in flight {in_flight}");
        assert_eq!(records, acked, "in flight {in_flight}");
    }
}

/// Committers that come and go: each thread commits a different number of times and stops,
/// so the batch after a durable one waits (gathers) for committers that never come back,
/// and gatherers race with committers that write the batch first. Every commit returns, in
/// time; a lost hand-off would leave committers asleep for good (the watchdog fails it).
#[test]
fn committers_that_come_and_go_are_never_left_asleep() {
    use rand::{Rng, SeedableRng};
    use smlog::io::uring::UringDevice;
    use smlog::io::DeviceOptions;
    let dir = tempfile::Builder::new()
        .prefix("smlog-come-and-go-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap();
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let path = dir.path().to_path_buf();
    std::thread::spawn(move || {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        for round in 0..40u64 {
            let counts: Vec<u64> = (0..rng.gen_range(2..24))
                .map(|_| rng.gen_range(1..120))
                .collect();
            let total: u64 = counts.iter().sum();
            let run = |log: Arc<smlog::Log<Box<dyn smlog::io::Device>>>| {
                let first = log.last_lsn();
                let threads: Vec<_> = counts
                    .iter()
                    .enumerate()
                    .map(|(t, &count)| {
                        let log = Arc::clone(&log);
                        std::thread::spawn(move || {
                            for i in 0..count {
                                let payload = payload_for(t as u64, i);
                                log.append_durable(&[record_for(t as u64, i, &payload)])
                                    .unwrap();
                            }
                        })
                    })
                    .collect();
                threads.into_iter().for_each(|t| t.join().unwrap());
                assert_eq!(log.durable_lsn(), first + total, "round {round}");
            };
            let device: Box<dyn smlog::io::Device> = if round % 2 == 0 {
                Box::new(SimDevice::new(round))
            } else {
                let dir = path.join(format!("round-{round}"));
                match UringDevice::open(
                    &dir,
                    DeviceOptions {
                        create_dir: true,
                        ..DeviceOptions::default()
                    },
                ) {
                    Ok(device) => Box::new(device),
                    Err(error) => {
                        eprintln!("io_uring rounds skipped: {error}");
                        continue;
                    }
                }
            };
            run(Arc::new(
                smlog::Log::create(
                    Arc::new(device),
                    smlog::log::writer::CreateOptions::default(),
                )
                .unwrap(),
            ));
        }
        done_tx.send(()).unwrap();
    });
    done_rx
        .recv_timeout(std::time::Duration::from_secs(120))
        .expect("committers left asleep (or a round failed)");
}
