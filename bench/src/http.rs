//! A minimal blocking HTTP/1.1 client over `std::net::TcpStream`.
//!
//! One connection per request (`Connection: close`), as the study's Python
//! clients did with `requests.post`: every measured latency includes the TCP
//! connect, the request upload, the server's work and reading the reply to
//! its end. There is no keep-alive, no pipelining and no retry: a failure is
//! reported, by cause, to the caller, which counts it.
//!
//! What it refuses: a reply without a parseable status line, or larger than
//! [`MAX_REPLY`] bytes (a benchmark reply is a few hundred bytes).

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// Largest reply read, in bytes.
pub const MAX_REPLY: u64 = 4 * 1024 * 1024;

/// How one request ended when it got no HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The TCP connection could not be made (refused, unreachable).
    Connect,
    /// Connect, send or receive exceeded the timeout.
    Timeout,
    /// The connection broke (reset, closed early) while sending or reading.
    Io,
    /// Bytes came back but were not an HTTP reply.
    BadReply,
}

impl Failure {
    pub fn name(self) -> &'static str {
        match self {
            Failure::Connect => "connect_error",
            Failure::Timeout => "timeout",
            Failure::Io => "io_error",
            Failure::BadReply => "bad_reply",
        }
    }
}

fn classify(e: &io::Error) -> Failure {
    match e.kind() {
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => Failure::Timeout,
        io::ErrorKind::ConnectionRefused | io::ErrorKind::AddrNotAvailable | io::ErrorKind::NotFound => Failure::Connect,
        _ => Failure::Io,
    }
}

pub struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
}

/// Builds the request bytes once, so that every request of a run sends the
/// very same bytes and the load generator spends no time formatting.
pub fn request_bytes(
    method: &str,
    host: SocketAddr,
    path: &str,
    content_type: &str,
    body: &[u8],
    extra_headers: &[(&str, String)],
) -> Vec<u8> {
    let extra: String = extra_headers.iter().map(|(k, v)| format!("{k}: {v}\r\n")).collect();
    let mut out = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: bench\r\nAccept: */*\r\nConnection: close\r\n\
         Content-Type: {content_type}\r\nContent-Length: {}\r\n{extra}\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

/// Sends `request` on a new connection and reads the whole reply.
pub fn send(addr: SocketAddr, request: &[u8], timeout: Duration) -> Result<Reply, Failure> {
    let mut s = TcpStream::connect_timeout(&addr, timeout).map_err(|e| match classify(&e) {
        Failure::Io => Failure::Connect,
        f => f,
    })?;
    s.set_read_timeout(Some(timeout)).map_err(|e| classify(&e))?;
    s.set_write_timeout(Some(timeout)).map_err(|e| classify(&e))?;
    let _ = s.set_nodelay(true);
    let written = s.write_all(request);
    // A server may answer (say, 503) and close before reading the whole body;
    // its reply is still the outcome, so read it even if the write failed.
    let mut buf = Vec::with_capacity(1024);
    let read = (&mut s).take(MAX_REPLY + 1).read_to_end(&mut buf);
    match (written, read) {
        (_, Ok(_)) if !buf.is_empty() => parse(&buf),
        (Err(e), _) => Err(classify(&e)),
        (Ok(()), Err(e)) => Err(classify(&e)),
        (Ok(()), Ok(_)) => Err(Failure::Io), // closed without a byte
    }
}

/// A GET, for /ready and the peer's health check.
pub fn get(addr: SocketAddr, path: &str, timeout: Duration) -> Result<Reply, Failure> {
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    send(addr, req.as_bytes(), timeout)
}

fn parse(buf: &[u8]) -> Result<Reply, Failure> {
    if buf.len() as u64 > MAX_REPLY {
        return Err(Failure::BadReply);
    }
    let head_end = buf.windows(4).position(|w| w == b"\r\n\r\n").ok_or(Failure::BadReply)?;
    let head = std::str::from_utf8(&buf[..head_end]).map_err(|_| Failure::BadReply)?;
    let status_line = head.lines().next().ok_or(Failure::BadReply)?;
    let mut parts = status_line.split(' ');
    let version = parts.next().unwrap_or("");
    if !version.starts_with("HTTP/1.") {
        return Err(Failure::BadReply);
    }
    let status: u16 = parts.next().and_then(|s| s.parse().ok()).ok_or(Failure::BadReply)?;
    let mut body = buf[head_end + 4..].to_vec();
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    if chunked {
        body = dechunk(&body).ok_or(Failure::BadReply)?;
    }
    Ok(Reply { status, body })
}

/// Decodes a chunked body (uvicorn may send one); `None` if malformed.
fn dechunk(mut b: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = b.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&b[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        b = b.get(line_end + 2..)?;
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(b.get(..size)?);
        b = b.get(size.checked_add(2)?..)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_and_chunked_replies() {
        let r = parse(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi").unwrap();
        assert_eq!((r.status, r.body.as_slice()), (200, &b"hi"[..]));
        let r = parse(b"HTTP/1.1 503 Service Unavailable\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n1\r\nd\r\n0\r\n\r\n").unwrap();
        assert_eq!((r.status, r.body.as_slice()), (503, &b"abcd"[..]));
        assert_eq!(parse(b"garbage").err(), Some(Failure::BadReply));
        assert_eq!(parse(b"SSH-2.0 x\r\n\r\n").err(), Some(Failure::BadReply));
        assert_eq!(parse(b"HTTP/1.1 2x0 OK\r\n\r\n").err(), Some(Failure::BadReply));
    }
}
