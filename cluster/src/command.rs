//! What a replicated volume's Raft log carries: a file operation with everything a replica
//! needs to apply it exactly as the leader would ([`Command`]), and what applying it gave
//! ([`Reply`]).
//!
//! A replica's engine starts from the same state as the leader's and applies the same
//! commands in the same order, so it allocates the same inode numbers; the leader's time
//! and the caller's request key travel in the command, so times are equal on every node
//! and a request retried on another node after a failover is answered from the request
//! table instead of running twice. Encoded with postcard (docs/FORMAT.md, "The Raft log").

use serde::{Deserialize, Serialize};
use smlog::{
    FallocMode, FileKind, Ino, NewAttrs, RenameFlags, RequestKey, SetAttrChanges, Time, TxnResult,
    XattrFlags,
};

/// The most bytes one replicated write carries: a command must fit one log record
/// ([`smlog::constants::RECORD_PAYLOAD_SIZE_BYTES_MAX`], 128 KiB) with its framing. A larger
/// write is several commands.
pub const WRITE_BYTES_MAX: usize = 64 * 1024;

/// A file operation as the leader decided it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    /// The caller's request key: a retry (on any node) gets the first answer.
    pub key: Option<RequestKey>,
    /// The time the leader stamps on what the operation changes.
    pub now: Time,
    /// The operation.
    pub op: FileOp,
}

/// The file operations a volume replicates: one engine call each.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FileOp {
    /// [`smlog::Engine::create`].
    Create {
        /// Directory.
        parent: Ino,
        /// New name.
        name: Vec<u8>,
        /// Mode and owner.
        attrs: NewAttrs,
    },
    /// [`smlog::Engine::mkdir`].
    Mkdir {
        /// Directory.
        parent: Ino,
        /// New name.
        name: Vec<u8>,
        /// Mode and owner.
        attrs: NewAttrs,
    },
    /// [`smlog::Engine::symlink`].
    Symlink {
        /// Directory.
        parent: Ino,
        /// New name.
        name: Vec<u8>,
        /// What the link points to.
        target: Vec<u8>,
        /// Mode and owner.
        attrs: NewAttrs,
    },
    /// [`smlog::Engine::link`].
    Link {
        /// The inode to name.
        ino: Ino,
        /// Directory.
        parent: Ino,
        /// New name.
        name: Vec<u8>,
    },
    /// [`smlog::Engine::unlink`].
    Unlink {
        /// Directory.
        parent: Ino,
        /// Name.
        name: Vec<u8>,
    },
    /// [`smlog::Engine::rmdir`].
    Rmdir {
        /// Directory.
        parent: Ino,
        /// Name.
        name: Vec<u8>,
    },
    /// [`smlog::Engine::rename`].
    Rename {
        /// Source directory.
        from_parent: Ino,
        /// Source name.
        from_name: Vec<u8>,
        /// Target directory.
        to_parent: Ino,
        /// Target name.
        to_name: Vec<u8>,
        /// `RENAME_NOREPLACE` / `RENAME_EXCHANGE`.
        flags: RenameFlags,
    },
    /// [`smlog::Engine::write`], at most [`WRITE_BYTES_MAX`] bytes.
    Write {
        /// File.
        ino: Ino,
        /// Where.
        offset: u64,
        /// What.
        data: Vec<u8>,
    },
    /// [`smlog::Engine::setattr`] (truncate included).
    SetAttr {
        /// File.
        ino: Ino,
        /// What changes.
        changes: SetAttrChanges,
    },
    /// [`smlog::Engine::mknod`]: a FIFO, socket or device.
    Mknod {
        /// Directory.
        parent: Ino,
        /// New name.
        name: Vec<u8>,
        /// What to make.
        kind: FileKind,
        /// Mode and owner.
        attrs: NewAttrs,
    },
    /// [`smlog::Engine::setxattr`] (a value) or [`smlog::Engine::removexattr`] (`None`).
    SetXattr {
        /// The inode.
        ino: Ino,
        /// The attribute's full name.
        name: Vec<u8>,
        /// Its value, or `None`: remove it.
        value: Option<Vec<u8>>,
        /// `XATTR_CREATE` / `XATTR_REPLACE`.
        flags: XattrFlags,
    },
    /// [`smlog::Engine::fallocate`].
    Fallocate {
        /// The file.
        ino: Ino,
        /// Byte offset.
        offset: u64,
        /// Bytes.
        len: u64,
        /// What to do.
        mode: FallocMode,
    },
}

impl FileOp {
    /// The operation's name, for logs and errors.
    pub fn name(&self) -> &'static str {
        match self {
            FileOp::Create { .. } => "create",
            FileOp::Mkdir { .. } => "mkdir",
            FileOp::Symlink { .. } => "symlink",
            FileOp::Link { .. } => "link",
            FileOp::Unlink { .. } => "unlink",
            FileOp::Rmdir { .. } => "rmdir",
            FileOp::Rename { .. } => "rename",
            FileOp::Write { .. } => "write",
            FileOp::SetAttr { .. } => "setattr",
            FileOp::Mknod { .. } => "mknod",
            FileOp::SetXattr { value: Some(_), .. } => "setxattr",
            FileOp::SetXattr { value: None, .. } => "removexattr",
            FileOp::Fallocate { .. } => "fallocate",
        }
    }
}

impl std::fmt::Display for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.op.name())?;
        if let Some(key) = self.key {
            write!(f, " (request {}/{})", key.client_id, key.request_id)?;
        }
        Ok(())
    }
}

/// What applying a command gave: the engine's result, or the errno it refused with.
/// Every replica computes the same one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reply(pub Result<TxnResult, i32>);
