//! What a file server (FUSE, NFS, SMB) needs between its protocol and the engine:
//! POSIX attributes, times, and directory streams whose offsets survive concurrent changes.
//! `smlog mount` is built on this; another server can copy the pattern.
//!
//! Errors map with [`FsError::errno`]. Inode numbers are never reused, so a generation
//! number of 0 keeps handles stable across restarts.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::engine::Engine;
use crate::error::FsError;
use crate::io::Device;
use crate::store::{FileKind, Ino, Stat, Time};

/// Bytes per block that `stat` reports (`st_blksize`).
pub const STAT_BLOCK_SIZE_BYTES: u32 = 4096;

/// The `S_IFMT` bits of `kind`.
pub fn type_bits(kind: FileKind) -> u32 {
    match kind {
        FileKind::File => libc::S_IFREG,
        FileKind::Dir => libc::S_IFDIR,
        FileKind::Symlink => libc::S_IFLNK,
        FileKind::Fifo => libc::S_IFIFO,
        FileKind::Socket => libc::S_IFSOCK,
        FileKind::CharDevice { .. } => libc::S_IFCHR,
        FileKind::BlockDevice { .. } => libc::S_IFBLK,
    }
}

/// `st_mode`: type and permission bits.
pub fn st_mode(attr: &Stat) -> u32 {
    type_bits(attr.kind) | (attr.mode & 0o7777)
}

/// `st_blocks` (512-byte units), as ext4 counts them: a file's blocks held (written data,
/// cached or in the data file, and preallocated blocks); a directory one block; a symbolic
/// link none when its target is shorter than 60 bytes (ext4 keeps it in the inode), else
/// one block.
pub fn st_blocks(attr: &Stat) -> u64 {
    match attr.kind {
        FileKind::File => attr.blocks * 8,
        FileKind::Dir => 8,
        FileKind::Symlink if attr.size < 60 => 0,
        FileKind::Symlink => 8,
        // No block of their own, as on ext4.
        _ => 0,
    }
}

/// An engine time as a system time (times before the epoch are clamped to it).
pub fn system_time(time: Time) -> SystemTime {
    if time.secs < 0 {
        return UNIX_EPOCH;
    }
    UNIX_EPOCH + Duration::new(time.secs as u64, time.nanos.min(999_999_999))
}

/// A system time as an engine time.
pub fn time_of(time: SystemTime) -> Time {
    match time.duration_since(UNIX_EPOCH) {
        Ok(d) => Time {
            secs: d.as_secs() as i64,
            nanos: d.subsec_nanos(),
        },
        Err(before) => {
            let d = before.duration();
            let (secs, nanos) = if d.subsec_nanos() == 0 {
                (-(d.as_secs() as i64), 0)
            } else {
                (-(d.as_secs() as i64) - 1, 1_000_000_000 - d.subsec_nanos())
            };
            Time { secs, nanos }
        }
    }
}

/// Read permission, in the `rwx` bits a permission check asks for.
pub const MAY_READ: u32 = 4;
/// Write permission.
pub const MAY_WRITE: u32 = 2;
/// Execute permission (search, for a directory).
pub const MAY_EXEC: u32 = 1;

/// Who asks, as a file server that checks permissions itself (NFS) knows the caller: user,
/// group and supplementary groups, after the server's own mapping (root squash).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Supplementary group ids.
    pub groups: Vec<u32>,
}

impl Caller {
    /// The superuser.
    pub fn is_root(&self) -> bool {
        self.uid == 0
    }

    /// Whether the caller is in group `gid` (primary or supplementary).
    pub fn in_group(&self, gid: u32) -> bool {
        self.gid == gid || self.groups.contains(&gid)
    }
}

/// Whether `caller` may do all of `want` ([`MAY_READ`] | [`MAY_WRITE`] | [`MAY_EXEC`]) to
/// the inode `attr`, whose access ACL (`system.posix_acl_access`, if any) is `acl`, as
/// Linux's `generic_permission` decides: the owner gets the owner bits; anyone else the
/// ACL's answer, or the group bits when in the owning group, else the other bits. Root may
/// read and write anything, and execute what any execute bit (or being a directory)
/// allows. An ACL that does not parse is ignored (the bits decide).
pub fn permitted(attr: &Stat, acl: Option<&[u8]>, caller: &Caller, want: u32) -> bool {
    let want = want & 7;
    if caller.is_root() {
        return want & MAY_EXEC == 0 || attr.kind == FileKind::Dir || attr.mode & 0o111 != 0;
    }
    let bits = if caller.uid == attr.uid {
        attr.mode >> 6 & 7
    } else if let Some(acl) = acl
        .filter(|_| attr.mode & 0o070 != 0)
        .and_then(|bytes| crate::txn::machines::acl::Acl::parse(bytes).ok())
    {
        return acl.permits(caller.uid, attr.gid, |g| caller.in_group(g), want);
    } else if caller.in_group(attr.gid) {
        attr.mode >> 3 & 7
    } else {
        attr.mode & 7
    };
    bits & want == want
}

/// One entry of a directory stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamEntry {
    /// The offset to continue after this entry (what `telldir` returns after it).
    pub offset: u64,
    /// The inode.
    pub ino: Ino,
    /// What it is.
    pub kind: FileKind,
    /// Its name (`.` and `..` included).
    pub name: Vec<u8>,
}

/// An open directory: maps stream offsets to the engine's name cursors. Offsets 1 and 2
/// follow `.` and `..`; offset `3 + i` follows the `i`-th name the stream has returned,
/// and reading from it continues after that name in name order. So an entry added or
/// removed while the directory is read never makes the stream skip or repeat another
/// entry (POSIX leaves only the changed entry itself unspecified), and an offset stays
/// valid for as long as the stream is open, whatever happens to the directory.
#[derive(Debug)]
pub struct DirStream {
    dir: Ino,
    names: Vec<Vec<u8>>,
    offsets: HashMap<Vec<u8>, u64>,
}

impl DirStream {
    /// A stream over directory `dir`.
    pub fn new(dir: Ino) -> DirStream {
        DirStream {
            dir,
            names: Vec::new(),
            offsets: HashMap::new(),
        }
    }

    /// Up to `limit` entries from `offset` (0: the start).
    pub fn read<D: Device>(
        &mut self,
        engine: &Engine<D>,
        offset: u64,
        limit: usize,
    ) -> Result<Vec<StreamEntry>, FsError> {
        let mut out = Vec::new();
        if offset == 0 {
            out.push(StreamEntry {
                offset: 1,
                ino: self.dir,
                kind: FileKind::Dir,
                name: b".".to_vec(),
            });
        }
        if offset <= 1 {
            let parent = engine.parent(self.dir)?;
            out.push(StreamEntry {
                offset: 2,
                ino: parent,
                kind: FileKind::Dir,
                name: b"..".to_vec(),
            });
        }
        let after = match offset {
            0..=2 => None,
            n => {
                let index = usize::try_from(n - 3).map_err(|_| FsError::Invalid("offset"))?;
                let name = self
                    .names
                    .get(index)
                    .ok_or(FsError::Invalid("not an offset of this directory stream"))?;
                Some(name.clone())
            }
        };
        let want = limit.saturating_sub(out.len());
        if want == 0 {
            out.truncate(limit);
            return Ok(out);
        }
        for entry in engine.readdir(self.dir, after.as_deref(), want)? {
            let offset = match self.offsets.get(&entry.name) {
                Some(&offset) => offset,
                None => {
                    self.names.push(entry.name.clone());
                    let offset = 2 + self.names.len() as u64;
                    self.offsets.insert(entry.name.clone(), offset);
                    offset
                }
            };
            out.push(StreamEntry {
                offset,
                ino: entry.ino,
                kind: entry.kind,
                name: entry.name,
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_round_trip_on_both_sides_of_the_epoch() {
        for time in [
            Time { secs: 0, nanos: 0 },
            Time {
                secs: 1_700_000_000,
                nanos: 123_456_789,
            },
        ] {
            assert_eq!(time_of(system_time(time)), time);
        }
        let before = UNIX_EPOCH - Duration::new(5, 250_000_000);
        assert_eq!(
            time_of(before),
            Time {
                secs: -6,
                nanos: 750_000_000
            }
        );
        assert_eq!(system_time(Time { secs: -6, nanos: 0 }), UNIX_EPOCH);
    }

    #[test]
    fn permission_is_decided_as_linux_decides_it() {
        let attr = |kind, mode| Stat {
            ino: Ino(5),
            kind,
            mode,
            uid: 1000,
            gid: 100,
            size: 0,
            nlink: 1,
            atime: Time::default(),
            mtime: Time::default(),
            ctime: Time::default(),
            blocks: 0,
        };
        let caller = |uid, gid, groups: &[u32]| Caller {
            uid,
            gid,
            groups: groups.to_vec(),
        };
        let file = attr(FileKind::File, 0o640);
        let owner = caller(1000, 1, &[]);
        let member = caller(2000, 1, &[100]);
        let stranger = caller(2000, 1, &[]);
        let root = caller(0, 0, &[]);
        assert!(permitted(&file, None, &owner, MAY_READ | MAY_WRITE));
        assert!(!permitted(&file, None, &owner, MAY_EXEC));
        assert!(permitted(&file, None, &member, MAY_READ));
        assert!(!permitted(&file, None, &member, MAY_WRITE));
        assert!(!permitted(&file, None, &stranger, MAY_READ));
        // Root reads and writes anything; executes only what some x bit allows.
        assert!(permitted(&file, None, &root, MAY_READ | MAY_WRITE));
        assert!(!permitted(&file, None, &root, MAY_EXEC));
        assert!(permitted(
            &attr(FileKind::File, 0o001),
            None,
            &root,
            MAY_EXEC
        ));
        assert!(permitted(&attr(FileKind::Dir, 0), None, &root, MAY_EXEC));
        // An owner gets the owner bits even where the group or other bits give more.
        let odd = attr(FileKind::File, 0o077);
        assert!(!permitted(&odd, None, &owner, MAY_READ));
        // A named user in an ACL.
        let mut acl = 2u32.to_le_bytes().to_vec();
        for (tag, perm, id) in [
            (0x01u16, 6u16, u32::MAX),
            (0x02, 6, 2000),
            (0x04, 4, u32::MAX),
            (0x10, 6, u32::MAX),
            (0x20, 0, u32::MAX),
        ] {
            acl.extend_from_slice(&tag.to_le_bytes());
            acl.extend_from_slice(&perm.to_le_bytes());
            acl.extend_from_slice(&id.to_le_bytes());
        }
        let with_acl = attr(FileKind::File, 0o660);
        assert!(permitted(&with_acl, Some(&acl), &stranger, MAY_WRITE));
        assert!(!permitted(&with_acl, None, &stranger, MAY_WRITE));
    }

    #[test]
    fn modes_carry_the_type_bits() {
        let attr = Stat {
            ino: Ino(2),
            kind: FileKind::Symlink,
            mode: 0o4777 | 0o170000,
            uid: 0,
            gid: 0,
            size: 3,
            nlink: 1,
            atime: Time::default(),
            mtime: Time::default(),
            ctime: Time::default(),
            blocks: 0,
        };
        assert_eq!(st_mode(&attr), libc::S_IFLNK | 0o4777);
        // A sparse file: the blocks it holds, not its size.
        let file = Stat {
            kind: FileKind::File,
            size: 1 << 20,
            blocks: 2,
            ..attr
        };
        assert_eq!(st_blocks(&file), 16);
        // ext4 keeps a target shorter than 60 bytes in the inode.
        assert_eq!(st_blocks(&attr), 0);
        let long = Stat { size: 60, ..attr };
        assert_eq!(st_blocks(&long), 8);
    }
}
