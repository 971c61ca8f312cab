//! Volume snapshots: a node's whole volume at one applied entry, as one file in the
//! volume's directory, built from an engine export ([`smlog::Engine::export`]) and
//! installed by importing it ([`smlog::Engine::import`]) in place of the store.
//!
//! A snapshot file (docs/FORMAT.md, "A volume snapshot") is a header block (the Raft
//! snapshot's metadata and the layout), the export's image from offset 4096, padded to
//! 4 KiB, then its blocks. Files in the volume's directory:
//!
//! - `SNAPSHOT`: the node's current snapshot, what it sends to a node that needs one;
//! - `SNAPSHOT.building`: one being written; removed at open;
//! - `SNAPSHOT.incoming.N`: one being received; removed at open;
//! - `SNAPSHOT.install`: one being installed. While it exists the store may be half
//!   replaced: opening the volume removes the store files and imports it again, then
//!   renames it `SNAPSHOT`. Renamed so only once it is complete and durable, so an install
//!   cut by a crash is finished, never half seen.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use smlog::constants::BLOCK_SIZE_BYTES;
use smlog::io::{AlignedBuf, Device, FileId, LOCK_FILE_NAME};
use smlog::{Engine, EngineOptions, Export, FsError};

use crate::log_store::records::{LogIdRecord, MembershipRecord};

/// The current snapshot.
pub const SNAPSHOT_FILE: &str = "SNAPSHOT";
/// A snapshot being installed.
pub const SNAPSHOT_INSTALL_FILE: &str = "SNAPSHOT.install";
/// A snapshot being built.
pub const SNAPSHOT_BUILDING_FILE: &str = "SNAPSHOT.building";
/// Snapshots being received are `SNAPSHOT.incoming.N`.
pub const SNAPSHOT_INCOMING_PREFIX: &str = "SNAPSHOT.incoming.";
/// A snapshot file's first eight bytes.
pub const SNAPSHOT_MAGIC: u64 = u64::from_le_bytes(*b"SMLGSNAP");
/// The snapshot file format's version; another is refused.
pub const SNAPSHOT_VERSION: u32 = 1;
/// Magic u64, version u32, header length u32, CRC-32 (IEEE) of the header u32.
const HEADER_FIELDS_BYTES: usize = 20;
/// The largest image a snapshot may hold (as the largest checkpoint image).
const IMAGE_BYTES_MAX: u64 = 64 << 30;
/// Bytes per device call when a snapshot is written, read or sent.
pub const SNAPSHOT_CHUNK_BYTES: usize = 1 << 20;

const BLOCK: u64 = BLOCK_SIZE_BYTES as u64;

/// A Raft snapshot's metadata as smlog stores and sends it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotMetaRecord {
    /// The last entry the snapshot reflects.
    pub last_log_id: Option<LogIdRecord>,
    /// The entry that set the membership it holds.
    pub membership_log_id: Option<LogIdRecord>,
    /// That membership.
    pub membership: MembershipRecord,
}

/// A snapshot file's header: its metadata and layout.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotHeader {
    /// The Raft metadata.
    pub meta: SnapshotMetaRecord,
    /// Bytes of the engine image, from offset 4096.
    pub image_len: u64,
    /// CRC-32 (IEEE) of the image.
    pub image_crc: u32,
    /// 4 KiB blocks after the image (each checked by the CRC-32C the image names for it).
    pub block_count: u64,
}

impl SnapshotHeader {
    /// Where the blocks start.
    pub fn blocks_offset(&self) -> u64 {
        BLOCK + self.image_len.div_ceil(BLOCK) * BLOCK
    }

    /// The file's length.
    pub fn file_len(&self) -> u64 {
        self.blocks_offset() + self.block_count * BLOCK
    }

    /// The header block.
    pub fn encode(&self) -> Result<AlignedBuf, SnapshotError> {
        let payload = postcard::to_stdvec(self).expect("encoding into a Vec cannot fail");
        if payload.len() > BLOCK_SIZE_BYTES - HEADER_FIELDS_BYTES {
            return Err(SnapshotError::Damaged(format!(
                "a snapshot header of {} bytes does not fit its block",
                payload.len()
            )));
        }
        let mut block = AlignedBuf::new_zeroed(BLOCK_SIZE_BYTES);
        block[..8].copy_from_slice(&SNAPSHOT_MAGIC.to_le_bytes());
        block[8..12].copy_from_slice(&SNAPSHOT_VERSION.to_le_bytes());
        block[12..16].copy_from_slice(&(payload.len() as u32).to_le_bytes());
        block[16..20].copy_from_slice(&crc32fast::hash(&payload).to_le_bytes());
        block[HEADER_FIELDS_BYTES..HEADER_FIELDS_BYTES + payload.len()].copy_from_slice(&payload);
        Ok(block)
    }

    /// Decodes and checks a header block.
    pub fn decode(block: &[u8]) -> Result<SnapshotHeader, SnapshotError> {
        let damaged = |why: String| Err(SnapshotError::Damaged(why));
        if block.len() < BLOCK_SIZE_BYTES {
            return damaged(format!("a header of {} bytes", block.len()));
        }
        let field = |at: usize| u32::from_le_bytes(block[at..at + 4].try_into().expect("4"));
        let magic = u64::from_le_bytes(block[..8].try_into().expect("8 bytes"));
        if magic != SNAPSHOT_MAGIC {
            return damaged("not a snapshot (bad magic)".into());
        }
        if field(8) != SNAPSHOT_VERSION {
            return damaged(format!(
                "snapshot format {}; this smlog reads {SNAPSHOT_VERSION}",
                field(8)
            ));
        }
        let len = field(12) as usize;
        let Some(payload) = block.get(HEADER_FIELDS_BYTES..HEADER_FIELDS_BYTES + len) else {
            return damaged(format!("a header length of {len} bytes"));
        };
        if crc32fast::hash(payload) != field(16) {
            return damaged("the header fails its CRC".into());
        }
        let header: SnapshotHeader = postcard::from_bytes(payload)
            .map_err(|e| SnapshotError::Damaged(format!("the header: {e}")))?;
        if header.image_len > IMAGE_BYTES_MAX
            || header.block_count > (u64::MAX - BLOCK - IMAGE_BYTES_MAX) / BLOCK
        {
            return damaged(format!(
                "an image of {} bytes and {} blocks",
                header.image_len, header.block_count
            ));
        }
        Ok(header)
    }
}

/// Why a snapshot could not be written, read or installed.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// The device or the engine.
    #[error(transparent)]
    Fs(#[from] FsError),
    /// The file is not a valid snapshot.
    #[error("a damaged snapshot: {0}")]
    Damaged(String),
}

impl From<smlog::io::IoError> for SnapshotError {
    fn from(error: smlog::io::IoError) -> Self {
        SnapshotError::Fs(error.into())
    }
}

/// A snapshot file open for reading: the data of a volume's Raft snapshot.
pub struct SnapshotFile {
    device: Arc<dyn Device>,
    name: String,
    file: FileId,
    header: SnapshotHeader,
}

impl std::fmt::Debug for SnapshotFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotFile")
            .field("name", &self.name)
            .field("header", &self.header)
            .finish()
    }
}

impl Drop for SnapshotFile {
    fn drop(&mut self) {
        self.device.close(self.file);
    }
}

impl SnapshotFile {
    /// Opens `name` on `device` and checks its header and length.
    pub fn open(device: Arc<dyn Device>, name: &str) -> Result<SnapshotFile, SnapshotError> {
        let file = device.open(name, false)?;
        let checked = (|| {
            let mut block = AlignedBuf::new_zeroed(BLOCK_SIZE_BYTES);
            let len = device.len(file)?;
            if len < BLOCK {
                return Err(SnapshotError::Damaged(format!("{name}: {len} bytes")));
            }
            device.read_at(file, 0, &mut block)?;
            let header = SnapshotHeader::decode(&block)
                .map_err(|e| SnapshotError::Damaged(format!("{name}: {e}")))?;
            if header.file_len() != len {
                return Err(SnapshotError::Damaged(format!(
                    "{name}: {len} bytes; its header says {}",
                    header.file_len()
                )));
            }
            Ok(header)
        })();
        match checked {
            Ok(header) => Ok(SnapshotFile {
                device,
                name: name.to_owned(),
                file,
                header,
            }),
            Err(e) => {
                device.close(file);
                Err(e)
            }
        }
    }

    /// Its name in the volume's directory.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its header.
    pub fn header(&self) -> &SnapshotHeader {
        &self.header
    }

    /// Its length in bytes.
    pub fn len(&self) -> u64 {
        self.header.file_len()
    }

    /// Whether it holds no byte (never: a snapshot has its header).
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Reads `buf.len()` bytes (a multiple of 4096) from `offset` (a multiple of 4096).
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), SnapshotError> {
        let mut aligned = AlignedBuf::new_zeroed(buf.len().max(BLOCK_SIZE_BYTES));
        self.device
            .read_at(self.file, offset, &mut aligned[..buf.len()])?;
        buf.copy_from_slice(&aligned[..buf.len()]);
        Ok(())
    }

    /// The engine image it holds.
    fn read_image(&self) -> Result<Vec<u8>, SnapshotError> {
        let padded = (self.header.blocks_offset() - BLOCK) as usize;
        let mut image = vec![0u8; padded];
        for (i, chunk) in image.chunks_mut(SNAPSHOT_CHUNK_BYTES).enumerate() {
            self.read_at(BLOCK + (i * SNAPSHOT_CHUNK_BYTES) as u64, chunk)?;
        }
        image.truncate(self.header.image_len as usize);
        if crc32fast::hash(&image) != self.header.image_crc {
            return Err(SnapshotError::Damaged(format!(
                "{}: the image fails its CRC",
                self.name
            )));
        }
        Ok(image)
    }
}

/// Writes `export`, with `meta`, as snapshot file `name` on `device`, durably (the name is
/// the caller's to make durable).
pub fn write_snapshot<D: Device>(
    device: &D,
    name: &str,
    meta: SnapshotMetaRecord,
    export: &Export<D>,
) -> Result<(), SnapshotError> {
    let image = export.image();
    let header = SnapshotHeader {
        meta,
        image_len: image.len() as u64,
        image_crc: crc32fast::hash(image),
        block_count: export.block_count(),
    };
    let head = header.encode()?;
    let file = device.open(name, true)?;
    let written = (|| {
        device.set_len(file, 0)?;
        device.allocate(file, header.file_len())?;
        device.write_at(file, 0, &head)?;
        let mut buf = AlignedBuf::new_zeroed(SNAPSHOT_CHUNK_BYTES);
        for (i, chunk) in image.chunks(SNAPSHOT_CHUNK_BYTES).enumerate() {
            let padded = chunk.len().div_ceil(BLOCK_SIZE_BYTES) * BLOCK_SIZE_BYTES;
            buf[..chunk.len()].copy_from_slice(chunk);
            buf[chunk.len()..padded].fill(0);
            let offset = BLOCK + (i * SNAPSHOT_CHUNK_BYTES) as u64;
            device.write_at(file, offset, &buf[..padded])?;
        }
        let per_chunk = (SNAPSHOT_CHUNK_BYTES / BLOCK_SIZE_BYTES) as u64;
        let mut first = 0;
        while first < header.block_count {
            let n = (header.block_count - first).min(per_chunk);
            let bytes = &mut buf[..(n * BLOCK) as usize];
            export.read_blocks(first, bytes)?;
            device.write_at(file, header.blocks_offset() + first * BLOCK, bytes)?;
            first += n;
        }
        device.sync(file)?;
        Ok::<_, SnapshotError>(())
    })();
    device.close(file);
    written
}

/// Where a node receives snapshots: its volume's directory.
#[derive(Clone)]
pub struct SnapshotInbox {
    device: Arc<dyn Device>,
    next: Arc<AtomicU64>,
}

impl std::fmt::Debug for SnapshotInbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotInbox")
            .field("device", &self.device.describe())
            .finish()
    }
}

impl SnapshotInbox {
    /// The inbox in the directory of `device`.
    pub fn new(device: Arc<dyn Device>) -> SnapshotInbox {
        SnapshotInbox {
            device,
            next: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Starts receiving a snapshot file of `len` bytes. The length is only announced: the
    /// file grows as bytes arrive (nothing is reserved for a length a peer made up), and a
    /// length past the free space of the volume's file system is refused at once.
    pub fn receive(&self, len: u64) -> Result<Incoming, SnapshotError> {
        if len < BLOCK || !len.is_multiple_of(BLOCK) {
            return Err(SnapshotError::Damaged(format!(
                "a snapshot of {len} bytes (not whole 4 KiB blocks)"
            )));
        }
        if let Some(free) = self.device.free_bytes().filter(|&free| len > free) {
            return Err(SnapshotError::Damaged(format!(
                "a snapshot of {len} bytes; the volume's file system has {free} free"
            )));
        }
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let name = format!("{SNAPSHOT_INCOMING_PREFIX}{n}");
        let file = self.device.open(&name, true)?;
        let ready = self.device.set_len(file, 0);
        if let Err(e) = ready {
            self.device.close(file);
            let _ = self.device.remove(&name);
            return Err(e.into());
        }
        Ok(Incoming {
            device: Arc::clone(&self.device),
            name,
            file: Some(file),
            written: 0,
            len,
        })
    }
}

/// A snapshot file being received, in order. Removed if dropped unfinished.
pub struct Incoming {
    device: Arc<dyn Device>,
    name: String,
    file: Option<FileId>,
    written: u64,
    len: u64,
}

impl std::fmt::Debug for Incoming {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Incoming")
            .field("name", &self.name)
            .field("written", &self.written)
            .field("len", &self.len)
            .finish()
    }
}

impl Incoming {
    /// Bytes received so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// The length announced.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether it was announced empty (never: see [`SnapshotInbox::receive`]).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends `bytes` (whole 4 KiB blocks, within the announced length).
    pub fn write(&mut self, bytes: &[u8]) -> Result<(), SnapshotError> {
        let file = self.file.expect("open until finished");
        if !bytes.len().is_multiple_of(BLOCK_SIZE_BYTES)
            || self.written + bytes.len() as u64 > self.len
        {
            return Err(SnapshotError::Damaged(format!(
                "{} bytes at {} of a snapshot of {}",
                bytes.len(),
                self.written,
                self.len
            )));
        }
        let mut aligned = AlignedBuf::new_zeroed(bytes.len().max(BLOCK_SIZE_BYTES));
        aligned[..bytes.len()].copy_from_slice(bytes);
        self.device
            .write_at(file, self.written, &aligned[..bytes.len()])?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    /// Makes the whole file durable and opens it as a snapshot (checked).
    pub fn finish(mut self) -> Result<SnapshotFile, SnapshotError> {
        if self.written != self.len {
            return Err(SnapshotError::Damaged(format!(
                "{} bytes of a snapshot of {}",
                self.written, self.len
            )));
        }
        let file = self.file.take().expect("open until finished");
        let synced = self.device.sync(file);
        self.device.close(file);
        synced?;
        match SnapshotFile::open(Arc::clone(&self.device), &self.name) {
            Ok(opened) => {
                self.name.clear();
                Ok(opened)
            }
            Err(e) => Err(e),
        }
    }
}

impl Drop for Incoming {
    fn drop(&mut self) {
        if let Some(file) = self.file.take() {
            self.device.close(file);
        }
        if !self.name.is_empty() {
            let _ = self.device.remove(&self.name);
        }
    }
}

/// Replaces the store on `device` with the snapshot `name` (a file on `device`): the name
/// becomes [`SNAPSHOT_INSTALL_FILE`] (durably) first, so that a crash from here on
/// finishes the install at the next open ([`finish_install`]). The engine that ran on the
/// store must be retired ([`Engine::retire`]) before.
pub fn install<D: Device>(
    device: &Arc<D>,
    options: EngineOptions,
    name: &str,
) -> Result<(Engine<D>, SnapshotHeader), SnapshotError> {
    if name != SNAPSHOT_INSTALL_FILE {
        device.rename(name, SNAPSHOT_INSTALL_FILE)?;
        device.sync_dir()?;
    }
    finish_install(device, options)
}

/// Finishes an install: removes every store file, imports [`SNAPSHOT_INSTALL_FILE`], and
/// renames it [`SNAPSHOT_FILE`]. Returns the new engine and the snapshot's header; the
/// caller saves the membership the header names.
pub fn finish_install<D: Device>(
    device: &Arc<D>,
    options: EngineOptions,
) -> Result<(Engine<D>, SnapshotHeader), SnapshotError> {
    remove_store_files(&**device)?;
    let dyn_device: Arc<dyn Device> = Arc::clone(device) as Arc<dyn Device>;
    let snapshot = SnapshotFile::open(dyn_device, SNAPSHOT_INSTALL_FILE)?;
    let image = snapshot.read_image()?;
    let blocks_offset = snapshot.header.blocks_offset();
    let engine = Engine::import(Arc::clone(device), options, &image, &mut |first, out| {
        snapshot
            .read_at(blocks_offset + first * BLOCK, out)
            .map_err(|e| match e {
                SnapshotError::Fs(e) => e,
                SnapshotError::Damaged(why) => FsError::corrupt(smlog::CorruptKind::DataFile, why),
            })
    })?;
    let header = snapshot.header.clone();
    drop(snapshot);
    Ok((engine, header))
}

/// Makes the installed snapshot the current one (after the membership is saved).
pub fn complete_install<D: Device>(device: &D) -> Result<(), SnapshotError> {
    device.rename(SNAPSHOT_INSTALL_FILE, SNAPSHOT_FILE)?;
    device.sync_dir()?;
    Ok(())
}

/// Removes what an unfinished build or transfer left.
pub fn remove_leftovers<D: Device>(device: &D) -> Result<(), SnapshotError> {
    for name in device.list()? {
        if name == SNAPSHOT_BUILDING_FILE || name.starts_with(SNAPSHOT_INCOMING_PREFIX) {
            device.remove(&name)?;
        }
    }
    Ok(())
}

/// Removes every file of the store (the engine's log, superblock, images, data, and the
/// saved membership), the log's `LOG` first, keeping the lock and the snapshots.
fn remove_store_files<D: Device>(device: &D) -> Result<(), SnapshotError> {
    let keep = |name: &str| {
        name == LOCK_FILE_NAME || name == SNAPSHOT_FILE || name.starts_with("SNAPSHOT.")
    };
    let mut names: Vec<String> = device.list()?.into_iter().filter(|n| !keep(n)).collect();
    // Without its LOG a directory is no store, whatever else is left.
    names.sort_by_key(|name| name != "LOG");
    for name in names {
        device.remove(&name)?;
    }
    device.sync_dir()?;
    Ok(())
}
