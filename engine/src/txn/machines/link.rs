//! Add a hard link.

use serde::{Deserialize, Serialize};

use crate::constants::LINK_COUNT_MAX;
use crate::error::FsError;
use crate::store::{FileKind, FsMeta, Ino, Name, Time, TxnResult};

use super::{check_linked, step, touch, Edits, FileTxn};
use crate::txn::Transition;

/// Add a hard link: one step (`Linked`, the point of no return).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Link {
    /// The inode.
    pub ino: Ino,
    /// The directory of the new name.
    pub parent: Ino,
    /// The new name.
    pub name: Name,
    /// The time of the operation.
    pub now: Time,
    /// Whether the link is made.
    pub linked: bool,
}

impl Link {
    pub(super) fn next(&self, meta: &FsMeta) -> Result<Transition<FileTxn>, FsError> {
        if self.linked {
            return Ok(Transition::Done(TxnResult::Ino(self.ino)));
        }
        let target = meta.inode(self.ino)?;
        if target.attrs.nlink == 0 {
            // An orphan (unlinked while open) gets no new name, as on Linux.
            return Err(FsError::NotFound);
        }
        if target.kind == FileKind::Dir {
            return Err(FsError::NotPermitted(
                "hard links to directories are not allowed",
            ));
        }
        if target.attrs.nlink >= LINK_COUNT_MAX {
            return Err(FsError::TooManyLinks);
        }
        if meta.dir(self.parent)?.contains_key(&self.name) {
            return Err(FsError::Exists);
        }
        check_linked(meta, self.parent)?;
        let mut edits = Edits::new(meta);
        edits.edit(self.ino, |a| {
            a.nlink += 1;
            a.ctime = self.now;
        })?;
        edits.edit(self.parent, |a| touch(a, self.now))?;
        let (redo, undo) = edits.ops_inserting(self.parent, &self.name, self.ino);
        let next = FileTxn::Link(Link {
            linked: true,
            ..self.clone()
        });
        Ok(step(next, redo, undo, Some(TxnResult::Ino(self.ino))))
    }
}
