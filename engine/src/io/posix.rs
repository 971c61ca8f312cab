//! pwrite + fdatasync through `nix`: the fallback when io_uring is unavailable.
//! Writes the same bytes at the same offsets as the io_uring device.

use std::os::fd::AsRawFd;
use std::path::Path;

use nix::errno::Errno;

use super::fs_dir::{forward_to_real_dir, OpenFile, RealDir};
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
    fn free_bytes(&self) -> Option<u64> {
        self.dir.free_bytes()
    }

    forward_to_real_dir!();

    fn describe(&self) -> String {
        self.dir.describe("posix pwrite+fdatasync")
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::AlignedBuf;

    #[test]
    fn durable_write_reads_back_and_bad_requests_are_typed() {
        let dir = tempfile::Builder::new()
            .prefix("smlog-posix-")
            .tempdir_in("/var/tmp")
            .unwrap();
        let device = PosixDevice::open(dir.path(), DeviceOptions::default()).unwrap();
        let file = device.open("f", true).unwrap();
        device.set_len(file, 64 * 1024).unwrap();
        let mut out = AlignedBuf::new_zeroed(8192);
        out.fill(0x3C);
        device.write_durable_at(file, 8192, &out).unwrap();
        let mut back = AlignedBuf::new_zeroed(8192);
        device.read_at(file, 8192, &mut back).unwrap();
        assert_eq!(&back[..], &out[..]);
        assert_eq!(
            device.read_at(file, 64 * 1024, &mut back).unwrap_err().kind,
            IoErrorKind::UnexpectedEof
        );
        assert_eq!(
            device.write_at(file, 10, &out).unwrap_err().kind,
            IoErrorKind::Unaligned
        );
        let missing = device.open("missing", false).unwrap_err();
        assert_eq!(missing.kind, IoErrorKind::NotFound);
        assert!(missing.path.ends_with("missing"));
        assert!(device.describe().contains("O_DIRECT"));
    }

    #[test]
    fn refusing_o_direct_names_the_option_that_selects_buffered_io() {
        let text =
            IoError::new(IoOp::Open, "/dev/shm/x", 0, IoErrorKind::DirectIoRefused).to_string();
        assert!(text.contains("/dev/shm/x"), "{text}");
        assert!(
            text.contains("direct_io = false") && text.contains("--buffered"),
            "{text}"
        );
    }

    #[test]
    fn a_file_is_not_a_directory() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plain");
        std::fs::write(&path, b"x").unwrap();
        let error = PosixDevice::open(
            &path,
            DeviceOptions {
                create_dir: false,
                ..DeviceOptions::default()
            },
        )
        .unwrap_err();
        assert_eq!(error.kind, IoErrorKind::NotADirectory);
    }
}
