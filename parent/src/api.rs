//! The HTTP API's request decoding and reply encoding, free of any socket.
//!
//! What it does: turns a prediction request's body into an
//! [`InferRequest`] (JSON `{"images": ["<base64>", ...]}` as the study's
//! clients send it, or one raw JPEG/PNG body), and a backend's
//! [`InferReply`] into the reply JSON and its `Server-Timing` header.
//! Every way a request can be wrong is one [`ApiError`] variant, which knows
//! its HTTP status and its stable `code` string; its Display text is the
//! `error` message the client reads.
//!
//! Why it is built this way: everything here is a pure function of bytes, so
//! every malformed input is a unit test asserting the exact variant. A JSON
//! body is walked once by a hand-written serde visitor (`Walk`) that
//! borrows the base64 strings from the body and builds nothing else, so a
//! body costs its own size plus its decoded images, whatever it contains
//! (issue 16: a 50 MiB body padded with `[0,0,...]`, parsed into a
//! `serde_json::Value` first, raised the parent's peak RSS to 853 MiB; now
//! 53 MiB). The model server never sees JSON or base64; it gets decoded
//! image bytes only.
//!
//! What it refuses (always with a status, never a panic):
//! - a body that is not JSON, JSON without an `images` array, a field other
//!   than `images`, an entry that is not a string, base64 outside the standard alphabet (padding may be
//!   omitted; URL-safe `-`/`_`, whitespace or line breaks are refused);
//! - an empty batch, or more than [`MAX_IMAGES`] images (413);
//! - bytes that are not an image (400) or an image in a format other than
//!   JPEG or PNG (415), checked by their magic bytes before any frame is sent;
//! - `top_k` outside `1..=MAX_TOP_K`.
//!
//! Error messages never quote the request's content (no base64, no bytes), so
//! they are safe to show; they are never logged anyway.

use std::borrow::Cow;
use std::fmt;

use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::{json, Value};
use shared::frame::{ErrorCode, InferReply, InferRequest, ModelInfo};
use shared::limits::{
    HTTP_BODY_GRACE, HTTP_BODY_MIN_RATE, MAX_HTTP_HEADERS, MAX_HTTP_HEADER_BYTES, MAX_IMAGES, MAX_NONCE_LEN, MAX_TOP_K,
};

use crate::backend::BackendError;

/// `top_k` when the query string does not say.
pub const DEFAULT_TOP_K: u16 = 5;

/// Standard alphabet; padding optional (some clients strip it): base64's
/// `Indifferent` mode also takes *fewer* `=` than canonical (`4A=` for
/// `4A==`), but never more, and never in the middle.
pub(crate) const B64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Everything that can go wrong with an HTTP request, by cause.
#[derive(Debug, Clone, PartialEq)]
pub enum ApiError {
    NotFound,
    MethodNotAllowed { allow: &'static str },
    /// A POST without Content-Length (and not chunked).
    LengthRequired,
    /// A body over the limit, in bytes.
    BodyTooLarge { limit: usize },
    /// The body could not be read (the client went away, or sent nothing for
    /// the socket's idle timeout).
    BodyRead,
    /// The body arrived slower than [`HTTP_BODY_MIN_RATE`] on average once
    /// [`HTTP_BODY_GRACE`] had passed (a trickling client).
    BodyTimeout,
    /// More than [`MAX_HTTP_HEADERS`] header lines or [`MAX_HTTP_HEADER_BYTES`] bytes of headers.
    HeadersTooLarge,
    /// The body's framing is ambiguous (RFC 9112, section 6.3): why, in fixed words.
    BadFraming(&'static str),
    UnsupportedMediaType,
    BadTopK,
    BadJson(String),
    MissingImages,
    /// A field other than `images` in the JSON body.
    UnknownField,
    ImagesNotArray,
    ImageNotString(usize),
    BadBase64 { index: usize, reason: String },
    EmptyBatch,
    TooManyImages(usize),
    NotAnImage(usize),
    UnsupportedImageFormat { index: usize, format: &'static str },
    /// `/attestation` without a usable `nonce`: why, in fixed words.
    BadNonce(&'static str),
    /// A sealed route's body that is not `message/ohttp-req`.
    NotSealedMediaType,
    /// A sealed request with an empty body (no frame can carry it).
    EmptySealedRequest,
    /// A plaintext secure request while the parent runs with `--sealed-only`.
    SealedOnly,
    Backend(BackendError),
}

/// The problem type of RFC 9458 section 5.3: the gateway does not hold the
/// key (id or HPKE suite) a request was sealed to.
pub const OHTTP_KEY_PROBLEM: &str = "https://iana.org/assignments/http-problem-types#ohttp-key";

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApiError::NotFound => write!(f, "no such endpoint (try POST /predict-secure/ or /predict-public/)"),
            ApiError::MethodNotAllowed { allow } => write!(f, "method not allowed here (allowed: {allow})"),
            ApiError::LengthRequired => write!(f, "a POST needs a Content-Length header (or chunked encoding)"),
            ApiError::BodyTooLarge { limit } => write!(f, "request body is over the limit of {limit} bytes"),
            ApiError::BodyRead => write!(f, "the request body could not be read"),
            ApiError::BodyTimeout => write!(
                f,
                "the request body arrived too slowly (under {HTTP_BODY_MIN_RATE} bytes/s after {} s)",
                HTTP_BODY_GRACE.as_secs()
            ),
            ApiError::BadFraming(why) => write!(f, "the request's body framing is ambiguous: {why}"),
            ApiError::HeadersTooLarge => write!(
                f,
                "request headers over the limit of {MAX_HTTP_HEADERS} lines or {MAX_HTTP_HEADER_BYTES} bytes"
            ),
            ApiError::UnsupportedMediaType => write!(
                f,
                "Content-Type must be application/json ({{\"images\": [base64, ...]}}), image/jpeg or image/png"
            ),
            ApiError::BadTopK => write!(f, "top_k must be a whole number from 1 to {MAX_TOP_K}"),
            ApiError::BadJson(why) => write!(f, "body is not valid JSON: {why}"),
            ApiError::MissingImages => write!(f, "JSON body has no \"images\" field"),
            ApiError::UnknownField => write!(f, "JSON body has a field other than \"images\" (the only one accepted)"),
            ApiError::ImagesNotArray => write!(f, "\"images\" must be an array of base64 strings"),
            ApiError::ImageNotString(i) => write!(f, "images[{i}] is not a string"),
            ApiError::BadBase64 { index, reason } => write!(f, "images[{index}] is not valid base64: {reason}"),
            ApiError::EmptyBatch => write!(f, "no images in the request"),
            ApiError::TooManyImages(n) => write!(f, "{n} images in one request, over the limit of {MAX_IMAGES}"),
            ApiError::NotAnImage(i) => write!(f, "images[{i}] is not an image (expected JPEG or PNG bytes)"),
            ApiError::UnsupportedImageFormat { index, format } => {
                write!(f, "images[{index}] is {format}; only JPEG and PNG are supported")
            }
            ApiError::BadNonce(why) => write!(
                f,
                "nonce must be 1 to {MAX_NONCE_LEN} bytes as 2 to {} hex digits (?nonce=...): {why}",
                2 * MAX_NONCE_LEN
            ),
            ApiError::NotSealedMediaType => write!(f, "Content-Type must be message/ohttp-req (a sealed request)"),
            ApiError::EmptySealedRequest => write!(f, "the sealed request is empty"),
            ApiError::SealedOnly => write!(
                f,
                "this server accepts secure requests sealed only: send the request encapsulated with Oblivious \
                 HTTP, Content-Type: message/ohttp-req, to /.well-known/ohttp-gateway or /predict-secure/ \
                 (docs/SEALED.md); plaintext is served on the public routes only"
            ),
            ApiError::Backend(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for ApiError {}

impl ApiError {
    pub fn status(&self) -> u16 {
        match self {
            ApiError::NotFound => 404,
            ApiError::MethodNotAllowed { .. } => 405,
            ApiError::LengthRequired => 411,
            ApiError::BodyTimeout => 408,
            ApiError::HeadersTooLarge => 431,
            ApiError::BodyTooLarge { .. } | ApiError::TooManyImages(_) => 413,
            ApiError::UnsupportedMediaType | ApiError::UnsupportedImageFormat { .. } | ApiError::NotSealedMediaType => 415,
            ApiError::SealedOnly => 403,
            ApiError::BodyRead
            | ApiError::BadFraming(_)
            | ApiError::BadTopK
            | ApiError::BadJson(_)
            | ApiError::MissingImages
            | ApiError::UnknownField
            | ApiError::ImagesNotArray
            | ApiError::ImageNotString(_)
            | ApiError::BadBase64 { .. }
            | ApiError::EmptyBatch
            | ApiError::NotAnImage(_)
            | ApiError::BadNonce(_)
            | ApiError::EmptySealedRequest => 400,
            ApiError::Backend(e) => match e {
                BackendError::Unreachable(_) | BackendError::BackingOff | BackendError::PoolExhausted => 503,
                BackendError::Deadline => 504,
                BackendError::Remote(r) => match r.code() {
                    Some(ErrorCode::Busy | ErrorCode::ShuttingDown | ErrorCode::AttestationUnavailable) => 503,
                    Some(ErrorCode::BadImage | ErrorCode::KeyRejected | ErrorCode::SealedRequestInvalid) => 400,
                    Some(ErrorCode::UnsupportedFormat) => 415,
                    Some(ErrorCode::ImageTooLarge) => 413,
                    _ => 502,
                },
                BackendError::ConnectionLost(_)
                | BackendError::Protocol(_)
                | BackendError::IdMismatch { .. }
                | BackendError::UnexpectedReply(_)
                | BackendError::BadResult(_) => 502,
            },
        }
    }

    /// The stable, machine-readable code of the JSON error body.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::NotFound => "not_found",
            ApiError::MethodNotAllowed { .. } => "method_not_allowed",
            ApiError::LengthRequired => "length_required",
            ApiError::BodyTooLarge { .. } => "body_too_large",
            ApiError::BodyRead => "body_read_failed",
            ApiError::BodyTimeout => "body_timeout",
            ApiError::HeadersTooLarge => "headers_too_large",
            ApiError::BadFraming(_) => "bad_framing",
            ApiError::UnsupportedMediaType => "unsupported_media_type",
            ApiError::BadTopK => "bad_top_k",
            ApiError::BadJson(_) => "bad_json",
            ApiError::MissingImages => "missing_images",
            ApiError::UnknownField => "unknown_field",
            ApiError::ImagesNotArray => "images_not_array",
            ApiError::ImageNotString(_) => "image_not_string",
            ApiError::BadBase64 { .. } => "bad_base64",
            ApiError::EmptyBatch => "empty_batch",
            ApiError::TooManyImages(_) => "too_many_images",
            ApiError::NotAnImage(_) => "not_an_image",
            ApiError::UnsupportedImageFormat { .. } => "unsupported_format",
            ApiError::BadNonce(_) => "bad_nonce",
            ApiError::NotSealedMediaType => "unsupported_media_type",
            ApiError::EmptySealedRequest => "sealed_request_invalid",
            ApiError::SealedOnly => "sealed_only",
            ApiError::Backend(e) => match e {
                BackendError::Unreachable(_) | BackendError::BackingOff => "backend_unavailable",
                BackendError::PoolExhausted => "backend_busy",
                BackendError::Deadline => "backend_timeout",
                BackendError::ConnectionLost(_) => "backend_connection_lost",
                BackendError::Remote(r) => match r.code() {
                    Some(ErrorCode::Busy) => "backend_busy",
                    Some(ErrorCode::ShuttingDown) => "backend_shutting_down",
                    Some(ErrorCode::BadImage) => "bad_image",
                    Some(ErrorCode::UnsupportedFormat) => "unsupported_format",
                    Some(ErrorCode::ImageTooLarge) => "image_too_large",
                    Some(ErrorCode::Internal) => "backend_internal",
                    Some(ErrorCode::KeyRejected) => "key_rejected",
                    Some(ErrorCode::SealedRequestInvalid) => "sealed_request_invalid",
                    Some(ErrorCode::AttestationUnavailable) => "attestation_unavailable",
                    _ => "bad_backend_reply",
                },
                BackendError::Protocol(_)
                | BackendError::IdMismatch { .. }
                | BackendError::UnexpectedReply(_)
                | BackendError::BadResult(_) => "bad_backend_reply",
            },
        }
    }

    /// Seconds for a `Retry-After` header (every 503).
    pub fn retry_after(&self) -> Option<u32> {
        (self.status() == 503).then_some(1)
    }

    /// The `Allow` header of a 405.
    pub fn allow(&self) -> Option<&'static str> {
        match self {
            ApiError::MethodNotAllowed { allow } => Some(allow),
            _ => None,
        }
    }

    /// The error body: JSON `{"error", "code"}`, except for a key the
    /// enclave does not hold, which is RFC 9458's problem (see [`ApiError::content_type`]).
    pub fn body(&self) -> Value {
        if self.code() == "key_rejected" {
            return json!({ "type": OHTTP_KEY_PROBLEM, "title": "key identifier unknown" });
        }
        json!({ "error": self.to_string(), "code": self.code() })
    }

    /// The media type of [`ApiError::body`].
    pub fn content_type(&self) -> &'static str {
        if self.code() == "key_rejected" {
            "application/problem+json"
        } else {
            "application/json"
        }
    }
}

/// The body's kind, from its Content-Type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    Json,
    RawImage,
}

/// Media type without parameters, case-insensitive: `application/json;
/// charset=utf-8` is JSON.
pub fn body_kind(content_type: Option<&str>) -> Result<BodyKind, ApiError> {
    match media_type(content_type).as_str() {
        "application/json" => Ok(BodyKind::Json),
        "image/jpeg" | "image/jpg" | "image/png" => Ok(BodyKind::RawImage),
        _ => Err(ApiError::UnsupportedMediaType),
    }
}

/// The media type of a Content-Type, without parameters, lower case; empty when there is none.
pub fn media_type(content_type: Option<&str>) -> String {
    content_type.and_then(|c| c.split(';').next()).map(|m| m.trim().to_ascii_lowercase()).unwrap_or_default()
}

/// Whether a Content-Type says the body is a sealed request (`message/ohttp-req`, RFC 9458).
pub fn is_sealed_request(content_type: Option<&str>) -> bool {
    media_type(content_type) == "message/ohttp-req"
}

/// The `nonce` of an `/attestation` query: 1 to [`MAX_NONCE_LEN`] bytes as
/// hex digits (either case), given once; other parameters are ignored.
pub fn nonce_from_query(query: Option<&str>) -> Result<Vec<u8>, ApiError> {
    let mut hex = None;
    for pair in query.unwrap_or("").split('&') {
        let value = match pair.split_once('=') {
            Some(("nonce", v)) => v,
            None if pair == "nonce" => "",
            _ => continue,
        };
        if hex.replace(value).is_some() {
            return Err(ApiError::BadNonce("nonce is given more than once"));
        }
    }
    let hex = hex.ok_or(ApiError::BadNonce("nonce is missing"))?.as_bytes();
    if hex.is_empty() {
        return Err(ApiError::BadNonce("nonce is empty"));
    }
    if hex.len() > 2 * MAX_NONCE_LEN {
        return Err(ApiError::BadNonce("nonce is too long"));
    }
    if hex.len() % 2 != 0 {
        return Err(ApiError::BadNonce("nonce has an odd number of hex digits"));
    }
    let digit = |c: u8| (c as char).to_digit(16).ok_or(ApiError::BadNonce("nonce is not hex"));
    let digits = hex.iter().map(|&c| digit(c)).collect::<Result<Vec<u32>, _>>()?;
    Ok(digits.chunks(2).map(|p| (p[0] * 16 + p[1]) as u8).collect())
}

/// `top_k` from a query string (`a=1&top_k=3`); the last `top_k` wins.
pub fn top_k_from_query(query: Option<&str>) -> Result<u16, ApiError> {
    let mut k = DEFAULT_TOP_K;
    for pair in query.unwrap_or("").split('&') {
        if let Some(v) = pair.strip_prefix("top_k=") {
            k = match v.parse::<u16>() {
                Ok(n) if n >= 1 && usize::from(n) <= MAX_TOP_K => n,
                _ => return Err(ApiError::BadTopK),
            };
        } else if pair == "top_k" {
            return Err(ApiError::BadTopK);
        }
    }
    Ok(k)
}

/// What the first bytes say an image is.
fn sniff(bytes: &[u8]) -> Result<(), Option<&'static str>> {
    const JPEG: &[u8] = &[0xFF, 0xD8, 0xFF];
    const PNG: &[u8] = b"\x89PNG\r\n\x1a\n";
    if bytes.starts_with(JPEG) || bytes.starts_with(PNG) {
        return Ok(());
    }
    let other = if bytes.starts_with(b"GIF87a") || bytes.starts_with(b"GIF89a") {
        Some("GIF")
    } else if bytes.starts_with(b"BM") && bytes.len() > 14 {
        Some("BMP")
    } else if bytes.len() >= 12 && &bytes[0..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
        Some("WebP")
    } else if bytes.starts_with(b"II*\0") || bytes.starts_with(b"MM\0*") {
        Some("TIFF")
    } else if bytes.len() >= 12 && &bytes[4..8] == b"ftyp" {
        Some("HEIF/AVIF")
    } else {
        None
    };
    Err(other)
}

pub(crate) fn check_image(index: usize, bytes: &[u8]) -> Result<(), ApiError> {
    match sniff(bytes) {
        Ok(()) => Ok(()),
        Err(Some(format)) => Err(ApiError::UnsupportedImageFormat { index, format }),
        Err(None) => Err(ApiError::NotAnImage(index)),
    }
}

/// Decodes a prediction body into the frame request.
pub fn decode_body(kind: BodyKind, body: &[u8], top_k: u16) -> Result<InferRequest, ApiError> {
    let images = match kind {
        BodyKind::RawImage => {
            check_image(0, body)?;
            vec![body.to_vec()]
        }
        BodyKind::Json => decode_json_images(body)?,
    };
    Ok(InferRequest { top_k, images })
}

/// The whole of a prediction request's parsing, as one pure function of what
/// the client sent: the `Content-Type` header, the body and the query string.
/// The checks run in the order the handler has always applied them (query,
/// media type, body), so the first error a client gets does not change. This
/// is what the `parse_request` fuzz target drives (see [`crate::fuzz`]).
pub fn parse_request(content_type: Option<&str>, body: &[u8], query: Option<&str>) -> Result<InferRequest, ApiError> {
    let top_k = top_k_from_query(query)?;
    let kind = body_kind(content_type)?;
    decode_body(kind, body, top_k)
}

/// What one pass over a JSON body found, before any base64 is decoded.
///
/// The body is walked once with serde_json's streaming deserializer and
/// nothing is built from it but this: the image strings are borrowed from the
/// body (base64 has no JSON escapes; an escaped string is the one case that
/// is copied), at most [`MAX_IMAGES`] of them are kept (the rest are only
/// counted), and every other value is skipped without being built
/// ([`IgnoredAny`]). A problem with the shape is noted and the walk goes on,
/// so that a syntax error anywhere still wins (400 `bad_json`), as it did when
/// the whole body was parsed into a `serde_json::Value` first; the checks
/// that follow keep that old order.
#[derive(Default)]
struct Walk<'a> {
    /// The body is a JSON object.
    object: bool,
    /// `images` appeared: `Some(true)` if its value was an array.
    images: Option<bool>,
    /// `images` appeared more than once.
    duplicate: bool,
    /// Some other field appeared.
    unknown_field: bool,
    /// Entries of the `images` array, all counted.
    count: usize,
    /// The first of them that is not a string.
    not_string: Option<usize>,
    /// The first [`MAX_IMAGES`] strings.
    strings: Vec<Cow<'a, str>>,
}

/// Accepts every JSON value a visitor can be given and checks its syntax
/// without building anything, returning `$ret`; the listed methods aside.
macro_rules! skip_other_values {
    ($ret:expr; $($method:ident),*) => {
        $(skip_other_values!(@one $method, $ret);)*
    };
    (@one seq, $ret:expr) => {
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            Ok($ret)
        }
    };
    (@one map, $ret:expr) => {
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
            Ok($ret)
        }
    };
    (@one str, $ret:expr) => {
        fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
            Ok($ret)
        }
    };
    (@one scalars, $ret:expr) => {
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
            Ok($ret)
        }
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
            Ok($ret)
        }
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
            Ok($ret)
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
            Ok($ret)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok($ret)
        }
    };
}

/// The whole body: an object, or anything else (then `images` is missing).
struct TopLevel<'w, 'a>(&'w mut Walk<'a>);

impl<'de, 'w> Visitor<'de> for TopLevel<'w, 'de> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let walk = self.0;
        walk.object = true;
        while let Some(is_images) = map.next_key_seed(FieldName)? {
            if !is_images {
                walk.unknown_field = true;
                map.next_value::<IgnoredAny>()?;
            } else if walk.images.is_some() {
                walk.duplicate = true;
                map.next_value::<IgnoredAny>()?;
            } else {
                let is_array = map.next_value_seed(Images(&mut *walk))?;
                walk.images = Some(is_array);
            }
        }
        Ok(())
    }

    skip_other_values!((); seq, str, scalars);
}

impl<'de, 'w> DeserializeSeed<'de> for TopLevel<'w, 'de> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

/// A field name: `true` if it is `images` (escaped or not), without keeping it.
struct FieldName;

impl<'de> Visitor<'de> for FieldName {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a field name")
    }

    fn visit_str<E: de::Error>(self, name: &str) -> Result<bool, E> {
        Ok(name == "images")
    }
}

impl<'de> DeserializeSeed<'de> for FieldName {
    type Value = bool;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_str(self)
    }
}

/// The value of `images`: `true` if it is an array (whose entries go into the walk).
struct Images<'w, 'a>(&'w mut Walk<'a>);

impl<'de, 'w> Visitor<'de> for Images<'w, 'de> {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of base64 strings")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<bool, A::Error> {
        let walk = self.0;
        loop {
            if walk.strings.len() < MAX_IMAGES && walk.not_string.is_none() {
                match seq.next_element_seed(Entry)? {
                    None => break,
                    Some(Some(s)) => walk.strings.push(s),
                    Some(None) => walk.not_string = Some(walk.count),
                }
            } else if seq.next_element::<IgnoredAny>()?.is_none() {
                // Past the limit (or past a bad entry), entries are only counted.
                break;
            }
            walk.count += 1;
        }
        Ok(true)
    }

    skip_other_values!(false; map, str, scalars);
}

impl<'de, 'w> DeserializeSeed<'de> for Images<'w, 'de> {
    type Value = bool;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_any(self)
    }
}

/// One entry of `images`: its string, borrowed from the body when it has no
/// escapes (base64 never has), or `None` if it is not a string.
struct Entry;

impl<'de> Visitor<'de> for Entry {
    type Value = Option<Cow<'de, str>>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a base64 string")
    }

    fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Self::Value, E> {
        Ok(Some(Cow::Borrowed(s)))
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
        // An escaped string: serde_json unescaped it into a scratch buffer.
        Ok(Some(Cow::Owned(s.to_owned())))
    }

    fn visit_string<E: de::Error>(self, s: String) -> Result<Self::Value, E> {
        Ok(Some(Cow::Owned(s)))
    }

    skip_other_values!(None; seq, map, scalars);
}

impl<'de> DeserializeSeed<'de> for Entry {
    type Value = Option<Cow<'de, str>>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

fn decode_json_images(body: &[u8]) -> Result<Vec<Vec<u8>>, ApiError> {
    // serde_json bounds nesting (128 levels) for skipped values too, so
    // hostile JSON cannot overflow the stack.
    let mut walk = Walk::default();
    let mut de = serde_json::Deserializer::from_slice(body);
    TopLevel(&mut walk).deserialize(&mut de).and_then(|()| de.end()).map_err(|e| ApiError::BadJson(json_error(&e)))?;
    let Walk { object, images, duplicate, unknown_field, count, not_string, strings } = walk;
    let Some(is_array) = images.filter(|_| object) else {
        return Err(ApiError::MissingImages);
    };
    if duplicate {
        return Err(ApiError::BadJson("the \"images\" field appears more than once".into()));
    }
    if unknown_field {
        return Err(ApiError::UnknownField);
    }
    if !is_array {
        return Err(ApiError::ImagesNotArray);
    }
    if count == 0 {
        return Err(ApiError::EmptyBatch);
    }
    if count > MAX_IMAGES {
        return Err(ApiError::TooManyImages(count));
    }
    if let Some(index) = not_string {
        return Err(ApiError::ImageNotString(index));
    }
    let mut images = Vec::with_capacity(strings.len());
    for (index, text) in strings.iter().enumerate() {
        let bytes = B64.decode(text.as_bytes()).map_err(|e| ApiError::BadBase64 { index, reason: base64_error(&e) })?;
        check_image(index, &bytes)?;
        images.push(bytes);
    }
    Ok(images)
}

/// serde_json's message names the position, never the content.
fn json_error(e: &serde_json::Error) -> String {
    e.to_string()
}

/// base64's messages name an offset and, for a bad symbol, the byte; keep
/// only the kind and offset.
fn base64_error(e: &base64::DecodeError) -> String {
    match e {
        base64::DecodeError::InvalidByte(at, _) => format!("invalid character at offset {at}"),
        base64::DecodeError::InvalidLength(n) => format!("invalid length {n}"),
        base64::DecodeError::InvalidLastSymbol(at, _) => format!("invalid last symbol at offset {at}"),
        base64::DecodeError::InvalidPadding => "invalid padding".to_string(),
    }
}

/// Parent-side timings of one request, in microseconds.
#[derive(Debug, Clone, Copy, Default)]
pub struct Timings {
    pub parse_us: u64,
    pub backend_us: u64,
    pub total_us: u64,
}

fn ms(us: u64) -> f64 {
    // Three decimals: microsecond resolution.
    us as f64 / 1000.0
}

fn score(s: f32) -> Value {
    // Six decimals are what a probability needs; NaN (a broken model) becomes null.
    let x = (f64::from(s) * 1e6).round() / 1e6;
    serde_json::Number::from_f64(x).map(Value::Number).unwrap_or(Value::Null)
}

/// The 200 reply body, and the `Server-Timing` header value.
///
/// Stage times in the header are the slowest image's (images of a batch run
/// in parallel on the model server's workers); `transport` is what is left of
/// the backend round trip once the slowest image's queue+decode+infer time is
/// taken out (framing, socket or vsock, and the server's bookkeeping).
pub fn render_result(backend: &str, info: &ModelInfo, reply: &InferReply, t: Timings) -> (Value, String) {
    let label = |id: u32| -> &str { info.labels.get(id as usize).map(String::as_str).unwrap_or("") };
    let mut class_ids = Vec::with_capacity(reply.images.len());
    let mut predictions = Vec::with_capacity(reply.images.len());
    let (mut q, mut d, mut i, mut slowest) = (0u64, 0u64, 0u64, 0u64);
    for img in &reply.images {
        // check_result guaranteed a non-empty top list, best first.
        class_ids.push(img.top.first().map(|c| c.class_id));
        let top: Vec<Value> = img
            .top
            .iter()
            .map(|c| json!({ "class_id": c.class_id, "label": label(c.class_id), "score": score(c.score) }))
            .collect();
        let tm = img.timings;
        predictions.push(json!({
            "top_k": top,
            "timings_us": { "queue": tm.queue_us, "decode": tm.decode_us, "infer": tm.infer_us },
        }));
        let (qq, dd, ii) = (u64::from(tm.queue_us), u64::from(tm.decode_us), u64::from(tm.infer_us));
        q = q.max(qq);
        d = d.max(dd);
        i = i.max(ii);
        slowest = slowest.max(qq + dd + ii);
    }
    let body = json!({
        "class_ids": class_ids,
        "predictions": predictions,
        "backend": backend,
        "model": { "name": info.name, "sha256": info.sha256_hex(), "synthetic": info.synthetic },
        "timings_ms": { "parse": ms(t.parse_us), "backend": ms(t.backend_us), "total": ms(t.total_us) },
    });
    let transport = t.backend_us.saturating_sub(slowest);
    let header = format!(
        "queue;dur={:.3}, decode;dur={:.3}, infer;dur={:.3}, transport;dur={:.3}, total;dur={:.3}",
        ms(q),
        ms(d),
        ms(i),
        ms(transport),
        ms(t.total_us)
    );
    (body, header)
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::frame::{ClassScore, ErrorReply, ImageResult, StageTimings};

    const JPEG: &[u8] = &[0xFF, 0xD8, 0xFF, 0xE0, 1, 2, 3];
    const PNG: &[u8] = b"\x89PNG\r\n\x1a\n....";

    fn b64(bytes: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(bytes)
    }

    fn json_req(v: Value) -> Result<InferRequest, ApiError> {
        decode_body(BodyKind::Json, v.to_string().as_bytes(), 5)
    }

    #[test]
    fn decodes_the_study_format() {
        let r = json_req(json!({ "images": [b64(JPEG), b64(PNG)] })).unwrap();
        assert_eq!(r.images, vec![JPEG.to_vec(), PNG.to_vec()]);
        assert_eq!(r.top_k, 5);
    }

    #[test]
    fn tolerates_missing_padding_but_not_other_alphabets() {
        let padded = b64(JPEG);
        assert!(padded.ends_with('='));
        let unpadded = padded.trim_end_matches('=').to_string();
        assert_eq!(json_req(json!({ "images": [unpadded] })).unwrap().images[0], JPEG.to_vec());
        // 0xFF 0xD8 0xFF encodes as "/9j/": the URL-safe alphabet spells it "_9j_".
        let url_safe = padded.replace('/', "_");
        assert_eq!(
            json_req(json!({ "images": [url_safe] })),
            Err(ApiError::BadBase64 { index: 0, reason: "invalid character at offset 0".into() })
        );
        assert!(matches!(json_req(json!({ "images": ["/9j/\n4AAB"] })), Err(ApiError::BadBase64 { index: 0, .. })));
    }

    #[test]
    fn each_malformed_body_has_its_variant() {
        assert!(matches!(decode_body(BodyKind::Json, b"{nope", 5), Err(ApiError::BadJson(_))));
        assert!(matches!(decode_body(BodyKind::Json, b"", 5), Err(ApiError::BadJson(_))));
        assert_eq!(json_req(json!([1, 2])), Err(ApiError::MissingImages));
        assert_eq!(json_req(json!({ "imgs": [] })), Err(ApiError::MissingImages));
        assert_eq!(json_req(json!({ "images": "abc" })), Err(ApiError::ImagesNotArray));
        assert_eq!(json_req(json!({ "images": [] })), Err(ApiError::EmptyBatch));
        assert_eq!(json_req(json!({ "images": [b64(JPEG), 3] })), Err(ApiError::ImageNotString(1)));
        assert_eq!(json_req(json!({ "images": [b64(b"hello world")] })), Err(ApiError::NotAnImage(0)));
        assert_eq!(json_req(json!({ "images": [""] })), Err(ApiError::NotAnImage(0)));
        assert_eq!(
            json_req(json!({ "images": [b64(b"GIF89a....")] })),
            Err(ApiError::UnsupportedImageFormat { index: 0, format: "GIF" })
        );
        let many: Vec<String> = (0..MAX_IMAGES + 1).map(|_| b64(JPEG)).collect();
        assert_eq!(json_req(json!({ "images": many })), Err(ApiError::TooManyImages(MAX_IMAGES + 1)));
        assert_eq!(decode_body(BodyKind::RawImage, b"text", 5), Err(ApiError::NotAnImage(0)));
        assert_eq!(decode_body(BodyKind::RawImage, PNG, 3).map(|r| (r.images.len(), r.top_k)), Ok((1, 3)));
        // Deep nesting is refused by serde_json's recursion limit, not the stack.
        let deep = "[".repeat(100_000);
        assert!(matches!(decode_body(BodyKind::Json, deep.as_bytes(), 5), Err(ApiError::BadJson(_))));
    }

    #[test]
    fn fields_other_than_images_are_refused() {
        assert_eq!(json_req(json!({ "images": [b64(JPEG)], "pad": [0, 0, 0] })), Err(ApiError::UnknownField));
        assert_eq!(json_req(json!({ "pad": 1, "images": [b64(JPEG)] })), Err(ApiError::UnknownField));
        // A missing `images` is still the first thing said.
        assert_eq!(json_req(json!({ "imgs": [b64(JPEG)] })), Err(ApiError::MissingImages));
        let twice = format!("{{\"images\": [\"{0}\"], \"images\": [\"{0}\"]}}", b64(JPEG));
        assert!(matches!(decode_body(BodyKind::Json, twice.as_bytes(), 5), Err(ApiError::BadJson(_))));
        let e = ApiError::UnknownField;
        assert_eq!((e.status(), e.code()), (400, "unknown_field"));
    }

    #[test]
    fn a_syntax_error_anywhere_wins_over_the_shape() {
        // The walk goes on past a problem of shape, so a broken document is
        // bad_json wherever the break is, as when it was parsed whole first.
        let bad = |s: &str| matches!(decode_body(BodyKind::Json, s.as_bytes(), 5), Err(ApiError::BadJson(_)));
        assert!(bad("{\"images\": [\"abc\""));
        assert!(bad("{\"images\": [null"));
        assert!(bad("{\"pad\": [0, 0,"));
        assert!(bad("[1, 2"));
        assert!(bad("null x"));
        assert!(bad(&format!("{{\"images\": [1, {}", "[".repeat(1000))));
        assert!(bad(&format!("{{\"pad\": {}", "[".repeat(1000))));
        assert!(bad("{\"images\": [\"/9j/\"]} trailing"));
    }

    #[test]
    fn escaped_strings_and_field_names_are_unescaped() {
        // "/9j/4AEC" with its slashes escaped, and the field name spelled with an escape.
        let body = br#"{"imag\u0065s": ["\/9j\/4AEC"]}"#;
        let r = decode_body(BodyKind::Json, body, 5).unwrap();
        assert_eq!(r.images, vec![vec![0xFF, 0xD8, 0xFF, 0xE0, 0x01, 0x02]]);
        // An escape that leaves a character outside the alphabet is still bad base64.
        assert!(matches!(
            decode_body(BodyKind::Json, br#"{"images": ["\n/9j/4AEC"]}"#, 5),
            Err(ApiError::BadBase64 { index: 0, .. })
        ));
    }

    #[test]
    fn images_past_the_limit_are_counted_not_kept() {
        let many = format!("{{\"images\": [{}]}}", vec!["\"/9j/4AEC\""; 1000].join(","));
        assert_eq!(decode_body(BodyKind::Json, many.as_bytes(), 5), Err(ApiError::TooManyImages(1000)));
        // Too many wins over an entry that is not a string, as before.
        let mixed = format!("{{\"images\": [1, {}]}}", vec!["\"/9j/4AEC\""; MAX_IMAGES].join(","));
        assert_eq!(decode_body(BodyKind::Json, mixed.as_bytes(), 5), Err(ApiError::TooManyImages(MAX_IMAGES + 1)));
        let exactly: Vec<String> = (0..MAX_IMAGES).map(|_| b64(JPEG)).collect();
        assert_eq!(json_req(json!({ "images": exactly })).map(|r| r.images.len()), Ok(MAX_IMAGES));
        // The first entry that is not a string is the one named.
        assert_eq!(json_req(json!({ "images": [b64(JPEG), {"a": 1}, 3] })), Err(ApiError::ImageNotString(1)));
        assert_eq!(json_req(json!({ "images": {"a": [1]} })), Err(ApiError::ImagesNotArray));
        assert_eq!(json_req(json!({ "images": null })), Err(ApiError::ImagesNotArray));
    }

    #[test]
    fn parse_request_checks_query_then_media_type_then_body() {
        let jpeg = Some("image/jpeg");
        assert_eq!(parse_request(jpeg, JPEG, Some("top_k=2")).map(|r| (r.images.len(), r.top_k)), Ok((1, 2)));
        // A bad query wins over a bad media type, which wins over a bad body.
        assert_eq!(parse_request(Some("text/plain"), b"x", Some("top_k=0")), Err(ApiError::BadTopK));
        assert_eq!(parse_request(Some("text/plain"), b"x", None), Err(ApiError::UnsupportedMediaType));
        assert_eq!(parse_request(None, JPEG, None), Err(ApiError::UnsupportedMediaType));
        assert_eq!(parse_request(jpeg, b"x", None), Err(ApiError::NotAnImage(0)));
        let body = json!({ "images": [b64(PNG)] }).to_string();
        assert_eq!(parse_request(Some("application/json"), body.as_bytes(), None).map(|r| r.images), Ok(vec![PNG.to_vec()]));
    }

    #[test]
    fn transport_level_errors_have_their_statuses() {
        assert_eq!((ApiError::BodyTimeout.status(), ApiError::BodyTimeout.code()), (408, "body_timeout"));
        assert_eq!((ApiError::HeadersTooLarge.status(), ApiError::HeadersTooLarge.code()), (431, "headers_too_large"));
        assert_eq!((ApiError::BodyRead.status(), ApiError::BodyRead.code()), (400, "body_read_failed"));
        let framing = ApiError::BadFraming("x");
        assert_eq!((framing.status(), framing.code()), (400, "bad_framing"));
        assert_eq!(ApiError::BodyTimeout.retry_after(), None);
    }

    #[test]
    fn content_types() {
        assert_eq!(body_kind(Some("application/json")), Ok(BodyKind::Json));
        assert_eq!(body_kind(Some("Application/JSON; charset=utf-8")), Ok(BodyKind::Json));
        assert_eq!(body_kind(Some("image/jpeg")), Ok(BodyKind::RawImage));
        assert_eq!(body_kind(Some("image/png")), Ok(BodyKind::RawImage));
        assert_eq!(body_kind(Some("text/plain")), Err(ApiError::UnsupportedMediaType));
        assert_eq!(body_kind(Some("application/x-www-form-urlencoded")), Err(ApiError::UnsupportedMediaType));
        assert_eq!(body_kind(None), Err(ApiError::UnsupportedMediaType));
    }

    #[test]
    fn top_k_query() {
        assert_eq!(top_k_from_query(None), Ok(5));
        assert_eq!(top_k_from_query(Some("top_k=1")), Ok(1));
        assert_eq!(top_k_from_query(Some("x=y&top_k=100")), Ok(100));
        assert_eq!(top_k_from_query(Some("top_k=0")), Err(ApiError::BadTopK));
        assert_eq!(top_k_from_query(Some("top_k=101")), Err(ApiError::BadTopK));
        assert_eq!(top_k_from_query(Some("top_k=-1")), Err(ApiError::BadTopK));
        assert_eq!(top_k_from_query(Some("top_k=")), Err(ApiError::BadTopK));
        assert_eq!(top_k_from_query(Some("top_k")), Err(ApiError::BadTopK));
    }

    #[test]
    fn statuses_and_codes() {
        let remote = |c: ErrorCode| ApiError::Backend(BackendError::Remote(ErrorReply::new(c, "x")));
        let cases: Vec<(ApiError, u16, &str)> = vec![
            (ApiError::NotFound, 404, "not_found"),
            (ApiError::MethodNotAllowed { allow: "POST" }, 405, "method_not_allowed"),
            (ApiError::LengthRequired, 411, "length_required"),
            (ApiError::BodyTooLarge { limit: 1 }, 413, "body_too_large"),
            (ApiError::TooManyImages(65), 413, "too_many_images"),
            (ApiError::UnsupportedMediaType, 415, "unsupported_media_type"),
            (ApiError::EmptyBatch, 400, "empty_batch"),
            (ApiError::Backend(BackendError::Unreachable(std::io::ErrorKind::NotFound)), 503, "backend_unavailable"),
            (ApiError::Backend(BackendError::BackingOff), 503, "backend_unavailable"),
            (ApiError::Backend(BackendError::PoolExhausted), 503, "backend_busy"),
            (ApiError::Backend(BackendError::Deadline), 504, "backend_timeout"),
            (remote(ErrorCode::Busy), 503, "backend_busy"),
            (remote(ErrorCode::ShuttingDown), 503, "backend_shutting_down"),
            (remote(ErrorCode::BadImage), 400, "bad_image"),
            (remote(ErrorCode::UnsupportedFormat), 415, "unsupported_format"),
            (remote(ErrorCode::ImageTooLarge), 413, "image_too_large"),
            (remote(ErrorCode::Internal), 502, "backend_internal"),
            (remote(ErrorCode::Malformed), 502, "bad_backend_reply"),
            (ApiError::Backend(BackendError::IdMismatch { sent: 1, got: 2 }), 502, "bad_backend_reply"),
        ];
        for (e, status, code) in cases {
            assert_eq!((e.status(), e.code()), (status, code), "{e:?}");
            assert_eq!(e.retry_after().is_some(), status == 503);
            assert_eq!(e.body()["code"], code);
        }
    }

    #[test]
    fn nonce_query() {
        assert_eq!(nonce_from_query(Some("nonce=00ff")), Ok(vec![0x00, 0xff]));
        assert_eq!(nonce_from_query(Some("x=1&nonce=ABcd&y")), Ok(vec![0xab, 0xcd]));
        let longest = "ab".repeat(MAX_NONCE_LEN);
        assert_eq!(nonce_from_query(Some(&format!("nonce={longest}"))).map(|n| n.len()), Ok(MAX_NONCE_LEN));
        let bad = |q: Option<&str>, why: &'static str| assert_eq!(nonce_from_query(q), Err(ApiError::BadNonce(why)), "{q:?}");
        bad(None, "nonce is missing");
        bad(Some("nonces=00"), "nonce is missing");
        bad(Some("nonce="), "nonce is empty");
        bad(Some("nonce"), "nonce is empty");
        bad(Some("nonce=abc"), "nonce has an odd number of hex digits");
        bad(Some("nonce=zz"), "nonce is not hex");
        bad(Some("nonce=+1"), "nonce is not hex");
        bad(Some("nonce=%41%42"), "nonce is not hex");
        bad(Some(&format!("nonce={longest}00")), "nonce is too long");
        bad(Some("nonce=00&nonce=00"), "nonce is given more than once");
        let e = ApiError::BadNonce("x");
        assert_eq!((e.status(), e.code()), (400, "bad_nonce"));
    }

    #[test]
    fn sealed_errors_and_the_ohttp_key_problem() {
        assert!(is_sealed_request(Some("message/ohttp-req")));
        assert!(is_sealed_request(Some("Message/OHTTP-req; x=1")));
        assert!(!is_sealed_request(Some("message/ohttp-res")));
        assert!(!is_sealed_request(None));
        let remote = |c: ErrorCode| ApiError::Backend(BackendError::Remote(ErrorReply::new(c, "x")));
        let key = remote(ErrorCode::KeyRejected);
        assert_eq!((key.status(), key.content_type()), (400, "application/problem+json"));
        assert_eq!(key.body(), json!({ "type": OHTTP_KEY_PROBLEM, "title": "key identifier unknown" }));
        let cases: Vec<(ApiError, u16, &str)> = vec![
            (remote(ErrorCode::SealedRequestInvalid), 400, "sealed_request_invalid"),
            (remote(ErrorCode::AttestationUnavailable), 503, "attestation_unavailable"),
            (ApiError::EmptySealedRequest, 400, "sealed_request_invalid"),
            (ApiError::NotSealedMediaType, 415, "unsupported_media_type"),
            (ApiError::SealedOnly, 403, "sealed_only"),
        ];
        for (e, status, code) in cases {
            assert_eq!((e.status(), e.code(), e.content_type()), (status, code, "application/json"), "{e:?}");
            assert_eq!(e.body()["code"], code);
        }
        assert!(ApiError::SealedOnly.to_string().contains("message/ohttp-req"));
    }

    #[test]
    fn renders_the_reply() {
        let info = ModelInfo {
            name: "m".into(),
            sha256: [0xab; 32],
            synthetic: false,
            input_shape: [1, 3, 224, 224],
            num_classes: 2,
            label_source: "x".into(),
            labels: vec!["zero".into(), "one".into()],
        };
        let reply = InferReply {
            images: vec![
                ImageResult {
                    timings: StageTimings { queue_us: 10, decode_us: 2000, infer_us: 30000 },
                    top: vec![ClassScore { class_id: 1, score: 0.75 }, ClassScore { class_id: 0, score: 0.25 }],
                },
                ImageResult {
                    timings: StageTimings { queue_us: 20, decode_us: 1000, infer_us: 31000 },
                    top: vec![ClassScore { class_id: 7, score: f32::NAN }],
                },
            ],
        };
        let (v, header) = render_result("secure", &info, &reply, Timings { parse_us: 100, backend_us: 33000, total_us: 33500 });
        assert_eq!(v["class_ids"], json!([1, 7]));
        assert_eq!(v["predictions"][0]["top_k"][0], json!({ "class_id": 1, "label": "one", "score": 0.75 }));
        assert_eq!(v["predictions"][1]["top_k"][0], json!({ "class_id": 7, "label": "", "score": null }));
        assert_eq!(v["predictions"][1]["timings_us"], json!({ "queue": 20, "decode": 1000, "infer": 31000 }));
        assert_eq!(v["backend"], "secure");
        assert_eq!(v["model"]["sha256"], "ab".repeat(32));
        assert_eq!(v["timings_ms"]["total"], 33.5);
        assert_eq!(
            header,
            "queue;dur=0.020, decode;dur=2.000, infer;dur=31.000, transport;dur=0.980, total;dur=33.500"
        );
    }
}
