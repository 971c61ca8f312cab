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
    /// Read the place again, each read confirmed.
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

    /// Classifies damage at `offset` of the current segment (table in the module docs).
    pub(super) fn damage(
        &mut self,
        offset: u64,
        why: String,
        evidence: bool,
    ) -> Result<Judged, LogError> {
        if !self.reread {
            // A misdirected read is transient: read the place again, each read confirmed,
            // before judging it (the caller's loop does, so no verdict recurses).
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
