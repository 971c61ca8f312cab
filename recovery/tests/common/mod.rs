//! Helpers shared by the recovery tests.
#![allow(dead_code)]

use std::sync::Arc;

use smlog::io::sim::{CrashPlan, SimDevice};
use smlog::log::writer::CreateOptions;
use smlog::TxnId;
use smlog::{Log, NewRecord, Record};
use smlog_recovery::{open_log, RecoveryOptions, RecoveryReport};

/// Smallest segments, so tests cross segment boundaries and reuse segments.
pub const SEGMENT_SIZE_BYTES: u64 = 256 * 1024;

/// The payload every test appends for an LSN in a given crash cycle: its content is a
/// function of (cycle, lsn), so any record read back can be checked by itself.
pub fn payload_for(cycle: u64, lsn: u64) -> Vec<u8> {
    let len = ((lsn * 7919 + cycle * 31) % 700) as usize + 1;
    let mut state =
        lsn.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ cycle.wrapping_mul(0xD1B5_4A32_D192_ED03) ^ 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8 | 1
        })
        .collect()
}

pub fn record_for(cycle: u64, lsn: u64, payload: &[u8]) -> NewRecord<'_> {
    NewRecord {
        txn_id: TxnId(cycle * 1_000_000 + lsn),
        step: (lsn % 5) as u32,
        kind: (lsn % 3) as u16 + 1,
        payload,
    }
}

/// A log on the simulated device.
pub type SimLog = Log<SimDevice>;

/// What [`recover`] returns: the reopened log, the report, and every record read.
pub type Recovered = (SimLog, RecoveryReport, Vec<Record>);

pub fn create(device: &Arc<SimDevice>) -> SimLog {
    Log::create(
        Arc::clone(device),
        CreateOptions {
            segment_size_bytes: SEGMENT_SIZE_BYTES,
        },
    )
    .unwrap()
}

pub fn recover(
    device: &Arc<SimDevice>,
    options: RecoveryOptions,
) -> Result<Recovered, smlog::LogError> {
    let mut records = Vec::new();
    let (log, report) = open_log(Arc::clone(device), options, |r| records.push(r.clone()))?;
    Ok((log, report, records))
}

pub fn crash(device: &SimDevice, plan: &CrashPlan) {
    device.crash();
    device.restart(plan);
}
