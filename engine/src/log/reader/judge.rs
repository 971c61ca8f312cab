//! Judging damage: a torn tail or corruption, on reads that agree, by whether a later
//! batch vouches for what came before.

use crate::constants::{BLOCK_SIZE_BYTES, SEGMENT_HEADER_SIZE_BYTES};
use crate::format::SegmentHeader;
use crate::ids::SegmentSeq;
use crate::io::{Device, IoErrorKind};
use crate::log::{LogError, Lsn};

use super::{Damage, LogReader, ScanItem};

/// What the damage table makes of a place.
pub(super) enum Judged {
    /// Yield this (a torn tail, corruption, or the clean end).
    Item(Option<ScanItem>),
    /// Read on: the place again (each read confirmed), or from where the verdict moved the
    /// reader.
    Again,
}

pub(super) enum Found {
    /// A batch, valid for its own place, vouching for the damaged LSN.
    Vouch {
        segment_seq: SegmentSeq,
        offset: u64,
        first_lsn: Lsn,
        prev_crc: u32,
        why: String,
    },
    Nothing,
}

impl<'d, D: Device + ?Sized> LogReader<'d, D> {
    /// The first segment after `seq` whose file is missing although a later one exists.
    pub(super) fn missing_segment_after(&self, seq: SegmentSeq) -> Option<SegmentSeq> {
        let last = *self.present.last()?;
        (seq.get() + 1..last.get())
            .map(SegmentSeq)
            .find(|s| !self.present.contains(s))
    }

    /// Looks past damage at (seq, offset) for proof that the expected LSN was durable. A
    /// misdirected read can hide the proof as it can fake damage, so every read of the
    /// search is confirmed ([`Self::read_chunk`]), on a chunk of its own ([`Self::aside`]):
    /// nothing read before it began counts.
    pub(super) fn look_ahead(&mut self, seq: SegmentSeq, offset: u64) -> Result<Found, LogError> {
        self.aside(|reader| reader.look_ahead_from(seq, offset))
    }

    fn look_ahead_from(&mut self, seq: SegmentSeq, offset: u64) -> Result<Found, LogError> {
        let expected = self.expected_lsn;
        let size = self.meta.segment_size_bytes;
        let last = self.present.last().copied().unwrap_or(seq);
        for s in (seq.get()..=last.get()).map(SegmentSeq) {
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

    /// Whether a batch of the current segment from `from` to its end, valid for its place,
    /// shows that a writer went on in this segment after the one that wrote `next` (the
    /// next segment's header, which continues the log): a batch of a newer epoch, one of
    /// the same epoch that holds an LSN from `next.first_lsn` on, or one that says such an
    /// LSN was durable. In
    /// one history none can be there: a writer starts a segment only when its batch does not
    /// fit in the one before, and a new writer resumes where the last one's durable work
    /// ends. A header of an abandoned history can come back, though (recovery zeroes the
    /// start of the next segment past every tail it fixes, and a resurrected old write can
    /// undo that): then this segment holds the newer writer's records, and the reader must
    /// not leave it. Every read is confirmed, as in [`Self::look_ahead`], on a chunk of its
    /// own ([`Self::aside`]): what the reader holds of the next segment, its header just
    /// read, stays cached.
    pub(super) fn written_on_here(
        &mut self,
        from: u64,
        next: &SegmentHeader,
    ) -> Result<bool, LogError> {
        self.aside(|reader| reader.written_on_here_from(from, next))
    }

    fn written_on_here_from(&mut self, from: u64, next: &SegmentHeader) -> Result<bool, LogError> {
        let seq = self.segment_seq;
        let mut at = from;
        while at + BLOCK_SIZE_BYTES as u64 <= self.meta.segment_size_bytes {
            match self.header_at(seq, at) {
                Ok(Ok(h)) => {
                    let newer = h.epoch > next.epoch;
                    // An older writer's records past the tail a later recovery fixed are
                    // stale bytes of its unfinished work, no evidence; its mark that they
                    // were durable is.
                    let holds = h.epoch == next.epoch
                        && h.record_count > 0
                        && h.first_lsn + u64::from(h.record_count) > next.first_lsn;
                    let vouches = h.durable_lsn >= next.first_lsn;
                    if newer || holds || vouches {
                        return Ok(true);
                    }
                }
                Ok(Err(_)) => {}
                Err(e) if e.kind == IoErrorKind::Io => {}
                Err(e) if e.kind == IoErrorKind::UnexpectedEof => break,
                Err(e) => return Err(e.into()),
            }
            at += BLOCK_SIZE_BYTES as u64;
        }
        Ok(false)
    }

    /// Where reading goes on in this segment past damage at `offset` that held no record
    /// (row 1b): the first batch header after it, valid for its place, when that batch
    /// continues the log exactly (the LSN, the CRC chain, the epoch) and is proved durable.
    /// In one history only marks (empty batches of one block, which carry the expected LSN
    /// and chain on) lie between the batch that ends before the expected LSN and the one
    /// that holds it, so the damage was a mark or marks (unreadable, rotted), and reading on
    /// loses nothing.
    ///
    /// Across histories that does not hold: a batch of an abandoned history (never durable,
    /// or discarded by a recovery) can lie past a newer writer's mark, or come back over
    /// recovery's zeroing, and continue the log as exactly. So the batch must be proved
    /// durable, in its own bytes: reading on from it, batch after batch in this segment,
    /// each continuing the one before (LSN, chain, epoch), until one says that everything
    /// before it was durable (`durable_lsn`), with at least one record between. Its chain
    /// value covers those records' bytes, so its writer saw them durable, and a later
    /// recovery found them. Without that proof (the batch is the segment's last, or what
    /// follows it does not continue it) the place goes on to the table, as any damage.
    ///
    /// Not when the place holds a header valid for it, of the last batch's epoch or newer,
    /// that does not continue the log (evidence of other records there: row 2). Every read
    /// is confirmed, on a chunk of its own ([`Self::aside`]).
    fn after_lost_marks(&mut self, offset: u64) -> Result<Option<u64>, LogError> {
        self.aside(|reader| reader.after_lost_marks_from(offset))
    }

    fn after_lost_marks_from(&mut self, offset: u64) -> Result<Option<u64>, LogError> {
        let seq = self.segment_seq;
        let size = self.meta.segment_size_bytes;
        let block = BLOCK_SIZE_BYTES as u64;
        match self.header_at(seq, offset) {
            // Row 2's evidence (or a batch that continues, no damage at all).
            Ok(Ok(h)) if h.epoch >= self.last_epoch => return Ok(None),
            Ok(_) => {}
            Err(e) if e.kind == IoErrorKind::Io => {}
            Err(e) if e.kind == IoErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e.into()),
        }
        // The first batch header after the place, valid for its own.
        let mut found = offset + block;
        loop {
            if found + 2 * block > size {
                return Ok(None);
            }
            match self.header_at(seq, found) {
                Ok(Ok(_)) => break,
                Ok(Err(_)) => {}
                Err(e) if e.kind == IoErrorKind::Io => {}
                Err(e) if e.kind == IoErrorKind::UnexpectedEof => return Ok(None),
                Err(e) => return Err(e.into()),
            }
            found += block;
        }
        // From it, the batches that continue the log, to one that vouches for them.
        let (mut lsn, mut chain, mut epoch) = (self.expected_lsn, self.chain, self.last_epoch);
        let mut at = found;
        while at + 2 * block <= size {
            let header = match self.header_at(seq, at) {
                Ok(Ok(h)) if h.first_lsn == lsn && h.prev_crc == chain && h.epoch >= epoch => h,
                Ok(_) => return Ok(None),
                Err(e) if matches!(e.kind, IoErrorKind::Io | IoErrorKind::UnexpectedEof) => {
                    return Ok(None)
                }
                Err(e) => return Err(e.into()),
            };
            if lsn > self.expected_lsn && header.durable_lsn + 1 >= lsn {
                return Ok(Some(found));
            }
            let records = match self.decode_batch(seq, at, &header, lsn, chain) {
                Ok(Ok(records)) => records,
                Ok(Err(_)) => return Ok(None),
                Err(e) if matches!(e.kind, IoErrorKind::Io | IoErrorKind::UnexpectedEof) => {
                    return Ok(None)
                }
                Err(e) => return Err(e.into()),
            };
            if let Some(last) = records.last() {
                chain = last.crc;
            }
            lsn += records.len() as u64;
            epoch = header.epoch;
            at += header.padded_size_bytes() as u64;
        }
        Ok(None)
    }

    /// Classifies damage at `offset` of the current segment (table in the module docs).
    pub(super) fn damage(
        &mut self,
        offset: u64,
        why: String,
        evidence: bool,
    ) -> Result<Judged, LogError> {
        if !self.reread {
            // A misdirected read is transient: read the place again, each read confirmed,
            // before judging it.
            self.reread = true;
            self.verify = true;
            self.drop_cache();
            return Ok(Judged::Again);
        }
        self.reread = false;
        let verdict = self.judge(offset, why, evidence);
        self.verify = false;
        verdict
    }

    /// The verdict on damage at `offset` of the current segment, read with confirmed reads.
    fn judge(&mut self, offset: u64, why: String, evidence: bool) -> Result<Judged, LogError> {
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
            return Ok(Judged::Item(Some(ScanItem::Corrupt(damage))));
        }
        // Row 1b: only marks were lost here; reading goes on at the batch that continues.
        if offset >= SEGMENT_HEADER_SIZE_BYTES as u64 && self.started {
            if let Some(at) = self.after_lost_marks(offset)? {
                self.offset = at;
                return Ok(Judged::Again);
            }
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
            return Ok(Judged::Item(Some(ScanItem::Corrupt(damage))));
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
                    return Ok(Judged::Item(Some(ScanItem::Corrupt(damage))));
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
            return Ok(Judged::Item(None));
        }
        // Row 4: a torn tail.
        Ok(Judged::Item(Some(ScanItem::TornTail(damage))))
    }
}
