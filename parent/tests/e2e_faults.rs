//! Faults under load, against real processes (tiny-test model, so each test
//! takes seconds):
//! - a model server killed in the middle of a load run: the secure route
//!   fails closed (503 with Retry-After, within a second; never an answer
//!   from the other backend), the other route keeps serving, and after a
//!   restart the parent reconnects by itself (recovery time printed);
//!   the same with the public server killed;
//! - a model server that stops reading (a fake Unix listener that accepts
//!   and never reads), and one that answers its setup then stalls on
//!   inference: the parent answers 504 at its deadline, never hangs;
//! - 100 idle or trickling connections (slowloris: headers byte by byte, or
//!   a body that never completes) do not block other clients;
//! - eight keep-alive clients connecting at the same instant are all served
//!   at once (issue 7: one of them once waited 20 s inside tiny_http).

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;
use shared::frame::{read_frame, write_frame, Frame, Message, ModelInfo};

/// One answered request of a load run.
#[derive(Debug, Clone)]
struct Sample {
    secure: bool,
    sent: Instant,
    took: Duration,
    status: u16,
    backend: Option<String>,
    code: Option<String>,
    retry_after: bool,
}

/// Runs `clients` threads sending alternately to both routes until `stop`.
fn load(port: u16, clients: usize, stop: Arc<AtomicBool>, img: Arc<Vec<u8>>) -> Vec<thread::JoinHandle<Vec<Sample>>> {
    (0..clients)
        .map(|i| {
            let (stop, img) = (stop.clone(), img.clone());
            thread::spawn(move || {
                let mut out = Vec::new();
                let mut n = i;
                while !stop.load(Ordering::SeqCst) {
                    let secure = n % 2 == 0;
                    n += 1;
                    let path = if secure { "/predict-secure/" } else { "/predict-public/" };
                    let sent = Instant::now();
                    let r = post_images(port, path, &[&img]);
                    let v: Option<Value> = serde_json::from_slice(&r.body).ok();
                    out.push(Sample {
                        secure,
                        sent,
                        took: sent.elapsed(),
                        status: r.status,
                        backend: v.as_ref().and_then(|v| v["backend"].as_str().map(String::from)),
                        code: v.as_ref().and_then(|v| v["code"].as_str().map(String::from)),
                        retry_after: r.header("Retry-After").is_some(),
                    });
                }
                out
            })
        })
        .collect()
}

/// Kills one model server mid-load, checks the fail-closed behaviour, restarts
/// it and measures how long until its route answers 200 again.
fn kill_mid_load(kill_secure: bool) {
    let mut stack = Stack::start("tiny-test", &[]);
    let port = stack.port;
    let img = Arc::new(photo("chelsea.jpg"));
    let stop = Arc::new(AtomicBool::new(false));
    let clients = load(port, 6, stop.clone(), img.clone());
    thread::sleep(Duration::from_millis(700));

    let killed_at = Instant::now();
    if kill_secure {
        stack.kill_secure();
    } else {
        let _ = stack.public.child.kill();
        let _ = stack.public.child.wait();
    }
    thread::sleep(Duration::from_millis(2500));
    let restart_at = Instant::now();
    if kill_secure {
        stack.restart_secure();
    } else {
        stack.public = start_model_server(&stack.dir.0, "public", "tiny-test");
    }
    let ready_at = Instant::now();
    // Recovery: the first 200 on the killed route sent after the restart.
    let path = if kill_secure { "/predict-secure/" } else { "/predict-public/" };
    let mut recovered = None;
    while restart_at.elapsed() < Duration::from_secs(10) {
        if post_images(port, path, &[&img]).status == 200 {
            recovered = Some(restart_at.elapsed());
            break;
        }
        thread::sleep(Duration::from_millis(20));
    }
    thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::SeqCst);
    let samples: Vec<Sample> = clients.into_iter().flat_map(|h| h.join().unwrap()).collect();

    let victim = |s: &Sample| s.secure == kill_secure;
    let mut by_status = std::collections::BTreeMap::new();
    for s in samples.iter().filter(|s| victim(s)) {
        *by_status.entry(s.status).or_insert(0) += 1;
    }
    let mut worst_503 = Duration::ZERO;
    for s in &samples {
        let name = if s.secure { "secure" } else { "public" };
        // Nobody is ever answered by the other backend.
        if s.status == 200 {
            assert_eq!(s.backend.as_deref(), Some(name), "{s:?}");
        } else {
            assert!(s.backend.is_none(), "an error reply named a backend: {s:?}");
        }
        if !victim(s) {
            assert_eq!(s.status, 200, "the other route failed: {s:?}");
            continue;
        }
        let during = s.sent >= killed_at + Duration::from_millis(100) && s.sent < restart_at;
        if during {
            // Sent while the server was down: 503 + Retry-After, within a
            // second. Only a request still being handled when the server was
            // restarted may instead get a 200 (from the right backend,
            // checked above): the parent reached the new server.
            if s.status == 200 && s.sent + s.took >= restart_at {
                assert!(s.took < Duration::from_secs(1), "{s:?}");
                continue;
            }
            assert_eq!((s.status, s.code.as_deref(), s.retry_after), (503, Some("backend_unavailable"), true), "{s:?}");
            assert!(s.took < Duration::from_secs(1), "a 503 took {:?}", s.took);
            worst_503 = worst_503.max(s.took);
        } else if s.sent + s.took < killed_at || s.sent > ready_at + Duration::from_secs(2) {
            assert_eq!(s.status, 200, "{s:?}");
        } else {
            // In flight at the moment of the kill or of the restart: an error, never a hang.
            assert!(matches!(s.status, 200 | 502 | 503), "{s:?}");
        }
    }
    let recovered = recovered.expect("the parent did not reconnect within 10 s of the restart");
    let name = if kill_secure { "secure" } else { "public" };
    eprintln!(
        "fault: {name} killed mid-load: {} requests, {name} route statuses {by_status:?}, slowest 503 {:?}, \
         recovered {:?} after the restarted server answered Ping (restart incl. model load {:?})",
        samples.len(),
        worst_503,
        recovered,
        ready_at - restart_at
    );
    assert!(recovered < Duration::from_secs(3), "recovery took {recovered:?}");
    assert!(by_status.get(&503).copied().unwrap_or(0) > 0 && by_status.get(&200).copied().unwrap_or(0) > 0);
    let log = stack.parent_log();
    assert!(!log.contains(&b64(&img)[..64]));
}

#[test]
fn secure_server_killed_mid_load_fails_closed_and_recovers() {
    kill_mid_load(true);
}

#[test]
fn public_server_killed_mid_load_fails_closed_and_recovers() {
    kill_mid_load(false);
}

fn fake_info() -> ModelInfo {
    ModelInfo {
        name: "fake".into(),
        sha256: [0; 32],
        synthetic: true,
        input_shape: [1, 3, 224, 224],
        num_classes: 2,
        label_source: "none".into(),
        labels: vec![],
    }
}

/// A Unix listener that accepts and never reads or answers (`answer_setup`
/// false), or answers Ping/InfoQuery/Seed and then stalls on Infer.
fn fake_stalled_server(path: &Path, answer_setup: bool, stop: Arc<AtomicBool>) -> thread::JoinHandle<()> {
    let listener = UnixListener::bind(path).unwrap();
    listener.set_nonblocking(true).unwrap();
    thread::spawn(move || {
        let mut held = Vec::new();
        while !stop.load(Ordering::SeqCst) {
            match listener.accept() {
                Ok((s, _)) => {
                    s.set_nonblocking(false).unwrap();
                    if answer_setup {
                        let stop = stop.clone();
                        held.push(thread::spawn(move || {
                            let mut s = s;
                            s.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
                            while !stop.load(Ordering::SeqCst) {
                                let raw = match read_frame(&mut s) {
                                    Ok(Some(raw)) => raw,
                                    Ok(None) => return,
                                    Err(_) => continue,
                                };
                                let id = raw.header.request_id;
                                let reply = match raw.message() {
                                    Ok(Message::Ping | Message::Seed(_)) => Message::Pong,
                                    Ok(Message::InfoQuery) => Message::Info(fake_info()),
                                    // Infer: take it, never answer, never read again.
                                    _ => {
                                        while !stop.load(Ordering::SeqCst) {
                                            thread::sleep(Duration::from_millis(50));
                                        }
                                        return;
                                    }
                                };
                                let _ = write_frame(&mut s, &Frame::new(id, reply));
                            }
                        }));
                    } else {
                        held.push(thread::spawn(move || {
                            let _keep = s;
                            thread::sleep(Duration::from_secs(30));
                        }));
                    }
                }
                Err(_) => thread::sleep(Duration::from_millis(10)),
            }
        }
    })
}

#[test]
fn a_stalled_model_server_gets_504_at_the_deadline_not_a_hang() {
    let dir = TempDir::new("stall");
    let stop = Arc::new(AtomicBool::new(false));
    let mute = dir.0.join("mute.sock");
    let stall = dir.0.join("stall.sock");
    let _a = fake_stalled_server(&mute, false, stop.clone());
    let _b = fake_stalled_server(&stall, true, stop.clone());
    let port = free_port();
    let args: Vec<String> = [
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--secure",
        &format!("unix:{}", stall.display()),
        "--public",
        &format!("unix:{}", mute.display()),
        "--deadline-ms",
        "1500",
        "--threads",
        "4",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let parent = Proc::spawn("parent", &parent_bin(), &args, dir.0.join("parent.log"));
    assert!(wait_until(Duration::from_secs(10), || TcpStream::connect(("127.0.0.1", port)).is_ok()));
    let img = photo("chelsea.jpg");

    // Answers its setup, then stalls on inference: 504 at the 1.5 s deadline.
    for _ in 0..2 {
        let t = Instant::now();
        let r = post_images(port, "/predict-secure/", &[&img]);
        let took = t.elapsed();
        assert_eq!((r.status, r.json()["code"].clone()), (504, Value::from("backend_timeout")), "{}", r.text());
        assert!(took >= Duration::from_millis(1400) && took < Duration::from_millis(3500), "504 after {took:?}");
        eprintln!("fault: secure stalls on Infer: 504 after {took:?} (deadline 1.5 s)");
    }
    // Never reads at all: the setup frame's own deadline (READY_PING_TIMEOUT,
    // 2 s) expires, then 504; afterwards the backend backs off (503 at once).
    let t = Instant::now();
    let r = post_images(port, "/predict-public/", &[&img]);
    let took = t.elapsed();
    assert_eq!(r.status, 504, "{}", r.text());
    assert_eq!(r.json()["code"], "backend_timeout");
    assert!(took < Duration::from_millis(4000), "504 after {took:?}");
    eprintln!("fault: public never reads: 504 after {took:?}");
    // The parent itself is fine.
    assert_eq!(get(port, "/health").status, 200);
    assert_eq!(get(port, "/ready").status, 503);
    stop.store(true, Ordering::SeqCst);
    drop(parent);
}

/// Reads one HTTP response from a keep-alive connection (Content-Length framed).
fn read_response(s: &mut TcpStream) -> Option<u16> {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match s.read(&mut b) {
            Ok(1) => head.push(b[0]),
            _ => return None,
        }
    }
    let text = String::from_utf8_lossy(&head).to_string();
    let status = text.split(' ').nth(1)?.parse().ok()?;
    let len: usize = text
        .lines()
        .find_map(|l| l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case("content-length")).map(|(_, v)| v.trim().parse().ok()))
        .flatten()?;
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).ok()?;
    Some(status)
}

#[test]
fn slowloris_and_idle_connections_do_not_block_other_clients() {
    // The default 16 handler threads; a 2 s idle timeout.
    let stack = Stack::start("tiny-test", &["--threads", "16", "--io-timeout-ms", "2000"]);
    let port = stack.port;
    let img = photo("chelsea.jpg");
    let stop = Arc::new(AtomicBool::new(false));
    let mut attackers = Vec::new();
    let outcomes = Arc::new(Mutex::new(std::collections::BTreeMap::<String, usize>::new()));
    for i in 0..100 {
        let (stop, outcomes) = (stop.clone(), outcomes.clone());
        attackers.push(thread::spawn(move || {
            let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
            s.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
            let kind = match i % 10 {
                0 => "body trickle",
                1..=4 => "header trickle",
                _ => "idle",
            };
            let mut bytes: Vec<u8> = match kind {
                "body trickle" => b"POST /predict-public/ HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\nContent-Length: 100000\r\n\r\n".to_vec(),
                "header trickle" => b"POST /predict-public/ HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa".to_vec(),
                _ => Vec::new(),
            };
            if kind == "body trickle" {
                // Headers at once, then the body a byte at a time.
                s.write_all(&bytes).unwrap();
                bytes = vec![0xFF; 100_000];
            }
            let mut sent = 0;
            let mut buf = [0u8; 4096];
            let outcome = loop {
                if stop.load(Ordering::SeqCst) {
                    break "still open at the end".to_string();
                }
                if sent < bytes.len() {
                    if s.write_all(&bytes[sent..sent + 1]).is_err() {
                        break "closed by the parent".to_string();
                    }
                    sent += 1;
                }
                match s.read(&mut buf) {
                    Ok(0) => break "closed by the parent".to_string(),
                    Ok(n) => {
                        let text = String::from_utf8_lossy(&buf[..n]).to_string();
                        break format!("answered {}", text.split(' ').nth(1).unwrap_or("?"));
                    }
                    Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
                    Err(_) => break "reset".to_string(),
                }
                thread::sleep(Duration::from_millis(200));
            };
            *outcomes.lock().unwrap().entry(format!("{kind}: {outcome}")).or_default() += 1;
        }));
    }
    thread::sleep(Duration::from_millis(300));

    // Meanwhile, ordinary clients on both routes: every request answered, fast.
    let t = Instant::now();
    let mut worst = Duration::ZERO;
    let mut n = 0;
    while t.elapsed() < Duration::from_secs(6) {
        for path in ["/predict-public/", "/predict-secure/"] {
            let s = Instant::now();
            let r = post_images(port, path, &[&img]);
            assert_eq!(r.status, 200, "{}", r.text());
            worst = worst.max(s.elapsed());
            n += 1;
        }
        assert_eq!(get(port, "/health").status, 200);
    }
    stop.store(true, Ordering::SeqCst);
    for a in attackers {
        a.join().unwrap();
    }
    let outcomes = outcomes.lock().unwrap().clone();
    eprintln!("fault: 100 slow connections {outcomes:?}; {n} ordinary requests meanwhile, slowest {worst:?}");
    assert!(worst < Duration::from_secs(1), "an ordinary request took {worst:?}");
    // Every body trickler was cut off with 408 after the grace period.
    assert_eq!(outcomes.get("body trickle: answered 408"), Some(&10), "{outcomes:?}");
    // Idle connections were closed by the 2 s idle timeout.
    assert_eq!(outcomes.get("idle: closed by the parent"), Some(&50), "{outcomes:?}");
}

#[test]
fn keep_alive_clients_connecting_at_once_are_all_served_at_once() {
    let stack = Stack::start("tiny-test", &["--threads", "16"]);
    let port = stack.port;
    for round in 0..5 {
        let barrier = Arc::new(Barrier::new(8));
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let barrier = barrier.clone();
                thread::spawn(move || {
                    barrier.wait();
                    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
                    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
                    let mut worst = Duration::ZERO;
                    for i in 0..5 {
                        let close = if i == 4 { "Connection: close\r\n" } else { "" };
                        let t = Instant::now();
                        s.write_all(format!("GET /health HTTP/1.1\r\nHost: x\r\n{close}\r\n").as_bytes()).unwrap();
                        assert_eq!(read_response(&mut s), Some(200));
                        worst = worst.max(t.elapsed());
                    }
                    worst
                })
            })
            .collect();
        let worst = handles.into_iter().map(|h| h.join().unwrap()).max().unwrap();
        eprintln!("fault: keep-alive burst round {round}: slowest request {worst:?}");
        assert!(worst < Duration::from_secs(2), "a keep-alive request waited {worst:?}");
    }
}
