//! One machine per file operation. Each state's doc says what is true in the store while
//! the machine is in it; each machine's doc names its steps and its point of no return.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::constants::{
    BLOCK_SIZE_BYTES, FILE_SIZE_BYTES_MAX, LINK_COUNT_MAX, WRITE_EXTENT_BLOCKS_MIN,
    WRITE_SIZE_BYTES_MAX,
};
use crate::error::FsError;
use crate::store::{
    block_crc, check_symlink_target, Attrs, FileKind, Ino, Meta, Name, Op, Run, Time, TxnResult,
};

use super::{Context, Machine, Transition};

const BLOCK: u64 = BLOCK_SIZE_BYTES as u64;

/// What a create makes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum NewNode {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link to this target.
    Symlink(Vec<u8>),
}

/// Owner and permissions of a new inode.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewAttrs {
    /// Permission bits (masked with 0o7777).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
}

/// How a rename treats an existing target.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RenameFlags {
    /// Fail with EEXIST when the target exists (RENAME_NOREPLACE).
    pub no_replace: bool,
    /// Swap source and target, both of which must exist (RENAME_EXCHANGE).
    pub exchange: bool,
}

/// Attribute changes of a setattr; `None` leaves a value as it is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetAttrChanges {
    /// New permission bits.
    pub mode: Option<u32>,
    /// New owner.
    pub uid: Option<u32>,
    /// New group.
    pub gid: Option<u32>,
    /// New size (truncate or extend with zeros).
    pub size: Option<u64>,
    /// New access time.
    pub atime: Option<Time>,
    /// New modification time.
    pub mtime: Option<Time>,
}

/// Attribute edits within one step: the redo sets the new values, the undo the old.
struct Edits<'a> {
    meta: &'a Meta,
    changed: Vec<(Ino, Attrs, Attrs)>,
}

impl<'a> Edits<'a> {
    fn new(meta: &'a Meta) -> Edits<'a> {
        Edits {
            meta,
            changed: Vec::new(),
        }
    }

    fn edit(&mut self, ino: Ino, f: impl FnOnce(&mut Attrs)) -> Result<(), FsError> {
        let index = match self.changed.iter().position(|(i, _, _)| *i == ino) {
            Some(index) => index,
            None => {
                let old = self.meta.inode(ino)?.attrs;
                self.changed.push((ino, old, old));
                self.changed.len() - 1
            }
        };
        f(&mut self.changed[index].2);
        Ok(())
    }

    /// (redo, undo) ops of a step that also removes `dir/name` (naming `ino`).
    fn ops_removing(self, dir: Ino, name: &Name, ino: Ino) -> (Vec<Op>, Vec<Op>) {
        let (mut redo, mut undo) = self.ops();
        redo.insert(
            0,
            Op::DirRemove {
                dir,
                name: name.clone(),
            },
        );
        undo.push(Op::DirInsert {
            dir,
            name: name.clone(),
            ino,
        });
        (redo, undo)
    }

    /// (redo, undo) ops of a step that also inserts `dir/name` naming `ino`.
    fn ops_inserting(self, dir: Ino, name: &Name, ino: Ino) -> (Vec<Op>, Vec<Op>) {
        let (mut redo, mut undo) = self.ops();
        redo.insert(
            0,
            Op::DirInsert {
                dir,
                name: name.clone(),
                ino,
            },
        );
        undo.push(Op::DirRemove {
            dir,
            name: name.clone(),
        });
        (redo, undo)
    }

    /// (redo, undo) ops.
    fn ops(self) -> (Vec<Op>, Vec<Op>) {
        let redo = self
            .changed
            .iter()
            .map(|(ino, _, new)| Op::SetAttrs {
                ino: *ino,
                attrs: *new,
            })
            .collect();
        let undo = self
            .changed
            .iter()
            .rev()
            .map(|(ino, old, _)| Op::SetAttrs {
                ino: *ino,
                attrs: *old,
            })
            .collect();
        (redo, undo)
    }
}

fn touch(attrs: &mut Attrs, now: Time) {
    attrs.mtime = now;
    attrs.ctime = now;
}

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

/// Write bytes. Small writes (fewer than [`WRITE_EXTENT_BLOCKS_MIN`] whole blocks): one
/// step carrying the bytes (`Linked`). Large writes: step 1 allocates blocks
/// (`Allocated`), the data goes to them and is made durable outside the engine lock
/// (`DataWritten`, not logged), step 2 maps them, with any partial first and last block
/// carried inline, and sets the size (`Linked`, the point of no return). A crash before
/// step 2 rolls back: the blocks are freed.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Write {
    /// The file.
    pub ino: Ino,
    /// Byte offset.
    pub offset: u64,
    /// Bytes to write.
    pub len: u64,
    /// The time of the operation.
    pub now: Time,
    /// Where the machine is.
    pub state: WriteState,
    /// The bytes (in memory only: a resumed write is past the step that carried them).
    #[serde(skip)]
    pub data: Arc<Vec<u8>>,
}

impl PartialEq for Write {
    fn eq(&self, other: &Write) -> bool {
        (self.ino, self.offset, self.len, self.now, &self.state)
            == (other.ino, other.offset, other.len, other.now, &other.state)
    }
}

impl Eq for Write {}

/// States of [`Write`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WriteState {
    /// Nothing done.
    Start,
    /// Blocks allocated, not yet written.
    Allocated {
        /// The blocks.
        runs: Vec<Run>,
    },
    /// Blocks written and durable, not yet mapped.
    DataWritten {
        /// The blocks.
        runs: Vec<Run>,
    },
    /// The data is in the file and the size set.
    Linked,
}

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

/// A file transaction: one machine per file operation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FileTxn {
    /// create, mkdir, symlink.
    Create(Create),
    /// link.
    Link(Link),
    /// unlink, rmdir.
    Unlink(Unlink),
    /// rename.
    Rename(Rename),
    /// write.
    Write(Write),
    /// setattr, truncate.
    SetAttr(SetAttr),
    /// Dropping an orphan: an inode that lost its last name while open.
    Reclaim(Reclaim),
}

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
    fn next(&self, meta: &Meta) -> Result<Transition<FileTxn>, FsError> {
        if self.freed {
            return Ok(Transition::Done(TxnResult::Done));
        }
        let inode = meta.inode(self.ino)?;
        if inode.attrs.nlink != 0 || inode.kind == FileKind::Dir {
            return Err(FsError::Invalid("only an orphan is reclaimed"));
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

fn step<M>(next: M, redo: Vec<Op>, undo: Vec<Op>, result: Option<TxnResult>) -> Transition<M> {
    Transition::Step {
        next,
        redo,
        undo,
        result,
    }
}

impl Create {
    fn next(&self, meta: &Meta) -> Result<Transition<FileTxn>, FsError> {
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
                };
                let ino = meta.next_ino;
                let attrs = Attrs {
                    mode: self.attrs.mode & 0o7777,
                    uid: self.attrs.uid,
                    gid: self.attrs.gid,
                    size,
                    nlink,
                    atime: self.now,
                    mtime: self.now,
                    ctime: self.now,
                };
                let parent = if kind == FileKind::Dir {
                    self.parent
                } else {
                    0
                };
                let redo = vec![Op::PutInode {
                    ino,
                    kind,
                    attrs,
                    parent,
                    target,
                }];
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

impl Link {
    fn next(&self, meta: &Meta) -> Result<Transition<FileTxn>, FsError> {
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

impl Unlink {
    fn next(&self, meta: &Meta, context: &Context<'_>) -> Result<Transition<FileTxn>, FsError> {
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
                let mut edits = Edits::new(meta);
                edits.edit(self.parent, |a| {
                    touch(a, self.now);
                    if is_dir {
                        a.nlink = a.nlink.saturating_sub(1);
                    }
                })?;
                let mut last = false;
                edits.edit(ino, |a| {
                    a.nlink = if is_dir { 0 } else { a.nlink.saturating_sub(1) };
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

impl Rename {
    fn with(&self, state: RenameState) -> FileTxn {
        FileTxn::Rename(Rename {
            state,
            ..self.clone()
        })
    }

    fn next(&self, meta: &Meta, context: &Context<'_>) -> Result<Transition<FileTxn>, FsError> {
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

    fn start(&self, meta: &Meta) -> Result<Transition<FileTxn>, FsError> {
        if self.flags.exchange && self.flags.no_replace {
            return Err(FsError::Invalid("RENAME_EXCHANGE with RENAME_NOREPLACE"));
        }
        let src = meta.lookup(self.from_parent, &self.from_name)?;
        meta.dir(self.to_parent)?;
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
            return Ok(step(
                self.with(RenameState::Exchanged1 { src, dst }),
                redo,
                undo,
                None,
            ));
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
        let mut edits = Edits::new(meta);
        let mut dst_last = false;
        edits.edit(dst, |a| {
            a.nlink = if dst_is_dir {
                0
            } else {
                a.nlink.saturating_sub(1)
            };
            a.ctime = self.now;
            dst_last = a.nlink == 0;
        })?;
        edits.edit(self.to_parent, |a| {
            touch(a, self.now);
            if dst_is_dir {
                a.nlink = a.nlink.saturating_sub(1);
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
        meta: &Meta,
        src: Ino,
        drop: Option<Ino>,
    ) -> Result<Transition<FileTxn>, FsError> {
        let src_is_dir = meta.inode(src)?.kind == FileKind::Dir;
        let mut edits = Edits::new(meta);
        edits.edit(self.from_parent, |a| {
            touch(a, self.now);
            if src_is_dir {
                a.nlink = a.nlink.saturating_sub(1);
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
        meta: &Meta,
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
        meta: &Meta,
        src: Ino,
        dst: Ino,
    ) -> Result<Transition<FileTxn>, FsError> {
        let src_is_dir = meta.inode(src)?.kind == FileKind::Dir;
        let dst_is_dir = meta.inode(dst)?.kind == FileKind::Dir;
        let moved_dirs = self.from_parent != self.to_parent;
        let mut edits = Edits::new(meta);
        edits.edit(self.from_parent, |a| {
            touch(a, self.now);
            if moved_dirs && src_is_dir {
                a.nlink = a.nlink.saturating_sub(1);
            }
            if moved_dirs && dst_is_dir {
                a.nlink += 1;
            }
        })?;
        edits.edit(self.to_parent, |a| {
            touch(a, self.now);
            if moved_dirs && dst_is_dir {
                a.nlink = a.nlink.saturating_sub(1);
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

impl Write {
    fn with(&self, state: WriteState) -> FileTxn {
        FileTxn::Write(Write {
            state,
            ..self.clone()
        })
    }

    /// Whole blocks the write covers: (first file block, count).
    fn whole_blocks(&self) -> (u64, u64) {
        let first = self.offset.div_ceil(BLOCK);
        let end = (self.offset + self.len) / BLOCK;
        (first, end.saturating_sub(first))
    }

    fn size_edit(&self, meta: &Meta) -> Result<(Vec<Op>, Vec<Op>), FsError> {
        let mut edits = Edits::new(meta);
        let end = self.offset + self.len;
        edits.edit(self.ino, |a| {
            a.size = a.size.max(end);
            touch(a, self.now);
        })?;
        Ok(edits.ops())
    }

    fn check_file(&self, meta: &Meta) -> Result<(), FsError> {
        match meta.inode(self.ino)?.kind {
            FileKind::File => Ok(()),
            FileKind::Dir => Err(FsError::IsDir),
            FileKind::Symlink => Err(FsError::Invalid("writing a symbolic link")),
        }
    }

    fn next(&self, meta: &Meta, context: &Context<'_>) -> Result<Transition<FileTxn>, FsError> {
        match &self.state {
            WriteState::Start => {
                self.check_file(meta)?;
                if self.len as usize != self.data.len() {
                    return Err(FsError::Invalid("write length differs from its data"));
                }
                if self.len as usize > WRITE_SIZE_BYTES_MAX {
                    return Err(FsError::Invalid("write larger than 1 MiB"));
                }
                if self.offset.saturating_add(self.len) > FILE_SIZE_BYTES_MAX {
                    return Err(FsError::FileTooBig);
                }
                if self.len == 0 {
                    return Ok(Transition::Done(TxnResult::Bytes(0)));
                }
                let (_, count) = self.whole_blocks();
                if count >= WRITE_EXTENT_BLOCKS_MIN as u64 {
                    let runs = meta.space.plan(count)?;
                    if meta.space.available_blocks() < count + context.reserved_blocks {
                        return Err(FsError::NoSpace("the data file is full"));
                    }
                    return Ok(step(
                        self.with(WriteState::Allocated { runs: runs.clone() }),
                        vec![Op::AllocBlocks { runs: runs.clone() }],
                        vec![Op::FreeBlocks { runs }],
                        None,
                    ));
                }
                // Inline: every block it touches may become dirty.
                let touched = (self.offset + self.len).div_ceil(BLOCK) - self.offset / BLOCK;
                if meta.space.available_blocks() < touched + context.reserved_blocks {
                    return Err(FsError::NoSpace("the data file is full"));
                }
                let (mut redo, undo) = self.size_edit(meta)?;
                redo.insert(
                    0,
                    Op::WriteInline {
                        ino: self.ino,
                        offset: self.offset,
                        bytes: self.data.to_vec(),
                    },
                );
                Ok(step(
                    self.with(WriteState::Linked),
                    redo,
                    undo,
                    Some(TxnResult::Bytes(self.len)),
                ))
            }
            WriteState::Allocated { runs } => {
                let (first, _) = self.whole_blocks();
                Ok(Transition::WriteData {
                    next: self.with(WriteState::DataWritten { runs: runs.clone() }),
                    runs: runs.clone(),
                    data_offset: (first * BLOCK - self.offset) as usize,
                })
            }
            WriteState::DataWritten { runs } => {
                // The file may have gone while the data was written: then this fails and
                // the transaction rolls back (the blocks are freed).
                self.check_file(meta)?;
                let (first, count) = self.whole_blocks();
                let head_len = (first * BLOCK - self.offset) as usize;
                let tail_start = head_len + (count * BLOCK) as usize;
                let (edits_redo, undo) = self.size_edit(meta)?;
                // The checksums of the bytes just written, block by block.
                let crcs = self.data[head_len..tail_start]
                    .chunks_exact(BLOCK_SIZE_BYTES)
                    .map(block_crc)
                    .collect();
                let mut redo = vec![Op::MapBlocks {
                    ino: self.ino,
                    first_block: first,
                    runs: runs.clone(),
                    crcs,
                }];
                if head_len > 0 {
                    redo.push(Op::WriteInline {
                        ino: self.ino,
                        offset: self.offset,
                        bytes: self.data[..head_len].to_vec(),
                    });
                }
                if tail_start < self.data.len() {
                    redo.push(Op::WriteInline {
                        ino: self.ino,
                        offset: self.offset + tail_start as u64,
                        bytes: self.data[tail_start..].to_vec(),
                    });
                }
                redo.extend(edits_redo);
                Ok(step(
                    self.with(WriteState::Linked),
                    redo,
                    undo,
                    Some(TxnResult::Bytes(self.len)),
                ))
            }
            WriteState::Linked => Ok(Transition::Done(TxnResult::Bytes(self.len))),
        }
    }
}

impl SetAttr {
    fn next(&self, meta: &Meta) -> Result<Transition<FileTxn>, FsError> {
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
                let shrink = changes.size.is_some_and(|s| s < old_size);
                let (redo, undo) = edits.ops();
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

impl Machine for FileTxn {
    fn next(&self, meta: &Meta, context: &Context<'_>) -> Result<Transition<FileTxn>, FsError> {
        match self {
            FileTxn::Create(m) => m.next(meta),
            FileTxn::Link(m) => m.next(meta),
            FileTxn::Unlink(m) => m.next(meta, context),
            FileTxn::Rename(m) => m.next(meta, context),
            FileTxn::Write(m) => m.next(meta, context),
            FileTxn::SetAttr(m) => m.next(meta),
            FileTxn::Reclaim(m) => m.next(meta),
        }
    }

    fn past_point_of_no_return(&self) -> bool {
        match self {
            FileTxn::Create(m) => matches!(m.state, CreateState::Linked { .. }),
            FileTxn::Link(m) => m.linked,
            FileTxn::Unlink(m) => !matches!(m.state, UnlinkState::Start),
            FileTxn::Rename(m) => matches!(
                m.state,
                RenameState::Inserted { .. } | RenameState::TargetFreed | RenameState::Exchanged2
            ),
            FileTxn::Write(m) => matches!(m.state, WriteState::Linked),
            FileTxn::SetAttr(m) => !matches!(m.state, SetAttrState::Start),
            FileTxn::Reclaim(m) => m.freed,
        }
    }

    fn op_name(&self) -> &'static str {
        match self {
            FileTxn::Create(m) => match m.node {
                NewNode::File => "create",
                NewNode::Dir => "mkdir",
                NewNode::Symlink(_) => "symlink",
            },
            FileTxn::Link(_) => "link",
            FileTxn::Unlink(m) => {
                if m.dir {
                    "rmdir"
                } else {
                    "unlink"
                }
            }
            FileTxn::Rename(_) => "rename",
            FileTxn::Write(_) => "write",
            FileTxn::SetAttr(_) => "setattr",
            FileTxn::Reclaim(_) => "reclaim",
        }
    }

    fn state_name(&self) -> &'static str {
        match self {
            FileTxn::Create(m) => match m.state {
                CreateState::Start => "Start",
                CreateState::Allocated { .. } => "Allocated",
                CreateState::Linked { .. } => "Linked",
            },
            FileTxn::Link(m) => {
                if m.linked {
                    "Linked"
                } else {
                    "Start"
                }
            }
            FileTxn::Unlink(m) => match m.state {
                UnlinkState::Start => "Start",
                UnlinkState::Removed { .. } => "Removed",
                UnlinkState::Freed => "Freed",
            },
            FileTxn::Rename(m) => match m.state {
                RenameState::Start => "Start",
                RenameState::TargetRemoved { .. } => "TargetRemoved",
                RenameState::SourceRemoved { .. } => "SourceRemoved",
                RenameState::Inserted { .. } => "Inserted",
                RenameState::TargetFreed => "TargetFreed",
                RenameState::Exchanged1 { .. } => "Exchanged1",
                RenameState::Exchanged2 => "Exchanged2",
            },
            FileTxn::Write(m) => match m.state {
                WriteState::Start => "Start",
                WriteState::Allocated { .. } => "Allocated",
                WriteState::DataWritten { .. } => "DataWritten",
                WriteState::Linked => "Linked",
            },
            FileTxn::SetAttr(m) => match m.state {
                SetAttrState::Start => "Start",
                SetAttrState::Set { .. } => "Set",
                SetAttrState::Truncated => "Truncated",
            },
            FileTxn::Reclaim(m) => {
                if m.freed {
                    "Freed"
                } else {
                    "Start"
                }
            }
        }
    }

    fn describe(&self) -> String {
        match self {
            FileTxn::Create(m) => format!("{} {}/{}", self.op_name(), m.parent, m.name),
            FileTxn::Link(m) => format!("link {} as {}/{}", m.ino, m.parent, m.name),
            FileTxn::Unlink(m) => format!("{} {}/{}", self.op_name(), m.parent, m.name),
            FileTxn::Rename(m) => format!(
                "rename {}/{} -> {}/{}{}{}",
                m.from_parent,
                m.from_name,
                m.to_parent,
                m.to_name,
                if m.flags.no_replace {
                    " (no-replace)"
                } else {
                    ""
                },
                if m.flags.exchange { " (exchange)" } else { "" }
            ),
            FileTxn::Write(m) => format!("write {} bytes at {} of {}", m.len, m.offset, m.ino),
            FileTxn::SetAttr(m) => format!("setattr {} {:?}", m.ino, m.changes),
            FileTxn::Reclaim(m) => format!("reclaim orphan {}", m.ino),
        }
    }
}

#[cfg(all(test, feature = "sim"))]
mod tests {
    use super::*;
    use crate::io::sim::SimDevice;
    use crate::store::{DataFile, Store, ROOT_INO};

    fn store() -> Store<SimDevice> {
        let data = DataFile::open(std::sync::Arc::new(SimDevice::new(1))).unwrap();
        Store::new(
            Meta::new(Time::default(), 1 << 20),
            std::sync::Arc::new(data),
        )
    }

    fn name(text: &str) -> Name {
        Name::new(text.as_bytes()).unwrap()
    }

    /// Runs `machine` to the end, applying each step; returns (state, past the point of no
    /// return, ops of the redo) per step, and the result.
    fn run(
        store: &mut Store<SimDevice>,
        mut machine: FileTxn,
    ) -> (Vec<(String, bool, usize)>, TxnResult) {
        let mut steps = Vec::new();
        let mut lsn = store.meta.applied_lsn;
        loop {
            match machine.next(&store.meta, &Context::default()).unwrap() {
                Transition::Step {
                    next,
                    redo,
                    undo,
                    result,
                } => {
                    lsn += 1;
                    store.apply(&redo, lsn).unwrap();
                    if machine.past_point_of_no_return() {
                        assert!(
                            undo.is_empty(),
                            "{}: undo after the point of no return",
                            next.state_name()
                        );
                    }
                    steps.push((
                        next.state_name().to_string(),
                        next.past_point_of_no_return(),
                        redo.len(),
                    ));
                    machine = next;
                    if let Some(result) = result {
                        return (steps, result);
                    }
                }
                Transition::WriteData { next, .. } => {
                    steps.push(("(data)".into(), false, 0));
                    machine = next;
                }
                Transition::Done(result) => return (steps, result),
            }
        }
    }

    fn create(store: &mut Store<SimDevice>, parent: Ino, text: &str, node: NewNode) -> Ino {
        let machine = FileTxn::Create(Create {
            parent,
            name: name(text),
            node,
            attrs: NewAttrs::default(),
            now: Time::default(),
            state: CreateState::Start,
        });
        match run(store, machine).1 {
            TxnResult::Ino(ino) => ino,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn create_allocates_then_links_and_links_is_the_point_of_no_return() {
        let mut store = store();
        let machine = FileTxn::Create(Create {
            parent: ROOT_INO,
            name: name("a"),
            node: NewNode::File,
            attrs: NewAttrs::default(),
            now: Time::default(),
            state: CreateState::Start,
        });
        let (steps, _) = run(&mut store, machine);
        let states: Vec<(&str, bool)> = steps.iter().map(|(s, p, _)| (s.as_str(), *p)).collect();
        assert_eq!(states, vec![("Allocated", false), ("Linked", true)]);
    }

    #[test]
    fn rename_over_a_last_link_takes_four_steps_and_frees_the_target_last() {
        let mut store = store();
        let a = create(&mut store, ROOT_INO, "a", NewNode::File);
        let b = create(&mut store, ROOT_INO, "b", NewNode::File);
        let machine = FileTxn::Rename(Rename {
            from_parent: ROOT_INO,
            from_name: name("a"),
            to_parent: ROOT_INO,
            to_name: name("b"),
            flags: RenameFlags::default(),
            now: Time::default(),
            state: RenameState::Start,
        });
        let (steps, _) = run(&mut store, machine);
        let states: Vec<(&str, bool)> = steps.iter().map(|(s, p, _)| (s.as_str(), *p)).collect();
        assert_eq!(
            states,
            vec![
                ("TargetRemoved", false),
                ("SourceRemoved", false),
                ("Inserted", true),
                ("TargetFreed", true)
            ]
        );
        assert_eq!(store.meta.lookup(ROOT_INO, &name("b")).unwrap(), a);
        assert!(store.meta.inode(b).is_err());
    }

    #[test]
    fn unlink_of_one_of_two_links_is_one_step_and_keeps_the_inode() {
        let mut store = store();
        let a = create(&mut store, ROOT_INO, "a", NewNode::File);
        let link = FileTxn::Link(Link {
            ino: a,
            parent: ROOT_INO,
            name: name("l"),
            now: Time::default(),
            linked: false,
        });
        run(&mut store, link);
        let unlink = |n: &str| {
            FileTxn::Unlink(Unlink {
                parent: ROOT_INO,
                name: name(n),
                dir: false,
                now: Time::default(),
                state: UnlinkState::Start,
            })
        };
        let (steps, _) = run(&mut store, unlink("a"));
        assert_eq!(steps.len(), 1);
        assert_eq!(store.meta.inode(a).unwrap().attrs.nlink, 1);
        let (steps, _) = run(&mut store, unlink("l"));
        assert_eq!(
            steps.len(),
            2,
            "the last link frees the inode in a second step"
        );
        assert!(store.meta.inode(a).is_err());
    }

    #[test]
    fn a_large_write_allocates_writes_data_then_maps_and_a_small_one_is_one_step() {
        let mut store = store();
        let f = create(&mut store, ROOT_INO, "f", NewNode::File);
        let write = |offset: u64, len: usize| {
            FileTxn::Write(Write {
                ino: f,
                offset,
                len: len as u64,
                now: Time::default(),
                state: WriteState::Start,
                data: Arc::new(vec![1u8; len]),
            })
        };
        let (steps, result) = run(&mut store, write(100, 200_000));
        let states: Vec<&str> = steps.iter().map(|(s, _, _)| s.as_str()).collect();
        assert_eq!(states, vec!["Allocated", "(data)", "Linked"]);
        assert_eq!(result, TxnResult::Bytes(200_000));
        // Whole blocks 1..48 mapped; the partial first and last go inline.
        assert_eq!(store.meta.inode(f).unwrap().blocks.len(), 47);
        let (steps, _) = run(&mut store, write(5, 10));
        assert_eq!(steps.len(), 1);
        assert_eq!(store.meta.inode(f).unwrap().attrs.size, 200_100);
    }

    #[test]
    fn rename_exchange_swaps_in_two_steps_and_fixes_directory_parents() {
        let mut store = store();
        let d = create(&mut store, ROOT_INO, "d", NewNode::Dir);
        let e = create(&mut store, d, "e", NewNode::Dir);
        let f = create(&mut store, ROOT_INO, "f", NewNode::File);
        let machine = FileTxn::Rename(Rename {
            from_parent: ROOT_INO,
            from_name: name("f"),
            to_parent: d,
            to_name: name("e"),
            flags: RenameFlags {
                exchange: true,
                no_replace: false,
            },
            now: Time::default(),
            state: RenameState::Start,
        });
        let (steps, _) = run(&mut store, machine);
        assert_eq!(steps.len(), 2);
        assert_eq!(store.meta.lookup(d, &name("e")).unwrap(), f);
        assert_eq!(store.meta.lookup(ROOT_INO, &name("f")).unwrap(), e);
        assert_eq!(store.meta.inode(e).unwrap().parent, ROOT_INO);
        assert_eq!(store.meta.inode(d).unwrap().attrs.nlink, 2);
        assert_eq!(store.meta.inode(ROOT_INO).unwrap().attrs.nlink, 4);
    }
}
