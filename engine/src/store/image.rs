//! Checkpoints on disk: the `SUPER` file (two alternating 4 KiB superblocks with CRC) and
//! the image files (`ckpt-<seq>.img`) they name.
//!
//! A checkpoint writes its image to a new file and makes it durable (file and directory),
//! then writes the superblock slot `seq % 2` durably. A crash at any point leaves the other
//! slot naming the previous, whole image; recovery takes the valid slot with the highest
//! sequence number. Layouts are in docs/FORMAT.md, "The store".

use bytemuck::{Pod, Zeroable};

use crate::constants::{
    align_up, BLOCK_SIZE_BYTES, IMAGE_CHUNK_SIZE_BYTES, IMAGE_SIZE_BYTES_MAX, STORE_FORMAT_VERSION,
};
use crate::error::{CorruptKind, FsError};
use crate::format::{U32Le, U64Le};
use crate::ids::Lsn;
use crate::io::{AlignedBuf, Device, IoError, IoErrorKind};

use super::FsMeta;

/// Name of the superblock file.
pub const SUPER_FILE_NAME: &str = "SUPER";

/// Space set aside on the host for the next checkpoint image, so a checkpoint (the one
/// thing that gives space back) works on a full host file system: on a full host the
/// reserve shrinks by what the image needs, and grows back into the space the image before
/// it gives back.
pub const RESERVE_FILE_NAME: &str = "RESERVE";

/// The reserve holds at least this much, and twice the last image.
pub const RESERVE_SIZE_BYTES_MIN: u64 = 4 << 20;

/// An image is written from the reserve's space when the host has less than its size and
/// this much more free.
const RESERVE_SLACK_BYTES: u64 = 1 << 20;

/// "SMLGSUPR", little-endian.
pub const SUPER_MAGIC: u64 = u64::from_le_bytes(*b"SMLGSUPR");

/// Bytes of one superblock slot.
pub const SUPER_SLOT_SIZE_BYTES: usize = BLOCK_SIZE_BYTES;

/// Bytes of the fields at the start of a slot (the rest is zero).
pub const SUPER_FIELDS_SIZE_BYTES: usize = 64;

/// The name of checkpoint `seq`'s image file.
pub fn image_file_name(seq: u64) -> String {
    format!("ckpt-{seq:020}.img")
}

/// The sequence number in an image file's name.
pub fn parse_image_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("ckpt-")?.strip_suffix(".img")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// A superblock slot on disk.
///
/// | offset | size | field |
/// |---|---|---|
/// | 0 | 8 | magic `SMLGSUPR` |
/// | 8 | 4 | `version` ([`STORE_FORMAT_VERSION`]) |
/// | 12 | 4 | `image_crc`: CRC-32 (IEEE) of the image's `image_len` bytes |
/// | 16 | 8 | `seq`: checkpoint sequence number, from 1 |
/// | 24 | 8 | `applied_lsn`: the image reflects every record up to it |
/// | 32 | 8 | `scan_start_lsn`: recovery reads the log from here |
/// | 40 | 8 | `image_len`: bytes of the encoded image |
/// | 48 | 8 | `log_id`: the log this store belongs to |
/// | 56 | 4 | reserved, zero |
/// | 60 | 4 | `crc`: CRC-32 of bytes 0..60 |
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
struct RawSuper {
    magic: U64Le,
    version: U32Le,
    image_crc: U32Le,
    seq: U64Le,
    applied_lsn: U64Le,
    scan_start_lsn: U64Le,
    image_len: U64Le,
    log_id: U64Le,
    reserved: U32Le,
    crc: U32Le,
}

const _: () = assert!(std::mem::size_of::<RawSuper>() == SUPER_FIELDS_SIZE_BYTES);

/// How `decode` names a slot of another store format (the version follows).
const OTHER_FORMAT: &str = "store format ";

/// A valid superblock: where the latest checkpoint is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Superblock {
    /// Checkpoint sequence number.
    pub seq: u64,
    /// The image reflects every record up to this LSN.
    pub applied_lsn: Lsn,
    /// Recovery reads the log from this LSN (transactions in flight at the checkpoint
    /// started at or after it).
    pub scan_start_lsn: Lsn,
    /// Bytes of the encoded image.
    pub image_len: u64,
    /// CRC of the image.
    pub image_crc: u32,
    /// The log this store belongs to.
    pub log_id: u64,
}

impl Superblock {
    fn encode(&self) -> [u8; SUPER_FIELDS_SIZE_BYTES] {
        let mut raw = RawSuper {
            magic: U64Le::new(SUPER_MAGIC),
            version: U32Le::new(STORE_FORMAT_VERSION),
            image_crc: U32Le::new(self.image_crc),
            seq: U64Le::new(self.seq),
            applied_lsn: U64Le::new(self.applied_lsn.get()),
            scan_start_lsn: U64Le::new(self.scan_start_lsn.get()),
            image_len: U64Le::new(self.image_len),
            log_id: U64Le::new(self.log_id),
            reserved: U32Le::new(0),
            crc: U32Le::new(0),
        };
        let bytes = bytemuck::bytes_of(&raw);
        raw.crc = U32Le::new(crc32fast::hash(&bytes[..60]));
        let mut out = [0u8; SUPER_FIELDS_SIZE_BYTES];
        out.copy_from_slice(bytemuck::bytes_of(&raw));
        out
    }

    /// Decodes a slot: `Ok(None)` for a slot never written (all zero), an error for one
    /// that is damaged or of another version.
    fn decode(slot: &[u8]) -> Result<Option<Superblock>, String> {
        assert!(slot.len() >= SUPER_FIELDS_SIZE_BYTES);
        if slot.iter().all(|&b| b == 0) {
            return Ok(None);
        }
        let raw: RawSuper = bytemuck::pod_read_unaligned(&slot[..SUPER_FIELDS_SIZE_BYTES]);
        if raw.magic.get() != SUPER_MAGIC {
            return Err("bad magic".into());
        }
        if crc32fast::hash(&slot[..60]) != raw.crc.get() {
            return Err("CRC mismatch".into());
        }
        if raw.version.get() != STORE_FORMAT_VERSION {
            return Err(format!("{OTHER_FORMAT}{}", raw.version.get()));
        }
        if raw.seq.get() == 0
            && raw.applied_lsn.get() == 0
            && raw.scan_start_lsn.get() == 0
            && raw.image_len.get() == 0
        {
            // A slot no checkpoint has used yet (see `create_super`).
            return Ok(None);
        }
        let sb = Superblock {
            seq: raw.seq.get(),
            applied_lsn: Lsn(raw.applied_lsn.get()),
            scan_start_lsn: Lsn(raw.scan_start_lsn.get()),
            image_len: raw.image_len.get(),
            image_crc: raw.image_crc.get(),
            log_id: raw.log_id.get(),
        };
        if sb.seq == 0 || sb.image_len > IMAGE_SIZE_BYTES_MAX {
            return Err(format!("out-of-bounds fields {sb:?}"));
        }
        if sb.scan_start_lsn == Lsn(0) || sb.scan_start_lsn > sb.applied_lsn + 1 {
            return Err(format!("scan start past the applied LSN in {sb:?}"));
        }
        Ok(Some(sb))
    }
}

/// The fields of a slot no checkpoint has used: magic, version, a valid CRC, every other
/// field zero (sequence 0 names no checkpoint).
fn unused_slot_fields() -> [u8; SUPER_FIELDS_SIZE_BYTES] {
    let mut raw = RawSuper::zeroed();
    raw.magic = U64Le::new(SUPER_MAGIC);
    raw.version = U32Le::new(STORE_FORMAT_VERSION);
    let crc = crc32fast::hash(&bytemuck::bytes_of(&raw)[..60]);
    raw.crc = U32Le::new(crc);
    let mut out = [0u8; SUPER_FIELDS_SIZE_BYTES];
    out.copy_from_slice(bytemuck::bytes_of(&raw));
    out
}

/// Creates an empty `SUPER` file, durably, if there is none. Its slots are marked unused
/// rather than left zero: a superblock write lost in a crash can then never come back
/// later over a blank slot (stale data resurrected past the tail, fault 5), naming a
/// checkpoint that recovery had already found missing and whose data blocks it has since
/// reused.
pub fn create_super<D: Device + ?Sized>(device: &D) -> Result<(), FsError> {
    let file = device.open(SUPER_FILE_NAME, true)?;
    let result = (|| {
        if device.len(file)? < 2 * SUPER_SLOT_SIZE_BYTES as u64 {
            let mut slots = AlignedBuf::new_zeroed(2 * SUPER_SLOT_SIZE_BYTES);
            let fields = unused_slot_fields();
            for slot in 0..2 {
                let at = slot * SUPER_SLOT_SIZE_BYTES;
                slots[at..at + SUPER_FIELDS_SIZE_BYTES].copy_from_slice(&fields);
            }
            device.write_durable_at(file, 0, &slots)?;
        }
        device.sync_dir()
    })();
    device.close(file);
    Ok(result?)
}

/// Reads `SUPER`: the newest valid slot, `None` when there is no checkpoint yet.
pub fn read_super<D: Device + ?Sized>(device: &D) -> Result<Option<Superblock>, FsError> {
    let file = match device.open(SUPER_FILE_NAME, false) {
        Ok(file) => file,
        Err(e) if e.kind == IoErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let mut buf = AlignedBuf::new_zeroed(2 * SUPER_SLOT_SIZE_BYTES);
    let result = (|| {
        if device.len(file)? < buf.len() as u64 {
            return Err(FsError::corrupt(
                CorruptKind::Image,
                format!(
                    "{} is shorter than two superblocks",
                    device.path_of(SUPER_FILE_NAME).display()
                ),
            ));
        }
        device.read_at(file, 0, &mut buf)?;
        Ok(())
    })();
    device.close(file);
    result?;
    let other_format = |found: u32| FsError::Layout {
        path: device.path_of(""),
        problem: crate::error::LayoutProblem::OtherFormat {
            found,
            reads: STORE_FORMAT_VERSION,
        },
    };
    // Format 1 created SUPER blank; this format marks both slots unused at creation.
    if buf.iter().all(|&b| b == 0) {
        return Err(other_format(1));
    }
    let mut best: Option<Superblock> = None;
    let mut damage = Vec::new();
    let mut empty_slots = 0;
    for slot in 0..2 {
        let bytes = &buf[slot * SUPER_SLOT_SIZE_BYTES..(slot + 1) * SUPER_SLOT_SIZE_BYTES];
        let decoded = Superblock::decode(bytes);
        if let Err(why) = &decoded {
            // A valid slot of another format: refused as such, never read as damage.
            if let Some(found) = why.strip_prefix(OTHER_FORMAT).and_then(|v| v.parse().ok()) {
                return Err(other_format(found));
            }
        }
        match decoded {
            Ok(Some(sb)) if sb.seq % 2 == slot as u64 => {
                if best.is_none_or(|b| b.seq < sb.seq) {
                    best = Some(sb);
                }
            }
            Ok(Some(sb)) => damage.push(format!("slot {slot} holds sequence {}", sb.seq)),
            Ok(None) => empty_slots += 1,
            Err(why) => damage.push(format!("slot {slot}: {why}")),
        }
    }
    // One slot never written and the other damaged: the first checkpoint's superblock
    // write was cut by a crash, so there is no checkpoint yet. (Recovery then needs the
    // log from LSN 1, and refuses if it was released: that cannot happen before a
    // superblock is durable.)
    if best.is_none() && !damage.is_empty() && empty_slots == 0 {
        return Err(FsError::corrupt(
            CorruptKind::Image,
            format!(
                "no valid superblock in {}: {}",
                device.path_of(SUPER_FILE_NAME).display(),
                damage.join("; ")
            ),
        ));
    }
    Ok(best)
}

/// Encodes a checkpoint image.
pub fn encode_image(meta: &FsMeta) -> Result<Vec<u8>, FsError> {
    Ok(postcard::to_stdvec(meta).expect("encoding into a Vec cannot fail"))
}

/// Writes `image` as checkpoint `seq`'s file and makes it and its name durable.
pub fn write_image<D: Device + ?Sized>(device: &D, seq: u64, image: &[u8]) -> Result<(), FsError> {
    let name = image_file_name(seq);
    let padded = align_up(image.len(), BLOCK_SIZE_BYTES);
    if device
        .free_bytes()
        .is_some_and(|free| free < padded as u64 + RESERVE_SLACK_BYTES)
    {
        // The host is (nearly) full: the reserve gives back what this image needs.
        shrink_reserve(device, padded as u64)?;
    }
    let file = device.open(&name, true)?;
    let result = (|| {
        device.allocate(file, padded as u64)?;
        let mut buf =
            AlignedBuf::new_zeroed(IMAGE_CHUNK_SIZE_BYTES.min(padded.max(BLOCK_SIZE_BYTES)));
        let mut offset = 0usize;
        while offset < padded {
            let len = (padded - offset).min(buf.len());
            let have = image.len().saturating_sub(offset).min(len);
            buf[..have].copy_from_slice(&image[offset..offset + have]);
            buf[have..len].fill(0);
            device.write_at(file, offset as u64, &buf[..len])?;
            offset += len;
        }
        device.sync(file)?;
        device.sync_dir()
    })();
    device.close(file);
    Ok(result?)
}

/// Writes `sb` durably into its slot.
pub fn write_super<D: Device + ?Sized>(device: &D, sb: &Superblock) -> Result<(), FsError> {
    assert!(sb.seq > 0);
    let file = device.open(SUPER_FILE_NAME, false)?;
    let mut buf = AlignedBuf::new_zeroed(SUPER_SLOT_SIZE_BYTES);
    buf[..SUPER_FIELDS_SIZE_BYTES].copy_from_slice(&sb.encode());
    let offset = (sb.seq % 2) * SUPER_SLOT_SIZE_BYTES as u64;
    let result = device.write_durable_at(file, offset, &buf);
    device.close(file);
    Ok(result?)
}

/// Reads and checks the image `sb` names.
pub fn read_image<D: Device + ?Sized>(device: &D, sb: &Superblock) -> Result<FsMeta, FsError> {
    let name = image_file_name(sb.seq);
    let path = device.path_of(&name);
    let file = device.open(&name, false).map_err(|e| {
        if e.kind == IoErrorKind::NotFound {
            FsError::corrupt(
                CorruptKind::Image,
                format!("the superblock names {}, which is missing", path.display()),
            )
        } else {
            e.into()
        }
    })?;
    let result = (|| {
        let padded = align_up(sb.image_len as usize, BLOCK_SIZE_BYTES);
        let file_len = device.len(file)?;
        if file_len < padded as u64 {
            return Err(FsError::corrupt(
                CorruptKind::Image,
                format!(
                    "{} holds {file_len} bytes; the superblock says {}",
                    path.display(),
                    sb.image_len
                ),
            ));
        }
        let mut image = Vec::with_capacity(sb.image_len as usize);
        let mut buf =
            AlignedBuf::new_zeroed(IMAGE_CHUNK_SIZE_BYTES.min(padded.max(BLOCK_SIZE_BYTES)));
        let mut offset = 0usize;
        while offset < padded {
            let len = (padded - offset).min(buf.len());
            device.read_at(file, offset as u64, &mut buf[..len])?;
            let want = (sb.image_len as usize - offset.min(sb.image_len as usize)).min(len);
            image.extend_from_slice(&buf[..want]);
            offset += len;
        }
        Ok(image)
    })();
    device.close(file);
    let image = result?;
    if crc32fast::hash(&image) != sb.image_crc {
        return Err(FsError::corrupt(
            CorruptKind::Image,
            format!("{}: CRC mismatch", path.display()),
        ));
    }
    let meta: FsMeta = postcard::from_bytes(&image)
        .map_err(|e| FsError::corrupt(CorruptKind::Image, format!("{}: {e}", path.display())))?;
    if meta.applied_lsn != sb.applied_lsn {
        return Err(FsError::corrupt(
            CorruptKind::Image,
            format!(
                "{} reflects LSN {}; the superblock says {}",
                path.display(),
                meta.applied_lsn,
                sb.applied_lsn
            ),
        ));
    }
    meta.space
        .check()
        .map_err(|detail| FsError::corrupt(CorruptKind::Space, detail))?;
    Ok(meta)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sb(seq: u64) -> Superblock {
        Superblock {
            seq,
            applied_lsn: Lsn(100 + seq),
            scan_start_lsn: Lsn(90),
            image_len: 5000,
            image_crc: 0xdead_beef,
            log_id: 42,
        }
    }

    #[test]
    fn superblock_round_trips_and_every_flipped_bit_is_refused() {
        let bytes = sb(3).encode();
        assert_eq!(Superblock::decode(&bytes), Ok(Some(sb(3))));
        for bit in 0..SUPER_FIELDS_SIZE_BYTES * 8 {
            let mut bad = bytes;
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(Superblock::decode(&bad).is_err(), "bit {bit}");
        }
        assert_eq!(Superblock::decode(&[0u8; 64]), Ok(None));
    }

    #[test]
    fn image_names_round_trip() {
        assert_eq!(parse_image_file_name(&image_file_name(77)), Some(77));
        assert_eq!(parse_image_file_name("ckpt-1.img"), None);
        assert_eq!(parse_image_file_name("00000000000000000001.seg"), None);
    }
}

#[cfg(test)]
mod image_tests {
    use super::*;
    use crate::store::{FsMeta, Time};

    #[test]
    fn an_image_round_trips_and_a_huge_count_is_refused_without_allocating_it() {
        let meta = FsMeta::new(Time::default(), 1000);
        let bytes = encode_image(&meta).unwrap();
        let back: FsMeta = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(back, meta);
        // The inode count is the fourth field (after three one-byte varints here): claim
        // 2^62 inodes. Decoding must fail (too few bytes), not try to allocate them.
        let mut bad = bytes[..3].to_vec();
        bad.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x3f]);
        bad.extend_from_slice(&bytes[4..]);
        assert!(postcard::from_bytes::<FsMeta>(&bad).is_err());
    }
}

#[cfg(all(test, feature = "sim"))]
mod resurrection_tests {
    use super::*;
    use crate::io::sim::{CrashPlan, FaultConfig, SimDevice};

    fn sb(seq: u64) -> Superblock {
        Superblock {
            seq,
            applied_lsn: Lsn(10 * seq),
            scan_start_lsn: Lsn(1),
            image_len: 4096,
            image_crc: 7,
            log_id: 42,
        }
    }

    /// Found by the torture (seed 4492981960888882867 with `--faults all`): checkpoint 2's
    /// superblock write was lost in a crash, recovery went on from checkpoint 1 and reused
    /// the blocks checkpoint 2 had written, and at a later crash the lost write came back
    /// over its blank slot, naming those blocks. Slots are never blank now.
    #[test]
    fn a_lost_superblock_write_never_comes_back_over_an_unused_slot() {
        for seed in 0..40 {
            let device = SimDevice::new(seed);
            create_super(&device).unwrap();
            write_super(&device, &sb(1)).unwrap();
            // Checkpoint 2's superblock: acknowledged, then lost (it never reached the disk).
            device.set_faults(FaultConfig {
                lose_write_at_op: Some(1),
                ..FaultConfig::default()
            });
            write_super(&device, &sb(2)).unwrap();
            device.crash();
            device.restart(&CrashPlan::power_loss());
            assert_eq!(read_super(&device).unwrap(), Some(sb(1)), "seed {seed}");
            // Every later crash brings stale writes back over blank sectors.
            for _ in 0..4 {
                device.crash();
                device.restart(&CrashPlan {
                    resurrect_count: 8,
                    ..CrashPlan::power_loss()
                });
                assert_eq!(read_super(&device).unwrap(), Some(sb(1)), "seed {seed}");
            }
        }
    }

    #[test]
    fn unused_slots_read_as_no_checkpoint_and_a_format_1_store_is_refused_as_such() {
        let device = SimDevice::new(1);
        create_super(&device).unwrap();
        assert_eq!(read_super(&device).unwrap(), None);
        let durable = device.durable_image(SUPER_FILE_NAME).unwrap();
        assert!(durable[..8] != [0u8; 8], "slot 0 is marked");
        // A SUPER made by a format-1 build: both slots blank.
        device.poke(SUPER_FILE_NAME, 0, &[0u8; 2 * SUPER_SLOT_SIZE_BYTES]);
        let other = |e: FsError| match e {
            FsError::Layout {
                problem: crate::error::LayoutProblem::OtherFormat { found, reads },
                ..
            } => (found, reads),
            e => panic!("{e}"),
        };
        assert_eq!(
            other(read_super(&device).unwrap_err()),
            (1, STORE_FORMAT_VERSION)
        );
        // A format-1 checkpoint in one slot (its CRC valid).
        let with_version = |mut slot: Vec<u8>, version: u32| {
            slot[8..12].copy_from_slice(&version.to_le_bytes());
            let crc = crc32fast::hash(&slot[..60]);
            slot[60..64].copy_from_slice(&crc.to_le_bytes());
            slot
        };
        let slot = with_version(sb(1).encode().to_vec(), 1);
        device.poke(SUPER_FILE_NAME, SUPER_SLOT_SIZE_BYTES as u64, &slot);
        assert_eq!(
            other(read_super(&device).unwrap_err()),
            (1, STORE_FORMAT_VERSION)
        );
        // A format-2 store that never checkpointed: its slots are marked unused, with
        // version 2 (its log's records lack the replicated-log entry: never read as 3's).
        let unused = with_version(unused_slot_fields().to_vec(), 2);
        device.poke(SUPER_FILE_NAME, 0, &unused);
        device.poke(SUPER_FILE_NAME, SUPER_SLOT_SIZE_BYTES as u64, &unused);
        assert_eq!(
            other(read_super(&device).unwrap_err()),
            (2, STORE_FORMAT_VERSION)
        );
    }
}

/// After checkpoint `seq` (its superblock durable): the images before it are no longer
/// read and are removed, and the reserve grows back ([`keep_reserve`]) into the space they
/// gave back. Failing to do any of this fails nothing: a leftover image is never read, and a
/// reserve is only space.
pub fn retire_images<D: Device + ?Sized>(device: &D, seq: u64, image_len: u64) {
    let Ok(names) = device.list() else {
        return;
    };
    let mut removed = false;
    for name in names {
        if parse_image_file_name(&name).is_some_and(|s| s < seq) {
            removed |= device.remove(&name).is_ok();
        }
    }
    if removed {
        let _ = device.sync_dir();
    }
    keep_reserve(device, image_len);
}

/// Gives `bytes` of the reserve back to the host file system, for an image about to be
/// written on a full one.
fn shrink_reserve<D: Device + ?Sized>(device: &D, bytes: u64) -> Result<(), IoError> {
    let file = match device.open(RESERVE_FILE_NAME, false) {
        Ok(file) => file,
        Err(e) if e.kind == IoErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    let result = device
        .len(file)
        .and_then(|len| device.set_len(file, len.saturating_sub(bytes)))
        .and_then(|()| device.sync(file));
    device.close(file);
    result
}

/// Makes the reserve for the next image hold [`RESERVE_SIZE_BYTES_MIN`] or twice
/// `image_len`, where the host file system has room (best effort: a reserve is only space).
/// A device that does not know its free space has none.
pub fn keep_reserve<D: Device + ?Sized>(device: &D, image_len: u64) {
    if device.free_bytes().is_none() {
        // A device that cannot run out of space (the simulated one) needs none.
        return;
    }
    let want =
        RESERVE_SIZE_BYTES_MIN.max(2 * align_up(image_len as usize, BLOCK_SIZE_BYTES) as u64);
    let Ok(file) = device.open(RESERVE_FILE_NAME, true) else {
        return;
    };
    if device.len(file).is_ok_and(|len| len < want) {
        let _ = device.allocate(file, want);
    }
    device.close(file);
    let _ = device.sync_dir();
}
