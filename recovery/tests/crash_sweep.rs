//! The crash sweep: seeds x crash points on the simulated device.
//!
//! Each seed runs several crash cycles. In a cycle, threads append random batches (each
//! append is one to three records, durable or not), the device crashes at a random
//! operation (or a write or sync fails, which must stop the log), a random crash plan decides
//! what survives, and recovery runs (sometimes crashing in the middle first). Then:
//!
//! - every record acknowledged durable reads back identical;
//! - every record read back is one that was appended with that LSN (nothing invented);
//! - LSNs are contiguous;
//! - a second recovery finds exactly the same records and tail;
//! - the log keeps working in the next cycle.
//!
//! A second sweep damages durable data (bit rot, lost and misdirected writes, misdirected
//! reads, unreadable sectors): recovery must then return every record below the durable
//! mark intact, or fail with an error; it must never return wrong records or silently fewer.
//!
//! Size: `SMLOG_SWEEP_SEEDS` (default 1500) seeds x `SMLOG_SWEEP_CYCLES` (default 6) crash
//! cycles each, every cycle with its own random crash point.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use common::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use smlog::io::sim::{CrashPlan, FaultConfig, SimDevice};
use smlog::io::IoErrorKind;
use smlog::Lsn;
use smlog::TxnId;
use smlog::{LogError, NewRecord, Record};
use smlog_recovery::RecoveryOptions;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// What the threads of one cycle did.
#[derive(Default)]
struct Cycle {
    /// LSN -> payload of every record acknowledged durable.
    acked: BTreeMap<Lsn, Vec<u8>>,
    /// LSN -> payload of every record appended (acknowledged or not).
    appended: BTreeMap<Lsn, Vec<u8>>,
    /// Whether an append or wait was acknowledged after the log reported a failure.
    acked_after_failure: bool,
}

fn run_threads(log: &Arc<SimLog>, seed: u64, cycle: u64, threads: u64, appends: u64) -> Cycle {
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let log = Arc::clone(log);
            std::thread::spawn(move || {
                let mut rng = ChaCha8Rng::seed_from_u64(seed ^ (cycle << 32) ^ (t << 48));
                let mut out = Cycle::default();
                for _ in 0..appends {
                    let count = rng.gen_range(1..=3usize);
                    let payloads: Vec<Vec<u8>> = (0..count)
                        .map(|_| {
                            let len = rng.gen_range(1..=900);
                            (0..len).map(|_| rng.gen::<u8>() | 1).collect()
                        })
                        .collect();
                    let records: Vec<NewRecord<'_>> = payloads
                        .iter()
                        .map(|p| NewRecord {
                            txn_id: TxnId(t),
                            step: cycle as u32,
                            kind: 1 + (p.len() % 4) as u16,
                            payload: p,
                        })
                        .collect();
                    let failed_before = log.failure().is_some();
                    let last = match log.append(&records) {
                        Ok(last) => last,
                        Err(_) => break,
                    };
                    let first = last + 1 - count as u64;
                    for (i, p) in payloads.iter().enumerate() {
                        out.appended.insert(first + i as u64, p.clone());
                    }
                    if rng.gen_bool(0.8) {
                        match log.wait_durable(last) {
                            Ok(()) => {
                                if failed_before {
                                    out.acked_after_failure = true;
                                }
                                for (i, p) in payloads.iter().enumerate() {
                                    out.acked.insert(first + i as u64, p.clone());
                                }
                            }
                            Err(_) => break,
                        }
                    }
                }
                out
            })
        })
        .collect();
    let mut all = Cycle::default();
    for handle in handles {
        let part = handle.join().unwrap();
        all.acked.extend(part.acked);
        all.appended.extend(part.appended);
        all.acked_after_failure |= part.acked_after_failure;
    }
    all
}

/// Checks recovered records against what was appended and acknowledged.
fn check_records(
    records: &[Record],
    history: &BTreeMap<Lsn, BTreeSet<Vec<u8>>>,
    acked: &BTreeMap<Lsn, Vec<u8>>,
    first_kept_lsn_max: Lsn,
    context: &str,
) {
    assert!(
        records.windows(2).all(|w| w[0].lsn + 1 == w[1].lsn),
        "{context}: LSNs not contiguous"
    );
    let first = records.first().map(|r| r.lsn).unwrap_or(Lsn::MAX);
    assert!(
        records.is_empty() || first <= first_kept_lsn_max,
        "{context}: log starts at LSN {first}, past what was released ({first_kept_lsn_max})"
    );
    for record in records {
        let known = history.get(&record.lsn);
        assert!(
            known.is_some_and(|set| set.contains(&record.payload)),
            "{context}: LSN {} holds a payload never appended with that LSN",
            record.lsn
        );
    }
    let by_lsn: BTreeMap<Lsn, &Record> = records.iter().map(|r| (r.lsn, r)).collect();
    for (lsn, payload) in acked.range(first.min(first_kept_lsn_max)..) {
        let record = by_lsn
            .get(lsn)
            .unwrap_or_else(|| panic!("{context}: acknowledged LSN {lsn} lost"));
        assert_eq!(
            &record.payload, payload,
            "{context}: acknowledged LSN {lsn} changed"
        );
    }
}

fn random_faults(rng: &mut ChaCha8Rng) -> FaultConfig {
    let ops = rng.gen_range(1..=160);
    match rng.gen_range(0..10) {
        0 => FaultConfig {
            fail_write_at_op: Some((
                ops / 2 + 1,
                if rng.gen_bool(0.5) {
                    IoErrorKind::Io
                } else {
                    IoErrorKind::NoSpace
                },
            )),
            ..FaultConfig::default()
        },
        1 => FaultConfig {
            fail_sync_at_op: Some(ops / 2 + 1),
            ..FaultConfig::default()
        },
        2 => FaultConfig {
            short_write_at_op: Some(ops / 2 + 1),
            ..FaultConfig::default()
        },
        _ => FaultConfig {
            crash_after_ops: Some(ops),
            ..FaultConfig::default()
        },
    }
}

fn is_crash(error: &LogError) -> bool {
    match error {
        LogError::Io(e) => e.kind == IoErrorKind::Crashed,
        LogError::Failed { cause } => is_crash(cause),
        _ => false,
    }
}

/// Recovers, sometimes crashing in the middle of recovery first (fault 12).
fn recover_with_crashes(device: &Arc<SimDevice>, rng: &mut ChaCha8Rng, context: &str) -> Recovered {
    while rng.gen_bool(0.3) {
        device.set_faults(FaultConfig {
            crash_after_ops: Some(rng.gen_range(1..=4)),
            ..FaultConfig::default()
        });
        match recover(device, RecoveryOptions::default()) {
            Ok((log, _, _)) => {
                drop(log);
                device.crash();
            }
            Err(error) => assert!(
                is_crash(&error),
                "{context}: recovery interrupted by a crash failed otherwise: {error}"
            ),
        }
        if !device.is_crashed() {
            device.crash();
        }
        device.restart(&CrashPlan::random_unsynced(rng));
    }
    device.set_faults(FaultConfig::default());
    recover(device, RecoveryOptions::default())
        .unwrap_or_else(|e| panic!("{context}: recovery failed: {e}"))
}

fn sweep_seed(seed: u64, cycles: u64) -> u64 {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let device = Arc::new(SimDevice::new(seed));
    let mut log = Arc::new(create(&device));
    let mut history: BTreeMap<Lsn, BTreeSet<Vec<u8>>> = BTreeMap::new();
    let mut acked: BTreeMap<Lsn, Vec<u8>> = BTreeMap::new();
    let mut released_up_to = Lsn(0);
    let mut checks = 0u64;
    for cycle in 0..cycles {
        let context = format!("seed {seed} cycle {cycle}");
        let faults = random_faults(&mut rng);
        let io_failure = faults.crash_after_ops.is_none();
        device.set_faults(faults);
        let threads = rng.gen_range(1..=4);
        log.set_batches_in_flight(rng.gen_range(1..=smlog::constants::BATCHES_IN_FLIGHT_MAX))
            .unwrap();
        let outcome = run_threads(&log, seed, cycle, threads, rng.gen_range(5..60));
        assert!(
            !outcome.acked_after_failure,
            "{context}: acknowledged after fail-stop"
        );
        for (lsn, payload) in &outcome.appended {
            history.entry(*lsn).or_default().insert(payload.clone());
        }
        acked.extend(outcome.acked.clone());
        if io_failure && device.mutating_op_count() > 0 && log.failure().is_some() {
            // Fail-stop: nothing more is accepted.
            let payload = [1u8; 8];
            let refused = log.append_durable(&[record_for(0, 1, &payload)]);
            assert!(
                matches!(refused, Err(LogError::Failed { .. })),
                "{context}: not fail-stop"
            );
        }
        if rng.gen_bool(0.3) {
            let durable = log.durable_lsn();
            if durable > Lsn(0) && log.release_prefix(Lsn(durable.get() / 2)).is_ok() {
                released_up_to = released_up_to.max(Lsn(durable.get() / 2));
            }
        }
        drop(log);
        device.crash();
        device.restart(&CrashPlan::random_unsynced(&mut rng));
        let (reopened, report, records) = recover_with_crashes(&device, &mut rng, &context);
        check_records(&records, &history, &acked, released_up_to + 1, &context);
        checks += 1;
        // A second recovery changes nothing.
        drop(reopened);
        device.crash();
        device.restart(&CrashPlan::power_loss());
        let (reopened, again, records_again) = recover_with_crashes(&device, &mut rng, &context);
        if records_again != records {
            let lsns = |rs: &[Record]| (rs.first().map(|r| r.lsn), rs.last().map(|r| r.lsn));
            let differ = records
                .iter()
                .zip(&records_again)
                .find(|(a, b)| a != b)
                .map(|(a, _)| a.lsn);
            panic!(
                "{context}: second recovery differs: first {:?} then {:?}, first difference at {differ:?}\n{report:#?}\n{again:#?}",
                lsns(&records),
                lsns(&records_again)
            );
        }
        assert_eq!(again.tail.next_lsn, report.tail.next_lsn, "{context}");
        // What was read back is the log's history from now on: LSNs past the tail will be
        // reused, so forget them.
        let next = report.tail.next_lsn;
        history.retain(|lsn, _| *lsn < next);
        acked.retain(|lsn, _| *lsn < next);
        for record in &records {
            history.insert(record.lsn, BTreeSet::from([record.payload.clone()]));
        }
        log = Arc::new(reopened);
    }
    checks
}

#[test]
fn crash_sweep_every_acknowledged_record_survives() {
    let seeds = env_or("SMLOG_SWEEP_SEEDS", 1500);
    let cycles = env_or("SMLOG_SWEEP_CYCLES", 6);
    let mut checks = 0;
    let first_seed = env_or("SMLOG_SWEEP_FIRST_SEED", 0);
    for seed in first_seed..first_seed + seeds {
        checks += sweep_seed(seed, cycles);
    }
    eprintln!("crash sweep: {seeds} seeds x {cycles} cycles = {checks} crash-recover checks");
    assert_eq!(checks, seeds * cycles);
    let _ = first_seed;
}

/// Damage to durable data: the result is every record below the durable mark intact, or an
/// error. Never wrong records, never silently fewer.
fn damage_seed(seed: u64) -> &'static str {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0xDA4A6E);
    let device = Arc::new(SimDevice::new(seed));
    let log = Arc::new(create(&device));
    log.set_batches_in_flight(rng.gen_range(1..=smlog::constants::BATCHES_IN_FLIGHT_MAX))
        .unwrap();
    let kind = rng.gen_range(0..5);
    // One lost or misdirected write per run: two in a row can drop the last batches
    // together with the batch that vouches for them, which no log format can detect.
    let at_op = Some(rng.gen_range(1..=200));
    device.set_faults(FaultConfig {
        lose_write_at_op: if kind == 0 { at_op } else { None },
        misdirect_write_at_op: if kind == 1 { at_op } else { None },
        ..FaultConfig::default()
    });
    let outcome = run_threads(&log, seed, 0, rng.gen_range(1..=3), rng.gen_range(20..80));
    let mark = log.mark_lsn();
    drop(log);
    device.crash();
    device.restart(&CrashPlan {
        bit_rot_count: if kind == 2 { rng.gen_range(1..4) } else { 0 },
        bad_sector_count: if kind == 3 { 1 } else { 0 },
        ..CrashPlan::random_unsynced(&mut rng)
    });
    if kind == 4 {
        device.set_faults(FaultConfig {
            misdirected_read_percent: 3,
            ..FaultConfig::default()
        });
    }
    let history: BTreeMap<Lsn, BTreeSet<Vec<u8>>> = outcome
        .appended
        .iter()
        .map(|(l, p)| (*l, BTreeSet::from([p.clone()])))
        .collect();
    let mut records = Vec::new();
    let result = smlog_recovery::scan(&*device, smlog::RecoveryMode::TornTail, |r| {
        records.push(r.clone())
    });
    let context = format!("damage seed {seed} kind {kind}");
    if std::env::var("SMLOG_DEBUG").is_ok() {
        eprintln!("{context}: mark {mark} {result:#?}");
        eprintln!(
            "{:#?}",
            device
                .fault_log()
                .iter()
                .filter(|e| !matches!(
                    e,
                    smlog::io::sim::FaultEvent::Kept { .. }
                        | smlog::io::sim::FaultEvent::Lost { .. }
                ))
                .collect::<Vec<_>>()
        );
    }
    match result {
        Ok(_) => {
            // Below the mark, every acknowledged record must be there; above it, the lost
            // write or damage may have hit the last, unvouched batch.
            let vouched: BTreeMap<Lsn, Vec<u8>> = outcome
                .acked
                .range(..=mark)
                .map(|(l, p)| (*l, p.clone()))
                .collect();
            if kind == 4 {
                // A misdirected read seen twice in a row may still hide the last batches;
                // what is returned must be right.
                check_records(&records, &history, &BTreeMap::new(), Lsn(1), &context);
            } else {
                check_records(&records, &history, &vouched, Lsn(1), &context);
            }
            "recovered"
        }
        Err(
            LogError::Corrupt { .. }
            | LogError::MissingSegment { .. }
            | LogError::BadMeta { .. }
            | LogError::Io(_),
        ) => "refused",
        Err(other) => panic!("{context}: unexpected error {other}"),
    }
}

#[test]
fn damage_sweep_returns_the_vouched_records_or_an_error() {
    let seeds = env_or("SMLOG_SWEEP_SEEDS", 1500);
    let mut outcomes: BTreeMap<&str, u64> = BTreeMap::new();
    let first_seed = env_or("SMLOG_SWEEP_FIRST_SEED", 0);
    for seed in first_seed..first_seed + seeds {
        *outcomes.entry(damage_seed(seed)).or_default() += 1;
    }
    eprintln!("damage sweep: {outcomes:?}");
    assert!(
        outcomes.get("refused").copied().unwrap_or(0) > 0,
        "no damage was ever detected"
    );
}
