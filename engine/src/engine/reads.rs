//! Reads: they go on after the engine stops (fail-stop makes it read-only, as a file system
//! remounts read-only on an error), and may show commits not yet durable.

use crate::constants::BLOCK_SIZE_BYTES;
use crate::error::FsError;
use crate::io::Device;
use crate::store::fsck::{self, FsckReport};
use crate::store::{EntryId, FileKind, FsMeta, Ino, Name, Outcome, RequestKey, Stat};

use super::{DirEntry, Engine, StatFs};

impl<D: Device> Engine<D> {
    /// Attributes of `ino`.
    pub fn getattr(&self, ino: Ino) -> Result<Stat, FsError> {
        self.view().store.attr(ino)
    }

    /// The directory holding directory `ino` (the root's is itself).
    pub fn parent(&self, ino: Ino) -> Result<Ino, FsError> {
        let inner = self.view();
        let inode = inner.store.meta.inode(ino)?;
        if inode.kind != FileKind::Dir {
            return Err(FsError::NotDir);
        }
        Ok(inode.parent)
    }

    /// Attributes of what `name` in directory `parent` names.
    pub fn lookup(&self, parent: Ino, name: &[u8]) -> Result<Stat, FsError> {
        let name = Name::new(name)?;
        let inner = self.view();
        let ino = inner.store.meta.lookup(parent, &name)?;
        inner.store.attr(ino)
    }

    /// Up to `limit` entries of directory `ino` in name order, after `after` (exclusive;
    /// `None` from the start). A name is a cursor that survives concurrent changes.
    pub fn readdir(
        &self,
        ino: Ino,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<DirEntry>, FsError> {
        let inner = self.view();
        let meta = &inner.store.meta;
        let entries = meta.dir(ino)?;
        let iter: Box<dyn Iterator<Item = (&Name, &Ino)>> = match after {
            None => Box::new(entries.iter()),
            Some(after) => {
                let after = Name::new(after)?;
                Box::new(
                    entries.range((std::ops::Bound::Excluded(after), std::ops::Bound::Unbounded)),
                )
            }
        };
        let mut out = Vec::new();
        for (name, &child) in iter.take(limit) {
            out.push(DirEntry {
                name: name.as_bytes().to_vec(),
                ino: child,
                kind: meta.inode(child)?.kind,
            });
        }
        Ok(out)
    }

    /// Up to `len` bytes (at most 16 MiB per call) of file `ino` from `offset` (fewer at
    /// its end).
    pub fn read(&self, ino: Ino, offset: u64, len: usize) -> Result<Vec<u8>, FsError> {
        let len = len.min(crate::constants::WRITE_SIZE_BYTES_MAX * 16);
        self.view().store.read(ino, offset, len)
    }

    /// `lseek` with `SEEK_DATA` (`data`) or `SEEK_HOLE` from `offset` of file `ino`
    /// ([`crate::store::Store::seek`]).
    pub fn seek(&self, ino: Ino, offset: u64, data: bool) -> Result<u64, FsError> {
        self.view().store.seek(ino, offset, data)
    }

    /// The target of symbolic link `ino`.
    pub fn readlink(&self, ino: Ino) -> Result<Vec<u8>, FsError> {
        let inner = self.view();
        let inode = inner.store.meta.inode(ino)?;
        if inode.kind != FileKind::Symlink {
            return Err(FsError::NotSymlink);
        }
        Ok(inode.target.clone())
    }

    /// The value of extended attribute `name` of `ino` (ENODATA when it has none).
    pub fn getxattr(&self, ino: Ino, name: &[u8]) -> Result<Vec<u8>, FsError> {
        crate::txn::machines::check_xattr_name(name)?;
        let inner = self.view();
        let inode = inner.store.meta.inode(ino)?;
        inode.xattrs.get(name).cloned().ok_or(FsError::NoXattr)
    }

    /// The names of the extended attributes of `ino`, in byte order.
    pub fn listxattr(&self, ino: Ino) -> Result<Vec<Vec<u8>>, FsError> {
        let inner = self.view();
        let inode = inner.store.meta.inode(ino)?;
        Ok(inode.xattrs.keys().cloned().collect())
    }

    /// What became of request `key`: committed (with its result) or rolled back; `None`
    /// when it is not remembered (never seen, or older than the window).
    pub fn outcome(&self, key: RequestKey) -> Option<Outcome> {
        self.view().store.meta.keys.get(&key)
    }

    /// The newest replicated-log entry this engine applied (see [`TxnOptions::entry`](super::TxnOptions::entry)):
    /// after a crash, what recovery found logged. `None` when it applied none.
    pub fn applied_entry(&self) -> Option<EntryId> {
        self.view().store.meta.applied_entry
    }

    /// The volume's identity: random, chosen when the file system was made (the log's id),
    /// the same across restarts. A file server puts it in its file handles, so a handle of
    /// another volume is known as such.
    pub fn volume_id(&self) -> u64 {
        self.shared.log.meta().log_id
    }

    /// Space and inode counts.
    ///
    /// The truth, whichever is less: the engine's own capacity, or what the host file
    /// system can still give the data file (blocks free inside `DATA` need none of it).
    pub fn statfs(&self) -> Result<StatFs, FsError> {
        let host_free_blocks = self
            .shared
            .data
            .device()
            .free_bytes()
            .map(|bytes| bytes / BLOCK_SIZE_BYTES as u64);
        let inner = self.view();
        let space = &inner.store.meta.space;
        let engine_free = space
            .available_blocks()
            .saturating_sub(inner.store.cache.dirty.len() as u64);
        let used = space.capacity_blocks.saturating_sub(engine_free);
        // Free blocks below DATA's end are reusable without the host's space.
        let in_file_blocks = (self.shared.data.len_bytes() / BLOCK_SIZE_BYTES as u64)
            .saturating_sub(space.high_water_blocks)
            + space.free.values().sum::<u64>();
        let blocks_free = match host_free_blocks {
            Some(host) => engine_free.min(in_file_blocks.saturating_add(host)),
            None => engine_free,
        };
        Ok(StatFs {
            block_size_bytes: BLOCK_SIZE_BYTES as u64,
            blocks_total: space.capacity_blocks.min(used.saturating_add(blocks_free)),
            blocks_free,
            inodes: inner.store.meta.inodes.len() as u64,
        })
    }

    /// Checks the live store (namespace, link counts, data blocks, free space).
    pub fn fsck(&self) -> FsckReport {
        let inner = self.view();
        let allocated: u64 = inner.active.values().map(|a| a.allocated_blocks).sum();
        fsck::check(&inner.store, allocated + inner.checkpoint_blocks)
    }

    /// A copy of the metadata (O(1)), for tools and tests.
    #[doc(hidden)]
    pub fn meta(&self) -> FsMeta {
        self.view().store.meta.clone()
    }
}
