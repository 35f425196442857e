//! Sealed requests: Oblivious HTTP (RFC 9458) with a Binary HTTP (RFC 9292) inner message,
//! and the attestation document that binds the sealing key to this enclave (docs/SEALED.md).
//!
//! [`Gateway`] holds the sealing keys, which are made here at start, live only in this
//! process's memory and are rotated every `--key-rotation` (the previous one still opens
//! requests for [`KEY_GRACE`]). It opens a sealed request, reads the inner request, and seals
//! the inner answer, padded to a multiple of [`SEALED_REPLY_PAD`]. The classification itself
//! runs on the worker pool like any other request (server.rs).
//!
//! The inner request is read by the small known-length BHTTP reader below rather than a
//! general BHTTP library: it allocates nothing (the image is handed to the workers as a range
//! of the opened bytes), and it reads only what this appliance serves: `POST
//! /predict-secure/[?top_k=N]` with a JPEG or PNG body.

use std::ops::Range;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ohttp::hpke::{Aead, Kdf, Kem};
use ohttp::{KeyConfig, Server, ServerResponse, SymmetricSuite};
use shared::frame::{ErrorCode, ErrorReply, ImageResult, ModelInfo};
use shared::limits::{KEY_GRACE, MAX_TOP_K, SEALED_REPLY_PAD};

use crate::nsm::Nsm;

struct Key {
    server: Server,
    /// The encoded key configuration (41 bytes): what the attestation binds.
    config: Vec<u8>,
    made: Instant,
}

struct Keys {
    current: Key,
    /// The key rotated out, and when.
    previous: Option<(Key, Instant)>,
}

pub struct Gateway {
    keys: Mutex<Keys>,
    rotation: Duration,
    nsm: Nsm,
    pub info: ModelInfo,
}

/// An inner answer: HTTP status and JSON body.
pub type Answer = (u16, String);

fn new_key(id: u8) -> Result<Key, String> {
    let suite = SymmetricSuite::new(Kdf::HkdfSha256, Aead::Aes128Gcm);
    let cfg = KeyConfig::new(id, Kem::X25519Sha256, vec![suite]).map_err(|e| format!("cannot make a key: {e}"))?;
    let config = cfg.encode().map_err(|e| format!("cannot encode a key: {e}"))?;
    let server = Server::new(cfg).map_err(|e| format!("cannot use a key: {e}"))?;
    Ok(Key { server, config, made: Instant::now() })
}

impl Gateway {
    /// Makes the first key, with a random key id.
    pub fn new(nsm: Nsm, rotation: Duration, info: ModelInfo) -> Result<Gateway, String> {
        let mut id = [0u8];
        getrandom::getrandom(&mut id).map_err(|e| format!("no randomness for a key id: {e}"))?;
        let keys = Keys { current: new_key(id[0])?, previous: None };
        Ok(Gateway { keys: Mutex::new(keys), rotation, nsm, info })
    }

    /// The keys, rotated first if the current one is due.
    fn keys(&self) -> std::sync::MutexGuard<'_, Keys> {
        let mut k = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        if k.current.made.elapsed() >= self.rotation {
            // A failure keeps the current key until the next try.
            if let Ok(next) = new_key(k.current.config[0].wrapping_add(1)) {
                k.previous = Some((std::mem::replace(&mut k.current, next), Instant::now()));
                eprintln!("sealing key rotated: key id {}", k.current.config[0]);
            }
        }
        if k.previous.as_ref().is_some_and(|(_, retired)| retired.elapsed() > KEY_GRACE) {
            k.previous = None;
        }
        k
    }

    /// `application/ohttp-keys` (RFC 9540) of the current key alone: the previous one still
    /// opens requests during its grace, but is not offered for new ones (clients differ in
    /// which key of a list they pick).
    pub fn key_list(&self) -> Vec<u8> {
        let config = &self.keys().current.config;
        [&(config.len() as u16).to_be_bytes()[..], config].concat()
    }

    /// An NSM attestation document for the current key, the model and the client's nonce.
    pub fn attest(&self, nonce: &[u8]) -> Result<Vec<u8>, ErrorReply> {
        let unavailable = |e: String| ErrorReply::new(ErrorCode::AttestationUnavailable, e);
        let debug = self.nsm.debug_mode().map_err(unavailable)?;
        let statement = format!("nitro-ml-attest/1 model-sha256={} debug={}", self.info.sha256_hex(), u8::from(debug));
        let config = self.keys().current.config.clone();
        self.nsm.attestation(&config, statement.as_bytes(), nonce).map_err(unavailable)
    }

    /// Opens a sealed request with the key its first byte names.
    pub fn open(&self, sealed: &[u8]) -> Result<(Vec<u8>, ServerResponse), ErrorReply> {
        let rejected = || ErrorReply::new(ErrorCode::KeyRejected, "key identifier unknown");
        let id = *sealed.first().ok_or_else(rejected)?;
        let server = {
            let k = self.keys();
            let previous = k.previous.as_ref().map(|(p, _)| p);
            let key = std::iter::once(&k.current).chain(previous).find(|key| key.config[0] == id);
            key.ok_or_else(rejected)?.server.clone()
        };
        server.decapsulate(sealed).map_err(|e| match e {
            ohttp::Error::Unsupported | ohttp::Error::KeyId => rejected(),
            e => ErrorReply::new(ErrorCode::SealedRequestInvalid, format!("cannot open the sealed request: {e}")),
        })
    }

    /// The sealed, padded BHTTP response carrying `answer`.
    pub fn seal(&self, responder: ServerResponse, (status, json): Answer) -> Result<Vec<u8>, ErrorReply> {
        // Framing indicator 1 (known-length response), status, one header field, content,
        // no trailer fields, zero padding (RFC 9292 section 3).
        let (name, value) = ("content-type", "application/json");
        let mut m = Vec::with_capacity(SEALED_REPLY_PAD);
        for n in [1, usize::from(status), 2 + name.len() + value.len(), name.len()] {
            put_varint(&mut m, n);
        }
        m.extend_from_slice(name.as_bytes());
        put_varint(&mut m, value.len());
        m.extend_from_slice(value.as_bytes());
        put_varint(&mut m, json.len());
        m.extend_from_slice(json.as_bytes());
        m.push(0);
        m.resize(m.len().div_ceil(SEALED_REPLY_PAD) * SEALED_REPLY_PAD, 0);
        responder.encapsulate(&m).map_err(|e| ErrorReply::new(ErrorCode::Internal, format!("cannot seal the answer: {e}")))
    }
}

fn put_varint(out: &mut Vec<u8>, n: usize) {
    let n = n as u64;
    match n {
        0..=0x3f => out.push(n as u8),
        0x40..=0x3fff => out.extend((n as u16 | 0x4000).to_be_bytes()),
        0x4000..=0x3fff_ffff => out.extend((n as u32 | 0x8000_0000).to_be_bytes()),
        _ => out.extend((n | 0xc000_0000_0000_0000).to_be_bytes()),
    }
}

/// A reader over the opened request, which never reads past its slice.
struct Bhttp<'a>(&'a [u8]);

impl<'a> Bhttp<'a> {
    /// A QUIC-style variable-length integer: the first byte's top two bits give its length.
    fn varint(&mut self) -> Option<u64> {
        let first = *self.0.first()?;
        let (bytes, rest) = self.0.split_at_checked(1 << (first >> 6))?;
        self.0 = rest;
        Some(bytes[1..].iter().fold(u64::from(first & 0x3f), |acc, &b| acc << 8 | u64::from(b)))
    }

    fn field(&mut self) -> Option<&'a [u8]> {
        let n = usize::try_from(self.varint()?).ok()?;
        let (bytes, rest) = self.0.split_at_checked(n)?;
        self.0 = rest;
        Some(bytes)
    }
}

/// The image (a range of `request`) and `top_k` of an inner request, or the inner error.
pub fn inner_request(request: &[u8]) -> Result<(Range<usize>, u16), Answer> {
    let bad = |m: &str| error_answer(400, "bad_inner_request", m);
    let mut r = Bhttp(request);
    if r.varint() != Some(0) {
        return Err(bad("the inner request must be a known-length BHTTP request (framing indicator 0)"));
    }
    let truncated = || bad("the inner BHTTP request is truncated");
    let method = r.field().ok_or_else(truncated)?;
    let (_scheme, _authority) = (r.field().ok_or_else(truncated)?, r.field().ok_or_else(truncated)?);
    let target = r.field().ok_or_else(truncated)?;
    let _headers = r.field().ok_or_else(truncated)?;
    // A known-length message may end before its content (RFC 9292 section 3.8).
    let content = if r.0.is_empty() { &r.0[..0] } else { r.field().ok_or_else(truncated)? };
    let (path, query) = match target.iter().position(|&b| b == b'?') {
        Some(i) => (&target[..i], Some(&target[i + 1..])),
        None => (target, None),
    };
    if path != b"/predict-secure/" && path != b"/predict-secure" {
        return Err(error_answer(404, "not_found", "the inner request's path must be /predict-secure/"));
    }
    if method != b"POST" {
        return Err(error_answer(405, "method_not_allowed", "the inner request's method must be POST"));
    }
    let top_k = match query {
        None | Some(b"") => 5,
        Some(q) => q
            .strip_prefix(b"top_k=")
            .and_then(|v| std::str::from_utf8(v).ok()?.parse::<u16>().ok())
            .filter(|k| (1..=MAX_TOP_K as u16).contains(k))
            .ok_or_else(|| error_answer(400, "bad_top_k", &format!("the only query is top_k=N, N from 1 to {MAX_TOP_K}")))?,
    };
    if content.is_empty() {
        return Err(error_answer(400, "not_an_image", "the inner request has no content: send a JPEG or PNG"));
    }
    let start = content.as_ptr() as usize - request.as_ptr() as usize;
    Ok((start..start + content.len(), top_k))
}

/// The inner status and JSON of a model server error, as the plaintext route gives them.
pub fn error_reply_answer(e: &ErrorReply) -> Answer {
    let (status, code) = match e.code() {
        Some(ErrorCode::BadImage) => (400, "bad_image"),
        Some(ErrorCode::UnsupportedFormat) => (415, "unsupported_format"),
        Some(ErrorCode::ImageTooLarge) => (413, "image_too_large"),
        Some(ErrorCode::Busy) => (503, "backend_busy"),
        Some(ErrorCode::ShuttingDown) => (503, "backend_shutting_down"),
        _ => (500, "backend_internal"),
    };
    error_answer(status, code, &e.message)
}

pub fn error_answer(status: u16, code: &str, message: &str) -> Answer {
    (status, format!(r#"{{"error":{},"code":"{code}"}}"#, json_str(message)))
}

/// The plaintext route's JSON for one classified image; times in microseconds.
pub fn result_answer(info: &ModelInfo, r: &ImageResult, parse_us: u64, backend_us: u64, total_us: u64) -> Answer {
    let label = |id: u32| info.labels.get(id as usize).map_or("", String::as_str);
    let top: Vec<String> = r
        .top
        .iter()
        .map(|c| format!(r#"{{"class_id":{},"label":{},"score":{}}}"#, c.class_id, json_str(label(c.class_id)), score(c.score)))
        .collect();
    let t = r.timings;
    let ms = |us: u64| us as f64 / 1000.0;
    let json = format!(
        concat!(
            r#"{{"class_ids":[{}],"predictions":[{{"top_k":[{}],"timings_us":{{"queue":{},"decode":{},"infer":{}}}}}],"#,
            r#""backend":"secure","model":{{"name":{},"sha256":"{}","synthetic":{}}},"#,
            r#""timings_ms":{{"parse":{},"backend":{},"total":{}}}}}"#
        ),
        r.top.first().map_or("null".into(), |c| c.class_id.to_string()),
        top.join(","),
        t.queue_us,
        t.decode_us,
        t.infer_us,
        json_str(&info.name),
        info.sha256_hex(),
        info.synthetic,
        ms(parse_us),
        ms(backend_us),
        ms(total_us),
    );
    (200, json)
}

/// Six decimals, as the plaintext route; NaN (a broken model) is null.
fn score(s: f32) -> String {
    let x = (f64::from(s) * 1e6).round() / 1e6;
    if x.is_finite() { format!("{x:?}") } else { "null".into() }
}

fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::frame::{ClassScore, StageTimings};

    fn info() -> ModelInfo {
        ModelInfo {
            name: "m \"quoted\"".into(),
            sha256: [7; 32],
            synthetic: false,
            input_shape: [1, 3, 224, 224],
            num_classes: 3,
            label_source: "test".into(),
            labels: vec!["zero".into(), "one\\two".into(), "Egyptian cat".into()],
        }
    }

    fn gateway(rotation: Duration) -> Gateway {
        Gateway::new(Nsm::None, rotation, info()).unwrap()
    }

    /// A known-length BHTTP request from the bhttp crate.
    fn inner(method: &str, path: &str, content: &[u8]) -> Vec<u8> {
        let mut m = bhttp::Message::request(method.into(), b"https".to_vec(), b"enclave".to_vec(), path.into());
        m.put_header("content-type", "image/jpeg");
        m.write_content(content);
        let mut out = Vec::new();
        m.write_bhttp(bhttp::Mode::KnownLength, &mut out).unwrap();
        out
    }

    fn seal_to(g: &Gateway, request: &[u8]) -> (Vec<u8>, ohttp::ClientResponse) {
        let client = ohttp::ClientRequest::from_encoded_config_list(&g.key_list()).unwrap();
        client.encapsulate(request).unwrap()
    }

    #[test]
    fn a_sealed_request_opens_to_its_image_and_the_answer_opens_padded() {
        let g = gateway(Duration::from_secs(3600));
        let image = b"\xff\xd8\xff not really a jpeg".to_vec();
        let (sealed, client) = seal_to(&g, &inner("POST", "/predict-secure/?top_k=3", &image));
        let (opened, responder) = g.open(&sealed).unwrap();
        let (range, top_k) = inner_request(&opened).unwrap();
        assert_eq!((&opened[range], top_k), (&image[..], 3));

        let result = ImageResult {
            timings: StageTimings { queue_us: 1, decode_us: 2, infer_us: 3 },
            top: vec![ClassScore { class_id: 2, score: 0.375 }, ClassScore { class_id: 1, score: f32::NAN }],
        };
        let answer = result_answer(&g.info, &result, 1500, 2000, 3500);
        let plain = client.decapsulate(&g.seal(responder, answer).unwrap()).unwrap();
        assert_eq!(plain.len() % SEALED_REPLY_PAD, 0);
        let m = bhttp::Message::read_bhttp(&mut std::io::Cursor::new(&plain[..])).unwrap();
        assert_eq!(m.control().status().map(|s| s.code()), Some(200));
        assert_eq!(m.header().get(b"content-type"), Some(&b"application/json"[..]));
        let json: serde_json::Value = serde_json::from_slice(m.content()).unwrap();
        assert_eq!(json["class_ids"], serde_json::json!([2]));
        assert_eq!(json["predictions"][0]["top_k"][0]["label"], "Egyptian cat");
        assert_eq!(json["predictions"][0]["top_k"][0]["score"], 0.375);
        assert_eq!(json["predictions"][0]["top_k"][1]["label"], "one\\two");
        assert_eq!(json["predictions"][0]["top_k"][1]["score"], serde_json::Value::Null);
        assert_eq!(json["model"]["name"], "m \"quoted\"");
        assert_eq!(json["timings_ms"]["total"], 3.5);
        assert_eq!(json["backend"], "secure");
    }

    #[test]
    fn every_answer_has_the_same_sealed_length() {
        let g = gateway(Duration::from_secs(3600));
        let mut lengths = std::collections::BTreeSet::new();
        let ok = ImageResult { timings: StageTimings::default(), top: vec![ClassScore { class_id: 0, score: 0.5 }] };
        for answer in [
            result_answer(&g.info, &ok, 1, 2, 3),
            error_answer(404, "not_found", "x"),
            error_reply_answer(&ErrorReply::new(ErrorCode::BadImage, "a longer message about a broken image")),
        ] {
            let (sealed, _) = seal_to(&g, &inner("POST", "/predict-secure/", b"x"));
            let (_, responder) = g.open(&sealed).unwrap();
            lengths.insert(g.seal(responder, answer).unwrap().len());
        }
        assert_eq!(lengths.len(), 1, "{lengths:?}");
    }

    #[test]
    fn bad_sealed_requests_have_their_errors() {
        let g = gateway(Duration::from_secs(3600));
        let (sealed, _) = seal_to(&g, &inner("POST", "/predict-secure/", b"x"));
        let code = |bytes: &[u8]| g.open(bytes).err().and_then(|e| e.code());
        let mut other_key = sealed.clone();
        other_key[0] = other_key[0].wrapping_add(7);
        assert_eq!(code(&other_key), Some(ErrorCode::KeyRejected));
        assert_eq!(code(&[]), Some(ErrorCode::KeyRejected));
        let mut bad_suite = sealed.clone();
        bad_suite[6] = 2; // AEAD AES-256-GCM, not offered
        assert_eq!(code(&bad_suite), Some(ErrorCode::KeyRejected));
        let mut bad_tag = sealed.clone();
        *bad_tag.last_mut().unwrap() ^= 1;
        assert_eq!(code(&bad_tag), Some(ErrorCode::SealedRequestInvalid));
        for n in 1..sealed.len() {
            assert!(g.open(&sealed[..n]).is_err(), "{n} bytes opened");
        }
    }

    #[test]
    fn a_rotated_key_opens_requests_until_the_next_rotation_only() {
        // Rotation zero: every use of the keys rotates them.
        let g = gateway(Duration::ZERO);
        let (sealed, _) = seal_to(&g, &inner("POST", "/predict-secure/", b"x"));
        assert!(g.open(&sealed).is_ok(), "the previous key still opens");
        assert_eq!(g.key_list().len(), 43, "the current key alone is offered");
        assert_eq!(g.open(&sealed).err().and_then(|e| e.code()), Some(ErrorCode::KeyRejected));
    }

    #[test]
    fn inner_requests_are_read_strictly() {
        let status = |r: &[u8]| inner_request(r).err();
        assert!(inner_request(&inner("POST", "/predict-secure", b"x")).is_ok());
        assert_eq!(inner_request(&inner("POST", "/predict-secure/?top_k=100", b"x")).unwrap().1, 100);
        for (method, path, content, want, code) in [
            ("GET", "/predict-secure/", &b"x"[..], 405, "method_not_allowed"),
            ("POST", "/predict-public/", b"x", 404, "not_found"),
            ("POST", "/predict-secure/?top_k=0", b"x", 400, "bad_top_k"),
            ("POST", "/predict-secure/?top_k=101", b"x", 400, "bad_top_k"),
            ("POST", "/predict-secure/?k=1", b"x", 400, "bad_top_k"),
            ("POST", "/predict-secure/", b"", 400, "not_an_image"),
        ] {
            let (s, json) = status(&inner(method, path, content)).unwrap();
            assert_eq!(s, want, "{method} {path}");
            assert!(json.contains(&format!(r#""code":"{code}""#)), "{json}");
        }
        let mut indeterminate = Vec::new();
        let mut m = bhttp::Message::request(b"POST".to_vec(), b"https".to_vec(), vec![], b"/predict-secure/".to_vec());
        m.write_content(b"x");
        m.write_bhttp(bhttp::Mode::IndeterminateLength, &mut indeterminate).unwrap();
        assert_eq!(status(&indeterminate).unwrap().0, 400);
        // Every prefix is an answer, never a panic or a read past the end.
        let whole = inner("POST", "/predict-secure/", b"image bytes");
        for n in 0..whole.len() {
            let _ = inner_request(&whole[..n]);
        }
    }

    #[test]
    fn json_strings_are_escaped() {
        assert_eq!(json_str("a\"b\\c\nd\u{1}é"), r#""a\"b\\c\u000ad\u0001é""#);
    }
}
