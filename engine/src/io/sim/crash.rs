//! A power cut applied: which pending writes and sectors survive, and damage to durable
//! data.

use std::collections::BTreeMap;

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::constants::{BLOCK_SIZE_BYTES, SECTOR_SIZE_BYTES};

use super::{set_len_of, write_into, CrashPlan, FaultEvent, Inode, Pending, State, TornFill};

pub(super) fn apply_at_crash(
    rng: &mut ChaCha8Rng,
    plan: &CrashPlan,
    file: &str,
    inode: &mut Inode,
    op: Pending,
    log: &mut Vec<FaultEvent>,
) {
    let (offset, data) = match op {
        Pending::SetLen(len) => {
            if rng.gen_range(0..100) < plan.keep_percent {
                set_len_of(&mut inode.durable, len);
            }
            return;
        }
        Pending::Write { offset, data, .. } => (offset, data),
    };
    let roll = rng.gen_range(0..100u8);
    let file = file.to_owned();
    if roll < plan.keep_percent {
        write_into(&mut inode.durable, offset, &data);
        log.push(FaultEvent::Kept { file, offset });
    } else if roll < plan.keep_percent.saturating_add(plan.torn_percent) {
        let unit_bytes = if rng.gen_bool(0.5) {
            SECTOR_SIZE_BYTES
        } else {
            BLOCK_SIZE_BYTES
        };
        let units = data.len().div_ceil(unit_bytes);
        let kept_units = if units > 1 {
            rng.gen_range(1..units)
        } else {
            0
        };
        let kept_bytes = (kept_units * unit_bytes).min(data.len());
        let prefix = rng.gen_bool(0.5);
        let fill = match rng.gen_range(0..3) {
            0 => TornFill::Old,
            1 => TornFill::Zeros,
            _ => TornFill::Garbage,
        };
        let (kept, lost_range) = if prefix {
            (0..kept_bytes, kept_bytes..data.len())
        } else {
            (
                data.len() - kept_bytes..data.len(),
                0..data.len() - kept_bytes,
            )
        };
        write_into(&mut inode.durable, offset + kept.start as u64, &data[kept]);
        match fill {
            TornFill::Old => {}
            TornFill::Zeros => {
                let zeros = vec![0u8; lost_range.len()];
                write_into(&mut inode.durable, offset + lost_range.start as u64, &zeros);
            }
            TornFill::Garbage => {
                let mut garbage = vec![0u8; lost_range.len()];
                rng.fill(&mut garbage[..]);
                write_into(
                    &mut inode.durable,
                    offset + lost_range.start as u64,
                    &garbage,
                );
            }
        }
        log.push(FaultEvent::Torn {
            file,
            offset,
            unit_bytes,
            kept_bytes,
            prefix,
            fill,
        });
    } else {
        log.push(FaultEvent::Lost { file, offset });
    }
}

pub(super) fn damage_durable(state: &mut State, plan: &CrashPlan) {
    let names: BTreeMap<usize, String> = state.names.iter().map(|(n, i)| (*i, n.clone())).collect();
    let candidates: Vec<usize> = names
        .iter()
        .filter(|(i, name)| {
            !state.inodes[**i].durable.is_empty() && !plan.spared_files.contains(name)
        })
        .map(|(i, _)| *i)
        .collect();
    if candidates.is_empty() {
        return;
    }
    for _ in 0..plan.bit_rot_count {
        let inode = candidates[state.rng.gen_range(0..candidates.len())];
        let node = &mut state.inodes[inode];
        let offset = state.rng.gen_range(0..node.durable.len());
        let bit = state.rng.gen_range(0..8);
        node.durable[offset] ^= 1 << bit;
        node.live = node.durable.clone();
        state.fault_log.push(FaultEvent::BitRot {
            file: names[&inode].clone(),
            offset: offset as u64,
        });
    }
    for _ in 0..plan.bad_sector_count {
        let inode = candidates[state.rng.gen_range(0..candidates.len())];
        let node = &mut state.inodes[inode];
        let sectors = node.durable.len() / SECTOR_SIZE_BYTES;
        if sectors == 0 {
            continue;
        }
        let sector = state.rng.gen_range(0..sectors) as u64;
        node.bad_sectors.insert(sector);
        state.fault_log.push(FaultEvent::BadSector {
            file: names[&inode].clone(),
            offset: sector * SECTOR_SIZE_BYTES as u64,
        });
    }
    for _ in 0..plan.resurrect_count {
        let inode = candidates[state.rng.gen_range(0..candidates.len())];
        let node = &mut state.inodes[inode];
        if node.history.is_empty() {
            continue;
        }
        let (offset, data) = node.history[state.rng.gen_range(0..node.history.len())].clone();
        // Stale data comes back only where the sector is all zeros (never written, or
        // zeroed by a later write): past the tail, never over live data.
        let mut resurrected = false;
        for (i, sector) in data.chunks(SECTOR_SIZE_BYTES).enumerate() {
            let at = offset as usize + i * SECTOR_SIZE_BYTES;
            let end = (at + sector.len()).min(node.durable.len());
            if at >= end || node.durable[at..end].iter().any(|b| *b != 0) {
                continue;
            }
            node.durable[at..end].copy_from_slice(&sector[..end - at]);
            resurrected = true;
        }
        if resurrected {
            node.live = node.durable.clone();
            state.fault_log.push(FaultEvent::Resurrected {
                file: names[&inode].clone(),
                offset,
            });
        }
    }
}
