//! The store's consistency check: namespace, link counts, data blocks and free space agree.

use std::collections::HashMap;

use serde::Serialize;

use crate::constants::BLOCK_SIZE_BYTES;
use crate::io::Device;

use super::{FileKind, FsMeta, Ino, Inode, Store, ROOT_INO};

const BLOCK: u64 = BLOCK_SIZE_BYTES as u64;

/// What a check found.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct FsckReport {
    /// Inodes.
    pub inode_count: u64,
    /// Directories among them.
    pub dir_count: u64,
    /// Regular files among them.
    pub file_count: u64,
    /// Symbolic links among them.
    pub symlink_count: u64,
    /// FIFOs, sockets and devices among them.
    pub special_count: u64,
    /// Orphans: files unlinked while open, reclaimed at their last release (or by
    /// recovery).
    pub orphan_count: u64,
    /// Directory entries.
    pub entry_count: u64,
    /// Data blocks mapped by files.
    pub mapped_blocks: u64,
    /// Mapped data blocks read back and found to fail their checksum (or unreadable).
    pub bad_blocks: u64,
    /// Data blocks cached dirty (not yet written back).
    pub dirty_blocks: u64,
    /// Free data blocks below the high water.
    pub free_blocks: u64,
    /// Blocks freed since the last checkpoint.
    pub quarantined_blocks: u64,
    /// Everything that is wrong; empty when the store is consistent.
    pub problems: Vec<String>,
}

impl FsckReport {
    /// Whether nothing is wrong.
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Checks `store`. `allocated_blocks` is how many blocks transactions in flight hold
/// allocated and not yet mapped (0 after recovery).
pub fn check<D: Device>(store: &Store<D>, allocated_blocks: u64) -> FsckReport {
    let meta = &store.meta;
    let mut report = FsckReport::default();
    let mut problems: Vec<String> = Vec::new();
    check_root(meta, &mut problems);
    let names = count_names(meta, &mut report, &mut problems);
    // Data block -> the file block that maps it.
    let mut owner: HashMap<u64, (Ino, u64)> = HashMap::new();
    for (&ino, inode) in meta.inodes.iter() {
        report.inode_count += 1;
        if inode.ino != ino {
            problems.push(format!("inode {ino} says it is {}", inode.ino));
        }
        if ino >= meta.next_ino {
            problems.push(format!(
                "inode {ino} at or past the next number {}",
                meta.next_ino
            ));
        }
        check_links(meta, ino, inode, &names, &mut report, &mut problems);
        if inode.kind != FileKind::File && !inode.blocks.is_empty() {
            problems.push(format!("inode {ino} is not a file but maps data blocks"));
        }
        check_blocks(store, ino, inode, &mut owner, &mut report, &mut problems);
    }
    check_space(store, &owner, allocated_blocks, &mut report, &mut problems);
    report.problems = problems;
    report
}

/// The root is a directory and its own parent.
fn check_root(meta: &FsMeta, problems: &mut Vec<String>) {
    match meta.inodes.get(&ROOT_INO) {
        None => problems.push("the root directory is missing".into()),
        Some(root) if root.kind != FileKind::Dir => {
            problems.push("the root is not a directory".into())
        }
        Some(root) if root.parent != ROOT_INO => {
            problems.push(format!("the root's parent is {}", root.parent))
        }
        Some(_) => {}
    }
}

/// Names pointing at each inode, and subdirectories of each directory.
struct Names {
    links: HashMap<Ino, u32>,
    subdirs: HashMap<Ino, u32>,
}

/// Walks every entry table: counts names and subdirectories, checks each entry.
fn count_names(meta: &FsMeta, report: &mut FsckReport, problems: &mut Vec<String>) -> Names {
    let mut links: HashMap<Ino, u32> = HashMap::new();
    let mut subdirs: HashMap<Ino, u32> = HashMap::new();
    for (&dir, entries) in meta.dirs.iter() {
        match meta.inodes.get(&dir) {
            Some(inode) if inode.kind == FileKind::Dir => {}
            _ => problems.push(format!("entry table for {dir}, which is not a directory")),
        }
        for (name, &ino) in entries.iter() {
            report.entry_count += 1;
            if !name.is_valid() {
                problems.push(format!("invalid name {name} in directory {dir}"));
            }
            let Some(target) = meta.inodes.get(&ino) else {
                problems.push(format!("{dir}/{name} points at missing inode {ino}"));
                continue;
            };
            *links.entry(ino).or_default() += 1;
            if target.kind == FileKind::Dir {
                *subdirs.entry(dir).or_default() += 1;
                if target.parent != dir {
                    problems.push(format!(
                        "directory {ino} is named in {dir} but its parent is {}",
                        target.parent
                    ));
                }
            }
        }
    }
    Names { links, subdirs }
}

/// Link counts: a directory's is 2 plus its subdirectories, a file's its names; a file
/// with no name and no link is an orphan.
fn check_links(
    meta: &FsMeta,
    ino: Ino,
    inode: &Inode,
    names: &Names,
    report: &mut FsckReport,
    problems: &mut Vec<String>,
) {
    let named = names.links.get(&ino).copied().unwrap_or(0);
    match inode.kind {
        FileKind::Dir if ino != ROOT_INO && named == 0 && inode.attrs.nlink == 0 => {
            // Removed while a file server held it open: an orphan, empty.
            report.dir_count += 1;
            report.orphan_count += 1;
            if meta.dirs.get(&ino).is_none_or(|d| !d.is_empty()) {
                problems.push(format!("orphan directory {ino} has entries or no table"));
            }
        }
        FileKind::Dir => {
            report.dir_count += 1;
            if !meta.dirs.contains_key(&ino) {
                problems.push(format!("directory {ino} has no entry table"));
            }
            let want = 2 + names.subdirs.get(&ino).copied().unwrap_or(0);
            if inode.attrs.nlink != want {
                problems.push(format!(
                    "directory {ino} has nlink {}, want {want}",
                    inode.attrs.nlink
                ));
            }
            let want_named = if ino == ROOT_INO { 0 } else { 1 };
            if named != want_named {
                problems.push(format!("directory {ino} is named {named} times"));
            }
        }
        _ => {
            match inode.kind {
                FileKind::File => report.file_count += 1,
                FileKind::Symlink => {
                    report.symlink_count += 1;
                    if inode.target.is_empty() || inode.attrs.size != inode.target.len() as u64 {
                        problems.push(format!("symbolic link {ino} has a bad target or size"));
                    }
                }
                _ => {
                    report.special_count += 1;
                    if inode.attrs.size != 0 || !inode.target.is_empty() {
                        problems.push(format!("{:?} {ino} has a size or a target", inode.kind));
                    }
                }
            }
            if inode.attrs.nlink != named {
                problems.push(format!(
                    "inode {ino} has nlink {} but {named} names",
                    inode.attrs.nlink
                ));
            }
            if named == 0 {
                // With no link it is an orphan a file server holds open (see
                // `Engine::open`); with links and no name it is lost.
                if inode.attrs.nlink == 0 {
                    report.orphan_count += 1;
                } else {
                    problems.push(format!("inode {ino} is named nowhere"));
                }
            }
        }
    }
}

/// Every mapped block of `inode` is read back and checked against its checksum, inside
/// the file's size and the data file, mapped once and not free.
fn check_blocks<D: Device>(
    store: &Store<D>,
    ino: Ino,
    inode: &Inode,
    owner: &mut HashMap<u64, (Ino, u64)>,
    report: &mut FsckReport,
    problems: &mut Vec<String>,
) {
    let meta = &store.meta;
    let blocks_in_size = inode.attrs.size.div_ceil(BLOCK);
    for (file_block, mapped) in inode.blocks.iter() {
        let data_block = mapped.data_block;
        report.mapped_blocks += 1;
        // Every mapped block is read back and checked against its checksum.
        let mut bytes = [0u8; BLOCK_SIZE_BYTES];
        let mut intact = false;
        match store.data.read_block(data_block, &mut bytes) {
            Ok(()) if super::block_crc(&bytes) == mapped.crc => intact = true,
            Ok(()) => {
                report.bad_blocks += 1;
                problems.push(format!(
                    "data of inode {ino} at offset {} (data block {data_block}) fails its \
                     checksum",
                    file_block * BLOCK
                ));
            }
            Err(e) => {
                report.bad_blocks += 1;
                problems.push(format!(
                    "data of inode {ino} at offset {} (data block {data_block}) cannot be \
                     read: {e}",
                    file_block * BLOCK
                ));
            }
        }
        // Past the end only blocks preallocated (fallocate with KEEP_SIZE): zeros (the
        // bytes read above, when they are the block's; a checksum of zeros proves nothing
        // about them). A damaged block is reported once, above.
        if file_block >= blocks_in_size && intact && bytes.iter().any(|&b| b != 0) {
            problems.push(format!(
                "inode {ino} maps block {file_block} past its size {}",
                inode.attrs.size
            ));
        }
        if data_block >= meta.space.high_water_blocks {
            problems.push(format!(
                "inode {ino} maps data block {data_block} past the high water {}",
                meta.space.high_water_blocks
            ));
        }
        if let Some((other, other_block)) = owner.insert(data_block, (ino, file_block)) {
            problems.push(format!(
                "data block {data_block} is mapped by {other}:{other_block} and {ino}:{file_block}"
            ));
        }
        if let Some((&start, &len)) = meta.space.free.get_prev(&data_block) {
            if data_block < start + len {
                problems.push(format!("data block {data_block} of {ino} is also free"));
            }
        }
    }
}

/// Quarantined blocks are mapped by nobody, cached blocks lie inside their files, and the
/// free-space map adds up.
fn check_space<D: Device>(
    store: &Store<D>,
    owner: &HashMap<u64, (Ino, u64)>,
    allocated_blocks: u64,
    report: &mut FsckReport,
    problems: &mut Vec<String>,
) {
    let meta = &store.meta;
    for run in &meta.space.quarantine {
        for block in run.start..run.end() {
            if let Some((ino, _)) = owner.get(&block) {
                problems.push(format!("data block {block} of {ino} is also quarantined"));
            }
        }
    }
    for &(ino, block) in store.cache.dirty.keys() {
        report.dirty_blocks += 1;
        match meta.inodes.get(&ino) {
            Some(inode) if inode.kind == FileKind::File => {
                let size = inode.attrs.size;
                if block >= size.div_ceil(BLOCK) {
                    // Preallocated past the end: zeros only.
                    if store.cache.dirty[&(ino, block)].iter().any(|&b| b != 0) {
                        problems.push(format!("cached block {block} of {ino} is past its size"));
                    }
                } else if block == size / BLOCK {
                    let tail = &store.cache.dirty[&(ino, block)][(size % BLOCK) as usize..];
                    if tail.iter().any(|&b| b != 0) {
                        problems.push(format!("bytes past the end of {ino} are not zero"));
                    }
                }
            }
            _ => problems.push(format!("cached data for {ino}, which is not a file")),
        }
    }
    if let Err(why) = meta.space.check() {
        problems.push(format!("free-space map: {why}"));
    }
    report.free_blocks = meta.space.free.values().sum();
    report.quarantined_blocks = meta.space.quarantined_blocks();
    if meta.space.used_blocks != report.mapped_blocks + allocated_blocks {
        problems.push(format!(
            "{} blocks counted in use; files map {} and transactions hold {allocated_blocks}",
            meta.space.used_blocks, report.mapped_blocks
        ));
    }
    let accounted = meta.space.used_blocks + report.free_blocks + report.quarantined_blocks;
    if accounted != meta.space.high_water_blocks {
        problems.push(format!(
            "used {} + free {} + quarantined {} != {} blocks below the high water",
            meta.space.used_blocks,
            report.free_blocks,
            report.quarantined_blocks,
            meta.space.high_water_blocks
        ));
    }
}
