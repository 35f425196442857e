//! The development NSM's socket protocol: a Unix stream socket where each
//! message, both ways, is a 4-byte big-endian length then that many bytes of
//! CBOR (request at most [`MAX_REQUEST_LEN`], answer at most
//! [`MAX_RESPONSE_LEN`]). A connection may carry several requests, answered
//! in order.
//!
//! Bounds, so that no client can hang or exhaust the service: at most
//! [`ServerConfig::max_connections`] connections at once (one thread each;
//! more are closed at once), a connection idle for
//! [`ServerConfig::idle_timeout`] between requests is closed, and a request
//! must arrive whole within [`ServerConfig::frame_timeout`] of its first byte.
//! A request whose length is over the limit is answered `InputTooLarge` and
//! the connection closed (its body is not read). Undecodable CBOR gets an
//! `{"Error": ...}` answer and the connection stays usable.
//!
//! One log line per request, on stderr: connection number, operation, result,
//! sizes, duration; never the request's or answer's content.

use std::io::{self, ErrorKind, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::nsm::{DevNsm, ErrorCode, Response, MAX_REQUEST_LEN, MAX_RESPONSE_LEN};

/// The service's bounds.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Connections served at once (one thread each).
    pub max_connections: usize,
    /// How long a connection may wait between requests.
    pub idle_timeout: Duration,
    /// How long a request, or an answer, may take to cross once started.
    pub frame_timeout: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig { max_connections: 8, idle_timeout: Duration::from_secs(60), frame_timeout: Duration::from_secs(5) }
    }
}

/// What arrived on a connection.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming {
    /// One request's bytes.
    Request(Vec<u8>),
    /// A length over [`MAX_REQUEST_LEN`]; the body was not read.
    TooLarge(u32),
    /// The peer closed the connection between requests.
    Closed,
}

/// Reads one length-prefixed request: waits up to `idle` for its first byte,
/// then up to `frame` for the rest. Errors: timeouts (`WouldBlock` or
/// `TimedOut`), `UnexpectedEof` if the peer closed mid-message.
pub fn read_request(stream: &mut UnixStream, idle: Duration, frame: Duration) -> io::Result<Incoming> {
    let mut header = [0u8; 4];
    stream.set_read_timeout(Some(idle))?;
    let first = loop {
        match stream.read(&mut header[..1]) {
            Ok(n) => break n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    };
    if first == 0 {
        return Ok(Incoming::Closed);
    }
    let deadline = Instant::now() + frame;
    read_exact_by(stream, &mut header[1..], deadline)?;
    let len = u32::from_be_bytes(header);
    if len as usize > MAX_REQUEST_LEN {
        return Ok(Incoming::TooLarge(len));
    }
    let mut body = vec![0u8; len as usize];
    read_exact_by(stream, &mut body, deadline)?;
    Ok(Incoming::Request(body))
}

/// Fills `buf` from the stream, failing with `TimedOut` at `deadline`.
fn read_exact_by(stream: &mut UnixStream, buf: &mut [u8], deadline: Instant) -> io::Result<()> {
    let mut filled = 0;
    while filled < buf.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(ErrorKind::TimedOut, "message not complete in time"));
        }
        stream.set_read_timeout(Some(left))?;
        match stream.read(&mut buf[filled..]) {
            Ok(0) => return Err(io::Error::new(ErrorKind::UnexpectedEof, "closed in the middle of a message")),
            Ok(n) => filled += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Writes one length-prefixed message (at most [`MAX_RESPONSE_LEN`] bytes).
pub fn write_message(stream: &mut UnixStream, body: &[u8], timeout: Duration) -> io::Result<()> {
    if body.len() > MAX_RESPONSE_LEN {
        return Err(io::Error::new(ErrorKind::InvalidInput, "answer over the size limit"));
    }
    stream.set_write_timeout(Some(timeout))?;
    let mut msg = Vec::with_capacity(4 + body.len());
    msg.extend_from_slice(&(body.len() as u32).to_be_bytes());
    msg.extend_from_slice(body);
    stream.write_all(&msg)
}

/// Accepts connections forever, each served on its own thread within the
/// bounds of `config`.
pub fn serve(listener: UnixListener, nsm: Arc<DevNsm>, config: ServerConfig) -> ! {
    let active = Arc::new(AtomicUsize::new(0));
    let next_id = AtomicU64::new(1);
    loop {
        let stream = match listener.accept() {
            Ok((stream, _)) => stream,
            Err(e) => {
                // EMFILE and the like: wait rather than spin.
                eprintln!("dev-nsm: accept: {e}");
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        let id = next_id.fetch_add(1, Ordering::Relaxed);
        if active.fetch_add(1, Ordering::SeqCst) >= config.max_connections {
            active.fetch_sub(1, Ordering::SeqCst);
            eprintln!("dev-nsm: conn {id}: refused, already {} connections", config.max_connections);
            continue; // dropping the stream closes it
        }
        let slot = Slot(Arc::clone(&active));
        let (nsm, config) = (Arc::clone(&nsm), config.clone());
        let spawned = std::thread::Builder::new().name(format!("conn-{id}")).spawn(move || {
            let _slot = slot;
            serve_connection(stream, &nsm, &config, id);
        });
        if let Err(e) = spawned {
            eprintln!("dev-nsm: conn {id}: cannot start a thread: {e}");
        }
    }
}

/// A connection's place in the count, given back when its thread ends.
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Answers the requests of one connection until it closes, idles out or
/// breaks the framing.
pub fn serve_connection(mut stream: UnixStream, nsm: &DevNsm, config: &ServerConfig, id: u64) {
    loop {
        let request = match read_request(&mut stream, config.idle_timeout, config.frame_timeout) {
            Ok(Incoming::Request(r)) => r,
            Ok(Incoming::Closed) => return,
            Ok(Incoming::TooLarge(len)) => {
                eprintln!("dev-nsm: conn {id}: - InputTooLarge, length {len} over {MAX_REQUEST_LEN}; closing");
                let _ = write_message(&mut stream, &Response::Error(ErrorCode::InputTooLarge).encode(), config.frame_timeout);
                return;
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                eprintln!("dev-nsm: conn {id}: closed: timed out");
                return;
            }
            Err(e) => {
                eprintln!("dev-nsm: conn {id}: closed: {e}");
                return;
            }
        };
        let started = Instant::now();
        let handled = nsm.handle(&request);
        let result = handled.error.map_or("ok", ErrorCode::as_str);
        eprintln!(
            "dev-nsm: conn {id}: {} {result}, {} B in, {} B out, {} ms",
            handled.op,
            request.len(),
            handled.response.len(),
            started.elapsed().as_millis()
        );
        if let Err(e) = write_message(&mut stream, &handled.response, config.frame_timeout) {
            eprintln!("dev-nsm: conn {id}: closed: cannot answer: {e}");
            return;
        }
    }
}
