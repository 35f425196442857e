//! The load generator (the study's Figs. 3-5).
//!
//! What it does: `threads` client threads start together on a barrier; each
//! sends `requests` requests one after the other (a closed loop, as the
//! study's clients did), every request on a new connection (see `http.rs`).
//! Each request goes to one target (a route, or the peer's endpoint); in a
//! mixed stream the target is chosen by the request's global index so that
//! the proportion is exact, not sampled: request k is secure when
//! floor((k+1)p) > floor(kp).
//!
//! How it counts, so that nothing is ever dropped silently: every request
//! sent ends in exactly one of `ok` (HTTP 200 with a `class_ids` array in the
//! body) or one error bucket, named by HTTP status and, when the body is a
//! JSON object with a string `code` (ours are), that code
//! (`http_503 backend_busy`; else `http_503`), by transport
//! failure (`connect_error`, `timeout`, `io_error`, `bad_reply`), or
//! `bad_body` (a 200 without `class_ids`). [`TargetStats::check`] asserts
//! `sent == ok + errors` and every run is checked before it is reported.
//! Latency (connect to last byte of the reply) is recorded, in microseconds,
//! in an HDR histogram for successful requests only; failures are counted,
//! not timed. Throughput is successful images per second of wall time, from
//! the barrier's release to the last thread's end.
//!
//! A sealed target (`Target::sealed`, docs/SEALED.md) seals each request
//! afresh to a key attested before the run and opens each answer, both inside
//! the timed span (what a client pays end to end); its answer counts as `ok`
//! only when it opens and its inner response is 200 with `class_ids`, else
//! `open_error` or `inner_<status>`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde_json::{json, Value};

use crate::http;

/// Where requests go: one HTTP endpoint, with its request bytes prepared
/// (or, for a sealed target, what each request is sealed from).
#[derive(Clone)]
pub struct Target {
    pub name: String,
    pub addr: SocketAddr,
    request: Arc<Vec<u8>>,
    api: Api,
    sealed: Option<Arc<SealedTarget>>,
}

/// A sealed target: the attested key, the image and the outer path.
pub struct SealedTarget {
    key: sealed_client::verify::KeyConfig,
    image: Vec<u8>,
    path: String,
}

/// The request form a target is sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Api {
    /// The study's `{"images": [b64, ...]}`, answered with `class_ids`.
    Study,
    /// The Open Inference Protocol V2 infer request as `tritonclient` sends it
    /// with `binary_data=True`: a JSON header, then the images as one `BYTES`
    /// tensor in the binary extension; the output asked for as [`OipOutput`]
    /// says, answered with `outputs` (and the binary data they announce).
    Oip,
}

/// What an OIP target asks for (`bench load --oip-output`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OipOutput {
    /// The top 5 through Triton's classification extension, in JSON.
    Classification,
    /// The full FP32 `[N, num_classes]` tensor in binary form (tritonclient's default).
    Full,
    /// The full FP32 tensor in JSON.
    FullJson,
}

impl OipOutput {
    pub fn parse(s: &str) -> Result<OipOutput, String> {
        match s {
            "classification" => Ok(OipOutput::Classification),
            "full" => Ok(OipOutput::Full),
            "full-json" => Ok(OipOutput::FullJson),
            other => Err(format!("--oip-output {other:?}: expected classification, full or full-json")),
        }
    }

    /// The request's `outputs`.
    fn outputs(self) -> Value {
        match self {
            OipOutput::Classification => json!([{ "name": "probabilities", "parameters": { "classification": 5 } }]),
            OipOutput::Full => json!([{ "name": "probabilities", "parameters": { "binary_data": true } }]),
            OipOutput::FullJson => json!([{ "name": "probabilities", "parameters": { "binary_data": false } }]),
        }
    }
}

impl Target {
    /// A target whose requests carry `body` (the study's form) as JSON.
    pub fn json(name: &str, addr: SocketAddr, path: &str, body: &[u8]) -> Target {
        let request = Arc::new(http::request_bytes("POST", addr, path, "application/json", body, &[]));
        Target { name: name.into(), addr, request, api: Api::Study, sealed: None }
    }

    /// A target whose requests carry one raw image (`Content-Type: image/jpeg`
    /// or `image/png`), answered like the study's form with `class_ids`.
    pub fn raw(name: &str, addr: SocketAddr, path: &str, content_type: &str, image: &[u8]) -> Target {
        let request = Arc::new(http::request_bytes("POST", addr, path, content_type, image, &[]));
        Target { name: name.into(), addr, request, api: Api::Study, sealed: None }
    }

    /// A target whose requests are `image` sealed to `key` (`message/ohttp-req`,
    /// a fresh encapsulation each), POSTed to `path`; the answer is opened.
    pub fn sealed(name: &str, addr: SocketAddr, path: &str, key: sealed_client::verify::KeyConfig, image: &[u8]) -> Target {
        let sealed = SealedTarget { key, image: image.to_vec(), path: path.to_string() };
        Target { name: name.into(), addr, request: Arc::new(Vec::new()), api: Api::Study, sealed: Some(Arc::new(sealed)) }
    }

    /// One request and its answer: `Ok` when answered as the form promises,
    /// else the error bucket's name.
    fn attempt(&self, timeout: Duration) -> Result<(), String> {
        let Some(s) = &self.sealed else {
            return match http::send(self.addr, &self.request, timeout) {
                Ok(reply) if reply.status == 200 => answered(self.api, &reply.body).then_some(()).ok_or_else(|| "bad_body".into()),
                Ok(reply) => Err(status_bucket(reply.status, &reply.body)),
                Err(f) => Err(f.name().into()),
            };
        };
        let sealed = sealed_client::seal::seal(&s.key, &s.image, None).map_err(|_| "seal_error".to_string())?;
        let request = http::request_bytes("POST", self.addr, &s.path, "message/ohttp-req", &sealed.request, &[]);
        let reply = http::send(self.addr, &request, timeout).map_err(|f| f.name().to_string())?;
        if reply.status != 200 {
            return Err(status_bucket(reply.status, &reply.body));
        }
        let inner = sealed.open(&reply.body).map_err(|_| "open_error".to_string())?;
        if inner.status != 200 {
            return Err(format!("inner_{}", inner.status));
        }
        answered(Api::Study, &inner.body).then_some(()).ok_or_else(|| "bad_body".into())
    }

    /// A target whose requests are OIP V2 infer requests of `batch` copies of `image`.
    pub fn oip(name: &str, addr: SocketAddr, path: &str, image: &[u8], batch: usize, output: OipOutput) -> Target {
        let (header, body) = oip_body(image, batch, output);
        let extra = [("Inference-Header-Content-Length", header.to_string())];
        let request = Arc::new(http::request_bytes("POST", addr, path, "application/octet-stream", &body, &extra));
        Target { name: name.into(), addr, request, api: Api::Oip, sealed: None }
    }
}

/// The JSON body the study's clients sent: `{"images": [b64, b64, ...]}`.
pub fn study_body(image: &[u8], batch: usize) -> Vec<u8> {
    use base64::Engine;
    let b = base64::engine::general_purpose::STANDARD.encode(image);
    serde_json::to_vec(&json!({ "images": vec![b; batch] })).unwrap_or_default()
}

/// An OIP V2 binary-extension infer body (README, "Open Inference Protocol
/// V2"): the JSON header's length, and the header followed by `batch`
/// elements of `image`, each a 4-byte little-endian length and its bytes.
pub fn oip_body(image: &[u8], batch: usize, output: OipOutput) -> (usize, Vec<u8>) {
    let element_len = u32::try_from(image.len()).unwrap_or(u32::MAX);
    let mut data = Vec::with_capacity(batch * (4 + image.len()));
    for _ in 0..batch {
        data.extend_from_slice(&element_len.to_le_bytes());
        data.extend_from_slice(image);
    }
    let header = json!({
        "inputs": [{ "name": "image", "shape": [batch], "datatype": "BYTES",
                     "parameters": { "binary_data_size": data.len() } }],
        "outputs": output.outputs(),
    });
    let mut body = serde_json::to_vec(&header).unwrap_or_default();
    let header_len = body.len();
    body.extend_from_slice(&data);
    (header_len, body)
}

/// One load run's shape.
#[derive(Clone)]
pub struct Spec {
    pub threads: usize,
    pub requests: usize,
    pub batch: usize,
    pub timeout: Duration,
    /// For a mixed stream over `[public, secure]`: the share of requests
    /// that go to the second target. `None`: every request to the first.
    pub secure_share: Option<f64>,
}

/// What happened to the requests sent to one target in one run.
#[derive(Debug, Clone, PartialEq)]
pub struct TargetStats {
    pub name: String,
    pub sent: u64,
    pub ok: u64,
    pub errors: BTreeMap<String, u64>,
    pub min_ms: f64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    /// NaN in results written before it was recorded.
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub images_per_s: f64,
}

impl TargetStats {
    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }

    /// The counting invariant: every request sent is answered or counted as an error.
    pub fn check(&self) -> Result<(), String> {
        if self.sent == self.ok + self.error_count() {
            Ok(())
        } else {
            Err(format!("{}: {} sent but {} ok + {} errors", self.name, self.sent, self.ok, self.error_count()))
        }
    }

    pub fn to_json(&self) -> Value {
        json!({
            "name": self.name, "sent": self.sent, "ok": self.ok, "errors": self.errors,
            "min_ms": self.min_ms, "mean_ms": self.mean_ms, "p50_ms": self.p50_ms, "p90_ms": self.p90_ms,
            "p99_ms": self.p99_ms, "max_ms": self.max_ms, "images_per_s": self.images_per_s,
        })
    }

    pub fn from_json(v: &Value) -> Option<TargetStats> {
        let f = |k: &str| v.get(k).and_then(Value::as_f64);
        let u = |k: &str| v.get(k).and_then(Value::as_u64);
        let errors = v
            .get("errors")?
            .as_object()?
            .iter()
            .map(|(k, n)| n.as_u64().map(|n| (k.clone(), n)))
            .collect::<Option<BTreeMap<_, _>>>()?;
        Some(TargetStats {
            name: v.get("name")?.as_str()?.to_string(),
            sent: u("sent")?,
            ok: u("ok")?,
            errors,
            min_ms: f("min_ms")?,
            mean_ms: f("mean_ms")?,
            p50_ms: f("p50_ms")?,
            p90_ms: f("p90_ms").unwrap_or(f64::NAN),
            p99_ms: f("p99_ms")?,
            max_ms: f("max_ms")?,
            images_per_s: f("images_per_s")?,
        })
    }
}

/// One run: the stats of each target, and the wall time.
#[derive(Debug, Clone)]
pub struct RunResult {
    pub threads: usize,
    /// Which trial of a sweep (0-based), and the secure share of a mixed stream.
    pub trial: usize,
    pub share: Option<f64>,
    pub wall_s: f64,
    pub targets: Vec<TargetStats>,
}

impl RunResult {
    pub fn to_json(&self) -> Value {
        json!({ "threads": self.threads, "trial": self.trial, "share": self.share, "wall_s": self.wall_s,
                "targets": self.targets.iter().map(TargetStats::to_json).collect::<Vec<_>>() })
    }

    pub fn from_json(v: &Value) -> Option<RunResult> {
        Some(RunResult {
            threads: v.get("threads")?.as_u64()? as usize,
            trial: v.get("trial").and_then(Value::as_u64).unwrap_or(0) as usize,
            share: v.get("share").and_then(Value::as_f64),
            wall_s: v.get("wall_s")?.as_f64()?,
            targets: v.get("targets")?.as_array()?.iter().map(TargetStats::from_json).collect::<Option<Vec<_>>>()?,
        })
    }

    pub fn target(&self, name: &str) -> Option<&TargetStats> {
        self.targets.iter().find(|t| t.name == name)
    }
}

/// Which target request `k` of the stream goes to: 0, or 1 when the
/// secure share says so (exact proportion over any prefix, see module docs).
pub fn pick(k: u64, share: Option<f64>) -> usize {
    match share {
        None => 0,
        Some(p) => {
            let p = p.clamp(0.0, 1.0);
            if ((k + 1) as f64 * p).floor() > (k as f64 * p).floor() {
                1
            } else {
                0
            }
        }
    }
}

struct Tally {
    hist: Histogram<u64>,
    sent: u64,
    ok: u64,
    errors: BTreeMap<String, u64>,
}

impl Tally {
    fn new() -> Tally {
        // 1 us to 20 minutes, 3 significant figures.
        let hist = Histogram::new_with_bounds(1, 1_200_000_000, 3).expect("static histogram bounds are valid");
        Tally { hist, sent: 0, ok: 0, errors: BTreeMap::new() }
    }

    fn error(&mut self, name: String) {
        *self.errors.entry(name).or_insert(0) += 1;
    }

    fn merge(&mut self, other: &Tally) {
        let _ = self.hist.add(&other.hist);
        self.sent += other.sent;
        self.ok += other.ok;
        for (k, n) in &other.errors {
            *self.errors.entry(k.clone()).or_insert(0) += n;
        }
    }
}

/// Runs one load run against `targets` (one, or two for a mixed stream:
/// `[public, secure]`).
pub fn run(targets: &[Target], spec: &Spec) -> RunResult {
    let n = spec.threads.max(1);
    let barrier = Arc::new(Barrier::new(n + 1));
    let mut handles = Vec::with_capacity(n);
    for t in 0..n {
        let targets: Vec<Target> = targets.to_vec();
        let (barrier, spec) = (Arc::clone(&barrier), spec.clone());
        let h = std::thread::Builder::new().stack_size(256 * 1024).spawn(move || {
            let mut tallies: Vec<Tally> = targets.iter().map(|_| Tally::new()).collect();
            barrier.wait();
            for r in 0..spec.requests {
                let k = (r * spec.threads + t) as u64;
                let i = pick(k, spec.secure_share).min(targets.len() - 1);
                let target = &targets[i];
                let tally = &mut tallies[i];
                tally.sent += 1;
                let t0 = Instant::now();
                match target.attempt(spec.timeout) {
                    Ok(()) => {
                        tally.ok += 1;
                        let us = t0.elapsed().as_micros().max(1) as u64;
                        tally.hist.saturating_record(us);
                    }
                    Err(bucket) => tally.error(bucket),
                }
            }
            tallies
        });
        match h {
            Ok(h) => handles.push(h),
            Err(e) => panic!("cannot start client thread {t}: {e}"),
        }
    }
    barrier.wait();
    let t0 = Instant::now();
    let mut totals: Vec<Tally> = targets.iter().map(|_| Tally::new()).collect();
    for h in handles {
        // A client thread cannot panic on a request's outcome; if it did, its
        // requests would be lost, so that is fatal rather than silent.
        let tallies = h.join().expect("a client thread panicked");
        for (total, t) in totals.iter_mut().zip(&tallies) {
            total.merge(t);
        }
    }
    let wall_s = t0.elapsed().as_secs_f64();
    let ms = |us: u64| us as f64 / 1000.0;
    let stats = targets
        .iter()
        .zip(&totals)
        .map(|(target, t)| {
            let empty = t.hist.is_empty();
            TargetStats {
                name: target.name.clone(),
                sent: t.sent,
                ok: t.ok,
                errors: t.errors.clone(),
                min_ms: if empty { f64::NAN } else { ms(t.hist.min()) },
                mean_ms: if empty { f64::NAN } else { t.hist.mean() / 1000.0 },
                p50_ms: if empty { f64::NAN } else { ms(t.hist.value_at_quantile(0.5)) },
                p90_ms: if empty { f64::NAN } else { ms(t.hist.value_at_quantile(0.9)) },
                p99_ms: if empty { f64::NAN } else { ms(t.hist.value_at_quantile(0.99)) },
                max_ms: if empty { f64::NAN } else { ms(t.hist.max()) },
                images_per_s: (t.ok * spec.batch as u64) as f64 / wall_s,
            }
        })
        .collect();
    RunResult { threads: n, trial: 0, share: spec.secure_share, wall_s, targets: stats }
}

/// The error bucket of an answer that is not a 200: `http_<status>`, with
/// a space and the code when the body is a JSON object whose `code` is a short
/// word (`http_503 backend_busy`).
pub fn status_bucket(status: u16, body: &[u8]) -> String {
    let code = serde_json::from_slice::<Value>(body).ok().and_then(|v| v.get("code").and_then(Value::as_str).map(str::to_string));
    match code {
        Some(c) if !c.is_empty() && c.len() <= 40 && c.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') => format!("http_{status} {c}"),
        _ => format!("http_{status}"),
    }
}

/// A 200 reply is a success only if it carries the answer its form promises:
/// the study's `class_ids`, or the protocol's `outputs` followed by exactly
/// the binary data they announce (`binary_data_size`; none in JSON form).
fn answered(api: Api, body: &[u8]) -> bool {
    let field = match api {
        Api::Study => "class_ids",
        Api::Oip => "outputs",
    };
    let mut values = serde_json::Deserializer::from_slice(body).into_iter::<Value>();
    let Some(Ok(head)) = values.next() else { return false };
    let Some(list) = head.get(field).and_then(Value::as_array) else { return false };
    let binary: usize = list.iter().filter_map(|o| o.get("parameters")?.get("binary_data_size")?.as_u64()).map(|n| n as usize).sum();
    let rest = &body[values.byte_offset()..];
    if binary == 0 {
        rest.iter().all(u8::is_ascii_whitespace)
    } else {
        rest.len() == binary
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mixed_pick_is_exact_over_the_stream() {
        for p in [0.0, 0.2, 0.4, 0.5, 0.6, 0.8, 1.0] {
            let secure: u64 = (0..1000).map(|k| pick(k, Some(p)) as u64).sum();
            assert_eq!(secure, (1000.0 * p) as u64, "share {p}");
        }
        assert_eq!(pick(7, None), 0);
    }

    #[test]
    fn stats_json_round_trip_and_check() {
        let s = TargetStats {
            name: "public".into(),
            sent: 5,
            ok: 3,
            errors: [("http_503".to_string(), 2)].into_iter().collect(),
            min_ms: 1.0,
            mean_ms: 2.0,
            p50_ms: 2.0,
            p90_ms: 2.5,
            p99_ms: 3.0,
            max_ms: 3.0,
            images_per_s: 9.5,
        };
        assert_eq!(TargetStats::from_json(&s.to_json()), Some(s.clone()));
        assert!(s.check().is_ok());
        let bad = TargetStats { ok: 4, ..s };
        assert!(bad.check().is_err());
    }

    #[test]
    fn oip_body_is_the_header_then_length_prefixed_images() {
        let (header_len, body) = oip_body(b"abc", 2, OipOutput::Classification);
        let header: Value = serde_json::from_slice(&body[..header_len]).unwrap();
        assert_eq!(header["inputs"][0]["parameters"]["binary_data_size"], 14);
        assert_eq!(header["outputs"][0]["parameters"]["classification"], 5);
        assert_eq!(&body[header_len..], b"\x03\0\0\0abc\x03\0\0\0abc");
        let (header_len, body) = oip_body(b"abc", 1, OipOutput::Full);
        let header: Value = serde_json::from_slice(&body[..header_len]).unwrap();
        assert_eq!(header["outputs"], json!([{ "name": "probabilities", "parameters": { "binary_data": true } }]));
        assert_eq!(OipOutput::parse("full-json"), Ok(OipOutput::FullJson));
        assert!(OipOutput::parse("logits").is_err());
    }

    #[test]
    fn class_ids_must_be_an_array() {
        assert!(answered(Api::Study, br#"{"class_ids": [1, 2]}"#));
        assert!(!answered(Api::Study, br#"{"class_ids": 1}"#));
        assert!(!answered(Api::Study, b"not json"));
        assert!(answered(Api::Oip, br#"{"outputs": [{"name": "probabilities"}]}"#));
        assert!(!answered(Api::Oip, br#"{"class_ids": [1]}"#));
        // A binary reply: the header, then exactly the bytes its outputs announce.
        let head = br#"{"outputs": [{"name": "probabilities", "parameters": {"binary_data_size": 8}}]}"#;
        let mut body = head.to_vec();
        body.extend_from_slice(&[0; 8]);
        assert!(answered(Api::Oip, &body));
        assert!(!answered(Api::Oip, &body[..body.len() - 1]));
        body.push(0);
        assert!(!answered(Api::Oip, &body));
        assert!(!answered(Api::Study, b"{\"class_ids\": [1]}trailing"));
        assert!(answered(Api::Study, b"{\"class_ids\": [1]}\n"));
    }
}
