//! One machine per file operation, one file per machine. Each state's doc says what is
//! true in the store while the machine is in it; each machine's doc names its steps and
//! its point of no return. This file holds what they share: the parameters callers pass,
//! [`FileTxn`] (the family), attribute edits, and the dispatch of [`Machine`].

pub mod acl;
mod create;
mod fallocate;
mod link;
mod reclaim;
mod rename;
mod setattr;
mod unlink;
mod write;
mod xattr;

pub use create::{Create, CreateState};
pub use fallocate::{FallocMode, Fallocate};
pub use link::Link;
pub use reclaim::Reclaim;
pub use rename::{Rename, RenameState};
pub use setattr::{SetAttr, SetAttrState};
pub use unlink::{Unlink, UnlinkState};
pub use write::{Write, WriteState};
pub use xattr::{check_xattr_name, SetXattr, XattrFlags};

use serde::{Deserialize, Serialize};

use crate::constants::BLOCK_SIZE_BYTES;
use crate::error::{CorruptKind, FsError};
use crate::store::{Attrs, FileKind, FsMeta, Ino, Name, Op, Time, TxnResult};

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
    /// A FIFO, socket or device ([`FileKind::is_special`]).
    Special(FileKind),
}

/// Owner and permissions of a new inode.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewAttrs {
    /// Permission bits (masked with 0o7777), as asked: before the umask.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// The caller's umask (store 5): cleared from `mode` unless the directory holding
    /// the new inode has a default ACL, which then masks it instead (POSIX.1e).
    pub umask: u32,
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
    meta: &'a FsMeta,
    changed: Vec<(Ino, Attrs, Attrs)>,
}

impl<'a> Edits<'a> {
    fn new(meta: &'a FsMeta) -> Edits<'a> {
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

/// Checks that `ino` counts at least one link before a name of it (or a subdirectory's
/// `..` in it) is removed. The count comes from the store, which came from disk: a zero here
/// is metadata that contradicts itself, a typed error and never an underflow or a panic.
fn check_linked(meta: &FsMeta, ino: Ino) -> Result<(), FsError> {
    let inode = meta.inode(ino)?;
    // A directory removed while a file server held it open: nothing is made in it.
    if inode.attrs.nlink == 0 && inode.kind == FileKind::Dir {
        return Err(FsError::NotFound);
    }
    if inode.attrs.nlink == 0 {
        return Err(FsError::corrupt(
            CorruptKind::Metadata,
            format!("inode {ino} is named but counts no link"),
        ));
    }
    Ok(())
}

/// A link count one lower. It is at least 1 here: [`check_linked`] ran first.
fn one_link_fewer(nlink: u32) -> u32 {
    assert!(nlink >= 1, "a link count would drop below zero");
    nlink - 1
}

fn touch(attrs: &mut Attrs, now: Time) {
    attrs.mtime = now;
    attrs.ctime = now;
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
    /// setxattr, removexattr.
    SetXattr(SetXattr),
    /// fallocate.
    Fallocate(Fallocate),
}

fn step<M>(next: M, redo: Vec<Op>, undo: Vec<Op>, result: Option<TxnResult>) -> Transition<M> {
    Transition::Step {
        next,
        redo,
        undo,
        result,
    }
}

impl Machine for FileTxn {
    fn next(&self, meta: &FsMeta, context: &Context<'_>) -> Result<Transition<FileTxn>, FsError> {
        match self {
            FileTxn::Create(m) => m.next(meta),
            FileTxn::Link(m) => m.next(meta),
            FileTxn::Unlink(m) => m.next(meta, context),
            FileTxn::Rename(m) => m.next(meta, context),
            FileTxn::Write(m) => m.next(meta, context),
            FileTxn::SetAttr(m) => m.next(meta, context),
            FileTxn::Reclaim(m) => m.next(meta),
            FileTxn::SetXattr(m) => m.next(meta),
            FileTxn::Fallocate(m) => m.next(meta, context),
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
            FileTxn::SetXattr(m) => m.done,
            FileTxn::Fallocate(m) => m.done,
        }
    }

    fn op_name(&self) -> &'static str {
        match self {
            FileTxn::Create(m) => match m.node {
                NewNode::File => "create",
                NewNode::Dir => "mkdir",
                NewNode::Symlink(_) => "symlink",
                NewNode::Special(_) => "mknod",
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
            FileTxn::SetXattr(m) => {
                if m.value.is_some() {
                    "setxattr"
                } else {
                    "removexattr"
                }
            }
            FileTxn::Fallocate(_) => "fallocate",
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
            FileTxn::SetXattr(m) => {
                if m.done {
                    "Done"
                } else {
                    "Start"
                }
            }
            FileTxn::Fallocate(m) => {
                if m.done {
                    "Done"
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
            FileTxn::SetXattr(m) => format!(
                "{} {} of {}",
                self.op_name(),
                String::from_utf8_lossy(&m.name),
                m.ino
            ),
            FileTxn::Fallocate(m) => format!(
                "fallocate {:?} of {} bytes at {} of {}",
                m.mode, m.len, m.offset, m.ino
            ),
        }
    }
}

#[cfg(all(test, feature = "sim"))]
mod tests {
    use super::*;
    use crate::io::sim::SimDevice;
    use crate::store::{DataFile, Store, ROOT_INO};
    use std::sync::Arc;

    fn store() -> Store<SimDevice> {
        let data = DataFile::open(std::sync::Arc::new(SimDevice::new(1))).unwrap();
        Store::new(
            FsMeta::new(Time::default(), 1 << 20),
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
    fn unlinking_a_name_whose_inode_counts_no_link_is_corrupt_metadata_not_an_underflow() {
        let mut store = store();
        let ino = create(&mut store, ROOT_INO, "a", NewNode::File);
        // A store that lost track of a link: the name is there, the count says none.
        let mut inode = store.meta.inodes.get(&ino).unwrap().clone();
        inode.attrs.nlink = 0;
        store.meta.inodes.insert(ino, inode);
        let machine = FileTxn::Unlink(Unlink {
            parent: ROOT_INO,
            name: name("a"),
            dir: false,
            now: Time::default(),
            state: UnlinkState::Start,
        });
        match machine.next(&store.meta, &Context::default()) {
            Err(FsError::Corrupt {
                kind: CorruptKind::Metadata,
                ..
            }) => {}
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
