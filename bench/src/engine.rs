//! The engine baseline: bare tract inference with no serving around it.
//!
//! What it measures: images per second when `threads` threads each classify
//! the same encoded photo in a loop, through exactly the code the model
//! server's workers run (`enclave::model::Model` behind the `Engine` trait:
//! decode, resize, crop, normalise, the tract plan, softmax, top-k), with no
//! socket, frame, queue, JSON or base64 anywhere. Dividing an end-to-end
//! images/s by this number gives the serving efficiency: the share of the
//! machine's inference capacity that reaches HTTP clients.
//!
//! Why in-process through the enclave crate rather than a separate tract
//! program: so the baseline cannot differ from the served engine in model
//! loading, optimisation or preprocessing.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use enclave::config::Config;
use enclave::model::Model;
use enclave::pool::Engine;

pub struct EngineResult {
    pub threads: usize,
    pub images: u64,
    pub seconds: f64,
    pub images_per_s: f64,
    /// Mean time of one classification on one thread, in milliseconds.
    pub mean_ms_per_image: f64,
    pub load_ms: u128,
}

pub fn run(model_dir: &Path, image: &[u8], threads: usize, duration: Duration) -> Result<EngineResult, String> {
    let args = vec!["--model".to_string(), model_dir.display().to_string(), "--workers".into(), threads.to_string()];
    let cfg = Config::from_args(args).map_err(|e| format!("engine: {e}"))?;
    let model = Arc::new(Model::load(&cfg).map_err(|e| format!("engine: {e}"))?);
    let load_ms = model.load_ms;
    // Fail early (and once) if the photo does not classify at all.
    {
        let mut st = model.new_state().map_err(|e| e.to_string())?;
        model.classify(&mut st, image, 5).map_err(|e| format!("engine: the photo does not classify: {}", e.message))?;
    }
    let done = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let busy_us = Arc::new(AtomicU64::new(0));
    let start = Arc::new(Barrier::new(threads + 1));
    let image: Arc<[u8]> = image.into();
    let mut handles = Vec::new();
    for _ in 0..threads {
        let (model, done, count, busy_us, start, image) =
            (Arc::clone(&model), Arc::clone(&done), Arc::clone(&count), Arc::clone(&busy_us), Arc::clone(&start), Arc::clone(&image));
        handles.push(std::thread::spawn(move || -> Result<(), String> {
            let mut st = model.new_state().map_err(|e| e.to_string())?;
            start.wait();
            while !done.load(Ordering::Relaxed) {
                let t = Instant::now();
                model.classify(&mut st, &image, 5).map_err(|e| e.message)?;
                busy_us.fetch_add(t.elapsed().as_micros() as u64, Ordering::Relaxed);
                count.fetch_add(1, Ordering::Relaxed);
            }
            Ok(())
        }));
    }
    start.wait();
    let t0 = Instant::now();
    std::thread::sleep(duration);
    done.store(true, Ordering::Relaxed);
    for h in handles {
        h.join().map_err(|_| "engine: a thread panicked".to_string())??;
    }
    // Count only whole images: the clock stops when the last thread finishes.
    let seconds = t0.elapsed().as_secs_f64();
    let images = count.load(Ordering::Relaxed);
    let mean_ms = if images > 0 { busy_us.load(Ordering::Relaxed) as f64 / images as f64 / 1000.0 } else { 0.0 };
    Ok(EngineResult { threads, images, seconds, images_per_s: images as f64 / seconds, mean_ms_per_image: mean_ms, load_ms })
}

/// The Python of the models' test virtualenv (onnxruntime and Pillow, pinned), relative to the
/// repository root, and the reference script it runs.
pub const REFERENCE_PYTHON: &str = ".venv/bin/python";
pub const REFERENCE_SCRIPT: &str = "bench/ort_engine.py";

/// The engine reference (bench/ort_engine.py): onnxruntime with Pillow's preprocessing, no
/// serving, on the same model, photo, thread count and duration as [`run`]. Its JSON object
/// (`engine`, `images_per_s`, `preprocess_ms`, `inference_ms`, `top5`, ...), or why it did
/// not run: `Ok(Err(why))` when the virtualenv is missing (`make testdata` creates it).
pub fn reference(model_dir: &Path, image: &Path, threads: usize, duration: Duration) -> Result<Result<serde_json::Value, String>, String> {
    if !Path::new(REFERENCE_PYTHON).exists() {
        return Ok(Err(format!("{REFERENCE_PYTHON} is missing (`make testdata` creates it)")));
    }
    let out = std::process::Command::new(REFERENCE_PYTHON)
        .arg(REFERENCE_SCRIPT)
        .args(["--model", &model_dir.display().to_string(), "--image", &image.display().to_string()])
        .args(["--threads", &threads.to_string(), "--seconds", &duration.as_secs_f64().to_string()])
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| format!("{REFERENCE_SCRIPT}: {e}"))?;
    if !out.status.success() {
        return Err(format!("{REFERENCE_SCRIPT} failed ({})", out.status));
    }
    serde_json::from_slice(&out.stdout).map(Ok).map_err(|e| format!("{REFERENCE_SCRIPT}: not one JSON object: {e}"))
}
