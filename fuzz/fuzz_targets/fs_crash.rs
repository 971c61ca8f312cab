//! File operations from several simulated clients, crashes with fault plans (faults 1-14),
//! crashes during recovery, decoded from the input with `arbitrary` and checked against
//! the reference model. See `smlog_recovery::harness::fuzz`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    smlog_recovery::harness::fuzz::check_fs_crash(data);
});
