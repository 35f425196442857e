//! The Open Inference Protocol V2 routes over raw HTTP, against a real parent and two real
//! model servers (tiny-test): a KServe V2 JSON inference request written by hand from the
//! spec's text, the full FP32 output in JSON and binary form and with the classification form
//! beside it, the hostile suite for the new parsing surface (each malformed request has its
//! exact status and code, in the protocol's `{"error": ...}` shape), the secure name failing
//! closed, fixed metric labels and a log with nothing of the requests.
//!
//! Needs models/tiny-test and testdata/ (`make test` prepares them).

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};

/// One BYTES element: 4-byte little-endian length, then the bytes.
fn element(bytes: &[u8]) -> Vec<u8> {
    let mut e = (bytes.len() as u32).to_le_bytes().to_vec();
    e.extend_from_slice(bytes);
    e
}

/// A binary-extension infer request: header JSON, then `tail`; the header length as given.
fn binary_request(path: &str, header: &Value, tail: &[u8], header_len: Option<&str>, ct: &str) -> Vec<u8> {
    let mut body = header.to_string().into_bytes();
    let n = body.len().to_string();
    body.extend_from_slice(tail);
    let hl = header_len.unwrap_or(&n).to_string();
    request_bytes("POST", path, &[("Content-Type", ct), ("Inference-Header-Content-Length", &hl)], Some(&body))
}

fn binary_header(shape: Value, size: usize, k: Value) -> Value {
    json!({
        "inputs": [{ "name": "image", "datatype": "BYTES", "shape": shape, "parameters": { "binary_data_size": size } }],
        "outputs": [{ "name": "probabilities", "parameters": { "classification": k, "binary_data": false } }],
    })
}

fn json_request(path: &str, v: &Value) -> Vec<u8> {
    request_bytes("POST", path, &[("Content-Type", "application/json")], Some(v.to_string().as_bytes()))
}

fn check_error(name: &str, r: &Resp, status: u16, code: &str) {
    assert_eq!(r.status, status, "{name}: {}", r.text());
    let v = r.json();
    assert_eq!(v["code"], code, "{name}: {v}");
    assert!(v["error"].as_str().is_some_and(|e| !e.is_empty() && e.len() < 600), "{name}: {v}");
}

#[test]
fn kserve_v2_json_example_hostile_suite_fail_closed_metrics_and_log() {
    let mut stack = Stack::start("tiny-test", &[]);
    let port = stack.port;
    let model = get(port, "/ready").json()["backends"]["secure"]["model"]["name"].as_str().expect("model name").to_string();
    let (sec, publ) = (format!("{model}-secure"), format!("{model}-public"));
    let infer_s = format!("/v2/models/{sec}/infer");
    let infer_p = format!("/v2/models/{publ}/infer");
    let jpeg = photo("chelsea.jpg");
    let png = photo("chelsea.png");

    // Written by hand from the KServe V2 spec's "Inference Request JSON Object" text (BYTES
    // data as strings, base64 as the input's content_type parameter says), sent as raw HTTP.
    let example = format!(
        r#"{{
  "id" : "42",
  "inputs" : [
    {{
      "name" : "image",
      "shape" : [ 2 ],
      "datatype" : "BYTES",
      "parameters" : {{ "content_type" : "base64" }},
      "data" : [ "{}", "{}" ]
    }}
  ],
  "outputs" : [
    {{
      "name" : "probabilities",
      "parameters" : {{ "classification" : 3 }}
    }}
  ]
}}"#,
        b64(&jpeg),
        b64(&png)
    );
    for name in [&sec, &publ] {
        let r = request(port, "POST", &format!("/v2/models/{name}/infer"), &[("Content-Type", "application/json")], Some(example.as_bytes()));
        assert_eq!(r.status, 200, "{}", r.text());
        let v = r.json();
        assert_eq!((v["model_name"].as_str(), v["model_version"].as_str(), v["id"].as_str()), (Some(&name[..]), Some("1"), Some("42")));
        let out = &v["outputs"][0];
        assert_eq!((out["name"].as_str(), out["datatype"].as_str()), (Some("probabilities"), Some("BYTES")));
        assert_eq!(out["shape"], json!([2, 3]));
        let data = out["data"].as_array().expect("data");
        assert_eq!(data.len(), 6);
        for s in data {
            let parts: Vec<&str> = s.as_str().expect("string").splitn(3, ':').collect();
            assert!(parts.len() >= 2 && parts[0].parse::<f32>().is_ok() && parts[1].parse::<u32>().is_ok(), "{s}");
        }
    }
    // The same request in binary form, answered in binary form.
    let tail = [element(&jpeg), element(&png)].concat();
    let header = json!({
        "inputs": [{ "name": "image", "datatype": "BYTES", "shape": [2, 1], "parameters": { "binary_data_size": tail.len() } }],
        "outputs": [{ "name": "probabilities", "parameters": { "classification": 2, "binary_data": true } }],
    });
    let r = raw(port, &binary_request(&infer_p, &header, &tail, None, "application/octet-stream"));
    assert_eq!(r.status, 200, "{}", r.text());
    let hl: usize = r.header("Inference-Header-Content-Length").expect("header length").parse().unwrap();
    let head: Value = serde_json::from_slice(&r.body[..hl]).unwrap();
    assert_eq!(head["outputs"][0]["shape"], json!([2, 2]));
    assert_eq!(head["outputs"][0]["parameters"]["binary_data_size"], r.body.len() - hl);

    // The full FP32 output, [N, num_classes]: in JSON (a request without outputs asks for all
    // outputs in full), in binary form (little-endian f32 after the header), and beside the
    // classification form in one request. Rows are softmax probabilities in class order.
    let classes = get(port, &format!("/v2/models/{sec}")).json()["outputs"][0]["shape"][1].as_u64().expect("num_classes") as usize;
    assert_eq!(classes, 10, "tiny-test's classes");
    let b64_input = json!({ "name": "image", "datatype": "BYTES", "shape": [2], "parameters": { "content_type": "base64" }, "data": [b64(&jpeg), b64(&png)] });
    for name in [&sec, &publ] {
        let path = format!("/v2/models/{name}/infer");
        let r = raw(port, &json_request(&path, &json!({ "id": "f", "inputs": [b64_input] })));
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.header("Content-Type"), Some("application/json"));
        let v = r.json();
        assert_eq!(v["outputs"].as_array().map(Vec::len), Some(1), "{v}");
        let out = &v["outputs"][0];
        assert_eq!((out["name"].as_str(), out["datatype"].as_str(), v["id"].as_str()), (Some("probabilities"), Some("FP32"), Some("f")));
        assert_eq!(out["shape"], json!([2, classes]));
        let json_rows: Vec<f32> = out["data"].as_array().expect("data").iter().map(|x| x.as_f64().expect("a number") as f32).collect();
        assert_eq!(json_rows.len(), 2 * classes);

        // Both forms at once: the full output in binary form, the classification in JSON.
        let tail = [element(&jpeg), element(&png)].concat();
        let header = json!({
            "inputs": [{ "name": "image", "datatype": "BYTES", "shape": [2], "parameters": { "binary_data_size": tail.len() } }],
            "outputs": [
                { "name": "probabilities", "parameters": { "binary_data": true } },
                { "name": "probabilities", "parameters": { "classification": classes + 5, "binary_data": false } },
            ],
        });
        let r = raw(port, &binary_request(&path, &header, &tail, None, "application/octet-stream"));
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.header("Content-Type"), Some("application/octet-stream"));
        let hl: usize = r.header("Inference-Header-Content-Length").expect("header length").parse().unwrap();
        let head: Value = serde_json::from_slice(&r.body[..hl]).unwrap();
        let (full, class) = (&head["outputs"][0], &head["outputs"][1]);
        assert_eq!((full["datatype"].as_str(), &full["shape"]), (Some("FP32"), &json!([2, classes])));
        assert_eq!(full["parameters"]["binary_data_size"], 2 * classes * 4);
        assert_eq!(r.body.len() - hl, 2 * classes * 4);
        let rows: Vec<f32> = r.body[hl..].chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();
        assert_eq!(rows, json_rows, "the binary and JSON forms differ");
        // classification k over the classes: every class, best first.
        assert_eq!((class["datatype"].as_str(), &class["shape"]), (Some("BYTES"), &json!([2, classes])));
        for (i, row) in rows.chunks_exact(classes).enumerate() {
            let sum: f32 = row.iter().sum();
            assert!((sum - 1.0).abs() < 1e-4, "row {i} sums to {sum}");
            assert!(row.iter().all(|p| (0.0..=1.0).contains(p)), "{row:?}");
            let strings: Vec<&str> = class["data"].as_array().unwrap()[i * classes..(i + 1) * classes].iter().map(|s| s.as_str().unwrap()).collect();
            for (rank, s) in strings.iter().enumerate() {
                let mut parts = s.splitn(3, ':');
                let score: f32 = parts.next().unwrap().parse().unwrap();
                let id: usize = parts.next().unwrap().parse().unwrap();
                assert!((row[id] - score).abs() < 1e-6, "{s} against {}", row[id]);
                if rank == 0 {
                    let best = row.iter().copied().fold(f32::MIN, f32::max);
                    assert_eq!(row[id], best, "top-1 {s} is not the argmax of {row:?}");
                }
            }
        }
    }

    // Metadata and readiness.
    assert_eq!(get(port, "/v2").json()["extensions"], json!(["classification", "binary_tensor_data"]));
    assert_eq!(get(port, "/v2/health/live").status, 200);
    assert_eq!(get(port, "/v2/health/ready").status, 200);
    let md = get(port, &format!("/v2/models/{sec}/versions/1")).json();
    assert_eq!(md["inputs"], json!([{ "name": "image", "datatype": "BYTES", "shape": [-1] }]));
    assert_eq!(get(port, &format!("/v2/models/{publ}/ready")).status, 200);

    // The hostile suite: each malformed request, its status and code.
    let ok_tail = element(&jpeg);
    let ok_header = binary_header(json!([1]), ok_tail.len(), json!(5));
    let input = |extra: Value| {
        let mut i = json!({ "name": "image", "datatype": "BYTES", "shape": [1], "parameters": { "content_type": "base64" }, "data": [b64(&jpeg)] });
        for (k, v) in extra.as_object().unwrap() {
            i[k] = v.clone();
        }
        i
    };
    let outputs = json!([{ "name": "probabilities", "parameters": { "classification": 5 } }]);
    let mut cut_len = ok_tail.clone();
    cut_len[0..4].copy_from_slice(&(u32::MAX).to_le_bytes());
    let sixty_five: Vec<u8> = (0..65).flat_map(|_| element(&jpeg[..64])).collect();
    let zeros = format!("{{\"inputs\": [{}]}}", vec!["0"; 200_000].join(","));
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        ("unknown model", json_request("/v2/models/made-up-model-secure/infer", &json!({})), 404, "model_not_found"),
        ("no privacy suffix", json_request(&format!("/v2/models/{model}/infer"), &json!({})), 404, "model_not_found"),
        ("unknown model metadata", request_bytes("GET", "/v2/models/made-up-public", &[], None), 404, "model_not_found"),
        ("unknown model ready", request_bytes("GET", "/v2/models/made-up-secure/ready", &[], None), 404, "model_not_found"),
        ("unknown version", json_request(&format!("/v2/models/{sec}/versions/7/infer"), &json!({})), 404, "version_not_found"),
        ("unknown v2 path", request_bytes("GET", "/v2/models/x/explain", &[], None), 404, "not_found"),
        ("GET infer", request_bytes("GET", &infer_s, &[], None), 405, "method_not_allowed"),
        ("POST live", request_bytes("POST", "/v2/health/live", &[], Some(b"")), 405, "method_not_allowed"),
        ("no Content-Length", request_bytes("POST", &infer_s, &[("Content-Type", "application/json")], None), 411, "length_required"),
        (
            "body over the limit (declared)",
            format!("POST {infer_s} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 17000000\r\n\r\n").into_bytes(),
            413,
            "body_too_large",
        ),
        ("gzip", request_bytes("POST", &infer_s, &[("Content-Encoding", "gzip")], Some(b"x")), 415, "unsupported_content_encoding"),
        ("text/plain", request_bytes("POST", &infer_s, &[("Content-Type", "text/plain")], Some(b"x")), 415, "unsupported_media_type"),
        ("header length not digits", binary_request(&infer_s, &ok_header, &ok_tail, Some("12abc"), "application/octet-stream"), 400, "bad_header_length"),
        ("header length negative", binary_request(&infer_s, &ok_header, &ok_tail, Some("-1"), "application/octet-stream"), 400, "bad_header_length"),
        ("header length past the body", binary_request(&infer_s, &ok_header, &ok_tail, Some("99999"), "application/octet-stream"), 400, "bad_header_length"),
        ("header length overflows", binary_request(&infer_s, &ok_header, &ok_tail, Some("184467440737095516160"), "application/octet-stream"), 400, "bad_header_length"),
        ("header length cuts the JSON", binary_request(&infer_s, &ok_header, &ok_tail, Some("10"), "application/octet-stream"), 400, "bad_json"),
        ("octet-stream without header length", request_bytes("POST", &infer_s, &[("Content-Type", "application/octet-stream")], Some(b"{}")), 400, "bad_header_length"),
        ("binary size not the tail's", binary_request(&infer_s, &binary_header(json!([1]), ok_tail.len() - 1, json!(5)), &ok_tail, None, ""), 400, "bad_binary_data"),
        ("element length past the end", binary_request(&infer_s, &binary_header(json!([1]), cut_len.len(), json!(5)), &cut_len, None, ""), 400, "bad_binary_data"),
        ("element length cut short", binary_request(&infer_s, &binary_header(json!([1]), 3, json!(5)), &[1, 0, 0], None, ""), 400, "bad_binary_data"),
        ("count is not the shape's", binary_request(&infer_s, &binary_header(json!([2]), ok_tail.len(), json!(5)), &ok_tail, None, ""), 400, "bad_shape"),
        ("shape [65]", binary_request(&infer_s, &binary_header(json!([65]), sixty_five.len(), json!(5)), &sixty_five, None, ""), 413, "too_many_images"),
        ("shape [1, 3, 224, 224]", binary_request(&infer_s, &binary_header(json!([1, 3, 224, 224]), ok_tail.len(), json!(5)), &ok_tail, None, ""), 400, "bad_shape"),
        ("shape [0]", binary_request(&infer_s, &binary_header(json!([0]), 0, json!(5)), &[], None, ""), 400, "empty_batch"),
        ("binary data nobody claims", binary_request(&infer_s, &json!({ "inputs": [input(json!({}))], "outputs": outputs }), b"xx", None, ""), 400, "bad_binary_data"),
        ("classification 101", binary_request(&infer_s, &binary_header(json!([1]), ok_tail.len(), json!(101)), &ok_tail, None, ""), 400, "bad_classification"),
        ("classification a string", binary_request(&infer_s, &binary_header(json!([1]), ok_tail.len(), json!("5")), &ok_tail, None, ""), 400, "bad_classification"),
        ("not an image", binary_request(&infer_s, &binary_header(json!([1]), 9, json!(5)), &element(b"hello"), None, ""), 400, "not_an_image"),
        ("GIF", binary_request(&infer_s, &binary_header(json!([1]), 14, json!(5)), &element(b"GIF89a...."), None, ""), 415, "unsupported_format"),
        ("the full output twice", json_request(&infer_s, &json!({ "inputs": [input(json!({}))], "outputs": [{ "name": "probabilities" }, { "name": "probabilities" }] })), 400, "bad_outputs"),
        ("the classification twice", json_request(&infer_s, &json!({ "inputs": [input(json!({}))], "outputs": [outputs[0], outputs[0]] })), 400, "bad_outputs"),
        (
            "both forms binary",
            json_request(&infer_s, &json!({ "inputs": [input(json!({}))], "parameters": { "binary_data_output": true }, "outputs": [{ "name": "probabilities" }, outputs[0]] })),
            400,
            "bad_outputs",
        ),
        ("three outputs", json_request(&infer_s, &json!({ "inputs": [input(json!({}))], "outputs": [{ "name": "probabilities" }, outputs[0], outputs[0]] })), 400, "bad_outputs"),
        ("outputs not an array", json_request(&infer_s, &json!({ "inputs": [input(json!({}))], "outputs": { "name": "probabilities" } })), 400, "bad_outputs"),
        ("FP32 input tensor", json_request(&infer_s, &json!({ "inputs": [input(json!({ "datatype": "FP32", "data": [0.5] }))], "outputs": outputs })), 400, "unsupported_datatype"),
        ("BYTES as plain strings", json_request(&infer_s, &json!({ "inputs": [input(json!({ "parameters": {} }))], "outputs": outputs })), 400, "bytes_not_base64"),
        ("bad base64", json_request(&infer_s, &json!({ "inputs": [input(json!({ "data": ["@@@@"] }))], "outputs": outputs })), 400, "bad_base64"),
        ("nested data", json_request(&infer_s, &json!({ "inputs": [input(json!({ "data": [[b64(&jpeg)]] }))], "outputs": outputs })), 400, "bad_inputs"),
        ("unknown input", json_request(&infer_s, &json!({ "inputs": [input(json!({ "name": "pixels" }))], "outputs": outputs })), 400, "unknown_input"),
        ("two inputs", json_request(&infer_s, &json!({ "inputs": [input(json!({})), input(json!({}))], "outputs": outputs })), 400, "bad_inputs"),
        ("unknown output", json_request(&infer_s, &json!({ "inputs": [input(json!({}))], "outputs": [{ "name": "logits" }] })), 400, "unknown_output"),
        ("no inputs", json_request(&infer_s, &json!({ "outputs": outputs })), 400, "missing_inputs"),
        ("id not a string", json_request(&infer_s, &json!({ "id": 7, "inputs": [input(json!({}))], "outputs": outputs })), 400, "bad_id"),
        ("id too long", json_request(&infer_s, &json!({ "id": "x".repeat(300), "inputs": [input(json!({}))], "outputs": outputs })), 400, "bad_id"),
        ("not JSON", request_bytes("POST", &infer_s, &[("Content-Type", "application/json")], Some(b"{nope")), 400, "bad_json"),
        ("duplicate field", request_bytes("POST", &infer_s, &[], Some(b"{\"inputs\": [], \"inputs\": []}")), 400, "bad_json"),
        ("deep nesting", request_bytes("POST", &infer_s, &[], Some("[".repeat(100_000).as_bytes())), 400, "bad_json"),
        ("200,000 zeros", request_bytes("POST", &infer_s, &[], Some(zeros.as_bytes())), 413, "too_many_json_values"),
    ];
    for round in 0..2 {
        for (name, bytes, status, code) in &cases {
            let r = raw(port, bytes);
            check_error(&format!("round {round}: {name}"), &r, *status, code);
        }
    }

    // The metric labels come from the fixed set, whatever name the client made up.
    let metrics = get(port, "/metrics").text();
    for line in metrics.lines().filter(|l| l.starts_with("parent_http_requests_total{")) {
        let route = line.split("route=\"").nth(1).and_then(|r| r.split('"').next()).unwrap_or("");
        assert!(
            ["predict_secure", "predict_public", "health", "ready", "metrics", "v2_health", "v2_metadata", "v2_infer_secure", "v2_infer_public", "other"]
                .contains(&route),
            "{line}"
        );
    }
    assert!(metrics.contains("route=\"v2_infer_secure\",code=\"200\""), "{metrics}");
    assert!(metrics.contains("route=\"v2_infer_public\",code=\"200\""), "{metrics}");
    assert!(!metrics.contains("made-up") && !metrics.contains(&sec), "a model name in /metrics");

    // Fail closed: without the enclave, `-secure` is 503 (never the public server), `-public` answers.
    stack.kill_secure();
    let r = raw(port, &json_request(&infer_s, &json!({ "inputs": [input(json!({}))], "outputs": outputs })));
    check_error("secure down", &r, 503, "backend_unavailable");
    assert_eq!(r.header("Retry-After"), Some("1"));
    let r = raw(port, &json_request(&infer_p, &json!({ "inputs": [input(json!({}))], "outputs": outputs })));
    assert_eq!(r.status, 200, "{}", r.text());
    let ready_s = format!("/v2/models/{sec}/ready");
    let ok = wait_until(Duration::from_secs(5), || get(port, &ready_s).status == 400);
    assert!(ok, "{:?}", get(port, &ready_s));
    assert_eq!(get(port, "/v2/health/ready").status, 400);
    assert_eq!(get(port, &format!("/v2/models/{publ}/ready")).status, 200);

    // The log: nothing of any request, no model name, only fixed route names.
    let log = stack.parent_log();
    for needle in ["made-up", &sec[..], &publ[..], "probabilities", "\"42\"", &b64(&jpeg)[..64], "tiger cat"] {
        assert!(!log.contains(needle), "{needle:?} in the parent log:\n{log}");
    }
    for line in log.lines() {
        assert!(line.starts_with("access ") || line.starts_with("parent: "), "unexpected log line {line:?}");
    }
}

fn vm_hwm_kb(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).expect("VmHWM");
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// One 11.9 MiB "image" (JPEG magic, then bytes the model server refuses), in binary form (an
/// 11.9 MiB body) and in JSON form (base64: 15.9 MiB, just under the limit): the parent's peak RSS
/// grows by less than 3 times the body in binary form (body, the image's copy) and 3.5 times in
/// JSON form (body, the header's copy of the base64, the decoded image). Measured: 2.0 and 2.8;
/// the margin is for allocators other than this machine's glibc.
#[test]
fn a_body_at_the_limit_costs_a_bounded_multiple_of_itself() {
    let mut image = vec![0x5Au8; 11_900_000];
    image[..3].copy_from_slice(&[0xFF, 0xD8, 0xFF]);
    let outputs = json!([{ "name": "probabilities", "parameters": { "classification": 5 } }]);
    let json_header = json!({
        "inputs": [{ "name": "image", "datatype": "BYTES", "shape": [1], "parameters": { "content_type": "base64" }, "data": [b64(&image)] }],
        "outputs": outputs,
    });
    let tail = element(&image);
    let binary_header = json!({
        "inputs": [{ "name": "image", "datatype": "BYTES", "shape": [1], "parameters": { "binary_data_size": tail.len() } }],
        "outputs": outputs,
    });
    // A fresh parent for each form: VmHWM only grows, and freed memory stays in the arena of the
    // handler thread that used it.
    for (form, limit_halves) in [("binary", 6u64), ("JSON", 7)] {
        let stack = Stack::start("tiny-test", &[]);
        let model = get(stack.port, "/ready").json()["backends"]["public"]["model"]["name"].as_str().unwrap().to_string();
        let path = format!("/v2/models/{model}-public/infer");
        let request = if form == "JSON" {
            json_request(&path, &json_header)
        } else {
            binary_request(&path, &binary_header, &tail, None, "application/octet-stream")
        };
        let body_kb = (request.len() / 1024) as u64;
        let pid = stack.parent.pid();
        let before = vm_hwm_kb(pid);
        let r = raw(stack.port, &request);
        check_error(form, &r, 400, "bad_image");
        let after = vm_hwm_kb(pid);
        println!("{form} form, {body_kb} kB body: parent VmHWM {before} kB -> {after} kB");
        assert!(after < before + limit_halves * body_kb / 2, "{form} form: VmHWM {before} kB -> {after} kB for a {body_kb} kB body");
    }
}
