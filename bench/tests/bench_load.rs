//! The benchmark's load generator counts correctly against a real local
//! stack (tiny-test model, so it takes seconds): every request sent is
//! either answered 200 with `class_ids` or counted under an error bucket,
//! never dropped, including when a backend is down (503s) or nothing
//! listens at all (connect errors). Runs `bench load` (cargo's build of the
//! bench binary) and reads its JSON.

// The parent's end-to-end support (stack start-up, ports, photos, temporary directories): the
// same code, not a copy, so the stack the load generator meets is the one the parent's tests start.
#[path = "../../parent/tests/common/mod.rs"]
mod common;

use std::process::Command;

use common::{free_port, photo, Stack, TempDir};
use serde_json::Value;

fn bench_load(dir: &TempDir, targets: &[String], extra: &[&str]) -> Vec<Value> {
    let out = dir.0.join("runs.json");
    let img = dir.0.join("chelsea.jpg");
    std::fs::write(&img, photo("chelsea.jpg")).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_bench"));
    cmd.arg("load");
    for t in targets {
        cmd.args(["--target", t]);
    }
    cmd.args(["--image", img.to_str().unwrap(), "--out", out.to_str().unwrap(), "--timeout", "20"]).args(extra);
    let o = cmd.output().unwrap();
    assert!(o.status.success(), "bench load failed: {}", String::from_utf8_lossy(&o.stderr));
    let v: Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    v.as_array().unwrap().clone()
}

/// (sent, ok, errors object) of `target` in `run`.
fn counts<'a>(run: &'a Value, target: &str) -> (u64, u64, &'a serde_json::Map<String, Value>) {
    let t = run["targets"].as_array().unwrap().iter().find(|t| t["name"] == target).unwrap_or_else(|| panic!("no {target} in {run}"));
    (t["sent"].as_u64().unwrap(), t["ok"].as_u64().unwrap(), t["errors"].as_object().unwrap())
}

#[test]
fn counts_every_request_on_both_routes_and_503s_when_secure_is_down() {
    let mut stack = Stack::start("tiny-test", &[]);
    let dir = TempDir::new("bench");
    let url = |path: &str| format!("http://127.0.0.1:{}{path}", stack.port);
    let targets = [format!("public={}", url("/predict-public/")), format!("secure={}", url("/predict-secure/"))];

    // Both routes up: 1 and 4 threads x 3 requests, each route alone.
    let runs = bench_load(&dir, &targets, &["--threads", "1,4", "--requests", "3"]);
    assert_eq!(runs.len(), 4, "one run per (threads, route)");
    for run in &runs {
        let threads = run["threads"].as_u64().unwrap();
        let name = run["targets"][0]["name"].as_str().unwrap().to_string();
        let (sent, ok, errors) = counts(run, &name);
        assert_eq!((sent, ok), (threads * 3, threads * 3), "{run}");
        assert!(errors.is_empty(), "{run}");
        assert!(run["targets"][0]["min_ms"].as_f64().unwrap() > 0.0);
        assert!(run["targets"][0]["images_per_s"].as_f64().unwrap() > 0.0);
    }

    // Secure down: a mixed stream, half secure. Public answers, every secure
    // request is a counted 503, none is lost.
    stack.kill_secure();
    let runs = bench_load(&dir, &targets, &["--threads", "4", "--requests", "4", "--secure-share", "0.5"]);
    assert_eq!(runs.len(), 1);
    let (ps, pok, perr) = counts(&runs[0], "public");
    let (ss, sok, serr) = counts(&runs[0], "secure");
    assert_eq!((ps, pok, perr.len()), (8, 8, 0), "{}", runs[0]);
    assert_eq!((ss, sok), (8, 0), "{}", runs[0]);
    assert_eq!(serr.get("http_503 backend_unavailable").and_then(Value::as_u64), Some(8), "{}", runs[0]);
}

#[test]
fn counts_connection_failures_when_nothing_listens() {
    let dir = TempDir::new("bench-nl");
    let port = free_port(); // bound then released: nothing listens there
    let runs = bench_load(&dir, &[format!("public=http://127.0.0.1:{port}/predict-public/")], &["--threads", "3", "--requests", "2"]);
    let (sent, ok, errors) = counts(&runs[0], "public");
    assert_eq!((sent, ok), (6, 0));
    assert_eq!(errors.get("connect_error").and_then(Value::as_u64), Some(6), "{}", runs[0]);
}

#[test]
fn oip_requests_are_answered_on_both_model_names() {
    // The load generator's OIP V2 form is accepted by the parent as it is: every
    // request on `<model>-public` and `<model>-secure` answered with outputs, for each
    // output it can ask for (the classification's top 5, the full FP32 output in binary
    // form, whose reply must carry exactly the bytes it announces, and in JSON).
    let stack = Stack::start("tiny-test", &[]);
    let dir = TempDir::new("bench-oip");
    let url = |name: &str| format!("{name}=http://127.0.0.1:{}/v2/models/tiny-test-{name}/infer", stack.port);
    for output in ["classification", "full", "full-json"] {
        let args = ["--api", "oip", "--oip-output", output, "--threads", "2", "--requests", "3"];
        let runs = bench_load(&dir, &[url("public"), url("secure")], &args);
        assert_eq!(runs.len(), 2, "one run per route");
        for run in &runs {
            let name = run["targets"][0]["name"].as_str().unwrap().to_string();
            let (sent, ok, errors) = counts(run, &name);
            assert_eq!((sent, ok), (6, 6), "{output}: {run}");
            assert!(errors.is_empty(), "{output}: {run}");
        }
    }
}
