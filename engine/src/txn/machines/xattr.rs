//! Set or remove an extended attribute.

use serde::{Deserialize, Serialize};

use crate::constants::{XATTRS_BYTES_MAX, XATTR_NAME_BYTES_MAX, XATTR_VALUE_BYTES_MAX};
use crate::error::FsError;
use crate::store::{FileKind, FsMeta, Ino, Op, Time, TxnResult};

use super::{step, Edits, FileTxn};
use crate::txn::Transition;

use super::acl::{Acl, ACL_ACCESS, ACL_DEFAULT};

/// The namespaces stored; of `system.`, only the two POSIX ACLs.
const NAMESPACES: [&[u8]; 3] = [b"user.", b"trusted.", b"security."];

/// How a set treats the name's presence (`XATTR_CREATE`, `XATTR_REPLACE`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct XattrFlags {
    /// Fail with EEXIST if the attribute exists.
    pub create: bool,
    /// Fail with ENODATA if it does not.
    pub replace: bool,
}

/// Checks an extended attribute's name: 1 to 255 bytes, in a namespace stored.
pub fn check_xattr_name(name: &[u8]) -> Result<(), FsError> {
    if name.is_empty() || name.len() > XATTR_NAME_BYTES_MAX {
        return Err(FsError::XattrNameRange {
            len_bytes: name.len(),
        });
    }
    // A namespace with nothing after it is invalid (EINVAL, as Linux answers).
    if NAMESPACES.contains(&name) {
        return Err(FsError::Invalid(
            "an extended attribute name that is only a namespace",
        ));
    }
    if !NAMESPACES.iter().any(|ns| name.starts_with(ns))
        && name != ACL_ACCESS
        && name != ACL_DEFAULT
    {
        return Err(FsError::XattrNotSupported);
    }
    Ok(())
}

/// The room an inode's attributes take, as bounded by [`XATTRS_BYTES_MAX`]: each name and
/// value and 16 bytes of its own.
fn room<'a>(attrs: impl Iterator<Item = (&'a Vec<u8>, &'a Vec<u8>)>) -> usize {
    attrs
        .map(|(name, value)| 16 + name.len() + value.len())
        .sum()
}

/// Set (`value` given) or remove (`None`) extended attribute `name` of `ino`: one step,
/// which also sets the inode's ctime.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetXattr {
    /// The inode.
    pub ino: Ino,
    /// The attribute's full name.
    pub name: Vec<u8>,
    /// Its new value, or `None`: remove it.
    pub value: Option<Vec<u8>>,
    /// `XATTR_CREATE` / `XATTR_REPLACE`.
    pub flags: XattrFlags,
    /// The time of the operation.
    pub now: Time,
    /// Whether it is done.
    pub done: bool,
}

impl SetXattr {
    pub(super) fn next(&self, meta: &FsMeta) -> Result<Transition<FileTxn>, FsError> {
        if self.done {
            return Ok(Transition::Done(TxnResult::Done));
        }
        check_xattr_name(&self.name)?;
        if self.name == ACL_ACCESS || self.name == ACL_DEFAULT {
            return self.set_acl(meta);
        }
        let inode = meta.inode(self.ino)?;
        // As Linux: user attributes only on regular files and directories.
        if self.name.starts_with(b"user.") && !matches!(inode.kind, FileKind::File | FileKind::Dir)
        {
            return Err(FsError::NotPermitted(
                "user extended attributes only on files and directories",
            ));
        }
        let old = inode.xattrs.get(&self.name).cloned();
        match &self.value {
            Some(value) => {
                if value.len() > XATTR_VALUE_BYTES_MAX {
                    return Err(FsError::XattrTooBig {
                        len_bytes: value.len(),
                    });
                }
                if self.flags.create && old.is_some() {
                    return Err(FsError::Exists);
                }
                if self.flags.replace && old.is_none() {
                    return Err(FsError::NoXattr);
                }
                let others = inode.xattrs.iter().filter(|(name, _)| **name != self.name);
                if room(others) + room(std::iter::once((&self.name, value))) > XATTRS_BYTES_MAX {
                    return Err(FsError::NoSpace("an inode's extended attributes are full"));
                }
            }
            None if old.is_none() => return Err(FsError::NoXattr),
            None => {}
        }
        let mut edits = Edits::new(meta);
        edits.edit(self.ino, |a| a.ctime = self.now)?;
        let (mut redo, undo) = edits.ops();
        redo.insert(
            0,
            Op::SetXattr {
                ino: self.ino,
                name: self.name.clone(),
                value: self.value.clone(),
            },
        );
        Ok(self.step(redo, undo, old))
    }

    /// A POSIX ACL set or removed (the flags do not apply, as on Linux): an access ACL
    /// sets the permission bits, and one that says no more than they do is not kept; a
    /// default ACL only on a directory (EACCES); removing one that is absent is no error.
    fn set_acl(&self, meta: &FsMeta) -> Result<Transition<FileTxn>, FsError> {
        let inode = meta.inode(self.ino)?;
        if inode.kind == FileKind::Symlink {
            return Err(FsError::XattrNotSupported);
        }
        let access = self.name == ACL_ACCESS;
        let old = inode.xattrs.get(&self.name).cloned();
        let mut mode = inode.attrs.mode;
        let value = match &self.value {
            Some(bytes) => {
                let acl = Acl::parse(bytes)?;
                if !access && inode.kind != FileKind::Dir {
                    return Err(FsError::Denied("a default ACL on what is not a directory"));
                }
                if access {
                    mode = acl.mode(mode);
                }
                (!(access && acl.is_minimal())).then(|| acl.encode())
            }
            None => None,
        };
        if value.is_none() && old.is_none() && mode == inode.attrs.mode {
            return Ok(Transition::Done(TxnResult::Done));
        }
        if let Some(value) = &value {
            let others = inode.xattrs.iter().filter(|(name, _)| **name != self.name);
            if room(others) + room(std::iter::once((&self.name, value))) > XATTRS_BYTES_MAX {
                return Err(FsError::NoSpace("an inode's extended attributes are full"));
            }
        }
        let mut edits = Edits::new(meta);
        edits.edit(self.ino, |a| {
            a.mode = mode;
            a.ctime = self.now;
        })?;
        let (mut redo, undo) = edits.ops();
        redo.insert(
            0,
            Op::SetXattr {
                ino: self.ino,
                name: self.name.clone(),
                value,
            },
        );
        Ok(self.step(redo, undo, old))
    }

    /// The one step: `redo` (the set first), and `undo` with the attribute's old value.
    fn step(&self, redo: Vec<Op>, mut undo: Vec<Op>, old: Option<Vec<u8>>) -> Transition<FileTxn> {
        undo.push(Op::SetXattr {
            ino: self.ino,
            name: self.name.clone(),
            value: old,
        });
        let next = FileTxn::SetXattr(SetXattr {
            done: true,
            ..self.clone()
        });
        step(next, redo, undo, Some(TxnResult::Done))
    }
}
