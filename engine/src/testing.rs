//! Checks shared by the fuzz targets (`fuzz/`) and the tests that replay their corpora.

use crate::constants::{META_SIZE_BYTES, SEGMENT_SIZE_BYTES_MIN};
use crate::format::{decode_record, encode_record, record_size_bytes, LogMeta};
use crate::ids::Lsn;
use crate::ids::SegmentSeq;
use crate::io::sim::SimDevice;
use crate::io::{AlignedBuf, Device};
use crate::log::reader::LogReader;
use crate::log::{segment_file_name, ScanItem, META_FILE_NAME};

/// Segment size the log-reader check uses.
pub const FUZZ_SEGMENT_SIZE_BYTES: u64 = SEGMENT_SIZE_BYTES_MIN;

/// Items the reader may yield per input before the check calls it a hang.
const ITEMS_MAX: usize = 1 << 20;

/// Any bytes as a record: never a panic, and a record that decodes re-encodes to the same
/// bytes and CRC. Returns whether it decoded.
pub fn check_record_decode(data: &[u8]) -> bool {
    let Ok((header, payload)) = decode_record(data) else {
        return false;
    };
    let size = record_size_bytes(payload.len());
    assert!(size <= data.len());
    let mut again = vec![0u8; size];
    let crc = encode_record(
        &mut again,
        header.lsn,
        header.incarnation,
        header.prev_crc,
        header.fields,
        payload,
    );
    assert_eq!(crc, header.crc, "a record decoded whose CRC does not match");
    assert_eq!(&again[..], &data[..size], "decode and encode disagree");
    true
}

/// Any bytes as a log: the first 8 bytes name the log id, the rest fill segment 1, then
/// segment 2. Reading never panics, never loops, and every record it yields has a valid
/// CRC that continues the chain with consecutive LSNs. Returns the records read.
pub fn check_log_reader(data: &[u8]) -> usize {
    let (id, rest) = data.split_at(data.len().min(8));
    let mut id_bytes = [0u8; 8];
    id_bytes[..id.len()].copy_from_slice(id);
    let meta = LogMeta {
        log_id: u64::from_le_bytes(id_bytes),
        segment_size_bytes: FUZZ_SEGMENT_SIZE_BYTES,
        first_segment_seq: SegmentSeq(1),
        created_unix_secs: 0,
        open_epoch: 0,
    };
    let device = SimDevice::new(0);
    let mut block = AlignedBuf::new_zeroed(META_SIZE_BYTES);
    meta.encode(&mut block);
    let file = device.open(META_FILE_NAME, true).expect("sim open");
    device
        .set_len(file, META_SIZE_BYTES as u64)
        .expect("sim set_len");
    device.write_durable_at(file, 0, &block).expect("sim write");
    let size = FUZZ_SEGMENT_SIZE_BYTES as usize;
    let mut image = AlignedBuf::new_zeroed(size);
    for (i, chunk) in rest.chunks(size).take(2).enumerate() {
        image.fill(0);
        image[..chunk.len()].copy_from_slice(chunk);
        let file = device
            .open(&segment_file_name(SegmentSeq(i as u64) + 1), true)
            .expect("sim open");
        device.set_len(file, size as u64).expect("sim set_len");
        device.write_durable_at(file, 0, &image).expect("sim write");
    }
    device.sync_dir().expect("sim sync_dir");

    std::thread::scope(|scope| {
        let Ok(mut reader) = LogReader::open(&device) else {
            return 0;
        };
        // Half the inputs read ahead on a second thread, as recovery does.
        if data.first().is_some_and(|b| b % 2 == 0) {
            reader.read_ahead(scope);
        }
        check_items(&mut reader)
    })
}

fn check_items(reader: &mut LogReader<'_, SimDevice>) -> usize {
    let mut records = 0usize;
    let mut previous: Option<(Lsn, u32)> = None;
    for _ in 0..ITEMS_MAX {
        match reader.next_item() {
            Ok(Some(ScanItem::Record(record))) => {
                let mut bytes = vec![0u8; record_size_bytes(record.payload.len())];
                let crc = encode_record(
                    &mut bytes,
                    record.lsn,
                    record.segment_seq.get(),
                    record.prev_crc,
                    record.fields,
                    &record.payload,
                );
                assert_eq!(
                    crc, record.crc,
                    "the reader yielded a record whose CRC fails"
                );
                if let Some((lsn, crc)) = previous {
                    assert_eq!(record.lsn, lsn + 1, "LSNs not consecutive");
                    assert_eq!(record.prev_crc, crc, "chain broken between yielded records");
                }
                previous = Some((record.lsn, record.crc));
                records += 1;
            }
            Ok(Some(ScanItem::TornTail(_))) => previous = None,
            Ok(Some(ScanItem::Corrupt(_))) => previous = None,
            Ok(None) | Err(_) => return records,
        }
    }
    panic!("the reader did not finish within {ITEMS_MAX} items");
}

/// The numbering `docs/FORMAT.md` (given as `text`) gives each enum, `Enum = 0 A ... | 1 B
/// ...` over one or more indented lines: (enum, variant) -> tag. The golden-vector tests
/// check every encoded variant's tag against it. Panics when a variant is numbered twice.
pub fn documented_tags(text: &str) -> std::collections::BTreeMap<(String, String), u64> {
    let mut tags = std::collections::BTreeMap::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        let trimmed = line.trim_start();
        let indented = line.len() - trimmed.len() >= 4;
        let definition = trimmed
            .split_once('=')
            .filter(|(head, _)| {
                let head = head.trim();
                !head.is_empty() && head.chars().all(|c| c.is_ascii_alphanumeric())
            })
            .map(|(head, rest)| (head.trim().to_string(), rest));
        let body = match (indented, definition) {
            (true, Some((head, rest))) => {
                current = Some(head);
                rest
            }
            (true, None) if current.is_some() => trimmed,
            _ => {
                current = None;
                continue;
            }
        };
        let Some(enum_name) = &current else { continue };
        for part in body.split('|') {
            let mut words = part.split_whitespace();
            let (Some(number), Some(variant)) = (words.next(), words.next()) else {
                continue;
            };
            let Ok(number) = number.parse::<u64>() else {
                continue;
            };
            let variant: String = variant
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric())
                .collect();
            let previous = tags.insert((enum_name.clone(), variant.clone()), number);
            assert!(
                previous.is_none(),
                "FORMAT.md numbers {enum_name}::{variant} twice"
            );
        }
    }
    tags
}

/// The varint at the start of `bytes` (postcard's enum tag). Panics when there is none.
pub fn varint(bytes: &[u8]) -> u64 {
    let mut value = 0u64;
    for (i, byte) in bytes.iter().enumerate().take(10) {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return value;
        }
    }
    panic!("no varint in {bytes:?}")
}
