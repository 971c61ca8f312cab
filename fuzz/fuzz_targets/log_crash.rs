//! Appends, syncs and crashes with a fault plan per crash (DESIGN section 6, faults 1-11,
//! and 12), decoded from the input with `arbitrary`; every acknowledged record must come
//! back and nothing that was never appended. See `smlog_recovery::harness::fuzz`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    smlog_recovery::harness::fuzz::check_log_crash(data);
});
