//! File data not yet in the data file: dirty blocks, and the blocks a checkpoint is
//! writing back.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::constants::BLOCK_SIZE_BYTES;

use super::{Ino, BLOCK};

/// A cached data block.
pub type Block = [u8; BLOCK_SIZE_BYTES];

/// File data not yet in the data file.
#[derive(Debug, Default)]
pub struct Cache {
    /// Blocks changed since the last checkpoint took them.
    pub dirty: BTreeMap<(Ino, u64), Arc<Block>>,
    /// Blocks a checkpoint is writing back: read from here until it is done.
    pub flushing: BTreeMap<(Ino, u64), Arc<Block>>,
}

impl Cache {
    pub(super) fn drop_block(&mut self, ino: Ino, block: u64) {
        self.dirty.remove(&(ino, block));
        self.flushing.remove(&(ino, block));
    }

    pub(super) fn drop_from(&mut self, ino: Ino, first_block: u64) {
        self.drop_range(ino, first_block, u64::MAX);
    }

    pub(super) fn drop_range(&mut self, ino: Ino, first_block: u64, end_block: u64) {
        for map in [&mut self.dirty, &mut self.flushing] {
            let keys: Vec<(Ino, u64)> = map
                .range((ino, first_block)..(ino, end_block))
                .map(|(key, _)| *key)
                .collect();
            for key in keys {
                map.remove(&key);
            }
        }
    }

    /// The file blocks of `ino` cached (dirty or being written back), in order; a block
    /// in both is named twice.
    pub fn blocks_of(&self, ino: Ino) -> impl Iterator<Item = u64> + '_ {
        let range = (ino, 0)..=(ino, u64::MAX);
        self.dirty
            .range(range.clone())
            .chain(self.flushing.range(range))
            .map(|(&(_, block), _)| block)
    }

    /// Bytes of dirty data.
    pub fn dirty_bytes(&self) -> u64 {
        self.dirty.len() as u64 * BLOCK
    }
}

/// A block of zeros, shared by every cached block that holds only zeros until written.
pub fn zero_block() -> Arc<Block> {
    static ZEROS: std::sync::LazyLock<Arc<Block>> =
        std::sync::LazyLock::new(|| Arc::new([0u8; BLOCK_SIZE_BYTES]));
    Arc::clone(&ZEROS)
}
