//! pwrite + fdatasync through `nix`: the fallback when io_uring is unavailable.
//! Writes the same bytes at the same offsets as the io_uring device.

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use nix::errno::Errno;

use super::fs_dir::{OpenFile, RealDir};
use super::{check_aligned, Device, DeviceOptions, FileId, IoError, IoErrorKind, IoOp};

/// A log directory written with pwrite and fdatasync.
#[derive(Debug)]
pub struct PosixDevice {
    dir: RealDir,
}

impl PosixDevice {
    /// Opens (and locks) `dir`.
    pub fn open(dir: &Path, options: DeviceOptions) -> Result<PosixDevice, IoError> {
        Ok(PosixDevice {
            dir: RealDir::open(dir, options)?,
        })
    }
}

/// Reads exactly `buf.len()` bytes at `offset`, retrying EINTR/EAGAIN and short reads.
pub(crate) fn pread_exact(open: &OpenFile, offset: u64, buf: &mut [u8]) -> Result<(), IoError> {
    let mut done = 0usize;
    while done < buf.len() {
        let at = offset + done as u64;
        match nix::sys::uio::pread(&open.file, &mut buf[done..], at as libc::off_t) {
            Ok(0) => {
                return Err(IoError::new(
                    IoOp::Read,
                    &open.path,
                    at,
                    IoErrorKind::UnexpectedEof,
                ))
            }
            Ok(n) => done += n,
            Err(Errno::EINTR | Errno::EAGAIN) => {}
            Err(errno) => {
                return Err(IoError::new(
                    IoOp::Read,
                    &open.path,
                    at,
                    IoErrorKind::from_errno(errno as i32),
                ))
            }
        }
    }
    Ok(())
}

/// Writes all of `buf` at `offset`, retrying EINTR/EAGAIN and completing short writes.
pub(crate) fn pwrite_all(open: &OpenFile, offset: u64, buf: &[u8]) -> Result<(), IoError> {
    let mut done = 0usize;
    while done < buf.len() {
        let at = offset + done as u64;
        match nix::sys::uio::pwrite(&open.file, &buf[done..], at as libc::off_t) {
            Ok(0) => {
                return Err(IoError::new(
                    IoOp::Write,
                    &open.path,
                    at,
                    IoErrorKind::WriteZero,
                ))
            }
            Ok(n) => done += n,
            Err(Errno::EINTR | Errno::EAGAIN) => {}
            Err(errno) => {
                return Err(IoError::new(
                    IoOp::Write,
                    &open.path,
                    at,
                    IoErrorKind::from_errno(errno as i32),
                ))
            }
        }
    }
    Ok(())
}

/// fdatasync, retrying EINTR.
pub(crate) fn fdatasync(open: &OpenFile) -> Result<(), IoError> {
    loop {
        match nix::unistd::fdatasync(open.file.as_raw_fd()) {
            Ok(()) => return Ok(()),
            Err(Errno::EINTR) => {}
            Err(errno) => {
                return Err(IoError::new(
                    IoOp::Sync,
                    &open.path,
                    0,
                    IoErrorKind::from_errno(errno as i32),
                ))
            }
        }
    }
}

pub(crate) fn check(op: IoOp, path: &Path, offset: u64, buf: &[u8]) -> Result<(), IoError> {
    check_aligned(offset, buf).map_err(|kind| IoError::new(op, path, offset, kind))
}

impl Device for PosixDevice {
    fn describe(&self) -> String {
        let mode = if self.dir.direct_io() {
            "O_DIRECT"
        } else {
            "buffered"
        };
        format!(
            "posix pwrite+fdatasync, {mode}, {}",
            self.dir.dir().display()
        )
    }
    fn path_of(&self, name: &str) -> PathBuf {
        self.dir.path_of(name)
    }
    fn list(&self) -> Result<Vec<String>, IoError> {
        self.dir.list()
    }
    fn open(&self, name: &str, create: bool) -> Result<FileId, IoError> {
        self.dir.open_file(name, create)
    }
    fn close(&self, file: FileId) {
        self.dir.close(file)
    }
    fn len(&self, file: FileId) -> Result<u64, IoError> {
        self.dir.len(file)
    }
    fn set_len(&self, file: FileId, len: u64) -> Result<(), IoError> {
        self.dir.set_len(file, len)
    }
    fn read_at(&self, file: FileId, offset: u64, buf: &mut [u8]) -> Result<(), IoError> {
        let open = self.dir.file(file)?;
        check(IoOp::Read, &open.path, offset, buf)?;
        pread_exact(&open, offset, buf)
    }
    fn write_at(&self, file: FileId, offset: u64, buf: &[u8]) -> Result<(), IoError> {
        let open = self.dir.file(file)?;
        check(IoOp::Write, &open.path, offset, buf)?;
        pwrite_all(&open, offset, buf)
    }
    fn write_durable_at(&self, file: FileId, offset: u64, buf: &[u8]) -> Result<(), IoError> {
        let open = self.dir.file(file)?;
        check(IoOp::Write, &open.path, offset, buf)?;
        pwrite_all(&open, offset, buf)?;
        fdatasync(&open)
    }
    fn sync(&self, file: FileId) -> Result<(), IoError> {
        fdatasync(&*self.dir.file(file)?)
    }
    fn rename(&self, from: &str, to: &str) -> Result<(), IoError> {
        self.dir.rename(from, to)
    }
    fn remove(&self, name: &str) -> Result<(), IoError> {
        self.dir.remove(name)
    }
    fn sync_dir(&self) -> Result<(), IoError> {
        self.dir.sync_dir()
    }
}
