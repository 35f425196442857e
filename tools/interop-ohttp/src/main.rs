//! interop-ohttp: one sealed request, made and opened by an OHTTP implementation that is not ours
//! and not martinthomson's `ohttp` crate (which our model server uses), against a running stack.
//!
//! Cloudflare's `aloha` (crate `aloha`, pinned in Cargo.toml and Cargo.lock) does everything that
//! matters for interoperability: it parses the `application/ohttp-keys` list (RFC 9540 / RFC 9458
//! section 3), encodes the known-length Binary HTTP request (RFC 9292), seals it (RFC 9458 section
//! 4.3: HPKE info, header, encapsulated key), opens the response (section 4.4: the exported
//! secret, response nonce, HKDF, AEAD) and parses the inner BHTTP response, padding included.
//! This file only chooses a key configuration, moves bytes over HTTP/1.1 and prints the result.
//!
//! Usage: interop-ohttp --keys FILE --image FILE --url http://HOST:PORT
//!          [--top-k N] [--path /predict-secure/] [--gateway /.well-known/ohttp-gateway]
//!          [--content-type TYPE] [--expect-padding N]
//!
//! Prints `status: <inner status>` then the inner body (the JSON) on stdout; sizes, key id and
//! padding on stderr. Exit status: 0 when the exchange went through (whatever the inner status),
//! 1 on a usage or local error, 2 when the gateway refused the outer request (its status and body
//! on stderr), 3 when the answer could not be opened or parsed, or its length broke
//! --expect-padding.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::ExitCode;
use std::time::Duration;

use aloha::bhttp::{Builder, Framing, Parser};
use aloha::{Config, Keys};

/// The suite docs/SEALED.md fixes, and RFC 9458 section 8.2 makes mandatory.
const KEM_X25519: u16 = 0x0020;
const KDF_HKDF_SHA256: u16 = 0x0001;
const AEAD_AES128GCM: u16 = 0x0001;

const IO_TIMEOUT: Duration = Duration::from_secs(120);
const MAX_ANSWER: usize = 64 << 20;

#[derive(Debug)]
enum Failure {
    /// Bad arguments, unreadable files, no usable key configuration, network errors.
    Local(String),
    /// The gateway answered something else than 200 message/ohttp-res.
    Refused {
        status: u16,
        content_type: String,
        body: Vec<u8>,
    },
    /// The answer did not open, or its BHTTP did not parse, or its length was not as expected.
    Answer(String),
}

impl Failure {
    fn local(what: impl Into<String>) -> Self {
        Failure::Local(what.into())
    }
    fn answer(what: impl Into<String>) -> Self {
        Failure::Answer(what.into())
    }
}

#[derive(Debug, Clone)]
struct Args {
    keys: String,
    image: String,
    url: String,
    top_k: Option<String>,
    path: String,
    gateway: String,
    content_type: Option<String>,
    expect_padding: Option<usize>,
}

fn parse_args(mut it: impl Iterator<Item = String>) -> Result<Args, Failure> {
    let (mut keys, mut image, mut url) = (None, None, None);
    let mut args = Args {
        keys: String::new(),
        image: String::new(),
        url: String::new(),
        top_k: Some("5".into()),
        path: "/predict-secure/".into(),
        gateway: "/.well-known/ohttp-gateway".into(),
        content_type: None,
        expect_padding: None,
    };
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .ok_or_else(|| Failure::local(format!("{flag} needs a value")))
        };
        match flag.as_str() {
            "--keys" => keys = Some(value()?),
            "--image" => image = Some(value()?),
            "--url" => url = Some(value()?),
            "--top-k" => {
                let v = value()?;
                args.top_k = if v == "none" { None } else { Some(v) };
            }
            "--path" => args.path = value()?,
            "--gateway" => args.gateway = value()?,
            "--content-type" => args.content_type = Some(value()?),
            "--expect-padding" => {
                let v = value()?;
                let n: usize = v
                    .parse()
                    .map_err(|_| Failure::local(format!("--expect-padding {v}: not a number")))?;
                if n == 0 {
                    return Err(Failure::local("--expect-padding 0: must be at least 1"));
                }
                args.expect_padding = Some(n);
            }
            "-h" | "--help" => return Err(Failure::local(USAGE)),
            other => return Err(Failure::local(format!("unknown argument {other}\n{USAGE}"))),
        }
    }
    args.keys = keys.ok_or_else(|| Failure::local(format!("--keys is required\n{USAGE}")))?;
    args.image = image.ok_or_else(|| Failure::local(format!("--image is required\n{USAGE}")))?;
    args.url = url.ok_or_else(|| Failure::local(format!("--url is required\n{USAGE}")))?;
    Ok(args)
}

const USAGE: &str = "usage: interop-ohttp --keys FILE --image FILE --url http://HOST:PORT \
[--top-k N|none] [--path /predict-secure/] [--gateway /.well-known/ohttp-gateway] \
[--content-type TYPE] [--expect-padding N]";

/// The key configuration to use: the first in the list (the gateway puts its current key first)
/// whose KEM is X25519 and that offers HKDF-SHA256 / AES-128-GCM, with the index of that pair.
/// aloha parses the list; the raw walk below only reads the (KDF, AEAD) pairs, which aloha keeps
/// private, to pick the index that `encrypt_req` takes.
fn select_config(encoded: &[u8]) -> Result<(Config, usize, u8), Failure> {
    let keys = Keys::parse(&mut &encoded[..]).map_err(|e| {
        Failure::local(format!(
            "key configuration list does not parse (aloha): {e}"
        ))
    })?;
    let raw = raw_configs(encoded)?;
    if raw.len() != keys.len() {
        return Err(Failure::local(
            "aloha and the raw walk disagree on the number of key configurations",
        ));
    }
    for (config, bytes) in keys.iter().zip(raw) {
        if config.kem_id() != KEM_X25519 || bytes.len() < 1 + 2 + 32 + 2 {
            continue;
        }
        let algs = &bytes[1 + 2 + 32 + 2..];
        if let Some(idx) = algs.chunks_exact(4).position(|p| {
            u16::from_be_bytes([p[0], p[1]]) == KDF_HKDF_SHA256
                && u16::from_be_bytes([p[2], p[3]]) == AEAD_AES128GCM
        }) {
            return Ok((config.clone(), idx, bytes[0]));
        }
    }
    Err(Failure::local(format!(
        "none of the {} key configuration(s) offers X25519 / HKDF-SHA256 / AES-128-GCM",
        keys.len()
    )))
}

/// Each configuration's bytes, from the u16 length-prefixed list (RFC 9458 section 3.2).
fn raw_configs(mut b: &[u8]) -> Result<Vec<&[u8]>, Failure> {
    let mut out = Vec::new();
    while !b.is_empty() {
        if b.len() < 2 {
            return Err(Failure::local("key configuration list: truncated length"));
        }
        let n = u16::from_be_bytes([b[0], b[1]]) as usize;
        if b.len() < 2 + n {
            return Err(Failure::local(
                "key configuration list: truncated configuration",
            ));
        }
        out.push(&b[2..2 + n]);
        b = &b[2 + n..];
    }
    Ok(out)
}

/// The inner request: known-length BHTTP (framing 0), built by aloha's encoder.
fn inner_request(
    authority: &str,
    path: &str,
    content_type: &str,
    body: &[u8],
) -> Result<Vec<u8>, Failure> {
    let mut buf = Vec::with_capacity(body.len() + 128);
    let fields: [(&[u8], &[u8]); 1] = [(b"content-type", content_type.as_bytes())];
    Builder::new(&mut buf, Framing::KnownLenReq)
        .push_ctrl(b"POST", b"https", authority.as_bytes(), path.as_bytes())
        .and_then(|b| b.push_headers(&fields))
        .and_then(|b| b.push_content(body))
        .and_then(|b| b.push_tailers(&[]))
        .map_err(|e| Failure::local(format!("BHTTP request does not build (aloha): {e}")))?;
    Ok(buf)
}

#[derive(Debug, PartialEq, Eq)]
struct InnerResponse {
    status: u16,
    informational: Vec<u16>,
    fields: Vec<(String, String)>,
    content: Vec<u8>,
    padding: usize,
}

/// The inner response, parsed by aloha's decoder: it takes the last (final) status, the header
/// fields, the content, the trailers, and checks that what follows is zeros (RFC 9292 section 3.8).
fn parse_inner_response(msg: &[u8]) -> Result<InnerResponse, Failure> {
    let e = |what: &str, err: aloha::bhttp::Error| {
        Failure::answer(format!("inner BHTTP response: {what}: {err}"))
    };
    let parser = Parser::new(msg);
    let framing = parser.framing().map_err(|x| e("framing", x))?;
    if framing != Framing::KnownLenRes {
        return Err(Failure::answer(format!(
            "inner BHTTP response: framing {framing:?}, expected known-length response (1)"
        )));
    }
    let ctrl = parser.next_res().map_err(|x| e("control data", x))?;
    let mut informational = Vec::new();
    let mut status = None;
    for item in ctrl.iter() {
        let (code, fields) = item.map_err(|x| e("status", x))?;
        if fields.is_some() {
            informational.push(code as u16);
        } else {
            status = Some(code as u16);
        }
    }
    let status = status.ok_or_else(|| Failure::answer("inner BHTTP response: no final status"))?;
    let headers = ctrl.next().map_err(|x| e("control data", x))?;
    let mut fields = Vec::new();
    for f in headers.iter() {
        let (name, value) = f.map_err(|x| e("header field", x))?;
        fields.push((
            String::from_utf8_lossy(name).into_owned(),
            String::from_utf8_lossy(value).into_owned(),
        ));
    }
    let content_parser = headers.next().map_err(|x| e("header section", x))?;
    let mut content = Vec::new();
    for chunk in content_parser.iter() {
        content.extend_from_slice(chunk.map_err(|x| e("content", x))?);
    }
    let trailers = content_parser.next().map_err(|x| e("content", x))?;
    for f in trailers.iter() {
        f.map_err(|x| e("trailer field", x))?;
    }
    let padding = trailers.next().map_err(|x| e("trailers or padding", x))?;
    Ok(InnerResponse {
        status,
        informational,
        fields,
        content,
        padding: padding.len(),
    })
}

/// A plain `http://host[:port][/prefix]` base URL (the parent's own port; TLS is the load
/// balancer's business, not this harness's).
#[derive(Debug, PartialEq, Eq)]
struct Base {
    host: String,
    port: u16,
    prefix: String,
}

fn parse_base(url: &str) -> Result<Base, Failure> {
    let rest = url.strip_prefix("http://").ok_or_else(|| {
        Failure::local(format!(
            "{url}: only http:// base URLs are supported (the parent's port)"
        ))
    })?;
    let (hostport, prefix) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
        None => (rest, ""),
    };
    let port_of = |p: &str| {
        p.parse::<u16>()
            .map_err(|_| Failure::local(format!("{url}: bad port")))
    };
    let (host, port) = if let Some(r) = hostport.strip_prefix('[') {
        let (h, after) = r
            .split_once(']')
            .ok_or_else(|| Failure::local(format!("{url}: unclosed [")))?;
        match after.strip_prefix(':') {
            Some(p) => (h.to_string(), port_of(p)?),
            None if after.is_empty() => (h.to_string(), 80),
            None => return Err(Failure::local(format!("{url}: bad host"))),
        }
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), port_of(p)?),
            None => (hostport.to_string(), 80),
        }
    };
    if host.is_empty() {
        return Err(Failure::local(format!("{url}: no host")));
    }
    Ok(Base {
        host,
        port,
        prefix: prefix.to_string(),
    })
}

impl Base {
    fn authority(&self) -> String {
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

struct HttpAnswer {
    status: u16,
    content_type: String,
    body: Vec<u8>,
}

/// One HTTP/1.1 POST on a fresh connection (`Connection: close`), the answer read to its end.
fn http_post(
    base: &Base,
    path: &str,
    content_type: &str,
    body: &[u8],
) -> Result<HttpAnswer, Failure> {
    let mut s = TcpStream::connect((base.host.as_str(), base.port))
        .map_err(|e| Failure::local(format!("connect {}: {e}", base.authority())))?;
    s.set_read_timeout(Some(IO_TIMEOUT))
        .and_then(|_| s.set_write_timeout(Some(IO_TIMEOUT)))
        .map_err(|e| Failure::local(e.to_string()))?;
    let head = format!(
        "POST {}{} HTTP/1.1\r\nHost: {}\r\nContent-Type: {}\r\nAccept: message/ohttp-res\r\nContent-Length: {}\r\nConnection: close\r\nUser-Agent: interop-ohttp (aloha)\r\n\r\n",
        base.prefix,
        path,
        base.authority(),
        content_type,
        body.len()
    );
    s.write_all(head.as_bytes())
        .and_then(|_| s.write_all(body))
        .map_err(|e| Failure::local(format!("send: {e}")))?;
    let mut raw = Vec::new();
    s.take(MAX_ANSWER as u64 + 1)
        .read_to_end(&mut raw)
        .map_err(|e| Failure::local(format!("receive: {e}")))?;
    parse_http_answer(&raw)
}

fn parse_http_answer(raw: &[u8]) -> Result<HttpAnswer, Failure> {
    let bad = |what: &str| Failure::local(format!("HTTP answer: {what}"));
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad("no end of header"))?;
    let head = std::str::from_utf8(&raw[..end]).map_err(|_| bad("header is not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad(&format!("status line {status_line:?}")))?;
    let (mut content_type, mut length, mut chunked) = (String::new(), None, false);
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            return Err(bad(&format!("field line {line:?}")));
        };
        let value = value.trim();
        match name.trim().to_ascii_lowercase().as_str() {
            "content-type" => content_type = value.to_string(),
            "content-length" => {
                length = Some(value.parse::<usize>().map_err(|_| bad("Content-Length"))?)
            }
            "transfer-encoding" => chunked = value.to_ascii_lowercase().contains("chunked"),
            _ => {}
        }
    }
    let rest = &raw[end + 4..];
    let body = if chunked {
        dechunk(rest).ok_or_else(|| bad("bad chunked encoding"))?
    } else if let Some(n) = length {
        if rest.len() < n {
            return Err(bad(&format!("body truncated: {} of {n} bytes", rest.len())));
        }
        rest[..n].to_vec()
    } else {
        rest.to_vec()
    };
    if body.len() > MAX_ANSWER {
        return Err(bad("body too large"));
    }
    Ok(HttpAnswer {
        status,
        content_type,
        body,
    })
}

fn dechunk(mut b: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = b.windows(2).position(|w| w == b"\r\n")?;
        let size_field = std::str::from_utf8(&b[..eol]).ok()?;
        let size = usize::from_str_radix(size_field.split(';').next()?.trim(), 16).ok()?;
        b = &b[eol + 2..];
        if size == 0 {
            return Some(out);
        }
        if b.len() < size + 2 {
            return None;
        }
        out.extend_from_slice(&b[..size]);
        b = &b[size + 2..];
    }
}

fn guess_content_type(image: &[u8]) -> &'static str {
    if image.starts_with(&[0x89, b'P', b'N', b'G']) {
        "image/png"
    } else if image.starts_with(&[0xff, 0xd8]) {
        "image/jpeg"
    } else {
        "application/octet-stream"
    }
}

struct Outcome {
    key_id: u8,
    sealed_len: usize,
    answer_len: usize,
    inner_len: usize,
    inner: InnerResponse,
}

fn run(args: &Args) -> Result<Outcome, Failure> {
    let encoded =
        std::fs::read(&args.keys).map_err(|e| Failure::local(format!("{}: {e}", args.keys)))?;
    let image =
        std::fs::read(&args.image).map_err(|e| Failure::local(format!("{}: {e}", args.image)))?;
    let base = parse_base(&args.url)?;
    let (config, alg_idx, key_id) = select_config(&encoded)?;
    let path = match &args.top_k {
        Some(k) => format!("{}?top_k={k}", args.path),
        None => args.path.clone(),
    };
    let content_type = args
        .content_type
        .clone()
        .unwrap_or_else(|| guess_content_type(&image).to_string());
    let request = inner_request(&base.authority(), &path, &content_type, &image)?;

    let mut rng = rand::rng();
    let (sealed, ctx) = config
        .encrypt_req(alg_idx, &request, &mut rng)
        .map_err(|e| Failure::local(format!("sealing (aloha): {e}")))?;
    let answer = http_post(&base, &args.gateway, aloha::MT_OHTTP_REQ, &sealed)?;
    let media = answer
        .content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    if answer.status != 200 || media != aloha::MT_OHTTP_RES {
        return Err(Failure::Refused {
            status: answer.status,
            content_type: answer.content_type,
            body: answer.body,
        });
    }
    let opened = ctx.decrypt_res(&answer.body).map_err(|e| {
        Failure::answer(format!(
            "the encapsulated response does not open (aloha): {e}"
        ))
    })?;
    let inner = parse_inner_response(&opened)?;
    if let Some(n) = args.expect_padding {
        if opened.len() % n != 0 {
            return Err(Failure::answer(format!(
                "inner response is {} bytes ({} of them padding), not a multiple of {n}",
                opened.len(),
                inner.padding
            )));
        }
    }
    Ok(Outcome {
        key_id,
        sealed_len: sealed.len(),
        answer_len: answer.body.len(),
        inner_len: opened.len(),
        inner,
    })
}

fn main() -> ExitCode {
    let result = parse_args(std::env::args().skip(1)).and_then(|args| run(&args));
    match result {
        Ok(o) => {
            eprintln!(
                "interop-ohttp: key id {}, sealed request {} bytes, sealed answer {} bytes, inner response {} bytes ({} padding), informational {:?}, fields {:?}",
                o.key_id, o.sealed_len, o.answer_len, o.inner_len, o.inner.padding, o.inner.informational, o.inner.fields
            );
            println!("status: {}", o.inner.status);
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(&o.inner.content);
            let _ = out.write_all(b"\n");
            ExitCode::SUCCESS
        }
        Err(Failure::Local(m)) => {
            eprintln!("interop-ohttp: {m}");
            ExitCode::from(1)
        }
        Err(Failure::Refused {
            status,
            content_type,
            body,
        }) => {
            eprintln!(
                "interop-ohttp: the gateway refused the request: HTTP {status} ({content_type}): {}",
                String::from_utf8_lossy(&body[..body.len().min(2000)])
            );
            ExitCode::from(2)
        }
        Err(Failure::Answer(m)) => {
            eprintln!("interop-ohttp: {m}");
            ExitCode::from(3)
        }
    }
}

#[cfg(test)]
mod tests;
