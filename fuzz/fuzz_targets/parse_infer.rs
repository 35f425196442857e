//! The parent's Open Inference Protocol V2 request parsing (Inference-Header-Content-Length,
//! Content-Type and Content-Encoding, body): no panic, only 400/413/415 refusals with short
//! messages, and accepted requests round-trip through the binary form. Body:
//! `parent::fuzz::parse_infer_round_trip` (input layout documented there).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    parent::fuzz::parse_infer_round_trip(data);
});
