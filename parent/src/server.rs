//! The HTTP front: tiny_http, a fixed pool of handler threads, the routes.
//!
//! What it does: `N` threads share one `Arc<tiny_http::Server>` and loop on
//! `recv()`; each request is routed ([`Route`]), handled to completion
//! (including the backend round trip) and answered, then the thread takes
//! the next one. A separate thread pings both backends every
//! [`READY_CHECK_INTERVAL`] for `/ready` and the `parent_backend_up` gauges.
//! Shutdown sets a flag and calls `unblock()` once per handler thread.
//!
//! Why it is built this way: blocking I/O on a fixed number of threads keeps
//! the parent's concurrency, memory (one body per thread) and backend load
//! bounded and easy to reason about; there is no async runtime. tiny_http
//! leaves some limits to us, enforced here: Content-Length must be present on
//! a POST (411) and at most `--max-body` (413, refused before reading); a
//! chunked body is read through `take(max + 1)` so it can never exceed it.
//!
//! What it refuses, and the logging policy: every error is a JSON body
//! `{"error", "code"}` with its status (see [`ApiError`]). The access log
//! (stderr) has one line per request with the method, the route *name*, the
//! status, the reply size and the duration, and nothing else: no URL, no
//! query, no header, no body, no result, for any route. Error details go to
//! the client only. A panic in a handler is caught (the client gets a 500) and
//! the panic hook set in `main` prints only its location, not its message.
//!
//! Connections, timeouts and what tiny_http leaves to us (issue 7; the
//! socket side is in [`crate::listen`]):
//! - Every connection has the listener's read and write idle timeout
//!   (`--io-timeout-ms`, default [`shared::limits::HTTP_IO_TIMEOUT`]). A body must also keep
//!   an average of [`HTTP_BODY_MIN_RATE`] once [`HTTP_BODY_GRACE`] has
//!   passed: a trickling or stalled body gets 408 `body_timeout`, so it holds
//!   a handler thread for seconds, not forever.
//! - More than [`MAX_HTTP_HEADERS`] header lines or [`MAX_HTTP_HEADER_BYTES`]
//!   bytes of headers: 431, before anything else is looked at.
//! - Ambiguous framing (RFC 9112, section 6.3): two or more Content-Length
//!   headers (even equal), a Content-Length that is not just digits (`+12`,
//!   `1e3`, `-1`), Content-Length together with Transfer-Encoding, or a
//!   Transfer-Encoding other than `chunked`: 400 `bad_framing`, before the
//!   route is looked at.
//! - A request whose body is not read to its end (refused early, 413, 415,
//!   408, and every chunked one) is answered with `Connection: close` and
//!   its connection is closed after the reply: the unread bytes are never
//!   parsed as a next request (request smuggling). That is done by our patch
//!   of tiny_http (third_party/tiny_http/PATCHES.md), which also never drains
//!   an unread body on the thread that drops the request: the connection's
//!   own tiny_http thread discards a bounded amount after the reply, so a
//!   handler thread is free as soon as the reply is written, and a declared
//!   length of a terabyte is an ordinary 413.
//! - The handler threads take requests from a [`Front`]: when tiny_http's
//!   accept loop stops (it does at its first `accept` error), the first
//!   thread to see the error starts a new `tiny_http::Server` on a clone of
//!   the same listening socket; the old one is kept, and drained, so its
//!   open connections are still answered.

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use shared::limits::{HTTP_BODY_GRACE, HTTP_BODY_MIN_RATE, MAX_HTTP_HEADERS, MAX_HTTP_HEADER_BYTES, READY_CHECK_INTERVAL};
use tiny_http::{Header, Method, Request, Response};

use crate::api::{body_kind, parse_request, render_result, top_k_from_query, ApiError, Timings};
use crate::backend::Backend;
use crate::metrics::{Metrics, Route};

/// Everything a handler thread needs.
pub struct App {
    pub secure: Arc<Backend>,
    pub public: Arc<Backend>,
    pub metrics: Metrics,
    pub max_body: usize,
    /// `--sealed-only`: plaintext secure requests get 403 `sealed_only`.
    pub sealed_only: bool,
}

/// A reply before it is written.
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) body: Vec<u8>,
    pub(crate) content_type: &'static str,
    pub(crate) headers: Vec<(&'static str, String)>,
}

impl Reply {
    pub(crate) fn json(status: u16, v: &Value) -> Reply {
        let mut body = v.to_string().into_bytes();
        body.push(b'\n');
        Reply { status, body, content_type: "application/json", headers: Vec::new() }
    }

    /// A 200 of bytes passed on as they are.
    pub(crate) fn bytes(body: Vec<u8>, content_type: &'static str) -> Reply {
        Reply { status: 200, body, content_type, headers: Vec::new() }
    }

    pub(crate) fn error(e: &ApiError) -> Reply {
        let mut r = Reply::json(e.status(), &e.body());
        r.content_type = e.content_type();
        if let Some(allow) = e.allow() {
            r.headers.push(("Allow", allow.to_string()));
        }
        if let Some(secs) = e.retry_after() {
            r.headers.push(("Retry-After", secs.to_string()));
        }
        r
    }
}

pub(crate) fn header<'a>(rq: &'a Request, name: &'static str) -> Option<&'a str> {
    rq.headers().iter().find(|h| h.field.equiv(name)).map(|h| h.value.as_str())
}

/// A method name safe to log: a non-standard method is client text, logged as "OTHER".
fn method_name(m: &Method) -> &'static str {
    match m {
        Method::Get => "GET",
        Method::Head => "HEAD",
        Method::Post => "POST",
        Method::Put => "PUT",
        Method::Delete => "DELETE",
        Method::Connect => "CONNECT",
        Method::Options => "OPTIONS",
        Method::Trace => "TRACE",
        Method::Patch => "PATCH",
        Method::NonStandard(_) => "OTHER",
    }
}

/// Reads the body: 411 without a length (unless chunked), 413 over `max`
/// (declared, or once more than `max` bytes arrived), 408 when it stalls for
/// the socket's idle timeout or falls under [`HTTP_BODY_MIN_RATE`] after
/// [`HTTP_BODY_GRACE`], 400 when the client ends it early.
pub(crate) fn read_body(rq: &mut Request, max: usize) -> Result<Vec<u8>, ApiError> {
    // check_framing allowed no Transfer-Encoding but `chunked`.
    let chunked = header(rq, "Transfer-Encoding").is_some();
    let declared = rq.body_length();
    match declared {
        Some(n) if n > max => return Err(ApiError::BodyTooLarge { limit: max }),
        None if !chunked => return Err(ApiError::LengthRequired),
        _ => {}
    }
    let started = Instant::now();
    let mut buf = Vec::with_capacity(declared.unwrap_or(0).min(max));
    let mut chunk = vec![0u8; 64 * 1024];
    let reader = rq.as_reader();
    loop {
        let n = match reader.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                return Err(ApiError::BodyTimeout)
            }
            Err(_) => return Err(ApiError::BodyRead),
        };
        if buf.len().saturating_add(n) > max {
            return Err(ApiError::BodyTooLarge { limit: max });
        }
        buf.extend_from_slice(&chunk[..n]);
        let elapsed = started.elapsed();
        if elapsed > HTTP_BODY_GRACE && (buf.len() as f64) < HTTP_BODY_MIN_RATE as f64 * elapsed.as_secs_f64() {
            return Err(ApiError::BodyTimeout);
        }
    }
    if declared.is_some_and(|n| buf.len() < n) {
        // The client closed its side before sending what it announced.
        return Err(ApiError::BodyRead);
    }
    Ok(buf)
}

fn predict(
    app: &App,
    backend: &Backend,
    rq: &mut Request,
    query: Option<&str>,
    start: Instant,
) -> Result<Reply, ApiError> {
    // Query and media type first: a request refused for either is not read.
    top_k_from_query(query)?;
    let content_type = header(rq, "Content-Type").map(str::to_string);
    body_kind(content_type.as_deref())?;
    let body = read_body(rq, app.max_body)?;
    let req = parse_request(content_type.as_deref(), &body, query)?;
    drop(body);
    let parse = start.elapsed();
    let sent = Instant::now();
    let (reply, info) = backend.infer(req).map_err(ApiError::Backend)?;
    let round_trip = sent.elapsed();
    let us = |d: Duration| u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
    let t = Timings { parse_us: us(parse), backend_us: us(round_trip), total_us: us(start.elapsed()) };
    let (v, server_timing) = render_result(backend.name, &info, &reply, t);
    let mut r = Reply::json(200, &v);
    r.headers.push(("Server-Timing", server_timing));
    Ok(r)
}

fn backend_status(b: &Backend) -> Value {
    let model = b.info().map(|i| json!({ "name": i.name, "sha256": i.sha256_hex(), "synthetic": i.synthetic }));
    json!({ "up": b.is_up(), "model": model })
}

fn ready(app: &App) -> Reply {
    let ok = app.secure.is_up() && app.public.is_up();
    let v = json!({
        "ready": ok,
        "backends": { "secure": backend_status(&app.secure), "public": backend_status(&app.public) },
    });
    let mut r = Reply::json(if ok { 200 } else { 503 }, &v);
    if !ok {
        r.headers.push(("Retry-After", "1".to_string()));
    }
    r
}

/// 431 when the request carries more headers than [`MAX_HTTP_HEADERS`] or
/// [`MAX_HTTP_HEADER_BYTES`].
fn check_headers(rq: &Request) -> Result<(), ApiError> {
    let headers = rq.headers();
    let bytes: usize = headers.iter().map(|h| h.field.as_str().as_str().len() + h.value.as_str().len()).sum();
    if headers.len() > MAX_HTTP_HEADERS || bytes > MAX_HTTP_HEADER_BYTES {
        return Err(ApiError::HeadersTooLarge);
    }
    Ok(())
}

/// 400 when the request's body framing is ambiguous (RFC 9112, section
/// 6.3): more than one Content-Length, one that is not a plain number, one
/// beside Transfer-Encoding, or a Transfer-Encoding other than `chunked`.
/// tiny_http (patched) already closes such a connection after the reply and
/// reads no body it cannot delimit; this gives the client its JSON answer.
fn check_framing(rq: &Request) -> Result<(), ApiError> {
    let named = |name: &'static str| rq.headers().iter().filter(move |h| h.field.equiv(name)).map(|h| h.value.as_str().trim());
    let lengths: Vec<&str> = named("Content-Length").collect();
    let encodings: Vec<&str> = named("Transfer-Encoding").collect();
    if lengths.len() > 1 {
        return Err(ApiError::BadFraming("more than one Content-Length header"));
    }
    if let Some(v) = lengths.first() {
        if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) || v.parse::<u64>().is_err() {
            return Err(ApiError::BadFraming("Content-Length must be a number of bytes, digits only"));
        }
        if !encodings.is_empty() {
            return Err(ApiError::BadFraming("Content-Length and Transfer-Encoding together"));
        }
    }
    if encodings.len() > 1 || encodings.first().is_some_and(|v| !v.eq_ignore_ascii_case("chunked")) {
        return Err(ApiError::BadFraming("the only Transfer-Encoding accepted is chunked"));
    }
    Ok(())
}

/// Routes and answers one request.
fn route(app: &App, rq: &mut Request, route: Route, path: &str, query: Option<&str>, start: Instant) -> Reply {
    const GET: &str = "GET, HEAD";
    let is_get = matches!(rq.method(), Method::Get | Method::Head);
    if let Err(e) = check_headers(rq).and_then(|()| check_framing(rq)) {
        return Reply::error(&e);
    }
    let result = match route {
        Route::PredictSecure | Route::PredictPublic => {
            if *rq.method() != Method::Post {
                Err(ApiError::MethodNotAllowed { allow: "POST" })
            } else if route == Route::PredictSecure && app.sealed_only {
                // Refused before the body is read. (A sealed request here is Route::Sealed.)
                Err(ApiError::SealedOnly)
            } else {
                // Each route holds exactly its own backend: the secure route
                // can never be answered by the public one (fail closed).
                let backend = if route == Route::PredictSecure { &app.secure } else { &app.public };
                predict(app, backend, rq, query, start)
            }
        }
        Route::Health if is_get => Ok(Reply::json(200, &json!({ "status": "ok" }))),
        Route::Ready if is_get => Ok(ready(app)),
        Route::Metrics if is_get => {
            let backends = [(app.secure.name, app.secure.is_up()), (app.public.name, app.public.is_up())];
            let body = app.metrics.render(&backends).into_bytes();
            Ok(Reply { status: 200, body, content_type: "text/plain; version=0.0.4", headers: Vec::new() })
        }
        Route::Health | Route::Ready | Route::Metrics => Err(ApiError::MethodNotAllowed { allow: GET }),
        // The relay for attestation and sealed requests: secure backend only.
        Route::Attestation if *rq.method() == Method::Get => crate::sealed::attestation(app, query),
        Route::Attestation => Err(ApiError::MethodNotAllowed { allow: "GET" }),
        Route::OhttpKeys if *rq.method() == Method::Get => crate::sealed::keys(app),
        Route::OhttpKeys => Err(ApiError::MethodNotAllowed { allow: "GET, POST" }),
        Route::Sealed => crate::sealed::sealed(app, rq),
        Route::V2Health | Route::V2Metadata | Route::V2InferSecure | Route::V2InferPublic => {
            Ok(crate::v2::handle(app, rq, path))
        }
        Route::Other if path == "/v2" || path.starts_with("/v2/") => Ok(crate::v2::handle(app, rq, path)),
        Route::Other => Err(ApiError::NotFound),
    };
    result.unwrap_or_else(|e| Reply::error(&e))
}

/// Handles one request completely: route, answer, count, log.
pub fn handle(app: &App, mut rq: Request) {
    let start = Instant::now();
    let _in_flight = app.metrics.start();
    let method = method_name(rq.method());
    let (r, path, query) = {
        let url = rq.url();
        let (path, query) = match url.split_once('?') {
            Some((p, q)) => (p, Some(q.to_string())),
            None => (url, None),
        };
        let is_post = *rq.method() == Method::Post;
        (Route::of_request(is_post, path, header(&rq, "Content-Type")), path.to_string(), query)
    };
    let reply = route(app, &mut rq, r, &path, query.as_deref(), start);
    let (status, size) = (reply.status, reply.body.len());
    let mut response = Response::from_data(reply.body).with_status_code(status);
    let mut headers = vec![("Content-Type", reply.content_type.to_string())];
    headers.extend(reply.headers);
    for (name, value) in headers {
        if let Ok(h) = Header::from_bytes(name.as_bytes(), value.as_bytes()) {
            response.add_header(h);
        }
    }
    // Counted before the reply is written, so a client that has its reply
    // also sees it in /metrics; the write itself is not part of the latency.
    let elapsed = start.elapsed();
    app.metrics.observe(r, status, elapsed);
    // A client that went away cannot be answered; nothing else to do. A
    // body left unread is not drained here: tiny_http closes the connection
    // after this reply (Connection: close) and discards what is left on the
    // connection's own thread, bounded.
    let _ = rq.respond(response);
    eprintln!(
        "access method={method} route={} status={status} bytes={size} ms={:.1}",
        r.name(),
        elapsed.as_secs_f64() * 1000.0
    );
}

/// How long a handler thread waits on the current server before looking
/// at the shutdown flag, the retired servers and a stopped accept loop.
const RECV_POLL: Duration = Duration::from_millis(100);

/// Most retired servers kept (each still answers the connections it had
/// when its accept loop stopped); the oldest is dropped beyond this.
const MAX_RETIRED: usize = 8;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

struct Current {
    server: Arc<tiny_http::Server>,
    /// Its accept loop stopped and no replacement could be started yet.
    stopped: bool,
}

/// tiny_http on one listening socket that the parent owns and never closes
/// while it runs; see the module documentation.
pub struct Front {
    listener: TcpListener,
    current: Mutex<Current>,
    retired: Mutex<Vec<Arc<tiny_http::Server>>>,
}

impl Front {
    /// Starts tiny_http on a clone of `listener` (which keeps its options).
    pub fn new(listener: TcpListener) -> io::Result<Front> {
        let server = Self::start_server(&listener)?;
        Ok(Front {
            listener,
            current: Mutex::new(Current { server, stopped: false }),
            retired: Mutex::new(Vec::new()),
        })
    }

    fn start_server(listener: &TcpListener) -> io::Result<Arc<tiny_http::Server>> {
        let clone = listener.try_clone()?;
        tiny_http::Server::from_listener(clone, None).map(Arc::new).map_err(|e| io::Error::other(e.to_string()))
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    fn current(&self) -> Arc<tiny_http::Server> {
        lock(&self.current).server.clone()
    }

    /// `server`'s accept loop reported `error` and has stopped: replace it,
    /// unless another thread already did.
    fn accept_stopped(&self, server: &Arc<tiny_http::Server>, error: &io::Error, metrics: &Metrics) {
        let mut cur = lock(&self.current);
        if Arc::ptr_eq(&cur.server, server) {
            // The error kind only: nothing from a client is in it anyway.
            eprintln!("parent: the HTTP accept loop stopped ({:?}); starting a new one on the same socket", error.kind());
            cur.stopped = true;
            self.restart(&mut cur, metrics);
        }
    }

    /// Starts a new server if the current one's accept loop has stopped.
    fn restart_if_stopped(&self, metrics: &Metrics) {
        let mut cur = lock(&self.current);
        if cur.stopped {
            self.restart(&mut cur, metrics);
        }
    }

    fn restart(&self, cur: &mut Current, metrics: &Metrics) {
        match Self::start_server(&self.listener) {
            Ok(new) => {
                let old = std::mem::replace(&mut cur.server, new);
                cur.stopped = false;
                metrics.accept_restarted();
                let mut retired = lock(&self.retired);
                retired.push(old);
                if retired.len() > MAX_RETIRED {
                    retired.remove(0);
                }
            }
            // Say, no descriptor left: the handler threads try again each poll.
            Err(e) => eprintln!("parent: cannot restart the HTTP accept loop yet ({:?})", e.kind()),
        }
    }

    fn retired(&self) -> Vec<Arc<tiny_http::Server>> {
        lock(&self.retired).clone()
    }

    /// The next request from any server, waiting at most [`RECV_POLL`].
    fn next_request(&self, metrics: &Metrics) -> Option<Request> {
        for old in self.retired() {
            if let Ok(Some(rq)) = old.try_recv() {
                return Some(rq);
            }
        }
        self.restart_if_stopped(metrics);
        let server = self.current();
        match server.recv_timeout(RECV_POLL) {
            Ok(rq) => rq,
            Err(e) => {
                self.accept_stopped(&server, &e, metrics);
                None
            }
        }
    }
}

/// Runs `threads` handler threads on `front` until `shutdown` is set, plus
/// the readiness checker. Returns when all have stopped (within
/// [`RECV_POLL`] of the flag, plus the requests in progress).
pub fn serve(front: Arc<Front>, app: Arc<App>, threads: usize, shutdown: Arc<AtomicBool>) {
    let mut handles = Vec::with_capacity(threads + 1);
    for i in 0..threads {
        let (front, app, shutdown) = (front.clone(), app.clone(), shutdown.clone());
        let spawned = thread::Builder::new().name(format!("http-{i}")).spawn(move || {
            while !shutdown.load(Ordering::SeqCst) {
                let Some(rq) = front.next_request(&app.metrics) else { continue };
                if catch_unwind(AssertUnwindSafe(|| handle(&app, rq))).is_err() {
                    eprintln!("parent: a request handler panicked; the client got a 500");
                }
            }
        });
        match spawned {
            Ok(h) => handles.push(h),
            Err(e) => eprintln!("parent: could not start handler thread {i}: {e}"),
        }
    }
    let checker = {
        let (app, shutdown) = (app.clone(), shutdown.clone());
        thread::Builder::new().name("ready-check".into()).spawn(move || check_loop(&app, &shutdown))
    };
    match checker {
        Ok(h) => handles.push(h),
        Err(e) => eprintln!("parent: could not start the readiness checker: {e}"),
    }
    for h in handles {
        let _ = h.join();
    }
}

fn check_loop(app: &App, shutdown: &AtomicBool) {
    let mut slots = (None, None);
    let mut last = (None, None);
    while !shutdown.load(Ordering::SeqCst) {
        for (b, slot, was) in [(&app.secure, &mut slots.0, &mut last.0), (&app.public, &mut slots.1, &mut last.1)] {
            let up = b.check(slot);
            if *was != Some(up) {
                let state = if up { "up" } else { "down" };
                eprintln!("parent: {} backend {} is {state}", b.name, b.addr());
                *was = Some(up);
            }
        }
        let until = Instant::now() + READY_CHECK_INTERVAL;
        while !shutdown.load(Ordering::SeqCst) && Instant::now() < until {
            thread::sleep(Duration::from_millis(50));
        }
    }
}
