//! The frame protocol between the parent and the model servers.
//!
//! Every message is one frame: a fixed 16-byte header followed by a body of
//! `body_len` bytes. The model server speaks nothing else: no JSON, no base64,
//! no HTTP. The parent turns HTTP requests into frames.
//!
//! Why it is built this way:
//! - The length is read and checked against [`MAX_FRAME_LEN`] before a single
//!   byte of the body is allocated; nested lengths (images, strings) are then
//!   checked against what the body really holds, through [`Reader`], which can
//!   never read past its slice.
//! - Every frame carries a request id; the reply echoes it, so a client can
//!   tell a stale reply from the one it waits for.
//! - Errors travel as frames ([`Message::Error`]) with a stable numeric code.
//!
//! What it refuses, and what happens then (the hostile-input policy):
//! - A bad *header* (magic, version, length over the maximum) or a stream that
//!   ends mid-frame: the stream can no longer be trusted to be in step, so the
//!   server answers one `malformed` error frame if it can and closes that
//!   connection. Other connections are not affected.
//! - A bad *body* (unknown kind, counts that disagree with the bytes present,
//!   trailing bytes, zero or too many images): the frame boundary is intact,
//!   so the server answers an error frame and the connection stays usable.
//!
//! Header layout (all integers little endian):
//!
//! ```text
//!  0        2         3        4              8                        16
//!  +--------+---------+--------+--------------+------------------------+
//!  | magic  | version |  kind  |   body_len   |       request_id       |
//!  | "NE"   |   u8    |   u8   |     u32      |          u64           |
//!  +--------+---------+--------+--------------+------------------------+
//! ```
//!
//! Bodies, by kind (`str` is a u16 byte length then UTF-8 bytes, at most
//! [`MAX_STRING_LEN`]):
//!
//! ```text
//!  0x01 Ping      (empty)
//!  0x02 Pong      (empty)                     reply to Ping and to Seed
//!  0x03 InfoQuery (empty)
//!  0x04 Info      name:str  sha256:[u8;32]  synthetic:u8 (0|1)
//!                 input_shape:[u32;4] (N,C,H,W)  num_classes:u32
//!                 label_source:str  label_count:u32 (0 or num_classes)
//!                 label_count x label:str
//!  0x05 Infer     top_k:u16 (1..=MAX_FRAME_TOP_K)  image_count:u16 (1..=MAX_IMAGES)
//!                 image_count x { len:u32  bytes:[u8;len] }
//!  0x06 Result    image_count:u16 (1..=MAX_IMAGES)
//!                 image_count x { queue_us:u32  decode_us:u32  infer_us:u32
//!                                 k:u16 (<=MAX_FRAME_TOP_K; min(top_k, num_classes))
//!                                 k x { class_id:u32  score:f32 } }
//!  0x07 Error     code:u16  message:str
//!  0x08 Seed      bytes (1..=MAX_SEED_LEN), mixed into the enclave's pool
//!                 without being credited; answered with Pong
//!  0x09 Attest    nonce bytes (1..=MAX_NONCE_LEN)
//!  0x0A Attestation  the NSM's COSE_Sign1 document (1..=MAX_DOCUMENT_LEN)
//!  0x0B KeysQuery (empty)
//!  0x0C Keys      application/ohttp-keys bytes (1..=MAX_KEYS_LEN)
//!  0x0D Sealed    message/ohttp-req bytes (1..=MAX_FRAME_LEN), opaque to the parent
//!  0x0E SealedReply  message/ohttp-res bytes (1..=MAX_FRAME_LEN)
//! ```
//!
//! The last six carry opaque bytes whose meaning docs/SEALED.md gives.

use std::fmt;
use std::io::{self, Read, Write};
use std::ops::Range;

use crate::limits::{
    MAX_DOCUMENT_LEN, MAX_FRAME_LEN, MAX_FRAME_TOP_K, MAX_IMAGES, MAX_KEYS_LEN, MAX_LABELS, MAX_NONCE_LEN, MAX_SEED_LEN,
    MAX_STRING_LEN,
};

/// The two bytes every frame starts with ("NE", for Nitro Enclave). A peer
/// speaking anything else (say, HTTP sent to the frame port) fails here.
pub const MAGIC: [u8; 2] = *b"NE";
/// The only protocol version this build speaks.
pub const VERSION: u8 = 1;
/// Size of the fixed header, in bytes.
pub const HEADER_LEN: usize = 16;

/// Why a frame was refused. The Display text is what a user sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// The first two bytes were not [`MAGIC`].
    BadMagic([u8; 2]),
    /// A version this build does not speak.
    UnsupportedVersion(u8),
    /// A kind byte that names no message.
    UnknownKind(u8),
    /// The header announced a body longer than [`MAX_FRAME_LEN`].
    FrameTooLarge(u32),
    /// The input ended before a field was complete: it needed `needed`
    /// bytes where only `available` were present.
    Truncated { needed: usize, available: usize },
    /// Bytes were left over after the last field of the body.
    TrailingBytes(usize),
    /// An inference request with no images.
    EmptyBatch,
    /// An inference request or reply with more than [`MAX_IMAGES`] images.
    TooManyImages(usize),
    /// `top_k` of zero or over [`MAX_FRAME_TOP_K`], or a result with more scores.
    BadTopK(usize),
    /// A string longer than [`MAX_STRING_LEN`].
    StringTooLong(usize),
    /// A string that is not UTF-8.
    InvalidUtf8,
    /// A boolean byte other than 0 or 1.
    InvalidBool(u8),
    /// A label list that is neither empty nor one label per class.
    LabelCount { labels: usize, classes: u32 },
    /// An opaque body (seed, nonce, document, keys, sealed message) that is
    /// empty or longer than its kind allows ([`Kind::byte_limit`]).
    BadLength { kind: Kind, len: usize },
    /// The stream failed or ended mid-frame.
    Io(io::ErrorKind),
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::BadMagic(m) => write!(f, "bad frame magic {:02x}{:02x} (not a frame-protocol peer?)", m[0], m[1]),
            FrameError::UnsupportedVersion(v) => write!(f, "unsupported protocol version {v} (this build speaks {VERSION})"),
            FrameError::UnknownKind(k) => write!(f, "unknown message kind 0x{k:02x}"),
            FrameError::FrameTooLarge(n) => write!(f, "frame body of {n} bytes is over the limit of {MAX_FRAME_LEN}"),
            FrameError::Truncated { needed, available } => {
                write!(f, "frame truncated: needed {needed} bytes, only {available} present")
            }
            FrameError::TrailingBytes(n) => write!(f, "{n} unexpected trailing bytes after the frame body"),
            FrameError::EmptyBatch => write!(f, "the request holds no images"),
            FrameError::TooManyImages(n) => write!(f, "{n} images in one request, over the limit of {MAX_IMAGES}"),
            FrameError::BadTopK(k) => write!(f, "top_k must be between 1 and {MAX_FRAME_TOP_K}, got {k}"),
            FrameError::StringTooLong(n) => write!(f, "string of {n} bytes is over the limit of {MAX_STRING_LEN}"),
            FrameError::InvalidUtf8 => write!(f, "string is not valid UTF-8"),
            FrameError::InvalidBool(b) => write!(f, "boolean byte must be 0 or 1, got {b}"),
            FrameError::LabelCount { labels, classes } => {
                write!(f, "{labels} labels for {classes} classes (must be 0 or one per class)")
            }
            FrameError::BadLength { kind, len } => {
                write!(f, "{kind:?} body of {len} bytes (must be 1 to {})", kind.byte_limit().unwrap_or(0))
            }
            FrameError::Io(kind) => write!(f, "stream error: {kind}"),
        }
    }
}

impl std::error::Error for FrameError {}

impl From<io::Error> for FrameError {
    fn from(e: io::Error) -> Self {
        FrameError::Io(e.kind())
    }
}

/// Message kinds, as carried in the header's `kind` byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    Ping = 0x01,
    Pong = 0x02,
    InfoQuery = 0x03,
    Info = 0x04,
    Infer = 0x05,
    Result = 0x06,
    Error = 0x07,
    Seed = 0x08,
    Attest = 0x09,
    Attestation = 0x0A,
    KeysQuery = 0x0B,
    Keys = 0x0C,
    Sealed = 0x0D,
    SealedReply = 0x0E,
}

impl Kind {
    pub fn from_u8(b: u8) -> Result<Kind, FrameError> {
        Kind::ALL.into_iter().find(|k| *k as u8 == b).ok_or(FrameError::UnknownKind(b))
    }

    /// Every kind, in numeric order.
    pub const ALL: [Kind; 14] = [
        Kind::Ping, Kind::Pong, Kind::InfoQuery, Kind::Info, Kind::Infer, Kind::Result, Kind::Error, Kind::Seed,
        Kind::Attest, Kind::Attestation, Kind::KeysQuery, Kind::Keys, Kind::Sealed, Kind::SealedReply,
    ];

    /// The largest body of a kind that carries opaque bytes (at least one).
    pub fn byte_limit(self) -> Option<usize> {
        match self {
            Kind::Seed => Some(MAX_SEED_LEN),
            Kind::Attest => Some(MAX_NONCE_LEN),
            Kind::Attestation => Some(MAX_DOCUMENT_LEN),
            Kind::Keys => Some(MAX_KEYS_LEN),
            Kind::Sealed | Kind::SealedReply => Some(MAX_FRAME_LEN as usize),
            _ => None,
        }
    }
}

/// A parsed, validated header. The kind byte is kept raw: an unknown kind is
/// a body-level error (the frame boundary is still known), not a header one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub kind: u8,
    pub body_len: u32,
    pub request_id: u64,
}

impl Header {
    /// Checks magic, version and length, in that order, before anything else.
    pub fn parse(b: &[u8; HEADER_LEN]) -> Result<Header, FrameError> {
        let magic = [b[0], b[1]];
        if magic != MAGIC {
            return Err(FrameError::BadMagic(magic));
        }
        if b[2] != VERSION {
            return Err(FrameError::UnsupportedVersion(b[2]));
        }
        let body_len = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
        if body_len > MAX_FRAME_LEN {
            return Err(FrameError::FrameTooLarge(body_len));
        }
        let request_id = u64::from_le_bytes([b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]]);
        Ok(Header { kind: b[3], body_len, request_id })
    }

    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[0..2].copy_from_slice(&MAGIC);
        out[2] = VERSION;
        out[3] = self.kind;
        out[4..8].copy_from_slice(&self.body_len.to_le_bytes());
        out[8..16].copy_from_slice(&self.request_id.to_le_bytes());
        out
    }
}

/// Stable, machine-readable error codes carried by [`Message::Error`].
/// Numbers are part of the protocol: never reuse or renumber one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum ErrorCode {
    /// The frame could not be decoded; see the message.
    Malformed = 1,
    /// A message kind the server does not accept as a request.
    UnexpectedKind = 2,
    /// The server's queue or connection limit is reached; retry later.
    Busy = 3,
    /// An image could not be decoded (corrupt, truncated, not an image).
    BadImage = 4,
    /// An image in a format other than JPEG or PNG.
    UnsupportedFormat = 5,
    /// An image whose dimensions or decoded size are over the limits.
    ImageTooLarge = 6,
    /// The server failed internally (a worker panicked); the request may be retried.
    Internal = 7,
    /// The server is shutting down and takes no new work.
    ShuttingDown = 8,
    /// A sealed request for a key this server does not hold (unknown key id
    /// or HPKE suite): RFC 9458's "ohttp-key" problem. The client re-attests.
    KeyRejected = 9,
    /// A sealed request that cannot be opened: truncated, or a bad tag.
    SealedRequestInvalid = 10,
    /// No attestation: the server runs with `--nsm none`, or the NSM failed.
    AttestationUnavailable = 11,
}

impl ErrorCode {
    /// Unknown codes from a newer peer are kept as `Internal` for display,
    /// but round-trip through [`ErrorReply::code_raw`].
    pub fn from_u16(v: u16) -> Option<ErrorCode> {
        use ErrorCode::*;
        let all = [Malformed, UnexpectedKind, Busy, BadImage, UnsupportedFormat, ImageTooLarge, Internal, ShuttingDown];
        all.into_iter().chain([KeyRejected, SealedRequestInvalid, AttestationUnavailable]).find(|c| *c as u16 == v)
    }

    /// The snake_case name used in logs, metrics and the parent's JSON errors.
    pub fn name(self) -> &'static str {
        match self {
            ErrorCode::Malformed => "malformed",
            ErrorCode::UnexpectedKind => "unexpected_kind",
            ErrorCode::Busy => "busy",
            ErrorCode::BadImage => "bad_image",
            ErrorCode::UnsupportedFormat => "unsupported_format",
            ErrorCode::ImageTooLarge => "image_too_large",
            ErrorCode::Internal => "internal",
            ErrorCode::ShuttingDown => "shutting_down",
            ErrorCode::KeyRejected => "key_rejected",
            ErrorCode::SealedRequestInvalid => "sealed_request_invalid",
            ErrorCode::AttestationUnavailable => "attestation_unavailable",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ErrorReply {
    /// The raw code as sent; see [`ErrorReply::code`].
    pub code_raw: u16,
    pub message: String,
}

impl ErrorReply {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        let mut message = message.into();
        truncate_utf8(&mut message, MAX_STRING_LEN);
        ErrorReply { code_raw: code as u16, message }
    }

    /// The code, if this build knows it.
    pub fn code(&self) -> Option<ErrorCode> {
        ErrorCode::from_u16(self.code_raw)
    }
}

/// What the model server says about the model it serves.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelInfo {
    pub name: String,
    pub sha256: [u8; 32],
    pub synthetic: bool,
    /// N, C, H, W of the model's input.
    pub input_shape: [u32; 4],
    pub num_classes: u32,
    pub label_source: String,
    /// Empty, or one label per class, index = class id.
    pub labels: Vec<String>,
}

impl ModelInfo {
    pub fn sha256_hex(&self) -> String {
        self.sha256.iter().map(|b| format!("{b:02x}")).collect()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct InferRequest {
    pub top_k: u16,
    /// Encoded images (JPEG or PNG bytes), already base64-decoded by the parent.
    pub images: Vec<Vec<u8>>,
}

/// Per-stage timings of one image, in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StageTimings {
    /// From the request's arrival to a worker picking the image up.
    pub queue_us: u32,
    /// Decode, resize, crop and normalise.
    pub decode_us: u32,
    /// The model's forward pass.
    pub infer_us: u32,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClassScore {
    pub class_id: u32,
    pub score: f32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ImageResult {
    pub timings: StageTimings,
    /// Best first.
    pub top: Vec<ClassScore>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct InferReply {
    pub images: Vec<ImageResult>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    Ping,
    Pong,
    InfoQuery,
    Info(ModelInfo),
    Infer(InferRequest),
    Result(InferReply),
    Error(ErrorReply),
    Seed(Vec<u8>),
    Attest(Vec<u8>),
    Attestation(Vec<u8>),
    KeysQuery,
    Keys(Vec<u8>),
    Sealed(Vec<u8>),
    SealedReply(Vec<u8>),
}

impl Message {
    pub fn kind(&self) -> Kind {
        match self {
            Message::Ping => Kind::Ping,
            Message::Pong => Kind::Pong,
            Message::InfoQuery => Kind::InfoQuery,
            Message::Info(_) => Kind::Info,
            Message::Infer(_) => Kind::Infer,
            Message::Result(_) => Kind::Result,
            Message::Error(_) => Kind::Error,
            Message::Seed(_) => Kind::Seed,
            Message::Attest(_) => Kind::Attest,
            Message::Attestation(_) => Kind::Attestation,
            Message::KeysQuery => Kind::KeysQuery,
            Message::Keys(_) => Kind::Keys,
            Message::Sealed(_) => Kind::Sealed,
            Message::SealedReply(_) => Kind::SealedReply,
        }
    }

    /// The bytes of a message that carries opaque bytes.
    fn opaque(&self) -> Option<&[u8]> {
        match self {
            Message::Seed(b)
            | Message::Attest(b)
            | Message::Attestation(b)
            | Message::Keys(b)
            | Message::Sealed(b)
            | Message::SealedReply(b) => Some(b),
            _ => None,
        }
    }

    /// Decodes a body of the given kind. The whole body must be consumed.
    pub fn decode(kind: u8, body: &[u8]) -> Result<Message, FrameError> {
        let kind = Kind::from_u8(kind)?;
        let mut r = Reader::new(body);
        let msg = match kind {
            Kind::Ping => Message::Ping,
            Kind::Pong => Message::Pong,
            Kind::InfoQuery => Message::InfoQuery,
            Kind::KeysQuery => Message::KeysQuery,
            Kind::Info => Message::Info(decode_info(&mut r)?),
            Kind::Infer => Message::Infer(decode_infer(&mut r)?),
            Kind::Result => Message::Result(decode_result(&mut r)?),
            Kind::Error => {
                let code_raw = r.u16()?;
                let message = r.str()?;
                Message::Error(ErrorReply { code_raw, message })
            }
            Kind::Seed | Kind::Attest | Kind::Attestation | Kind::Keys | Kind::Sealed | Kind::SealedReply => {
                let bytes = check_opaque(kind, r.take(r.remaining())?)?.to_vec();
                match kind {
                    Kind::Seed => Message::Seed(bytes),
                    Kind::Attest => Message::Attest(bytes),
                    Kind::Attestation => Message::Attestation(bytes),
                    Kind::Keys => Message::Keys(bytes),
                    Kind::Sealed => Message::Sealed(bytes),
                    _ => Message::SealedReply(bytes),
                }
            }
        };
        r.finish()?;
        Ok(msg)
    }

    /// Encodes the body, checking the same limits the decoder checks, so that
    /// whatever encodes also decodes.
    pub fn encode_body(&self) -> Result<Vec<u8>, FrameError> {
        let mut w = Vec::new();
        match self {
            Message::Ping | Message::Pong | Message::InfoQuery | Message::KeysQuery => {}
            Message::Info(info) => {
                put_str(&mut w, &info.name)?;
                w.extend_from_slice(&info.sha256);
                w.push(u8::from(info.synthetic));
                for d in info.input_shape {
                    w.extend_from_slice(&d.to_le_bytes());
                }
                w.extend_from_slice(&info.num_classes.to_le_bytes());
                put_str(&mut w, &info.label_source)?;
                check_labels(info.labels.len(), info.num_classes)?;
                w.extend_from_slice(&(info.labels.len() as u32).to_le_bytes());
                for l in &info.labels {
                    put_str(&mut w, l)?;
                }
            }
            Message::Infer(req) => {
                check_top_k(usize::from(req.top_k))?;
                check_image_count(req.images.len())?;
                w.extend_from_slice(&req.top_k.to_le_bytes());
                w.extend_from_slice(&(req.images.len() as u16).to_le_bytes());
                for img in &req.images {
                    let len = u32::try_from(img.len()).map_err(|_| FrameError::FrameTooLarge(u32::MAX))?;
                    w.extend_from_slice(&len.to_le_bytes());
                    w.extend_from_slice(img);
                }
            }
            Message::Result(rep) => {
                check_image_count(rep.images.len())?;
                w.extend_from_slice(&(rep.images.len() as u16).to_le_bytes());
                for img in &rep.images {
                    let t = img.timings;
                    for v in [t.queue_us, t.decode_us, t.infer_us] {
                        w.extend_from_slice(&v.to_le_bytes());
                    }
                    if img.top.len() > MAX_FRAME_TOP_K {
                        return Err(FrameError::BadTopK(img.top.len()));
                    }
                    w.extend_from_slice(&(img.top.len() as u16).to_le_bytes());
                    for c in &img.top {
                        w.extend_from_slice(&c.class_id.to_le_bytes());
                        w.extend_from_slice(&c.score.to_le_bytes());
                    }
                }
            }
            Message::Error(e) => {
                w.extend_from_slice(&e.code_raw.to_le_bytes());
                put_str(&mut w, &e.message)?;
            }
            other => w.extend_from_slice(check_opaque(other.kind(), other.opaque().unwrap_or_default())?),
        }
        if w.len() > MAX_FRAME_LEN as usize {
            return Err(FrameError::FrameTooLarge(u32::try_from(w.len()).unwrap_or(u32::MAX)));
        }
        Ok(w)
    }
}

/// Checks an opaque body against its kind's bounds: 1 to [`Kind::byte_limit`] bytes.
pub fn check_opaque(kind: Kind, bytes: &[u8]) -> Result<&[u8], FrameError> {
    match kind.byte_limit() {
        Some(max) if !bytes.is_empty() && bytes.len() <= max => Ok(bytes),
        _ => Err(FrameError::BadLength { kind, len: bytes.len() }),
    }
}

/// One complete frame: a request id and its message.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    pub request_id: u64,
    pub message: Message,
}

impl Frame {
    pub fn new(request_id: u64, message: Message) -> Frame {
        Frame { request_id, message }
    }

    /// Header and body, ready to write.
    pub fn encode(&self) -> Result<Vec<u8>, FrameError> {
        let body = self.message.encode_body()?;
        let header = Header {
            kind: self.message.kind() as u8,
            // encode_body bounded the length by MAX_FRAME_LEN, which fits u32.
            body_len: body.len() as u32,
            request_id: self.request_id,
        };
        let mut out = Vec::with_capacity(HEADER_LEN + body.len());
        out.extend_from_slice(&header.encode());
        out.extend_from_slice(&body);
        Ok(out)
    }

    /// Decodes exactly one frame from `bytes`; trailing bytes are an error.
    pub fn decode(bytes: &[u8]) -> Result<Frame, FrameError> {
        let mut r = Reader::new(bytes);
        let head: [u8; HEADER_LEN] = r.array()?;
        let header = Header::parse(&head)?;
        let body = r.take(header.body_len as usize)?;
        r.finish()?;
        let message = Message::decode(header.kind, body)?;
        Ok(Frame { request_id: header.request_id, message })
    }
}

/// A frame read off a stream whose body is not decoded yet. Reading it can
/// fail only in ways that desynchronise the stream; decoding it
/// ([`RawFrame::message`]) fails in ways that leave the stream usable.
#[derive(Debug)]
pub struct RawFrame {
    pub header: Header,
    pub body: Vec<u8>,
}

impl RawFrame {
    pub fn message(&self) -> Result<Message, FrameError> {
        Message::decode(self.header.kind, &self.body)
    }
}

/// Reads one frame. `Ok(None)` is a clean end of stream (no byte of a new
/// frame arrived); an end of stream anywhere inside a frame is an error. The
/// header is checked before a byte of the body is read or allocated.
pub fn read_frame<R: Read>(r: &mut R) -> Result<Option<RawFrame>, FrameError> {
    let Some(header) = read_header(r)? else { return Ok(None) };
    let body = read_body(r, &header)?;
    Ok(Some(RawFrame { header, body }))
}

/// Reads and checks one header; `Ok(None)` is a clean end of stream. A server
/// that budgets memory reserves `body_len` between this and [`read_body`].
pub fn read_header<R: Read>(r: &mut R) -> Result<Option<Header>, FrameError> {
    let mut head = [0u8; HEADER_LEN];
    if read_full(r, &mut head)? == 0 {
        return Ok(None);
    }
    Header::parse(&head).map(Some)
}

/// Reads the body that `header` announced; an end of stream before its last
/// byte is an error.
pub fn read_body<R: Read>(r: &mut R, header: &Header) -> Result<Vec<u8>, FrameError> {
    // The length was bounded by Header::parse: this allocation is at most MAX_FRAME_LEN.
    let mut body = vec![0u8; header.body_len as usize];
    if read_full(r, &mut body)? == 0 && !body.is_empty() {
        return Err(FrameError::Truncated { needed: body.len(), available: 0 });
    }
    Ok(body)
}

/// Fills `buf` completely. Returns 0 if the stream ended before its first
/// byte, `buf.len()` on success, and `Truncated` if it ended part-way.
fn read_full<R: Read>(r: &mut R, buf: &mut [u8]) -> Result<usize, FrameError> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) if got == 0 => return Ok(0),
            Ok(0) => return Err(FrameError::Truncated { needed: buf.len(), available: got }),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(got)
}

/// Writes one frame and flushes.
pub fn write_frame<W: Write>(w: &mut W, frame: &Frame) -> Result<(), FrameError> {
    let bytes = frame.encode()?;
    w.write_all(&bytes)?;
    w.flush()?;
    Ok(())
}

// ---- body codecs ----

fn check_image_count(n: usize) -> Result<(), FrameError> {
    match n {
        0 => Err(FrameError::EmptyBatch),
        n if n > MAX_IMAGES => Err(FrameError::TooManyImages(n)),
        _ => Ok(()),
    }
}

fn check_top_k(k: usize) -> Result<(), FrameError> {
    if k == 0 || k > MAX_FRAME_TOP_K {
        return Err(FrameError::BadTopK(k));
    }
    Ok(())
}

fn check_labels(labels: usize, classes: u32) -> Result<(), FrameError> {
    if labels > MAX_LABELS || (labels != 0 && labels as u64 != u64::from(classes)) {
        return Err(FrameError::LabelCount { labels, classes });
    }
    Ok(())
}

fn decode_info(r: &mut Reader<'_>) -> Result<ModelInfo, FrameError> {
    let name = r.str()?;
    let sha256: [u8; 32] = r.array()?;
    let synthetic = match r.u8()? {
        0 => false,
        1 => true,
        b => return Err(FrameError::InvalidBool(b)),
    };
    let input_shape = [r.u32()?, r.u32()?, r.u32()?, r.u32()?];
    let num_classes = r.u32()?;
    let label_source = r.str()?;
    let count = r.u32()? as usize;
    check_labels(count, num_classes)?;
    // Each label takes at least its 2-byte length: a count the body cannot
    // hold is refused before the vector is sized by it.
    r.ensure(count.saturating_mul(2))?;
    let mut labels = Vec::with_capacity(count);
    for _ in 0..count {
        labels.push(r.str()?);
    }
    Ok(ModelInfo { name, sha256, synthetic, input_shape, num_classes, label_source, labels })
}

fn decode_infer(r: &mut Reader<'_>) -> Result<InferRequest, FrameError> {
    let body = r.buf;
    let (top_k, ranges) = decode_infer_ranges(r)?;
    let images = ranges.into_iter().map(|range| body[range].to_vec()).collect();
    Ok(InferRequest { top_k, images })
}

/// Decodes an `Infer` body without copying its images: `top_k` and, for each
/// image, where its bytes lie in `body`. The whole body must be consumed.
/// The model server hands these ranges of one shared body to its workers.
pub fn decode_infer_body(body: &[u8]) -> Result<(u16, Vec<Range<usize>>), FrameError> {
    let mut r = Reader::new(body);
    let out = decode_infer_ranges(&mut r)?;
    r.finish()?;
    Ok(out)
}

fn decode_infer_ranges(r: &mut Reader<'_>) -> Result<(u16, Vec<Range<usize>>), FrameError> {
    let total = r.remaining();
    let top_k = r.u16()?;
    check_top_k(usize::from(top_k))?;
    let count = usize::from(r.u16()?);
    check_image_count(count)?;
    let mut images = Vec::with_capacity(count);
    for _ in 0..count {
        let len = r.u32()? as usize;
        let start = total - r.remaining();
        r.take(len)?;
        images.push(start..start + len);
    }
    Ok((top_k, images))
}

fn decode_result(r: &mut Reader<'_>) -> Result<InferReply, FrameError> {
    let count = usize::from(r.u16()?);
    check_image_count(count)?;
    let mut images = Vec::with_capacity(count);
    for _ in 0..count {
        let timings = StageTimings { queue_us: r.u32()?, decode_us: r.u32()?, infer_us: r.u32()? };
        let k = usize::from(r.u16()?);
        if k > MAX_FRAME_TOP_K {
            return Err(FrameError::BadTopK(k));
        }
        // 8 bytes a score: a k the body cannot hold is refused before the vector is sized by it.
        r.ensure(k * 8)?;
        let mut top = Vec::with_capacity(k);
        for _ in 0..k {
            top.push(ClassScore { class_id: r.u32()?, score: f32::from_le_bytes(r.array()?) });
        }
        images.push(ImageResult { timings, top });
    }
    Ok(InferReply { images })
}

fn put_str(w: &mut Vec<u8>, s: &str) -> Result<(), FrameError> {
    if s.len() > MAX_STRING_LEN {
        return Err(FrameError::StringTooLong(s.len()));
    }
    w.extend_from_slice(&(s.len() as u16).to_le_bytes());
    w.extend_from_slice(s.as_bytes());
    Ok(())
}

/// Cuts a string to at most `max` bytes on a character boundary.
pub fn truncate_utf8(s: &mut String, max: usize) {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
}

/// A cursor over a borrowed slice. `take(n)` fails with `Truncated` when
/// fewer than `n` bytes are left; it can never read past the slice.
pub struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }

    pub fn remaining(&self) -> usize {
        self.buf.len()
    }

    fn ensure(&self, n: usize) -> Result<(), FrameError> {
        if n > self.buf.len() {
            return Err(FrameError::Truncated { needed: n, available: self.buf.len() });
        }
        Ok(())
    }

    pub fn take(&mut self, n: usize) -> Result<&'a [u8], FrameError> {
        self.ensure(n)?;
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    pub fn array<const N: usize>(&mut self) -> Result<[u8; N], FrameError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    pub fn u8(&mut self) -> Result<u8, FrameError> {
        Ok(self.array::<1>()?[0])
    }

    pub fn u16(&mut self) -> Result<u16, FrameError> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    pub fn u32(&mut self) -> Result<u32, FrameError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    pub fn str(&mut self) -> Result<String, FrameError> {
        let len = usize::from(self.u16()?);
        if len > MAX_STRING_LEN {
            return Err(FrameError::StringTooLong(len));
        }
        let bytes = self.take(len)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| FrameError::InvalidUtf8)
    }

    /// Succeeds only if every byte was consumed.
    pub fn finish(self) -> Result<(), FrameError> {
        match self.buf.len() {
            0 => Ok(()),
            n => Err(FrameError::TrailingBytes(n)),
        }
    }
}
