//! Test helpers for the parent's end-to-end tests: real processes (the
//! enclave binary as both model servers, on Unix sockets in a temp dir, and
//! the parent on a free 127.0.0.1 port), a minimal blocking HTTP client over
//! `TcpStream`, and guards that kill every spawned process in `Drop`, so none
//! is left behind even when a test fails. Nothing is built from here: the
//! parent is cargo's own build of this package, the enclave is
//! `target/debug/enclave` (built by `cargo build`, which `make test` runs).
#![allow(dead_code)] // each test file uses a different part of these helpers

use std::fs::File;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Cargo's build of the parent binary: its own in the parent's tests; beside the model server's in
/// target/debug for the other crates that share this module (bench/tests/bench_load.rs), which
/// `make test` builds first.
pub fn parent_bin() -> PathBuf {
    if let Some(p) = option_env!("CARGO_BIN_EXE_parent") {
        return PathBuf::from(p);
    }
    let p = root().join("target/debug/parent");
    assert!(p.is_file(), "{} is missing: run `cargo build -p parent` (make test does) first", p.display());
    p
}

pub fn enclave_bin() -> PathBuf {
    let p = root().join("target/debug/enclave");
    assert!(p.is_file(), "{} is missing: run `cargo build -p enclave` (make test does) before the parent's tests", p.display());
    p
}

/// models/NAME, which must have been prepared.
pub fn model_dir(name: &str) -> PathBuf {
    let d = root().join("models").join(name);
    assert!(
        d.join("model.onnx").is_file() && d.join("labels.txt").is_file(),
        "{} is missing: run `make model MODEL={name}` (make test does) before the parent's tests",
        d.display()
    );
    d
}

/// A test photo: testdata/NAME. "study_cat.jpeg", the study's benchmark photo, is not in the
/// repository: it is served by testdata/chelsea_study.jpg, the stand-in `make testdata` makes in
/// its format (960x640, JPEG quality 92, 4:2:0, about its size; tools/models/testdata.py).
pub fn photo(name: &str) -> Vec<u8> {
    let name = if name == "study_cat.jpeg" { "chelsea_study.jpg" } else { name };
    let p = root().join("testdata").join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}: run `make testdata` (make test does)", p.display()))
}

pub fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A temp directory removed on drop. Socket paths must stay short (108 bytes).
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let d = std::env::temp_dir().join(format!("pt-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        TempDir(d)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A spawned process, killed and reaped on drop.
pub struct Proc {
    pub name: String,
    pub child: Child,
    pub log: PathBuf,
}

impl Proc {
    pub fn spawn(name: &str, bin: &Path, args: &[String], log: PathBuf) -> Proc {
        let out = File::create(&log).unwrap();
        let child = Command::new(bin)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        Proc { name: name.to_string(), child, log }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The log once `done` holds for it, or after 5 s, whichever is first.
    /// The parent writes a request's access line after its reply, so a
    /// client holding the reply may read the log before that line is there.
    pub fn log_once(&self, mut done: impl FnMut(&str) -> bool) -> String {
        let mut log = String::new();
        wait_until(Duration::from_secs(5), || {
            log = self.log_text();
            done(&log)
        });
        log
    }

    /// Sends SIGTERM and waits (bounded) for the exit status.
    pub fn terminate(&mut self, within: Duration) -> Option<ExitStatus> {
        use nix::sys::signal::{kill, Signal};
        use nix::unistd::Pid;
        let _ = kill(Pid::from_raw(self.pid()), Signal::SIGTERM);
        let until = Instant::now() + within;
        while Instant::now() < until {
            if let Ok(Some(st)) = self.child.try_wait() {
                return Some(st);
            }
            thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("status {} body is not JSON ({e}): {}", self.status, String::from_utf8_lossy(&self.body)))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends raw bytes, reads the whole reply (the request must ask to close).
pub fn raw(port: u16, request: &[u8]) -> Resp {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(60))).unwrap();
    // The server may answer (413) and close before reading all of a big body.
    let _ = s.write_all(request);
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    parse_response(&buf).unwrap_or_else(|| panic!("no HTTP response, got {:?}", String::from_utf8_lossy(&buf)))
}

fn parse_response(buf: &[u8]) -> Option<Resp> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&buf[..end]).ok()?;
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut body = buf[end + 4..].to_vec();
    if let Some(n) = headers.iter().find(|(k, _)| k.eq_ignore_ascii_case("content-length")).and_then(|(_, v)| v.parse::<usize>().ok()) {
        body.truncate(n);
    }
    Some(Resp { status, headers, body })
}

/// The bytes of one HTTP/1.1 request with `Connection: close`; a body gets
/// its true Content-Length, `None` sends no body and no Content-Length.
pub fn request_bytes(method: &str, path: &str, headers: &[(&str, &str)], body: Option<&[u8]>) -> Vec<u8> {
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if let Some(b) = body {
        req.push_str(&format!("Content-Length: {}\r\n", b.len()));
    }
    req.push_str("\r\n");
    let mut bytes = req.into_bytes();
    bytes.extend_from_slice(body.unwrap_or_default());
    bytes
}

pub fn request(port: u16, method: &str, path: &str, headers: &[(&str, &str)], body: Option<&[u8]>) -> Resp {
    raw(port, &request_bytes(method, path, headers, body))
}

/// A GET that gives `None` instead of panicking when nothing (or nothing HTTP) answers.
pub fn try_get(port: u16, path: &str) -> Option<Resp> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    s.write_all(&request_bytes("GET", path, &[], None)).ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).ok()?;
    parse_response(&buf)
}

pub fn get(port: u16, path: &str) -> Resp {
    request(port, "GET", path, &[], None)
}

pub fn post_json(port: u16, path: &str, v: &Value) -> Resp {
    request(port, "POST", path, &[("Content-Type", "application/json")], Some(v.to_string().as_bytes()))
}

pub fn post_images(port: u16, path: &str, images: &[&[u8]]) -> Resp {
    let list: Vec<String> = images.iter().map(|i| b64(i)).collect();
    post_json(port, path, &serde_json::json!({ "images": list }))
}

/// Polls `f` every 50 ms until it is true or `within` passes.
pub fn wait_until(within: Duration, mut f: impl FnMut() -> bool) -> bool {
    let until = Instant::now() + within;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= until {
            return false;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// Two model servers and the parent.
pub struct Stack {
    pub model: String,
    pub port: u16,
    // Field order is drop order: the parent goes first, the dir last.
    pub parent: Proc,
    pub secure: Option<Proc>,
    pub public: Proc,
    pub dir: TempDir,
}

impl Stack {
    /// Starts everything and waits for `/ready`. `parent_args` are extra flags.
    pub fn start(model: &str, parent_args: &[&str]) -> Stack {
        model_dir(model);
        let dir = TempDir::new("stack");
        let public = start_model_server(&dir.0, "public", model);
        let secure = start_model_server(&dir.0, "secure", model);
        // The port is free when chosen, but another test's process may take it before our parent
        // binds it: then our parent exits and the next attempt takes another port. Until our
        // parent answers, what answers on the port may be someone else's, so the probe never
        // trusts a connection alone and never panics.
        for attempt in 1..=3 {
            let port = free_port();
            let mut args = vec![
                "--listen".to_string(),
                format!("127.0.0.1:{port}"),
                "--secure".into(),
                format!("unix:{}", dir.0.join("secure.sock").display()),
                "--public".into(),
                format!("unix:{}", dir.0.join("public.sock").display()),
                "--threads".into(),
                "4".into(),
            ];
            args.extend(parent_args.iter().map(|s| s.to_string()));
            let mut parent = Proc::spawn("parent", &parent_bin(), &args, dir.0.join("parent.log"));
            let ok = wait_until(Duration::from_secs(60), || {
                matches!(parent.child.try_wait(), Ok(None)) && try_get(port, "/ready").is_some_and(|r| r.status == 200)
            });
            if ok {
                return Stack { model: model.to_string(), port, parent, secure: Some(secure), public, dir };
            }
            let exited = matches!(parent.child.try_wait(), Ok(Some(_)));
            assert!(exited && attempt < 3, "stack not ready within 60 s; parent log:\n{}", parent.log_text());
        }
        unreachable!("the loop returns or asserts")
    }

    pub fn socket(&self, name: &str) -> PathBuf {
        self.dir.0.join(format!("{name}.sock"))
    }

    pub fn kill_secure(&mut self) {
        if let Some(mut p) = self.secure.take() {
            let _ = p.child.kill();
            let _ = p.child.wait();
        }
    }

    pub fn restart_secure(&mut self) {
        assert!(self.secure.is_none());
        self.secure = Some(start_model_server(&self.dir.0, "secure", &self.model));
    }

    pub fn parent_log(&self) -> String {
        self.parent.log_text()
    }
}

/// Starts `enclave --listen unix:DIR/NAME.sock --model models/MODEL` and waits
/// until it answers Ping, using `parent ping` (which this also tests).
pub fn start_model_server(dir: &Path, name: &str, model: &str) -> Proc {
    let sock = format!("unix:{}", dir.join(format!("{name}.sock")).display());
    let args = vec![
        "--listen".to_string(),
        sock.clone(),
        "--model".into(),
        model_dir(model).display().to_string(),
        "--workers".into(),
        "1".into(),
    ];
    let mut p = Proc::spawn(name, &enclave_bin(), &args, dir.join(format!("{name}.log")));
    let st = Command::new(parent_bin()).args(["ping", &sock, "--timeout", "60"]).output().unwrap();
    if !st.status.success() {
        let _ = p.child.kill();
        panic!(
            "{name} model server did not become ready: {}\nits log:\n{}",
            String::from_utf8_lossy(&st.stderr),
            p.log_text()
        );
    }
    p
}
