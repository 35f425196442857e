//! Protocol tests: each malformed input gets its exact error variant; every
//! generated message round-trips to identical bytes; random bytes never panic.

use std::io::Cursor;

use shared::frame::*;
use shared::fuzz::{frame_round_trip, Rng};
use shared::limits::*;

fn header(kind: u8, body_len: u32, request_id: u64) -> Vec<u8> {
    Header { kind, body_len, request_id }.encode().to_vec()
}

fn raw(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut v = header(kind, body.len() as u32, 7);
    v.extend_from_slice(body);
    v
}

fn infer_body(top_k: u16, images: &[&[u8]]) -> Vec<u8> {
    let mut b = top_k.to_le_bytes().to_vec();
    b.extend_from_slice(&(images.len() as u16).to_le_bytes());
    for img in images {
        b.extend_from_slice(&(img.len() as u32).to_le_bytes());
        b.extend_from_slice(img);
    }
    b
}

#[test]
fn header_is_sixteen_bytes_and_laid_out_as_drawn() {
    assert_eq!(HEADER_LEN, 16);
    let h = Header { kind: 0x05, body_len: 0x0102_0304, request_id: 0x1122_3344_5566_7788 }.encode();
    assert_eq!(&h[0..2], b"NE");
    assert_eq!(h[2], VERSION);
    assert_eq!(h[3], 0x05);
    assert_eq!(&h[4..8], &[0x04, 0x03, 0x02, 0x01]);
    assert_eq!(&h[8..16], &[0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11]);
}

#[test]
fn short_header() {
    let bytes = &header(1, 0, 1)[..10];
    assert_eq!(Frame::decode(bytes), Err(FrameError::Truncated { needed: 16, available: 10 }));
    let mut cur = Cursor::new(bytes.to_vec());
    assert_eq!(read_frame(&mut cur).err(), Some(FrameError::Truncated { needed: 16, available: 10 }));
}

#[test]
fn clean_end_of_stream_is_not_an_error() {
    let mut cur = Cursor::new(Vec::new());
    assert!(matches!(read_frame(&mut cur), Ok(None)));
}

#[test]
fn bad_magic() {
    let mut b = raw(1, &[]);
    b[0..2].copy_from_slice(b"PO"); // "POST /..." sent to the frame port
    assert_eq!(Frame::decode(&b), Err(FrameError::BadMagic(*b"PO")));
}

#[test]
fn unknown_version() {
    let mut b = raw(1, &[]);
    b[2] = 9;
    assert_eq!(Frame::decode(&b), Err(FrameError::UnsupportedVersion(9)));
}

#[test]
fn unknown_kind() {
    assert_eq!(Frame::decode(&raw(0x7f, &[])), Err(FrameError::UnknownKind(0x7f)));
    assert_eq!(Frame::decode(&raw(0x00, &[])), Err(FrameError::UnknownKind(0x00)));
}

#[test]
fn length_over_the_maximum_is_refused_before_reading_the_body() {
    let b = header(5, MAX_FRAME_LEN + 1, 1);
    assert_eq!(Frame::decode(&b), Err(FrameError::FrameTooLarge(MAX_FRAME_LEN + 1)));
    // The stream reader must refuse it from the header alone: nothing past
    // the header is read, so nothing is sized by the bad length.
    let mut b = b;
    b.extend_from_slice(&[0u8; 64]);
    let mut cur = Cursor::new(b);
    let got = read_frame(&mut cur);
    assert_eq!(got.err(), Some(FrameError::FrameTooLarge(MAX_FRAME_LEN + 1)));
    assert_eq!(cur.position(), HEADER_LEN as u64);
    let b = header(5, u32::MAX, 1);
    assert_eq!(Frame::decode(&b), Err(FrameError::FrameTooLarge(u32::MAX)));
}

#[test]
fn truncated_body() {
    let body = infer_body(5, &[b"abcdef"]);
    let mut b = header(5, body.len() as u32, 1);
    b.extend_from_slice(&body[..body.len() - 2]);
    assert_eq!(Frame::decode(&b), Err(FrameError::Truncated { needed: body.len(), available: body.len() - 2 }));
    let mut cur = Cursor::new(b);
    assert_eq!(
        read_frame(&mut cur).err(),
        Some(FrameError::Truncated { needed: body.len(), available: body.len() - 2 })
    );
}

#[test]
fn image_count_larger_than_the_bytes_present() {
    // Says two images, holds one.
    let mut body = infer_body(5, &[b"abc"]);
    body[2..4].copy_from_slice(&2u16.to_le_bytes());
    assert_eq!(Frame::decode(&raw(5, &body)), Err(FrameError::Truncated { needed: 4, available: 0 }));
}

#[test]
fn image_length_larger_than_the_bytes_present() {
    let mut body = infer_body(5, &[b"abc"]);
    body[4..8].copy_from_slice(&1000u32.to_le_bytes());
    assert_eq!(Frame::decode(&raw(5, &body)), Err(FrameError::Truncated { needed: 1000, available: 3 }));
}

#[test]
fn image_count_smaller_than_the_bytes_present() {
    let mut body = infer_body(5, &[b"abc", b"de"]);
    body[2..4].copy_from_slice(&1u16.to_le_bytes());
    assert_eq!(Frame::decode(&raw(5, &body)), Err(FrameError::TrailingBytes(6)));
}

#[test]
fn trailing_bytes_after_body_and_after_frame() {
    let mut body = Vec::new();
    body.push(0xAA);
    assert_eq!(Frame::decode(&raw(1, &body)), Err(FrameError::TrailingBytes(1)));
    let mut two = raw(1, &[]);
    two.extend_from_slice(&raw(1, &[]));
    assert_eq!(Frame::decode(&two), Err(FrameError::TrailingBytes(16)));
}

#[test]
fn zero_images() {
    assert_eq!(Frame::decode(&raw(5, &infer_body(5, &[]))), Err(FrameError::EmptyBatch));
    let f = Frame::new(1, Message::Infer(InferRequest { top_k: 5, images: vec![] }));
    assert_eq!(f.encode(), Err(FrameError::EmptyBatch));
}

#[test]
fn too_many_images() {
    let imgs: Vec<&[u8]> = vec![b"x"; MAX_IMAGES + 1];
    assert_eq!(Frame::decode(&raw(5, &infer_body(5, &imgs))), Err(FrameError::TooManyImages(MAX_IMAGES + 1)));
    let f = Frame::new(1, Message::Infer(InferRequest { top_k: 5, images: vec![vec![1]; MAX_IMAGES + 1] }));
    assert_eq!(f.encode(), Err(FrameError::TooManyImages(MAX_IMAGES + 1)));
    // Exactly at the limit is fine.
    let imgs: Vec<&[u8]> = vec![b"x"; MAX_IMAGES];
    assert!(Frame::decode(&raw(5, &infer_body(5, &imgs))).is_ok());
}

#[test]
fn bad_top_k() {
    assert_eq!(Frame::decode(&raw(5, &infer_body(0, &[b"x"]))), Err(FrameError::BadTopK(0)));
    let k = (MAX_FRAME_TOP_K + 1) as u16;
    assert_eq!(Frame::decode(&raw(5, &infer_body(k, &[b"x"]))), Err(FrameError::BadTopK(MAX_FRAME_TOP_K + 1)));
    assert_eq!(Frame::decode(&raw(5, &infer_body(u16::MAX, &[b"x"]))), Err(FrameError::BadTopK(usize::from(u16::MAX))));
    let f = Frame::new(1, Message::Infer(InferRequest { top_k: k, images: vec![vec![1]] }));
    assert_eq!(f.encode(), Err(FrameError::BadTopK(MAX_FRAME_TOP_K + 1)));
    // The HTTP side's MAX_TOP_K is not the frame's bound: a frame may ask for every class.
    for k in [MAX_TOP_K + 1, MAX_FRAME_TOP_K] {
        let got = Frame::decode(&raw(5, &infer_body(k as u16, &[b"x"]))).unwrap();
        assert_eq!(got.message, Message::Infer(InferRequest { top_k: k as u16, images: vec![b"x".to_vec()] }));
    }
}

/// One image's result as it is laid out in a Result body.
fn result_image(k: u16, scores: usize) -> Vec<u8> {
    let mut b = [7u32, 8, 9].iter().flat_map(|t| t.to_le_bytes()).collect::<Vec<_>>();
    b.extend_from_slice(&k.to_le_bytes());
    for i in 0..scores as u32 {
        b.extend_from_slice(&i.to_le_bytes());
        b.extend_from_slice(&0.5f32.to_le_bytes());
    }
    b
}

#[test]
fn result_scores_up_to_the_frame_bound() {
    // The largest Result, MAX_IMAGES images of MAX_FRAME_TOP_K scores, fits MAX_FRAME_LEN and round-trips.
    let image = ImageResult {
        timings: StageTimings { queue_us: 1, decode_us: 2, infer_us: 3 },
        top: (0..MAX_FRAME_TOP_K as u32).map(|i| ClassScore { class_id: i, score: 1.0 / (1.0 + i as f32) }).collect(),
    };
    let largest = Frame::new(3, Message::Result(InferReply { images: vec![image.clone(); MAX_IMAGES] }));
    let bytes = largest.encode().unwrap();
    assert_eq!(bytes.len() - HEADER_LEN, 2 + MAX_IMAGES * (12 + 2 + MAX_FRAME_TOP_K * 8));
    assert!(bytes.len() - HEADER_LEN <= MAX_FRAME_LEN as usize);
    assert_eq!(Frame::decode(&bytes).unwrap(), largest);
    // One score more is refused by the encoder and by the decoder.
    let mut over = image;
    over.top.push(ClassScore { class_id: 0, score: 0.0 });
    let f = Frame::new(3, Message::Result(InferReply { images: vec![over] }));
    assert_eq!(f.encode(), Err(FrameError::BadTopK(MAX_FRAME_TOP_K + 1)));
    let mut body = 1u16.to_le_bytes().to_vec();
    body.extend_from_slice(&result_image((MAX_FRAME_TOP_K + 1) as u16, MAX_FRAME_TOP_K + 1));
    assert_eq!(Frame::decode(&raw(6, &body)), Err(FrameError::BadTopK(MAX_FRAME_TOP_K + 1)));
    // A k the body cannot hold is refused from the count, before anything is sized by it.
    let mut body = 1u16.to_le_bytes().to_vec();
    body.extend_from_slice(&result_image(MAX_FRAME_TOP_K as u16, 3));
    assert_eq!(Frame::decode(&raw(6, &body)), Err(FrameError::Truncated { needed: MAX_FRAME_TOP_K * 8, available: 24 }));
    // More scores than k: trailing bytes.
    let mut body = 1u16.to_le_bytes().to_vec();
    body.extend_from_slice(&result_image(2, 3));
    assert_eq!(Frame::decode(&raw(6, &body)), Err(FrameError::TrailingBytes(8)));
}

#[test]
fn bad_strings_and_bools() {
    // Error frame whose message is not UTF-8.
    let mut body = 3u16.to_le_bytes().to_vec();
    body.extend_from_slice(&2u16.to_le_bytes());
    body.extend_from_slice(&[0xff, 0xfe]);
    assert_eq!(Frame::decode(&raw(7, &body)), Err(FrameError::InvalidUtf8));
    // String length over the maximum.
    let mut body = 3u16.to_le_bytes().to_vec();
    body.extend_from_slice(&((MAX_STRING_LEN + 1) as u16).to_le_bytes());
    body.extend(std::iter::repeat(b'a').take(MAX_STRING_LEN + 1));
    assert_eq!(Frame::decode(&raw(7, &body)), Err(FrameError::StringTooLong(MAX_STRING_LEN + 1)));
    // Info with a synthetic flag of 2.
    let mut info = sample_info(3);
    info.synthetic = false;
    let mut b = Frame::new(1, Message::Info(info)).encode().unwrap();
    let flag_at = HEADER_LEN + 2 + "model".len() + 32;
    b[flag_at] = 2;
    assert_eq!(Frame::decode(&b), Err(FrameError::InvalidBool(2)));
}

#[test]
fn label_count_must_match_classes() {
    let mut info = sample_info(3);
    info.labels.pop();
    let f = Frame::new(1, Message::Info(info));
    assert_eq!(f.encode(), Err(FrameError::LabelCount { labels: 2, classes: 3 }));
    // A huge announced label count with no bytes behind it is refused before
    // anything is sized by it.
    let mut info = sample_info(0);
    info.num_classes = 90_000;
    let mut b = Frame::new(1, Message::Info(info)).encode().unwrap();
    let n = b.len();
    b[n - 4..].copy_from_slice(&90_000u32.to_le_bytes());
    assert_eq!(Frame::decode(&b), Err(FrameError::Truncated { needed: 180_000, available: 0 }));
}

#[test]
fn bad_seed_lengths() {
    assert_eq!(Frame::decode(&raw(8, &[])), Err(FrameError::BadLength { kind: Kind::Seed, len: 0 }));
    let big = vec![1u8; MAX_SEED_LEN + 1];
    assert_eq!(Frame::decode(&raw(8, &big)), Err(FrameError::BadLength { kind: Kind::Seed, len: MAX_SEED_LEN + 1 }));
}

#[test]
fn body_errors_leave_the_stream_in_step() {
    // A bad body, then a good ping: the stream reader returns both frames,
    // the first failing only when its body is decoded.
    let mut bytes = raw(5, &infer_body(5, &[]));
    bytes.extend_from_slice(&raw(1, &[]));
    let mut cur = Cursor::new(bytes);
    let first = read_frame(&mut cur).unwrap().unwrap();
    assert_eq!(first.message(), Err(FrameError::EmptyBatch));
    let second = read_frame(&mut cur).unwrap().unwrap();
    assert_eq!(second.message(), Ok(Message::Ping));
    assert!(read_frame(&mut cur).unwrap().is_none());
}

#[test]
fn error_codes_are_stable() {
    for (code, n, name) in [
        (ErrorCode::Malformed, 1, "malformed"),
        (ErrorCode::UnexpectedKind, 2, "unexpected_kind"),
        (ErrorCode::Busy, 3, "busy"),
        (ErrorCode::BadImage, 4, "bad_image"),
        (ErrorCode::UnsupportedFormat, 5, "unsupported_format"),
        (ErrorCode::ImageTooLarge, 6, "image_too_large"),
        (ErrorCode::Internal, 7, "internal"),
        (ErrorCode::KeyRejected, 9, "key_rejected"),
        (ErrorCode::SealedRequestInvalid, 10, "sealed_request_invalid"),
        (ErrorCode::AttestationUnavailable, 11, "attestation_unavailable"),
        (ErrorCode::ShuttingDown, 8, "shutting_down"),
    ] {
        assert_eq!(code as u16, n);
        assert_eq!(ErrorCode::from_u16(n), Some(code));
        assert_eq!(code.name(), name);
    }
    assert_eq!(ErrorCode::from_u16(999), None);
    let long = "é".repeat(MAX_STRING_LEN);
    assert!(ErrorReply::new(ErrorCode::Internal, long).message.len() <= MAX_STRING_LEN);
}

fn sample_info(classes: u32) -> ModelInfo {
    ModelInfo {
        name: "model".into(),
        sha256: [0xab; 32],
        synthetic: true,
        input_shape: [1, 3, 224, 224],
        num_classes: classes,
        label_source: "test".into(),
        labels: (0..classes).map(|i| format!("label {i}")).collect(),
    }
}

/// Generates a valid message of every kind, with sizes drawn from `rng`.
fn generate(rng: &mut Rng) -> Message {
    match rng.below(10) {
        0 => Message::Ping,
        1 => Message::Pong,
        2 => Message::InfoQuery,
        3 => {
            let mut info = sample_info(rng.below(50) as u32);
            info.name = "é".repeat(rng.below(30) as usize);
            info.synthetic = rng.below(2) == 1;
            Message::Info(info)
        }
        4 => {
            let n = 1 + rng.below(MAX_IMAGES as u64) as usize;
            let top_k = 1 + rng.below(MAX_FRAME_TOP_K as u64) as u16;
            let images = (0..n)
                .map(|_| {
                    let len = rng.below(300) as usize;
                    rng.bytes(len)
                })
                .collect();
            Message::Infer(InferRequest { top_k, images })
        }
        5 => {
            let n = 1 + rng.below(8) as usize;
            let images = (0..n)
                .map(|_| {
                    let k = rng.below(10) as usize;
                    ImageResult {
                        timings: StageTimings {
                            queue_us: rng.next_u64() as u32,
                            decode_us: rng.next_u64() as u32,
                            infer_us: rng.next_u64() as u32,
                        },
                        // Any bit pattern, NaNs included, must survive the trip.
                        top: (0..k)
                            .map(|_| ClassScore { class_id: rng.next_u64() as u32, score: f32::from_bits(rng.next_u64() as u32) })
                            .collect(),
                    }
                })
                .collect();
            Message::Result(InferReply { images })
        }
        6 => Message::Error(ErrorReply { code_raw: rng.next_u64() as u16, message: "x".repeat(rng.below(100) as usize) }),
        7 => {
            let n = 1 + rng.below(MAX_SEED_LEN as u64) as usize;
            Message::Seed(rng.bytes(n))
        }
        8 => Message::KeysQuery,
        _ => {
            // The opaque kinds of attestation and sealed requests, up to a
            // few KiB each (their limits are tested at the edges below).
            let (kind, cap) = [(Kind::Attest, MAX_NONCE_LEN), (Kind::Attestation, MAX_DOCUMENT_LEN), (Kind::Keys, MAX_KEYS_LEN), (Kind::Sealed, 8192), (Kind::SealedReply, 8192)][rng.below(5) as usize];
            let len = 1 + rng.below(cap as u64) as usize;
            let bytes = rng.bytes(len);
            match kind {
                Kind::Attest => Message::Attest(bytes),
                Kind::Attestation => Message::Attestation(bytes),
                Kind::Keys => Message::Keys(bytes),
                Kind::Sealed => Message::Sealed(bytes),
                _ => Message::SealedReply(bytes),
            }
        }
    }
}

#[test]
fn opaque_kinds_take_one_byte_to_their_limit_and_no_more() {
    let cases = [
        (Kind::Seed, MAX_SEED_LEN),
        (Kind::Attest, MAX_NONCE_LEN),
        (Kind::Attestation, MAX_DOCUMENT_LEN),
        (Kind::Keys, MAX_KEYS_LEN),
        (Kind::Sealed, MAX_FRAME_LEN as usize),
        (Kind::SealedReply, MAX_FRAME_LEN as usize),
    ];
    for (kind, max) in cases {
        assert_eq!(kind.byte_limit(), Some(max));
        for len in [1, max] {
            let msg = Message::decode(kind as u8, &vec![0xa5; len]).unwrap();
            assert_eq!((msg.kind(), msg.encode_body().unwrap().len()), (kind, len), "{kind:?} of {len} bytes");
        }
        assert_eq!(Message::decode(kind as u8, &[]), Err(FrameError::BadLength { kind, len: 0 }), "{kind:?} empty");
        if max < MAX_FRAME_LEN as usize {
            let over = vec![0; max + 1];
            assert_eq!(Message::decode(kind as u8, &over), Err(FrameError::BadLength { kind, len: max + 1 }));
        }
    }
    // A keys query carries nothing.
    assert_eq!(Message::decode(Kind::KeysQuery as u8, &[1]), Err(FrameError::TrailingBytes(1)));
    assert_eq!(Message::decode(0x0B, &[]), Ok(Message::KeysQuery));
    // The kinds after the last one are still unknown.
    assert_eq!(Message::decode(0x0F, &[]), Err(FrameError::UnknownKind(0x0F)));
}

#[test]
fn generated_messages_round_trip_to_identical_bytes() {
    let mut rng = Rng::new(0x5eed);
    for i in 0..3000u64 {
        let frame = Frame::new(rng.next_u64() ^ i, generate(&mut rng));
        let bytes = frame.encode().unwrap();
        let decoded = Frame::decode(&bytes).unwrap();
        assert_eq!(decoded.encode().unwrap(), bytes, "frame {i} changed on the round trip");
        frame_round_trip(&bytes);
        // The stream reader agrees with the slice decoder.
        let raw = read_frame(&mut Cursor::new(&bytes)).unwrap().unwrap();
        assert_eq!(raw.header.request_id, frame.request_id);
        assert_eq!(raw.message().unwrap().kind(), frame.message.kind());
    }
}

#[test]
fn random_bytes_never_panic() {
    let mut rng = Rng::new(42);
    for _ in 0..20_000 {
        let len = rng.below(64) as usize;
        frame_round_trip(&rng.bytes(len));
        // Valid header, random body: exercises every body decoder.
        let kind = 1 + rng.below(14) as u8;
        let blen = rng.below(200) as usize;
        let mut b = header(kind, blen as u32, 1);
        b.extend(rng.bytes(blen));
        frame_round_trip(&b);
        let _ = read_frame(&mut Cursor::new(&b));
    }
}

#[test]
fn mutated_valid_frames_never_panic() {
    let mut rng = Rng::new(7);
    for _ in 0..5000 {
        let mut b = Frame::new(1, generate(&mut rng)).encode().unwrap();
        for _ in 0..1 + rng.below(4) {
            let at = rng.below(b.len() as u64) as usize;
            b[at] = rng.next_u64() as u8;
        }
        if rng.below(4) == 0 {
            let cut = rng.below(b.len() as u64) as usize;
            b.truncate(cut);
        }
        frame_round_trip(&b);
    }
}
