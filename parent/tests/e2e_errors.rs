//! End to end, every error status with its JSON body, against the real model
//! server (tiny-test model, fast), plus the command line: bad flags exit 2,
//! `parent ping` fails clearly, SIGTERM exits 0. After all the bad requests
//! the parent still answers.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::json;

const JPEG_MAGIC: &[u8] = &[0xFF, 0xD8, 0xFF];

/// Asserts the status, the JSON `code`, and that `error` is a non-empty message.
fn expect(r: &Resp, status: u16, code: &str) {
    assert_eq!(r.status, status, "{}", r.text());
    let v = r.json();
    assert_eq!(v["code"], code, "{v}");
    assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()), "{v}");
    assert_eq!(r.header("Content-Type"), Some("application/json"));
}

#[test]
fn every_error_status_has_its_json_body() {
    let mut stack = Stack::start("tiny-test", &["--max-body", "200000"]);
    let port = stack.port;
    let p = "/predict-public/";
    let jpeg_header = [("Content-Type", "image/jpeg")];

    // 400
    let bad_json = request(port, "POST", p, &[("Content-Type", "application/json")], Some(b"{\"images\": [\"abc\""));
    expect(&bad_json, 400, "bad_json");
    expect(&post_json(port, p, &json!({ "imgs": [] })), 400, "missing_images");
    expect(&post_json(port, p, &json!({ "images": "x" })), 400, "images_not_array");
    expect(&post_json(port, p, &json!({ "images": [] })), 400, "empty_batch");
    expect(&post_json(port, p, &json!({ "images": [b64(JPEG_MAGIC), 7] })), 400, "image_not_string");
    expect(&post_json(port, p, &json!({ "images": ["_9j_4AAQ"] })), 400, "bad_base64");
    expect(&post_json(port, p, &json!({ "images": ["!!!!"] })), 400, "bad_base64");
    expect(&post_json(port, p, &json!({ "images": [b64(b"just some text")] })), 400, "not_an_image");
    expect(&request(port, "POST", p, &jpeg_header, Some(b"")), 400, "not_an_image");
    expect(&request(port, "POST", "/predict-public/?top_k=0", &jpeg_header, Some(&photo("chelsea.jpg"))), 400, "bad_top_k");
    expect(&request(port, "POST", "/predict-public/?top_k=101", &jpeg_header, Some(&photo("chelsea.jpg"))), 400, "bad_top_k");
    // Passes the parent's magic-byte check, fails to decode in the model server.
    let mut corrupt = JPEG_MAGIC.to_vec();
    corrupt.extend_from_slice(&[0x42; 300]);
    expect(&request(port, "POST", p, &jpeg_header, Some(&corrupt)), 400, "bad_image");

    // 404, 405 (with Allow)
    expect(&get(port, "/nope"), 404, "not_found");
    expect(&get(port, "/predict-secure/extra"), 404, "not_found");
    let r = get(port, "/predict-secure/");
    expect(&r, 405, "method_not_allowed");
    assert_eq!(r.header("Allow"), Some("POST"));
    let r = request(port, "POST", "/health", &[], Some(b""));
    expect(&r, 405, "method_not_allowed");
    assert_eq!(r.header("Allow"), Some("GET, HEAD"));

    // 411: a POST without Content-Length.
    let r = raw(port, b"POST /predict-public/ HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\nConnection: close\r\n\r\n");
    expect(&r, 411, "length_required");

    // 413: declared length over --max-body (refused before reading), a chunked
    // body that grows past it, and a batch over MAX_IMAGES.
    let big = vec![0xFFu8; 200_001];
    expect(&request(port, "POST", p, &jpeg_header, Some(&big)), 413, "body_too_large");
    let mut chunked = b"POST /predict-public/ HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n".to_vec();
    for _ in 0..5 {
        chunked.extend_from_slice(format!("{:x}\r\n", 50_000).as_bytes());
        chunked.extend_from_slice(&[0xFF; 50_000]);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    expect(&raw(port, &chunked), 413, "body_too_large");
    let many: Vec<String> = (0..65).map(|_| b64(JPEG_MAGIC)).collect();
    expect(&post_json(port, p, &json!({ "images": many })), 413, "too_many_images");

    // 415: the body's media type, and an image format other than JPEG/PNG.
    expect(&request(port, "POST", p, &[("Content-Type", "text/plain")], Some(b"hi")), 415, "unsupported_media_type");
    expect(&request(port, "POST", p, &[], Some(b"hi")), 415, "unsupported_media_type");
    expect(&post_json(port, p, &json!({ "images": [b64(b"GIF89a\x01\x00\x01\x00")] })), 415, "unsupported_format");

    // A chunked body under the limit is fine.
    let img = photo("chelsea.jpg");
    let mut ok_chunked = b"POST /predict-public/ HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n".to_vec();
    ok_chunked.extend_from_slice(format!("{:x}\r\n", img.len()).as_bytes());
    ok_chunked.extend_from_slice(&img);
    ok_chunked.extend_from_slice(b"\r\n0\r\n\r\n");
    let r = raw(port, &ok_chunked);
    assert_eq!(r.status, 200, "{}", r.text());

    // Garbage that is not HTTP at all, and a client that hangs up mid-body.
    let _ = raw(port, b"\x00\x01\x02 not http\r\n\r\n");
    {
        use std::io::Write;
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let _ = s.write_all(b"POST /predict-public/ HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\nContent-Length: 1000\r\n\r\n\xFF\xD8");
    }

    // 504: a second parent with a 1 ms backend deadline, on the same servers.
    let port2 = free_port();
    let args: Vec<String> = [
        "--listen",
        &format!("127.0.0.1:{port2}"),
        "--secure",
        &format!("unix:{}", stack.socket("secure").display()),
        "--public",
        &format!("unix:{}", stack.socket("public").display()),
        "--deadline-ms",
        "1",
        "--threads",
        "2",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let _slow = Proc::spawn("parent-1ms", &parent_bin(), &args, stack.dir.0.join("parent-1ms.log"));
    assert!(wait_until(Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", port2)).is_ok() && get(port2, "/ready").status == 200
    }));
    let png = photo("coffee.png");
    let batch: Vec<&[u8]> = (0..16).map(|_| png.as_slice()).collect();
    expect(&post_images(port2, "/predict-public/", &batch), 504, "backend_timeout");

    // Still standing: liveness, readiness and a real prediction.
    assert_eq!(get(port, "/health").json(), json!({ "status": "ok" }));
    assert_eq!(get(port, "/ready").status, 200);
    let r = post_images(port, "/predict-secure/", &[&img]);
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["model"]["name"], "tiny-test");
    assert_eq!(v["class_ids"][0], v["predictions"][0]["top_k"][0]["class_id"]);
    assert!(v["predictions"][0]["top_k"][0]["label"].as_str().is_some_and(|l| l.starts_with("class")));

    // Metrics: fixed route names, status codes, the histogram, the gauges. The in-flight gauge
    // counts this request alone once the one before has left its handler, which may be a moment
    // after its client read the answer (the handler's guard drops after the response is
    // written): asked again until then, for at most five seconds.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let text = loop {
        let m = get(port, "/metrics");
        assert_eq!(m.status, 200);
        let text = m.text();
        if text.contains("parent_http_requests_in_flight 1\n") || std::time::Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    for needle in [
        "parent_http_requests_total{route=\"predict_public\",code=\"400\"}",
        "parent_http_requests_total{route=\"predict_public\",code=\"413\"}",
        "parent_http_requests_total{route=\"other\",code=\"404\"}",
        "parent_http_requests_total{route=\"predict_secure\",code=\"200\"}",
        "parent_http_request_duration_seconds_bucket{route=\"predict_secure\",le=\"+Inf\"} 2",
        "parent_http_requests_in_flight 1",
        "parent_backend_up{backend=\"secure\"} 1",
        "parent_backend_up{backend=\"public\"} 1",
    ] {
        assert!(text.contains(needle), "{needle} missing from:\n{text}");
    }
    assert!(!text.contains("/nope"), "raw URLs must not become labels");

    // SIGTERM: a clean exit 0.
    let status = stack.parent.terminate(Duration::from_secs(10)).expect("parent exits on SIGTERM");
    assert_eq!(status.code(), Some(0), "{}", stack.parent_log());
}

#[test]
fn command_line_errors_exit_2_and_ping_fails_clearly() {
    for args in [&["--threads", "0"][..], &["--bogus"], &["--listen", "nowhere"], &["--secure", "tcp:1"], &["ping"]] {
        let out = Command::new(parent_bin()).args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.starts_with("parent: ") && err.contains("usage:"), "{err}");
    }
    let out = Command::new(parent_bin()).arg("--help").output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("--deadline-ms"));

    let dir = TempDir::new("ping");
    let sock = format!("unix:{}", dir.0.join("none.sock").display());
    let t = std::time::Instant::now();
    let out = Command::new(parent_bin()).args(["ping", &sock, "--timeout", "1"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(t.elapsed() >= Duration::from_millis(900) && t.elapsed() < Duration::from_secs(5));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("did not answer Ping within 1 s"), "{err}");
}
