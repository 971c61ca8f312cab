//! The smlog engine as Raft's state machine ([`VolumeMachine`]).
//!
//! Every node applies each committed entry to its own engine: a [`Command`] becomes one
//! engine call with the leader's time and the caller's request key, tagged with the entry
//! ([`smlog::TxnOptions::entry`]) and **asynchronous**: applying costs no sync. What makes
//! an acknowledged change durable is the Raft log (the leader's and a quorum's group
//! commits); the engine catches up on its own (group commits of later `Sync` work, its
//! checkpoints, a clean shutdown).
//!
//! **After a crash** the engine recovers to some prefix of what it applied, and
//! [`smlog::Engine::applied_entry`] names exactly the last entry in that prefix. The
//! machine reports as applied the greater of that and the last membership it saved (a
//! membership entry makes the engine durable first, then saves itself durably), so openraft
//! applies again exactly the entries the crash took from the engine; they are still in the
//! Raft log, since a log is purged only up to a snapshot. Blank entries leave no trace and
//! are harmless to apply again.
//!
//! A membership is saved in the engine's directory as `MEMBERSHIP` (one block: magic, the
//! Raft entry record that set it, CRC; written to `MEMBERSHIP.tmp`, synced, renamed, the
//! directory synced): docs/FORMAT.md, "The Raft log".
//!
//! **Snapshots** are engine exports ([`crate::snapshot`]): built from a moment between two
//! applied entries (the export is taken in the apply stream, written out beside it), kept
//! as the volume's `SNAPSHOT` file, sent to a node whose next entry the leader has
//! purged, and installed there in place of its store. A build and an install never run at
//! once. Once a snapshot holds an entry, openraft may purge the Raft log up to it.

use std::io;
use std::sync::{Arc, Mutex, RwLock};

use futures_util::{FutureExt, Stream, StreamExt};
use smlog::constants::BLOCK_SIZE_BYTES;
use smlog::io::{AlignedBuf, Device};
use smlog::{Durability, Engine, EngineOptions, EntryId, Export, FsError, TxnOptions, TxnResult};
use smlog_recovery::OpenOptions;

use crate::command::{Command, FileOp, Reply};
use crate::log_store::records::{EntryRecord, PayloadRecord, RaftRecord};
use crate::raft::{
    entry_of, log_id_record, membership_record, snapshot_meta_of, snapshot_meta_record,
    EntryPayload, EntryResponder, LogId, Membership, OptionalSend, RaftSnapshotBuilder,
    RaftStateMachine, Snapshot, SnapshotMeta, StoredMembership, TypeConfig,
};
use crate::snapshot::{
    self, SnapshotError, SnapshotFile, SNAPSHOT_BUILDING_FILE, SNAPSHOT_FILE, SNAPSHOT_INSTALL_FILE,
};

/// The saved membership's file in the engine's directory.
pub const MEMBERSHIP_FILE: &str = "MEMBERSHIP";
const MEMBERSHIP_TMP_FILE: &str = "MEMBERSHIP.tmp";
/// `MEMBERSHIP`'s first eight bytes.
pub const MEMBERSHIP_MAGIC: u64 = u64::from_le_bytes(*b"SMLOGMBR");
/// Header: magic u64, payload length u32, CRC-32 (IEEE) of the payload u32.
const MEMBERSHIP_HEADER_BYTES: usize = 16;

/// Why a volume's state machine could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum MachineError {
    /// The engine (recovery, device, damage).
    #[error(transparent)]
    Engine(#[from] FsError),
    /// `MEMBERSHIP` is damaged.
    #[error("{path}: {why}")]
    Membership {
        /// The file.
        path: String,
        /// What is wrong.
        why: String,
    },
    /// A snapshot being installed when the node stopped could not be installed now.
    #[error("finishing a snapshot's install: {0}")]
    Snapshot(#[from] SnapshotError),
}

/// The engine a volume runs on now: replaced whole when a snapshot is installed. Clones
/// share it.
pub struct Volume<D: Device> {
    engine: Arc<RwLock<Arc<Engine<D>>>>,
}

impl<D: Device> Clone for Volume<D> {
    fn clone(&self) -> Self {
        Volume {
            engine: Arc::clone(&self.engine),
        }
    }
}

impl<D: Device> std::fmt::Debug for Volume<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Volume").finish_non_exhaustive()
    }
}

impl<D: Device> Volume<D> {
    fn new(engine: Engine<D>) -> Volume<D> {
        Volume {
            engine: Arc::new(RwLock::new(Arc::new(engine))),
        }
    }

    /// The engine now. A snapshot installed later retires it (its calls then fail with
    /// [`FsError::Stopped`]): take it again for the next operation.
    pub fn engine(&self) -> Arc<Engine<D>> {
        Arc::clone(&self.engine.read().unwrap_or_else(|e| e.into_inner()))
    }

    fn replace(&self, engine: Engine<D>) {
        *self.engine.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(engine);
    }
}

/// What a volume's state machine did, as an [`Observer`] hears it.
#[derive(Debug)]
pub enum MachineEvent<'a> {
    /// An entry was applied: the volume holds its effect (its reply is sent next).
    Applied(&'a crate::raft::Entry),
    /// A snapshot was installed in place of the volume.
    Installed(&'a SnapshotMeta),
}

/// Hears every entry a machine applies and every snapshot it installs (the cluster
/// simulation keeps its witness of the committed log so, since logs are purged).
pub type Observer = Arc<dyn Fn(MachineEvent<'_>) + Send + Sync>;

/// A volume's engine as openraft's state machine.
pub struct VolumeMachine<D: Device> {
    observer: Option<Observer>,
    volume: Volume<D>,
    device: Arc<D>,
    options: EngineOptions,
    /// Held by a snapshot's build and by an install: never both at once.
    snapshots: Arc<Mutex<()>>,

    /// This node's Raft log: an entry is durable there before it is applied.
    log: Option<crate::log_store::LogStore<D>>,
    applied: Option<LogId>,
    membership: StoredMembership,
}

impl<D: Device> std::fmt::Debug for VolumeMachine<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VolumeMachine")
            .field("applied", &self.applied)
            .field("membership", &self.membership)
            .finish()
    }
}

impl<D: Device> VolumeMachine<D> {
    /// Opens (recovers, or with `options.create` creates) the engine on `device`, and the
    /// membership saved beside it.
    pub fn open(device: Arc<D>, options: OpenOptions) -> Result<VolumeMachine<D>, MachineError> {
        snapshot::remove_leftovers(&*device)?;
        if device
            .list()
            .map_err(FsError::from)?
            .iter()
            .any(|name| name == SNAPSHOT_INSTALL_FILE)
        {
            // A crash cut an install: finish it.
            let (engine, header) = snapshot::finish_install(&device, options.engine)?;
            let meta = snapshot_meta_of(&header.meta)
                .ok_or_else(|| SnapshotError::Damaged("an invalid membership".into()))?;
            save_stored_membership(&*device, &meta.last_membership)?;
            engine.shutdown()?;
            drop(engine);
            snapshot::complete_install(&*device)?;
        }
        let (engine, _report) = smlog_recovery::open_device(Arc::clone(&device), options)?;
        let membership = read_membership(&*device)?;
        let engine_applied = engine
            .applied_entry()
            .map(|entry| LogId::new_term_index(entry.term, entry.index));
        let applied = engine_applied.max(*membership.log_id());
        Ok(VolumeMachine {
            observer: None,
            volume: Volume::new(engine),
            device,
            options: options.engine,
            snapshots: Arc::new(Mutex::new(())),
            log: None,
            applied,
            membership,
        })
    }

    /// Lets `observer` hear what the machine does.
    pub fn with_observer(mut self, observer: Option<Observer>) -> VolumeMachine<D> {
        self.observer = observer;
        self
    }

    /// Makes every entry durable in `log` (this node's Raft log) before it is applied: the
    /// volume, made durable by its own group commits and checkpoints, then never holds an
    /// entry this node's log could lose in a crash.
    pub fn with_log(mut self, log: crate::log_store::LogStore<D>) -> VolumeMachine<D> {
        self.log = Some(log);
        self
    }

    /// The volume (reads are served from its engine directly).
    pub fn volume(&self) -> &Volume<D> {
        &self.volume
    }

    /// Where this node receives snapshots: the volume's directory.
    pub fn snapshot_inbox(&self) -> snapshot::SnapshotInbox {
        snapshot::SnapshotInbox::new(Arc::clone(&self.device) as Arc<dyn Device>)
    }
}

/// Makes the engine durable, then saves `membership` (set by entry `log_id`) durably.
fn save_membership<D: Device>(
    engine: &Engine<D>,
    device: &D,
    log_id: LogId,
    membership: &Membership,
) -> io::Result<()> {
    engine.sync().map_err(fatal)?;
    let record = RaftRecord::Entry(EntryRecord {
        log_id: log_id_record(&log_id),
        payload: PayloadRecord::Membership(membership_record(membership)),
    });
    write_membership(device, &record.encode()).map_err(fatal)
}

/// Saves `membership` durably (a snapshot's: the engine is durable already), or removes
/// the saved one when it names none.
fn save_stored_membership<D: Device + ?Sized>(
    device: &D,
    membership: &StoredMembership,
) -> Result<(), FsError> {
    match membership.log_id() {
        Some(log_id) => {
            let record = RaftRecord::Entry(EntryRecord {
                log_id: log_id_record(log_id),
                payload: PayloadRecord::Membership(membership_record(membership.membership())),
            });
            write_membership(device, &record.encode())
        }
        None => {
            if device.list()?.iter().any(|name| name == MEMBERSHIP_FILE) {
                device.remove(MEMBERSHIP_FILE)?;
                device.sync_dir()?;
            }
            Ok(())
        }
    }
}

/// An engine failure that is not a refusal: this node stops (fail-stop), it never answers
/// differently from the others.
fn fatal(error: impl std::error::Error + Send + Sync + 'static) -> io::Error {
    io::Error::other(error)
}

/// Applies one command to the engine as entry `entry`. A refusal (an errno) is the reply,
/// the same on every node; any other failure stops this node's Raft.
pub fn apply_command<D: Device>(
    engine: &Engine<D>,
    command: &Command,
    entry: EntryId,
) -> io::Result<Reply> {
    let options = TxnOptions {
        durability: Durability::Async,
        key: command.key,
        now: Some(command.now),
        entry: Some(entry),
    };
    match apply_op(engine, &command.op, options) {
        Ok(result) => Ok(Reply(Ok(result))),
        Err(error) if error.is_refusal() => Ok(Reply(Err(error.errno()))),
        Err(error) => Err(fatal(error)),
    }
}

/// Makes `op` on `engine` as one engine call with `options`: what a node applies for an
/// entry, and what a file server on one engine (no cluster) does with the same change.
pub fn apply_op<D: Device>(
    engine: &Engine<D>,
    op: &FileOp,
    options: TxnOptions,
) -> Result<TxnResult, FsError> {
    match op {
        FileOp::Create {
            parent,
            name,
            attrs,
        } => engine
            .create(*parent, name, *attrs, options)
            .map(|stat| TxnResult::Ino(stat.ino)),
        FileOp::Mkdir {
            parent,
            name,
            attrs,
        } => engine
            .mkdir(*parent, name, *attrs, options)
            .map(|stat| TxnResult::Ino(stat.ino)),
        FileOp::Symlink {
            parent,
            name,
            target,
            attrs,
        } => engine
            .symlink(*parent, name, target, *attrs, options)
            .map(|stat| TxnResult::Ino(stat.ino)),
        FileOp::Link { ino, parent, name } => engine
            .link(*ino, *parent, name, options)
            .map(|stat| TxnResult::Ino(stat.ino)),
        FileOp::Unlink { parent, name } => engine
            .unlink(*parent, name, options)
            .map(|()| TxnResult::Done),
        FileOp::Rmdir { parent, name } => engine
            .rmdir(*parent, name, options)
            .map(|()| TxnResult::Done),
        FileOp::Rename {
            from_parent,
            from_name,
            to_parent,
            to_name,
            flags,
        } => engine
            .rename(
                *from_parent,
                from_name,
                *to_parent,
                to_name,
                *flags,
                options,
            )
            .map(|()| TxnResult::Done),
        FileOp::Write { ino, offset, data } => engine
            .write(*ino, *offset, data, options)
            .map(TxnResult::Bytes),
        FileOp::SetAttr { ino, changes } => engine
            .setattr(*ino, *changes, options)
            .map(|_| TxnResult::Done),
        FileOp::Mknod {
            parent,
            name,
            kind,
            attrs,
        } => engine
            .mknod(*parent, name, *kind, *attrs, options)
            .map(|stat| TxnResult::Ino(stat.ino)),
        FileOp::SetXattr {
            ino,
            name,
            value: Some(value),
            flags,
        } => engine
            .setxattr(*ino, name, value, *flags, options)
            .map(|()| TxnResult::Done),
        FileOp::SetXattr {
            ino,
            name,
            value: None,
            ..
        } => engine
            .removexattr(*ino, name, options)
            .map(|()| TxnResult::Done),
        FileOp::Fallocate {
            ino,
            offset,
            len,
            mode,
        } => engine
            .fallocate(*ino, *offset, *len, *mode, options)
            .map(|()| TxnResult::Done),
    }
}

impl<D: Device> RaftStateMachine<TypeConfig> for VolumeMachine<D> {
    type SnapshotData = SnapshotFile;
    type SnapshotBuilder = VolumeSnapshotBuilder<D>;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
        Ok((self.applied, self.membership.clone()))
    }

    async fn apply<S>(&mut self, mut entries: S) -> Result<(), io::Error>
    where
        S: Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>> + Unpin + OptionalSend,
    {
        while let Some(item) = entries.next().await {
            // The entries ready now are applied together: one wait for the log, one
            // blocking task.
            let mut batch = vec![item?];
            while batch.len() < APPLY_BATCH_MAX {
                match entries.next().now_or_never() {
                    Some(Some(item)) => batch.push(item?),
                    _ => break,
                }
            }
            let mut work = Vec::with_capacity(batch.len());
            let mut responders = Vec::with_capacity(batch.len());
            for (entry, responder) in batch {
                work.push(entry);
                responders.push(responder);
            }
            let log = self.log.clone();
            let engine = self.volume.engine();
            let device = Arc::clone(&self.device);
            let (work, replies, membership) = tokio::task::spawn_blocking(move || {
                apply_batch(log, &engine, &device, &work).map(|(r, m)| (work, r, m))
            })
            .await
            .map_err(fatal)??;
            if let Some(membership) = membership {
                self.membership = membership;
            }
            if let Some(observer) = &self.observer {
                for entry in &work {
                    observer(MachineEvent::Applied(entry));
                }
            }
            for ((log_id, reply), responder) in replies.into_iter().zip(responders) {
                self.applied = Some(log_id);
                if let Some(responder) = responder {
                    responder.send(reply);
                }
            }
        }
        Ok(())
    }

    async fn try_create_snapshot_builder(
        &mut self,
        force: bool,
    ) -> Option<VolumeSnapshotBuilder<D>> {
        let applied = self.applied?;
        let engine = self.volume.engine();
        let entry = EntryId {
            term: applied.leader_id.term,
            index: applied.index,
        };
        // Taken here, between two applied entries; written out by the builder, beside
        // the apply stream.
        let export = tokio::task::spawn_blocking(move || {
            let mut export = engine.export()?;
            export.set_applied_entry(Some(entry))?;
            Ok::<_, FsError>(export)
        })
        .await
        .map_err(fatal)
        .and_then(|exported| exported.map_err(fatal));
        let export = match export {
            Ok(export) => Ok(export),
            // Asked for a snapshot it must have: the build reports the failure.
            Err(e) if force => Err(e.to_string()),
            Err(e) => {
                log::warn!("a snapshot is put off: the volume cannot be exported: {e}");
                return None;
            }
        };
        let meta = SnapshotMeta {
            last_log_id: Some(applied),
            last_membership: self.membership.clone(),
        };
        Some(VolumeSnapshotBuilder {
            export: Some(export),
            meta,
            device: Arc::clone(&self.device),
            snapshots: Arc::clone(&self.snapshots),
        })
    }

    async fn get_snapshot_builder(&mut self) -> VolumeSnapshotBuilder<D> {
        unreachable!("openraft asks try_create_snapshot_builder")
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: SnapshotFile,
    ) -> Result<(), io::Error> {
        let name = snapshot.name().to_owned();
        if snapshot.header().meta != snapshot_meta_record(meta) {
            return Err(fatal(SnapshotError::Damaged(format!(
                "{name} holds another snapshot than the one to install ({:?})",
                meta.last_log_id
            ))));
        }
        drop(snapshot);
        let old = self.volume.engine();
        let device = Arc::clone(&self.device);
        let options = self.options;
        let snapshots = Arc::clone(&self.snapshots);
        let membership = meta.last_membership.clone();
        let engine = tokio::task::spawn_blocking(move || {
            let _one = snapshots.lock().unwrap_or_else(|e| e.into_inner());
            old.retire("the volume was replaced by a snapshot");
            let (engine, _header) = snapshot::install(&device, options, &name)?;
            save_stored_membership(&*device, &membership)?;
            snapshot::complete_install(&*device)?;
            Ok::<_, SnapshotError>(engine)
        })
        .await
        .map_err(fatal)?
        .map_err(fatal)?;
        self.volume.replace(engine);
        self.applied = meta.last_log_id;
        self.membership = meta.last_membership.clone();
        if let Some(observer) = &self.observer {
            observer(MachineEvent::Installed(meta));
        }
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<SnapshotFile>>, io::Error> {
        let device = Arc::clone(&self.device);
        tokio::task::spawn_blocking(move || current_snapshot(&device))
            .await
            .map_err(fatal)?
            .map_err(fatal)
    }
}

/// Entries applied in one blocking task at most.
const APPLY_BATCH_MAX: usize = 64;

/// Applies `entries` in order, once the last of them is durable in this node's `log`:
/// each one's log id and reply, and the last membership among them.
#[allow(clippy::type_complexity)]
fn apply_batch<D: Device>(
    log: Option<crate::log_store::LogStore<D>>,
    engine: &Engine<D>,
    device: &D,
    entries: &[crate::raft::Entry],
) -> io::Result<(Vec<(LogId, Reply)>, Option<StoredMembership>)> {
    if let (Some(log), Some(last)) = (&log, entries.last()) {
        log.wait_entry_durable(last.log_id.index).map_err(fatal)?;
    }
    let mut replies = Vec::with_capacity(entries.len());
    let mut saved = None;
    for entry in entries {
        let log_id = entry.log_id;
        let reply = match &entry.payload {
            EntryPayload::Blank => Reply(Ok(TxnResult::Done)),
            EntryPayload::Normal(command) => {
                let id = EntryId {
                    term: log_id.leader_id.term,
                    index: log_id.index,
                };
                apply_command(engine, command, id)?
            }
            EntryPayload::Membership(membership) => {
                save_membership(engine, device, log_id, membership)?;
                saved = Some(StoredMembership::new(Some(log_id), membership.clone()));
                Reply(Ok(TxnResult::Done))
            }
        };
        replies.push((log_id, reply));
    }
    Ok((replies, saved))
}

/// The volume's current snapshot, if it has one.
fn current_snapshot<D: Device>(
    device: &Arc<D>,
) -> Result<Option<Snapshot<SnapshotFile>>, SnapshotError> {
    if !device.list()?.iter().any(|name| name == SNAPSHOT_FILE) {
        return Ok(None);
    }
    let file = SnapshotFile::open(Arc::clone(device) as Arc<dyn Device>, SNAPSHOT_FILE)?;
    let meta = snapshot_meta_of(&file.header().meta)
        .ok_or_else(|| SnapshotError::Damaged(format!("{SNAPSHOT_FILE}: an invalid membership")))?;
    Ok(Some(Snapshot {
        meta,
        snapshot: file,
    }))
}

/// Writes a snapshot of the volume from an export taken between two applied entries.
pub struct VolumeSnapshotBuilder<D: Device> {
    /// The export, or why there is none; taken by the build.
    export: Option<Result<Export<D>, String>>,
    meta: SnapshotMeta,
    device: Arc<D>,
    snapshots: Arc<Mutex<()>>,
}

impl<D: Device> std::fmt::Debug for VolumeSnapshotBuilder<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VolumeSnapshotBuilder")
            .field("meta", &self.meta)
            .finish()
    }
}

impl<D: Device> RaftSnapshotBuilder<TypeConfig> for VolumeSnapshotBuilder<D> {
    type SnapshotData = SnapshotFile;

    async fn build_snapshot(&mut self) -> Result<Snapshot<SnapshotFile>, io::Error> {
        let export = self
            .export
            .take()
            .ok_or_else(|| io::Error::other("a snapshot builder builds once"))?
            .map_err(|why| io::Error::other(format!("the volume cannot be exported: {why}")))?;
        let meta = self.meta.clone();
        let device = Arc::clone(&self.device);
        let snapshots = Arc::clone(&self.snapshots);
        tokio::task::spawn_blocking(move || {
            let _one = snapshots.lock().unwrap_or_else(|e| e.into_inner());
            build(&device, meta, export)
        })
        .await
        .map_err(fatal)?
        .map_err(fatal)
    }
}

/// Writes `export` as the volume's snapshot `meta`, unless the current one is as new
/// (installed meanwhile): the current one is the answer then.
fn build<D: Device>(
    device: &Arc<D>,
    meta: SnapshotMeta,
    export: Export<D>,
) -> Result<Snapshot<SnapshotFile>, SnapshotError> {
    if let Some(current) = current_snapshot(device)? {
        if current.meta.last_log_id >= meta.last_log_id {
            return Ok(current);
        }
    }
    snapshot::write_snapshot(
        &**device,
        SNAPSHOT_BUILDING_FILE,
        snapshot_meta_record(&meta),
        &export,
    )?;
    drop(export);
    device.rename(SNAPSHOT_BUILDING_FILE, SNAPSHOT_FILE)?;
    device.sync_dir()?;
    let file = SnapshotFile::open(Arc::clone(device) as Arc<dyn Device>, SNAPSHOT_FILE)?;
    Ok(Snapshot {
        meta,
        snapshot: file,
    })
}

/// Writes `payload` as `MEMBERSHIP`: to a temporary file, made durable, renamed over the
/// old one, the directory made durable.
fn write_membership<D: Device + ?Sized>(device: &D, payload: &[u8]) -> Result<(), FsError> {
    let len = MEMBERSHIP_HEADER_BYTES + payload.len();
    let mut buf = AlignedBuf::new_zeroed(len.div_ceil(BLOCK_SIZE_BYTES) * BLOCK_SIZE_BYTES);
    buf[..8].copy_from_slice(&MEMBERSHIP_MAGIC.to_le_bytes());
    buf[8..12].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    buf[12..16].copy_from_slice(&crc32fast::hash(payload).to_le_bytes());
    buf[MEMBERSHIP_HEADER_BYTES..len].copy_from_slice(payload);
    let file = device.open(MEMBERSHIP_TMP_FILE, true)?;
    let written = device
        .set_len(file, buf.len() as u64)
        .and_then(|()| device.write_durable_at(file, 0, &buf));
    device.close(file);
    written?;
    device.rename(MEMBERSHIP_TMP_FILE, MEMBERSHIP_FILE)?;
    device.sync_dir()?;
    Ok(())
}

/// The saved membership, or the empty one when none was saved.
fn read_membership<D: Device + ?Sized>(device: &D) -> Result<StoredMembership, MachineError> {
    let path = device.path_of(MEMBERSHIP_FILE).display().to_string();
    let damaged = |why: String| MachineError::Membership {
        path: path.clone(),
        why,
    };
    let names = device.list().map_err(FsError::from)?;
    if !names.iter().any(|name| name == MEMBERSHIP_FILE) {
        return Ok(StoredMembership::default());
    }
    let file = device.open(MEMBERSHIP_FILE, false).map_err(FsError::from)?;
    let read = (|| {
        let len = device.len(file)?;
        if len < BLOCK_SIZE_BYTES as u64 || len > 16 * BLOCK_SIZE_BYTES as u64 {
            return Ok(None);
        }
        let mut buf = AlignedBuf::new_zeroed(len as usize);
        device.read_at(file, 0, &mut buf)?;
        Ok::<_, FsError>(Some(buf))
    })();
    device.close(file);
    let buf = read?.ok_or_else(|| damaged("its length is not that of one to 16 blocks".into()))?;
    let magic = u64::from_le_bytes(buf[..8].try_into().expect("8 bytes"));
    let len = u32::from_le_bytes(buf[8..12].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_le_bytes(buf[12..16].try_into().expect("4 bytes"));
    if magic != MEMBERSHIP_MAGIC {
        return Err(damaged("bad magic".into()));
    }
    let Some(payload) = buf.get(MEMBERSHIP_HEADER_BYTES..MEMBERSHIP_HEADER_BYTES + len) else {
        return Err(damaged(format!("length {len} past the file's end")));
    };
    if crc32fast::hash(payload) != crc {
        return Err(damaged("CRC mismatch".into()));
    }
    let record = RaftRecord::decode(crate::log_store::records::kind::ENTRY, payload)
        .map_err(|e| damaged(e.to_string()))?;
    let RaftRecord::Entry(record) = record else {
        return Err(damaged("not an entry record".into()));
    };
    let entry = entry_of(record).ok_or_else(|| damaged("invalid membership".into()))?;
    match entry.payload {
        EntryPayload::Membership(membership) => {
            Ok(StoredMembership::new(Some(entry.log_id), membership))
        }
        _ => Err(damaged("its entry holds no membership".into())),
    }
}
