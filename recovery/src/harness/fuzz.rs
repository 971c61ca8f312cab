//! The crash fuzz targets' checks: each decodes its whole plan (operations, faults, crash
//! plans, crashes during recovery) from the fuzzer's bytes with `arbitrary`, runs it on the
//! simulated device, and panics on any broken promise. `fuzz/fuzz_targets/log_crash.rs`
//! and `fs_crash.rs` call them; the committed corpora replay them in `cargo test`.

use std::collections::BTreeMap;
use std::sync::Arc;

use arbitrary::{Arbitrary, Unstructured};
use smlog::io::sim::{CrashPlan, FaultConfig, SimDevice};
use smlog::io::IoErrorKind;
use smlog::log::writer::CreateOptions;
use smlog::{Durability, Log, LogError, NewRecord};

use super::fs::{FsOp, FsScenario, Model, FS_SCENARIO_DIRS, FS_SCENARIO_NAMES};
use super::{run_with, Choices, Config, Faults};
use crate::{open_log, RecoveryOptions};
use smlog::Lsn;
use smlog::TxnId;

/// Most cycles, operations per cycle and crashes during one recovery a plan may hold, so
/// no input runs long.
const CYCLES_MAX: usize = 4;
const OPS_MAX: usize = 24;
const RECOVERY_CRASHES_MAX: usize = 3;

/// A device fault for one cycle (DESIGN section 6).
#[derive(Arbitrary, Clone, Copy, Debug, PartialEq, Eq)]
pub enum FuzzFault {
    /// None: the cycle ends with a clean crash.
    None,
    /// Crash at this mutating operation (faults 1, 4).
    CrashAfter(u8),
    /// This write fails, with ENOSPC or EIO (fault 11).
    WriteFails(u8, bool),
    /// This fdatasync fails (fault 11).
    SyncFails(u8),
    /// This write is short (fault 11).
    ShortWrite(u8),
    /// This write is acknowledged and lost (fault 7).
    LostWrite(u8),
    /// This write lands elsewhere (fault 6).
    MisdirectedWrite(u8),
    /// Reads land elsewhere now and then (fault 8).
    MisdirectedReads,
}

impl FuzzFault {
    /// Whether the fault damages what was durable (not only what was in flight).
    pub fn is_damage(&self) -> bool {
        matches!(
            self,
            FuzzFault::LostWrite(_) | FuzzFault::MisdirectedWrite(_) | FuzzFault::MisdirectedReads
        )
    }

    fn config(&self, spared: &[String]) -> FaultConfig {
        let at = |n: u8| Some(u64::from(n) + 1);
        let mut config = FaultConfig {
            spared_files: spared.to_vec(),
            ..FaultConfig::default()
        };
        match *self {
            FuzzFault::None => {}
            FuzzFault::CrashAfter(n) => config.crash_after_ops = at(n),
            FuzzFault::WriteFails(n, nospace) => {
                let kind = if nospace {
                    IoErrorKind::NoSpace
                } else {
                    IoErrorKind::Io
                };
                config.fail_write_at_op = Some((u64::from(n) + 1, kind));
            }
            FuzzFault::SyncFails(n) => config.fail_sync_at_op = at(n),
            FuzzFault::ShortWrite(n) => config.short_write_at_op = at(n),
            FuzzFault::LostWrite(n) => config.lose_write_at_op = at(n),
            FuzzFault::MisdirectedWrite(n) => config.misdirect_write_at_op = at(n),
            FuzzFault::MisdirectedReads => config.misdirected_read_percent = 5,
        }
        config
    }
}

/// What survives a crash (faults 1-5, 9, 10).
#[derive(Arbitrary, Clone, Copy, Debug, PartialEq, Eq)]
pub struct FuzzCrashPlan {
    /// Percent of unsynced writes kept.
    pub keep: u8,
    /// Percent torn.
    pub torn: u8,
    /// Survivors applied out of order.
    pub reorder: bool,
    /// Bits flipped in durable data (0..=2 used).
    pub bit_rot: u8,
    /// One sector made unreadable.
    pub bad_sector: bool,
    /// Stale writes resurrected over zeros (0..=2 used).
    pub resurrect: u8,
}

impl FuzzCrashPlan {
    /// Whether it damages durable data.
    pub fn is_damage(&self) -> bool {
        !self.bit_rot.is_multiple_of(3) || self.bad_sector
    }

    fn plan(&self, spared: &[String]) -> CrashPlan {
        let keep = self.keep % 101;
        CrashPlan {
            keep_percent: keep,
            torn_percent: self.torn % (101 - keep),
            reorder: self.reorder,
            bit_rot_count: u32::from(self.bit_rot % 3),
            resurrect_count: u32::from(self.resurrect % 3),
            bad_sector_count: u32::from(self.bad_sector),
            spared_files: spared.to_vec(),
        }
    }
}

// --- log_crash ---

/// One step of a log workload.
#[derive(Arbitrary, Clone, Copy, Debug)]
pub enum LogStep {
    /// Append 1..=3 records of about `len` bytes, waiting for durability or not.
    Append {
        /// Payload length (bounded).
        len: u16,
        /// Records in the append (1..=3 used).
        records: u8,
        /// Wait until durable.
        durable: bool,
    },
    /// Make everything appended durable.
    Sync,
}

/// One crash cycle of a log workload.
#[derive(Arbitrary, Clone, Debug)]
pub struct LogCycle {
    /// The steps before the crash.
    pub steps: Vec<LogStep>,
    /// The device fault of the cycle.
    pub fault: FuzzFault,
    /// What survives the crash.
    pub plan: FuzzCrashPlan,
    /// Crashes during recovery: after this many device operations each.
    pub recovery_crashes: Vec<u8>,
}

/// A whole `log_crash` input.
#[derive(Arbitrary, Clone, Debug)]
pub struct LogCrashPlan {
    /// The device's seed.
    pub seed: u64,
    /// The cycles.
    pub cycles: Vec<LogCycle>,
}

fn payload(lsn_hint: u64, cycle: usize, len: usize) -> Vec<u8> {
    let mut state = lsn_hint.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (cycle as u64) ^ 1;
    (0..len.max(1))
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

/// Runs a `log_crash` input: appends, syncs and crashes with a fault plan per crash
/// (faults 1-11, and 12 when recovery is crashed), checked against what was acknowledged.
/// Panics on a broken promise.
/// Returns how many recoveries it checked.
pub fn check_log_crash(data: &[u8]) -> u64 {
    let Ok(plan) = LogCrashPlan::arbitrary(&mut Unstructured::new(data)) else {
        return 0;
    };
    run_log_plan(&plan)
}

/// [`check_log_crash`] on a decoded plan.
pub fn run_log_plan(plan: &LogCrashPlan) -> u64 {
    let mut checked = 0;
    let device = Arc::new(SimDevice::new(plan.seed));
    device.set_deterministic(true);
    let mut log = Log::create(
        Arc::clone(&device),
        CreateOptions {
            segment_size_bytes: 256 * 1024,
        },
    )
    .expect("creating a log on a fresh device");
    // LSN -> payloads ever appended with it; LSN -> payload acknowledged durable.
    let mut appended: BTreeMap<Lsn, Vec<Vec<u8>>> = BTreeMap::new();
    let mut acked: BTreeMap<Lsn, Vec<u8>> = BTreeMap::new();
    let mut damaged = false;
    for (c, cycle) in plan.cycles.iter().take(CYCLES_MAX).enumerate() {
        device.set_faults(cycle.fault.config(&[]));
        damaged |= cycle.fault.is_damage() || cycle.plan.is_damage();
        let mut pending: Vec<(Lsn, Vec<u8>)> = Vec::new();
        for step in cycle.steps.iter().take(OPS_MAX) {
            match *step {
                LogStep::Append {
                    len,
                    records,
                    durable,
                } => {
                    let count = usize::from(records % 3) + 1;
                    let next = log.last_lsn() + 1;
                    let payloads: Vec<Vec<u8>> = (0..count)
                        .map(|i| payload((next + i as u64).get(), c, usize::from(len % 5000)))
                        .collect();
                    let new: Vec<NewRecord<'_>> = payloads
                        .iter()
                        .map(|p| NewRecord {
                            txn_id: TxnId(1),
                            step: 1,
                            kind: 1,
                            payload: p,
                        })
                        .collect();
                    let Ok(last) = log.append(&new) else { break };
                    let first = last + 1 - count as u64;
                    for (i, p) in payloads.into_iter().enumerate() {
                        appended
                            .entry(first + i as u64)
                            .or_default()
                            .push(p.clone());
                        pending.push((first + i as u64, p));
                    }
                    if durable {
                        if log.wait_durable(last).is_err() {
                            break;
                        }
                        acked.extend(pending.drain(..));
                    }
                }
                LogStep::Sync => {
                    if log.sync().is_err() {
                        break;
                    }
                    acked.extend(pending.drain(..));
                }
            }
        }
        drop(log);
        device.crash();
        device.restart(&cycle.plan.plan(&[]));
        for &at in cycle.recovery_crashes.iter().take(RECOVERY_CRASHES_MAX) {
            device.set_faults(FaultConfig {
                crash_after_ops: Some(u64::from(at) + 1),
                ..FaultConfig::default()
            });
            if let Ok((reopened, _)) =
                open_log(Arc::clone(&device), RecoveryOptions::default(), |_| {})
            {
                drop(reopened);
            }
            device.crash();
            device.restart(&CrashPlan::random_unsynced(&mut rand_chacha_seed(
                plan.seed, c,
            )));
        }
        device.set_faults(FaultConfig::default());
        let mut records = Vec::new();
        let opened = open_log(Arc::clone(&device), RecoveryOptions::default(), |r| {
            records.push((r.lsn, r.payload.clone()))
        });
        let (reopened, report) = match opened {
            Ok(opened) => opened,
            Err(e) if damaged && is_explicit_damage(&e) => return checked,
            Err(e) => panic!("cycle {c}: recovery failed without damage: {e}"),
        };
        // LSNs contiguous; nothing that was never appended with its LSN.
        for pair in records.windows(2) {
            assert_eq!(pair[0].0 + 1, pair[1].0, "cycle {c}: LSNs not contiguous");
        }
        for (lsn, bytes) in &records {
            assert!(
                appended.get(lsn).is_some_and(|all| all.contains(bytes)),
                "cycle {c}: LSN {lsn} holds bytes never appended with it"
            );
        }
        if !damaged {
            // The log is never released here, so it starts at LSN 1: every acknowledged
            // record must be read back.
            let read: BTreeMap<Lsn, &Vec<u8>> = records.iter().map(|(l, b)| (*l, b)).collect();
            for (lsn, bytes) in &acked {
                assert_eq!(
                    read.get(lsn).copied(),
                    Some(bytes),
                    "cycle {c}: acknowledged LSN {lsn} lost or changed"
                );
            }
        }
        // From now on the log's history is what was read back.
        let next = report.tail.next_lsn;
        appended.retain(|lsn, _| *lsn < next);
        acked.retain(|lsn, _| *lsn < next);
        for (lsn, bytes) in records {
            appended.insert(lsn, vec![bytes]);
        }
        log = reopened;
        checked += 1;
    }
    checked
}

fn rand_chacha_seed(seed: u64, cycle: usize) -> rand_chacha::ChaCha8Rng {
    <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(seed ^ (cycle as u64) << 32)
}

fn is_explicit_damage(error: &LogError) -> bool {
    matches!(
        error,
        LogError::Corrupt { .. }
            | LogError::BadMeta { .. }
            | LogError::MissingSegment { .. }
            | LogError::Io(_)
            | LogError::Failed { .. }
    )
}

// --- fs_crash ---

/// One file operation of a fuzz plan, decoded into an [`FsOp`] over the scenario's
/// namespace.
#[derive(Arbitrary, Clone, Copy, Debug)]
pub struct FuzzFsOp {
    /// The simulated client issuing it (its request keys).
    pub client: u8,
    /// Which operation.
    pub kind: u8,
    /// Directory and name choices.
    pub a: u8,
    /// Second name choice.
    pub b: u8,
    /// Second directory choice.
    pub c: u8,
    /// Flags, mode or size choice.
    pub d: u16,
    /// Offset of a write.
    pub offset: u32,
    /// Length of a write (bounded).
    pub len: u32,
    /// Wait until durable.
    pub durable: bool,
}

impl FuzzFsOp {
    /// The operation it stands for.
    pub fn op(&self) -> FsOp {
        let dir = |x: u8| FS_SCENARIO_DIRS[usize::from(x) % FS_SCENARIO_DIRS.len()].to_vec();
        let name = |x: u8| FS_SCENARIO_NAMES[usize::from(x) % FS_SCENARIO_NAMES.len()].to_vec();
        let path = |x: u8, y: u8| super::fs::join(&dir(x), &name(y));
        match self.kind % 10 {
            0 => FsOp::Create(dir(self.a), name(self.b)),
            1 => FsOp::Mkdir(dir(self.a), name(self.b)),
            2 => FsOp::Symlink(dir(self.a), name(self.b), b"../t".to_vec()),
            3 => FsOp::Link(path(self.a, self.b), dir(self.c), name(self.d as u8)),
            4 => FsOp::Unlink(dir(self.a), name(self.b)),
            5 => FsOp::Rmdir(dir(self.a), name(self.b)),
            6 => FsOp::Rename(
                dir(self.a),
                name(self.b),
                dir(self.c),
                name(self.d as u8),
                smlog::RenameFlags {
                    no_replace: self.d & 0x100 != 0,
                    exchange: self.d & 0x200 != 0 && self.d & 0x100 == 0,
                },
            ),
            7 => FsOp::Write(
                path(self.a, self.b),
                u64::from(self.offset % 300_000),
                (self.len % 300_000) as usize,
                u64::from(self.d) << 32 | u64::from(self.offset),
            ),
            8 => FsOp::Truncate(path(self.a, self.b), u64::from(self.offset % 200_000)),
            _ => FsOp::Chmod(path(self.a, self.b), u32::from(self.d) & 0o7777),
        }
    }
}

/// One crash cycle of a file-system plan.
#[derive(Arbitrary, Clone, Debug)]
pub struct FsCycle {
    /// Operations before the crash.
    pub ops: Vec<FuzzFsOp>,
    /// Checkpoint before this operation, if any.
    pub checkpoint_at: Option<u8>,
    /// Make every step durable on its own this cycle.
    pub steps: bool,
    /// The device fault of the cycle.
    pub fault: FuzzFault,
    /// What survives the crash.
    pub plan: FuzzCrashPlan,
    /// Crashes during recovery: after this many device operations each.
    pub recovery_crashes: Vec<u8>,
}

/// A whole `fs_crash` input.
#[derive(Arbitrary, Clone, Debug)]
pub struct FsCrashPlan {
    /// The device's seed.
    pub seed: u64,
    /// The cycles.
    pub cycles: Vec<FsCycle>,
}

/// The choices of a decoded plan.
#[derive(Debug)]
pub struct FsPlanChoices {
    cycles: Vec<FsCycle>,
    cycle: usize,
    op: usize,
    recovery_crashes: usize,
    crash_plans: usize,
    spared: Vec<String>,
}

impl FsPlanChoices {
    fn current(&self) -> Option<&FsCycle> {
        self.cycles.get(self.cycle)
    }
}

impl Choices<FsScenario> for FsPlanChoices {
    fn cycle_faults(&mut self, _faults: &Faults) -> FaultConfig {
        self.op = 0;
        self.recovery_crashes = 0;
        self.crash_plans = 0;
        self.current()
            .map_or_else(FaultConfig::default, |c| c.fault.config(&self.spared))
    }
    fn crash_plan(&mut self, _faults: &Faults) -> CrashPlan {
        self.crash_plans += 1;
        match self.current() {
            // The first crash of a cycle follows the plan; those during recovery lose
            // what was unsynced.
            Some(c) if self.crash_plans == 1 => c.plan.plan(&self.spared),
            _ => CrashPlan::power_loss(),
        }
    }
    fn ops_in_cycle(&mut self, _max: u64) -> u64 {
        self.current()
            .map_or(0, |c| c.ops.len().min(OPS_MAX) as u64)
    }
    fn checkpoint_now(&mut self) -> bool {
        self.current()
            .and_then(|c| c.checkpoint_at)
            .is_some_and(|at| usize::from(at) == self.op)
    }
    fn sync_now(&mut self) -> bool {
        false
    }
    fn next_op(&mut self, _scenario: &FsScenario, _model: &Model) -> Option<(FsOp, Durability)> {
        let op = *self.current()?.ops.get(self.op)?;
        self.op += 1;
        let durability = if op.durable {
            Durability::Sync
        } else {
            Durability::Async
        };
        Some((op.op(), durability))
    }
    fn steps_mode(&mut self, _faults: &Faults) -> bool {
        self.current().is_some_and(|c| c.steps)
    }
    fn recovery_crash(&mut self, _faults: &Faults) -> Option<u64> {
        let cycle = self.current()?;
        let at = *cycle
            .recovery_crashes
            .iter()
            .take(RECOVERY_CRASHES_MAX)
            .nth(self.recovery_crashes)?;
        self.recovery_crashes += 1;
        Some(u64::from(at) + 1)
    }
    fn misreads(&mut self, _faults: &Faults) -> bool {
        let misreads = self
            .current()
            .is_some_and(|c| c.fault == FuzzFault::MisdirectedReads);
        // The recovery that ends the cycle is the last choice of the cycle.
        self.cycle += 1;
        misreads
    }
}

/// Runs an `fs_crash` input: file operations from several simulated clients, crashes with
/// fault plans (faults 1-14), crashes during recovery, checked against the reference model.
/// Panics on a broken promise.
/// Returns what it checked.
pub fn check_fs_crash(data: &[u8]) -> super::Stats {
    let Ok(plan) = FsCrashPlan::arbitrary(&mut Unstructured::new(data)) else {
        return super::Stats::default();
    };
    run_fs_plan(&plan)
}

/// [`check_fs_crash`] on a decoded plan.
pub fn run_fs_plan(plan: &FsCrashPlan) -> super::Stats {
    let cycles: Vec<FsCycle> = plan.cycles.iter().take(CYCLES_MAX).cloned().collect();
    let damage = cycles
        .iter()
        .any(|c| c.fault.is_damage() || c.plan.is_damage());
    let config = Config {
        cycles: cycles.len() as u64,
        ops_per_cycle_max: OPS_MAX as u64,
        faults: Faults {
            damage,
            ..Faults::default()
        },
        op_limit: None,
    };
    let mut choices = FsPlanChoices {
        cycles,
        cycle: 0,
        op: 0,
        recovery_crashes: 0,
        crash_plans: 0,
        // Nothing spared: data blocks carry checksums.
        spared: Vec::new(),
    };
    match run_with(&FsScenario, plan.seed, &config, &mut choices) {
        Ok(stats) => stats,
        Err(failure) => panic!("{failure}\n{}", failure.history.join("\n")),
    }
}
