//! `bench suite`: every part of a profile, against processes the suite
//! starts and stops itself, into one results directory.
//!
//! Order (each part prints its progress as it goes):
//! 1. engine: bare-engine images/s (nothing else running);
//! 2. start: the stack started and stopped `trials` times (model servers'
//!    exec to Ping, stack to /ready; peak RSS at ready);
//! 3. the main stack is started; channel throughput against its public
//!    model server (idle); memory under light mixed load;
//! 4. local: the thread sweep, public and secure routes run separately, as
//!    the study did; mixed: one stream per secure share;
//! 5. net: a second stack whose parent listens on the namespace's link; the
//!    sweep runs inside the namespace (`ip netns exec NS bench load`);
//! 6. peer: the comparison model served by our stack, then by each peer
//!    (`--peer NAME=CMD`: FastAPI + onnxruntime, the study's FastAPI +
//!    PyTorch), one at a time, the same sweep against each;
//! 7. sealed: a stack with the development NSM; attestation requests and
//!    their verification, seal/open in-process, and plaintext vs sealed
//!    requests side by side (`sealed.rs`, also `bench sealed` alone).
//!
//! Trials are the outer loop of a sweep (each trial is a whole sweep), so
//! slow drift of the machine spreads over all points instead of biasing one.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::load::{self, RunResult, Spec, Target};
use crate::stack::{self, Proc, RssSampler, Stack};
use crate::{channel, engine, report, sealed, Flags};

/// Message sizes of the channel test: a small photo, the study's cat, a
/// large photo, and the largest body a frame may carry, roughly.
pub const CHANNEL_SIZES: [usize; 5] = [16 << 10, 256 << 10, 1 << 20, 8 << 20, 48 << 20];

pub struct SweepSpec {
    pub threads: Vec<usize>,
    pub requests: usize,
    pub batch: usize,
    pub trials: usize,
    pub timeout: Duration,
}

struct Profile {
    name: &'static str,
    trials: usize,
    threads: Vec<usize>,
    net_threads: Vec<usize>,
    peer_threads: Vec<usize>,
    mixed_threads: usize,
    mixed_requests: usize,
    shares: Vec<f64>,
    engine_s: f64,
    channel_s: f64,
    channel_sizes: Vec<usize>,
    light_load_s: f64,
}

/// The profiles. `full` is sized to finish in under 20 minutes on a 2-core
/// machine shared with other work (about 12 images/s end to end there);
/// `study` is the study's whole sweep (1 to 300 threads), which takes about
/// an hour there; `quick` is under 3 minutes.
fn profile(name: &str) -> Result<Profile, String> {
    Ok(match name {
        "quick" => Profile {
            name: "quick",
            trials: 3,
            threads: vec![1, 10],
            net_threads: vec![1, 10],
            peer_threads: vec![1, 10],
            mixed_threads: 10,
            mixed_requests: 2,
            shares: vec![0.2, 0.5, 0.8],
            engine_s: 3.0,
            channel_s: 0.2,
            channel_sizes: vec![64 << 10, 1 << 20, 16 << 20],
            light_load_s: 3.0,
        },
        "full" | "study" => Profile {
            name: if name == "full" { "full" } else { "study" },
            trials: 3,
            threads: if name == "full" {
                vec![1, 10, 20, 50, 100]
            } else {
                vec![1, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100, 150, 200, 250, 300]
            },
            net_threads: vec![1, 10, 50],
            peer_threads: vec![1, 10, 100],
            mixed_threads: 10,
            mixed_requests: 4,
            shares: vec![0.2, 0.4, 0.5, 0.6, 0.8],
            engine_s: 10.0,
            channel_s: 0.5,
            channel_sizes: CHANNEL_SIZES.to_vec(),
            light_load_s: 10.0,
        },
        other => return Err(format!("unknown profile {other:?} (quick, full or study)")),
    })
}

/// Runs a sweep: for each trial, for each thread count, each target alone
/// (or, with a share, both targets in one stream). Checks every run's counts.
pub fn sweep(label: &str, targets: &[Target], spec: &SweepSpec, share: Option<f64>) -> Result<Vec<RunResult>, String> {
    // Warm-up, not counted: the parent's backend connections, page cache.
    for t in targets {
        for _ in 0..2 {
            let _ = load::run(std::slice::from_ref(t), &Spec { threads: 1, requests: 1, batch: spec.batch, timeout: spec.timeout, secure_share: None });
        }
    }
    let mut runs = Vec::new();
    for trial in 0..spec.trials {
        for &n in &spec.threads {
            let groups: Vec<Vec<Target>> = match share {
                Some(_) => vec![targets.to_vec()],
                None => targets.iter().map(|t| vec![t.clone()]).collect(),
            };
            for g in groups {
                let s = Spec { threads: n, requests: spec.requests, batch: spec.batch, timeout: spec.timeout, secure_share: share };
                let mut r = load::run(&g, &s);
                r.trial = trial;
                r.share = share;
                for t in &r.targets {
                    t.check()?;
                    let errs = if t.errors.is_empty() { String::new() } else { format!(" errors {:?}", t.errors) };
                    eprintln!(
                        "  {label} trial {}/{} threads {:>3} {:<12} ok {:>4}/{:<4} min {:8.1} p50 {:8.1} p99 {:8.1} max {:8.1} ms  {:6.1} img/s{errs}",
                        trial + 1,
                        spec.trials,
                        n,
                        t.name,
                        t.ok,
                        t.sent,
                        t.min_ms,
                        t.p50_ms,
                        t.p99_ms,
                        t.max_ms,
                        t.images_per_s
                    );
                }
                runs.push(r);
            }
        }
    }
    Ok(runs)
}

pub(crate) fn git_commit() -> String {
    let out = Command::new("git").args(["rev-parse", "--short=10", "HEAD"]).output();
    let mut c = out.ok().map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string()).unwrap_or_default();
    if c.is_empty() {
        c = "unknown".into();
    }
    let dirty = Command::new("git").args(["status", "--porcelain", "--untracked-files=no"]).output();
    if dirty.map(|o| !o.stdout.is_empty()).unwrap_or(false) {
        c.push_str("+dirty");
    }
    c
}

pub(crate) fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| t.lines().find(|l| l.starts_with("model name")).and_then(|l| l.split(':').nth(1)).map(|s| s.trim().to_string()))
        .unwrap_or_else(|| "unknown CPU".into())
}

pub(crate) fn utc_now() -> String {
    let out = Command::new("date").args(["-u", "+%Y%m%dT%H%M%SZ"]).output();
    out.ok().map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string()).unwrap_or_else(|| "now".into())
}

/// The machine, the commit and the photo, as every results file starts.
pub(crate) fn meta_base(profile: &str, model: &str, trials: usize, image_path: &Path, image: &[u8]) -> Value {
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    json!({
        "cpu": cpu_model(), "cores": cores, "model": model, "commit": git_commit(), "profile": profile,
        "trials": trials, "date": utc_now(), "image": image_path.display().to_string(), "image_bytes": image.len(),
        "client": "one TCP connection per request (Connection: close), as the study's requests.post",
    })
}

fn file_size(p: &Path) -> Option<u64> {
    std::fs::metadata(p).ok().filter(|m| m.is_file()).map(|m| m.len())
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        f64::NAN
    } else if v.len() % 2 == 1 {
        v[v.len() / 2]
    } else {
        (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0
    }
}

fn runs_json(experiment: &str, runs: &[RunResult]) -> Vec<Value> {
    runs.iter()
        .map(|r| {
            let mut v = r.to_json();
            v["experiment"] = json!(experiment);
            v
        })
        .collect()
}

/// Light mixed load (2 clients, half secure) for `secs`, sampling RSS.
fn light_load(targets: &[Target], pids: &[(String, u32)], secs: f64) -> Vec<Value> {
    let sampler = RssSampler::start(pids.iter().map(|(_, p)| *p).collect());
    let until = Instant::now() + Duration::from_secs_f64(secs);
    while Instant::now() < until {
        let spec = Spec { threads: 2, requests: 2, batch: 2, timeout: Duration::from_secs(60), secure_share: Some(0.5) };
        let _ = load::run(targets, &spec);
    }
    let samples = sampler.finish();
    pids.iter()
        .zip(samples)
        .map(|((name, pid), s)| {
            let mean = if s.is_empty() { 0.0 } else { s.iter().sum::<u64>() as f64 / s.len() as f64 };
            json!({ "name": name, "mean_load_kib": mean, "max_load_kib": s.iter().max().copied().unwrap_or(0),
                    "peak_kib": stack::status_kib(*pid, "VmHWM").unwrap_or(0), "samples": s.len() })
        })
        .collect()
}

fn stack_targets(addr: SocketAddr, body: &[u8], prefix: &str) -> Vec<Target> {
    vec![
        Target::json(&format!("{prefix}public"), addr, "/predict-public/", body),
        Target::json(&format!("{prefix}secure"), addr, "/predict-secure/", body),
    ]
}

pub fn main(args: &[String]) -> Result<(), String> {
    let f = Flags::parse(
        args,
        &[
            "--profile", "--model", "--compare-model", "--parts", "--out", "--bin", "--image", "--port", "--trials",
            "--threads", "--net-threads", "--peer-threads", "--mixed-threads", "--net-ns", "--net-listen", "--net-shape",
            "--peer", "--peer-port",
        ],
    )?;
    let mut p = profile(f.get("--profile").unwrap_or("full"))?;
    if let Some(v) = f.list("--net-threads")? {
        p.net_threads = v;
    }
    if let Some(v) = f.list("--peer-threads")? {
        p.peer_threads = v;
    }
    p.mixed_threads = f.num("--mixed-threads", p.mixed_threads)?;
    let model = f.get("--model").unwrap_or("efficientnet-lite0").to_string();
    let compare_model = f.get("--compare-model").unwrap_or("resnet18-synthetic").to_string();
    let parts: Vec<String> = f
        .get("--parts")
        .unwrap_or("engine,start,channel,memory,local,mixed,sealed")
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    const KNOWN: [&str; 9] = ["engine", "start", "channel", "memory", "local", "mixed", "net", "peer", "sealed"];
    if let Some(bad) = parts.iter().find(|p| !KNOWN.contains(&p.as_str())) {
        return Err(format!("--parts: unknown part {bad:?} (known: {})", KNOWN.join(",")));
    }
    let has = |name: &str| parts.iter().any(|p| p == name);
    let out = PathBuf::from(f.get("--out").map(str::to_string).unwrap_or_else(|| format!("bench/results/{}", utc_now())));
    let bin = PathBuf::from(f.get("--bin").unwrap_or("target/release"));
    let image_path = f.get("--image").map(PathBuf::from).unwrap_or_else(crate::default_image);
    let image = std::fs::read(&image_path).map_err(|e| format!("{}: {e}", image_path.display()))?;
    let port: u16 = f.num("--port", 18080)?;
    let trials: usize = f.num("--trials", p.trials)?;
    let threads = f.list("--threads")?.unwrap_or(p.threads.clone());
    let model_dir = PathBuf::from("models").join(&model);
    for b in ["enclave", "parent"] {
        if !bin.join(b).is_file() {
            return Err(format!("{}/{b} is missing: run `make bench-build`", bin.display()));
        }
    }
    if !model_dir.join("model.onnx").is_file() {
        return Err(format!("{} is missing: run `make model MODEL={model}`", model_dir.display()));
    }
    std::fs::create_dir_all(&out).map_err(|e| format!("{}: {e}", out.display()))?;
    let run_dir = out.join("run");
    let batch = 2;
    let body = load::study_body(&image, batch);
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let suite_t0 = Instant::now();

    let mut meta = meta_base(p.name, &model, trials, &image_path, &image);
    for (k, v) in [("compare_model", json!(compare_model)), ("requests_per_thread", json!(2)), ("batch", json!(batch)),
                   ("body_bytes", json!(body.len())), ("parts", json!(parts))] {
        meta[k] = v;
    }
    let mut results = json!({ "meta": meta, "load": [] });
    let save = |results: &Value| -> Result<(), String> {
        let path = out.join("results.json");
        std::fs::write(&path, serde_json::to_vec_pretty(results).unwrap_or_default()).map_err(|e| format!("{}: {e}", path.display()))
    };
    eprintln!("bench: profile {}, model {model}, {trials} trials, parts {}, results in {}", p.name, parts.join(","), out.display());

    // 1. Engine baseline, nothing else running.
    if has("engine") {
        let mut list = Vec::new();
        let mut models = vec![model.clone()];
        if has("peer") && compare_model != model {
            models.push(compare_model.clone());
        }
        for m in models {
            eprintln!("bench: engine baseline, {m}, {cores} threads, {} s", p.engine_s);
            let r = engine::run(&PathBuf::from("models").join(&m), &image, cores, Duration::from_secs_f64(p.engine_s))?;
            eprintln!("  {:.2} images/s ({:.1} ms per image per thread)", r.images_per_s, r.mean_ms_per_image);
            let mut e = json!({ "model": m, "threads": r.threads, "images": r.images, "seconds": r.seconds,
                                "images_per_s": r.images_per_s, "ms_per_image": r.mean_ms_per_image });
            eprintln!("bench: engine reference (onnxruntime, same photo and threads), {m}");
            match engine::reference(&PathBuf::from("models").join(&m), &image_path, cores, Duration::from_secs_f64(p.engine_s))? {
                Ok(o) => {
                    eprintln!("  {:.2} images/s", o["images_per_s"].as_f64().unwrap_or(f64::NAN));
                    e["reference"] = o;
                }
                Err(why) => eprintln!("  skipped: {why}"),
            }
            list.push(e);
        }
        results["engine"] = json!(list);
        save(&results)?;
    }

    let listen = SocketAddr::from(([127, 0, 0, 1], port));
    // 2. Start time and peak memory at start.
    if has("start") {
        let mut list = Vec::new();
        for t in 0..trials {
            let s = Stack::start(&bin, &model_dir, &run_dir, listen, &[])?;
            let peaks: Vec<Value> =
                s.pids().iter().map(|(n, pid)| json!({ "name": n, "peak_kib": stack::status_kib(*pid, "VmHWM").unwrap_or(0) })).collect();
            eprintln!(
                "bench: start trial {}/{trials}: secure server {:.3} s, public server {:.3} s, stack to /ready {:.3} s",
                t + 1,
                s.times.secure_s,
                s.times.public_s,
                s.times.stack_s
            );
            list.push(json!({ "secure_s": s.times.secure_s, "public_s": s.times.public_s, "stack_s": s.times.stack_s, "peak_at_ready": peaks }));
            s.stop();
        }
        results["start"] = json!(list);
        save(&results)?;
    }

    // 3-4. The main stack: channel, memory, local and mixed load.
    if ["channel", "memory", "local", "mixed"].iter().any(|x| has(x)) {
        eprintln!("bench: starting the stack ({model}) on {listen}");
        let s = Stack::start(&bin, &model_dir, &run_dir, listen, &[])?;
        let targets = stack_targets(listen, &body, "");
        if has("channel") {
            eprintln!("bench: channel throughput against the public model server ({})", s.public_addr);
            let pts = channel::run(&s.public_addr, &run_dir, &p.channel_sizes, Duration::from_secs_f64(p.channel_s))?;
            results["channel"] = json!(pts.iter().map(channel::ChannelPoint::to_json).collect::<Vec<_>>());
            save(&results)?;
        }
        if has("memory") {
            eprintln!("bench: memory under light mixed load (2 clients, half secure) for {} s", p.light_load_s);
            let pids: Vec<(String, u32)> = s.pids().iter().map(|(n, p)| (n.to_string(), *p)).collect();
            let procs = light_load(&targets, &pids, p.light_load_s);
            for v in &procs {
                eprintln!("  {}: mean {:.1} MiB, peak {:.1} MiB", v["name"].as_str().unwrap_or("?"),
                          v["mean_load_kib"].as_f64().unwrap_or(0.0) / 1024.0, v["peak_kib"].as_f64().unwrap_or(0.0) / 1024.0);
            }
            let mut sizes = Vec::new();
            for (name, path) in [
                ("enclave binary", bin.join("enclave")),
                ("parent binary", bin.join("parent")),
                ("model.onnx", model_dir.join("model.onnx")),
                ("static enclave binary", PathBuf::from("build/static/enclave")),
                ("EIF", PathBuf::from("build/enclave.eif")),
            ] {
                if let Some(b) = file_size(&path) {
                    sizes.push(json!({ "name": name, "path": path.display().to_string(), "bytes": b }));
                }
            }
            results["memory"] = json!({ "processes": procs, "sizes": sizes });
            save(&results)?;
        }
        if has("local") {
            eprintln!("bench: local load, threads {threads:?}, 2 requests each, batch 2, {trials} trials");
            let spec = SweepSpec { threads: threads.clone(), requests: 2, batch, trials, timeout: Duration::from_secs(300) };
            let runs = sweep("local", &targets, &spec, None)?;
            push_runs(&mut results, "local", &runs);
            save(&results)?;
        }
        if has("mixed") {
            eprintln!("bench: mixed-privacy sweep, {} threads x {} requests, shares {:?}", p.mixed_threads, p.mixed_requests, p.shares);
            for &share in &p.shares {
                let spec = SweepSpec { threads: vec![p.mixed_threads], requests: p.mixed_requests, batch, trials, timeout: Duration::from_secs(300) };
                let runs = sweep(&format!("mixed {share:.1}"), &targets, &spec, Some(share))?;
                push_runs(&mut results, "mixed", &runs);
            }
            save(&results)?;
        }
        s.stop();
    }

    // 5. Internet-like load, from inside a network namespace.
    if has("net") {
        // bench/netns.sh exports these around the command it runs.
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let ns = f.get("--net-ns").map(str::to_string).or_else(|| env("BENCH_NET_NS"));
        let ip = f.get("--net-listen").map(str::to_string).or_else(|| env("BENCH_NET_LISTEN"));
        let shape = f.get("--net-shape").map(str::to_string).or_else(|| env("BENCH_NET_SHAPE"));
        match (ns.as_deref(), ip.as_deref()) {
            (Some(ns), Some(ip)) => {
                let ip: std::net::IpAddr = ip.parse().map_err(|_| format!("--net-listen: not an IP: {ip}"))?;
                let addr = SocketAddr::new(ip, port + 1);
                let net_threads = p.net_threads.clone();
                eprintln!("bench: internet-like load from namespace {ns} to {addr}, threads {net_threads:?}");
                let s = Stack::start(&bin, &model_dir, &run_dir, addr, &[])?;
                let file = out.join("net-runs.json");
                let exe = std::env::current_exe().map_err(|e| e.to_string())?;
                let list = |v: &[usize]| v.iter().map(|n| n.to_string()).collect::<Vec<_>>().join(",");
                let mut args: Vec<String> = vec!["netns".into(), "exec".into(), ns.into(), exe.display().to_string(), "load".into()];
                for (name, path) in [("public", "/predict-public/"), ("secure", "/predict-secure/")] {
                    args.push("--target".into());
                    args.push(format!("{name}=http://{addr}{path}"));
                }
                args.extend(["--threads".into(), list(&net_threads), "--trials".into(), trials.to_string()]);
                args.extend(["--image".into(), image_path.display().to_string(), "--out".into(), file.display().to_string()]);
                let mut child = Proc::spawn("load generator in the namespace", Path::new("ip"), &args, out.join("net-load.log"))?;
                let status = child.child.wait().map_err(|e| e.to_string())?;
                child.stop(Duration::from_secs(1));
                s.stop();
                if let Ok(t) = std::fs::read_to_string(out.join("net-load.log")) {
                    eprint!("{t}");
                }
                if !status.success() {
                    return Err(format!("the load generator in namespace {ns} failed ({status})"));
                }
                let v: Value = serde_json::from_slice(&std::fs::read(&file).map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
                let runs: Vec<RunResult> =
                    v.as_array().ok_or("net-runs.json is not a list")?.iter().filter_map(RunResult::from_json).collect();
                push_runs(&mut results, "net", &runs);
                results["meta"]["net_shape"] = json!(shape.unwrap_or_else(|| "see bench/netns.sh".into()));
                save(&results)?;
            }
            _ => eprintln!("bench: part net skipped: needs --net-ns and --net-listen (bench/netns.sh sets them up; run it through make bench-net)"),
        }
    }

    // 6. The peers, one at a time, on the comparison model.
    if has("peer") {
        let peer_threads = p.peer_threads.clone();
        let spec = SweepSpec { threads: peer_threads.clone(), requests: 2, batch, trials, timeout: Duration::from_secs(600) };
        let cmp_dir = PathBuf::from("models").join(&compare_model);
        if !cmp_dir.join("model.onnx").is_file() {
            return Err(format!("{} is missing: run `make model MODEL={compare_model}`", cmp_dir.display()));
        }
        eprintln!("bench: peer comparison on {compare_model}: our stack first, threads {peer_threads:?}");
        let s = Stack::start(&bin, &cmp_dir, &run_dir, listen, &[])?;
        let pids: Vec<(String, u32)> = s.pids().iter().map(|(n, p)| (format!("ours {n}"), *p)).collect();
        let targets = stack_targets(listen, &body, "ours-");
        let ours_start = s.times;
        let mut mem = light_load(&targets, &pids, p.light_load_s);
        let runs = sweep("ours", &targets, &spec, None)?;
        push_runs(&mut results, "peer", &runs);
        s.stop();
        let peers = f.all("--peer");
        let peer_port: u16 = f.num("--peer-port", 18090)?;
        let mut listed = Vec::new();
        for peer_arg in &peers {
            let (name, cmd) = peer_arg.split_once('=').ok_or_else(|| format!("--peer {peer_arg}: want NAME=COMMAND"))?;
            let cmd = cmd.replace("{port}", &peer_port.to_string()).replace("{model}", &cmp_dir.display().to_string());
            let words: Vec<&str> = cmd.split_whitespace().collect();
            let (prog, rest) = words.split_first().ok_or_else(|| format!("--peer {name}: the command is empty"))?;
            let rest: Vec<String> = rest.iter().map(|w| w.to_string()).collect();
            eprintln!("bench: starting the peer {name}: {cmd}");
            let peer_addr = SocketAddr::from(([127, 0, 0, 1], peer_port));
            let log = out.join(format!("peer-{}.log", listed.len() + 1));
            let mut peer = Proc::spawn(name, Path::new(prog), &rest, log)?;
            let since = peer.started;
            let ready = stack::wait_http(&mut [&mut peer], peer_addr, "/health", since, Duration::from_secs(300))?;
            eprintln!("  peer ready after {:.2} s", ready.as_secs_f64());
            let pt = vec![Target::json(name, peer_addr, "/predict/", &body)];
            let pid = vec![(name.to_string(), peer.pid())];
            let start_peak = stack::status_kib(peer.pid(), "VmHWM").unwrap_or(0);
            let mut pm = light_load(&[pt[0].clone(), pt[0].clone()], &pid, p.light_load_s);
            if let Some(v) = pm.first_mut() {
                v["peak_at_ready_kib"] = json!(start_peak);
            }
            mem.extend(pm);
            let runs = sweep(name, &pt, &spec, None)?;
            push_runs(&mut results, "peer", &runs);
            peer.stop(Duration::from_secs(10));
            listed.push(json!({ "name": name, "command": cmd, "ready_s": ready.as_secs_f64() }));
        }
        if peers.is_empty() {
            eprintln!("bench: no --peer: only our side of the comparison was measured");
        }
        results["peer"] = json!({ "peers": listed, "memory": mem,
            "ours_start": { "secure_s": ours_start.secure_s, "public_s": ours_start.public_s, "stack_s": ours_start.stack_s } });
        save(&results)?;
    }

    // 7. Sealed requests: a stack with the development NSM.
    if has("sealed") {
        let mut sizes = sealed::Sizes::for_profile(p.name);
        sizes.trials = trials;
        eprintln!("bench: sealed requests: starting the stack ({model}) with the development NSM on {listen}");
        let s = Stack::start_attested(&bin, &model_dir, &run_dir, listen, &[])?;
        let nsm = s.nsm.as_ref().ok_or("the attested stack has no NSM")?;
        let trust = sealed::Trust::from_files(&nsm.measurements.display().to_string(), Some(&nsm.root_pem.display().to_string()));
        let all = ["attest", "crypto", "load"].map(String::from);
        let r = trust.and_then(|t| sealed::measure(listen, &t, &image, &sizes, &all));
        s.stop();
        let (v, runs) = r?;
        results["sealed"] = v;
        push_runs(&mut results, "sealed", &runs);
        save(&results)?;
    }

    results["meta"]["suite_seconds"] = json!(suite_t0.elapsed().as_secs_f64());
    save(&results)?;
    let _ = std::fs::remove_dir_all(&run_dir);
    report::write_all(&out, &results)?;
    eprintln!("bench: done in {:.0} s; summary {}", suite_t0.elapsed().as_secs_f64(), out.join("summary.md").display());
    Ok(())
}

pub(crate) fn push_runs(results: &mut Value, experiment: &str, runs: &[RunResult]) {
    if let Some(list) = results["load"].as_array_mut() {
        list.extend(runs_json(experiment, runs));
    }
}

/// Median of a list of numbers (for the report).
pub fn med(mut v: Vec<f64>) -> f64 {
    median(&mut v)
}
