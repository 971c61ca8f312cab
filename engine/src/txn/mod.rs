//! File transactions as logged state machines.
//!
//! A machine ([`Machine`]) is an enum of states and a transition function
//! ([`Machine::next`]): from its state and the store's metadata it computes the next step,
//! with the step's **redo** (the ops that make its outcome) and **undo** (the ops that
//! restore the prior values). The engine appends each step to the log *before* it applies
//! the redo, then asks the machine again, until the machine is done; the last step and the
//! commit record share one append, so they are durable together.
//!
//! Each machine names its **point of no return** ([`Machine::past_point_of_no_return`]).
//! After a crash, recovery resumes a transaction whose last logged step is past it (the
//! machine, decoded from that step, computes the remaining steps against the recovered
//! store) and rolls back any other: it applies the undo of each applied step in reverse,
//! logging each as a compensation record that names the next record to undo, then an abort
//! record. File operations are one family of machines ([`FileTxn`], in [`machines`]).
//!
//! Record payloads are [`TxnRecord`]s, encoded with postcard (docs/FORMAT.md, "File
//! transactions"); the log record's kind is [`TxnRecord::kind`].

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::error::{CorruptKind, FsError};
use crate::ids::Lsn;
use crate::ids::TxnId;
use crate::io::Device;
use crate::store::{EntryId, FsMeta, Ino, Op, Outcome, RequestKey, Run, Store, TxnResult};

pub mod machines;

pub use machines::{FileTxn, NewNode, RenameFlags, SetAttrChanges};

/// Log record kinds of file transactions.
pub mod kind {
    /// A step: the machine's state after it, its redo and its undo.
    pub const STEP: u16 = 1;
    /// The transaction committed.
    pub const COMMIT: u16 = 2;
    /// The undo of one step, applied during a rollback.
    pub const COMPENSATION: u16 = 3;
    /// The transaction was rolled back completely.
    pub const ABORT: u16 = 4;
}

/// One step of a transaction as logged.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepRecord {
    /// The machine in the state this step reaches (its control values).
    pub machine: FileTxn,
    /// The caller's request key (every step carries it, so any one names the request).
    pub key: Option<RequestKey>,
    /// The replicated-log entry the transaction applies (every step carries it, so a
    /// transaction recovery resumes still commits it).
    pub entry: Option<EntryId>,
    /// The outcome.
    pub redo: Vec<Op>,
    /// The prior values. Empty for a step taken after the point of no return (one that
    /// starts from a state past it): such a step is never undone.
    pub undo: Vec<Op>,
}

/// The payload of a file-transaction record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxnRecord {
    /// A step.
    Step(StepRecord),
    /// The transaction committed with this result.
    Commit {
        /// The caller's request key.
        key: Option<RequestKey>,
        /// The replicated-log entry it applies.
        entry: Option<EntryId>,
        /// What it returned.
        result: TxnResult,
    },
    /// The undo of the step at `undoes_lsn` was applied.
    Compensation {
        /// The step undone.
        undoes_lsn: Lsn,
        /// The ops applied (that step's undo), redone like any step's redo.
        redo: Vec<Op>,
        /// The next step to undo, 0 when none is left.
        undo_next_lsn: Lsn,
    },
    /// The transaction was rolled back; nothing of it remains.
    Abort {
        /// The caller's request key.
        key: Option<RequestKey>,
        /// The replicated-log entry whose outcome this failure is (`None` when recovery
        /// rolled the transaction back: its entry is then not applied).
        entry: Option<EntryId>,
        /// The errno it failed with (0: rolled back by recovery).
        errno: i32,
    },
}

impl TxnRecord {
    /// The log record kind of this payload.
    pub fn kind(&self) -> u16 {
        match self {
            TxnRecord::Step(_) => kind::STEP,
            TxnRecord::Commit { .. } => kind::COMMIT,
            TxnRecord::Compensation { .. } => kind::COMPENSATION,
            TxnRecord::Abort { .. } => kind::ABORT,
        }
    }

    /// Encodes the payload.
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_stdvec(self).expect("encoding into a Vec cannot fail")
    }

    /// Decodes the payload of a record of `kind`.
    pub fn decode(kind: u16, payload: &[u8]) -> Result<TxnRecord, FsError> {
        let record: TxnRecord = postcard::from_bytes(payload).map_err(|e| {
            FsError::corrupt(
                CorruptKind::Record,
                format!("undecodable transaction record: {e}"),
            )
        })?;
        if record.kind() != kind {
            return Err(FsError::corrupt(
                CorruptKind::Record,
                format!(
                    "record of kind {kind} holds a payload of kind {}",
                    record.kind()
                ),
            ));
        }
        Ok(record)
    }

    /// The ops to apply when this record is redone.
    pub fn redo(&self) -> &[Op] {
        match self {
            TxnRecord::Step(step) => &step.redo,
            TxnRecord::Compensation { redo, .. } => redo,
            TxnRecord::Commit { .. } | TxnRecord::Abort { .. } => &[],
        }
    }
}

/// The effect of a logged record on the store, and its one home: the runtime calls it for
/// each record right after appending it (append, then apply: the write-ahead rule), and
/// recovery for each record past the image. A step's or compensation's redo is applied to
/// the objects not already past `lsn` (so applying twice changes nothing), and a commit or
/// abort that carries a request key is remembered as that request's outcome, and one that
/// carries a replicated-log entry makes it the newest applied.
pub fn apply_logged<D: Device>(
    store: &mut Store<D>,
    record: &TxnRecord,
    lsn: Lsn,
    request_keys_max: usize,
) -> Result<(), FsError> {
    assert!(lsn > Lsn(0), "a logged record has an LSN");
    store.apply(record.redo(), lsn)?;
    let (key, entry, outcome) = match record {
        TxnRecord::Commit { key, entry, result } => (key, entry, Outcome::Committed(*result)),
        TxnRecord::Abort { key, entry, errno } => {
            (key, entry, Outcome::RolledBack { errno: *errno })
        }
        TxnRecord::Step(_) | TxnRecord::Compensation { .. } => return Ok(()),
    };
    if let Some(key) = key {
        store.meta.keys.record(*key, outcome, request_keys_max);
    }
    if let Some(entry) = entry {
        let applied = &mut store.meta.applied_entry;
        *applied = (*applied).max(Some(*entry));
    }
    Ok(())
}

/// What a machine does next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Transition<M> {
    /// Log and apply a step; the machine is then `next`. With `result`, this is the last
    /// step, logged together with the commit.
    Step {
        /// The machine after the step.
        next: M,
        /// The outcome.
        redo: Vec<Op>,
        /// The prior values (empty past the point of no return).
        undo: Vec<Op>,
        /// `Some` when this step ends the transaction.
        result: Option<TxnResult>,
    },
    /// Write `bytes` to the data blocks `runs` and make them durable, outside the engine
    /// lock; the machine is then `next`. Nothing is logged: the blocks are not linked yet.
    WriteData {
        /// The machine once the data is durable.
        next: M,
        /// Where.
        runs: Vec<Run>,
        /// First byte of the data within the machine's buffer.
        data_offset: usize,
    },
    /// The transaction is done without (further) steps.
    Done(TxnResult),
}

/// What a machine's transition function may consult besides the metadata.
#[derive(Clone, Copy, Debug, Default)]
pub struct Context<'a> {
    /// Data blocks the dirty cache will need at the next checkpoint (reserved).
    pub reserved_blocks: u64,
    /// Inodes a file server holds open (handle counts). An inode that loses its last
    /// name while open stays, with no name and no link, as an orphan until its last
    /// handle is released. Recovery runs with none open.
    pub open: Option<&'a HashMap<Ino, u32>>,
    /// The data cached (blocks held but not yet in the data file). Recovery runs with
    /// none.
    pub cache: Option<&'a crate::store::Cache>,
}

impl Context<'_> {
    /// Whether a file server holds `ino` open.
    pub fn is_open(&self, ino: Ino) -> bool {
        self.open.is_some_and(|open| open.contains_key(&ino))
    }
}

/// A logged state machine. See the module docs.
pub trait Machine: Sized + Clone {
    /// The next transition from the current state, or why the operation is refused.
    fn next(&self, meta: &FsMeta, context: &Context<'_>) -> Result<Transition<Self>, FsError>;
    /// Whether the state is past the point of no return (recovery resumes the transaction
    /// rather than rolling it back).
    fn past_point_of_no_return(&self) -> bool;
    /// The operation, for reports: `"rename"`.
    fn op_name(&self) -> &'static str;
    /// The state, for reports: `"SourceRemoved"`.
    fn state_name(&self) -> &'static str;
    /// The operation and its arguments, for reports.
    fn describe(&self) -> String;
}

/// A transaction seen in the log: its steps and how it ended, if it did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxnTrack {
    /// Transaction id.
    pub txn_id: TxnId,
    /// LSN of its first record.
    pub first_lsn: Lsn,
    /// The caller's request key.
    pub key: Option<RequestKey>,
    /// The replicated-log entry it applies.
    pub entry: Option<EntryId>,
    /// Its steps, in order: (LSN, step number, step).
    pub steps: Vec<(Lsn, u32, StepRecord)>,
    /// Compensation records: (LSN, the step undone).
    pub compensations: Vec<(Lsn, Lsn)>,
    /// After the last compensation: the next step to undo (0: none).
    pub undo_next_lsn: Option<Lsn>,
    /// How it ended.
    pub end: Option<TxnEnd>,
    /// The highest step number seen.
    pub last_step_no: u32,
}

/// How a transaction ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TxnEnd {
    /// Committed at this LSN with this result.
    Committed {
        /// The commit record's LSN.
        lsn: Lsn,
        /// The result.
        result: TxnResult,
    },
    /// Rolled back (abort record at this LSN).
    Aborted {
        /// The abort record's LSN.
        lsn: Lsn,
        /// The errno.
        errno: i32,
    },
}

/// What recovery does with a transaction in flight.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Decision {
    /// Past its point of no return: its remaining steps are run.
    Resume,
    /// Before it (or already rolling back): its applied steps are undone.
    RollBack,
}

impl TxnTrack {
    fn new(txn_id: TxnId, lsn: Lsn) -> TxnTrack {
        TxnTrack {
            txn_id,
            first_lsn: lsn,
            key: None,
            entry: None,
            steps: Vec::new(),
            compensations: Vec::new(),
            undo_next_lsn: None,
            end: None,
            last_step_no: 0,
        }
    }

    /// Adds the record at `lsn` with step number `step_no`.
    pub fn observe(&mut self, lsn: Lsn, step_no: u32, record: &TxnRecord) {
        self.last_step_no = self.last_step_no.max(step_no);
        match record {
            TxnRecord::Step(step) => {
                self.key = self.key.or(step.key);
                self.entry = self.entry.or(step.entry);
                self.steps.push((lsn, step_no, step.clone()));
            }
            TxnRecord::Commit { key, entry, result } => {
                self.key = self.key.or(*key);
                self.entry = self.entry.or(*entry);
                self.end = Some(TxnEnd::Committed {
                    lsn,
                    result: *result,
                });
            }
            TxnRecord::Compensation {
                undoes_lsn,
                undo_next_lsn,
                ..
            } => {
                self.compensations.push((lsn, *undoes_lsn));
                self.undo_next_lsn = Some(*undo_next_lsn);
            }
            TxnRecord::Abort { key, errno, .. } => {
                self.key = self.key.or(*key);
                self.end = Some(TxnEnd::Aborted { lsn, errno: *errno });
            }
        }
    }

    /// The machine as of the last step.
    pub fn machine(&self) -> Option<&FileTxn> {
        self.steps.last().map(|(_, _, s)| &s.machine)
    }

    /// What recovery does with it (for one that has not ended). The decision table:
    ///
    /// | compensations logged | last step past the point of no return | decision |
    /// |---|---|---|
    /// | yes | any | roll back (continue the rollback) |
    /// | no | yes | resume |
    /// | no | no (or no step) | roll back |
    pub fn decision(&self) -> Decision {
        decide(
            !self.compensations.is_empty(),
            self.machine().is_some_and(|m| m.past_point_of_no_return()),
        )
    }

    /// The steps still to undo, newest first: (LSN, undo).
    pub fn steps_to_undo(&self) -> Vec<(Lsn, Vec<Op>)> {
        let limit = self.undo_next_lsn.unwrap_or(Lsn::MAX);
        self.steps
            .iter()
            .rev()
            .filter(|(lsn, _, _)| *lsn <= limit)
            .map(|(lsn, _, step)| (*lsn, step.undo.clone()))
            .collect()
    }
}

/// The recovery decision table (see [`TxnTrack::decision`]).
pub fn decide(compensating: bool, past_point_of_no_return: bool) -> Decision {
    match (compensating, past_point_of_no_return) {
        (true, _) => Decision::RollBack,
        (false, true) => Decision::Resume,
        (false, false) => Decision::RollBack,
    }
}

/// Every transaction seen in a stretch of log, by id.
#[derive(Clone, Debug, Default)]
pub struct Analysis {
    /// Transactions, by id.
    pub txns: std::collections::BTreeMap<TxnId, TxnTrack>,
    /// Highest transaction id seen.
    pub max_txn_id: TxnId,
    /// Records seen.
    pub record_count: u64,
}

impl Analysis {
    /// Adds a record. With `keep_finished` false, a transaction is forgotten when it ends
    /// (recovery keeps only those in flight).
    pub fn observe(
        &mut self,
        lsn: Lsn,
        txn_id: TxnId,
        step_no: u32,
        record: &TxnRecord,
        keep_finished: bool,
    ) {
        self.record_count += 1;
        self.max_txn_id = self.max_txn_id.max(txn_id);
        let track = self
            .txns
            .entry(txn_id)
            .or_insert_with(|| TxnTrack::new(txn_id, lsn));
        track.observe(lsn, step_no, record);
        if track.end.is_some() && !keep_finished {
            self.txns.remove(&txn_id);
        }
    }

    /// The transactions that have not ended.
    pub fn in_flight(&self) -> impl Iterator<Item = &TxnTrack> {
        self.txns.values().filter(|t| t.end.is_none())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_combination_of_the_decision_table_has_one_answer() {
        let table = [
            (false, false, Decision::RollBack),
            (false, true, Decision::Resume),
            (true, false, Decision::RollBack),
            (true, true, Decision::RollBack),
        ];
        for (compensating, past, want) in table {
            assert_eq!(decide(compensating, past), want, "{compensating} {past}");
        }
    }

    #[test]
    fn records_round_trip_and_a_kind_mismatch_is_refused() {
        let record = TxnRecord::Abort {
            key: Some(RequestKey {
                client_id: 1,
                request_id: 2,
            }),
            entry: Some(EntryId { term: 3, index: 4 }),
            errno: 17,
        };
        let bytes = record.encode();
        assert_eq!(TxnRecord::decode(kind::ABORT, &bytes).unwrap(), record);
        assert!(TxnRecord::decode(kind::COMMIT, &bytes).is_err());
        assert!(TxnRecord::decode(kind::ABORT, &bytes[..1]).is_err());
    }
}
