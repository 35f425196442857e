//! The parent's request parsing (Content-Type, query, body): no panic, only
//! 400/413/415 refusals with short messages, and accepted requests round-trip
//! through the study's JSON and the Infer frame. Body:
//! `parent::fuzz::parse_request_round_trip` (input layout documented there).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    parent::fuzz::parse_request_round_trip(data);
});
