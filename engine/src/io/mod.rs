//! The device layer: one narrow trait over "a directory of files", and its implementations.
//!
//! - [`uring::UringDevice`]: io_uring on O_DIRECT files (the default);
//! - [`posix::PosixDevice`]: pwrite + fdatasync through `nix`, the same bytes on disk;
//! - `sim::SimDevice` (feature `sim`): a deterministic simulated device with crash faults.
//!
//! The contract every implementation keeps, and every caller relies on:
//! offsets and lengths of reads and writes are multiples of [`BLOCK_SIZE_BYTES`] and
//! buffers are aligned to it; a write is not durable until [`Device::sync`] or
//! [`Device::write_durable_at`] returns `Ok`; a name is not durable until
//! [`Device::sync_dir`] returns `Ok`; any error from a write or a sync means nothing about
//! what reached the disk (the caller must stop: fail-stop).

use std::alloc::Layout;
use std::fmt;
use std::path::{Path, PathBuf};
use std::ptr::NonNull;

use crate::constants::BLOCK_SIZE_BYTES;

mod fs_dir;
pub mod posix;
#[cfg(feature = "sim")]
pub mod sim;
pub mod uring;

pub use fs_dir::{kernel_lock_holder, DirLock, LOCK_FILE_NAME};

/// A file opened on a device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileId(pub u32);

/// A directory of files with aligned, durable writes. See the module docs for the contract.
pub trait Device: Send + Sync + fmt::Debug + 'static {
    /// One line naming the implementation and directory, for reports.
    fn describe(&self) -> String;
    /// The path of `name` inside the directory, for error messages.
    fn path_of(&self, name: &str) -> PathBuf;
    /// Names of the regular files in the directory, sorted.
    fn list(&self) -> Result<Vec<String>, IoError>;
    /// Opens `name`, creating it empty when `create` is set and it does not exist.
    fn open(&self, name: &str, create: bool) -> Result<FileId, IoError>;
    /// Forgets an open file.
    fn close(&self, file: FileId);
    /// The file's length in bytes.
    fn len(&self, file: FileId) -> Result<u64, IoError>;
    /// Sets the file's length; new bytes read as zero. Durable after [`Device::sync`].
    fn set_len(&self, file: FileId, len: u64) -> Result<(), IoError>;
    /// Makes the file at least `len` bytes long with every block up to `len` allocated on
    /// the medium (fallocate), so no write below `len` can fail for space; new bytes read
    /// as zero. Durable after [`Device::sync`]. A device with no space to run out of (the
    /// simulated one) only sets the length.
    fn allocate(&self, file: FileId, len: u64) -> Result<(), IoError> {
        if self.len(file)? < len {
            self.set_len(file, len)?;
        }
        Ok(())
    }
    /// Fills `buf` from `offset`; reading past the end of the file is an error.
    fn read_at(&self, file: FileId, offset: u64, buf: &mut [u8]) -> Result<(), IoError>;
    /// Writes `buf` at `offset`, not yet durable.
    fn write_at(&self, file: FileId, offset: u64, buf: &[u8]) -> Result<(), IoError>;
    /// Writes `buf` at `offset` and makes it durable, the sync ordered after the write.
    fn write_durable_at(&self, file: FileId, offset: u64, buf: &[u8]) -> Result<(), IoError>;
    /// [`Device::write_durable_at`], calling `meanwhile` exactly once, while the write is
    /// in flight where the device can (its caller's other work then overlaps the device's);
    /// a device that writes synchronously calls it first. It may run before the write's
    /// outcome is known, and also when the write then fails. The log wakes the committers
    /// of the batch before while this one is written.
    fn write_durable_at_meanwhile(
        &self,
        file: FileId,
        offset: u64,
        buf: &[u8],
        meanwhile: &mut dyn FnMut(),
    ) -> Result<(), IoError> {
        meanwhile();
        self.write_durable_at(file, offset, buf)
    }
    /// Makes every completed write to the file durable (fdatasync).
    fn sync(&self, file: FileId) -> Result<(), IoError>;
    /// Renames `from` to `to`, replacing `to`. Durable after [`Device::sync_dir`].
    fn rename(&self, from: &str, to: &str) -> Result<(), IoError>;
    /// Removes `name`. Durable after [`Device::sync_dir`].
    fn remove(&self, name: &str) -> Result<(), IoError>;
    /// Makes the directory's names durable (fsync of the directory).
    fn sync_dir(&self) -> Result<(), IoError>;
    /// Whether callers should do their background IO (segment preparation, read-ahead)
    /// on the calling thread instead, so that one seed gives one run: a simulated device
    /// in deterministic mode says yes. Real devices say no.
    fn wants_inline_io(&self) -> bool {
        false
    }
    /// Bytes the file system under the directory can still give its files, when known
    /// (a simulated device has no such limit).
    fn free_bytes(&self) -> Option<u64> {
        None
    }
}

/// What a device was doing when it failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IoOp {
    /// Opening or creating a file.
    Open,
    /// Listing the directory.
    List,
    /// Reading.
    Read,
    /// Writing.
    Write,
    /// fdatasync of a file.
    Sync,
    /// fsync of the directory.
    SyncDir,
    /// Setting a file's length.
    SetLen,
    /// Renaming.
    Rename,
    /// Removing.
    Remove,
    /// Locking the directory.
    Lock,
    /// Setting up io_uring.
    Setup,
}

impl fmt::Display for IoOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            IoOp::Open => "open",
            IoOp::List => "list",
            IoOp::Read => "read",
            IoOp::Write => "write",
            IoOp::Sync => "fdatasync",
            IoOp::SyncDir => "fsync directory",
            IoOp::SetLen => "set length",
            IoOp::Rename => "rename",
            IoOp::Remove => "remove",
            IoOp::Lock => "lock",
            IoOp::Setup => "io_uring setup",
        };
        f.write_str(name)
    }
}

/// Why a device operation failed. Every errno the devices can see maps to one variant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IoErrorKind {
    /// ENOENT.
    #[error("no such file or directory (ENOENT)")]
    NotFound,
    /// EACCES or EPERM.
    #[error("permission denied (EACCES/EPERM)")]
    PermissionDenied,
    /// ENOSPC.
    #[error("no space left on device (ENOSPC)")]
    NoSpace,
    /// EDQUOT.
    #[error("disk quota exceeded (EDQUOT)")]
    QuotaExceeded,
    /// EIO.
    #[error("input/output error (EIO)")]
    Io,
    /// EROFS.
    #[error("read-only file system (EROFS)")]
    ReadOnly,
    /// EINVAL.
    #[error("invalid argument (EINVAL)")]
    InvalidArgument,
    /// EEXIST.
    #[error("file exists (EEXIST)")]
    AlreadyExists,
    /// ENOTDIR.
    #[error("not a directory (ENOTDIR)")]
    NotADirectory,
    /// EISDIR.
    #[error("is a directory (EISDIR)")]
    IsADirectory,
    /// EFBIG.
    #[error("file too large (EFBIG)")]
    FileTooLarge,
    /// EMFILE or ENFILE.
    #[error("too many open files (EMFILE/ENFILE)")]
    TooManyOpenFiles,
    /// ENOMEM.
    #[error("out of memory (ENOMEM)")]
    OutOfMemory,
    /// ENOSYS, EOPNOTSUPP.
    #[error("operation not supported (ENOSYS/EOPNOTSUPP)")]
    Unsupported,
    /// The file system refused O_DIRECT (tmpfs does).
    #[error(
        "the file system refuses O_DIRECT; put the log on a disk file system, or select \
         buffered IO (`DeviceOptions::direct_io = false`, `--buffered` on the command line)"
    )]
    DirectIoRefused,
    /// Another process holds the directory's lock.
    #[error("{}", locked_message(*pid))]
    Locked {
        /// The holder's pid, as written in the lock file.
        pid: Option<u32>,
    },
    /// A read reached the end of the file.
    #[error("read past the end of the file")]
    UnexpectedEof,
    /// A write made no progress.
    #[error("write made no progress")]
    WriteZero,
    /// Offset, length or buffer not aligned to 4 KiB.
    #[error("offset, length or buffer not aligned to 4 KiB")]
    Unaligned,
    /// Reads of the same place kept returning different bytes (a device that misdirects
    /// reads): nothing read there can be trusted.
    #[error("reads of the same place keep returning different bytes")]
    Unstable,
    /// The simulated device has crashed; nothing succeeds until it restarts.
    #[error("the simulated device crashed")]
    Crashed,
    /// Any other errno.
    #[error("errno {0}")]
    Other(i32),
}

fn locked_message(pid: Option<u32>) -> String {
    match pid {
        Some(pid) => format!("the directory is in use by another process (pid {pid})"),
        None => "the directory is in use by another process (its pid is unknown)".to_owned(),
    }
}

impl IoErrorKind {
    /// Maps an errno to its kind.
    pub fn from_errno(errno: i32) -> IoErrorKind {
        match errno {
            libc::ENOENT => IoErrorKind::NotFound,
            libc::EACCES | libc::EPERM => IoErrorKind::PermissionDenied,
            libc::ENOSPC => IoErrorKind::NoSpace,
            libc::EDQUOT => IoErrorKind::QuotaExceeded,
            libc::EIO => IoErrorKind::Io,
            libc::EROFS => IoErrorKind::ReadOnly,
            libc::EINVAL => IoErrorKind::InvalidArgument,
            libc::EEXIST => IoErrorKind::AlreadyExists,
            libc::ENOTDIR => IoErrorKind::NotADirectory,
            libc::EISDIR => IoErrorKind::IsADirectory,
            libc::EFBIG => IoErrorKind::FileTooLarge,
            libc::EMFILE | libc::ENFILE => IoErrorKind::TooManyOpenFiles,
            libc::ENOMEM => IoErrorKind::OutOfMemory,
            libc::ENOSYS | libc::EOPNOTSUPP => IoErrorKind::Unsupported,
            other => IoErrorKind::Other(other),
        }
    }

    /// Maps a `std::io::Error` to its kind.
    pub fn from_io(error: &std::io::Error) -> IoErrorKind {
        match error.raw_os_error() {
            Some(errno) => IoErrorKind::from_errno(errno),
            None => match error.kind() {
                std::io::ErrorKind::UnexpectedEof => IoErrorKind::UnexpectedEof,
                std::io::ErrorKind::WriteZero => IoErrorKind::WriteZero,
                std::io::ErrorKind::NotFound => IoErrorKind::NotFound,
                std::io::ErrorKind::PermissionDenied => IoErrorKind::PermissionDenied,
                _ => IoErrorKind::Other(0),
            },
        }
    }

    /// The errno a file server would return for this error.
    pub fn errno(self) -> i32 {
        match self {
            IoErrorKind::NotFound => libc::ENOENT,
            IoErrorKind::PermissionDenied => libc::EACCES,
            IoErrorKind::NoSpace => libc::ENOSPC,
            IoErrorKind::QuotaExceeded => libc::EDQUOT,
            IoErrorKind::ReadOnly => libc::EROFS,
            IoErrorKind::InvalidArgument
            | IoErrorKind::Unaligned
            | IoErrorKind::DirectIoRefused => libc::EINVAL,
            IoErrorKind::AlreadyExists => libc::EEXIST,
            IoErrorKind::NotADirectory => libc::ENOTDIR,
            IoErrorKind::IsADirectory => libc::EISDIR,
            IoErrorKind::FileTooLarge => libc::EFBIG,
            IoErrorKind::TooManyOpenFiles => libc::EMFILE,
            IoErrorKind::OutOfMemory => libc::ENOMEM,
            IoErrorKind::Unsupported => libc::EOPNOTSUPP,
            IoErrorKind::Locked { .. } => libc::EWOULDBLOCK,
            IoErrorKind::Other(errno) if errno > 0 => errno,
            IoErrorKind::Io
            | IoErrorKind::UnexpectedEof
            | IoErrorKind::WriteZero
            | IoErrorKind::Unstable
            | IoErrorKind::Crashed
            | IoErrorKind::Other(_) => libc::EIO,
        }
    }
}

/// A failed device operation: what, where, and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "{op} {}{}: {kind}",
    path.display(),
    if matches!(op, IoOp::Read | IoOp::Write) { format!(" at offset {offset}") } else { String::new() }
)]
pub struct IoError {
    /// The operation.
    pub op: IoOp,
    /// The file or directory.
    pub path: PathBuf,
    /// Byte offset in the file (0 where it has none).
    pub offset: u64,
    /// Why.
    pub kind: IoErrorKind,
}

impl IoError {
    /// Builds an error.
    pub fn new(op: IoOp, path: impl Into<PathBuf>, offset: u64, kind: IoErrorKind) -> IoError {
        IoError {
            op,
            path: path.into(),
            offset,
            kind,
        }
    }
}

/// Checks the alignment contract of a read or write.
pub fn check_aligned(offset: u64, buf: &[u8]) -> Result<(), IoErrorKind> {
    let aligned = offset.is_multiple_of(BLOCK_SIZE_BYTES as u64)
        && buf.len().is_multiple_of(BLOCK_SIZE_BYTES)
        && (buf.as_ptr() as usize).is_multiple_of(BLOCK_SIZE_BYTES);
    if aligned {
        Ok(())
    } else {
        Err(IoErrorKind::Unaligned)
    }
}

/// A zeroed heap buffer aligned to [`BLOCK_SIZE_BYTES`], for O_DIRECT IO.
/// Allocated once and reused; never reallocated.
pub struct AlignedBuf {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: AlignedBuf owns its allocation exclusively, like a Vec<u8>.
unsafe impl Send for AlignedBuf {}
// SAFETY: shared references only give out `&[u8]`, like a Vec<u8>.
unsafe impl Sync for AlignedBuf {}

impl AlignedBuf {
    /// Allocates `len` zeroed bytes; `len` is a non-zero multiple of [`BLOCK_SIZE_BYTES`].
    pub fn new_zeroed(len: usize) -> AlignedBuf {
        assert!(len > 0);
        assert!(len.is_multiple_of(BLOCK_SIZE_BYTES));
        let layout = Self::layout(len);
        // SAFETY: the layout has a non-zero size (asserted above).
        let raw = unsafe { std::alloc::alloc_zeroed(layout) };
        let Some(ptr) = NonNull::new(raw) else {
            std::alloc::handle_alloc_error(layout)
        };
        AlignedBuf { ptr, len }
    }

    fn layout(len: usize) -> Layout {
        Layout::from_size_align(len, BLOCK_SIZE_BYTES).expect("aligned buffer layout")
    }
}

impl std::ops::Deref for AlignedBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: ptr is valid for len initialized bytes for as long as self lives.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl std::ops::DerefMut for AlignedBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: ptr is valid for len initialized bytes and uniquely borrowed through self.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: ptr was allocated by alloc_zeroed with exactly this layout.
        unsafe { std::alloc::dealloc(self.ptr.as_ptr(), Self::layout(self.len)) }
    }
}

impl fmt::Debug for AlignedBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AlignedBuf({} bytes)", self.len)
    }
}

/// Which real-file device to use, and how.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceKind {
    /// io_uring; falls back to posix with a one-line warning when io_uring is unavailable.
    Uring,
    /// pwrite + fdatasync.
    Posix,
}

/// Options for opening a real directory as a device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceOptions {
    /// Which implementation.
    pub kind: DeviceKind,
    /// O_DIRECT (the default). Buffered IO with fdatasync is for file systems that refuse it.
    pub direct_io: bool,
    /// Create the directory if it is missing.
    pub create_dir: bool,
}

impl Default for DeviceOptions {
    fn default() -> Self {
        DeviceOptions {
            kind: DeviceKind::Uring,
            direct_io: true,
            create_dir: true,
        }
    }
}

/// Opens `dir` with the device `options` select, locking it. io_uring falls back to posix
/// (with a one-line warning on stderr saying why) when the kernel refuses it.
pub fn open_dir(dir: &Path, options: DeviceOptions) -> Result<Box<dyn Device>, IoError> {
    match options.kind {
        DeviceKind::Posix => Ok(Box::new(posix::PosixDevice::open(dir, options)?)),
        DeviceKind::Uring => match uring::UringDevice::open(dir, options) {
            Ok(device) => Ok(Box::new(device)),
            Err(error) if error.op == IoOp::Setup => {
                eprintln!(
                    "smlog: warning: io_uring unavailable ({error}); using pwrite + fdatasync"
                );
                Ok(Box::new(posix::PosixDevice::open(dir, options)?))
            }
            Err(error) => Err(error),
        },
    }
}

/// A smart pointer to a device is a device: `Box<dyn Device>` from [`open_dir`], and an
/// `Arc<SimDevice>` a test keeps to crash it.
macro_rules! forward_device {
    ($($pointer:ident),*) => {$(
        impl<D: Device + ?Sized> Device for $pointer<D> {
            fn describe(&self) -> String {
                (**self).describe()
            }
            fn path_of(&self, name: &str) -> PathBuf {
                (**self).path_of(name)
            }
            fn list(&self) -> Result<Vec<String>, IoError> {
                (**self).list()
            }
            fn open(&self, name: &str, create: bool) -> Result<FileId, IoError> {
                (**self).open(name, create)
            }
            fn close(&self, file: FileId) {
                (**self).close(file)
            }
            fn len(&self, file: FileId) -> Result<u64, IoError> {
                (**self).len(file)
            }
            fn set_len(&self, file: FileId, len: u64) -> Result<(), IoError> {
                (**self).set_len(file, len)
            }
            fn read_at(&self, file: FileId, offset: u64, buf: &mut [u8]) -> Result<(), IoError> {
                (**self).read_at(file, offset, buf)
            }
            fn write_at(&self, file: FileId, offset: u64, buf: &[u8]) -> Result<(), IoError> {
                (**self).write_at(file, offset, buf)
            }
            fn write_durable_at(&self, file: FileId, offset: u64, buf: &[u8]) -> Result<(), IoError> {
                (**self).write_durable_at(file, offset, buf)
            }
            fn write_durable_at_meanwhile(
                &self,
                file: FileId,
                offset: u64,
                buf: &[u8],
                meanwhile: &mut dyn FnMut(),
            ) -> Result<(), IoError> {
                (**self).write_durable_at_meanwhile(file, offset, buf, meanwhile)
            }
            fn sync(&self, file: FileId) -> Result<(), IoError> {
                (**self).sync(file)
            }
            fn rename(&self, from: &str, to: &str) -> Result<(), IoError> {
                (**self).rename(from, to)
            }
            fn remove(&self, name: &str) -> Result<(), IoError> {
                (**self).remove(name)
            }
            fn wants_inline_io(&self) -> bool {
                (**self).wants_inline_io()
            }
            fn free_bytes(&self) -> Option<u64> {
                (**self).free_bytes()
            }
            fn allocate(&self, file: FileId, len: u64) -> Result<(), IoError> {
                (**self).allocate(file, len)
            }
            fn sync_dir(&self) -> Result<(), IoError> {
                (**self).sync_dir()
            }
        }
    )*};
}

use std::sync::Arc;
forward_device!(Box, Arc);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_errno_maps_to_its_kind_and_back() {
        let cases = [
            (libc::ENOENT, IoErrorKind::NotFound, libc::ENOENT),
            (libc::EACCES, IoErrorKind::PermissionDenied, libc::EACCES),
            (libc::EPERM, IoErrorKind::PermissionDenied, libc::EACCES),
            (libc::ENOSPC, IoErrorKind::NoSpace, libc::ENOSPC),
            (libc::EDQUOT, IoErrorKind::QuotaExceeded, libc::EDQUOT),
            (libc::EIO, IoErrorKind::Io, libc::EIO),
            (libc::EROFS, IoErrorKind::ReadOnly, libc::EROFS),
            (libc::EINVAL, IoErrorKind::InvalidArgument, libc::EINVAL),
            (libc::EEXIST, IoErrorKind::AlreadyExists, libc::EEXIST),
            (libc::ENOTDIR, IoErrorKind::NotADirectory, libc::ENOTDIR),
            (libc::EISDIR, IoErrorKind::IsADirectory, libc::EISDIR),
            (libc::EFBIG, IoErrorKind::FileTooLarge, libc::EFBIG),
            (libc::EMFILE, IoErrorKind::TooManyOpenFiles, libc::EMFILE),
            (libc::ENFILE, IoErrorKind::TooManyOpenFiles, libc::EMFILE),
            (libc::ENOMEM, IoErrorKind::OutOfMemory, libc::ENOMEM),
            (libc::ENOSYS, IoErrorKind::Unsupported, libc::EOPNOTSUPP),
            (libc::EOPNOTSUPP, IoErrorKind::Unsupported, libc::EOPNOTSUPP),
            (libc::EXDEV, IoErrorKind::Other(libc::EXDEV), libc::EXDEV),
        ];
        for (errno, kind, back) in cases {
            assert_eq!(IoErrorKind::from_errno(errno), kind, "errno {errno}");
            assert_eq!(kind.errno(), back, "{kind:?}");
        }
        assert_eq!(IoErrorKind::Crashed.errno(), libc::EIO);
        assert_eq!(IoErrorKind::Unaligned.errno(), libc::EINVAL);
    }

    #[test]
    fn io_error_message_names_path_offset_and_cause() {
        let error = IoError::new(IoOp::Write, "/x/seg", 8192, IoErrorKind::NoSpace);
        let text = error.to_string();
        assert!(text.contains("/x/seg"), "{text}");
        assert!(text.contains("8192"), "{text}");
        assert!(text.contains("ENOSPC"), "{text}");
    }

    #[test]
    fn aligned_buf_is_aligned_zeroed_and_writable() {
        let mut buf = AlignedBuf::new_zeroed(3 * BLOCK_SIZE_BYTES);
        assert_eq!(buf.as_ptr() as usize % BLOCK_SIZE_BYTES, 0);
        assert!(buf.iter().all(|b| *b == 0));
        buf[100] = 7;
        assert_eq!(buf[100], 7);
        assert_eq!(check_aligned(4096, &buf), Ok(()));
        assert_eq!(check_aligned(100, &buf), Err(IoErrorKind::Unaligned));
        assert_eq!(check_aligned(0, &buf[1..]), Err(IoErrorKind::Unaligned));
    }
}
