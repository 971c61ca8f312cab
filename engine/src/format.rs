//! The on-disk structures of the log, byte by byte, with their encoding, decoding and CRCs.
//!
//! Every integer is little-endian, stored through [`U32Le`] and [`U64Le`] so the byte order
//! never depends on the host. Each structure below documents its layout beside its fields;
//! `docs/FORMAT.md` is the same description for readers of the format.
//! This module knows nothing of IO: it turns bytes into structures and back, and says
//! exactly why bytes are not a valid structure.

use crate::ids::Lsn;
use bytemuck::{Pod, Zeroable};

use crate::constants::{
    align_up, BATCH_HEADER_SIZE_BYTES, BATCH_RECORD_COUNT_MAX, BATCH_SIZE_BYTES_MAX,
    BLOCK_SIZE_BYTES, FORMAT_VERSION, META_FIELDS_SIZE_BYTES, RECORD_ALIGN_BYTES,
    RECORD_HEADER_SIZE_BYTES, RECORD_PAYLOAD_SIZE_BYTES_MAX, SEGMENT_HEADER_FIELDS_SIZE_BYTES,
    SEGMENT_SIZE_BYTES_MAX, SEGMENT_SIZE_BYTES_MIN,
};
use crate::ids::SegmentSeq;
use crate::ids::TxnId;

/// A little-endian `u32` as stored on disk.
#[derive(Clone, Copy, Default, PartialEq, Eq, Pod, Zeroable)]
#[repr(transparent)]
pub struct U32Le([u8; 4]);

impl U32Le {
    /// Stores `value` little-endian.
    pub const fn new(value: u32) -> Self {
        Self(value.to_le_bytes())
    }
    /// The stored value.
    pub const fn get(self) -> u32 {
        u32::from_le_bytes(self.0)
    }
}

impl std::fmt::Debug for U32Le {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.get().fmt(f)
    }
}

/// A little-endian `u64` as stored on disk.
#[derive(Clone, Copy, Default, PartialEq, Eq, Pod, Zeroable)]
#[repr(transparent)]
pub struct U64Le([u8; 8]);

impl U64Le {
    /// Stores `value` little-endian.
    pub const fn new(value: u64) -> Self {
        Self(value.to_le_bytes())
    }
    /// The stored value.
    pub const fn get(self) -> u64 {
        u64::from_le_bytes(self.0)
    }
}

impl std::fmt::Debug for U64Le {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.get().fmt(f)
    }
}

/// A little-endian `u16` as stored on disk.
#[derive(Clone, Copy, Default, PartialEq, Eq, Pod, Zeroable)]
#[repr(transparent)]
pub struct U16Le([u8; 2]);

impl U16Le {
    /// Stores `value` little-endian.
    pub const fn new(value: u16) -> Self {
        Self(value.to_le_bytes())
    }
    /// The stored value.
    pub const fn get(self) -> u16 {
        u16::from_le_bytes(self.0)
    }
}

impl std::fmt::Debug for U16Le {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.get().fmt(f)
    }
}

/// Magic of the metadata file `LOG`: "SMLG".
pub const META_MAGIC: u32 = u32::from_le_bytes(*b"SMLG");
/// Magic of a segment header: "SMSG".
pub const SEGMENT_MAGIC: u32 = u32::from_le_bytes(*b"SMSG");
/// Magic of a batch header: "SMLB".
pub const BATCH_MAGIC: u32 = u32::from_le_bytes(*b"SMLB");

/// Why bytes are not a valid structure. Each variant names the one check that failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Fewer bytes than the structure needs.
    #[error("too short: {len_bytes} bytes, need {need_bytes}")]
    TooShort {
        /// Bytes available.
        len_bytes: usize,
        /// Bytes needed.
        need_bytes: usize,
    },
    /// Every byte is zero: never written (or zeroed by recovery).
    #[error("all zero (never written)")]
    Zeroed,
    /// The magic number is wrong.
    #[error("bad magic {found:#010x}, expected {expected:#010x}")]
    BadMagic {
        /// Found.
        found: u32,
        /// Expected.
        expected: u32,
    },
    /// The stored CRC does not match the bytes.
    #[error("crc mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    BadCrc {
        /// Stored in the structure.
        stored: u32,
        /// Computed over the bytes.
        computed: u32,
    },
    /// The format version is not one this build reads.
    #[error("format version {found}, this build reads version {supported}")]
    BadVersion {
        /// Found.
        found: u32,
        /// Supported.
        supported: u32,
    },
    /// A field holds a value outside its bounds.
    #[error("field {field} = {value} out of bounds ({bound})")]
    OutOfBounds {
        /// Field name.
        field: &'static str,
        /// Value read.
        value: u64,
        /// The bound it broke, in words.
        bound: &'static str,
    },
    /// A field must be zero and is not.
    #[error("reserved field {field} is not zero")]
    ReservedNotZero {
        /// Field name.
        field: &'static str,
    },
}

fn crc_of(parts: &[&[u8]]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    for part in parts {
        hasher.update(part);
    }
    hasher.finalize()
}

fn check_len(bytes: &[u8], need_bytes: usize) -> Result<(), DecodeError> {
    if bytes.len() < need_bytes {
        return Err(DecodeError::TooShort {
            len_bytes: bytes.len(),
            need_bytes,
        });
    }
    Ok(())
}

fn check_crc(stored: u32, computed: u32) -> Result<(), DecodeError> {
    if stored != computed {
        return Err(DecodeError::BadCrc { stored, computed });
    }
    Ok(())
}

fn check_magic(found: u32, expected: u32) -> Result<(), DecodeError> {
    if found != expected {
        return Err(DecodeError::BadMagic { found, expected });
    }
    Ok(())
}

fn check_version(found: u32) -> Result<(), DecodeError> {
    if found != FORMAT_VERSION {
        return Err(DecodeError::BadVersion {
            found,
            supported: FORMAT_VERSION,
        });
    }
    Ok(())
}

fn check_bound(
    field: &'static str,
    value: u64,
    ok: bool,
    bound: &'static str,
) -> Result<(), DecodeError> {
    if !ok {
        return Err(DecodeError::OutOfBounds {
            field,
            value,
            bound,
        });
    }
    Ok(())
}

/// The first value of the CRC chain of a log: the `prev_crc` of its first record.
pub fn chain_seed(log_id: u64) -> u32 {
    crc_of(&[b"smlog-chain", &log_id.to_le_bytes()])
}

/// The metadata file `LOG` (one block; 64 bytes of fields, the rest zero).
///
/// | offset | size | field |
/// |---|---|---|
/// | 0 | 4 | `crc`: CRC-32 (IEEE) of bytes 4..64 |
/// | 4 | 4 | `magic`: "SMLG" |
/// | 8 | 4 | `version` |
/// | 12 | 4 | `open_epoch`: the epoch of the last writer opened; raised before it writes |
/// | 16 | 8 | `log_id`: random, names this log in every segment and batch |
/// | 24 | 8 | `segment_size_bytes` |
/// | 32 | 8 | `first_segment_seq`: the oldest segment still part of the log |
/// | 40 | 8 | `created_unix_secs` |
/// | 48 | 16 | reserved, zero |
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[repr(C)]
pub struct MetaHeader {
    crc: U32Le,
    magic: U32Le,
    version: U32Le,
    open_epoch: U32Le,
    log_id: U64Le,
    segment_size_bytes: U64Le,
    first_segment_seq: U64Le,
    created_unix_secs: U64Le,
    reserved1: [U64Le; 2],
}

const _: () = assert!(std::mem::size_of::<MetaHeader>() == META_FIELDS_SIZE_BYTES);

/// The decoded metadata of a log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogMeta {
    /// Random identity of this log.
    pub log_id: u64,
    /// Size of every segment file.
    pub segment_size_bytes: u64,
    /// The oldest segment that is still part of the log.
    pub first_segment_seq: SegmentSeq,
    /// When the log was created.
    pub created_unix_secs: u64,
    /// Epoch of the last writer opened on the log. Each writer takes one more than this and
    /// than any epoch on disk, and records it here before it writes, so epochs only grow.
    pub open_epoch: u32,
}

impl LogMeta {
    /// Encodes into `out` (at least [`META_FIELDS_SIZE_BYTES`] long).
    pub fn encode(&self, out: &mut [u8]) {
        assert!(out.len() >= META_FIELDS_SIZE_BYTES);
        let mut header = MetaHeader {
            crc: U32Le::new(0),
            magic: U32Le::new(META_MAGIC),
            version: U32Le::new(FORMAT_VERSION),
            open_epoch: U32Le::new(self.open_epoch),
            log_id: U64Le::new(self.log_id),
            segment_size_bytes: U64Le::new(self.segment_size_bytes),
            first_segment_seq: U64Le::new(self.first_segment_seq.get()),
            created_unix_secs: U64Le::new(self.created_unix_secs),
            reserved1: [U64Le::new(0); 2],
        };
        let crc = crc_of(&[&bytemuck::bytes_of(&header)[4..]]);
        header.crc = U32Le::new(crc);
        out[..META_FIELDS_SIZE_BYTES].copy_from_slice(bytemuck::bytes_of(&header));
    }

    /// Decodes and validates every field.
    pub fn decode(bytes: &[u8]) -> Result<LogMeta, DecodeError> {
        check_len(bytes, META_FIELDS_SIZE_BYTES)?;
        let fields = &bytes[..META_FIELDS_SIZE_BYTES];
        if fields.iter().all(|b| *b == 0) {
            return Err(DecodeError::Zeroed);
        }
        let header: MetaHeader = bytemuck::pod_read_unaligned(fields);
        check_magic(header.magic.get(), META_MAGIC)?;
        check_crc(header.crc.get(), crc_of(&[&fields[4..]]))?;
        check_version(header.version.get())?;
        if header.reserved1.iter().any(|r| r.get() != 0) {
            return Err(DecodeError::ReservedNotZero { field: "reserved" });
        }
        let segment_size_bytes = header.segment_size_bytes.get();
        check_segment_size(segment_size_bytes)?;
        Ok(LogMeta {
            log_id: header.log_id.get(),
            segment_size_bytes,
            first_segment_seq: SegmentSeq(header.first_segment_seq.get()),
            created_unix_secs: header.created_unix_secs.get(),
            open_epoch: header.open_epoch.get(),
        })
    }
}

fn check_segment_size(segment_size_bytes: u64) -> Result<(), DecodeError> {
    check_bound(
        "segment_size_bytes",
        segment_size_bytes,
        (SEGMENT_SIZE_BYTES_MIN..=SEGMENT_SIZE_BYTES_MAX).contains(&segment_size_bytes),
        "256 KiB ..= 1 GiB",
    )?;
    check_bound(
        "segment_size_bytes",
        segment_size_bytes,
        segment_size_bytes.is_multiple_of(BLOCK_SIZE_BYTES as u64),
        "a multiple of 4 KiB",
    )
}

/// The segment header, in the first block of every segment file (64 bytes of fields).
///
/// | offset | size | field |
/// |---|---|---|
/// | 0 | 4 | `crc`: CRC-32 of bytes 4..64 |
/// | 4 | 4 | `magic`: "SMSG" |
/// | 8 | 4 | `version` |
/// | 12 | 4 | `epoch`: the open epoch of the writer that started this segment |
/// | 16 | 8 | `log_id` |
/// | 24 | 8 | `segment_seq`: this segment's incarnation, equal to its file name's number |
/// | 32 | 8 | `first_lsn`: LSN of the first record in this segment |
/// | 40 | 8 | `segment_size_bytes` |
/// | 48 | 4 | `prev_crc`: the chain value before the first record |
/// | 52 | 12 | reserved, zero |
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[repr(C)]
pub struct SegmentHeaderRaw {
    crc: U32Le,
    magic: U32Le,
    version: U32Le,
    epoch: U32Le,
    log_id: U64Le,
    segment_seq: U64Le,
    first_lsn: U64Le,
    segment_size_bytes: U64Le,
    prev_crc: U32Le,
    reserved: [U32Le; 3],
}

const _: () = assert!(std::mem::size_of::<SegmentHeaderRaw>() == SEGMENT_HEADER_FIELDS_SIZE_BYTES);

/// A decoded segment header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentHeader {
    /// Open epoch of the writer that started the segment.
    pub epoch: u32,
    /// The log this segment belongs to.
    pub log_id: u64,
    /// The segment's incarnation (its sequence number in the log).
    pub segment_seq: SegmentSeq,
    /// LSN of its first record.
    pub first_lsn: Lsn,
    /// Size of the segment file.
    pub segment_size_bytes: u64,
    /// Chain value before its first record.
    pub prev_crc: u32,
}

impl SegmentHeader {
    /// Encodes into `out` (at least [`SEGMENT_HEADER_FIELDS_SIZE_BYTES`] long).
    pub fn encode(&self, out: &mut [u8]) {
        assert!(out.len() >= SEGMENT_HEADER_FIELDS_SIZE_BYTES);
        assert!(self.first_lsn >= Lsn(1));
        let mut raw = SegmentHeaderRaw {
            crc: U32Le::new(0),
            magic: U32Le::new(SEGMENT_MAGIC),
            version: U32Le::new(FORMAT_VERSION),
            epoch: U32Le::new(self.epoch),
            log_id: U64Le::new(self.log_id),
            segment_seq: U64Le::new(self.segment_seq.get()),
            first_lsn: U64Le::new(self.first_lsn.get()),
            segment_size_bytes: U64Le::new(self.segment_size_bytes),
            prev_crc: U32Le::new(self.prev_crc),
            reserved: [U32Le::new(0); 3],
        };
        raw.crc = U32Le::new(crc_of(&[&bytemuck::bytes_of(&raw)[4..]]));
        out[..SEGMENT_HEADER_FIELDS_SIZE_BYTES].copy_from_slice(bytemuck::bytes_of(&raw));
    }

    /// Decodes and validates every field that can be checked without context.
    pub fn decode(bytes: &[u8]) -> Result<SegmentHeader, DecodeError> {
        check_len(bytes, SEGMENT_HEADER_FIELDS_SIZE_BYTES)?;
        let fields = &bytes[..SEGMENT_HEADER_FIELDS_SIZE_BYTES];
        if fields.iter().all(|b| *b == 0) {
            return Err(DecodeError::Zeroed);
        }
        let raw: SegmentHeaderRaw = bytemuck::pod_read_unaligned(fields);
        check_magic(raw.magic.get(), SEGMENT_MAGIC)?;
        check_crc(raw.crc.get(), crc_of(&[&fields[4..]]))?;
        check_version(raw.version.get())?;
        if raw.reserved.iter().any(|r| r.get() != 0) {
            return Err(DecodeError::ReservedNotZero { field: "reserved" });
        }
        check_segment_size(raw.segment_size_bytes.get())?;
        check_bound(
            "first_lsn",
            raw.first_lsn.get(),
            raw.first_lsn.get() >= 1,
            ">= 1",
        )?;
        Ok(SegmentHeader {
            epoch: raw.epoch.get(),
            log_id: raw.log_id.get(),
            segment_seq: SegmentSeq(raw.segment_seq.get()),
            first_lsn: Lsn(raw.first_lsn.get()),
            segment_size_bytes: raw.segment_size_bytes.get(),
            prev_crc: raw.prev_crc.get(),
        })
    }
}

/// The batch header, at a block-aligned offset at the start of every batch (64 bytes).
///
/// | offset | size | field |
/// |---|---|---|
/// | 0 | 4 | `crc`: CRC-32 of bytes 4..64 |
/// | 4 | 4 | `magic`: "SMLB" |
/// | 8 | 4 | `version` |
/// | 12 | 4 | `record_count` |
/// | 16 | 8 | `log_id` |
/// | 24 | 8 | `segment_seq`: the incarnation of the segment it was written to |
/// | 32 | 4 | `segment_offset`: its own byte offset in the segment (misdirected writes) |
/// | 36 | 4 | `used_bytes`: header plus records, before the padding to a block |
/// | 40 | 8 | `first_lsn`: LSN of its first record (of the next record if it has none) |
/// | 48 | 8 | `durable_lsn`: every record up to this LSN was durable before this batch was written |
/// | 56 | 4 | `prev_crc`: chain value before its first record |
/// | 60 | 4 | `epoch`: open epoch of the writer |
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[repr(C)]
pub struct BatchHeaderRaw {
    crc: U32Le,
    magic: U32Le,
    version: U32Le,
    record_count: U32Le,
    log_id: U64Le,
    segment_seq: U64Le,
    segment_offset: U32Le,
    used_bytes: U32Le,
    first_lsn: U64Le,
    durable_lsn: U64Le,
    prev_crc: U32Le,
    epoch: U32Le,
}

const _: () = assert!(std::mem::size_of::<BatchHeaderRaw>() == BATCH_HEADER_SIZE_BYTES);

/// A decoded batch header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchHeader {
    /// Number of records in the batch.
    pub record_count: u32,
    /// The log it belongs to.
    pub log_id: u64,
    /// Incarnation of the segment it was written to.
    pub segment_seq: SegmentSeq,
    /// Its own offset in that segment.
    pub segment_offset: u32,
    /// Header plus records, before padding.
    pub used_bytes: u32,
    /// LSN of its first record.
    pub first_lsn: Lsn,
    /// The durable mark: every LSN up to this one was durable before this batch was written.
    pub durable_lsn: Lsn,
    /// Chain value before its first record.
    pub prev_crc: u32,
    /// Open epoch of the writer.
    pub epoch: u32,
}

impl BatchHeader {
    /// Bytes the batch occupies on disk: `used_bytes` padded to a block.
    pub fn padded_size_bytes(&self) -> usize {
        align_up(self.used_bytes as usize, BLOCK_SIZE_BYTES)
    }

    /// Encodes into `out` (at least [`BATCH_HEADER_SIZE_BYTES`] long).
    pub fn encode(&self, out: &mut [u8]) {
        assert!(out.len() >= BATCH_HEADER_SIZE_BYTES);
        assert!(self.durable_lsn < self.first_lsn);
        assert!(self.used_bytes as usize >= BATCH_HEADER_SIZE_BYTES);
        assert!(self.used_bytes as usize <= BATCH_SIZE_BYTES_MAX);
        let mut raw = BatchHeaderRaw {
            crc: U32Le::new(0),
            magic: U32Le::new(BATCH_MAGIC),
            version: U32Le::new(FORMAT_VERSION),
            record_count: U32Le::new(self.record_count),
            log_id: U64Le::new(self.log_id),
            segment_seq: U64Le::new(self.segment_seq.get()),
            segment_offset: U32Le::new(self.segment_offset),
            used_bytes: U32Le::new(self.used_bytes),
            first_lsn: U64Le::new(self.first_lsn.get()),
            durable_lsn: U64Le::new(self.durable_lsn.get()),
            prev_crc: U32Le::new(self.prev_crc),
            epoch: U32Le::new(self.epoch),
        };
        raw.crc = U32Le::new(crc_of(&[&bytemuck::bytes_of(&raw)[4..]]));
        out[..BATCH_HEADER_SIZE_BYTES].copy_from_slice(bytemuck::bytes_of(&raw));
    }

    /// Decodes and validates every field that can be checked without context.
    pub fn decode(bytes: &[u8]) -> Result<BatchHeader, DecodeError> {
        check_len(bytes, BATCH_HEADER_SIZE_BYTES)?;
        let fields = &bytes[..BATCH_HEADER_SIZE_BYTES];
        if fields.iter().all(|b| *b == 0) {
            return Err(DecodeError::Zeroed);
        }
        let raw: BatchHeaderRaw = bytemuck::pod_read_unaligned(fields);
        check_magic(raw.magic.get(), BATCH_MAGIC)?;
        check_crc(raw.crc.get(), crc_of(&[&fields[4..]]))?;
        check_version(raw.version.get())?;
        let used_bytes = raw.used_bytes.get();
        check_bound(
            "used_bytes",
            u64::from(used_bytes),
            (BATCH_HEADER_SIZE_BYTES..=BATCH_SIZE_BYTES_MAX).contains(&(used_bytes as usize)),
            "64 ..= 1 MiB",
        )?;
        check_bound(
            "used_bytes",
            u64::from(used_bytes),
            (used_bytes as usize).is_multiple_of(RECORD_ALIGN_BYTES),
            "a multiple of 8",
        )?;
        let record_count = raw.record_count.get();
        check_bound(
            "record_count",
            u64::from(record_count),
            record_count as usize <= BATCH_RECORD_COUNT_MAX
                && record_count as usize * RECORD_HEADER_SIZE_BYTES
                    <= used_bytes as usize - BATCH_HEADER_SIZE_BYTES,
            "fits in used_bytes",
        )?;
        check_bound(
            "segment_offset",
            u64::from(raw.segment_offset.get()),
            (raw.segment_offset.get() as usize).is_multiple_of(BLOCK_SIZE_BYTES)
                && raw.segment_offset.get() as usize >= BLOCK_SIZE_BYTES,
            "a block multiple after the segment header",
        )?;
        check_bound(
            "first_lsn",
            raw.first_lsn.get(),
            raw.first_lsn.get() >= 1 && raw.durable_lsn.get() < raw.first_lsn.get(),
            ">= 1 and > durable_lsn",
        )?;
        Ok(BatchHeader {
            record_count,
            log_id: raw.log_id.get(),
            segment_seq: SegmentSeq(raw.segment_seq.get()),
            segment_offset: raw.segment_offset.get(),
            used_bytes,
            first_lsn: Lsn(raw.first_lsn.get()),
            durable_lsn: Lsn(raw.durable_lsn.get()),
            prev_crc: raw.prev_crc.get(),
            epoch: raw.epoch.get(),
        })
    }
}

/// The record header, in front of every payload (48 bytes). Records are 8-byte aligned.
///
/// | offset | size | field |
/// |---|---|---|
/// | 0 | 4 | `crc`: CRC-32 of header bytes 4..48 then the payload |
/// | 4 | 4 | `prev_crc`: `crc` of the record before it in the log (the chain) |
/// | 8 | 8 | `lsn` |
/// | 16 | 8 | `incarnation`: `segment_seq` of the segment it was written to |
/// | 24 | 8 | `txn_id` |
/// | 32 | 4 | `step` |
/// | 36 | 2 | `kind` (0 is invalid) |
/// | 38 | 2 | reserved, zero |
/// | 40 | 4 | `payload_len` |
/// | 44 | 4 | reserved, zero |
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[repr(C)]
pub struct RecordHeaderRaw {
    crc: U32Le,
    prev_crc: U32Le,
    lsn: U64Le,
    incarnation: U64Le,
    txn_id: U64Le,
    step: U32Le,
    kind: U16Le,
    reserved0: U16Le,
    payload_len: U32Le,
    reserved1: U32Le,
}

const _: () = assert!(std::mem::size_of::<RecordHeaderRaw>() == RECORD_HEADER_SIZE_BYTES);

/// The caller's fields of a record, as appended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordFields {
    /// Transaction the record belongs to.
    pub txn_id: TxnId,
    /// Step number within the transaction.
    pub step: u32,
    /// Record kind (non-zero; the meaning is the caller's).
    pub kind: u16,
}

/// A decoded record header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordHeader {
    /// CRC of this record (header bytes 4..48 and payload).
    pub crc: u32,
    /// CRC of the record before it.
    pub prev_crc: u32,
    /// Its LSN.
    pub lsn: Lsn,
    /// Incarnation of the segment it was written to.
    pub incarnation: u64,
    /// The caller's fields.
    pub fields: RecordFields,
    /// Payload length in bytes.
    pub payload_len: u32,
}

/// Bytes a record with `payload_len` bytes of payload occupies in a batch.
pub const fn record_size_bytes(payload_len: usize) -> usize {
    align_up(RECORD_HEADER_SIZE_BYTES + payload_len, RECORD_ALIGN_BYTES)
}

/// Encodes a record into `out` (exactly [`record_size_bytes`] long, padding zeroed) and
/// returns its CRC.
pub fn encode_record(
    out: &mut [u8],
    lsn: Lsn,
    incarnation: u64,
    prev_crc: u32,
    fields: RecordFields,
    payload: &[u8],
) -> u32 {
    assert!(payload.len() <= RECORD_PAYLOAD_SIZE_BYTES_MAX);
    assert!(fields.kind != 0);
    assert!(lsn >= Lsn(1));
    assert_eq!(out.len(), record_size_bytes(payload.len()));
    let raw = RecordHeaderRaw {
        crc: U32Le::new(0),
        prev_crc: U32Le::new(prev_crc),
        lsn: U64Le::new(lsn.get()),
        incarnation: U64Le::new(incarnation),
        txn_id: U64Le::new(fields.txn_id.get()),
        step: U32Le::new(fields.step),
        kind: U16Le::new(fields.kind),
        reserved0: U16Le::new(0),
        payload_len: U32Le::new(payload.len() as u32),
        reserved1: U32Le::new(0),
    };
    let (head, rest) = out.split_at_mut(RECORD_HEADER_SIZE_BYTES);
    head.copy_from_slice(bytemuck::bytes_of(&raw));
    rest[..payload.len()].copy_from_slice(payload);
    rest[payload.len()..].fill(0);
    let crc = crc_of(&[&head[4..], payload]);
    head[..4].copy_from_slice(&crc.to_le_bytes());
    crc
}

/// Decodes the record at the start of `bytes`, checking its CRC, bounds and padding.
/// Returns the header and the payload slice; the record occupies
/// `record_size_bytes(payload.len())` bytes.
pub fn decode_record(bytes: &[u8]) -> Result<(RecordHeader, &[u8]), DecodeError> {
    check_len(bytes, RECORD_HEADER_SIZE_BYTES)?;
    let head = &bytes[..RECORD_HEADER_SIZE_BYTES];
    if head.iter().all(|b| *b == 0) {
        return Err(DecodeError::Zeroed);
    }
    let raw: RecordHeaderRaw = bytemuck::pod_read_unaligned(head);
    let payload_len = raw.payload_len.get() as usize;
    check_bound(
        "payload_len",
        payload_len as u64,
        payload_len <= RECORD_PAYLOAD_SIZE_BYTES_MAX,
        "<= 128 KiB",
    )?;
    let size_bytes = record_size_bytes(payload_len);
    check_len(bytes, size_bytes)?;
    let payload = &bytes[RECORD_HEADER_SIZE_BYTES..RECORD_HEADER_SIZE_BYTES + payload_len];
    check_crc(raw.crc.get(), crc_of(&[&head[4..], payload]))?;
    if raw.reserved0.get() != 0 || raw.reserved1.get() != 0 {
        return Err(DecodeError::ReservedNotZero { field: "reserved" });
    }
    if bytes[RECORD_HEADER_SIZE_BYTES + payload_len..size_bytes]
        .iter()
        .any(|b| *b != 0)
    {
        return Err(DecodeError::ReservedNotZero { field: "padding" });
    }
    check_bound("kind", 0, raw.kind.get() != 0, "non-zero")?;
    check_bound("lsn", 0, raw.lsn.get() >= 1, ">= 1")?;
    Ok((
        RecordHeader {
            crc: raw.crc.get(),
            prev_crc: raw.prev_crc.get(),
            lsn: Lsn(raw.lsn.get()),
            incarnation: raw.incarnation.get(),
            fields: RecordFields {
                txn_id: TxnId(raw.txn_id.get()),
                step: raw.step.get(),
                kind: raw.kind.get(),
            },
            payload_len: payload_len as u32,
        },
        payload,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_fields() -> RecordFields {
        RecordFields {
            txn_id: TxnId(0x0102_0304_0506_0708),
            step: 7,
            kind: 3,
        }
    }

    fn encoded_record(payload: &[u8]) -> Vec<u8> {
        let mut out = vec![0xAA; record_size_bytes(payload.len())];
        encode_record(&mut out, Lsn(42), 9, 0xDEAD_BEEF, sample_fields(), payload);
        out
    }

    #[test]
    fn record_round_trips_every_field() {
        let bytes = encoded_record(b"hello");
        let (header, payload) = decode_record(&bytes).unwrap();
        assert_eq!(payload, b"hello");
        assert_eq!(header.lsn, Lsn(42));
        assert_eq!(header.incarnation, 9);
        assert_eq!(header.prev_crc, 0xDEAD_BEEF);
        assert_eq!(header.fields, sample_fields());
        assert_eq!(header.payload_len, 5);
        assert_eq!(bytes.len(), 56);
    }

    #[test]
    fn record_fields_sit_at_documented_offsets_little_endian() {
        let bytes = encoded_record(b"xy");
        assert_eq!(&bytes[4..8], &0xDEAD_BEEFu32.to_le_bytes());
        assert_eq!(&bytes[8..16], &42u64.to_le_bytes());
        assert_eq!(&bytes[16..24], &9u64.to_le_bytes());
        assert_eq!(&bytes[24..32], &0x0102_0304_0506_0708u64.to_le_bytes());
        assert_eq!(&bytes[32..36], &7u32.to_le_bytes());
        assert_eq!(&bytes[36..38], &3u16.to_le_bytes());
        assert_eq!(&bytes[38..40], &[0, 0]);
        assert_eq!(&bytes[40..44], &2u32.to_le_bytes());
        assert_eq!(&bytes[44..48], &[0, 0, 0, 0]);
        assert_eq!(&bytes[48..50], b"xy");
        assert!(bytes[50..56].iter().all(|b| *b == 0));
    }

    #[test]
    fn record_with_any_flipped_bit_fails() {
        let bytes = encoded_record(b"payload bytes");
        for bit in 0..bytes.len() * 8 {
            let mut damaged = bytes.clone();
            damaged[bit / 8] ^= 1 << (bit % 8);
            assert!(decode_record(&damaged).is_err(), "bit {bit} flip accepted");
        }
    }

    #[test]
    fn record_payload_len_out_of_bounds_is_rejected_before_use() {
        let mut bytes = encoded_record(b"a");
        bytes[40..44].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            decode_record(&bytes),
            Err(DecodeError::OutOfBounds {
                field: "payload_len",
                ..
            })
        ));
    }

    #[test]
    fn record_truncated_is_too_short() {
        let bytes = encoded_record(b"abcdefgh");
        assert!(matches!(
            decode_record(&bytes[..50]),
            Err(DecodeError::TooShort { .. })
        ));
    }

    #[test]
    fn zeroed_bytes_decode_as_zeroed() {
        let zeros = [0u8; 128];
        assert_eq!(decode_record(&zeros), Err(DecodeError::Zeroed));
        assert_eq!(BatchHeader::decode(&zeros), Err(DecodeError::Zeroed));
        assert_eq!(SegmentHeader::decode(&zeros), Err(DecodeError::Zeroed));
        assert_eq!(LogMeta::decode(&zeros), Err(DecodeError::Zeroed));
    }

    fn sample_batch() -> BatchHeader {
        BatchHeader {
            record_count: 2,
            log_id: 77,
            segment_seq: SegmentSeq(5),
            segment_offset: 8192,
            used_bytes: 64 + 2 * 48,
            first_lsn: Lsn(10),
            durable_lsn: Lsn(9),
            prev_crc: 0x1234_5678,
            epoch: 3,
        }
    }

    #[test]
    fn batch_header_round_trips_at_documented_offsets() {
        let mut bytes = [0u8; 64];
        sample_batch().encode(&mut bytes);
        assert_eq!(BatchHeader::decode(&bytes).unwrap(), sample_batch());
        assert_eq!(&bytes[4..8], b"SMLB");
        assert_eq!(&bytes[8..12], &FORMAT_VERSION.to_le_bytes());
        assert_eq!(&bytes[12..16], &2u32.to_le_bytes());
        assert_eq!(&bytes[16..24], &77u64.to_le_bytes());
        assert_eq!(&bytes[24..32], &5u64.to_le_bytes());
        assert_eq!(&bytes[32..36], &8192u32.to_le_bytes());
        assert_eq!(&bytes[36..40], &160u32.to_le_bytes());
        assert_eq!(&bytes[40..48], &10u64.to_le_bytes());
        assert_eq!(&bytes[48..56], &9u64.to_le_bytes());
        assert_eq!(&bytes[56..60], &0x1234_5678u32.to_le_bytes());
        assert_eq!(&bytes[60..64], &3u32.to_le_bytes());
        assert_eq!(sample_batch().padded_size_bytes(), 4096);
    }

    #[test]
    fn batch_header_with_any_flipped_bit_fails() {
        let mut bytes = [0u8; 64];
        sample_batch().encode(&mut bytes);
        for bit in 0..64 * 8 {
            let mut damaged = bytes;
            damaged[bit / 8] ^= 1 << (bit % 8);
            assert!(BatchHeader::decode(&damaged).is_err(), "bit {bit}");
        }
    }

    /// Re-encodes a raw batch header with a valid CRC so the bound checks are reached.
    fn forged_batch(edit: impl FnOnce(&mut BatchHeaderRaw)) -> [u8; 64] {
        let mut bytes = [0u8; 64];
        sample_batch().encode(&mut bytes);
        let mut raw: BatchHeaderRaw = bytemuck::pod_read_unaligned(&bytes);
        edit(&mut raw);
        raw.crc = U32Le::new(crc_of(&[&bytemuck::bytes_of(&raw)[4..]]));
        bytes.copy_from_slice(bytemuck::bytes_of(&raw));
        bytes
    }

    #[test]
    fn batch_header_bounds_are_checked_even_with_a_valid_crc() {
        type Edit = Box<dyn FnOnce(&mut BatchHeaderRaw)>;
        let cases: [(&str, Edit); 6] = [
            (
                "used_bytes",
                Box::new(|r| r.used_bytes = U32Le::new(u32::MAX)),
            ),
            ("used_bytes", Box::new(|r| r.used_bytes = U32Le::new(8))),
            (
                "record_count",
                Box::new(|r| r.record_count = U32Le::new(u32::MAX)),
            ),
            (
                "segment_offset",
                Box::new(|r| r.segment_offset = U32Le::new(100)),
            ),
            ("first_lsn", Box::new(|r| r.durable_lsn = U64Le::new(10))),
            ("first_lsn", Box::new(|r| r.first_lsn = U64Le::new(0))),
        ];
        for (field, edit) in cases {
            match BatchHeader::decode(&forged_batch(edit)) {
                Err(DecodeError::OutOfBounds { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{field}: {other:?}"),
            }
        }
        let wrong_version = forged_batch(|r| r.version = U32Le::new(99));
        assert!(matches!(
            BatchHeader::decode(&wrong_version),
            Err(DecodeError::BadVersion { found: 99, .. })
        ));
    }

    #[test]
    fn segment_header_round_trips_at_documented_offsets() {
        let header = SegmentHeader {
            epoch: 4,
            log_id: 1,
            segment_seq: SegmentSeq(2),
            first_lsn: Lsn(3),
            segment_size_bytes: 1 << 20,
            prev_crc: 5,
        };
        let mut bytes = [0u8; 64];
        header.encode(&mut bytes);
        assert_eq!(SegmentHeader::decode(&bytes).unwrap(), header);
        assert_eq!(&bytes[4..8], b"SMSG");
        assert_eq!(&bytes[12..16], &4u32.to_le_bytes());
        assert_eq!(&bytes[24..32], &2u64.to_le_bytes());
        assert_eq!(&bytes[32..40], &3u64.to_le_bytes());
        assert_eq!(&bytes[40..48], &(1u64 << 20).to_le_bytes());
        assert_eq!(&bytes[48..52], &5u32.to_le_bytes());
        let mut damaged = bytes;
        damaged[30] ^= 1;
        assert!(matches!(
            SegmentHeader::decode(&damaged),
            Err(DecodeError::BadCrc { .. })
        ));
    }

    #[test]
    fn meta_round_trips_and_rejects_bad_segment_size() {
        let meta = LogMeta {
            log_id: 9,
            segment_size_bytes: 1 << 20,
            first_segment_seq: SegmentSeq(3),
            created_unix_secs: 1000,
            open_epoch: 5,
        };
        let mut bytes = [0u8; 64];
        meta.encode(&mut bytes);
        assert_eq!(LogMeta::decode(&bytes).unwrap(), meta);
        assert_eq!(&bytes[4..8], b"SMLG");
        assert_eq!(&bytes[12..16], &5u32.to_le_bytes());
        assert_eq!(&bytes[32..40], &3u64.to_le_bytes());
        let bad = LogMeta {
            segment_size_bytes: 1000,
            ..meta
        };
        bad.encode(&mut bytes);
        assert!(matches!(
            LogMeta::decode(&bytes),
            Err(DecodeError::OutOfBounds { .. })
        ));
        let mut not_meta = [0u8; 64];
        not_meta[4..8].copy_from_slice(b"JUNK");
        assert!(matches!(
            LogMeta::decode(&not_meta),
            Err(DecodeError::BadMagic { .. })
        ));
    }

    #[test]
    fn chain_seed_differs_per_log() {
        assert_ne!(chain_seed(1), chain_seed(2));
    }
}
