//! The run loop: a machine's steps appended to the log, then applied (the write-ahead
//! rule), a commit or a rollback at the end; and what recovery calls to finish the
//! transactions a crash left in flight.

use std::sync::Arc;

use crate::constants::BLOCK_SIZE_BYTES;
use crate::error::{CorruptKind, FsError};
use crate::io::{AlignedBuf, Device};
use crate::log::{LogError, Lsn, NewRecord};
use crate::store::{DataFile, EntryId, Op, Outcome, RequestKey, Run, TxnResult};
use crate::txn::{apply_logged, Context, FileTxn, Machine, StepRecord, Transition, TxnRecord};

use super::{Active, Durability, Engine, Guard, Inner, TxnOptions};
use crate::ids::TxnId;

/// A transaction being run.
struct Running {
    txn_id: TxnId,
    key: Option<RequestKey>,
    entry: Option<EntryId>,
    machine: FileTxn,
    step_no: u32,
    /// Applied steps: (LSN, undo), oldest first.
    steps: Vec<(Lsn, Vec<Op>)>,
    /// Resumed by recovery: a commit is logged even without a further step.
    resumed: bool,
}

impl<D: Device> Engine<D> {
    /// Runs a transaction. One refused for space runs again once after a checkpoint taken
    /// now when that checkpoint can give space back: blocks freed since the last one (the
    /// durable image still names them, so they are not reused before a checkpoint), or log
    /// segments it releases when the host file system had no room for new ones. Space a
    /// delete freed is usable at once, not only after the next timed checkpoint.
    pub(super) fn run(&self, machine: FileTxn, options: TxnOptions) -> Result<TxnResult, FsError> {
        match self.run_once(machine.clone(), options) {
            Err(FsError::NoSpace(why))
                if self.lock().store.meta.space.quarantined_blocks() > 0
                    || self.shared.log.out_of_space() =>
            {
                match self.checkpoint() {
                    Ok(_) => self.run_once(machine, options),
                    // The checkpoint needs blocks for dirty data too; without them the
                    // first answer stands.
                    Err(FsError::NoSpace(_)) => Err(FsError::NoSpace(why)),
                    Err(e) => Err(e),
                }
            }
            other => other,
        }
    }

    fn run_once(&self, machine: FileTxn, options: TxnOptions) -> Result<TxnResult, FsError> {
        let mut inner = self.lock_usable()?;
        if let Some(key) = options.key {
            if let Some(Outcome::Committed(result)) = inner.store.meta.keys.get(&key) {
                // A retransmission is answered once the first is durable, as the first
                // would have been: it may arrive while the first still waits.
                if options.durability == Durability::Sync {
                    let lsn = inner.store.meta.applied_lsn;
                    drop(inner);
                    self.wait_durable(lsn)?;
                }
                return Ok(result);
            }
        }
        let txn_id = inner.store.meta.next_txn_id;
        inner.store.meta.next_txn_id += 1;
        let mut running = Running {
            txn_id,
            key: options.key,
            entry: options.entry,
            machine,
            step_no: 0,
            steps: Vec::new(),
            resumed: false,
        };
        let (mut inner, outcome) = self.drive(inner, &mut running);
        // What the caller waits for (with `Durability::Sync`) and then gets.
        let (wait_lsn, answer) = match outcome {
            Ok((result, lsn)) => (lsn, Ok(result)),
            Err(error) if is_transaction_failure(&error) && inner.stopped.is_none() => {
                match self.fail_transaction(&mut inner, &running, &error) {
                    Ok(lsn) => (lsn, Err(error)),
                    Err(failure) => return Err(self.stop_in(&mut inner, failure)),
                }
            }
            Err(error) => return Err(self.stop_in(&mut inner, error)),
        };
        drop(inner);
        if options.durability == Durability::Sync {
            self.wait_durable(wait_lsn)?;
        }
        answer
    }

    /// A transaction failed with a refusal or a data-file error: it is rolled back (when
    /// it logged anything, or carries a request key whose outcome must be remembered).
    /// Returns the LSN a sync caller waits for: the abort's, or, for a refusal that logged
    /// nothing, what the refusal observed (so the answer holds after a crash).
    fn fail_transaction(
        &self,
        inner: &mut Inner<D>,
        running: &Running,
        error: &FsError,
    ) -> Result<Lsn, FsError> {
        let undo: Vec<(Lsn, Vec<Op>)> = running.steps.iter().rev().cloned().collect();
        if undo.is_empty() && running.key.is_none() {
            inner.active.remove(&running.txn_id);
            return Ok(inner.store.meta.applied_lsn);
        }
        let abort = TxnRecord::Abort {
            key: running.key,
            entry: running.entry,
            errno: error.errno(),
        };
        self.roll_back_locked(inner, running.txn_id, running.step_no, &undo, abort)
    }

    fn wait_durable(&self, lsn: Lsn) -> Result<(), FsError> {
        if lsn == Lsn(0) {
            return Ok(());
        }
        self.shared
            .log
            .wait_durable(lsn)
            .map_err(|e| self.stop(e.into()))
    }

    /// The write-ahead rule, in one place: `records` (the first numbered `first_step_no`)
    /// are appended to the log, then each is applied to the store at its LSN by
    /// [`apply_logged`] (which recovery's redo calls too), never before. Returns the LSN
    /// of the last. (A checkpoint keeps the other half of the rule: it writes back nothing
    /// past the durable LSN.)
    fn log_and_apply(
        &self,
        inner: &mut Inner<D>,
        txn_id: TxnId,
        first_step_no: u32,
        records: &[TxnRecord],
    ) -> Result<Lsn, FsError> {
        assert!(!records.is_empty());
        let last_lsn = self.append(inner, txn_id, first_step_no, records)?;
        let first_lsn = last_lsn + 1 - records.len() as u64;
        assert!(first_lsn > Lsn(0), "the log numbers records from 1");
        let keys_max = self.shared.options.request_keys_max;
        for (lsn, record) in (first_lsn.get()..).map(Lsn).zip(records) {
            apply_logged(&mut inner.store, record, lsn, keys_max)?;
        }
        Ok(last_lsn)
    }

    fn append(
        &self,
        inner: &mut Inner<D>,
        txn_id: TxnId,
        first_step_no: u32,
        records: &[TxnRecord],
    ) -> Result<Lsn, FsError> {
        let payloads: Vec<Vec<u8>> = records.iter().map(TxnRecord::encode).collect();
        let new: Vec<NewRecord<'_>> = records
            .iter()
            .zip(&payloads)
            .enumerate()
            .map(|(i, (record, payload))| NewRecord {
                txn_id,
                step: first_step_no + i as u32,
                kind: record.kind(),
                payload,
            })
            .collect();
        let appended = if uses_reserve(first_step_no, records) {
            self.shared.log.append_reserved(&new)
        } else {
            self.shared.log.append(&new)
        };
        let lsn = match appended {
            Ok(lsn) => lsn,
            Err(LogError::NoSpace) => {
                return Err(FsError::NoSpace(
                    "the host file system has no room for the log's next segment",
                ))
            }
            Err(e) => return Err(e.into()),
        };
        inner.store.meta.applied_lsn = lsn;
        if self.shared.options.sync_every_step {
            self.shared.log.wait_durable(lsn)?;
        }
        Ok(lsn)
    }

    /// Runs `running` until it is done; returns the lock (it may have been released during
    /// a large write's data IO) and the result with the commit's LSN.
    fn drive<'a>(
        &'a self,
        mut inner: Guard<'a, D>,
        running: &mut Running,
    ) -> (Guard<'a, D>, Result<(TxnResult, Lsn), FsError>) {
        loop {
            let context = Context {
                reserved_blocks: inner.store.cache.dirty.len() as u64,
                open: Some(&inner.open),
                cache: Some(&inner.store.cache),
            };
            let transition = match running.machine.next(&inner.store.meta, &context) {
                Ok(t) => t,
                Err(e) => return (inner, Err(e)),
            };
            let done = match transition {
                Transition::Done(result) => self.commit(&mut inner, running, result).map(Some),
                Transition::Step {
                    next,
                    redo,
                    undo,
                    result,
                } => self.take_step(&mut inner, running, next, redo, undo, result),
                Transition::WriteData {
                    next,
                    runs,
                    data_offset,
                } => {
                    let written;
                    (inner, written) = self.write_data(inner, running, &runs, data_offset);
                    written.map(|()| {
                        running.machine = next;
                        None
                    })
                }
            };
            match done {
                Ok(None) => {}
                Ok(Some(done)) => return (inner, Ok(done)),
                Err(e) => return (inner, Err(e)),
            }
        }
    }

    /// The machine is done: its commit is logged (unless it logged nothing and has no key
    /// to remember). A transaction with nothing to log still observed what is logged
    /// before it: a sync caller waits for that.
    fn commit(
        &self,
        inner: &mut Inner<D>,
        running: &mut Running,
        result: TxnResult,
    ) -> Result<(TxnResult, Lsn), FsError> {
        let mut lsn = inner.store.meta.applied_lsn;
        if running.step_no > 0 || running.key.is_some() || running.resumed {
            let commit = TxnRecord::Commit {
                key: running.key,
                entry: running.entry,
                result,
            };
            running.step_no += 1;
            lsn = self.log_and_apply(inner, running.txn_id, running.step_no, &[commit])?;
        }
        inner.active.remove(&running.txn_id);
        Ok((result, lsn))
    }

    /// Logs and applies one step (with the commit when it is the last); returns the result
    /// and the commit's LSN when the transaction is done.
    fn take_step(
        &self,
        inner: &mut Inner<D>,
        running: &mut Running,
        next: FileTxn,
        redo: Vec<Op>,
        undo: Vec<Op>,
        result: Option<TxnResult>,
    ) -> Result<Option<(TxnResult, Lsn)>, FsError> {
        self.hold_room_for(inner, &redo)?;
        let allocated_blocks = allocated_blocks(&redo);
        running.step_no += 1;
        let mut records = vec![TxnRecord::Step(StepRecord {
            machine: next.clone(),
            key: running.key,
            entry: running.entry,
            redo,
            undo,
        })];
        if let Some(result) = result {
            records.push(TxnRecord::Commit {
                key: running.key,
                entry: running.entry,
                result,
            });
        }
        // The commit's number is taken with the step's, before either is applied: a
        // rollback after a failed apply numbers its records after both.
        let first_step_no = running.step_no;
        running.step_no += records.len() as u32 - 1;
        let last_lsn = self.log_and_apply(inner, running.txn_id, first_step_no, &records)?;
        let step_lsn = last_lsn + 1 - records.len() as u64;
        let TxnRecord::Step(step) = records.swap_remove(0) else {
            unreachable!("the first record is the step");
        };
        let active = inner.active.entry(running.txn_id).or_insert(Active {
            first_lsn: step_lsn,
            allocated_blocks: 0,
        });
        active.allocated_blocks = allocated_blocks;
        running.steps.push((step_lsn, step.undo));
        running.machine = next;
        let Some(result) = result else {
            return Ok(None);
        };
        inner.active.remove(&running.txn_id);
        Ok(Some((result, last_lsn)))
    }

    /// Blocks a step allocates now, and dirty data's blocks at the next checkpoint: the
    /// data file holds room for them all on the host before the step is taken, so no later
    /// write of them fails for space.
    fn hold_room_for(&self, inner: &Inner<D>, redo: &[Op]) -> Result<(), FsError> {
        let wanted: u64 = redo
            .iter()
            .map(|op| match op {
                Op::WriteInline { offset, bytes, .. } if !bytes.is_empty() => {
                    let block = BLOCK_SIZE_BYTES as u64;
                    (offset + bytes.len() as u64).div_ceil(block) - offset / block
                }
                Op::AllocBlocks { runs } => runs.iter().map(|r| r.len).sum(),
                // At most every block of the range becomes a dirty block of zeros.
                Op::ZeroBlocks { count, .. } => *count,
                // The partial first and last blocks may become dirty.
                Op::PunchData { .. } | Op::TruncateData { .. } => 2,
                _ => 0,
            })
            .sum();
        if wanted == 0 {
            return Ok(());
        }
        let dirty = inner.store.cache.dirty.len() as u64;
        let hold = inner.store.meta.space.blocks_to_hold(dirty + wanted);
        self.shared.data.ensure_len(hold)
    }

    /// A large write's data goes to its newly allocated blocks, durably, outside the lock.
    fn write_data<'a>(
        &'a self,
        inner: Guard<'a, D>,
        running: &Running,
        runs: &[Run],
        data_offset: usize,
    ) -> (Guard<'a, D>, Result<(), FsError>) {
        let FileTxn::Write(write) = &running.machine else {
            unreachable!("only a write machine asks to write data");
        };
        let data = Arc::clone(&write.data);
        // Room for these blocks and for every dirty block's, at the next checkpoint, on
        // the host.
        let dirty = inner.store.cache.dirty.len() as u64;
        let hold = inner.store.meta.space.blocks_to_hold(dirty);
        if let Err(e) = self.shared.data.ensure_len(hold) {
            return (inner, Err(e));
        }
        drop(inner);
        let written = write_runs(&self.shared.data, runs, &data[data_offset..]);
        let inner = self.lock();
        if let Err(e) = written {
            return (inner, Err(e));
        }
        if let Some(why) = &inner.stopped {
            let e = FsError::Stopped(why.clone());
            return (inner, Err(e));
        }
        (inner, Ok(()))
    }

    /// Logs and applies a compensation for each step of `undo` (newest first), then
    /// `abort` (a [`TxnRecord::Abort`]).
    fn roll_back_locked(
        &self,
        inner: &mut Inner<D>,
        txn_id: TxnId,
        mut step_no: u32,
        undo: &[(Lsn, Vec<Op>)],
        abort: TxnRecord,
    ) -> Result<Lsn, FsError> {
        for (i, (undoes_lsn, ops)) in undo.iter().enumerate() {
            let undo_next_lsn = undo.get(i + 1).map_or(Lsn(0), |(lsn, _)| *lsn);
            step_no += 1;
            let record = TxnRecord::Compensation {
                undoes_lsn: *undoes_lsn,
                redo: ops.clone(),
                undo_next_lsn,
            };
            self.log_and_apply(inner, txn_id, step_no, &[record])?;
        }
        step_no += 1;
        let lsn = self.log_and_apply(inner, txn_id, step_no, &[abort])?;
        inner.active.remove(&txn_id);
        Ok(lsn)
    }

    /// Recovery: rolls back transaction `txn_id`, undoing `undo` (LSN and undo of each
    /// applied step not yet compensated, newest first), then logging its abort.
    #[doc(hidden)]
    pub fn roll_back(
        &self,
        txn_id: TxnId,
        key: Option<RequestKey>,
        last_step_no: u32,
        undo: &[(Lsn, Vec<Op>)],
    ) -> Result<(), FsError> {
        let mut inner = self.lock_usable()?;
        // Rolled back, its replicated-log entry is not applied: the abort names none.
        let abort = TxnRecord::Abort {
            key,
            entry: None,
            errno: 0,
        };
        let result = self.roll_back_locked(&mut inner, txn_id, last_step_no, undo, abort);
        if let Err(e) = &result {
            inner.stopped.get_or_insert_with(|| e.to_string());
        }
        result.map(|_| ())
    }

    /// Recovery: runs the remaining steps of transaction `txn_id` from `machine` (its state
    /// after its last logged step) and commits it, with its request key and replicated-log
    /// entry. Returns the steps logged.
    #[doc(hidden)]
    pub fn resume(
        &self,
        txn_id: TxnId,
        key: Option<RequestKey>,
        entry: Option<EntryId>,
        last_step_no: u32,
        machine: FileTxn,
    ) -> Result<u32, FsError> {
        let inner = self.lock_usable()?;
        let mut running = Running {
            txn_id,
            key,
            entry,
            machine,
            step_no: last_step_no,
            steps: Vec::new(),
            resumed: true,
        };
        let (mut inner, outcome) = self.drive(inner, &mut running);
        match outcome {
            Ok(_) => Ok(running.step_no - last_step_no),
            Err(e) => {
                let e = FsError::corrupt(
                    CorruptKind::Resume,
                    format!(
                        "resuming transaction {txn_id} ({}) failed: {e}",
                        running.machine.describe()
                    ),
                );
                inner.stopped.get_or_insert_with(|| e.to_string());
                Err(e)
            }
        }
    }

    /// Recovery: makes transaction ids continue above `max_seen`.
    #[doc(hidden)]
    pub fn advance_txn_id(&self, max_seen: TxnId) {
        let mut inner = self.lock();
        let next = &mut inner.store.meta.next_txn_id;
        *next = (*next).max(max_seen.next());
    }
}

/// Whether an append of `records` (the first numbered `first_step_no`) may use the log's
/// reserve on a full host file system: work that frees space or finishes work begun (a
/// later step, a commit or rollback records alone, a delete, rename or setattr). New work
/// that fills space (the first step of a create, link or write, even with its commit) is
/// refused first.
fn uses_reserve(first_step_no: u32, records: &[TxnRecord]) -> bool {
    let first_step = records.iter().find_map(|record| match record {
        TxnRecord::Step(step) => Some(&step.machine),
        _ => None,
    });
    first_step_no > 1
        || first_step.is_none_or(|machine| {
            matches!(
                machine,
                FileTxn::Unlink(_) | FileTxn::Reclaim(_) | FileTxn::SetAttr(_) | FileTxn::Rename(_)
            )
        })
}

/// Blocks a step's redo takes from the free space.
fn allocated_blocks(redo: &[Op]) -> u64 {
    redo.iter()
        .map(|op| match op {
            Op::AllocBlocks { runs } => runs.iter().map(|r| r.len).sum(),
            _ => 0,
        })
        .sum()
}

/// A transaction that fails with this error is rolled back and the engine goes on: a
/// refusal, or a data-file write that failed (its blocks are never linked).
fn is_transaction_failure(error: &FsError) -> bool {
    error.is_refusal() || matches!(error, FsError::Io(_))
}

/// Writes `data` (whole blocks, in order) to `runs` and makes it durable.
fn write_runs<D: Device>(
    data_file: &DataFile<D>,
    runs: &[Run],
    data: &[u8],
) -> Result<(), FsError> {
    let mut offset = 0usize;
    for run in runs {
        let len = run.len as usize * BLOCK_SIZE_BYTES;
        let mut buf = AlignedBuf::new_zeroed(len);
        buf.copy_from_slice(&data[offset..offset + len]);
        data_file.write_blocks(run.start, &buf)?;
        offset += len;
    }
    data_file.sync()
}

#[cfg(test)]
mod reserve_tests {
    use super::*;
    use crate::ids::Ino;
    use crate::store::Time;
    use crate::txn::machines::{Reclaim, Write, WriteState};

    fn step(machine: FileTxn) -> TxnRecord {
        TxnRecord::Step(StepRecord {
            machine,
            key: None,
            entry: None,
            redo: Vec::new(),
            undo: Vec::new(),
        })
    }

    /// New work that fills space never takes the reserve kept for work that frees it.
    #[test]
    fn only_work_that_frees_space_or_finishes_work_uses_the_log_reserve() {
        let commit = TxnRecord::Commit {
            key: None,
            entry: None,
            result: TxnResult::Done,
        };
        let reclaim = FileTxn::Reclaim(Reclaim {
            ino: Ino(5),
            freed: false,
        });
        let write = FileTxn::Write(Write {
            ino: Ino(5),
            offset: 0,
            len: 0,
            now: Time { secs: 0, nanos: 0 },
            state: WriteState::Start,
            data: Arc::new(Vec::new()),
        });
        // A write's first step, even with its commit, fills space: never the reserve.
        assert!(!uses_reserve(1, &[step(write.clone())]));
        assert!(!uses_reserve(1, &[step(write.clone()), commit.clone()]));
        assert!(uses_reserve(2, &[step(write)]));
        // A delete's first step, alone or with its commit.
        assert!(uses_reserve(1, &[step(reclaim.clone())]));
        assert!(uses_reserve(1, &[step(reclaim.clone()), commit.clone()]));
        // A later step of anything, and a commit alone.
        assert!(uses_reserve(2, &[step(reclaim)]));
        assert!(uses_reserve(3, std::slice::from_ref(&commit)));
        assert!(uses_reserve(1, std::slice::from_ref(&commit)));
    }
}
