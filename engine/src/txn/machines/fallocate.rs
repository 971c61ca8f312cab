//! Allocate, punch or zero a range of a file (fallocate).

use serde::{Deserialize, Serialize};

use crate::constants::FILE_SIZE_BYTES_MAX;
use crate::error::FsError;
use crate::store::{FileKind, FsMeta, Ino, Op, Time, TxnResult};

use super::{step, touch, Edits, FileTxn, BLOCK};
use crate::txn::{Context, Transition};

/// What a [`Fallocate`] does to its range (the modes of fallocate(2) a file server
/// passes; `COLLAPSE_RANGE` and `INSERT_RANGE` are not among them).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum FallocMode {
    /// Mode 0 (`keep_size`: `FALLOC_FL_KEEP_SIZE`): every hole in the range gets a block
    /// of zeros, so later writes there need no new space; data is unchanged; without
    /// `keep_size` the file grows to the range's end.
    Allocate {
        /// The size does not change.
        keep_size: bool,
    },
    /// `FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE`: the range reads zeros, its whole
    /// blocks are freed; as ext4: nothing is punched from the end of the file on, and a
    /// range past the end reaches to the end of the block holding it; the size does not
    /// change.
    PunchHole,
    /// `FALLOC_FL_ZERO_RANGE`: the range reads zeros, and every block it touches is held
    /// (as by `Allocate`); without `keep_size` the file grows to the range's end.
    ZeroRange {
        /// The size does not change.
        keep_size: bool,
    },
}

/// fallocate: one step, which changes the blocks and sets the times (and the size).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fallocate {
    /// The file.
    pub ino: Ino,
    /// Byte offset.
    pub offset: u64,
    /// Bytes (more than none).
    pub len: u64,
    /// What to do.
    pub mode: FallocMode,
    /// The time of the operation.
    pub now: Time,
    /// Whether it is done.
    pub done: bool,
}

impl Fallocate {
    pub(super) fn next(
        &self,
        meta: &FsMeta,
        context: &Context<'_>,
    ) -> Result<Transition<FileTxn>, FsError> {
        if self.done {
            return Ok(Transition::Done(TxnResult::Done));
        }
        let inode = meta.inode(self.ino)?;
        match inode.kind {
            FileKind::File => {}
            FileKind::Dir => return Err(FsError::IsDir),
            _ => {
                return Err(FsError::Invalid(
                    "fallocate of a link, FIFO, socket or device",
                ))
            }
        }
        if self.len == 0 {
            return Err(FsError::Invalid("fallocate of no bytes"));
        }
        let end = self.offset.saturating_add(self.len);
        if end > FILE_SIZE_BYTES_MAX {
            return Err(FsError::FileTooBig);
        }
        let size = inode.attrs.size;
        // Every block the range touches.
        let touched = (self.offset / BLOCK, end.div_ceil(BLOCK));
        let held_in = |first: u64, end: u64| -> u64 {
            let mut held: Vec<u64> = inode.blocks.blocks_in(first, end).collect();
            if let Some(cache) = context.cache {
                held.extend(
                    cache
                        .blocks_of(self.ino)
                        .filter(|b| (first..end).contains(b)),
                );
            }
            held.sort_unstable();
            held.dedup();
            held.len() as u64
        };
        let mut redo = Vec::new();
        let (grow_to, needed) = match self.mode {
            FallocMode::Allocate { keep_size } => {
                let holes = touched.1 - touched.0 - held_in(touched.0, touched.1);
                redo.push(Op::ZeroBlocks {
                    ino: self.ino,
                    first_block: touched.0,
                    count: touched.1 - touched.0,
                });
                ((!keep_size).then_some(end), holes)
            }
            FallocMode::PunchHole => {
                // As ext4: nothing at or past the end; a range past the end reaches to the
                // end of the block holding it.
                let punch_end = if end > size {
                    size.div_ceil(BLOCK) * BLOCK
                } else {
                    end
                };
                if self.offset < size {
                    redo.push(Op::PunchData {
                        ino: self.ino,
                        offset: self.offset,
                        len: punch_end - self.offset,
                    });
                }
                // Its partial first and last blocks may become dirty: each needs a block
                // at the next checkpoint (blocks are never overwritten in place).
                (None, 2)
            }
            FallocMode::ZeroRange { keep_size } => {
                redo.push(Op::PunchData {
                    ino: self.ino,
                    offset: self.offset,
                    len: self.len,
                });
                redo.push(Op::ZeroBlocks {
                    ino: self.ino,
                    first_block: touched.0,
                    count: touched.1 - touched.0,
                });
                // Every block it touches becomes dirty (a block of zeros, or a partial
                // one zeroed): each needs a block at the next checkpoint, as the old ones
                // are free only after it.
                ((!keep_size).then_some(end), touched.1 - touched.0)
            }
        };
        if needed > 0 && meta.space.available_blocks() < needed + context.reserved_blocks {
            return Err(FsError::NoSpace("the data file is full"));
        }
        let mut edits = Edits::new(meta);
        edits.edit(self.ino, |a| {
            if let Some(grow_to) = grow_to {
                a.size = a.size.max(grow_to);
            }
            touch(a, self.now);
        })?;
        let (edits_redo, _) = edits.ops();
        redo.extend(edits_redo);
        let next = FileTxn::Fallocate(Fallocate {
            done: true,
            ..self.clone()
        });
        // One step, past which the transaction is done: never undone.
        Ok(step(next, redo, Vec::new(), Some(TxnResult::Done)))
    }
}
