//! Checkpoints: the dirty state written back, a new image and superblock, and the log
//! before the oldest record recovery still needs reused.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use crate::constants::{
    BLOCK_SIZE_BYTES, CHECKPOINT_MAP_CHUNK_BLOCKS, CHECKPOINT_POLL_INTERVAL,
    CHECKPOINT_WRITE_GROUP_BLOCKS_MAX,
};
use crate::error::FsError;
use crate::ids::Lsn;
use crate::io::{AlignedBuf, Device};
use crate::store::image::{self, Superblock};
use crate::store::{block_crc, runs_of, Block, DataFile, FsMeta, Ino, Mapped, Run};

use super::{CheckpointStats, Engine, Shared};

impl<D: Device> Engine<D> {
    /// Writes the dirty state back and a new superblock, then reuses the log before the
    /// oldest record recovery still needs. Commits go on meanwhile, held off only for the
    /// snapshot ([`CheckpointStats::stall`]).
    pub fn checkpoint(&self) -> Result<CheckpointStats, FsError> {
        let _one_at_a_time = self
            .shared
            .checkpoint_lock
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let started = Instant::now();
        // 1. Under the lock, O(dirty blocks) of cheap steps: the dirty cache becomes the
        //    flushing cache (still read from), blocks are allocated for it, and the
        //    metadata is snapshot (O(1)).
        let mut snapshot = self.take_snapshot()?;
        // The snapshot is this checkpoint's own: map the new blocks in it (copy on write:
        // the blocks it names now were never live data).
        let assigned = self.assign_blocks(&mut snapshot)?;
        // 2. Without the lock: the log first (write-ahead), then data, image, superblock.
        let image_bytes = match self.write_out(&snapshot, &assigned) {
            Ok(n) => n,
            // The live mapping names blocks that may not hold their data: stop.
            Err(e) => return Err(self.stop(e)),
        };
        // 3. The old image no longer names the quarantined blocks: reuse them. Then the
        //    live store maps the written blocks too.
        {
            let mut inner = self.lock();
            if let Err(e) = inner.store.meta.space.make_free(&snapshot.quarantine) {
                return Err(self.stop_in(&mut inner, e));
            }
        }
        let map_stall = self.map_written(&assigned)?;
        // 4. Reuse the log before what recovery needs, and remove older images.
        let released_segments = self
            .shared
            .log
            .release_prefix(snapshot.scan_start_lsn.saturating_sub(1))
            .map_err(|e| self.stop(e.into()))?;
        self.shared.log.retry_segments();
        image::retire_images(&**self.shared.data.device(), snapshot.seq, image_bytes);
        Ok(CheckpointStats {
            seq: snapshot.seq,
            applied_lsn: snapshot.meta.applied_lsn,
            scan_start_lsn: snapshot.scan_start_lsn,
            written_blocks: assigned.len() as u64,
            image_bytes,
            released_segments,
            stall: snapshot.stall.max(map_stall),
            elapsed: started.elapsed(),
        })
    }

    /// Phase 1, under the lock: the dirty cache becomes the flushing cache, blocks are
    /// planned and marked used for it, and the metadata is snapshot.
    fn take_snapshot(&self) -> Result<Snapshot, FsError> {
        let mut inner = self.lock_usable()?;
        let stall_started = Instant::now();
        let store = &mut inner.store;
        assert!(
            store.cache.flushing.is_empty(),
            "one checkpoint at a time: the last one mapped all it wrote"
        );
        std::mem::swap(&mut store.cache.dirty, &mut store.cache.flushing);
        let writes: Vec<((Ino, u64), Arc<Block>)> = store
            .cache
            .flushing
            .iter()
            .map(|(key, block)| (*key, Arc::clone(block)))
            .collect();
        let mut runs = Vec::new();
        if !writes.is_empty() {
            let planned = store.meta.space.plan(writes.len() as u64).and_then(|runs| {
                // Writers made room for these blocks on the host already; after a crash
                // (the data file's length not yet durable) it may take growing here.
                let end = runs.iter().map(Run::end).max().unwrap_or(0);
                self.shared.data.ensure_len(end).map(|()| runs)
            });
            runs = match planned {
                Ok(runs) => runs,
                Err(e) => {
                    // Nothing changed yet: the cache goes back.
                    let store = &mut inner.store;
                    std::mem::swap(&mut store.cache.dirty, &mut store.cache.flushing);
                    return Err(e);
                }
            };
            if let Err(e) = inner.store.meta.space.mark_used(&runs) {
                return Err(self.stop_in(&mut inner, e));
            }
            inner.checkpoint_blocks = writes.len() as u64;
        }
        let meta = inner.store.meta.clone();
        // An export may name blocks freed since it was taken: they stay in quarantine (and
        // in this image's) until no export is alive.
        let quarantine = if self.shared.exports.load(Ordering::Acquire) > 0 {
            Vec::new()
        } else {
            inner.store.meta.space.take_quarantine()
        };
        let scan_start_lsn = inner
            .active
            .values()
            .map(|a| a.first_lsn)
            .min()
            .unwrap_or(meta.applied_lsn + 1)
            .min(meta.applied_lsn + 1);
        inner.checkpoint_seq += 1;
        inner.log_bytes_at_checkpoint = self.shared.log.stats().written_bytes;
        Ok(Snapshot {
            meta,
            writes,
            runs,
            quarantine,
            scan_start_lsn,
            seq: inner.checkpoint_seq,
            stall: stall_started.elapsed(),
        })
    }

    /// The snapshot's dirty blocks get the planned data blocks, in (inode, file block)
    /// order, each with the checksum of the bytes about to be written; the snapshot maps
    /// them and releases what they replace.
    fn assign_blocks(&self, snapshot: &mut Snapshot) -> Result<Vec<Assigned>, FsError> {
        let mut writes = std::mem::take(&mut snapshot.writes);
        writes.sort_unstable_by_key(|(key, _)| *key);
        let blocks = snapshot.runs.iter().flat_map(|r| r.start..r.end());
        let assigned: Vec<Assigned> = writes
            .into_iter()
            .zip(blocks)
            .map(|((key, block), data_block)| {
                let mapped = Mapped {
                    data_block,
                    crc: block_crc(&block[..]),
                };
                (key, mapped, block)
            })
            .collect();
        let mut released = Vec::new();
        for ((ino, file_block), mapped, _) in &assigned {
            let Some(inode) = snapshot.meta.inodes.get_mut(ino) else {
                // Dirty data of a dropped inode is dropped with it (Cache::drop_from).
                unreachable!("dirty data for missing inode {ino}");
            };
            if let Some(old) = inode.blocks.insert(*file_block, *mapped) {
                released.push(old);
            }
        }
        if let Err(e) = snapshot.meta.space.release(&runs_of(released.into_iter())) {
            return Err(self.stop(e));
        }
        Ok(assigned)
    }

    /// Phase 2, without the lock: the log up to the snapshot durable first (never write
    /// back past the durable LSN), then the data blocks, the image and the superblock.
    /// Returns the image's size.
    fn write_out(&self, snapshot: &Snapshot, assigned: &[Assigned]) -> Result<u64, FsError> {
        self.shared.log.wait_durable(snapshot.meta.applied_lsn)?;
        let writes: Vec<(u64, Arc<Block>)> = assigned
            .iter()
            .map(|(_, mapped, block)| (mapped.data_block, Arc::clone(block)))
            .collect();
        write_blocks(&self.shared.data, &writes)?;
        if !writes.is_empty() {
            self.shared.data.sync()?;
        }
        let image_bytes = image::encode_image(&snapshot.meta)?;
        let device = self.shared.data.device();
        image::write_image(&**device, snapshot.seq, &image_bytes)?;
        image::write_super(
            &**device,
            &Superblock {
                seq: snapshot.seq,
                applied_lsn: snapshot.meta.applied_lsn,
                scan_start_lsn: snapshot.scan_start_lsn,
                image_len: image_bytes.len() as u64,
                image_crc: crc32fast::hash(&image_bytes),
                log_id: self.shared.log.meta().log_id,
            },
        )?;
        Ok(image_bytes.len() as u64)
    }

    /// Phase 3: the live store maps the written blocks, a chunk per lock hold, where no
    /// later change superseded them (a superseded block is only the new image's: it is
    /// released). Returns the longest lock hold.
    fn map_written(&self, assigned: &[Assigned]) -> Result<Duration, FsError> {
        let mut stall = Duration::ZERO;
        for chunk in assigned.chunks(CHECKPOINT_MAP_CHUNK_BLOCKS) {
            let mut inner = self.lock();
            let held = Instant::now();
            let store = &mut inner.store;
            let mut released = Vec::new();
            for (key, mapped, block) in chunk {
                let current = store
                    .cache
                    .flushing
                    .get(key)
                    .is_some_and(|f| Arc::ptr_eq(f, block));
                if !current {
                    released.push(mapped.data_block);
                    continue;
                }
                store.cache.flushing.remove(key);
                let Some(inode) = store.meta.inodes.get_mut(&key.0) else {
                    unreachable!("flushing data of missing inode {}", key.0);
                };
                if let Some(old) = inode.blocks.insert(key.1, *mapped) {
                    released.push(old);
                }
            }
            released.sort_unstable();
            if let Err(e) = store.meta.space.release(&runs_of(released.into_iter())) {
                return Err(self.stop_in(&mut inner, e));
            }
            assert!(inner.checkpoint_blocks >= chunk.len() as u64);
            inner.checkpoint_blocks -= chunk.len() as u64;
            stall = stall.max(held.elapsed());
        }
        Ok(stall)
    }
}

/// What phase 1 of a checkpoint took under the lock.
struct Snapshot {
    /// The metadata as of the snapshot; the checkpoint maps its dirty blocks in it.
    meta: FsMeta,
    /// The dirty blocks to write back (taken by `assign_blocks`).
    writes: Vec<((Ino, u64), Arc<Block>)>,
    /// The data blocks planned for them, as many as there are writes.
    runs: Vec<Run>,
    /// Blocks freed since the last checkpoint, free once this image is durable.
    quarantine: Vec<Run>,
    /// Recovery reads the log from here.
    scan_start_lsn: Lsn,
    /// The checkpoint's sequence number.
    seq: u64,
    /// How long the snapshot held the lock.
    stall: Duration,
}

/// A dirty block with its new place and checksum.
type Assigned = ((Ino, u64), Mapped, Arc<Block>);

/// Writes checkpoint blocks, grouping consecutive data blocks into one write.
fn write_blocks<D: Device>(
    data_file: &DataFile<D>,
    writes: &[(u64, Arc<Block>)],
) -> Result<(), FsError> {
    let mut buf = AlignedBuf::new_zeroed(CHECKPOINT_WRITE_GROUP_BLOCKS_MAX * BLOCK_SIZE_BYTES);
    let mut i = 0;
    while i < writes.len() {
        let start = writes[i].0;
        let mut count = 0usize;
        while i + count < writes.len()
            && count < CHECKPOINT_WRITE_GROUP_BLOCKS_MAX
            && writes[i + count].0 == start + count as u64
        {
            let at = count * BLOCK_SIZE_BYTES;
            buf[at..at + BLOCK_SIZE_BYTES].copy_from_slice(&writes[i + count].1[..]);
            count += 1;
        }
        data_file.write_blocks(start, &buf[..count * BLOCK_SIZE_BYTES])?;
        i += count;
    }
    Ok(())
}

/// The automatic checkpoint thread: checkpoints when enough log or dirty data has piled up.
pub(super) fn checkpointer<D: Device>(weak: Weak<Shared<D>>) {
    loop {
        std::thread::sleep(CHECKPOINT_POLL_INTERVAL);
        let Some(shared) = weak.upgrade() else {
            return;
        };
        if shared.closing.load(Ordering::Acquire) {
            return;
        }
        let (log_bytes, dirty_bytes, stopped) = {
            let inner = shared.inner.read().unwrap_or_else(|e| e.into_inner());
            (
                shared.log.stats().written_bytes - inner.log_bytes_at_checkpoint,
                inner.store.cache.dirty_bytes(),
                inner.stopped.is_some(),
            )
        };
        if stopped {
            return;
        }
        let options = shared.options;
        let due = (options.checkpoint_log_bytes > 0 && log_bytes >= options.checkpoint_log_bytes)
            || (options.checkpoint_dirty_bytes > 0
                && dirty_bytes >= options.checkpoint_dirty_bytes);
        if due {
            let engine = Engine { shared };
            if let Err(e) = engine.checkpoint() {
                if !matches!(e, FsError::NoSpace(_)) {
                    return;
                }
            }
        }
    }
}
