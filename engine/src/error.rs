//! The engine's error type: every failure a file operation can meet, each mapping to the
//! errno a file server returns.

use std::path::PathBuf;

use crate::io::IoError;
use crate::log::LogError;

/// What is wrong with a directory that cannot be opened as a store.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LayoutProblem {
    /// Store files are there but the log's `LOG` file is not: it was removed, and the
    /// store is never formatted over.
    #[error(
        "the log's LOG file is missing, yet the directory holds store files ({}); \
         refusing to create a new file system over them",
        files.join(", ")
    )]
    LogMissing {
        /// The store files found.
        files: Vec<String>,
    },
    /// The directory holds files that are not a store's; a new file system is made only
    /// in an empty directory.
    #[error(
        "the directory is not empty and is not an smlog store ({}); a new file system \
         is created only in an empty directory",
        files.join(", ")
    )]
    NotEmpty {
        /// The files found.
        files: Vec<String>,
    },
    /// The store was made by a build of another store format (format 1, before data
    /// blocks carried checksums, left its superblock slots blank).
    #[error(
        "the store is of format {found}, this build reads format {reads} only (format 2 \
         added data block checksums); read it with the build that wrote it and copy the \
         files over"
    )]
    OtherFormat {
        /// The format found.
        found: u32,
        /// The format this build reads.
        reads: u32,
    },
    /// `SUPER` (the checkpoint superblocks) is missing beside the log.
    #[error("SUPER, the checkpoint superblocks, is missing beside the log")]
    SuperMissing,
    /// `DATA` is missing while the store maps data blocks.
    #[error("DATA, the data file, is missing; the store maps {need_bytes} bytes of it")]
    DataMissing {
        /// Bytes the store's block map needs.
        need_bytes: u64,
    },
    /// `DATA` is shorter than its highest mapped block.
    #[error(
        "DATA, the data file, is {len_bytes} bytes, shorter than the {need_bytes} bytes \
         the store maps: it was truncated"
    )]
    DataShort {
        /// Its length.
        len_bytes: u64,
        /// Bytes the store's block map needs.
        need_bytes: u64,
    },
}

/// Everything a file operation, a checkpoint or recovery can fail with.
#[derive(Debug, Clone, thiserror::Error)]
pub enum FsError {
    /// No such file or directory (ENOENT).
    #[error("no such file or directory")]
    NotFound,
    /// The name exists already (EEXIST).
    #[error("file exists")]
    Exists,
    /// A directory was expected (ENOTDIR).
    #[error("not a directory")]
    NotDir,
    /// A directory was not expected (EISDIR).
    #[error("is a directory")]
    IsDir,
    /// The directory has entries (ENOTEMPTY).
    #[error("directory not empty")]
    NotEmpty,
    /// A name longer than 255 bytes (ENAMETOOLONG).
    #[error("name of {len_bytes} bytes is longer than 255")]
    NameTooLong {
        /// Its length.
        len_bytes: usize,
    },
    /// An invalid argument (EINVAL), with why.
    #[error("invalid argument: {0}")]
    Invalid(&'static str),
    /// Out of data blocks or inodes (ENOSPC).
    #[error("no space left: {0}")]
    NoSpace(&'static str),
    /// The file would grow past the maximum size (EFBIG).
    #[error("file too large")]
    FileTooBig,
    /// Too many links to one inode (EMLINK).
    #[error("too many links")]
    TooManyLinks,
    /// The operation is not permitted on this inode (EPERM: a hard link to a directory).
    #[error("operation not permitted: {0}")]
    NotPermitted(&'static str),
    /// Not a symbolic link (EINVAL for readlink).
    #[error("not a symbolic link")]
    NotSymlink,
    /// Access denied (EACCES): a default ACL on what is not a directory.
    #[error("permission denied: {0}")]
    Denied(&'static str),
    /// No such extended attribute (ENODATA).
    #[error("no such extended attribute")]
    NoXattr,
    /// An extended attribute's name outside the namespaces stored (`user.`, `trusted.`,
    /// `security.`): EOPNOTSUPP.
    #[error("extended attributes of this namespace are not stored")]
    XattrNotSupported,
    /// An extended attribute's name of no or more than 255 bytes (ERANGE).
    #[error("an extended attribute name of {len_bytes} bytes (1 to 255)")]
    XattrNameRange {
        /// Its length.
        len_bytes: usize,
    },
    /// An extended attribute's value past 64 KiB (E2BIG).
    #[error("an extended attribute value of {len_bytes} bytes, past 64 KiB")]
    XattrTooBig {
        /// Its length.
        len_bytes: usize,
    },
    /// No data (or no hole) at or after the offset asked: at or past the end of the file
    /// (ENXIO, for `lseek` with `SEEK_DATA` / `SEEK_HOLE`).
    #[error("no data at or after the offset")]
    NoSuchOffset,
    /// The log failed.
    #[error(transparent)]
    Log(#[from] LogError),
    /// A store file could not be read or written.
    #[error(transparent)]
    Io(#[from] IoError),
    /// The engine stopped after a failed write or sync and refuses changes.
    #[error("the engine stopped after a failure and refuses changes: {0}")]
    Stopped(String),
    /// Bytes read from disk (the log, the image, the store files) are damaged or
    /// contradict each other; `kind` says what failed. Never used for what cannot happen
    /// in correct code: that is asserted.
    #[error("store corrupt ({kind}): {detail}")]
    Corrupt {
        /// What failed.
        kind: CorruptKind,
        /// Where, and what was found.
        detail: String,
    },
    /// A data block read back does not match the checksum it was written with (bit rot, a
    /// lost or misdirected write): EIO, never the wrong bytes.
    #[error(
        "data of inode {ino} at offset {offset} (data block {data_block}) fails its checksum: \
         written with CRC-32C {stored_crc:#010x}, read back {read_crc:#010x}"
    )]
    Checksum {
        /// The file.
        ino: crate::ids::Ino,
        /// Byte offset of the block in the file.
        offset: u64,
        /// The data block in DATA.
        data_block: u64,
        /// The checksum it was written with.
        stored_crc: u32,
        /// The checksum of what was read.
        read_crc: u32,
    },
    /// The directory cannot be opened as a store (a file it needs is gone, or it is not
    /// one and not empty).
    #[error("{}: {problem}", path.display())]
    Layout {
        /// The directory.
        path: PathBuf,
        /// What is wrong.
        problem: LayoutProblem,
    },
}

/// What a [`FsError::Corrupt`] found damaged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CorruptKind {
    /// A transaction record in the log does not decode, or its payload is of another kind
    /// than its header says.
    #[error("transaction record")]
    Record,
    /// A logged op does not fit the store it is redone on (it names an inode or a name
    /// that is not there).
    #[error("redo")]
    Redo,
    /// The free-space map contradicts an allocation or a release read from the log or the
    /// image.
    #[error("free-space map")]
    Space,
    /// The metadata contradicts itself (a directory without its entry table, a cycle).
    #[error("metadata")]
    Metadata,
    /// The checkpoint image or superblock.
    #[error("checkpoint image")]
    Image,
    /// The log does not hold what the checkpoint needs, or belongs to another checkpoint.
    #[error("log and checkpoint")]
    LogGap,
    /// A transaction recovery resumes cannot be finished from its logged state.
    #[error("resumed transaction")]
    Resume,
    /// A store file contradicts the metadata (a block past the end of `DATA`).
    #[error("data file")]
    DataFile,
}

impl FsError {
    /// A [`FsError::Corrupt`] of `kind`.
    pub fn corrupt(kind: CorruptKind, detail: impl Into<String>) -> FsError {
        FsError::Corrupt {
            kind,
            detail: detail.into(),
        }
    }

    /// The errno a file server returns for this error.
    pub fn errno(&self) -> i32 {
        match self {
            FsError::NotFound => libc::ENOENT,
            FsError::Exists => libc::EEXIST,
            FsError::NotDir => libc::ENOTDIR,
            FsError::IsDir => libc::EISDIR,
            FsError::NotEmpty => libc::ENOTEMPTY,
            FsError::NameTooLong { .. } => libc::ENAMETOOLONG,
            FsError::Invalid(_) | FsError::NotSymlink => libc::EINVAL,
            FsError::NoXattr => libc::ENODATA,
            FsError::Denied(_) => libc::EACCES,
            FsError::NoSuchOffset => libc::ENXIO,
            FsError::XattrNotSupported => libc::EOPNOTSUPP,
            FsError::XattrNameRange { .. } => libc::ERANGE,
            FsError::XattrTooBig { .. } => libc::E2BIG,
            FsError::NoSpace(_) => libc::ENOSPC,
            FsError::FileTooBig => libc::EFBIG,
            FsError::TooManyLinks => libc::EMLINK,
            FsError::NotPermitted(_) => libc::EPERM,
            FsError::Log(e) => e.errno(),
            FsError::Io(e) => e.kind.errno(),
            FsError::Stopped(_) | FsError::Corrupt { .. } | FsError::Checksum { .. } => libc::EIO,
            FsError::Layout { problem, .. } => match problem {
                LayoutProblem::NotEmpty { .. } => libc::EEXIST,
                _ => libc::EIO,
            },
        }
    }

    /// Whether the error is a refusal of the request (the store is unchanged and the engine
    /// keeps working), as opposed to a failure of the engine.
    pub fn is_refusal(&self) -> bool {
        !matches!(
            self,
            FsError::Log(_)
                | FsError::Io(_)
                | FsError::Stopped(_)
                | FsError::Corrupt { .. }
                | FsError::Checksum { .. }
                | FsError::Layout { .. }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_refusal_maps_to_its_errno() {
        let cases = [
            (FsError::NotFound, libc::ENOENT),
            (FsError::Exists, libc::EEXIST),
            (FsError::NotDir, libc::ENOTDIR),
            (FsError::IsDir, libc::EISDIR),
            (FsError::NotEmpty, libc::ENOTEMPTY),
            (FsError::NameTooLong { len_bytes: 256 }, libc::ENAMETOOLONG),
            (FsError::Invalid("x"), libc::EINVAL),
            (FsError::NoSpace("x"), libc::ENOSPC),
            (FsError::FileTooBig, libc::EFBIG),
            (FsError::TooManyLinks, libc::EMLINK),
            (FsError::NoSuchOffset, libc::ENXIO),
            (FsError::Denied("x"), libc::EACCES),
            (FsError::Stopped("x".into()), libc::EIO),
        ];
        for (error, errno) in cases {
            assert_eq!(error.errno(), errno, "{error}");
        }
        assert!(FsError::NotFound.is_refusal());
        assert!(!FsError::Stopped("x".into()).is_refusal());
    }
}
