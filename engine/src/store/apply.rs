//! How an op changes the store: [`Store::apply`] and one arm per op.

use std::sync::Arc;

use imbl::OrdMap;

use crate::error::{CorruptKind, FsError};
use crate::ids::Lsn;
use crate::io::Device;

use super::op::Object;
use crate::constants::BLOCK_SIZE_BYTES;

use super::cache::zero_block;
use super::{runs_of, Block, BlockMap, FileKind, Ino, Inode, Mapped, Name, Op, Run, Store, BLOCK};

impl<D: Device> Store<D> {
    /// Applies the ops of the record at `lsn`, skipping those whose object already shows
    /// an LSN at or past it (the effect is in the store already).
    pub fn apply(&mut self, ops: &[Op], lsn: Lsn) -> Result<(), FsError> {
        let mut done: Vec<Object> = Vec::new();
        for op in ops {
            let object = op.object();
            let object_lsn = match object {
                Object::Space => self.meta.space_lsn,
                Object::Inode(ino) => self.meta.inodes.get(&ino).map_or(Lsn(0), |i| i.lsn),
            };
            // An object this record already changed shows `lsn`: later ops of the record
            // still apply to it.
            if object_lsn >= lsn && !done.contains(&object) {
                continue;
            }
            self.apply_op(op)?;
            match object {
                Object::Space => self.meta.space_lsn = lsn,
                Object::Inode(ino) => {
                    if let Some(inode) = self.meta.inodes.get_mut(&ino) {
                        inode.lsn = lsn;
                    }
                }
            }
            done.push(object);
        }
        self.meta.applied_lsn = self.meta.applied_lsn.max(lsn);
        Ok(())
    }

    fn inode_mut(&mut self, ino: Ino) -> Result<&mut Inode, FsError> {
        self.meta.inodes.get_mut(&ino).ok_or_else(|| {
            FsError::corrupt(
                CorruptKind::Redo,
                format!("an op names inode {ino}, which is gone"),
            )
        })
    }

    fn apply_op(&mut self, op: &Op) -> Result<(), FsError> {
        let corrupt = |what: String| Err(FsError::corrupt(CorruptKind::Redo, what));
        match op {
            Op::PutInode {
                ino,
                kind,
                attrs,
                parent,
                target,
            } => {
                if self.meta.inodes.contains_key(ino) {
                    return corrupt(format!("inode {ino} created twice"));
                }
                let inode = Inode {
                    ino: *ino,
                    kind: *kind,
                    attrs: *attrs,
                    parent: *parent,
                    target: target.clone(),
                    blocks: BlockMap::default(),
                    lsn: Lsn(0),
                    xattrs: Default::default(),
                };
                self.meta.inodes.insert(*ino, inode);
                if *kind == FileKind::Dir {
                    self.meta.dirs.insert(*ino, OrdMap::new());
                }
                self.meta.next_ino = self.meta.next_ino.max(ino.next());
            }
            Op::DropInode { ino } => self.drop_inode(*ino)?,
            Op::SetAttrs { ino, attrs } => self.inode_mut(*ino)?.attrs = *attrs,
            Op::SetParent { ino, parent } => self.inode_mut(*ino)?.parent = *parent,
            Op::DirInsert { dir, name, ino } => {
                let entries = self.dir_mut(*dir)?;
                if entries.insert(name.clone(), *ino).is_some() {
                    return corrupt(format!("entry {name} inserted twice in {dir}"));
                }
            }
            Op::DirRemove { dir, name } => {
                if self.dir_mut(*dir)?.remove(name).is_none() {
                    return corrupt(format!("entry {name} of {dir} removed twice"));
                }
            }
            Op::DirSet { dir, name, ino } => {
                if self.dir_mut(*dir)?.insert(name.clone(), *ino).is_none() {
                    return corrupt(format!("entry {name} of {dir} set but absent"));
                }
            }
            Op::AllocBlocks { runs } => self.meta.space.mark_used(runs)?,
            Op::FreeBlocks { runs } => self.meta.space.release(runs)?,
            Op::MapBlocks {
                ino,
                first_block,
                runs,
                crcs,
            } => self.map_blocks(*ino, *first_block, runs, crcs)?,
            Op::WriteInline { ino, offset, bytes } => self.write_inline(*ino, *offset, bytes)?,
            Op::TruncateData { ino, size } => self.truncate_data(*ino, *size)?,
            Op::ZeroBlocks {
                ino,
                first_block,
                count,
            } => self.zero_blocks(*ino, *first_block, *count)?,
            Op::PunchData { ino, offset, len } => self.punch_data(*ino, *offset, *len)?,
            Op::SetXattr { ino, name, value } => {
                let xattrs = &mut self.inode_mut(*ino)?.xattrs;
                match value {
                    Some(value) => {
                        xattrs.insert(name.clone(), value.clone());
                    }
                    None => {
                        xattrs.remove(name);
                    }
                }
            }
        }
        Ok(())
    }

    /// [`Op::DropInode`]: the inode goes with its data; a directory must be empty.
    fn drop_inode(&mut self, ino: Ino) -> Result<(), FsError> {
        if self.meta.dirs.get(&ino).is_some_and(|d| !d.is_empty()) {
            return Err(FsError::corrupt(
                CorruptKind::Redo,
                format!("directory {ino} dropped with entries"),
            ));
        }
        let inode = self.meta.inodes.remove(&ino).ok_or_else(|| {
            FsError::corrupt(CorruptKind::Redo, format!("inode {ino} dropped twice"))
        })?;
        self.meta.dirs.remove(&ino);
        let runs = runs_of(inode.blocks.data_blocks());
        self.meta.space.release(&runs)?;
        self.cache.drop_from(ino, 0);
        Ok(())
    }

    /// [`Op::MapBlocks`]: file blocks from `first_block` name `runs`, each with its
    /// checksum; what they named before is released. Bounded before use: one write maps at
    /// most a write's worth of blocks, all inside the data file.
    fn map_blocks(
        &mut self,
        ino: Ino,
        first_block: u64,
        runs: &[Run],
        crcs: &[u32],
    ) -> Result<(), FsError> {
        let corrupt = |what: String| Err(FsError::corrupt(CorruptKind::Redo, what));
        let count = runs.iter().map(|r| r.len).fold(0u64, u64::saturating_add);
        let high_water = self.meta.space.high_water_blocks;
        if count > (crate::constants::WRITE_SIZE_BYTES_MAX / BLOCK_SIZE_BYTES) as u64
            || runs.iter().any(|r| r.len == 0 || r.end() > high_water)
            || first_block.saturating_add(count) > crate::constants::FILE_SIZE_BYTES_MAX / BLOCK
        {
            return corrupt(format!("mapping of invalid runs {runs:?} at {first_block}"));
        }
        if crcs.len() as u64 != count {
            return corrupt(format!(
                "mapping of {count} blocks at {first_block} with {} checksums",
                crcs.len()
            ));
        }
        let mut released = Vec::new();
        let mut file_block = first_block;
        let inode = self.inode_mut(ino)?;
        let mut crcs = crcs.iter();
        for run in runs {
            for data_block in run.start..run.end() {
                let crc = *crcs.next().expect("one checksum per block, checked above");
                if let Some(old) = inode.blocks.insert(file_block, Mapped { data_block, crc }) {
                    released.push(old);
                }
                file_block += 1;
            }
        }
        self.meta.space.release(&runs_of(released.into_iter()))?;
        for block in first_block..file_block {
            self.cache.drop_block(ino, block);
        }
        Ok(())
    }

    /// [`Op::WriteInline`]: the bytes go into the file's cached blocks. The file must
    /// exist: dirty data of no inode would reach a checkpoint.
    fn write_inline(&mut self, ino: Ino, offset: u64, bytes: &[u8]) -> Result<(), FsError> {
        self.inode_mut(ino)?;
        if offset.saturating_add(bytes.len() as u64) > crate::constants::FILE_SIZE_BYTES_MAX {
            return Err(FsError::corrupt(
                CorruptKind::Redo,
                format!("inline write past the largest file at {offset}"),
            ));
        }
        let mut done = 0usize;
        while done < bytes.len() {
            let at = offset + done as u64;
            let block = at / BLOCK;
            let within = (at % BLOCK) as usize;
            let take = (BLOCK_SIZE_BYTES - within).min(bytes.len() - done);
            let cached = self.dirty_block(ino, block)?;
            cached[within..within + take].copy_from_slice(&bytes[done..done + take]);
            done += take;
        }
        Ok(())
    }

    /// [`Op::TruncateData`]: data past `size` is released, the rest of its last block
    /// zeroed.
    fn truncate_data(&mut self, ino: Ino, size: u64) -> Result<(), FsError> {
        if size > crate::constants::FILE_SIZE_BYTES_MAX {
            return Err(FsError::corrupt(
                CorruptKind::Redo,
                format!("truncation past the largest file: {size}"),
            ));
        }
        let keep = size.div_ceil(BLOCK);
        let inode = self.inode_mut(ino)?;
        let gone = inode.blocks.remove_from(keep);
        self.meta.space.release(&runs_of(gone.into_iter()))?;
        self.cache.drop_from(ino, keep);
        let within = (size % BLOCK) as usize;
        if within != 0 && self.holds_block(ino, keep - 1) && !self.unwritten(ino, keep - 1) {
            self.dirty_block(ino, keep - 1)?[within..].fill(0);
        }
        Ok(())
    }

    /// [`Op::ZeroBlocks`]: the holes in the range become cached blocks of zeros (one
    /// shared block: a write copies it). Bounded before use: never more blocks than the
    /// data file can hold, never past the largest file.
    fn zero_blocks(&mut self, ino: Ino, first_block: u64, count: u64) -> Result<(), FsError> {
        let end = first_block.saturating_add(count);
        if count > self.meta.space.capacity_blocks
            || end > crate::constants::FILE_SIZE_BYTES_MAX / BLOCK
        {
            return Err(FsError::corrupt(
                CorruptKind::Redo,
                format!("{count} blocks of zeros at block {first_block} of {ino}"),
            ));
        }
        self.file_mut(ino)?;
        let zeros = zero_block();
        for block in first_block..end {
            if !self.holds_block(ino, block) {
                self.cache.dirty.insert((ino, block), Arc::clone(&zeros));
            }
        }
        Ok(())
    }

    /// [`Op::PunchData`]: whole blocks in the range become holes; partial ones are zeroed
    /// where they hold data.
    fn punch_data(&mut self, ino: Ino, offset: u64, len: u64) -> Result<(), FsError> {
        let end = offset.saturating_add(len);
        if end > crate::constants::FILE_SIZE_BYTES_MAX {
            return Err(FsError::corrupt(
                CorruptKind::Redo,
                format!("hole of {len} bytes at {offset} of {ino}, past the largest file"),
            ));
        }
        let whole = offset.div_ceil(BLOCK)..end / BLOCK;
        let inode = self.file_mut(ino)?;
        if whole.start < whole.end {
            let gone = inode.blocks.remove_range(whole.start, whole.end);
            self.meta.space.release(&runs_of(gone.into_iter()))?;
            self.cache.drop_range(ino, whole.start, whole.end);
        }
        // The partial blocks: the first and last, or one block holding the whole range.
        let mut partial = Vec::new();
        if len > 0 {
            let (head, tail) = (offset / BLOCK, (end - 1) / BLOCK);
            let (from, to) = (offset - head * BLOCK, end - tail * BLOCK);
            if head == tail {
                if from != 0 || to != BLOCK {
                    partial.push((head, from, to));
                }
            } else {
                if from != 0 {
                    partial.push((head, from, BLOCK));
                }
                if to != BLOCK {
                    partial.push((tail, 0, to));
                }
            }
        }
        for (block, from, to) in partial {
            // A block preallocated and never written reads zeros already, and stays
            // unwritten (a hole to SEEK_DATA).
            if self.holds_block(ino, block) && !self.unwritten(ino, block) {
                self.dirty_block(ino, block)?[from as usize..to as usize].fill(0);
            }
        }
        Ok(())
    }

    /// A regular file, for an op on its data.
    fn file_mut(&mut self, ino: Ino) -> Result<&mut Inode, FsError> {
        let inode = self.inode_mut(ino)?;
        if inode.kind != FileKind::File {
            return Err(FsError::corrupt(
                CorruptKind::Redo,
                format!("an op on data names {ino}, which is not a regular file"),
            ));
        }
        Ok(inode)
    }

    fn dir_mut(&mut self, dir: Ino) -> Result<&mut OrdMap<Name, Ino>, FsError> {
        self.meta.dirs.get_mut(&dir).ok_or_else(|| {
            FsError::corrupt(
                CorruptKind::Redo,
                format!("an op names directory {dir}, which is gone"),
            )
        })
    }

    /// Whether file block `block` of `ino` has data (cached or in the data file).
    pub(crate) fn holds_block(&self, ino: Ino, block: u64) -> bool {
        self.cache.dirty.contains_key(&(ino, block))
            || self.cache.flushing.contains_key(&(ino, block))
            || self
                .meta
                .inodes
                .get(&ino)
                .is_some_and(|i| i.blocks.contains_key(&block))
    }

    /// The dirty cache's copy of a file block, loaded first when absent.
    fn dirty_block(&mut self, ino: Ino, block: u64) -> Result<&mut Block, FsError> {
        if !self.cache.dirty.contains_key(&(ino, block)) {
            let mut fresh = Arc::new([0u8; BLOCK_SIZE_BYTES]);
            self.read_block(ino, block, Arc::make_mut(&mut fresh))?;
            self.cache.dirty.insert((ino, block), fresh);
        }
        let cached = self
            .cache
            .dirty
            .get_mut(&(ino, block))
            .expect("inserted above");
        // A checkpoint may hold this block to write it: then the write goes to a copy.
        Ok(Arc::make_mut(cached))
    }
}
