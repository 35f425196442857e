//! The frame server: accepts connections and answers frames.
//!
//! One thread per connection, at most `max_connections` of them: a client
//! beyond that gets one `busy` error frame and is closed. A connection
//! handles one request at a time (read a frame, answer it, read the next).
//! Inference itself runs on the [`Pool`].
//!
//! Memory: a frame's body is allocated only after its length has been
//! reserved from the server-wide [`FrameBudget`] ([`FRAME_MEMORY_BUDGET`]
//! bytes for all connections together); the reservation is given back when
//! the body is freed, after the last of its images has been processed. The
//! images are handed to the workers as ranges of that one body, never copied.
//!
//! The hostile-input policy, per connection:
//! - header-level error (bad magic, version, oversized length) or a stream
//!   that ends or stalls mid-frame: answer one `malformed` frame if the
//!   peer still listens, then close this connection;
//! - a frame whose length does not fit in what is left of the frame budget:
//!   answer `busy`, then close (its body is never read into memory);
//! - body-level error (unknown kind, bad counts, trailing bytes, zero or too
//!   many images): answer an error frame and keep the connection;
//! - a frame must arrive whole within [`FRAME_BODY_TIMEOUT`] of its first
//!   byte (one deadline for the whole frame, however the peer paces its
//!   bytes), and a reply must be taken within the same time, or the
//!   connection is closed. An idle connection costs one parked thread.
//! - after a `malformed` or `busy` answer, what the peer still sends is read
//!   and dropped for at most [`DRAIN_MAX_BYTES`] and [`DRAIN_TIMEOUT`];
//! - a request whose connection hangs up, or one of whose images fails, is
//!   cancelled: its images still queued are not run.
//! - a sealed request (sealed.rs) reserves twice its length (it is held
//!   sealed and opened at once for a moment); one that names a key we do not
//!   hold is answered `key_rejected`, one that does not open
//!   `sealed_request_invalid`; an error inside an opened request (not an
//!   image, a bad path) is answered sealed, as the inner HTTP status.
//!
//! Nothing from a request (image bytes, results) is ever logged.

use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::RecvTimeoutError;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use shared::frame::{
    check_opaque, decode_infer_body, read_body, read_header, truncate_utf8, write_frame, ErrorCode, ErrorReply, Frame, FrameError,
    Header, ImageResult, InferReply, Kind, Message,
};
use shared::limits::{DRAIN_MAX_BYTES, DRAIN_TIMEOUT, FRAME_BODY_TIMEOUT, FRAME_MEMORY_BUDGET, MAX_STRING_LEN, SHUTDOWN_GRACE};
use shared::transport::{peer_hung_up, wait_readable, Listener, Stream};

use crate::pool::{Batch, Pool, SubmitError};
use crate::sealed::{self, Gateway};

/// How often blocked threads look at the shutdown flag, and a connection
/// waiting for its images looks whether its peer is still there.
const POLL_INTERVAL: Duration = Duration::from_millis(200);

pub struct Server {
    pub listener: Listener,
    pub pool: Pool,
    pub info: Frame,
    pub max_connections: usize,
    pub shutdown: Arc<AtomicBool>,
    /// Called with the bytes of a `Seed` frame (the enclave mixes them into
    /// its entropy pool without crediting them).
    pub on_seed: fn(&[u8]) -> std::io::Result<()>,
    /// Sealing keys and attestation (sealed.rs).
    pub gateway: Gateway,
}

struct Ctx {
    pool: Pool,
    info: Frame,
    shutdown: Arc<AtomicBool>,
    on_seed: fn(&[u8]) -> std::io::Result<()>,
    budget: Arc<FrameBudget>,
    gateway: Gateway,
}

/// Bytes of frame bodies the server may hold at once, over all connections.
pub struct FrameBudget {
    left: Mutex<u64>,
    total: u64,
}

/// A reservation from a [`FrameBudget`], given back when dropped.
pub struct Grant {
    budget: Arc<FrameBudget>,
    bytes: u64,
}

impl FrameBudget {
    pub fn new(total: u64) -> Arc<FrameBudget> {
        Arc::new(FrameBudget { left: Mutex::new(total), total })
    }

    /// Reserves `bytes`, or returns how many are left if they do not fit.
    pub fn reserve(self: &Arc<Self>, bytes: u64) -> Result<Grant, u64> {
        let mut left = self.left.lock().unwrap_or_else(|p| p.into_inner());
        match left.checked_sub(bytes) {
            Some(rest) => {
                *left = rest;
                Ok(Grant { budget: Arc::clone(self), bytes })
            }
            None => Err(*left),
        }
    }
}

impl Drop for Grant {
    fn drop(&mut self) {
        let mut left = self.budget.left.lock().unwrap_or_else(|p| p.into_inner());
        *left = left.saturating_add(self.bytes).min(self.budget.total);
    }
}

/// A frame body and its reservation: the memory is given back to the budget
/// when the last holder (the connection, or a worker with one of its images)
/// drops it.
struct HeldBody {
    bytes: Vec<u8>,
    _grant: Grant,
}

impl AsRef<[u8]> for HeldBody {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

/// Counts a connection for as long as it lives, panics included.
struct Active(Arc<AtomicUsize>);

impl Active {
    fn enter(count: &Arc<AtomicUsize>) -> Active {
        count.fetch_add(1, Ordering::SeqCst);
        Active(Arc::clone(count))
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Reads from a stream until a fixed instant: before each read the socket's
/// timeout is set to the time that is left, so the whole frame, not each
/// read, is bounded.
struct Deadline<'a> {
    stream: &'a mut Stream,
    until: Instant,
}

impl Read for Deadline<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        self.stream.set_read_timeout(Some(left))?;
        self.stream.read(buf)
    }
}

impl Server {
    /// Serves until the shutdown flag is set, then drains: stops accepting,
    /// lets open requests finish (at most [`SHUTDOWN_GRACE`]) and returns.
    pub fn run(self) {
        let Server { listener, pool, info, max_connections, shutdown, on_seed, gateway } = self;
        let budget = FrameBudget::new(FRAME_MEMORY_BUDGET);
        let ctx = Arc::new(Ctx { pool, info, shutdown, on_seed, budget, gateway });
        let active = Arc::new(AtomicUsize::new(0));
        while !ctx.shutdown.load(Ordering::SeqCst) {
            let mut stream = match listener.accept_timeout(POLL_INTERVAL) {
                Ok(Some(s)) => s,
                Ok(None) => continue,
                Err(e) => {
                    eprintln!("accept failed: {e}");
                    std::thread::sleep(POLL_INTERVAL);
                    continue;
                }
            };
            if active.load(Ordering::SeqCst) >= max_connections {
                refuse(&mut stream, 0, ErrorReply::new(ErrorCode::Busy, "too many connections; retry later"));
                continue;
            }
            let (ctx, counted) = (Arc::clone(&ctx), Active::enter(&active));
            let spawned = std::thread::Builder::new().name("conn".into()).spawn(move || {
                let _counted = counted;
                serve_connection(stream, &ctx);
            });
            // If the thread did not start, the closure and its count were dropped.
            if let Err(e) = spawned {
                eprintln!("cannot start a connection thread: {e}");
            }
        }
        drop(listener);
        let deadline = Instant::now() + SHUTDOWN_GRACE;
        while active.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let left = active.load(Ordering::SeqCst);
        if left > 0 {
            eprintln!("shutdown: {left} connections still busy after {SHUTDOWN_GRACE:?}; leaving them");
        }
        if let Ok(ctx) = Arc::try_unwrap(ctx) {
            eprintln!("shutdown: {} worker panics caught since start", ctx.pool.panics());
            ctx.pool.shutdown();
        }
    }
}

/// Best-effort error frame to a connection we will not serve; the peer then
/// reads end of stream. Runs on the accept loop for the connection limit, so
/// it never waits on the peer (a fresh socket takes a small frame at once).
fn refuse(stream: &mut Stream, id: u64, error: ErrorReply) {
    let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
    let _ = write_frame(stream, &Frame::new(id, Message::Error(error)));
    let _ = stream.shutdown_write();
}

/// Reads and drops what the peer still sends (at most [`DRAIN_MAX_BYTES`],
/// for at most [`DRAIN_TIMEOUT`]), so that closing the socket does not reset
/// it: a reset with unread input would destroy the error frame before the
/// peer reads it. Runs on the connection's own thread only.
fn drain(mut stream: Stream) {
    let until = Instant::now() + DRAIN_TIMEOUT;
    let mut reader = Deadline { stream: &mut stream, until }.take(DRAIN_MAX_BYTES);
    let _ = io::copy(&mut reader, &mut io::sink());
}

/// The answer to give a connection before closing it, with the request id it
/// answers (0 when the header was unreadable).
type Refusal = (u64, ErrorReply);

/// Reads one frame's header and body within [`FRAME_BODY_TIMEOUT`] of its
/// first byte, reserving the body's length from the budget first (twice its
/// length for a sealed request, which is held opened and sealed at once for
/// a moment). `Ok(None)`
/// is a clean end of stream; `Err` carries the answer to give before closing,
/// with the request id it answers (0 when the header was unreadable), or
/// none when the peer is gone or stalled.
fn read_request(
    stream: &mut Stream,
    budget: &Arc<FrameBudget>,
) -> Result<Option<(Header, HeldBody)>, Option<Refusal>> {
    let until = Instant::now() + FRAME_BODY_TIMEOUT;
    let mut r = Deadline { stream, until };
    let fail = |id| {
        move |e: FrameError| match e {
            FrameError::Io(_) => None, // stalled or broken peer: nobody to answer
            e => Some((id, ErrorReply::new(ErrorCode::Malformed, e.to_string()))),
        }
    };
    let Some(header) = read_header(&mut r).map_err(fail(0))? else { return Ok(None) };
    let copies = if header.kind == Kind::Sealed as u8 { 2 } else { 1 };
    let grant = budget.reserve(copies * u64::from(header.body_len)).map_err(|left| {
        Some((header.request_id, ErrorReply::new(
            ErrorCode::Busy,
            format!(
                "a frame of {} bytes does not fit in the {left} bytes left of the model server's \
                 {FRAME_MEMORY_BUDGET}-byte frame budget; retry later",
                header.body_len
            ),
        )))
    })?;
    let bytes = read_body(&mut r, &header).map_err(fail(header.request_id))?;
    Ok(Some((header, HeldBody { bytes, _grant: grant })))
}

fn serve_connection(mut stream: Stream, ctx: &Ctx) {
    if stream.set_write_timeout(Some(FRAME_BODY_TIMEOUT)).is_err() {
        return;
    }
    loop {
        // Wait for the next frame's first byte, looking at the shutdown flag
        // between waits; once it comes, the whole frame must follow in time.
        match wait_readable(&stream, POLL_INTERVAL) {
            Ok(true) => {}
            Ok(false) if ctx.shutdown.load(Ordering::SeqCst) => return,
            Ok(false) => continue,
            Err(_) => return,
        }
        let (header, body) = match read_request(&mut stream, &ctx.budget) {
            Ok(Some(request)) => request,
            Ok(None) | Err(None) => return,
            Err(Some((id, answer))) => {
                refuse(&mut stream, id, answer);
                return drain(stream);
            }
        };
        let id = header.request_id;
        // Inference requests are answered from their undecoded bodies.
        let reply = match Kind::from_u8(header.kind) {
            Ok(Kind::Infer) => infer(Arc::new(body), ctx, &stream),
            Ok(Kind::Sealed) => open_sealed(body, ctx, &stream),
            _ => Some(match Message::decode(header.kind, &body.bytes) {
                Ok(msg) => answer(msg, ctx),
                Err(e) => Message::Error(ErrorReply::new(ErrorCode::Malformed, e.to_string())),
            }),
        };
        let Some(reply) = reply else { return }; // the peer hung up: nobody to answer
        // A reply that cannot be encoded (it would break a limit) becomes an
        // internal error, so the client always gets an answer.
        let bytes = Frame::new(id, reply).encode().or_else(|e| {
            let why = ErrorReply::new(ErrorCode::Internal, format!("reply not encodable: {e}"));
            Frame::new(id, Message::Error(why)).encode()
        });
        let Ok(bytes) = bytes else { return };
        if stream.write_all(&bytes).and_then(|()| stream.flush()).is_err() {
            return;
        }
    }
}

fn answer(msg: Message, ctx: &Ctx) -> Message {
    let err = |code, m: &str| Message::Error(ErrorReply::new(code, m));
    match msg {
        Message::Ping => Message::Pong,
        Message::InfoQuery => ctx.info.message.clone(),
        Message::Seed(bytes) => match (ctx.on_seed)(&bytes) {
            Ok(()) => Message::Pong,
            Err(e) => err(ErrorCode::Internal, &format!("cannot mix the seed: {e}")),
        },
        Message::Attest(nonce) => ctx.gateway.attest(&nonce).map_or_else(Message::Error, Message::Attestation),
        Message::KeysQuery => Message::Keys(ctx.gateway.key_list()),
        // Infer frames are answered by `infer`, from their undecoded body.
        other => err(ErrorCode::UnexpectedKind, &format!("{:?} is a reply, not a request", other.kind())),
    }
}

/// Runs one inference request. `None` when its connection hung up before
/// the answer was ready (the request is then cancelled).
fn infer(body: Arc<HeldBody>, ctx: &Ctx, stream: &Stream) -> Option<Message> {
    match decode_infer_body(&body.bytes) {
        Ok((top_k, images)) => Some(run(body, images, top_k, ctx, stream)?.map_or_else(Message::Error, Message::Result)),
        Err(e) => Some(Message::Error(ErrorReply::new(ErrorCode::Malformed, e.to_string()))),
    }
}

/// Opens a sealed request, classifies its image and seals the answer; an
/// error inside the opened request is answered sealed too. `None` when the
/// connection hung up.
fn open_sealed(body: HeldBody, ctx: &Ctx, stream: &Stream) -> Option<Message> {
    let start = Instant::now();
    let HeldBody { bytes, _grant } = body;
    if let Err(e) = check_opaque(Kind::Sealed, &bytes) {
        return Some(Message::Error(ErrorReply::new(ErrorCode::Malformed, e.to_string())));
    }
    let (opened, responder) = match ctx.gateway.open(&bytes) {
        Ok(opened) => opened,
        Err(e) => return Some(Message::Error(e)),
    };
    drop(bytes);
    let opened = Arc::new(HeldBody { bytes: opened, _grant });
    let answer = match sealed::inner_request(&opened.bytes) {
        Err(answer) => answer,
        Ok((image, top_k)) => {
            let parsed = start.elapsed();
            match run(Arc::clone(&opened), vec![image], top_k, ctx, stream)? {
                Ok(InferReply { images }) => match images.first() {
                    Some(r) => {
                        let us = |d: Duration| d.as_micros() as u64;
                        let (total, parse) = (us(start.elapsed()), us(parsed));
                        sealed::result_answer(&ctx.gateway.info, r, parse, total - parse, total)
                    }
                    None => sealed::error_answer(500, "backend_internal", "no result"),
                },
                Err(e) => sealed::error_reply_answer(&e),
            }
        }
    };
    drop(opened);
    Some(ctx.gateway.seal(responder, answer).map_or_else(Message::Error, Message::SealedReply))
}

/// Runs the images (ranges of `body`) on the pool and gathers their results,
/// or the first failing image's error. `None` when the connection hung up.
fn run(
    body: Arc<HeldBody>,
    images: Vec<std::ops::Range<usize>>,
    top_k: u16,
    ctx: &Ctx,
    stream: &Stream,
) -> Option<Result<InferReply, ErrorReply>> {
    let error = |code, m: String| Some(Err(ErrorReply::new(code, m)));
    if ctx.shutdown.load(Ordering::SeqCst) {
        return error(ErrorCode::ShuttingDown, "the model server is shutting down".into());
    }
    let n = images.len();
    let cancel = Arc::new(AtomicBool::new(false));
    let batch = Batch { body, images, top_k: usize::from(top_k), cancel: Arc::clone(&cancel) };
    let rx = match ctx.pool.submit(batch) {
        Ok(rx) => rx,
        Err(SubmitError::Busy { queued, capacity }) => {
            return error(ErrorCode::Busy, format!("queue full ({queued} of {capacity} images waiting); retry later"))
        }
        Err(SubmitError::Closed) => return error(ErrorCode::ShuttingDown, "the model server is shutting down".into()),
    };
    let mut slots: Vec<Option<ImageResult>> = vec![None; n];
    let mut first_error: Option<(usize, ErrorReply)> = None;
    // The pool answers every job exactly once; the loop ends when all did.
    let mut answered = 0;
    while answered < n {
        let (index, outcome) = match rx.recv_timeout(POLL_INTERVAL) {
            Ok(got) => got,
            Err(RecvTimeoutError::Timeout) if peer_hung_up(stream) => {
                ctx.pool.cancel(&cancel);
                return None;
            }
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => break,
        };
        answered += 1;
        match outcome {
            Ok(r) => {
                if let Some(slot) = slots.get_mut(index) {
                    *slot = Some(r);
                }
            }
            Err(e) => {
                // The request has failed: its images still queued need not run.
                ctx.pool.cancel(&cancel);
                if first_error.as_ref().is_none_or(|(i, _)| index < *i) {
                    first_error = Some((index, e));
                }
            }
        }
    }
    if let Some((index, e)) = first_error {
        let mut message = format!("image {index}: {}", e.message);
        truncate_utf8(&mut message, MAX_STRING_LEN);
        return Some(Err(ErrorReply { code_raw: e.code_raw, message }));
    }
    match slots.into_iter().collect::<Option<Vec<_>>>() {
        Some(images) => Some(Ok(InferReply { images })),
        None => error(ErrorCode::Internal, "a worker result went missing".into()),
    }
}
