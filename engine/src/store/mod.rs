//! The store: the file system's state (namespace, inodes, attributes, symbolic links, file
//! data in blocks of a data file, the free-space map, the request keys) and the primitive
//! effects ([`Op`]) that file transactions log and apply.
//!
//! - In memory, the metadata is a [`Meta`] of persistent maps (`imbl`): a checkpoint takes
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

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use imbl::OrdMap;
use serde::{Deserialize, Serialize};

use crate::constants::{
    BLOCK_SIZE_BYTES, DATA_GROW_BLOCKS, NAME_SIZE_BYTES_MAX, SYMLINK_TARGET_SIZE_BYTES_MAX,
};
use crate::error::FsError;
use crate::io::{AlignedBuf, Device, FileId, IoErrorKind};
use crate::log::Lsn;

pub mod fsck;
pub mod image;
pub mod space;

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

/// An inode number. Never reused.
pub type Ino = u64;

/// The root directory's inode number.
pub const ROOT_INO: Ino = 1;

/// Name of the data file in the engine's directory.
pub const DATA_FILE_NAME: &str = "DATA";

const BLOCK: u64 = BLOCK_SIZE_BYTES as u64;

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
}

/// Where a file block's data is: its data block, and the CRC-32C of the block's 4096 bytes,
/// computed when they were written and checked on every read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mapped {
    /// The data block.
    pub data_block: u64,
    /// CRC-32C (Castagnoli) of its bytes.
    pub crc: u32,
}

/// The CRC-32C a mapped block carries.
pub fn block_crc(bytes: &[u8]) -> u32 {
    debug_assert_eq!(bytes.len(), BLOCK_SIZE_BYTES);
    crc32c::crc32c(bytes)
}

/// File block -> data block and its checksum. Empty costs nothing (most inodes have no
/// blocks, and an empty persistent map still allocates a node); cloning is O(1) like the
/// rest of [`Meta`].
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
        let Some(map) = self.0.as_mut() else {
            return Vec::new();
        };
        let gone: Vec<(u64, u64)> = map
            .range(first..)
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

    /// The data blocks, in file order.
    pub fn data_blocks(&self) -> impl Iterator<Item = u64> + '_ {
        self.iter().map(|(_, m)| m.data_block)
    }
}

/// What a file server sees of an inode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attr {
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
    pub fn attr(&self) -> Attr {
        Attr {
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

/// A file server's name for one request: a client and its request number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RequestKey {
    /// The client.
    pub client_id: u64,
    /// The client's request number.
    pub request_id: u64,
}

/// What a committed transaction returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TxnResult {
    /// Nothing beyond success.
    Done,
    /// The inode it created.
    Ino(Ino),
    /// The bytes it wrote.
    Bytes(u64),
}

/// What became of a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Outcome {
    /// It committed, with this result.
    Committed(TxnResult),
    /// It was rolled back; nothing of it is in the store.
    RolledBack {
        /// The errno the request failed with (0 when recovery rolled it back).
        errno: i32,
    },
}

/// The request keys of the last transactions, oldest first, at most a configured number.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestTable {
    #[serde(deserialize_with = "cautious::hash_map")]
    outcomes: imbl::HashMap<RequestKey, Outcome>,
    #[serde(deserialize_with = "cautious::vector")]
    order: imbl::Vector<RequestKey>,
}

impl RequestTable {
    /// Records what became of `key`, forgetting the oldest keys past `keys_max`.
    pub fn record(&mut self, key: RequestKey, outcome: Outcome, keys_max: usize) {
        if self.outcomes.insert(key, outcome).is_none() {
            self.order.push_back(key);
        }
        while self.order.len() > keys_max {
            if let Some(old) = self.order.pop_front() {
                self.outcomes.remove(&old);
            }
        }
    }

    /// What became of `key`, if it is remembered.
    pub fn get(&self, key: &RequestKey) -> Option<Outcome> {
        self.outcomes.get(key).copied()
    }

    /// How many keys are remembered.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Whether no key is remembered.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

/// The metadata: everything but the cached file data. Cloning is O(1).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    /// Every record up to this LSN is reflected.
    pub applied_lsn: Lsn,
    /// The next inode number.
    pub next_ino: Ino,
    /// The next transaction id.
    pub next_txn_id: u64,
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
}

impl Meta {
    /// A new file system: an empty root directory with mode 0755 owned by root, its times
    /// `created`.
    pub fn new(created: Time, capacity_blocks: u64) -> Meta {
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
            lsn: 0,
        };
        Meta {
            applied_lsn: 0,
            next_ino: ROOT_INO + 1,
            next_txn_id: 1,
            inodes: OrdMap::unit(ROOT_INO, root),
            dirs: OrdMap::unit(ROOT_INO, OrdMap::new()),
            space: Space::new(capacity_blocks),
            space_lsn: 0,
            keys: RequestTable::default(),
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
            .filter(|inode| inode.attrs.nlink == 0 && inode.kind != FileKind::Dir)
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
            Some(_) => self
                .dirs
                .get(&ino)
                .ok_or_else(|| FsError::Corrupt(format!("directory {ino} has no entry table"))),
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
        Err(FsError::Corrupt("a directory is its own ancestor".into()))
    }
}

/// A primitive effect on the store. A transaction's steps log lists of these as their redo
/// (the outcome) and their undo (the prior values).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// A new inode with no data (a new directory also gets an empty entry table).
    PutInode {
        /// Number.
        ino: Ino,
        /// Kind.
        kind: FileKind,
        /// Attributes.
        attrs: Attrs,
        /// Parent directory, for a directory.
        parent: Ino,
        /// Target, for a symbolic link.
        target: Vec<u8>,
    },
    /// The inode is gone with its data (a directory must be empty).
    DropInode {
        /// Number.
        ino: Ino,
    },
    /// The inode's attributes are replaced.
    SetAttrs {
        /// Number.
        ino: Ino,
        /// The new attributes.
        attrs: Attrs,
    },
    /// A directory's parent changes (rename to another directory).
    SetParent {
        /// The directory.
        ino: Ino,
        /// Its new parent.
        parent: Ino,
    },
    /// A new entry (the name must be absent).
    DirInsert {
        /// Directory.
        dir: Ino,
        /// Name.
        name: Name,
        /// Inode it points at.
        ino: Ino,
    },
    /// An entry is removed (it must exist).
    DirRemove {
        /// Directory.
        dir: Ino,
        /// Name.
        name: Name,
    },
    /// An existing entry points at another inode (rename exchange).
    DirSet {
        /// Directory.
        dir: Ino,
        /// Name.
        name: Name,
        /// The inode it points at now.
        ino: Ino,
    },
    /// Data blocks are taken from the free space.
    AllocBlocks {
        /// The blocks.
        runs: Vec<Run>,
    },
    /// Data blocks allocated and never mapped go back (undo of [`Op::AllocBlocks`]).
    FreeBlocks {
        /// The blocks.
        runs: Vec<Run>,
    },
    /// File blocks from `first_block` are mapped onto `runs` (allocated, written and
    /// durable); whatever was mapped or cached there before is released.
    MapBlocks {
        /// The file.
        ino: Ino,
        /// First file block.
        first_block: u64,
        /// Data blocks, in file order.
        runs: Vec<Run>,
        /// The CRC-32C of each block's bytes, in file order (one per block of `runs`).
        crcs: Vec<u32>,
    },
    /// Bytes written into the file's cached blocks (sizes change by [`Op::SetAttrs`]).
    WriteInline {
        /// The file.
        ino: Ino,
        /// Byte offset.
        offset: u64,
        /// The bytes.
        bytes: Vec<u8>,
    },
    /// Data past `size` is released and the rest of the last block is zeroed.
    TruncateData {
        /// The file.
        ino: Ino,
        /// The new size.
        size: u64,
    },
}

/// The object an op changes, whose LSN decides whether redo applies it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Object {
    Inode(Ino),
    Space,
}

impl Op {
    fn object(&self) -> Object {
        match self {
            Op::PutInode { ino, .. }
            | Op::DropInode { ino }
            | Op::SetAttrs { ino, .. }
            | Op::SetParent { ino, .. }
            | Op::MapBlocks { ino, .. }
            | Op::WriteInline { ino, .. }
            | Op::TruncateData { ino, .. } => Object::Inode(*ino),
            Op::DirInsert { dir, .. } | Op::DirRemove { dir, .. } | Op::DirSet { dir, .. } => {
                Object::Inode(*dir)
            }
            Op::AllocBlocks { .. } | Op::FreeBlocks { .. } => Object::Space,
        }
    }
}

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
    fn drop_block(&mut self, ino: Ino, block: u64) {
        self.dirty.remove(&(ino, block));
        self.flushing.remove(&(ino, block));
    }

    fn drop_from(&mut self, ino: Ino, first_block: u64) {
        self.dirty.retain(|&(i, b), _| i != ino || b < first_block);
        self.flushing
            .retain(|&(i, b), _| i != ino || b < first_block);
    }

    /// Bytes of dirty data.
    pub fn dirty_bytes(&self) -> u64 {
        self.dirty.len() as u64 * BLOCK
    }
}

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
            return Err(FsError::Corrupt(format!(
                "data block {block} is past the data file's {len_blocks} blocks"
            )));
        }
        let mut buf = AlignedBuf::new_zeroed(BLOCK_SIZE_BYTES);
        self.device.read_at(self.file, block * BLOCK, &mut buf)?;
        out.copy_from_slice(&buf);
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

/// The store: metadata, cached data, and the data file.
#[derive(Debug)]
pub struct Store<D: Device> {
    /// The metadata.
    pub meta: Meta,
    /// Data not yet in the data file.
    pub cache: Cache,
    /// The data file.
    pub data: Arc<DataFile<D>>,
}

impl<D: Device> Store<D> {
    /// A store of `meta` over `data`, nothing cached.
    pub fn new(meta: Meta, data: Arc<DataFile<D>>) -> Store<D> {
        Store {
            meta,
            cache: Cache::default(),
            data,
        }
    }

    /// Applies the ops of the record at `lsn`, skipping those whose object already shows
    /// an LSN at or past it (the effect is in the store already).
    pub fn apply(&mut self, ops: &[Op], lsn: Lsn) -> Result<(), FsError> {
        let mut done: Vec<Object> = Vec::new();
        for op in ops {
            let object = op.object();
            let object_lsn = match object {
                Object::Space => self.meta.space_lsn,
                Object::Inode(ino) => self.meta.inodes.get(&ino).map_or(0, |i| i.lsn),
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
        self.meta
            .inodes
            .get_mut(&ino)
            .ok_or_else(|| FsError::Corrupt(format!("an op names inode {ino}, which is gone")))
    }

    fn apply_op(&mut self, op: &Op) -> Result<(), FsError> {
        let corrupt = |what: String| Err(FsError::Corrupt(what));
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
                self.meta.inodes.insert(
                    *ino,
                    Inode {
                        ino: *ino,
                        kind: *kind,
                        attrs: *attrs,
                        parent: *parent,
                        target: target.clone(),
                        blocks: BlockMap::default(),
                        lsn: 0,
                    },
                );
                if *kind == FileKind::Dir {
                    self.meta.dirs.insert(*ino, OrdMap::new());
                }
                self.meta.next_ino = self.meta.next_ino.max(ino + 1);
            }
            Op::DropInode { ino } => {
                if self.meta.dirs.get(ino).is_some_and(|d| !d.is_empty()) {
                    return corrupt(format!("directory {ino} dropped with entries"));
                }
                let inode = self
                    .meta
                    .inodes
                    .remove(ino)
                    .ok_or_else(|| FsError::Corrupt(format!("inode {ino} dropped twice")))?;
                self.meta.dirs.remove(ino);
                let runs = runs_of(inode.blocks.data_blocks());
                self.meta.space.release(&runs)?;
                self.cache.drop_from(*ino, 0);
            }
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
            } => {
                // Bounded before use: one write maps at most a write's worth of blocks,
                // all inside the data file.
                let count = runs.iter().map(|r| r.len).fold(0u64, u64::saturating_add);
                let high_water = self.meta.space.high_water_blocks;
                if count > (crate::constants::WRITE_SIZE_BYTES_MAX / BLOCK_SIZE_BYTES) as u64
                    || runs.iter().any(|r| r.len == 0 || r.end() > high_water)
                    || first_block.saturating_add(count)
                        > crate::constants::FILE_SIZE_BYTES_MAX / BLOCK
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
                let mut file_block = *first_block;
                let inode = self.inode_mut(*ino)?;
                let mut crcs = crcs.iter();
                for run in runs {
                    for data_block in run.start..run.end() {
                        let crc = *crcs.next().expect("one checksum per block, checked above");
                        if let Some(old) =
                            inode.blocks.insert(file_block, Mapped { data_block, crc })
                        {
                            released.push(old);
                        }
                        file_block += 1;
                    }
                }
                self.meta.space.release(&runs_of(released.into_iter()))?;
                for block in *first_block..file_block {
                    self.cache.drop_block(*ino, block);
                }
            }
            Op::WriteInline { ino, offset, bytes } => {
                if offset.saturating_add(bytes.len() as u64) > crate::constants::FILE_SIZE_BYTES_MAX
                {
                    return corrupt(format!("inline write past the largest file at {offset}"));
                }
                let mut done = 0usize;
                while done < bytes.len() {
                    let at = offset + done as u64;
                    let block = at / BLOCK;
                    let within = (at % BLOCK) as usize;
                    let take = (BLOCK_SIZE_BYTES - within).min(bytes.len() - done);
                    let cached = self.dirty_block(*ino, block)?;
                    cached[within..within + take].copy_from_slice(&bytes[done..done + take]);
                    done += take;
                }
            }
            Op::TruncateData { ino, size } => {
                if *size > crate::constants::FILE_SIZE_BYTES_MAX {
                    return corrupt(format!("truncation past the largest file: {size}"));
                }
                let keep = size.div_ceil(BLOCK);
                let inode = self.inode_mut(*ino)?;
                let gone = inode.blocks.remove_from(keep);
                self.meta.space.release(&runs_of(gone.into_iter()))?;
                self.cache.drop_from(*ino, keep);
                let within = (size % BLOCK) as usize;
                if within != 0 && self.holds_block(*ino, keep - 1) {
                    self.dirty_block(*ino, keep - 1)?[within..].fill(0);
                }
            }
        }
        Ok(())
    }

    fn dir_mut(&mut self, dir: Ino) -> Result<&mut OrdMap<Name, Ino>, FsError> {
        self.meta
            .dirs
            .get_mut(&dir)
            .ok_or_else(|| FsError::Corrupt(format!("an op names directory {dir}, which is gone")))
    }

    /// Whether file block `block` of `ino` has data (cached or in the data file).
    fn holds_block(&self, ino: Ino, block: u64) -> bool {
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
            let crc = block_crc(&out[..]);
            if crc != mapped.crc {
                let error = FsError::Checksum {
                    ino,
                    offset: block * BLOCK,
                    data_block: mapped.data_block,
                    stored_crc: mapped.crc,
                    read_crc: crc,
                };
                // Wrong bytes are never returned; the operator hears of it once per read
                // (the `log` facade: `smlog mount` prints it on stderr).
                log::error!("{error}");
                return Err(error);
            }
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
        }
        let size = inode.attrs.size;
        if offset >= size {
            return Ok(Vec::new());
        }
        let end = size.min(offset.saturating_add(len as u64));
        let mut out = Vec::with_capacity((end - offset) as usize);
        let mut block_buf = [0u8; BLOCK_SIZE_BYTES];
        let mut at = offset;
        while at < end {
            let block = at / BLOCK;
            let within = (at % BLOCK) as usize;
            let take = ((BLOCK - within as u64).min(end - at)) as usize;
            self.read_block(ino, block, &mut block_buf)?;
            out.extend_from_slice(&block_buf[within..within + take]);
            at += take as u64;
        }
        Ok(out)
    }
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
