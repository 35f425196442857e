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
//! Known limit: tiny_http sets no socket timeouts and does not expose the
//! socket, so a client that stalls in the middle of its body holds one handler
//! thread until it disconnects; `--threads` bounds how many such clients can
//! stall the front at once. tiny_http also gives every open connection its
//! own thread for the connection's whole life, and its thread pool can leave a
//! new connection queued (seen once: 20 s) until another connection closes
//! when several keep-alive connections open at the same instant; clients that
//! open one connection per request (as the study's did) are not affected.

use std::io::Read;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use shared::limits::READY_CHECK_INTERVAL;
use tiny_http::{Header, Method, Request, Response};

use crate::api::{body_kind, decode_body, render_result, top_k_from_query, ApiError, Timings};
use crate::backend::Backend;
use crate::metrics::{Metrics, Route};

/// Everything a handler thread needs.
pub struct App {
    pub secure: Arc<Backend>,
    pub public: Arc<Backend>,
    pub metrics: Metrics,
    pub max_body: usize,
}

/// A reply before it is written.
struct Reply {
    status: u16,
    body: Vec<u8>,
    content_type: &'static str,
    headers: Vec<(&'static str, String)>,
}

impl Reply {
    fn json(status: u16, v: &Value) -> Reply {
        let mut body = v.to_string().into_bytes();
        body.push(b'\n');
        Reply { status, body, content_type: "application/json", headers: Vec::new() }
    }

    fn error(e: &ApiError) -> Reply {
        let mut r = Reply::json(e.status(), &e.body());
        if let Some(allow) = e.allow() {
            r.headers.push(("Allow", allow.to_string()));
        }
        if let Some(secs) = e.retry_after() {
            r.headers.push(("Retry-After", secs.to_string()));
        }
        r
    }
}

fn header<'a>(rq: &'a Request, name: &'static str) -> Option<&'a str> {
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

/// Reads the body: 411 without a length (unless chunked), 413 over `max`.
fn read_body(rq: &mut Request, max: usize) -> Result<Vec<u8>, ApiError> {
    let chunked = header(rq, "Transfer-Encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    let declared = rq.body_length();
    match declared {
        Some(n) if n > max => return Err(ApiError::BodyTooLarge { limit: max }),
        None if !chunked => return Err(ApiError::LengthRequired),
        _ => {}
    }
    let limit = u64::try_from(max).unwrap_or(u64::MAX).saturating_add(1);
    let mut buf = Vec::with_capacity(declared.unwrap_or(0).min(max));
    rq.as_reader().take(limit).read_to_end(&mut buf).map_err(|_| ApiError::BodyRead)?;
    if buf.len() > max {
        return Err(ApiError::BodyTooLarge { limit: max });
    }
    Ok(buf)
}

fn predict(app: &App, backend: &Backend, rq: &mut Request, query: Option<&str>, start: Instant) -> Result<Reply, ApiError> {
    let top_k = top_k_from_query(query)?;
    let kind = body_kind(header(rq, "Content-Type"))?;
    let body = read_body(rq, app.max_body)?;
    let req = decode_body(kind, &body, top_k)?;
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

fn route(app: &App, rq: &mut Request, route: Route, query: Option<&str>, start: Instant) -> Reply {
    const GET: &str = "GET, HEAD";
    let is_get = matches!(rq.method(), Method::Get | Method::Head);
    let result = match route {
        Route::PredictSecure | Route::PredictPublic => {
            if *rq.method() != Method::Post {
                Err(ApiError::MethodNotAllowed { allow: "POST" })
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
        Route::Other => Err(ApiError::NotFound),
    };
    result.unwrap_or_else(|e| Reply::error(&e))
}

/// Handles one request completely: route, answer, count, log.
pub fn handle(app: &App, mut rq: Request) {
    let start = Instant::now();
    let _in_flight = app.metrics.start();
    let method = method_name(rq.method());
    let (r, query) = {
        let url = rq.url();
        let (path, query) = match url.split_once('?') {
            Some((p, q)) => (p, Some(q.to_string())),
            None => (url, None),
        };
        (Route::of_path(path), query)
    };
    let reply = route(app, &mut rq, r, query.as_deref(), start);
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
    // A client that went away cannot be answered; nothing else to do.
    let _ = rq.respond(response);
    eprintln!(
        "access method={method} route={} status={status} bytes={size} ms={:.1}",
        r.name(),
        elapsed.as_secs_f64() * 1000.0
    );
}

/// Runs `threads` handler threads on `server` until `shutdown` is set (and
/// the threads are unblocked), plus the readiness checker. Returns when all
/// have stopped.
pub fn serve(server: Arc<tiny_http::Server>, app: Arc<App>, threads: usize, shutdown: Arc<AtomicBool>) {
    let mut handles = Vec::with_capacity(threads + 1);
    for i in 0..threads {
        let (server, app, shutdown) = (server.clone(), app.clone(), shutdown.clone());
        let spawned = thread::Builder::new().name(format!("http-{i}")).spawn(move || {
            while !shutdown.load(Ordering::SeqCst) {
                let rq = match server.recv() {
                    Ok(rq) => rq,
                    Err(_) if shutdown.load(Ordering::SeqCst) => break,
                    Err(_) => continue,
                };
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
