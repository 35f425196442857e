//! Fuzz harness bodies for the parent's request parsing (the study API's [`parse_request_round_trip`]
//! and the OIP V2 [`parse_infer_round_trip`], documented at its definition).
//!
//! What it does: [`parse_request_round_trip`] takes arbitrary bytes, splits
//! them into what a client controls (a `Content-Type`, a query string and a
//! body, see [`split_input`]), runs [`parse_request`] and checks its
//! promises. The same function runs under stable `cargo test` (over
//! `fuzz/corpus/parse_request/` and thousands of generated cases, see
//! `parent/tests/fuzz_corpus.rs`) and under cargo-fuzz (`fuzz/`).
//!
//! The promises checked, for every input:
//! - no panic, whatever the bytes;
//! - a refusal is a 400, 413 or 415 with a non-empty code, and its message
//!   is short (it never quotes the request; 300 bytes is far above any of
//!   our messages and far below any body worth leaking);
//! - an accepted request has 1..=`MAX_IMAGES` images, each starting with
//!   JPEG or PNG magic, a `top_k` in range, and no more image bytes than the
//!   body had (decoding never grows data);
//! - round trip: the accepted request, written back as the study's JSON with
//!   its `top_k` in the query, parses to the same request; and as an `Infer`
//!   frame it encodes and decodes to the same request (what the parent
//!   parses is exactly what the model server receives).
//!
//! Input layout (so that a fuzzer can reach every field with small inputs):
//!
//! ```text
//!  flags:u8  [ct_len:u8 ct:[u8;ct_len]]  [q_len:u8 q:[u8;q_len]]  body:rest
//!  bit 0 of flags: a Content-Type is present; bit 1: a query is present
//! ```
//! A field cut short by the end of the input is taken as it is; header and
//! query bytes that are not UTF-8 are replaced (tiny_http hands the parent
//! `&str`s, so it never sees invalid UTF-8 there).

use base64::Engine;
use serde_json::json;
use shared::frame::{Frame, Message};
use shared::limits::{MAX_IMAGES, MAX_TOP_K};

use crate::api::parse_request;

/// The client-controlled parts of a request, as decoded from fuzz input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FuzzInput {
    pub content_type: Option<String>,
    pub query: Option<String>,
    pub body: Vec<u8>,
}

fn take<'a>(data: &mut &'a [u8]) -> &'a [u8] {
    let Some((&len, rest)) = data.split_first() else {
        return &[];
    };
    let n = usize::from(len).min(rest.len());
    let (field, rest) = rest.split_at(n);
    *data = rest;
    field
}

/// Splits fuzz bytes into a Content-Type, a query and a body (layout above).
pub fn split_input(data: &[u8]) -> FuzzInput {
    let Some((&flags, mut rest)) = data.split_first() else {
        return FuzzInput { content_type: None, query: None, body: Vec::new() };
    };
    let content_type = (flags & 1 != 0).then(|| String::from_utf8_lossy(take(&mut rest)).into_owned());
    let query = (flags & 2 != 0).then(|| String::from_utf8_lossy(take(&mut rest)).into_owned());
    FuzzInput { content_type, query, body: rest.to_vec() }
}

/// The inverse of [`split_input`], for writing seeds and generating cases.
/// Fields longer than 255 bytes are cut to 255.
pub fn join_input(content_type: Option<&str>, query: Option<&str>, body: &[u8]) -> Vec<u8> {
    let flags = u8::from(content_type.is_some()) | (u8::from(query.is_some()) << 1);
    let mut out = vec![flags];
    for field in [content_type, query].into_iter().flatten() {
        let b = &field.as_bytes()[..field.len().min(255)];
        out.push(b.len() as u8); // at most 255: cut above
        out.extend_from_slice(b);
    }
    out.extend_from_slice(body);
    out
}

/// The harness body: see the module documentation for what it checks.
pub fn parse_request_round_trip(data: &[u8]) {
    let input = split_input(data);
    let result = parse_request(input.content_type.as_deref(), &input.body, input.query.as_deref());
    let req = match result {
        Err(e) => {
            assert!(matches!(e.status(), 400 | 413 | 415), "unexpected status {} for {e:?}", e.status());
            assert!(!e.code().is_empty());
            let message = e.to_string();
            assert!(message.len() <= 300, "error message of {} bytes: {message}", message.len());
            assert_eq!(e.body()["code"], e.code());
            return;
        }
        Ok(req) => req,
    };
    assert!((1..=MAX_IMAGES).contains(&req.images.len()), "{} images accepted", req.images.len());
    assert!((1..=MAX_TOP_K).contains(&usize::from(req.top_k)), "top_k {} accepted", req.top_k);
    let total: usize = req.images.iter().map(Vec::len).sum();
    assert!(total <= input.body.len(), "{total} image bytes from a {}-byte body", input.body.len());
    for img in &req.images {
        assert!(img.starts_with(&[0xFF, 0xD8, 0xFF]) || img.starts_with(b"\x89PNG\r\n\x1a\n"), "accepted a non-image");
    }

    // Round trip 1: the study's JSON, re-encoded, parses to the same request.
    let b64 = base64::engine::general_purpose::STANDARD;
    let list: Vec<String> = req.images.iter().map(|i| b64.encode(i)).collect();
    let again_body = json!({ "images": list }).to_string();
    let query = format!("top_k={}", req.top_k);
    let again = parse_request(Some("application/json"), again_body.as_bytes(), Some(&query));
    assert_eq!(again.as_ref(), Ok(&req), "re-encoded JSON parsed differently");

    // Round trip 2: the frame the parent would send decodes to the same request.
    let frame = Frame::new(1, Message::Infer(req.clone()));
    let bytes = frame.encode().expect("an accepted request must fit in a frame");
    let decoded = Frame::decode(&bytes).expect("an encoded Infer frame must decode");
    assert_eq!(decoded.message, Message::Infer(req), "the Infer frame changed the request");
}

/// The Open Inference Protocol V2 request parser ([`crate::v2::parse_infer`]) under arbitrary
/// bytes. Input layout:
///
/// ```text
///  flags:u8  [hl_len:u8 hl:[u8;hl_len]]  body:rest
///  bit 0 of flags: an Inference-Header-Content-Length is present; bit 1: Content-Type
///  application/octet-stream (else application/json); bit 2: Content-Encoding gzip
/// ```
///
/// Promises: no panic; a refusal is 400, 413 or 415 with a non-empty code and a message under
/// 600 bytes; an accepted request has 1..=`MAX_IMAGES` images, each with JPEG or PNG magic, no
/// more image bytes than the body had, one output or the two forms of it (never one form twice,
/// never both binary), a classification `k` in `1..=MAX_TOP_K`; and it round-trips: written
/// back in the binary form, its outputs listed, it parses to the same request.
pub fn parse_infer_round_trip(data: &[u8]) {
    use crate::v2::{parse_infer, Form};
    let Some((&flags, mut rest)) = data.split_first() else { return };
    let mut header_len = None;
    if flags & 1 != 0 {
        let n = rest.first().copied().unwrap_or(0) as usize;
        let field = rest.get(1..).unwrap_or(&[]);
        let n = n.min(field.len());
        header_len = Some(String::from_utf8_lossy(&field[..n]).into_owned());
        rest = &field[n..];
    }
    let ct = if flags & 2 != 0 { "application/octet-stream" } else { "application/json" };
    let ce = (flags & 4 != 0).then_some("gzip");
    match parse_infer(Some(ct), ce, header_len.as_deref(), rest) {
        Err(e) => {
            assert!(matches!(e.status, 400 | 413 | 415), "status {} for {e:?}", e.status);
            assert!(!e.code.is_empty() && e.message.len() < 600, "{e:?}");
        }
        Ok(req) => {
            let images = &req.images;
            assert!((1..=MAX_IMAGES).contains(&images.len()));
            let outputs = &req.outputs;
            assert!((1..=2).contains(&outputs.len()), "{outputs:?}");
            if let [a, b] = outputs.as_slice() {
                assert!(!(a.binary && b.binary), "{outputs:?}");
                assert!(matches!((a.form, b.form), (Form::Full, Form::Classification(_)) | (Form::Classification(_), Form::Full)), "{outputs:?}");
            }
            for o in outputs {
                if let Form::Classification(k) = o.form {
                    assert!((1..=MAX_TOP_K).contains(&usize::from(k)), "classification {k} accepted");
                }
            }
            assert!(images.iter().map(Vec::len).sum::<usize>() <= rest.len());
            for i in images {
                assert!(i.starts_with(&[0xFF, 0xD8, 0xFF]) || i.starts_with(b"\x89PNG\r\n\x1a\n"));
            }
            let mut tail = Vec::new();
            for i in images {
                tail.extend_from_slice(&(i.len() as u32).to_le_bytes());
                tail.extend_from_slice(i);
            }
            let header = json!({
                "id": req.id,
                "inputs": [{ "name": "image", "datatype": "BYTES", "shape": [images.len()], "parameters": { "binary_data_size": tail.len() } }],
                "outputs": outputs.iter().map(|o| match o.form {
                    Form::Full => json!({ "name": "probabilities", "parameters": { "binary_data": o.binary } }),
                    Form::Classification(k) => json!({ "name": "probabilities", "parameters": { "classification": k, "binary_data": o.binary } }),
                }).collect::<Vec<_>>(),
            });
            let mut header = header;
            if req.id.is_none() {
                header.as_object_mut().map(|o| o.remove("id"));
            }
            let mut body = header.to_string().into_bytes();
            let n = body.len().to_string();
            body.extend_from_slice(&tail);
            let again = parse_infer(Some("application/octet-stream"), None, Some(&n), &body).expect("the binary form of an accepted request");
            assert_eq!(again, req);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_and_join_are_inverse() {
        let cases = [
            (None, None, &b""[..]),
            (Some("application/json"), None, &b"{}"[..]),
            (None, Some("top_k=3"), &b"\xff\xd8\xff"[..]),
            (Some("image/png"), Some(""), &b"\x89PNG"[..]),
        ];
        for (ct, q, body) in cases {
            let joined = join_input(ct, q, body);
            let split = split_input(&joined);
            assert_eq!(split, FuzzInput { content_type: ct.map(String::from), query: q.map(String::from), body: body.to_vec() });
        }
        // Cut short: fields are taken as far as they go.
        assert_eq!(split_input(&[3, 10, b'a']).content_type.as_deref(), Some("a"));
        assert_eq!(split_input(&[]).body, Vec::<u8>::new());
    }

    #[test]
    fn harness_accepts_good_and_bad_input() {
        let jpeg = [0xFF, 0xD8, 0xFF, 0xE0, 1, 2];
        parse_request_round_trip(&join_input(Some("image/jpeg"), Some("top_k=7"), &jpeg));
        let body = json!({ "images": ["/9j/4AEC"] }).to_string();
        parse_request_round_trip(&join_input(Some("application/json"), None, body.as_bytes()));
        parse_request_round_trip(&join_input(Some("application/json"), None, b"[[[["));
        parse_request_round_trip(b"");
    }
}
