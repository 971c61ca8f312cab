//! The calls that change the file system, each one file transaction, and the open-file
//! handles that keep an unlinked inode alive.

use std::sync::Arc;

use crate::error::FsError;
use crate::io::Device;
use crate::store::{FileKind, Ino, Name, Stat, TxnResult};
use crate::txn::machines::{
    check_xattr_name, Create, CreateState, FallocMode, Fallocate, Link, NewAttrs, Reclaim, SetAttr,
    SetAttrState, SetXattr, Unlink, UnlinkState, Write, WriteState, XattrFlags,
};
use crate::txn::{FileTxn, NewNode, RenameFlags, SetAttrChanges};

use super::{Durability, Engine, TxnOptions};

impl<D: Device> Engine<D> {
    /// Creates a regular file.
    pub fn create(
        &self,
        parent: Ino,
        name: &[u8],
        attrs: NewAttrs,
        options: impl Into<TxnOptions>,
    ) -> Result<Stat, FsError> {
        self.create_node(parent, name, NewNode::File, attrs, options.into())
    }

    /// Creates a directory.
    pub fn mkdir(
        &self,
        parent: Ino,
        name: &[u8],
        attrs: NewAttrs,
        options: impl Into<TxnOptions>,
    ) -> Result<Stat, FsError> {
        self.create_node(parent, name, NewNode::Dir, attrs, options.into())
    }

    /// Creates a symbolic link to `target`.
    pub fn symlink(
        &self,
        parent: Ino,
        name: &[u8],
        target: &[u8],
        attrs: NewAttrs,
        options: impl Into<TxnOptions>,
    ) -> Result<Stat, FsError> {
        let node = NewNode::Symlink(target.to_vec());
        self.create_node(parent, name, node, attrs, options.into())
    }

    /// Creates a FIFO, a socket or a device (`kind`: [`FileKind::is_special`]), or a
    /// regular file for [`FileKind::File`] (as `mknod(2)` with `S_IFREG`).
    pub fn mknod(
        &self,
        parent: Ino,
        name: &[u8],
        kind: FileKind,
        attrs: NewAttrs,
        options: impl Into<TxnOptions>,
    ) -> Result<Stat, FsError> {
        let node = if kind == FileKind::File {
            NewNode::File
        } else if kind.is_special() {
            NewNode::Special(kind)
        } else {
            return Err(FsError::Invalid(
                "mknod makes regular files, FIFOs, sockets and devices",
            ));
        };
        self.create_node(parent, name, node, attrs, options.into())
    }

    fn create_node(
        &self,
        parent: Ino,
        name: &[u8],
        node: NewNode,
        attrs: NewAttrs,
        options: TxnOptions,
    ) -> Result<Stat, FsError> {
        let machine = FileTxn::Create(Create {
            parent,
            name: Name::new(name)?,
            node,
            attrs,
            now: self.now(&options),
            state: CreateState::Start,
        });
        let result = self.run(machine, options)?;
        self.attr_of(result)
    }

    fn attr_of(&self, result: TxnResult) -> Result<Stat, FsError> {
        match result {
            TxnResult::Ino(ino) => self.getattr(ino),
            // A retransmission answered from the request table: the key named an earlier
            // request of another kind (a file server reusing request ids).
            _ => Err(FsError::Invalid(
                "the request key names an earlier request of another kind",
            )),
        }
    }

    /// Sets extended attribute `name` (`user.`, `trusted.` or `security.`) of `ino` to
    /// `value`, as `setxattr(2)` with `flags`; the inode's ctime changes.
    pub fn setxattr(
        &self,
        ino: Ino,
        name: &[u8],
        value: &[u8],
        flags: XattrFlags,
        options: impl Into<TxnOptions>,
    ) -> Result<(), FsError> {
        self.change_xattr(ino, name, Some(value.to_vec()), flags, options.into())
    }

    /// Removes extended attribute `name` of `ino` (ENODATA when it has none).
    pub fn removexattr(
        &self,
        ino: Ino,
        name: &[u8],
        options: impl Into<TxnOptions>,
    ) -> Result<(), FsError> {
        let flags = XattrFlags::default();
        self.change_xattr(ino, name, None, flags, options.into())
    }

    fn change_xattr(
        &self,
        ino: Ino,
        name: &[u8],
        value: Option<Vec<u8>>,
        flags: XattrFlags,
        options: TxnOptions,
    ) -> Result<(), FsError> {
        // Bounded before it is logged.
        check_xattr_name(name)?;
        if let Some(value) = &value {
            if value.len() > crate::constants::XATTR_VALUE_BYTES_MAX {
                return Err(FsError::XattrTooBig {
                    len_bytes: value.len(),
                });
            }
        }
        let machine = FileTxn::SetXattr(SetXattr {
            ino,
            name: name.to_vec(),
            value,
            flags,
            now: self.now(&options),
            done: false,
        });
        self.run(machine, options).map(drop)
    }

    /// Adds the name `name` in `parent` for inode `ino`.
    pub fn link(
        &self,
        ino: Ino,
        parent: Ino,
        name: &[u8],
        options: impl Into<TxnOptions>,
    ) -> Result<Stat, FsError> {
        let options = options.into();
        let machine = FileTxn::Link(Link {
            ino,
            parent,
            name: Name::new(name)?,
            now: self.now(&options),
            linked: false,
        });
        let result = self.run(machine, options)?;
        self.attr_of(result)
    }

    /// Removes a name that is not a directory; the inode goes with its last name.
    pub fn unlink(
        &self,
        parent: Ino,
        name: &[u8],
        options: impl Into<TxnOptions>,
    ) -> Result<(), FsError> {
        self.remove(parent, name, false, options.into())
    }

    /// Removes an empty directory.
    pub fn rmdir(
        &self,
        parent: Ino,
        name: &[u8],
        options: impl Into<TxnOptions>,
    ) -> Result<(), FsError> {
        self.remove(parent, name, true, options.into())
    }

    fn remove(
        &self,
        parent: Ino,
        name: &[u8],
        dir: bool,
        options: TxnOptions,
    ) -> Result<(), FsError> {
        let machine = FileTxn::Unlink(Unlink {
            parent,
            name: Name::new(name)?,
            dir,
            now: self.now(&options),
            state: UnlinkState::Start,
        });
        self.run(machine, options).map(|_| ())
    }

    /// Renames `from_parent/from_name` to `to_parent/to_name`.
    pub fn rename(
        &self,
        from_parent: Ino,
        from_name: &[u8],
        to_parent: Ino,
        to_name: &[u8],
        flags: RenameFlags,
        options: impl Into<TxnOptions>,
    ) -> Result<(), FsError> {
        let options = options.into();
        let machine = FileTxn::Rename(crate::txn::machines::Rename {
            from_parent,
            from_name: Name::new(from_name)?,
            to_parent,
            to_name: Name::new(to_name)?,
            flags,
            now: self.now(&options),
            state: crate::txn::machines::RenameState::Start,
        });
        self.run(machine, options).map(|_| ())
    }

    /// Writes `data` at `offset` of file `ino`; returns the bytes written.
    pub fn write(
        &self,
        ino: Ino,
        offset: u64,
        data: &[u8],
        options: impl Into<TxnOptions>,
    ) -> Result<u64, FsError> {
        let options = options.into();
        let machine = FileTxn::Write(Write {
            ino,
            offset,
            len: data.len() as u64,
            now: self.now(&options),
            state: WriteState::Start,
            data: Arc::new(data.to_vec()),
        });
        match self.run(machine, options)? {
            TxnResult::Bytes(n) => Ok(n),
            // A retransmission answered from the request table: the key named an earlier
            // request of another kind (a file server reusing request ids).
            _ => Err(FsError::Invalid(
                "the request key names an earlier request of another kind",
            )),
        }
    }

    /// Sets the size of file `ino` (data past it is released; growth reads as zeros).
    pub fn truncate(
        &self,
        ino: Ino,
        size: u64,
        options: impl Into<TxnOptions>,
    ) -> Result<Stat, FsError> {
        let changes = SetAttrChanges {
            size: Some(size),
            ..SetAttrChanges::default()
        };
        self.setattr(ino, changes, options)
    }

    /// fallocate(2) on file `ino`: allocates, punches or zeroes `len` bytes at `offset`
    /// ([`FallocMode`]), one transaction.
    pub fn fallocate(
        &self,
        ino: Ino,
        offset: u64,
        len: u64,
        mode: FallocMode,
        options: impl Into<TxnOptions>,
    ) -> Result<(), FsError> {
        let options = options.into();
        let machine = FileTxn::Fallocate(Fallocate {
            ino,
            offset,
            len,
            mode,
            now: self.now(&options),
            done: false,
        });
        self.run(machine, options).map(|_| ())
    }

    /// Changes attributes of `ino`.
    pub fn setattr(
        &self,
        ino: Ino,
        changes: SetAttrChanges,
        options: impl Into<TxnOptions>,
    ) -> Result<Stat, FsError> {
        let options = options.into();
        let machine = FileTxn::SetAttr(SetAttr {
            ino,
            changes,
            now: self.now(&options),
            state: SetAttrState::Start,
        });
        self.run(machine, options)?;
        self.getattr(ino)
    }

    /// The time a call stamps: its caller's (a replica applying its leader's operation), or
    /// the engine's clock.
    fn now(&self, options: &TxnOptions) -> crate::store::Time {
        options.now.unwrap_or_else(self.shared.options.clock)
    }

    // --- Open files ---

    /// A file server opened `ino`: while any handle is open, an inode that loses its last
    /// name stays, nameless, as an orphan (reads and writes go on), until
    /// [`Engine::release`] of its last handle reclaims it. Handles are not durable: after
    /// a crash recovery reclaims every orphan.
    pub fn open(&self, ino: Ino) -> Result<Stat, FsError> {
        // Not a change: a stopped (read-only) engine still opens files to read.
        let mut inner = self.lock();
        let attr = inner.store.attr(ino)?;
        *inner.open.entry(ino).or_insert(0) += 1;
        Ok(attr)
    }

    /// A file server released a handle of `ino` opened by [`Engine::open`]. The last
    /// handle of an orphan reclaims it (an `Async` transaction; recovery reclaims it
    /// should the crash come first).
    pub fn release(&self, ino: Ino) -> Result<(), FsError> {
        let mut inner = self.lock();
        match inner.open.get_mut(&ino) {
            Some(count) if *count > 1 => {
                *count -= 1;
                return Ok(());
            }
            Some(_) => {
                inner.open.remove(&ino);
            }
            None => return Err(FsError::Invalid("release of an inode not open")),
        }
        let orphan = inner
            .store
            .meta
            .inodes
            .get(&ino)
            .is_some_and(|inode| inode.attrs.nlink == 0);
        drop(inner);
        if orphan {
            self.reclaim(ino, Durability::Async.into())?;
        }
        Ok(())
    }

    /// Inodes held open by a file server.
    pub fn open_count(&self) -> usize {
        self.lock().open.len()
    }

    /// Orphans: inodes with no name and no link (unlinked while open).
    pub fn orphans(&self) -> Vec<Ino> {
        self.lock().store.meta.orphans()
    }

    /// Recovery: reclaims every orphan not held open (after a crash, all of them).
    /// Returns how many.
    pub fn reclaim_orphans(&self) -> Result<u64, FsError> {
        let mut reclaimed = 0;
        for ino in self.orphans() {
            if self.lock().open.contains_key(&ino) {
                continue;
            }
            self.reclaim(ino, Durability::Async.into())?;
            reclaimed += 1;
        }
        Ok(reclaimed)
    }

    fn reclaim(&self, ino: Ino, options: TxnOptions) -> Result<(), FsError> {
        let machine = FileTxn::Reclaim(Reclaim { ino, freed: false });
        self.run(machine, options).map(|_| ())
    }
}
