//! What the posix and io_uring devices share: a locked directory of real files.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use nix::fcntl::{Flock, FlockArg};

use super::{DeviceOptions, FileId, IoError, IoErrorKind, IoOp};

/// Name of the lock file in a log directory.
pub const LOCK_FILE_NAME: &str = "LOCK";

/// An exclusive `flock` on the directory itself, with the owner's pid written in its
/// `LOCK` file for the message a second opener gets. The lock is on the directory, not on
/// the `LOCK` file, so removing that file (or replacing it) never lets a second process in.
/// Released when dropped (or when the process dies).
#[derive(Debug)]
pub struct DirLock {
    _flock: Flock<File>,
    path: PathBuf,
}

impl DirLock {
    /// Locks `dir`, or fails with [`IoErrorKind::Locked`] naming the holder's pid.
    pub fn acquire(dir: &Path) -> Result<DirLock, IoError> {
        let path = dir.join(LOCK_FILE_NAME);
        let dir_file = File::open(dir)
            .map_err(|e| IoError::new(IoOp::Lock, dir, 0, IoErrorKind::from_io(&e)))?;
        let flock = match Flock::lock(dir_file, FlockArg::LockExclusiveNonblock) {
            Ok(flock) => flock,
            Err((_, errno)) => {
                let kind = if errno == nix::errno::Errno::EWOULDBLOCK {
                    // The kernel knows the holder even when its LOCK file is gone.
                    let pid = kernel_lock_holder(dir).or_else(|| {
                        std::fs::read_to_string(&path)
                            .ok()
                            .and_then(|text| text.trim().parse().ok())
                    });
                    IoErrorKind::Locked { pid }
                } else {
                    IoErrorKind::from_errno(errno as i32)
                };
                return Err(IoError::new(IoOp::Lock, &path, 0, kind));
            }
        };
        // Only the lock holder writes the pid, so a second opener reads the holder's.
        let written = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .and_then(|mut file| writeln!(file, "{}", std::process::id()));
        written.map_err(|e| IoError::new(IoOp::Lock, &path, 0, IoErrorKind::from_io(&e)))?;
        Ok(DirLock {
            _flock: flock,
            path,
        })
    }

    /// The lock file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The pid the kernel names as holding a `flock` on `dir`, from `/proc/locks` (lines such
/// as `1: FLOCK  ADVISORY  WRITE 5509 08:01:1234 0 EOF`, the file named by
/// major:minor:inode in hex:hex:decimal). `None` when no holder is shown, which is also
/// the answer where the kernel does not show it: `/proc` of another pid namespace lists no
/// lock whose holder it cannot see, and an overlay file system names another inode.
pub fn kernel_lock_holder(dir: &Path) -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    let metadata = std::fs::metadata(dir).ok()?;
    let dev = metadata.dev();
    let wanted = format!(
        "{:02x}:{:02x}:{}",
        libc::major(dev),
        libc::minor(dev),
        metadata.ino()
    );
    // `/proc/locks` is a sequence file: a read that ends between two records resumes at a
    // record number, so a lock released meanwhile by another thread shifts the rest and a
    // record can be skipped. Reads are large (one read holds several pages of records) and
    // a miss is read again before it is believed.
    (0..3).find_map(|_| holder_in(&read_proc_locks()?, &wanted))
}

/// `/proc/locks`, read with large reads.
fn read_proc_locks() -> Option<String> {
    use std::io::Read;
    let mut file = File::open("/proc/locks").ok()?;
    let mut text = Vec::new();
    let mut chunk = vec![0u8; 256 * 1024];
    loop {
        match file.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => text.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return None,
        }
    }
    String::from_utf8(text).ok()
}

/// The holder's pid in one reading of `/proc/locks` of the file named `wanted`.
fn holder_in(locks: &str, wanted: &str) -> Option<u32> {
    locks.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // Blocked waiters are listed as "1: -> FLOCK ..."; only the holder counts.
        let at = fields.iter().position(|f| *f == "FLOCK")?;
        if at.checked_sub(1).and_then(|i| fields.get(i)) == Some(&"->") {
            return None;
        }
        (fields.get(at + 4)? == &wanted)
            .then(|| fields.get(at + 3)?.parse().ok())
            .flatten()
    })
}

/// An open file of a [`RealDir`].
#[derive(Debug)]
pub(crate) struct OpenFile {
    pub file: File,
    pub path: PathBuf,
}

/// A locked directory of real files, opened with or without O_DIRECT.
#[derive(Debug)]
pub(crate) struct RealDir {
    dir: PathBuf,
    dir_file: File,
    direct_io: bool,
    files: RwLock<Vec<Option<Arc<OpenFile>>>>,
    _lock: DirLock,
}

impl RealDir {
    pub fn open(dir: &Path, options: DeviceOptions) -> Result<RealDir, IoError> {
        if options.create_dir && std::fs::symlink_metadata(dir).is_err() {
            std::fs::create_dir_all(dir)
                .map_err(|e| IoError::new(IoOp::Open, dir, 0, IoErrorKind::from_io(&e)))?;
        }
        let metadata = std::fs::metadata(dir)
            .map_err(|e| IoError::new(IoOp::Open, dir, 0, IoErrorKind::from_io(&e)))?;
        if !metadata.is_dir() {
            return Err(IoError::new(IoOp::Open, dir, 0, IoErrorKind::NotADirectory));
        }
        let dir_file = File::open(dir)
            .map_err(|e| IoError::new(IoOp::Open, dir, 0, IoErrorKind::from_io(&e)))?;
        let lock = DirLock::acquire(dir)?;
        let real = RealDir {
            dir: dir.to_path_buf(),
            dir_file,
            direct_io: options.direct_io,
            files: RwLock::new(Vec::new()),
            _lock: lock,
        };
        if options.direct_io {
            real.probe_direct_io()?;
        }
        Ok(real)
    }

    /// Opens a scratch file with O_DIRECT so a file system that refuses it is named at open,
    /// not at the first commit.
    fn probe_direct_io(&self) -> Result<(), IoError> {
        let probe = self.dir.join(".direct-io-probe");
        let result = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .custom_flags(libc::O_DIRECT)
            .open(&probe);
        let _ = std::fs::remove_file(&probe);
        match result {
            Ok(_) => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Err(IoError::new(
                IoOp::Open,
                &self.dir,
                0,
                IoErrorKind::DirectIoRefused,
            )),
            Err(e) => Err(IoError::new(
                IoOp::Open,
                &self.dir,
                0,
                IoErrorKind::from_io(&e),
            )),
        }
    }

    /// One line for reports: the device `kind`, the IO mode and the directory.
    pub fn describe(&self, kind: &str) -> String {
        let mode = if self.direct_io {
            "O_DIRECT"
        } else {
            "buffered"
        };
        format!("{kind}, {mode}, {}", self.dir.display())
    }

    pub fn path_of(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    pub fn file(&self, id: FileId) -> Result<Arc<OpenFile>, IoError> {
        let files = self.files.read().unwrap_or_else(|e| e.into_inner());
        files
            .get(id.0 as usize)
            .and_then(Clone::clone)
            .ok_or_else(|| IoError::new(IoOp::Read, &self.dir, 0, IoErrorKind::InvalidArgument))
    }

    /// Bytes an unprivileged writer may still use on the file system under the directory.
    pub fn free_bytes(&self) -> Option<u64> {
        let stat = nix::sys::statvfs::statvfs(&self.dir).ok()?;
        if stat.blocks() == 0 {
            // No size at all (ramfs, some FUSE file systems): the free space is unknown.
            return None;
        }
        Some(stat.blocks_available().saturating_mul(stat.fragment_size()))
    }

    pub fn list(&self) -> Result<Vec<String>, IoError> {
        let map =
            |e: std::io::Error| IoError::new(IoOp::List, &self.dir, 0, IoErrorKind::from_io(&e));
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&self.dir).map_err(map)? {
            let entry = entry.map_err(map)?;
            if entry.file_type().map_err(map)?.is_file() {
                if let Some(name) = entry.file_name().to_str() {
                    names.push(name.to_owned());
                }
            }
        }
        names.sort();
        Ok(names)
    }

    pub fn open_file(&self, name: &str, create: bool) -> Result<FileId, IoError> {
        let path = self.dir.join(name);
        let mut options = OpenOptions::new();
        options.read(true).write(true).create(create);
        if self.direct_io {
            options.custom_flags(libc::O_DIRECT);
        }
        let file = options.open(&path).map_err(|e| {
            let kind = match e.raw_os_error() {
                Some(libc::EINVAL) if self.direct_io => IoErrorKind::DirectIoRefused,
                _ => IoErrorKind::from_io(&e),
            };
            IoError::new(IoOp::Open, &path, 0, kind)
        })?;
        let mut files = self.files.write().unwrap_or_else(|e| e.into_inner());
        let open = Some(Arc::new(OpenFile { file, path }));
        if let Some(slot) = files.iter().position(Option::is_none) {
            files[slot] = open;
            Ok(FileId(slot as u32))
        } else {
            files.push(open);
            Ok(FileId(files.len() as u32 - 1))
        }
    }

    pub fn close(&self, id: FileId) {
        let mut files = self.files.write().unwrap_or_else(|e| e.into_inner());
        if let Some(slot) = files.get_mut(id.0 as usize) {
            *slot = None;
        }
    }

    pub fn len(&self, id: FileId) -> Result<u64, IoError> {
        let open = self.file(id)?;
        let metadata = open
            .file
            .metadata()
            .map_err(|e| IoError::new(IoOp::Read, &open.path, 0, IoErrorKind::from_io(&e)))?;
        Ok(metadata.len())
    }

    pub fn set_len(&self, id: FileId, len: u64) -> Result<(), IoError> {
        let open = self.file(id)?;
        open.file
            .set_len(len)
            .map_err(|e| IoError::new(IoOp::SetLen, &open.path, len, IoErrorKind::from_io(&e)))
    }

    pub fn allocate(&self, id: FileId, len: u64) -> Result<(), IoError> {
        let open = self.file(id)?;
        let fd = std::os::fd::AsRawFd::as_raw_fd(&open.file);
        let len_arg = libc::off_t::try_from(len)
            .map_err(|_| IoError::new(IoOp::SetLen, &open.path, len, IoErrorKind::FileTooLarge))?;
        // SAFETY: `fd` is an open descriptor owned by `open`, which lives across the call.
        let rc = unsafe { libc::fallocate(fd, 0, 0, len_arg) };
        if rc == 0 {
            return Ok(());
        }
        let error = std::io::Error::last_os_error();
        if matches!(error.raw_os_error(), Some(libc::EOPNOTSUPP)) {
            // A file system without fallocate: the length at least.
            return self.set_len(id, len.max(self.len(id)?));
        }
        Err(IoError::new(
            IoOp::SetLen,
            &open.path,
            len,
            IoErrorKind::from_io(&error),
        ))
    }

    pub fn rename(&self, from: &str, to: &str) -> Result<(), IoError> {
        let from_path = self.dir.join(from);
        std::fs::rename(&from_path, self.dir.join(to))
            .map_err(|e| IoError::new(IoOp::Rename, &from_path, 0, IoErrorKind::from_io(&e)))
    }

    pub fn remove(&self, name: &str) -> Result<(), IoError> {
        let path = self.dir.join(name);
        std::fs::remove_file(&path)
            .map_err(|e| IoError::new(IoOp::Remove, &path, 0, IoErrorKind::from_io(&e)))
    }

    pub fn sync_dir(&self) -> Result<(), IoError> {
        self.dir_file
            .sync_all()
            .map_err(|e| IoError::new(IoOp::SyncDir, &self.dir, 0, IoErrorKind::from_io(&e)))
    }
}

/// The [`super::Device`] methods a device over a [`RealDir`] (in a field `dir`) forwards to
/// it unchanged: everything but reading, writing and syncing data.
macro_rules! forward_to_real_dir {
    () => {
        fn path_of(&self, name: &str) -> std::path::PathBuf {
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
        fn allocate(&self, file: FileId, len: u64) -> Result<(), IoError> {
            self.dir.allocate(file, len)
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
    };
}
pub(crate) use forward_to_real_dir;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_names_the_holder_pid() {
        let dir = tempfile::tempdir().unwrap();
        let _held = DirLock::acquire(dir.path()).unwrap();
        let error = DirLock::acquire(dir.path()).unwrap_err();
        // The kernel's name for this process where it shows one, else the LOCK file's.
        let pid = kernel_lock_holder(dir.path()).unwrap_or(std::process::id());
        assert_eq!(error.kind, IoErrorKind::Locked { pid: Some(pid) });
        assert!(error.to_string().contains("LOCK"));
    }

    #[test]
    fn removing_the_lock_file_lets_no_second_opener_in() {
        let dir = tempfile::tempdir().unwrap();
        let _held = DirLock::acquire(dir.path()).unwrap();
        std::fs::remove_file(dir.path().join(LOCK_FILE_NAME)).unwrap();
        let error = DirLock::acquire(dir.path()).unwrap_err();
        // The second opener is refused wherever this runs; the holder's pid is named where
        // the kernel shows it (not in every container).
        let shown = kernel_lock_holder(dir.path());
        // This process's pid as /proc names it (its pid namespace may differ from ours).
        let me: u32 = std::fs::read_link("/proc/self")
            .unwrap()
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        match shown {
            Some(pid) => assert_eq!(pid, me),
            None => println!("/proc/locks does not show this process's lock here"),
        }
        assert_eq!(error.kind, IoErrorKind::Locked { pid: shown });
        let named = shown.map_or("its pid is unknown".to_owned(), |pid| format!("pid {pid}"));
        assert_eq!(
            error.to_string(),
            format!(
                "lock {}: the directory is in use by another process ({named})",
                dir.path().join(LOCK_FILE_NAME).display()
            )
        );
        // A LOCK file put back by hand, naming another pid, changes nothing where the
        // kernel names the holder: its own record of the lock wins.
        std::fs::write(dir.path().join(LOCK_FILE_NAME), "1\n").unwrap();
        let error = DirLock::acquire(dir.path()).unwrap_err();
        let expected = shown.or(Some(1));
        assert_eq!(error.kind, IoErrorKind::Locked { pid: expected });
    }

    #[test]
    fn the_holder_is_found_while_other_locks_come_and_go() {
        let dir = tempfile::tempdir().unwrap();
        let _held = DirLock::acquire(dir.path()).unwrap();
        let Some(first) = kernel_lock_holder(dir.path()) else {
            println!("skipped: /proc/locks does not show this process's lock here");
            return;
        };
        let stop = std::sync::atomic::AtomicBool::new(false);
        let misses = std::thread::scope(|scope| {
            for _ in 0..4 {
                scope.spawn(|| {
                    let others: Vec<_> = (0..16).map(|_| tempfile::tempdir().unwrap()).collect();
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        let held: Vec<_> = others
                            .iter()
                            .map(|d| DirLock::acquire(d.path()).unwrap())
                            .collect();
                        drop(held);
                    }
                });
            }
            let misses = (0..300)
                .filter(|_| kernel_lock_holder(dir.path()) != Some(first))
                .count();
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            misses
        });
        assert_eq!(misses, 0, "lookups of 300 that missed the holder");
    }

    #[test]
    fn waiters_are_not_holders() {
        let locks = "1: FLOCK  ADVISORY  WRITE 5509 08:01:1234 0 EOF\n\
                     1: -> FLOCK  ADVISORY  WRITE 7777 08:01:99 0 EOF\n\
                     2: FLOCK  ADVISORY  WRITE 6000 08:01:99 0 EOF\n";
        assert_eq!(holder_in(locks, "08:01:1234"), Some(5509));
        assert_eq!(holder_in(locks, "08:01:99"), Some(6000));
        assert_eq!(holder_in(locks, "08:01:12"), None);
    }

    #[test]
    fn lock_is_released_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        drop(DirLock::acquire(dir.path()).unwrap());
        DirLock::acquire(dir.path()).unwrap();
    }
}
