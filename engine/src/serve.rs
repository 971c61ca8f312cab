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
