//! Backends: the model servers the parent forwards to, each behind a small
//! pool of persistent frame connections.
//!
//! What it does: a [`Backend`] owns up to `pool` open connections to one model
//! server. A request borrows one ([`Backend::infer`], or [`Backend::relay`] for
//! the attestation and sealed frames, whose bytes the parent passes on unread),
//! sends one frame, reads one reply, checks that the reply echoes its request
//! id, and gives the connection back. A new connection first asks the server for its model
//! ([`Message::InfoQuery`]), so every reply can be labelled with the labels and
//! identity of the model that actually produced it; the latest answer is also
//! cached on the backend for `/ready`. On the secure backend, the first
//! connection that succeeds also carries one 64-byte `Seed` frame from the
//! parent's `getrandom`, which the enclave mixes into its pool uncredited;
//! when the checker sees the enclave go down, the next connection (to the
//! restarted enclave) carries a new seed.
//!
//! Why it is built this way:
//! - Blocking I/O and a fixed bound: at most `pool` connections per backend,
//!   and a request waits at most [`BACKEND_ACQUIRE_TIMEOUT`] for one, then gets
//!   [`BackendError::PoolExhausted`] (503). Waiting requests get connections
//!   in the order they arrived, so the wait is bounded by the requests ahead,
//!   never by lost races against later ones. The model server handles one
//!   request per connection at a time, so the pool size is the parent's
//!   concurrency towards it.
//! - Every round trip has a deadline, applied as the stream's read and write
//!   timeouts. A connection that timed out, broke, or sent anything unexpected
//!   is discarded, never returned to the pool: its stream may be out of step.
//! - A backend that restarts is reconnected without restarting the parent.
//!   A failed connect starts a backoff ([`BACKEND_BACKOFF_MIN`] doubling to
//!   [`BACKEND_BACKOFF_MAX`]) during which requests fail at once with 503
//!   instead of each paying for a connect; the readiness checker
//!   ([`Backend::check`]) clears the backoff as soon as the server answers again.
//!   When the checker finds the server gone, the idle connections are dropped
//!   (a generation counter retires the ones currently lent out).
//! - A request that fails on a *reused* connection before any reply arrives
//!   is retried once on a fresh one: the server may have restarted since the
//!   connection was pooled, and inference is a pure function, so a retry is safe.
//!   A sealed request is then the same bytes sent twice at most; what a
//!   replay gets is the enclave's decision, not the parent's.
//!
//! What it refuses: a reply with another request id (except a connection-level
//! error frame with id 0), a reply of the wrong kind, or a result whose image
//! count or top-k disagrees with the request: each is a
//! [`BackendError`] and the connection is closed. Nothing here logs request
//! content; the only log line is the seed notice.
//!
//! A backend never stands in for another: the secure route holds only the
//! secure [`Backend`], so when the enclave is down it fails closed (503).

use std::collections::VecDeque;
use std::fmt;
use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use shared::frame::{read_frame, ErrorCode, ErrorReply, FrameError, Header, InferReply, InferRequest, Kind, Message, ModelInfo};
use shared::limits::{BACKEND_ACQUIRE_TIMEOUT, BACKEND_BACKOFF_MAX, BACKEND_BACKOFF_MIN, READY_PING_TIMEOUT};
use shared::transport::{Addr, Stream};

/// Bytes of entropy the parent sends the enclave at start-up.
pub const SEED_LEN: usize = 64;

/// Why a backend round trip failed. The Display text is what the HTTP client sees.
#[derive(Debug, Clone, PartialEq)]
pub enum BackendError {
    /// The model server could not be reached (not listening, socket gone).
    Unreachable(io::ErrorKind),
    /// A connect failed recently; the backend is backing off.
    BackingOff,
    /// No pooled connection became free within the acquire timeout.
    PoolExhausted,
    /// The round trip did not finish within the deadline.
    Deadline,
    /// The connection failed or closed mid-request.
    ConnectionLost(io::ErrorKind),
    /// The reply was not a valid frame.
    Protocol(FrameError),
    /// The reply carried another request's id.
    IdMismatch { sent: u64, got: u64 },
    /// The reply was a valid frame of a kind that does not answer the request.
    UnexpectedReply(Kind),
    /// A result that does not fit the request (image count, empty or oversized top-k).
    BadResult(&'static str),
    /// The model server answered with an error frame.
    Remote(ErrorReply),
}

impl fmt::Display for BackendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BackendError::Unreachable(k) => write!(f, "model server unreachable ({k})"),
            BackendError::BackingOff => write!(f, "model server unreachable (reconnecting)"),
            BackendError::PoolExhausted => write!(f, "all connections to the model server are busy"),
            BackendError::Deadline => write!(f, "model server did not answer within the deadline"),
            BackendError::ConnectionLost(k) => write!(f, "connection to the model server lost ({k})"),
            BackendError::Protocol(e) => write!(f, "bad reply from the model server: {e}"),
            BackendError::IdMismatch { sent, got } => {
                write!(f, "model server answered request {got}, expected {sent}")
            }
            BackendError::UnexpectedReply(k) => write!(f, "model server sent an unexpected {k:?} frame"),
            BackendError::BadResult(why) => write!(f, "bad result from the model server: {why}"),
            BackendError::Remote(e) => {
                let name = e.code().map(ErrorCode::name).unwrap_or("unknown");
                write!(f, "model server error {name}: {}", e.message)
            }
        }
    }
}

impl std::error::Error for BackendError {}

fn io_error(e: FrameError) -> BackendError {
    match e {
        FrameError::Io(io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => BackendError::Deadline,
        FrameError::Io(k) => BackendError::ConnectionLost(k),
        FrameError::Truncated { .. } => BackendError::ConnectionLost(io::ErrorKind::UnexpectedEof),
        other => BackendError::Protocol(other),
    }
}

/// Tuning of one backend.
#[derive(Debug, Clone, Copy)]
pub struct BackendConfig {
    pub pool: usize,
    pub deadline: Duration,
    pub acquire_timeout: Duration,
}

impl BackendConfig {
    pub fn new(pool: usize, deadline: Duration) -> Self {
        BackendConfig { pool, deadline, acquire_timeout: BACKEND_ACQUIRE_TIMEOUT }
    }
}

/// One open connection and the model its server said it serves.
pub struct Conn {
    stream: Stream,
    info: Arc<ModelInfo>,
    generation: u64,
    /// Borrowed from the idle list rather than opened for this request.
    reused: bool,
}

/// What a request takes from the pool.
enum Taken {
    /// A pooled connection.
    Idle(Conn),
    /// Room for one more connection, already counted in `open`.
    Slot,
}

struct PoolState {
    idle: Vec<Conn>,
    /// Connections open: idle plus lent out.
    open: usize,
    /// Tickets of the requests waiting for a connection, first come first.
    waiting: VecDeque<u64>,
    next_ticket: u64,
    generation: u64,
    retry_at: Option<Instant>,
    backoff: Duration,
}

pub struct Backend {
    /// "secure" or "public": used in metrics, `/ready` and replies.
    pub name: &'static str,
    addr: Addr,
    cfg: BackendConfig,
    state: Mutex<PoolState>,
    freed: Condvar,
    up: AtomicBool,
    info: Mutex<Option<Arc<ModelInfo>>>,
    /// Whether this backend gets a seed at all (the secure one).
    seeds: bool,
    seed_pending: AtomicBool,
    next_id: AtomicU64,
}

impl Backend {
    /// `send_seed`: send one [`SEED_LEN`]-byte `Seed` frame on the first
    /// connection that succeeds (the secure backend).
    pub fn new(name: &'static str, addr: Addr, cfg: BackendConfig, send_seed: bool) -> Backend {
        Backend {
            name,
            addr,
            cfg,
            state: Mutex::new(PoolState {
                idle: Vec::new(),
                open: 0,
                waiting: VecDeque::new(),
                next_ticket: 0,
                generation: 0,
                retry_at: None,
                backoff: BACKEND_BACKOFF_MIN,
            }),
            freed: Condvar::new(),
            up: AtomicBool::new(false),
            info: Mutex::new(None),
            seeds: send_seed,
            seed_pending: AtomicBool::new(send_seed),
            next_id: AtomicU64::new(1),
        }
    }

    pub fn addr(&self) -> &Addr {
        &self.addr
    }

    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// The model the server last said it serves, if it ever answered.
    pub fn info(&self) -> Option<Arc<ModelInfo>> {
        lock(&self.info).clone()
    }

    /// True once the seed was delivered (or when none was to be sent).
    pub fn seed_sent(&self) -> bool {
        !self.seed_pending.load(Ordering::Relaxed)
    }

    fn state(&self) -> MutexGuard<'_, PoolState> {
        lock(&self.state)
    }

    /// One inference round trip: borrow a connection, send, receive, return it.
    /// The request is consumed: its images are encoded straight into the
    /// frame body, so a 16 MiB batch is held once here, not twice.
    pub fn infer(&self, req: InferRequest) -> Result<(InferReply, Arc<ModelInfo>), BackendError> {
        let (count, top_k) = (req.images.len(), req.top_k);
        let body = Message::Infer(req).encode_body().map_err(BackendError::Protocol)?;
        let (reply, conn) = self.exchange(Kind::Infer, &body)?;
        let reply = match reply {
            Message::Result(reply) => reply,
            other => {
                self.discard(conn);
                return Err(BackendError::UnexpectedReply(other.kind()));
            }
        };
        if let Err(e) = check_result(count, top_k, &reply) {
            self.discard(conn);
            return Err(e);
        }
        let info = conn.info.clone();
        self.release(conn);
        self.up.store(true, Ordering::Relaxed);
        Ok((reply, info))
    }

    /// One round trip of a frame whose bytes the parent relays without
    /// looking at them (docs/SEALED.md): `Attest` is answered by
    /// `Attestation`, `KeysQuery` by `Keys`, `Sealed` by `SealedReply`; the
    /// answer's bytes are returned. Any other request or answer is an error.
    pub fn relay(&self, request: Message) -> Result<Vec<u8>, BackendError> {
        let kind = request.kind();
        let body = request.encode_body().map_err(BackendError::Protocol)?;
        // The frame body is a copy: a 16 MiB sealed request is held once, not twice.
        drop(request);
        let (reply, conn) = self.exchange(kind, &body)?;
        match (kind, reply) {
            (Kind::Attest, Message::Attestation(bytes))
            | (Kind::KeysQuery, Message::Keys(bytes))
            | (Kind::Sealed, Message::SealedReply(bytes)) => {
                self.release(conn);
                self.up.store(true, Ordering::Relaxed);
                Ok(bytes)
            }
            (_, other) => {
                self.discard(conn);
                Err(BackendError::UnexpectedReply(other.kind()))
            }
        }
    }

    /// Sends one request frame on a borrowed connection and returns the reply
    /// with the connection, still borrowed: the caller checks the reply, then
    /// releases or discards it. On an error the connection is already dealt
    /// with: kept when the server answered an error about this request only
    /// (the stream is still in step), discarded otherwise. A request that
    /// fails on a reused connection before any reply is sent once more on a
    /// fresh one: the server may have restarted since the connection was
    /// pooled. (For a sealed request that is the same bytes twice; a server
    /// that did not answer the first either never got it or is gone.)
    fn exchange(&self, kind: Kind, body: &[u8]) -> Result<(Message, Conn), BackendError> {
        let mut conn = self.acquire()?;
        let mut result = self.round_trip(&mut conn.stream, kind, body, self.cfg.deadline);
        if conn.reused && matches!(result, Err(BackendError::ConnectionLost(_))) {
            // The retry keeps this request's slot: it does not queue again.
            let _ = conn.stream.shutdown();
            conn = self.open_counted()?;
            result = self.round_trip(&mut conn.stream, kind, body, self.cfg.deadline);
        }
        match result {
            Ok(reply) => Ok((reply, conn)),
            Err(e) => {
                if about_this_request_only(&e) {
                    self.release(conn);
                } else {
                    self.discard(conn);
                }
                if !matches!(e, BackendError::Remote(_) | BackendError::Deadline) {
                    self.up.store(false, Ordering::Relaxed);
                }
                Err(e)
            }
        }
    }

    /// Sends one frame with a fresh request id and reads the reply. An error
    /// frame becomes [`BackendError::Remote`].
    fn round_trip(&self, stream: &mut Stream, kind: Kind, body: &[u8], deadline: Duration) -> Result<Message, BackendError> {
        let sent = self.next_id.fetch_add(1, Ordering::Relaxed);
        let body_len = u32::try_from(body.len()).map_err(|_| BackendError::Protocol(FrameError::FrameTooLarge(u32::MAX)))?;
        let header = Header { kind: kind as u8, body_len, request_id: sent }.encode();
        let _ = (stream.set_read_timeout(Some(deadline)), stream.set_write_timeout(Some(deadline)));
        // Header and body in two writes: no copy of a large body just to prepend 16 bytes.
        stream.write_all(&header).map_err(|e| io_error(e.into()))?;
        stream.write_all(body).map_err(|e| io_error(e.into()))?;
        stream.flush().map_err(|e| io_error(e.into()))?;
        let raw = match read_frame(stream) {
            Ok(Some(raw)) => raw,
            Ok(None) => return Err(BackendError::ConnectionLost(io::ErrorKind::UnexpectedEof)),
            Err(e) => return Err(io_error(e)),
        };
        let got = raw.header.request_id;
        let message = raw.message().map_err(BackendError::Protocol)?;
        match message {
            // A connection-level error (say, `busy` at the connection limit)
            // may be sent before the server read our id.
            Message::Error(e) if got == sent || got == 0 => Err(BackendError::Remote(e)),
            _ if got != sent => Err(BackendError::IdMismatch { sent, got }),
            m => Ok(m),
        }
    }

    /// Opens a connection: connect, the seed if one is pending, then InfoQuery.
    fn connect(&self) -> Result<Conn, BackendError> {
        let mut stream = Stream::connect(&self.addr).map_err(|e| BackendError::Unreachable(e.kind()))?;
        // Setup frames (seed, info) are small and answered at once; they get
        // their own deadline, independent of the (possibly tiny) request deadline.
        let setup_deadline = READY_PING_TIMEOUT;
        if self.seed_pending.swap(false, Ordering::SeqCst) {
            match self.send_seed(&mut stream, setup_deadline) {
                Ok(()) => eprintln!("parent: sent a {SEED_LEN}-byte entropy seed to the {} backend", self.name),
                Err(e) => {
                    self.seed_pending.store(true, Ordering::SeqCst);
                    return Err(e);
                }
            }
        }
        let info = match self.round_trip(&mut stream, Kind::InfoQuery, &[], setup_deadline)? {
            Message::Info(info) => Arc::new(info),
            other => return Err(BackendError::UnexpectedReply(other.kind())),
        };
        *lock(&self.info) = Some(info.clone());
        let generation = self.state().generation;
        Ok(Conn { stream, info, generation, reused: false })
    }

    fn send_seed(&self, stream: &mut Stream, deadline: Duration) -> Result<(), BackendError> {
        let mut seed = vec![0u8; SEED_LEN];
        // getrandom failing means the parent's own kernel has no entropy
        // source: deliver nothing rather than a weak seed.
        getrandom::getrandom(&mut seed).map_err(|_| BackendError::Unreachable(io::ErrorKind::Other))?;
        let body = Message::Seed(seed).encode_body().map_err(BackendError::Protocol)?;
        match self.round_trip(stream, Kind::Seed, &body, deadline)? {
            Message::Pong => Ok(()),
            other => Err(BackendError::UnexpectedReply(other.kind())),
        }
    }

    /// Borrows an idle connection, or opens one if the pool has room, or waits
    /// up to the acquire timeout for one to be returned. Requests are served
    /// in the order they arrive: a request takes a connection only when every
    /// request that came before it has one (or gave up), so a request that
    /// arrives just as a connection is returned cannot take it from one that
    /// has been waiting. Without that order a waiter could lose every race and
    /// time out while later requests were served.
    fn acquire(&self) -> Result<Conn, BackendError> {
        let give_up = Instant::now() + self.cfg.acquire_timeout;
        let mut st = self.state();
        let ticket = st.next_ticket;
        st.next_ticket = st.next_ticket.wrapping_add(1);
        st.waiting.push_back(ticket);
        loop {
            if st.waiting.front() == Some(&ticket) {
                if let Some(taken) = self.take(&mut st) {
                    st.waiting.pop_front();
                    let more = !st.waiting.is_empty() && (!st.idle.is_empty() || st.open < self.cfg.pool);
                    drop(st);
                    if more {
                        self.freed.notify_all();
                    }
                    return match taken {
                        Taken::Idle(conn) => Ok(conn),
                        Taken::Slot => self.open_counted(),
                    };
                }
            }
            let now = Instant::now();
            if now >= give_up {
                st.waiting.retain(|&t| t != ticket);
                drop(st);
                // The next in line may be able to go now.
                self.freed.notify_all();
                return Err(BackendError::PoolExhausted);
            }
            st = match self.freed.wait_timeout(st, give_up - now) {
                Ok((g, _)) => g,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
    }

    /// What the first in line can take now, if anything: an idle connection
    /// of the current generation (older ones are dropped on the way), else a
    /// slot for a new one.
    fn take(&self, st: &mut PoolState) -> Option<Taken> {
        while let Some(mut conn) = st.idle.pop() {
            if conn.generation == st.generation {
                conn.reused = true;
                return Some(Taken::Idle(conn));
            }
            st.open = st.open.saturating_sub(1);
        }
        if st.open < self.cfg.pool {
            st.open += 1;
            return Some(Taken::Slot);
        }
        None
    }

    /// Opens a connection whose slot has already been counted in `open`.
    fn open_counted(&self) -> Result<Conn, BackendError> {
        {
            let st = self.state();
            if let Some(at) = st.retry_at {
                if Instant::now() < at {
                    drop(st);
                    self.give_back_slot();
                    return Err(BackendError::BackingOff);
                }
            }
        }
        match self.connect() {
            Ok(conn) => {
                let mut st = self.state();
                st.retry_at = None;
                st.backoff = BACKEND_BACKOFF_MIN;
                drop(st);
                self.up.store(true, Ordering::Relaxed);
                Ok(conn)
            }
            Err(e) => {
                let mut st = self.state();
                st.retry_at = Some(Instant::now() + st.backoff);
                st.backoff = (st.backoff * 2).min(BACKEND_BACKOFF_MAX);
                drop(st);
                self.give_back_slot();
                self.up.store(false, Ordering::Relaxed);
                Err(e)
            }
        }
    }

    /// Every change that frees a connection or a slot wakes all waiters: only
    /// the first in line may take it, and the condvar would wake any one.
    fn give_back_slot(&self) {
        let mut st = self.state();
        st.open = st.open.saturating_sub(1);
        drop(st);
        self.freed.notify_all();
    }

    fn release(&self, conn: Conn) {
        let mut st = self.state();
        if conn.generation == st.generation {
            st.idle.push(conn);
        } else {
            st.open = st.open.saturating_sub(1);
            let _ = conn.stream.shutdown();
        }
        drop(st);
        self.freed.notify_all();
    }

    fn discard(&self, conn: Conn) {
        let _ = conn.stream.shutdown();
        self.give_back_slot();
    }

    /// Connections open now (idle and lent out); for tests and metrics.
    pub fn open_connections(&self) -> usize {
        self.state().open
    }

    /// One readiness check on the checker's own connection (kept in `slot`
    /// between calls, outside the pool so that a busy pool does not make the
    /// server look down). Returns whether the server answered Ping.
    pub fn check(&self, slot: &mut Option<Conn>) -> bool {
        let ok = (|| -> Result<(), BackendError> {
            if slot.is_none() {
                *slot = Some(self.connect()?);
            }
            let conn = slot.as_mut().ok_or(BackendError::BackingOff)?;
            match self.round_trip(&mut conn.stream, Kind::Ping, &[], READY_PING_TIMEOUT)? {
                Message::Pong => Ok(()),
                other => Err(BackendError::UnexpectedReply(other.kind())),
            }
        })()
        .is_ok();
        let was_up = self.up.swap(ok, Ordering::Relaxed);
        if ok {
            if !was_up {
                // Back again: let requests connect at once.
                let mut st = self.state();
                st.retry_at = None;
                st.backoff = BACKEND_BACKOFF_MIN;
            }
        } else {
            if let Some(conn) = slot.take() {
                let _ = conn.stream.shutdown();
            }
            // Gone: the pooled connections are dead too, and a server that
            // comes back is a new process (a new enclave) that gets a new seed.
            if self.seeds && was_up {
                self.seed_pending.store(true, Ordering::SeqCst);
            }
            let mut st = self.state();
            let dropped = st.idle.len();
            st.idle.clear();
            st.open = st.open.saturating_sub(dropped);
            st.generation = st.generation.wrapping_add(1);
            drop(st);
            self.freed.notify_all();
        }
        ok
    }
}

/// An error frame about the request itself (its image, its key, its
/// sealed bytes, the attestation it asked for): the connection stays usable.
fn about_this_request_only(e: &BackendError) -> bool {
    let BackendError::Remote(r) = e else { return false };
    matches!(
        r.code(),
        Some(
            ErrorCode::BadImage
                | ErrorCode::UnsupportedFormat
                | ErrorCode::ImageTooLarge
                | ErrorCode::KeyRejected
                | ErrorCode::SealedRequestInvalid
                | ErrorCode::AttestationUnavailable
        )
    )
}

/// A result must hold one entry per image, each with 1..=top_k classes.
fn check_result(count: usize, top_k: u16, reply: &InferReply) -> Result<(), BackendError> {
    if reply.images.len() != count {
        return Err(BackendError::BadResult("image count differs from the request"));
    }
    for img in &reply.images {
        if img.top.is_empty() {
            return Err(BackendError::BadResult("an image without classes"));
        }
        if img.top.len() > usize::from(top_k) {
            return Err(BackendError::BadResult("more classes than top_k"));
        }
    }
    Ok(())
}

/// Locks a mutex, recovering the data if a holder panicked (the pool's
/// counters stay meaningful: every update is a single assignment).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// `parent ping`: one Ping round trip on a fresh connection.
pub fn ping_once(addr: &Addr, timeout: Duration) -> Result<(), BackendError> {
    let b = Backend::new("ping", addr.clone(), BackendConfig::new(1, timeout), false);
    let mut stream = Stream::connect(addr).map_err(|e| BackendError::Unreachable(e.kind()))?;
    match b.round_trip(&mut stream, Kind::Ping, &[], timeout)? {
        Message::Pong => Ok(()),
        other => Err(BackendError::UnexpectedReply(other.kind())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::frame::{write_frame, ClassScore, Frame, ImageResult, StageTimings};
    use shared::transport::Listener;
    use std::path::PathBuf;
    use std::sync::atomic::AtomicUsize;
    use std::thread;

    /// How the fake model server misbehaves.
    #[derive(Clone, Copy, PartialEq)]
    enum Mode {
        Good,
        WrongId,
        Silent,
        Busy,
    }

    struct Fake {
        dir: PathBuf,
        addr: Addr,
        stop: Arc<AtomicBool>,
        seeds: Arc<AtomicUsize>,
        accepted: Arc<AtomicUsize>,
        handle: Option<thread::JoinHandle<()>>,
    }

    impl Fake {
        fn start(tag: &str, mode: Mode) -> Fake {
            let dir = std::env::temp_dir().join(format!("parent-backend-{}-{tag}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            let addr = Addr::Unix(dir.join("m.sock"));
            Fake::start_at(dir, addr, mode)
        }

        fn start_at(dir: PathBuf, addr: Addr, mode: Mode) -> Fake {
            let listener = Listener::bind(&addr).unwrap();
            let stop = Arc::new(AtomicBool::new(false));
            let seeds = Arc::new(AtomicUsize::new(0));
            let accepted = Arc::new(AtomicUsize::new(0));
            let (s, sd, ac) = (stop.clone(), seeds.clone(), accepted.clone());
            let handle = thread::spawn(move || {
                let mut conns = Vec::new();
                while !s.load(Ordering::Relaxed) {
                    if let Ok(Some(stream)) = listener.accept_timeout(Duration::from_millis(20)) {
                        ac.fetch_add(1, Ordering::Relaxed);
                        let (s2, sd2) = (s.clone(), sd.clone());
                        conns.push(thread::spawn(move || serve(stream, mode, s2, sd2)));
                    }
                }
                for c in conns {
                    let _ = c.join();
                }
            });
            Fake { dir, addr, stop, seeds, accepted, handle: Some(handle) }
        }

        fn stop(&mut self) {
            self.stop.store(true, Ordering::Relaxed);
            if let Some(h) = self.handle.take() {
                let _ = h.join();
            }
        }
    }

    impl Drop for Fake {
        fn drop(&mut self) {
            self.stop();
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    fn info() -> ModelInfo {
        ModelInfo {
            name: "fake".into(),
            sha256: [7; 32],
            synthetic: true,
            input_shape: [1, 3, 32, 32],
            num_classes: 3,
            label_source: "test".into(),
            labels: vec!["a".into(), "b".into(), "c".into()],
        }
    }

    fn serve(mut stream: Stream, mode: Mode, stop: Arc<AtomicBool>, seeds: Arc<AtomicUsize>) {
        let _ = stream.set_read_timeout(Some(Duration::from_millis(50)));
        loop {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            let raw = match read_frame(&mut stream) {
                Ok(Some(r)) => r,
                Ok(None) => return,
                Err(FrameError::Io(io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut)) => continue,
                Err(_) => return,
            };
            let id = raw.header.request_id;
            let reply = match raw.message() {
                Ok(Message::Ping) => Message::Pong,
                Ok(Message::Seed(b)) => {
                    assert_eq!(b.len(), SEED_LEN);
                    seeds.fetch_add(1, Ordering::Relaxed);
                    Message::Pong
                }
                Ok(Message::InfoQuery) => Message::Info(info()),
                Ok(Message::Attest(nonce)) => Message::Attestation(nonce),
                Ok(Message::KeysQuery) => Message::Keys(vec![1, 2, 3]),
                // Key id 0 stands for a key this fake does not hold.
                Ok(Message::Sealed(b)) if b[0] == 0 => Message::Error(ErrorReply::new(ErrorCode::KeyRejected, "no such key")),
                Ok(Message::Sealed(b)) => Message::SealedReply(b.iter().rev().copied().collect()),
                Ok(Message::Infer(req)) => match mode {
                    Mode::Silent => {
                        thread::sleep(Duration::from_millis(400));
                        continue;
                    }
                    Mode::Busy => Message::Error(ErrorReply::new(ErrorCode::Busy, "queue full")),
                    _ => Message::Result(InferReply {
                        images: req
                            .images
                            .iter()
                            .map(|img| ImageResult {
                                timings: StageTimings { queue_us: 1, decode_us: 2, infer_us: 3 },
                                top: vec![ClassScore { class_id: u32::from(img[0]) % 3, score: 0.9 }],
                            })
                            .collect(),
                    }),
                },
                _ => Message::Error(ErrorReply::new(ErrorCode::UnexpectedKind, "no")),
            };
            let id = if mode == Mode::WrongId && matches!(reply, Message::Result(_)) { id + 1000 } else { id };
            if write_frame(&mut stream, &Frame::new(id, reply)).is_err() {
                return;
            }
        }
    }

    fn cfg(pool: usize, deadline_ms: u64) -> BackendConfig {
        BackendConfig { pool, deadline: Duration::from_millis(deadline_ms), acquire_timeout: Duration::from_millis(200) }
    }

    fn req(n: usize) -> InferRequest {
        InferRequest { top_k: 5, images: (0..n).map(|i| vec![i as u8, 1, 2]).collect() }
    }

    #[test]
    fn infer_round_trip_reuses_connections_and_seeds_once() {
        let fake = Fake::start("ok", Mode::Good);
        let b = Backend::new("secure", fake.addr.clone(), cfg(2, 2000), true);
        for _ in 0..5 {
            let (reply, info) = b.infer(req(2)).unwrap();
            assert_eq!(reply.images.len(), 2);
            assert_eq!(reply.images[1].top[0].class_id, 1);
            assert_eq!(info.name, "fake");
        }
        assert_eq!(fake.accepted.load(Ordering::Relaxed), 1, "sequential requests share one connection");
        assert_eq!(fake.seeds.load(Ordering::Relaxed), 1);
        assert!(b.seed_sent());
        assert!(b.is_up());
        assert_eq!(b.info().map(|i| i.labels.len()), Some(3));
    }

    #[test]
    fn relay_passes_bytes_and_keeps_the_connection_after_a_refused_key() {
        let fake = Fake::start("relay", Mode::Good);
        let b = Backend::new("secure", fake.addr.clone(), cfg(2, 2000), true);
        assert_eq!(b.relay(Message::Attest(vec![9, 8])), Ok(vec![9, 8]));
        assert_eq!(b.relay(Message::KeysQuery), Ok(vec![1, 2, 3]));
        assert_eq!(b.relay(Message::Sealed(vec![1, 2, 3])), Ok(vec![3, 2, 1]));
        match b.relay(Message::Sealed(vec![0, 1])) {
            Err(BackendError::Remote(e)) => assert_eq!(e.code(), Some(ErrorCode::KeyRejected)),
            other => panic!("expected Remote(key_rejected), got {other:?}"),
        }
        assert_eq!(b.relay(Message::Sealed(vec![5, 6])), Ok(vec![6, 5]));
        assert_eq!(fake.accepted.load(Ordering::Relaxed), 1, "a refused key leaves the connection in step");
        // A request that is not a relay frame is answered with something else: refused, connection dropped.
        assert_eq!(b.relay(Message::Ping), Err(BackendError::UnexpectedReply(Kind::Pong)));
        assert_eq!(b.open_connections(), 0);
        // Nothing can carry an empty sealed request.
        assert!(matches!(b.relay(Message::Sealed(Vec::new())), Err(BackendError::Protocol(_))));
    }

    #[test]
    fn unreachable_backend_is_503_material_and_backs_off() {
        let addr = Addr::Unix(std::env::temp_dir().join(format!("parent-none-{}.sock", std::process::id())));
        let b = Backend::new("secure", addr, cfg(2, 500), true);
        assert_eq!(b.infer(req(1)).err(), Some(BackendError::Unreachable(io::ErrorKind::NotFound)));
        assert_eq!(b.infer(req(1)).err(), Some(BackendError::BackingOff));
        assert!(!b.is_up());
        assert!(!b.seed_sent(), "the seed stays pending until a connection succeeds");
        assert_eq!(b.open_connections(), 0);
    }

    #[test]
    fn wrong_request_id_is_refused_and_connection_dropped() {
        let fake = Fake::start("wrongid", Mode::WrongId);
        let b = Backend::new("public", fake.addr.clone(), cfg(2, 2000), false);
        match b.infer(req(1)) {
            Err(BackendError::IdMismatch { sent, got }) => assert_eq!(got, sent + 1000),
            other => panic!("expected IdMismatch, got {other:?}"),
        }
        assert_eq!(b.open_connections(), 0);
    }

    #[test]
    fn deadline_discards_the_connection() {
        let fake = Fake::start("silent", Mode::Silent);
        let b = Backend::new("public", fake.addr.clone(), cfg(1, 100), false);
        assert_eq!(b.infer(req(1)).err(), Some(BackendError::Deadline));
        assert_eq!(b.open_connections(), 0);
    }

    #[test]
    fn remote_busy_is_passed_through() {
        let fake = Fake::start("busy", Mode::Busy);
        let b = Backend::new("public", fake.addr.clone(), cfg(1, 1000), false);
        match b.infer(req(1)) {
            Err(BackendError::Remote(e)) => assert_eq!(e.code(), Some(ErrorCode::Busy)),
            other => panic!("expected Remote(busy), got {other:?}"),
        }
    }

    #[test]
    fn pool_exhaustion_after_acquire_timeout() {
        let fake = Fake::start("exhaust", Mode::Silent);
        let b = Arc::new(Backend::new("public", fake.addr.clone(), cfg(1, 1000), false));
        let b2 = b.clone();
        let holder = thread::spawn(move || b2.infer(req(1)));
        thread::sleep(Duration::from_millis(100));
        let t = Instant::now();
        assert_eq!(b.infer(req(1)).err(), Some(BackendError::PoolExhausted));
        assert!(t.elapsed() >= Duration::from_millis(150));
        assert_eq!(holder.join().unwrap().err(), Some(BackendError::Deadline));
    }

    #[test]
    fn a_returned_connection_goes_to_the_first_waiter_not_a_newcomer() {
        // The race, made deterministic: a connection is back in the pool and a
        // new request takes the lock before the waiting one has woken. The
        // new request must queue behind it (and here time out), not take it.
        let fake = Fake::start("fifo", Mode::Good);
        let b = Arc::new(Backend::new("public", fake.addr.clone(), cfg(1, 1000), false));
        let held = b.acquire().unwrap();
        let b2 = b.clone();
        let waiter = thread::spawn(move || b2.acquire().map(|c| c.reused));
        while b.state().waiting.is_empty() {
            thread::sleep(Duration::from_millis(5));
        }
        thread::sleep(Duration::from_millis(50));
        // What `release` does, short of waking anyone.
        b.state().idle.push(held);
        assert_eq!(b.acquire().err(), Some(BackendError::PoolExhausted), "the newcomer jumped the queue");
        assert_eq!(waiter.join().unwrap().ok(), Some(true), "the first waiter gets the pooled connection");
        assert!(b.state().waiting.is_empty());
        assert_eq!(b.open_connections(), 1);
    }

    #[test]
    fn reconnects_after_the_server_restarts() {
        let mut fake = Fake::start("restart", Mode::Good);
        let (dir, addr) = (fake.dir.clone(), fake.addr.clone());
        let b = Backend::new("public", addr.clone(), cfg(2, 1000), false);
        let mut slot = None;
        assert!(b.check(&mut slot));
        assert!(b.infer(req(1)).is_ok());
        fake.stop();
        drop(fake);
        assert!(!b.check(&mut slot));
        assert!(!b.is_up());
        assert!(b.infer(req(1)).is_err());
        std::fs::create_dir_all(&dir).unwrap();
        let _fake = Fake::start_at(dir, addr, Mode::Good);
        assert!(b.check(&mut slot), "the checker sees the server again");
        assert!(b.infer(req(1)).is_ok(), "requests reconnect without backoff once the checker saw it");
    }

    #[test]
    fn stale_pooled_connection_is_retried_on_a_fresh_one() {
        let mut fake = Fake::start("stale", Mode::Good);
        let (dir, addr) = (fake.dir.clone(), fake.addr.clone());
        let b = Backend::new("public", addr.clone(), cfg(2, 1000), false);
        assert!(b.infer(req(1)).is_ok());
        fake.stop();
        drop(fake);
        std::fs::create_dir_all(&dir).unwrap();
        let _fake = Fake::start_at(dir, addr, Mode::Good);
        // The pooled connection is dead; no checker ran in between.
        assert!(b.infer(req(1)).is_ok());
    }

    #[test]
    fn ping_once_reports_unreachable() {
        let addr = Addr::Unix(std::env::temp_dir().join(format!("parent-ping-none-{}.sock", std::process::id())));
        assert_eq!(ping_once(&addr, Duration::from_millis(100)), Err(BackendError::Unreachable(io::ErrorKind::NotFound)));
        let fake = Fake::start("ping", Mode::Good);
        assert_eq!(ping_once(&fake.addr, Duration::from_secs(1)), Ok(()));
    }
}
