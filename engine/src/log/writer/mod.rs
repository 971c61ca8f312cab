//! [`Log`]: appends from many threads, made durable by group commit.
//!
//! Appenders encode their records straight into the batch being filled (one aligned buffer),
//! under one mutex. A thread that needs its record durable, finding it in the filling batch
//! and a free slot among the batches that may be in flight (one by default, at most
//! [`BATCHES_IN_FLIGHT_MAX`]), becomes that batch's leader: it seals the batch, installs a
//! spare buffer as the next one, and writes the sealed batch with one durable write (write +
//! fdatasync) while the others keep filling the next. When no slot is free, records gather
//! in the filling batch until one frees: the batch size follows the load. With one slot, a
//! batch that carries a lone committer leaves room for a second beside it
//! (`BESIDE_LONE_BATCH_WAITERS_MAX`): two committers then flush side by side instead of
//! taking turns.
//!
//! With one batch in flight, the batch after one that became durable waits a moment
//! (`GATHER_WAIT` at most) for that batch's committers, just woken, to come back with their
//! next records: one committer yields the processor to them (the gatherer) while the others
//! sleep; the batch is written once as many committers wait for it as were woken, or at the
//! deadline. Otherwise the committers split into two halves that take turns, and each
//! durable write carries half of them.
//!
//! Batches may complete out of order; the durable LSN advances only over batches that are
//! all complete. Each batch carries the durable LSN as it was when the batch was sealed
//! (the durable mark), so any batch on disk vouches for everything durable before it. At a
//! crash, at most [`BATCHES_IN_FLIGHT_MAX`] batches past the durable tail can be partly on
//! disk; recovery scrubs that much past the tail.
//!
//! Committers waiting on batch `n` sleep on futex word `n % (BATCHES_IN_FLIGHT_MAX + 1)`,
//! without the lock: a batch becoming durable wakes its own committers and, when records
//! wait, one more thread to lead (or gather) them, never the whole crowd. A woken committer
//! reads the durable LSN from an atomic and returns without taking the lock. A leader that
//! goes on to write the next batch wakes the committers of the one before while the device
//! writes (the wake-ups of a batch's committers cost more than its write on a 2-core
//! machine, so they must not sit between one write and the next).
//!
//! A failed write or sync is fail-stop: the log records the failure, wakes every waiter
//! with it, and refuses every later append and wait.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::segment::{self, Preparer};
use super::{LogError, Lsn};
use crate::constants::{
    align_up, batch_size_bytes_max, BATCHES_IN_FLIGHT_DEFAULT, BATCHES_IN_FLIGHT_MAX,
    BATCH_HEADER_SIZE_BYTES, BLOCK_SIZE_BYTES, LOG_RESERVE_PARTS, RECORD_PAYLOAD_SIZE_BYTES_MAX,
    SEGMENT_HEADER_SIZE_BYTES, SEGMENT_SIZE_BYTES_MAX, SEGMENT_SIZE_BYTES_MIN,
};
use crate::format::{
    encode_record, record_size_bytes, BatchHeader, LogMeta, RecordFields, SegmentHeader,
};
use crate::io::{AlignedBuf, Device, FileId, IoErrorKind};

use super::reader::Tail;
use crate::ids::SegmentSeq;
use crate::ids::TxnId;

/// How many batches a leader writes after its own before it returns, when more records
/// are waiting and a slot is free: the device stays busy without waiting for another
/// thread to wake.
const LEADER_EXTRA_BATCHES_MAX: u32 = 2;

/// With one batch in flight, how long at most the filling batch waits, once the batch
/// before became durable, for that batch's committers (woken) to come back with their next
/// records before it is written. Without it the batches alternate between two halves of
/// the committers, each written with half of them; with one write in flight, a write that
/// carries everyone is worth a short wait (measured: 16 threads, 8 -> 14 records a batch).
const GATHER_WAIT: Duration = Duration::from_micros(50);

/// With one batch in flight, a second may go beside it when it carries at most this many
/// committers. A lone committer's batch leaves the device's parallel flushes unused, and two
/// committers would otherwise take turns, each write carrying one record (measured: 2
/// threads 8.6-9.2k commits/s, no more than one thread, against 11.9-19.4k with this; 16
/// and 64 threads unchanged, where batches carry 13-33 committers and two in flight
/// measured worse).
const BESIDE_LONE_BATCH_WAITERS_MAX: u32 = 1;
const _: () = assert!(BATCHES_IN_FLIGHT_MAX >= 2);

/// Wait queues (futex words): one per batch that may be in flight, plus the filling one.
const WAIT_QUEUE_COUNT: usize = BATCHES_IN_FLIGHT_MAX + 1;
const _: () = assert!(WAIT_QUEUE_COUNT <= u8::BITS as usize);

/// Wait queues to wake once the lock is released: every sleeper of the queues in `all`,
/// one sleeper of those in `one`. Their words were advanced under the lock, with the change
/// the sleepers wait for, so a sleeper that had not yet gone to sleep returns at once.
#[derive(Debug, Default)]
#[must_use = "announced sleepers must be woken"]
struct Wakes {
    all: u8,
    one: u8,
}

fn queue_of(batch_seq: u64) -> usize {
    (batch_seq % WAIT_QUEUE_COUNT as u64) as usize
}

/// A record to append.
#[derive(Clone, Copy, Debug)]
pub struct NewRecord<'a> {
    /// Transaction id.
    pub txn_id: TxnId,
    /// Step number.
    pub step: u32,
    /// Kind (non-zero).
    pub kind: u16,
    /// Payload, at most [`RECORD_PAYLOAD_SIZE_BYTES_MAX`] bytes.
    pub payload: &'a [u8],
}

/// Counters of a log's writer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LogStats {
    /// Batches written (each one durable write).
    pub batch_count: u64,
    /// Records written.
    pub record_count: u64,
    /// Bytes written, padding included.
    pub written_bytes: u64,
}

/// The batch being filled: its place in the log and its bytes.
#[derive(Debug)]
struct Batch {
    /// Block 0: the segment header, when this batch starts a segment; then the batch.
    buf: AlignedBuf,
    segment_seq: SegmentSeq,
    /// Offset of the batch header in the segment (after the segment header block).
    segment_offset: u64,
    /// Bytes the batch may use (header included).
    capacity_bytes: usize,
    /// Bytes used (header included).
    used_bytes: usize,
    record_count: u32,
    first_lsn: Lsn,
    prev_crc: u32,
}

impl Batch {
    fn starts_segment(&self) -> bool {
        self.segment_offset == SEGMENT_HEADER_SIZE_BYTES as u64
    }
}

/// A batch being written.
#[derive(Debug)]
struct InFlight {
    /// The batch's sequence number (counts batches since open).
    batch_seq: u64,
    segment_seq: SegmentSeq,
    /// Last LSN in it (first - 1 for an empty batch).
    last_lsn: Lsn,
    /// Committers waiting for it when it was sealed (those whose `wait_durable` found their
    /// LSN in it while it was filling).
    waiters: u32,
    /// Its write completed.
    done: bool,
}

/// The filling batch waiting for the committers of the batch before (see [`GATHER_WAIT`]).
#[derive(Clone, Copy, Debug)]
struct Gather {
    /// Written once this many committers wait for it...
    waiters: u32,
    /// ... or at this moment.
    deadline: Instant,
}

#[derive(Debug)]
struct WriterState {
    fill: Batch,
    /// Sequence number of the filling batch.
    fill_seq: u64,
    spares: Vec<AlignedBuf>,
    /// Batches being written, oldest first.
    in_flight: VecDeque<InFlight>,
    /// How many may be in flight at once (1 ..= [`BATCHES_IN_FLIGHT_MAX`]).
    in_flight_limit: usize,
    /// Committers waiting for the filling batch (each `wait_durable` call counted once).
    fill_waiters: u32,
    /// Set when a batch became durable with no other in flight; cleared when the filling
    /// batch is sealed.
    gather: Option<Gather>,
    /// The filling batch (by sequence number) a thread is yielding the processor for while
    /// it gathers (a committer of it, or the leader of the batch before); that thread writes
    /// it or sees another do so.
    gatherer: Option<u64>,
    next_lsn: Lsn,
    chain: u32,
    durable_lsn: Lsn,
    mark_lsn: Lsn,
    failed: Option<LogError>,
    closed: bool,
    /// Open segment files.
    files: BTreeMap<SegmentSeq, FileId>,
    /// First LSN of every live segment that has been started.
    segment_first_lsn: BTreeMap<SegmentSeq, Lsn>,
    stats: LogStats,
}

impl WriterState {
    /// Whether another batch may be written now: below the limit, or, with a limit of one,
    /// beside a batch that carries a lone committer ([`BESIDE_LONE_BATCH_WAITERS_MAX`]).
    fn slot_free(&self) -> bool {
        let in_flight = self.in_flight.len();
        in_flight < self.in_flight_limit
            || (self.in_flight_limit == 1
                && in_flight == 1
                && self.in_flight[0].waiters <= BESIDE_LONE_BATCH_WAITERS_MAX)
    }

    /// Whether a committer yields the processor for the filling batch (and will write it,
    /// unless another does first). A gatherer of a batch since sealed does not count: the
    /// filling batch after it must be handed to one of its own committers.
    fn has_gatherer(&self) -> bool {
        self.gatherer == Some(self.fill_seq)
    }

    /// Whether the filling batch should wait for more committers before it is written.
    fn gathering(&self) -> bool {
        // A batch three quarters full is written: the appenders that fill it up would write
        // it themselves.
        let filled = self.fill.used_bytes >= self.fill.capacity_bytes / 4 * 3;
        !filled
            && self
                .gather
                .is_some_and(|g| self.fill_waiters < g.waiters && Instant::now() < g.deadline)
    }

    /// The oldest segment a batch in flight or the filling batch writes to.
    fn oldest_segment_in_use(&self) -> SegmentSeq {
        self.in_flight
            .front()
            .map_or(self.fill.segment_seq, |b| b.segment_seq)
            .min(self.fill.segment_seq)
    }

    /// The sequence number of the batch that holds `lsn` (in flight or filling).
    fn batch_of(&self, lsn: Lsn) -> u64 {
        self.in_flight
            .iter()
            .find(|b| b.last_lsn >= lsn)
            .map(|b| b.batch_seq)
            .unwrap_or(self.fill_seq)
    }
}

#[derive(Debug)]
struct Shared<D: Device> {
    device: Arc<D>,
    /// The `LOG` file's contents; only `first_segment_seq` changes (at `release_prefix`).
    meta: Mutex<LogMeta>,
    /// Fixed for the log's life, so the commit path reads them without a lock.
    log_id: u64,
    segment_size_bytes: u64,
    epoch: u32,
    batch_size_bytes_max: usize,
    state: Mutex<WriterState>,
    /// Committers of batch `n` sleep on `wait_words[n % WAIT_QUEUE_COUNT]`; a wake-up first
    /// adds one to the word, under the lock.
    wait_words: [AtomicU32; WAIT_QUEUE_COUNT],
    /// `WriterState::durable_lsn`, stored under the lock whenever it advances: a woken
    /// committer reads it without the lock.
    durable_lsn: AtomicU64,
    appended_lsn: AtomicU64,
}

/// An open, writable log. See the module docs for how commits are grouped.
#[derive(Debug)]
pub struct Log<D: Device> {
    shared: Arc<Shared<D>>,
    preparer: Preparer<Arc<D>>,
}

/// Options for creating a log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CreateOptions {
    /// Size of every segment file.
    pub segment_size_bytes: u64,
}

impl Default for CreateOptions {
    fn default() -> Self {
        CreateOptions {
            segment_size_bytes: crate::constants::SEGMENT_SIZE_BYTES_DEFAULT,
        }
    }
}

impl<D: Device> Log<D> {
    /// Creates a new, empty log on `device` and opens it for writing.
    pub fn create(device: Arc<D>, options: CreateOptions) -> Result<Log<D>, LogError> {
        let size = options.segment_size_bytes;
        if !(SEGMENT_SIZE_BYTES_MIN..=SEGMENT_SIZE_BYTES_MAX).contains(&size)
            || !size.is_multiple_of(BLOCK_SIZE_BYTES as u64)
        {
            return Err(LogError::InvalidOptions(format!(
                "segment size {size} bytes: must be a multiple of 4 KiB in \
                 {SEGMENT_SIZE_BYTES_MIN} ..= {SEGMENT_SIZE_BYTES_MAX}"
            )));
        }
        if device.list()?.iter().any(|n| n == segment::META_FILE_NAME) {
            return Err(LogError::AlreadyExists {
                path: device.path_of(segment::META_FILE_NAME),
            });
        }
        let meta = LogMeta {
            log_id: random_log_id(),
            segment_size_bytes: size,
            first_segment_seq: SegmentSeq(1),
            created_unix_secs: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            open_epoch: 0,
        };
        segment::prepare_now(&*device, SegmentSeq(1), size)?;
        segment::write_meta(&*device, &meta)?;
        let tail = Tail::empty(&meta);
        Log::open_at(device, meta, &tail)
    }

    /// Opens a log for writing at `tail`, as found by a recovery scan. The caller (recovery)
    /// has made sure nothing past the tail can be mistaken for a record.
    #[doc(hidden)]
    pub fn open_at(device: Arc<D>, meta: LogMeta, tail: &Tail) -> Result<Log<D>, LogError> {
        // This writer's epoch is above every epoch on disk and every writer opened before
        // (even one that crashed before anything it wrote became durable), and is recorded
        // before the first write: a batch's epoch tells which writer came later.
        let epoch = meta
            .open_epoch
            .max(tail.epoch)
            .checked_add(1)
            .ok_or_else(|| LogError::InvalidOptions("writer epochs exhausted".into()))?;
        let meta = LogMeta {
            open_epoch: epoch,
            ..meta
        };
        segment::write_meta(&*device, &meta)?;
        let batch_size_bytes_max = batch_size_bytes_max(meta.segment_size_bytes);
        let buffer = || AlignedBuf::new_zeroed(SEGMENT_HEADER_SIZE_BYTES + batch_size_bytes_max);
        let mut fill = Batch {
            buf: buffer(),
            segment_seq: tail.segment_seq,
            segment_offset: 0,
            capacity_bytes: 0,
            used_bytes: BATCH_HEADER_SIZE_BYTES,
            record_count: 0,
            first_lsn: tail.next_lsn,
            prev_crc: tail.chain,
        };
        position_fill(
            &mut fill,
            tail.segment_seq,
            tail.segment_offset,
            meta.segment_size_bytes,
            batch_size_bytes_max,
        );
        let state = WriterState {
            fill,
            fill_seq: 1,
            spares: (0..BATCHES_IN_FLIGHT_MAX).map(|_| buffer()).collect(),
            in_flight: VecDeque::with_capacity(BATCHES_IN_FLIGHT_MAX),
            in_flight_limit: BATCHES_IN_FLIGHT_DEFAULT,
            fill_waiters: 0,
            gather: None,
            gatherer: None,
            next_lsn: tail.next_lsn,
            chain: tail.chain,
            durable_lsn: tail.next_lsn - 1,
            mark_lsn: tail.next_lsn - 1,
            failed: None,
            closed: false,
            files: BTreeMap::new(),
            segment_first_lsn: tail.segment_first_lsn.clone(),
            stats: LogStats::default(),
        };
        // The preparer checks (and creates or completes) every segment from the first one
        // the writer may need; a started segment is whole already.
        let ready_up_to = if tail.segment_offset == 0 {
            tail.segment_seq - 1
        } else {
            tail.segment_seq
        };
        segment::remove_unfinished_fills(&*device)?;
        let preparer = Preparer::start(Arc::clone(&device), meta.segment_size_bytes, ready_up_to);
        // Segments released before a crash, and never reused, are reused now.
        let dead: Vec<String> = device
            .list()?
            .into_iter()
            .filter(|name| {
                segment::parse_segment_file_name(name)
                    .is_some_and(|seq| seq < meta.first_segment_seq)
            })
            .collect();
        preparer.recycle(dead);
        Ok(Log {
            shared: Arc::new(Shared {
                device,
                meta: Mutex::new(meta),
                log_id: meta.log_id,
                segment_size_bytes: meta.segment_size_bytes,
                epoch,
                batch_size_bytes_max,
                state: Mutex::new(state),
                wait_words: std::array::from_fn(|_| AtomicU32::new(0)),
                durable_lsn: AtomicU64::new(tail.next_lsn.get() - 1),
                appended_lsn: AtomicU64::new(tail.next_lsn.get() - 1),
            }),
            preparer,
        })
    }

    /// The device the log is on.
    pub fn device(&self) -> &Arc<D> {
        &self.shared.device
    }

    /// The log's metadata.
    pub fn meta(&self) -> LogMeta {
        *self.shared.meta.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sets how many batches may be in flight at once, 1 ..= [`BATCHES_IN_FLIGHT_MAX`]
    /// (default [`BATCHES_IN_FLIGHT_DEFAULT`]). More lets a device with parallel queues
    /// make batches durable side by side, at the cost of smaller batches and more IOs.
    /// With 1, a second batch still goes beside one that carries a lone committer.
    pub fn set_batches_in_flight(&self, count: usize) -> Result<(), LogError> {
        if !(1..=BATCHES_IN_FLIGHT_MAX).contains(&count) {
            return Err(LogError::InvalidOptions(format!(
                "batches in flight {count}: must be 1 ..= {BATCHES_IN_FLIGHT_MAX}"
            )));
        }
        self.lock().in_flight_limit = count;
        Ok(())
    }

    /// The open epoch this writer stamps into its batches.
    pub fn epoch(&self) -> u32 {
        self.shared.epoch
    }

    /// Appends `records` with consecutive LSNs, in one batch (so they become durable
    /// together or not at all), and returns the LSN of the last. Not durable until
    /// [`Log::wait_durable`] returns for it.
    ///
    /// When the host file system has no room for the segments ahead, the last part of the
    /// last ready segment (an eighth of a segment, [`LOG_RESERVE_PARTS`]) is kept for
    /// [`Log::append_reserved`]: this refuses with [`LogError::NoSpace`] before it would
    /// use that part, and the log goes on (nothing is appended, nothing fails).
    pub fn append(&self, records: &[NewRecord<'_>]) -> Result<Lsn, LogError> {
        self.append_with(records, false)
    }

    /// [`Log::append`] for work that frees space or finishes work begun (a delete, a
    /// transaction's later steps, its rollback): it may use the reserve kept at the end of
    /// the last ready segment, and is refused only when no ready segment has room.
    pub fn append_reserved(&self, records: &[NewRecord<'_>]) -> Result<Lsn, LogError> {
        self.append_with(records, true)
    }

    fn append_with(&self, records: &[NewRecord<'_>], reserved: bool) -> Result<Lsn, LogError> {
        let mut size_bytes = 0usize;
        for record in records {
            if record.payload.len() > RECORD_PAYLOAD_SIZE_BYTES_MAX {
                return Err(LogError::RecordTooLarge {
                    len_bytes: record.payload.len(),
                    max_bytes: RECORD_PAYLOAD_SIZE_BYTES_MAX,
                });
            }
            if record.kind == 0 {
                return Err(LogError::InvalidKind);
            }
            size_bytes += record_size_bytes(record.payload.len());
        }
        let room_bytes = self.shared.batch_size_bytes_max - BATCH_HEADER_SIZE_BYTES;
        if size_bytes > room_bytes {
            return Err(LogError::AppendTooLarge {
                size_bytes,
                max_bytes: room_bytes,
            });
        }
        let mut state = self.lock();
        loop {
            check_usable(&state)?;
            if records.is_empty() {
                return Ok(state.next_lsn - 1);
            }
            if state.fill.used_bytes + size_bytes <= state.fill.capacity_bytes {
                self.check_room(&state, size_bytes, reserved)?;
                break;
            }
            if state.fill.record_count == 0 {
                // Not even an empty batch here has room: the rest of this segment stays
                // unused and the batch starts the next segment.
                let next = state.fill.segment_seq + 1;
                position_fill(
                    &mut state.fill,
                    next,
                    0,
                    self.shared.segment_size_bytes,
                    self.shared.batch_size_bytes_max,
                );
                continue;
            }
            if state.slot_free() {
                let mut wakes = Wakes::default();
                state = self.lead(state, &mut wakes);
                self.hand_off(&state, &mut wakes);
                drop(state);
                self.wake(wakes);
            } else {
                // Wait with the filling batch's committers until a slot frees.
                let seq = state.fill_seq;
                self.sleep(state, seq);
            }
            state = self.lock();
        }
        let mut lsn = state.next_lsn;
        let mut chain = state.chain;
        assert_eq!(
            lsn,
            state.fill.first_lsn + u64::from(state.fill.record_count)
        );
        let fill = &mut state.fill;
        for record in records {
            let size = record_size_bytes(record.payload.len());
            let at = SEGMENT_HEADER_SIZE_BYTES + fill.used_bytes;
            chain = encode_record(
                &mut fill.buf[at..at + size],
                lsn,
                fill.segment_seq.get(),
                chain,
                RecordFields {
                    txn_id: record.txn_id,
                    step: record.step,
                    kind: record.kind,
                },
                record.payload,
            );
            fill.used_bytes += size;
            fill.record_count += 1;
            lsn += 1;
        }
        state.chain = chain;
        state.next_lsn = lsn;
        self.shared
            .appended_lsn
            .store(lsn.get() - 1, Ordering::Release);
        Ok(lsn - 1)
    }

    /// Refuses an append of `size_bytes` into the filling batch when the host file system
    /// had no room for the segment it goes to, or, for an append that may not use the
    /// reserve, when it would leave less than the reserve in the last ready segment.
    fn check_room(
        &self,
        state: &WriterState,
        size_bytes: usize,
        reserved: bool,
    ) -> Result<(), LogError> {
        let seq = state.fill.segment_seq;
        if !state.files.contains_key(&seq) {
            // The first records of a segment: it must exist before they are taken (a batch
            // taken is written or the log fails).
            match self.preparer.wait_ready(seq) {
                Ok(()) => {}
                Err(e) if e.kind == IoErrorKind::NoSpace => return Err(LogError::NoSpace),
                // Another failure fails the log when the batch is written.
                Err(_) => return Ok(()),
            }
        }
        if reserved || !self.preparer.out_of_space() || self.preparer.ready_up_to() > seq {
            return Ok(());
        }
        let size = self.shared.segment_size_bytes;
        let end = state.fill.segment_offset + (state.fill.used_bytes + size_bytes) as u64;
        if size.saturating_sub(end) < size / LOG_RESERVE_PARTS {
            return Err(LogError::NoSpace);
        }
        Ok(())
    }

    /// Waits until every record up to `lsn` is durable, leading its batch when a slot is
    /// free.
    pub fn wait_durable(&self, lsn: Lsn) -> Result<(), LogError> {
        if self.durable(lsn) {
            return Ok(());
        }
        let mut state = self.lock();
        let mut counted = false;
        loop {
            if state.durable_lsn >= lsn {
                return Ok(());
            }
            check_usable(&state)?;
            assert!(lsn < state.next_lsn, "waiting for LSN {lsn} never appended");
            let in_fill = lsn >= state.fill.first_lsn;
            if in_fill && !counted {
                state.fill_waiters += 1;
                counted = true;
            }
            if in_fill && state.slot_free() && state.gathering() {
                if state.has_gatherer() {
                    let seq = state.fill_seq;
                    self.sleep(state, seq);
                } else {
                    state = self.gather(state, &mut Wakes::default());
                    continue;
                }
            } else if in_fill && state.slot_free() {
                let mut wakes = Wakes::default();
                state = self.lead(state, &mut wakes);
                // If records are waiting and a slot is free, write them at once rather than
                // hand the batch to a thread that has yet to wake up; a few times at most,
                // so no caller waits long after its own record is durable. Each of these
                // writes wakes the committers of the batch before it while it is written.
                let mut extra = 0;
                let mut excused = false;
                while extra < LEADER_EXTRA_BATCHES_MAX
                    && state.fill.record_count > 0
                    && state.slot_free()
                    && state.failed.is_none()
                {
                    if state.gathering() {
                        if state.has_gatherer() {
                            break;
                        }
                        if extra == 0 && !excused {
                            // This leader was counted among the committers of its own batch,
                            // but it gathers instead of coming back with a record.
                            excused = true;
                            if let Some(gather) = &mut state.gather {
                                gather.waiters = gather.waiters.saturating_sub(1);
                            }
                        }
                        state = self.gather(state, &mut wakes);
                        continue;
                    }
                    state = self.lead(state, &mut wakes);
                    extra += 1;
                }
                self.hand_off(&state, &mut wakes);
                drop(state);
                self.wake(wakes);
            } else {
                let seq = state.batch_of(lsn);
                self.sleep(state, seq);
            }
            if self.durable(lsn) {
                return Ok(());
            }
            state = self.lock();
        }
    }

    /// Whether `lsn` is known durable, read without the lock.
    fn durable(&self, lsn: Lsn) -> bool {
        self.shared.durable_lsn.load(Ordering::Acquire) >= lsn.get()
    }

    /// Appends and waits until the records are durable.
    pub fn append_durable(&self, records: &[NewRecord<'_>]) -> Result<Lsn, LogError> {
        let lsn = self.append(records)?;
        self.wait_durable(lsn)?;
        Ok(lsn)
    }

    /// Makes everything appended so far durable.
    pub fn sync(&self) -> Result<Lsn, LogError> {
        let lsn = Lsn(self.shared.appended_lsn.load(Ordering::Acquire));
        self.wait_durable(lsn)?;
        Ok(lsn)
    }

    /// Highest LSN known durable.
    pub fn durable_lsn(&self) -> Lsn {
        self.lock().durable_lsn
    }

    /// The highest durable mark on disk: every LSN up to it is vouched for by a batch on
    /// disk, so damage below it is corruption, never a torn tail.
    pub fn mark_lsn(&self) -> Lsn {
        self.lock().mark_lsn
    }

    /// LSN of the last record appended (durable or not).
    pub fn last_lsn(&self) -> Lsn {
        Lsn(self.shared.appended_lsn.load(Ordering::Acquire))
    }

    /// Writer counters.
    pub fn stats(&self) -> LogStats {
        self.lock().stats
    }

    /// The failure that stopped the log, if one did.
    pub fn failure(&self) -> Option<LogError> {
        self.lock().failed.clone()
    }

    /// Makes everything appended durable, then writes an empty batch whose durable mark
    /// covers every record: from then on, damage to any record is corruption, never a torn
    /// tail. Recovery writes one at the tail it found, so that bytes it discarded (and
    /// zeroed) cannot come back as a continuation of the log even if the zeroing is lost
    /// (while the mark is readable; past an unreadable one, the reader leaves the segment
    /// for the next only when nothing newer follows the mark in it).
    pub fn write_mark(&self) -> Result<Lsn, LogError> {
        let lsn = self.sync()?;
        let mut state = self.lock();
        loop {
            check_usable(&state)?;
            if let Some(newest) = state.in_flight.back() {
                let seq = newest.batch_seq;
                self.sleep(state, seq);
                state = self.lock();
                continue;
            }
            if state.fill.record_count > 0
                || state.mark_lsn < state.durable_lsn
                || state.stats.batch_count == 0
            {
                if state.fill.record_count == 0 {
                    // A mark alone starting a segment the host has no room for is refused
                    // plainly, and fails nothing.
                    self.check_room(&state, 0, true)?;
                }
                let mut wakes = Wakes::default();
                state = self.lead(state, &mut wakes);
                self.hand_off(&state, &mut wakes);
                let usable = check_usable(&state);
                drop(state);
                self.wake(wakes);
                usable?;
            }
            return Ok(lsn);
        }
    }

    /// Writes a final durable mark ([`Log::write_mark`]) and closes the log.
    pub fn close(self) -> Result<Lsn, LogError> {
        let lsn = self.write_mark()?;
        let mut state = self.lock();
        state.closed = true;
        self.wake_everyone();
        drop(state);
        Ok(lsn)
    }

    /// Waits until the next `count` segments after the one being filled exist, created and
    /// zero-filled (a benchmark or a bulk load calls this before it starts).
    pub fn reserve_segments(&self, count: u64) -> Result<(), LogError> {
        let seq = self.lock().fill.segment_seq;
        self.preparer.reserve(seq + count)?;
        Ok(())
    }

    /// Whether the host file system refused the segments ahead for space (new work is
    /// refused near the end of the last ready one; a checkpoint may release segments).
    pub fn out_of_space(&self) -> bool {
        self.preparer.out_of_space()
    }

    /// Stops preparing segments, for good: returns once no segment file is being written;
    /// a later wait for a segment fails.
    pub fn stop_preparing(&self) {
        self.preparer.stop();
    }

    /// Tries again to prepare the segments ahead when the host file system refused them
    /// for space (call after freeing space: a checkpoint, files removed).
    pub fn retry_segments(&self) {
        self.preparer.retry();
    }

    /// Releases the segments whose records all have LSNs up to `lsn` (checkpointed or
    /// purged): the `LOG` file's first segment moves past them, then their files are
    /// recycled as future segments. Never touches a segment being written.
    pub fn release_prefix(&self, lsn: Lsn) -> Result<u64, LogError> {
        let (new_first, released) = {
            let state = self.lock();
            let oldest_written = state.oldest_segment_in_use();
            let mut new_first = None;
            for (&seq, _) in state.segment_first_lsn.iter() {
                if seq + 1 >= oldest_written {
                    break;
                }
                let Some(&next_first) = state.segment_first_lsn.get(&(seq + 1)) else {
                    break;
                };
                if next_first <= lsn + 1 {
                    new_first = Some(seq + 1);
                }
            }
            let Some(new_first) = new_first else {
                return Ok(0);
            };
            let released: Vec<SegmentSeq> = state
                .segment_first_lsn
                .range(..new_first)
                .map(|(s, _)| *s)
                .collect();
            (new_first, released)
        };
        let mut meta = self.shared.meta.lock().unwrap_or_else(|e| e.into_inner());
        if meta.first_segment_seq >= new_first {
            return Ok(0);
        }
        let updated = LogMeta {
            first_segment_seq: new_first,
            ..*meta
        };
        segment::write_meta(&*self.shared.device, &updated)?;
        *meta = updated;
        drop(meta);
        let mut state = self.lock();
        for seq in &released {
            state.segment_first_lsn.remove(seq);
            if let Some(file) = state.files.remove(seq) {
                self.shared.device.close(file);
            }
        }
        drop(state);
        self.preparer
            .recycle(released.iter().map(|s| segment::segment_file_name(*s)));
        Ok(released.len() as u64)
    }

    fn lock(&self) -> MutexGuard<'_, WriterState> {
        self.shared.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Releases the lock and sleeps with the committers of batch `batch_seq` until it
    /// becomes durable, a slot frees for the filling batch, or the log stops (or, rarely,
    /// until another batch of the same queue does: the caller checks again).
    fn sleep(&self, state: MutexGuard<'_, WriterState>, batch_seq: u64) {
        let word = &self.shared.wait_words[queue_of(batch_seq)];
        // Read under the lock: a wake-up for any change after this moment first moves it.
        let seen = word.load(Ordering::Acquire);
        drop(state);
        atomic_wait::wait(word, seen);
    }

    /// Moves the word of the queue of batch `batch_seq` (call with the lock held, after the
    /// change its sleepers wait for) and adds the queue to `wakes`, its sleepers woken all
    /// or one.
    fn announce(&self, wakes: &mut Wakes, batch_seq: u64, all: bool) {
        let queue = queue_of(batch_seq);
        self.shared.wait_words[queue].fetch_add(1, Ordering::Release);
        if all {
            wakes.all |= 1 << queue;
        } else {
            wakes.one |= 1 << queue;
        }
    }

    /// Wakes the sleepers `wakes` names (best without the lock held).
    fn wake(&self, wakes: Wakes) {
        for (queue, word) in self.shared.wait_words.iter().enumerate() {
            let bit = 1 << queue;
            if wakes.all & bit != 0 {
                atomic_wait::wake_all(word);
            } else if wakes.one & bit != 0 {
                atomic_wait::wake_one(word);
            }
        }
    }

    /// Wakes every sleeper of every queue (the log failed or closed; call with the lock
    /// held, after the change).
    fn wake_everyone(&self) {
        for word in &self.shared.wait_words {
            word.fetch_add(1, Ordering::Release);
            atomic_wait::wake_all(word);
        }
    }

    /// Releases the lock, wakes `wakes` and yields the processor once as the gatherer of
    /// the filling batch, so the committers it waits for can run; returns with the lock.
    fn gather<'a>(
        &'a self,
        mut state: MutexGuard<'a, WriterState>,
        wakes: &mut Wakes,
    ) -> MutexGuard<'a, WriterState> {
        let gathering = state.fill_seq;
        state.gatherer = Some(gathering);
        drop(state);
        self.wake(std::mem::take(wakes));
        std::thread::yield_now();
        let mut state = self.lock();
        if state.gatherer == Some(gathering) {
            state.gatherer = None;
        }
        state
    }

    /// When records wait in the filling batch and a slot is free, wakes one of their
    /// committers to lead it (or to gather it, when no one does).
    fn hand_off(&self, state: &WriterState, wakes: &mut Wakes) {
        if state.fill.record_count > 0
            && state.slot_free()
            && state.failed.is_none()
            && !state.has_gatherer()
        {
            self.announce(wakes, state.fill_seq, false);
        }
    }

    /// Seals the filling batch and writes it, waking the sleepers in `wakes` while the
    /// device writes; returns with the lock held again, and the committers of the batches
    /// that became durable in `wakes` (the caller wakes them, or the next write does).
    fn lead<'a>(
        &'a self,
        mut state: MutexGuard<'a, WriterState>,
        wakes: &mut Wakes,
    ) -> MutexGuard<'a, WriterState> {
        assert!(state.slot_free());
        let shared = &*self.shared;
        let spare = state
            .spares
            .pop()
            .expect("a spare buffer for every free slot");
        let next_lsn = state.next_lsn;
        let chain = state.chain;
        let mut batch = std::mem::replace(
            &mut state.fill,
            Batch {
                buf: spare,
                segment_seq: SegmentSeq(0),
                segment_offset: 0,
                capacity_bytes: 0,
                used_bytes: BATCH_HEADER_SIZE_BYTES,
                record_count: 0,
                first_lsn: next_lsn,
                prev_crc: chain,
            },
        );
        let padded_bytes = align_up(batch.used_bytes, BLOCK_SIZE_BYTES);
        position_fill(
            &mut state.fill,
            batch.segment_seq,
            batch.segment_offset + padded_bytes as u64,
            shared.segment_size_bytes,
            shared.batch_size_bytes_max,
        );
        let batch_seq = state.fill_seq;
        state.fill_seq += 1;
        let durable_lsn = state.durable_lsn;
        assert!(durable_lsn < batch.first_lsn);
        let header = BatchHeader {
            record_count: batch.record_count,
            log_id: shared.log_id,
            segment_seq: batch.segment_seq,
            segment_offset: batch.segment_offset as u32,
            used_bytes: batch.used_bytes as u32,
            first_lsn: batch.first_lsn,
            durable_lsn,
            prev_crc: batch.prev_crc,
            epoch: shared.epoch,
        };
        let start = SEGMENT_HEADER_SIZE_BYTES;
        header.encode(&mut batch.buf[start..start + BATCH_HEADER_SIZE_BYTES]);
        batch.buf[start + batch.used_bytes..start + padded_bytes].fill(0);
        let starts_segment = batch.starts_segment();
        if starts_segment {
            batch.buf[..SEGMENT_HEADER_SIZE_BYTES].fill(0);
            SegmentHeader {
                epoch: shared.epoch,
                log_id: shared.log_id,
                segment_seq: batch.segment_seq,
                first_lsn: batch.first_lsn,
                segment_size_bytes: shared.segment_size_bytes,
                prev_crc: batch.prev_crc,
            }
            .encode(&mut batch.buf[..SEGMENT_HEADER_SIZE_BYTES]);
        }
        let waiters = std::mem::take(&mut state.fill_waiters);
        state.in_flight.push_back(InFlight {
            batch_seq,
            segment_seq: batch.segment_seq,
            last_lsn: next_lsn - 1,
            waiters,
            done: false,
        });
        state.gather = None;
        let file = state.files.get(&batch.segment_seq).copied();
        drop(state);

        let result = (|| -> Result<(FileId, bool), LogError> {
            let (file, opened) = match file {
                Some(file) => (file, false),
                None => {
                    self.preparer.wait_ready(batch.segment_seq)?;
                    let name = segment::segment_file_name(batch.segment_seq);
                    (shared.device.open(&name, false)?, true)
                }
            };
            let (from, offset) = if starts_segment {
                (0, 0)
            } else {
                (SEGMENT_HEADER_SIZE_BYTES, batch.segment_offset)
            };
            let bytes = &batch.buf[from..start + padded_bytes];
            let written = if wakes.all | wakes.one == 0 {
                // Nothing to overlap: one submit-and-wait, not a submit and then a wait.
                shared.device.write_durable_at(file, offset, bytes)
            } else {
                shared
                    .device
                    .write_durable_at_meanwhile(file, offset, bytes, &mut || {
                        self.wake(std::mem::take(wakes))
                    })
            };
            if let Err(error) = written {
                if opened {
                    shared.device.close(file);
                }
                return Err(error.into());
            }
            Ok((file, opened))
        })();

        let mut state = self.lock();
        state.spares.push(batch.buf);
        let entry = state
            .in_flight
            .iter_mut()
            .find(|b| b.batch_seq == batch_seq)
            .expect("the batch is in flight");
        entry.done = true;
        match result {
            Ok((file, opened)) => {
                if opened {
                    match state.files.get(&batch.segment_seq) {
                        Some(_) => shared.device.close(file),
                        None => {
                            state.files.insert(batch.segment_seq, file);
                        }
                    }
                }
                state.mark_lsn = state.mark_lsn.max(durable_lsn);
                if starts_segment {
                    state
                        .segment_first_lsn
                        .insert(batch.segment_seq, batch.first_lsn);
                }
                state.stats.batch_count += 1;
                state.stats.record_count += u64::from(batch.record_count);
                state.stats.written_bytes +=
                    (padded_bytes + if starts_segment { start } else { 0 }) as u64;
            }
            Err(error) => {
                if state.failed.is_none() {
                    state.failed = Some(error);
                }
            }
        }
        if state.failed.is_some() {
            // Nothing after a failure is acknowledged: durable_lsn stays where it is.
            state.in_flight.retain(|b| !b.done);
            self.wake_everyone();
            return state;
        }
        // The durable LSN advances over the batches that are all complete, oldest first;
        // their committers wake.
        let mut woken = 0;
        while state.in_flight.front().is_some_and(|b| b.done) {
            let done = state.in_flight.pop_front().expect("front exists");
            state.durable_lsn = state.durable_lsn.max(done.last_lsn);
            shared
                .durable_lsn
                .store(state.durable_lsn.get(), Ordering::Release);
            self.announce(wakes, done.batch_seq, true);
            woken += done.waiters;
        }
        // With one batch in flight, the next waits a moment for those just woken.
        if state.in_flight_limit == 1 && state.in_flight.is_empty() && woken > 1 {
            state.gather = Some(Gather {
                waiters: state.fill_waiters + woken,
                deadline: Instant::now() + GATHER_WAIT,
            });
        }
        // Segment files no batch can write to any more are closed.
        let oldest = state.oldest_segment_in_use();
        let stale: Vec<SegmentSeq> = state.files.range(..oldest).map(|(s, _)| *s).collect();
        for seq in stale {
            if let Some(file) = state.files.remove(&seq) {
                shared.device.close(file);
            }
        }
        state
    }
}

/// Places an empty batch at `segment_offset` of segment `segment_seq`, or at the start of
/// the next segment when too little room is left (offset 0 means "start this segment").
fn position_fill(
    fill: &mut Batch,
    segment_seq: SegmentSeq,
    segment_offset: u64,
    segment_size_bytes: u64,
    batch_size_bytes_max: usize,
) {
    let (mut seq, mut offset) = (segment_seq, segment_offset);
    if offset == 0 {
        offset = SEGMENT_HEADER_SIZE_BYTES as u64;
    }
    // A batch needs room for its header and at least one more block for records.
    if offset + 2 * BLOCK_SIZE_BYTES as u64 > segment_size_bytes {
        seq += 1;
        offset = SEGMENT_HEADER_SIZE_BYTES as u64;
    }
    fill.segment_seq = seq;
    fill.segment_offset = offset;
    fill.capacity_bytes = ((segment_size_bytes - offset) as usize).min(batch_size_bytes_max);
    fill.used_bytes = BATCH_HEADER_SIZE_BYTES;
    fill.record_count = 0;
    assert!(fill.capacity_bytes >= 2 * BLOCK_SIZE_BYTES);
    assert!(fill.segment_offset.is_multiple_of(BLOCK_SIZE_BYTES as u64));
}

fn check_usable(state: &WriterState) -> Result<(), LogError> {
    if let Some(failed) = &state.failed {
        return Err(LogError::Failed {
            cause: Box::new(failed.clone()),
        });
    }
    if state.closed {
        return Err(LogError::Closed);
    }
    Ok(())
}

fn random_log_id() -> u64 {
    let mut bytes = [0u8; 8];
    // SAFETY: `bytes` is a valid, writable buffer of the length passed.
    let got = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    if got == bytes.len() as isize {
        return u64::from_le_bytes(bytes);
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    nanos ^ (u64::from(std::process::id()) << 32)
}

impl<D: Device> Drop for Log<D> {
    fn drop(&mut self) {
        let mut state = self.lock();
        for (_, file) in std::mem::take(&mut state.files) {
            self.shared.device.close(file);
        }
    }
}

#[cfg(all(test, feature = "sim"))]
mod tests;
