//! The parent as a relay for attestation and sealed requests (docs/SEALED.md, "HTTP routes
//! (parent)"), against a real parent process over real sockets, with a *fake* model server on
//! each backend socket: these tests are about what the parent does with the frames (routes,
//! statuses, media types, bytes passed on unchanged, fail closed, `--sealed-only`, logs and
//! metrics), not about the cryptography, which the end-to-end suite (`sealed_e2e.rs`) runs
//! against the real enclave side. A fake also lets a test ask for answers the real server gives
//! only in rare states (an NSM that fails), and count what reached which backend.
//!
//! The fake's relay answers follow fixed rules that the tests know:
//! - `Attest(nonce)`: `Attestation("document for " + nonce)`, or `attestation_unavailable` when
//!   the nonce's first byte is 0x00;
//! - `KeysQuery`: `Keys(KEYS)`;
//! - `Sealed(bytes)`: `key_rejected` when the first byte (an RFC 9458 key id) is 0xEE,
//!   `sealed_request_invalid` when it is 0xBA, else `SealedReply("reply to " + bytes)`.
//!
//! It also answers Ping, Seed, InfoQuery and Infer (class 0 for every image) as a model server
//! does, so that `/ready` and the plaintext routes work beside it.

mod common;

use std::collections::BTreeMap;
use std::io;
use std::net::TcpStream;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};
use shared::frame::{
    read_frame, write_frame, ClassScore, ErrorCode, ErrorReply, FrameError, Frame, ImageResult, InferReply, Message,
    ModelInfo, StageTimings,
};

/// What the fake answers a `KeysQuery` with: one key configuration of the suite docs/SEALED.md
/// names (key id 7, X25519, HKDF-SHA256, AES-128-GCM), with a made-up public key.
const KEYS: &[u8] = &[
    0x00, 0x29, 0x07, 0x00, 0x20, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23,
    24, 25, 26, 27, 28, 29, 30, 31, 32, 0x00, 0x04, 0x00, 0x01, 0x00, 0x01,
];
const UNKNOWN_KEY_ID: u8 = 0xEE;
const UNOPENABLE: u8 = 0xBA;

/// A fake model server on a Unix socket; see the module documentation. Stops (and removes its
/// socket, so that connecting fails) on drop.
struct FakeServer {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    /// Frames received, by kind name.
    seen: Arc<Mutex<BTreeMap<String, usize>>>,
    accept: Option<thread::JoinHandle<()>>,
}

impl FakeServer {
    fn start(path: &Path) -> FakeServer {
        let listener = UnixListener::bind(path).unwrap();
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(BTreeMap::new()));
        let (s, sn) = (stop.clone(), seen.clone());
        let accept = thread::spawn(move || {
            let mut conns = Vec::new();
            while !s.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let (s, sn) = (s.clone(), sn.clone());
                        conns.push(thread::spawn(move || serve(stream, &s, &sn)));
                    }
                    Err(_) => thread::sleep(Duration::from_millis(10)),
                }
            }
            for c in conns {
                let _ = c.join();
            }
        });
        FakeServer { path: path.to_path_buf(), stop, seen, accept: Some(accept) }
    }

    fn seen(&self, kind: &str) -> usize {
        self.seen.lock().unwrap().get(kind).copied().unwrap_or(0)
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

fn fake_info() -> ModelInfo {
    ModelInfo {
        name: "fake".into(),
        sha256: [0; 32],
        synthetic: true,
        input_shape: [1, 3, 224, 224],
        num_classes: 2,
        label_source: "none".into(),
        labels: vec!["zero".into(), "one".into()],
    }
}

fn with_prefix(prefix: &[u8], bytes: &[u8]) -> Vec<u8> {
    [prefix, bytes].concat()
}

fn serve(mut stream: UnixStream, stop: &AtomicBool, seen: &Mutex<BTreeMap<String, usize>>) {
    stream.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    while !stop.load(Ordering::SeqCst) {
        let raw = match read_frame(&mut stream) {
            Ok(Some(raw)) => raw,
            Ok(None) => return,
            Err(FrameError::Io(io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut)) => continue,
            Err(_) => return,
        };
        let Ok(message) = raw.message() else { return };
        *seen.lock().unwrap().entry(format!("{:?}", message.kind())).or_default() += 1;
        let error = |code: ErrorCode| Message::Error(ErrorReply::new(code, "refused by the fake"));
        let reply = match message {
            Message::Ping | Message::Seed(_) => Message::Pong,
            Message::InfoQuery => Message::Info(fake_info()),
            Message::Infer(req) => Message::Result(InferReply {
                images: req
                    .images
                    .iter()
                    .map(|_| ImageResult { timings: StageTimings::default(), top: vec![ClassScore { class_id: 0, score: 1.0 }] })
                    .collect(),
            }),
            Message::Attest(nonce) if nonce[0] == 0 => error(ErrorCode::AttestationUnavailable),
            Message::Attest(nonce) => Message::Attestation(with_prefix(b"document for ", &nonce)),
            Message::KeysQuery => Message::Keys(KEYS.to_vec()),
            Message::Sealed(b) if b[0] == UNKNOWN_KEY_ID => error(ErrorCode::KeyRejected),
            Message::Sealed(b) if b[0] == UNOPENABLE => error(ErrorCode::SealedRequestInvalid),
            Message::Sealed(b) => Message::SealedReply(with_prefix(b"reply to ", &b)),
            _ => error(ErrorCode::UnexpectedKind),
        };
        if write_frame(&mut stream, &Frame::new(raw.header.request_id, reply)).is_err() {
            return;
        }
    }
}

/// A parent on `secure` and `public` with `extra` flags, waiting until it listens.
fn start_parent(dir: &Path, secure: &Path, public: &Path, extra: &[&str]) -> (Proc, u16) {
    let port = free_port();
    let mut args: Vec<String> = vec![
        "--listen".into(),
        format!("127.0.0.1:{port}"),
        "--secure".into(),
        format!("unix:{}", secure.display()),
        "--public".into(),
        format!("unix:{}", public.display()),
        "--threads".into(),
        "4".into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let parent = Proc::spawn("parent", &parent_bin(), &args, dir.join("parent.log"));
    assert!(wait_until(Duration::from_secs(10), || TcpStream::connect(("127.0.0.1", port)).is_ok()));
    (parent, port)
}

const SEALED: &str = "message/ohttp-req";
const GATEWAY: &str = "/.well-known/ohttp-gateway";

fn post_sealed(port: u16, path: &str, body: &[u8]) -> Resp {
    request(port, "POST", path, &[("Content-Type", SEALED)], Some(body))
}

/// An error answer: its status, `application/json`, and the code in its body.
fn check_error(what: &str, r: &Resp, status: u16, code: &str) {
    assert_eq!(r.status, status, "{what}: {}", r.text());
    assert_eq!(r.header("Content-Type"), Some("application/json"), "{what}");
    assert_eq!(r.json()["code"], code, "{what}: {}", r.text());
    assert!(r.json()["error"].is_string(), "{what}");
}

/// The parent's log: only its own lines and access lines, never the request's bytes or its query.
fn check_log(log: &str, never: &[&[u8]]) {
    for line in log.lines() {
        assert!(line.starts_with("access ") || line.starts_with("parent: "), "unexpected log line {line:?}");
    }
    for needle in never {
        assert!(!log.as_bytes().windows(needle.len()).any(|w| w == *needle), "{needle:?} in the parent log:\n{log}");
    }
    for word in ["nonce", "ohttp-req", "ohttp-res", "well-known", "application/cbor"] {
        assert!(!log.contains(word), "{word:?} in the parent log:\n{log}");
    }
}

#[test]
fn sealed_and_attestation_routes_relay_bytes_as_they_are_with_their_media_types() {
    let dir = TempDir::new("relay");
    let (secure_path, public_path) = (dir.0.join("secure.sock"), dir.0.join("public.sock"));
    let secure = FakeServer::start(&secure_path);
    let public = FakeServer::start(&public_path);
    let (parent, port) = start_parent(&dir.0, &secure_path, &public_path, &["--max-body", "65536"]);
    assert!(wait_until(Duration::from_secs(10), || get(port, "/ready").status == 200));

    // Attestation: the nonce goes as bytes, the document comes back as it was.
    let r = get(port, "/attestation?nonce=0A0b");
    assert_eq!((r.status, r.header("Content-Type")), (200, Some("application/cbor")), "{}", r.text());
    assert_eq!(r.body, b"document for \x0a\x0b");
    let longest = "5a".repeat(64);
    let r = get(port, &format!("/attestation?nonce={longest}"));
    assert_eq!((r.status, r.body.len()), (200, 13 + 64));
    for (what, query) in [
        ("missing", "/attestation"),
        ("other parameter only", "/attestation?nonces=00"),
        ("empty", "/attestation?nonce="),
        ("odd length", "/attestation?nonce=abc"),
        ("not hex", "/attestation?nonce=zz"),
        ("percent-encoded", "/attestation?nonce=%41%42"),
        ("65 bytes", &format!("/attestation?nonce={longest}00")),
        ("twice", "/attestation?nonce=01&nonce=02"),
    ] {
        check_error(what, &get(port, query), 400, "bad_nonce");
    }
    // A model server without attestation (the fake's rule: nonce starting with 00).
    let r = get(port, "/attestation?nonce=00ff");
    check_error("no NSM", &r, 503, "attestation_unavailable");
    assert_eq!(r.header("Retry-After"), Some("1"));
    for method in ["POST", "PUT", "DELETE", "HEAD"] {
        let r = request(port, method, "/attestation?nonce=01", &[], (method != "HEAD").then_some(&b""[..]));
        assert_eq!((r.status, r.header("Allow")), (405, Some("GET")), "{method}");
    }

    // Key configurations.
    let r = get(port, GATEWAY);
    assert_eq!((r.status, r.header("Content-Type")), (200, Some("application/ohttp-keys")));
    assert_eq!(r.body, KEYS);
    for method in ["PUT", "DELETE"] {
        let r = request(port, method, GATEWAY, &[], Some(b"x"));
        check_error(method, &r, 405, "method_not_allowed");
        assert_eq!(r.header("Allow"), Some("GET, POST"));
    }

    // Sealed requests, on both paths: every byte value passes unchanged, both ways.
    let sealed: Vec<u8> = (0..=255u8).cycle().skip(1).take(3000).collect();
    for path in [GATEWAY, "/predict-secure/", "/predict-secure", "/predict-secure/?top_k=3"] {
        let r = post_sealed(port, path, &sealed);
        assert_eq!((r.status, r.header("Content-Type")), (200, Some("message/ohttp-res")), "{path}: {}", r.text());
        assert_eq!(r.body, with_prefix(b"reply to ", &sealed), "{path}");
    }
    let r = request(port, "POST", GATEWAY, &[("Content-Type", "Message/OHTTP-Req; x=1")], Some(&sealed));
    assert_eq!(r.status, 200, "media type parameters and case");

    // The relay layer's errors.
    let r = post_sealed(port, GATEWAY, &[UNKNOWN_KEY_ID, 0, 0x20]);
    assert_eq!((r.status, r.header("Content-Type")), (400, Some("application/problem+json")), "{}", r.text());
    assert_eq!(
        r.json(),
        json!({ "type": "https://iana.org/assignments/http-problem-types#ohttp-key", "title": "key identifier unknown" })
    );
    assert_eq!(post_sealed(port, "/predict-secure/", &[UNKNOWN_KEY_ID]).status, 400);
    check_error("cannot be opened", &post_sealed(port, GATEWAY, &[UNOPENABLE, 1]), 400, "sealed_request_invalid");
    check_error("empty", &post_sealed(port, GATEWAY, b""), 400, "sealed_request_invalid");
    check_error("over --max-body", &post_sealed(port, GATEWAY, &vec![1; 65537]), 413, "body_too_large");
    let r = raw(
        port,
        &[&b"POST /.well-known/ohttp-gateway HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: message/ohttp-req\r\nTransfer-Encoding: chunked\r\n\r\n10001\r\n"[..], &vec![1; 65537], b"\r\n0\r\n\r\n"].concat(),
    );
    check_error("chunked over --max-body", &r, 413, "body_too_large");
    check_error(
        "another media type",
        &request(port, "POST", GATEWAY, &[("Content-Type", "application/octet-stream")], Some(&sealed)),
        415,
        "unsupported_media_type",
    );
    check_error("no media type", &request(port, "POST", GATEWAY, &[], Some(&sealed)), 415, "unsupported_media_type");
    check_error("POST without a length", &request(port, "POST", GATEWAY, &[("Content-Type", SEALED)], None), 411, "length_required");
    // The public route never takes a sealed request.
    check_error("sealed to public", &post_sealed(port, "/predict-public/", &sealed), 415, "unsupported_media_type");

    // Nothing of this reached the public server; the secure one got each relay frame.
    for kind in ["Attest", "KeysQuery", "Sealed"] {
        assert_eq!(public.seen(kind), 0, "{kind} reached the public server");
    }
    assert_eq!((secure.seen("Attest"), secure.seen("KeysQuery"), secure.seen("Sealed")), (3, 1, 8));
    assert_eq!(get(port, "/ready").status, 200);

    // Metrics: counted by route and status, nothing else of them.
    let metrics = get(port, "/metrics").text();
    for line in [
        "route=\"attestation\",code=\"200\"} 2",
        "route=\"attestation\",code=\"400\"} 8",
        "route=\"attestation\",code=\"405\"} 4",
        "route=\"attestation\",code=\"503\"} 1",
        "route=\"ohttp_keys\",code=\"200\"} 1",
        "route=\"ohttp_keys\",code=\"405\"} 2",
        "route=\"sealed\",code=\"200\"} 5",
        "route=\"sealed\",code=\"400\"} 4",
        "route=\"sealed\",code=\"413\"} 2",
        "route=\"sealed\",code=\"415\"} 2",
        "route=\"sealed\",code=\"411\"} 1",
        "route=\"predict_public\",code=\"415\"} 1",
        "parent_http_request_duration_seconds_count{route=\"sealed\"} 14",
    ] {
        assert!(metrics.contains(line), "{line} not in\n{metrics}");
    }

    let wanted = ["access method=POST route=sealed status=200 bytes=3009 ms=", "access method=GET route=attestation status=400 bytes="];
    let log = parent.log_once(|log| wanted.iter().all(|w| log.contains(w)));
    check_log(&log, &[&sealed[..64], &longest.as_bytes()[..16], b"document for", b"reply to", &KEYS[5..21]]);
    for w in wanted {
        assert!(log.contains(w), "{w:?} not in the log:\n{log}");
    }
}

#[test]
fn sealed_requests_fail_closed_when_the_secure_backend_is_down() {
    let dir = TempDir::new("relay-down");
    let (secure_path, public_path) = (dir.0.join("secure.sock"), dir.0.join("public.sock"));
    let secure = FakeServer::start(&secure_path);
    let public = FakeServer::start(&public_path);
    let (parent, port) = start_parent(&dir.0, &secure_path, &public_path, &[]);
    assert!(wait_until(Duration::from_secs(10), || get(port, "/ready").status == 200));
    assert_eq!(post_sealed(port, GATEWAY, b"\x01sealed-body").status, 200);

    // The enclave's model server goes away, with a pooled connection still open to it.
    drop(secure);
    for round in 0..3 {
        for path in [GATEWAY, "/predict-secure/"] {
            let r = post_sealed(port, path, b"\x01sealed-body");
            check_error(&format!("round {round}: sealed to {path}"), &r, 503, "backend_unavailable");
            assert_eq!(r.header("Retry-After"), Some("1"));
        }
        check_error("attestation", &get(port, "/attestation?nonce=01"), 503, "backend_unavailable");
        check_error("keys", &get(port, GATEWAY), 503, "backend_unavailable");
    }
    // ... and never the public server, which still answers its own route.
    for kind in ["Attest", "KeysQuery", "Sealed"] {
        assert_eq!(public.seen(kind), 0, "{kind} reached the public server");
    }
    let r = request(port, "POST", "/predict-public/", &[("Content-Type", "image/jpeg")], Some(&[0xFF, 0xD8, 0xFF, 0xE0, 1]));
    assert_eq!(r.status, 200, "{}", r.text());

    // Back again: served without a parent restart.
    let secure = FakeServer::start(&secure_path);
    assert!(wait_until(Duration::from_secs(5), || post_sealed(port, GATEWAY, b"\x01sealed-again").status == 200));
    assert!(secure.seen("Sealed") >= 1);
    check_log(&parent.log_text(), &[b"sealed-body", b"sealed-again"]);
}

#[test]
fn sealed_only_refuses_plaintext_secure_requests_and_relays_sealed_ones() {
    let dir = TempDir::new("relay-only");
    let (secure_path, public_path) = (dir.0.join("secure.sock"), dir.0.join("public.sock"));
    let secure = FakeServer::start(&secure_path);
    let _public = FakeServer::start(&public_path);
    let (parent, port) = start_parent(&dir.0, &secure_path, &public_path, &["--sealed-only"]);
    assert!(wait_until(Duration::from_secs(10), || get(port, "/ready").status == 200));
    let jpeg: &[u8] = &[0xFF, 0xD8, 0xFF, 0xE0, 1, 2, 3];

    let refused = [
        ("raw image", request(port, "POST", "/predict-secure/", &[("Content-Type", "image/jpeg")], Some(jpeg))),
        ("JSON", post_images(port, "/predict-secure", &[jpeg])),
        ("no media type", request(port, "POST", "/predict-secure/", &[], Some(jpeg))),
        (
            "OIP V2 -secure",
            request(port, "POST", "/v2/models/fake-secure/infer", &[("Content-Type", "application/json")], Some(b"{}")),
        ),
    ];
    for (what, r) in &refused {
        check_error(what, r, 403, "sealed_only");
        assert!(r.json()["error"].as_str().unwrap().contains("message/ohttp-req"), "{what}: {}", r.text());
    }
    assert_eq!(secure.seen("Infer"), 0, "plaintext reached the enclave");
    // A wrong method is still a 405 first.
    assert_eq!(get(port, "/predict-secure/").status, 405);

    // The sealed routes, the public route and the secure model's metadata keep working.
    assert_eq!(post_sealed(port, "/predict-secure/", b"\x01sealed-body").status, 200);
    assert_eq!(post_sealed(port, GATEWAY, b"\x01sealed-body").status, 200);
    assert_eq!(get(port, "/attestation?nonce=01").status, 200);
    assert_eq!(get(port, GATEWAY).status, 200);
    let r = request(port, "POST", "/predict-public/", &[("Content-Type", "image/jpeg")], Some(jpeg));
    assert_eq!((r.status, r.json()["backend"].clone()), (200, Value::from("public")), "{}", r.text());
    assert_eq!(get(port, "/v2/models/fake-secure").status, 200);

    let metrics = get(port, "/metrics").text();
    assert!(metrics.contains("route=\"predict_secure\",code=\"403\"} 3"), "{metrics}");
    assert!(metrics.contains("route=\"v2_infer_secure\",code=\"403\"} 1"), "{metrics}");
    let log = parent.log_text();
    check_log(&log, &[b"sealed-body"]);
    assert!(log.contains(", sealed only)"), "{log}");
}
