//! `bench sealed` (and the suite's part `sealed`): what sealed requests
//! (docs/SEALED.md) cost, in three measurements.
//!
//! 1. **attest**: `GET /attestation?nonce=<32 random bytes>` through the
//!    parent, the secure model server and its NSM (here the development NSM,
//!    on EC2 the real one), N times one after the other, each on a new
//!    connection (connect to the last byte of the answer); then each document
//!    is verified with `sealed_client::verify::verify` (every check of
//!    docs/SEALED.md, against the development root or the AWS Nitro root and
//!    the pinned PCRs), that call alone timed. A document that fails counts as
//!    an error, never as a time.
//! 2. **crypto**: in-process, no network: for payloads of 1 KiB to 16 MiB, the
//!    client's seal (`sealed_client::seal::seal`: BHTTP request, HPKE, AES-GCM),
//!    the gateway's open (`enclave::sealed::Gateway::open`, then the enclave's
//!    BHTTP reader `inner_request`), the gateway's seal of a typical answer
//!    (`Gateway::seal`: BHTTP response padded to 4096 bytes, AES-GCM) and the
//!    client's open (`Sealed::open`); the ohttp crate on both sides, as in the
//!    enclave and the client. Median (and p10, p90) of many runs per size; the
//!    total is the sum of the four. Apart, untimed in the total: the client's
//!    BHTTP encoding alone (`sealed_client::seal::inner_request`), the part of
//!    its seal that copies the payload into the inner message.
//! 3. **load**: end-to-end latency and images/s at 1 and 10 clients of, side by
//!    side on the same stack, interleaved within each trial: one raw photo per
//!    request on plaintext `POST /predict-secure/` (`Content-Type: image/jpeg`),
//!    the same photo in a sealed request (`message/ohttp-req` on the same route,
//!    key attested once up front; each request sealed afresh and each answer
//!    opened inside the timed span), and as a reference the study's request, a
//!    JSON batch of 2 photos. Counting is load.rs's (every request ok or in an
//!    error bucket).
//!
//! The stack is either started here (`Stack::start_attested`: the development
//! NSM, and the secure model server with `--nsm unix:PATH`) or given with
//! `--url` (a stack started elsewhere, such as `make run` on EC2, whose
//! measurements and root are then given explicitly).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use sealed_client::root::TrustedRoot;
use sealed_client::verify::{self, KeyConfig, PcrPolicy, Policy};
use serde_json::{json, Value};

use crate::load::{self, RunResult, Spec, Target};
use crate::stack::Stack;
use crate::{http, report, suite, Flags};

/// Payload sizes of the seal/open measurement: 1 KiB, 64 KiB, 200 KiB (the
/// study's photo is 190 KiB), 1 MiB, 16 MiB (the parent's body limit).
pub const CRYPTO_SIZES: [usize; 5] = [1 << 10, 64 << 10, 200 << 10, 1 << 20, 16 << 20];

/// Target names of the load part, in the order run and reported.
pub const PLAIN: &str = "plaintext";
pub const SEALED: &str = "sealed";
pub const JSON2: &str = "plaintext JSON x2";

/// How much of everything to do.
#[derive(Debug, Clone)]
pub struct Sizes {
    pub attest_n: usize,
    pub crypto_sizes: Vec<usize>,
    /// Each size runs at least this long and this many times.
    pub crypto_min_s: f64,
    pub crypto_min_runs: usize,
    pub threads: Vec<usize>,
    /// Requests per client, one per entry of `threads`.
    pub requests: Vec<usize>,
    pub trials: usize,
}

impl Sizes {
    pub fn for_profile(profile: &str) -> Sizes {
        if profile == "quick" {
            Sizes {
                attest_n: 50,
                crypto_sizes: CRYPTO_SIZES.to_vec(),
                crypto_min_s: 0.3,
                crypto_min_runs: 10,
                threads: vec![1, 10],
                requests: vec![30, 5],
                trials: 3,
            }
        } else {
            Sizes {
                attest_n: 200,
                crypto_sizes: CRYPTO_SIZES.to_vec(),
                crypto_min_s: 1.0,
                crypto_min_runs: 30,
                threads: vec![1, 10],
                requests: vec![100, 20],
                trials: 3,
            }
        }
    }
}

/// What a client trusts: the root and the pinned PCRs.
#[derive(Clone)]
pub struct Trust {
    pub root: TrustedRoot,
    pub pcrs: PcrPolicy,
    /// Said in the results: which root, and where the PCRs came from.
    pub describe: String,
}

impl Trust {
    /// From a measurements file and either a development root (PEM) or, without one, the AWS Nitro root.
    pub fn from_files(measurements: &str, dev_root: Option<&str>) -> Result<Trust, String> {
        let json = std::fs::read_to_string(measurements).map_err(|e| format!("{measurements}: {e}"))?;
        let pcrs = sealed_client::measurements::parse(&json).map_err(|e| format!("{measurements}: {e}"))?;
        let (root, which) = match dev_root {
            Some(path) => {
                let pem = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
                let root = TrustedRoot::development_from_pem(&pem).map_err(|e| format!("{path}: {e}"))?;
                (root, format!("development root {path} (NOT AWS Nitro)"))
            }
            None => (TrustedRoot::aws_nitro().map_err(|e| e.to_string())?, "AWS Nitro root".to_string()),
        };
        let pinned: Vec<String> = pcrs.keys().map(|i| format!("PCR{i}")).collect();
        Ok(Trust { root, pcrs: PcrPolicy::Pinned(pcrs), describe: format!("{which}; {} pinned from {measurements}", pinned.join(", ")) })
    }

    fn policy(&self) -> Policy {
        Policy::new(self.root.clone(), self.pcrs.clone())
    }
}

/// A fresh 32-byte nonce.
fn nonce() -> Result<[u8; 32], String> {
    let mut n = [0u8; 32];
    getrandom::getrandom(&mut n).map_err(|e| format!("no randomness for a nonce: {e}"))?;
    Ok(n)
}

/// One `GET /attestation?nonce=...`: the document and the time from connect to its last byte.
fn get_document(addr: SocketAddr, nonce: &[u8], timeout: Duration) -> Result<(Vec<u8>, Duration), String> {
    let path = format!("/attestation?nonce={}", sealed_client::hex::encode(nonce));
    let t0 = Instant::now();
    let reply = http::get(addr, &path, timeout).map_err(|f| f.name().to_string())?;
    let took = t0.elapsed();
    if reply.status != 200 {
        return Err(load::status_bucket(reply.status, &reply.body));
    }
    Ok((reply.body, took))
}

/// The key to seal to: a document for a fresh nonce, verified.
pub fn attested_key(addr: SocketAddr, trust: &Trust) -> Result<KeyConfig, String> {
    let n = nonce()?;
    let (doc, _) = get_document(addr, &n, Duration::from_secs(30)).map_err(|e| format!("GET /attestation on {addr}: {e}"))?;
    let verified = verify::verify(&doc, &n, &trust.policy()).map_err(|e| format!("the attestation document was refused: {e}"))?;
    Ok(verified.key_config)
}

/// Nearest-rank quantiles of `v` (any order), in the unit given.
fn quantiles(v: &[f64]) -> Value {
    let mut s: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    s.sort_by(f64::total_cmp);
    if s.is_empty() {
        return json!({ "n": 0 });
    }
    let q = |p: f64| s[((p * s.len() as f64).ceil() as usize).clamp(1, s.len()) - 1];
    json!({ "n": s.len(), "min": s[0], "p10": q(0.10), "p50": q(0.50), "p90": q(0.90), "p99": q(0.99), "max": s[s.len() - 1],
            "mean": s.iter().sum::<f64>() / s.len() as f64 })
}

/// Part 1: `n` attestation requests one after the other, each document verified.
pub fn attestation(addr: SocketAddr, trust: &Trust, n: usize) -> Result<Value, String> {
    eprintln!("bench: sealed: {n} attestation requests (GET /attestation, fresh 32-byte nonce each), each document verified");
    // Warm-up, not counted: the parent's backend connection, the NSM's first leaf.
    for _ in 0..3 {
        let n = nonce()?;
        let _ = get_document(addr, &n, Duration::from_secs(30));
    }
    let (mut get_ms, mut verify_ms, mut sizes) = (Vec::new(), Vec::new(), Vec::new());
    let mut errors: std::collections::BTreeMap<String, u64> = Default::default();
    let mut first_error = None;
    let mut root_kind = None;
    for _ in 0..n {
        let nc = nonce()?;
        match get_document(addr, &nc, Duration::from_secs(30)) {
            Err(e) => *errors.entry(e).or_insert(0) += 1,
            Ok((doc, took)) => {
                let policy = trust.policy();
                let t0 = Instant::now();
                let r = verify::verify(&doc, &nc, &policy);
                let v = t0.elapsed();
                match r {
                    Ok(ok) => {
                        get_ms.push(took.as_secs_f64() * 1e3);
                        verify_ms.push(v.as_secs_f64() * 1e3);
                        sizes.push(doc.len() as f64);
                        root_kind = Some(format!("{:?}", ok.attested.root));
                    }
                    Err(e) => {
                        *errors.entry("refused".into()).or_insert(0) += 1;
                        first_error.get_or_insert_with(|| e.to_string());
                    }
                }
            }
        }
    }
    let ok = get_ms.len();
    let r = json!({
        "sent": n, "ok": ok, "errors": errors, "first_refusal": first_error, "root": root_kind,
        "get_ms": quantiles(&get_ms), "verify_ms": quantiles(&verify_ms), "document_bytes": quantiles(&sizes),
    });
    let g = |k: &str, q: &str| r[k][q].as_f64().unwrap_or(f64::NAN);
    eprintln!(
        "  {ok}/{n} ok{}; GET p50 {:.2} p90 {:.2} p99 {:.2} ms; verify p50 {:.2} p90 {:.2} ms; document {:.0} bytes",
        if errors.is_empty() { String::new() } else { format!(", errors {errors:?}") },
        g("get_ms", "p50"), g("get_ms", "p90"), g("get_ms", "p99"), g("verify_ms", "p50"), g("verify_ms", "p90"),
        g("document_bytes", "p50")
    );
    if let Some(e) = &first_error {
        eprintln!("  first refusal: {e}");
    }
    Ok(r)
}

/// A typical inner answer (the enclave's own JSON for one image, top 5), as the gateway seals it.
fn typical_answer(info: &shared::frame::ModelInfo) -> (u16, String) {
    use shared::frame::{ClassScore, ImageResult, StageTimings};
    let top = [(285, 0.395204), (282, 0.352932), (281, 0.172613), (287, 0.01102), (728, 0.004123)]
        .iter()
        .map(|&(class_id, score)| ClassScore { class_id, score })
        .collect();
    let r = ImageResult { timings: StageTimings { queue_us: 31, decode_us: 5210, infer_us: 14873 }, top };
    enclave::sealed::result_answer(info, &r, 412, 20188, 20655)
}

fn model_info() -> shared::frame::ModelInfo {
    let mut labels = vec![String::new(); 1000];
    for (i, l) in [(281, "tabby, tabby cat"), (282, "tiger cat"), (285, "Egyptian cat"), (287, "lynx, catamount"), (728, "plastic bag")] {
        labels[i] = l.to_string();
    }
    shared::frame::ModelInfo {
        name: "efficientnet-lite0".into(),
        sha256: [0x5a; 32],
        synthetic: false,
        input_shape: [1, 3, 224, 224],
        num_classes: 1000,
        label_source: "bench".into(),
        labels,
    }
}

/// Part 2: seal and open, in-process, for each payload size.
pub fn crypto(sizes: &Sizes) -> Result<Value, String> {
    use enclave::nsm::Nsm;
    use enclave::sealed::{inner_request, Gateway};
    let info = model_info();
    let gateway = Gateway::new(Nsm::None, Duration::from_secs(86400), info.clone())?;
    let list = gateway.key_list();
    let key = KeyConfig::parse(list.get(2..).unwrap_or(&[])).map_err(|e| format!("the gateway's key: {e}"))?;
    let answer = typical_answer(&info);
    eprintln!(
        "bench: sealed: seal/open in-process, sizes {:?} bytes, each at least {} runs and {} s; answer {} bytes of JSON",
        sizes.crypto_sizes, sizes.crypto_min_runs, sizes.crypto_min_s, answer.1.len()
    );
    let mut out = Vec::new();
    let mut fill = 0x9e37_79b9_u32;
    for &size in &sizes.crypto_sizes {
        // Incompressible bytes (the cipher does not care, but nothing can shortcut them).
        let payload: Vec<u8> = (0..size)
            .map(|_| {
                fill ^= fill << 13;
                fill ^= fill >> 17;
                fill ^= fill << 5;
                fill as u8
            })
            .collect();
        let mut steps: [Vec<f64>; 6] = Default::default();
        let (mut request_bytes, mut response_bytes) = (0, 0);
        let t_size = Instant::now();
        let mut runs = 0usize;
        let mut warm = 3usize;
        while warm > 0 || runs < sizes.crypto_min_runs || (t_size.elapsed().as_secs_f64() < sizes.crypto_min_s && runs < 20_000) {
            let reply = answer.clone();
            // Of the client's seal, the BHTTP encoding alone (a copy of the payload), for the report.
            let t = Instant::now();
            let bhttp = sealed_client::seal::inner_request(&payload, None);
            let encode = t.elapsed();
            drop(bhttp);
            let t = Instant::now();
            let mut sealed = sealed_client::seal::seal(&key, &payload, None).map_err(|e| e.to_string())?;
            let client_seal = t.elapsed();
            let t = Instant::now();
            let (opened, responder) = gateway.open(&sealed.request).map_err(|e| e.message.clone())?;
            let (range, _top_k) = inner_request(&opened).map_err(|(s, j)| format!("inner request refused: {s} {j}"))?;
            let gateway_open = t.elapsed();
            let t = Instant::now();
            let response = gateway.seal(responder, reply).map_err(|e| e.message.clone())?;
            let gateway_seal = t.elapsed();
            // `open` consumes the `Sealed`: its request buffer is freed here, not in the client's open.
            let request = std::mem::take(&mut sealed.request);
            let t = Instant::now();
            let inner = sealed.open(&response).map_err(|e| e.to_string())?;
            let client_open = t.elapsed();
            if opened.get(range) != Some(&payload[..]) || inner.status != 200 || inner.body != answer.1.as_bytes() {
                return Err(format!("seal/open at {size} bytes: the payload or the answer did not come back intact"));
            }
            if warm > 0 {
                warm -= 1;
                continue;
            }
            let total = client_seal + gateway_open + gateway_seal + client_open;
            for (i, d) in [client_seal, gateway_open, gateway_seal, client_open, total, encode].into_iter().enumerate() {
                steps[i].push(d.as_secs_f64() * 1e6);
            }
            (request_bytes, response_bytes) = (request.len(), response.len());
            runs += 1;
        }
        let names = ["client_seal", "gateway_open", "gateway_seal", "client_open", "total", "client_bhttp_encode"];
        let mut st = serde_json::Map::new();
        for (name, v) in names.iter().zip(&steps) {
            st.insert(name.to_string(), quantiles(v));
        }
        let p50 = |k: &str| st[k]["p50"].as_f64().unwrap_or(f64::NAN);
        eprintln!(
            "  {size:>9} bytes, {runs:>5} runs: client seal {:9.1} us (BHTTP encoding {:8.1}), gateway open {:9.1}, gateway seal {:6.1}, client open {:6.1}; total {:9.1} us (medians)",
            p50("client_seal"), p50("client_bhttp_encode"), p50("gateway_open"), p50("gateway_seal"), p50("client_open"), p50("total")
        );
        out.push(json!({ "bytes": size, "runs": runs, "request_bytes": request_bytes, "response_bytes": response_bytes,
                         "answer_json_bytes": answer.1.len(), "steps_us": st }));
    }
    Ok(json!(out))
}

fn content_type(image: &[u8]) -> &'static str {
    if image.starts_with(b"\x89PNG") {
        "image/png"
    } else {
        "image/jpeg"
    }
}

/// One plaintext raw and one sealed request of `image`, answers compared:
/// the sealed answer must name the same classes. Returns the model's name as
/// the enclave reports it, and the top class.
fn probe(addr: SocketAddr, key: &KeyConfig, image: &[u8]) -> Result<(String, Value), String> {
    let timeout = Duration::from_secs(60);
    let req = http::request_bytes("POST", addr, "/predict-secure/", content_type(image), image, &[]);
    let plain = http::send(addr, &req, timeout).map_err(|f| format!("plaintext /predict-secure/: {}", f.name()))?;
    let sealed = sealed_client::seal::seal(key, image, None).map_err(|e| e.to_string())?;
    let req = http::request_bytes("POST", addr, "/predict-secure/", "message/ohttp-req", &sealed.request, &[]);
    let reply = http::send(addr, &req, timeout).map_err(|f| format!("sealed /predict-secure/: {}", f.name()))?;
    if reply.status != 200 {
        return Err(format!("sealed /predict-secure/: HTTP {}: {}", reply.status, String::from_utf8_lossy(&reply.body)));
    }
    let inner = sealed.open(&reply.body).map_err(|e| e.to_string())?;
    let sealed_json: Value = serde_json::from_slice(&inner.body).map_err(|e| format!("the sealed answer is not JSON: {e}"))?;
    if inner.status != 200 {
        return Err(format!("the sealed answer is an error: {} {sealed_json}", inner.status));
    }
    let model = sealed_json["model"]["name"].as_str().unwrap_or("?").to_string();
    if plain.status == 200 {
        let plain_json: Value = serde_json::from_slice(&plain.body).map_err(|e| format!("the plaintext answer is not JSON: {e}"))?;
        if plain_json["class_ids"] != sealed_json["class_ids"] {
            return Err(format!("sealed and plaintext answers differ: {} vs {}", sealed_json["class_ids"], plain_json["class_ids"]));
        }
    } else {
        eprintln!("  note: plaintext /predict-secure/ answered {} (--sealed-only?); its rows will be errors", plain.status);
    }
    Ok((model, sealed_json["predictions"][0]["top_k"][0].clone()))
}

/// Part 3: plaintext raw, sealed and the study's JSON batch of 2, side by side.
pub fn load_part(addr: SocketAddr, trust: &Trust, image: &[u8], sizes: &Sizes) -> Result<(Value, Vec<RunResult>), String> {
    let key = attested_key(addr, trust)?;
    let (model, top) = probe(addr, &key, image)?;
    eprintln!(
        "bench: sealed: load, threads {:?} x requests {:?}, {} trials; key {} attested once; model {model}, top class {top}",
        sizes.threads, sizes.requests, sizes.trials, key.key_id()
    );
    let body = load::study_body(image, 2);
    let targets = [
        (Target::raw(PLAIN, addr, "/predict-secure/", content_type(image), image), 1usize),
        (Target::sealed(SEALED, addr, "/predict-secure/", key, image), 1),
        (Target::json(JSON2, addr, "/predict-secure/", &body), 2),
    ];
    let timeout = Duration::from_secs(300);
    for (t, batch) in &targets {
        for _ in 0..2 {
            let _ = load::run(std::slice::from_ref(t), &Spec { threads: 1, requests: 1, batch: *batch, timeout, secure_share: None });
        }
    }
    let mut runs = Vec::new();
    for trial in 0..sizes.trials {
        for (i, &n) in sizes.threads.iter().enumerate() {
            let requests = sizes.requests.get(i).or(sizes.requests.last()).copied().unwrap_or(10);
            for (t, batch) in &targets {
                let mut r = load::run(std::slice::from_ref(t), &Spec { threads: n, requests, batch: *batch, timeout, secure_share: None });
                r.trial = trial;
                for s in &r.targets {
                    s.check()?;
                    let errs = if s.errors.is_empty() { String::new() } else { format!(" errors {:?}", s.errors) };
                    eprintln!(
                        "  sealed trial {}/{} threads {n:>3} {:<18} ok {:>4}/{:<4} p50 {:8.1} p90 {:8.1} p99 {:8.1} ms  {:6.1} img/s{errs}",
                        trial + 1, sizes.trials, s.name, s.ok, s.sent, s.p50_ms, s.p90_ms, s.p99_ms, s.images_per_s
                    );
                }
                runs.push(r);
            }
        }
    }
    let info = json!({
        "model_reported": model, "top_class": top, "threads": sizes.threads, "requests_per_client": sizes.requests,
        "trials": sizes.trials, "image_bytes": image.len(), "json_body_bytes": body.len(),
        "targets": [
            { "name": PLAIN, "images_per_request": 1, "request": format!("POST /predict-secure/, Content-Type: {}, the raw photo", content_type(image)) },
            { "name": SEALED, "images_per_request": 1, "request": "POST /predict-secure/, Content-Type: message/ohttp-req, the raw photo in a sealed BHTTP request; sealed afresh per request and the answer opened, both inside the timed span; key attested once before the runs" },
            { "name": JSON2, "images_per_request": 2, "request": "POST /predict-secure/, Content-Type: application/json, {\"images\": [b64, b64]} (the study's request)" },
        ],
    });
    Ok((info, runs))
}

/// Everything asked for in `parts` (attest, crypto, load) against the parent at `addr`.
pub fn measure(addr: SocketAddr, trust: &Trust, image: &[u8], sizes: &Sizes, parts: &[String]) -> Result<(Value, Vec<RunResult>), String> {
    let has = |p: &str| parts.iter().any(|x| x == p);
    let mut v = json!({ "parent": addr.to_string(), "trust": trust.describe });
    let mut runs = Vec::new();
    if has("attest") {
        v["attestation"] = attestation(addr, trust, sizes.attest_n)?;
    }
    if has("crypto") {
        v["seal_open"] = crypto(sizes)?;
    }
    if has("load") {
        let (info, r) = load_part(addr, trust, image, sizes)?;
        v["load"] = info;
        runs = r;
    }
    Ok((v, runs))
}

/// `bench sealed`: against a stack started here (with the development NSM), or `--url`.
pub fn main(args: &[String]) -> Result<(), String> {
    let f = Flags::parse(
        args,
        &[
            "--url", "--measurements", "--dev-root", "--profile", "--model", "--bin", "--image", "--out", "--port", "--parts",
            "--attest-n", "--threads", "--requests", "--trials",
        ],
    )?;
    let profile = f.get("--profile").unwrap_or("full");
    if !["quick", "full"].contains(&profile) {
        return Err(format!("--profile {profile:?}: quick or full"));
    }
    let mut sizes = Sizes::for_profile(profile);
    sizes.attest_n = f.num("--attest-n", sizes.attest_n)?;
    sizes.trials = f.num("--trials", sizes.trials)?;
    if let Some(t) = f.list("--threads")? {
        sizes.threads = t;
    }
    if let Some(r) = f.list("--requests")? {
        sizes.requests = r;
    }
    let parts: Vec<String> = f.get("--parts").unwrap_or("attest,crypto,load").split(',').map(|s| s.trim().to_string()).collect();
    if let Some(bad) = parts.iter().find(|p| !["attest", "crypto", "load"].contains(&p.as_str())) {
        return Err(format!("--parts: unknown part {bad:?} (attest, crypto, load)"));
    }
    let image_path = f.get("--image").map(PathBuf::from).unwrap_or_else(crate::default_image);
    let image = std::fs::read(&image_path).map_err(|e| format!("{}: {e}", image_path.display()))?;
    let model = f.get("--model").unwrap_or("efficientnet-lite0").to_string();
    let out = PathBuf::from(f.get("--out").map(str::to_string).unwrap_or_else(|| format!("bench/results/{}-sealed", suite::utc_now())));
    std::fs::create_dir_all(&out).map_err(|e| format!("{}: {e}", out.display()))?;
    let t0 = Instant::now();

    let mut meta = suite::meta_base(profile, &model, sizes.trials, &image_path, &image);
    meta["parts"] = json!(["sealed"]);
    meta["body_bytes"] = json!(load::study_body(&image, 2).len());
    let (stack, addr, trust) = match f.get("--url") {
        Some(url) => {
            let (addr, _) = crate::parse_url(url)?;
            let m = f.get("--measurements").ok_or("--url needs --measurements FILE (build/measurements.json on EC2)")?;
            meta["stack"] = json!(format!("given: {url}"));
            (None, addr, Trust::from_files(m, f.get("--dev-root"))?)
        }
        None => {
            if f.get("--measurements").is_some() || f.get("--dev-root").is_some() {
                return Err("--measurements and --dev-root go with --url; the local stack uses its dev-nsm's".into());
            }
            let bin = PathBuf::from(f.get("--bin").unwrap_or("target/release"));
            let model_dir = PathBuf::from("models").join(&model);
            if !model_dir.join("model.onnx").is_file() {
                return Err(format!("{} is missing: run `make model MODEL={model}`", model_dir.display()));
            }
            let port: u16 = f.num("--port", 18080)?;
            let listen = SocketAddr::from(([127, 0, 0, 1], port));
            eprintln!("bench: sealed: starting the stack ({model}) with the development NSM on {listen}");
            let s = Stack::start_attested(&bin, &model_dir, &out.join("run"), listen, &[])?;
            let nsm = s.nsm.as_ref().ok_or("no NSM")?;
            let trust = Trust::from_files(&nsm.measurements.display().to_string(), Some(&nsm.root_pem.display().to_string()))?;
            meta["stack"] = json!("local: dev-nsm, secure and public model servers on Unix sockets, the parent on 127.0.0.1");
            (Some(s), listen, trust)
        }
    };
    let result = measure(addr, &trust, &image, &sizes, &parts);
    if let Some(s) = stack {
        s.stop();
    }
    let _ = std::fs::remove_dir_all(out.join("run"));
    let (sealed, runs) = result?;
    meta["suite_seconds"] = json!(t0.elapsed().as_secs_f64());
    let mut results = json!({ "meta": meta, "load": [], "sealed": sealed });
    suite::push_runs(&mut results, "sealed", &runs);
    let path = out.join("results.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&results).unwrap_or_default()).map_err(|e| format!("{}: {e}", path.display()))?;
    report::write_all(&out, &results)?;
    eprintln!("bench: sealed: done in {:.0} s; summary {}", t0.elapsed().as_secs_f64(), out.join("summary.md").display());
    Ok(())
}
