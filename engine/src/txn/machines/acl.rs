//! POSIX ACLs (POSIX.1e draft, as Linux stores them): the extended attributes
//! `system.posix_acl_access` and `system.posix_acl_default` in Linux's xattr encoding, and
//! what they do to an inode's mode: a set access ACL sets the permission bits, a chmod
//! rewrites the ACL's owner, mask (or group) and other entries, and a new inode in a
//! directory with a default ACL inherits it instead of taking the umask.
//!
//! The encoding (little endian): `version u32` (2), then entries of `tag u16, perm u16,
//! id u32`, sorted by tag then id. Tags: 0x01 owner, 0x02 a named user, 0x04 the owning
//! group, 0x08 a named group, 0x10 the mask, 0x20 other; perm is rwx in its low 3 bits;
//! the id only names users and groups (else `u32::MAX`).

use crate::error::FsError;

/// The access ACL's attribute name.
pub const ACL_ACCESS: &[u8] = b"system.posix_acl_access";
/// The default ACL's attribute name (directories only).
pub const ACL_DEFAULT: &[u8] = b"system.posix_acl_default";

const VERSION: u32 = 2;
const USER_OBJ: u16 = 0x01;
const USER: u16 = 0x02;
const GROUP_OBJ: u16 = 0x04;
const GROUP: u16 = 0x08;
const MASK: u16 = 0x10;
const OTHER: u16 = 0x20;
/// The most entries an ACL holds (ext4 takes about 500 in a 4 KiB block).
const ENTRIES_MAX: usize = 1024;
/// The id of an entry that names nobody.
const UNDEFINED_ID: u32 = u32::MAX;

/// One entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Entry {
    tag: u16,
    perm: u16,
    id: u32,
}

/// A parsed, valid ACL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Acl(Vec<Entry>);

impl Acl {
    /// Parses and checks an ACL as the kernel's `posix_acl_valid` does: one owner, owning
    /// group and other entry, a mask when any user or group is named, named entries
    /// unique and in order. Anything else is EINVAL.
    pub fn parse(bytes: &[u8]) -> Result<Acl, FsError> {
        let bad = |why| Err(FsError::Invalid(why));
        if bytes.len() < 4 || !(bytes.len() - 4).is_multiple_of(8) {
            return bad("an ACL of a length no ACL has");
        }
        if u32::from_le_bytes(bytes[..4].try_into().expect("4 bytes")) != VERSION {
            return bad("an ACL of another version");
        }
        let count = (bytes.len() - 4) / 8;
        if count > ENTRIES_MAX {
            return bad("an ACL of more than 1024 entries");
        }
        let entries: Vec<Entry> = bytes[4..]
            .chunks_exact(8)
            .map(|e| Entry {
                tag: u16::from_le_bytes([e[0], e[1]]),
                perm: u16::from_le_bytes([e[2], e[3]]),
                id: u32::from_le_bytes([e[4], e[5], e[6], e[7]]),
            })
            .collect();
        let (mut owner, mut group, mut other, mut mask, mut named) = (0, 0, 0, 0, 0);
        let mut last: Option<(u16, u32)> = None;
        for e in &entries {
            if e.perm & !7 != 0 {
                return bad("an ACL entry with permissions past rwx");
            }
            let key = match e.tag {
                USER_OBJ | GROUP_OBJ | MASK | OTHER => (e.tag, 0),
                USER | GROUP => (e.tag, e.id),
                _ => return bad("an ACL entry of an unknown tag"),
            };
            if last.is_some_and(|l| l >= key) {
                return bad("ACL entries out of order or repeated");
            }
            last = Some(key);
            match e.tag {
                USER_OBJ => owner += 1,
                GROUP_OBJ => group += 1,
                OTHER => other += 1,
                MASK => mask += 1,
                _ => named += 1,
            }
        }
        if owner != 1 || group != 1 || other != 1 || mask > 1 || (named > 0 && mask == 0) {
            return bad("an ACL without its owner, group and other entries, or a mask");
        }
        Ok(Acl(entries))
    }

    /// Linux's encoding of the ACL.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = VERSION.to_le_bytes().to_vec();
        for e in &self.0 {
            let id = if matches!(e.tag, USER | GROUP) {
                e.id
            } else {
                UNDEFINED_ID
            };
            out.extend_from_slice(&e.tag.to_le_bytes());
            out.extend_from_slice(&e.perm.to_le_bytes());
            out.extend_from_slice(&id.to_le_bytes());
        }
        out
    }

    /// Whether the ACL says no more than the permission bits (owner, group, other only).
    pub fn is_minimal(&self) -> bool {
        self.0.len() == 3
    }

    fn perm(&self, tag: u16) -> Option<u32> {
        self.0
            .iter()
            .find(|e| e.tag == tag)
            .map(|e| u32::from(e.perm))
    }

    /// `mode` with its permission bits from the ACL: owner, mask (or owning group),
    /// other (as `posix_acl_equiv_mode`).
    pub fn mode(&self, mode: u32) -> u32 {
        let owner = self.perm(USER_OBJ).unwrap_or(0);
        let group = self.perm(MASK).or(self.perm(GROUP_OBJ)).unwrap_or(0);
        let other = self.perm(OTHER).unwrap_or(0);
        (mode & !0o777) | owner << 6 | group << 3 | other
    }

    /// The ACL after a chmod to `mode` (as `posix_acl_chmod`): owner, mask (or owning
    /// group) and other take the new bits.
    pub fn chmod(&self, mode: u32) -> Acl {
        let has_mask = self.perm(MASK).is_some();
        let entries = self
            .0
            .iter()
            .map(|e| {
                let perm = match e.tag {
                    USER_OBJ => Some(mode >> 6 & 7),
                    MASK => Some(mode >> 3 & 7),
                    GROUP_OBJ if !has_mask => Some(mode >> 3 & 7),
                    OTHER => Some(mode & 7),
                    _ => None,
                };
                Entry {
                    perm: perm.map_or(e.perm, |p| p as u16),
                    ..*e
                }
            })
            .collect();
        Acl(entries)
    }

    /// What a new inode asking for `mode` inherits from this default ACL (as
    /// `posix_acl_create`): its mode, and its access ACL unless the inherited one says no
    /// more than the mode.
    pub fn inherit(&self, mode: u32) -> (u32, Option<Acl>) {
        let mut bits = mode & 0o777;
        let mut entries = self.0.clone();
        let mut not_minimal = false;
        for e in entries.iter_mut() {
            match e.tag {
                USER_OBJ => {
                    e.perm &= (bits >> 6 & 7) as u16;
                    bits &= u32::from(e.perm) << 6 | !0o700;
                }
                USER | GROUP => not_minimal = true,
                MASK => not_minimal = true,
                OTHER => {
                    e.perm &= (bits & 7) as u16;
                    bits &= u32::from(e.perm) | !0o007;
                }
                _ => {}
            }
        }
        let group_tag = if entries.iter().any(|e| e.tag == MASK) {
            MASK
        } else {
            GROUP_OBJ
        };
        if let Some(e) = entries.iter_mut().find(|e| e.tag == group_tag) {
            e.perm &= (bits >> 3 & 7) as u16;
            bits &= u32::from(e.perm) << 3 | !0o070;
        }
        let mode = (mode & !0o777) | (bits & 0o777);
        (mode, not_minimal.then_some(Acl(entries)))
    }
}

impl Acl {
    /// Whether the ACL grants all of `want` (rwx bits) to a caller who does not own the
    /// inode, as Linux's `posix_acl_permission` decides: a named user entry for `uid`
    /// (limited by the mask); else every group entry (owning group, named groups) the
    /// caller is in — granted when one of them gives all of `want` (limited by the mask),
    /// refused when the caller is in one and none does; else the other entry.
    pub fn permits(
        &self,
        uid: u32,
        owner_gid: u32,
        in_group: impl Fn(u32) -> bool,
        want: u32,
    ) -> bool {
        let mask = self.perm(MASK).unwrap_or(7);
        let grants = |perm: u16, masked: bool| {
            let perm = u32::from(perm) & if masked { mask } else { 7 };
            perm & want == want
        };
        if let Some(e) = self.0.iter().find(|e| e.tag == USER && e.id == uid) {
            return grants(e.perm, true);
        }
        let mut in_any = false;
        for e in &self.0 {
            let member = match e.tag {
                GROUP_OBJ => in_group(owner_gid),
                GROUP => in_group(e.id),
                _ => false,
            };
            if member {
                in_any = true;
                // The mask limits the owning group only when the ACL has named entries.
                if grants(e.perm, self.perm(MASK).is_some()) {
                    return true;
                }
            }
        }
        if in_any {
            return false;
        }
        self.perm(OTHER).is_some_and(|p| p & want == want)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acl(entries: &[(u16, u16, u32)]) -> Vec<u8> {
        Acl(entries
            .iter()
            .map(|&(tag, perm, id)| Entry { tag, perm, id })
            .collect())
        .encode()
    }

    #[test]
    fn parses_what_setfacl_writes_and_refuses_the_rest() {
        let ok = acl(&[
            (USER_OBJ, 6, 0),
            (USER, 4, 1000),
            (GROUP_OBJ, 4, 0),
            (MASK, 6, 0),
            (OTHER, 0, 0),
        ]);
        let parsed = Acl::parse(&ok).unwrap();
        assert_eq!(parsed.encode(), ok);
        assert!(!parsed.is_minimal());
        assert_eq!(parsed.mode(0o100000), 0o100660);
        // Named without a mask, two owners, out of order, a bad perm, a short tail.
        for bad in [
            acl(&[
                (USER_OBJ, 6, 0),
                (USER, 4, 1),
                (GROUP_OBJ, 4, 0),
                (OTHER, 0, 0),
            ]),
            acl(&[
                (USER_OBJ, 6, 0),
                (USER_OBJ, 6, 0),
                (GROUP_OBJ, 4, 0),
                (OTHER, 0, 0),
            ]),
            acl(&[(GROUP_OBJ, 4, 0), (USER_OBJ, 6, 0), (OTHER, 0, 0)]),
            acl(&[(USER_OBJ, 8, 0), (GROUP_OBJ, 4, 0), (OTHER, 0, 0)]),
            ok[..ok.len() - 1].to_vec(),
            vec![1, 0, 0, 0],
        ] {
            assert_eq!(Acl::parse(&bad).unwrap_err().errno(), libc::EINVAL);
        }
    }

    #[test]
    fn permission_follows_the_named_user_then_the_groups_then_other() {
        let acl = Acl::parse(&acl(&[
            (USER_OBJ, 7, 0),
            (USER, 7, 1000),
            (USER, 0, 1001),
            (GROUP_OBJ, 4, 0),
            (GROUP, 6, 50),
            (MASK, 6, 0),
            (OTHER, 1, 0),
        ]))
        .unwrap();
        let none = |_| false;
        // Named user 1000: rwx limited by the mask to rw.
        assert!(acl.permits(1000, 10, none, 6));
        assert!(!acl.permits(1000, 10, none, 1));
        // Named user 1001 gets nothing, even what other has.
        assert!(!acl.permits(1001, 10, none, 1));
        // In the owning group: r; in group 50: rw; in both: rw (one entry grants).
        assert!(acl.permits(2000, 10, |g| g == 10, 4));
        assert!(!acl.permits(2000, 10, |g| g == 10, 2));
        assert!(acl.permits(2000, 10, |g| g == 10 || g == 50, 6));
        // A group member never falls through to other (x).
        assert!(!acl.permits(2000, 10, |g| g == 10, 1));
        assert!(acl.permits(2000, 10, none, 1));
        assert!(!acl.permits(2000, 10, none, 4));
    }

    #[test]
    fn chmod_and_inheritance_follow_linux() {
        let default = Acl::parse(&acl(&[
            (USER_OBJ, 7, 0),
            (USER, 5, 1000),
            (GROUP_OBJ, 5, 0),
            (MASK, 7, 0),
            (OTHER, 5, 0),
        ]))
        .unwrap();
        // A file asking 0o666 in that directory: 0o664 (mask 6), the ACL inherited.
        let (mode, access) = default.inherit(0o100666);
        assert_eq!(mode, 0o100664);
        let access = access.unwrap();
        assert_eq!(access.mode(0o100000), 0o100664);
        let chmodded = access.chmod(0o600);
        assert_eq!(chmodded.mode(0), 0o600);
        assert_eq!(
            chmodded.perm(GROUP_OBJ),
            Some(5),
            "the group entry stays under a mask"
        );
        // A minimal default ACL gives only a mode.
        let minimal =
            Acl::parse(&acl(&[(USER_OBJ, 7, 0), (GROUP_OBJ, 5, 0), (OTHER, 0, 0)])).unwrap();
        assert_eq!(minimal.inherit(0o40777), (0o40750, None));
    }
}
