//! The engines people would pick instead of smlog's log, each committing the same records
//! from the same threads on the same file system, every commit durable by that engine's own
//! promise: raft-engine (`write(batch, sync = true)`), okaywal (`EntryWriter::commit`),
//! SQLite (WAL mode, `synchronous=FULL`, one insert per transaction), RocksDB (WAL,
//! `WriteOptions::set_sync(true)`, feature `peer-rocksdb`), and the device itself: each
//! thread writing its record to its own file with O_DIRECT `pwrite` + `fdatasync`, or with
//! io_uring and `RWF_DSYNC`.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use smlog::constants::align_up;
use smlog::io::{open_dir, AlignedBuf, Device, DeviceKind, DeviceOptions, FileId};
use smlog::log::writer::CreateOptions;
use smlog::{Log, NewRecord};

use crate::histogram;
use smlog::TxnId;

/// A system in the comparison.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum System {
    /// smlog's log: group commit on io_uring, O_DIRECT.
    Smlog,
    /// TiKV's raft-engine.
    RaftEngine,
    /// okaywal.
    Okaywal,
    /// SQLite in WAL mode with `synchronous=FULL`.
    Sqlite,
    /// RocksDB with a synced WAL.
    RocksDb,
    /// Each thread: O_DIRECT `pwrite` + `fdatasync` to its own file.
    DevicePwrite,
    /// Each thread: io_uring O_DIRECT write with `RWF_DSYNC` to its own file.
    DeviceUring,
}

impl System {
    /// Every system this build can run, smlog first.
    pub fn all() -> Vec<System> {
        let mut all = vec![
            System::Smlog,
            System::RaftEngine,
            System::Okaywal,
            System::Sqlite,
        ];
        if cfg!(feature = "peer-rocksdb") {
            all.push(System::RocksDb);
        }
        all.extend([System::DevicePwrite, System::DeviceUring]);
        all
    }

    /// The system named `name` (as in tables: `raft-engine`, `device-pwrite` ...).
    pub fn parse(name: &str) -> Result<System, String> {
        let all = [
            System::Smlog,
            System::RaftEngine,
            System::Okaywal,
            System::Sqlite,
            System::RocksDb,
            System::DevicePwrite,
            System::DeviceUring,
        ];
        let short = |s: System| match s {
            System::DevicePwrite => "device-pwrite",
            System::DeviceUring => "device-uring",
            other => other.name(),
        };
        all.into_iter()
            .find(|&s| short(s) == name || s.name() == name)
            .ok_or_else(|| {
                let names: Vec<&str> = all.into_iter().map(short).collect();
                format!("unknown system {name:?}: {}", names.join(", "))
            })
    }

    /// The name in tables and charts.
    pub fn name(self) -> &'static str {
        match self {
            System::Smlog => "smlog",
            System::RaftEngine => "raft-engine",
            System::Okaywal => "okaywal",
            System::Sqlite => "sqlite",
            System::RocksDb => "rocksdb",
            System::DevicePwrite => "device pwrite+fdatasync",
            System::DeviceUring => "device io_uring dsync",
        }
    }
}

/// One cell of the matrix.
#[derive(Clone, Debug, Serialize)]
pub struct PeerRow {
    /// The system.
    pub system: &'static str,
    /// Committing threads.
    pub threads: usize,
    /// Bytes per record.
    pub record_bytes: usize,
    /// Durable commits per second.
    pub commits_per_sec: f64,
    /// Payload megabytes (10^6) per second.
    pub mb_per_sec: f64,
    /// Commit latency percentiles, microseconds.
    pub p50_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// 99.9th percentile.
    pub p999_us: f64,
    /// Commits counted.
    pub commits: u64,
    /// Seconds measured.
    pub seconds: f64,
}

/// Commits one record durably; called from many threads at once.
trait Committer: Send + Sync {
    fn commit(&self, thread: usize, seq: u64, payload: &[u8]) -> Result<(), String>;
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

struct SmlogLog(Log<Box<dyn Device>>);

impl Committer for SmlogLog {
    fn commit(&self, thread: usize, seq: u64, payload: &[u8]) -> Result<(), String> {
        self.0
            .append_durable(&[NewRecord {
                txn_id: TxnId(thread as u64),
                step: seq as u32,
                kind: 1,
                payload,
            }])
            .map(|_| ())
            .map_err(err)
    }
}

struct RaftEngine(raft_engine::Engine);

impl Committer for RaftEngine {
    fn commit(&self, thread: usize, seq: u64, payload: &[u8]) -> Result<(), String> {
        let mut batch = raft_engine::LogBatch::default();
        batch
            .put(
                thread as u64 + 1,
                seq.to_le_bytes().to_vec(),
                payload.to_vec(),
            )
            .map_err(err)?;
        self.0.write(&mut batch, true).map(|_| ()).map_err(err)
    }
}

fn raft_engine_config(dir: &Path) -> raft_engine::Config {
    raft_engine::Config {
        dir: dir.to_string_lossy().into_owned(),
        // The payloads are random: compression would only cost time.
        batch_compression_threshold: raft_engine::ReadableSize(0),
        ..raft_engine::Config::default()
    }
}

struct Okaywal(okaywal::WriteAheadLog);

impl Committer for Okaywal {
    fn commit(&self, _thread: usize, _seq: u64, payload: &[u8]) -> Result<(), String> {
        let mut entry = self.0.begin_entry().map_err(err)?;
        entry.write_chunk(payload).map_err(err)?;
        entry.commit().map(|_| ()).map_err(err)
    }
}

/// One connection per thread (a connection is not shared between threads).
struct Sqlite(Vec<Mutex<rusqlite::Connection>>);

impl Committer for Sqlite {
    fn commit(&self, thread: usize, seq: u64, payload: &[u8]) -> Result<(), String> {
        let connection = self.0[thread].lock().map_err(err)?;
        connection
            .prepare_cached("INSERT INTO log (thread, seq, payload) VALUES (?1, ?2, ?3)")
            .and_then(|mut s| s.execute(rusqlite::params![thread as i64, seq as i64, payload]))
            .map(|_| ())
            .map_err(err)
    }
}

fn sqlite_connection(path: &Path) -> Result<rusqlite::Connection, String> {
    let connection = rusqlite::Connection::open(path).map_err(err)?;
    connection
        .busy_timeout(Duration::from_secs(120))
        .map_err(err)?;
    connection
        .pragma_update(None, "journal_mode", "WAL")
        .map_err(err)?;
    connection
        .pragma_update(None, "synchronous", "FULL")
        .map_err(err)?;
    Ok(connection)
}

#[cfg(feature = "peer-rocksdb")]
struct RocksDb(rocksdb::DB);

#[cfg(feature = "peer-rocksdb")]
impl Committer for RocksDb {
    fn commit(&self, thread: usize, seq: u64, payload: &[u8]) -> Result<(), String> {
        let mut options = rocksdb::WriteOptions::default();
        options.set_sync(true);
        let mut key = [0u8; 16];
        key[..8].copy_from_slice(&(thread as u64).to_le_bytes());
        key[8..].copy_from_slice(&seq.to_le_bytes());
        self.0.put_opt(key, payload, &options).map_err(err)
    }
}

/// Each thread its own preallocated file and aligned buffer.
struct DeviceWriter {
    device: Box<dyn Device>,
    files: Vec<FileId>,
    buffers: Vec<Mutex<AlignedBuf>>,
    slots: u64,
    dsync: bool,
}

const DEVICE_FILE_BYTES: u64 = 64 << 20;

impl Committer for DeviceWriter {
    fn commit(&self, thread: usize, seq: u64, payload: &[u8]) -> Result<(), String> {
        let mut buf = self.buffers[thread].lock().map_err(err)?;
        buf[..payload.len()].copy_from_slice(payload);
        let offset = (seq % self.slots) * buf.len() as u64;
        let file = self.files[thread];
        if self.dsync {
            self.device
                .write_durable_at(file, offset, &buf)
                .map_err(err)
        } else {
            self.device.write_at(file, offset, &buf).map_err(err)?;
            self.device.sync(file).map_err(err)
        }
    }
}

fn open(
    system: System,
    dir: &Path,
    threads: usize,
    record_bytes: usize,
) -> Result<Box<dyn Committer>, String> {
    Ok(match system {
        System::Smlog => {
            let device = open_dir(
                dir,
                DeviceOptions {
                    kind: DeviceKind::Uring,
                    direct_io: true,
                    create_dir: true,
                },
            )
            .map_err(err)?;
            let log = Log::create(Arc::new(device), CreateOptions::default()).map_err(err)?;
            log.reserve_segments(4).map_err(err)?;
            Box::new(SmlogLog(log))
        }
        System::RaftEngine => Box::new(RaftEngine(
            raft_engine::Engine::open(raft_engine_config(dir)).map_err(err)?,
        )),
        System::Okaywal => Box::new(Okaywal(
            okaywal::WriteAheadLog::recover(dir, okaywal::LogVoid).map_err(err)?,
        )),
        System::Sqlite => {
            std::fs::create_dir_all(dir).map_err(err)?;
            let path = dir.join("log.sqlite");
            let first = sqlite_connection(&path)?;
            first
                .execute_batch(
                    "CREATE TABLE IF NOT EXISTS log \
                     (id INTEGER PRIMARY KEY, thread INTEGER, seq INTEGER, payload BLOB)",
                )
                .map_err(err)?;
            let mut connections = vec![Mutex::new(first)];
            for _ in 1..threads {
                connections.push(Mutex::new(sqlite_connection(&path)?));
            }
            Box::new(Sqlite(connections))
        }
        #[cfg(feature = "peer-rocksdb")]
        System::RocksDb => {
            let mut options = rocksdb::Options::default();
            options.create_if_missing(true);
            Box::new(RocksDb(rocksdb::DB::open(&options, dir).map_err(err)?))
        }
        #[cfg(not(feature = "peer-rocksdb"))]
        System::RocksDb => {
            return Err("RocksDB is not built in: add --features peer-rocksdb".into());
        }
        System::DevicePwrite | System::DeviceUring => {
            let kind = if system == System::DeviceUring {
                DeviceKind::Uring
            } else {
                DeviceKind::Posix
            };
            let device = open_dir(
                dir,
                DeviceOptions {
                    kind,
                    direct_io: true,
                    create_dir: true,
                },
            )
            .map_err(err)?;
            let size = align_up(record_bytes, 4096);
            let mut files = Vec::new();
            let mut buffers = Vec::new();
            for t in 0..threads {
                let file = device.open(&format!("t{t}"), true).map_err(err)?;
                device.set_len(file, DEVICE_FILE_BYTES).map_err(err)?;
                files.push(file);
                buffers.push(Mutex::new(AlignedBuf::new_zeroed(size)));
            }
            Box::new(DeviceWriter {
                device,
                files,
                buffers,
                slots: DEVICE_FILE_BYTES / size as u64,
                dsync: system == System::DeviceUring,
            })
        }
    })
}

/// Bytes that do not compress.
fn payload(thread: usize, len: usize) -> Vec<u8> {
    let mut state = 0x9e37_79b9_7f4a_7c15u64 ^ (thread as u64 + 1);
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

/// Runs `system` with `threads` committers of `record_bytes` records for `seconds`, in a
/// new directory under `dir` (removed after).
pub fn run_peer(
    system: System,
    dir: &Path,
    threads: usize,
    record_bytes: usize,
    seconds: f64,
) -> Result<PeerRow, String> {
    let run_dir = tempfile::Builder::new()
        .prefix("smlog-compare-")
        .tempdir_in(dir)
        .map_err(err)?;
    let data = run_dir.path().join("data");
    let committer: Arc<dyn Committer> = Arc::from(open(system, &data, threads, record_bytes)?);
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let workers: Vec<_> = (0..threads)
        .map(|t| {
            let committer = Arc::clone(&committer);
            let stop = Arc::clone(&stop);
            let payload = payload(t, record_bytes);
            std::thread::spawn(move || -> Result<_, String> {
                let mut hist = histogram();
                let mut seq = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let began = Instant::now();
                    committer.commit(t, seq, &payload)?;
                    let _ = hist.record(began.elapsed().as_micros() as u64);
                    seq += 1;
                }
                Ok(hist)
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs_f64(seconds));
    stop.store(true, Ordering::Relaxed);
    let mut hist = histogram();
    for worker in workers {
        let h = worker
            .join()
            .map_err(|_| "a committer panicked".to_string())??;
        hist.add(&h).map_err(err)?;
    }
    let elapsed = start.elapsed().as_secs_f64();
    drop(committer);
    let commits = hist.len();
    Ok(PeerRow {
        system: system.name(),
        threads,
        record_bytes,
        commits_per_sec: commits as f64 / elapsed,
        mb_per_sec: commits as f64 * record_bytes as f64 / elapsed / 1e6,
        p50_us: hist.value_at_quantile(0.50) as f64,
        p99_us: hist.value_at_quantile(0.99) as f64,
        p999_us: hist.value_at_quantile(0.999) as f64,
        commits,
        seconds: elapsed,
    })
}

/// Reopening after a log of `log_bytes`.
#[derive(Clone, Debug, Serialize)]
pub struct RecoveryRow {
    /// The system.
    pub system: &'static str,
    /// Bytes of records written before the reopen.
    pub log_bytes: u64,
    /// Seconds to reopen (recover).
    pub reopen_secs: f64,
    /// Bytes of records per second of reopen, MB/s.
    pub scan_mb_per_sec: f64,
}

/// Writes `log_bytes` of 4 KiB records to raft-engine (or RocksDB), closes it, and times
/// the reopen.
pub fn peer_recovery(system: System, dir: &Path, log_bytes: u64) -> Result<RecoveryRow, String> {
    let run_dir = tempfile::Builder::new()
        .prefix("smlog-compare-recovery-")
        .tempdir_in(dir)
        .map_err(err)?;
    let data = run_dir.path().join("data");
    let record = payload(0, 4096);
    let records = log_bytes / record.len() as u64;
    let reopen_secs = match system {
        System::RaftEngine => {
            let engine = raft_engine::Engine::open(raft_engine_config(&data)).map_err(err)?;
            let mut seq = 0;
            while seq < records {
                let mut batch = raft_engine::LogBatch::default();
                for _ in 0..64 {
                    batch
                        .put(1 + seq % 16, seq.to_le_bytes().to_vec(), record.clone())
                        .map_err(err)?;
                    seq += 1;
                }
                engine.write(&mut batch, false).map_err(err)?;
            }
            let mut last = raft_engine::LogBatch::default();
            last.put(1, b"last".to_vec(), b"x".to_vec()).map_err(err)?;
            engine.write(&mut last, true).map_err(err)?;
            drop(engine);
            let start = Instant::now();
            let engine = raft_engine::Engine::open(raft_engine_config(&data)).map_err(err)?;
            let secs = start.elapsed().as_secs_f64();
            if engine.get(1, b"last").is_none() {
                return Err("raft-engine lost its last write".into());
            }
            secs
        }
        #[cfg(feature = "peer-rocksdb")]
        System::RocksDb => {
            let mut options = rocksdb::Options::default();
            options.create_if_missing(true);
            // Everything stays in the WAL: no memtable flush before the reopen.
            options.set_write_buffer_size((log_bytes * 2) as usize);
            options.set_max_total_wal_size(log_bytes * 4);
            let db = rocksdb::DB::open(&options, &data).map_err(err)?;
            for seq in 0..records {
                db.put(seq.to_le_bytes(), &record).map_err(err)?;
            }
            let mut sync = rocksdb::WriteOptions::default();
            sync.set_sync(true);
            db.put_opt(b"last", b"x", &sync).map_err(err)?;
            drop(db);
            let start = Instant::now();
            let db = rocksdb::DB::open(&options, &data).map_err(err)?;
            let secs = start.elapsed().as_secs_f64();
            if db.get(b"last").map_err(err)?.is_none() {
                return Err("RocksDB lost its last write".into());
            }
            secs
        }
        other => return Err(format!("no recovery comparison for {}", other.name())),
    };
    Ok(RecoveryRow {
        system: system.name(),
        log_bytes: records * record.len() as u64,
        reopen_secs,
        scan_mb_per_sec: (records * record.len() as u64) as f64 / reopen_secs / 1e6,
    })
}
