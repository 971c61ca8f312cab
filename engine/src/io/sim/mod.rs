//! A deterministic simulated device with crash faults (DESIGN section 6, faults 1-11, and
//! 14 for names).
//!
//! Each file keeps two images: `live` (what reads see: every completed write) and
//! `durable` (what a power loss with no luck leaves). Completed writes wait in a pending
//! list until `sync` applies them, in order, to the durable image. Names likewise: the live
//! namespace becomes durable only at `sync_dir`.
//!
//! [`SimDevice::crash`] cuts the power: every call fails with [`IoErrorKind::Crashed`]
//! until [`SimDevice::restart`] applies a [`CrashPlan`], which decides per pending write and
//! per sector what survives (kept, lost, torn at 512 B or 4 KiB with the rest old, zeros or
//! garbage, in any order) and then damages durable data (bit rot, stale writes resurrected
//! past the tail, unreadable sectors). [`FaultConfig`] injects faults while running:
//! failed and short writes, failed syncs, lost and misdirected writes, misdirected reads,
//! and a crash after a given number of operations with that operation in flight.
//!
//! Every decision comes from one seeded RNG, so the same seed and the same sequence of
//! calls give the same result. Every fault applied is recorded in [`SimDevice::fault_log`].

mod crash;
mod faults;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::PathBuf;
use std::sync::Mutex;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::{check_aligned, Device, FileId, IoError, IoErrorKind, IoOp};
use crate::constants::{BLOCK_SIZE_BYTES, SECTOR_SIZE_BYTES};

use crash::{apply_at_crash, damage_durable};
pub use faults::{CrashPlan, FaultConfig, FaultEvent, TornFill};

/// Writes remembered per file for resurrection (fault 5).
const HISTORY_WRITES_MAX: usize = 64;

#[derive(Clone, Debug)]
enum Pending {
    Write {
        offset: u64,
        data: Vec<u8>,
        /// Acknowledged but never to reach the durable image (fault 7).
        lost: bool,
    },
    SetLen(u64),
}

#[derive(Clone, Debug, Default)]
struct Inode {
    live: Vec<u8>,
    durable: Vec<u8>,
    pending: Vec<Pending>,
    history: VecDeque<(u64, Vec<u8>)>,
    /// Sectors that return EIO (fault 9) until a write that reaches the medium covers
    /// them: a disk remaps a sector it cannot read when it is written again (an SSD writes
    /// every write to a fresh page anyway), so a write it acknowledges reads back.
    bad_sectors: BTreeSet<u64>,
}

fn write_into(image: &mut Vec<u8>, offset: u64, data: &[u8]) {
    let end = offset as usize + data.len();
    if image.len() < end {
        image.resize(end, 0);
    }
    image[offset as usize..end].copy_from_slice(data);
}

fn set_len_of(image: &mut Vec<u8>, len: u64) {
    image.resize(len as usize, 0);
}

#[derive(Debug)]
struct State {
    rng: ChaCha8Rng,
    inodes: Vec<Inode>,
    names: BTreeMap<String, usize>,
    durable_names: BTreeMap<String, usize>,
    open: Vec<Option<(usize, String)>>,
    faults: FaultConfig,
    crashed: bool,
    mutating_ops: u64,
    write_ops: u64,
    sync_ops: u64,
    in_flight: Option<(usize, String, u64, Vec<u8>)>,
    fault_log: Vec<FaultEvent>,
    deterministic: bool,
}

/// A deterministic, seeded simulated directory of files. See the module docs.
#[derive(Debug)]
pub struct SimDevice {
    state: Mutex<State>,
}

impl SimDevice {
    /// A new, empty device whose every decision follows `seed`.
    pub fn new(seed: u64) -> SimDevice {
        SimDevice {
            state: Mutex::new(State {
                rng: ChaCha8Rng::seed_from_u64(seed),
                inodes: Vec::new(),
                names: BTreeMap::new(),
                durable_names: BTreeMap::new(),
                open: Vec::new(),
                faults: FaultConfig::default(),
                crashed: false,
                mutating_ops: 0,
                write_ops: 0,
                sync_ops: 0,
                in_flight: None,
                fault_log: Vec::new(),
                deterministic: false,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new device holding this one's durable files and names, as after a power loss,
    /// with no file open and no faults: one crash, replayed many ways.
    pub fn clone_durable(&self) -> SimDevice {
        let state = self.lock();
        let inodes = state
            .inodes
            .iter()
            .map(|inode| Inode {
                live: inode.durable.clone(),
                durable: inode.durable.clone(),
                pending: Vec::new(),
                history: inode.history.clone(),
                bad_sectors: inode.bad_sectors.clone(),
            })
            .collect();
        SimDevice {
            state: Mutex::new(State {
                rng: state.rng.clone(),
                inodes,
                names: state.durable_names.clone(),
                durable_names: state.durable_names.clone(),
                open: Vec::new(),
                faults: FaultConfig::default(),
                crashed: false,
                mutating_ops: 0,
                write_ops: 0,
                sync_ops: 0,
                in_flight: None,
                fault_log: Vec::new(),
                deterministic: state.deterministic,
            }),
        }
    }

    /// Deterministic mode: callers do their background IO on the calling thread
    /// ([`Device::wants_inline_io`]), so a single-threaded workload gives the same run for
    /// the same seed, every time.
    pub fn set_deterministic(&self, on: bool) {
        self.lock().deterministic = on;
    }

    /// Replaces the running faults. Operation numbers count from now.
    pub fn set_faults(&self, faults: FaultConfig) {
        let mut state = self.lock();
        state.faults = faults;
        state.mutating_ops = 0;
        state.write_ops = 0;
        state.sync_ops = 0;
    }

    /// Mutating operations (writes and syncs) since the faults were last set.
    pub fn mutating_op_count(&self) -> u64 {
        self.lock().mutating_ops
    }

    /// Cuts the power now: every call fails until [`SimDevice::restart`].
    pub fn crash(&self) {
        self.lock().crashed = true;
    }

    /// Whether the device has crashed.
    pub fn is_crashed(&self) -> bool {
        self.lock().crashed
    }

    /// Powers the device back on: applies `plan` to what was not durable and to what was,
    /// forgets open files, and clears the running faults.
    pub fn restart(&self, plan: &CrashPlan) {
        let mut guard = self.lock();
        restart_state(&mut guard, plan);
    }

    /// Powers this device off for good and returns a new one holding what survived, as
    /// [`SimDevice::restart`] leaves it. Every later call on this one fails as crashed: a
    /// thread of the old incarnation still holding it (a segment preparer, a flusher) can
    /// no longer reach the files the next incarnation recovers from, as after a real power
    /// loss none runs.
    pub fn power_cycle(&self, plan: &CrashPlan) -> SimDevice {
        let mut guard = self.lock();
        let empty = SimDevice::new(0)
            .state
            .into_inner()
            .unwrap_or_else(|e| e.into_inner());
        let mut state = std::mem::replace(&mut *guard, empty);
        guard.crashed = true;
        drop(guard);
        restart_state(&mut state, plan);
        SimDevice {
            state: Mutex::new(state),
        }
    }
}

/// [`SimDevice::restart`] on the device's state.
fn restart_state(state: &mut State, plan: &CrashPlan) {
    state.crashed = false;
    state.faults = FaultConfig::default();
    state.open.clear();
    if let Some((inode, file, offset, data)) = state.in_flight.take() {
        state.fault_log.push(FaultEvent::InFlight { file, offset });
        state.inodes[inode].pending.push(Pending::Write {
            offset,
            data,
            lost: false,
        });
    }
    let names: BTreeMap<usize, String> = state.names.iter().map(|(n, i)| (*i, n.clone())).collect();
    for (index, inode) in state.inodes.iter_mut().enumerate() {
        let file = names.get(&index).cloned().unwrap_or_default();
        let mut pending = std::mem::take(&mut inode.pending);
        if plan.reorder && pending.len() > 1 {
            for i in (1..pending.len()).rev() {
                let j = state.rng.gen_range(0..=i);
                pending.swap(i, j);
            }
            state.fault_log.push(FaultEvent::Reordered);
        }
        for op in pending {
            apply_at_crash(&mut state.rng, plan, &file, inode, op, &mut state.fault_log);
        }
        inode.live = inode.durable.clone();
    }
    for (name, inode) in &state.names {
        if state.durable_names.get(name) != Some(inode) {
            state
                .fault_log
                .push(FaultEvent::NameLost { name: name.clone() });
        }
    }
    state.names = state.durable_names.clone();
    damage_durable(state, plan);
}

impl SimDevice {
    /// Every fault applied so far.
    pub fn fault_log(&self) -> Vec<FaultEvent> {
        self.lock().fault_log.clone()
    }

    /// The durable image of a file, by name (the bytes a crash with no luck leaves).
    pub fn durable_image(&self, name: &str) -> Option<Vec<u8>> {
        let state = self.lock();
        let inode = *state.durable_names.get(name)?;
        Some(state.inodes[inode].durable.clone())
    }

    /// Overwrites bytes of a file in both images, as damage from outside (tests use it to
    /// plant corruption at an exact place).
    pub fn poke(&self, name: &str, offset: u64, bytes: &[u8]) {
        let mut state = self.lock();
        let Some(&inode) = state.names.get(name) else {
            return;
        };
        let inode = &mut state.inodes[inode];
        write_into(&mut inode.live, offset, bytes);
        write_into(&mut inode.durable, offset, bytes);
    }

    /// Makes a sector of `name` unreadable (EIO on every read that covers it).
    pub fn make_unreadable(&self, name: &str, offset: u64) {
        let mut state = self.lock();
        let Some(&inode) = state.names.get(name) else {
            return;
        };
        let sector = offset / SECTOR_SIZE_BYTES as u64;
        state.inodes[inode].bad_sectors.insert(sector);
    }

    fn crashed_error(op: IoOp, name: &str, offset: u64) -> IoError {
        IoError::new(op, sim_path(name), offset, IoErrorKind::Crashed)
    }

    fn resolve(state: &State, file: FileId, op: IoOp) -> Result<(usize, String), IoError> {
        if state.crashed {
            return Err(Self::crashed_error(op, "?", 0));
        }
        state
            .open
            .get(file.0 as usize)
            .and_then(Clone::clone)
            .ok_or_else(|| IoError::new(op, sim_path("?"), 0, IoErrorKind::InvalidArgument))
    }

    fn do_write(
        &self,
        file: FileId,
        offset: u64,
        buf: &[u8],
        durable: bool,
    ) -> Result<(), IoError> {
        let mut guard = self.lock();
        let state = &mut *guard;
        let (inode, name) = Self::resolve(state, file, IoOp::Write)?;
        check_aligned(offset, buf)
            .map_err(|kind| IoError::new(IoOp::Write, sim_path(&name), offset, kind))?;
        state.mutating_ops += 1;
        state.write_ops += 1;
        if state.faults.crash_after_ops == Some(state.mutating_ops) {
            state.crashed = true;
            state.in_flight = Some((inode, name.clone(), offset, buf.to_vec()));
            return Err(Self::crashed_error(IoOp::Write, &name, offset));
        }
        if let Some((at, kind)) = state.faults.fail_write_at_op {
            if at == state.write_ops {
                state.fault_log.push(FaultEvent::WriteFailed {
                    file: name.clone(),
                    offset,
                    short: false,
                });
                return Err(IoError::new(IoOp::Write, sim_path(&name), offset, kind));
            }
        }
        let mut data = buf;
        let mut short = false;
        if state.faults.short_write_at_op == Some(state.write_ops) {
            data = &buf[..buf.len() / 2];
            short = true;
        }
        let mut landed = offset;
        let percent = state.faults.misdirected_write_percent;
        let len = state.inodes[inode].live.len() as u64;
        let spared = state.faults.spared_files.contains(&name);
        let misdirect = !spared
            && (state.faults.misdirect_write_at_op == Some(state.write_ops)
                || (percent > 0 && state.rng.gen_range(0..100) < percent));
        if misdirect && len > buf.len() as u64 {
            let blocks = (len - buf.len() as u64) / BLOCK_SIZE_BYTES as u64;
            landed = state.rng.gen_range(0..=blocks) * BLOCK_SIZE_BYTES as u64;
            state.fault_log.push(FaultEvent::MisdirectedWrite {
                file: name.clone(),
                offset,
                landed,
            });
        }
        let lost = !spared
            && (state.faults.lose_write_at_op == Some(state.write_ops)
                || (state.faults.lost_write_percent > 0
                    && state.rng.gen_range(0..100) < state.faults.lost_write_percent));
        if lost {
            state.fault_log.push(FaultEvent::LostWrite {
                file: name.clone(),
                offset,
            });
        }
        let node = &mut state.inodes[inode];
        write_into(&mut node.live, landed, data);
        if !lost {
            // The sectors it covers are remapped (see `Inode::bad_sectors`).
            let first = landed / SECTOR_SIZE_BYTES as u64;
            let last = (landed + data.len() as u64) / SECTOR_SIZE_BYTES as u64;
            let remapped: Vec<u64> = node.bad_sectors.range(first..last).copied().collect();
            for sector in remapped {
                node.bad_sectors.remove(&sector);
            }
        }
        node.pending.push(Pending::Write {
            offset: landed,
            data: data.to_vec(),
            lost,
        });
        if node.history.len() == HISTORY_WRITES_MAX {
            node.history.pop_front();
        }
        node.history.push_back((landed, data.to_vec()));
        if short {
            state.fault_log.push(FaultEvent::WriteFailed {
                file: name.clone(),
                offset,
                short: true,
            });
            return Err(IoError::new(
                IoOp::Write,
                sim_path(&name),
                offset + data.len() as u64,
                IoErrorKind::NoSpace,
            ));
        }
        if durable {
            drop(guard);
            return self.sync(file);
        }
        Ok(())
    }
}

fn sim_path(name: &str) -> PathBuf {
    PathBuf::from("sim:").join(name)
}

impl Device for SimDevice {
    fn describe(&self) -> String {
        "simulated device".to_owned()
    }

    fn wants_inline_io(&self) -> bool {
        self.lock().deterministic
    }

    fn path_of(&self, name: &str) -> PathBuf {
        sim_path(name)
    }

    fn list(&self) -> Result<Vec<String>, IoError> {
        let state = self.lock();
        if state.crashed {
            return Err(Self::crashed_error(IoOp::List, "", 0));
        }
        Ok(state.names.keys().cloned().collect())
    }

    fn open(&self, name: &str, create: bool) -> Result<FileId, IoError> {
        let mut guard = self.lock();
        let state = &mut *guard;
        if state.crashed {
            return Err(Self::crashed_error(IoOp::Open, name, 0));
        }
        let inode = match state.names.get(name) {
            Some(inode) => *inode,
            None if create => {
                state.inodes.push(Inode::default());
                let inode = state.inodes.len() - 1;
                state.names.insert(name.to_owned(), inode);
                inode
            }
            None => {
                return Err(IoError::new(
                    IoOp::Open,
                    sim_path(name),
                    0,
                    IoErrorKind::NotFound,
                ))
            }
        };
        state.open.push(Some((inode, name.to_owned())));
        Ok(FileId(state.open.len() as u32 - 1))
    }

    fn close(&self, file: FileId) {
        let mut state = self.lock();
        if let Some(slot) = state.open.get_mut(file.0 as usize) {
            *slot = None;
        }
    }

    fn len(&self, file: FileId) -> Result<u64, IoError> {
        let state = self.lock();
        let (inode, _) = Self::resolve(&state, file, IoOp::Read)?;
        Ok(state.inodes[inode].live.len() as u64)
    }

    fn set_len(&self, file: FileId, len: u64) -> Result<(), IoError> {
        let mut state = self.lock();
        let (inode, _) = Self::resolve(&state, file, IoOp::SetLen)?;
        let node = &mut state.inodes[inode];
        set_len_of(&mut node.live, len);
        node.pending.push(Pending::SetLen(len));
        Ok(())
    }

    fn read_at(&self, file: FileId, offset: u64, buf: &mut [u8]) -> Result<(), IoError> {
        let mut guard = self.lock();
        let state = &mut *guard;
        let (inode, name) = Self::resolve(state, file, IoOp::Read)?;
        check_aligned(offset, buf)
            .map_err(|kind| IoError::new(IoOp::Read, sim_path(&name), offset, kind))?;
        let node = &state.inodes[inode];
        let end = offset + buf.len() as u64;
        if end > node.live.len() as u64 {
            return Err(IoError::new(
                IoOp::Read,
                sim_path(&name),
                node.live.len() as u64,
                IoErrorKind::UnexpectedEof,
            ));
        }
        let first = offset / SECTOR_SIZE_BYTES as u64;
        let last = end.div_ceil(SECTOR_SIZE_BYTES as u64);
        if node.bad_sectors.range(first..last).next().is_some() {
            state.fault_log.push(FaultEvent::ReadError {
                file: name.clone(),
                offset,
            });
            return Err(IoError::new(
                IoOp::Read,
                sim_path(&name),
                offset,
                IoErrorKind::Io,
            ));
        }
        let mut from = offset;
        let percent = state.faults.misdirected_read_percent;
        let len = node.live.len() as u64;
        let spared = state.faults.spared_files.contains(&name);
        if !spared
            && percent > 0
            && state.rng.gen_range(0..100) < percent
            && len >= buf.len() as u64
        {
            let blocks = (len - buf.len() as u64) / BLOCK_SIZE_BYTES as u64;
            from = state.rng.gen_range(0..=blocks) * BLOCK_SIZE_BYTES as u64;
            state.fault_log.push(FaultEvent::MisdirectedRead {
                file: name.clone(),
                offset,
            });
        }
        let node = &state.inodes[inode];
        buf.copy_from_slice(&node.live[from as usize..from as usize + buf.len()]);
        Ok(())
    }

    fn write_at(&self, file: FileId, offset: u64, buf: &[u8]) -> Result<(), IoError> {
        self.do_write(file, offset, buf, false)
    }

    fn write_durable_at(&self, file: FileId, offset: u64, buf: &[u8]) -> Result<(), IoError> {
        self.do_write(file, offset, buf, true)
    }

    fn sync(&self, file: FileId) -> Result<(), IoError> {
        let mut guard = self.lock();
        let state = &mut *guard;
        let (inode, name) = Self::resolve(state, file, IoOp::Sync)?;
        state.mutating_ops += 1;
        state.sync_ops += 1;
        if state.faults.crash_after_ops == Some(state.mutating_ops) {
            state.crashed = true;
            return Err(Self::crashed_error(IoOp::Sync, &name, 0));
        }
        if state.faults.fail_sync_at_op == Some(state.sync_ops) {
            state
                .fault_log
                .push(FaultEvent::SyncFailed { file: name.clone() });
            return Err(IoError::new(
                IoOp::Sync,
                sim_path(&name),
                0,
                IoErrorKind::Io,
            ));
        }
        let node = &mut state.inodes[inode];
        for op in std::mem::take(&mut node.pending) {
            match op {
                Pending::Write { lost: true, .. } => {}
                Pending::Write { offset, data, .. } => write_into(&mut node.durable, offset, &data),
                Pending::SetLen(len) => set_len_of(&mut node.durable, len),
            }
        }
        Ok(())
    }

    fn rename(&self, from: &str, to: &str) -> Result<(), IoError> {
        let mut state = self.lock();
        if state.crashed {
            return Err(Self::crashed_error(IoOp::Rename, from, 0));
        }
        let Some(inode) = state.names.remove(from) else {
            return Err(IoError::new(
                IoOp::Rename,
                sim_path(from),
                0,
                IoErrorKind::NotFound,
            ));
        };
        state.names.insert(to.to_owned(), inode);
        Ok(())
    }

    fn remove(&self, name: &str) -> Result<(), IoError> {
        let mut state = self.lock();
        if state.crashed {
            return Err(Self::crashed_error(IoOp::Remove, name, 0));
        }
        match state.names.remove(name) {
            Some(_) => Ok(()),
            None => Err(IoError::new(
                IoOp::Remove,
                sim_path(name),
                0,
                IoErrorKind::NotFound,
            )),
        }
    }

    fn sync_dir(&self) -> Result<(), IoError> {
        let mut state = self.lock();
        if state.crashed {
            return Err(Self::crashed_error(IoOp::SyncDir, "", 0));
        }
        state.durable_names = state.names.clone();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::AlignedBuf;

    fn block(fill: u8) -> AlignedBuf {
        let mut buf = AlignedBuf::new_zeroed(BLOCK_SIZE_BYTES);
        buf.fill(fill);
        buf
    }

    fn setup(seed: u64) -> (SimDevice, FileId) {
        let device = SimDevice::new(seed);
        let file = device.open("f", true).unwrap();
        device.set_len(file, 8 * BLOCK_SIZE_BYTES as u64).unwrap();
        device.sync(file).unwrap();
        device.sync_dir().unwrap();
        (device, file)
    }

    fn read_block(device: &SimDevice, file: FileId, index: u64) -> Vec<u8> {
        let mut buf = AlignedBuf::new_zeroed(BLOCK_SIZE_BYTES);
        device
            .read_at(file, index * BLOCK_SIZE_BYTES as u64, &mut buf)
            .unwrap();
        buf.to_vec()
    }

    #[test]
    fn power_loss_drops_unsynced_and_keeps_synced() {
        let (device, file) = setup(1);
        device.write_durable_at(file, 0, &block(1)).unwrap();
        device.write_at(file, 4096, &block(2)).unwrap();
        assert_eq!(read_block(&device, file, 1), vec![2; 4096]);
        device.crash();
        assert_eq!(
            device.read_at(file, 0, &mut block(0)).unwrap_err().kind,
            IoErrorKind::Crashed
        );
        device.restart(&CrashPlan::power_loss());
        let file = device.open("f", false).unwrap();
        assert_eq!(read_block(&device, file, 0), vec![1; 4096]);
        assert_eq!(read_block(&device, file, 1), vec![0; 4096]);
        assert!(device.fault_log().contains(&FaultEvent::Lost {
            file: "f".into(),
            offset: 4096
        }));
    }

    #[test]
    fn names_not_synced_are_lost_at_crash() {
        let (device, _) = setup(2);
        device.open("new", true).unwrap();
        device.rename("f", "g").unwrap();
        device.crash();
        device.restart(&CrashPlan::power_loss());
        assert_eq!(device.list().unwrap(), vec!["f".to_owned()]);
    }

    #[test]
    fn a_power_cycle_leaves_the_old_device_dead_for_good() {
        let (device, file) = setup(3);
        device.open("new", true).unwrap();
        device.crash();
        let fresh = device.power_cycle(&CrashPlan::power_loss());
        assert_eq!(fresh.list().unwrap(), vec!["f".to_owned()]);
        // A thread of the old incarnation can neither make a name durable nor write.
        assert!(device.sync_dir().is_err());
        assert!(device.write_at(file, 0, &block(7)).is_err());
        assert!(device.rename("f", "g").is_err());
        assert_eq!(fresh.list().unwrap(), vec!["f".to_owned()]);
    }

    #[test]
    fn torn_writes_keep_a_prefix_or_suffix_of_sectors() {
        let mut seen_prefix = false;
        let mut seen_suffix = false;
        for seed in 0..64 {
            let (device, file) = setup(seed);
            let mut data = AlignedBuf::new_zeroed(2 * BLOCK_SIZE_BYTES);
            data.fill(9);
            device.write_at(file, 0, &data).unwrap();
            device.crash();
            device.restart(&CrashPlan {
                torn_percent: 100,
                ..CrashPlan::power_loss()
            });
            let torn = device.fault_log().into_iter().find_map(|e| match e {
                FaultEvent::Torn {
                    kept_bytes,
                    prefix,
                    unit_bytes,
                    ..
                } => Some((kept_bytes, prefix, unit_bytes)),
                _ => None,
            });
            let (kept_bytes, prefix, unit_bytes) = torn.expect("torn");
            assert_eq!(kept_bytes % unit_bytes, 0);
            let image = device.durable_image("f").unwrap();
            let nines = image[..8192].iter().filter(|b| **b == 9).count();
            assert!(nines >= kept_bytes, "{nines} < {kept_bytes}");
            if prefix {
                seen_prefix = true;
                assert!(image[..kept_bytes].iter().all(|b| *b == 9));
            } else {
                seen_suffix = true;
                assert!(image[8192 - kept_bytes..8192].iter().all(|b| *b == 9));
            }
        }
        assert!(seen_prefix && seen_suffix);
    }

    #[test]
    fn crash_after_ops_puts_the_write_in_flight() {
        let (device, file) = setup(3);
        device.set_faults(FaultConfig {
            crash_after_ops: Some(2),
            ..FaultConfig::default()
        });
        device.write_at(file, 0, &block(1)).unwrap();
        let error = device.write_at(file, 4096, &block(2)).unwrap_err();
        assert_eq!(error.kind, IoErrorKind::Crashed);
        assert!(device.is_crashed());
        device.restart(&CrashPlan::keep_all());
        assert!(device.fault_log().contains(&FaultEvent::InFlight {
            file: "f".into(),
            offset: 4096
        }));
        let file = device.open("f", false).unwrap();
        assert_eq!(read_block(&device, file, 1), vec![2; 4096]);
    }

    #[test]
    fn write_and_sync_failures_are_reported() {
        let (device, file) = setup(4);
        device.set_faults(FaultConfig {
            fail_write_at_op: Some((1, IoErrorKind::Io)),
            fail_sync_at_op: Some(1),
            short_write_at_op: Some(2),
            ..FaultConfig::default()
        });
        assert_eq!(
            device.write_at(file, 0, &block(1)).unwrap_err().kind,
            IoErrorKind::Io
        );
        let mut two = AlignedBuf::new_zeroed(8192);
        two.fill(5);
        assert_eq!(
            device.write_at(file, 0, &two).unwrap_err().kind,
            IoErrorKind::NoSpace
        );
        assert_eq!(read_block(&device, file, 0), vec![5; 4096]);
        assert_eq!(read_block(&device, file, 1), vec![0; 4096]);
        assert_eq!(device.sync(file).unwrap_err().kind, IoErrorKind::Io);
    }

    #[test]
    fn lost_writes_read_back_but_do_not_survive() {
        let (device, file) = setup(5);
        device.set_faults(FaultConfig {
            lost_write_percent: 100,
            ..FaultConfig::default()
        });
        device.write_durable_at(file, 0, &block(7)).unwrap();
        assert_eq!(read_block(&device, file, 0), vec![7; 4096]);
        device.crash();
        device.restart(&CrashPlan::keep_all());
        let file = device.open("f", false).unwrap();
        assert_eq!(read_block(&device, file, 0), vec![0; 4096]);
    }

    #[test]
    fn misdirected_writes_land_elsewhere_and_reads_come_from_elsewhere() {
        let (device, file) = setup(6);
        device.set_faults(FaultConfig {
            misdirected_write_percent: 100,
            ..FaultConfig::default()
        });
        device.write_durable_at(file, 4096, &block(3)).unwrap();
        let landed = device.fault_log().into_iter().find_map(|e| match e {
            FaultEvent::MisdirectedWrite { landed, .. } => Some(landed),
            _ => None,
        });
        let landed = landed.expect("misdirected");
        assert_eq!(read_block(&device, file, landed / 4096), vec![3; 4096]);
        device.set_faults(FaultConfig {
            misdirected_read_percent: 100,
            ..FaultConfig::default()
        });
        let mut buf = block(0);
        device.read_at(file, 0, &mut buf).unwrap();
        assert!(device
            .fault_log()
            .iter()
            .any(|e| matches!(e, FaultEvent::MisdirectedRead { .. })));
    }

    #[test]
    fn damage_plans_rot_bits_resurrect_and_break_sectors() {
        let (device, file) = setup(7);
        device.write_durable_at(file, 0, &block(1)).unwrap();
        device.write_durable_at(file, 4096, &block(0)).unwrap();
        device.write_at(file, 8192, &block(4)).unwrap();
        device.crash();
        device.restart(&CrashPlan {
            bit_rot_count: 1,
            resurrect_count: 8,
            bad_sector_count: 1,
            ..CrashPlan::power_loss()
        });
        let log = device.fault_log();
        assert!(log.iter().any(|e| matches!(e, FaultEvent::BitRot { .. })));
        assert!(log
            .iter()
            .any(|e| matches!(e, FaultEvent::Resurrected { .. })));
        assert!(log
            .iter()
            .any(|e| matches!(e, FaultEvent::BadSector { .. })));
        let file = device.open("f", false).unwrap();
        let errors = (0..8)
            .filter(|i| {
                device
                    .read_at(file, i * 4096, &mut block(0))
                    .is_err_and(|e| e.kind == IoErrorKind::Io)
            })
            .count();
        assert_eq!(errors, 1);
    }

    #[test]
    fn a_written_sector_reads_back_but_a_lost_write_leaves_it_unreadable() {
        let (device, file) = setup(7);
        device.write_durable_at(file, 0, &block(1)).unwrap();
        device.write_durable_at(file, 4096, &block(2)).unwrap();
        device.make_unreadable("f", 512);
        device.make_unreadable("f", 4096 + 512);
        let unreadable = |index: u64| {
            device
                .read_at(file, index * 4096, &mut block(0))
                .is_err_and(|e| e.kind == IoErrorKind::Io)
        };
        assert!(unreadable(0) && unreadable(1));
        device.set_faults(FaultConfig {
            lose_write_at_op: Some(2),
            ..FaultConfig::default()
        });
        device.write_durable_at(file, 0, &block(3)).unwrap();
        device.write_durable_at(file, 4096, &block(4)).unwrap();
        assert!(!unreadable(0), "a write remaps the sectors it covers");
        assert_eq!(read_block(&device, file, 0), vec![3u8; 4096]);
        assert!(unreadable(1), "a lost write never reached the medium");
    }

    #[test]
    fn same_seed_same_outcome() {
        let run = |seed| {
            let (device, file) = setup(seed);
            for i in 0..6 {
                device
                    .write_at(file, i * 4096, &block(i as u8 + 1))
                    .unwrap();
            }
            device.crash();
            device.restart(&CrashPlan {
                keep_percent: 40,
                torn_percent: 40,
                reorder: true,
                ..CrashPlan::power_loss()
            });
            device.durable_image("f").unwrap()
        };
        assert_eq!(run(11), run(11));
        assert_ne!(run(11), run(12));
    }
}
