//! The frame decoder: arbitrary bytes never panic, and whatever decodes
//! re-encodes to exactly the same bytes. Body: `shared::fuzz::frame_round_trip`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    shared::fuzz::frame_round_trip(data);
});
