//! Raft's log storage on smlog's log ([`LogStore`], openraft's `RaftLogStorage`).
//!
//! One smlog [`Log`] per Raft group, in its own directory (so a process holds as many as it
//! has volumes). Every write is a record ([`records`]) appended in order to that one log, so
//! durability is ordered for free: a vote, a truncation and the entries after them become
//! durable in the order they were written, and a crash keeps a prefix of them (the log's
//! recovery keeps exactly the records up to its durable tail).
//!
//! - **Appends** encode each entry into the log's filling batch and return; a flusher thread
//!   waits for the group commit that carries the last of them and then completes openraft's
//!   `IOFlushed` callback. Callbacks queued while a commit is in progress share the next
//!   one: many Raft appends, one `fdatasync`.
//! - **The vote** is appended and waited for before `save_vote` returns (Raft requires it);
//!   **a truncation** too (rare: a new leader overwriting a follower's uncommitted tail).
//!   **The committed log id** is appended without a wait (openraft allows that; it becomes
//!   durable with the next commit).
//! - **A purge** appends a state record (vote, committed, purge marker), waits for it, and
//!   releases every segment wholly before both the first kept entry and that record.
//! - **Reads** come from memory: the entries not purged are kept, decoded, in a map from
//!   index to entry, so a replication task reads any index while appends go on. On open the
//!   map is rebuilt by one scan of the log (recovery first finds and trims its tail).
//!
//! Memory grows with the entries not yet purged, and purges follow snapshots: a node
//! snapshots every 100,000 entries, and by size ([`crate::node::SNAPSHOT_LOG_BYTES`],
//! 256 MiB): past it, the log behind the snapshot is purged down to 64 MiB and a snapshot
//! is built when 128 MiB lie past the last one, so a log holds about 256 MiB at most (plus
//! what arrives while a snapshot is built). Reads from the segments, with a bounded
//! cache, would lower that further, and let snapshots (whole exports of the volume) be
//! rarer.

pub mod records;

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::ops::RangeBounds;
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;

use smlog::io::Device;
use smlog::log::writer::CreateOptions;
use smlog::{Log, LogError, Lsn, NewRecord, Record, TxnId};
use smlog_recovery::RecoveryOptions;

use crate::raft::{
    entry_of, entry_record, log_id_of, log_id_record, vote_of, vote_record, Entry, IOFlushed,
    LogId, LogState, OptionalSend, RaftEntry, RaftLogReader, RaftLogStorage, TypeConfig, Vote,
};
use records::{RaftRecord, RecordError, StateRecord};

/// Why a Raft log could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The log itself (device, damage, recovery).
    #[error(transparent)]
    Log(#[from] LogError),
    /// A record that is not a valid Raft log record, or entries out of order.
    #[error("{0}")]
    Record(#[from] RecordError),
}

/// The Raft log of one group, on one smlog log. Clones share it (openraft's log reader is
/// a clone).
pub struct LogStore<D: Device> {
    shared: Arc<Shared<D>>,
}

impl<D: Device> Clone for LogStore<D> {
    fn clone(&self) -> Self {
        LogStore {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<D: Device> fmt::Debug for LogStore<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.shared.lock();
        f.debug_struct("LogStore")
            .field("first", &state.entries.keys().next())
            .field("last", &state.entries.keys().next_back())
            .field("vote", &state.vote)
            .field("committed", &state.committed)
            .field("purged", &state.purged)
            .finish()
    }
}

struct Shared<D: Device> {
    log: Arc<Log<D>>,
    state: Mutex<State>,
    /// Appends waiting for their group commit, to the flusher thread.
    flushes: Mutex<Option<mpsc::Sender<Flush>>>,
    flusher: Mutex<Option<JoinHandle<()>>>,
    /// A planted bug for the cluster simulation: appends acknowledged before durable.
    ack_before_durable: std::sync::atomic::AtomicBool,
}

/// An append waiting for the group commit that carries its last record.
type Flush = (Lsn, IOFlushed<TypeConfig>);

/// An entry not purged, as held in memory.
#[derive(Debug)]
struct Held {
    entry: Entry,
    /// Its record's LSN.
    lsn: Lsn,
    /// Its record's payload size.
    bytes: u64,
}

/// The log as Raft sees it.
#[derive(Debug, Default)]
struct State {
    /// Entries not purged, by index.
    entries: BTreeMap<u64, Held>,
    /// The sum of their records' payload sizes.
    bytes: u64,
    vote: Option<Vote>,
    committed: Option<LogId>,
    purged: Option<LogId>,
}

impl State {
    fn last_log_id(&self) -> Option<LogId> {
        self.entries
            .values()
            .next_back()
            .map(|held| held.entry.log_id())
            .or(self.purged)
    }

    /// Whether an entry at `index` continues the log: the next index, or any index when
    /// the log holds nothing and nothing was purged.
    fn continues(&self, index: u64) -> bool {
        match self.last_log_id() {
            Some(last) => index == last.index + 1,
            None => true,
        }
    }

    fn insert(&mut self, index: u64, held: Held) {
        self.bytes += held.bytes;
        if let Some(replaced) = self.entries.insert(index, held) {
            self.bytes -= replaced.bytes;
        }
    }

    fn truncate_after(&mut self, last: Option<LogId>) {
        let from = last.map_or(0, |id| id.index + 1);
        let removed = self.entries.split_off(&from);
        self.bytes -= removed.values().map(|held| held.bytes).sum::<u64>();
    }

    fn purge(&mut self, upto: LogId) {
        let kept = self.entries.split_off(&(upto.index + 1));
        let removed = std::mem::replace(&mut self.entries, kept);
        self.bytes -= removed.values().map(|held| held.bytes).sum::<u64>();
        self.purged = self.purged.max(Some(upto));
    }

    /// Replays one record read back from the log.
    fn replay(&mut self, record: &Record) -> Result<(), RecordError> {
        let kind = record.fields.kind;
        match RaftRecord::decode(kind, &record.payload)? {
            RaftRecord::Entry(entry) => {
                let index = entry.log_id.index;
                let entry = entry_of(entry).ok_or_else(|| RecordError {
                    kind,
                    why: format!("entry {index} holds an invalid membership"),
                })?;
                if !self.continues(index) {
                    return Err(RecordError {
                        kind,
                        why: format!(
                            "entry {index} (LSN {}) does not follow the last entry {:?}",
                            record.lsn,
                            self.last_log_id()
                        ),
                    });
                }
                let bytes = record.payload.len() as u64;
                let lsn = record.lsn;
                self.insert(index, Held { entry, lsn, bytes });
            }
            RaftRecord::Vote(vote) => self.vote = Some(vote_of(&vote)),
            RaftRecord::Committed(committed) => self.committed = committed.as_ref().map(log_id_of),
            RaftRecord::TruncateAfter(last) => self.truncate_after(last.as_ref().map(log_id_of)),
            RaftRecord::State(state) => {
                self.vote = state.vote.as_ref().map(vote_of);
                self.committed = state.committed.as_ref().map(log_id_of);
                if let Some(purged) = &state.purged {
                    self.purge(log_id_of(purged));
                }
            }
        }
        Ok(())
    }
}

impl<D: Device> Shared<D> {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends `record`; returns its LSN and payload size.
    fn append_sized(&self, record: &RaftRecord, txn_id: TxnId) -> io::Result<(Lsn, u64)> {
        let payload = record.encode();
        let new = NewRecord {
            txn_id,
            step: 0,
            kind: record.kind(),
            payload: &payload,
        };
        let lsn = self.log.append(&[new]).map_err(io_error)?;
        Ok((lsn, payload.len() as u64))
    }

    fn append(&self, record: &RaftRecord, txn_id: TxnId) -> io::Result<Lsn> {
        Ok(self.append_sized(record, txn_id)?.0)
    }
}

impl<D: Device> Drop for Shared<D> {
    fn drop(&mut self) {
        // The flusher ends when its queue closes; it completes what it holds first.
        drop(
            self.flushes
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take(),
        );
        if let Some(flusher) = self
            .flusher
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            let _ = flusher.join();
        }
    }
}

fn io_error(error: LogError) -> io::Error {
    io::Error::other(error)
}

/// Waits in a blocking thread (a group commit) without holding up the async runtime.
async fn wait_durable<D: Device>(log: &Arc<Log<D>>, lsn: Lsn) -> io::Result<()> {
    let log = Arc::clone(log);
    tokio::task::spawn_blocking(move || log.wait_durable(lsn))
        .await
        .map_err(io::Error::other)?
        .map_err(io_error)
}

impl<D: Device> LogStore<D> {
    /// Opens the Raft log on `device` (its directory), creating an empty one when there is
    /// none: recovery finds and trims the log's tail, then the records rebuild the entries,
    /// vote, committed log id and purge marker.
    pub fn open(device: Arc<D>) -> Result<LogStore<D>, OpenError> {
        LogStore::open_with(device, CreateOptions::default())
    }

    /// [`LogStore::open`], creating a missing log with `create` (its segment size).
    pub fn open_with(device: Arc<D>, create: CreateOptions) -> Result<LogStore<D>, OpenError> {
        let mut state = State::default();
        let mut bad: Option<RecordError> = None;
        let (log, _report) =
            smlog_recovery::open_or_create(device, RecoveryOptions::default(), create, |record| {
                if bad.is_none() {
                    if let Err(e) = state.replay(record) {
                        bad = Some(e);
                    }
                }
            })?;
        if let Some(bad) = bad {
            return Err(bad.into());
        }
        let log = Arc::new(log);
        let (tx, rx) = mpsc::channel();
        let flusher_log = Arc::clone(&log);
        let flusher = std::thread::Builder::new()
            .name("smlog-raft-flush".into())
            .spawn(move || flush(&flusher_log, &rx))
            .map_err(|e| LogError::InvalidOptions(format!("cannot start a thread: {e}")))?;
        Ok(LogStore {
            shared: Arc::new(Shared {
                log,
                state: Mutex::new(state),
                flushes: Mutex::new(Some(tx)),
                flusher: Mutex::new(Some(flusher)),
                ack_before_durable: std::sync::atomic::AtomicBool::new(false),
            }),
        })
    }

    /// Whether the log holds nothing at all: no entry, no vote, nothing purged (a node that
    /// never took part in a cluster).
    pub fn is_pristine(&self) -> bool {
        let state = self.shared.lock();
        state.entries.is_empty() && state.vote.is_none() && state.purged.is_none()
    }

    /// Waits until the entry at `index` is durable in this log (now if it is not here: a
    /// purged entry is durable in a snapshot). The state machine calls it before it applies
    /// an entry, so the volume is never durable past this node's own log: otherwise a crash
    /// could leave the volume ahead of the log, which Raft only accepts with a snapshot.
    pub fn wait_entry_durable(&self, index: u64) -> Result<(), LogError> {
        if self
            .shared
            .ack_before_durable
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            // The planted bug claims every entry durable at once, here too.
            return Ok(());
        }
        let lsn = self.shared.lock().entries.get(&index).map(|held| held.lsn);
        match lsn {
            Some(lsn) => self.shared.log.wait_durable(lsn),
            None => Ok(()),
        }
    }

    /// Plants a bug, for the cluster simulation to prove it catches it: every append is
    /// reported durable at once, before its group commit (to openraft and to the state
    /// machine).
    #[doc(hidden)]
    pub fn plant_ack_before_durable(&self) {
        self.shared
            .ack_before_durable
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// The bytes of the entries held (not purged): what this log keeps in memory. A node
    /// snapshots its volume when they pass [`crate::node::SNAPSHOT_LOG_BYTES`], so the log
    /// is purged by size as well as by count.
    pub fn held_bytes(&self) -> u64 {
        self.shared.lock().bytes
    }

    /// The bytes of the entries held past `index` (all of them for `None`).
    pub fn bytes_after(&self, index: Option<u64>) -> u64 {
        let state = self.shared.lock();
        match index {
            None => state.bytes,
            Some(index) => state
                .entries
                .range(index + 1..)
                .map(|(_, held)| held.bytes)
                .sum(),
        }
    }

    /// The newest index whose purge leaves at most `keep_bytes` of entries at or before
    /// `upto` (purging it and everything before it), if any must go.
    pub fn purge_point(&self, upto: u64, keep_bytes: u64) -> Option<u64> {
        let state = self.shared.lock();
        let mut kept = 0u64;
        for (index, held) in state.entries.range(..=upto).rev() {
            kept += held.bytes;
            if kept > keep_bytes {
                return Some(*index);
            }
        }
        None
    }

    /// The smlog log underneath (its counters, its durable LSN).
    pub fn log(&self) -> &Log<D> {
        &self.shared.log
    }
}

/// The flusher: waits for the group commit that carries the newest queued append, then
/// completes every append queued up to it.
fn flush<D: Device>(log: &Log<D>, queue: &mpsc::Receiver<Flush>) {
    while let Ok(first) = queue.recv() {
        let mut batch = vec![first];
        batch.extend(queue.try_iter());
        let newest = batch.iter().map(|(lsn, _)| *lsn).max().unwrap_or(Lsn(0));
        let result = log.wait_durable(newest);
        for (_, callback) in batch {
            callback.io_completed(result.clone().map_err(io_error));
        }
    }
}

impl<D: Device> RaftLogReader<TypeConfig> for LogStore<D> {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + fmt::Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        let state = self.shared.lock();
        Ok(state
            .entries
            .range(range)
            .map(|(_, held)| held.entry.clone())
            .collect())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        Ok(self.shared.lock().vote)
    }
}

impl<D: Device> RaftLogStorage<TypeConfig> for LogStore<D> {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        let state = self.shared.lock();
        Ok(LogState {
            last_purged_log_id: state.purged,
            last_log_id: state.last_log_id(),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        let lsn = self
            .shared
            .append(&RaftRecord::Vote(vote_record(vote)), TxnId(0))?;
        wait_durable(&self.shared.log, lsn).await?;
        self.shared.lock().vote = Some(*vote);
        Ok(())
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        let record = RaftRecord::Committed(committed.as_ref().map(log_id_record));
        let mut state = self.shared.lock();
        self.shared.append(&record, TxnId(0))?;
        state.committed = committed;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
        Ok(self.shared.lock().committed)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: IOFlushed<TypeConfig>,
    ) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut last_lsn = None;
        {
            let mut state = self.shared.lock();
            for entry in entries {
                let index = entry.log_id.index;
                if !state.continues(index) {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!(
                            "entry {index} does not follow the last entry {:?}",
                            state.last_log_id()
                        ),
                    ));
                }
                let record = RaftRecord::Entry(entry_record(&entry));
                let (lsn, bytes) = self.shared.append_sized(&record, TxnId(index))?;
                state.insert(index, Held { entry, lsn, bytes });
                last_lsn = Some(lsn);
            }
        }
        let planted = self
            .shared
            .ack_before_durable
            .load(std::sync::atomic::Ordering::Relaxed);
        let Some(lsn) = last_lsn.filter(|_| !planted) else {
            callback.io_completed(Ok(()));
            return Ok(());
        };
        let queue = self
            .shared
            .flushes
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        match queue.as_ref() {
            Some(queue) => queue
                .send((lsn, callback))
                .map_err(|_| io::Error::other("the Raft log's flusher stopped")),
            None => Err(io::Error::other("the Raft log is closed")),
        }
    }

    async fn truncate_after(&mut self, last: Option<LogId>) -> Result<(), io::Error> {
        let lsn = {
            let mut state = self.shared.lock();
            let record = RaftRecord::TruncateAfter(last.as_ref().map(log_id_record));
            let lsn = self.shared.append(&record, TxnId(0))?;
            state.truncate_after(last);
            lsn
        };
        wait_durable(&self.shared.log, lsn).await
    }

    async fn purge(&mut self, upto: LogId) -> Result<(), io::Error> {
        let (lsn, keep_from) = {
            let mut state = self.shared.lock();
            state.purge(upto);
            let record = RaftRecord::State(StateRecord {
                vote: state.vote.as_ref().map(vote_record),
                committed: state.committed.as_ref().map(log_id_record),
                purged: state.purged.as_ref().map(log_id_record),
            });
            let lsn = self.shared.append(&record, TxnId(0))?;
            let first_entry = state.entries.values().next().map(|held| held.lsn);
            (lsn, first_entry.map_or(lsn, |first| first.min(lsn)))
        };
        wait_durable(&self.shared.log, lsn).await?;
        // Every record before `keep_from` is an entry purged or a state the one just made
        // durable replaces.
        self.shared
            .log
            .release_prefix(keep_from.saturating_sub(1))
            .map_err(io_error)?;
        Ok(())
    }
}
