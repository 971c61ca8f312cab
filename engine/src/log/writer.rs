//! [`Log`]: appends from many threads, made durable by group commit.
//!
//! Appenders encode their records straight into the batch being filled (one aligned buffer),
//! under one mutex. The first thread that needs a record durable while no batch is in
//! flight becomes the leader: it seals the filling batch, installs the spare buffer as the
//! next one, and writes the sealed batch with one write + fdatasync while the others keep
//! filling the next batch. When the write completes it wakes everyone; the first waiter
//! whose record is still not durable leads the next batch. There is never more than one
//! batch in flight, so every batch's `durable_lsn` (the durable mark) covers every batch
//! before it, and at most one batch's worth of bytes past the tail can be unsynced at a
//! crash. No thread ever sleeps to wait for company: the batch size follows the load.
//!
//! A failed write or sync is fail-stop: the log records the failure, wakes every waiter
//! with it, and refuses every later append and wait.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use super::segment::{self, Preparer};
use super::{LogError, Lsn};
use crate::constants::{
    align_up, batch_size_bytes_max, BATCH_HEADER_SIZE_BYTES, BLOCK_SIZE_BYTES,
    RECORD_PAYLOAD_SIZE_BYTES_MAX, SEGMENT_HEADER_SIZE_BYTES, SEGMENT_SIZE_BYTES_MAX,
    SEGMENT_SIZE_BYTES_MIN,
};
use crate::format::{
    encode_record, record_size_bytes, BatchHeader, Meta, RecordFields, SegmentHeader,
};
use crate::io::{AlignedBuf, Device, FileId};

use super::reader::Tail;

/// How many batches a leader writes after its own before it returns, when more records
/// are waiting: the device stays busy without waiting for another thread to wake.
const LEADER_EXTRA_BATCHES_MAX: u32 = 2;

/// A record to append.
#[derive(Clone, Copy, Debug)]
pub struct NewRecord<'a> {
    /// Transaction id.
    pub txn_id: u64,
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
    /// Batches written (each one write + one fdatasync).
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
    segment_seq: u64,
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

#[derive(Debug)]
struct WriterState {
    fill: Batch,
    spare: Option<AlignedBuf>,
    in_flight: bool,
    next_lsn: Lsn,
    chain: u32,
    durable_lsn: Lsn,
    mark_lsn: Lsn,
    failed: Option<LogError>,
    closed: bool,
    /// The segment the last written batch went to, and its open file.
    current: Option<(u64, FileId)>,
    /// First LSN of every live segment that has been started.
    segment_first_lsn: BTreeMap<u64, Lsn>,
    /// Sequence number of the batch being filled; the one in flight is one less.
    fill_batch_seq: u64,
    /// Last LSN of the batch in flight.
    in_flight_last_lsn: Lsn,
    stats: LogStats,
}

#[derive(Debug)]
struct Shared<D: Device> {
    device: Arc<D>,
    meta: Mutex<Meta>,
    epoch: u32,
    batch_size_bytes_max: usize,
    state: Mutex<WriterState>,
    /// Waiters for batch `n` sleep on `batch_done[n % 2]`: a batch's completion wakes its
    /// own committers, not the ones already gathering in the next batch.
    batch_done: [Condvar; 2],
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
            || size % BLOCK_SIZE_BYTES as u64 != 0
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
        let meta = Meta {
            log_id: random_log_id(),
            segment_size_bytes: size,
            first_segment_seq: 1,
            created_unix_secs: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
        };
        segment::prepare_now(&*device, 1, size)?;
        segment::write_meta(&*device, &meta)?;
        let tail = Tail::empty(&meta);
        Log::open_at(device, meta, &tail)
    }

    /// Opens a log for writing at `tail`, as found by a recovery scan. The caller (recovery)
    /// has made sure nothing past the tail can be mistaken for a record.
    pub fn open_at(device: Arc<D>, meta: Meta, tail: &Tail) -> Result<Log<D>, LogError> {
        let batch_size_bytes_max = batch_size_bytes_max(meta.segment_size_bytes);
        let fill = Batch {
            buf: AlignedBuf::new_zeroed(SEGMENT_HEADER_SIZE_BYTES + batch_size_bytes_max),
            segment_seq: tail.segment_seq,
            segment_offset: 0,
            capacity_bytes: 0,
            used_bytes: BATCH_HEADER_SIZE_BYTES,
            record_count: 0,
            first_lsn: tail.next_lsn,
            prev_crc: tail.chain,
        };
        let mut state = WriterState {
            fill,
            spare: Some(AlignedBuf::new_zeroed(
                SEGMENT_HEADER_SIZE_BYTES + batch_size_bytes_max,
            )),
            in_flight: false,
            next_lsn: tail.next_lsn,
            chain: tail.chain,
            durable_lsn: tail.next_lsn - 1,
            mark_lsn: tail.next_lsn - 1,
            failed: None,
            closed: false,
            current: None,
            segment_first_lsn: tail.segment_first_lsn.clone(),
            fill_batch_seq: 1,
            in_flight_last_lsn: 0,
            stats: LogStats::default(),
        };
        position_fill(
            &mut state.fill,
            tail.segment_seq,
            tail.segment_offset,
            meta.segment_size_bytes,
            batch_size_bytes_max,
        );
        // The preparer checks (and creates or completes) every segment from the first one
        // the writer may need; a started segment is whole already.
        let ready_up_to = if tail.segment_offset == 0 {
            tail.segment_seq - 1
        } else {
            tail.segment_seq
        };
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
                epoch: tail.epoch.saturating_add(1),
                batch_size_bytes_max,
                state: Mutex::new(state),
                batch_done: [Condvar::new(), Condvar::new()],
                appended_lsn: AtomicU64::new(tail.next_lsn - 1),
            }),
            preparer,
        })
    }

    /// The device the log is on.
    pub fn device(&self) -> &Arc<D> {
        &self.shared.device
    }

    /// The log's metadata.
    pub fn meta(&self) -> Meta {
        *self.shared.meta.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The open epoch this writer stamps into its batches.
    pub fn epoch(&self) -> u32 {
        self.shared.epoch
    }

    /// Appends `records` with consecutive LSNs, in one batch (so they become durable
    /// together or not at all), and returns the LSN of the last. Not durable until
    /// [`Log::wait_durable`] returns for it.
    pub fn append(&self, records: &[NewRecord<'_>]) -> Result<Lsn, LogError> {
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
                break;
            }
            if state.fill.record_count == 0 {
                // Not even an empty batch here has room: the rest of this segment stays
                // unused and the batch starts the next segment.
                let next = state.fill.segment_seq + 1;
                let meta = self.meta();
                position_fill(
                    &mut state.fill,
                    next,
                    0,
                    meta.segment_size_bytes,
                    self.shared.batch_size_bytes_max,
                );
                continue;
            }
            if state.in_flight {
                state = self.wait(state);
            } else {
                state = self.lead(state);
            }
        }
        let mut lsn = state.next_lsn;
        let mut chain = state.chain;
        assert_eq!(
            lsn,
            state.fill.first_lsn + Lsn::from(state.fill.record_count)
        );
        let fill = &mut state.fill;
        for record in records {
            let size = record_size_bytes(record.payload.len());
            let at = SEGMENT_HEADER_SIZE_BYTES + fill.used_bytes;
            chain = encode_record(
                &mut fill.buf[at..at + size],
                lsn,
                fill.segment_seq,
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
        self.shared.appended_lsn.store(lsn - 1, Ordering::Release);
        Ok(lsn - 1)
    }

    /// Waits until every record up to `lsn` is durable, leading a batch if none is in flight.
    pub fn wait_durable(&self, lsn: Lsn) -> Result<(), LogError> {
        let mut state = self.lock();
        loop {
            if state.durable_lsn >= lsn {
                return Ok(());
            }
            check_usable(&state)?;
            assert!(lsn < state.next_lsn, "waiting for LSN {lsn} never appended");
            if state.in_flight && lsn <= state.in_flight_last_lsn {
                state = self.wait(state);
            } else if state.in_flight {
                // Wait with the next batch's committers; one of them is woken to lead it.
                let cv = &self.shared.batch_done[(state.fill_batch_seq % 2) as usize];
                state = cv.wait(state).unwrap_or_else(|e| e.into_inner());
            } else {
                state = self.lead(state);
                // The device is idle now. If records are waiting, write them at once rather
                // than hand the next batch to a thread that has yet to wake up; a few times
                // at most, so no caller waits long for its own durable record.
                let mut extra = 0;
                while extra < LEADER_EXTRA_BATCHES_MAX
                    && state.fill.record_count > 0
                    && !state.in_flight
                    && state.failed.is_none()
                {
                    state = self.lead(state);
                    extra += 1;
                }
            }
        }
    }

    /// Appends and waits until the records are durable.
    pub fn append_durable(&self, records: &[NewRecord<'_>]) -> Result<Lsn, LogError> {
        let lsn = self.append(records)?;
        self.wait_durable(lsn)?;
        Ok(lsn)
    }

    /// Makes everything appended so far durable.
    pub fn sync(&self) -> Result<Lsn, LogError> {
        let lsn = self.shared.appended_lsn.load(Ordering::Acquire);
        self.wait_durable(lsn)?;
        Ok(lsn)
    }

    /// Highest LSN known durable.
    pub fn durable_lsn(&self) -> Lsn {
        self.lock().durable_lsn
    }

    /// The durable mark of the last durable batch: every LSN up to it is vouched for by a
    /// later batch on disk, so damage below it is corruption, never a torn tail.
    pub fn mark_lsn(&self) -> Lsn {
        self.lock().mark_lsn
    }

    /// LSN of the last record appended (durable or not).
    pub fn last_lsn(&self) -> Lsn {
        self.shared.appended_lsn.load(Ordering::Acquire)
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
    /// zeroed) cannot come back as a continuation of the log even if the zeroing is lost.
    pub fn write_mark(&self) -> Result<Lsn, LogError> {
        let lsn = self.sync()?;
        let mut state = self.lock();
        loop {
            check_usable(&state)?;
            if state.in_flight {
                state = self.wait(state);
                continue;
            }
            if state.fill.record_count > 0
                || state.mark_lsn < state.durable_lsn
                || state.stats.batch_count == 0
            {
                state = self.lead(state);
                check_usable(&state)?;
            }
            return Ok(lsn);
        }
    }

    /// Writes a final durable mark ([`Log::write_mark`]) and closes the log.
    pub fn close(self) -> Result<Lsn, LogError> {
        let lsn = self.write_mark()?;
        self.lock().closed = true;
        Ok(lsn)
    }

    /// Waits until the next `count` segments after the one being filled exist, created and
    /// zero-filled (a benchmark or a bulk load calls this before it starts).
    pub fn reserve_segments(&self, count: u64) -> Result<(), LogError> {
        let seq = self.lock().fill.segment_seq;
        self.preparer.reserve(seq + count)?;
        Ok(())
    }

    /// Releases the segments whose records all have LSNs up to `lsn` (checkpointed or
    /// purged): the `LOG` file's first segment moves past them, then their files are
    /// recycled as future segments. Never touches the segment being written.
    pub fn release_prefix(&self, lsn: Lsn) -> Result<u64, LogError> {
        let (new_first, released) = {
            let state = self.lock();
            let current = state.fill.segment_seq.min(
                state
                    .current
                    .map(|(seq, _)| seq)
                    .unwrap_or(state.fill.segment_seq),
            );
            let mut new_first = None;
            for (&seq, _) in state.segment_first_lsn.iter() {
                if seq >= current {
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
            let released: Vec<u64> = state
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
        let updated = Meta {
            first_segment_seq: new_first,
            ..*meta
        };
        segment::write_meta(&*self.shared.device, &updated)?;
        *meta = updated;
        drop(meta);
        let mut state = self.lock();
        for seq in &released {
            state.segment_first_lsn.remove(seq);
        }
        drop(state);
        self.preparer
            .recycle(released.iter().map(|s| segment::segment_file_name(*s)));
        Ok(released.len() as u64)
    }

    fn lock(&self) -> MutexGuard<'_, WriterState> {
        self.shared.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until the batch in flight completes (or anything else ends the wait).
    fn wait<'a>(&'a self, state: MutexGuard<'a, WriterState>) -> MutexGuard<'a, WriterState> {
        let in_flight_seq = state.fill_batch_seq - 1;
        self.shared.batch_done[(in_flight_seq % 2) as usize]
            .wait(state)
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Seals the filling batch and writes it; returns with the lock held again.
    fn lead<'a>(&'a self, mut state: MutexGuard<'a, WriterState>) -> MutexGuard<'a, WriterState> {
        assert!(!state.in_flight);
        let shared = &*self.shared;
        let meta = self.meta();
        let spare = state
            .spare
            .take()
            .expect("the spare buffer is home when nothing is in flight");
        let next_lsn = state.next_lsn;
        let chain = state.chain;
        let mut batch = std::mem::replace(
            &mut state.fill,
            Batch {
                buf: spare,
                segment_seq: 0,
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
            meta.segment_size_bytes,
            shared.batch_size_bytes_max,
        );
        assert_eq!(state.durable_lsn + 1, batch.first_lsn);
        let durable_lsn = state.durable_lsn;
        let header = BatchHeader {
            record_count: batch.record_count,
            log_id: meta.log_id,
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
                log_id: meta.log_id,
                segment_seq: batch.segment_seq,
                first_lsn: batch.first_lsn,
                segment_size_bytes: meta.segment_size_bytes,
                prev_crc: batch.prev_crc,
            }
            .encode(&mut batch.buf[..SEGMENT_HEADER_SIZE_BYTES]);
        }
        let current = state.current;
        state.in_flight = true;
        state.in_flight_last_lsn = next_lsn - 1;
        let batch_seq = state.fill_batch_seq;
        state.fill_batch_seq += 1;
        drop(state);

        let result = (|| -> Result<FileId, LogError> {
            let file = match current {
                Some((seq, file)) if seq == batch.segment_seq => file,
                _ => {
                    self.preparer.wait_ready(batch.segment_seq)?;
                    let file = shared
                        .device
                        .open(&segment::segment_file_name(batch.segment_seq), false)?;
                    if let Some((_, old)) = current {
                        shared.device.close(old);
                    }
                    file
                }
            };
            let (from, offset) = if starts_segment {
                (0, 0)
            } else {
                (SEGMENT_HEADER_SIZE_BYTES, batch.segment_offset)
            };
            shared
                .device
                .write_durable_at(file, offset, &batch.buf[from..start + padded_bytes])?;
            Ok(file)
        })();

        let mut state = self.lock();
        state.in_flight = false;
        state.spare = Some(batch.buf);
        match result {
            Ok(file) => {
                state.current = Some((batch.segment_seq, file));
                state.durable_lsn = batch.first_lsn + u64::from(batch.record_count) - 1;
                state.mark_lsn = durable_lsn;
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
                state.current = None;
                if state.failed.is_none() {
                    state.failed = Some(error);
                }
            }
        }
        if state.failed.is_some() {
            shared.batch_done.iter().for_each(Condvar::notify_all);
        } else {
            shared.batch_done[(batch_seq % 2) as usize].notify_all();
            if state.fill.record_count > 0 {
                // Someone gathering in the next batch leads it, unless this leader does.
                shared.batch_done[(state.fill_batch_seq % 2) as usize].notify_one();
            }
        }
        state
    }
}

/// Places an empty batch at `segment_offset` of segment `segment_seq`, or at the start of
/// the next segment when too little room is left (offset 0 means "start this segment").
fn position_fill(
    fill: &mut Batch,
    segment_seq: u64,
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
    assert!(fill.segment_offset % BLOCK_SIZE_BYTES as u64 == 0);
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
        if let Some((_, file)) = state.current.take() {
            self.shared.device.close(file);
        }
    }
}
