//! Every limit and size of the engine, in one place, checked at compile time.
//!
//! Names put the unit last (`segment_size_bytes`). A limit that another depends on is
//! asserted below its definition so a change that breaks the relation fails to build.

/// The unit of torn writes the fault model assumes (DESIGN section 6, fault 3).
pub const SECTOR_SIZE_BYTES: usize = 512;

/// Every log write is a multiple of this size at an offset aligned to it (O_DIRECT).
pub const BLOCK_SIZE_BYTES: usize = 4096;

/// Version of the on-disk format described in `docs/FORMAT.md`. Bumped on any change.
pub const FORMAT_VERSION: u32 = 1;

/// The segment header occupies the first block of every segment file.
pub const SEGMENT_HEADER_SIZE_BYTES: usize = BLOCK_SIZE_BYTES;

/// The bytes of the segment header that carry fields; the rest of its block is zero.
pub const SEGMENT_HEADER_FIELDS_SIZE_BYTES: usize = 64;

/// Size of the batch header at the start of every batch.
pub const BATCH_HEADER_SIZE_BYTES: usize = 64;

/// Size of the header in front of every record's payload.
pub const RECORD_HEADER_SIZE_BYTES: usize = 48;

/// Records start at multiples of this within a batch.
pub const RECORD_ALIGN_BYTES: usize = 8;

/// Size of the log's metadata file `LOG`.
pub const META_SIZE_BYTES: usize = BLOCK_SIZE_BYTES;

/// The bytes of the metadata file that carry fields; the rest is zero.
pub const META_FIELDS_SIZE_BYTES: usize = 64;

/// Default size of one segment file.
pub const SEGMENT_SIZE_BYTES_DEFAULT: u64 = 64 * 1024 * 1024;

/// Smallest segment a log may be created with (tests use small segments to exercise reuse).
pub const SEGMENT_SIZE_BYTES_MIN: u64 = 256 * 1024;

/// Largest segment a log may be created with; offsets within a segment fit in a `u32`.
pub const SEGMENT_SIZE_BYTES_MAX: u64 = 1024 * 1024 * 1024;

/// Largest batch (header, records, padding) written by one write + fdatasync.
pub const BATCH_SIZE_BYTES_MAX: usize = 1024 * 1024;

/// Largest record payload. Any record fits in one batch in the smallest segment.
pub const RECORD_PAYLOAD_SIZE_BYTES_MAX: usize = 128 * 1024;

/// Largest number of records one batch may claim; bounds a count read from disk.
pub const BATCH_RECORD_COUNT_MAX: usize =
    (BATCH_SIZE_BYTES_MAX - BATCH_HEADER_SIZE_BYTES) / RECORD_HEADER_SIZE_BYTES;

/// The most batches that may ever be in flight (written, not yet known durable) at once:
/// recovery scrubs this many batches past the tail. A log may be set to use fewer.
pub const BATCHES_IN_FLIGHT_MAX: usize = 4;

/// Batches in flight by default. One measured best at 16 and 64 committers on the 2-core
/// machine this was built on (why more lose there is not known); with one, a second batch
/// still goes beside a batch that carries a lone committer, so two committers do not take
/// turns. A device with deep parallel queues and more cores may do better with more
/// ([`crate::Log::set_batches_in_flight`]).
pub const BATCHES_IN_FLIGHT_DEFAULT: usize = 1;

/// How many segments beyond the one being written are kept created and zero-filled.
pub const SEGMENTS_READY_AHEAD_COUNT: usize = 2;

/// When the host file system has no room for more segments, the last 1/N of the last ready
/// segment is kept for work that frees space or finishes work begun.
pub const LOG_RESERVE_PARTS: u64 = 8;

/// How many bytes recovery reads at once while scanning a segment.
pub const SCAN_CHUNK_SIZE_BYTES: usize = 4 * 1024 * 1024;

/// Largest number of segment files a log directory may hold.
pub const SEGMENT_COUNT_MAX: usize = 1 << 20;

const _: () = assert!(BLOCK_SIZE_BYTES.is_power_of_two());
const _: () = assert!(BATCHES_IN_FLIGHT_DEFAULT >= 1);
const _: () = assert!(BATCHES_IN_FLIGHT_DEFAULT <= BATCHES_IN_FLIGHT_MAX);
const _: () = assert!(BLOCK_SIZE_BYTES.is_multiple_of(SECTOR_SIZE_BYTES));
const _: () = assert!(SEGMENT_SIZE_BYTES_MIN.is_multiple_of(BLOCK_SIZE_BYTES as u64));
const _: () = assert!(SEGMENT_SIZE_BYTES_MAX.is_multiple_of(BLOCK_SIZE_BYTES as u64));
const _: () = assert!(SEGMENT_SIZE_BYTES_DEFAULT >= SEGMENT_SIZE_BYTES_MIN);
const _: () = assert!(SEGMENT_SIZE_BYTES_DEFAULT <= SEGMENT_SIZE_BYTES_MAX);
const _: () = assert!(SEGMENT_SIZE_BYTES_MAX <= u32::MAX as u64);
const _: () = assert!(BATCH_SIZE_BYTES_MAX.is_multiple_of(BLOCK_SIZE_BYTES));
const _: () = assert!(BATCH_SIZE_BYTES_MAX <= u32::MAX as usize);
const _: () = assert!(SCAN_CHUNK_SIZE_BYTES.is_multiple_of(BLOCK_SIZE_BYTES));
const _: () = assert!(SCAN_CHUNK_SIZE_BYTES >= BATCH_SIZE_BYTES_MAX);
const _: () = assert!(SEGMENT_HEADER_FIELDS_SIZE_BYTES <= SEGMENT_HEADER_SIZE_BYTES);
const _: () = assert!(RECORD_HEADER_SIZE_BYTES.is_multiple_of(RECORD_ALIGN_BYTES));
const _: () = assert!(BATCH_HEADER_SIZE_BYTES.is_multiple_of(RECORD_ALIGN_BYTES));
// The largest record, with its batch header and padding, fits in the smallest segment.
const _: () = assert!(
    (SEGMENT_HEADER_SIZE_BYTES
        + BATCH_HEADER_SIZE_BYTES
        + RECORD_HEADER_SIZE_BYTES
        + RECORD_PAYLOAD_SIZE_BYTES_MAX
        + BLOCK_SIZE_BYTES) as u64
        <= SEGMENT_SIZE_BYTES_MIN
);
const _: () = assert!(
    BATCH_HEADER_SIZE_BYTES + RECORD_HEADER_SIZE_BYTES + RECORD_PAYLOAD_SIZE_BYTES_MAX
        <= BATCH_SIZE_BYTES_MAX
);

/// Rounds `value` up to a multiple of `align` (a power of two).
pub const fn align_up(value: usize, align: usize) -> usize {
    (value + align - 1) & !(align - 1)
}

/// The largest batch that fits in a segment of `segment_size_bytes` after its header.
pub const fn batch_size_bytes_max(segment_size_bytes: u64) -> usize {
    let room = segment_size_bytes as usize - SEGMENT_HEADER_SIZE_BYTES;
    if room < BATCH_SIZE_BYTES_MAX {
        room
    } else {
        BATCH_SIZE_BYTES_MAX
    }
}

// --- The store ---

/// Longest name in a directory, in bytes.
pub const NAME_SIZE_BYTES_MAX: usize = 255;

/// Longest symbolic-link target, in bytes.
pub const SYMLINK_TARGET_SIZE_BYTES_MAX: usize = 4095;

/// Largest file, in bytes (16 TiB).
pub const FILE_SIZE_BYTES_MAX: u64 = 1 << 44;

/// Largest single write, in bytes (what NFS and FUSE send at most).
pub const WRITE_SIZE_BYTES_MAX: usize = 1024 * 1024;

/// Longest extended attribute name, namespace included (Linux's `XATTR_NAME_MAX`).
pub const XATTR_NAME_BYTES_MAX: usize = 255;

/// Largest extended attribute value (Linux's `XATTR_SIZE_MAX`: E2BIG past it).
pub const XATTR_VALUE_BYTES_MAX: usize = 64 * 1024;

/// The room one inode's extended attributes may take: each name and value plus 16 bytes
/// (ENOSPC past it). ext4 with 4 KiB blocks gives about 4 KiB; this is 32 KiB, and a set's
/// log record (the new value in its redo and its state, the old in its undo) stays within
/// [`RECORD_PAYLOAD_SIZE_BYTES_MAX`].
pub const XATTRS_BYTES_MAX: usize = 32 * 1024;

/// A write with fewer whole blocks than this travels in the log (and is written back at the
/// next checkpoint); one with this many or more goes to newly allocated blocks first.
pub const WRITE_EXTENT_BLOCKS_MIN: usize = 16;

/// Most links to one inode.
pub const LINK_COUNT_MAX: u32 = 65_000;

/// Request keys remembered by default (see `EngineOptions::request_keys_max`).
pub const REQUEST_KEYS_DEFAULT: usize = 65_536;

/// Blocks the data file grows by at once.
pub const DATA_GROW_BLOCKS: u64 = 256;

/// Largest checkpoint image recovery accepts, in bytes.
pub const IMAGE_SIZE_BYTES_MAX: u64 = 64 << 30;

/// Largest data file, in blocks (256 TiB).
pub const DATA_BLOCKS_MAX: u64 = 1 << 36;

/// Bytes read or written per device call when moving an image.
pub const IMAGE_CHUNK_SIZE_BYTES: usize = 4 * 1024 * 1024;

/// Version of the superblock and image format (docs/FORMAT.md, "The store").
pub const STORE_FORMAT_VERSION: u32 = 5;

/// Written blocks a checkpoint maps into the live store per hold of the engine lock, so
/// that commits wait for at most this many map updates.
pub const CHECKPOINT_MAP_CHUNK_BLOCKS: usize = 256;

/// Consecutive data blocks a checkpoint writes in one device write (1 MiB).
pub const CHECKPOINT_WRITE_GROUP_BLOCKS_MAX: usize = 256;

/// How often the automatic checkpoint thread looks at how much log and dirty data piled up.
pub const CHECKPOINT_POLL_INTERVAL: std::time::Duration = std::time::Duration::from_millis(20);

const _: () = assert!(CHECKPOINT_MAP_CHUNK_BLOCKS > 0);
const _: () = assert!(CHECKPOINT_WRITE_GROUP_BLOCKS_MAX > 0);

const _: () = assert!(WRITE_SIZE_BYTES_MAX.is_multiple_of(BLOCK_SIZE_BYTES));
// An inline write (fewer than WRITE_EXTENT_BLOCKS_MIN whole blocks plus two partial ones)
// fits in one record with room for the machine's control values.
const _: () = assert!(
    (WRITE_EXTENT_BLOCKS_MIN + 1) * BLOCK_SIZE_BYTES + 4096 <= RECORD_PAYLOAD_SIZE_BYTES_MAX
);
const _: () = assert!(FILE_SIZE_BYTES_MAX.is_multiple_of(BLOCK_SIZE_BYTES as u64));
const _: () = assert!(IMAGE_CHUNK_SIZE_BYTES.is_multiple_of(BLOCK_SIZE_BYTES));
const _: () = assert!(DATA_GROW_BLOCKS > 0);
