//! Segment files and the `LOG` metadata file, and the preparer thread that keeps the next
//! segments created, zero-filled and named durably before the writer needs them.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use super::LogError;
use crate::constants::{BLOCK_SIZE_BYTES, META_SIZE_BYTES, SEGMENTS_READY_AHEAD_COUNT};
use crate::format::{DecodeError, LogMeta};
use crate::ids::SegmentSeq;
use crate::io::{AlignedBuf, Device, IoError, IoErrorKind, IoOp};

/// Name of the metadata file in a log directory.
pub const META_FILE_NAME: &str = "LOG";
/// Name of the temporary file the `LOG` file is written to before its rename.
pub const META_TEMP_FILE_NAME: &str = "LOG.tmp";
const SEGMENT_SUFFIX: &str = ".seg";

/// Bytes written per zero-fill write.
const ZERO_FILL_CHUNK_BYTES: usize = 1024 * 1024;

/// The file name of segment `seq`: twenty decimal digits and `.seg`.
pub fn segment_file_name(seq: SegmentSeq) -> String {
    format!("{seq:020}{SEGMENT_SUFFIX}")
}

/// The sequence number in a segment file name, if it is one.
pub fn parse_segment_file_name(name: &str) -> Option<SegmentSeq> {
    let digits = name.strip_suffix(SEGMENT_SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().map(SegmentSeq)
}

/// Reads and validates the `LOG` file.
pub fn read_meta<D: Device + ?Sized>(device: &D) -> Result<LogMeta, LogError> {
    let path = device.path_of(META_FILE_NAME);
    let file = match device.open(META_FILE_NAME, false) {
        Ok(file) => file,
        Err(e) if e.kind == IoErrorKind::NotFound => {
            return Err(LogError::NotALog {
                path: device.path_of(""),
            })
        }
        Err(e) => return Err(e.into()),
    };
    let mut buf = AlignedBuf::new_zeroed(META_SIZE_BYTES);
    let result = device.len(file).and_then(|len_bytes| {
        if len_bytes < META_SIZE_BYTES as u64 {
            return Ok(Some(len_bytes));
        }
        device.read_at(file, 0, &mut buf).map(|()| None)
    });
    device.close(file);
    if let Some(len_bytes) = result? {
        return Err(LogError::BadMeta {
            path,
            why: DecodeError::TooShort {
                len_bytes: len_bytes as usize,
                need_bytes: META_SIZE_BYTES,
            },
        });
    }
    LogMeta::decode(&buf).map_err(|why| LogError::BadMeta { path, why })
}

/// Writes the `LOG` file atomically: a temporary file, synced, renamed over, directory synced.
pub fn write_meta<D: Device + ?Sized>(device: &D, meta: &LogMeta) -> Result<(), LogError> {
    let mut buf = AlignedBuf::new_zeroed(META_SIZE_BYTES);
    meta.encode(&mut buf);
    // Into the spare file kept beside `LOG` when there is one: its block is allocated, so
    // releasing segments (which rewrites this file) works on a full host file system.
    let file = device.open(META_TEMP_FILE_NAME, true)?;
    let written = device
        .allocate(file, META_SIZE_BYTES as u64)
        .and_then(|()| device.write_durable_at(file, 0, &buf));
    device.close(file);
    written?;
    device.rename(META_TEMP_FILE_NAME, META_FILE_NAME)?;
    device.sync_dir()?;
    // The next spare takes the block the old `LOG` just gave back (best effort: without
    // one, the next rewrite allocates its own).
    if let Ok(spare) = device.open(META_TEMP_FILE_NAME, true) {
        let _ = device.allocate(spare, META_SIZE_BYTES as u64);
        device.close(spare);
    }
    Ok(())
}

/// The name a new segment is zero-filled under before it is renamed into place.
fn filling_name(seq: SegmentSeq) -> String {
    format!("{}{FILLING_SUFFIX}", segment_file_name(seq))
}

/// Suffix of a segment file still being zero-filled (never read as a segment).
pub const FILLING_SUFFIX: &str = ".filling";

/// Creates segment `seq` (or renames a recycled segment to it), sets its length, zero-fills
/// it when new, and makes its data and name durable.
///
/// A new segment is filled under another name and renamed into place only when every block
/// of it is written and durable, so a segment file never has a hole: a fill the host file
/// system refuses for space (ENOSPC) removes what it wrote and leaves no segment, and the
/// writer refuses new work rather than roll into a sparse file.
fn prepare_segment<D: Device>(
    device: &D,
    seq: SegmentSeq,
    segment_size_bytes: u64,
    recycled: Option<String>,
    zeros: &AlignedBuf,
) -> Result<(), IoError> {
    let name = segment_file_name(seq);
    if let Some(old) = recycled {
        // A recycled segment keeps its old bytes: they name another incarnation, so none of
        // them can pass as a record of the new one, and recovery reads them as the clean end.
        // Its blocks are allocated and written already, so O_DIRECT overwrites stay cheap.
        device.rename(&old, &name)?;
        return device.sync_dir();
    }
    // A segment of this name prepared before (ahead of a writer that then crashed) is
    // whole: only a whole one is ever renamed into place. One of another length is not a
    // segment this writer may use (nothing past the tail holds records): filled again.
    if let Ok(file) = device.open(&name, false) {
        let len = device.len(file);
        let synced = device.sync(file);
        device.close(file);
        if len? == segment_size_bytes {
            synced?;
            return device.sync_dir();
        }
        device.remove(&name)?;
    }
    // A new segment is zero-filled, so the writer's O_DIRECT writes never land in
    // unwritten extents (whose conversion would make every fdatasync a journal commit).
    let filling = filling_name(seq);
    if device
        .free_bytes()
        .is_some_and(|free| free < segment_size_bytes)
    {
        // It could not finish, and while it tried it would take the space a checkpoint or
        // a delete needs.
        return Err(IoError::new(
            crate::io::IoOp::Write,
            device.path_of(&filling),
            0,
            IoErrorKind::NoSpace,
        ));
    }
    let file = device.open(&filling, true)?;
    let result = (|| {
        device.set_len(file, segment_size_bytes)?;
        let mut offset = 0u64;
        while offset < segment_size_bytes {
            let chunk = (segment_size_bytes - offset).min(zeros.len() as u64) as usize;
            device.write_at(file, offset, &zeros[..chunk])?;
            offset += chunk as u64;
        }
        device.sync(file)
    })();
    device.close(file);
    if let Err(e) = result {
        // What it wrote holds space the store needs: give it back.
        let _ = device.remove(&filling);
        return Err(e);
    }
    device.rename(&filling, &name)?;
    device.sync_dir()
}

/// Removes segment files a crash left half filled (they hold space, and nothing else).
pub fn remove_unfinished_fills<D: Device>(device: &D) -> Result<(), IoError> {
    let mut removed = false;
    for name in device.list()? {
        if name.ends_with(FILLING_SUFFIX) {
            device.remove(&name)?;
            removed = true;
        }
    }
    if removed {
        device.sync_dir()?;
    }
    Ok(())
}

#[derive(Debug)]
struct PrepState {
    ready_up_to: SegmentSeq,
    want_up_to: SegmentSeq,
    recyclable: VecDeque<String>,
    error: Option<IoError>,
    shutdown: bool,
    /// The thread has returned.
    exited: bool,
}

#[derive(Debug)]
struct PrepShared<D> {
    device: D,
    /// The last preparation was refused for space (read without the lock, on every append).
    no_space: AtomicBool,
    segment_size_bytes: u64,
    state: Mutex<PrepState>,
    changed: Condvar,
}

impl<D> PrepShared<D> {
    fn failed(&self, state: &mut PrepState, error: IoError) {
        if error.kind == IoErrorKind::NoSpace {
            self.no_space.store(true, Ordering::Release);
        }
        state.error = Some(error);
    }

    /// Forgets a preparation refused for space, so the next one is tried.
    fn clear_no_space(&self, state: &mut PrepState) {
        if state
            .error
            .as_ref()
            .is_some_and(|e| e.kind == IoErrorKind::NoSpace)
        {
            state.error = None;
            self.no_space.store(false, Ordering::Release);
            self.changed.notify_all();
        }
    }
}

/// Keeps segments up to [`SEGMENTS_READY_AHEAD_COUNT`] ahead of the one being written
/// created and zero-filled, on its own thread, so no commit waits for a fallocate or a
/// zero-fill.
///
/// When the device asks for inline IO ([`Device::wants_inline_io`]: a simulated device in
/// deterministic mode) there is no thread: segments are prepared on the thread that waits
/// for them, so a run depends on its seed alone.
#[derive(Debug)]
pub struct Preparer<D: Device + Clone> {
    shared: Arc<PrepShared<D>>,
    thread: Option<JoinHandle<()>>,
}

impl<D: Device + Clone> Preparer<D> {
    /// Starts the thread (or, for inline IO, none). Segments up to `ready_up_to` exist.
    pub fn start(device: D, segment_size_bytes: u64, ready_up_to: SegmentSeq) -> Preparer<D> {
        let inline = device.wants_inline_io();
        let shared = Arc::new(PrepShared {
            device,
            no_space: AtomicBool::new(false),
            segment_size_bytes,
            state: Mutex::new(PrepState {
                ready_up_to,
                want_up_to: ready_up_to,
                recyclable: VecDeque::new(),
                error: None,
                shutdown: false,
                exited: false,
            }),
            changed: Condvar::new(),
        });
        if inline {
            return Preparer {
                shared,
                thread: None,
            };
        }
        let worker = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("smlog-prepare".into())
            .spawn(move || run(&worker))
            .expect("spawn the segment preparer");
        Preparer {
            shared,
            thread: Some(thread),
        }
    }

    /// Inline mode: prepares every segment up to `seq` on this thread.
    fn prepare_inline(&self, seq: SegmentSeq) -> Result<(), IoError> {
        let zeros = AlignedBuf::new_zeroed(ZERO_FILL_CHUNK_BYTES.max(BLOCK_SIZE_BYTES));
        loop {
            let (next, recycled) = {
                let mut state = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
                // A segment ready already stays usable whatever failed after it.
                if state.ready_up_to >= seq {
                    return Ok(());
                }
                if let Some(error) = &state.error {
                    return Err(error.clone());
                }
                (state.ready_up_to + 1, state.recyclable.pop_front())
            };
            let result = prepare_segment(
                &self.shared.device,
                next,
                self.shared.segment_size_bytes,
                recycled,
                &zeros,
            );
            let mut state = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
            match result {
                Ok(()) => state.ready_up_to = next,
                Err(error) => {
                    self.shared.failed(&mut state, error.clone());
                    return Err(error);
                }
            }
        }
    }

    /// Waits until segment `seq` is ready, asking for more ahead of it.
    pub fn wait_ready(&self, seq: SegmentSeq) -> Result<(), IoError> {
        if self.thread.is_none() {
            return self.prepare_inline(seq);
        }
        let mut state = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
        let want = seq + SEGMENTS_READY_AHEAD_COUNT as u64;
        if state.want_up_to < want {
            state.want_up_to = want;
            self.shared.changed.notify_all();
        }
        loop {
            if state.ready_up_to >= seq {
                return Ok(());
            }
            if let Some(error) = &state.error {
                return Err(error.clone());
            }
            state = self
                .shared
                .changed
                .wait(state)
                .unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Waits until every segment up to `seq` is ready.
    pub fn reserve(&self, seq: SegmentSeq) -> Result<(), IoError> {
        if self.thread.is_none() {
            return self.prepare_inline(seq);
        }
        {
            let mut state = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
            if state.want_up_to < seq {
                state.want_up_to = seq;
                self.shared.changed.notify_all();
            }
        }
        self.wait_ready(seq)
    }

    /// Stops for good: returns once no segment is being prepared; every later wait for a
    /// segment not yet ready fails.
    pub fn stop(&self) {
        let mut state = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
        state.shutdown = true;
        state.error.get_or_insert_with(|| {
            // ESHUTDOWN: the log was closed.
            IoError::new(IoOp::Open, "", 0, IoErrorKind::Other(libc::ESHUTDOWN))
        });
        self.shared.changed.notify_all();
        while self.thread.is_some() && !state.exited {
            state = self
                .shared
                .changed
                .wait(state)
                .unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Hands old segment files over for reuse. A preparation refused for space is tried
    /// again: a recycled file needs none.
    pub fn recycle(&self, names: impl IntoIterator<Item = String>) {
        let mut state = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
        let before = state.recyclable.len();
        state.recyclable.extend(names);
        if state.recyclable.len() > before {
            self.shared.clear_no_space(&mut state);
        }
    }

    /// Tries again a preparation refused for space (a checkpoint ran; space may be back).
    pub fn retry(&self) {
        let mut state = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
        self.shared.clear_no_space(&mut state);
    }

    /// Whether the preparation of the segments ahead was refused for space (the log then
    /// keeps what is left of the ready segments for work that frees space).
    pub fn out_of_space(&self) -> bool {
        self.shared.no_space.load(Ordering::Acquire)
    }

    /// The last segment that is ready.
    pub fn ready_up_to(&self) -> SegmentSeq {
        self.shared
            .state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .ready_up_to
    }
}

fn run<D: Device>(shared: &PrepShared<D>) {
    let zeros = AlignedBuf::new_zeroed(ZERO_FILL_CHUNK_BYTES.max(BLOCK_SIZE_BYTES));
    loop {
        let (seq, recycled) = {
            let mut state = shared.state.lock().unwrap_or_else(|e| e.into_inner());
            while !state.shutdown
                && (state.ready_up_to >= state.want_up_to || state.error.is_some())
            {
                state = shared
                    .changed
                    .wait(state)
                    .unwrap_or_else(|e| e.into_inner());
            }
            if state.shutdown {
                state.exited = true;
                shared.changed.notify_all();
                return;
            }
            (state.ready_up_to + 1, state.recyclable.pop_front())
        };
        let result = prepare_segment(
            &shared.device,
            seq,
            shared.segment_size_bytes,
            recycled,
            &zeros,
        );
        let mut state = shared.state.lock().unwrap_or_else(|e| e.into_inner());
        match result {
            Ok(()) => state.ready_up_to = seq,
            Err(error) => shared.failed(&mut state, error),
        }
        shared.changed.notify_all();
    }
}

impl<D: Device + Clone> Drop for Preparer<D> {
    fn drop(&mut self) {
        {
            let mut state = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
            state.shutdown = true;
            self.shared.changed.notify_all();
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Prepares segment `seq` on the calling thread (log creation).
pub fn prepare_now<D: Device>(
    device: &D,
    seq: SegmentSeq,
    segment_size_bytes: u64,
) -> Result<(), IoError> {
    let zeros = AlignedBuf::new_zeroed(ZERO_FILL_CHUNK_BYTES);
    prepare_segment(device, seq, segment_size_bytes, None, &zeros)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_names_round_trip_and_reject_others() {
        assert_eq!(segment_file_name(SegmentSeq(7)), "00000000000000000007.seg");
        assert_eq!(
            parse_segment_file_name(&segment_file_name(SegmentSeq::MAX)),
            Some(SegmentSeq::MAX)
        );
        assert_eq!(parse_segment_file_name("LOG"), None);
        assert_eq!(parse_segment_file_name("7.seg"), None);
        assert_eq!(parse_segment_file_name("0000000000000000000x.seg"), None);
    }
}
