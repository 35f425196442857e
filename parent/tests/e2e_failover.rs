//! The secure route fails closed: with the enclave's model server killed,
//! `/ready` turns 503, secure requests get 503 (never an answer from the
//! public backend), the public route keeps working; once the secure server is
//! restarted, the parent reconnects by itself and everything is back. The
//! parent's log holds no trace of the secure requests.

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;

fn ready(port: u16) -> (u16, Value) {
    let r = get(port, "/ready");
    (r.status, r.json())
}

#[test]
fn secure_route_fails_closed_and_recovers_without_a_parent_restart() {
    let mut stack = Stack::start("tiny-test", &[]);
    let port = stack.port;
    let img = photo("chelsea.jpg");

    let (status, v) = ready(port);
    assert_eq!(status, 200);
    assert_eq!(v["ready"], true);
    assert_eq!(v["backends"]["secure"]["up"], true);
    assert_eq!(v["backends"]["secure"]["model"]["name"], "tiny-test");
    let r = post_images(port, "/predict-secure/", &[&img]);
    assert_eq!((r.status, r.json()["backend"].clone()), (200, Value::from("secure")));
    let secure_result = r.json();

    stack.kill_secure();

    // Readiness flips within a few checker periods.
    assert!(
        wait_until(Duration::from_secs(5), || ready(port).0 == 503),
        "/ready did not turn 503 after the secure server died"
    );
    let (status, v) = ready(port);
    assert_eq!(status, 503);
    assert_eq!(v["ready"], false);
    assert_eq!(v["backends"]["secure"]["up"], false);
    assert_eq!(v["backends"]["public"]["up"], true);

    // Secure requests: 503 with Retry-After, never a result; public unaffected.
    for _ in 0..5 {
        let r = post_images(port, "/predict-secure/", &[&img]);
        assert_eq!(r.status, 503, "{}", r.text());
        assert_eq!(r.header("Retry-After"), Some("1"));
        let v = r.json();
        assert_eq!(v["code"], "backend_unavailable");
        assert!(v.get("class_ids").is_none() && v.get("backend").is_none(), "{v}");
        let p = post_images(port, "/predict-public/", &[&img]);
        assert_eq!(p.status, 200, "{}", p.text());
        assert_eq!(p.json()["backend"], "public");
    }
    let raw = request(port, "POST", "/predict-secure", &[("Content-Type", "image/jpeg")], Some(&img));
    assert_eq!(raw.status, 503);
    let metrics = get(port, "/metrics").text();
    assert!(metrics.contains("parent_backend_up{backend=\"secure\"} 0"), "{metrics}");
    assert!(metrics.contains("parent_http_requests_total{route=\"predict_secure\",code=\"503\"} 6"), "{metrics}");

    // Back: the parent reconnects by itself.
    stack.restart_secure();
    assert!(wait_until(Duration::from_secs(10), || ready(port).0 == 200), "/ready did not recover");
    let r = post_images(port, "/predict-secure/", &[&img]);
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["backend"], "secure");
    assert_eq!(v["class_ids"], secure_result["class_ids"]);

    // Nothing of the secure requests in the parent's log.
    let log = stack.parent.log_once(|log| log.contains("access method=POST route=predict_secure status=503"));
    assert!(!log.contains(&b64(&img)[..64]), "image base64 in the parent log");
    for needle in ["class", "top_k", "score", "label"] {
        assert!(!log.contains(needle), "{needle:?} in the parent log:\n{log}");
    }
    assert!(log.contains("parent: secure backend") && log.contains("is down"), "{log}");
    assert!(log.contains("access method=POST route=predict_secure status=503"), "{log}");
    // One seed for the first enclave, one for the restarted one.
    assert_eq!(log.matches("parent: sent a 64-byte entropy seed to the secure backend").count(), 2, "{log}");
    assert!(!log.contains("seed to the public backend"));
}
