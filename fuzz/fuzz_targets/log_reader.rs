//! Any bytes as a log's segments: the reader never panics, never hangs, and never yields a
//! record whose CRC fails or that breaks the chain. See `smlog::testing::check_log_reader`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    smlog::testing::check_log_reader(data);
});
