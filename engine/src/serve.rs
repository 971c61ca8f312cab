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

/// The setuid and setgid bits of `mode` that a change of a file's contents (a write, a
/// truncation, an fallocate) by someone without `CAP_FSETID` revokes, or a chown by anyone
/// (`in_group` true for root there): setuid; setgid when group execute is set too, or when
/// the one who changes it is outside the file's group (`in_group` false; Linux's
/// `setattr_should_drop_sgid`).
pub fn privileges_to_drop(mode: u32, in_group: bool) -> u32 {
    let mut drop = mode & libc::S_ISUID;
    if mode & libc::S_ISGID != 0 && (mode & libc::S_IXGRP != 0 || !in_group) {
        drop |= libc::S_ISGID;
    }
    drop
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

/// The key of the hash that orders listings ([`DirStream`]): offsets made under one key mean
/// the same on every stream of a directory, so a server keeps one key for as long as its
/// clients may hold offsets (a mount: its life; NFS: the volume's, since cookies outlive a
/// restart and move between a cluster's nodes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListingKey(pub [u8; 16]);

impl ListingKey {
    /// The key of a volume whose id is `id` (the same on every server of it).
    pub fn of_volume(id: u64) -> ListingKey {
        let mut key = [0u8; 16];
        key[..8].copy_from_slice(&id.to_le_bytes());
        key[8..].copy_from_slice(b"smlogdir");
        ListingKey(key)
    }

    /// The position of `name` in listings: its hash, shifted to leave 8 bits for the rank of
    /// names whose hashes are equal, and never below [`FIRST_NAME_OFFSET`].
    fn hash(&self, name: &[u8]) -> u64 {
        use std::hash::Hasher;
        let mut hasher = siphasher::sip::SipHasher13::new_with_key(&self.0);
        hasher.write(name);
        ((hasher.finish() >> (64 - HASH_BITS)) + 1) << RANK_BITS
    }
}

/// Bits of a name's hash in its offset.
const HASH_BITS: u32 = 54;
/// Bits below them: the rank among names of one directory with equal hashes.
const RANK_BITS: u32 = 8;
/// The lowest offset a name can have (0 is the start, 1 and 2 follow `.` and `..`).
pub const FIRST_NAME_OFFSET: u64 = 1 << RANK_BITS;
/// The highest.
const LAST_NAME_OFFSET: u64 = ((1 << HASH_BITS) << RANK_BITS) | ((1 << RANK_BITS) - 1);

/// An open directory. Offsets 1 and 2 follow `.` and `..`; a name's offset is a keyed hash of
/// it ([`ListingKey`]), and a stream lists names in offset order. So an offset means the same
/// on every stream of the directory under one key: a reader may go on with another stream
/// (a kernel's cached listing dropped under it, an NFS client moved to another server) and
/// neither skips nor repeats an entry that stayed. A stream keeps the directory's names
/// from its last read at offset 0, and takes them again whenever the directory changed
/// since (so between changes a read looks nothing up): an entry removed meanwhile is not
/// returned, one added may be (POSIX leaves both unspecified), one replaced by a rename is
/// returned as what it names now. (Listing a
/// huge directory while it changes takes its names again at every read.) Names whose hashes are equal (54 bits) are ranked by name; a pair of them, one
/// removed between two passes, can shift the other's offset (a directory needs about 2^27
/// names before two of them share a hash).
#[derive(Debug)]
pub struct DirStream {
    dir: Ino,
    key: ListingKey,
    /// The names, in offset order, and the directory's stamp when they were taken (`None`
    /// before the first read).
    names: Option<(Stamp, Vec<Listed>)>,
}

/// What moves when a directory's entries change: its times, size and links.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    mtime: Time,
    ctime: Time,
    size: u64,
    nlink: u32,
}

impl Stamp {
    fn of(attr: &Stat) -> Stamp {
        Stamp {
            mtime: attr.mtime,
            ctime: attr.ctime,
            size: attr.size,
            nlink: attr.nlink,
        }
    }
}

#[derive(Debug)]
struct Listed {
    offset: u64,
    name: Vec<u8>,
    ino: Ino,
    kind: FileKind,
}

impl DirStream {
    /// A stream over directory `dir` whose offsets are made under `key`.
    pub fn new(dir: Ino, key: ListingKey) -> DirStream {
        DirStream {
            dir,
            key,
            names: None,
        }
    }

    /// How many names the stream holds (its pass's).
    pub fn names_held(&self) -> usize {
        self.names.as_ref().map_or(0, |(_, names)| names.len())
    }

    /// Up to `limit` entries after `offset` (0: the start). An offset that no name can have
    /// is [`FsError::Invalid`].
    pub fn read<D: Device>(
        &mut self,
        engine: &Engine<D>,
        offset: u64,
        limit: usize,
    ) -> Result<Vec<StreamEntry>, FsError> {
        if (3..FIRST_NAME_OFFSET).contains(&offset) || offset > LAST_NAME_OFFSET {
            return Err(FsError::Invalid("not an offset of a directory stream"));
        }
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
        // The names are taken again at a pass's start and whenever the directory changed
        // since they were taken (its times, size or links moved): a stream shared by
        // readers, or one a reader moves to, never answers from a list older than its
        // reader's pass. The stamp is read first, so a change racing the read of the
        // names is seen at the next read.
        let stamp = Stamp::of(&engine.getattr(self.dir)?);
        let stale = self.names.as_ref().is_none_or(|(taken, _)| *taken != stamp);
        if offset == 0 || stale {
            self.names = Some((stamp, self.take_names(engine)?));
        }
        let names = self.names.as_ref().map_or(&[][..], |(_, names)| &names[..]);
        let first = names.partition_point(|listed| listed.offset <= offset);
        // The stamp has not moved since the names were taken: they are the directory's
        // (no lookup per name).
        for listed in names[first..].iter().take(limit.saturating_sub(out.len())) {
            out.push(StreamEntry {
                offset: listed.offset,
                ino: listed.ino,
                kind: listed.kind,
                name: listed.name.clone(),
            });
        }
        out.truncate(limit);
        Ok(out)
    }

    /// The directory's names, with their offsets, in offset order.
    fn take_names<D: Device>(&self, engine: &Engine<D>) -> Result<Vec<Listed>, FsError> {
        let mut names: Vec<Listed> = engine
            .readdir(self.dir, None, usize::MAX)?
            .into_iter()
            .map(|entry| Listed {
                offset: self.key.hash(&entry.name),
                name: entry.name,
                ino: entry.ino,
                kind: entry.kind,
            })
            .collect();
        rank_equal_hashes(&mut names)?;
        Ok(names)
    }
}

/// One [`DirStream`] per directory, for a server whose reads carry no handle of their own
/// (NFS READDIR; a mount the kernel sends no OPENDIR): every reader of a directory shares its
/// stream, which is sound because offsets mean the same on every stream. At most `dirs_max`
/// streams and about `names_max` names are kept; past either, the least recently read
/// stream is dropped, and its next read takes the names again.
#[derive(Debug)]
pub struct DirStreams {
    key: ListingKey,
    by_dir: HashMap<Ino, (u64, DirStream)>,
    clock: u64,
    dirs_max: usize,
    names_max: usize,
}

impl DirStreams {
    /// No streams yet; each made under `key`.
    pub fn new(key: ListingKey, dirs_max: usize, names_max: usize) -> DirStreams {
        DirStreams {
            key,
            by_dir: HashMap::new(),
            clock: 0,
            dirs_max: dirs_max.max(1),
            names_max,
        }
    }

    /// Up to `limit` entries of directory `dir` after `offset` ([`DirStream::read`]).
    pub fn read<D: Device>(
        &mut self,
        engine: &Engine<D>,
        dir: Ino,
        offset: u64,
        limit: usize,
    ) -> Result<Vec<StreamEntry>, FsError> {
        let read = self.stream(dir).read(engine, offset, limit);
        self.trim(dir);
        read
    }

    /// Directory `dir`'s stream, made if there is none.
    pub fn stream(&mut self, dir: Ino) -> &mut DirStream {
        self.clock += 1;
        let clock = self.clock;
        if !self.by_dir.contains_key(&dir) && self.by_dir.len() >= self.dirs_max {
            self.drop_oldest(dir);
        }
        let key = self.key;
        let (used, stream) = self
            .by_dir
            .entry(dir)
            .or_insert_with(|| (clock, DirStream::new(dir, key)));
        *used = clock;
        stream
    }

    /// Drops the least recently read streams (never `keep`'s) while more than `names_max`
    /// names are held.
    pub fn trim(&mut self, keep: Ino) {
        let mut held: usize = self.by_dir.values().map(|(_, s)| s.names_held()).sum();
        while held > self.names_max {
            match self.drop_oldest(keep) {
                Some(stream) => held -= stream.names_held(),
                None => return,
            }
        }
    }

    fn drop_oldest(&mut self, keep: Ino) -> Option<DirStream> {
        let oldest = self
            .by_dir
            .iter()
            .filter(|(ino, _)| **ino != keep)
            .min_by_key(|(_, (used, _))| *used)
            .map(|(ino, _)| *ino)?;
        self.by_dir.remove(&oldest).map(|(_, stream)| stream)
    }
}

/// Sorts `names` (each offset a bare hash) by offset, and ranks names whose hashes are equal
/// by name in the offset's low bits.
fn rank_equal_hashes(names: &mut [Listed]) -> Result<(), FsError> {
    names.sort_unstable_by(|a, b| (a.offset, &a.name).cmp(&(b.offset, &b.name)));
    let mut rank = 0;
    for i in 1..names.len() {
        let hash = names[i].offset;
        if hash == names[i - 1].offset & !(FIRST_NAME_OFFSET - 1) {
            rank += 1;
            if rank >= FIRST_NAME_OFFSET {
                return Err(FsError::Invalid(
                    "more than 256 names of one directory share a listing hash",
                ));
            }
            names[i].offset = hash | rank;
        } else {
            rank = 0;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listed(offset: u64, name: &str) -> Listed {
        Listed {
            offset,
            name: name.as_bytes().to_vec(),
            ino: Ino(9),
            kind: FileKind::File,
        }
    }

    #[test]
    fn names_with_equal_hashes_are_ranked_by_name() {
        let h = 5 * FIRST_NAME_OFFSET;
        let mut names = vec![
            listed(h, "c"),
            listed(2 * h, "x"),
            listed(h, "a"),
            listed(h, "b"),
            listed(FIRST_NAME_OFFSET, "z"),
        ];
        rank_equal_hashes(&mut names).unwrap();
        let got: Vec<(u64, &[u8])> = names.iter().map(|l| (l.offset, &l.name[..])).collect();
        let want: Vec<(u64, &[u8])> = vec![
            (FIRST_NAME_OFFSET, b"z"),
            (h, b"a"),
            (h + 1, b"b"),
            (h + 2, b"c"),
            (2 * h, b"x"),
        ];
        assert_eq!(got, want);
        // 256 names of one hash fit; the 257th is refused rather than given a wrong offset.
        let mut many: Vec<Listed> = (0..256).map(|i| listed(h, &format!("{i:03}"))).collect();
        rank_equal_hashes(&mut many).unwrap();
        assert_eq!(many.last().unwrap().offset, h + 255);
        let mut too_many: Vec<Listed> = (0..257).map(|i| listed(h, &format!("{i:03}"))).collect();
        assert!(matches!(
            rank_equal_hashes(&mut too_many),
            Err(FsError::Invalid(_))
        ));
    }

    #[test]
    fn name_offsets_stay_in_their_range_and_depend_on_the_key() {
        let a = ListingKey::of_volume(1);
        let b = ListingKey::of_volume(2);
        let mut differ = 0;
        for i in 0..1000 {
            let name = format!("name{i}");
            let offset = a.hash(name.as_bytes());
            assert!((FIRST_NAME_OFFSET..=LAST_NAME_OFFSET).contains(&offset));
            assert_eq!(offset % FIRST_NAME_OFFSET, 0);
            assert!(offset <= i64::MAX as u64, "the kernel's offsets are signed");
            differ += usize::from(offset != b.hash(name.as_bytes()));
        }
        assert!(differ > 990);
        // Pinned: a volume's cookies must mean the same after an upgrade.
        assert_eq!(a.hash(b"file"), 2_781_825_195_594_955_008);
    }

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
