//! Issue 16, the parent's side: requests whose cost or framing a client
//! controls, each against a real parent (and two real tiny-test model
//! servers) over raw TCP sockets.
//!
//! - A 50 MiB JSON body padded with an unknown field: answered 4xx, and the
//!   parent's peak RSS (VmHWM) stays near the body's size (it used to build
//!   the whole body as a `serde_json::Value` first: 852 MiB).
//! - A body not read to its end is never parsed as the next request: a
//!   request smuggled in a chunked body, or after a refused body, is not
//!   answered, the connection is closed after the reply (read to EOF).
//! - Ambiguous framing (two Content-Length headers, a signed or non-digit
//!   value, Content-Length with Transfer-Encoding): 400 with a JSON body,
//!   then the connection is closed.
//! - 200 clients that send a head declaring a terabyte and hang up: the
//!   parent's threads and descriptors return to near their baseline.
//!
//! Needs models/tiny-test and testdata/ (`make test` prepares them).

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use common::*;

const PUB: &str = "/predict-public/";

/// A `/proc/PID/status` field, in its own unit (kB for the Vm* ones).
fn status_field(pid: i32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find(|l| l.starts_with(field) && l[field.len()..].starts_with(':'))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

fn fds(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0)
}

/// Sends `bytes`, then reads until the server closes the connection (or
/// `wait` passes without a byte: then `closed` is false).
struct Exchange {
    bytes: Vec<u8>,
    closed: bool,
}

fn exchange(port: u16, bytes: &[u8], wait: Duration) -> Exchange {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(wait)).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(30))).unwrap();
    let _ = s.write_all(bytes);
    let mut out = Vec::new();
    let mut chunk = [0u8; 65536];
    let closed = loop {
        match s.read(&mut chunk) {
            Ok(0) => break true,
            Ok(n) => out.extend_from_slice(&chunk[..n]),
            // A reset after the reply is a close too.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break true,
            Err(_) => break false,
        }
    };
    Exchange { bytes: out, closed }
}

/// Every `HTTP/1.x NNN` status line in what came back, in order.
fn statuses(bytes: &[u8]) -> Vec<u16> {
    let text = String::from_utf8_lossy(bytes);
    text.match_indices("HTTP/1.")
        .filter_map(|(i, _)| text[i..].split(' ').nth(1).and_then(|s| s.parse().ok()))
        .collect()
}

/// The first response: status, its JSON body's `code`, and whether it said `Connection: close`.
fn first_response(bytes: &[u8]) -> (u16, String, bool) {
    let end = bytes.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or_else(|| panic!("no response: {:?}", String::from_utf8_lossy(bytes)));
    let head = String::from_utf8_lossy(&bytes[..end]).to_string();
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap();
    let header = |name: &str| {
        head.split("\r\n").skip(1).filter_map(|l| l.split_once(':')).find(|(k, _)| k.trim().eq_ignore_ascii_case(name)).map(|(_, v)| v.trim().to_string())
    };
    let len: usize = header("Content-Length").and_then(|v| v.parse().ok()).unwrap_or(0);
    let body = &bytes[end + 4..(end + 4 + len).min(bytes.len())];
    let code = serde_json::from_slice::<serde_json::Value>(body).ok().and_then(|v| v["code"].as_str().map(str::to_string)).unwrap_or_default();
    let close = header("Connection").is_some_and(|v| v.eq_ignore_ascii_case("close"));
    (status, code, close)
}

#[test]
fn a_50_mib_json_body_padded_with_an_unknown_field_is_refused_in_bounded_memory() {
    let stack = Stack::start("tiny-test", &[]);
    let port = stack.port;
    let pid = stack.parent.pid();
    let cat = b64(&photo("chelsea.jpg"));
    // {"images": ["<photo>"], "pad": [0,0,0,...]} just under the 50 MiB limit.
    let max = shared::limits::MAX_HTTP_BODY;
    let mut body = format!("{{\"images\": [\"{cat}\"], \"pad\": [0").into_bytes();
    let zeros = (max - body.len() - 2) / 2;
    body.reserve(zeros * 2 + 2);
    for _ in 0..zeros {
        body.extend_from_slice(b",0");
    }
    body.extend_from_slice(b"]}");
    assert!(body.len() <= max && body.len() > max - 16, "{}", body.len());
    let before = status_field(pid, "VmHWM");

    let t = Instant::now();
    let r = request(port, "POST", PUB, &[("Content-Type", "application/json")], Some(&body));
    let elapsed = t.elapsed();
    let one = status_field(pid, "VmHWM");
    assert!((400..500).contains(&r.status), "{} {}", r.status, r.text());
    assert_eq!(r.json()["code"], "unknown_field", "{}", r.text());

    // Four at once.
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let body = body.clone();
            thread::spawn(move || request(port, "POST", PUB, &[("Content-Type", "application/json")], Some(&body)).status)
        })
        .collect();
    for t in threads {
        assert_eq!(t.join().unwrap(), 400);
    }
    let four = status_field(pid, "VmHWM");
    let mib = |kb: u64| kb as f64 / 1024.0;
    eprintln!(
        "padded JSON body of {:.1} MiB: {} in {:.2} s; parent VmHWM {:.0} MiB before, {:.0} MiB after one, {:.0} MiB after four at once",
        body.len() as f64 / (1 << 20) as f64,
        r.status,
        elapsed.as_secs_f64(),
        mib(before),
        mib(one),
        mib(four)
    );
    // The body itself, plus what the process had: never a multiple of it.
    let body_kb = (body.len() / 1024) as u64;
    assert!(one < before + 2 * body_kb, "one request: VmHWM {before} kB -> {one} kB for a {body_kb} kB body");
    assert!(four < before + 4 * 2 * body_kb, "four at once: VmHWM {before} kB -> {four} kB for {body_kb} kB bodies");
    assert!(four < 3 * 4 * body_kb, "four at once: VmHWM {four} kB");
    assert_eq!(get(port, "/health").status, 200);
}
