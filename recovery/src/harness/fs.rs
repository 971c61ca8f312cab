//! A reference file-system model and the file operations that run on both it and the
//! engine: the oracle of the crash sweeps, the torture and the `fs_crash` fuzz target, and a
//! ready scenario ([`FsScenario`]) for the harness.

use std::collections::BTreeMap;

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use smlog::io::Device;
use smlog::{
    Engine, FallocMode, FileKind, FsError, Ino, NewAttrs, RenameFlags, SetAttrChanges, TxnOptions,
    XattrFlags, ROOT_INO,
};

use super::{Scenario, SimEngine};

/// An errno.
pub type Errno = i32;

/// A node of the comparable view: everything but inode numbers and times.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum View {
    /// A regular file.
    File {
        /// Permission bits.
        mode: u32,
        /// Links.
        nlink: u32,
        /// Its bytes.
        data: Vec<u8>,
    },
    /// A directory.
    Dir {
        /// Permission bits.
        mode: u32,
        /// Links (2 + subdirectories).
        nlink: u32,
    },
    /// A symbolic link.
    Symlink {
        /// Its target.
        target: Vec<u8>,
        /// Links.
        nlink: u32,
    },
    /// A FIFO, socket or device.
    Special {
        /// Which, with its device number.
        kind: FileKind,
        /// Permission bits.
        mode: u32,
        /// Links.
        nlink: u32,
    },
    /// An extended attribute's value, at `path NUL name` (a path holds no NUL).
    Xattr(Vec<u8>),
}

/// Path -> node, for every name reachable from the root.
pub type Tree = BTreeMap<Vec<u8>, View>;

/// The reference model: an in-memory file system with the engine's rules, errno for errno.
#[derive(Clone, Debug)]
pub struct Model {
    nodes: BTreeMap<u64, MNode>,
    /// Extended attributes by inode.
    xattrs: BTreeMap<u64, BTreeMap<Vec<u8>, Vec<u8>>>,
    next: u64,
}

#[derive(Clone, Debug)]
enum MNode {
    File {
        data: Vec<u8>,
        nlink: u32,
        mode: u32,
    },
    Dir {
        entries: BTreeMap<Vec<u8>, u64>,
        parent: u64,
        mode: u32,
    },
    Symlink {
        target: Vec<u8>,
        nlink: u32,
    },
    Special {
        kind: FileKind,
        mode: u32,
        nlink: u32,
    },
}

/// An operation on paths (directories as '/'-joined names from the root, "" the root).
#[derive(Clone, Debug)]
pub enum FsOp {
    /// create(directory, name).
    Create(Vec<u8>, Vec<u8>),
    /// mkdir(directory, name).
    Mkdir(Vec<u8>, Vec<u8>),
    /// symlink(directory, name, target).
    Symlink(Vec<u8>, Vec<u8>, Vec<u8>),
    /// link(existing path, directory, name).
    Link(Vec<u8>, Vec<u8>, Vec<u8>),
    /// unlink(directory, name).
    Unlink(Vec<u8>, Vec<u8>),
    /// rmdir(directory, name).
    Rmdir(Vec<u8>, Vec<u8>),
    /// rename(from directory, from name, to directory, to name, flags).
    Rename(Vec<u8>, Vec<u8>, Vec<u8>, Vec<u8>, RenameFlags),
    /// write(path, offset, length, seed of the bytes: [`data_for`]).
    Write(Vec<u8>, u64, usize, u64),
    /// truncate(path, size).
    Truncate(Vec<u8>, u64),
    /// chmod(path, mode).
    Chmod(Vec<u8>, u32),
    /// mknod(directory, name, kind): a FIFO, socket or device.
    Mknod(Vec<u8>, Vec<u8>, FileKind),
    /// setxattr(path, name, value: its length and seed ([`data_for`]), create, replace), or
    /// removexattr(path, name) without a value.
    Xattr(Vec<u8>, Vec<u8>, Option<(usize, u64)>, bool, bool),
    /// fallocate(path, offset, length, mode).
    Fallocate(Vec<u8>, u64, u64, FallocMode),
}

/// `dir/name` ("" is the root).
pub fn join(dir: &[u8], name: &[u8]) -> Vec<u8> {
    if dir.is_empty() {
        name.to_vec()
    } else {
        [dir, b"/", name].concat()
    }
}

/// The bytes a write writes: a function of its seed.
pub fn data_for(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 32) as u8
        })
        .collect()
}

const ENOENT: Errno = libc::ENOENT;

impl Default for Model {
    fn default() -> Self {
        Self::new()
    }
}

impl Model {
    /// An empty root directory.
    pub fn new() -> Model {
        let mut nodes = BTreeMap::new();
        nodes.insert(
            1,
            MNode::Dir {
                entries: BTreeMap::new(),
                parent: 1,
                mode: 0o755,
            },
        );
        Model {
            nodes,
            xattrs: BTreeMap::new(),
            next: 2,
        }
    }

    fn resolve(&self, path: &[u8]) -> Result<u64, Errno> {
        let mut at = 1u64;
        if path.is_empty() {
            return Ok(at);
        }
        for part in path.split(|&b| b == b'/') {
            match &self.nodes[&at] {
                MNode::Dir { entries, .. } => {
                    at = *entries.get(part).ok_or(ENOENT)?;
                }
                _ => return Err(libc::ENOTDIR),
            }
        }
        Ok(at)
    }

    fn entries(&self, dir: u64) -> Result<&BTreeMap<Vec<u8>, u64>, Errno> {
        match &self.nodes[&dir] {
            MNode::Dir { entries, .. } => Ok(entries),
            _ => Err(libc::ENOTDIR),
        }
    }

    fn entries_mut(&mut self, dir: u64) -> &mut BTreeMap<Vec<u8>, u64> {
        match self.nodes.get_mut(&dir) {
            Some(MNode::Dir { entries, .. }) => entries,
            _ => unreachable!(),
        }
    }

    fn is_dir(&self, ino: u64) -> bool {
        matches!(self.nodes[&ino], MNode::Dir { .. })
    }

    fn is_ancestor(&self, ancestor: u64, mut dir: u64) -> bool {
        loop {
            if dir == ancestor {
                return true;
            }
            if dir == 1 {
                return false;
            }
            dir = match &self.nodes[&dir] {
                MNode::Dir { parent, .. } => *parent,
                _ => unreachable!(),
            };
        }
    }

    fn drop_link(&mut self, ino: u64) {
        let gone = match self.nodes.get_mut(&ino) {
            Some(MNode::File { nlink, .. })
            | Some(MNode::Symlink { nlink, .. })
            | Some(MNode::Special { nlink, .. }) => {
                *nlink -= 1;
                *nlink == 0
            }
            _ => true,
        };
        if gone {
            self.nodes.remove(&ino);
            self.xattrs.remove(&ino);
        }
    }

    fn add_link(&mut self, ino: u64) {
        if let Some(MNode::File { nlink, .. })
        | Some(MNode::Symlink { nlink, .. })
        | Some(MNode::Special { nlink, .. }) = self.nodes.get_mut(&ino)
        {
            *nlink += 1;
        }
    }

    /// Applies `op`; returns the errno the engine must give, or `Ok`.
    pub fn apply(&mut self, op: &FsOp) -> Result<(), Errno> {
        match op {
            FsOp::Create(dir, name)
            | FsOp::Mkdir(dir, name)
            | FsOp::Symlink(dir, name, _)
            | FsOp::Mknod(dir, name, _) => {
                let parent = self.resolve(dir)?;
                if self.entries(parent)?.contains_key(name) {
                    return Err(libc::EEXIST);
                }
                // A setgid directory passes its bit on to new directories.
                let setgid = match &self.nodes[&parent] {
                    MNode::Dir { mode, .. } => mode & 0o2000,
                    _ => 0,
                };
                let node = match op {
                    FsOp::Create(..) => MNode::File {
                        data: Vec::new(),
                        nlink: 1,
                        mode: 0o644,
                    },
                    FsOp::Mkdir(..) => MNode::Dir {
                        entries: BTreeMap::new(),
                        parent,
                        mode: 0o755 | setgid,
                    },
                    FsOp::Mknod(_, _, kind) => MNode::Special {
                        kind: *kind,
                        mode: 0o644,
                        nlink: 1,
                    },
                    FsOp::Symlink(_, _, target) => MNode::Symlink {
                        target: target.clone(),
                        nlink: 1,
                    },
                    _ => unreachable!(),
                };
                let ino = self.next;
                self.next += 1;
                self.nodes.insert(ino, node);
                self.entries_mut(parent).insert(name.clone(), ino);
                Ok(())
            }
            FsOp::Link(src, dir, name) => {
                let ino = self.resolve(src)?;
                let parent = self.resolve(dir)?;
                if self.is_dir(ino) {
                    return Err(libc::EPERM);
                }
                if self.entries(parent)?.contains_key(name) {
                    return Err(libc::EEXIST);
                }
                self.add_link(ino);
                self.entries_mut(parent).insert(name.clone(), ino);
                Ok(())
            }
            FsOp::Unlink(dir, name) | FsOp::Rmdir(dir, name) => {
                let parent = self.resolve(dir)?;
                let ino = *self.entries(parent)?.get(name).ok_or(ENOENT)?;
                let rmdir = matches!(op, FsOp::Rmdir(..));
                let is_dir = self.is_dir(ino);
                if rmdir && !is_dir {
                    return Err(libc::ENOTDIR);
                }
                if !rmdir && is_dir {
                    return Err(libc::EISDIR);
                }
                if is_dir && !self.entries(ino)?.is_empty() {
                    return Err(libc::ENOTEMPTY);
                }
                self.entries_mut(parent).remove(name);
                self.drop_link(ino);
                Ok(())
            }
            FsOp::Rename(fdir, fname, tdir, tname, flags) => {
                let from = self.resolve(fdir)?;
                let to = self.resolve(tdir)?;
                self.rename(from, fname, to, tname, *flags)
            }
            FsOp::Write(path, offset, len, seed) => {
                let ino = self.resolve(path)?;
                match self.nodes.get_mut(&ino) {
                    Some(MNode::File { data, .. }) => {
                        if *len == 0 {
                            return Ok(());
                        }
                        let end = *offset as usize + len;
                        if data.len() < end {
                            data.resize(end, 0);
                        }
                        data[*offset as usize..end].copy_from_slice(&data_for(*seed, *len));
                        Ok(())
                    }
                    Some(MNode::Dir { .. }) => Err(libc::EISDIR),
                    _ => Err(libc::EINVAL),
                }
            }
            FsOp::Truncate(path, size) => {
                let ino = self.resolve(path)?;
                match self.nodes.get_mut(&ino) {
                    Some(MNode::File { data, .. }) => {
                        data.resize(*size as usize, 0);
                        Ok(())
                    }
                    Some(MNode::Dir { .. }) => Err(libc::EISDIR),
                    _ => Err(libc::EINVAL),
                }
            }
            FsOp::Fallocate(path, offset, len, mode) => {
                let ino = self.resolve(path)?;
                let data = match self.nodes.get_mut(&ino) {
                    Some(MNode::File { data, .. }) => data,
                    Some(MNode::Dir { .. }) => return Err(libc::EISDIR),
                    _ => return Err(libc::EINVAL),
                };
                if *len == 0 {
                    return Err(libc::EINVAL);
                }
                let end = (offset + len) as usize;
                let (zero, keep_size) = match mode {
                    FallocMode::Allocate { keep_size } => (false, *keep_size),
                    FallocMode::PunchHole => (true, true),
                    FallocMode::ZeroRange { keep_size } => (true, *keep_size),
                };
                if zero {
                    let (from, to) = ((*offset as usize).min(data.len()), end.min(data.len()));
                    data[from..to].fill(0);
                }
                if !keep_size && data.len() < end {
                    data.resize(end, 0);
                }
                Ok(())
            }
            FsOp::Xattr(path, name, value, create, replace) => {
                let ino = self.resolve(path)?;
                let known = [&b"user."[..], b"trusted.", b"security."];
                if name.is_empty() || name.len() > 255 {
                    return Err(libc::ERANGE);
                }
                if known.contains(&&name[..]) {
                    return Err(libc::EINVAL);
                }
                if !known.iter().any(|ns| name.starts_with(ns)) {
                    return Err(libc::EOPNOTSUPP);
                }
                let file_or_dir =
                    matches!(self.nodes[&ino], MNode::File { .. } | MNode::Dir { .. });
                if name.starts_with(b"user.") && !file_or_dir {
                    return Err(libc::EPERM);
                }
                let attrs = self.xattrs.entry(ino).or_default();
                let exists = attrs.contains_key(name);
                match value {
                    Some((len, seed)) => {
                        if *create && exists {
                            return Err(libc::EEXIST);
                        }
                        if *replace && !exists {
                            return Err(libc::ENODATA);
                        }
                        attrs.insert(name.clone(), data_for(*seed, *len));
                    }
                    None if !exists => return Err(libc::ENODATA),
                    None => {
                        attrs.remove(name);
                    }
                }
                Ok(())
            }
            FsOp::Chmod(path, new_mode) => {
                let ino = self.resolve(path)?;
                match self.nodes.get_mut(&ino) {
                    Some(MNode::File { mode, .. })
                    | Some(MNode::Dir { mode, .. })
                    | Some(MNode::Special { mode, .. }) => *mode = new_mode & 0o7777,
                    _ => {}
                }
                Ok(())
            }
        }
    }

    fn rename(
        &mut self,
        from: u64,
        fname: &[u8],
        to: u64,
        tname: &[u8],
        flags: RenameFlags,
    ) -> Result<(), Errno> {
        if flags.exchange && flags.no_replace {
            return Err(libc::EINVAL);
        }
        let src = *self.entries(from)?.get(fname).ok_or(ENOENT)?;
        let dst = self.entries(to)?.get(tname).copied();
        let src_dir = self.is_dir(src);
        if src_dir && to != from && self.is_ancestor(src, to) {
            return Err(libc::EINVAL);
        }
        if flags.exchange {
            let dst = dst.ok_or(ENOENT)?;
            if dst == src {
                return Ok(());
            }
            if self.is_dir(dst) && to != from && self.is_ancestor(dst, from) {
                return Err(libc::EINVAL);
            }
            self.entries_mut(to).insert(tname.to_vec(), src);
            self.entries_mut(from).insert(fname.to_vec(), dst);
            self.set_parent(src, to);
            self.set_parent(dst, from);
            return Ok(());
        }
        if let Some(dst) = dst {
            if flags.no_replace {
                return Err(libc::EEXIST);
            }
            if dst == src {
                return Ok(());
            }
            let dst_dir = self.is_dir(dst);
            match (src_dir, dst_dir) {
                (true, false) => return Err(libc::ENOTDIR),
                (false, true) => return Err(libc::EISDIR),
                (true, true) if !self.entries(dst)?.is_empty() => return Err(libc::ENOTEMPTY),
                _ => {}
            }
            self.entries_mut(to).remove(tname);
            self.drop_link(dst);
        }
        self.entries_mut(from).remove(fname);
        self.entries_mut(to).insert(tname.to_vec(), src);
        self.set_parent(src, to);
        Ok(())
    }

    fn set_parent(&mut self, ino: u64, new_parent: u64) {
        if let Some(MNode::Dir { parent, .. }) = self.nodes.get_mut(&ino) {
            *parent = new_parent;
        }
    }

    /// The comparable view.
    pub fn tree(&self) -> Tree {
        let mut tree = Tree::new();
        self.walk(1, &[], &mut tree);
        tree
    }

    fn walk(&self, dir: u64, path: &[u8], tree: &mut Tree) {
        let MNode::Dir { entries, .. } = &self.nodes[&dir] else {
            unreachable!()
        };
        for (name, &ino) in entries {
            let child = join(path, name);
            let view = match &self.nodes[&ino] {
                MNode::File { data, nlink, mode } => View::File {
                    mode: *mode,
                    nlink: *nlink,
                    data: data.clone(),
                },
                MNode::Dir { entries, mode, .. } => View::Dir {
                    mode: *mode,
                    nlink: 2 + entries.values().filter(|i| self.is_dir(**i)).count() as u32,
                },
                MNode::Symlink { target, nlink } => View::Symlink {
                    target: target.clone(),
                    nlink: *nlink,
                },
                MNode::Special { kind, mode, nlink } => View::Special {
                    kind: *kind,
                    mode: *mode,
                    nlink: *nlink,
                },
            };
            let is_dir = matches!(view, View::Dir { .. });
            tree.insert(child.clone(), view);
            for (name, value) in self.xattrs.get(&ino).into_iter().flatten() {
                let at = [&child[..], b"\0", name].concat();
                tree.insert(at, View::Xattr(value.clone()));
            }
            if is_dir {
                self.walk(ino, &child, tree);
            }
        }
    }
}

/// The comparable view of the engine's tree.
pub fn tree_of<D: Device>(engine: &Engine<D>) -> Result<Tree, FsError> {
    let mut tree = Tree::new();
    walk_engine(engine, ROOT_INO, &[], &mut tree)?;
    Ok(tree)
}

fn walk_engine<D: Device>(
    engine: &Engine<D>,
    dir: Ino,
    path: &[u8],
    tree: &mut Tree,
) -> Result<(), FsError> {
    let mut after: Option<Vec<u8>> = None;
    loop {
        let entries = engine.readdir(dir, after.as_deref(), 7)?;
        if entries.is_empty() {
            return Ok(());
        }
        for entry in &entries {
            let child = join(path, &entry.name);
            let attr = engine.getattr(entry.ino)?;
            let view = match attr.kind {
                FileKind::File => View::File {
                    mode: attr.mode,
                    nlink: attr.nlink,
                    data: engine.read(entry.ino, 0, attr.size as usize)?,
                },
                FileKind::Dir => View::Dir {
                    mode: attr.mode,
                    nlink: attr.nlink,
                },
                FileKind::Symlink => View::Symlink {
                    target: engine.readlink(entry.ino)?,
                    nlink: attr.nlink,
                },
                kind => View::Special {
                    kind,
                    mode: attr.mode,
                    nlink: attr.nlink,
                },
            };
            tree.insert(child.clone(), view);
            for name in engine.listxattr(entry.ino)? {
                let value = engine.getxattr(entry.ino, &name)?;
                tree.insert([&child[..], b"\0", &name].concat(), View::Xattr(value));
            }
            if attr.kind == FileKind::Dir {
                walk_engine(engine, entry.ino, &child, tree)?;
            }
        }
        after = entries.last().map(|e| e.name.clone());
    }
}

fn resolve<D: Device>(engine: &Engine<D>, path: &[u8]) -> Result<Ino, FsError> {
    let mut at = ROOT_INO;
    if path.is_empty() {
        return Ok(at);
    }
    for part in path.split(|&b| b == b'/') {
        at = engine.lookup(at, part)?.ino;
    }
    Ok(at)
}

/// Runs `op` on the engine.
pub fn run_op<D: Device>(
    engine: &Engine<D>,
    op: &FsOp,
    options: TxnOptions,
) -> Result<(), FsError> {
    let file = NewAttrs {
        mode: 0o644,
        uid: 1000,
        gid: 1000,
        umask: 0,
    };
    let dir_attrs = NewAttrs {
        mode: 0o755,
        uid: 1000,
        gid: 1000,
        umask: 0,
    };
    match op {
        FsOp::Create(dir, name) => engine
            .create(resolve(engine, dir)?, name, file, options)
            .map(drop),
        FsOp::Mkdir(dir, name) => engine
            .mkdir(resolve(engine, dir)?, name, dir_attrs, options)
            .map(drop),
        FsOp::Symlink(dir, name, target) => engine
            .symlink(resolve(engine, dir)?, name, target, file, options)
            .map(drop),
        FsOp::Link(src, dir, name) => {
            let ino = resolve(engine, src)?;
            engine
                .link(ino, resolve(engine, dir)?, name, options)
                .map(drop)
        }
        FsOp::Unlink(dir, name) => engine.unlink(resolve(engine, dir)?, name, options),
        FsOp::Rmdir(dir, name) => engine.rmdir(resolve(engine, dir)?, name, options),
        FsOp::Rename(fdir, fname, tdir, tname, flags) => {
            let from = resolve(engine, fdir)?;
            let to = resolve(engine, tdir)?;
            engine.rename(from, fname, to, tname, *flags, options)
        }
        FsOp::Write(path, offset, len, seed) => engine
            .write(
                resolve(engine, path)?,
                *offset,
                &data_for(*seed, *len),
                options,
            )
            .map(drop),
        FsOp::Truncate(path, size) => engine
            .truncate(resolve(engine, path)?, *size, options)
            .map(drop),
        FsOp::Fallocate(path, offset, len, mode) => {
            engine.fallocate(resolve(engine, path)?, *offset, *len, *mode, options)
        }
        FsOp::Mknod(dir, name, kind) => engine
            .mknod(resolve(engine, dir)?, name, *kind, file, options)
            .map(drop),
        FsOp::Xattr(path, name, value, create, replace) => {
            let ino = resolve(engine, path)?;
            match value {
                Some((len, seed)) => {
                    let flags = XattrFlags {
                        create: *create,
                        replace: *replace,
                    };
                    engine.setxattr(ino, name, &data_for(*seed, *len), flags, options)
                }
                None => engine.removexattr(ino, name, options),
            }
        }
        FsOp::Chmod(path, mode) => {
            let changes = SetAttrChanges {
                mode: Some(*mode),
                ..SetAttrChanges::default()
            };
            engine
                .setattr(resolve(engine, path)?, changes, options)
                .map(drop)
        }
    }
}

/// A random operation over a small namespace (so operations meet each other).
pub fn random_op<R: Rng>(rng: &mut R, seed: u64, dirs: &[&[u8]], names: &[&[u8]]) -> FsOp {
    let dir = |rng: &mut R| dirs[rng.gen_range(0..dirs.len())].to_vec();
    let name = |rng: &mut R| names[rng.gen_range(0..names.len())].to_vec();
    let path = |rng: &mut R| join(&dir(rng), &name(rng));
    match rng.gen_range(0..100) {
        0..=14 => FsOp::Create(dir(rng), name(rng)),
        15..=22 => FsOp::Mkdir(dir(rng), name(rng)),
        23..=25 => FsOp::Symlink(dir(rng), name(rng), b"../target".to_vec()),
        26..=31 => FsOp::Link(path(rng), dir(rng), name(rng)),
        32..=41 => FsOp::Unlink(dir(rng), name(rng)),
        42..=46 => FsOp::Rmdir(dir(rng), name(rng)),
        47..=61 => {
            let flags = match rng.gen_range(0..6) {
                0 => RenameFlags {
                    no_replace: true,
                    exchange: false,
                },
                1 => RenameFlags {
                    no_replace: false,
                    exchange: true,
                },
                _ => RenameFlags::default(),
            };
            FsOp::Rename(dir(rng), name(rng), dir(rng), name(rng), flags)
        }
        62..=85 => {
            let len = if rng.gen_bool(0.25) {
                rng.gen_range(64 * 1024..200 * 1024)
            } else {
                rng.gen_range(0..9000)
            };
            FsOp::Write(
                path(rng),
                rng.gen_range(0..150_000),
                len,
                seed ^ rng.gen::<u64>(),
            )
        }
        86..=91 => FsOp::Truncate(path(rng), rng.gen_range(0..120_000)),
        92..=94 => {
            let mode = match rng.gen_range(0..5) {
                0 => FallocMode::Allocate { keep_size: false },
                1 => FallocMode::Allocate { keep_size: true },
                2 => FallocMode::ZeroRange { keep_size: false },
                3 => FallocMode::ZeroRange { keep_size: true },
                _ => FallocMode::PunchHole,
            };
            let offset = rng.gen_range(0..150_000);
            FsOp::Fallocate(path(rng), offset, rng.gen_range(1..40_000), mode)
        }
        95 => FsOp::Chmod(path(rng), rng.gen_range(0..0o10000)),
        96..=97 => {
            let names: [&[u8]; 5] = [b"user.a", b"user.b", b"trusted.t", b"security.s", b"os2.x"];
            let name = names[rng.gen_range(0..names.len())].to_vec();
            let value = rng
                .gen_bool(0.75)
                .then(|| (rng.gen_range(0..200), seed ^ rng.gen::<u64>()));
            FsOp::Xattr(path(rng), name, value, rng.gen_bool(0.2), rng.gen_bool(0.2))
        }
        _ => {
            let kind = match rng.gen_range(0..4) {
                0 => FileKind::Fifo,
                1 => FileKind::Socket,
                2 => FileKind::CharDevice { rdev: 0x0103 },
                _ => FileKind::BlockDevice { rdev: 0x0801 },
            };
            FsOp::Mknod(dir(rng), name(rng), kind)
        }
    }
}

/// Operations that populate `dirs` (in order: parents first) with a file `x` in each.
pub fn setup_ops(dirs: &[&[u8]]) -> Vec<FsOp> {
    let mut ops = Vec::new();
    for dir in dirs.iter().filter(|d| !d.is_empty()) {
        let (parent, name) = match dir.iter().rposition(|&b| b == b'/') {
            Some(at) => (dir[..at].to_vec(), dir[at + 1..].to_vec()),
            None => (Vec::new(), dir.to_vec()),
        };
        ops.push(FsOp::Mkdir(parent, name));
    }
    for dir in dirs {
        ops.push(FsOp::Create(dir.to_vec(), b"x".to_vec()));
        ops.push(FsOp::Write(join(dir, b"x"), 0, 5000, dir.len() as u64));
    }
    ops
}

/// The file-system scenario `smlog torture` runs: the operations above over a small
/// namespace (four directories, five names, so operations meet each other), checked
/// against [`Model`] by the whole tree's view.
#[derive(Clone, Debug, Default)]
pub struct FsScenario;

/// The directories [`FsScenario`] works in.
pub const FS_SCENARIO_DIRS: &[&[u8]] = &[b"", b"a", b"b", b"a/c"];
/// The names [`FsScenario`] uses.
pub const FS_SCENARIO_NAMES: &[&[u8]] = &[b"a", b"b", b"c", b"x", b"y"];

impl Scenario for FsScenario {
    type Op = FsOp;
    type Model = Model;

    fn options(&self) -> crate::OpenOptions {
        let mut options = crate::OpenOptions::default();
        // Small segments, so runs cross segment boundaries and reuse segments.
        options.engine.segment_size_bytes = 256 * 1024;
        options
    }

    fn model(&self) -> Model {
        Model::new()
    }

    fn setup(&self) -> Vec<FsOp> {
        setup_ops(FS_SCENARIO_DIRS)
    }

    fn random_op(&self, rng: &mut ChaCha8Rng, _model: &Model) -> FsOp {
        let seed = rng.gen();
        random_op(rng, seed, FS_SCENARIO_DIRS, FS_SCENARIO_NAMES)
    }

    fn run(&self, engine: &SimEngine, op: &FsOp, options: TxnOptions) -> Result<(), FsError> {
        run_op(engine, op, options)
    }

    fn apply(&self, model: &mut Model, op: &FsOp) -> Result<(), i32> {
        model.apply(op)
    }

    fn matches(&self, engine: &SimEngine, model: &Model) -> Result<bool, FsError> {
        Ok(tree_of(engine)? == model.tree())
    }

    fn difference(&self, engine: &SimEngine, model: &Model) -> String {
        let got = match tree_of(engine) {
            Ok(tree) => tree,
            Err(e) => return format!(" (the recovered tree cannot be read: {e})"),
        };
        let want = model.tree();
        let mut lines = Vec::new();
        for (path, view) in &want {
            match got.get(path) {
                None => lines.push(format!("{} missing", String::from_utf8_lossy(path))),
                Some(found) if found != view => lines.push(format!(
                    "{} differs: {}",
                    String::from_utf8_lossy(path),
                    describe_view_difference(found, view)
                )),
                Some(_) => {}
            }
        }
        for path in got.keys().filter(|p| !want.contains_key(*p)) {
            lines.push(format!("{} unexpected", String::from_utf8_lossy(path)));
        }
        format!(
            "; against the last acknowledged state: {}",
            lines.join(", ")
        )
    }
}

/// What differs between two views of one path, briefly (data by its first differing byte).
fn describe_view_difference(got: &View, want: &View) -> String {
    match (got, want) {
        (
            View::File { mode, nlink, data },
            View::File {
                mode: want_mode,
                nlink: want_nlink,
                data: want_data,
            },
        ) => {
            let mut parts = Vec::new();
            if mode != want_mode {
                parts.push(format!("mode {mode:o} not {want_mode:o}"));
            }
            if nlink != want_nlink {
                parts.push(format!("nlink {nlink} not {want_nlink}"));
            }
            if data.len() != want_data.len() {
                parts.push(format!("size {} not {}", data.len(), want_data.len()));
            }
            if let Some(at) = data.iter().zip(want_data).position(|(a, b)| a != b) {
                parts.push(format!("bytes differ from offset {at}"));
            }
            parts.join(", ")
        }
        (got, want) => format!("{got:?} not {want:?}"),
    }
}
