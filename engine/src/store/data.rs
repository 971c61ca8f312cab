//! The data file (`DATA`): 4 KiB blocks, grown before they are handed out.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::constants::{BLOCK_SIZE_BYTES, DATA_GROW_BLOCKS};
use crate::error::{CorruptKind, FsError};
use crate::io::{AlignedBuf, Device, FileId, IoErrorKind};

use super::{Block, BLOCK, DATA_FILE_NAME};

/// The data file on the device. Shared: checkpoints and large writes write to it
/// outside the engine lock (always to blocks no durable state names yet).
#[derive(Debug)]
pub struct DataFile<D: Device> {
    device: Arc<D>,
    file: FileId,
    /// Its length in blocks (as set; durable after the next sync).
    len_blocks: AtomicU64,
}

impl<D: Device> DataFile<D> {
    /// Opens the data file, creating it (and making its name durable) when it is missing.
    pub fn open(device: Arc<D>) -> Result<DataFile<D>, FsError> {
        let missing = !device.list()?.iter().any(|n| n == DATA_FILE_NAME);
        if missing {
            let file = device.open(DATA_FILE_NAME, true)?;
            device.close(file);
            device.sync_dir()?;
        }
        DataFile::open_existing(device)
    }

    /// Opens the data file, which must exist (writes nothing).
    pub fn open_existing(device: Arc<D>) -> Result<DataFile<D>, FsError> {
        let file = device.open(DATA_FILE_NAME, false)?;
        let len_blocks = AtomicU64::new(device.len(file)? / BLOCK);
        Ok(DataFile {
            device,
            file,
            len_blocks,
        })
    }

    /// The device.
    pub fn device(&self) -> &Arc<D> {
        &self.device
    }

    /// Its length in bytes (as set).
    pub fn len_bytes(&self) -> u64 {
        self.len_blocks.load(Ordering::Acquire) * BLOCK
    }

    /// Reads data block `block`.
    pub fn read_block(&self, block: u64, out: &mut Block) -> Result<(), FsError> {
        let len_blocks = self.len_blocks.load(Ordering::Acquire);
        if block >= len_blocks {
            return Err(FsError::corrupt(
                CorruptKind::DataFile,
                format!("data block {block} is past the data file's {len_blocks} blocks"),
            ));
        }
        let mut buf = AlignedBuf::new_zeroed(BLOCK_SIZE_BYTES);
        self.device.read_at(self.file, block * BLOCK, &mut buf)?;
        out.copy_from_slice(&buf);
        Ok(())
    }

    /// Reads the consecutive data blocks from `start` into `buf` (a whole number of
    /// blocks): one device call for the run.
    pub fn read_run(&self, start: u64, buf: &mut AlignedBuf) -> Result<(), FsError> {
        let len_blocks = self.len_blocks.load(Ordering::Acquire);
        let count = (buf.len() / BLOCK_SIZE_BYTES) as u64;
        if start.saturating_add(count) > len_blocks {
            return Err(FsError::corrupt(
                CorruptKind::DataFile,
                format!(
                    "data blocks {start}..{} are past the data file's {len_blocks} blocks",
                    start.saturating_add(count)
                ),
            ));
        }
        self.device.read_at(self.file, start * BLOCK, buf)?;
        Ok(())
    }

    /// Makes the file at least `blocks` long (growing in steps of [`DATA_GROW_BLOCKS`]).
    /// Callers hold the engine lock, so two never grow it at once.
    pub fn ensure_len(&self, blocks: u64) -> Result<(), FsError> {
        if blocks <= self.len_blocks.load(Ordering::Acquire) {
            return Ok(());
        }
        // Allocated, not sparse: a block the engine hands out always has room on the host,
        // so a checkpoint writing dirty data never fails for space. Grown in steps; on a
        // nearly full host, by what is asked alone.
        let mut len = blocks.div_ceil(DATA_GROW_BLOCKS) * DATA_GROW_BLOCKS;
        let mut allocated = self.device.allocate(self.file, len * BLOCK);
        if allocated
            .as_ref()
            .is_err_and(|e| e.kind == IoErrorKind::NoSpace)
            && len > blocks
        {
            len = blocks;
            allocated = self.device.allocate(self.file, len * BLOCK);
        }
        allocated.map_err(|e| match e.kind {
            IoErrorKind::NoSpace => {
                FsError::NoSpace("the host file system has no room for the data file")
            }
            _ => e.into(),
        })?;
        self.len_blocks.store(len, Ordering::Release);
        Ok(())
    }

    /// Writes `bytes` (whole blocks) at data block `block`; durable after [`DataFile::sync`].
    pub fn write_blocks(&self, block: u64, bytes: &[u8]) -> Result<(), FsError> {
        assert!(bytes.len().is_multiple_of(BLOCK_SIZE_BYTES));
        assert!(
            block + (bytes.len() / BLOCK_SIZE_BYTES) as u64
                <= self.len_blocks.load(Ordering::Acquire)
        );
        self.device.write_at(self.file, block * BLOCK, bytes)?;
        Ok(())
    }

    /// Makes every write to the data file durable, and its length.
    pub fn sync(&self) -> Result<(), FsError> {
        self.device.sync(self.file)?;
        Ok(())
    }
}
