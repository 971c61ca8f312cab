//! The writer on the simulated device: group commit, batches in flight, release and reuse of
//! segments.

use super::*;
use crate::io::sim::SimDevice;
use crate::log::reader::{LogReader, ScanItem};

fn new_log() -> Log<SimDevice> {
    Log::create(
        Arc::new(SimDevice::new(1)),
        CreateOptions {
            segment_size_bytes: SEGMENT_SIZE_BYTES_MIN,
        },
    )
    .unwrap()
}

fn record(payload: &[u8]) -> NewRecord<'_> {
    NewRecord {
        txn_id: TxnId(1),
        step: 2,
        kind: 3,
        payload,
    }
}

fn read_all(device: &SimDevice) -> Vec<u64> {
    LogReader::open(device)
        .unwrap()
        .map(|item| match item.unwrap() {
            ScanItem::Record(r) => r.lsn.get(),
            other => panic!("{other:?}"),
        })
        .collect()
}

#[test]
fn bad_appends_are_refused_before_anything_is_written() {
    let log = new_log();
    let big = vec![1u8; RECORD_PAYLOAD_SIZE_BYTES_MAX + 1];
    assert!(matches!(
        log.append(&[record(&big)]),
        Err(LogError::RecordTooLarge { .. })
    ));
    let zero_kind = NewRecord {
        kind: 0,
        ..record(b"x")
    };
    assert!(matches!(
        log.append(&[zero_kind]),
        Err(LogError::InvalidKind)
    ));
    let full = vec![1u8; RECORD_PAYLOAD_SIZE_BYTES_MAX];
    let too_many = [record(&full), record(&full)];
    assert!(matches!(
        log.append(&too_many),
        Err(LogError::AppendTooLarge { .. })
    ));
    assert_eq!(log.last_lsn(), Lsn(0));
    assert!(matches!(
        log.set_batches_in_flight(0),
        Err(LogError::InvalidOptions(_))
    ));
    assert!(matches!(
        log.set_batches_in_flight(BATCHES_IN_FLIGHT_MAX + 1),
        Err(LogError::InvalidOptions(_))
    ));
}

#[test]
fn records_of_one_append_share_a_batch_and_consecutive_lsns() {
    let log = new_log();
    let last = log
        .append(&[record(b"a"), record(b"b"), record(b"c")])
        .unwrap();
    assert_eq!(last, Lsn(3));
    assert_eq!(log.durable_lsn(), Lsn(0));
    log.wait_durable(Lsn(3)).unwrap();
    assert_eq!(log.stats().batch_count, 1);
    assert_eq!(log.stats().record_count, 3);
    assert_eq!(log.durable_lsn(), Lsn(3));
}

#[test]
fn async_appends_become_durable_at_sync_and_close_writes_the_mark() {
    let log = new_log();
    for _ in 0..10 {
        log.append(&[record(b"unstable")]).unwrap();
    }
    assert_eq!(log.durable_lsn(), Lsn(0));
    assert_eq!(log.sync().unwrap(), Lsn(10));
    assert_eq!(log.durable_lsn(), Lsn(10));
    assert!(log.mark_lsn() < Lsn(10));
    let device = Arc::clone(log.device());
    assert_eq!(log.close().unwrap(), Lsn(10));
    assert_eq!(read_all(&device), (1..=10).collect::<Vec<_>>());
}

#[test]
fn a_record_that_does_not_fit_starts_the_next_segment() {
    let log = new_log();
    let payload = vec![7u8; 100 * 1024];
    for _ in 0..6 {
        log.append_durable(&[record(&payload)]).unwrap();
    }
    let device = Arc::clone(log.device());
    log.close().unwrap();
    assert_eq!(read_all(&device), (1..=6).collect::<Vec<_>>());
    let names = device.list().unwrap();
    assert!(
        names.contains(&segment::segment_file_name(SegmentSeq(3))),
        "{names:?}"
    );
}

#[test]
fn release_prefix_keeps_the_segment_being_written() {
    let log = new_log();
    assert_eq!(log.release_prefix(Lsn(100)).unwrap(), 0);
    let payload = vec![7u8; 100 * 1024];
    for _ in 0..8 {
        log.append_durable(&[record(&payload)]).unwrap();
    }
    let released = log.release_prefix(log.durable_lsn()).unwrap();
    assert!(released >= 2, "{released}");
    assert!(log.meta().first_segment_seq > SegmentSeq(1));
    let device = Arc::clone(log.device());
    log.close().unwrap();
    let lsns = read_all(&device);
    assert_eq!(*lsns.last().unwrap(), 8);
    assert!(lsns[0] > 1);
}

#[test]
fn many_batches_in_flight_still_complete_in_order() {
    let log = Arc::new(new_log());
    log.set_batches_in_flight(BATCHES_IN_FLIGHT_MAX).unwrap();
    let threads: Vec<_> = (0..6)
        .map(|_| {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                for _ in 0..200 {
                    log.append_durable(&[record(b"concurrent")]).unwrap();
                }
            })
        })
        .collect();
    threads.into_iter().for_each(|t| t.join().unwrap());
    assert_eq!(log.durable_lsn(), Lsn(1200));
    let log = Arc::into_inner(log).unwrap();
    let device = Arc::clone(log.device());
    log.close().unwrap();
    assert_eq!(read_all(&device), (1..=1200).collect::<Vec<_>>());
}

/// A device whose durable writes, once the gate is armed, wait at it until let through, in
/// the order they came; it counts how many wait at once (the batches in flight).
#[derive(Debug)]
struct Gated {
    inner: SimDevice,
    gate: Mutex<Gate>,
    changed: std::sync::Condvar,
}

#[derive(Debug, Default)]
struct Gate {
    armed: bool,
    /// Tickets handed to writes that came to the gate, and how many were let through.
    tickets: u64,
    let_through: u64,
    waiting: usize,
}

impl Gated {
    fn pass(&self) {
        let mut gate = self.gate.lock().unwrap();
        if !gate.armed {
            return;
        }
        let ticket = gate.tickets;
        gate.tickets += 1;
        gate.waiting += 1;
        self.changed.notify_all();
        while ticket >= gate.let_through {
            gate = self.changed.wait(gate).unwrap();
        }
        gate.waiting -= 1;
        self.changed.notify_all();
    }

    /// Waits (10 s at most) until `came` writes have come to the gate and `waiting` of them
    /// wait there.
    fn await_writes(&self, came: u64, waiting: usize) {
        let deadline = Instant::now() + std::time::Duration::from_secs(10);
        let mut gate = self.gate.lock().unwrap();
        while (gate.tickets, gate.waiting) != (came, waiting) {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "{} writes came, {} wait; not {came}, {waiting}",
                gate.tickets,
                gate.waiting
            );
            gate = self.changed.wait_timeout(gate, left).unwrap().0;
        }
    }

    /// Lets the oldest `count` writes through.
    fn let_through(&self, count: u64) {
        self.gate.lock().unwrap().let_through += count;
        self.changed.notify_all();
    }

    fn writes(&self) -> (u64, usize) {
        let gate = self.gate.lock().unwrap();
        (gate.tickets, gate.waiting)
    }
}

impl Device for Gated {
    fn describe(&self) -> String {
        self.inner.describe()
    }
    fn path_of(&self, name: &str) -> std::path::PathBuf {
        self.inner.path_of(name)
    }
    fn list(&self) -> Result<Vec<String>, crate::io::IoError> {
        self.inner.list()
    }
    fn open(&self, name: &str, create: bool) -> Result<FileId, crate::io::IoError> {
        self.inner.open(name, create)
    }
    fn close(&self, file: FileId) {
        self.inner.close(file)
    }
    fn len(&self, file: FileId) -> Result<u64, crate::io::IoError> {
        self.inner.len(file)
    }
    fn set_len(&self, file: FileId, len: u64) -> Result<(), crate::io::IoError> {
        self.inner.set_len(file, len)
    }
    fn read_at(&self, file: FileId, offset: u64, buf: &mut [u8]) -> Result<(), crate::io::IoError> {
        self.inner.read_at(file, offset, buf)
    }
    fn write_at(&self, file: FileId, offset: u64, buf: &[u8]) -> Result<(), crate::io::IoError> {
        self.inner.write_at(file, offset, buf)
    }
    fn write_durable_at(
        &self,
        file: FileId,
        offset: u64,
        buf: &[u8],
    ) -> Result<(), crate::io::IoError> {
        self.pass();
        self.inner.write_durable_at(file, offset, buf)
    }
    fn sync(&self, file: FileId) -> Result<(), crate::io::IoError> {
        self.inner.sync(file)
    }
    fn rename(&self, from: &str, to: &str) -> Result<(), crate::io::IoError> {
        self.inner.rename(from, to)
    }
    fn remove(&self, name: &str) -> Result<(), crate::io::IoError> {
        self.inner.remove(name)
    }
    fn sync_dir(&self) -> Result<(), crate::io::IoError> {
        self.inner.sync_dir()
    }
}

type GatedLog = Arc<Log<Gated>>;

fn gated_log() -> (Arc<Gated>, GatedLog) {
    let device = Arc::new(Gated {
        inner: SimDevice::new(1),
        gate: Mutex::default(),
        changed: std::sync::Condvar::new(),
    });
    let log = Log::create(
        Arc::clone(&device),
        CreateOptions {
            segment_size_bytes: SEGMENT_SIZE_BYTES_MIN,
        },
    )
    .unwrap();
    log.reserve_segments(1).unwrap();
    device.gate.lock().unwrap().armed = true;
    (device, Arc::new(log))
}

/// A thread that appends one record and waits until it is durable.
fn committer(log: &GatedLog) -> std::thread::JoinHandle<Lsn> {
    let log = Arc::clone(log);
    std::thread::spawn(move || log.append_durable(&[record(b"committer")]).unwrap())
}

/// Waits until `count` committers wait for the filling batch: each counted itself and,
/// in the same hold of the lock, went to sleep instead of writing it.
fn await_fill_waiters(log: &GatedLog, count: u32) {
    let deadline = Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let state = log.lock();
        if state.fill_waiters == count {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} committers wait, not {count}",
            state.fill_waiters
        );
        drop(state);
        std::thread::yield_now();
    }
}

#[test]
fn a_second_batch_goes_beside_one_that_carries_a_lone_committer() {
    let (device, log) = gated_log();
    // A limit of one: the first committer's batch is in flight (held at the gate)...
    let first = committer(&log);
    device.await_writes(1, 1);
    // ... and the second's goes beside it rather than wait for it.
    let second = committer(&log);
    device.await_writes(2, 2);
    // Never a third: two in flight is the most with a limit of one.
    let third = committer(&log);
    await_fill_waiters(&log, 1);
    assert_eq!(device.writes(), (2, 2));
    device.let_through(3);
    let mut lsns = [first, second, third].map(|t| t.join().unwrap());
    lsns.sort();
    assert_eq!(lsns, [Lsn(1), Lsn(2), Lsn(3)]);
    assert_eq!(log.durable_lsn(), Lsn(3));
    assert_eq!(log.stats().batch_count, 3);
}

#[test]
fn no_batch_goes_beside_one_that_carries_two_committers() {
    let (device, log) = gated_log();
    // Two lone committers' batches in flight; two more committers wait in the filling batch.
    let first = committer(&log);
    device.await_writes(1, 1);
    let lone = [first, committer(&log)];
    device.await_writes(2, 2);
    let pair = [committer(&log), committer(&log)];
    await_fill_waiters(&log, 2);
    // The first write completes: its leader writes the pair's batch beside the other lone
    // one.
    device.let_through(1);
    device.await_writes(3, 2);
    // The other lone batch completes: the pair's batch is alone in flight, and a fifth
    // committer does not go beside it.
    device.let_through(1);
    device.await_writes(3, 1);
    let deadline = Instant::now() + std::time::Duration::from_secs(10);
    while log.durable_lsn() < Lsn(2) {
        assert!(
            Instant::now() < deadline,
            "the second write never completed"
        );
        std::thread::yield_now();
    }
    assert_eq!(log.lock().in_flight.len(), 1);
    let fifth = committer(&log);
    await_fill_waiters(&log, 1);
    assert_eq!(
        device.writes(),
        (3, 1),
        "a batch went beside two committers'"
    );
    device.let_through(2);
    for t in lone.into_iter().chain(pair).chain([fifth]) {
        t.join().unwrap();
    }
    assert_eq!(log.durable_lsn(), Lsn(5));
    assert_eq!(log.stats().batch_count, 4);
}
