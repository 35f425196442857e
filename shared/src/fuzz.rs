//! Fuzz harness bodies. The same functions run under stable `cargo test`
//! (over a seed corpus and generated cases) and under cargo-fuzz (`fuzz/`).

use crate::frame::{decode_infer_body, Frame, Kind, Message, HEADER_LEN};

/// Decoding arbitrary bytes never panics, and whatever decodes re-encodes to
/// exactly the same bytes (the encoding is canonical). The model server's
/// own `Infer` decoder, which returns ranges into the body instead of
/// copies, accepts and refuses exactly what the general decoder does, and
/// its ranges hold the same images.
pub fn frame_round_trip(data: &[u8]) {
    if let Ok(frame) = Frame::decode(data) {
        let again = frame.encode().expect("a decoded frame must re-encode");
        assert_eq!(again, data, "re-encoding a decoded frame changed its bytes");
    }
    if data.len() >= HEADER_LEN && data[3] == Kind::Infer as u8 {
        let body = &data[HEADER_LEN..];
        match (Message::decode(Kind::Infer as u8, body), decode_infer_body(body)) {
            (Ok(Message::Infer(req)), Ok((top_k, ranges))) => {
                assert_eq!(req.top_k, top_k);
                let images: Vec<Vec<u8>> = ranges.into_iter().map(|r| body[r].to_vec()).collect();
                assert_eq!(req.images, images, "the range decoder found other images");
            }
            (Err(general), Err(ranges)) => assert_eq!(general, ranges),
            (general, ranges) => panic!("the Infer decoders disagree: {general:?} against {ranges:?}"),
        }
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
