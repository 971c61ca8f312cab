//! Rename, plain or exchange.

use serde::{Deserialize, Serialize};

use crate::constants::LINK_COUNT_MAX;
use crate::error::FsError;
use crate::store::{FileKind, FsMeta, Ino, Name, Op, Time, TxnResult};

use super::{check_linked, one_link_fewer, step, touch, Edits, FileTxn, RenameFlags};
use crate::txn::{Context, Transition};

/// Rename. Plain: step 1 removes an existing target name (`TargetRemoved`), step 2 the
/// source name (`SourceRemoved`), step 3 names the source inode at the target
/// (`Inserted`, the point of no return), step 4 drops a target that lost its last link
/// (`TargetFreed`). Exchange: step 1 points the target name at the source inode
/// (`Exchanged1`), step 2 the source name at the target inode (`Exchanged2`, the point of
/// no return).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rename {
    /// Source directory.
    pub from_parent: Ino,
    /// Source name.
    pub from_name: Name,
    /// Target directory.
    pub to_parent: Ino,
    /// Target name.
    pub to_name: Name,
    /// Flags.
    pub flags: RenameFlags,
    /// The time of the operation.
    pub now: Time,
    /// Where the machine is.
    pub state: RenameState,
}

/// States of [`Rename`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RenameState {
    /// Nothing done.
    Start,
    /// The existing target name is gone and its inode counted down.
    TargetRemoved {
        /// Source inode.
        src: Ino,
        /// The old target inode.
        dst: Ino,
        /// Whether it has no name left.
        dst_last: bool,
    },
    /// The source name is gone.
    SourceRemoved {
        /// Source inode.
        src: Ino,
        /// The old target inode to drop afterwards, if it lost its last link.
        drop: Option<Ino>,
    },
    /// The source inode is named at the target.
    Inserted {
        /// The old target inode to drop, if any.
        drop: Option<Ino>,
    },
    /// The old target inode is dropped.
    TargetFreed,
    /// Exchange: the target name points at the source inode.
    Exchanged1 {
        /// Source inode.
        src: Ino,
        /// Target inode.
        dst: Ino,
    },
    /// Exchange: both names swapped.
    Exchanged2,
}

impl Rename {
    fn with(&self, state: RenameState) -> FileTxn {
        FileTxn::Rename(Rename {
            state,
            ..self.clone()
        })
    }

    pub(super) fn next(
        &self,
        meta: &FsMeta,
        context: &Context<'_>,
    ) -> Result<Transition<FileTxn>, FsError> {
        match self.state {
            RenameState::Start => self.start(meta),
            RenameState::TargetRemoved { src, dst, dst_last } => {
                self.remove_source(meta, src, dst_last.then_some(dst))
            }
            RenameState::SourceRemoved { src, drop } => self.insert(meta, src, drop),
            RenameState::Inserted { drop: Some(dst) } if context.is_open(dst) => {
                // Open: the old target stays as an orphan until its last release.
                Ok(Transition::Done(TxnResult::Done))
            }
            RenameState::Inserted { drop: Some(dst) } => Ok(step(
                self.with(RenameState::TargetFreed),
                vec![Op::DropInode { ino: dst }],
                Vec::new(),
                Some(TxnResult::Done),
            )),
            RenameState::Inserted { drop: None }
            | RenameState::TargetFreed
            | RenameState::Exchanged2 => Ok(Transition::Done(TxnResult::Done)),
            RenameState::Exchanged1 { src, dst } => self.exchange_second(meta, src, dst),
        }
    }

    fn start(&self, meta: &FsMeta) -> Result<Transition<FileTxn>, FsError> {
        if self.flags.exchange && self.flags.no_replace {
            return Err(FsError::Invalid("RENAME_EXCHANGE with RENAME_NOREPLACE"));
        }
        let src = meta.lookup(self.from_parent, &self.from_name)?;
        meta.dir(self.to_parent)?;
        check_linked(meta, self.to_parent)?;
        let dst = meta.dir(self.to_parent)?.get(&self.to_name).copied();
        let src_inode = meta.inode(src)?;
        let src_is_dir = src_inode.kind == FileKind::Dir;
        if src_is_dir
            && self.to_parent != self.from_parent
            && meta.is_ancestor(src, self.to_parent)?
        {
            return Err(FsError::Invalid("a directory cannot move into itself"));
        }
        if self.flags.exchange {
            let Some(dst) = dst else {
                return Err(FsError::NotFound);
            };
            return self.exchange_first(meta, src, dst);
        }
        let Some(dst) = dst else {
            if src_is_dir
                && self.to_parent != self.from_parent
                && meta.inode(self.to_parent)?.attrs.nlink >= LINK_COUNT_MAX
            {
                return Err(FsError::TooManyLinks);
            }
            return self.remove_source(meta, src, None);
        };
        if self.flags.no_replace {
            return Err(FsError::Exists);
        }
        if dst == src {
            // Two names of one inode (or one name): POSIX says do nothing.
            return Ok(Transition::Done(TxnResult::Done));
        }
        let dst_inode = meta.inode(dst)?;
        let dst_is_dir = dst_inode.kind == FileKind::Dir;
        match (src_is_dir, dst_is_dir) {
            (true, false) => return Err(FsError::NotDir),
            (false, true) => return Err(FsError::IsDir),
            (true, true) if !meta.dir(dst)?.is_empty() => return Err(FsError::NotEmpty),
            _ => {}
        }
        if dst_is_dir && meta.is_ancestor(dst, self.from_parent)? {
            return Err(FsError::NotEmpty);
        }
        self.remove_target(meta, src, dst, dst_is_dir)
    }

    /// Exchange, step 1: the target name points at the source inode.
    fn exchange_first(
        &self,
        meta: &FsMeta,
        src: Ino,
        dst: Ino,
    ) -> Result<Transition<FileTxn>, FsError> {
        if dst == src {
            return Ok(Transition::Done(TxnResult::Done));
        }
        let dst_is_dir = meta.inode(dst)?.kind == FileKind::Dir;
        if dst_is_dir
            && self.to_parent != self.from_parent
            && meta.is_ancestor(dst, self.from_parent)?
        {
            return Err(FsError::Invalid("a directory cannot move into itself"));
        }
        let redo = vec![Op::DirSet {
            dir: self.to_parent,
            name: self.to_name.clone(),
            ino: src,
        }];
        let undo = vec![Op::DirSet {
            dir: self.to_parent,
            name: self.to_name.clone(),
            ino: dst,
        }];
        Ok(step(
            self.with(RenameState::Exchanged1 { src, dst }),
            redo,
            undo,
            None,
        ))
    }

    /// Plain rename over an existing target, step 1: the target name goes and its inode
    /// counts one link fewer.
    fn remove_target(
        &self,
        meta: &FsMeta,
        src: Ino,
        dst: Ino,
        dst_is_dir: bool,
    ) -> Result<Transition<FileTxn>, FsError> {
        check_linked(meta, dst)?;
        check_linked(meta, self.to_parent)?;
        let mut edits = Edits::new(meta);
        let mut dst_last = false;
        edits.edit(dst, |a| {
            a.nlink = if dst_is_dir {
                0
            } else {
                one_link_fewer(a.nlink)
            };
            a.ctime = self.now;
            dst_last = a.nlink == 0;
        })?;
        edits.edit(self.to_parent, |a| {
            touch(a, self.now);
            if dst_is_dir {
                a.nlink = one_link_fewer(a.nlink);
            }
        })?;
        let (redo, undo) = edits.ops_removing(self.to_parent, &self.to_name, dst);
        Ok(step(
            self.with(RenameState::TargetRemoved { src, dst, dst_last }),
            redo,
            undo,
            None,
        ))
    }

    fn remove_source(
        &self,
        meta: &FsMeta,
        src: Ino,
        drop: Option<Ino>,
    ) -> Result<Transition<FileTxn>, FsError> {
        let src_is_dir = meta.inode(src)?.kind == FileKind::Dir;
        check_linked(meta, self.from_parent)?;
        let mut edits = Edits::new(meta);
        edits.edit(self.from_parent, |a| {
            touch(a, self.now);
            if src_is_dir {
                a.nlink = one_link_fewer(a.nlink);
            }
        })?;
        let (redo, undo) = edits.ops_removing(self.from_parent, &self.from_name, src);
        Ok(step(
            self.with(RenameState::SourceRemoved { src, drop }),
            redo,
            undo,
            None,
        ))
    }

    fn insert(
        &self,
        meta: &FsMeta,
        src: Ino,
        drop: Option<Ino>,
    ) -> Result<Transition<FileTxn>, FsError> {
        let src_is_dir = meta.inode(src)?.kind == FileKind::Dir;
        let mut edits = Edits::new(meta);
        edits.edit(self.to_parent, |a| {
            touch(a, self.now);
            if src_is_dir {
                a.nlink += 1;
            }
        })?;
        edits.edit(src, |a| a.ctime = self.now)?;
        let (mut redo, _) = edits.ops();
        redo.insert(
            0,
            Op::DirInsert {
                dir: self.to_parent,
                name: self.to_name.clone(),
                ino: src,
            },
        );
        if src_is_dir {
            redo.push(Op::SetParent {
                ino: src,
                parent: self.to_parent,
            });
        }
        let result = drop.is_none().then_some(TxnResult::Done);
        Ok(step(
            self.with(RenameState::Inserted { drop }),
            redo,
            Vec::new(),
            result,
        ))
    }

    fn exchange_second(
        &self,
        meta: &FsMeta,
        src: Ino,
        dst: Ino,
    ) -> Result<Transition<FileTxn>, FsError> {
        let src_is_dir = meta.inode(src)?.kind == FileKind::Dir;
        let dst_is_dir = meta.inode(dst)?.kind == FileKind::Dir;
        let moved_dirs = self.from_parent != self.to_parent;
        check_linked(meta, self.from_parent)?;
        check_linked(meta, self.to_parent)?;
        let mut edits = Edits::new(meta);
        edits.edit(self.from_parent, |a| {
            touch(a, self.now);
            if moved_dirs && src_is_dir {
                a.nlink = one_link_fewer(a.nlink);
            }
            if moved_dirs && dst_is_dir {
                a.nlink += 1;
            }
        })?;
        edits.edit(self.to_parent, |a| {
            touch(a, self.now);
            if moved_dirs && dst_is_dir {
                a.nlink = one_link_fewer(a.nlink);
            }
            if moved_dirs && src_is_dir {
                a.nlink += 1;
            }
        })?;
        edits.edit(src, |a| a.ctime = self.now)?;
        edits.edit(dst, |a| a.ctime = self.now)?;
        let (mut redo, _) = edits.ops();
        redo.insert(
            0,
            Op::DirSet {
                dir: self.from_parent,
                name: self.from_name.clone(),
                ino: dst,
            },
        );
        if src_is_dir {
            redo.push(Op::SetParent {
                ino: src,
                parent: self.to_parent,
            });
        }
        if dst_is_dir {
            redo.push(Op::SetParent {
                ino: dst,
                parent: self.from_parent,
            });
        }
        Ok(step(
            self.with(RenameState::Exchanged2),
            redo,
            Vec::new(),
            Some(TxnResult::Done),
        ))
    }
}
