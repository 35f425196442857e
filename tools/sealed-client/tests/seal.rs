//! The seal module against an OHTTP gateway in this process (the `ohttp`
//! crate's server side): the sealed request opens to the BHTTP request the
//! contract describes, and answers written byte by byte as RFC 9292 lays
//! them out (as the enclave's own encoder does, not with the bhttp crate)
//! open and decode, zero padding included.

use ohttp::hpke::{Aead, Kdf, Kem};
use ohttp::{KeyConfig as GatewayKey, Server, SymmetricSuite};
use sealed_client::seal::{self, decode_response, InnerResponse, SealError};
use sealed_client::verify::KeyConfig;

fn gateway(key_id: u8) -> (Server, KeyConfig) {
    let config = GatewayKey::new(
        key_id,
        Kem::X25519Sha256,
        vec![SymmetricSuite::new(Kdf::HkdfSha256, Aead::Aes128Gcm)],
    )
    .unwrap();
    let encoded = config.encode().unwrap();
    assert_eq!(encoded.len(), 41);
    (Server::new(config).unwrap(), KeyConfig::parse(&encoded).unwrap())
}

/// A QUIC variable-length integer (RFC 9000 section 16), as BHTTP uses.
fn varint(out: &mut Vec<u8>, n: u64) {
    match n {
        0..=63 => out.push(n as u8),
        64..=16383 => out.extend_from_slice(&(0x4000 | n as u16).to_be_bytes()),
        _ => out.extend_from_slice(&(0x8000_0000 | n as u32).to_be_bytes()),
    }
}

/// A known-length BHTTP response: status, `content-type`, body, no
/// trailers, zeros up to a multiple of `pad_to`.
fn bhttp_response(status: u16, content_type: &str, body: &[u8], pad_to: usize) -> Vec<u8> {
    let mut fields = Vec::new();
    varint(&mut fields, 12);
    fields.extend_from_slice(b"content-type");
    varint(&mut fields, content_type.len() as u64);
    fields.extend_from_slice(content_type.as_bytes());
    let mut out = vec![0x01];
    varint(&mut out, u64::from(status));
    varint(&mut out, fields.len() as u64);
    out.extend_from_slice(&fields);
    varint(&mut out, body.len() as u64);
    out.extend_from_slice(body);
    out.push(0); // empty trailer section
    let padded = out.len().div_ceil(pad_to) * pad_to;
    out.resize(padded, 0);
    out
}

#[test]
fn inner_request_is_the_contracts_bhttp() {
    let image = b"\xff\xd8\xff\xe0 not really a JPEG";
    let bytes = seal::inner_request(image, Some(3));
    // Framing 0 (known-length request), then method, scheme, authority, path.
    let mut expected = vec![0x00, 4];
    expected.extend_from_slice(b"POST");
    expected.push(5);
    expected.extend_from_slice(b"https");
    expected.push(0);
    let path = b"/predict-secure/?top_k=3";
    expected.push(path.len() as u8);
    expected.extend_from_slice(path);
    expected.push(0); // no header fields
    expected.push(image.len() as u8);
    expected.extend_from_slice(image);
    expected.push(0); // no trailers
    assert_eq!(bytes, expected);

    let without = seal::inner_request(b"x", None);
    let message = bhttp::Message::read_bhttp(&mut std::io::Cursor::new(&without)).unwrap();
    assert_eq!(message.control().path(), Some(&b"/predict-secure/"[..]));
}

#[test]
fn a_sealed_request_opens_at_the_gateway_and_its_answer_opens_at_the_client() {
    let (server, key) = gateway(9);
    let image = vec![0xab; 200_000];
    let sealed = seal::seal(&key, &image, Some(5)).unwrap();
    // message/ohttp-req: key id, KEM, KDF, AEAD, then the encapsulated key.
    assert_eq!(&sealed.request[..7], &[9, 0x00, 0x20, 0x00, 0x01, 0x00, 0x01]);

    let (inner, responder) = server.decapsulate(&sealed.request).unwrap();
    let request = bhttp::Message::read_bhttp(&mut std::io::Cursor::new(&inner)).unwrap();
    assert_eq!(request.control().method(), Some(&b"POST"[..]));
    assert_eq!(request.control().path(), Some(&b"/predict-secure/?top_k=5"[..]));
    assert_eq!(request.content(), &image[..]);

    let json = br#"{"class_ids": [285], "backend": "secure"}"#;
    let answer = bhttp_response(200, "application/json", json, 4096);
    assert_eq!(answer.len(), 4096);
    let encapsulated = responder.encapsulate(&answer).unwrap();
    let opened = sealed.open(&encapsulated).unwrap();
    assert_eq!(
        opened,
        InnerResponse {
            status: 200,
            content_type: Some(b"application/json".to_vec()),
            body: json.to_vec()
        }
    );
}

#[test]
fn an_error_answer_keeps_its_status() {
    let (server, key) = gateway(1);
    let sealed = seal::seal(&key, b"GIF89a", None).unwrap();
    let (_, responder) = server.decapsulate(&sealed.request).unwrap();
    let json = br#"{"error": "not JPEG or PNG", "code": "unsupported_format"}"#;
    let encapsulated = responder
        .encapsulate(&bhttp_response(415, "application/json", json, 4096))
        .unwrap();
    let opened = sealed.open(&encapsulated).unwrap();
    assert_eq!((opened.status, opened.body.as_slice()), (415, &json[..]));
}

#[test]
fn an_altered_or_foreign_answer_does_not_open() {
    let (server, key) = gateway(1);
    let sealed = seal::seal(&key, b"image", None).unwrap();
    let (_, responder) = server.decapsulate(&sealed.request).unwrap();
    let mut encapsulated = responder
        .encapsulate(&bhttp_response(200, "application/json", b"{}", 4096))
        .unwrap();
    let last = encapsulated.len() - 1;
    encapsulated[last] ^= 1;
    let err = sealed.open(&encapsulated).unwrap_err();
    assert!(matches!(err, SealError::Open(_)), "{err}");
    assert!(
        err.to_string()
            .contains("not from the enclave holding the attested key"),
        "{err}"
    );

    // The answer to another request (another HPKE context) does not open either.
    let first = seal::seal(&key, b"one", None).unwrap();
    let second = seal::seal(&key, b"two", None).unwrap();
    let (_, responder) = server.decapsulate(&second.request).unwrap();
    let answer = responder
        .encapsulate(&bhttp_response(200, "application/json", b"{}", 4096))
        .unwrap();
    assert!(matches!(first.open(&answer), Err(SealError::Open(_))));
    assert!(matches!(second.open(&answer[..10]), Err(SealError::Open(_))));
}

#[test]
fn a_key_of_another_gateway_cannot_open_the_request() {
    let (_, key) = gateway(1);
    let (other, _) = gateway(1);
    let sealed = seal::seal(&key, b"image", None).unwrap();
    assert!(other.decapsulate(&sealed.request).is_err());
}

#[test]
fn response_decoding() {
    // Padded or not, the same answer.
    let plain = bhttp_response(200, "application/json", b"{\"a\":1}", 1);
    let padded = bhttp_response(200, "application/json", b"{\"a\":1}", 4096);
    assert_eq!(decode_response(&plain).unwrap(), decode_response(&padded).unwrap());
    // Padding to a larger multiple, and an answer without a trailer section.
    let mut no_trailer = plain.clone();
    no_trailer.pop();
    assert_eq!(decode_response(&no_trailer).unwrap().body, b"{\"a\":1}");

    let bad = |bytes: &[u8]| match decode_response(bytes) {
        Err(SealError::BadInnerResponse(what)) => what,
        other => panic!("{other:?}"),
    };
    let mut nonzero = padded.clone();
    nonzero[4000] = 1;
    assert!(bad(&nonzero).starts_with("non-zero bytes after the message"));
    let mut indeterminate = padded.clone();
    indeterminate[0] = 3;
    assert_eq!(
        bad(&indeterminate),
        "framing indicator 3, not 1 (known-length response)"
    );
    let mut request = seal::inner_request(b"x", None);
    assert_eq!(bad(&request), "framing indicator 0, not 1 (known-length response)");
    request[0] = 1;
    assert!(!bad(&request).is_empty());
    assert_eq!(bad(&[]), "empty");
    // Truncated inside the body.
    assert!(!bad(&plain[..plain.len() - 4]).is_empty());
    // An informational 103 before the final answer.
    let mut early = vec![0x01, 0x40, 103, 0x00];
    early.extend_from_slice(&plain[1..]);
    assert_eq!(bad(&early), "informational (1xx) responses before the answer");
}
