//! [`LogReader`]: walks a log from its first segment and yields every record, then either
//! the clean end, a torn tail, or corruption with its segment, offset and LSN.
//!
//! A batch is accepted only whole: its header must be valid for the exact place it was read
//! from (log id, segment incarnation, offset, the next LSN, the CRC chain) and every record
//! in it must be valid and continue the chain. Where that fails, the reader decides what the
//! damage is with this table (first matching row wins; each row has a test):
//!
//! | # | evidence | verdict |
//! |---|---|---|
//! | 0 | the segment's file is shorter than a segment (segments are created whole), or a segment file is missing below one that exists, or the first live one is missing (segments are created in order and never removed from the middle) | corruption: truncated or removed from outside ([`LogError::MissingSegment`]) |
//! | 1 | a later batch of this log, valid for its own place, vouches for the LSN (`durable_lsn` >= it) | corruption; reading resumes there |
//! | 2 | the batch here is valid for this place, was written by the same or a newer writer epoch than the batch before it, yet does not continue it (LSN or CRC chain) | corruption: what came before is not what that writer saw durable |
//! | 3 | no batch of this segment's incarnation starts here (zeros, or stale bytes of a recycled segment), or the batch or segment header here was written by an older writer epoch than the batch before it (a discarded tail come back: it reuses the LSNs and chain values of the history that replaced it) | the clean end of the log |
//! | 4 | a batch of this incarnation starts here but is not whole, or the place is unreadable | a torn tail |
//!
//! Before the table: where no batch that continues the log starts at a place but the next
//! segment's header does (the LSN, the CRC chain, the epoch), and no batch after the place
//! in this segment shows that a writer went on here (`written_on_here`), the writer left
//! the rest of this segment unused or wrote only marks in it, and reading goes on there:
//! nothing that place holds (zeros, stale bytes, a mark that cannot be read) is a record.
//!
//! A damaged mark between record batches is corruption (row 1), not read past, though in
//! one history a mark holds no record: recovery's mark, damaged, with the history it
//! discarded come back after it reads the same (`damage_table.rs`,
//! `a_discarded_history_past_recoverys_damaged_mark_is_refused_never_read`).
//!
//! A batch's `durable_lsn` is what was durable when it was sealed, so a batch past the
//! damage that vouches for it proves the damaged bytes were durable once; without such a
//! batch the damage is in a write that was never acknowledged.

mod io;
mod judge;

use io::{Chunk, ReadAhead};
use judge::{Found, Judged};

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::PathBuf;

use super::segment::{parse_segment_file_name, read_meta, segment_file_name};
use super::{LogError, Lsn};
use crate::constants::{
    BATCH_HEADER_SIZE_BYTES, BLOCK_SIZE_BYTES, SCAN_CHUNK_SIZE_BYTES, SEGMENT_COUNT_MAX,
    SEGMENT_HEADER_SIZE_BYTES,
};
use crate::format::{chain_seed, decode_record, BatchHeader, LogMeta, RecordFields, SegmentHeader};
use crate::ids::SegmentSeq;
use crate::io::{AlignedBuf, Device, FileId, IoError, IoErrorKind};

/// How many reads of a place in a row must return the same bytes before the reader judges
/// damage on them.
const READS_THAT_AGREE: usize = 3;

/// A confirmed read covers at most this fraction of a segment (or what it was asked for).
const VERIFY_READ_PARTS: usize = 16;

/// How many more reads of a place a confirmed read tries before it gives up on the device.
const READS_TO_AGREE_MAX: usize = 16;

/// A record read back from the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// Its LSN.
    pub lsn: Lsn,
    /// Transaction, step and kind.
    pub fields: RecordFields,
    /// Its payload.
    pub payload: Vec<u8>,
    /// Its CRC (valid: the reader yields no other).
    pub crc: u32,
    /// The CRC of the record before it (the chain).
    pub prev_crc: u32,
    /// The segment it was read from.
    pub segment_seq: SegmentSeq,
    /// Offset of its batch in the segment.
    pub batch_offset: u64,
}

/// Where and what damage the reader found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Damage {
    /// Segment sequence number.
    pub segment_seq: SegmentSeq,
    /// Segment file path.
    pub path: PathBuf,
    /// Byte offset in the segment.
    pub offset: u64,
    /// The LSN expected there.
    pub lsn: Lsn,
    /// What is wrong.
    pub why: String,
    /// For corruption: the LSN at which reading resumed (records `lsn..resume_lsn` are lost).
    pub resume_lsn: Option<Lsn>,
}

/// One step of a scan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ScanItem {
    /// A valid record.
    Record(Record),
    /// Damage in the last write, after the durable mark: the end of the log.
    TornTail(Damage),
    /// Damage before the durable mark. The reader resumes after it (salvage).
    Corrupt(Damage),
}

/// Where a writer resumes after a scan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tail {
    /// LSN of the next record.
    pub next_lsn: Lsn,
    /// CRC chain value of the last record.
    pub chain: u32,
    /// The segment of the next batch.
    pub segment_seq: SegmentSeq,
    /// Offset of the next batch in it; 0 when the segment is not started.
    pub segment_offset: u64,
    /// Highest writer epoch seen.
    pub epoch: u32,
    /// First LSN of every started segment.
    pub segment_first_lsn: BTreeMap<SegmentSeq, Lsn>,
    /// The highest durable mark read: every LSN up to it was durable.
    pub mark_lsn: Lsn,
}

impl Tail {
    /// The tail of an empty log.
    pub fn empty(meta: &LogMeta) -> Tail {
        Tail {
            next_lsn: Lsn(1),
            chain: chain_seed(meta.log_id),
            segment_seq: meta.first_segment_seq,
            segment_offset: 0,
            epoch: 0,
            segment_first_lsn: BTreeMap::new(),
            mark_lsn: Lsn(0),
        }
    }
}

/// Counts gathered while scanning.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScanStats {
    /// Valid records.
    pub record_count: u64,
    /// Valid batches.
    pub batch_count: u64,
    /// Bytes of valid batches, padding included.
    pub batch_bytes: u64,
    /// Bytes read from the device.
    pub read_bytes: u64,
    /// Records per kind.
    pub kind_counts: BTreeMap<u16, u64>,
}

/// Reads a log from its first segment. See the module docs for the damage table.
pub struct LogReader<'d, D: Device + ?Sized> {
    device: &'d D,
    meta: LogMeta,
    present: BTreeSet<SegmentSeq>,
    files: BTreeMap<SegmentSeq, FileId>,
    chunk: Chunk,
    /// Bytes of room in front of a chunk's data, to carry a batch that straddles chunks.
    chunk_head_bytes: usize,
    /// Bytes of data a chunk holds.
    chunk_window_bytes: usize,
    read_ahead: Option<ReadAhead>,
    segment_seq: SegmentSeq,
    started: bool,
    offset: u64,
    expected_lsn: Lsn,
    chain: u32,
    last_epoch: u32,
    max_epoch: u32,
    mark_lsn: Lsn,
    queue: VecDeque<Record>,
    finished: bool,
    /// Whether the damage at the current place was already re-read once.
    reread: bool,
    /// Whether every device read must be confirmed by more reads of the same place
    /// (while damage is judged: a verdict that discards data rests on no single read).
    verify: bool,
    /// The later reads of a confirmed read.
    verify_buf: Option<AlignedBuf>,
    /// The side chunk's buffer, kept between side reads ([`Self::aside`]).
    aside_buf: Option<AlignedBuf>,
    /// Length of the current segment's file when it is shorter than a segment.
    truncated_len: Option<u64>,
    segment_first_lsn: BTreeMap<SegmentSeq, Lsn>,
    stats: ScanStats,
}

impl<D: Device + ?Sized> std::fmt::Debug for LogReader<'_, D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogReader")
            .field("segment_seq", &self.segment_seq)
            .field("offset", &self.offset)
            .field("expected_lsn", &self.expected_lsn)
            .finish_non_exhaustive()
    }
}

impl<'d, D: Device + ?Sized> LogReader<'d, D> {
    /// Opens the log on `device` for reading from its first segment.
    pub fn open(device: &'d D) -> Result<LogReader<'d, D>, LogError> {
        let meta = read_meta(device)?;
        let names = device.list()?;
        let present: BTreeSet<SegmentSeq> = names
            .iter()
            .filter_map(|n| parse_segment_file_name(n))
            .filter(|seq| *seq >= meta.first_segment_seq)
            .collect();
        if present.len() > SEGMENT_COUNT_MAX {
            return Err(LogError::InvalidOptions(format!(
                "{} segment files, more than the {SEGMENT_COUNT_MAX} a log may hold",
                present.len()
            )));
        }
        let window = SCAN_CHUNK_SIZE_BYTES.min(meta.segment_size_bytes as usize);
        let head = crate::constants::batch_size_bytes_max(meta.segment_size_bytes);
        Ok(LogReader {
            device,
            meta,
            present,
            files: BTreeMap::new(),
            chunk: Chunk {
                buf: AlignedBuf::new_zeroed(head + window),
                base: head,
                segment_seq: SegmentSeq(0),
                start: 0,
                len: 0,
            },
            chunk_head_bytes: head,
            chunk_window_bytes: window,
            read_ahead: None,
            segment_seq: meta.first_segment_seq,
            started: false,
            offset: 0,
            expected_lsn: Lsn(1),
            chain: chain_seed(meta.log_id),
            last_epoch: 0,
            max_epoch: 0,
            mark_lsn: Lsn(0),
            queue: VecDeque::new(),
            finished: false,
            reread: false,
            verify: false,
            verify_buf: None,
            aside_buf: None,
            truncated_len: None,
            segment_first_lsn: BTreeMap::new(),
            stats: ScanStats::default(),
        })
    }

    /// The log's metadata.
    pub fn meta(&self) -> &LogMeta {
        &self.meta
    }

    /// Segment files present from the first live one.
    pub fn segment_count(&self) -> usize {
        self.present.len()
    }

    /// Counts so far.
    pub fn stats(&self) -> &ScanStats {
        &self.stats
    }

    /// Bytes of segments behind the reader's position (for progress bars).
    pub fn position_bytes(&self) -> u64 {
        let done = self.present.range(..self.segment_seq).count() as u64;
        done * self.meta.segment_size_bytes + self.offset
    }

    /// Where a writer resumes: valid once the reader has returned `None` or a torn tail.
    pub fn tail(&self) -> Tail {
        Tail {
            next_lsn: self.expected_lsn,
            chain: self.chain,
            segment_seq: self.segment_seq,
            segment_offset: if self.started { self.offset } else { 0 },
            epoch: self.max_epoch,
            segment_first_lsn: self.segment_first_lsn.clone(),
            mark_lsn: self.mark_lsn,
        }
    }

    fn path(&self, seq: SegmentSeq) -> PathBuf {
        self.device.path_of(&segment_file_name(seq))
    }

    fn file(&mut self, seq: SegmentSeq) -> Result<FileId, IoError> {
        if let Some(file) = self.files.get(&seq) {
            return Ok(*file);
        }
        let file = self.device.open(&segment_file_name(seq), false)?;
        self.files.insert(seq, file);
        Ok(file)
    }

    /// Reads the next item: a record, damage, or `None` at the end of the log.
    pub fn next_item(&mut self) -> Result<Option<ScanItem>, LogError> {
        // What the damage table makes of a place: an item to yield, or read on (the place is
        // read again, each read confirmed).
        macro_rules! judged {
            ($damage:expr) => {
                match $damage? {
                    Judged::Item(item) => return Ok(item),
                    Judged::Again => continue,
                }
            };
        }
        loop {
            if let Some(record) = self.queue.pop_front() {
                return Ok(Some(ScanItem::Record(record)));
            }
            if self.finished {
                return Ok(None);
            }
            if !self.started {
                match self.segment_header(self.segment_seq)? {
                    Ok(h) if self.continues(h.first_lsn, h.prev_crc, h.epoch) => {
                        self.start_segment(&h);
                        continue;
                    }
                    Ok(h) if h.epoch < self.last_epoch => {
                        // Started by an older writer than the batch before it: a segment of
                        // an abandoned history, come back. No evidence of a write.
                        let why = format!(
                            "segment header of writer epoch {}, older than the last batch's {}",
                            h.epoch, self.last_epoch
                        );
                        judged!(self.damage(0, why, false))
                    }
                    Ok(h)
                        if self.segment_seq == self.meta.first_segment_seq
                            && self.meta.first_segment_seq > SegmentSeq(1)
                            && self.stats.batch_count == 0
                            && self.expected_lsn == Lsn(1) =>
                    {
                        // The first live segment defines where the log starts (its prefix
                        // was released).
                        self.expected_lsn = h.first_lsn;
                        self.chain = h.prev_crc;
                        self.start_segment(&h);
                        continue;
                    }
                    Ok(h) => {
                        let why = format!(
                            "segment starts at LSN {} with chain {:#010x}, expected LSN {} chain {:#010x}",
                            h.first_lsn, h.prev_crc, self.expected_lsn, self.chain
                        );
                        // A header of this incarnation that does not continue the log: written
                        // here, so evidence of a write.
                        judged!(self.damage(0, why, true))
                    }
                    Err(why) => {
                        if !self.present.contains(&self.segment_seq) {
                            // The end of the log, unless this segment's file was removed
                            // from outside: the first live one always exists, segments are
                            // created in order (so none is missing below one present), and
                            // a later batch may prove this one held durable records.
                            let seq = self.segment_seq;
                            let removed = seq == self.meta.first_segment_seq
                                || self.present.range(seq..).next().is_some()
                                || matches!(self.look_ahead(seq, 0)?, Found::Vouch { .. });
                            if removed {
                                return Err(LogError::MissingSegment {
                                    segment_seq: seq,
                                    path: self.path(seq),
                                });
                            }
                            self.finished = true;
                            return Ok(None);
                        }
                        // Zeros or stale bytes of a recycled segment are no evidence of a
                        // write; a later batch may still prove the header was durable.
                        judged!(self.damage(0, why, false))
                    }
                }
            }
            if self.offset + 2 * BLOCK_SIZE_BYTES as u64 > self.meta.segment_size_bytes {
                self.next_segment();
                continue;
            }
            let (seq, offset) = (self.segment_seq, self.offset);
            let found = match self.header_at(seq, offset) {
                Ok(Ok(h)) if self.continues(h.first_lsn, h.prev_crc, h.epoch) => Ok(h),
                other => Err(other),
            };
            let header = match found {
                Ok(header) => header,
                Err(other) => {
                    let (why, evidence) = match other {
                        // An older writer's batch after a newer one's: stale bytes of an
                        // abandoned history (a discarded tail brought back), never a
                        // continuation, even when its LSN and chain fit.
                        Ok(Ok(h)) if h.epoch < self.last_epoch => (
                            format!(
                                "batch of writer epoch {}, older than the batch before it ({})",
                                h.epoch, self.last_epoch
                            ),
                            false,
                        ),
                        Ok(Ok(h)) => (
                            format!(
                                "batch claims LSN {} chain {:#010x}, expected LSN {} chain {:#010x}",
                                h.first_lsn, h.prev_crc, self.expected_lsn, self.chain
                            ),
                            true,
                        ),
                        // Only a batch header of this incarnation is evidence that the last
                        // write reached this place; zeros and stale bytes of a recycled
                        // segment are the clean end.
                        Ok(Err(why)) => (why, false),
                        // A truncated file is row 0, whatever follows it.
                        Err(e) if e.kind == IoErrorKind::UnexpectedEof => {
                            judged!(self.damage(offset, format!("unreadable: {e}"), true))
                        }
                        Err(e) if e.kind == IoErrorKind::Io => (format!("unreadable: {e}"), true),
                        Err(e) => return Err(e.into()),
                    };
                    // No batch that continues the log starts here. Where the next segment
                    // does, nothing here was a record (see `segment_continues_next`).
                    if self.segment_continues_next(offset)? {
                        // A new place: damage there gets its own re-read.
                        self.reread = false;
                        self.verify = false;
                        continue;
                    }
                    judged!(self.damage(offset, why, evidence))
                }
            };
            match self.read_batch(&header) {
                Ok(Ok(records)) => {
                    self.reread = false;
                    self.verify = false;
                    self.accept_batch(&header, records);
                }
                Ok(Err(why)) => judged!(self.damage(offset, why, true)),
                Err(e) if matches!(e.kind, IoErrorKind::Io | IoErrorKind::UnexpectedEof) => {
                    judged!(self.damage(offset, format!("unreadable: {e}"), true))
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    fn start_segment(&mut self, header: &SegmentHeader) {
        let seq = header.segment_seq;
        let len = self
            .file(seq)
            .and_then(|file| self.device.len(file))
            .unwrap_or(self.meta.segment_size_bytes);
        self.truncated_len = (len < self.meta.segment_size_bytes).then_some(len);
        self.started = true;
        self.offset = SEGMENT_HEADER_SIZE_BYTES as u64;
        self.max_epoch = self.max_epoch.max(header.epoch);
        self.segment_first_lsn
            .insert(header.segment_seq, header.first_lsn);
    }

    fn next_segment(&mut self) {
        if let Some(file) = self.files.remove(&self.segment_seq) {
            self.device.close(file);
        }
        self.segment_seq += 1;
        self.started = false;
        self.offset = 0;
        self.truncated_len = None;
    }

    /// Whether the log goes on in the next segment from `from` in this one, where no batch
    /// that continues it starts: the next segment's header continues the LSN, the CRC chain
    /// and the epoch read so far, and nothing from `from` to this segment's end shows that a
    /// writer went on here after the one that started the next ([`Self::written_on_here`]).
    /// The writer leaves the rest of a segment unused when a batch does not fit, and a mark
    /// (an empty batch) may come last, so then no record lies between: what the reader finds
    /// at `from` (zeros, a mark it cannot read, a misdirected read) loses nothing. A
    /// misdirected read cannot fake the next header (it names its segment's incarnation).
    fn segment_continues_next(&mut self, from: u64) -> Result<bool, LogError> {
        let next = self.segment_seq + 1;
        let header = match self.segment_header(next)? {
            Ok(h) if self.continues(h.first_lsn, h.prev_crc, h.epoch) => h,
            _ => return Ok(false),
        };
        if self.written_on_here(from, &header)? {
            return Ok(false);
        }
        self.next_segment();
        Ok(true)
    }

    /// Whether a batch or segment that starts at `first_lsn` after chain value `prev_crc`,
    /// written by writer `epoch`, continues the log read so far. Epochs never go down
    /// along a log (each writer's is above every earlier one's), so an older writer's bytes
    /// after a newer one's are stale, however well their LSN and chain fit: an abandoned
    /// tail reuses the LSNs and chain values of the history that replaced it.
    fn continues(&self, first_lsn: Lsn, prev_crc: u32, epoch: u32) -> bool {
        first_lsn == self.expected_lsn && prev_crc == self.chain && epoch >= self.last_epoch
    }

    /// Reads and checks every record of a batch whose header is valid here.
    fn read_batch(&mut self, header: &BatchHeader) -> Result<Result<Vec<Record>, String>, IoError> {
        let seq = self.segment_seq;
        let offset = self.offset;
        let used = header.used_bytes as usize;
        let expected_lsn = self.expected_lsn;
        let mut chain = self.chain;
        let bytes = self.bytes(seq, offset, used)?;
        let mut at = BATCH_HEADER_SIZE_BYTES;
        let mut records = Vec::with_capacity(header.record_count as usize);
        for i in 0..u64::from(header.record_count) {
            let lsn = expected_lsn + i;
            let (record, payload) = match decode_record(&bytes[at..used]) {
                Ok(decoded) => decoded,
                Err(why) => return Ok(Err(format!("record LSN {lsn} at batch byte {at}: {why}"))),
            };
            if record.lsn != lsn {
                return Ok(Err(format!(
                    "record at batch byte {at} has LSN {}, expected {lsn}",
                    record.lsn
                )));
            }
            if record.incarnation != seq.get() {
                return Ok(Err(format!(
                    "record LSN {lsn} of incarnation {}, not {seq}",
                    record.incarnation
                )));
            }
            if record.prev_crc != chain {
                return Ok(Err(format!("record LSN {lsn} breaks the CRC chain")));
            }
            chain = record.crc;
            at += crate::format::record_size_bytes(payload.len());
            records.push(Record {
                lsn,
                fields: record.fields,
                payload: payload.to_vec(),
                crc: record.crc,
                prev_crc: record.prev_crc,
                segment_seq: seq,
                batch_offset: offset,
            });
        }
        if at != used {
            return Ok(Err(format!(
                "records end at batch byte {at}, the header says {used}"
            )));
        }
        Ok(Ok(records))
    }

    fn accept_batch(&mut self, header: &BatchHeader, records: Vec<Record>) {
        if let Some(last) = records.last() {
            self.chain = last.crc;
        }
        self.expected_lsn += records.len() as u64;
        self.offset += header.padded_size_bytes() as u64;
        self.last_epoch = header.epoch;
        self.max_epoch = self.max_epoch.max(header.epoch);
        self.mark_lsn = self.mark_lsn.max(header.durable_lsn);
        self.stats.batch_count += 1;
        self.stats.batch_bytes += header.padded_size_bytes() as u64;
        for record in &records {
            self.stats.record_count += 1;
            *self
                .stats
                .kind_counts
                .entry(record.fields.kind)
                .or_default() += 1;
        }
        self.queue.extend(records);
    }
}

impl<D: Device + ?Sized> Drop for LogReader<'_, D> {
    fn drop(&mut self) {
        for (_, file) in std::mem::take(&mut self.files) {
            self.device.close(file);
        }
    }
}

impl<D: Device + ?Sized> Iterator for LogReader<'_, D> {
    type Item = Result<ScanItem, LogError>;
    fn next(&mut self) -> Option<Self::Item> {
        self.next_item().transpose()
    }
}
