//! The primitive effects ([`Op`]) a transaction's steps log as redo and undo.

use serde::{Deserialize, Serialize};

use super::{Attrs, FileKind, Ino, Name, Run};

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
    /// Extended attribute `name` of `ino` is `value`, or is removed (`None`).
    SetXattr {
        /// The inode.
        ino: Ino,
        /// The attribute's full name.
        name: Vec<u8>,
        /// Its value, or `None`: removed.
        value: Option<Vec<u8>>,
    },
    /// Every hole among file blocks `first_block..first_block + count` becomes a block of
    /// zeros (cached, written back like any): space allocated, reads zero (fallocate).
    /// Blocks holding data keep it.
    ZeroBlocks {
        /// The file.
        ino: Ino,
        /// First file block.
        first_block: u64,
        /// Blocks.
        count: u64,
    },
    /// Bytes `offset..offset + len` read as zeros: the whole blocks among them become
    /// holes (released), the partial first and last blocks are zeroed where they hold
    /// data (fallocate's punch hole; the size does not change).
    PunchData {
        /// The file.
        ino: Ino,
        /// Byte offset.
        offset: u64,
        /// Bytes.
        len: u64,
    },
}

/// The object an op changes, whose LSN decides whether redo applies it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) enum Object {
    Inode(Ino),
    Space,
}

impl Op {
    pub(super) fn object(&self) -> Object {
        match self {
            Op::PutInode { ino, .. }
            | Op::DropInode { ino }
            | Op::SetAttrs { ino, .. }
            | Op::SetParent { ino, .. }
            | Op::MapBlocks { ino, .. }
            | Op::WriteInline { ino, .. }
            | Op::TruncateData { ino, .. }
            | Op::SetXattr { ino, .. }
            | Op::ZeroBlocks { ino, .. }
            | Op::PunchData { ino, .. } => Object::Inode(*ino),
            Op::DirInsert { dir, .. } | Op::DirRemove { dir, .. } | Op::DirSet { dir, .. } => {
                Object::Inode(*dir)
            }
            Op::AllocBlocks { .. } | Op::FreeBlocks { .. } => Object::Space,
        }
    }
}
