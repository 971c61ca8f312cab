//! Inodes: numbers, kinds, names, attributes, and the map of a file's data blocks.

use imbl::OrdMap;
use serde::{Deserialize, Serialize};

use crate::constants::{BLOCK_SIZE_BYTES, NAME_SIZE_BYTES_MAX};
use crate::error::FsError;
use crate::ids::Lsn;

use super::{cautious, Ino};

/// A point in time: seconds and nanoseconds since the Unix epoch.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Time {
    /// Seconds since the epoch.
    pub secs: i64,
    /// Nanoseconds, below 1e9.
    pub nanos: u32,
}

impl Time {
    /// The current time.
    pub fn now() -> Time {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Time {
            secs: now.as_secs() as i64,
            nanos: now.subsec_nanos(),
        }
    }
}

/// What an inode is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum FileKind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link.
    Symlink,
    /// A named pipe (FIFO). Its data never reaches the store: the kernel carries it.
    Fifo,
    /// A unix domain socket (made by `bind`).
    Socket,
    /// A character device.
    CharDevice {
        /// Its device number, as `st_rdev` holds it (glibc's `makedev` encoding).
        rdev: u64,
    },
    /// A block device.
    BlockDevice {
        /// Its device number, as `st_rdev` holds it (glibc's `makedev` encoding).
        rdev: u64,
    },
}

impl FileKind {
    /// A FIFO, socket or device: an inode with no data of its own in the store.
    pub fn is_special(self) -> bool {
        matches!(
            self,
            FileKind::Fifo
                | FileKind::Socket
                | FileKind::CharDevice { .. }
                | FileKind::BlockDevice { .. }
        )
    }

    /// The device number (`st_rdev`): a device's, else 0.
    pub fn rdev(self) -> u64 {
        match self {
            FileKind::CharDevice { rdev } | FileKind::BlockDevice { rdev } => rdev,
            _ => 0,
        }
    }
}

/// A name in a directory: 1..=255 bytes, no `/`, no NUL, not `.` or `..`. Names are bytes,
/// not necessarily UTF-8.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Name(Vec<u8>);

impl Name {
    /// Checks `bytes` and makes a name of them.
    pub fn new(bytes: &[u8]) -> Result<Name, FsError> {
        if bytes.len() > NAME_SIZE_BYTES_MAX {
            return Err(FsError::NameTooLong {
                len_bytes: bytes.len(),
            });
        }
        if bytes.is_empty() {
            return Err(FsError::Invalid("empty name"));
        }
        if bytes.contains(&b'/') || bytes.contains(&0) {
            return Err(FsError::Invalid("a name holds no '/' and no NUL"));
        }
        if bytes == b"." || bytes == b".." {
            return Err(FsError::Invalid("'.' and '..' are not names"));
        }
        Ok(Name(bytes.to_vec()))
    }

    /// The name's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Whether the bytes a name was decoded from satisfy [`Name::new`].
    pub fn is_valid(&self) -> bool {
        Name::new(&self.0).is_ok()
    }
}

impl std::fmt::Display for Name {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", String::from_utf8_lossy(&self.0).escape_debug())
    }
}

/// The attributes that change: everything of an inode but its number, kind, data and
/// symbolic-link target.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Attrs {
    /// Permission bits (and setuid, setgid, sticky): `mode & 0o7777`.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Size in bytes (a symbolic link: its target's length).
    pub size: u64,
    /// Links: names pointing at it (a directory: 2 + its subdirectories).
    pub nlink: u32,
    /// Last access.
    pub atime: Time,
    /// Last change of the data.
    pub mtime: Time,
    /// Last change of the inode.
    pub ctime: Time,
}

/// An inode.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inode {
    /// Its number.
    pub ino: Ino,
    /// What it is.
    pub kind: FileKind,
    /// Its attributes.
    pub attrs: Attrs,
    /// For a directory, the directory holding it (the root's is itself); otherwise 0.
    pub parent: Ino,
    /// For a symbolic link, its target.
    pub target: Vec<u8>,
    /// File block -> data block, for the blocks written back to the data file.
    pub blocks: BlockMap,
    /// The LSN of the last record that changed it (redo skips records at or below it).
    pub lsn: Lsn,
    /// Its extended attributes: name -> value (store 4).
    pub xattrs: Xattrs,
}

/// An inode's extended attributes: full name (namespace included) -> value.
pub type Xattrs = std::collections::BTreeMap<Vec<u8>, Vec<u8>>;

/// Where a file block's data is: its data block, and the CRC-32C of the block's 4096 bytes,
/// computed when they were written and checked on every read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mapped {
    /// The data block.
    pub data_block: u64,
    /// CRC-32C (Castagnoli) of its bytes.
    pub crc: u32,
}

/// The CRC-32C of a block of zeros: what a block preallocated past a file's end carries.
pub fn zero_block_crc() -> u32 {
    static CRC: std::sync::LazyLock<u32> =
        std::sync::LazyLock::new(|| block_crc(&[0u8; BLOCK_SIZE_BYTES]));
    *CRC
}

/// The CRC-32C a mapped block carries.
pub fn block_crc(bytes: &[u8]) -> u32 {
    debug_assert_eq!(bytes.len(), BLOCK_SIZE_BYTES);
    crc32c::crc32c(bytes)
}

/// File block -> data block and its checksum. Empty costs nothing (most inodes have no
/// blocks, and an empty persistent map still allocates a node); cloning is O(1) like the
/// rest of [`FsMeta`](super::FsMeta).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockMap(
    #[serde(deserialize_with = "cautious::opt_ord_map")] Option<OrdMap<u64, Mapped>>,
);

impl BlockMap {
    /// Mapped blocks.
    pub fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |m| m.len())
    }

    /// Whether nothing is mapped.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Where file block `block` is.
    pub fn get(&self, block: &u64) -> Option<Mapped> {
        self.0.as_ref().and_then(|m| m.get(block)).copied()
    }

    /// Whether file block `block` is mapped.
    pub fn contains_key(&self, block: &u64) -> bool {
        self.get(block).is_some()
    }

    /// Maps `block`; returns the data block it replaces.
    pub fn insert(&mut self, block: u64, mapped: Mapped) -> Option<u64> {
        self.0
            .get_or_insert_with(OrdMap::new)
            .insert(block, mapped)
            .map(|old| old.data_block)
    }

    /// Unmaps every file block from `first`; returns the data blocks, in file order.
    pub fn remove_from(&mut self, first: u64) -> Vec<u64> {
        self.remove_range(first, u64::MAX)
    }

    /// Unmaps file blocks `first..end`; returns the data blocks, in file order.
    pub fn remove_range(&mut self, first: u64, end: u64) -> Vec<u64> {
        let Some(map) = self.0.as_mut() else {
            return Vec::new();
        };
        let gone: Vec<(u64, u64)> = map
            .range(first..end)
            .map(|(f, m)| (*f, m.data_block))
            .collect();
        for (file_block, _) in &gone {
            map.remove(file_block);
        }
        if map.is_empty() {
            self.0 = None;
        }
        gone.into_iter().map(|(_, d)| d).collect()
    }

    /// (file block, where it is) pairs in file order.
    pub fn iter(&self) -> impl Iterator<Item = (u64, Mapped)> + '_ {
        self.0.iter().flat_map(|m| m.iter()).map(|(f, m)| (*f, *m))
    }

    /// The mapped file blocks in `first..end`, in order.
    pub fn blocks_in(&self, first: u64, end: u64) -> impl Iterator<Item = u64> + '_ {
        self.0
            .iter()
            .flat_map(move |m| m.range(first..end))
            .map(|(f, _)| *f)
    }

    /// The data blocks, in file order.
    pub fn data_blocks(&self) -> impl Iterator<Item = u64> + '_ {
        self.iter().map(|(_, m)| m.data_block)
    }
}

/// What a file server sees of an inode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stat {
    /// Inode number.
    pub ino: Ino,
    /// What it is.
    pub kind: FileKind,
    /// Permission bits.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Size in bytes.
    pub size: u64,
    /// Links.
    pub nlink: u32,
    /// Last access.
    pub atime: Time,
    /// Last change of the data.
    pub mtime: Time,
    /// Last change of the inode.
    pub ctime: Time,
    /// Data blocks the file holds in the data file.
    pub blocks: u64,
}

impl Inode {
    /// The attributes a file server sees.
    pub fn attr(&self) -> Stat {
        Stat {
            ino: self.ino,
            kind: self.kind,
            mode: self.attrs.mode,
            uid: self.attrs.uid,
            gid: self.attrs.gid,
            size: self.attrs.size,
            nlink: self.attrs.nlink,
            atime: self.attrs.atime,
            mtime: self.attrs.mtime,
            ctime: self.attrs.ctime,
            blocks: self.blocks.len() as u64,
        }
    }
}
