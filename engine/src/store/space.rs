//! The free-space map of the data file: which 4 KiB blocks are free, used, or freed since
//! the last checkpoint (quarantined: the durable image may still name them, so they are not
//! reused until the next checkpoint is durable).

use imbl::OrdMap;
use serde::{Deserialize, Serialize};

use crate::error::{CorruptKind, FsError};

/// A run of consecutive data blocks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Run {
    /// First block.
    pub start: u64,
    /// Number of blocks (at least one).
    pub len: u64,
}

impl Run {
    /// One past the last block.
    pub fn end(&self) -> u64 {
        self.start.saturating_add(self.len)
    }
}

/// The data file's blocks. Blocks at and above `high_water_blocks` are free and not yet in
/// the file; below it, `free` lists the free runs, coalesced.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Space {
    /// Blocks the data file may hold.
    pub capacity_blocks: u64,
    /// Blocks ever allocated reach up to here.
    pub high_water_blocks: u64,
    /// Free runs below the high water: start -> length, no two adjacent.
    #[serde(deserialize_with = "super::cautious::ord_map")]
    pub free: OrdMap<u64, u64>,
    /// Blocks freed since the last checkpoint snapshot.
    pub quarantine: Vec<Run>,
    /// Blocks in use (mapped by a file, or allocated by a transaction in flight).
    pub used_blocks: u64,
}

impl Space {
    /// An empty data file of `capacity_blocks`.
    pub fn new(capacity_blocks: u64) -> Space {
        Space {
            capacity_blocks,
            ..Space::default()
        }
    }

    /// Blocks in quarantine.
    pub fn quarantined_blocks(&self) -> u64 {
        self.quarantine.iter().map(|r| r.len).sum()
    }

    /// Blocks that can be allocated now.
    pub fn available_blocks(&self) -> u64 {
        let below: u64 = self.free.values().sum();
        below + self.capacity_blocks.saturating_sub(self.high_water_blocks)
    }

    /// The data file length, in blocks, that `count` more allocations need at most: free
    /// runs below the high water first, then blocks above it.
    pub fn blocks_to_hold(&self, count: u64) -> u64 {
        let below: u64 = self.free.values().sum();
        self.high_water_blocks + count.saturating_sub(below)
    }

    /// Chooses `count` free blocks (first fit, then from the high water). Changes nothing:
    /// the choice is logged and applied by [`Space::mark_used`].
    pub fn plan(&self, count: u64) -> Result<Vec<Run>, FsError> {
        assert!(count > 0);
        let mut runs = Vec::new();
        let mut wanted = count;
        for (&start, &len) in self.free.iter() {
            let take = len.min(wanted);
            runs.push(Run { start, len: take });
            wanted -= take;
            if wanted == 0 {
                return Ok(runs);
            }
        }
        if self.high_water_blocks + wanted > self.capacity_blocks {
            return Err(FsError::NoSpace("the data file is full"));
        }
        runs.push(Run {
            start: self.high_water_blocks,
            len: wanted,
        });
        Ok(runs)
    }

    /// Marks `runs` used. Each must be free (or above the high water).
    pub fn mark_used(&mut self, runs: &[Run]) -> Result<(), FsError> {
        for run in runs {
            if run.len == 0 || run.start.checked_add(run.len).is_none() {
                return Err(FsError::corrupt(
                    CorruptKind::Space,
                    format!("allocation of an invalid run {run:?}"),
                ));
            }
            if run.start >= self.high_water_blocks {
                if run.end() > self.capacity_blocks {
                    return Err(FsError::corrupt(
                        CorruptKind::Space,
                        format!("allocation {run:?} past the data file's capacity"),
                    ));
                }
                if run.start > self.high_water_blocks {
                    let gap_start = self.high_water_blocks;
                    self.high_water_blocks = run.end();
                    self.insert_free(gap_start, run.start - gap_start)?;
                }
                self.high_water_blocks = run.end();
            } else {
                let Some((&start, &len)) = self.free.get_prev(&run.start) else {
                    return Err(FsError::corrupt(
                        CorruptKind::Space,
                        format!("allocation {run:?} is not free"),
                    ));
                };
                if start + len < run.end() {
                    return Err(FsError::corrupt(
                        CorruptKind::Space,
                        format!("allocation {run:?} is not free"),
                    ));
                }
                self.free.remove(&start);
                if start < run.start {
                    self.free.insert(start, run.start - start);
                }
                if run.end() < start + len {
                    self.free.insert(run.end(), start + len - run.end());
                }
            }
            self.used_blocks += run.len;
        }
        Ok(())
    }

    /// Releases used `runs` into quarantine.
    pub fn release(&mut self, runs: &[Run]) -> Result<(), FsError> {
        if runs
            .iter()
            .any(|r| r.len == 0 || r.end() > self.high_water_blocks)
        {
            return Err(FsError::corrupt(
                CorruptKind::Space,
                format!("release of invalid runs {runs:?}"),
            ));
        }
        let count: u64 = runs.iter().map(|r| r.len).sum();
        if count > self.used_blocks {
            return Err(FsError::corrupt(
                CorruptKind::Space,
                "more blocks released than in use",
            ));
        }
        self.used_blocks -= count;
        self.quarantine.extend_from_slice(runs);
        Ok(())
    }

    /// Takes the quarantine (at a checkpoint snapshot).
    pub fn take_quarantine(&mut self) -> Vec<Run> {
        std::mem::take(&mut self.quarantine)
    }

    /// Makes quarantined `runs` free (once the checkpoint that no longer names them is
    /// durable).
    pub fn make_free(&mut self, runs: &[Run]) -> Result<(), FsError> {
        for run in runs {
            self.insert_free(run.start, run.len)?;
        }
        Ok(())
    }

    fn insert_free(&mut self, mut start: u64, mut len: u64) -> Result<(), FsError> {
        let double_free = |block: u64| {
            Err(FsError::corrupt(
                CorruptKind::Space,
                format!("block {block} freed twice"),
            ))
        };
        if len == 0 || start.saturating_add(len) > self.high_water_blocks {
            return Err(FsError::corrupt(
                CorruptKind::Space,
                format!(
                    "free run {start}+{len} outside the data file's {} blocks",
                    self.high_water_blocks
                ),
            ));
        }
        if let Some((&prev, &prev_len)) = self.free.get_prev(&start) {
            if prev + prev_len > start {
                return double_free(start);
            }
            if prev + prev_len == start {
                self.free.remove(&prev);
                start = prev;
                len += prev_len;
            }
        }
        if let Some(next_len) = self.free.get(&(start + len)).copied() {
            self.free.remove(&(start + len));
            len += next_len;
        }
        if let Some((&next, _)) = self.free.get_next(&start) {
            if next <= start || start + len > next {
                return double_free(next);
            }
        }
        self.free.insert(start, len);
        Ok(())
    }

    /// Checks that the free runs are sorted, disjoint, coalesced and below the high water.
    pub fn check(&self) -> Result<(), String> {
        let mut end = 0u64;
        let mut first = true;
        for (&start, &len) in self.free.iter() {
            if len == 0 {
                return Err(format!("empty free run at {start}"));
            }
            if !first && start <= end {
                return Err(format!(
                    "free run at {start} overlaps or touches the one before"
                ));
            }
            first = false;
            end = start + len;
        }
        if end > self.high_water_blocks {
            return Err(format!(
                "free run ends at {end}, past the high water {}",
                self.high_water_blocks
            ));
        }
        if self.high_water_blocks > self.capacity_blocks {
            return Err("high water past capacity".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_then_mark_used_then_release_and_free_round_trips() {
        let mut space = Space::new(100);
        let runs = space.plan(10).unwrap();
        assert_eq!(runs, vec![Run { start: 0, len: 10 }]);
        space.mark_used(&runs).unwrap();
        assert_eq!(space.used_blocks, 10);
        assert_eq!(space.available_blocks(), 90);
        space.release(&[Run { start: 2, len: 3 }]).unwrap();
        // Quarantined blocks are neither used nor available.
        assert_eq!(space.available_blocks(), 90);
        assert_eq!(space.plan(1).unwrap(), vec![Run { start: 10, len: 1 }]);
        let quarantine = space.take_quarantine();
        space.make_free(&quarantine).unwrap();
        assert_eq!(space.available_blocks(), 93);
        assert_eq!(
            space.plan(5).unwrap(),
            vec![Run { start: 2, len: 3 }, Run { start: 10, len: 2 }]
        );
        space.check().unwrap();
    }

    #[test]
    fn a_full_data_file_refuses_with_no_space() {
        let mut space = Space::new(4);
        space.mark_used(&space.plan(4).unwrap()).unwrap();
        assert!(matches!(space.plan(1), Err(FsError::NoSpace(_))));
    }

    #[test]
    fn marking_a_used_block_used_again_is_corruption() {
        let mut space = Space::new(10);
        space.mark_used(&[Run { start: 0, len: 4 }]).unwrap();
        assert!(matches!(
            space.mark_used(&[Run { start: 1, len: 1 }]),
            Err(FsError::Corrupt {
                kind: CorruptKind::Space,
                ..
            })
        ));
    }

    #[test]
    fn free_runs_coalesce_on_both_sides() {
        let mut space = Space::new(10);
        space.mark_used(&[Run { start: 0, len: 9 }]).unwrap();
        space
            .make_free(&[Run { start: 1, len: 1 }, Run { start: 3, len: 1 }])
            .unwrap();
        space.make_free(&[Run { start: 2, len: 1 }]).unwrap();
        assert_eq!(space.free.iter().collect::<Vec<_>>(), vec![(&1, &3)]);
        space.check().unwrap();
    }

    #[test]
    fn allocation_past_the_high_water_frees_the_gap() {
        let mut space = Space::new(10);
        space.mark_used(&[Run { start: 4, len: 2 }]).unwrap();
        assert_eq!(space.free.get(&0), Some(&4));
        assert_eq!(space.high_water_blocks, 6);
        space.check().unwrap();
    }
}
