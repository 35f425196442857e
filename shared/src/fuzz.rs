//! Fuzz harness bodies. The same functions run under stable `cargo test`
//! (over a seed corpus and generated cases) and under cargo-fuzz (`fuzz/`).

use crate::frame::Frame;

/// Decoding arbitrary bytes never panics, and whatever decodes re-encodes to
/// exactly the same bytes (the encoding is canonical).
pub fn frame_round_trip(data: &[u8]) {
    if let Ok(frame) = Frame::decode(data) {
        let again = frame.encode().expect("a decoded frame must re-encode");
        assert_eq!(again, data, "re-encoding a decoded frame changed its bytes");
    }
}

/// A small deterministic generator for tests (xorshift64*), so the test
/// corpus needs no extra crate and every run sees the same cases.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }
}
