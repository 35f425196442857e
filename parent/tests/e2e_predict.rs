//! End to end with the real model (efficientnet-lite0) on both routes: the
//! study's JSON format with a batch of two real cat photos, a raw JPEG body,
//! labels and scores, `class_ids` equal to the model server's argmax, the
//! model identity and the timings; then a scan of the parent's log for any
//! trace of the secure requests.

mod common;

use common::*;
use serde_json::Value;

const CAT_CLASSES: std::ops::RangeInclusive<u64> = 281..=287;

fn check_prediction(v: &Value, backend: &str, images: usize, top_k: usize) {
    assert_eq!(v["backend"], backend, "{v}");
    assert_eq!(v["model"]["name"], "efficientnet-lite0");
    assert_eq!(v["model"]["synthetic"], false);
    assert_eq!(v["model"]["sha256"].as_str().map(str::len), Some(64));
    let ids = v["class_ids"].as_array().expect("class_ids");
    let preds = v["predictions"].as_array().expect("predictions");
    assert_eq!((ids.len(), preds.len()), (images, images));
    for (id, p) in ids.iter().zip(preds) {
        let top = p["top_k"].as_array().expect("top_k");
        assert_eq!(top.len(), top_k);
        // class_ids is the argmax the model server computed: its best class.
        assert_eq!(id, &top[0]["class_id"]);
        let class = id.as_u64().expect("numeric class id");
        assert!(CAT_CLASSES.contains(&class), "expected a cat class (281-287), got {class}: {v}");
        let label = top[0]["label"].as_str().expect("label");
        assert!(label.contains("cat") || label == "tabby" || label == "lynx" || label == "cougar", "{label}");
        let scores: Vec<f64> = top.iter().map(|c| c["score"].as_f64().expect("score")).collect();
        assert!(scores.windows(2).all(|w| w[0] >= w[1]), "scores best first: {scores:?}");
        assert!(scores.iter().all(|s| (0.0..=1.0).contains(s)), "{scores:?}");
        for stage in ["queue", "decode", "infer"] {
            assert!(p["timings_us"][stage].is_u64(), "{stage}");
        }
    }
    for stage in ["parse", "backend", "total"] {
        assert!(v["timings_ms"][stage].is_f64(), "{stage}: {v}");
    }
}

#[test]
fn study_format_and_raw_jpeg_on_both_routes_and_no_secure_trace_in_logs() {
    let stack = Stack::start("efficientnet-lite0", &[]);
    let (chelsea, study) = (photo("chelsea.jpg"), photo("study_cat.jpeg"));

    let mut secure_ids = Vec::new();
    for (path, backend) in [("/predict-secure/", "secure"), ("/predict-public/", "public")] {
        let r = post_images(stack.port, path, &[&chelsea, &study]);
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.header("Content-Type"), Some("application/json"));
        let timing = r.header("Server-Timing").expect("Server-Timing header");
        for stage in ["queue;dur=", "decode;dur=", "infer;dur=", "transport;dur=", "total;dur="] {
            assert!(timing.contains(stage), "{timing}");
        }
        let v = r.json();
        check_prediction(&v, backend, 2, 5);
        if backend == "secure" {
            secure_ids = v["class_ids"].as_array().unwrap().clone();
        }
    }

    // Raw JPEG body, without the trailing slash, with top_k.
    for (path, backend) in [("/predict-secure?top_k=3", "secure"), ("/predict-public?top_k=3", "public")] {
        let r = request(stack.port, "POST", path, &[("Content-Type", "image/jpeg")], Some(&study));
        assert_eq!(r.status, 200, "{}", r.text());
        check_prediction(&r.json(), backend, 1, 3);
    }

    // The same model answers both routes: same identity, same argmax.
    let a = post_images(stack.port, "/predict-secure/", &[&study]).json();
    let b = post_images(stack.port, "/predict-public/", &[&study]).json();
    assert_eq!(a["model"], b["model"]);
    assert_eq!(a["class_ids"], b["class_ids"]);

    // The parent's log: only its own line shapes, nothing of any request.
    let log = stack.parent_log();
    for needle in [&b64(&chelsea)[..64], &b64(&study)[..64], &b64(&study)[4000..4064]] {
        assert!(!log.contains(needle), "image base64 in the parent log");
    }
    for needle in ["tiger cat", "tabby", "Egyptian cat", "class_id", "top_k", "predictions", "score"] {
        assert!(!log.contains(needle), "{needle:?} in the parent log:\n{log}");
    }
    for id in &secure_ids {
        assert!(!log.contains(&format!("{id},")) && !log.contains(&format!("[{id}")), "class id {id} in the log");
    }
    check_log_shapes(&log);
}

/// Every line of the parent's log is one of its own fixed shapes; an access
/// line has exactly method, route, status, bytes and ms.
pub fn check_log_shapes(log: &str) {
    for line in log.lines() {
        if let Some(rest) = line.strip_prefix("access ") {
            let keys: Vec<&str> = rest.split(' ').map(|kv| kv.split('=').next().unwrap_or("")).collect();
            assert_eq!(keys, ["method", "route", "status", "bytes", "ms"], "{line}");
            let route = rest.split(' ').nth(1).unwrap_or("");
            assert!(
                ["route=predict_secure", "route=predict_public", "route=health", "route=ready", "route=metrics", "route=other"]
                    .contains(&route),
                "{line}"
            );
        } else {
            assert!(line.starts_with("parent: "), "unexpected log line {line:?}");
        }
    }
}
