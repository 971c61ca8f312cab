//! The reader's IO: read-ahead of whole chunks on a scoped thread, cached bytes, and the
//! headers read at a place.

use std::sync::mpsc;

use crate::constants::{BATCH_HEADER_SIZE_BYTES, BLOCK_SIZE_BYTES};
use crate::format::{BatchHeader, DecodeError, SegmentHeader};
use crate::ids::SegmentSeq;
use crate::io::{AlignedBuf, Device, FileId, IoError, IoErrorKind};
use crate::log::segment::segment_file_name;

use super::{LogReader, READS_THAT_AGREE, READS_TO_AGREE_MAX, VERIFY_READ_PARTS};

/// The bytes of segment `segment_seq` from `start` for `len`, held at `buf[base..]`.
pub(super) struct Chunk {
    pub(super) buf: AlignedBuf,
    pub(super) base: usize,
    pub(super) segment_seq: SegmentSeq,
    pub(super) start: u64,
    pub(super) len: usize,
}

/// A read the read-ahead thread is asked to do, into the buffer after its head room.
pub(super) struct ReadRequest {
    pub(super) segment_seq: SegmentSeq,
    pub(super) offset: u64,
    pub(super) len: usize,
    pub(super) buf: AlignedBuf,
}

/// What the read-ahead thread read.
pub(super) struct ReadDone {
    pub(super) request: ReadRequest,
    pub(super) result: Result<(), IoError>,
}

/// A thread that reads the next chunk while the reader checks this one.
pub(super) struct ReadAhead {
    pub(super) requests: mpsc::Sender<ReadRequest>,
    pub(super) done: mpsc::Receiver<ReadDone>,
    /// A read is outstanding.
    pub(super) pending: bool,
    /// The buffer the next read goes into.
    pub(super) spare: Option<AlignedBuf>,
}

impl<'d, D: Device + ?Sized> LogReader<'d, D> {
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
            let mut open: Option<(SegmentSeq, FileId)> = None;
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
    pub(super) fn request_next_chunk(&mut self) {
        let Some(ahead) = self.read_ahead.as_mut() else {
            return;
        };
        // Confirmed reads never take the read-ahead (a verdict rests on no single read), and
        // a side chunk (`aside`) must not steer it away from where the scan is.
        if ahead.pending || self.chunk.len == 0 || self.verify {
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
    pub(super) fn take_read_ahead(&mut self, seq: SegmentSeq, offset: u64, len: usize) -> bool {
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
    pub(super) fn bytes(
        &mut self,
        seq: SegmentSeq,
        offset: u64,
        len: usize,
    ) -> Result<&[u8], IoError> {
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
    pub(super) fn read_chunk(
        &mut self,
        seq: SegmentSeq,
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

    /// Runs `read` with every read confirmed, on a chunk of its own: what the scan had read
    /// stays cached, and the read-ahead stays on course, for when the scan goes on.
    pub(super) fn aside<T>(&mut self, read: impl FnOnce(&mut Self) -> T) -> T {
        let window = self.chunk_head_bytes + self.chunk_window_bytes;
        let buf = self
            .aside_buf
            .take()
            .unwrap_or_else(|| AlignedBuf::new_zeroed(window));
        let kept = std::mem::replace(
            &mut self.chunk,
            Chunk {
                buf,
                base: self.chunk_head_bytes,
                segment_seq: SegmentSeq(0),
                start: 0,
                len: 0,
            },
        );
        let verify = std::mem::replace(&mut self.verify, true);
        let result = read(self);
        self.verify = verify;
        self.aside_buf = Some(std::mem::replace(&mut self.chunk, kept).buf);
        result
    }

    pub(super) fn drop_cache(&mut self) {
        self.chunk.len = 0;
    }

    /// Decodes the segment header of `seq`, valid for this log and incarnation.
    pub(super) fn segment_header(
        &mut self,
        seq: SegmentSeq,
    ) -> Result<Result<SegmentHeader, String>, IoError> {
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
    pub(super) fn header_at(
        &mut self,
        seq: SegmentSeq,
        offset: u64,
    ) -> Result<Result<BatchHeader, String>, IoError> {
        let decoded = BatchHeader::decode(self.bytes(seq, offset, BATCH_HEADER_SIZE_BYTES)?);
        Ok(decoded
            .map_err(|why| match why {
                DecodeError::Zeroed => "zeroed".to_owned(),
                why => format!("batch header: {why}"),
            })
            .and_then(|header| self.check_place(header, seq, offset)))
    }

    /// Checks that a decoded batch header is valid for this log and place.
    pub(super) fn check_place(
        &self,
        header: BatchHeader,
        seq: SegmentSeq,
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
}
