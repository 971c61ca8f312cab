//! The crash-test harness (feature `sim`): run a backend built on smlog through crashes and
//! faults on the deterministic simulated device, and check it against a reference model.
//!
//! A file-server backend implements [`Scenario`]: its operations, a reference model of what
//! they do, how to run one on the engine, and how to compare the engine with the model. The
//! harness ([`run_seed`]) then runs cycles of: random operations (durable or not), a crash
//! at a random device operation or a failed write or fdatasync, a random crash plan for
//! what was not durable, recovery (itself crashed, repeatedly, when asked), and the checks:
//!
//! - the recovered state matches the model after every operation acknowledged durable and
//!   possibly some later ones, each whole ([`Scenario::matches`]);
//! - the scenario's own invariants hold ([`Scenario::check`], fsck by default);
//! - a second recovery finds nothing in flight and changes nothing;
//! - the engine goes on: the next cycle starts from the recovered state.
//!
//! One seed gives one run: the device is in deterministic mode (no background threads),
//! the engine's clock is fixed, and every choice comes from the seed. A failure carries the
//! seed and the number of operations run; [`shrink`] finds a shorter prefix that still
//! fails. [`fs::FsScenario`] is the file-system scenario `smlog torture` runs.

use std::fmt::Debug;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use smlog::internals::Decision;
use smlog::io::sim::{CrashPlan, FaultConfig, SimDevice};
use smlog::io::IoErrorKind;
use smlog::{Durability, Engine, FsError, LogError, Time, TxnOptions};

use crate::{open_device, OpenOptions};

pub mod fs;
pub mod fuzz;

/// The engine on the simulated device.
pub type SimEngine = Engine<SimDevice>;

/// A workload and its oracle. See the module docs.
pub trait Scenario {
    /// One operation of the workload.
    type Op: Clone + Debug;
    /// The reference model: what the operations do, without crashes.
    type Model: Clone;

    /// How to open the engine (the harness sets `create`, the clock and, per cycle,
    /// `sync_every_step`; it turns automatic checkpoints off: it takes its own).
    fn options(&self) -> OpenOptions {
        OpenOptions::default()
    }
    /// The model of a fresh engine.
    fn model(&self) -> Self::Model;
    /// Operations run durably once, before the first crash.
    fn setup(&self) -> Vec<Self::Op> {
        Vec::new()
    }
    /// A random operation (may depend on the model, to meet existing objects).
    fn random_op(&self, rng: &mut ChaCha8Rng, model: &Self::Model) -> Self::Op;
    /// Runs `op` on the engine. A refusal is an `Err` with [`FsError::is_refusal`].
    fn run(&self, engine: &SimEngine, op: &Self::Op, options: TxnOptions) -> Result<(), FsError>;
    /// Applies `op` to the model; `Err(errno)` when the engine must refuse it so.
    fn apply(&self, model: &mut Self::Model, op: &Self::Op) -> Result<(), i32>;
    /// Whether the engine's state is the model's.
    fn matches(&self, engine: &SimEngine, model: &Self::Model) -> Result<bool, FsError>;
    /// How the engine's state differs from the model's, for a failure report (default:
    /// nothing said).
    fn difference(&self, engine: &SimEngine, model: &Self::Model) -> String {
        let _ = (engine, model);
        String::new()
    }
    /// Invariants that hold after every recovery (default: fsck is clean).
    fn check(&self, engine: &SimEngine) -> Result<(), String> {
        let report = engine.fsck();
        if report.is_clean() {
            Ok(())
        } else {
            Err(format!("fsck: {}", report.problems.join("; ")))
        }
    }
}

/// Which faults a run injects (DESIGN section 6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Faults {
    /// Crashes at a random device operation; at each, unsynced writes lost, kept, torn at
    /// 512 B or 4 KiB, reordered, the write in flight lost, torn or applied, unsynced names
    /// lost (faults 1-4, 14).
    pub crash: bool,
    /// Failed writes (EIO, ENOSPC), short writes, failed fdatasyncs (fault 11).
    pub io_errors: bool,
    /// Crashes during recovery, repeatedly (fault 12).
    pub recovery_crash: bool,
    /// Some cycles make every step durable on its own, so crashes fall between the steps of
    /// one transaction.
    pub steps: bool,
    /// Damage to the log and checkpoint files: stale sectors resurrected past the tail,
    /// misdirected and lost writes, misdirected reads, unreadable sectors, bit rot (faults
    /// 5-10, 13), the data file included (its blocks carry checksums). Recovery, and every
    /// read after it, must then be right or fail with an explicit error.
    pub damage: bool,
}

impl Default for Faults {
    fn default() -> Faults {
        Faults {
            crash: true,
            io_errors: true,
            recovery_crash: true,
            steps: true,
            damage: false,
        }
    }
}

impl std::str::FromStr for Faults {
    type Err = String;
    /// A comma-separated list of `crash`, `io-error`, `recovery-crash`, `steps`, `damage`;
    /// or `default` (all but damage), `all`.
    fn from_str(text: &str) -> Result<Faults, String> {
        let mut faults = Faults {
            crash: false,
            io_errors: false,
            recovery_crash: false,
            steps: false,
            damage: false,
        };
        for word in text.split(',').map(str::trim).filter(|w| !w.is_empty()) {
            match word {
                "default" => faults = Faults::default(),
                "all" => {
                    faults = Faults {
                        damage: true,
                        ..Faults::default()
                    }
                }
                "crash" => faults.crash = true,
                "io-error" => faults.io_errors = true,
                "recovery-crash" => faults.recovery_crash = true,
                "steps" => faults.steps = true,
                "damage" => faults.damage = true,
                other => {
                    return Err(format!(
                        "unknown fault {other:?}: crash, io-error, recovery-crash, steps, \
                         damage, default or all"
                    ))
                }
            }
        }
        Ok(faults)
    }
}

impl std::fmt::Display for Faults {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut words = Vec::new();
        for (on, word) in [
            (self.crash, "crash"),
            (self.io_errors, "io-error"),
            (self.recovery_crash, "recovery-crash"),
            (self.steps, "steps"),
            (self.damage, "damage"),
        ] {
            if on {
                words.push(word);
            }
        }
        f.write_str(&words.join(","))
    }
}

/// How long a run is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// Crash-recover cycles per seed.
    pub cycles: u64,
    /// Most operations in one cycle.
    pub ops_per_cycle_max: u64,
    /// Faults to inject.
    pub faults: Faults,
    /// Stop after this many operations in all (a replay of a shorter prefix).
    pub op_limit: Option<u64>,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            cycles: 8,
            ops_per_cycle_max: 40,
            faults: Faults::default(),
            op_limit: None,
        }
    }
}

/// What a run checked.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Faults the device applied, by kind ([`smlog::io::sim::FaultEvent::kind`]).
    pub fault_kinds: std::collections::BTreeMap<&'static str, u64>,
    /// Crash-recover cycles checked.
    pub cycles: u64,
    /// Operations run.
    pub ops: u64,
    /// Operations acknowledged durable.
    pub acknowledged: u64,
    /// Faults the device applied (each lost, kept, torn or damaged write, failed call...).
    pub faults: u64,
    /// Transactions recovery resumed.
    pub resumed: u64,
    /// Transactions recovery rolled back.
    pub rolled_back: u64,
    /// Recoveries interrupted by a crash.
    pub recovery_crashes: u64,
    /// Recoveries that refused damage with an explicit error (ending the seed's run).
    pub refused: u64,
    /// Recoveries after damage that lost acknowledged operations at the end of the log,
    /// whole (the undetectable case of a lost last write).
    pub damage_lost_tail: u64,
    /// Of those, the recoveries whose lost tail reached into the setup's operations (the
    /// setup's last batches, vouched for by nothing before the first recovery's mark).
    pub damage_lost_setup: u64,
}

impl Stats {
    /// Adds another run's counts.
    pub fn add(&mut self, other: &Stats) {
        self.cycles += other.cycles;
        self.ops += other.ops;
        self.acknowledged += other.acknowledged;
        self.faults += other.faults;
        self.resumed += other.resumed;
        self.rolled_back += other.rolled_back;
        self.recovery_crashes += other.recovery_crashes;
        self.refused += other.refused;
        self.damage_lost_tail += other.damage_lost_tail;
        self.damage_lost_setup += other.damage_lost_setup;
        for (kind, count) in &other.fault_kinds {
            *self.fault_kinds.entry(kind).or_default() += count;
        }
    }
}

/// A failed check: enough to replay it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// The seed.
    pub seed: u64,
    /// The cycle it failed in.
    pub cycle: u64,
    /// Operations run up to the failure (a replay with this `op_limit` fails the same way).
    pub ops: u64,
    /// What was wrong.
    pub message: String,
    /// The last operations of the failing cycle and their results.
    pub history: Vec<String>,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "seed {} cycle {} after {} operations: {}",
            self.seed, self.cycle, self.ops, self.message
        )
    }
}

/// The fixed clock of harness runs.
fn fixed_clock() -> Time {
    Time {
        secs: 1_700_000_000,
        nanos: 0,
    }
}

fn is_damage_refusal(error: &FsError) -> bool {
    match error {
        FsError::Corrupt { .. } | FsError::Layout { .. } | FsError::Checksum { .. } => true,
        FsError::Log(e) => {
            matches!(
                e,
                LogError::Corrupt { .. }
                    | LogError::BadMeta { .. }
                    | LogError::MissingSegment { .. }
            ) || matches!(e, LogError::Io(io) if io.kind == IoErrorKind::Io)
        }
        FsError::Io(io) => io.kind == IoErrorKind::Io,
        _ => false,
    }
}

/// Files damage never hits: none (data blocks carry checksums since store format 2).
fn spared() -> Vec<String> {
    Vec::new()
}

fn cycle_faults(rng: &mut ChaCha8Rng, faults: &Faults) -> FaultConfig {
    let ops = rng.gen_range(1..=150);
    let mut config = FaultConfig::default();
    let choice = rng.gen_range(0..10);
    if faults.io_errors && choice == 0 {
        let kind = if rng.gen_bool(0.5) {
            IoErrorKind::Io
        } else {
            IoErrorKind::NoSpace
        };
        config.fail_write_at_op = Some((ops / 2 + 1, kind));
    } else if faults.io_errors && choice == 1 {
        config.fail_sync_at_op = Some(ops / 2 + 1);
    } else if faults.io_errors && choice == 2 {
        config.short_write_at_op = Some(ops / 2 + 1);
    } else if faults.crash {
        config.crash_after_ops = Some(ops);
    }
    if faults.damage && rng.gen_bool(0.4) {
        let at = Some(rng.gen_range(1..=60));
        match rng.gen_range(0..3) {
            0 => config.lose_write_at_op = at,
            1 => config.misdirect_write_at_op = at,
            _ => config.misdirected_read_percent = 1,
        }
        config.spared_files = spared();
    }
    config
}

fn crash_plan(rng: &mut ChaCha8Rng, faults: &Faults) -> CrashPlan {
    let mut plan = if faults.crash {
        CrashPlan::random_unsynced(rng)
    } else {
        CrashPlan::power_loss()
    };
    if faults.damage && rng.gen_bool(0.15) {
        plan.bit_rot_count = rng.gen_range(0..2);
        plan.bad_sector_count = u32::from(rng.gen_bool(0.3));
    } else {
        // Stale sectors over zeros: only where the format can tell (see `Faults::damage`).
        plan.resurrect_count = if faults.damage {
            plan.resurrect_count
        } else {
            0
        };
    }
    plan.spared_files = spared();
    plan
}

/// Where a run's choices come from: a seeded generator ([`SeededChoices`]) or a plan
/// decoded from fuzz input ([`fuzz::FsPlanChoices`]).
pub trait Choices<S: Scenario> {
    /// The device faults for the next cycle.
    fn cycle_faults(&mut self, faults: &Faults) -> FaultConfig;
    /// What survives the crash that ends a cycle (or a recovery).
    fn crash_plan(&mut self, faults: &Faults) -> CrashPlan;
    /// Operations in the next cycle.
    fn ops_in_cycle(&mut self, max: u64) -> u64;
    /// Whether to checkpoint before the next operation.
    fn checkpoint_now(&mut self) -> bool;
    /// Whether to sync before the next operation.
    fn sync_now(&mut self) -> bool;
    /// The next operation and its durability; `None` ends the cycle early.
    fn next_op(&mut self, scenario: &S, model: &S::Model) -> Option<(S::Op, Durability)>;
    /// Whether this open makes every step durable on its own.
    fn steps_mode(&mut self, faults: &Faults) -> bool;
    /// Crash recovery after this many device operations, or let it finish.
    fn recovery_crash(&mut self, faults: &Faults) -> Option<u64>;
    /// Whether recovery reads from the wrong place now and then.
    fn misreads(&mut self, faults: &Faults) -> bool;
}

/// Choices from a seed: the torture's.
#[derive(Debug)]
pub struct SeededChoices(pub ChaCha8Rng);

impl<S: Scenario> Choices<S> for SeededChoices {
    fn cycle_faults(&mut self, faults: &Faults) -> FaultConfig {
        cycle_faults(&mut self.0, faults)
    }
    fn crash_plan(&mut self, faults: &Faults) -> CrashPlan {
        crash_plan(&mut self.0, faults)
    }
    fn ops_in_cycle(&mut self, max: u64) -> u64 {
        self.0.gen_range(1..=max.max(1))
    }
    fn checkpoint_now(&mut self) -> bool {
        self.0.gen_bool(0.04)
    }
    fn sync_now(&mut self) -> bool {
        self.0.gen_bool(0.04)
    }
    fn next_op(&mut self, scenario: &S, model: &S::Model) -> Option<(S::Op, Durability)> {
        let op = scenario.random_op(&mut self.0, model);
        let durability = if self.0.gen_bool(0.5) {
            Durability::Sync
        } else {
            Durability::Async
        };
        Some((op, durability))
    }
    fn steps_mode(&mut self, faults: &Faults) -> bool {
        faults.steps && self.0.gen_bool(0.3)
    }
    fn recovery_crash(&mut self, faults: &Faults) -> Option<u64> {
        (faults.recovery_crash && self.0.gen_bool(0.3)).then(|| self.0.gen_range(1..=12))
    }
    fn misreads(&mut self, faults: &Faults) -> bool {
        faults.damage && self.0.gen_bool(0.3)
    }
}

/// Runs one seed; `Err` on the first failed check (a panic in the system is one too).
pub fn run_seed<S: Scenario>(scenario: &S, seed: u64, config: &Config) -> Result<Stats, Failure> {
    let mut choices = SeededChoices(ChaCha8Rng::seed_from_u64(seed));
    run_with(scenario, seed, config, &mut choices)
}

/// Runs with the given choices; `seed` seeds the device.
pub fn run_with<S: Scenario, C: Choices<S>>(
    scenario: &S,
    seed: u64,
    config: &Config,
    choices: &mut C,
) -> Result<Stats, Failure> {
    match catch_unwind(AssertUnwindSafe(|| {
        run_inner(scenario, seed, config, choices)
    })) {
        Ok(result) => result,
        Err(panic) => {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "a panic".into());
            Err(Failure {
                seed,
                cycle: 0,
                ops: config.op_limit.unwrap_or(u64::MAX),
                message: format!("panicked: {message}"),
                history: Vec::new(),
            })
        }
    }
}

struct Run<'a, S: Scenario, C: Choices<S>> {
    scenario: &'a S,
    seed: u64,
    config: &'a Config,
    choices: &'a mut C,
    device: Arc<SimDevice>,
    stats: Stats,
    cycle: u64,
    history: Vec<String>,
    /// Fault events already added to the history.
    faults_noted: usize,
}

impl<S: Scenario, C: Choices<S>> Run<'_, S, C> {
    /// Adds the faults applied since the last call to the history, so a failure report
    /// says what the device did.
    fn note_faults(&mut self) {
        let events = self.device.fault_log();
        // Reads of an unreadable sector repeat; the sector itself is noted when it breaks.
        let noted = events.iter().skip(self.faults_noted);
        for event in noted.filter(|e| !matches!(e, smlog::io::sim::FaultEvent::ReadError { .. })) {
            self.history.push(format!("  fault: {event:?}"));
        }
        self.faults_noted = events.len();
    }

    fn count_faults(&mut self) {
        let events = self.device.fault_log();
        self.stats.faults += events.len() as u64;
        for event in &events {
            *self.stats.fault_kinds.entry(event.kind()).or_default() += 1;
        }
    }

    fn fail(&self, message: String) -> Failure {
        Failure {
            seed: self.seed,
            cycle: self.cycle,
            ops: self.stats.ops,
            message,
            history: self.history.clone(),
        }
    }

    fn options(&mut self, sync_every_step: bool) -> OpenOptions {
        let mut options = self.scenario.options();
        options.create = true;
        options.engine.clock = fixed_clock;
        options.engine.checkpoint_log_bytes = 0;
        options.engine.checkpoint_dirty_bytes = 0;
        options.engine.sync_every_step = sync_every_step;
        options
    }

    fn cycle_options(&mut self) -> OpenOptions {
        let steps = self.choices.steps_mode(&self.config.faults);
        self.options(steps)
    }

    /// Recovers, crashing recovery first when asked; `Ok(None)` when recovery refused
    /// damage with an explicit error.
    fn recover(&mut self) -> Result<Option<SimEngine>, Failure> {
        while let Some(at) = self.choices.recovery_crash(&self.config.faults) {
            self.device.set_faults(FaultConfig {
                crash_after_ops: Some(at),
                ..FaultConfig::default()
            });
            let options = self.cycle_options();
            match open_device(Arc::clone(&self.device), options) {
                Ok((engine, _)) => drop(engine),
                Err(e) if e.is_refusal() => {
                    return Err(self.fail(format!("interrupted recovery refused: {e}")))
                }
                Err(_) => {}
            }
            self.stats.recovery_crashes += 1;
            self.device.crash();
            let plan = self.choices.crash_plan(&self.config.faults);
            self.device.restart(&plan);
            self.history
                .push(format!("recovery crashed after {at} device operations"));
            self.note_faults();
        }
        // With damage, recovery itself may read from the wrong place (fault 8).
        let misreads = self.choices.misreads(&self.config.faults);
        self.device.set_faults(FaultConfig {
            misdirected_read_percent: if misreads { 2 } else { 0 },
            spared_files: spared(),
            ..FaultConfig::default()
        });
        let options = self.cycle_options();
        let opened = open_device(Arc::clone(&self.device), options);
        self.device.set_faults(FaultConfig::default());
        self.history.push(format!(
            "recovery{}: {}",
            if misreads { " (misdirected reads)" } else { "" },
            match &opened {
                Ok((_, report)) => format!(
                    "{} in flight, tail LSN {}, torn tail {:?}",
                    report.in_flight.len(),
                    report.log.tail.next_lsn,
                    report
                        .log
                        .torn_tail
                        .as_ref()
                        .map(|d| (d.segment_seq, d.offset, d.lsn))
                ),
                Err(e) => format!("{e}"),
            }
        ));
        self.note_faults();
        match opened {
            Ok((engine, report)) => {
                for txn in &report.in_flight {
                    match txn.decision {
                        Decision::Resume => self.stats.resumed += 1,
                        Decision::RollBack => self.stats.rolled_back += 1,
                    }
                }
                Ok(Some(engine))
            }
            Err(e) if self.config.faults.damage && is_damage_refusal(&e) => {
                self.stats.refused += 1;
                Ok(None)
            }
            Err(e) => Err(self.fail(format!("recovery failed: {e}"))),
        }
    }
}

fn run_inner<S: Scenario, C: Choices<S>>(
    scenario: &S,
    seed: u64,
    config: &Config,
    choices: &mut C,
) -> Result<Stats, Failure> {
    let device = Arc::new(SimDevice::new(seed));
    device.set_deterministic(true);
    let mut run = Run {
        scenario,
        seed,
        config,
        choices,
        device,
        stats: Stats::default(),
        cycle: 0,
        history: Vec::new(),
        faults_noted: 0,
    };
    let options = run.options(false);
    let (mut engine, _) = open_device(Arc::clone(&run.device), options)
        .map_err(|e| run.fail(format!("creating the engine failed: {e}")))?;
    let mut model = scenario.model();
    // The state before each setup operation: nothing vouches for the setup's last batches
    // until the first recovery writes its mark, so damage may take them (see below).
    let mut setup_states = Vec::new();
    for op in scenario.setup() {
        setup_states.push(model.clone());
        let want = scenario.apply(&mut model, &op);
        let got = scenario.run(&engine, &op, Durability::Sync.into());
        if got.as_ref().map_err(FsError::errno) != want.as_ref().map_err(|e| *e) {
            return Err(run.fail(format!("setup {op:?}: engine {got:?}, model {want:?}")));
        }
    }
    let limit = config.op_limit.unwrap_or(u64::MAX);
    for cycle in 0..config.cycles {
        run.cycle = cycle;
        run.history.clear();
        let faults = run.choices.cycle_faults(&config.faults);
        run.history.push(format!("faults: {faults:?}"));
        run.device.set_faults(faults);
        let mut states = std::mem::take(&mut setup_states);
        let setup_prefixes = states.len();
        states.push(model.clone());
        let mut durable = states.len() - 1;
        let ops = run.choices.ops_in_cycle(config.ops_per_cycle_max);
        for i in 0..ops {
            if run.choices.checkpoint_now() {
                run.history.push("checkpoint".into());
                match engine.checkpoint() {
                    Ok(_) => {}
                    Err(e) if e.is_refusal() => {}
                    Err(_) => break,
                }
            }
            if run.choices.sync_now() {
                run.history.push("sync".into());
                match engine.sync() {
                    Ok(()) => durable = states.len() - 1,
                    Err(_) => break,
                }
            }
            // The limit stops a run just before its next operation, after the checkpoint
            // and sync that come before it: a run that failed after N operations fails
            // the same way with `op_limit` N.
            if run.stats.ops >= limit {
                break;
            }
            let Some((op, durability)) = run
                .choices
                .next_op(scenario, states.last().expect("never empty"))
            else {
                break;
            };
            let mut next = states.last().expect("never empty").clone();
            let want = scenario.apply(&mut next, &op);
            let got = scenario.run(&engine, &op, durability.into());
            run.stats.ops += 1;
            run.history
                .push(format!("{i}: {op:?} {durability:?} -> {got:?}"));
            match got {
                Err(e) if !e.is_refusal() => {
                    // Failed: it may be applied whole or not at all.
                    states.push(next);
                    break;
                }
                got => {
                    let got = got.map_err(|e| e.errno());
                    if got != want {
                        return Err(
                            run.fail(format!("{op:?} gave {got:?}; the model says {want:?}"))
                        );
                    }
                    states.push(next);
                    if got.is_ok() && durability == Durability::Sync {
                        durable = states.len() - 1;
                        run.stats.acknowledged += 1;
                    }
                }
            }
        }
        drop(engine);
        run.device.crash();
        let plan = run.choices.crash_plan(&config.faults);
        run.device.restart(&plan);
        run.history.push(format!("crash: {plan:?}"));
        run.note_faults();
        let Some(recovered) = run.recover()? else {
            run.count_faults();
            return Ok(run.stats);
        };
        let mut found = None;
        // With damage, a lost or misdirected write of the last batches, or bit rot in
        // them, can take records no later batch vouches for: damage there looks exactly
        // like a torn write that was never acknowledged, the one loss no log format
        // detects (docs/FORMAT.md). Setup operations included. Every state must still be a
        // whole prefix.
        let lowest = if config.faults.damage { 0 } else { durable };
        for k in (lowest..states.len()).rev() {
            match scenario.matches(&recovered, &states[k]) {
                Ok(true) => {
                    found = Some(k);
                    break;
                }
                Ok(false) => {}
                Err(e) if config.faults.damage && is_damage_refusal(&e) => {
                    run.stats.refused += 1;
                    run.count_faults();
                    return Ok(run.stats);
                }
                Err(e) => return Err(run.fail(format!("reading the recovered state: {e}"))),
            }
        }
        if found.is_some_and(|k| k < durable) {
            run.stats.damage_lost_tail += 1;
        }
        if found.is_some_and(|k| k < setup_prefixes) {
            run.stats.damage_lost_setup += 1;
        }
        let Some(k) = found else {
            return Err(run.fail(format!(
                "the recovered state matches the model after no prefix from {durable} of {} \
                 operations: an acknowledged operation was lost or one was half applied{}",
                states.len() - 1,
                scenario.difference(&recovered, &states[durable])
            )));
        };
        if config.faults.damage {
            // Damage to data blocks no read of the model's state reaches (blocks
            // preallocated past a file's end): fsck finds it by the blocks' checksums, as
            // it must, and finds nothing else.
            let report = recovered.fsck();
            if report.bad_blocks > 0 && report.problems.len() as u64 == report.bad_blocks {
                run.stats.refused += 1;
                run.count_faults();
                return Ok(run.stats);
            }
        }
        scenario.check(&recovered).map_err(|e| run.fail(e))?;
        // A second recovery changes nothing.
        drop(recovered);
        run.device.crash();
        run.device.restart(&CrashPlan::power_loss());
        let options = run.cycle_options();
        let (again, report) = open_device(Arc::clone(&run.device), options)
            .map_err(|e| run.fail(format!("second recovery failed: {e}")))?;
        if !report.in_flight.is_empty() {
            return Err(run.fail(format!(
                "second recovery found transactions in flight: {:?}",
                report.in_flight
            )));
        }
        match scenario.matches(&again, &states[k]) {
            Ok(true) => {}
            other => return Err(run.fail(format!("second recovery changed the state: {other:?}"))),
        }
        model = states.swap_remove(k);
        engine = again;
        run.stats.cycles += 1;
        if run.stats.ops >= limit {
            break;
        }
    }
    run.count_faults();
    Ok(run.stats)
}

/// Finds a shorter prefix of the failing run of `seed` that still fails: the fewest
/// operations (`Config::op_limit`) it can, by bisection then stepping down.
pub fn shrink<S: Scenario>(scenario: &S, seed: u64, config: &Config, failure: &Failure) -> Failure {
    let mut best = failure.clone();
    let mut low = 0u64;
    let mut high = failure.ops.min(1_000_000);
    while low + 1 < high {
        let mid = (low + high) / 2;
        let trial = Config {
            op_limit: Some(mid),
            ..*config
        };
        match run_seed(scenario, seed, &trial) {
            Err(found) => {
                high = mid;
                best = found;
                best.ops = mid;
            }
            Ok(_) => low = mid,
        }
    }
    if best.ops == failure.ops {
        best.ops = failure.ops;
    }
    best
}
