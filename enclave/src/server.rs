//! The frame server: accepts connections and answers frames.
//!
//! One thread per connection, at most `max_connections` of them: a client
//! beyond that gets one `busy` error frame and is closed. A connection
//! handles one request at a time (read a frame, answer it, read the next).
//! Inference itself runs on the [`Pool`].
//!
//! The hostile-input policy, per connection:
//! - header-level error (bad magic, version, oversized length) or a stream
//!   that ends or stalls mid-frame: answer one `malformed` frame if the
//!   peer still listens, then close this connection;
//! - body-level error (unknown kind, bad counts, trailing bytes, zero or too
//!   many images): answer an error frame and keep the connection;
//! - a frame must arrive whole within [`FRAME_BODY_TIMEOUT`] of its first
//!   byte, and a reply must be taken within the same time, or the connection
//!   is closed. An idle connection costs one parked thread and nothing else.
//!
//! Nothing from a request (image bytes, results) is ever logged.

use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use shared::frame::{
    read_frame, truncate_utf8, write_frame, ErrorCode, ErrorReply, Frame, FrameError, ImageResult, InferReply, InferRequest, Message,
};
use shared::limits::{FRAME_BODY_TIMEOUT, MAX_STRING_LEN, SHUTDOWN_GRACE};
use shared::transport::{wait_readable, Listener, Stream};

use crate::pool::{Pool, SubmitError};

/// How often blocked threads look at the shutdown flag.
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
}

struct Ctx {
    pool: Pool,
    info: Frame,
    shutdown: Arc<AtomicBool>,
    on_seed: fn(&[u8]) -> std::io::Result<()>,
}

impl Server {
    /// Serves until the shutdown flag is set, then drains: stops accepting,
    /// lets open requests finish (at most [`SHUTDOWN_GRACE`]) and returns.
    pub fn run(self) {
        let Server { listener, pool, info, max_connections, shutdown, on_seed } = self;
        let ctx = Arc::new(Ctx { pool, info, shutdown, on_seed });
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
                refuse(&mut stream, ErrorCode::Busy, "too many connections; retry later");
                continue;
            }
            active.fetch_add(1, Ordering::SeqCst);
            let (ctx, active2) = (Arc::clone(&ctx), Arc::clone(&active));
            let spawned = std::thread::Builder::new().name("conn".into()).spawn(move || {
                serve_connection(stream, &ctx);
                active2.fetch_sub(1, Ordering::SeqCst);
            });
            if let Err(e) = spawned {
                active.fetch_sub(1, Ordering::SeqCst);
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

/// Most bytes read and thrown away after a malformed frame (see [`drain`]).
const DRAIN_MAX: u64 = 1 << 20;

/// Best-effort error frame to a connection we will not serve; the peer then
/// reads end of stream. Runs on the accept loop for the connection limit, so
/// it never waits on the peer (a fresh socket takes a small frame at once).
fn refuse(stream: &mut Stream, code: ErrorCode, message: &str) {
    let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
    let _ = write_frame(stream, &Frame::new(0, Message::Error(ErrorReply::new(code, message))));
    let _ = stream.shutdown_write();
}

/// Reads and drops what the peer still sends (bounded in bytes and time),
/// so that closing the socket does not reset it: a reset with unread input
/// would destroy the error frame before the peer reads it. Runs on the
/// connection's own thread only.
fn drain(mut stream: Stream) {
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    let _ = std::io::copy(&mut (&mut stream).take(DRAIN_MAX), &mut std::io::sink());
}

fn serve_connection(mut stream: Stream, ctx: &Ctx) {
    if stream.set_read_timeout(Some(FRAME_BODY_TIMEOUT)).is_err()
        || stream.set_write_timeout(Some(FRAME_BODY_TIMEOUT)).is_err()
    {
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
        let raw = match read_frame(&mut stream) {
            Ok(Some(raw)) => raw,
            Ok(None) => return, // the peer closed cleanly
            // Stalled or broken peer: nobody to answer.
            Err(FrameError::Io(_)) => return,
            Err(e) => {
                refuse(&mut stream, ErrorCode::Malformed, &e.to_string());
                return drain(stream);
            }
        };
        let id = raw.header.request_id;
        let reply = match raw.message() {
            Ok(msg) => answer(msg, ctx),
            Err(e) => Message::Error(ErrorReply::new(ErrorCode::Malformed, e.to_string())),
        };
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
        Message::Infer(req) => infer(req, ctx),
        other => err(ErrorCode::UnexpectedKind, &format!("{:?} is a reply, not a request", other.kind())),
    }
}

fn infer(req: InferRequest, ctx: &Ctx) -> Message {
    if ctx.shutdown.load(Ordering::SeqCst) {
        return Message::Error(ErrorReply::new(ErrorCode::ShuttingDown, "the model server is shutting down"));
    }
    let n = req.images.len();
    let rx = match ctx.pool.submit(req.images, usize::from(req.top_k)) {
        Ok(rx) => rx,
        Err(SubmitError::Busy { queued, capacity }) => {
            return Message::Error(ErrorReply::new(
                ErrorCode::Busy,
                format!("queue full ({queued} of {capacity} images waiting); retry later"),
            ))
        }
        Err(SubmitError::Closed) => {
            return Message::Error(ErrorReply::new(ErrorCode::ShuttingDown, "the model server is shutting down"))
        }
    };
    let mut slots: Vec<Option<ImageResult>> = vec![None; n];
    let mut first_error: Option<(usize, ErrorReply)> = None;
    // The pool answers every job exactly once; the loop ends when all did.
    for (index, outcome) in rx.iter().take(n) {
        match outcome {
            Ok(r) => {
                if let Some(slot) = slots.get_mut(index) {
                    *slot = Some(r);
                }
            }
            Err(e) => {
                if first_error.as_ref().is_none_or(|(i, _)| index < *i) {
                    first_error = Some((index, e));
                }
            }
        }
    }
    if let Some((index, e)) = first_error {
        let mut message = format!("image {index}: {}", e.message);
        truncate_utf8(&mut message, MAX_STRING_LEN);
        return Message::Error(ErrorReply { code_raw: e.code_raw, message });
    }
    match slots.into_iter().collect::<Option<Vec<_>>>() {
        Some(images) => Message::Result(InferReply { images }),
        None => Message::Error(ErrorReply::new(ErrorCode::Internal, "a worker result went missing")),
    }
}
