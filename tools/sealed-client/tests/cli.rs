//! The command line end to end against a fake parent on 127.0.0.1: its
//! `GET /attestation` answers a document signed now by a development chain
//! for the nonce asked, binding the key of an OHTTP gateway (the `ohttp`
//! crate's server side) that its `POST /predict-secure/` opens and answers.
//! Checks the exit statuses (0, 1, 2, 3, 4), stdout and stderr.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::dev::{pcrs, Chain, USER_DATA};
use dev_nsm::document::DocumentSpec;
use ohttp::hpke::{Aead, Kdf, Kem};
use ohttp::{KeyConfig, Server, SymmetricSuite};
use sealed_client::cli;

const IMAGE: &[u8] = b"\x89PNG\r\n\x1a\n pretend image";
const ANSWER: &[u8] = br#"{"class_ids": [285], "backend": "secure"}"#;

/// How the fake parent behaves.
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Good,
    /// `GET /attestation` answers 503 attestation_unavailable.
    NoAttestation,
    /// The enclave answers the inner request with 415.
    InnerError,
    /// The gateway does not know the key (RFC 9458 5.3).
    KeyRejected,
    /// The document carries another nonce than the one asked for.
    Replayed,
    /// The answer to the sealed request is chunked (as tiny_http sends large answers).
    Chunked,
}

struct Parent {
    chain: Chain,
    gateway: Server,
    key_config: Vec<u8>,
    mode: Mode,
    /// How many sealed requests arrived.
    posts: AtomicUsize,
}

/// Starts the fake parent; returns its URL.
fn start(mode: Mode) -> (String, Arc<Parent>) {
    let config = KeyConfig::new(
        7,
        Kem::X25519Sha256,
        vec![SymmetricSuite::new(Kdf::HkdfSha256, Aead::Aes128Gcm)],
    )
    .unwrap();
    let key_config = config.encode().unwrap();
    let parent = Arc::new(Parent {
        chain: Chain::at(SystemTime::now()),
        gateway: Server::new(config).unwrap(),
        key_config,
        mode,
        posts: AtomicUsize::new(0),
    });
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let served = parent.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let _ = serve(&served, stream);
        }
    });
    (url, parent)
}

fn serve(parent: &Parent, mut stream: TcpStream) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 65536];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let length: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap())
        })
        .unwrap_or(0);
    while buf.len() < head_end + 4 + length {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = &buf[head_end + 4..head_end + 4 + length];
    let target = head.split(' ').nth(1).unwrap_or("").to_string();
    assert!(head.contains("\r\nConnection: close"), "{head}");

    let (status, content_type, answer) = if let Some(nonce_hex) = target.strip_prefix("/attestation?nonce=") {
        if parent.mode == Mode::NoAttestation {
            (
                503,
                "application/json",
                br#"{"error": "no attestation", "code": "attestation_unavailable"}"#.to_vec(),
            )
        } else {
            let mut nonce = sealed_client::hex::decode(nonce_hex).unwrap();
            if parent.mode == Mode::Replayed {
                nonce[0] ^= 1;
            }
            let spec = DocumentSpec {
                module_id: "i-0123456789abcdef0-enc0123456789abcdef".into(),
                timestamp_ms: SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64,
                pcrs: pcrs(),
                public_key: Some(parent.key_config.clone()),
                user_data: Some(USER_DATA.as_bytes().to_vec()),
                nonce: Some(nonce),
            };
            let bundle = vec![
                parent.chain.root.cert_der().to_vec(),
                parent.chain.mid.cert_der().to_vec(),
            ];
            (200, "application/cbor", spec.sign(&parent.chain.leaf, &bundle))
        }
    } else if target == "/predict-secure/" {
        parent.posts.fetch_add(1, Ordering::SeqCst);
        assert!(head.contains("\r\nContent-Type: message/ohttp-req"), "{head}");
        if parent.mode == Mode::KeyRejected {
            let problem = br#"{"type": "https://iana.org/assignments/http-problem-types#ohttp-key", "title": "key identifier unknown"}"#;
            (400, "application/problem+json", problem.to_vec())
        } else {
            let (inner, responder) = parent.gateway.decapsulate(body).unwrap();
            let request = bhttp::Message::read_bhttp(&mut std::io::Cursor::new(&inner)).unwrap();
            assert_eq!(request.control().path(), Some(&b"/predict-secure/?top_k=3"[..]));
            assert_eq!(request.content(), IMAGE);
            let (status, json): (u16, &[u8]) = if parent.mode == Mode::InnerError {
                (
                    415,
                    br#"{"error": "unsupported image format", "code": "unsupported_format"}"#,
                )
            } else {
                (200, ANSWER)
            };
            let mut response = bhttp::Message::response(bhttp::StatusCode::try_from(status).unwrap());
            response.put_header("content-type", "application/json");
            response.write_content(json);
            let mut bytes = Vec::new();
            response.write_bhttp(bhttp::Mode::KnownLength, &mut bytes).unwrap();
            bytes.resize(4096, 0);
            (200, "message/ohttp-res", responder.encapsulate(&bytes).unwrap())
        }
    } else {
        (
            404,
            "application/json",
            br#"{"error": "not found", "code": "not_found"}"#.to_vec(),
        )
    };

    let mut out = format!("HTTP/1.1 {status} X\r\nContent-Type: {content_type}\r\n");
    if parent.mode == Mode::Chunked && status == 200 && content_type == "message/ohttp-res" {
        out.push_str("Transfer-Encoding: chunked\r\n\r\n");
        let mut bytes = out.into_bytes();
        for part in answer.chunks(1000) {
            bytes.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
            bytes.extend_from_slice(part);
            bytes.extend_from_slice(b"\r\n");
        }
        bytes.extend_from_slice(b"0\r\n\r\n");
        stream.write_all(&bytes)?;
    } else {
        out.push_str(&format!("Content-Length: {}\r\n\r\n", answer.len()));
        stream.write_all(out.as_bytes())?;
        stream.write_all(&answer)?;
    }
    stream.flush()
}

/// A directory with the image, the development root and the measurements.
struct Files {
    dir: PathBuf,
}

impl Files {
    fn new(parent: &Parent, name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("sealed-client-cli-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("image.png"), IMAGE).unwrap();
        std::fs::write(dir.join("root.pem"), parent.chain.root.cert_pem()).unwrap();
        let hex = |b: u8| sealed_client::hex::encode(&[b; 48]);
        let measurements = format!(
            "{{\"Measurements\": {{\"HashAlgorithm\": \"Sha384 {{ ... }}\", \"PCR0\": \"{}\", \"PCR1\": \"{}\", \"PCR2\": \"{}\"}}}}",
            hex(0xa0),
            hex(0xa1),
            hex(0xa2)
        );
        std::fs::write(dir.join("measurements.json"), measurements).unwrap();
        Self { dir }
    }

    fn path(&self, name: &str) -> String {
        self.dir.join(name).to_string_lossy().into_owned()
    }
}

impl Drop for Files {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs the command line; returns (status, stdout, stderr).
fn run(args: &[&str]) -> (u8, String, String) {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let status = cli::main(args.iter().map(|s| s.to_string()).collect(), &mut out, &mut err);
    (status, String::from_utf8(out).unwrap(), String::from_utf8(err).unwrap())
}

fn dev_args<'a>(url: &'a str, files: &'a Files) -> Vec<String> {
    vec![
        "--url".into(),
        url.into(),
        "--dev-root".into(),
        files.path("root.pem"),
        "--measurements".into(),
        files.path("measurements.json"),
        "--top-k".into(),
        "3".into(),
    ]
}

fn run_with(base: &[String], extra: &[&str]) -> (u8, String, String) {
    let mut args: Vec<&str> = base.iter().map(String::as_str).collect();
    args.extend_from_slice(extra);
    run(&args)
}

#[test]
fn the_answer_is_printed_after_verification() {
    let (url, parent) = start(Mode::Good);
    let files = Files::new(&parent, "good");
    let image = files.path("image.png");
    let (status, out, err) = run_with(&dev_args(&url, &files), &["--verbose", &image]);
    assert_eq!(status, cli::exit::OK, "{err}");
    assert_eq!(out.as_bytes(), [ANSWER, b"\n"].concat());
    assert!(err.contains("WARNING: verifying against a DEVELOPMENT root"), "{err}");
    assert!(err.contains("proves nothing about an enclave"), "{err}");
    assert!(
        err.contains(&format!("verified the attestation document from {url}")),
        "{err}"
    );
    assert!(
        err.contains("module id: i-0123456789abcdef0-enc0123456789abcdef"),
        "{err}"
    );
    assert!(
        err.contains(&format!("PCR0       {} (pinned, equal)", "a0".repeat(48))),
        "{err}"
    );
    assert!(
        err.contains("chain 2:   CN=test leaf,O=sealed-client tests (leaf)"),
        "{err}"
    );
    assert!(err.contains("key:       id 7, X25519 "), "{err}");
    assert!(err.contains(&format!("user_data: {USER_DATA}")), "{err}");

    // Without --verbose: only the warning on stderr.
    let (status, out, err) = run_with(&dev_args(&url, &files), &[&image]);
    assert_eq!((status, out.as_bytes()), (0, &[ANSWER, b"\n"].concat()[..]));
    assert!(!err.contains("module id"), "{err}");

    // A chunked answer reads the same.
    let (url, parent) = start(Mode::Chunked);
    let files = Files::new(&parent, "chunked");
    let (status, out, err) = run_with(&dev_args(&url, &files), &[&files.path("image.png")]);
    assert_eq!((status, out.as_bytes()), (0, &[ANSWER, b"\n"].concat()[..]), "{err}");
}

#[test]
fn a_refused_document_sends_nothing() {
    let (url, parent) = start(Mode::Good);
    let files = Files::new(&parent, "refused");
    let image = files.path("image.png");

    // Another PCR2 pinned.
    let (status, out, err) = run_with(
        &dev_args(&url, &files),
        &["--pcr", &format!("2={}", "b2".repeat(48)), &image],
    );
    assert_eq!(status, cli::exit::USAGE, "{err}");
    assert!(
        err.contains("--pcr 2 differs from PCR2 in the measurements file"),
        "{err}"
    );
    // The dev-root warning comes once the local inputs are all good, not with a usage error.
    assert!(!err.contains("WARNING"), "{err}");
    let pcr3 = format!("3={}", "b3".repeat(48));
    let (status, out2, err) = run_with(&dev_args(&url, &files), &["--pcr", &pcr3, &image]);
    assert_eq!(status, cli::exit::REFUSED, "{err}");
    assert!(
        err.contains("attestation refused: PCR3 mismatch: expected b3b3"),
        "{err}"
    );
    assert_eq!((out.as_str(), out2.as_str()), ("", ""));

    // No --dev-root: the AWS root is pinned.
    let measurements = files.path("measurements.json");
    let (status, _, err) = run(&["--url", &url, "--measurements", &measurements, &image]);
    assert_eq!(status, cli::exit::REFUSED, "{err}");
    assert!(
        err.contains(
            "attestation refused: this document is not from AWS Nitro; pass --dev-root to accept a development NSM"
        ),
        "{err}"
    );

    assert_eq!(parent.posts.load(Ordering::SeqCst), 0);

    // A replayed document (another nonce).
    let (url, parent) = start(Mode::Replayed);
    let files = Files::new(&parent, "replayed");
    let (status, _, err) = run_with(&dev_args(&url, &files), &[&files.path("image.png")]);
    assert_eq!(status, cli::exit::REFUSED, "{err}");
    assert!(err.contains("attestation refused: nonce mismatch"), "{err}");
    assert_eq!(parent.posts.load(Ordering::SeqCst), 0);
}

#[test]
fn an_inner_error_is_printed_with_status_4() {
    let (url, parent) = start(Mode::InnerError);
    let files = Files::new(&parent, "inner");
    let (status, out, err) = run_with(&dev_args(&url, &files), &[&files.path("image.png")]);
    assert_eq!(status, cli::exit::INNER_ERROR, "{err}");
    assert!(out.contains("\"code\": \"unsupported_format\""), "{out}");
    assert!(err.contains("the enclave answered status 415"), "{err}");
}

#[test]
fn transport_and_server_errors_are_status_3() {
    let (url, parent) = start(Mode::NoAttestation);
    let files = Files::new(&parent, "transport");
    let image = files.path("image.png");
    let (status, _, err) = run_with(&dev_args(&url, &files), &[&image]);
    assert_eq!(status, cli::exit::TRANSPORT, "{err}");
    assert!(
        err.contains("GET /attestation: the parent answered 503: {\"error\": \"no attestation\""),
        "{err}"
    );

    let (url, parent) = start(Mode::KeyRejected);
    let files = Files::new(&parent, "rejected");
    let (status, _, err) = run_with(&dev_args(&url, &files), &[&files.path("image.png")]);
    assert_eq!(status, cli::exit::TRANSPORT, "{err}");
    assert!(err.contains("does not accept key id 7"), "{err}");

    // Nothing listens there (a port just closed).
    let closed = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let url = format!("http://{closed}");
    let (status, _, err) = run_with(&dev_args(&url, &files), &[&image]);
    assert_eq!(status, cli::exit::TRANSPORT, "{err}");
    assert!(err.contains("cannot connect"), "{err}");
}

#[test]
fn usage_errors_are_status_2() {
    let (status, _, err) = run(&["--no-pcr-check"]);
    assert_eq!(status, cli::exit::USAGE);
    assert!(err.starts_with("sealed-client: no IMAGE given"), "{err}");
    assert!(err.contains("usage: sealed-client"), "{err}");

    let (status, _, err) = run(&["--no-pcr-check", "--dev-root", "/nonexistent/root.pem", "x.jpg"]);
    assert_eq!(status, cli::exit::USAGE, "{err}");
    assert!(err.contains("/nonexistent/root.pem"), "{err}");

    let (status, _, err) = run(&["--measurements", "/nonexistent/m.json", "x.jpg"]);
    assert_eq!(status, cli::exit::USAGE, "{err}");

    let (status, out, _) = run(&["--help"]);
    assert_eq!(status, cli::exit::OK);
    assert!(out.contains("http://host[:port]") && out.contains("no TLS"), "{out}");
}
