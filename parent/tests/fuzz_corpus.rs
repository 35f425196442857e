//! The fuzz harness bodies under stable `cargo test` (nightly and libFuzzer
//! are not available here; fuzz/README.md says how to run the real fuzzer):
//! every file of the checked-in seed corpus (fuzz/corpus/<target>/, plus
//! anything a fuzzing run added there), then thousands of generated cases:
//! mutations of each seed (byte flips, cuts, insertions, splices) and, for
//! the request parser, structured requests built from the pieces hostile
//! clients use. Deterministic (a fixed-seed xorshift), so a failure repeats.
//!
//! `FUZZ_WRITE_SEEDS=1 cargo test -p parent --test fuzz_corpus` rewrites the
//! seed files from `seeds()` below.

use std::path::{Path, PathBuf};

use base64::Engine;
use parent::fuzz::{join_input, parse_request_round_trip};
use shared::frame::{ClassScore, ErrorCode, ErrorReply, Frame, ImageResult, InferReply, InferRequest, Message, ModelInfo, StageTimings};
use shared::fuzz::{frame_round_trip, Rng};

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus").join(target)
}

const JPEG: &[u8] = &[0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x10, b'J', b'F', b'I', b'F', 0, 1];
const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x02\x00\x00\x00";

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

/// The seed corpus: (target, file name, bytes). Small on purpose.
fn seeds() -> Vec<(&'static str, &'static str, Vec<u8>)> {
    let f = |id, m| Frame::new(id, m).encode().unwrap();
    let info = ModelInfo {
        name: "tiny".into(),
        sha256: [7; 32],
        synthetic: true,
        input_shape: [1, 3, 224, 224],
        num_classes: 2,
        label_source: "test".into(),
        labels: vec!["a".into(), "b".into()],
    };
    let result = InferReply {
        images: vec![ImageResult {
            timings: StageTimings { queue_us: 1, decode_us: 2, infer_us: 3 },
            top: vec![ClassScore { class_id: 1, score: 0.75 }, ClassScore { class_id: 0, score: 0.25 }],
        }],
    };
    let json = |s: &str| join_input(Some("application/json"), None, s.as_bytes());
    vec![
        ("frame_round_trip", "ping", f(1, Message::Ping)),
        ("frame_round_trip", "pong", f(2, Message::Pong)),
        ("frame_round_trip", "info_query", f(3, Message::InfoQuery)),
        ("frame_round_trip", "info", f(4, Message::Info(info))),
        ("frame_round_trip", "infer_two_images", f(5, Message::Infer(InferRequest { top_k: 5, images: vec![JPEG.to_vec(), PNG.to_vec()] }))),
        ("frame_round_trip", "result", f(6, Message::Result(result))),
        ("frame_round_trip", "error_busy", f(7, Message::Error(ErrorReply::new(ErrorCode::Busy, "busy")))),
        ("frame_round_trip", "seed", f(8, Message::Seed(vec![0x5a; 64]))),
        ("frame_round_trip", "header_length_over_limit", {
            let mut h = f(9, Message::Ping);
            h[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
            h
        }),
        ("parse_request", "study_json_two_images", json(&format!("{{\"images\": [\"{}\", \"{}\"]}}", b64(JPEG), b64(PNG)))),
        ("parse_request", "json_with_top_k", join_input(Some("application/json; charset=utf-8"), Some("top_k=3"), format!("{{\"images\":[\"{}\"]}}", b64(JPEG)).as_bytes())),
        ("parse_request", "raw_jpeg", join_input(Some("image/jpeg"), None, JPEG)),
        ("parse_request", "raw_png_top_k", join_input(Some("image/png"), Some("a=b&top_k=100"), PNG)),
        ("parse_request", "unpadded_base64", json(&format!("{{\"images\": [\"{}\"]}}", b64(JPEG).trim_end_matches('=')))),
        ("parse_request", "url_safe_base64", json("{\"images\": [\"_9j_4AAQ\"]}")),
        ("parse_request", "gif", json(&format!("{{\"images\": [\"{}\"]}}", b64(b"GIF89a\x01\x00\x01\x00")))),
        ("parse_request", "nested", json(&"[".repeat(200))),
        ("parse_request", "empty_batch", json("{\"images\": []}")),
        // Issue 16: the streaming JSON walk (a field other than images, escapes, duplicates).
        ("parse_request", "unknown_field", json(&format!("{{\"images\": [\"{}\"], \"pad\": [0, 0, 0]}}", b64(JPEG)))),
        ("parse_request", "escaped_json", json(&format!("{{\"imag\\u0065s\": [\"{}\"]}}", b64(JPEG).replace('/', "\\/")))),
        ("parse_request", "duplicate_images", json(&format!("{{\"images\": [\"{0}\"], \"images\": [\"{0}\"]}}", b64(PNG)))),
        ("parse_request", "not_a_string", json("{\"images\": [1, null, {}]}")),
        ("parse_request", "text_plain", join_input(Some("text/plain"), None, b"hello")),
        ("parse_request", "no_content_type", join_input(None, Some("top_k=0"), JPEG)),
    ]
}

/// Reads every file of a corpus directory (seeds and fuzzer finds).
fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<_> = std::fs::read_dir(corpus_dir(target))
        .unwrap_or_else(|e| panic!("{}: {e}", corpus_dir(target).display()))
        .filter_map(Result::ok)
        .map(|e| (e.file_name().to_string_lossy().into_owned(), std::fs::read(e.path()).unwrap()))
        .collect();
    files.sort();
    files
}

/// One random mutation of `data`, the way a fuzzer would.
fn mutate(rng: &mut Rng, data: &[u8], other: &[u8]) -> Vec<u8> {
    let mut b = data.to_vec();
    for _ in 0..1 + rng.below(4) {
        match rng.below(6) {
            0 if !b.is_empty() => {
                let at = rng.below(b.len() as u64) as usize;
                b[at] ^= 1 << rng.below(8);
            }
            1 if !b.is_empty() => {
                let at = rng.below(b.len() as u64) as usize;
                b[at] = [0, 0xFF, b'"', b'[', b'{', b'=', b'\\', 0x7F][rng.below(8) as usize];
            }
            2 => {
                let cut = rng.below(b.len() as u64 + 1) as usize;
                b.truncate(cut);
            }
            3 => {
                let at = rng.below(b.len() as u64 + 1) as usize;
                let n = 1 + rng.below(16) as usize;
                let junk = rng.bytes(n);
                b.splice(at..at, junk);
            }
            4 if !other.is_empty() => {
                // Splice in a piece of another corpus entry.
                let from = rng.below(other.len() as u64) as usize;
                let len = 1 + rng.below((other.len() - from) as u64) as usize;
                let at = rng.below(b.len() as u64 + 1) as usize;
                b.splice(at..at, other[from..from + len].iter().copied());
            }
            _ => {
                // Length fields: a little-endian u32 / u16 set to an edge value.
                if b.len() >= 8 {
                    let at = rng.below(b.len() as u64 - 4) as usize;
                    let v = [0u32, 1, 0xFFFF, u32::MAX, 64 << 20][rng.below(5) as usize];
                    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
                }
            }
        }
    }
    b
}

fn run_corpus(target: &str, harness: fn(&[u8]), mutations_per_file: usize, seed: u64) -> usize {
    let files = corpus(target);
    assert!(files.len() >= 5, "{target}: seed corpus missing (FUZZ_WRITE_SEEDS=1 to write it)");
    let mut rng = Rng::new(seed);
    let mut runs = 0;
    for (i, (_, data)) in files.iter().enumerate() {
        harness(data);
        runs += 1;
        let other = &files[(i + 1) % files.len()].1;
        for _ in 0..mutations_per_file {
            harness(&mutate(&mut rng, data, other));
            runs += 1;
        }
    }
    // Pure noise as well.
    for _ in 0..2000 {
        let len = rng.below(96) as usize;
        harness(&rng.bytes(len));
        runs += 1;
    }
    runs
}

#[test]
fn seed_corpus_is_checked_in() {
    let write = std::env::var_os("FUZZ_WRITE_SEEDS").is_some();
    for (target, name, bytes) in seeds() {
        let path = corpus_dir(target).join(name);
        if write {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &bytes).unwrap();
        }
        let on_disk = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e} (FUZZ_WRITE_SEEDS=1 writes it)", path.display()));
        assert_eq!(on_disk, bytes, "{} is stale (FUZZ_WRITE_SEEDS=1 rewrites it)", path.display());
        assert!(bytes.len() < 4096, "seed {name} is not small");
    }
}

#[test]
fn frame_round_trip_over_the_corpus_and_mutations() {
    let runs = run_corpus("frame_round_trip", frame_round_trip, 1500, 0xF7A3E);
    eprintln!("fuzz (stable): frame_round_trip ran {runs} cases");
    assert!(runs >= 10_000);
}

#[test]
fn parse_request_over_the_corpus_and_mutations() {
    let runs = run_corpus("parse_request", parse_request_round_trip, 1000, 0xBA5E64);
    eprintln!("fuzz (stable): parse_request ran {runs} corpus and mutated cases");
    assert!(runs >= 10_000);
}

#[test]
fn parse_request_over_generated_requests() {
    let mut rng = Rng::new(0x7E57);
    let cts = [Some("application/json"), Some("APPLICATION/JSON;charset=utf-8"), Some("image/jpeg"), Some("image/png"), Some("image/jpg"), Some("text/plain"), Some(""), None];
    let queries = [None, Some("top_k=1"), Some("top_k=100"), Some("top_k=101"), Some("top_k=0"), Some("top_k="), Some("x=1&top_k=7&top_k=3"), Some("top_k=99999999999")];
    let pieces: [&[u8]; 8] = [JPEG, PNG, b"GIF89a", b"BM0123456789abcdef", b"RIFF0000WEBP", b"", b"\xff\xd8", b"plain text"];
    let mut runs = 0;
    for _ in 0..8000 {
        let ct = cts[rng.below(cts.len() as u64) as usize];
        let q = queries[rng.below(queries.len() as u64) as usize];
        let n = rng.below(70) as usize;
        let mut items = Vec::new();
        for _ in 0..n {
            let mut img = pieces[rng.below(pieces.len() as u64) as usize].to_vec();
            let extra = rng.below(32) as usize;
            img.extend(rng.bytes(extra));
            let mut text = b64(&img);
            match rng.below(8) {
                0 => text = text.trim_end_matches('=').to_string(),
                1 => text = text.replace('/', "_").replace('+', "-"),
                2 => text.insert(rng.below(text.len() as u64 + 1) as usize, '\n'),
                3 => text.push('='),
                _ => {}
            }
            items.push(match rng.below(20) {
                0 => "null".to_string(),
                1 => "7".to_string(),
                _ => format!("\"{text}\""),
            });
        }
        let body = match rng.below(10) {
            0 => format!("[{}]", items.join(",")),
            1 => format!("{{\"imgs\": [{}]}}", items.join(",")),
            _ => format!("{{\"images\": [{}]}}", items.join(",")),
        };
        let raw = if matches!(ct, Some(c) if c.starts_with("image")) {
            let mut img = pieces[rng.below(pieces.len() as u64) as usize].to_vec();
            let extra = rng.below(64) as usize;
            img.extend(rng.bytes(extra));
            img
        } else {
            body.into_bytes()
        };
        parse_request_round_trip(&join_input(ct, q, &raw));
        runs += 1;
    }
    eprintln!("fuzz (stable): parse_request ran {runs} generated requests");
}
