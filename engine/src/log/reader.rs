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
//! A batch's `durable_lsn` is what was durable when it was sealed, so a batch past the
//! damage that vouches for it proves the damaged bytes were durable once; without such a
//! batch the damage is in a write that was never acknowledged.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::PathBuf;
use std::sync::mpsc;

use super::segment::{parse_segment_file_name, read_meta, segment_file_name};
use super::{LogError, Lsn};
use crate::constants::{
    BATCH_HEADER_SIZE_BYTES, BLOCK_SIZE_BYTES, SCAN_CHUNK_SIZE_BYTES, SEGMENT_COUNT_MAX,
    SEGMENT_HEADER_SIZE_BYTES,
};
use crate::format::{
    chain_seed, decode_record, BatchHeader, DecodeError, Meta, RecordFields, SegmentHeader,
};
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
    pub segment_seq: u64,
    /// Offset of its batch in the segment.
    pub batch_offset: u64,
}

/// Where and what damage the reader found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Damage {
    /// Segment sequence number.
    pub segment_seq: u64,
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
    pub segment_seq: u64,
    /// Offset of the next batch in it; 0 when the segment is not started.
    pub segment_offset: u64,
    /// Highest writer epoch seen.
    pub epoch: u32,
    /// First LSN of every started segment.
    pub segment_first_lsn: BTreeMap<u64, Lsn>,
    /// The highest durable mark read: every LSN up to it was durable.
    pub mark_lsn: Lsn,
}

impl Tail {
    /// The tail of an empty log.
    pub fn empty(meta: &Meta) -> Tail {
        Tail {
            next_lsn: 1,
            chain: chain_seed(meta.log_id),
            segment_seq: meta.first_segment_seq,
            segment_offset: 0,
            epoch: 0,
            segment_first_lsn: BTreeMap::new(),
            mark_lsn: 0,
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

/// The bytes of segment `segment_seq` from `start` for `len`, held at `buf[base..]`.
struct Chunk {
    buf: AlignedBuf,
    base: usize,
    segment_seq: u64,
    start: u64,
    len: usize,
}

/// A read the read-ahead thread is asked to do, into the buffer after its head room.
struct ReadRequest {
    segment_seq: u64,
    offset: u64,
    len: usize,
    buf: AlignedBuf,
}

/// What the read-ahead thread read.
struct ReadDone {
    request: ReadRequest,
    result: Result<(), IoError>,
}

/// A thread that reads the next chunk while the reader checks this one.
struct ReadAhead {
    requests: mpsc::Sender<ReadRequest>,
    done: mpsc::Receiver<ReadDone>,
    /// A read is outstanding.
    pending: bool,
    /// The buffer the next read goes into.
    spare: Option<AlignedBuf>,
}

enum Found {
    /// A batch, valid for its own place, vouching for the damaged LSN.
    Vouch {
        segment_seq: u64,
        offset: u64,
        first_lsn: Lsn,
        prev_crc: u32,
        why: String,
    },
    Nothing,
}

/// Reads a log from its first segment. See the module docs for the damage table.
pub struct LogReader<'d, D: Device + ?Sized> {
    device: &'d D,
    meta: Meta,
    present: BTreeSet<u64>,
    files: BTreeMap<u64, FileId>,
    chunk: Chunk,
    /// Bytes of room in front of a chunk's data, to carry a batch that straddles chunks.
    chunk_head_bytes: usize,
    /// Bytes of data a chunk holds.
    chunk_window_bytes: usize,
    read_ahead: Option<ReadAhead>,
    segment_seq: u64,
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
    /// Length of the current segment's file when it is shorter than a segment.
    truncated_len: Option<u64>,
    segment_first_lsn: BTreeMap<u64, Lsn>,
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
        let present: BTreeSet<u64> = names
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
                segment_seq: 0,
                start: 0,
                len: 0,
            },
            chunk_head_bytes: head,
            chunk_window_bytes: window,
            read_ahead: None,
            segment_seq: meta.first_segment_seq,
            started: false,
            offset: 0,
            expected_lsn: 1,
            chain: chain_seed(meta.log_id),
            last_epoch: 0,
            max_epoch: 0,
            mark_lsn: 0,
            queue: VecDeque::new(),
            finished: false,
            reread: false,
            verify: false,
            verify_buf: None,
            truncated_len: None,
            segment_first_lsn: BTreeMap::new(),
            stats: ScanStats::default(),
        })
    }

    /// The log's metadata.
    pub fn meta(&self) -> &Meta {
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

    fn path(&self, seq: u64) -> PathBuf {
        self.device.path_of(&segment_file_name(seq))
    }

    fn file(&mut self, seq: u64) -> Result<FileId, IoError> {
        if let Some(file) = self.files.get(&seq) {
            return Ok(*file);
        }
        let file = self.device.open(&segment_file_name(seq), false)?;
        self.files.insert(seq, file);
        Ok(file)
    }

    /// Starts a thread, in `scope`, that reads the next chunk of the log while the reader
    /// checks the current one, so a scan runs at the device's read rate rather than at read
    /// time plus check time.
    pub fn read_ahead<'scope>(&mut self, scope: &'scope std::thread::Scope<'scope, '_>)
    where
        'd: 'scope,
    {
        let (requests, inbox) = mpsc::channel::<ReadRequest>();
        let (outbox, done) = mpsc::channel::<ReadDone>();
        let device = self.device;
        let head = self.chunk_head_bytes;
        scope.spawn(move || {
            // The segment file stays open while the reads stay in it.
            let mut open: Option<(u64, FileId)> = None;
            for mut request in inbox {
                let seq = request.segment_seq;
                let file = match open {
                    Some((open_seq, file)) if open_seq == seq => Ok(file),
                    _ => {
                        if let Some((_, file)) = open.take() {
                            device.close(file);
                        }
                        let opened = device.open(&segment_file_name(seq), false);
                        if let Ok(file) = opened {
                            open = Some((seq, file));
                        }
                        opened
                    }
                };
                let range = head..head + request.len;
                let result = file
                    .and_then(|file| device.read_at(file, request.offset, &mut request.buf[range]));
                if outbox.send(ReadDone { request, result }).is_err() {
                    break;
                }
            }
            if let Some((_, file)) = open {
                device.close(file);
            }
        });
        self.read_ahead = Some(ReadAhead {
            requests,
            done,
            pending: false,
            spare: Some(AlignedBuf::new_zeroed(head + self.chunk_window_bytes)),
        });
    }

    /// Asks the read-ahead thread for the chunk after the current one.
    fn request_next_chunk(&mut self) {
        let Some(ahead) = self.read_ahead.as_mut() else {
            return;
        };
        if ahead.pending || self.chunk.len == 0 {
            return;
        }
        let size = self.meta.segment_size_bytes;
        let mut seq = self.chunk.segment_seq;
        let mut offset = self.chunk.start + self.chunk.len as u64;
        if offset >= size {
            seq += 1;
            offset = 0;
            if !self.present.contains(&seq) {
                return;
            }
        }
        let Some(buf) = ahead.spare.take() else {
            return;
        };
        let len = ((size - offset) as usize).min(self.chunk_window_bytes);
        let request = ReadRequest {
            segment_seq: seq,
            offset,
            len,
            buf,
        };
        match ahead.requests.send(request) {
            Ok(()) => ahead.pending = true,
            Err(mpsc::SendError(request)) => ahead.spare = Some(request.buf),
        }
    }

    /// Takes the outstanding read-ahead when it holds `len` bytes at `offset` of `seq`
    /// (with what the current chunk holds just before it). Returns whether it did.
    fn take_read_ahead(&mut self, seq: u64, offset: u64, len: usize) -> bool {
        let Some(ahead) = self.read_ahead.as_mut() else {
            return false;
        };
        if !ahead.pending {
            return false;
        }
        ahead.pending = false;
        let Ok(ReadDone { request, result }) = ahead.done.recv() else {
            return false;
        };
        let chunk = &self.chunk;
        let next = request.offset;
        let contiguous =
            chunk.len > 0 && chunk.segment_seq == seq && next == chunk.start + chunk.len as u64;
        let usable = result.is_ok()
            && request.segment_seq == seq
            && offset + len as u64 <= next + request.len as u64
            && if offset < next {
                // Carry the tail of the current chunk in front of the new data.
                contiguous && offset >= chunk.start && next - offset <= self.chunk_head_bytes as u64
            } else {
                true
            };
        if !usable {
            ahead.spare = Some(request.buf);
            return false;
        }
        let mut buf = request.buf;
        let head = self.chunk_head_bytes;
        let (start, carry) = if offset < next {
            let carry = (next - offset) as usize;
            let from = chunk.base + (offset - chunk.start) as usize;
            buf[head - carry..head].copy_from_slice(&chunk.buf[from..from + carry]);
            (offset, carry)
        } else {
            (next, 0)
        };
        let old = std::mem::replace(
            &mut self.chunk,
            Chunk {
                buf,
                base: head - carry,
                segment_seq: seq,
                start,
                len: carry + request.len,
            },
        );
        self.stats.read_bytes += request.len as u64;
        if let Some(ahead) = self.read_ahead.as_mut() {
            ahead.spare = Some(old.buf);
        }
        true
    }

    /// Returns `len` bytes at `offset` of segment `seq` (within one scan chunk).
    fn bytes(&mut self, seq: u64, offset: u64, len: usize) -> Result<&[u8], IoError> {
        assert!(len <= self.chunk_window_bytes);
        let chunk = &self.chunk;
        let cached = chunk.segment_seq == seq
            && offset >= chunk.start
            && offset + len as u64 <= chunk.start + chunk.len as u64;
        if !cached && !self.verify && self.take_read_ahead(seq, offset, len) {
            self.request_next_chunk();
        } else if !cached {
            let file = self.file(seq)?;
            let file_len = self.device.len(file)?;
            let segment_len = self.meta.segment_size_bytes.min(file_len);
            if offset + len as u64 > segment_len {
                return Err(IoError::new(
                    crate::io::IoOp::Read,
                    self.path(seq),
                    segment_len,
                    IoErrorKind::UnexpectedEof,
                ));
            }
            let mut aligned_len = ((segment_len - offset) as usize).min(self.chunk_window_bytes)
                / BLOCK_SIZE_BYTES
                * BLOCK_SIZE_BYTES;
            if self.verify {
                // A confirmed read covers a small part of its file, so a misdirected read
                // has many places to come from and reads that agree by chance are rare.
                let part =
                    (self.meta.segment_size_bytes as usize / VERIFY_READ_PARTS / BLOCK_SIZE_BYTES
                        * BLOCK_SIZE_BYTES)
                        .max(crate::constants::align_up(len, BLOCK_SIZE_BYTES));
                aligned_len = aligned_len.min(part);
            }
            let head = self.chunk_head_bytes;
            self.chunk.len = 0;
            self.chunk.base = head;
            let mut read_len = aligned_len;
            if let Err(e) = self.read_chunk(seq, file, offset, read_len) {
                if e.kind != IoErrorKind::Io {
                    return Err(e);
                }
                // One unreadable sector must not hide a whole chunk: read only what was
                // asked for, so the error (if it persists) names this place alone.
                read_len = crate::constants::align_up(len, BLOCK_SIZE_BYTES);
                self.read_chunk(seq, file, offset, read_len)?;
            }
            self.chunk.segment_seq = seq;
            self.chunk.start = offset;
            self.chunk.len = read_len;
            self.request_next_chunk();
        }
        let at = self.chunk.base + (offset - self.chunk.start) as usize;
        Ok(&self.chunk.buf[at..at + len])
    }

    /// Reads `len` bytes at `offset` of `file` into the chunk's data. While damage is
    /// judged (`verify`), a read counts only when [`READS_THAT_AGREE`] reads of the place in
    /// a row return the same bytes: a misdirected read returns another place's bytes, and a
    /// verdict taken on them could discard a durable tail or miss the batch that vouches
    /// for it. Two misdirected reads can agree (both from one other place, or both from
    /// zeros), so two are not enough.
    fn read_chunk(
        &mut self,
        seq: u64,
        file: FileId,
        offset: u64,
        len: usize,
    ) -> Result<(), IoError> {
        let head = self.chunk_head_bytes;
        self.device
            .read_at(file, offset, &mut self.chunk.buf[head..head + len])?;
        self.stats.read_bytes += len as u64;
        if !self.verify {
            return Ok(());
        }
        let window = self.chunk_window_bytes;
        let mut agreeing = 1;
        for _ in 0..READS_TO_AGREE_MAX {
            let again = self
                .verify_buf
                .get_or_insert_with(|| AlignedBuf::new_zeroed(window));
            self.device.read_at(file, offset, &mut again[..len])?;
            self.stats.read_bytes += len as u64;
            let first = &mut self.chunk.buf[head..head + len];
            if *first == again[..len] {
                agreeing += 1;
                if agreeing == READS_THAT_AGREE {
                    return Ok(());
                }
            } else {
                first.copy_from_slice(&again[..len]);
                agreeing = 1;
            }
        }
        Err(IoError::new(
            crate::io::IoOp::Read,
            self.path(seq),
            offset,
            IoErrorKind::Unstable,
        ))
    }

    fn drop_cache(&mut self) {
        self.chunk.len = 0;
    }

    /// Decodes the segment header of `seq`, valid for this log and incarnation.
    fn segment_header(&mut self, seq: u64) -> Result<Result<SegmentHeader, String>, IoError> {
        if !self.present.contains(&seq) {
            return Ok(Err("segment file is missing".into()));
        }
        let decoded = match self.bytes(seq, 0, BLOCK_SIZE_BYTES) {
            Ok(block) => SegmentHeader::decode(block),
            Err(e) if e.kind == IoErrorKind::UnexpectedEof => {
                return Ok(Err(format!("segment file is short: {e}")))
            }
            Err(e) if e.kind == IoErrorKind::Io => return Ok(Err(format!("unreadable: {e}"))),
            Err(e) => return Err(e),
        };
        Ok(match decoded {
            Err(DecodeError::Zeroed) => Err("zeroed".into()),
            Err(why) => Err(format!("segment header: {why}")),
            Ok(h) if h.log_id != self.meta.log_id => {
                Err(format!("segment header of another log ({:#x})", h.log_id))
            }
            Ok(h) if h.segment_seq != seq => Err(format!(
                "segment header of incarnation {}, not {seq}",
                h.segment_seq
            )),
            Ok(h) if h.segment_size_bytes != self.meta.segment_size_bytes => {
                Err("segment header names another segment size".into())
            }
            Ok(h) => Ok(h),
        })
    }

    /// Reads and decodes the batch header at (seq, offset) and checks that it is valid for
    /// this log and this place. The outer error is the device's.
    fn header_at(&mut self, seq: u64, offset: u64) -> Result<Result<BatchHeader, String>, IoError> {
        let decoded = BatchHeader::decode(self.bytes(seq, offset, BATCH_HEADER_SIZE_BYTES)?);
        Ok(decoded
            .map_err(|why| match why {
                DecodeError::Zeroed => "zeroed".to_owned(),
                why => format!("batch header: {why}"),
            })
            .and_then(|header| self.check_place(header, seq, offset)))
    }

    /// Checks that a decoded batch header is valid for this log and place.
    fn check_place(
        &self,
        header: BatchHeader,
        seq: u64,
        offset: u64,
    ) -> Result<BatchHeader, String> {
        if header.log_id != self.meta.log_id {
            return Err(format!("batch of another log ({:#x})", header.log_id));
        }
        if header.segment_seq != seq {
            return Err(format!(
                "batch of incarnation {}, not {seq}",
                header.segment_seq
            ));
        }
        if u64::from(header.segment_offset) != offset {
            return Err(format!(
                "batch written for offset {}, found at {offset} (misdirected)",
                header.segment_offset
            ));
        }
        if offset + header.padded_size_bytes() as u64 > self.meta.segment_size_bytes {
            return Err("batch runs past the end of the segment".into());
        }
        Ok(header)
    }

    /// Reads the next item: a record, damage, or `None` at the end of the log.
    pub fn next_item(&mut self) -> Result<Option<ScanItem>, LogError> {
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
                        return self.damage(0, why, false);
                    }
                    Ok(h)
                        if self.segment_seq == self.meta.first_segment_seq
                            && self.meta.first_segment_seq > 1
                            && self.stats.batch_count == 0
                            && self.expected_lsn == 1 =>
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
                        return self.damage(0, why, true);
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
                        return self.damage(0, why, false);
                    }
                }
            }
            if self.offset + 2 * BLOCK_SIZE_BYTES as u64 > self.meta.segment_size_bytes {
                self.next_segment();
                continue;
            }
            let (seq, offset) = (self.segment_seq, self.offset);
            let header_here = match self.header_at(seq, offset) {
                Ok(decoded) => decoded,
                Err(e) if matches!(e.kind, IoErrorKind::Io | IoErrorKind::UnexpectedEof) => {
                    return self.damage(offset, format!("unreadable: {e}"), true);
                }
                Err(e) => return Err(e.into()),
            };
            let header = match header_here {
                Ok(h) if self.continues(h.first_lsn, h.prev_crc, h.epoch) => h,
                Ok(h) if h.epoch < self.last_epoch => {
                    // An older writer's batch after a newer one's: stale bytes of an
                    // abandoned history (a discarded tail brought back), never a
                    // continuation, even when its LSN and chain fit.
                    let why = format!(
                        "batch of writer epoch {}, older than the batch before it ({})",
                        h.epoch, self.last_epoch
                    );
                    if self.segment_continues_next()? {
                        continue;
                    }
                    return self.damage(offset, why, false);
                }
                Ok(h) => {
                    let why = format!(
                        "batch claims LSN {} chain {:#010x}, expected LSN {} chain {:#010x}",
                        h.first_lsn, h.prev_crc, self.expected_lsn, self.chain
                    );
                    if self.segment_continues_next()? {
                        continue;
                    }
                    return self.damage(offset, why, true);
                }
                Err(why) => {
                    if self.segment_continues_next()? {
                        continue;
                    }
                    // Only a batch header of this incarnation is evidence that the last
                    // write reached this place; zeros and stale bytes of a recycled segment
                    // are the clean end.
                    return self.damage(offset, why, false);
                }
            };
            match self.read_batch(&header) {
                Ok(Ok(records)) => {
                    self.reread = false;
                    self.verify = false;
                    self.accept_batch(&header, records);
                }
                Ok(Err(why)) => return self.damage(offset, why, true),
                Err(e) if matches!(e.kind, IoErrorKind::Io | IoErrorKind::UnexpectedEof) => {
                    return self.damage(offset, format!("unreadable: {e}"), true);
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

    /// Whether the next segment starts exactly where this one stopped (the writer leaves the
    /// rest of a segment unused when a batch does not fit).
    fn segment_continues_next(&mut self) -> Result<bool, LogError> {
        let next = self.segment_seq + 1;
        match self.segment_header(next)? {
            Ok(h) if self.continues(h.first_lsn, h.prev_crc, h.epoch) => {
                self.next_segment();
                Ok(true)
            }
            _ => Ok(false),
        }
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
            if record.incarnation != seq {
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

    /// The first segment after `seq` whose file is missing although a later one exists.
    fn missing_segment_after(&self, seq: u64) -> Option<u64> {
        let last = *self.present.last()?;
        (seq + 1..last).find(|s| !self.present.contains(s))
    }

    /// Looks past damage at (seq, offset) for proof that the expected LSN was durable. A
    /// misdirected read can hide the proof as it can fake damage, so every read of the
    /// search is confirmed ([`Self::read_chunk`]), and nothing read
    /// before it began counts (the cache is dropped on both sides).
    fn look_ahead(&mut self, seq: u64, offset: u64) -> Result<Found, LogError> {
        let verify = std::mem::replace(&mut self.verify, true);
        self.drop_cache();
        let found = self.look_ahead_from(seq, offset);
        self.drop_cache();
        self.verify = verify;
        found
    }

    fn look_ahead_from(&mut self, seq: u64, offset: u64) -> Result<Found, LogError> {
        let expected = self.expected_lsn;
        let size = self.meta.segment_size_bytes;
        let last = self.present.last().copied().unwrap_or(seq);
        for s in seq..=last {
            if !self.present.contains(&s) {
                continue;
            }
            let mut at = if s == seq {
                offset + BLOCK_SIZE_BYTES as u64
            } else {
                // A later segment's start proves nothing by itself (its first batch may
                // have been in flight beside the damaged one); its batches' marks do. A
                // damaged segment header does not hide them: each batch names its own
                // incarnation and place.
                SEGMENT_HEADER_SIZE_BYTES as u64
            };
            while at + BLOCK_SIZE_BYTES as u64 <= size {
                let block = match self.bytes(s, at, BLOCK_SIZE_BYTES) {
                    Ok(block) => block,
                    Err(e) if matches!(e.kind, IoErrorKind::Io) => {
                        at += BLOCK_SIZE_BYTES as u64;
                        continue;
                    }
                    Err(e) if e.kind == IoErrorKind::UnexpectedEof => break,
                    Err(e) => return Err(e.into()),
                };
                if u32::from_le_bytes([block[4], block[5], block[6], block[7]])
                    == crate::format::BATCH_MAGIC
                {
                    if let Ok(Ok(h)) = self.header_at(s, at) {
                        if h.durable_lsn >= expected {
                            return Ok(Found::Vouch {
                                segment_seq: s,
                                offset: at,
                                first_lsn: h.first_lsn,
                                prev_crc: h.prev_crc,
                                why: format!(
                                    "the batch at segment {s} offset {at} says LSN {} was durable",
                                    h.durable_lsn
                                ),
                            });
                        }
                    }
                }
                at += BLOCK_SIZE_BYTES as u64;
            }
        }
        Ok(Found::Nothing)
    }

    /// Classifies damage at `offset` of the current segment (table in the module docs).
    fn damage(
        &mut self,
        offset: u64,
        why: String,
        evidence: bool,
    ) -> Result<Option<ScanItem>, LogError> {
        if !self.reread {
            // A misdirected read is transient: read the place again, each read confirmed,
            // before judging it.
            self.reread = true;
            self.verify = true;
            self.drop_cache();
            return self.next_item();
        }
        self.reread = false;
        let verdict = self.judge(offset, why, evidence);
        self.verify = false;
        verdict
    }

    /// The verdict on damage at `offset` of the current segment, read with confirmed reads.
    fn judge(
        &mut self,
        offset: u64,
        why: String,
        evidence: bool,
    ) -> Result<Option<ScanItem>, LogError> {
        let seq = self.segment_seq;
        let mut damage = Damage {
            segment_seq: seq,
            path: self.path(seq),
            offset,
            lsn: self.expected_lsn,
            why,
            resume_lsn: None,
        };
        // Row 0: a segment file is never shorter than a segment after a crash (segments are
        // created whole before use): it was truncated from outside.
        if let Some(len) = self.truncated_len.filter(|_| self.started) {
            damage.why = format!(
                "{}; the segment file is {len} bytes, a segment is {}: truncated",
                damage.why, self.meta.segment_size_bytes
            );
            self.finished = true;
            return Ok(Some(ScanItem::Corrupt(damage)));
        }
        // Row 1: a later batch vouches for this LSN.
        if let Found::Vouch {
            segment_seq,
            offset: at,
            first_lsn,
            prev_crc,
            why,
        } = self.look_ahead(seq, offset)?
        {
            damage.why = format!("{}; {why}", damage.why);
            damage.resume_lsn = Some(first_lsn);
            while self.segment_seq < segment_seq {
                self.next_segment();
            }
            // Salvage resumes at the vouching batch.
            self.started = true;
            self.offset = at;
            self.expected_lsn = first_lsn;
            self.chain = prev_crc;
            self.drop_cache();
            return Ok(Some(ScanItem::Corrupt(damage)));
        }
        // Row 2: the batch here was written after the one before it (by the same or a newer
        // writer) yet does not continue it: what came before is not what was durable.
        let after_a_batch = self.started && self.stats.batch_count > 0;
        if after_a_batch && offset >= SEGMENT_HEADER_SIZE_BYTES as u64 {
            if let Ok(Ok(h)) = self.header_at(seq, offset) {
                let continues = h.first_lsn == self.expected_lsn && h.prev_crc == self.chain;
                if !continues && h.epoch >= self.last_epoch {
                    damage.why = format!(
                        "{}; its writer (epoch {}) logged different records before it",
                        damage.why, h.epoch
                    );
                    damage.resume_lsn = Some(h.first_lsn);
                    self.expected_lsn = h.first_lsn;
                    self.chain = h.prev_crc;
                    self.drop_cache();
                    return Ok(Some(ScanItem::Corrupt(damage)));
                }
            }
        }
        // Row 0 again: the log cannot end here while a later segment file exists and one
        // between is missing (removed from outside; segments are created in order).
        if let Some(missing) = self.missing_segment_after(seq) {
            return Err(LogError::MissingSegment {
                segment_seq: missing,
                path: self.path(missing),
            });
        }
        self.finished = true;
        // Row 3: nothing of this incarnation here: the clean end.
        if !evidence {
            return Ok(None);
        }
        // Row 4: a torn tail.
        Ok(Some(ScanItem::TornTail(damage)))
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
