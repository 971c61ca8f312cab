//! Reclaim an orphan.

use serde::{Deserialize, Serialize};

use crate::error::FsError;
use crate::store::{FileKind, FsMeta, Ino, Op, TxnResult};

use super::{step, FileTxn};
use crate::txn::Transition;

/// Reclaim an orphan (an inode with no name and no link, kept while a file server held it
/// open): one step drops it and frees its data (`freed`, the point of no return). Run when
/// its last handle is released, and by recovery for every orphan a crash left.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reclaim {
    /// The orphan.
    pub ino: Ino,
    /// Whether it is dropped.
    pub freed: bool,
}

impl Reclaim {
    pub(super) fn next(&self, meta: &FsMeta) -> Result<Transition<FileTxn>, FsError> {
        if self.freed {
            return Ok(Transition::Done(TxnResult::Done));
        }
        let inode = meta.inode(self.ino)?;
        if inode.attrs.nlink != 0 {
            return Err(FsError::Invalid("only an orphan is reclaimed"));
        }
        // A directory removed while open is empty: nothing can be made in it.
        if inode.kind == FileKind::Dir && !meta.dir(self.ino)?.is_empty() {
            return Err(FsError::NotEmpty);
        }
        Ok(step(
            FileTxn::Reclaim(Reclaim {
                ino: self.ino,
                freed: true,
            }),
            vec![Op::DropInode { ino: self.ino }],
            Vec::new(),
            Some(TxnResult::Done),
        ))
    }
}
