//! A whole file system out of one engine and into a new one: what a replica that fell too
//! far behind installs (a snapshot), and a copy of a volume.
//!
//! An export is the metadata of one moment ([`FsMeta`], encoded as a checkpoint image is)
//! with every file's blocks numbered afresh, `0..block_count` in file order, followed by
//! those blocks. Its log positions are zero: the image belongs to no log, and the store it
//! is imported into starts a log of its own. docs/FORMAT.md, "An exported file system".

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::constants::BLOCK_SIZE_BYTES;
use crate::error::{CorruptKind, FsError};
use crate::ids::Lsn;
use crate::io::{AlignedBuf, Device};
use crate::log::Log;
use crate::store::image;
use crate::store::{block_crc, Block, BlockMap, DataFile, FileKind, FsMeta, Ino, Mapped, Run};
use crate::store::{EntryId, Space, Store};

use super::{Engine, EngineOptions, Shared};

/// What an import reads the blocks with: `(first, out)` fills `out` with blocks `first..`.
pub type ReadBlocks<'a> = dyn FnMut(u64, &mut [u8]) -> Result<(), FsError> + 'a;

/// Blocks read or written per device call by an import.
const IMPORT_CHUNK_BLOCKS: u64 = 256;

/// Where an exported block's bytes are.
#[derive(Clone, Debug)]
enum Source {
    /// In the cache (not yet written back): its bytes.
    Cached(Arc<Block>),
    /// In the data file.
    Stored(Mapped),
}

/// A file system exported at one moment ([`Engine::export`]): its image and its blocks.
///
/// While it lives, the engine reuses no data block it names (the blocks files let go of
/// stay in quarantine past every checkpoint), so its blocks can be read at leisure while
/// the engine goes on.
pub struct Export<D: Device> {
    meta: FsMeta,
    image: Vec<u8>,
    sources: Vec<Source>,
    shared: Arc<Shared<D>>,
}

impl<D: Device> std::fmt::Debug for Export<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Export")
            .field("image_bytes", &self.image.len())
            .field("block_count", &self.sources.len())
            .finish()
    }
}

impl<D: Device> Drop for Export<D> {
    fn drop(&mut self) {
        self.shared.exports.fetch_sub(1, Ordering::AcqRel);
    }
}

impl<D: Device> Export<D> {
    /// The encoded metadata.
    pub fn image(&self) -> &[u8] {
        &self.image
    }

    /// Names `entry` as the newest replicated-log entry the export reflects (a replica's
    /// snapshot reflects the entries it applied that left no trace in the engine too).
    pub fn set_applied_entry(&mut self, entry: Option<EntryId>) -> Result<(), FsError> {
        self.meta.applied_entry = entry;
        self.image = image::encode_image(&self.meta)?;
        Ok(())
    }

    /// How many blocks follow the image.
    pub fn block_count(&self) -> u64 {
        self.sources.len() as u64
    }

    /// Reads blocks `first..first + out.len() / 4096` into `out`, each checked against
    /// its checksum as every read of the engine is.
    pub fn read_blocks(&self, first: u64, out: &mut [u8]) -> Result<(), FsError> {
        assert!(out.len().is_multiple_of(BLOCK_SIZE_BYTES));
        let mut block: Box<Block> = Box::new([0; BLOCK_SIZE_BYTES]);
        for (i, chunk) in out.chunks_exact_mut(BLOCK_SIZE_BYTES).enumerate() {
            let index = first + i as u64;
            let source = self
                .sources
                .get(index as usize)
                .ok_or(FsError::Invalid("reading past the last block of an export"))?;
            match source {
                Source::Cached(bytes) => chunk.copy_from_slice(&bytes[..]),
                Source::Stored(mapped) => {
                    self.shared.data.read_block(mapped.data_block, &mut block)?;
                    let crc = block_crc(&block[..]);
                    if crc != mapped.crc {
                        return Err(FsError::corrupt(
                            CorruptKind::DataFile,
                            format!(
                                "data block {} fails its checksum (stored {:#010x}, read \
                                 {crc:#010x}) while exported",
                                mapped.data_block, mapped.crc
                            ),
                        ));
                    }
                    chunk.copy_from_slice(&block[..]);
                }
            }
        }
        Ok(())
    }
}

impl<D: Device> Engine<D> {
    /// Exports the file system as it is now, with no transaction in flight (a replica
    /// exports between two applied entries). Holds the engine lock for a copy of the
    /// metadata (O(1)) and of the cache's block list; numbering the blocks and encoding the
    /// image happen after it.
    pub fn export(&self) -> Result<Export<D>, FsError> {
        let (meta, cached) = {
            let inner = self.lock_usable()?;
            if !inner.active.is_empty() {
                return Err(FsError::Invalid(
                    "an export needs a moment with no transaction in flight",
                ));
            }
            // Newer than what a checkpoint is writing back: the dirty blocks win.
            let mut cached: BTreeMap<(Ino, u64), Arc<Block>> = inner.store.cache.flushing.clone();
            for (key, block) in &inner.store.cache.dirty {
                cached.insert(*key, Arc::clone(block));
            }
            // Counted under the lock, so a checkpoint's snapshot sees it.
            self.shared.exports.fetch_add(1, Ordering::AcqRel);
            (inner.store.meta.clone(), cached)
        };
        let export = Export {
            meta: FsMeta::new(crate::store::Time::default(), 0),
            image: Vec::new(),
            sources: Vec::new(),
            shared: Arc::clone(&self.shared),
        };
        renumber(meta, cached, export)
    }

    /// Creates a new file system on `device` (which must hold no engine directory: an empty
    /// one, or one whose store files were removed) holding what an [`Export`] held: its
    /// `image`, and its blocks, which `read_blocks(first, out)` fills in order. Every block
    /// is checked against the checksum the image names for it before it is written; the
    /// metadata is checked as fsck does. Returns the engine after its first checkpoint:
    /// nothing of the import needs the log. Not atomic in itself: after a crash, remove
    /// the store files and import again.
    pub fn import(
        device: Arc<D>,
        options: EngineOptions,
        image: &[u8],
        read_blocks: &mut ReadBlocks<'_>,
    ) -> Result<Engine<D>, FsError> {
        let mut meta: FsMeta = postcard::from_bytes(image)
            .map_err(|e| FsError::corrupt(CorruptKind::Image, format!("an imported image: {e}")))?;
        let crcs = block_crcs(&meta)?;
        let count = crcs.len() as u64;
        if count > options.capacity_blocks() {
            return Err(FsError::NoSpace(
                "the import holds more blocks than this store's capacity",
            ));
        }
        // SUPER first, LOG last, as a format does.
        image::create_super(&*device)?;
        let data = Arc::new(DataFile::open(Arc::clone(&device))?);
        copy_blocks(&data, &crcs, read_blocks)?;
        let log = Log::create(
            Arc::clone(&device),
            crate::log::writer::CreateOptions {
                segment_size_bytes: options.segment_size_bytes,
            },
        )?;
        meta.space = Space::new(options.capacity_blocks());
        if count > 0 {
            meta.space.mark_used(&[Run {
                start: 0,
                len: count,
            }])?;
        }
        let engine = Engine::from_recovery(log, Store::new(meta, data), 0, options);
        let report = engine.fsck();
        if !report.is_clean() {
            return Err(FsError::corrupt(
                CorruptKind::Image,
                format!("an imported image is inconsistent: {:?}", report.problems),
            ));
        }
        engine.checkpoint()?;
        Ok(engine)
    }
}

/// The export of `meta` and the `cached` blocks: every file's blocks numbered in order.
fn renumber<D: Device>(
    mut meta: FsMeta,
    cached: BTreeMap<(Ino, u64), Arc<Block>>,
    mut export: Export<D>,
) -> Result<Export<D>, FsError> {
    let mut cached_by_ino: BTreeMap<Ino, BTreeMap<u64, Arc<Block>>> = BTreeMap::new();
    for ((ino, block), bytes) in cached {
        cached_by_ino.entry(ino).or_default().insert(block, bytes);
    }
    let mut inodes = meta.inodes.clone();
    for inode in meta.inodes.values() {
        let mut renumbered = inode.clone();
        renumbered.lsn = Lsn(0);
        if inode.kind == FileKind::File {
            let mut blocks: BTreeMap<u64, Source> = inode
                .blocks
                .iter()
                .map(|(file_block, mapped)| (file_block, Source::Stored(mapped)))
                .collect();
            for (file_block, bytes) in cached_by_ino.remove(&inode.ino).unwrap_or_default() {
                blocks.insert(file_block, Source::Cached(bytes));
            }
            let mut map = BlockMap::default();
            for (file_block, source) in blocks {
                let crc = match &source {
                    Source::Cached(bytes) => block_crc(&bytes[..]),
                    Source::Stored(mapped) => mapped.crc,
                };
                let data_block = export.sources.len() as u64;
                map.insert(file_block, Mapped { data_block, crc });
                export.sources.push(source);
            }
            renumbered.blocks = map;
        }
        inodes.insert(inode.ino, renumbered);
    }
    meta.inodes = inodes;
    meta.applied_lsn = Lsn(0);
    meta.space_lsn = Lsn(0);
    let count = export.sources.len() as u64;
    meta.space = Space::new(count);
    if count > 0 {
        meta.space.mark_used(&[Run {
            start: 0,
            len: count,
        }])?;
    }
    export.image = image::encode_image(&meta)?;
    export.meta = meta;
    Ok(export)
}

/// The checksum of each block of an imported image, by block number: every block from 0
/// to the last mapped exactly once, by a regular file.
fn block_crcs(meta: &FsMeta) -> Result<Vec<u32>, FsError> {
    let mut crcs: BTreeMap<u64, u32> = BTreeMap::new();
    for inode in meta.inodes.values() {
        if inode.kind != FileKind::File && !inode.blocks.is_empty() {
            return Err(FsError::corrupt(
                CorruptKind::Image,
                format!(
                    "an imported image maps blocks to inode {}, not a file",
                    inode.ino
                ),
            ));
        }
        for (_, mapped) in inode.blocks.iter() {
            if crcs.insert(mapped.data_block, mapped.crc).is_some() {
                return Err(FsError::corrupt(
                    CorruptKind::Image,
                    format!("an imported image maps block {} twice", mapped.data_block),
                ));
            }
        }
    }
    if let Some((&last, _)) = crcs.last_key_value() {
        if last + 1 != crcs.len() as u64 {
            return Err(FsError::corrupt(
                CorruptKind::Image,
                format!(
                    "an imported image maps {} blocks, the last numbered {last}",
                    crcs.len()
                ),
            ));
        }
    }
    Ok(crcs.into_values().collect())
}

/// Fills `data` with the imported blocks, each checked against `crcs`, and makes it
/// durable.
fn copy_blocks<D: Device>(
    data: &DataFile<D>,
    crcs: &[u32],
    read_blocks: &mut ReadBlocks<'_>,
) -> Result<(), FsError> {
    let count = crcs.len() as u64;
    data.ensure_len(count)?;
    let mut buf = AlignedBuf::new_zeroed((IMPORT_CHUNK_BLOCKS as usize) * BLOCK_SIZE_BYTES);
    let mut first = 0u64;
    while first < count {
        let n = (count - first).min(IMPORT_CHUNK_BLOCKS);
        let bytes = &mut buf[..n as usize * BLOCK_SIZE_BYTES];
        read_blocks(first, bytes)?;
        for (i, block) in bytes.chunks_exact(BLOCK_SIZE_BYTES).enumerate() {
            let want = crcs[(first as usize) + i];
            let crc = block_crc(block);
            if crc != want {
                return Err(FsError::corrupt(
                    CorruptKind::DataFile,
                    format!(
                        "imported block {} fails its checksum (image {want:#010x}, read \
                         {crc:#010x})",
                        first + i as u64
                    ),
                ));
            }
        }
        data.write_blocks(first, bytes)?;
        first += n;
    }
    data.sync()
}
