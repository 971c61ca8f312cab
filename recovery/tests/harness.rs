//! The crash-test harness: one seed gives one run; every fault kind it offers is reached;
//! it catches a backend that acknowledges before durability, and shrinks the failure.

use smlog::{Durability, FsError, TxnOptions};
use smlog_recovery::harness::fs::{FsOp, FsScenario, Model};
use smlog_recovery::harness::{run_seed, shrink, Config, Faults, Scenario, SimEngine};

fn config(faults: &str) -> Config {
    Config {
        cycles: 6,
        ops_per_cycle_max: 30,
        faults: faults.parse().unwrap(),
        op_limit: None,
    }
}

#[test]
fn one_seed_gives_one_run() {
    for seed in 0..6 {
        let first = run_seed(&FsScenario, seed, &config("default")).unwrap();
        let second = run_seed(&FsScenario, seed, &config("default")).unwrap();
        assert_eq!(first, second, "seed {seed}");
        assert_eq!(first.cycles, 6);
    }
}

#[test]
fn every_fault_kind_offered_is_reached() {
    let mut total = smlog_recovery::harness::Stats::default();
    for seed in 0..200 {
        total.add(&run_seed(&FsScenario, seed, &config("all")).unwrap());
    }
    let kinds = &total.fault_kinds;
    for kind in [
        "unsynced write lost (1)",
        "unsynced write kept (2)",
        "torn write (3)",
        "write in flight (4)",
        "stale data resurrected (5)",
        "misdirected write (6)",
        "lost write (7)",
        "misdirected read (8)",
        "unreadable sector (9)",
        "bit rot (10)",
        "write failed (11)",
        "fdatasync failed (11)",
        "short write (11)",
        "unsynced name lost (14)",
    ] {
        assert!(
            kinds.get(kind).copied().unwrap_or(0) > 0,
            "{kind} never reached: {kinds:?}"
        );
    }
    assert!(total.recovery_crashes > 0, "fault 12 never reached");
}

#[test]
fn crashes_between_steps_are_resumed_and_rolled_back() {
    let mut total = smlog_recovery::harness::Stats::default();
    for seed in 0..300 {
        total.add(&run_seed(&FsScenario, seed, &config("crash,steps")).unwrap());
        if total.resumed > 0 && total.rolled_back > 0 {
            return;
        }
    }
    panic!("not both reached: {total:?}");
}

#[test]
fn faults_parse_and_print() {
    let faults: Faults = "crash,io-error".parse().unwrap();
    assert!(faults.crash && faults.io_errors && !faults.damage && !faults.steps);
    assert_eq!(faults.to_string(), "crash,io-error");
    assert_eq!(
        "all".parse::<Faults>().unwrap().to_string(),
        "crash,io-error,recovery-crash,steps,damage"
    );
    assert!("bogus".parse::<Faults>().is_err());
}

/// A backend with a planted bug: it acknowledges writes as durable without waiting.
struct AcksTooEarly;

impl Scenario for AcksTooEarly {
    type Op = FsOp;
    type Model = Model;
    fn options(&self) -> smlog_recovery::OpenOptions {
        FsScenario.options()
    }
    fn model(&self) -> Model {
        FsScenario.model()
    }
    fn setup(&self) -> Vec<FsOp> {
        FsScenario.setup()
    }
    fn random_op(&self, rng: &mut rand_chacha::ChaCha8Rng, model: &Model) -> FsOp {
        FsScenario.random_op(rng, model)
    }
    fn run(&self, engine: &SimEngine, op: &FsOp, _options: TxnOptions) -> Result<(), FsError> {
        FsScenario.run(engine, op, Durability::Async.into())
    }
    fn apply(&self, model: &mut Model, op: &FsOp) -> Result<(), i32> {
        FsScenario.apply(model, op)
    }
    fn matches(&self, engine: &SimEngine, model: &Model) -> Result<bool, FsError> {
        FsScenario.matches(engine, model)
    }
}

#[test]
fn a_backend_that_acknowledges_too_early_is_caught_and_shrunk() {
    let config = config("crash");
    let failure = (0..40)
        .find_map(|seed| run_seed(&AcksTooEarly, seed, &config).err())
        .expect("the planted bug was never caught");
    assert!(failure.message.contains("acknowledged"), "{failure}");
    let shorter = shrink(&AcksTooEarly, failure.seed, &config, &failure);
    assert!(shorter.ops <= failure.ops);
    // The shrunk prefix replays to a failure.
    let replay = Config {
        op_limit: Some(shorter.ops),
        ..config
    };
    assert!(run_seed(&AcksTooEarly, failure.seed, &replay).is_err());
}

/// A failure's operation count replays it: a run limited to the operations a whole run
/// made is that same run, crash for crash, even where the cycle's crash came in a
/// checkpoint or sync after its last operation.
#[test]
fn a_run_limited_to_its_own_operation_count_is_the_same_run() {
    let mut differed_before_an_op = 0;
    for seed in 0..300 {
        let one_cycle = Config {
            cycles: 1,
            ..config("default")
        };
        let whole = run_seed(&FsScenario, seed, &one_cycle).unwrap();
        let limited = Config {
            op_limit: Some(whole.ops),
            ..one_cycle
        };
        let replay = run_seed(&FsScenario, seed, &limited).unwrap();
        assert_eq!(whole, replay, "seed {seed}");
        let shorter = Config {
            op_limit: Some(whole.ops.saturating_sub(1)),
            ..one_cycle
        };
        if run_seed(&FsScenario, seed, &shorter).unwrap() != whole {
            differed_before_an_op += 1;
        }
    }
    // The limit does change a run that it cuts short: the comparison above can fail.
    assert!(differed_before_an_op > 0);
}
