//! Unlink a name, or remove an empty directory.

use serde::{Deserialize, Serialize};

use crate::error::FsError;
use crate::store::{FileKind, FsMeta, Ino, Name, Op, Time, TxnResult};

use super::{check_linked, one_link_fewer, step, touch, Edits, FileTxn};
use crate::txn::{Context, Transition};

/// Unlink a name (or remove an empty directory): step 1 removes the name and counts the
/// link down (`Removed`, the point of no return); when that was the last link, step 2 drops
/// the inode and frees its data (`Freed`). A crash between the two resumes step 2.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unlink {
    /// Directory.
    pub parent: Ino,
    /// Name.
    pub name: Name,
    /// rmdir (the target must be an empty directory) rather than unlink.
    pub dir: bool,
    /// The time of the operation.
    pub now: Time,
    /// Where the machine is.
    pub state: UnlinkState,
}

/// States of [`Unlink`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum UnlinkState {
    /// Nothing done.
    Start,
    /// The name is gone and the link counted down.
    Removed {
        /// The inode it named.
        ino: Ino,
        /// Whether no name is left (the inode is to be dropped).
        last: bool,
    },
    /// The inode and its data are gone.
    Freed,
}

impl Unlink {
    pub(super) fn next(
        &self,
        meta: &FsMeta,
        context: &Context<'_>,
    ) -> Result<Transition<FileTxn>, FsError> {
        let with = |state| {
            FileTxn::Unlink(Unlink {
                state,
                ..self.clone()
            })
        };
        match self.state {
            UnlinkState::Start => {
                let ino = meta.lookup(self.parent, &self.name)?;
                let target = meta.inode(ino)?;
                let is_dir = target.kind == FileKind::Dir;
                if self.dir && !is_dir {
                    return Err(FsError::NotDir);
                }
                if !self.dir && is_dir {
                    return Err(FsError::IsDir);
                }
                if is_dir && !meta.dir(ino)?.is_empty() {
                    return Err(FsError::NotEmpty);
                }
                check_linked(meta, self.parent)?;
                check_linked(meta, ino)?;
                let mut edits = Edits::new(meta);
                edits.edit(self.parent, |a| {
                    touch(a, self.now);
                    if is_dir {
                        a.nlink = one_link_fewer(a.nlink);
                    }
                })?;
                let mut last = false;
                edits.edit(ino, |a| {
                    a.nlink = if is_dir { 0 } else { one_link_fewer(a.nlink) };
                    a.ctime = self.now;
                    last = a.nlink == 0;
                })?;
                let (redo, undo) = edits.ops_removing(self.parent, &self.name, ino);
                let result = (!last).then_some(TxnResult::Done);
                Ok(step(
                    with(UnlinkState::Removed { ino, last }),
                    redo,
                    undo,
                    result,
                ))
            }
            UnlinkState::Removed { ino, last: true } if context.is_open(ino) => {
                // Open: the inode stays as an orphan; its last release reclaims it.
                Ok(Transition::Done(TxnResult::Done))
            }
            UnlinkState::Removed { ino, last: true } => Ok(step(
                with(UnlinkState::Freed),
                vec![Op::DropInode { ino }],
                Vec::new(),
                Some(TxnResult::Done),
            )),
            UnlinkState::Removed { last: false, .. } | UnlinkState::Freed => {
                Ok(Transition::Done(TxnResult::Done))
            }
        }
    }
}
