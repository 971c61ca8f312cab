//! One test per row of the reader's damage table, and per kind of bad input: each fault
//! is injected through the simulated device at an exact place.

mod common;

use std::sync::Arc;

use common::*;
use smlog::constants::{BLOCK_SIZE_BYTES, SEGMENT_HEADER_SIZE_BYTES};
use smlog::io::sim::{CrashPlan, FaultConfig, SimDevice};
use smlog::io::{Device, IoErrorKind};
use smlog::log::segment_file_name;
use smlog::Lsn;
use smlog::SegmentSeq;
use smlog::TxnId;
use smlog::{LogError, RecoveryMode};
use smlog_recovery::{scan, RecoveryOptions};

const FIRST_SEGMENT: &str = "00000000000000000001.seg";

/// Appends record `lsn` of `cycle` (its payload cut to 200 bytes) in a durable batch of
/// its own, one block.
fn append_one_block(log: &SimLog, cycle: u64, lsn: u64) {
    let payload = payload_for(cycle, lsn);
    log.append_durable(&[record_for(cycle, lsn, &payload[..payload.len().min(200)])])
        .unwrap();
}

/// A log with `count` records, one durable batch each (each batch one block).
fn log_with(device: &Arc<SimDevice>, count: u64) -> SimLog {
    let log = create(device);
    for lsn in 1..=count {
        append_one_block(&log, 0, lsn);
    }
    log
}

/// Offset of the batch holding `lsn` in the first segment, when every batch is one block.
fn batch_offset(lsn: u64) -> u64 {
    SEGMENT_HEADER_SIZE_BYTES as u64 + (lsn - 1) * BLOCK_SIZE_BYTES as u64
}

fn lsns(device: &SimDevice, mode: RecoveryMode) -> Result<Vec<u64>, LogError> {
    let mut lsns = Vec::new();
    scan(device, mode, |r| lsns.push(r.lsn.get()))?;
    Ok(lsns)
}

/// Asserts that a torn-tail scan refuses the log with corruption at `lsn`, saying `why`.
fn assert_corrupt_at(device: &SimDevice, lsn: Lsn, why: &str) {
    match lsns(device, RecoveryMode::TornTail) {
        Err(LogError::Corrupt {
            lsn: found,
            why: said,
            ..
        }) => {
            assert_eq!(found, lsn);
            assert!(said.contains(why), "{said}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn torn_tail_is_discarded_and_can_never_come_back() {
    let device = Arc::new(SimDevice::new(1));
    let log = log_with(&device, 10);
    // The eleventh batch is written but its sync never happens: the crash tears it.
    device.set_faults(FaultConfig {
        crash_after_ops: Some(2),
        ..FaultConfig::default()
    });
    let payload = vec![7u8; 3000];
    let error = log
        .append_durable(&[record_for(0, 11, &payload)])
        .unwrap_err();
    assert!(
        matches!(&error, LogError::Failed { cause } if matches!(&**cause, LogError::Io(e) if e.kind == IoErrorKind::Crashed)),
        "{error}"
    );
    drop(log);
    // The write reached the disk but its end did not: the last sector is garbage.
    device.restart(&CrashPlan::keep_all());
    device.poke(FIRST_SEGMENT, batch_offset(11) + 2560, &[0xC3; 512]);
    let (log, report, records) = recover(&device, RecoveryOptions::default()).unwrap();
    assert_eq!(records.len(), 10);
    let torn = report.torn_tail.expect("a torn tail");
    assert_eq!(torn.lsn, Lsn(11));
    assert_eq!(torn.offset, batch_offset(11));
    assert!(report.scrubbed_bytes > 0);
    // Strict mode would have refused it; now the bytes are gone for good.
    drop(log);
    device.crash();
    device.restart(&CrashPlan::power_loss());
    // Recovery zeroed the torn batch and wrote its mark (an empty batch) in its place.
    let image = device.durable_image(FIRST_SEGMENT).unwrap();
    let at = batch_offset(11) as usize;
    assert!(image[at + 64..at + BLOCK_SIZE_BYTES]
        .iter()
        .all(|b| *b == 0));
    let (_, again, records_again) = recover(&device, RecoveryOptions::default()).unwrap();
    assert!(again.torn_tail.is_none());
    assert_eq!(records_again, records);
}

#[test]
fn strict_mode_refuses_a_torn_tail_with_its_place() {
    let device = Arc::new(SimDevice::new(2));
    let log = log_with(&device, 6);
    drop(log);
    // The sixth batch's header reached the disk, its record did not.
    device.poke(FIRST_SEGMENT, batch_offset(6) + 100, &[0xEE; 64]);
    match lsns(&device, RecoveryMode::Strict) {
        Err(LogError::TornTail {
            segment_seq,
            offset,
            lsn,
            ..
        }) => {
            assert_eq!(
                (segment_seq, offset, lsn),
                (SegmentSeq(1), batch_offset(6), Lsn(6))
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        lsns(&device, RecoveryMode::TornTail).unwrap(),
        (1..=5).collect::<Vec<_>>()
    );
}

#[test]
fn row_1_corruption_before_the_mark_is_an_error_never_a_truncation() {
    let device = Arc::new(SimDevice::new(3));
    drop(log_with(&device, 20));
    // Bit rot inside the record of LSN 7; batches 8..20 vouch that 7 was durable.
    device.poke(FIRST_SEGMENT, batch_offset(7) + 100, &[0x55]);
    for mode in [RecoveryMode::Strict, RecoveryMode::TornTail] {
        match lsns(&device, mode) {
            Err(LogError::Corrupt {
                segment_seq,
                offset,
                lsn,
                path,
                why,
            }) => {
                assert_eq!(
                    (segment_seq, offset, lsn),
                    (SegmentSeq(1), batch_offset(7), Lsn(7))
                );
                assert!(path.ends_with(FIRST_SEGMENT));
                assert!(why.contains("durable"), "{why}");
            }
            other => panic!("{mode}: {other:?}"),
        }
    }
    // Recovery refuses to open the log rather than truncate it.
    assert!(matches!(
        recover(&device, RecoveryOptions::default()),
        Err(LogError::Corrupt { .. })
    ));
    // Salvage keeps every valid record and reports the gap.
    let mut kept = Vec::new();
    let report = scan(&*device, RecoveryMode::Salvage, |r| kept.push(r.lsn.get())).unwrap();
    let expected: Vec<u64> = (1..=20).filter(|l| *l != 7).collect();
    assert_eq!(kept, expected);
    assert_eq!(report.gaps.len(), 1);
    assert_eq!(report.gaps[0].lsn, Lsn(7));
    assert_eq!(report.gaps[0].resume_lsn, Some(Lsn(8)));
}

#[test]
fn row_1_a_batch_in_the_next_segment_vouches_for_a_damaged_end_of_segment() {
    let device = Arc::new(SimDevice::new(4));
    let log = create(&device);
    // Fill the first segment and start the second.
    let payload = vec![3u8; 3000];
    let mut lsn = 0;
    while log.stats().batch_count == 0 || log.device().list().unwrap().len() < 2 || lsn < 100 {
        lsn = log
            .append_durable(&[record_for(0, lsn + 1, &payload)])
            .unwrap()
            .get();
    }
    drop(log);
    let (_, report, _) = recover(&device, RecoveryOptions::default()).unwrap();
    assert!(report.tail.segment_seq >= SegmentSeq(2));
    let second_first = report.tail.segment_first_lsn[&SegmentSeq(2)];
    // Damage the last batch of the first segment.
    let last_in_first = second_first - 1;
    let image = device.durable_image(FIRST_SEGMENT).unwrap();
    let _ = image;
    let mut offset = None;
    scan(&*device, RecoveryMode::TornTail, |r| {
        if r.lsn == last_in_first {
            offset = Some(r.batch_offset);
        }
    })
    .unwrap();
    device.poke(FIRST_SEGMENT, offset.unwrap(), &[0xAB; 64]);
    assert_corrupt_at(&device, last_in_first, "at segment 2");
}

/// A first segment whose last batch is a mark (an empty batch) after 60 one-block records,
/// then a record too large for the rest of it, which starts the second segment, then
/// `after` more records there. Returns the mark's offset.
fn first_segment_ending_in_a_mark(device: &Arc<SimDevice>, after: u64) -> u64 {
    let log = log_with(device, 60);
    log.write_mark().unwrap();
    let big = vec![9u8; 3 * BLOCK_SIZE_BYTES];
    log.append_durable(&[record_for(0, 61, &big)]).unwrap();
    for lsn in 62..62 + after {
        let payload = payload_for(0, lsn);
        log.append_durable(&[record_for(0, lsn, &payload)]).unwrap();
    }
    drop(log);
    let mark = batch_offset(61);
    let image = device.durable_image(FIRST_SEGMENT).unwrap();
    let header = &image[mark as usize..mark as usize + 16];
    assert_eq!(header[4..8], smlog::format::BATCH_MAGIC.to_le_bytes());
    assert_eq!(header[12..16], 0u32.to_le_bytes(), "not a mark");
    let mut segments = Vec::new();
    scan(&**device, RecoveryMode::Strict, |r| {
        segments.push((r.lsn.get(), r.segment_seq))
    })
    .unwrap();
    assert_eq!(segments.len() as u64, 61 + after);
    assert_eq!(segments[59], (60, SegmentSeq(1)));
    assert_eq!(segments[60], (61, SegmentSeq(2)));
    mark
}

/// A mark at the end of a segment holds no record: when it cannot be read but the next
/// segment continues the log exactly (LSN, chain, epoch), nothing is lost and nothing is
/// damage. Torture found a second recovery refusing such a log (seed 6540134398596785709),
/// after a first one had read past the mark; with no later batch to vouch, the reader used
/// to call the mark a torn tail and drop the durable record after it.
#[test]
fn an_unreadable_mark_before_a_segment_that_continues_the_log_loses_nothing() {
    for after in [0, 3] {
        let device = Arc::new(SimDevice::new(16 + after));
        let mark = first_segment_ending_in_a_mark(&device, after);
        device.make_unreadable(FIRST_SEGMENT, mark + 512);
        for mode in [RecoveryMode::Strict, RecoveryMode::TornTail] {
            assert_eq!(
                lsns(&device, mode).unwrap(),
                (1..=61 + after).collect::<Vec<_>>(),
                "{after} records after the segment's first, {mode:?}"
            );
        }
        // Recovery and a second recovery agree, and the log goes on.
        let (log, report, _) = recover(&device, RecoveryOptions::default()).unwrap();
        assert_eq!(report.tail.next_lsn, Lsn(62 + after));
        let payload = payload_for(0, 62 + after);
        log.append_durable(&[record_for(0, 62 + after, &payload)])
            .unwrap();
        drop(log);
        let (_, report, records) = recover(&device, RecoveryOptions::default()).unwrap();
        assert_eq!(report.tail.next_lsn, Lsn(63 + after));
        assert_eq!(records.len() as u64, 62 + after);
    }
}

/// The same mark rotted: no batch header of this log there, and the next segment
/// continues the log, so the reader moves on without calling it damage.
#[test]
fn a_rotted_mark_before_a_segment_that_continues_the_log_loses_nothing() {
    let device = Arc::new(SimDevice::new(18));
    let mark = first_segment_ending_in_a_mark(&device, 2);
    device.poke(FIRST_SEGMENT, mark + 20, &[0x5A; 8]);
    assert_eq!(
        lsns(&device, RecoveryMode::Strict).unwrap(),
        (1..=63).collect::<Vec<_>>()
    );
}

/// A header of an abandoned history in the next segment (a writer started it, its work
/// was lost in a crash, recovery fixed the tail in the segment before and zeroed it, and
/// the zeroing was undone) continues the log as it was before recovery's mark. A newer
/// writer's acknowledged records follow that mark in the first segment; when the mark
/// cannot be read, the reader must not take the old header's way out and drop them.
#[test]
fn a_stale_next_segment_never_hides_a_newer_writers_records() {
    let device = Arc::new(SimDevice::new(20));
    drop(log_with(&device, 50));
    let image = device.durable_image(FIRST_SEGMENT).unwrap();
    let at = batch_offset(50) as usize;
    let first_epoch = smlog::format::BatchHeader::decode(&image[at..at + 64])
        .unwrap()
        .epoch;
    let mut chain = 0;
    scan(&*device, RecoveryMode::Strict, |r| chain = r.crc).unwrap();
    // A newer writer: recovery's mark where the first one stopped, then three records.
    let (log, report, _) = recover(&device, RecoveryOptions::default()).unwrap();
    assert_eq!(report.tail.segment_offset, batch_offset(51));
    for lsn in 51..=53 {
        append_one_block(&log, 1, lsn);
    }
    drop(log);
    // The second segment as the first writer left it: its header, then zeros.
    let second = segment_file_name(SegmentSeq(2));
    let file = device.open(&second, true).unwrap();
    let zeros = smlog::io::AlignedBuf::new_zeroed(SEGMENT_SIZE_BYTES as usize);
    device.write_durable_at(file, 0, &zeros).unwrap();
    device.close(file);
    device.sync_dir().unwrap();
    let mut header = vec![0u8; SEGMENT_HEADER_SIZE_BYTES];
    smlog::format::SegmentHeader {
        epoch: first_epoch,
        log_id: report.meta.log_id,
        segment_seq: SegmentSeq(2),
        first_lsn: Lsn(51),
        segment_size_bytes: SEGMENT_SIZE_BYTES,
        prev_crc: chain,
    }
    .encode(&mut header);
    device.poke(&second, 0, &header);
    assert_eq!(
        lsns(&device, RecoveryMode::Strict).unwrap(),
        (1..=53).collect::<Vec<_>>(),
        "the stale header is harmless while the mark is read"
    );
    device.make_unreadable(FIRST_SEGMENT, batch_offset(51) + 512);
    assert_corrupt_at(&device, Lsn(51), "EIO");
}

/// The record batch before the mark is not a mark: when it cannot be read, the next
/// segment does not continue the log (it starts one LSN later) and a batch there vouches
/// for the lost record, so it is corruption, never the end.
#[test]
fn an_unreadable_last_record_batch_of_a_segment_is_still_corruption() {
    let device = Arc::new(SimDevice::new(19));
    first_segment_ending_in_a_mark(&device, 2);
    device.make_unreadable(FIRST_SEGMENT, batch_offset(60) + 512);
    assert_corrupt_at(&device, Lsn(60), "EIO");
}

/// A damaged mark between record batches is corruption (row 1: the batches after it vouch
/// for its LSN), not something the reader reads past, although in one history a mark holds
/// no record: the same bytes arise when recovery's mark is damaged and a history it
/// discarded comes back after it (next test), and reading on would bring that back.
#[test]
fn row_1_a_damaged_mark_between_record_batches_is_corruption() {
    for (seed, unreadable) in [(31, true), (32, false)] {
        let device = Arc::new(SimDevice::new(seed));
        let log = log_with(&device, 20);
        log.write_mark().unwrap();
        for lsn in 21..=30 {
            append_one_block(&log, 0, lsn);
        }
        drop(log);
        let mark = batch_offset(21);
        if unreadable {
            device.make_unreadable(FIRST_SEGMENT, mark + 512);
        } else {
            device.poke(FIRST_SEGMENT, mark + 20, &[0x5A; 8]);
        }
        let why = if unreadable {
            "EIO"
        } else {
            "says LSN 21 was durable"
        };
        assert_corrupt_at(&device, Lsn(21), why);
    }
}

/// Recovery discards what it cannot prove durable, zeroes it and writes a mark with a new
/// epoch in front of it. Here a writer's last record (21) and the next batch (22, which
/// says 21 was durable) were written after a mark; the second write was lost and the mark
/// rotted, so recovery ended the log at 20 and discarded 21. Later both writes come back
/// over the zeros (resurrected) and recovery's own mark rots: the bytes now read as a
/// damaged mark followed by a history that continues the log exactly and vouches for
/// itself. They are refused as corruption, never read as the log (which would bring back
/// a record an earlier recovery discarded).
#[test]
fn a_discarded_history_past_recoverys_damaged_mark_is_refused_never_read() {
    let device = Arc::new(SimDevice::new(36));
    let log = log_with(&device, 20);
    log.close().unwrap();
    let (log, _, _) = recover(&device, RecoveryOptions::default()).unwrap();
    // The first writer's closing mark at 21's place, recovery's at the next block.
    for lsn in 21..=22 {
        append_one_block(&log, 1, lsn);
    }
    drop(log);
    let (first_mark, last) = (batch_offset(21), batch_offset(24));
    let image = device.durable_image(FIRST_SEGMENT).unwrap();
    let history = image[batch_offset(23) as usize..last as usize + BLOCK_SIZE_BYTES].to_vec();
    let vouching = smlog::format::BatchHeader::decode(&history[BLOCK_SIZE_BYTES..][..64]).unwrap();
    assert_eq!(
        (vouching.first_lsn, vouching.durable_lsn),
        (Lsn(22), Lsn(21))
    );
    // The write of 22 is lost and the first mark rots: nothing vouches for 21.
    device.poke(FIRST_SEGMENT, last, &[0u8; BLOCK_SIZE_BYTES]);
    device.poke(FIRST_SEGMENT, first_mark + 20, &[0x5A; 8]);
    let (log, report, records) = recover(&device, RecoveryOptions::default()).unwrap();
    assert_eq!(records.len(), 20);
    assert_eq!(report.tail.segment_offset, first_mark);
    drop(log);
    // The discarded history comes back, and recovery's mark rots.
    device.poke(FIRST_SEGMENT, batch_offset(23), &history);
    device.poke(FIRST_SEGMENT, first_mark + 20, &[0x5A; 8]);
    assert_corrupt_at(&device, Lsn(21), "says LSN 21 was durable");
}

/// A damaged batch that held records is followed by one that starts past them: corruption
/// where a later batch vouches for it.
#[test]
fn row_1_a_damaged_record_batch_between_marks_is_corruption() {
    let device = Arc::new(SimDevice::new(34));
    let log = log_with(&device, 20);
    log.write_mark().unwrap();
    for lsn in 21..=25 {
        append_one_block(&log, 0, lsn);
        if lsn == 21 {
            log.write_mark().unwrap();
        }
    }
    drop(log);
    // The record batch after the first mark.
    device.make_unreadable(FIRST_SEGMENT, batch_offset(22) + 512);
    assert_corrupt_at(&device, Lsn(21), "EIO");
}

#[test]
fn row_2_a_resurrected_batch_contradicted_by_the_next_is_corruption() {
    let device = Arc::new(SimDevice::new(5));
    let log = log_with(&device, 9);
    // History A: LSN 10 with payload "a", durable.
    log.append_durable(&[record_for(0, 10, b"history a")])
        .unwrap();
    drop(log);
    let at = batch_offset(10);
    let image = device.durable_image(FIRST_SEGMENT).unwrap();
    let history_a = image[at as usize..at as usize + BLOCK_SIZE_BYTES].to_vec();
    // Lose it (zeros: the clean end), recover, and write history B over the same place.
    device.poke(FIRST_SEGMENT, at, &[0u8; BLOCK_SIZE_BYTES]);
    let (log, report, _) = recover(&device, RecoveryOptions::default()).unwrap();
    assert_eq!(report.tail.next_lsn, Lsn(10));
    log.append_durable(&[record_for(1, 10, b"history b")])
        .unwrap();
    log.append_durable(&[record_for(1, 11, b"after b")])
        .unwrap();
    drop(log);
    // History A comes back over the mark recovery wrote. It is whole and continues the
    // chain from LSN 9, but the next batch, written by a newer writer, starts at LSN 10
    // itself: the records before it are not what that writer saw.
    device.poke(FIRST_SEGMENT, at, &history_a);
    match lsns(&device, RecoveryMode::TornTail) {
        Err(LogError::Corrupt { lsn, why, .. }) => {
            assert_eq!(lsn, Lsn(11));
            assert!(why.contains("different records"), "{why}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn row_3_zeros_are_the_clean_end_even_in_strict_mode() {
    let device = Arc::new(SimDevice::new(6));
    let log = log_with(&device, 12);
    log.close().unwrap();
    assert_eq!(
        lsns(&device, RecoveryMode::Strict).unwrap(),
        (1..=12).collect::<Vec<_>>()
    );
}

#[test]
fn row_3_stale_bytes_of_another_incarnation_are_the_clean_end() {
    let device = Arc::new(SimDevice::new(15));
    let log = log_with(&device, 12);
    log.close().unwrap();
    // Garbage past the end (a recycled segment's old records look like this) is no
    // evidence that the last write reached that place.
    device.poke(FIRST_SEGMENT, batch_offset(14), &[0xEE; 4096]);
    assert_eq!(
        lsns(&device, RecoveryMode::Strict).unwrap(),
        (1..=12).collect::<Vec<_>>()
    );
}

#[test]
fn closing_writes_a_mark_so_damage_to_the_last_batch_is_corruption() {
    let device = Arc::new(SimDevice::new(7));
    let log = log_with(&device, 12);
    log.close().unwrap();
    device.poke(FIRST_SEGMENT, batch_offset(12) + 60, &[0x7F]);
    let result = lsns(&device, RecoveryMode::TornTail);
    assert!(
        matches!(result, Err(LogError::Corrupt { lsn: Lsn(12), .. })),
        "{result:?}"
    );
}

#[test]
fn lost_write_in_the_middle_is_detected() {
    let device = Arc::new(SimDevice::new(8));
    let log = log_with(&device, 4);
    // The write that is lost is counted from here: no segment preparer's write may take
    // its number (the log needs no new segment).
    log.stop_preparing();
    device.set_faults(FaultConfig {
        lose_write_at_op: Some(3),
        ..FaultConfig::default()
    });
    for lsn in 5..=12 {
        log.append_durable(&[record_for(0, lsn, b"after")]).unwrap();
    }
    drop(log);
    device.crash();
    device.restart(&CrashPlan::power_loss());
    assert!(matches!(
        lsns(&device, RecoveryMode::TornTail),
        Err(LogError::Corrupt { lsn: Lsn(7), .. })
    ));
}

#[test]
fn misdirected_write_is_detected_where_it_should_have_landed() {
    let device = Arc::new(SimDevice::new(9));
    let log = log_with(&device, 6);
    device.set_faults(FaultConfig {
        misdirected_write_percent: 100,
        ..FaultConfig::default()
    });
    log.append_durable(&[record_for(0, 7, b"misdirected")])
        .unwrap();
    device.set_faults(FaultConfig::default());
    for lsn in 8..=10 {
        log.append_durable(&[record_for(0, lsn, b"after")]).unwrap();
    }
    drop(log);
    let result = lsns(&device, RecoveryMode::TornTail);
    assert!(
        matches!(result, Err(LogError::Corrupt { .. })),
        "{result:?}"
    );
}

#[test]
fn unreadable_sector_before_the_mark_is_an_error() {
    let device = Arc::new(SimDevice::new(10));
    drop(log_with(&device, 10));
    device.make_unreadable(FIRST_SEGMENT, batch_offset(3) + 512);
    assert_corrupt_at(&device, Lsn(3), "EIO");
}

#[test]
fn missing_segment_is_a_typed_error_naming_it() {
    let device = Arc::new(SimDevice::new(11));
    let log = create(&device);
    let payload = vec![9u8; 4000];
    for lsn in 1..=200 {
        log.append_durable(&[record_for(0, lsn, &payload)]).unwrap();
    }
    drop(log);
    device.remove(&segment_file_name(SegmentSeq(2))).unwrap();
    match lsns(&device, RecoveryMode::TornTail) {
        Err(LogError::MissingSegment { segment_seq, path }) => {
            assert_eq!(segment_seq, SegmentSeq(2));
            assert!(path.ends_with(segment_file_name(SegmentSeq(2))));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn wrong_version_and_not_a_log_are_typed_errors() {
    let device = Arc::new(SimDevice::new(12));
    assert!(matches!(
        lsns(&device, RecoveryMode::TornTail),
        Err(LogError::NotALog { .. })
    ));
    drop(log_with(&device, 1));
    // Version field of the LOG file (bytes 8..12) set to 99, CRC left stale.
    device.poke("LOG", 8, &99u32.to_le_bytes());
    let error = lsns(&device, RecoveryMode::TornTail).unwrap_err();
    assert!(matches!(error, LogError::BadMeta { .. }), "{error:?}");
    assert!(error.to_string().contains("LOG"), "{error}");
}

#[test]
fn failed_sync_stops_the_log_and_nothing_after_it_is_acknowledged() {
    let device = Arc::new(SimDevice::new(13));
    let log = log_with(&device, 3);
    // The sync that fails is counted from here: no segment preparer's sync may take it
    // (the log needs no new segment).
    log.stop_preparing();
    device.set_faults(FaultConfig {
        fail_sync_at_op: Some(1),
        ..FaultConfig::default()
    });
    let error = log.append_durable(&[record_for(0, 4, b"x")]).unwrap_err();
    assert!(
        matches!(&error, LogError::Failed { cause } if matches!(&**cause, LogError::Io(e) if e.kind == IoErrorKind::Io)),
        "{error}"
    );
    assert!(log.failure().is_some());
    device.set_faults(FaultConfig::default());
    let refused = log.append_durable(&[record_for(0, 5, b"y")]).unwrap_err();
    assert!(matches!(refused, LogError::Failed { .. }), "{refused}");
    assert!(refused.to_string().contains("refuses commits"));
    assert_eq!(log.durable_lsn(), Lsn(3));
}

#[test]
fn released_segments_are_reused_and_their_stale_records_never_pass() {
    let device = Arc::new(SimDevice::new(14));
    let log = create(&device);
    let payload = vec![5u8; 4000];
    let mut released = 0;
    for lsn in 1..=600u64 {
        log.append_durable(&[record_for(0, lsn, &payload)]).unwrap();
        if lsn % 100 == 0 {
            released += log.release_prefix(Lsn(lsn - 50)).unwrap();
        }
    }
    assert!(released >= 3, "released {released}");
    drop(log);
    device.crash();
    device.restart(&CrashPlan::power_loss());
    let (_, report, records) = recover(&device, RecoveryOptions::default()).unwrap();
    let first = records.first().unwrap().lsn;
    assert!(first > Lsn(1) && first <= Lsn(551), "first {first}");
    assert_eq!(records.last().unwrap().lsn, Lsn(600));
    assert!(records.windows(2).all(|w| w[0].lsn + 1 == w[1].lsn));
    assert!(report.torn_tail.is_none());
    // Segment files were recycled, not multiplied.
    let files = device.list().unwrap();
    assert!(files.len() < 12, "{files:?}");
}

#[test]
fn a_stale_batch_of_a_writer_whose_work_never_became_durable_is_a_torn_tail() {
    // Found by the crash sweep (seed 1324): with batches in flight side by side, a crashed
    // writer can leave a later batch (LSN 3, durable mark 0) while nothing before it
    // survived. Recovery's writer must take a newer epoch even though it saw none of the
    // crashed writer's batches, or that stale batch, coming back after the recovery mark,
    // looks like the newer writer's own and is taken for corruption.
    use smlog::format::{encode_record, record_size_bytes, BatchHeader, RecordFields};
    let device = Arc::new(SimDevice::new(16));
    drop(create(&device));
    let meta = smlog::log::segment::read_meta(&*device).unwrap();
    let first_writer_epoch = meta.open_epoch;
    // The stale batch: LSN 3, written by the first writer at offset 8192, mark 0.
    let payload = b"in flight beside a batch that was lost";
    let record_bytes = record_size_bytes(payload.len());
    let mut stale = vec![0u8; BLOCK_SIZE_BYTES];
    let fields = RecordFields {
        txn_id: TxnId(1),
        step: 1,
        kind: 1,
    };
    encode_record(
        &mut stale[64..64 + record_bytes],
        Lsn(3),
        1,
        0x1234,
        fields,
        payload,
    );
    BatchHeader {
        record_count: 1,
        log_id: meta.log_id,
        segment_seq: SegmentSeq(1),
        segment_offset: 8192,
        used_bytes: (64 + record_bytes) as u32,
        first_lsn: Lsn(3),
        durable_lsn: Lsn(0),
        prev_crc: 0x1234,
        epoch: first_writer_epoch,
    }
    .encode(&mut stale[..64]);
    let (log, report, records) = recover(&device, RecoveryOptions::default()).unwrap();
    assert!(records.is_empty());
    assert_eq!(report.tail.next_lsn, Lsn(1));
    assert!(log.epoch() > first_writer_epoch);
    drop(log);
    // The stale batch appears after the recovery mark (a lost zeroing write).
    device.poke(FIRST_SEGMENT, 8192, &stale);
    let (_, report, records) = recover(&device, RecoveryOptions::default()).unwrap();
    assert!(records.is_empty());
    // An older writer's batch after a newer writer's mark is stale (row 3), never part of
    // the log and never corruption.
    assert!(report.torn_tail.is_none(), "{report:?}");
    assert_eq!(report.tail.next_lsn, Lsn(1));
    assert!(lsns(&device, RecoveryMode::Strict).unwrap().is_empty());
}

#[test]
fn row_3_a_discarded_batch_that_comes_back_where_it_fits_is_still_stale() {
    // Found by the log_crash fuzzer: a discarded tail reuses the LSNs and chain values of
    // the history that replaces it, so a batch of it, resurrected over zeros past the new
    // writer's mark, fits there exactly but for its older writer epoch.
    let device = Arc::new(SimDevice::new(17));
    let log = log_with(&device, 1);
    // An empty batch (a mark) at 8192, then LSN 2 at 12288.
    log.write_mark().unwrap();
    log.append_durable(&[record_for(0, 2, b"discarded later")])
        .unwrap();
    drop(log);
    let image = device.durable_image(FIRST_SEGMENT).unwrap();
    let stale = image[12288..12288 + BLOCK_SIZE_BYTES].to_vec();
    // The mark is damaged; nothing vouches for LSN 2, so recovery ends the log at 8192,
    // zeroes what follows and writes its own mark there.
    device.poke(FIRST_SEGMENT, 8192, &[0u8; BLOCK_SIZE_BYTES]);
    let (log, report, records) = recover(&device, RecoveryOptions::default()).unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(report.tail.next_lsn, Lsn(2));
    assert_eq!(report.tail.segment_offset, 8192);
    drop(log);
    let image = device.durable_image(FIRST_SEGMENT).unwrap();
    assert!(image[12288..12288 + BLOCK_SIZE_BYTES]
        .iter()
        .all(|b| *b == 0));
    // The discarded batch comes back over the zeros (fault 5): its place, LSN and chain
    // fit after the new mark.
    device.poke(FIRST_SEGMENT, 12288, &stale);
    for mode in [RecoveryMode::Strict, RecoveryMode::TornTail] {
        assert_eq!(lsns(&device, mode).unwrap(), vec![1], "{mode}");
    }
    // And when recovery's mark rots too (only that mark said the batch after it is
    // stale), nothing vouches for LSN 2: the batch stays out.
    device.poke(FIRST_SEGMENT, 8192 + 20, &[0x5A; 8]);
    for mode in [RecoveryMode::Strict, RecoveryMode::TornTail] {
        assert_eq!(lsns(&device, mode).unwrap(), vec![1], "{mode}");
    }
}

/// A device that misdirects reads (fault 8) must never turn damage vouched for by later
/// batches into a clean end or a torn tail: that verdict would discard the durable records
/// after it. Every read the reader judges damage on is confirmed by a second read of the
/// same place, so a scan either finds the vouching batch or, if the device never returns
/// the same bytes twice, fails with an error naming it; it never truncates.
#[test]
fn misdirected_reads_never_turn_vouched_damage_into_the_end_of_the_log() {
    let device = Arc::new(SimDevice::new(11));
    drop(log_with(&device, 20));
    device.poke(FIRST_SEGMENT, batch_offset(7) + 100, &[0x55]);
    device.set_faults(FaultConfig {
        misdirected_read_percent: 30,
        ..FaultConfig::default()
    });
    let (mut vouched, mut unstable) = (0, 0);
    for round in 0..300 {
        match lsns(&device, RecoveryMode::TornTail) {
            Err(LogError::Corrupt {
                lsn: Lsn(7), why, ..
            }) if why.contains("durable") => vouched += 1,
            Err(LogError::Io(e)) if e.kind == IoErrorKind::Unstable => unstable += 1,
            other => panic!("round {round}: {other:?}"),
        }
    }
    assert!(vouched > 200, "vouched {vouched}, unstable {unstable}");
}
