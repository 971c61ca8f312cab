//! io_uring on O_DIRECT files: the default device, and the only file that imports `io_uring`.
//!
//! A durable write is one `WRITE` with `RWF_DSYNC`: it completes only once its data is
//! durable. Where the kernel refuses that flag, it is a `WRITE` linked (`IO_LINK`) to an
//! `FSYNC(DATASYNC)`, so the sync is ordered after the write (an unlinked fsync would not
//! be). Short writes are completed (the rest is written, durably, again);
//! EINTR and EAGAIN are retried; every other errno is mapped to an [`IoErrorKind`].
//!
//! Each operation takes a ring from a small pool (one per concurrently calling thread), so
//! a background zero-fill never stalls a commit behind the same ring.

use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use io_uring::{cqueue, opcode, squeue, types, IoUring, Probe};

use super::fs_dir::{forward_to_real_dir, OpenFile, RealDir};
use super::posix::check;
use super::{Device, DeviceOptions, FileId, IoError, IoErrorKind, IoOp};

/// Submission queue depth of each ring; an operation needs at most two entries.
const RING_ENTRIES: u32 = 8;

/// Rings kept for reuse; more concurrent callers create rings on demand.
const RING_POOL_SIZE_MAX: usize = 8;

/// A log directory written with io_uring.
pub struct UringDevice {
    dir: RealDir,
    rings: Mutex<Vec<IoUring>>,
    /// Durable writes as one `WRITE` with `RWF_DSYNC` (the default, measured faster here:
    /// one request, no fsync punted to a worker); cleared if the kernel refuses the flag,
    /// and then a `WRITE` linked to an `FSYNC(DATASYNC)`.
    dsync: AtomicBool,
}

impl std::fmt::Debug for UringDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UringDevice")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

fn setup_error(dir: &Path, error: &std::io::Error) -> IoError {
    IoError::new(IoOp::Setup, dir, 0, IoErrorKind::from_io(error))
}

impl UringDevice {
    /// Opens (and locks) `dir`. Fails with `IoOp::Setup` when the kernel refuses io_uring
    /// (kernel.io_uring_disabled, a seccomp filter) or lacks an opcode this device uses.
    pub fn open(dir: &Path, options: DeviceOptions) -> Result<UringDevice, IoError> {
        let ring = IoUring::new(RING_ENTRIES).map_err(|e| setup_error(dir, &e))?;
        let mut probe = Probe::new();
        ring.submitter()
            .register_probe(&mut probe)
            .map_err(|e| setup_error(dir, &e))?;
        for code in [opcode::Read::CODE, opcode::Write::CODE, opcode::Fsync::CODE] {
            if !probe.is_supported(code) {
                return Err(IoError::new(IoOp::Setup, dir, 0, IoErrorKind::Unsupported));
            }
        }
        Ok(UringDevice {
            dir: RealDir::open(dir, options)?,
            rings: Mutex::new(vec![ring]),
            dsync: AtomicBool::new(true),
        })
    }

    fn with_ring<T>(
        &self,
        op: IoOp,
        path: &Path,
        body: impl FnOnce(&mut IoUring) -> Result<T, IoError>,
    ) -> Result<T, IoError> {
        let pooled = self.rings.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let mut ring = match pooled {
            Some(ring) => ring,
            None => IoUring::new(RING_ENTRIES)
                .map_err(|e| IoError::new(op, path, 0, IoErrorKind::from_io(&e)))?,
        };
        let result = body(&mut ring);
        let mut rings = self.rings.lock().unwrap_or_else(|e| e.into_inner());
        if result.is_ok() && rings.len() < RING_POOL_SIZE_MAX {
            rings.push(ring);
        }
        result
    }
}

/// Tries of the wait for completions after `io_uring_enter` failed with an unexpected
/// errno once the kernel had taken our entries, 10 ms apart.
const WAIT_RETRIES_MAX: u32 = 100;

/// What to do when `io_uring_enter` fails with an errno that is not a retry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum WaitFailure {
    /// The kernel took none of the entries (all are still in the submission queue): it
    /// holds no buffer, and the error can be returned (the ring is then dropped, so the
    /// entries are never submitted).
    ReturnError,
    /// The kernel took some entries: it may read or write their buffers until they
    /// complete, so completions must still be reaped before this call may return.
    KeepReaping,
}

fn wait_failure(unsubmitted_count: usize, reaped_count: usize, entry_count: usize) -> WaitFailure {
    assert!(unsubmitted_count <= entry_count);
    assert!(reaped_count <= entry_count);
    if unsubmitted_count == entry_count && reaped_count == 0 {
        WaitFailure::ReturnError
    } else {
        WaitFailure::KeepReaping
    }
}

/// Pushes `entries`, submits them and waits for as many completions; returns their results
/// in submission order (by `user_data`, which must be the entry's index). Once the kernel
/// has taken the entries, `meanwhile` (if still there) is taken and called before the wait.
///
/// It never returns while the kernel may still use a buffer of an entry: an error is
/// returned only when the kernel took none of them. If waiting keeps failing once it took
/// some (a broken ring, which no kernel here has shown), the process aborts rather than
/// let the kernel write into memory its caller has freed.
///
/// # Safety
///
/// Every buffer an entry points to must stay valid, and not be written by anyone else,
/// until this function returns.
unsafe fn submit_and_reap<const N: usize>(
    ring: &mut IoUring,
    entries: [squeue::Entry; N],
    op: IoOp,
    path: &Path,
    offset: u64,
    meanwhile: &mut Option<&mut dyn FnMut()>,
) -> Result<[i32; N], IoError> {
    let fail = |e: &std::io::Error| IoError::new(op, path, offset, IoErrorKind::from_io(e));
    assert!(ring.submission().is_empty(), "a ring is handed out empty");
    // SAFETY: the caller keeps every buffer valid until this function returns, and it
    // returns only once all N completions are reaped or the kernel took none of the
    // entries (see `wait_failure`).
    unsafe {
        ring.submission()
            .push_multiple(&entries)
            .map_err(|_| IoError::new(op, path, offset, IoErrorKind::Other(libc::EBUSY)))?;
    }
    if meanwhile.is_some() && ring.submit().is_ok() && ring.submission().is_empty() {
        if let Some(meanwhile) = meanwhile.take() {
            meanwhile();
        }
    }
    let mut results = [0i32; N];
    let mut reaped = 0usize;
    let mut failed_waits = 0u32;
    while reaped < N {
        match ring.submit_and_wait(N - reaped) {
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EINTR | libc::EAGAIN | libc::EBUSY)
                ) => {}
            Err(e) => match wait_failure(ring.submission().len(), reaped, N) {
                WaitFailure::ReturnError => return Err(fail(&e)),
                WaitFailure::KeepReaping => {
                    failed_waits += 1;
                    if failed_waits > WAIT_RETRIES_MAX {
                        eprintln!(
                            "smlog: io_uring fails to complete a {op:?} on {} it has taken \
                             ({e}); aborting so the kernel never writes into freed memory",
                            path.display()
                        );
                        std::process::abort();
                    }
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
            },
        }
        for cqe in ring.completion() {
            let cqe: cqueue::Entry = cqe;
            let index = cqe.user_data() as usize;
            assert!(index < N, "completion for an entry we did not submit");
            results[index] = cqe.result();
            reaped += 1;
        }
    }
    assert!(ring.submission().is_empty());
    Ok(results)
}

fn errno_error(op: IoOp, path: &Path, offset: u64, result: i32) -> IoError {
    IoError::new(op, path, offset, IoErrorKind::from_errno(-result))
}

fn is_retry(result: i32) -> bool {
    result == -libc::EINTR || result == -libc::EAGAIN
}

impl UringDevice {
    fn read(&self, open: &OpenFile, offset: u64, buf: &mut [u8]) -> Result<(), IoError> {
        check(IoOp::Read, &open.path, offset, buf)?;
        let fd = types::Fd(open.file.as_raw_fd());
        self.with_ring(IoOp::Read, &open.path, |ring| {
            let mut done = 0usize;
            while done < buf.len() {
                let at = offset + done as u64;
                let rest = &mut buf[done..];
                let entry = opcode::Read::new(fd, rest.as_mut_ptr(), rest.len() as u32)
                    .offset(at)
                    .build()
                    .user_data(0);
                // SAFETY: `rest` is borrowed mutably for the whole call and outlives it.
                let [result] = unsafe {
                    submit_and_reap(ring, [entry], IoOp::Read, &open.path, at, &mut None)?
                };
                if is_retry(result) {
                    continue;
                }
                if result < 0 {
                    return Err(errno_error(IoOp::Read, &open.path, at, result));
                }
                if result == 0 {
                    return Err(IoError::new(
                        IoOp::Read,
                        &open.path,
                        at,
                        IoErrorKind::UnexpectedEof,
                    ));
                }
                done += result as usize;
            }
            Ok(())
        })
    }

    fn write(
        &self,
        open: &OpenFile,
        offset: u64,
        buf: &[u8],
        durable: bool,
        meanwhile: &mut Option<&mut dyn FnMut()>,
    ) -> Result<(), IoError> {
        check(IoOp::Write, &open.path, offset, buf)?;
        let fd = types::Fd(open.file.as_raw_fd());
        self.with_ring(IoOp::Write, &open.path, |ring| {
            let mut done = 0usize;
            while done < buf.len() {
                let at = offset + done as u64;
                let rest = &buf[done..];
                let write = opcode::Write::new(fd, rest.as_ptr(), rest.len() as u32)
                    .offset(at)
                    .build()
                    .user_data(0);
                let written = if durable && self.dsync.load(Ordering::Relaxed) {
                    // One request: the write carries RWF_DSYNC, so it completes only once
                    // its data (and any metadata needed to read it) is durable.
                    let write = opcode::Write::new(fd, rest.as_ptr(), rest.len() as u32)
                        .offset(at)
                        .rw_flags(libc::RWF_DSYNC)
                        .build()
                        .user_data(0);
                    // SAFETY: `rest` is borrowed for the whole call and outlives it.
                    let [w] = unsafe {
                        submit_and_reap(ring, [write], IoOp::Write, &open.path, at, meanwhile)?
                    };
                    if w == -libc::EOPNOTSUPP || (w == -libc::EINVAL && done == 0) {
                        // This kernel or file system refuses RWF_DSYNC: link a sync instead.
                        self.dsync.store(false, Ordering::Relaxed);
                        continue;
                    }
                    w
                } else if durable {
                    let sync = opcode::Fsync::new(fd)
                        .flags(types::FsyncFlags::DATASYNC)
                        .build()
                        .user_data(1);
                    let write = write.flags(squeue::Flags::IO_LINK);
                    // SAFETY: `rest` is borrowed for the whole call and outlives it.
                    let [w, s] = unsafe {
                        submit_and_reap(
                            ring,
                            [write, sync],
                            IoOp::Write,
                            &open.path,
                            at,
                            meanwhile,
                        )?
                    };
                    if w > 0 && (w as usize) == rest.len() {
                        // The write is complete; the linked sync ran after it.
                        if s == 0 {
                            return Ok(());
                        }
                        if s != -libc::ECANCELED && !is_retry(s) {
                            return Err(errno_error(IoOp::Sync, &open.path, 0, s));
                        }
                        return sync_retrying(ring, fd, &open.path);
                    }
                    w
                } else {
                    // SAFETY: `rest` is borrowed for the whole call and outlives it.
                    let [w] = unsafe {
                        submit_and_reap(ring, [write], IoOp::Write, &open.path, at, meanwhile)?
                    };
                    w
                };
                if is_retry(written) {
                    continue;
                }
                if written < 0 {
                    return Err(errno_error(IoOp::Write, &open.path, at, written));
                }
                if written == 0 {
                    return Err(IoError::new(
                        IoOp::Write,
                        &open.path,
                        at,
                        IoErrorKind::WriteZero,
                    ));
                }
                done += written as usize;
            }
            Ok(())
        })
    }
}

fn sync_retrying(ring: &mut IoUring, fd: types::Fd, path: &Path) -> Result<(), IoError> {
    loop {
        let sync = opcode::Fsync::new(fd)
            .flags(types::FsyncFlags::DATASYNC)
            .build()
            .user_data(0);
        // SAFETY: fsync points at no buffer.
        let [result] = unsafe { submit_and_reap(ring, [sync], IoOp::Sync, path, 0, &mut None)? };
        if result == 0 {
            return Ok(());
        }
        if !is_retry(result) {
            return Err(errno_error(IoOp::Sync, path, 0, result));
        }
    }
}

impl Device for UringDevice {
    fn free_bytes(&self) -> Option<u64> {
        self.dir.free_bytes()
    }

    forward_to_real_dir!();

    fn describe(&self) -> String {
        self.dir.describe("io_uring")
    }
    fn read_at(&self, file: FileId, offset: u64, buf: &mut [u8]) -> Result<(), IoError> {
        let open = self.dir.file(file)?;
        self.read(&open, offset, buf)
    }
    fn write_at(&self, file: FileId, offset: u64, buf: &[u8]) -> Result<(), IoError> {
        let open = self.dir.file(file)?;
        self.write(&open, offset, buf, false, &mut None)
    }
    fn write_durable_at(&self, file: FileId, offset: u64, buf: &[u8]) -> Result<(), IoError> {
        let open = self.dir.file(file)?;
        self.write(&open, offset, buf, true, &mut None)
    }
    fn write_durable_at_meanwhile(
        &self,
        file: FileId,
        offset: u64,
        buf: &[u8],
        meanwhile: &mut dyn FnMut(),
    ) -> Result<(), IoError> {
        let mut pending = Some(meanwhile);
        let result = self
            .dir
            .file(file)
            .and_then(|open| self.write(&open, offset, buf, true, &mut pending));
        // Called once, whatever happened: after the write when it could not be overlapped.
        if let Some(meanwhile) = pending.take() {
            meanwhile();
        }
        result
    }
    fn sync(&self, file: FileId) -> Result<(), IoError> {
        let open = self.dir.file(file)?;
        let fd = types::Fd(open.file.as_raw_fd());
        self.with_ring(IoOp::Sync, &open.path, |ring| {
            sync_retrying(ring, fd, &open.path)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::AlignedBuf;

    /// The device on `dir`, or `None` (with one line saying so) where io_uring is refused.
    fn open_or_skip(dir: &tempfile::TempDir) -> Option<UringDevice> {
        match UringDevice::open(dir.path(), DeviceOptions::default()) {
            Ok(device) => Some(device),
            Err(e) if e.op == IoOp::Setup => {
                eprintln!("skipped: io_uring unavailable here: {e}");
                None
            }
            Err(e) => panic!("{e}"),
        }
    }

    fn test_dir() -> tempfile::TempDir {
        tempfile::Builder::new()
            .prefix("smlog-uring-")
            .tempdir_in("/var/tmp")
            .unwrap()
    }

    #[test]
    fn a_failed_wait_returns_only_when_the_kernel_took_no_entry() {
        assert_eq!(wait_failure(2, 0, 2), WaitFailure::ReturnError);
        assert_eq!(wait_failure(1, 0, 2), WaitFailure::KeepReaping);
        assert_eq!(wait_failure(0, 0, 2), WaitFailure::KeepReaping);
        assert_eq!(wait_failure(0, 1, 2), WaitFailure::KeepReaping);
        assert_eq!(wait_failure(1, 0, 1), WaitFailure::ReturnError);
    }

    #[test]
    fn durable_write_reads_back_through_o_direct() {
        let dir = test_dir();
        let Some(device) = open_or_skip(&dir) else {
            return;
        };
        let file = device.open("f", true).unwrap();
        device.set_len(file, 1 << 20).unwrap();
        let mut out = AlignedBuf::new_zeroed(8192);
        out.iter_mut().enumerate().for_each(|(i, b)| *b = i as u8);
        device.write_durable_at(file, 4096, &out).unwrap();
        let mut back = AlignedBuf::new_zeroed(8192);
        device.read_at(file, 4096, &mut back).unwrap();
        assert_eq!(&out[..], &back[..]);
        let error = device.read_at(file, 1 << 20, &mut back).unwrap_err();
        assert_eq!(error.kind, IoErrorKind::UnexpectedEof);
        let error = device.write_at(file, 100, &out).unwrap_err();
        assert_eq!(error.kind, IoErrorKind::Unaligned);
    }

    #[test]
    fn the_work_meanwhile_runs_once_whether_or_not_the_write_succeeds() {
        let dir = test_dir();
        let Some(device) = open_or_skip(&dir) else {
            return;
        };
        let file = device.open("f", true).unwrap();
        device.set_len(file, 1 << 20).unwrap();
        let mut out = AlignedBuf::new_zeroed(3 * 4096);
        out.iter_mut()
            .enumerate()
            .for_each(|(i, b)| *b = (i % 251) as u8);
        let mut calls = 0;
        device
            .write_durable_at_meanwhile(file, 8192, &out, &mut || calls += 1)
            .unwrap();
        assert_eq!(calls, 1);
        let mut back = AlignedBuf::new_zeroed(out.len());
        device.read_at(file, 8192, &mut back).unwrap();
        assert_eq!(&out[..], &back[..]);
        // Refused before anything is submitted: still called, once.
        let error = device
            .write_durable_at_meanwhile(file, 100, &out, &mut || calls += 1)
            .unwrap_err();
        assert_eq!(error.kind, IoErrorKind::Unaligned);
        assert_eq!(calls, 2);
        // A file that is not open: called once too.
        device.close(file);
        assert!(device
            .write_durable_at_meanwhile(file, 0, &out, &mut || calls += 1)
            .is_err());
        assert_eq!(calls, 3);
    }
}
