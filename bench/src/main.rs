//! `bench`: the benchmark suite that reproduces the study's measurements on
//! our system (tracker issue 6). BENCHMARKS.md explains what each number
//! means; `make bench` runs it all.
//!
//! Subcommands:
//! - `suite`: starts the local stack itself, runs the parts of a profile
//!   (engine baseline, start time, channel, memory, local load, mixed sweep,
//!   and where set up, the internet-like load and the peer), and writes CSV,
//!   JSON, SVG figures and a Markdown summary to one results directory.
//! - `load`: one load sweep against given URLs, written as JSON (the suite
//!   runs it inside a network namespace for the internet-like test).
//! - `engine`, `channel`: one part alone.
//! - `sealed`: what sealed requests cost (attestation, seal/open, plaintext
//!   vs sealed under load), against a stack it starts with the development
//!   NSM, or a given one (`--url`, e.g. `make run` on EC2).
//! - `plot`: redraws the figures and summary of a results directory.
//!
//! No async runtime: the load generator is plain threads, one per client.
//! Every child process is stopped on exit, failure or Ctrl-C (`stack.rs`).
#![forbid(unsafe_code)]

mod channel;
mod engine;
mod http;
mod load;
mod plot;
mod preprocess;
mod profile;
mod report;
mod sealed;
mod stack;
mod suite;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

const USAGE: &str = "\
usage: bench suite [--profile quick|full|study] [--model NAME] [--out DIR] [--parts LIST] [options]
       bench load --target NAME=http://IP:PORT/PATH ... [--threads LIST] [--requests R]
                  [--batch B] [--trials T] [--secure-share P] [--image PATH] [--api study|oip]
                  [--oip-output classification|full|full-json] --out FILE.json
                  (--api oip: each request is an Open Inference Protocol V2 infer request in
                  the binary tensor form, to a URL like http://IP:PORT/v2/models/M-secure/infer,
                  asking for the top 5 (classification, the default) or the full FP32 output
                  in binary (full) or JSON form (full-json))
       bench engine --model DIR [--threads N] [--seconds S] [--image PATH] [--reference onnxruntime|none]
                  (then the same with onnxruntime and Pillow, bench/ort_engine.py in .venv, unless none)
       bench preprocess --model DIR [--image PATH ...] [--seconds S]
                  (one core, no inference: decode, resample and tensor time per image, per photo)
       bench profile --model DIR [--image PATH] [--runs N] [--top N] [--transform NAME ...] [--knob K=V ...]
                  (one thread: the served plan node by node, ms per operator and the slowest nodes;
                  --transform none: tract's default plan instead, NAME: it with tract's transform NAME
                  (or ours, enclave_direct_conv or enclave_max_pool);
                  --knob K=V: tract's default plan with tract's knob K set to V, with the transforms given)
       bench channel --server unix:/path [--sizes LIST]
       bench sealed [--profile quick|full] [--model NAME] [--bin DIR] [--port N] [--image PATH] [--out DIR]
                    [--parts attest,crypto,load] [--attest-n N] [--threads LIST] [--requests LIST] [--trials T]
                    [--url http://IP:PORT --measurements FILE [--dev-root FILE]]
                    (without --url: starts dev-nsm, the model servers and the parent itself; with
                    --url: a running stack, verified against the AWS Nitro root unless --dev-root)
       bench plot DIR

suite options:
  --profile P            quick (under 3 minutes), full (under 20 minutes on 2 cores; default),
                         study (the study's 1-300 thread sweep; about an hour on 2 cores)
  --model NAME           model under models/ (default efficientnet-lite0)
  --compare-model NAME   model of the peer comparison (default resnet18-synthetic)
  --parts LIST           comma list of engine,start,channel,memory,local,mixed,net,peer,sealed
                         (default: engine,start,channel,memory,local,mixed,sealed)
  --out DIR              results directory (default bench/results/<UTC time>)
  --bin DIR              where enclave and parent are (default target/release)
  --image PATH           photo sent (default testdata/chelsea_study.jpg, `make testdata`'s
                         stand-in for the study's photo; give the study's own photo here)
  --port N               parent port (default 18080)
  --trials T             trials per point (overrides the profile)
  --threads LIST         client threads of the local sweep (overrides the profile)
  --net-threads LIST     ... of the internet-like sweep; --peer-threads LIST: of the peer comparison
  --mixed-threads N      client threads of the mixed-privacy stream
  --net-ns NAME          network namespace the internet-like load runs in (part net)
  --net-listen IP        address the parent listens on for the namespace (part net)
  --net-shape TEXT       the link's shaping, as printed in the report (part net)
  --peer NAME=CMD        a peer server (part peer; repeat for more, each measured alone after ours):
                         CMD starts it on 127.0.0.1:{port} serving models/{model} (the compare model)
  --peer-port N          the peers' port (default 18090)
";

fn main() -> ExitCode {
    stack::install_signal_guard();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("suite") => suite::main(&args[1..]),
        Some("load") => load_main(&args[1..]),
        Some("engine") => engine_main(&args[1..]),
        Some("preprocess") => preprocess_main(&args[1..]),
        Some("profile") => profile_main(&args[1..]),
        Some("channel") => channel_main(&args[1..]),
        Some("sealed") => sealed::main(&args[1..]),
        Some("plot") => match args.get(1) {
            Some(dir) => report::replot(&PathBuf::from(dir)),
            None => Err("plot needs the results directory".into()),
        },
        Some("-h") | Some("--help") | None => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Some(other) => Err(format!("unknown command {other:?}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench: {e}");
            ExitCode::from(1)
        }
    }
}

/// `--flag value` pairs; every flag must be in `known`.
pub struct Flags(Vec<(String, String)>);

impl Flags {
    pub fn parse(args: &[String], known: &[&str]) -> Result<Flags, String> {
        let mut out = Vec::new();
        let mut it = args.iter();
        while let Some(f) = it.next() {
            if !known.contains(&f.as_str()) {
                return Err(format!("unknown option {f:?}\n\n{USAGE}"));
            }
            let v = it.next().ok_or_else(|| format!("{f} needs a value"))?;
            out.push((f.clone(), v.clone()));
        }
        Ok(Flags(out))
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().rev().find(|(f, _)| f == name).map(|(_, v)| v.as_str())
    }

    pub fn all(&self, name: &str) -> Vec<&str> {
        self.0.iter().filter(|(f, _)| f == name).map(|(_, v)| v.as_str()).collect()
    }

    pub fn num<T: std::str::FromStr>(&self, name: &str, default: T) -> Result<T, String> {
        match self.get(name) {
            None => Ok(default),
            Some(v) => v.parse().map_err(|_| format!("{name}: not a number: {v:?}")),
        }
    }

    pub fn list<T: std::str::FromStr>(&self, name: &str) -> Result<Option<Vec<T>>, String> {
        match self.get(name) {
            None => Ok(None),
            Some(v) => v
                .split(',')
                .map(|x| x.trim().parse().map_err(|_| format!("{name}: not a number list: {v:?}")))
                .collect::<Result<Vec<T>, String>>()
                .map(Some),
        }
    }
}

/// The stand-in for the study's photo that `make testdata` writes (same format: 960x640,
/// JPEG quality 92, 4:2:0, about its size; see tools/models/testdata.py), relative to the
/// repository root. The study's own photo, for whoever has it: `--image PATH`.
pub fn default_image() -> PathBuf {
    PathBuf::from("testdata/chelsea_study.jpg")
}

pub fn read_image(path: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{path}: {e}"))
}

/// `http://IP:PORT/PATH` into the address and the path.
pub fn parse_url(url: &str) -> Result<(SocketAddr, String), String> {
    let rest = url.strip_prefix("http://").ok_or_else(|| format!("{url}: only http://IP:PORT/PATH URLs"))?;
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let addr = host.parse().map_err(|_| format!("{url}: the host must be IP:PORT"))?;
    Ok((addr, path.to_string()))
}

fn load_main(args: &[String]) -> Result<(), String> {
    let f = Flags::parse(
        args,
        &["--target", "--threads", "--requests", "--batch", "--trials", "--secure-share", "--image", "--out", "--timeout", "--api", "--oip-output"],
    )?;
    let image = read_image(f.get("--image").unwrap_or(&default_image().display().to_string()))?;
    let batch: usize = f.num("--batch", 2)?;
    let body = load::study_body(&image, batch);
    let oip = match f.get("--api").unwrap_or("study") {
        "study" => false,
        "oip" => true,
        other => return Err(format!("--api {other:?}: expected study or oip")),
    };
    let oip_output = load::OipOutput::parse(f.get("--oip-output").unwrap_or("classification"))?;
    let mut targets = Vec::new();
    for t in f.all("--target") {
        let (name, url) = t.split_once('=').ok_or_else(|| format!("--target {t:?}: expected NAME=URL"))?;
        let (addr, path) = parse_url(url)?;
        targets.push(if oip {
            load::Target::oip(name, addr, &path, &image, batch, oip_output)
        } else {
            load::Target::json(name, addr, &path, &body)
        });
    }
    if targets.is_empty() {
        return Err("load needs at least one --target".into());
    }
    let out = f.get("--out").ok_or("load needs --out FILE.json")?;
    let spec = suite::SweepSpec {
        threads: f.list("--threads")?.unwrap_or_else(|| vec![1, 10]),
        requests: f.num("--requests", 2)?,
        batch,
        trials: f.num("--trials", 1)?,
        timeout: Duration::from_secs(f.num("--timeout", 300)?),
    };
    let share: Option<f64> = match f.get("--secure-share") {
        Some(v) => Some(v.parse().map_err(|_| format!("--secure-share: {v:?}"))?),
        None => None,
    };
    let runs = suite::sweep("load", &targets, &spec, share)?;
    let v = serde_json::Value::Array(runs.iter().map(load::RunResult::to_json).collect());
    std::fs::write(out, serde_json::to_vec_pretty(&v).unwrap_or_default()).map_err(|e| format!("{out}: {e}"))
}

fn engine_main(args: &[String]) -> Result<(), String> {
    let f = Flags::parse(args, &["--model", "--threads", "--seconds", "--image", "--reference"])?;
    let image_path = f.get("--image").map(str::to_string).unwrap_or_else(|| default_image().display().to_string());
    let image = read_image(&image_path)?;
    let model = PathBuf::from(f.get("--model").ok_or("engine needs --model DIR")?);
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let (threads, seconds) = (f.num("--threads", cpus)?, Duration::from_secs_f64(f.num("--seconds", 10.0)?));
    let r = engine::run(&model, &image, threads, seconds)?;
    println!(
        "engine: {} threads, {} images in {:.2} s: {:.2} images/s ({:.2} ms per image per thread; model loaded in {} ms)",
        r.threads, r.images, r.seconds, r.images_per_s, r.mean_ms_per_image, r.load_ms
    );
    if f.get("--reference").unwrap_or("onnxruntime") == "none" {
        return Ok(());
    }
    match engine::reference(&model, Path::new(&image_path), threads, seconds)? {
        Ok(o) => println!(
            "reference: {}: {:.2} images/s (one thread: preprocessing {:.2} ms, inference {:.2} ms; top-5 {}); \
             tract / reference = {:.2}x",
            o["engine"].as_str().unwrap_or("?"),
            o["images_per_s"].as_f64().unwrap_or(f64::NAN),
            o["preprocess_ms"].as_f64().unwrap_or(f64::NAN),
            o["inference_ms"].as_f64().unwrap_or(f64::NAN),
            o["top5"],
            r.images_per_s / o["images_per_s"].as_f64().unwrap_or(f64::NAN)
        ),
        Err(why) => println!("reference: skipped: {why}"),
    }
    Ok(())
}

fn preprocess_main(args: &[String]) -> Result<(), String> {
    let f = Flags::parse(args, &["--model", "--image", "--seconds"])?;
    let model = PathBuf::from(f.get("--model").ok_or("preprocess needs --model DIR")?);
    let default = default_image().display().to_string();
    let images = match f.all("--image") {
        v if v.is_empty() => vec![default.as_str()],
        v => v,
    };
    let seconds = Duration::from_secs_f64(f.num("--seconds", 3.0)?);
    println!("preprocess (one core, ms per image): decode + resample + tensor = total");
    for path in images {
        let r = preprocess::run(&model, &read_image(path)?, seconds)?;
        println!(
            "{path}: {:.3} + {:.3} + {:.3} = {:.3} ms ({} images)",
            r.decode_ms,
            r.resample_ms,
            r.tensor_ms,
            r.total_ms(),
            r.images
        );
    }
    Ok(())
}

fn profile_main(args: &[String]) -> Result<(), String> {
    let f = Flags::parse(args, &["--model", "--image", "--runs", "--top", "--transform", "--knob"])?;
    let model = PathBuf::from(f.get("--model").ok_or("profile needs --model DIR")?);
    let image = read_image(f.get("--image").unwrap_or(&default_image().display().to_string()))?;
    let knobs = f
        .all("--knob")
        .into_iter()
        .map(|kv| kv.split_once('=').ok_or(format!("--knob {kv:?}: expected NAME=VALUE")))
        .collect::<Result<Vec<_>, _>>()?;
    profile::run(&model, &image, f.num("--runs", 20)?, f.num("--top", 15)?, &f.all("--transform"), &knobs)
}

fn channel_main(args: &[String]) -> Result<(), String> {
    let f = Flags::parse(args, &["--server", "--sizes", "--seconds"])?;
    let server: shared::transport::Addr =
        f.get("--server").ok_or("channel needs --server ADDR")?.parse().map_err(|e| format!("--server: {e}"))?;
    let sizes = f.list("--sizes")?.unwrap_or_else(|| suite::CHANNEL_SIZES.to_vec());
    let dir = std::env::temp_dir().join(format!("bench-channel-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let r = channel::run(&server, &dir, &sizes, Duration::from_secs_f64(f.num("--seconds", 0.5)?));
    let _ = std::fs::remove_dir_all(&dir);
    r.map(|_| ())
}
