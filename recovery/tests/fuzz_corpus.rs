//! The fuzz targets' committed corpora replay as ordinary tests, so a crash the fuzzer
//! found once stays fixed. `generate_seed_corpus` (ignored) writes the seeds.

use std::path::PathBuf;
use std::sync::Arc;

use smlog::io::sim::SimDevice;
use smlog::log::writer::CreateOptions;
use smlog::testing::{check_log_reader, check_record_decode, FUZZ_SEGMENT_SIZE_BYTES};
use smlog::TxnId;
use smlog::{Log, NewRecord};

fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap();
            (p, bytes)
        })
        .collect()
}

#[test]
fn log_reader_corpus_replays_clean() {
    let inputs = corpus("log_reader");
    assert!(inputs.len() >= 3, "seed corpus missing");
    let mut with_records = 0;
    for (_, bytes) in &inputs {
        if check_log_reader(bytes) > 0 {
            with_records += 1;
        }
    }
    assert!(with_records >= 1, "no seed holds a readable log");
}

#[test]
fn record_decode_corpus_replays_clean() {
    let inputs = corpus("record_decode");
    assert!(!inputs.is_empty(), "seed corpus missing");
    assert!(inputs.iter().any(|(_, b)| check_record_decode(b)));
}

/// Writes seed inputs: real logs from the simulated device, prefixed with their log id.
#[test]
#[ignore = "writes the seed corpus; run by hand"]
fn generate_seed_corpus() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
    for (seed, count, size) in [(1u64, 3u64, 40usize), (2, 40, 300), (3, 200, 2000)] {
        let device = Arc::new(SimDevice::new(seed));
        let log = Log::create(
            Arc::clone(&device),
            CreateOptions {
                segment_size_bytes: FUZZ_SEGMENT_SIZE_BYTES,
            },
        )
        .unwrap();
        for i in 0..count {
            let payload = vec![(i as u8) | 1; size];
            log.append_durable(&[NewRecord {
                txn_id: TxnId(i),
                step: 0,
                kind: 1,
                payload: &payload,
            }])
            .unwrap();
        }
        let log_id = log.meta().log_id;
        log.close().unwrap();
        let mut bytes = log_id.to_le_bytes().to_vec();
        let image = device.durable_image("00000000000000000001.seg").unwrap();
        let used = image.iter().rposition(|b| *b != 0).unwrap_or(0) + 1;
        bytes.extend_from_slice(&image[..used.div_ceil(4096) * 4096]);
        if let Some(second) = device.durable_image("00000000000000000002.seg") {
            if second.iter().any(|b| *b != 0) {
                bytes.truncate(8);
                bytes.extend_from_slice(&image);
                let used = second.iter().rposition(|b| *b != 0).unwrap_or(0) + 1;
                bytes.extend_from_slice(&second[..used.div_ceil(4096) * 4096]);
            }
        }
        std::fs::write(root.join("log_reader").join(format!("seed-{seed}")), &bytes).unwrap();
        // The first record of the log, as a record_decode seed.
        let record = &image[4096 + 64..4096 + 64 + 48 + size.div_ceil(8) * 8];
        std::fs::write(
            root.join("record_decode").join(format!("seed-{seed}")),
            record,
        )
        .unwrap();
    }
}

#[test]
fn log_crash_corpus_replays_clean() {
    let inputs = corpus("log_crash");
    assert!(inputs.len() >= 3, "seed corpus missing");
    let mut checked = 0;
    for (path, bytes) in &inputs {
        eprintln!("{}", path.display());
        checked += smlog_recovery::harness::fuzz::check_log_crash(bytes);
    }
    assert!(checked >= 3, "the seeds check only {checked} recoveries");
}

#[test]
fn fs_crash_corpus_replays_clean() {
    let inputs = corpus("fs_crash");
    assert!(inputs.len() >= 3, "seed corpus missing");
    let mut total = smlog_recovery::harness::Stats::default();
    for (path, bytes) in &inputs {
        eprintln!("{}", path.display());
        total.add(&smlog_recovery::harness::fuzz::check_fs_crash(bytes));
    }
    eprintln!("{total:?}");
    assert!(
        total.cycles >= 3 && total.ops >= 10,
        "the seeds check little: {total:?}"
    );
}

/// Writes seed inputs for the crash targets: random bytes, kept when they decode to plans
/// with several cycles and operations.
#[test]
#[ignore = "writes the seed corpus; run by hand"]
fn generate_crash_seed_corpus() {
    use arbitrary::{Arbitrary, Unstructured};
    use rand::{Rng, SeedableRng};
    use smlog_recovery::harness::fuzz::{FsCrashPlan, LogCrashPlan};
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
    let mut found = (0, 0);
    while found.0 < 3 || found.1 < 3 {
        let len = rng.gen_range(500..6000);
        let bytes: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
        if found.0 < 3 {
            if let Ok(plan) = LogCrashPlan::arbitrary(&mut Unstructured::new(&bytes)) {
                let steps: usize = plan.cycles.iter().map(|c| c.steps.len()).sum();
                if plan.cycles.len() >= 2 && steps >= 10 {
                    found.0 += 1;
                    std::fs::write(root.join(format!("log_crash/seed-{}", found.0)), &bytes)
                        .unwrap();
                }
            }
        }
        if found.1 < 3 {
            if let Ok(plan) = FsCrashPlan::arbitrary(&mut Unstructured::new(&bytes)) {
                let ops: usize = plan.cycles.iter().map(|c| c.ops.len()).sum();
                // Kept when its run checks several recoveries (damage may end a run at
                // its first, with an explicit refusal).
                if plan.cycles.len() >= 2
                    && ops >= 10
                    && smlog_recovery::harness::fuzz::run_fs_plan(&plan).cycles >= 2
                {
                    found.1 += 1;
                    std::fs::write(root.join(format!("fs_crash/seed-{}", found.1)), &bytes)
                        .unwrap();
                }
            }
        }
    }
}
