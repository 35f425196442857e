//! The real `dev-nsm` binary on a temporary Unix socket, driven with real
//! CBOR requests. Its documents are checked independently of this crate's
//! signing code: CBOR is built and read with ciborium (not our encoder), the
//! certificate chain and the COSE signature are verified by the `openssl`
//! command line tool, and the expected PCRs are computed by `openssl dgst`.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ciborium::Value;

const BIN: &str = env!("CARGO_BIN_EXE_dev-nsm");

// ---------------------------------------------------------------- helpers

/// A fresh scratch directory for one test.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("dev-nsm-it-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A running `dev-nsm` with its files in `dir`; killed when dropped.
struct Service {
    child: Child,
    dir: PathBuf,
}

impl Service {
    /// Starts the binary on `dir/nsm.sock`, measuring `dir/enclave` and
    /// `dir/model.onnx` (created if missing), and waits until it accepts.
    fn start(dir: &Path) -> Service {
        for (name, contents) in [("enclave", &b"a model server binary stand-in"[..]), ("model.onnx", b"model bytes \x00\x01\x02")] {
            if !dir.join(name).exists() {
                std::fs::write(dir.join(name), contents).unwrap();
            }
        }
        Service::start_measuring(dir, &["--enclave-bin", "enclave", "--model", "model.onnx"])
    }

    /// Starts the binary with `measured`: the flags that say what the PCRs are.
    fn start_measuring(dir: &Path, measured: &[&str]) -> Service {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("nsm.log")).unwrap();
        let child = Command::new(BIN)
            .args(["--socket", "nsm.sock", "--state-dir", "state"])
            .args(measured)
            .args(["--root-out", "root.pem", "--measurements-out", "measurements.json"])
            .current_dir(dir)
            .stdin(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start dev-nsm");
        let svc = Service { child, dir: dir.to_owned() };
        let deadline = Instant::now() + Duration::from_secs(20);
        // Connectable, not merely present: a stale socket file may be there before it binds.
        while UnixStream::connect(svc.socket()).is_err() {
            assert!(Instant::now() < deadline, "dev-nsm did not listen within 20 s; log:\n{}", svc.log());
            std::thread::sleep(Duration::from_millis(20));
        }
        svc
    }

    fn socket(&self) -> PathBuf {
        self.dir.join("nsm.sock")
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("nsm.log")).unwrap_or_default()
    }

    fn connect(&self) -> UnixStream {
        let s = UnixStream::connect(self.socket()).expect("connect to dev-nsm");
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        s
    }

    /// One request on a new connection.
    fn call(&self, request: &Value) -> Value {
        call(&mut self.connect(), &cbor(request))
    }

    /// SIGTERM, then the exit status (within 10 s).
    fn terminate(mut self) -> std::process::ExitStatus {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "dev-nsm did not stop within 10 s of SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn cbor(v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    ciborium::into_writer(v, &mut out).unwrap();
    out
}

/// `body` behind its 4-byte big-endian length.
fn framed(body: &[u8]) -> Vec<u8> {
    let mut msg = (body.len() as u32).to_be_bytes().to_vec();
    msg.extend_from_slice(body);
    msg
}

fn send(s: &mut UnixStream, body: &[u8]) {
    s.write_all(&framed(body)).unwrap();
}

/// Sends `body` and reads the answer; `None` if the server closed the
/// connection, whether before the request was written (a refused connection
/// may already be closed: broken pipe) or before it answered.
fn exchange(s: &mut UnixStream, body: &[u8]) -> Option<Vec<u8>> {
    match s.write_all(&framed(body)) {
        Ok(()) => receive(s),
        Err(e) if matches!(e.kind(), std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset) => None,
        Err(e) => panic!("writing a request: {e}"),
    }
}

/// The next answer's bytes, or `None` if the server closed the connection.
fn receive(s: &mut UnixStream) -> Option<Vec<u8>> {
    let mut len = [0u8; 4];
    match s.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return None,
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return None,
        Err(e) => panic!("reading an answer: {e}"),
    }
    let len = u32::from_be_bytes(len) as usize;
    assert!(len <= 16384, "answer of {len} bytes is over 16384");
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).unwrap();
    Some(body)
}

fn call(s: &mut UnixStream, request: &[u8]) -> Value {
    send(s, request);
    let answer = receive(s).expect("an answer, not a closed connection");
    decode(&answer)
}

/// Decodes exactly one CBOR item.
fn decode(bytes: &[u8]) -> Value {
    let mut rest = bytes;
    let v: Value = ciborium::from_reader(&mut rest).expect("CBOR");
    assert!(rest.is_empty(), "bytes after the CBOR item");
    v
}

fn text(s: &str) -> Value {
    Value::Text(s.into())
}

fn map(entries: Vec<(&str, Value)>) -> Value {
    Value::Map(entries.into_iter().map(|(k, v)| (text(k), v)).collect())
}

fn attestation_request(user_data: Option<&[u8]>, nonce: Option<&[u8]>, public_key: Option<&[u8]>) -> Value {
    let f = |b: Option<&[u8]>| b.map_or(Value::Null, |b| Value::Bytes(b.to_vec()));
    map(vec![("Attestation", map(vec![("user_data", f(user_data)), ("nonce", f(nonce)), ("public_key", f(public_key))]))])
}

fn describe_pcr(index: u64) -> Value {
    map(vec![("DescribePCR", map(vec![("index", Value::Integer(index.into()))]))])
}

/// `answer[key]` of a map answer, or panics showing the answer.
fn get<'a>(v: &'a Value, key: &str) -> &'a Value {
    v.as_map()
        .and_then(|m| m.iter().find(|(k, _)| k.as_text() == Some(key)))
        .map(|(_, v)| v)
        .unwrap_or_else(|| panic!("no {key:?} in {v:?}"))
}

/// The error name of an `{"Error": name}` answer.
fn error_of(v: &Value) -> String {
    get(v, "Error").as_text().unwrap_or_else(|| panic!("not an error answer: {v:?}")).to_owned()
}

fn document_of(answer: &Value) -> Vec<u8> {
    get(get(answer, "Attestation"), "document").as_bytes().expect("document is a bstr").clone()
}

/// Runs `openssl` with `args` in `dir`; returns (success, stdout + stderr).
fn openssl(dir: &Path, args: &[&str], stdin: Option<&[u8]>) -> (bool, String) {
    let mut child = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("these tests need the openssl command line tool (Debian package openssl)");
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.unwrap_or_default()).unwrap();
    drop(input);
    let out = child.wait_with_output().unwrap();
    let mut all = String::from_utf8_lossy(&out.stdout).into_owned();
    all.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), all)
}

fn openssl_ok(dir: &Path, args: &[&str]) -> String {
    let (ok, out) = openssl(dir, args, None);
    assert!(ok, "openssl {args:?} failed:\n{out}");
    out
}

/// SHA-384 by `openssl dgst`, lowercase hex.
fn sha384_hex(dir: &Path, data: &[u8]) -> String {
    let (ok, out) = openssl(dir, &["dgst", "-sha384", "-r"], Some(data));
    assert!(ok, "{out}");
    out.split_whitespace().next().unwrap().to_owned()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A raw ES384 signature (r || s) as the DER ECDSA-Sig-Value openssl reads.
fn der_signature(raw: &[u8]) -> Vec<u8> {
    assert_eq!(raw.len(), 96);
    let int = |x: &[u8]| {
        let x: Vec<u8> = x.iter().copied().skip_while(|&b| b == 0).collect();
        let mut v = if x.first().is_some_and(|&b| b & 0x80 != 0) { vec![0] } else { vec![] };
        v.extend(if x.is_empty() { vec![0] } else { x });
        let mut out = vec![0x02, v.len() as u8];
        out.extend(v);
        out
    };
    let body = [int(&raw[..48]), int(&raw[48..])].concat();
    let mut out = vec![0x30, body.len() as u8];
    out.extend(body);
    out
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

/// The parts of a document, checked for the COSE_Sign1 shape on the way.
struct Parts {
    protected: Vec<u8>,
    payload: Vec<u8>,
    signature: Vec<u8>,
    fields: Vec<(Value, Value)>,
}

fn split_document(doc: &[u8]) -> Parts {
    let Value::Tag(18, inner) = decode(doc) else { panic!("not a COSE_Sign1 (tag 18)") };
    let items = inner.as_array().expect("COSE_Sign1 is an array").clone();
    assert_eq!(items.len(), 4);
    let protected = items[0].as_bytes().expect("protected is a bstr").clone();
    assert_eq!(decode(&protected), Value::Map(vec![(Value::Integer(1.into()), Value::Integer((-35).into()))]), "alg ES384");
    assert_eq!(items[1], Value::Map(vec![]), "unprotected header is empty");
    let payload = items[2].as_bytes().expect("payload is a bstr").clone();
    let signature = items[3].as_bytes().expect("signature is a bstr").clone();
    assert_eq!(signature.len(), 96);
    let fields = decode(&payload).as_map().expect("payload is a map").clone();
    Parts { protected, payload, signature, fields }
}

impl Parts {
    fn field(&self, key: &str) -> &Value {
        self.fields.iter().find(|(k, _)| k.as_text() == Some(key)).map(|(_, v)| v).unwrap_or_else(|| panic!("no {key}"))
    }
}

// ---------------------------------------------------------------- tests

#[test]
fn attestation_document_verifies_with_openssl() {
    let dir = scratch("verify");
    let svc = Service::start(&dir);
    let nonce = b"nonce-0123456789abcdef";
    let public_key: Vec<u8> = (0..41).collect();
    let user_data = b"nitro-ml-attest/1 model-sha256=00 debug=0";
    let before = now_ms();
    let answer = svc.call(&attestation_request(Some(user_data), Some(nonce), Some(&public_key)));
    let after = now_ms();
    let doc = document_of(&answer);
    let parts = split_document(&doc);

    // Payload: Nitro's keys, in Nitro's order, with Nitro's types.
    let keys: Vec<&str> = parts.fields.iter().map(|(k, _)| k.as_text().expect("text keys")).collect();
    assert_eq!(keys, ["module_id", "digest", "timestamp", "pcrs", "certificate", "cabundle", "public_key", "user_data", "nonce"]);
    assert!(parts.field("module_id").as_text().is_some_and(|m| !m.is_empty()));
    assert_eq!(parts.field("digest"), &text("SHA384"));
    let ts = u64::try_from(parts.field("timestamp").as_integer().expect("timestamp is an integer")).unwrap();
    assert!(before <= ts && ts <= after, "timestamp {ts} not within [{before}, {after}]");
    assert_eq!(parts.field("nonce").as_bytes().unwrap(), nonce);
    assert_eq!(parts.field("public_key").as_bytes().unwrap(), &public_key);
    assert_eq!(parts.field("user_data").as_bytes().unwrap(), user_data);

    // PCRs 0..15, 48 bytes each: 0, 1, 2 as openssl computes them and as the
    // measurements file says, the rest zero.
    let pcr0 = sha384_hex(&dir, &std::fs::read(dir.join("enclave")).unwrap());
    let pcr1 = sha384_hex(&dir, b"dev-nsm kernel");
    let pcr2 = sha384_hex(&dir, &std::fs::read(dir.join("model.onnx")).unwrap());
    let pcrs = parts.field("pcrs").as_map().expect("pcrs is a map");
    assert_eq!(pcrs.len(), 16);
    for (i, (k, v)) in pcrs.iter().enumerate() {
        assert_eq!(k, &Value::Integer((i as u64).into()), "PCR keys are 0..15 in order");
        let want = match i {
            0 => pcr0.clone(),
            1 => pcr1.clone(),
            2 => pcr2.clone(),
            _ => "00".repeat(48),
        };
        assert_eq!(hex(v.as_bytes().expect("PCR is a bstr")), want, "PCR{i}");
    }
    let measurements = std::fs::read_to_string(svc.path("measurements.json")).unwrap();
    assert_eq!(
        measurements,
        format!(
            "{{\n  \"Measurements\": {{\n    \"HashAlgorithm\": \"Sha384 {{ ... }}\",\n    \"PCR0\": \"{pcr0}\",\n    \"PCR1\": \"{pcr1}\",\n    \"PCR2\": \"{pcr2}\"\n  }}\n}}\n"
        )
    );

    // cabundle: the root written to --root-out first, then the intermediate.
    let cabundle = parts.field("cabundle").as_array().expect("cabundle is an array");
    assert_eq!(cabundle.len(), 2);
    openssl_ok(&dir, &["x509", "-in", "root.pem", "-outform", "DER", "-out", "root.der"]);
    let root_der = std::fs::read(dir.join("root.der")).unwrap();
    assert_eq!(cabundle[0].as_bytes().unwrap(), &root_der, "cabundle[0] is the written root");
    std::fs::write(dir.join("inter.der"), cabundle[1].as_bytes().unwrap()).unwrap();
    std::fs::write(dir.join("leaf.der"), parts.field("certificate").as_bytes().expect("certificate is a bstr")).unwrap();
    openssl_ok(&dir, &["x509", "-inform", "DER", "-in", "inter.der", "-out", "inter.pem"]);
    openssl_ok(&dir, &["x509", "-inform", "DER", "-in", "leaf.der", "-out", "leaf.pem"]);

    // The chain, strictly, now; and the leaf's 3 hours.
    let verify = |at: u64| openssl(&dir, &["verify", "-x509_strict", "-attime", &at.to_string(), "-CAfile", "root.pem", "-untrusted", "inter.pem", "leaf.pem"], None);
    let now_s = ts / 1000;
    let (ok, out) = verify(now_s);
    assert!(ok && out.contains("leaf.pem: OK"), "chain does not verify:\n{out}");
    let (ok, _) = verify(now_s + 3 * 3600 - 120);
    assert!(ok, "the leaf is valid for 3 hours");
    let (ok, out) = verify(now_s + 3 * 3600 + 120);
    assert!(!ok && out.contains("expired"), "the leaf expires after 3 hours:\n{out}");
    // Without the intermediate, or against another root, it does not verify.
    assert!(!openssl(&dir, &["verify", "-CAfile", "root.pem", "leaf.pem"], None).0);
    assert!(!openssl(&dir, &["verify", "-CAfile", "inter.pem", "-partial_chain", "root.pem"], None).0);

    // What the certificates say.
    let root_text = openssl_ok(&dir, &["x509", "-in", "root.pem", "-noout", "-text"]);
    assert!(root_text.contains("nitro-ml development NSM root - NOT AWS Nitro"), "{root_text}");
    let inter_text = openssl_ok(&dir, &["x509", "-in", "inter.pem", "-noout", "-text"]);
    let leaf_text = openssl_ok(&dir, &["x509", "-in", "leaf.pem", "-noout", "-text"]);
    for t in [&root_text, &inter_text, &leaf_text] {
        assert!(t.contains("Signature Algorithm: ecdsa-with-SHA384") && t.contains("NIST CURVE: P-384"), "{t}");
    }
    for t in [&root_text, &inter_text] {
        assert!(t.contains("CA:TRUE") && t.contains("Certificate Sign, CRL Sign"), "{t}");
    }
    assert!(leaf_text.contains("CA:FALSE") && leaf_text.contains("Digital Signature"), "{leaf_text}");
    assert!(!leaf_text.contains("Certificate Sign"), "{leaf_text}");

    // The COSE signature, with the leaf's key, over a Sig_structure built here.
    openssl_ok(&dir, &["x509", "-in", "leaf.pem", "-pubkey", "-noout", "-out", "leafpub.pem"]);
    let sig_structure = |payload: &[u8]| {
        cbor(&Value::Array(vec![text("Signature1"), Value::Bytes(parts.protected.clone()), Value::Bytes(vec![]), Value::Bytes(payload.to_vec())]))
    };
    std::fs::write(dir.join("tbs.bin"), sig_structure(&parts.payload)).unwrap();
    std::fs::write(dir.join("sig.der"), der_signature(&parts.signature)).unwrap();
    let (ok, out) = openssl(&dir, &["dgst", "-sha384", "-verify", "leafpub.pem", "-signature", "sig.der", "tbs.bin"], None);
    assert!(ok && out.contains("Verified OK"), "COSE signature:\n{out}");
    let mut tampered = parts.payload.clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    std::fs::write(dir.join("tbs.bin"), sig_structure(&tampered)).unwrap();
    let (ok, _) = openssl(&dir, &["dgst", "-sha384", "-verify", "leafpub.pem", "-signature", "sig.der", "tbs.bin"], None);
    assert!(!ok, "a changed payload must not verify");

    // One log line per request, without its content.
    let log = svc.log();
    assert!(log.contains("Attestation ok"), "{log}");
    assert!(!log.contains(&hex(nonce)) && !log.contains("nonce-0123") && !log.contains("nitro-ml-attest"), "{log}");
    drop(svc);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `--eif`: the documents and the measurements file carry the image's PCRs, exactly what
/// tools/eif measures (and `eif build` writes); a file that is not an image stops it.
#[test]
fn eif_pcrs_are_attested() {
    let dir = scratch("eif");
    let writer = eif::EifWriter {
        kernel: vec![0x4b; 4000],
        cmdline: b"console=ttyS0 nitro_ml.parent_cid=2".to_vec(),
        metadata: b"{}".to_vec(),
        ramdisks: vec![b"boot ramdisk".to_vec(), b"app ramdisk".to_vec()],
    };
    let (bytes, want) = writer.write().unwrap();
    std::fs::write(dir.join("enclave.eif"), &bytes).unwrap();
    let svc = Service::start_measuring(&dir, &["--eif", "enclave.eif"]);
    let doc = document_of(&svc.call(&attestation_request(None, Some(b"n"), None)));
    let pcrs = split_document(&doc).field("pcrs").as_map().expect("pcrs is a map").clone();
    for (i, pcr) in [want.pcr0, want.pcr1, want.pcr2].iter().enumerate() {
        assert_eq!(pcrs[i].1.as_bytes().unwrap(), &pcr.to_vec(), "PCR{i}");
    }
    assert!(pcrs[3..].iter().all(|(_, v)| v.as_bytes() == Some(&vec![0u8; 48])));
    let data = get(&svc.call(&describe_pcr(2)), "DescribePCR").clone();
    assert_eq!(get(&data, "data").as_bytes().unwrap(), &want.pcr2.to_vec());
    assert_eq!(std::fs::read_to_string(svc.path("measurements.json")).unwrap(), want.to_json());
    assert!(svc.log().contains(&format!("PCR2 {}: the measurements of the image enclave.eif", hex(&want.pcr2))), "{}", svc.log());
    drop(svc);

    std::fs::write(dir.join("bad.eif"), &bytes[..100]).unwrap();
    let out = Command::new(BIN)
        .args(["--socket", "bad.sock", "--state-dir", "state", "--eif", "bad.eif"])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.eif is not an enclave image"), "{err}");
    assert!(!dir.join("bad.sock").exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn optional_fields_and_describe_pcr() {
    let dir = scratch("fields");
    let svc = Service::start(&dir);
    let mut s = svc.connect();

    // Several requests on one connection. Absent fields are null; empty ones stay empty bstrs.
    let parts = split_document(&document_of(&call(&mut s, &cbor(&map(vec![("Attestation", map(vec![]))])))));
    for key in ["public_key", "user_data", "nonce"] {
        assert_eq!(parts.field(key), &Value::Null, "{key}");
    }
    let parts = split_document(&document_of(&call(&mut s, &cbor(&attestation_request(Some(b""), Some(b""), Some(b"k"))))));
    assert_eq!(parts.field("nonce"), &Value::Bytes(vec![]));
    assert_eq!(parts.field("public_key"), &Value::Bytes(b"k".to_vec()));

    let pcr0 = sha384_hex(&dir, &std::fs::read(dir.join("enclave")).unwrap());
    let answer = call(&mut s, &cbor(&describe_pcr(0)));
    let body = get(&answer, "DescribePCR");
    let keys: Vec<&str> = body.as_map().unwrap().iter().map(|(k, _)| k.as_text().unwrap()).collect();
    assert_eq!(keys, ["lock", "data"]);
    assert_eq!(get(body, "lock"), &Value::Bool(true));
    assert_eq!(hex(get(body, "data").as_bytes().unwrap()), pcr0);
    let answer = call(&mut s, &cbor(&describe_pcr(16)));
    assert_eq!(get(get(&answer, "DescribePCR"), "lock"), &Value::Bool(false));
    assert_eq!(get(get(&answer, "DescribePCR"), "data"), &Value::Bytes(vec![0; 48]));
    assert_eq!(error_of(&call(&mut s, &cbor(&describe_pcr(32)))), "InvalidIndex");
    drop(s);
    drop(svc);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn limits_and_bad_input_get_error_answers() {
    let dir = scratch("limits");
    let svc = Service::start(&dir);
    let mut s = svc.connect();
    let b = |n: usize| vec![0x5a; n];

    // At the limits: served, and within the NSM driver's 12288-byte answer buffer.
    send(&mut s, &cbor(&attestation_request(Some(&b(512)), Some(&b(512)), Some(&b(1024)))));
    let answer = receive(&mut s).expect("an answer");
    assert!(answer.len() <= 0x3000, "answer of {} bytes", answer.len());
    let doc = document_of(&decode(&answer));
    let parts = split_document(&doc);
    assert_eq!(parts.field("user_data").as_bytes().unwrap().len(), 512);
    // Over them: refused, and the connection goes on.
    assert_eq!(error_of(&call(&mut s, &cbor(&attestation_request(Some(&b(513)), None, None)))), "InputTooLarge");
    assert_eq!(error_of(&call(&mut s, &cbor(&attestation_request(None, Some(&b(513)), None)))), "InputTooLarge");
    assert_eq!(error_of(&call(&mut s, &cbor(&attestation_request(None, None, Some(&b(1025)))))), "InputTooLarge");

    // Malformed or unknown: an error answer each.
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (vec![], "InvalidArgument"),
        (vec![0xff, 0xfe, 0x00], "InvalidArgument"),
        (b"{not cbor".to_vec(), "InvalidArgument"),               // a text string longer than the request
        (vec![0x5f], "InvalidArgument"),                         // truncated indefinite bstr
        (vec![0x9f; 100], "InvalidArgument"),                    // nested too deep
        (cbor(&text("DescribeNSM")), "InvalidOperation"),
        (cbor(&text("GetRandom")), "InvalidOperation"),
        (cbor(&map(vec![("ExtendPCR", map(vec![("index", Value::Integer(16.into())), ("data", Value::Bytes(b(4)))]))])), "InvalidOperation"),
        (cbor(&map(vec![("Attestation", Value::Bytes(b(3)))])), "InvalidArgument"),
        (cbor(&map(vec![("Attestation", map(vec![("nonce", text("not bytes"))]))])), "InvalidArgument"),
        (cbor(&map(vec![("Attestation", map(vec![("unexpected", Value::Null)]))])), "InvalidArgument"),
        (cbor(&map(vec![("DescribePCR", map(vec![("index", Value::Integer((-1).into()))]))])), "InvalidArgument"),
        (cbor(&Value::Array(vec![text("Attestation")])), "InvalidOperation"),
    ];
    for (request, want) in &cases {
        assert_eq!(&error_of(&call(&mut s, request)), want, "request {}", hex(request));
    }
    // Arbitrary bytes (a fixed pseudo-random sequence): always a CBOR answer, never a hang.
    let mut x: u64 = 0x9e3779b97f4a7c15;
    for round in 0..200 {
        let len = (round * 7) % 300;
        let junk: Vec<u8> = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let answer = call(&mut s, &junk);
        assert!(answer.as_map().is_some_and(|m| m.len() == 1), "round {round}: {answer:?}");
    }
    // Still healthy on the same connection.
    split_document(&document_of(&call(&mut s, &cbor(&attestation_request(None, Some(b"after"), None)))));

    // A length over 4096: InputTooLarge, then the connection is closed.
    s.write_all(&4097u32.to_be_bytes()).unwrap();
    assert_eq!(error_of(&decode(&receive(&mut s).expect("an answer"))), "InputTooLarge");
    assert_eq!(receive(&mut s), None, "closed after an oversized length");
    // A 4096-byte request is read (and refused for its content only).
    let mut s = svc.connect();
    assert_eq!(error_of(&call(&mut s, &vec![0u8; 4096])), "InvalidArgument");

    // Closing in the middle of a message, and stalling in the middle of one.
    let mut cut = svc.connect();
    cut.write_all(&[0, 0, 0, 10, 0xa1]).unwrap();
    drop(cut);
    let mut stalled = svc.connect();
    stalled.write_all(&[0, 0]).unwrap();
    let started = Instant::now();
    assert_eq!(receive(&mut stalled), None, "a stalled message is dropped");
    let waited = started.elapsed();
    assert!(waited >= Duration::from_secs(4) && waited < Duration::from_secs(15), "closed after {waited:?}");

    // The service is fine afterwards.
    split_document(&document_of(&svc.call(&attestation_request(None, Some(b"end"), None))));
    let log = svc.log();
    assert!(log.contains("InputTooLarge") && log.contains("timed out"), "{log}");
    assert!(!log.contains("panicked"), "{log}");
    drop(svc);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn connections_are_capped() {
    let dir = scratch("cap");
    let svc = Service::start(&dir);
    // Eight connections, each proven served (so each holds a thread). One
    // may be refused while the thread of the start-up probe is still ending.
    let mut held: Vec<UnixStream> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while held.len() < 8 {
        let mut s = svc.connect();
        match exchange(&mut s, &cbor(&describe_pcr(99))) {
            Some(answer) => {
                assert_eq!(error_of(&decode(&answer)), "InvalidIndex");
                held.push(s);
            }
            None => assert!(Instant::now() < deadline, "could not hold 8 connections"),
        }
    }
    // ...and a ninth is closed at once.
    let mut ninth = svc.connect();
    assert_eq!(exchange(&mut ninth, &cbor(&describe_pcr(0))), None, "the ninth connection is closed");
    // Freed slots are reused.
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut s = svc.connect();
        if exchange(&mut s, &cbor(&describe_pcr(0))).is_some() {
            break;
        }
        assert!(Instant::now() < deadline, "slots not freed");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(svc.log().contains("refused, already 8 connections"));
    drop(svc);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn root_is_reused_and_sigterm_stops_cleanly() {
    let dir = scratch("restart");
    let svc = Service::start(&dir);
    let root1 = std::fs::read_to_string(svc.path("root.pem")).unwrap();
    let doc1 = split_document(&document_of(&svc.call(&attestation_request(None, None, None))));
    let status = svc.terminate();
    assert!(status.success(), "exit status {status:?}");
    assert!(!dir.join("nsm.sock").exists(), "the socket is removed on SIGTERM");
    let log = std::fs::read_to_string(dir.join("nsm.log")).unwrap();
    assert!(log.contains("root created") && log.contains("SIGTERM: shutting down") && log.contains("stopped"), "{log}");

    // Again, on the same state directory: the same root, a new leaf.
    let svc = Service::start(&dir);
    assert!(svc.log().contains("root reused"), "{}", svc.log());
    assert_eq!(std::fs::read_to_string(svc.path("root.pem")).unwrap(), root1);
    let doc2 = split_document(&document_of(&svc.call(&attestation_request(None, None, None))));
    assert_eq!(doc1.field("cabundle").as_array().unwrap()[0], doc2.field("cabundle").as_array().unwrap()[0]);
    assert_ne!(doc1.field("certificate"), doc2.field("certificate"));
    assert!(svc.terminate().success());

    // A socket path held by a live service is not taken over; a stale one is.
    let svc = Service::start(&dir);
    let second = Command::new(BIN)
        .args(["--socket", "nsm.sock", "--state-dir", "state", "--enclave-bin", "enclave", "--model", "model.onnx"])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert_eq!(second.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&second.stderr).contains("in use"), "{}", String::from_utf8_lossy(&second.stderr));
    split_document(&document_of(&svc.call(&attestation_request(None, None, None))));
    drop(svc); // SIGKILL: the socket file stays behind
    assert!(dir.join("nsm.sock").exists());
    let svc = Service::start(&dir);
    split_document(&document_of(&svc.call(&attestation_request(None, None, None))));
    drop(svc);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_command_lines_are_refused_clearly() {
    let run = |args: &[&str]| {
        let out = Command::new(BIN).args(args).output().unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (code, err) = run(&["--socket", "/tmp/x.sock"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("--state-dir is required"), "{err}");
    let (code, err) = run(&["--bogus"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("unknown argument"), "{err}");
    let dir = scratch("badargs");
    let (code, err) = run(&[
        "--socket",
        dir.join("s").to_str().unwrap(),
        "--state-dir",
        dir.join("st").to_str().unwrap(),
        "--enclave-bin",
        "/nonexistent/enclave",
        "--model",
        "/nonexistent/model.onnx",
    ]);
    assert_eq!(code, Some(1));
    assert!(err.contains("cannot read /nonexistent/enclave"), "{err}");
    assert!(!dir.join("s").exists());
    let (code, err) = run(&["--socket", "s", "--state-dir", "d", "--eif", "x.eif", "--model", "m"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("--eif takes the PCRs from the image"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
    let out = Command::new(BIN).arg("--help").output().unwrap();
    assert!(out.status.success() && String::from_utf8_lossy(&out.stdout).contains("NOT AWS Nitro"));
}
