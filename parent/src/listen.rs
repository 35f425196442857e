//! The HTTP listening socket, and what the parent does around tiny_http so
//! that no client can hold a connection, a thread or the accept loop forever.
//!
//! What it does:
//! - [`bind`] creates the `TcpListener` itself (tiny_http would bind one
//!   without any options) and sets `SO_RCVTIMEO` and `SO_SNDTIMEO` on it.
//!   On Linux an accepted socket inherits both from its listener (pinned by
//!   the test `accepted_sockets_inherit_the_listener_timeouts` below), so
//!   every connection tiny_http accepts has them: a read or write that waits
//!   longer than the I/O timeout fails, tiny_http drops that connection (or
//!   the handler answers 400 `body_read_failed`), and no thread waits forever.
//!   It also raises the soft open-file limit to the hard one, so that a
//!   crowd of idle connections meets the kernel's limit as late as possible.
//! - [`Nudger`] connects to the listener every [`ACCEPT_NUDGE_INTERVAL`] and
//!   closes the connection at once. Two problems of tiny_http 0.12 (read in
//!   its source, `lib.rs` and `util/task_pool.rs`) make this necessary:
//!   1. tiny_http's accept loop stops for good at the first `accept` error,
//!      and `accept` on a listener with `SO_RCVTIMEO` fails with EAGAIN when
//!      no client arrives within the timeout (Linux applies the receive
//!      timeout to `accept`; pinned by `accept_on_the_listener_times_out`).
//!      Without the nudge, the parent would stop accepting connections after
//!      ten quiet seconds.
//!   2. tiny_http runs each connection, for its whole life, as one task of
//!      its thread pool. `TaskPool::spawn` queues a task instead of starting
//!      a thread when its count of idle threads is above zero, but that count
//!      still includes threads that were already woken for an earlier task
//!      and have not yet taken it. When connections arrive in a burst, a new
//!      connection can therefore sit in the queue, unread, until some other
//!      connection task *ends*; with keep-alive clients that is whenever one
//!      of them disconnects (20 s seen in issue 7). A nudge connection's task
//!      ends at once (end of stream before a request line), and the thread
//!      that ran it then takes the queued connection: the wait is bounded by
//!      the nudge interval instead of by other clients.
//!
//!   A nudge never becomes a request: no handler, no access log, no metric.
//! - If tiny_http's accept loop stops anyway (say, `EMFILE` when every file
//!   descriptor is taken), `server.rs` notices the error tiny_http hands to
//!   `recv()` and starts a new `tiny_http::Server` on a clone of this same
//!   listener, so the port is never closed and queued clients are served.
//!
//! What is left (written down in THREAT_MODEL.md): tiny_http buffers a
//! request's header block without a size limit before the parent sees it,
//! and the idle timeout is per read, so a client trickling one header byte
//! per few seconds holds one tiny_http thread (not a handler) until it stops;
//! run the parent behind a load balancer that bounds headers and idle time.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use nix::sys::resource::{getrlimit, setrlimit, Resource};
use nix::sys::socket::{setsockopt, sockopt};
use nix::sys::time::TimeVal;
use shared::limits::ACCEPT_NUDGE_INTERVAL;

/// Binds `addr` with `io_timeout` as the receive and send timeout of the
/// listener and so of every connection accepted from it.
pub fn bind(addr: SocketAddr, io_timeout: Duration) -> io::Result<TcpListener> {
    let listener = TcpListener::bind(addr)?;
    set_timeouts(&listener, io_timeout)?;
    Ok(listener)
}

/// Sets `SO_RCVTIMEO` and `SO_SNDTIMEO` on a listening socket.
fn set_timeouts(listener: &TcpListener, io_timeout: Duration) -> io::Result<()> {
    let tv = TimeVal::new(
        i64::try_from(io_timeout.as_secs()).unwrap_or(i64::MAX),
        i64::from(io_timeout.subsec_micros()),
    );
    setsockopt(listener, sockopt::ReceiveTimeout, &tv).map_err(io::Error::from)?;
    setsockopt(listener, sockopt::SendTimeout, &tv).map_err(io::Error::from)?;
    Ok(())
}

/// Raises the soft limit on open files to the hard limit; returns the new
/// soft limit. Each HTTP connection is one descriptor.
pub fn raise_fd_limit() -> io::Result<u64> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).map_err(io::Error::from)?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard).map_err(io::Error::from)?;
        return Ok(hard);
    }
    Ok(soft)
}

/// Where to connect to reach `local` from this host: the loopback address
/// of the same family when the listener is bound to the unspecified address.
pub fn nudge_target(local: SocketAddr) -> SocketAddr {
    match local.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => SocketAddr::new(Ipv4Addr::LOCALHOST.into(), local.port()),
        IpAddr::V6(ip) if ip.is_unspecified() => SocketAddr::new(Ipv6Addr::LOCALHOST.into(), local.port()),
        _ => local,
    }
}

/// The nudge interval for an I/O timeout: [`ACCEPT_NUDGE_INTERVAL`], or a
/// quarter of the timeout if that is shorter (tests use short timeouts).
pub fn nudge_interval(io_timeout: Duration) -> Duration {
    ACCEPT_NUDGE_INTERVAL.min(io_timeout / 4).max(Duration::from_millis(10))
}

/// The thread that nudges the accept loop (see the module documentation).
pub struct Nudger {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl Nudger {
    pub fn start(target: SocketAddr, every: Duration) -> io::Result<Nudger> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = thread::Builder::new().name("accept-nudge".into()).spawn(move || {
            while !flag.load(Ordering::SeqCst) {
                // Connect and drop: the server sees end of stream before any
                // request line. A failure (listener gone at shutdown, or a
                // full backlog) needs nothing: the next tick tries again.
                let _ = TcpStream::connect_timeout(&target, every);
                thread::sleep(every);
            }
        })?;
        Ok(Nudger { stop, handle: Some(handle) })
    }

    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

impl Drop for Nudger {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::socket::getsockopt;
    use std::time::Instant;

    fn local() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 0))
    }

    #[test]
    fn accepted_sockets_inherit_the_listener_timeouts() {
        let l = bind(local(), Duration::from_millis(1500)).unwrap();
        let _c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (s, _) = l.accept().unwrap();
        for got in [getsockopt(&s, sockopt::ReceiveTimeout).unwrap(), getsockopt(&s, sockopt::SendTimeout).unwrap()] {
            assert_eq!((got.tv_sec(), got.tv_usec()), (1, 500_000));
        }
        // And std sees the same: a read with nothing to read fails after it.
        assert_eq!(s.read_timeout().unwrap(), Some(Duration::from_millis(1500)));
    }

    #[test]
    fn accept_on_the_listener_times_out() {
        // The reason for the nudger: without a client, accept fails (EAGAIN).
        let l = bind(local(), Duration::from_millis(200)).unwrap();
        let t = Instant::now();
        let e = l.accept().unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock, "{e}");
        assert!(t.elapsed() >= Duration::from_millis(150));
    }

    #[test]
    fn a_nudged_listener_keeps_accepting() {
        let l = bind(local(), Duration::from_millis(200)).unwrap();
        let target = nudge_target(l.local_addr().unwrap());
        let mut n = Nudger::start(target, nudge_interval(Duration::from_millis(200))).unwrap();
        let t = Instant::now();
        // For a second (5x the timeout), every accept succeeds.
        while t.elapsed() < Duration::from_secs(1) {
            l.accept().unwrap();
        }
        n.stop();
    }

    #[test]
    fn nudge_targets_and_intervals() {
        assert_eq!(nudge_target("0.0.0.0:80".parse().unwrap()), "127.0.0.1:80".parse().unwrap());
        assert_eq!(nudge_target("[::]:80".parse().unwrap()), "[::1]:80".parse().unwrap());
        assert_eq!(nudge_target("10.0.0.5:8080".parse().unwrap()), "10.0.0.5:8080".parse().unwrap());
        assert_eq!(nudge_interval(Duration::from_secs(10)), ACCEPT_NUDGE_INTERVAL);
        assert_eq!(nudge_interval(Duration::from_secs(1)), Duration::from_millis(250));
    }

    #[test]
    fn fd_limit_is_raised_to_the_hard_limit() {
        let now = raise_fd_limit().unwrap();
        let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
        assert_eq!((now, soft), (hard, hard));
    }
}
