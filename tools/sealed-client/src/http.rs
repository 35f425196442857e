//! A minimal blocking HTTP/1.1 client over `std::net::TcpStream`: one request
//! per connection (`Connection: close`), `http://host[:port]` URLs only, no
//! TLS. TLS is not needed for what it carries: the attestation document is
//! verified by its signatures and the sealed request is end-to-end encrypted
//! to the enclave; what plain HTTP exposes is only that a request was made
//! and its size. Every read is bounded in time and size: the server (the
//! parent) is not trusted.

use std::fmt;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

/// Longest status line plus header fields accepted.
pub const MAX_HEAD_LEN: usize = 16 * 1024;
/// Longest chunk-size line accepted in a chunked body.
const MAX_CHUNK_LINE: usize = 1024;

/// Time limits of one request.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// To establish the TCP connection (per address tried).
    pub connect: Duration,
    /// For the whole exchange after connecting: write the request, read the answer.
    pub total: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(10),
            total: Duration::from_secs(60),
        }
    }
}

/// Why a request failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpError {
    BadUrl(String),
    Connect(String),
    Io(String),
    Timeout,
    TooLarge(usize),
    Malformed(String),
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HttpError::BadUrl(e) => write!(f, "bad URL: {e}"),
            HttpError::Connect(e) => write!(f, "cannot connect: {e}"),
            HttpError::Io(e) => write!(f, "connection error: {e}"),
            HttpError::Timeout => f.write_str("timed out"),
            HttpError::TooLarge(limit) => write!(f, "the answer is larger than {limit} bytes"),
            HttpError::Malformed(e) => write!(f, "malformed HTTP answer: {e}"),
        }
    }
}

impl std::error::Error for HttpError {}

/// A parsed `http://host[:port][/]` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    /// Host name or address, without brackets.
    pub host: String,
    pub port: u16,
}

impl Url {
    /// Parses `http://host[:port][/]`: no path, query, user or TLS.
    pub fn parse(text: &str) -> Result<Self, HttpError> {
        let bad = |what: &str| HttpError::BadUrl(format!("{what} (expected http://host[:port])"));
        if text.starts_with("https://") {
            return Err(bad(
                "https is not supported: no TLS here, the request is sealed end to end",
            ));
        }
        let rest = text.strip_prefix("http://").ok_or_else(|| bad("not an http:// URL"))?;
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if authority.is_empty() || authority.contains(['/', '?', '#', '@']) {
            return Err(bad("only a host and a port are accepted"));
        }
        let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
            // [IPv6]:port
            let (host, after) = bracketed.split_once(']').ok_or_else(|| bad("unclosed ["))?;
            match after {
                "" => (host, None),
                _ => (host, Some(after.strip_prefix(':').ok_or_else(|| bad("junk after ]"))?)),
            }
        } else {
            match authority.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            }
        };
        let host_ok = !host.is_empty()
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'_'));
        if !host_ok {
            return Err(bad("bad host"));
        }
        let port = match port {
            None => 80,
            Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
                p.parse().ok().filter(|&p| p != 0).ok_or_else(|| bad("bad port"))?
            }
            Some(_) => return Err(bad("bad port")),
        };
        Ok(Self {
            host: host.to_string(),
            port,
        })
    }

    /// The `Host` header value.
    fn host_header(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if self.port == 80 {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }
}

impl fmt::Display for Url {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "http://{}", self.host_header())
    }
}

/// An HTTP answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    /// The `Content-Type` value, lowercased, parameters kept.
    pub content_type: Option<String>,
    pub body: Vec<u8>,
}

impl Response {
    /// Whether the media type (before any `;`) is `media_type`.
    pub fn has_type(&self, media_type: &str) -> bool {
        self.content_type
            .as_deref()
            .map(|t| t.split(';').next().unwrap_or("").trim() == media_type)
            .unwrap_or(false)
    }
}

/// `GET path` (path with its query), body at most `max_body` bytes.
pub fn get(url: &Url, path: &str, max_body: usize, timeouts: Timeouts) -> Result<Response, HttpError> {
    exchange(url, "GET", path, None, max_body, timeouts)
}

/// `POST path` with `body` of `content_type`, answer body at most `max_body` bytes.
pub fn post(
    url: &Url,
    path: &str,
    content_type: &str,
    body: &[u8],
    max_body: usize,
    timeouts: Timeouts,
) -> Result<Response, HttpError> {
    exchange(url, "POST", path, Some((content_type, body)), max_body, timeouts)
}

fn exchange(
    url: &Url,
    method: &str,
    path: &str,
    body: Option<(&str, &[u8])>,
    max_body: usize,
    timeouts: Timeouts,
) -> Result<Response, HttpError> {
    let mut stream = connect(url, timeouts.connect)?;
    let deadline = Instant::now() + timeouts.total;

    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: sealed-client\r\nConnection: close\r\n",
        url.host_header()
    );
    if let Some((content_type, body)) = body {
        head.push_str(&format!(
            "Content-Type: {content_type}\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    head.push_str("\r\n");
    stream.set_write_timeout(Some(timeouts.total)).map_err(io)?;
    stream.write_all(head.as_bytes()).map_err(io)?;
    if let Some((_, body)) = body {
        stream.write_all(body).map_err(io)?;
    }
    stream.flush().map_err(io)?;

    let mut reader = Reader {
        stream,
        deadline,
        buf: Vec::new(),
        eof: false,
    };
    read_response(&mut reader, max_body)
}

fn connect(url: &Url, timeout: Duration) -> Result<TcpStream, HttpError> {
    let addrs: Vec<SocketAddr> = (url.host.as_str(), url.port)
        .to_socket_addrs()
        .map_err(|e| HttpError::Connect(format!("{}: {e}", url.host)))?
        .collect();
    let mut last = format!("{}: no address", url.host);
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(stream) => return Ok(stream),
            Err(e) => last = format!("{addr}: {e}"),
        }
    }
    Err(HttpError::Connect(last))
}

fn io(e: std::io::Error) -> HttpError {
    match e.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => HttpError::Timeout,
        _ => HttpError::Io(e.to_string()),
    }
}

/// Buffered reading from the connection under one deadline.
struct Reader<R> {
    stream: R,
    deadline: Instant,
    buf: Vec<u8>,
    eof: bool,
}

impl<R: Read + SetTimeout> Reader<R> {
    /// Reads more bytes into `buf`; false at the end of the stream.
    fn fill(&mut self, limit: usize) -> Result<bool, HttpError> {
        if self.eof {
            return Ok(false);
        }
        if self.buf.len() >= limit {
            return Err(HttpError::TooLarge(limit));
        }
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(HttpError::Timeout);
        }
        self.stream.set_timeout(left).map_err(io)?;
        let mut chunk = [0u8; 8192];
        let want = chunk.len().min(limit - self.buf.len());
        let n = loop {
            match self.stream.read(&mut chunk[..want]) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                other => break other.map_err(io)?,
            }
        };
        if n == 0 {
            self.eof = true;
            return Ok(false);
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(true)
    }
}

/// What the reader needs of a stream besides reading: a read timeout.
trait SetTimeout {
    fn set_timeout(&mut self, timeout: Duration) -> std::io::Result<()>;
}

impl SetTimeout for TcpStream {
    fn set_timeout(&mut self, timeout: Duration) -> std::io::Result<()> {
        self.set_read_timeout(Some(timeout))
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn read_response<R: Read + SetTimeout>(r: &mut Reader<R>, max_body: usize) -> Result<Response, HttpError> {
    let malformed = |what: &str| HttpError::Malformed(what.to_string());

    // The head: status line and header fields, up to the empty line.
    let head_end = loop {
        if let Some(i) = find(&r.buf, b"\r\n\r\n") {
            break i;
        }
        match r.fill(MAX_HEAD_LEN + 4) {
            Ok(true) => {}
            Ok(false) => return Err(malformed("connection closed before the end of the header")),
            Err(HttpError::TooLarge(_)) => return Err(malformed("header too long")),
            Err(e) => return Err(e),
        }
    };
    if head_end > MAX_HEAD_LEN {
        return Err(malformed("header too long"));
    }
    let head = std::str::from_utf8(&r.buf[..head_end]).map_err(|_| malformed("header is not text"))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let status = parse_status_line(status_line).ok_or_else(|| malformed("bad status line"))?;
    if status < 200 {
        return Err(malformed("unexpected informational (1xx) answer"));
    }

    let mut content_length: Option<usize> = None;
    let mut chunked = false;
    let mut content_type = None;
    for line in lines {
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| malformed("header line without ':'"))?;
        let value = value.trim();
        match name.to_ascii_lowercase().as_str() {
            "content-length" => {
                let n = (!value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()))
                    .then(|| value.parse::<usize>().ok())
                    .flatten()
                    .ok_or_else(|| malformed("bad Content-Length"))?;
                if content_length.replace(n).is_some() {
                    return Err(malformed("two Content-Length fields"));
                }
            }
            "transfer-encoding" => {
                if !value.eq_ignore_ascii_case("chunked") || chunked {
                    return Err(malformed("unsupported Transfer-Encoding"));
                }
                chunked = true;
            }
            "content-type" => content_type = Some(value.to_ascii_lowercase()),
            _ => {}
        }
    }
    if chunked && content_length.is_some() {
        return Err(malformed("both Content-Length and Transfer-Encoding"));
    }
    let body_start = head_end + 4;

    // The reader's own limits include the head and the chunk framing: say
    // the body's limit, which is what the caller knows.
    let body_limit = |e| match e {
        HttpError::TooLarge(_) => HttpError::TooLarge(max_body),
        e => e,
    };
    let body = if chunked {
        read_chunked(r, body_start, max_body).map_err(body_limit)?
    } else if let Some(n) = content_length {
        if n > max_body {
            return Err(HttpError::TooLarge(max_body));
        }
        while r.buf.len() - body_start < n {
            if !r.fill(body_start + n)? {
                return Err(malformed("connection closed before the end of the body"));
            }
        }
        r.buf[body_start..body_start + n].to_vec()
    } else {
        // No length: the body ends when the server closes the connection.
        while r.fill(body_start + max_body + 1).map_err(body_limit)? {}
        if r.buf.len() - body_start > max_body {
            return Err(HttpError::TooLarge(max_body));
        }
        r.buf[body_start..].to_vec()
    };
    Ok(Response {
        status,
        content_type,
        body,
    })
}

/// `HTTP/1.x SSS reason` -> SSS.
fn parse_status_line(line: &str) -> Option<u16> {
    let rest = line
        .strip_prefix("HTTP/1.1 ")
        .or_else(|| line.strip_prefix("HTTP/1.0 "))?;
    let code = rest.get(..3)?;
    if !code.bytes().all(|b| b.is_ascii_digit()) || !(rest.len() == 3 || rest[3..].starts_with(' ')) {
        return None;
    }
    code.parse().ok().filter(|c| (100..=599).contains(c))
}

/// Decodes a chunked body (RFC 9112 section 7.1) starting at `start` in the
/// reader's buffer, at most `max_body` bytes of content. Chunk extensions and
/// trailer fields are skipped.
fn read_chunked<R: Read + SetTimeout>(r: &mut Reader<R>, start: usize, max_body: usize) -> Result<Vec<u8>, HttpError> {
    let malformed = |what: &str| HttpError::Malformed(what.to_string());
    // Everything that may be buffered: content, plus generous room for the
    // framing of a reasonable number of chunks.
    let limit = start + max_body + max_body / 8 + 64 * 1024;
    let mut body = Vec::new();
    let mut pos = start;
    // Reads a CRLF-terminated line at `pos`, filling as needed.
    let line_at = |r: &mut Reader<R>, pos: usize| -> Result<(String, usize), HttpError> {
        loop {
            if let Some(i) = find(&r.buf[pos..], b"\r\n") {
                if i > MAX_CHUNK_LINE {
                    return Err(malformed("chunk line too long"));
                }
                let line =
                    std::str::from_utf8(&r.buf[pos..pos + i]).map_err(|_| malformed("chunk line is not text"))?;
                return Ok((line.to_string(), pos + i + 2));
            }
            if r.buf.len() - pos > MAX_CHUNK_LINE {
                return Err(malformed("chunk line too long"));
            }
            if !r.fill(limit)? {
                return Err(malformed("connection closed inside a chunked body"));
            }
        }
    };
    loop {
        let (line, next) = line_at(r, pos)?;
        let size_text = line.split(';').next().unwrap_or("").trim();
        if size_text.is_empty() || size_text.len() > 8 || !size_text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(malformed("bad chunk size"));
        }
        let size = usize::from_str_radix(size_text, 16).map_err(|_| malformed("bad chunk size"))?;
        pos = next;
        if size == 0 {
            // Trailer fields, then the empty line.
            loop {
                let (line, next) = line_at(r, pos)?;
                pos = next;
                if line.is_empty() {
                    return Ok(body);
                }
            }
        }
        if size > max_body - body.len() {
            return Err(HttpError::TooLarge(max_body));
        }
        while r.buf.len() < pos + size + 2 {
            if !r.fill(limit)? {
                return Err(malformed("connection closed inside a chunk"));
            }
        }
        body.extend_from_slice(&r.buf[pos..pos + size]);
        if &r.buf[pos + size..pos + size + 2] != b"\r\n" {
            return Err(malformed("chunk not followed by CRLF"));
        }
        pos += size + 2;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stream that serves fixed bytes in small pieces.
    struct Canned {
        data: Vec<u8>,
        at: usize,
    }

    impl Read for Canned {
        fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
            let n = out.len().min(7).min(self.data.len() - self.at);
            out[..n].copy_from_slice(&self.data[self.at..self.at + n]);
            self.at += n;
            Ok(n)
        }
    }

    impl SetTimeout for Canned {
        fn set_timeout(&mut self, _: Duration) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn parse(raw: &[u8], max_body: usize) -> Result<Response, HttpError> {
        let stream = Canned {
            data: raw.to_vec(),
            at: 0,
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        read_response(
            &mut Reader {
                stream,
                deadline,
                buf: Vec::new(),
                eof: false,
            },
            max_body,
        )
    }

    #[test]
    fn urls() {
        let u = Url::parse("http://127.0.0.1:8080").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("127.0.0.1", 8080));
        assert_eq!(Url::parse("http://example.com/").unwrap().port, 80);
        let v6 = Url::parse("http://[::1]:9000/").unwrap();
        assert_eq!((v6.host.as_str(), v6.port), ("::1", 9000));
        assert_eq!(v6.to_string(), "http://[::1]:9000");
        for bad in [
            "https://example.com",
            "ftp://x",
            "http://",
            "http://h:0",
            "http://h:99999",
            "http://h:8080/path",
            "http://u@h",
            "http://h?x",
            "http://h:",
            "http://h o",
            "http://[::1",
        ] {
            assert!(matches!(Url::parse(bad), Err(HttpError::BadUrl(_))), "{bad}");
        }
        assert!(Url::parse("https://x").unwrap_err().to_string().contains("no TLS"));
    }

    #[test]
    fn content_length_bodies() {
        let r = parse(
            b"HTTP/1.1 200 OK\r\nContent-Type: Application/CBOR\r\nContent-Length: 3\r\n\r\nabc",
            10,
        )
        .unwrap();
        assert_eq!((r.status, r.body.as_slice()), (200, &b"abc"[..]));
        assert!(r.has_type("application/cbor"));
        assert_eq!(
            parse(b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\nabc", 20),
            Err(HttpError::Malformed(
                "connection closed before the end of the body".into()
            ))
        );
        assert_eq!(
            parse(b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n", 10),
            Err(HttpError::TooLarge(10))
        );
        assert!(parse(
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\na",
            10
        )
        .is_err());
        assert!(parse(b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\na", 10).is_err());
    }

    #[test]
    fn chunked_bodies() {
        let raw =
            b"HTTP/1.1 400 Bad\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n2\r\nde\r\n0\r\nX-T: 1\r\n\r\n";
        let r = parse(raw, 10).unwrap();
        assert_eq!((r.status, r.body.as_slice()), (400, &b"abcde"[..]));
        assert_eq!(parse(raw, 4), Err(HttpError::TooLarge(4)));
        assert!(parse(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 10).is_err());
        assert!(parse(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX\r\n0\r\n\r\n",
            10
        )
        .is_err());
        assert!(parse(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", 10).is_err());
    }

    #[test]
    fn close_delimited_bodies_and_bad_heads() {
        let r = parse(b"HTTP/1.0 503 Unavailable\r\n\r\nbusy", 10).unwrap();
        assert_eq!((r.status, r.body.as_slice()), (503, &b"busy"[..]));
        assert_eq!(
            parse(b"HTTP/1.0 200 OK\r\n\r\n0123456789A", 10),
            Err(HttpError::TooLarge(10))
        );
        for bad in [
            &b"HTTP/2 200 OK\r\n\r\n"[..],
            b"HTTP/1.1 20 OK\r\n\r\n",
            b"HTTP/1.1 100 Continue\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nNoColon\r\n\r\n",
            b"HTTP/1.1 200 OK\r\n",
        ] {
            assert!(
                matches!(parse(bad, 10), Err(HttpError::Malformed(_))),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let huge = [&b"HTTP/1.1 200 OK\r\nX: "[..], &vec![b'a'; MAX_HEAD_LEN + 10]].concat();
        assert_eq!(parse(&huge, 10), Err(HttpError::Malformed("header too long".into())));
    }
}
