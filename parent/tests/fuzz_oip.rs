//! The Open Inference Protocol V2 request parser's fuzz harness body
//! (`parent::fuzz::parse_infer_round_trip`) under stable `cargo test`: every file of
//! fuzz/corpus/parse_infer/, then mutations of each (byte flips, cuts, insertions, splices,
//! length fields set to 0, 1, 0xFFFF, u32::MAX) and random inputs. Deterministic (a fixed-seed
//! xorshift), so a failure repeats. `FUZZ_WRITE_SEEDS=1` rewrites the seed files from `seeds()`.

use std::path::PathBuf;

use parent::fuzz::parse_infer_round_trip;
use serde_json::json;
use shared::fuzz::Rng;

const JPEG: &[u8] = &[0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x10, b'J', b'F', b'I', b'F', 0, 1];
const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR";

fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/parse_infer")
}

/// flags, header length and body, in the harness's layout.
fn input(binary: bool, header_len: Option<&str>, body: &[u8]) -> Vec<u8> {
    let mut v = vec![u8::from(header_len.is_some()) | if binary { 2 } else { 0 }];
    if let Some(h) = header_len {
        v.push(h.len() as u8);
        v.extend_from_slice(h.as_bytes());
    }
    v.extend_from_slice(body);
    v
}

fn binary(images: &[&[u8]], k: u64) -> Vec<u8> {
    let mut tail = Vec::new();
    for i in images {
        tail.extend_from_slice(&(i.len() as u32).to_le_bytes());
        tail.extend_from_slice(i);
    }
    let header = json!({
        "inputs": [{ "name": "image", "datatype": "BYTES", "shape": [images.len()], "parameters": { "binary_data_size": tail.len() } }],
        "outputs": [{ "name": "probabilities", "parameters": { "classification": k, "binary_data": true } }],
    });
    let mut body = header.to_string().into_bytes();
    let n = body.len().to_string();
    body.extend_from_slice(&tail);
    input(true, Some(&n), &body)
}

fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    use base64::Engine;
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let json_form = json!({
        "id": "42",
        "inputs": [{ "name": "image", "datatype": "BYTES", "shape": [2, 1], "parameters": { "content_type": "base64" }, "data": [b64(JPEG), b64(PNG)] }],
        "outputs": [{ "name": "probabilities", "parameters": { "classification": 3 } }],
    });
    let both_forms = json!({
        "parameters": { "binary_data_output": false },
        "inputs": [{ "name": "image", "datatype": "BYTES", "shape": [1], "parameters": { "content_type": "base64" }, "data": [b64(JPEG)] }],
        "outputs": [
            { "name": "probabilities", "parameters": { "binary_data": true } },
            { "name": "probabilities", "parameters": { "classification": 5, "binary_data": false } },
        ],
    });
    vec![
        ("binary_two_images", binary(&[JPEG, PNG], 5)),
        ("binary_one_image_k100", binary(&[JPEG], 100)),
        ("json_base64", input(false, None, json_form.to_string().as_bytes())),
        ("no_outputs", input(false, None, br#"{"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1], "data": ["x"]}]}"#)),
        ("fp32_input", input(false, None, br#"{"inputs": [{"name": "image", "datatype": "FP32", "shape": [1, 3], "data": [0.5, 1, 2]}], "outputs": []}"#)),
        ("binary_full_output", binary(&[JPEG, PNG], 0)),
        ("json_both_forms", input(false, None, both_forms.to_string().as_bytes())),
    ]
}

fn mutate(rng: &mut Rng, data: &[u8], other: &[u8]) -> Vec<u8> {
    let mut b = data.to_vec();
    for _ in 0..1 + rng.below(4) {
        if b.is_empty() {
            b.push(0);
        }
        match rng.below(6) {
            0 => {
                let at = rng.below(b.len() as u64) as usize;
                b[at] ^= 1 << rng.below(8);
            }
            1 => {
                let at = rng.below(b.len() as u64) as usize;
                b[at] = [0, 0xFF, b'"', b'[', b'{', b'1', b'\\', b'9'][rng.below(8) as usize];
            }
            2 => b.truncate(rng.below(b.len() as u64 + 1) as usize),
            3 => {
                let at = rng.below(b.len() as u64 + 1) as usize;
                let n = 1 + rng.below(16) as usize;
                let junk = rng.bytes(n);
                b.splice(at..at, junk);
            }
            4 if !other.is_empty() => {
                let from = rng.below(other.len() as u64) as usize;
                let len = 1 + rng.below((other.len() - from) as u64) as usize;
                let at = rng.below(b.len() as u64 + 1) as usize;
                b.splice(at..at, other[from..from + len].iter().copied());
            }
            _ => {
                if b.len() > 4 {
                    let at = rng.below(b.len() as u64 - 4) as usize;
                    let v = [0u32, 1, 0xFFFF, u32::MAX, 64 << 20][rng.below(5) as usize];
                    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
                }
            }
        }
    }
    b
}

#[test]
fn parse_infer_over_the_corpus_mutations_and_random_inputs() {
    let dir = corpus_dir();
    if std::env::var_os("FUZZ_WRITE_SEEDS").is_some() {
        std::fs::create_dir_all(&dir).unwrap();
        for (name, bytes) in seeds() {
            std::fs::write(dir.join(name), bytes).unwrap();
        }
    }
    let mut corpus: Vec<Vec<u8>> = seeds().into_iter().map(|(_, b)| b).collect();
    if let Ok(entries) = std::fs::read_dir(&dir) {
        for e in entries.flatten() {
            corpus.push(std::fs::read(e.path()).unwrap());
        }
    }
    let mut runs = 0;
    for c in &corpus {
        parse_infer_round_trip(c);
        runs += 1;
    }
    let mut rng = Rng::new(0x0_1_9_2);
    for i in 0..corpus.len() {
        for _ in 0..400 {
            let other = &corpus[rng.below(corpus.len() as u64) as usize];
            parse_infer_round_trip(&mutate(&mut rng, &corpus[i], other));
            runs += 1;
        }
    }
    for _ in 0..2000 {
        let len = rng.below(96) as usize;
        parse_infer_round_trip(&rng.bytes(len));
        runs += 1;
    }
    println!("{runs} inputs");
}
