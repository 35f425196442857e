//! The study's heaviest load case against a real stack, on both routes at
//! once: CLIENTS concurrent clients (half on each route, all started at the
//! same instant), each sending 2 requests of a
//! batch of 2 copies of the study's cat photo (base64 JSON, exactly what the
//! study's clients sent). Every request must be answered: 200, or an
//! explicit 503 with Retry-After when a bounded queue is full; none dropped
//! without a status. The RSS of the parent and both model servers is sampled
//! every 50 ms and printed (before / after / peak) and must stay bounded.
//!
//! `cargo test` runs a CI scale (60 clients, tiny-test model: seconds on an
//! idle 2-core machine). `make soak` runs the study's full scale:
//! HARDENING_LOAD_CLIENTS=300 HARDENING_LOAD_MODEL=efficientnet-lite0.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

fn rss_kb(pid: i32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)).and_then(|v| v.parse().ok())
}

/// What one request came to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Outcome {
    Ok,
    Busy503,
    /// A 503 without Retry-After, or any other status: a failure.
    Other(u16, String),
    /// No status at all: connection refused, reset or closed without a reply.
    Dropped(String),
}

fn send(port: u16, request: &[u8], timeout: Duration) -> Outcome {
    let mut s = match TcpStream::connect(("127.0.0.1", port)) {
        Ok(s) => s,
        Err(e) => return Outcome::Dropped(format!("connect: {:?}", e.kind())),
    };
    let _ = s.set_read_timeout(Some(timeout));
    let _ = s.set_write_timeout(Some(timeout));
    if let Err(e) = s.write_all(request) {
        return Outcome::Dropped(format!("write: {:?}", e.kind()));
    }
    let mut buf = Vec::new();
    if let Err(e) = s.read_to_end(&mut buf) {
        if buf.is_empty() {
            return Outcome::Dropped(format!("read: {:?}", e.kind()));
        }
    }
    let text = String::from_utf8_lossy(&buf);
    let Some(status) = text.split(' ').nth(1).and_then(|s| s.parse::<u16>().ok()) else {
        return Outcome::Dropped("no status line".into());
    };
    let retry_after = text.split("\r\n\r\n").next().is_some_and(|h| h.to_ascii_lowercase().contains("\r\nretry-after: "));
    match status {
        200 if text.contains("\"class_ids\":[") => Outcome::Ok,
        503 if retry_after => Outcome::Busy503,
        other => {
            let code = text.split("\"code\":\"").nth(1).and_then(|c| c.split('"').next()).unwrap_or("").to_string();
            Outcome::Other(other, code)
        }
    }
}

#[test]
fn study_heaviest_case_every_request_answered_memory_bounded() {
    let clients: usize = env_or("HARDENING_LOAD_CLIENTS", "60").parse().unwrap();
    let model = env_or("HARDENING_LOAD_MODEL", "tiny-test");
    let timeout = Duration::from_secs(env_or("HARDENING_LOAD_TIMEOUT_S", "120").parse().unwrap());
    let stack = Stack::start(&model, &["--threads", "16"]);
    let port = stack.port;
    let cat = photo("study_cat.jpeg");
    let body = json!({ "images": [b64(&cat), b64(&cat)] }).to_string();
    let request = |path: &str| {
        let mut r = format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        r.extend_from_slice(body.as_bytes());
        Arc::new(r)
    };
    let (secure_rq, public_rq) = (request("/predict-secure/"), request("/predict-public/"));
    // Warm up both routes, then take the baseline.
    for rq in [&secure_rq, &public_rq] {
        assert_eq!(send(port, rq, timeout), Outcome::Ok);
    }
    let procs = [("parent", stack.parent.pid()), ("secure", stack.secure.as_ref().unwrap().pid()), ("public", stack.public.pid())];
    let before: Vec<u64> = procs.iter().map(|(_, p)| rss_kb(*p).unwrap()).collect();
    let peak = Arc::new(Mutex::new(before.clone()));
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (peak, sampling) = (peak.clone(), sampling.clone());
        let pids: Vec<i32> = procs.iter().map(|(_, p)| *p).collect();
        thread::spawn(move || {
            while sampling.load(Ordering::SeqCst) {
                let mut pk = peak.lock().unwrap();
                for (i, pid) in pids.iter().enumerate() {
                    if let Some(kb) = rss_kb(*pid) {
                        pk[i] = pk[i].max(kb);
                    }
                }
                drop(pk);
                thread::sleep(Duration::from_millis(50));
            }
        })
    };

    assert!(clients >= 2 && clients.is_multiple_of(2), "HARDENING_LOAD_CLIENTS must be even");
    let start = Arc::new(Barrier::new(clients));
    let t = Instant::now();
    let handles: Vec<_> = (0..clients)
        .map(|i| {
            let (start, rq) = (start.clone(), if i % 2 == 0 { secure_rq.clone() } else { public_rq.clone() });
            thread::Builder::new()
                .stack_size(256 * 1024)
                .spawn(move || {
                    start.wait();
                    let route = if i % 2 == 0 { "secure" } else { "public" };
                    (0..2).map(|_| (route, send(port, &rq, timeout))).collect::<Vec<_>>()
                })
                .unwrap()
        })
        .collect();
    let results: Vec<(&str, Outcome)> = handles.into_iter().flat_map(|h| h.join().unwrap()).collect();
    let wall = t.elapsed();
    thread::sleep(Duration::from_millis(500));
    sampling.store(false, Ordering::SeqCst);
    sampler.join().unwrap();
    let after: Vec<u64> = procs.iter().map(|(_, p)| rss_kb(*p).unwrap()).collect();
    let peak = peak.lock().unwrap().clone();

    let mut counts: BTreeMap<(&str, String), usize> = BTreeMap::new();
    for (route, o) in &results {
        let key = match o {
            Outcome::Ok => "200".to_string(),
            Outcome::Busy503 => "503+Retry-After".to_string(),
            Outcome::Other(s, c) => format!("other {s} {c}"),
            Outcome::Dropped(why) => format!("dropped ({why})"),
        };
        *counts.entry((route, key)).or_default() += 1;
    }
    let mem: Vec<String> = procs
        .iter()
        .enumerate()
        .map(|(i, (n, _))| format!("{n} {} / {} / {} MiB", before[i] / 1024, after[i] / 1024, peak[i] / 1024))
        .collect();
    eprintln!(
        "load: {model}, {clients} clients (half per route) x 2 requests x batch of 2, {} requests in {:.1} s: {counts:?}; \
         RSS before / after / peak: {}",
        results.len(),
        wall.as_secs_f64(),
        mem.join(", ")
    );
    assert_eq!(results.len(), 2 * clients);
    let failures: Vec<_> = results.iter().filter(|(_, o)| !matches!(o, Outcome::Ok | Outcome::Busy503)).collect();
    assert!(failures.is_empty(), "{} requests neither 200 nor 503+Retry-After: {counts:?}", failures.len());
    assert!(results.iter().any(|(_, o)| *o == Outcome::Ok));
    // Bounded memory: the parent holds at most one body per handler thread
    // plus one per tiny_http connection thread in flight; the model servers
    // a bounded queue of decoded images.
    assert!(peak[0] < 1024 * 1024, "parent peaked at {} MiB", peak[0] / 1024);
    for i in 1..3 {
        assert!(peak[i] < 2048 * 1024, "{} peaked at {} MiB", procs[i].0, peak[i] / 1024);
    }
    // The stack still answers afterwards.
    for rq in [&secure_rq, &public_rq] {
        assert_eq!(send(port, rq, timeout), Outcome::Ok);
    }
}
