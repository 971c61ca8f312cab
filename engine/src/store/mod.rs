//! The store: the file system's state (namespace, inodes, attributes, symbolic links, file
//! data in blocks of a data file, the free-space map, the request keys) and the primitive
//! effects ([`Op`]) that file transactions log and apply.
//!
//! - In memory, the metadata is a [`FsMeta`] of persistent maps (`imbl`): a checkpoint takes
//!   a consistent snapshot of it in O(1) and writes it out without stopping commits.
//! - File data lives in 4 KiB blocks of the `DATA` file. A small write travels in the log
//!   ([`Op::WriteInline`]) and sits in the dirty cache until a checkpoint writes it to
//!   newly allocated blocks (copy on write: live data is never overwritten); a large write
//!   goes to newly allocated blocks first and is linked by a logged [`Op::MapBlocks`] once
//!   they are durable.
//! - [`image`]: the superblock (two alternating copies with CRC) and the checkpoint image.
//!
//! Every op is deterministic given the state it is applied to, so replaying the log from a
//! checkpoint repeats history exactly.

use std::sync::Arc;

use crate::constants::{BLOCK_SIZE_BYTES, SYMLINK_TARGET_SIZE_BYTES_MAX};
use crate::error::FsError;
use crate::io::{AlignedBuf, Device};

mod apply;
mod cache;
mod data;
pub mod fsck;
pub mod image;
mod inode;
mod meta;
mod op;
mod requests;
pub mod space;

pub use cache::{Block, Cache};
pub use data::DataFile;
pub use inode::{
    block_crc, zero_block_crc, Attrs, BlockMap, FileKind, Inode, Mapped, Name, Stat, Time,
};
pub use meta::FsMeta;
pub use op::Op;
pub use requests::{EntryId, Outcome, RequestKey, RequestTable, TxnResult};

pub use space::{Run, Space};

/// Decoding of the persistent maps through plain sequences, whose decoders allocate
/// cautiously (a count read from disk never sizes an allocation by itself). The encoding is
/// the same bytes a map would have: a count, then key, value pairs.
pub(crate) mod cautious {
    use super::Mapped;
    use std::hash::Hash;

    use imbl::OrdMap;
    use serde::{Deserialize, Deserializer};

    use super::{Ino, Name};

    pub(crate) fn ord_map<'de, D, K, V>(d: D) -> Result<OrdMap<K, V>, D::Error>
    where
        D: Deserializer<'de>,
        K: Deserialize<'de> + Ord + Clone,
        V: Deserialize<'de> + Clone,
    {
        Ok(Vec::<(K, V)>::deserialize(d)?.into_iter().collect())
    }

    pub(crate) fn opt_ord_map<'de, D>(d: D) -> Result<Option<OrdMap<u64, Mapped>>, D::Error>
    where
        D: Deserializer<'de>,
    {
        Ok(Option::<Vec<(u64, Mapped)>>::deserialize(d)?.map(|v| v.into_iter().collect()))
    }

    pub(crate) fn dirs<'de, D>(d: D) -> Result<OrdMap<Ino, OrdMap<Name, Ino>>, D::Error>
    where
        D: Deserializer<'de>,
    {
        Ok(Vec::<(Ino, Vec<(Name, Ino)>)>::deserialize(d)?
            .into_iter()
            .map(|(dir, entries)| (dir, entries.into_iter().collect::<OrdMap<Name, Ino>>()))
            .collect())
    }

    pub(crate) fn hash_map<'de, D, K, V>(d: D) -> Result<imbl::HashMap<K, V>, D::Error>
    where
        D: Deserializer<'de>,
        K: Deserialize<'de> + Hash + Eq + Clone,
        V: Deserialize<'de> + Clone,
    {
        Ok(Vec::<(K, V)>::deserialize(d)?.into_iter().collect())
    }

    pub(crate) fn vector<'de, D, T>(d: D) -> Result<imbl::Vector<T>, D::Error>
    where
        D: Deserializer<'de>,
        T: Deserialize<'de> + Clone,
    {
        Ok(Vec::<T>::deserialize(d)?.into_iter().collect())
    }
}

pub use crate::ids::{Ino, ROOT_INO};

/// Name of the data file in the engine's directory.
pub const DATA_FILE_NAME: &str = "DATA";

const BLOCK: u64 = BLOCK_SIZE_BYTES as u64;

/// The store: metadata, cached data, and the data file.
#[derive(Debug)]
pub struct Store<D: Device> {
    /// The metadata.
    pub meta: FsMeta,
    /// Data not yet in the data file.
    pub cache: Cache,
    /// The data file.
    pub data: Arc<DataFile<D>>,
}

impl<D: Device> Store<D> {
    /// A store of `meta` over `data`, nothing cached.
    pub fn new(meta: FsMeta, data: Arc<DataFile<D>>) -> Store<D> {
        Store {
            meta,
            cache: Cache::default(),
            data,
        }
    }

    /// What a file server sees of `ino`, with the blocks it holds: those in the data
    /// file and those cached, preallocated ones included (`st_blocks`).
    pub fn attr(&self, ino: Ino) -> Result<Stat, FsError> {
        let inode = self.meta.inode(ino)?;
        let mut stat = inode.attr();
        if inode.kind == FileKind::File {
            let mut cached: Vec<u64> = self.cache.blocks_of(ino).collect();
            cached.sort_unstable();
            cached.dedup();
            let unmapped = cached
                .iter()
                .filter(|b| !inode.blocks.contains_key(b))
                .count();
            stat.blocks += unmapped as u64;
        }
        Ok(stat)
    }

    /// Whether file block `block` of `ino` reads as data for `SEEK_DATA` / `SEEK_HOLE`:
    /// held, and not known to be only zeros (a block preallocated and never written, or
    /// in the data file holding only zeros, is a hole to them, as an unwritten extent is
    /// to ext4). A mapped block with the checksum of zeros is read to be sure: a checksum
    /// proves nothing about bytes; one that cannot be read counts as data.
    fn seeks_as_data(&self, inode: &Inode, block: u64) -> bool {
        let key = (inode.ino, block);
        let cached = self.cache.dirty.get(&key).or(self.cache.flushing.get(&key));
        match cached {
            Some(cached) => !Arc::ptr_eq(cached, &cache::zero_block()),
            None => match inode.blocks.get(&block) {
                None => false,
                Some(m) if m.crc != zero_block_crc() => true,
                Some(_) => {
                    let mut bytes = [0u8; BLOCK_SIZE_BYTES];
                    self.read_block(inode.ino, block, &mut bytes).is_err()
                        || bytes.iter().any(|&b| b != 0)
                }
            },
        }
    }

    /// Whether file block `block` of `ino` is a cached block preallocated and never
    /// written since (the shared block of zeros): zeroing it again changes nothing.
    pub(crate) fn unwritten(&self, ino: Ino, block: u64) -> bool {
        let zeros = cache::zero_block();
        let key = (ino, block);
        let cached = self.cache.dirty.get(&key).or(self.cache.flushing.get(&key));
        cached.is_some_and(|c| Arc::ptr_eq(c, &zeros))
    }

    /// `lseek(SEEK_DATA)` (`data`) or `lseek(SEEK_HOLE)` from `offset` of file `ino`: the
    /// first offset at or after it in data (or in a hole; the end of the file is one).
    /// [`FsError::NoSuchOffset`] (ENXIO) at or past the end, or when no data follows.
    pub fn seek(&self, ino: Ino, offset: u64, data: bool) -> Result<u64, FsError> {
        let inode = self.meta.inode(ino)?;
        match inode.kind {
            FileKind::File => {}
            FileKind::Dir => return Err(FsError::IsDir),
            _ => return Err(FsError::Invalid("seeking data in a file that holds none")),
        }
        let size = inode.attrs.size;
        if offset >= size {
            return Err(FsError::NoSuchOffset);
        }
        let end_block = size.div_ceil(BLOCK);
        let first = offset / BLOCK;
        // Candidates: the blocks held from `first`, in order (few next to the file).
        let mut held: Vec<u64> = self
            .cache
            .blocks_of(ino)
            .filter(|b| (first..end_block).contains(b))
            .chain(inode.blocks.blocks_in(first, end_block))
            .collect();
        held.sort_unstable();
        held.dedup();
        let found = if data {
            held.into_iter()
                .find(|&b| self.seeks_as_data(inode, b))
                .map(|b| (b * BLOCK).max(offset))
        } else {
            // The first block from `first` that is not data: a gap among the held blocks,
            // or a held block of zeros, or the end of the file.
            let mut next = first;
            for b in held {
                if b != next || !self.seeks_as_data(inode, b) {
                    break;
                }
                next = b + 1;
            }
            Some((next * BLOCK).max(offset).min(size))
        };
        found.ok_or(FsError::NoSuchOffset)
    }

    /// Reads file block `block` of `ino`: cached, in the data file, or a hole (zeros).
    pub fn read_block(&self, ino: Ino, block: u64, out: &mut Block) -> Result<(), FsError> {
        if let Some(cached) = self.cache.dirty.get(&(ino, block)) {
            out.copy_from_slice(&cached[..]);
        } else if let Some(flushing) = self.cache.flushing.get(&(ino, block)) {
            out.copy_from_slice(&flushing[..]);
        } else if let Some(mapped) = self
            .meta
            .inodes
            .get(&ino)
            .and_then(|i| i.blocks.get(&block))
        {
            self.data.read_block(mapped.data_block, out)?;
            check_block(ino, block, &mapped, &out[..])?;
        } else {
            out.fill(0);
        }
        Ok(())
    }

    /// Reads up to `len` bytes of file `ino` from `offset` (fewer at the end of the file).
    pub fn read(&self, ino: Ino, offset: u64, len: usize) -> Result<Vec<u8>, FsError> {
        let inode = self.meta.inode(ino)?;
        match inode.kind {
            FileKind::File => {}
            FileKind::Dir => return Err(FsError::IsDir),
            FileKind::Symlink => return Err(FsError::Invalid("reading a symbolic link")),
            _ => return Err(FsError::Invalid("reading a FIFO, socket or device")),
        }
        let size = inode.attrs.size;
        if offset >= size {
            return Ok(Vec::new());
        }
        let end = size.min(offset.saturating_add(len as u64));
        let mut out = Vec::with_capacity((end - offset) as usize);
        // The part of block `block` the read wants.
        let wanted = |block: u64| {
            let from = offset.max(block * BLOCK) - block * BLOCK;
            let to = end.min((block + 1) * BLOCK) - block * BLOCK;
            from as usize..to as usize
        };
        let last = (end - 1) / BLOCK;
        let mut block_buf = [0u8; BLOCK_SIZE_BYTES];
        let mut block = offset / BLOCK;
        while block <= last {
            let run = self.mapped_run(ino, block, last);
            if run.len() < 2 {
                self.read_block(ino, block, &mut block_buf)?;
                out.extend_from_slice(&block_buf[wanted(block)]);
                block += 1;
                continue;
            }
            // Consecutive blocks of the data file, none cached: one read for all, each
            // block still checked against its own CRC.
            let mut buf = AlignedBuf::new_zeroed(run.len() * BLOCK_SIZE_BYTES);
            self.data.read_run(run[0].data_block, &mut buf)?;
            for (i, mapped) in run.iter().enumerate() {
                let bytes = &buf[i * BLOCK_SIZE_BYTES..(i + 1) * BLOCK_SIZE_BYTES];
                check_block(ino, block + i as u64, mapped, bytes)?;
                out.extend_from_slice(&bytes[wanted(block + i as u64)]);
            }
            block += run.len() as u64;
        }
        Ok(out)
    }

    /// The blocks of `ino` from `first` (to `last` at most, and at most
    /// [`READ_RUN_BLOCKS_MAX`]) that are in the data file, not cached, and in consecutive
    /// data blocks: what one device read can fetch.
    fn mapped_run(&self, ino: Ino, first: u64, last: u64) -> Vec<Mapped> {
        let Some(inode) = self.meta.inodes.get(&ino) else {
            return Vec::new();
        };
        let mut run: Vec<Mapped> = Vec::new();
        for block in first..=last.min(first + READ_RUN_BLOCKS_MAX - 1) {
            if self.cache.dirty.contains_key(&(ino, block))
                || self.cache.flushing.contains_key(&(ino, block))
            {
                break;
            }
            let Some(mapped) = inode.blocks.get(&block) else {
                break;
            };
            if run
                .last()
                .is_some_and(|prev| prev.data_block + 1 != mapped.data_block)
            {
                break;
            }
            run.push(mapped);
        }
        run
    }
}

/// The most blocks one read of a file fetches with one device call (1 MiB).
const READ_RUN_BLOCKS_MAX: u64 = 256;

/// Checks `bytes`, read for block `block` of `ino` from where `mapped` says, against the
/// CRC kept for it. Wrong bytes are never returned; the operator hears of it once per read
/// (the `log` facade: `smlog mount` prints it on stderr).
fn check_block(ino: Ino, block: u64, mapped: &Mapped, bytes: &[u8]) -> Result<(), FsError> {
    let crc = block_crc(bytes);
    if crc == mapped.crc {
        return Ok(());
    }
    let error = FsError::Checksum {
        ino,
        offset: block * BLOCK,
        data_block: mapped.data_block,
        stored_crc: mapped.crc,
        read_crc: crc,
    };
    log::error!("{error}");
    Err(error)
}

/// Groups data blocks into runs of consecutive blocks, in the order given.
pub fn runs_of(blocks: impl Iterator<Item = u64>) -> Vec<Run> {
    let mut runs: Vec<Run> = Vec::new();
    for block in blocks {
        match runs.last_mut() {
            Some(last) if last.end() == block => last.len += 1,
            _ => runs.push(Run {
                start: block,
                len: 1,
            }),
        }
    }
    runs
}

/// Checks a symbolic-link target's length.
pub fn check_symlink_target(target: &[u8]) -> Result<(), FsError> {
    if target.is_empty() {
        return Err(FsError::Invalid("empty symbolic-link target"));
    }
    if target.len() > SYMLINK_TARGET_SIZE_BYTES_MAX {
        return Err(FsError::NameTooLong {
            len_bytes: target.len(),
        });
    }
    if target.contains(&0) {
        return Err(FsError::Invalid("a symbolic-link target holds no NUL"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_posix_rules() {
        assert!(Name::new(b"a").is_ok());
        assert!(Name::new(&[0xff, 0xfe]).is_ok(), "names are bytes");
        assert!(Name::new(&[b'x'; 255]).is_ok());
        assert!(matches!(
            Name::new(&[b'x'; 256]),
            Err(FsError::NameTooLong { len_bytes: 256 })
        ));
        for bad in [&b""[..], b".", b"..", b"a/b", b"a\0b"] {
            assert!(
                matches!(Name::new(bad), Err(FsError::Invalid(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn the_request_table_forgets_the_oldest_past_its_window() {
        let mut table = RequestTable::default();
        let key = |r| RequestKey {
            client_id: 7,
            request_id: r,
        };
        for r in 0..5 {
            table.record(key(r), Outcome::Committed(TxnResult::Bytes(r)), 3);
        }
        assert_eq!(table.len(), 3);
        assert_eq!(table.get(&key(1)), None);
        assert_eq!(
            table.get(&key(4)),
            Some(Outcome::Committed(TxnResult::Bytes(4)))
        );
    }

    #[test]
    fn runs_of_groups_consecutive_blocks() {
        let runs = runs_of([4, 5, 6, 9, 10, 2].into_iter());
        assert_eq!(
            runs,
            vec![
                Run { start: 4, len: 3 },
                Run { start: 9, len: 2 },
                Run { start: 2, len: 1 }
            ]
        );
    }
}
