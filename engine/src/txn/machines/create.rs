//! Create a file, directory, symbolic link, FIFO, socket or device.

use serde::{Deserialize, Serialize};

use crate::constants::LINK_COUNT_MAX;
use crate::error::FsError;
use crate::store::{check_symlink_target, Attrs, FileKind, FsMeta, Ino, Name, Op, Time, TxnResult};

use super::acl::{Acl, ACL_ACCESS, ACL_DEFAULT};
use super::{check_linked, step, touch, Edits, FileTxn, NewAttrs, NewNode};

/// The setgid bit of a mode.
const SETGID: u32 = 0o2000;
use crate::txn::Transition;

/// Create a file, directory or symbolic link: step 1 logs the new inode (`Allocated`),
/// step 2 names it in the parent (`Linked`, the point of no return) and commits. A crash
/// after step 1 alone rolls back: the inode is dropped.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Create {
    /// Parent directory.
    pub parent: Ino,
    /// Name in it.
    pub name: Name,
    /// What to make.
    pub node: NewNode,
    /// Owner and permissions.
    pub attrs: NewAttrs,
    /// The time of the operation.
    pub now: Time,
    /// Where the machine is.
    pub state: CreateState,
}

/// States of [`Create`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CreateState {
    /// Nothing done.
    Start,
    /// The inode exists, named nowhere.
    Allocated {
        /// Its number.
        ino: Ino,
    },
    /// The parent names it: done.
    Linked {
        /// Its number.
        ino: Ino,
    },
}

impl Create {
    pub(super) fn next(&self, meta: &FsMeta) -> Result<Transition<FileTxn>, FsError> {
        let with = |state| {
            FileTxn::Create(Create {
                state,
                ..self.clone()
            })
        };
        match self.state {
            CreateState::Start => {
                let entries = meta.dir(self.parent)?;
                if entries.contains_key(&self.name) {
                    return Err(FsError::Exists);
                }
                check_linked(meta, self.parent)?;
                let parent_attrs = meta.inode(self.parent)?.attrs;
                let (kind, size, nlink, target) = match &self.node {
                    NewNode::File => (FileKind::File, 0, 1, Vec::new()),
                    NewNode::Dir => {
                        if meta.inode(self.parent)?.attrs.nlink >= LINK_COUNT_MAX {
                            return Err(FsError::TooManyLinks);
                        }
                        (FileKind::Dir, 0, 2, Vec::new())
                    }
                    NewNode::Symlink(target) => {
                        check_symlink_target(target)?;
                        (FileKind::Symlink, target.len() as u64, 1, target.clone())
                    }
                    NewNode::Special(kind) if kind.is_special() => (*kind, 0, 1, Vec::new()),
                    NewNode::Special(_) => {
                        return Err(FsError::Invalid("mknod of a file type it does not make"))
                    }
                };
                // A setgid directory gives a new inode its group, and a new directory
                // its setgid bit too (as ext4 and every Linux file system do).
                let (mut mode, mut gid) = (self.attrs.mode & 0o7777, self.attrs.gid);
                if parent_attrs.mode & SETGID != 0 {
                    gid = parent_attrs.gid;
                    if kind == FileKind::Dir {
                        mode |= SETGID;
                    }
                }
                // The directory's default ACL masks the mode instead of the umask, and is
                // inherited (a directory takes it as its own default too); a symbolic
                // link takes neither.
                let mut acls = Vec::new();
                let default = meta.inode(self.parent)?.xattrs.get(ACL_DEFAULT);
                match default {
                    _ if kind == FileKind::Symlink => {}
                    Some(default) => {
                        let (inherited, access) = Acl::parse(default)?.inherit(mode);
                        mode = inherited;
                        if let Some(access) = access {
                            acls.push((ACL_ACCESS, access.encode()));
                        }
                        if kind == FileKind::Dir {
                            acls.push((ACL_DEFAULT, default.clone()));
                        }
                    }
                    None => mode &= !(self.attrs.umask & 0o777),
                }
                let ino = meta.next_ino;
                let attrs = Attrs {
                    mode,
                    uid: self.attrs.uid,
                    gid,
                    size,
                    nlink,
                    atime: self.now,
                    mtime: self.now,
                    ctime: self.now,
                };
                let parent = if kind == FileKind::Dir {
                    self.parent
                } else {
                    Ino(0)
                };
                let mut redo = vec![Op::PutInode {
                    ino,
                    kind,
                    attrs,
                    parent,
                    target,
                }];
                redo.extend(acls.into_iter().map(|(name, value)| Op::SetXattr {
                    ino,
                    name: name.to_vec(),
                    value: Some(value),
                }));
                let undo = vec![Op::DropInode { ino }];
                Ok(step(with(CreateState::Allocated { ino }), redo, undo, None))
            }
            CreateState::Allocated { ino } => {
                let is_dir = self.node == NewNode::Dir;
                let mut edits = Edits::new(meta);
                edits.edit(self.parent, |a| {
                    touch(a, self.now);
                    if is_dir {
                        a.nlink += 1;
                    }
                })?;
                let (redo, undo) = edits.ops_inserting(self.parent, &self.name, ino);
                Ok(step(
                    with(CreateState::Linked { ino }),
                    redo,
                    undo,
                    Some(TxnResult::Ino(ino)),
                ))
            }
            CreateState::Linked { ino } => Ok(Transition::Done(TxnResult::Ino(ino))),
        }
    }
}
