//! Sealed requests end to end, with every real part: the development NSM (`tools/dev-nsm`),
//! the model server built with `--features enclave/dev-nsm` and run with `--nsm unix:PATH` as
//! the secure backend, a public model server, the parent, and the Rust sealed client's library
//! (`tools/sealed-client`) as the client: it verifies the attestation document against the
//! development root and the measurements dev-nsm wrote, then seals testdata/chelsea.jpg to the
//! attested key.
//!
//! The property under test is that **the parent never holds plaintext**. Between the parent and
//! the secure model server sits a recording Unix-socket proxy (in this test): everything the
//! parent sends to and receives from the enclave's model server is kept, connection by
//! connection, and read back as frames. Of the sealed phase, this test then asserts that no
//! 16-byte window of the image and none of the answer's labels, class ids (as JSON) or scores
//! (as JSON text) appear in: the frames in either direction (except `Info`, the model's
//! metadata, which lists every label of the model and says nothing about a request), every HTTP
//! answer the parent gave, and the parent's log. What to look for comes from the plaintext
//! answer to the same image on `/predict-public/` (same binary, same model), asked before; the
//! sealed answer, once opened by the client, must name the same classes. No `Infer` or `Result`
//! frame may cross during the sealed phase. A plaintext request on `/predict-secure/` at the end
//! shows the detector finds what is there.
//!
//! Then the hostile sealed cases, each followed by `/ready` and a good sealed request: truncated,
//! unknown key id and unsupported suite (RFC 9458's problem+json), bad tag, a replay, an
//! oversized body (413 from the parent), and inner messages the enclave can open but not serve
//! (an inner 400 inside an outer 200).

mod common;

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use common::*;
use sealed_client::root::TrustedRoot;
use sealed_client::seal::{decode_response, seal, InnerResponse};
use sealed_client::verify::{verify, KeyConfig, PcrPolicy, Policy};
use serde_json::Value;
use shared::frame::{read_frame, Kind, Message};
use shared::limits::{MAX_HTTP_BODY, SEALED_REPLY_PAD};

const MODEL: &str = "efficientnet-lite0";
const SEALED: &str = "message/ohttp-req";
const GATEWAY: &str = "/.well-known/ohttp-gateway";

fn dev_nsm_bin() -> PathBuf {
    let p = root().join("target/debug/dev-nsm");
    assert!(p.is_file(), "{} is missing: run `cargo build -p dev-nsm` (make test does) before the parent's tests", p.display());
    p
}

/// Both directions of one proxied connection, as the bytes went by.
#[derive(Default)]
struct Recording {
    to_enclave: Vec<u8>,
    from_enclave: Vec<u8>,
}

/// A Unix-socket proxy in front of `backend` that records every connection it carries.
struct RecordingProxy {
    stop: Arc<AtomicBool>,
    connections: Arc<Mutex<Vec<Arc<Mutex<Recording>>>>>,
}

impl RecordingProxy {
    fn start(front: &Path, backend: &Path) -> RecordingProxy {
        let listener = UnixListener::bind(front).unwrap();
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let connections: Arc<Mutex<Vec<Arc<Mutex<Recording>>>>> = Arc::default();
        let (s, conns, backend) = (stop.clone(), connections.clone(), backend.to_path_buf());
        thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                let Ok((parent_side, _)) = listener.accept() else {
                    thread::sleep(Duration::from_millis(5));
                    continue;
                };
                parent_side.set_nonblocking(false).unwrap();
                let Ok(enclave_side) = UnixStream::connect(&backend) else { continue };
                let recording = Arc::new(Mutex::new(Recording::default()));
                conns.lock().unwrap().push(recording.clone());
                let (p2, e2) = (parent_side.try_clone().unwrap(), enclave_side.try_clone().unwrap());
                let r2 = recording.clone();
                thread::spawn(move || pump(parent_side, enclave_side, &recording, true));
                thread::spawn(move || pump(e2, p2, &r2, false));
            }
        });
        RecordingProxy { stop, connections }
    }

    /// A copy of every connection's recording so far.
    fn snapshot(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        let conns = self.connections.lock().unwrap();
        conns
            .iter()
            .map(|c| {
                let c = c.lock().unwrap();
                (c.to_enclave.clone(), c.from_enclave.clone())
            })
            .collect()
    }
}

impl Drop for RecordingProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Copies `from` to `to`, recording each chunk before passing it on.
fn pump(mut from: UnixStream, mut to: UnixStream, recording: &Mutex<Recording>, to_enclave: bool) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        {
            let mut r = recording.lock().unwrap();
            let log = if to_enclave { &mut r.to_enclave } else { &mut r.from_enclave };
            log.extend_from_slice(&buf[..n]);
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Write);
}

/// Every frame of a recorded stream, whole frames only (the stream was quiet when recorded).
fn frames(stream: &[u8]) -> Vec<Message> {
    let mut cursor = stream;
    let mut out = Vec::new();
    while let Ok(Some(raw)) = read_frame(&mut cursor) {
        out.push(raw.message().unwrap_or_else(|e| panic!("a recorded frame does not decode: {e}")));
    }
    assert!(cursor.is_empty(), "{} recorded bytes are not a whole frame", cursor.len());
    out
}

/// What plaintext looks like: every 16-byte window of the image, and the answer's text.
struct Plaintext {
    windows: HashSet<[u8; 16]>,
    texts: Vec<String>,
}

impl Plaintext {
    fn new(image: &[u8], answer: &Value, answer_json: &str) -> Plaintext {
        let windows = image.windows(16).map(|w| w.try_into().unwrap()).collect();
        let mut texts = Vec::new();
        for c in answer["predictions"][0]["top_k"].as_array().unwrap() {
            texts.push(c["label"].as_str().unwrap().to_string());
            texts.push(format!("\"class_id\":{}", c["class_id"]));
            // The score as the JSON answer spells it (six decimals at most).
            let score = c["score"].to_string();
            assert!(answer_json.contains(&score));
            if score.len() >= 6 {
                texts.push(score.clone());
            }
            texts.push(format!("\"score\":{score}"));
        }
        texts.push(format!("\"class_ids\":{}", answer["class_ids"]));
        assert!(texts.iter().all(|t| answer_json.contains(t.as_str())), "{texts:?} not all in {answer_json}");
        Plaintext { windows, texts }
    }

    /// What of the plaintext `bytes` hold, if anything.
    fn found_in(&self, bytes: &[u8]) -> Option<String> {
        if let Some(at) = bytes.windows(16).position(|w| self.windows.contains(<&[u8; 16]>::try_from(w).unwrap())) {
            return Some(format!("16 bytes of the image at offset {at}"));
        }
        self.texts
            .iter()
            .find(|t| bytes.windows(t.len()).any(|w| w == t.as_bytes()))
            .map(|t| format!("the answer's {t:?}"))
    }
}

struct SealedStack {
    dir: TempDir,
    port: u16,
    proxy: RecordingProxy,
    // Drop order: the parent first.
    parent: Proc,
    _public: Proc,
    _secure: Proc,
    _nsm: Proc,
}

/// `enclave --listen unix:DIR/NAME.sock --model models/MODEL --workers 1 EXTRA...`, answering Ping.
fn model_server(dir: &Path, name: &str, extra: &[String]) -> Proc {
    let sock = format!("unix:{}", dir.join(format!("{name}.sock")).display());
    let mut args = vec!["--listen".to_string(), sock.clone(), "--model".into(), model_dir(MODEL).display().to_string()];
    args.extend(["--workers".to_string(), "1".to_string()]);
    args.extend(extra.iter().cloned());
    let mut p = Proc::spawn(name, &enclave_bin(), &args, dir.join(format!("{name}.log")));
    let st = std::process::Command::new(parent_bin()).args(["ping", &sock, "--timeout", "60"]).output().unwrap();
    if !st.status.success() {
        let _ = p.child.kill();
        panic!("{name} model server did not start: {}\n{}", String::from_utf8_lossy(&st.stderr), p.log_text());
    }
    p
}

impl SealedStack {
    fn start() -> SealedStack {
        let dir = TempDir::new("sealed");
        let d = &dir.0;
        let nsm_sock = d.join("nsm.sock");
        let args: Vec<String> = [
            ("--socket", nsm_sock.clone()),
            ("--state-dir", d.join("nsm-state")),
            ("--enclave-bin", enclave_bin()),
            ("--model", model_dir(MODEL).join("model.onnx")),
            ("--root-out", d.join("dev-root.pem")),
            ("--measurements-out", d.join("measurements.json")),
        ]
        .iter()
        .flat_map(|(flag, path)| [flag.to_string(), path.display().to_string()])
        .collect();
        let nsm = Proc::spawn("dev-nsm", &dev_nsm_bin(), &args, d.join("dev-nsm.log"));
        // dev-nsm binds its socket last, once the root and the measurements are written.
        assert!(wait_until(Duration::from_secs(30), || nsm_sock.exists()), "dev-nsm did not start:\n{}", nsm.log_text());
        let secure = model_server(d, "enclave", &["--nsm".into(), format!("unix:{}", nsm_sock.display())]);
        let public = model_server(d, "public", &["--nsm".into(), "none".into()]);
        let proxy = RecordingProxy::start(&d.join("secure.sock"), &d.join("enclave.sock"));
        let port = free_port();
        let args: Vec<String> = [
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--secure",
            &format!("unix:{}", d.join("secure.sock").display()),
            "--public",
            &format!("unix:{}", d.join("public.sock").display()),
            "--threads",
            "4",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let parent = Proc::spawn("parent", &parent_bin(), &args, d.join("parent.log"));
        let ok = wait_until(Duration::from_secs(60), || {
            TcpStream::connect(("127.0.0.1", port)).is_ok() && get(port, "/ready").status == 200
        });
        assert!(ok, "stack not ready; parent log:\n{}", parent.log_text());
        SealedStack { dir, port, proxy, parent, _public: public, _secure: secure, _nsm: nsm }
    }

    fn policy(&self) -> Policy {
        let pem = std::fs::read_to_string(self.dir.0.join("dev-root.pem")).unwrap();
        let json = std::fs::read_to_string(self.dir.0.join("measurements.json")).unwrap();
        let pcrs = sealed_client::measurements::parse(&json).unwrap();
        Policy::new(TrustedRoot::development_from_pem(&pem).unwrap(), PcrPolicy::Pinned(pcrs))
    }
}

/// The HTTP answers of the sealed phase, kept to be searched for plaintext.
#[derive(Default)]
struct Answers(Vec<Resp>);

impl Answers {
    fn keep(&mut self, r: Resp) -> &Resp {
        self.0.push(r);
        self.0.last().unwrap()
    }
}

fn post_sealed(port: u16, path: &str, body: &[u8]) -> Resp {
    request(port, "POST", path, &[("Content-Type", SEALED)], Some(body))
}

/// Attests with a fresh nonce and returns the verified key, checking the keys route agrees.
fn attest(stack: &SealedStack, answers: &mut Answers) -> KeyConfig {
    let mut nonce = [0u8; 32];
    getrandom::getrandom(&mut nonce).unwrap();
    let r = answers.keep(get(stack.port, &format!("/attestation?nonce={}", sealed_client::hex::encode(&nonce))));
    assert_eq!((r.status, r.header("Content-Type")), (200, Some("application/cbor")), "{}", r.text());
    let verified = verify(&r.body, &nonce, &stack.policy()).unwrap_or_else(|e| panic!("the document does not verify: {e}"));
    let user_data = String::from_utf8(verified.user_data.clone()).unwrap();
    assert!(user_data.starts_with("nitro-ml-attest/1 model-sha256="), "{user_data}");
    let key = verified.key_config;
    let r = answers.keep(get(stack.port, GATEWAY));
    assert_eq!((r.status, r.header("Content-Type")), (200, Some("application/ohttp-keys")));
    // RFC 9540: each configuration behind its 2-byte length; the current (attested) one first.
    assert_eq!(&r.body[..2], &[0, 41]);
    assert_eq!(&r.body[2..43], key.encoded(), "the keys route's first key is not the attested one");
    key
}

/// Seals `image`, sends it to `path`, opens the answer: the inner response.
fn sealed_predict(port: u16, path: &str, key: &KeyConfig, image: &[u8], answers: &mut Answers) -> InnerResponse {
    let sealed = seal(key, image, Some(5)).unwrap();
    let r = answers.keep(post_sealed(port, path, &sealed.request));
    assert_eq!((r.status, r.header("Content-Type")), (200, Some("message/ohttp-res")), "{}", r.text());
    // RFC 9458: a 16-byte response nonce, then the AEAD of the padded BHTTP response and its 16-byte tag.
    assert_eq!(r.body.len() % SEALED_REPLY_PAD, 32, "the sealed answer is not padded");
    sealed.open(&r.body).unwrap_or_else(|e| panic!("cannot open the sealed answer: {e}"))
}

/// Seals arbitrary inner bytes with the `ohttp` crate: the encapsulated request and its opener.
fn seal_raw(key: &KeyConfig, inner: &[u8]) -> (Vec<u8>, ohttp::ClientResponse) {
    ohttp::ClientRequest::from_encoded_config(key.encoded()).unwrap().encapsulate(inner).unwrap()
}

/// A problem+json 400 for an unknown key (RFC 9458 section 5.3).
fn check_key_problem(what: &str, r: &Resp) {
    assert_eq!((r.status, r.header("Content-Type")), (400, Some("application/problem+json")), "{what}: {}", r.text());
    let v = r.json();
    assert_eq!(v["type"], "https://iana.org/assignments/http-problem-types#ohttp-key", "{what}");
    assert_eq!(v["title"], "key identifier unknown", "{what}");
}

fn check_json_error(what: &str, r: &Resp, status: u16, code: &str) {
    assert_eq!((r.status, r.header("Content-Type")), (status, Some("application/json")), "{what}: {}", r.text());
    assert_eq!(r.json()["code"], code, "{what}: {}", r.text());
}

/// After a hostile request: the stack is healthy and a good sealed request is served.
fn still_serves(stack: &SealedStack, key: &KeyConfig, image: &[u8], want: &Value, answers: &mut Answers, after: &str) {
    assert_eq!(get(stack.port, "/ready").status, 200, "not ready after {after}");
    let inner = sealed_predict(stack.port, GATEWAY, key, image, answers);
    assert_eq!(inner.status, 200, "after {after}: {}", String::from_utf8_lossy(&inner.body));
    let v: Value = serde_json::from_slice(&inner.body).unwrap();
    assert_eq!(v["class_ids"], want["class_ids"], "after {after}");
}

#[test]
fn the_parent_never_holds_plaintext_and_survives_hostile_sealed_requests() {
    let stack = SealedStack::start();
    let port = stack.port;
    let image = photo("chelsea.jpg");

    // The plaintext answer, from the public model server (same binary, same model): what to look for.
    let r = request(port, "POST", "/predict-public/?top_k=5", &[("Content-Type", "image/jpeg")], Some(&image));
    assert_eq!(r.status, 200, "{}", r.text());
    let plain = r.json();
    let plaintext = Plaintext::new(&image, &plain, &r.text());
    let labels: Vec<&str> = plain["predictions"][0]["top_k"].as_array().unwrap().iter().map(|c| c["label"].as_str().unwrap()).collect();
    assert!(labels.contains(&"Egyptian cat"), "{labels:?}");
    eprintln!("plaintext answer (public route): class_ids {} top-5 {labels:?}", plain["class_ids"]);

    // The sealed phase.
    let mut answers = Answers::default();
    let key = attest(&stack, &mut answers);
    for path in [GATEWAY, "/predict-secure/"] {
        let inner = sealed_predict(port, path, &key, &image, &mut answers);
        assert_eq!(inner.status, 200, "{path}: {}", String::from_utf8_lossy(&inner.body));
        assert_eq!(inner.content_type.as_deref(), Some(&b"application/json"[..]));
        let v: Value = serde_json::from_slice(&inner.body).unwrap();
        assert_eq!(v["backend"], "secure");
        assert_eq!(v["class_ids"], plain["class_ids"], "{path}");
        let sealed_labels: Vec<&str> = v["predictions"][0]["top_k"].as_array().unwrap().iter().map(|c| c["label"].as_str().unwrap()).collect();
        assert_eq!(sealed_labels, labels, "{path}");
    }

    // Hostile sealed requests, each followed by a health check and a good sealed request.
    let good = seal(&key, &image, Some(5)).unwrap().request;
    let mut wrong_key = good.clone();
    wrong_key[0] ^= 0x80;
    let mut wrong_suite = good.clone();
    wrong_suite[5..7].copy_from_slice(&[0x00, 0x03]); // ChaCha20Poly1305, not the key's AES-128-GCM
    let mut bad_tag = good.clone();
    *bad_tag.last_mut().unwrap() ^= 1;
    let mut bad_ciphertext = good.clone();
    let middle = bad_ciphertext.len() / 2;
    bad_ciphertext[middle] ^= 0x40;
    let outer_cases: Vec<(&str, &[u8], Option<&str>)> = vec![
        ("truncated to 10 bytes", &good[..10], Some("sealed_request_invalid")),
        ("truncated to half", &good[..good.len() / 2], Some("sealed_request_invalid")),
        ("bad tag", &bad_tag, Some("sealed_request_invalid")),
        ("ciphertext altered", &bad_ciphertext, Some("sealed_request_invalid")),
        ("unknown key id", &wrong_key, None),
        ("unsupported HPKE suite", &wrong_suite, None),
    ];
    for (what, body, code) in &outer_cases {
        let r = answers.keep(post_sealed(port, GATEWAY, body));
        match code {
            Some(code) => check_json_error(what, r, 400, code),
            None => check_key_problem(what, r),
        }
        still_serves(&stack, &key, &image, &plain, &mut answers, what);
    }

    // A replay: the same sealed bytes twice.
    let (replayed, opener) = seal_raw(&key, &sealed_client::seal::inner_request(&image, Some(5)));
    let first = answers.keep(post_sealed(port, GATEWAY, &replayed));
    assert_eq!(first.status, 200, "{}", first.text());
    let first_body = first.body.clone();
    let second = answers.keep(post_sealed(port, GATEWAY, &replayed));
    replay_outcome(second, &first_body);
    let inner = decode_response(&opener.decapsulate(&first_body).unwrap()).unwrap();
    assert_eq!(inner.status, 200);
    still_serves(&stack, &key, &image, &plain, &mut answers, "a replay");

    // Oversized: refused by the parent before the enclave sees a byte of it.
    let oversized = vec![good[0]; MAX_HTTP_BODY + 1];
    check_json_error("oversized", answers.keep(post_sealed(port, GATEWAY, &oversized)), 413, "body_too_large");
    still_serves(&stack, &key, &image, &plain, &mut answers, "an oversized body");

    // Opened, but not served: the error travels sealed, inside an outer 200.
    let mut indeterminate = Vec::new();
    let mut message = bhttp::Message::request(b"POST".to_vec(), b"https".to_vec(), Vec::new(), b"/predict-secure/".to_vec());
    message.write_content(&image);
    message.write_bhttp(bhttp::Mode::IndeterminateLength, &mut indeterminate).unwrap();
    let inner_cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        ("not BHTTP", b"this is not a binary HTTP message".to_vec(), 400, "bad_inner_request"),
        ("indeterminate-length BHTTP", indeterminate, 400, "bad_inner_request"),
        ("not an image", sealed_client::seal::inner_request(b"not an image at all", None), 400, "bad_image"),
        ("bad top_k", sealed_client::seal::inner_request(&image, Some(0)), 400, "bad_top_k"),
    ];
    for (what, inner, status, code) in &inner_cases {
        let (request, opener) = seal_raw(&key, inner);
        let r = answers.keep(post_sealed(port, GATEWAY, &request));
        assert_eq!((r.status, r.header("Content-Type")), (200, Some("message/ohttp-res")), "{what}: {}", r.text());
        assert_eq!(r.body.len() % SEALED_REPLY_PAD, 32, "{what}: the sealed error is not padded");
        let inner = decode_response(&opener.decapsulate(&r.body).unwrap()).unwrap();
        let v: Value = serde_json::from_slice(&inner.body).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!((inner.status, v["code"].as_str()), (*status, Some(*code)), "{what}: {v}");
        still_serves(&stack, &key, &image, &plain, &mut answers, what);
    }

    // What the parent held during all of that.
    let recorded = stack.proxy.snapshot();
    let log = stack.parent.log_once(|log| log.contains("route=sealed status=200"));
    let mut kinds = std::collections::BTreeMap::<String, usize>::new();
    for (to_enclave, from_enclave) in &recorded {
        for m in frames(to_enclave).iter().chain(frames(from_enclave).iter()) {
            *kinds.entry(format!("{:?}", m.kind())).or_default() += 1;
            assert!(!matches!(m.kind(), Kind::Infer | Kind::Result), "a plaintext frame crossed: {:?}", m.kind());
            if m.kind() != Kind::Info {
                let body = m.encode_body().unwrap();
                if let Some(what) = plaintext.found_in(&body) {
                    panic!("{what} in a {:?} frame between the parent and the enclave", m.kind());
                }
            }
        }
        if let Some(what) = plaintext.found_in(to_enclave) {
            panic!("{what} in what the parent sent the enclave");
        }
    }
    eprintln!("frames between the parent and the enclave during the sealed phase: {kinds:?}");
    assert!(kinds.get("Sealed").copied().unwrap_or(0) >= 20 && kinds.get("SealedReply").copied().unwrap_or(0) >= 20, "{kinds:?}");
    for r in &answers.0 {
        let head: String = r.headers.iter().map(|(k, v)| format!("{k}: {v}\n")).collect();
        for part in [head.as_bytes(), &r.body[..]] {
            if let Some(what) = plaintext.found_in(part) {
                panic!("{what} in an HTTP answer of the parent (status {})", r.status);
            }
        }
    }
    if let Some(what) = plaintext.found_in(log.as_bytes()) {
        panic!("{what} in the parent's log:\n{log}");
    }
    for line in log.lines() {
        assert!(line.starts_with("access ") || line.starts_with("parent: "), "unexpected log line {line:?}");
    }
    assert!(log.contains("route=sealed status=200"), "{log}");
    let metrics = get(port, "/metrics").text();
    assert!(metrics.contains("parent_http_requests_total{route=\"sealed\",code=\"200\"}"), "{metrics}");
    assert!(metrics.contains("parent_http_requests_total{route=\"attestation\",code=\"200\"} 1"), "{metrics}");
    eprintln!(
        "checked: {} connections recorded ({} bytes to the enclave, {} from it), {} HTTP answers, {} log lines",
        recorded.len(),
        recorded.iter().map(|r| r.0.len()).sum::<usize>(),
        recorded.iter().map(|r| r.1.len()).sum::<usize>(),
        answers.0.len(),
        log.lines().count()
    );

    // The control: a plaintext request on the secure route is found by the same detector.
    let before: usize = stack.proxy.snapshot().iter().map(|r| r.0.len()).sum();
    let r = request(port, "POST", "/predict-secure/", &[("Content-Type", "image/jpeg")], Some(&image));
    assert_eq!(r.status, 200);
    assert!(plaintext.found_in(&r.body).is_some(), "the detector misses the plaintext answer");
    let after = stack.proxy.snapshot();
    assert!(after.iter().map(|r| r.0.len()).sum::<usize>() > before);
    assert!(after.iter().any(|r| plaintext.found_in(&r.0).is_some()), "the detector misses the image on its way to the enclave");
}

/// A replayed sealed request (the same bytes twice) is opened and answered again: RFC 9458 gives
/// a gateway no replay protection of its own (section 6.5), and this enclave keeps none, since a
/// classification changes no state. The replay gets another 200 of the same length under a fresh
/// response nonce, so its bytes differ from the first answer's: whoever replays a request (the
/// parent included) gets an answer it can neither open nor match to the first by its bytes. What
/// it does learn is that the request was served again (and its timing).
fn replay_outcome(second: &Resp, first_body: &[u8]) {
    assert_eq!((second.status, second.header("Content-Type")), (200, Some("message/ohttp-res")), "{}", second.text());
    assert_eq!(second.body.len(), first_body.len());
    assert_ne!(&second.body[..16], &first_body[..16], "the replay's answer reuses the response nonce");
    assert_ne!(second.body, first_body);
}
