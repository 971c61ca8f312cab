//! Any bytes as a record: decoding never panics and never accepts a record whose CRC fails.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    smlog::testing::check_record_decode(data);
});
