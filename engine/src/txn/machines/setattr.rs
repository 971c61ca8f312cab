//! Change attributes, truncate.

use serde::{Deserialize, Serialize};

use crate::constants::FILE_SIZE_BYTES_MAX;
use crate::error::FsError;
use crate::store::{FileKind, FsMeta, Ino, Op, Time, TxnResult};

use super::acl::{Acl, ACL_ACCESS};
use super::{step, Edits, FileTxn, SetAttrChanges, BLOCK};
use crate::txn::{Context, Transition};

/// Change attributes: step 1 sets them (`Set`, the point of no return); a truncation to a
/// smaller size then releases the data past the new end (`Truncated`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetAttr {
    /// The inode.
    pub ino: Ino,
    /// The changes.
    pub changes: SetAttrChanges,
    /// The time of the operation.
    pub now: Time,
    /// Where the machine is.
    pub state: SetAttrState,
}

/// States of [`SetAttr`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SetAttrState {
    /// Nothing done.
    Start,
    /// Attributes set; `shrink` when data past the new size is to be released.
    Set {
        /// Whether the size went down.
        shrink: bool,
    },
    /// Data past the end released.
    Truncated,
}

impl SetAttr {
    pub(super) fn next(
        &self,
        meta: &FsMeta,
        context: &Context<'_>,
    ) -> Result<Transition<FileTxn>, FsError> {
        let with = |state| {
            FileTxn::SetAttr(SetAttr {
                state,
                ..self.clone()
            })
        };
        match self.state {
            SetAttrState::Start => {
                let inode = meta.inode(self.ino)?;
                let old_size = inode.attrs.size;
                if let Some(size) = self.changes.size {
                    match inode.kind {
                        FileKind::File => {}
                        FileKind::Dir => return Err(FsError::IsDir),
                        FileKind::Symlink => {
                            return Err(FsError::Invalid("truncating a symbolic link"))
                        }
                        _ => return Err(FsError::Invalid("truncating a FIFO, socket or device")),
                    }
                    if size > FILE_SIZE_BYTES_MAX {
                        return Err(FsError::FileTooBig);
                    }
                }
                let changes = self.changes;
                let mut edits = Edits::new(meta);
                edits.edit(self.ino, |a| {
                    if let Some(mode) = changes.mode {
                        a.mode = mode & 0o7777;
                    }
                    if let Some(uid) = changes.uid {
                        a.uid = uid;
                    }
                    if let Some(gid) = changes.gid {
                        a.gid = gid;
                    }
                    if let Some(size) = changes.size {
                        if size != a.size {
                            a.mtime = self.now;
                        }
                        a.size = size;
                    }
                    if let Some(atime) = changes.atime {
                        a.atime = atime;
                    }
                    if let Some(mtime) = changes.mtime {
                        a.mtime = mtime;
                    }
                    a.ctime = self.now;
                })?;
                // A truncation to the same size still releases blocks preallocated past the
                // end (as ext4 does).
                let shrink = changes.size.is_some_and(|s| {
                    let end = s.div_ceil(BLOCK);
                    let held_past_end = inode.blocks.blocks_in(end, u64::MAX).next().is_some()
                        || context
                            .cache
                            .is_some_and(|c| c.blocks_of(self.ino).any(|b| b >= end));
                    s < old_size || s == old_size && held_past_end
                });
                let (mut redo, mut undo) = edits.ops();
                // A chmod rewrites the access ACL's owner, mask (or group) and other
                // entries, in the same step (as ext4's posix_acl_chmod).
                if let (Some(mode), Some(old)) = (changes.mode, inode.xattrs.get(ACL_ACCESS)) {
                    let acl = Acl::parse(old)?.chmod(mode & 0o7777);
                    redo.push(Op::SetXattr {
                        ino: self.ino,
                        name: ACL_ACCESS.to_vec(),
                        value: Some(acl.encode()),
                    });
                    undo.push(Op::SetXattr {
                        ino: self.ino,
                        name: ACL_ACCESS.to_vec(),
                        value: Some(old.clone()),
                    });
                }
                let result = (!shrink).then_some(TxnResult::Done);
                Ok(step(with(SetAttrState::Set { shrink }), redo, undo, result))
            }
            SetAttrState::Set { shrink: true } => {
                let size = meta.inode(self.ino)?.attrs.size;
                Ok(step(
                    with(SetAttrState::Truncated),
                    vec![Op::TruncateData {
                        ino: self.ino,
                        size,
                    }],
                    Vec::new(),
                    Some(TxnResult::Done),
                ))
            }
            SetAttrState::Set { shrink: false } | SetAttrState::Truncated => {
                Ok(Transition::Done(TxnResult::Done))
            }
        }
    }
}
