//! Write bytes: small writes inline in the log, large ones to new blocks first.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::constants::{
    BLOCK_SIZE_BYTES, FILE_SIZE_BYTES_MAX, WRITE_EXTENT_BLOCKS_MIN, WRITE_SIZE_BYTES_MAX,
};
use crate::error::FsError;
use crate::store::{block_crc, FileKind, FsMeta, Ino, Op, Run, Time, TxnResult};

use super::{step, touch, Edits, FileTxn, BLOCK};
use crate::txn::{Context, Transition};

/// Write bytes. Small writes (fewer than [`WRITE_EXTENT_BLOCKS_MIN`] whole blocks): one
/// step carrying the bytes (`Linked`). Large writes: step 1 allocates blocks
/// (`Allocated`), the data goes to them and is made durable outside the engine lock
/// (`DataWritten`, not logged), step 2 maps them, with any partial first and last block
/// carried inline, and sets the size (`Linked`, the point of no return). A crash before
/// step 2 rolls back: the blocks are freed.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Write {
    /// The file.
    pub ino: Ino,
    /// Byte offset.
    pub offset: u64,
    /// Bytes to write.
    pub len: u64,
    /// The time of the operation.
    pub now: Time,
    /// Where the machine is.
    pub state: WriteState,
    /// The bytes (in memory only: a resumed write is past the step that carried them).
    #[serde(skip)]
    pub data: Arc<Vec<u8>>,
}

impl PartialEq for Write {
    fn eq(&self, other: &Write) -> bool {
        (self.ino, self.offset, self.len, self.now, &self.state)
            == (other.ino, other.offset, other.len, other.now, &other.state)
    }
}

impl Eq for Write {}

/// States of [`Write`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WriteState {
    /// Nothing done.
    Start,
    /// Blocks allocated, not yet written.
    Allocated {
        /// The blocks.
        runs: Vec<Run>,
    },
    /// Blocks written and durable, not yet mapped.
    DataWritten {
        /// The blocks.
        runs: Vec<Run>,
    },
    /// The data is in the file and the size set.
    Linked,
}

impl Write {
    fn with(&self, state: WriteState) -> FileTxn {
        FileTxn::Write(Write {
            state,
            ..self.clone()
        })
    }

    /// Whole blocks the write covers: (first file block, count).
    fn whole_blocks(&self) -> (u64, u64) {
        let first = self.offset.div_ceil(BLOCK);
        let end = (self.offset + self.len) / BLOCK;
        (first, end.saturating_sub(first))
    }

    fn size_edit(&self, meta: &FsMeta) -> Result<(Vec<Op>, Vec<Op>), FsError> {
        let mut edits = Edits::new(meta);
        let end = self.offset + self.len;
        edits.edit(self.ino, |a| {
            a.size = a.size.max(end);
            touch(a, self.now);
        })?;
        Ok(edits.ops())
    }

    fn check_file(&self, meta: &FsMeta) -> Result<(), FsError> {
        match meta.inode(self.ino)?.kind {
            FileKind::File => Ok(()),
            FileKind::Dir => Err(FsError::IsDir),
            FileKind::Symlink => Err(FsError::Invalid("writing a symbolic link")),
            _ => Err(FsError::Invalid("writing a FIFO, socket or device")),
        }
    }

    pub(super) fn next(
        &self,
        meta: &FsMeta,
        context: &Context<'_>,
    ) -> Result<Transition<FileTxn>, FsError> {
        match &self.state {
            WriteState::Start => self.start(meta, context),
            WriteState::Allocated { runs } => {
                let (first, _) = self.whole_blocks();
                Ok(Transition::WriteData {
                    next: self.with(WriteState::DataWritten { runs: runs.clone() }),
                    runs: runs.clone(),
                    data_offset: (first * BLOCK - self.offset) as usize,
                })
            }
            WriteState::DataWritten { runs } => self.link_written(meta, runs),
            WriteState::Linked => Ok(Transition::Done(TxnResult::Bytes(self.len))),
        }
    }

    /// The first step: checks the call, then either allocates blocks for a large write or
    /// carries a small one inline, with the size, as the last step.
    fn start(&self, meta: &FsMeta, context: &Context<'_>) -> Result<Transition<FileTxn>, FsError> {
        self.check_file(meta)?;
        if self.len as usize != self.data.len() {
            return Err(FsError::Invalid("write length differs from its data"));
        }
        if self.len as usize > WRITE_SIZE_BYTES_MAX {
            return Err(FsError::Invalid("write larger than 1 MiB"));
        }
        if self.offset.saturating_add(self.len) > FILE_SIZE_BYTES_MAX {
            return Err(FsError::FileTooBig);
        }
        if self.len == 0 {
            return Ok(Transition::Done(TxnResult::Bytes(0)));
        }
        let (_, count) = self.whole_blocks();
        if count >= WRITE_EXTENT_BLOCKS_MIN as u64 {
            let runs = meta.space.plan(count)?;
            if meta.space.available_blocks() < count + context.reserved_blocks {
                return Err(FsError::NoSpace("the data file is full"));
            }
            return Ok(step(
                self.with(WriteState::Allocated { runs: runs.clone() }),
                vec![Op::AllocBlocks { runs: runs.clone() }],
                vec![Op::FreeBlocks { runs }],
                None,
            ));
        }
        // Inline: every block it touches may become dirty.
        let touched = (self.offset + self.len).div_ceil(BLOCK) - self.offset / BLOCK;
        if meta.space.available_blocks() < touched + context.reserved_blocks {
            return Err(FsError::NoSpace("the data file is full"));
        }
        let (mut redo, undo) = self.size_edit(meta)?;
        redo.insert(
            0,
            Op::WriteInline {
                ino: self.ino,
                offset: self.offset,
                bytes: self.data.to_vec(),
            },
        );
        Ok(step(
            self.with(WriteState::Linked),
            redo,
            undo,
            Some(TxnResult::Bytes(self.len)),
        ))
    }

    /// A large write's data is durable in its blocks: map them, with any partial first
    /// and last block inline, and set the size.
    fn link_written(&self, meta: &FsMeta, runs: &[Run]) -> Result<Transition<FileTxn>, FsError> {
        // The file may have gone while the data was written: then this fails and
        // the transaction rolls back (the blocks are freed).
        self.check_file(meta)?;
        let (first, count) = self.whole_blocks();
        let head_len = (first * BLOCK - self.offset) as usize;
        let tail_start = head_len + (count * BLOCK) as usize;
        let (edits_redo, undo) = self.size_edit(meta)?;
        // The checksums of the bytes just written, block by block.
        let crcs = self.data[head_len..tail_start]
            .chunks_exact(BLOCK_SIZE_BYTES)
            .map(block_crc)
            .collect();
        let mut redo = vec![Op::MapBlocks {
            ino: self.ino,
            first_block: first,
            runs: runs.to_vec(),
            crcs,
        }];
        if head_len > 0 {
            redo.push(Op::WriteInline {
                ino: self.ino,
                offset: self.offset,
                bytes: self.data[..head_len].to_vec(),
            });
        }
        if tail_start < self.data.len() {
            redo.push(Op::WriteInline {
                ino: self.ino,
                offset: self.offset + tail_start as u64,
                bytes: self.data[tail_start..].to_vec(),
            });
        }
        redo.extend(edits_redo);
        Ok(step(
            self.with(WriteState::Linked),
            redo,
            undo,
            Some(TxnResult::Bytes(self.len)),
        ))
    }
}
