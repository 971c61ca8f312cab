//! The metadata ([`FsMeta`]): every inode, directory and free block, as persistent maps
//! that a checkpoint snapshots in O(1).

use imbl::OrdMap;
use serde::{Deserialize, Serialize};

use crate::error::{CorruptKind, FsError};
use crate::ids::Lsn;

use super::{
    cautious, Attrs, BlockMap, EntryId, FileKind, Ino, Inode, Name, RequestTable, Space, Time,
    ROOT_INO,
};
use crate::ids::TxnId;

/// The metadata: everything but the cached file data. Cloning is O(1).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FsMeta {
    /// Every record up to this LSN is reflected.
    pub applied_lsn: Lsn,
    /// The next inode number.
    pub next_ino: Ino,
    /// The next transaction id.
    pub next_txn_id: TxnId,
    /// The inodes.
    #[serde(deserialize_with = "cautious::ord_map")]
    pub inodes: OrdMap<Ino, Inode>,
    /// Directory -> name -> inode.
    #[serde(deserialize_with = "cautious::dirs")]
    pub dirs: OrdMap<Ino, OrdMap<Name, Ino>>,
    /// The data file's blocks.
    pub space: Space,
    /// LSN of the last record that changed `space`.
    pub space_lsn: Lsn,
    /// What became of recent requests.
    pub keys: RequestTable,
    /// The newest replicated-log entry applied (a replica's engine; `None` for one that
    /// applies none): set by the commit or abort record of a transaction that applies one.
    pub applied_entry: Option<EntryId>,
}

impl FsMeta {
    /// A new file system: an empty root directory with mode 0755 owned by root, its times
    /// `created`.
    pub fn new(created: Time, capacity_blocks: u64) -> FsMeta {
        let root = Inode {
            ino: ROOT_INO,
            kind: FileKind::Dir,
            attrs: Attrs {
                mode: 0o755,
                uid: 0,
                gid: 0,
                size: 0,
                nlink: 2,
                atime: created,
                mtime: created,
                ctime: created,
            },
            parent: ROOT_INO,
            target: Vec::new(),
            blocks: BlockMap::default(),
            lsn: Lsn(0),
            xattrs: Default::default(),
        };
        FsMeta {
            applied_lsn: Lsn(0),
            next_ino: ROOT_INO + 1,
            next_txn_id: TxnId(1),
            inodes: OrdMap::unit(ROOT_INO, root),
            dirs: OrdMap::unit(ROOT_INO, OrdMap::new()),
            space: Space::new(capacity_blocks),
            space_lsn: Lsn(0),
            keys: RequestTable::default(),
            applied_entry: None,
        }
    }

    /// The highest data block any inode maps, if any. O(mapped blocks). Every mapped block
    /// was written and made durable before a record or an image named it, so `DATA` is at
    /// least this long.
    pub fn highest_mapped_block(&self) -> Option<u64> {
        self.inodes
            .values()
            .filter_map(|inode| inode.blocks.data_blocks().max())
            .max()
    }

    /// Orphans: inodes with no name and no link, unlinked while a file server held them
    /// open (see `Engine::open`). O(inodes).
    pub fn orphans(&self) -> Vec<Ino> {
        self.inodes
            .values()
            .filter(|inode| inode.attrs.nlink == 0 && inode.ino != super::ROOT_INO)
            .map(|inode| inode.ino)
            .collect()
    }

    /// The inode `ino`.
    pub fn inode(&self, ino: Ino) -> Result<&Inode, FsError> {
        self.inodes.get(&ino).ok_or(FsError::NotFound)
    }

    /// The entries of directory `ino`.
    pub fn dir(&self, ino: Ino) -> Result<&OrdMap<Name, Ino>, FsError> {
        match self.inodes.get(&ino) {
            None => Err(FsError::NotFound),
            Some(inode) if inode.kind != FileKind::Dir => Err(FsError::NotDir),
            Some(_) => self.dirs.get(&ino).ok_or_else(|| {
                FsError::corrupt(
                    CorruptKind::Metadata,
                    format!("directory {ino} has no entry table"),
                )
            }),
        }
    }

    /// The inode `name` in directory `dir` points at.
    pub fn lookup(&self, dir: Ino, name: &Name) -> Result<Ino, FsError> {
        self.dir(dir)?.get(name).copied().ok_or(FsError::NotFound)
    }

    /// Whether directory `ancestor` is `dir` or holds it, at any depth.
    pub fn is_ancestor(&self, ancestor: Ino, mut dir: Ino) -> Result<bool, FsError> {
        for _ in 0..=self.inodes.len() {
            if dir == ancestor {
                return Ok(true);
            }
            if dir == ROOT_INO {
                return Ok(false);
            }
            dir = self.inode(dir)?.parent;
        }
        Err(FsError::corrupt(
            CorruptKind::Metadata,
            "a directory is its own ancestor",
        ))
    }
}
