//! A file system exported from one engine and imported into a new one
//! ([`smlog::Engine::export`], [`smlog::Engine::import`]): what a replica that fell behind
//! installs. The import holds exactly what the export saw (names, bytes, inode numbers,
//! attributes, request outcomes, applied entry), even when the source went on changing and
//! checkpointing (so reusing the blocks the export names) before the export was read; it
//! survives a power loss right after; damage in the image or the blocks is refused.

mod fs_common;

use std::sync::Arc;

use fs_common::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use smlog::internals::FsMeta;
use smlog::io::sim::{CrashPlan, SimDevice};
use smlog::{CorruptKind, Engine, EntryId, FsError, TxnOptions};

const DIRS: &[&[u8]] = &[b"", b"d", b"d/e"];
const NAMES: &[&[u8]] = &[b"a", b"b", b"c", b"d", b"e"];

/// What must survive an export: every inode as a file server sees it (but the count of
/// blocks, which counts only those written back so far), and the rest of the metadata
/// that is not a block's place.
fn essence(meta: &FsMeta) -> String {
    let stats: Vec<_> = meta
        .inodes
        .values()
        .map(|inode| smlog::Stat {
            blocks: 0,
            ..inode.attr()
        })
        .collect();
    format!(
        "{stats:?} {:?} {:?} {:?} {:?}",
        meta.dirs, meta.next_ino, meta.keys, meta.applied_entry
    )
}

fn run_random<R: Rng>(engine: &SimEngine, rng: &mut R, seed: u64, count: usize) {
    for _ in 0..count {
        let op = random_op(rng, seed, DIRS, NAMES);
        let _ = run_op(engine, &op, sync_or_async(rng));
        if rng.gen_bool(0.1) {
            engine.checkpoint().unwrap();
        }
    }
}

fn import(
    device: &Arc<SimDevice>,
    image: &[u8],
    read: &mut smlog::internals::ReadBlocks<'_>,
) -> Result<SimEngine, FsError> {
    Engine::import(Arc::clone(device), test_options().engine, image, read)
}

#[test]
fn an_import_holds_what_the_export_saw_while_the_source_went_on() {
    let mut blocks_seen = 0;
    for seed in 0..40u64 {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let source = Arc::new(SimDevice::new(seed));
        let (engine, _) = open_sim(&source, test_options()).unwrap();
        for op in setup_ops(DIRS) {
            run_op(&engine, &op, TxnOptions::default()).unwrap();
        }
        run_random(&engine, &mut rng, seed, 40);
        let mut export = engine.export().unwrap();
        let entry = Some(EntryId {
            term: 2,
            index: 1000 + seed,
        });
        export.set_applied_entry(entry).unwrap();
        let tree = tree_of(&engine).unwrap();
        let mut meta = engine.meta();
        meta.applied_entry = entry;
        // The source goes on: files cut, rewritten and removed, checkpoints reusing blocks.
        run_random(&engine, &mut rng, seed ^ 1, 60);
        engine.checkpoint().unwrap();
        engine.checkpoint().unwrap();
        blocks_seen += export.block_count();

        let target = Arc::new(SimDevice::new(seed + 1));
        let imported = import(&target, export.image(), &mut |first, out| {
            export.read_blocks(first, out)
        })
        .unwrap();
        let context = format!("seed {seed}");
        assert_eq!(tree_of(&imported).unwrap(), tree, "{context}");
        assert_eq!(essence(&imported.meta()), essence(&meta), "{context}");
        assert_eq!(imported.applied_entry(), entry, "{context}");
        let fsck = imported.fsck();
        assert!(fsck.is_clean(), "{context}: {:?}", fsck.problems);
        assert_eq!(fsck.mapped_blocks, export.block_count(), "{context}");
        // Nothing of it waits for the log: a power loss right after keeps it all.
        drop(imported);
        target.crash();
        target.restart(&CrashPlan::power_loss());
        let (reopened, _) = open_sim(&target, test_options()).unwrap();
        assert_eq!(
            tree_of(&reopened).unwrap(),
            tree,
            "{context}: after a crash"
        );
        assert_eq!(reopened.applied_entry(), entry, "{context}: after a crash");
        // And it takes changes like any store.
        run_random(&reopened, &mut rng, seed ^ 2, 20);
        assert!(reopened.fsck().is_clean(), "{context}: after more changes");
    }
    assert!(blocks_seen > 200, "the exports held {blocks_seen} blocks");
}

#[test]
fn a_damaged_import_is_refused_with_what_is_wrong() {
    let source = Arc::new(SimDevice::new(7));
    let (engine, _) = open_sim(&source, test_options()).unwrap();
    for op in setup_ops(DIRS) {
        run_op(&engine, &op, TxnOptions::default()).unwrap();
    }
    let export = engine.export().unwrap();
    assert!(export.block_count() > 2);
    let mut read = |first: u64, out: &mut [u8]| export.read_blocks(first, out);

    // A block whose bytes changed on the way.
    let flipped = import(
        &Arc::new(SimDevice::new(1)),
        export.image(),
        &mut |first, out| {
            read(first, out)?;
            if first == 0 {
                out[4096 + 17] ^= 1;
            }
            Ok(())
        },
    );
    match flipped {
        Err(FsError::Corrupt { kind, detail }) => {
            assert_eq!(kind, CorruptKind::DataFile);
            assert!(detail.contains("imported block 1"), "{detail}");
        }
        other => panic!("a changed block was imported: {:?}", other.map(|_| ())),
    }
    // An image cut short, and one that is not an image.
    let image = export.image();
    for bad in [&image[..image.len() / 2], &b"not an image at all"[..]] {
        match import(&Arc::new(SimDevice::new(2)), bad, &mut read) {
            Err(FsError::Corrupt { kind, .. }) => assert_eq!(kind, CorruptKind::Image),
            other => panic!("a bad image was imported: {:?}", other.map(|_| ())),
        }
    }
    // An image that maps one block to two files.
    let mut meta: FsMeta = postcard::from_bytes(image).unwrap();
    let files: Vec<_> = meta
        .inodes
        .values()
        .filter(|i| !i.blocks.is_empty())
        .map(|i| i.ino)
        .collect();
    assert!(files.len() >= 2);
    let first_block = meta.inodes[&files[0]].blocks.iter().next().unwrap();
    let mut second = meta.inodes[&files[1]].clone();
    second.blocks.insert(0, first_block.1);
    meta.inodes.insert(second.ino, second);
    let twice = postcard::to_stdvec(&meta).unwrap();
    match import(&Arc::new(SimDevice::new(3)), &twice, &mut read) {
        Err(FsError::Corrupt { kind, detail }) => {
            assert_eq!(kind, CorruptKind::Image);
            assert!(detail.contains("twice"), "{detail}");
        }
        other => panic!("a block mapped twice was imported: {:?}", other.map(|_| ())),
    }
}
