//! `smlog posix diff`: a differential POSIX tester. Seeded random sequences of system calls
//! run on a reference directory (the host's ext4) and on a directory under test (an smlog
//! mount), each in a child process (as root, or as another user through `setpriv`); every
//! call's answer (return value or errno) and, afterwards, `lstat` of every name (not its
//! times), the bytes of every file and its extended attributes are compared. A sequence that differs is
//! shrunk to the fewest calls that still differ, and printed with its seed.
//!
//! Differences that are right (each in the README): `st_blocks` of a regular file on ext4
//! may count one more 4 KiB block, the index of its extent tree (more than four extents);
//! smlog's block map lives in its metadata. Directory sizes and blocks are not compared
//! (ext4's grow by 4 KiB blocks of entries). `listxattr` is compared as a set.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::io::Write as _;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// `smlog posix`.
#[derive(Debug, Subcommand)]
pub enum PosixCommand {
    /// Run seeded random sequences of system calls on a reference directory (the host's
    /// ext4) and on a directory under test (an smlog mount), compare every answer and the
    /// trees they leave; shrink and print any sequence that differs. Exit 0 when none
    /// does, 1 otherwise.
    Diff(DiffArgs),
    /// The same sequences through a crash: run each on a mount of DIR, SIGKILL the mount
    /// at a random moment, recover and remount: the tree must be the reference's after
    /// some prefix of the calls, no shorter than the last acknowledged fsync and no
    /// longer than the call in flight. Exit 0 when every round holds, 1 otherwise.
    Crash(CrashArgs),
    /// Run the calls in a file (JSON, one per line) in DIR, printing each answer (the
    /// child process of `diff`).
    #[command(hide = true)]
    Run(RunArgs),
}

/// `smlog posix diff`.
#[derive(Debug, Args)]
pub struct DiffArgs {
    /// A directory on the reference file system (the host's ext4).
    #[arg(long)]
    pub reference: PathBuf,
    /// A directory on the file system under test (an smlog mount).
    #[arg(long)]
    pub subject: PathBuf,
    /// The first sequence's seed.
    #[arg(long, default_value_t = 1)]
    pub first_seed: u64,
    /// Sequences to run (seeds first_seed, first_seed + 1, ...).
    #[arg(long, default_value_t = 100)]
    pub sequences: u64,
    /// Calls per sequence.
    #[arg(long, default_value_t = 60)]
    pub calls: usize,
    /// Run the calls as this user (group the same number, no supplementary groups), through
    /// `setpriv`; the sequence's directory is theirs.
    #[arg(long)]
    pub uid: Option<u32>,
    /// With --uid: the first this many calls of each sequence run as root, making files,
    /// owners and ACLs the user then meets.
    #[arg(long, default_value_t = 0)]
    pub root_calls: usize,
    /// Seconds spent shrinking a sequence that differs.
    #[arg(long, default_value_t = 60)]
    pub shrink_seconds: u64,
    /// Print every call with both answers.
    #[arg(long)]
    pub verbose: bool,
}

/// `smlog posix crash`.
#[derive(Debug, Args)]
pub struct CrashArgs {
    /// A directory on the reference file system (the host's ext4).
    #[arg(long)]
    pub reference: PathBuf,
    /// The engine's directory (created when missing); `smlog mount` serves it.
    #[arg(long)]
    pub engine: PathBuf,
    /// Where to mount it.
    #[arg(long)]
    pub mountpoint: PathBuf,
    /// The first round's seed.
    #[arg(long, default_value_t = 1)]
    pub first_seed: u64,
    /// Rounds: a sequence, a SIGKILL, a recovery each.
    #[arg(long, default_value_t = 10)]
    pub rounds: u64,
    /// Calls per sequence.
    #[arg(long, default_value_t = 300)]
    pub calls: usize,
}

/// `smlog posix run` (hidden).
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The directory the calls' paths are relative to.
    #[arg(long)]
    pub root: PathBuf,
    /// The calls, JSON, one per line.
    #[arg(long)]
    pub calls: PathBuf,
}

/// Open-file slots a sequence uses (an empty slot is fd -1: EBADF).
const SLOTS: usize = 3;

/// One system call of a sequence. Paths are relative to the sequence's directory.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Call {
    /// open(path, flags | O_NONBLOCK, mode) into a slot (closing what it held).
    Open(usize, String, i32, u32),
    /// close(slot).
    Close(usize),
    /// pwrite(slot, bytes of a seed, len, offset) (or write, with O_APPEND).
    Write(usize, u64, usize, u64),
    /// pread(slot, len, offset).
    Read(usize, usize, u64),
    /// copy_file_range(slot in, offset in, slot out, offset out, len).
    CopyRange(usize, u64, usize, u64, usize),
    /// ftruncate(slot, size).
    Ftruncate(usize, u64),
    /// fallocate(slot, mode, offset, len).
    Fallocate(usize, i32, u64, u64),
    /// lseek(slot, offset, whence).
    Lseek(usize, i64, i32),
    /// fsync(slot).
    Fsync(usize),
    /// mkdir(path, mode).
    Mkdir(String, u32),
    /// mknod(path, type and mode, rdev).
    Mknod(String, u32, u64),
    /// symlink(target, path).
    Symlink(String, String),
    /// link(from, to).
    Link(String, String),
    /// renameat2(from, to, flags).
    Rename(String, String, u32),
    /// unlink(path).
    Unlink(String),
    /// rmdir(path).
    Rmdir(String),
    /// truncate(path, size).
    Truncate(String, u64),
    /// chmod(path, mode).
    Chmod(String, u32),
    /// lchown(path, uid, gid) (u32::MAX: unchanged).
    Chown(String, u32, u32),
    /// utimensat(path, times (None: UTIME_NOW), AT_SYMLINK_NOFOLLOW?).
    Utimens(String, Option<i64>, bool),
    /// lsetxattr(path, name, bytes of a seed, len, flags).
    SetXattr(String, String, u64, usize, i32),
    /// lgetxattr(path, name, buffer size).
    GetXattr(String, String, usize),
    /// llistxattr(path).
    ListXattr(String),
    /// lremovexattr(path, name).
    RemoveXattr(String, String),
    /// lstat(path).
    Stat(String),
    /// lsetxattr(path, system.posix_acl_access or _default (`true`), the ACL of these
    /// (tag, perm, id) entries in Linux's encoding), as setfacl does.
    SetAcl(String, bool, Vec<(u16, u16, u32)>),
}

/// The bytes a write or an attribute carries: a function of its seed, never zero (so a
/// written block is never mistaken for a hole).
fn bytes_for(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            ((state >> 32) as u8) | 1
        })
        .collect()
}

/// FNV-1a: a short, stable digest of bytes for the answers.
fn digest(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// The sequence of seed `seed`: `len` calls over a few names, so that they collide.
pub fn sequence(seed: u64, len: usize) -> Vec<Call> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..len).map(|_| random_call(&mut rng)).collect()
}

fn random_path(rng: &mut ChaCha8Rng) -> String {
    const NAMES: [&str; 3] = ["a", "b", "c"];
    let depth = match rng.gen_range(0..20) {
        0..=11 => 1,
        12..=18 => 2,
        _ => 3,
    };
    (0..depth)
        .map(|_| NAMES[rng.gen_range(0..NAMES.len())])
        .collect::<Vec<_>>()
        .join("/")
}

fn random_mode(rng: &mut ChaCha8Rng) -> u32 {
    const MODES: [u32; 9] = [
        0o644, 0o600, 0o755, 0o700, 0o444, 0o000, 0o4755, 0o2775, 0o1777,
    ];
    MODES[rng.gen_range(0..MODES.len())]
}

fn random_id(rng: &mut ChaCha8Rng) -> u32 {
    [u32::MAX, 0, 1000, 1001][rng.gen_range(0..4)]
}

/// The attributes gets and removals name (ACLs included).
const XATTR_NAMES: [&str; 5] = [
    "user.a",
    "user.b",
    "trusted.t",
    "system.posix_acl_access",
    "system.posix_acl_default",
];

fn random_call(rng: &mut ChaCha8Rng) -> Call {
    let slot = rng.gen_range(0..SLOTS);
    let offset = |rng: &mut ChaCha8Rng| {
        if rng.gen_bool(0.7) {
            rng.gen_range(0..48 * 1024)
        } else {
            // Block boundaries, where rounding goes wrong.
            rng.gen_range(0..12) * 4096 + [0, 1, 4095][rng.gen_range(0..3)]
        }
    };
    match rng.gen_range(0..100) {
        0..=17 => {
            let access = [libc::O_RDONLY, libc::O_WRONLY, libc::O_RDWR][rng.gen_range(0..3)];
            let mut flags = access;
            for (flag, p) in [
                (libc::O_CREAT, 0.75),
                (libc::O_EXCL, 0.15),
                (libc::O_TRUNC, 0.15),
                (libc::O_APPEND, 0.1),
                (libc::O_NOFOLLOW, 0.1),
                (libc::O_DIRECTORY, 0.05),
            ] {
                if rng.gen_bool(p) {
                    flags |= flag;
                }
            }
            Call::Open(slot, random_path(rng), flags, random_mode(rng))
        }
        18..=19 => Call::Close(slot),
        20..=29 => {
            let len = if rng.gen_bool(0.2) {
                rng.gen_range(8192..20_000)
            } else {
                rng.gen_range(1..5000)
            };
            Call::Write(slot, rng.gen(), len, offset(rng))
        }
        30..=31 => Call::Read(slot, rng.gen_range(0..10_000), offset(rng)),
        32..=33 => {
            let to = rng.gen_range(0..SLOTS);
            let len = rng.gen_range(0..20_000);
            Call::CopyRange(slot, offset(rng), to, offset(rng), len)
        }
        34..=36 => Call::Ftruncate(slot, offset(rng)),
        37..=42 => {
            let modes = [
                0,
                libc::FALLOC_FL_KEEP_SIZE,
                libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                libc::FALLOC_FL_ZERO_RANGE,
                libc::FALLOC_FL_ZERO_RANGE | libc::FALLOC_FL_KEEP_SIZE,
                libc::FALLOC_FL_PUNCH_HOLE,
            ];
            let mode = modes[rng.gen_range(0..modes.len())];
            let len = if rng.gen_bool(0.05) {
                0
            } else {
                rng.gen_range(1..24_000)
            };
            Call::Fallocate(slot, mode, offset(rng), len)
        }
        43..=46 => {
            let whence = [libc::SEEK_DATA, libc::SEEK_HOLE, libc::SEEK_END][rng.gen_range(0..3)];
            Call::Lseek(slot, offset(rng) as i64, whence)
        }
        47 => Call::Fsync(slot),
        48..=53 => Call::Mkdir(random_path(rng), random_mode(rng)),
        54..=55 => {
            let (kind, rdev) = match rng.gen_range(0..4) {
                0 => (libc::S_IFIFO, 0),
                1 => (libc::S_IFSOCK, 0),
                2 => (libc::S_IFCHR, libc::makedev(1, 3)),
                _ => (libc::S_IFBLK, libc::makedev(7, 0)),
            };
            Call::Mknod(random_path(rng), kind | random_mode(rng), rdev)
        }
        56..=57 => {
            // Targets stay inside the sequence's directory: what lies outside differs.
            let target = if rng.gen_bool(0.3) {
                "x".to_string()
            } else {
                random_path(rng)
            };
            Call::Symlink(target, random_path(rng))
        }
        58..=60 => Call::Link(random_path(rng), random_path(rng)),
        61..=66 => {
            let flags = [0, 0, libc::RENAME_NOREPLACE, libc::RENAME_EXCHANGE][rng.gen_range(0..4)];
            Call::Rename(random_path(rng), random_path(rng), flags)
        }
        67..=71 => Call::Unlink(random_path(rng)),
        72..=74 => Call::Rmdir(random_path(rng)),
        75..=76 => Call::Truncate(random_path(rng), offset(rng)),
        77..=79 => Call::Chmod(random_path(rng), random_mode(rng)),
        80..=82 => Call::Chown(random_path(rng), random_id(rng), random_id(rng)),
        83..=84 => {
            let time = rng.gen_bool(0.5).then(|| rng.gen_range(0..2_000_000_000));
            Call::Utimens(random_path(rng), time, rng.gen_bool(0.3))
        }
        96..=99 => {
            // owner, named users, owning group, named groups, mask, other; now and then
            // one that is not valid (a named entry without a mask).
            let mut entries = vec![(0x01, rng.gen_range(0..8), u32::MAX)];
            let named = rng.gen_range(0..3);
            for id in [1000, 1001].iter().take(named) {
                entries.push((0x02, rng.gen_range(0..8), *id));
            }
            entries.push((0x04, rng.gen_range(0..8), u32::MAX));
            if rng.gen_bool(0.3) {
                entries.push((0x08, rng.gen_range(0..8), 1000));
            }
            if named > 0 && rng.gen_bool(0.95) || rng.gen_bool(0.3) {
                entries.push((0x10, rng.gen_range(0..8), u32::MAX));
            }
            entries.push((0x20, rng.gen_range(0..8), u32::MAX));
            Call::SetAcl(random_path(rng), rng.gen_bool(0.4), entries)
        }
        85..=89 => {
            const NAMES: [&str; 6] = [
                "user.a",
                "user.b",
                "trusted.t",
                "security.s",
                "os2.x",
                "user.",
            ];
            let name = NAMES[rng.gen_range(0..NAMES.len())].to_string();
            let flags = [0, 0, libc::XATTR_CREATE, libc::XATTR_REPLACE][rng.gen_range(0..4)];
            Call::SetXattr(
                random_path(rng),
                name,
                rng.gen(),
                rng.gen_range(0..300),
                flags,
            )
        }
        90..=91 => {
            let name = XATTR_NAMES[rng.gen_range(0..XATTR_NAMES.len())].to_string();
            Call::GetXattr(random_path(rng), name, [0, 4, 512][rng.gen_range(0..3)])
        }
        92 => Call::ListXattr(random_path(rng)),
        93..=94 => {
            let name = XATTR_NAMES[rng.gen_range(0..XATTR_NAMES.len())].to_string();
            Call::RemoveXattr(random_path(rng), name)
        }
        _ => Call::Stat(random_path(rng)),
    }
}

/// Linux's encoding of a POSIX ACL (version 2, then tag u16, perm u16, id u32 each).
fn acl_bytes(entries: &[(u16, u16, u32)]) -> Vec<u8> {
    let mut out = 2u32.to_le_bytes().to_vec();
    for &(tag, perm, id) in entries {
        out.extend_from_slice(&tag.to_le_bytes());
        out.extend_from_slice(&perm.to_le_bytes());
        out.extend_from_slice(&id.to_le_bytes());
    }
    out
}

// --- Running calls (the child) ---

fn c_path(path: &str) -> CString {
    CString::new(path).expect("generated paths hold no NUL")
}

fn errno_name(errno: i32) -> String {
    format!("{:?}", nix::errno::Errno::from_raw(errno))
}

/// `ret` as an answer: the value, or the errno's name.
fn answer(ret: i64) -> std::result::Result<i64, String> {
    if ret < 0 {
        Err(errno_name(
            std::io::Error::last_os_error().raw_os_error().unwrap_or(0),
        ))
    } else {
        Ok(ret)
    }
}

/// The fields of `lstat` compared: type, mode, links, owner, group, size and blocks (not
/// for a directory), rdev.
fn stat_line(m: &std::fs::Metadata) -> String {
    let kind = match m.mode() & libc::S_IFMT {
        libc::S_IFREG => "file",
        libc::S_IFDIR => "dir",
        libc::S_IFLNK => "link",
        libc::S_IFIFO => "fifo",
        libc::S_IFSOCK => "socket",
        libc::S_IFCHR => "chr",
        libc::S_IFBLK => "blk",
        _ => "other",
    };
    let (size, blocks) = if kind == "dir" {
        ("-".to_string(), "-".to_string())
    } else {
        (m.size().to_string(), m.blocks().to_string())
    };
    format!(
        "{kind} mode={:o} nlink={} uid={} gid={} size={size} blocks={blocks} rdev={:x}",
        m.mode() & 0o7777,
        m.nlink(),
        m.uid(),
        m.gid(),
        m.rdev()
    )
}

struct Runner {
    fds: [i32; SLOTS],
}

impl Runner {
    fn call(&mut self, call: &Call) -> String {
        let result: std::result::Result<String, String> =
        // SAFETY: every libc call below gets NUL-terminated paths that live across the
        // call, buffers as long as the lengths passed, and an fd this process opened or -1
        // (EBADF); `stat` is a plain struct, zeroes valid.
        unsafe {
            match call {
                Call::Open(slot, path, flags, mode) => {
                    self.close(*slot);
                    let p = c_path(path);
                    answer(libc::open(p.as_ptr(), flags | libc::O_NONBLOCK, *mode) as i64).map(
                        |fd| {
                            self.fds[*slot] = fd as i32;
                            String::new()
                        },
                    )
                }
                Call::Close(slot) => {
                    let fd = self.fds[*slot];
                    self.fds[*slot] = -1;
                    answer(libc::close(fd) as i64).map(|_| String::new())
                }
                Call::Write(slot, seed, len, offset) => {
                    let bytes = bytes_for(*seed, *len);
                    let fd = self.fds[*slot];
                    let appending = fd >= 0 && libc::fcntl(fd, libc::F_GETFL) & libc::O_APPEND != 0;
                    let ret = if appending {
                        libc::write(fd, bytes.as_ptr().cast(), bytes.len())
                    } else {
                        libc::pwrite(fd, bytes.as_ptr().cast(), bytes.len(), *offset as i64)
                    };
                    answer(ret as i64).map(|n| n.to_string())
                }
                Call::Read(slot, len, offset) => {
                    let mut buf = vec![0u8; *len];
                    let ret = libc::pread(
                        self.fds[*slot],
                        buf.as_mut_ptr().cast(),
                        *len,
                        *offset as i64,
                    );
                    answer(ret as i64).map(|n| format!("{n} {:x}", digest(&buf[..n as usize])))
                }
                Call::CopyRange(from, offset_in, to, offset_out, len) => {
                    let (mut off_in, mut off_out) = (*offset_in as i64, *offset_out as i64);
                    answer(libc::copy_file_range(
                        self.fds[*from],
                        &mut off_in,
                        self.fds[*to],
                        &mut off_out,
                        *len,
                        0,
                    ) as i64)
                    .map(|n| n.to_string())
                }
                Call::Ftruncate(slot, size) => {
                    answer(libc::ftruncate(self.fds[*slot], *size as i64) as i64)
                        .map(|_| String::new())
                }
                Call::Fallocate(slot, mode, offset, len) => {
                    answer(
                        libc::fallocate(self.fds[*slot], *mode, *offset as i64, *len as i64) as i64,
                    )
                    .map(|_| String::new())
                }
                Call::Lseek(slot, offset, whence) => {
                    let fd = self.fds[*slot];
                    let mut st: libc::stat = std::mem::zeroed();
                    let is_dir =
                        libc::fstat(fd, &mut st) == 0 && st.st_mode & libc::S_IFMT == libc::S_IFDIR;
                    if is_dir {
                        // Not compared: ext4 seeks a directory by its hash tree's
                        // positions (SEEK_END is EINVAL), a FUSE file system by the
                        // kernel's generic rules.
                        Ok("directory".to_string())
                    } else {
                        // Without cached pages: ext4 counts a page read from a preallocated
                        // (unwritten) range as data while it stays cached.
                        libc::posix_fadvise(fd, 0, 0, libc::POSIX_FADV_DONTNEED);
                        answer(libc::lseek(fd, *offset, *whence)).map(|n| n.to_string())
                    }
                }
                Call::Fsync(slot) => {
                    answer(libc::fsync(self.fds[*slot]) as i64).map(|_| String::new())
                }
                Call::Mkdir(path, mode) => {
                    answer(libc::mkdir(c_path(path).as_ptr(), *mode) as i64).map(|_| String::new())
                }
                Call::Mknod(path, mode, rdev) => {
                    answer(libc::mknod(c_path(path).as_ptr(), *mode, *rdev) as i64)
                        .map(|_| String::new())
                }
                Call::Symlink(target, path) => {
                    answer(libc::symlink(c_path(target).as_ptr(), c_path(path).as_ptr()) as i64)
                        .map(|_| String::new())
                }
                Call::Link(from, to) => {
                    answer(libc::link(c_path(from).as_ptr(), c_path(to).as_ptr()) as i64)
                        .map(|_| String::new())
                }
                Call::Rename(from, to, flags) => answer(libc::renameat2(
                    libc::AT_FDCWD,
                    c_path(from).as_ptr(),
                    libc::AT_FDCWD,
                    c_path(to).as_ptr(),
                    *flags,
                ) as i64)
                .map(|_| String::new()),
                Call::Unlink(path) => {
                    answer(libc::unlink(c_path(path).as_ptr()) as i64).map(|_| String::new())
                }
                Call::Rmdir(path) => {
                    answer(libc::rmdir(c_path(path).as_ptr()) as i64).map(|_| String::new())
                }
                Call::Truncate(path, size) => {
                    answer(libc::truncate(c_path(path).as_ptr(), *size as i64) as i64)
                        .map(|_| String::new())
                }
                Call::Chmod(path, mode) => {
                    answer(libc::chmod(c_path(path).as_ptr(), *mode) as i64).map(|_| String::new())
                }
                Call::Chown(path, uid, gid) => {
                    answer(libc::lchown(c_path(path).as_ptr(), *uid, *gid) as i64)
                        .map(|_| String::new())
                }
                Call::Utimens(path, time, nofollow) => {
                    let t = match time {
                        Some(secs) => libc::timespec {
                            tv_sec: *secs,
                            tv_nsec: 0,
                        },
                        None => libc::timespec {
                            tv_sec: 0,
                            tv_nsec: libc::UTIME_NOW,
                        },
                    };
                    let times = [t, t];
                    let flags = if *nofollow {
                        libc::AT_SYMLINK_NOFOLLOW
                    } else {
                        0
                    };
                    answer(libc::utimensat(
                        libc::AT_FDCWD,
                        c_path(path).as_ptr(),
                        times.as_ptr(),
                        flags,
                    ) as i64)
                    .map(|_| String::new())
                }
                Call::SetXattr(path, name, seed, len, flags) => {
                    let value = bytes_for(*seed, *len);
                    answer(libc::lsetxattr(
                        c_path(path).as_ptr(),
                        c_path(name).as_ptr(),
                        value.as_ptr().cast(),
                        value.len(),
                        *flags,
                    ) as i64)
                    .map(|_| String::new())
                }
                Call::GetXattr(path, name, size) => {
                    let mut buf = vec![0u8; *size];
                    let ret = libc::lgetxattr(
                        c_path(path).as_ptr(),
                        c_path(name).as_ptr(),
                        buf.as_mut_ptr().cast(),
                        *size,
                    );
                    answer(ret as i64).map(|n| {
                        let got = &buf[..(n as usize).min(*size)];
                        format!("{n} {:x}", digest(got))
                    })
                }
                Call::ListXattr(path) => listxattr(Path::new(path)).map(|names| names.join(",")),
                Call::RemoveXattr(path, name) => {
                    answer(libc::lremovexattr(c_path(path).as_ptr(), c_path(name).as_ptr()) as i64)
                        .map(|_| String::new())
                }
                Call::SetAcl(path, default, entries) => {
                    let value = acl_bytes(entries);
                    let name = if *default {
                        "system.posix_acl_default"
                    } else {
                        "system.posix_acl_access"
                    };
                    answer(libc::lsetxattr(
                        c_path(path).as_ptr(),
                        c_path(name).as_ptr(),
                        value.as_ptr().cast(),
                        value.len(),
                        0,
                    ) as i64)
                    .map(|_| String::new())
                }
                Call::Stat(path) => std::fs::symlink_metadata(path)
                    .map(|m| stat_line(&m))
                    .map_err(|e| errno_name(e.raw_os_error().unwrap_or(0))),
            }
        };
        match result {
            Ok(value) if value.is_empty() => "ok".to_string(),
            Ok(value) => format!("ok {value}"),
            Err(errno) => format!("err {errno}"),
        }
    }

    fn close(&mut self, slot: usize) {
        if self.fds[slot] >= 0 {
            // SAFETY: an fd this process opened.
            unsafe { libc::close(self.fds[slot]) };
            self.fds[slot] = -1;
        }
    }
}

/// The names of `path`'s extended attributes, sorted (the order of listxattr(2) is the
/// file system's own).
fn listxattr(path: &Path) -> std::result::Result<Vec<String>, String> {
    let p = CString::new(path.as_os_str().as_bytes()).map_err(|_| "EINVAL".to_string())?;
    let mut buf = vec![0u8; 64 * 1024];
    // SAFETY: the buffer is as long as the size passed.
    let n = unsafe { libc::llistxattr(p.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    let n = answer(n as i64)? as usize;
    let mut names: Vec<String> = buf[..n]
        .split(|&b| b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect();
    names.sort();
    Ok(names)
}

fn lgetxattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let p = CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut buf = vec![0u8; 64 * 1024];
    // SAFETY: the buffer is as long as the size passed.
    let n = unsafe {
        libc::lgetxattr(
            p.as_ptr(),
            c_path(name).as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    (n >= 0).then(|| buf[..n as usize].to_vec())
}

/// `smlog posix run`: each call's answer on its own line.
pub fn run_calls(args: RunArgs) -> Result<ExitCode> {
    let text = std::fs::read_to_string(&args.calls)?;
    let calls: Vec<Call> = text
        .lines()
        .map(serde_json::from_str)
        .collect::<std::result::Result<_, _>>()?;
    std::env::set_current_dir(&args.root)?;
    // SAFETY: umask has no memory effects; ignoring SIGPIPE, before any thread starts,
    // has no handler to race with (a write to a FIFO whose reader closed is then EPIPE,
    // an answer like any other).
    unsafe {
        libc::umask(0o022);
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
    let mut runner = Runner { fds: [-1; SLOTS] };
    let mut out = std::io::stdout().lock();
    for call in &calls {
        writeln!(out, "{}", runner.call(call))?;
    }
    Ok(ExitCode::SUCCESS)
}

// --- Comparing (the driver) ---

/// Every name under `root` (sorted, depth first): its `lstat` fields, a digest of its
/// bytes (a file) or its target (a link), and its extended attributes.
fn tree(root: &Path) -> Vec<String> {
    let mut lines = Vec::new();
    walk(root, Path::new(""), &mut lines);
    lines
}

fn walk(root: &Path, rel: &Path, lines: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(root.join(rel)) else {
        lines.push(format!("{}: unreadable", rel.display()));
        return;
    };
    let mut names: Vec<_> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.file_name())
        .collect();
    names.sort();
    for name in names {
        let path = rel.join(&name);
        let full = root.join(&path);
        let m = match std::fs::symlink_metadata(&full) {
            Ok(m) => m,
            Err(e) => {
                // Named but not there: recorded, never skipped.
                lines.push(format!("{}: lstat failed: {e}", path.display()));
                continue;
            }
        };
        let mut line = format!("{} {}", path.display(), stat_line(&m));
        if m.file_type().is_file() {
            match std::fs::read(&full) {
                Ok(bytes) => line.push_str(&format!(" data={:x}", digest(&bytes))),
                Err(e) => line.push_str(&format!(" data=error {e}")),
            }
        } else if m.file_type().is_symlink() {
            let target = std::fs::read_link(&full).unwrap_or_default();
            line.push_str(&format!(" target={}", target.display()));
        }
        match listxattr(&full) {
            Ok(names) => {
                for name in names {
                    match lgetxattr(&full, &name) {
                        Some(value) => line.push_str(&format!(" {name}={:x}", digest(&value))),
                        None => line.push_str(&format!(" {name}=unreadable")),
                    }
                }
            }
            Err(errno) => line.push_str(&format!(" xattrs={errno}")),
        }
        lines.push(line);
        if m.file_type().is_dir() {
            walk(root, &path, lines);
        }
    }
}

/// Whether two answers (or tree lines) agree: equal, or equal but for `blocks=` of a
/// name other than a directory where the reference counts one or two 4 KiB blocks of
/// its own metadata more (ext4: an extent tree's index block, an extended-attribute block
/// for attributes that do not fit in the inode).
fn agree(reference: &str, subject: &str) -> bool {
    if reference == subject {
        return true;
    }
    let (r, s): (Vec<&str>, Vec<&str>) =
        (reference.split(' ').collect(), subject.split(' ').collect());
    if r.len() != s.len() || r.contains(&"dir") {
        return false;
    }
    r.iter().zip(&s).all(|(a, b)| {
        a == b
            || sgid_kept_by_fuse(a, b)
            || match (a.strip_prefix("blocks="), b.strip_prefix("blocks=")) {
                (Some(a), Some(b)) => match (a.parse::<u64>(), b.parse::<u64>()) {
                    (Ok(a), Ok(b)) => a == b + 8 || a == b + 16,
                    _ => false,
                },
                _ => false,
            }
    })
}

/// Whether `mode=` fields differ only by a setgid bit the subject kept on a file without
/// group execute: on a write or truncation by a user outside the file's group the VFS
/// clears it (Linux 6.2 on), while FUSE's kernel code still clears it only with group
/// execute; not the file system's to decide.
fn sgid_kept_by_fuse(reference: &str, subject: &str) -> bool {
    let mode = |field: &str| {
        field
            .strip_prefix("mode=")
            .and_then(|m| u32::from_str_radix(m, 8).ok())
    };
    matches!(
        (mode(reference), mode(subject)),
        (Some(r), Some(s)) if s & 0o2010 == 0o2000 && r == s & !0o2000
    )
}

/// What one side of a run gave: each call's answer, then the tree.
#[derive(Debug)]
struct Outcome {
    answers: Vec<String>,
    tree: Vec<String>,
}

/// The first difference of two outcomes: (what, reference, subject).
fn difference(reference: &Outcome, subject: &Outcome) -> Option<(String, String, String)> {
    for (i, (r, s)) in reference.answers.iter().zip(&subject.answers).enumerate() {
        if !agree(r, s) {
            return Some((format!("call {i}"), r.clone(), s.clone()));
        }
    }
    if reference.answers.len() != subject.answers.len() {
        return Some((
            "the number of answers".into(),
            reference.answers.len().to_string(),
            subject.answers.len().to_string(),
        ));
    }
    let (r, s) = (&reference.tree, &subject.tree);
    for i in 0..r.len().max(s.len()) {
        let (a, b) = (r.get(i), s.get(i));
        let same = matches!((a, b), (Some(a), Some(b)) if agree(a, b));
        if !same {
            let show = |x: Option<&String>| x.cloned().unwrap_or_else(|| "(nothing)".into());
            return Some(("the tree after".into(), show(a), show(b)));
        }
    }
    None
}

struct Driver {
    exe: PathBuf,
    uid: Option<u32>,
    root_calls: usize,
    reference: PathBuf,
    subject: PathBuf,
    runs: u64,
}

impl Driver {
    /// Runs `calls` in a fresh directory under `base` and takes the tree.
    fn run_side(&mut self, base: &Path, calls: &[Call], tag: &str) -> Result<Outcome> {
        self.runs += 1;
        let dir = base.join(format!("{tag}-{}", self.runs));
        std::fs::create_dir(&dir)?;
        if let Some(uid) = self.uid {
            std::os::unix::fs::chown(&dir, Some(uid), Some(uid))?;
        }
        // The first `root_calls` as root (making what the user then meets), the rest as
        // the user.
        let split = if self.uid.is_some() {
            self.root_calls.min(calls.len())
        } else {
            0
        };
        let mut answers = self.run_child(&dir, &calls[..split], None)?;
        answers.extend(self.run_child(&dir, &calls[split..], self.uid)?);
        let tree = tree(&dir);
        std::fs::remove_dir_all(&dir)?;
        Ok(Outcome { answers, tree })
    }

    /// Runs `calls` in `dir` in a child process, as `uid` (through setpriv) or root.
    fn run_child(&mut self, dir: &Path, calls: &[Call], uid: Option<u32>) -> Result<Vec<String>> {
        if calls.is_empty() {
            return Ok(Vec::new());
        }
        let calls_file = std::env::temp_dir().join(format!(
            "smlog-posix-{}-{}.json",
            std::process::id(),
            self.runs
        ));
        let mut text = String::new();
        for call in calls {
            text.push_str(&serde_json::to_string(call)?);
            text.push('\n');
        }
        std::fs::write(&calls_file, text)?;
        let mut command = match uid {
            Some(uid) => {
                let mut c = Command::new("setpriv");
                c.args([
                    format!("--reuid={uid}"),
                    format!("--regid={uid}"),
                    "--clear-groups".into(),
                    "--".into(),
                ]);
                c.arg(&self.exe);
                c
            }
            None => Command::new(&self.exe),
        };
        command
            .args(["posix", "run", "--root"])
            .arg(dir)
            .arg("--calls")
            .arg(&calls_file)
            .stdin(Stdio::null());
        let output = command.output()?;
        let _ = std::fs::remove_file(&calls_file);
        if !output.status.success() {
            return Err(format!(
                "the calls' process failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            )
            .into());
        }
        Ok(String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(str::to_string)
            .collect())
    }

    fn compare(&mut self, calls: &[Call]) -> Result<(Outcome, Outcome)> {
        let reference = self.reference.clone();
        let subject = self.subject.clone();
        Ok((
            self.run_side(&reference, calls, "ref")?,
            self.run_side(&subject, calls, "sub")?,
        ))
    }

    fn differs(&mut self, calls: &[Call]) -> Result<bool> {
        let (r, s) = self.compare(calls)?;
        Ok(difference(&r, &s).is_some())
    }

    /// The fewest calls that still differ, found by removing runs of calls (halves,
    /// quarters, ... single calls) while any difference remains.
    fn shrink(&mut self, mut calls: Vec<Call>, budget: Duration) -> Result<Vec<Call>> {
        let started = Instant::now();
        let mut chunk = calls.len().div_ceil(2).max(1);
        loop {
            let mut at = 0;
            while at < calls.len() {
                if started.elapsed() > budget {
                    return Ok(calls);
                }
                let mut fewer = calls.clone();
                fewer.drain(at..(at + chunk).min(calls.len()));
                if !fewer.is_empty() && self.differs(&fewer)? {
                    calls = fewer;
                } else {
                    at += chunk;
                }
            }
            if chunk == 1 {
                return Ok(calls);
            }
            chunk = chunk.div_ceil(2);
        }
    }
}

/// `smlog posix diff`.
pub fn diff(args: DiffArgs) -> Result<ExitCode> {
    for dir in [&args.reference, &args.subject] {
        if !dir.is_dir() {
            return Err(format!("{} is not a directory", dir.display()).into());
        }
    }
    if args.uid.is_some() && Command::new("setpriv").arg("--version").output().is_err() {
        return Err("--uid needs setpriv (util-linux)".into());
    }
    let mut driver = Driver {
        exe: std::env::current_exe()?,
        uid: args.uid,
        root_calls: args.root_calls,
        reference: args.reference.clone(),
        subject: args.subject.clone(),
        runs: 0,
    };
    let started = Instant::now();
    let mut errnos: BTreeMap<String, u64> = BTreeMap::new();
    let mut calls_run = 0u64;
    let mut differing = 0u64;
    let user = match args.uid {
        None => "root".to_string(),
        Some(u) if args.root_calls > 0 => {
            format!("root for {} calls, then uid {u}", args.root_calls)
        }
        Some(u) => format!("uid {u}"),
    };
    for seed in args.first_seed..args.first_seed + args.sequences {
        let calls = sequence(seed, args.calls);
        let (r, s) = driver.compare(&calls)?;
        calls_run += calls.len() as u64;
        if args.verbose {
            println!("seed {seed}:");
            for (i, call) in calls.iter().enumerate() {
                let (a, b) = (
                    r.answers.get(i).map_or("", String::as_str),
                    s.answers.get(i).map_or("", String::as_str),
                );
                println!("  {i:2} {call:?}: {a} | {b}");
            }
        }
        for answer in &r.answers {
            if let Some(errno) = answer.strip_prefix("err ") {
                *errnos.entry(errno.to_string()).or_default() += 1;
            }
        }
        let Some((what, want, got)) = difference(&r, &s) else {
            continue;
        };
        differing += 1;
        println!("seed {seed} ({user}): {what} differs\n  reference: {want}\n  subject:   {got}");
        let shrunk = driver.shrink(calls, Duration::from_secs(args.shrink_seconds))?;
        let (r, s) = driver.compare(&shrunk)?;
        println!("the fewest calls found that differ ({}):", shrunk.len());
        for (i, call) in shrunk.iter().enumerate() {
            let (a, b) = (
                r.answers.get(i).map_or("", String::as_str),
                s.answers.get(i).map_or("", String::as_str),
            );
            let mark = if agree(a, b) { " " } else { "*" };
            println!("  {mark} {i:2} {call:?}\n        reference: {a}\n        subject:   {b}");
        }
        if let Some((what, want, got)) = difference(&r, &s) {
            println!("  first difference, {what}:\n    reference: {want}\n    subject:   {got}");
        }
        println!(
            "replay: smlog posix diff --reference R --subject S --first-seed {seed} \
             --sequences 1 --calls {}{}",
            args.calls,
            args.uid.map_or(String::new(), |u| format!(
                " --uid {u} --root-calls {}",
                args.root_calls
            ))
        );
    }
    let errno_list: Vec<String> = errnos.iter().map(|(e, n)| format!("{e} {n}")).collect();
    println!(
        "posix diff ({user}): {} sequences, {calls_run} calls, {differing} differing, in {:.1} s; \
         errors the reference answered: {}",
        args.sequences,
        started.elapsed().as_secs_f64(),
        errno_list.join(", ")
    );
    Ok(if differing == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// A `smlog mount` child process.
struct MountChild {
    child: std::process::Child,
    mountpoint: PathBuf,
}

fn is_mounted(mountpoint: &Path) -> bool {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let want = mountpoint.to_string_lossy().replace(' ', "\\040");
    mounts
        .lines()
        .any(|line| line.split(' ').nth(1) == Some(want.as_str()))
}

impl MountChild {
    /// Starts `smlog mount ENGINE MOUNTPOINT --create -o allow_other,dev` and waits until
    /// it is mounted (its recovery included).
    fn start(exe: &Path, engine: &Path, mountpoint: &Path) -> Result<MountChild> {
        std::fs::create_dir_all(mountpoint)?;
        let child = Command::new(exe)
            .arg("mount")
            .arg(engine)
            .arg(mountpoint)
            .args(["--create", "-o", "allow_other,dev"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let mut mount = MountChild {
            child,
            mountpoint: mountpoint.to_path_buf(),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !is_mounted(mountpoint) {
            if let Some(status) = mount.child.try_wait()? {
                return Err(format!("smlog mount exited ({status}) before mounting").into());
            }
            if Instant::now() > deadline {
                return Err("smlog mount did not mount in 60 s".into());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(mount)
    }

    /// SIGKILL, then detach the dead mount.
    fn kill(mut self) -> Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        detach(&self.mountpoint)
    }

    /// A clean unmount (retried while busy).
    fn unmount(mut self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let status = Command::new("fusermount3")
                .arg("-u")
                .arg(&self.mountpoint)
                .stderr(Stdio::null())
                .status()?;
            if status.success() {
                break;
            }
            if Instant::now() > deadline {
                return Err("fusermount3 -u kept failing".into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let status = self.child.wait()?;
        if !status.success() {
            return Err(format!("smlog mount exited {status}").into());
        }
        Ok(())
    }
}

impl Drop for MountChild {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
            let _ = detach(&self.mountpoint);
        }
    }
}

fn detach(mountpoint: &Path) -> Result<()> {
    if !is_mounted(mountpoint) {
        return Ok(());
    }
    let lazy = Command::new("fusermount3")
        .args(["-u", "-z"])
        .arg(mountpoint)
        .stderr(Stdio::null())
        .status()?;
    if !lazy.success() {
        Command::new("umount").arg("-l").arg(mountpoint).status()?;
    }
    Ok(())
}

/// Whether an answer says the file system went away (the mount was killed).
fn gone(answer: &str) -> bool {
    answer == "err ENOTCONN" || answer == "err ECONNABORTED"
}

/// `smlog posix crash`.
pub fn crash(args: CrashArgs) -> Result<ExitCode> {
    if !args.reference.is_dir() {
        return Err(format!("{} is not a directory", args.reference.display()).into());
    }
    let exe = std::env::current_exe()?;
    let mut driver = Driver {
        exe: exe.clone(),
        uid: None,
        root_calls: 0,
        reference: args.reference.clone(),
        subject: args.mountpoint.clone(),
        runs: 0,
    };
    let mut rng = ChaCha8Rng::seed_from_u64(args.first_seed ^ 0x5eed);
    let started = Instant::now();
    let (mut failed, mut in_flight, mut prefixes) = (0u64, 0u64, Vec::new());
    for seed in args.first_seed..args.first_seed + args.rounds {
        // One call in ten an fsync: acknowledged prefixes to hold to.
        let mut calls = sequence(seed, args.calls);
        for call in calls.iter_mut() {
            if rng.gen_bool(0.1) {
                *call = Call::Fsync(rng.gen_range(0..SLOTS));
            }
        }
        let mount = MountChild::start(&exe, &args.engine, &args.mountpoint)?;
        let dir = args.mountpoint.join(format!("crash-{seed}"));
        std::fs::create_dir(&dir)?;
        // The sequence's directory is durable before its first call.
        std::fs::File::open(&args.mountpoint)?.sync_all()?;
        let calls_file =
            std::env::temp_dir().join(format!("smlog-posix-crash-{}.json", std::process::id()));
        let mut text = String::new();
        for call in &calls {
            text.push_str(&serde_json::to_string(call)?);
            text.push('\n');
        }
        std::fs::write(&calls_file, text)?;
        let mut runner = Command::new(&exe)
            .args(["posix", "run", "--root"])
            .arg(&dir)
            .arg("--calls")
            .arg(&calls_file)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        // The mount dies as soon as a random call has answered: the runner is then in the
        // next call, or the one after.
        let kill_after = rng.gen_range(0..calls.len());
        let stdout = runner.stdout.take().ok_or("the runner has no stdout")?;
        let mut answers = Vec::new();
        let mut mount = Some(mount);
        for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)) {
            answers.push(line?);
            if answers.len() > kill_after {
                if let Some(mount) = mount.take() {
                    mount.kill()?;
                }
            }
        }
        if let Some(mount) = mount.take() {
            mount.kill()?;
        }
        runner.wait()?;
        let _ = std::fs::remove_file(&calls_file);
        // Durable for certain: every call up to the last fsync that answered. Perhaps:
        // every call up to the one in flight when the mount died.
        let lo = calls
            .iter()
            .zip(&answers)
            .rposition(|(c, a)| matches!(c, Call::Fsync(_)) && a == "ok")
            .map_or(0, |i| i + 1);
        let hi = answers
            .iter()
            .position(|a| gone(a))
            .map_or(answers.len(), |i| i + 1);
        if hi <= calls.len() && answers.iter().any(|a| gone(a)) {
            in_flight += 1;
        }
        let mount = MountChild::start(&exe, &args.engine, &args.mountpoint)?;
        let got = tree(&dir);
        mount.unmount()?;
        let reference = args.reference.clone();
        let mut matched = None;
        for k in (lo..=hi.min(calls.len())).rev() {
            let want = driver.run_side(&reference, &calls[..k], "crash")?;
            let same = want.tree.len() == got.len()
                && want.tree.iter().zip(&got).all(|(a, b)| agree(a, b));
            if same {
                matched = Some(k);
                break;
            }
        }
        match matched {
            Some(k) => prefixes.push(format!("{lo}<={k}<={hi}")),
            None => {
                failed += 1;
                println!(
                    "seed {seed}: after the crash the tree is the reference's after no prefix \
                     of {lo} to {hi} calls"
                );
                let want = driver.run_side(&reference, &calls[..hi.min(calls.len())], "crash")?;
                for line in &got {
                    if !want.tree.contains(line) {
                        println!("  only after the crash: {line}");
                    }
                }
                for line in &want.tree {
                    if !got.contains(line) {
                        println!("  only in the reference after {hi} calls: {line}");
                    }
                }
                println!(
                    "replay: smlog posix crash --reference R --engine E --mountpoint M \
                     --first-seed {seed} --rounds 1 --calls {}",
                    args.calls
                );
            }
        }
    }
    println!(
        "posix crash: {} rounds of {} calls, {in_flight} killed mid-sequence, {failed} failed, \
         in {:.1} s; prefixes (acknowledged <= matched <= reached): {}",
        args.rounds,
        args.calls,
        started.elapsed().as_secs_f64(),
        prefixes.join(" ")
    );
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// `smlog posix`.
pub fn run(command: PosixCommand) -> Result<ExitCode> {
    match command {
        PosixCommand::Diff(args) => diff(args),
        PosixCommand::Crash(args) => crash(args),
        PosixCommand::Run(args) => run_calls(args),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_gives_the_same_sequence_and_calls_round_trip() {
        let a = sequence(7, 200);
        assert_eq!(a, sequence(7, 200));
        assert_ne!(a, sequence(8, 200));
        for call in &a {
            let text = serde_json::to_string(call).unwrap();
            assert_eq!(&serde_json::from_str::<Call>(&text).unwrap(), call);
        }
    }

    #[test]
    fn blocks_may_differ_by_the_extent_index_block_only() {
        let line = |blocks: u64| {
            format!("a file mode=644 nlink=1 uid=0 gid=0 size=9 blocks={blocks} rdev=0")
        };
        assert!(agree(&line(16), &line(16)));
        assert!(agree(&line(24), &line(16)));
        assert!(!agree(&line(16), &line(24)));
        assert!(agree(&line(32), &line(16)));
        assert!(!agree(&line(40), &line(16)));
        assert!(!agree(&line(20), &line(16)));
        let sgid =
            |mode: &str| format!("a file mode={mode} nlink=1 uid=0 gid=0 size=9 blocks=8 rdev=0");
        assert!(agree(&sgid("262"), &sgid("2262")));
        assert!(
            !agree(&sgid("272"), &sgid("2272")),
            "with group execute FUSE clears it too"
        );
        assert!(!agree(&sgid("2262"), &sgid("262")));
        let dir = "a dir mode=755 nlink=2 uid=0 gid=0 size=- blocks=- rdev=0";
        assert!(!agree(dir, &line(16)));
    }

    #[test]
    fn written_bytes_are_never_zero() {
        assert!(bytes_for(3, 10_000).iter().all(|&b| b != 0));
    }
}
