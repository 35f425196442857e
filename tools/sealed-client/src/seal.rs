//! The sealed request (docs/SEALED.md "The inner message"): a known-length
//! Binary HTTP request (RFC 9292) `POST /predict-secure/?top_k=N` whose content
//! is the raw image, encapsulated with Oblivious HTTP (RFC 9458) to the
//! attested key; and the opening of the answer, a known-length BHTTP response
//! padded with zeros to a multiple of 4096 bytes.
//!
//! Both use the `bhttp` and `ohttp` crates (by the RFCs' author), while the
//! enclave has its own small BHTTP parser and encoder: a useful cross-check.

use std::fmt;
use std::io::Cursor;

use bhttp::{Message, Mode};

use crate::verify::KeyConfig;

/// The inner request's path.
pub const PATH: &str = "/predict-secure/";
/// The inner request's method.
pub const METHOD: &str = "POST";

/// Why a request could not be sealed or an answer opened.
#[derive(Debug)]
pub enum SealError {
    /// The OHTTP layer refused the key or could not seal.
    Seal(String),
    /// The answer could not be decrypted: not from the holder of the attested
    /// key, or corrupted on the way.
    Open(String),
    /// The decrypted answer is not a known-length BHTTP response.
    BadInnerResponse(String),
}

impl fmt::Display for SealError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SealError::Seal(e) => write!(f, "cannot seal the request: {e}"),
            SealError::Open(e) => write!(
                f,
                "cannot open the answer ({e}): it is not from the enclave holding the attested key, or it was altered"
            ),
            SealError::BadInnerResponse(e) => write!(f, "the enclave's answer is not a valid BHTTP response: {e}"),
        }
    }
}

impl std::error::Error for SealError {}

/// The inner request, BHTTP known-length: `POST /predict-secure/[?top_k=N]`,
/// scheme `https`, empty authority (the enclave ignores both; an empty one
/// tells nothing about where the client sent it), no header fields, the image
/// as content, no trailers.
pub fn inner_request(image: &[u8], top_k: Option<u8>) -> Vec<u8> {
    let path = match top_k {
        Some(k) => format!("{PATH}?top_k={k}"),
        None => PATH.to_string(),
    };
    let mut message = Message::request(
        METHOD.as_bytes().to_vec(),
        b"https".to_vec(),
        Vec::new(),
        path.into_bytes(),
    );
    message.write_content(image);
    let mut out = Vec::with_capacity(image.len() + 64);
    // Writing into a Vec cannot fail, and the lengths are far below the
    // varint limit (2^62); map the impossible error rather than panic.
    if message.write_bhttp(Mode::KnownLength, &mut out).is_err() {
        out.clear();
    }
    out
}

/// A request sealed to one key, and what opens its answer (single use).
pub struct Sealed {
    /// The `message/ohttp-req` body.
    pub request: Vec<u8>,
    opener: ohttp::ClientResponse,
}

/// Seals `image` (and `top_k`) to `key`.
pub fn seal(key: &KeyConfig, image: &[u8], top_k: Option<u8>) -> Result<Sealed, SealError> {
    let inner = inner_request(image, top_k);
    if inner.is_empty() {
        return Err(SealError::Seal("cannot encode the BHTTP request".into()));
    }
    let client =
        ohttp::ClientRequest::from_encoded_config(key.encoded()).map_err(|e| SealError::Seal(e.to_string()))?;
    let (request, opener) = client.encapsulate(&inner).map_err(|e| SealError::Seal(e.to_string()))?;
    Ok(Sealed { request, opener })
}

impl Sealed {
    /// Decrypts the `message/ohttp-res` body and decodes the inner response.
    pub fn open(self, encapsulated: &[u8]) -> Result<InnerResponse, SealError> {
        let bhttp = self
            .opener
            .decapsulate(encapsulated)
            .map_err(|e| SealError::Open(e.to_string()))?;
        decode_response(&bhttp)
    }
}

/// The enclave's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InnerResponse {
    pub status: u16,
    pub content_type: Option<Vec<u8>>,
    pub body: Vec<u8>,
}

/// Decodes a known-length BHTTP response followed by zero padding (RFC 9292
/// section 3.8). Refused: another framing indicator, informational (1xx)
/// responses, and anything but zeros after the message.
pub fn decode_response(bytes: &[u8]) -> Result<InnerResponse, SealError> {
    let bad = |what: String| SealError::BadInnerResponse(what);
    match bytes.first() {
        Some(1) => {}
        Some(other) => return Err(bad(format!("framing indicator {other}, not 1 (known-length response)"))),
        None => return Err(bad("empty".into())),
    }
    let mut cursor = Cursor::new(bytes);
    let message = Message::read_bhttp(&mut cursor).map_err(|e| bad(e.to_string()))?;
    let end = usize::try_from(cursor.position()).unwrap_or(usize::MAX);
    let padding = bytes.get(end..).unwrap_or(&[]);
    if padding.iter().any(|&b| b != 0) {
        return Err(bad(format!("non-zero bytes after the message (at byte {end})")));
    }
    if !message.informational().is_empty() {
        return Err(bad("informational (1xx) responses before the answer".into()));
    }
    let status = message
        .control()
        .status()
        .ok_or_else(|| bad("not a response".into()))?
        .code();
    Ok(InnerResponse {
        status,
        content_type: message.header().get(b"content-type").map(<[u8]>::to_vec),
        body: message.content().to_vec(),
    })
}
