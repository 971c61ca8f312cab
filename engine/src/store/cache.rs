//! File data not yet in the data file: dirty blocks, and the blocks a checkpoint is
//! writing back.

use std::collections::HashMap;
use std::sync::Arc;

use crate::constants::BLOCK_SIZE_BYTES;

use super::{Ino, BLOCK};

/// A cached data block.
pub type Block = [u8; BLOCK_SIZE_BYTES];

/// File data not yet in the data file.
#[derive(Debug, Default)]
pub struct Cache {
    /// Blocks changed since the last checkpoint took them.
    pub dirty: HashMap<(Ino, u64), Arc<Block>>,
    /// Blocks a checkpoint is writing back: read from here until it is done.
    pub flushing: HashMap<(Ino, u64), Arc<Block>>,
}

impl Cache {
    pub(super) fn drop_block(&mut self, ino: Ino, block: u64) {
        self.dirty.remove(&(ino, block));
        self.flushing.remove(&(ino, block));
    }

    pub(super) fn drop_from(&mut self, ino: Ino, first_block: u64) {
        self.dirty.retain(|&(i, b), _| i != ino || b < first_block);
        self.flushing
            .retain(|&(i, b), _| i != ino || b < first_block);
    }

    /// Bytes of dirty data.
    pub fn dirty_bytes(&self) -> u64 {
        self.dirty.len() as u64 * BLOCK
    }
}
