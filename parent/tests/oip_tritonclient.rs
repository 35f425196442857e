//! tritonclient[http], unchanged, against a real parent and two real model servers
//! (efficientnet-lite0) over the Open Inference Protocol V2 routes: server and model
//! metadata and readiness, infer on `<model>-secure` and `<model>-public` with the BYTES
//! input in binary and in JSON (base64) form, the classification extension in binary and
//! JSON form, the full FP32 output `[N, 1000]` in binary and JSON form (`as_numpy`: its argmax
//! and top-5 the study API's, each row a softmax summing to 1), both forms in one request,
//! errors, and the same top-5 as the study API for testdata/chelsea.jpg.
//!
//! The client is tools/oip/client_test.py, run with the venv tools/oip/venv.sh makes
//! (build/oip-venv, tritonclient pinned and hash-checked in tools/oip/requirements.txt; made
//! once, about 15 s, then reused). Needs python3.11 or 3.12 and PyPI, as `make model` does.

mod common;

use std::process::Command;

use common::*;
use serde_json::{json, Value};

/// Checks client_test.py runs (its "N passed" line must say exactly this many).
const CLIENT_CHECKS: usize = 24;

#[test]
fn tritonclient_metadata_readiness_infer_and_errors_on_both_names() {
    let root = root();
    let out = Command::new(root.join("tools/oip/venv.sh")).output().expect("run tools/oip/venv.sh");
    assert!(
        out.status.success(),
        "tools/oip/venv.sh failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let python = String::from_utf8_lossy(&out.stdout).lines().last().expect("venv.sh prints the python").trim().to_string();

    let stack = Stack::start("efficientnet-lite0", &[]);
    let chelsea = photo("chelsea.jpg");
    let model = get(stack.port, "/ready").json()["backends"]["secure"]["model"]["name"].as_str().expect("model name").to_string();

    // The study API's top-5 for the photo: what the OIP route must give too.
    let study = post_images(stack.port, "/predict-secure/", &[&chelsea]);
    assert_eq!(study.status, 200, "{}", study.text());
    let expected: Vec<Value> = study.json()["predictions"][0]["top_k"]
        .as_array()
        .expect("top_k")
        .iter()
        .map(|c| json!([c["class_id"], c["score"], c["label"]]))
        .collect();
    assert_eq!(expected.len(), 5);

    let out = Command::new(&python)
        .arg(root.join("tools/oip/client_test.py"))
        .args(["--url", &format!("127.0.0.1:{}", stack.port), "--model", &model])
        .arg("--image")
        .arg(root.join("testdata/chelsea.jpg"))
        .args(["--expected", &Value::Array(expected).to_string()])
        .output()
        .expect("run client_test.py");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    println!("{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "client_test.py failed:\n{text}\nparent log:\n{}", stack.parent_log());
    assert!(text.contains(&format!("{CLIENT_CHECKS} passed, 0 failed")), "{text}");

    // Nothing of the requests in the parent's log: no model name, label or image.
    let log = stack.parent_log();
    for needle in [&format!("{model}-secure")[..], "-public", "tiger cat", "probabilities", "req-1", &b64(&chelsea)[..64]] {
        assert!(!log.contains(needle), "{needle:?} in the parent log:\n{log}");
    }
    for line in log.lines().filter(|l| l.starts_with("access ")) {
        let route = line.split(' ').nth(2).unwrap_or("");
        assert!(
            [
                "route=predict_secure",
                "route=ready",
                "route=v2_health",
                "route=v2_metadata",
                "route=v2_infer_secure",
                "route=v2_infer_public",
                "route=other"
            ]
            .contains(&route),
            "{line}"
        );
    }
}
