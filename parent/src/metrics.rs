//! Prometheus metrics of the parent, rendered as text at `/metrics`.
//!
//! What it counts: requests by route and status, a latency histogram by
//! route, requests in flight, and whether each backend is up. Sealed requests
//! and attestation requests are routes of their own (`sealed`, `attestation`,
//! and `ohttp_keys` for the key configurations), so they are counted by status
//! like every other route, and nothing else of them is.
//!
//! Why it is built this way: label values come only from fixed sets (the
//! [`Route`] names, the status codes the parent itself produces, the two
//! backend names), never from the request, so a client cannot grow the
//! metric set (no raw URLs, no client-chosen strings). Counters are atomics
//! in fixed arrays; only the status-code map takes a lock, and it holds at
//! most routes x statuses entries.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Every route the parent knows; anything else is `Other`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Route {
    PredictSecure,
    PredictPublic,
    Health,
    Ready,
    Metrics,
    /// `/v2/health/*` (Open Inference Protocol V2, [`crate::v2`]).
    V2Health,
    /// `/v2`, `/v2/models/{name}` and `/v2/models/{name}/ready`, whatever the name.
    V2Metadata,
    /// `/v2/models/{name}/infer` with a name ending in `-secure`.
    V2InferSecure,
    /// `/v2/models/{name}/infer` with a name ending in `-public`.
    V2InferPublic,
    /// `/attestation` (docs/SEALED.md).
    Attestation,
    /// `/.well-known/ohttp-gateway`, except a POST to it.
    OhttpKeys,
    /// A sealed request: a POST to `/.well-known/ohttp-gateway`, or to
    /// `/predict-secure/` with `Content-Type: message/ohttp-req`.
    Sealed,
    Other,
}

impl Route {
    pub const ALL: [Route; 13] = [
        Route::PredictSecure,
        Route::PredictPublic,
        Route::Health,
        Route::Ready,
        Route::Metrics,
        Route::V2Health,
        Route::V2Metadata,
        Route::V2InferSecure,
        Route::V2InferPublic,
        Route::Attestation,
        Route::OhttpKeys,
        Route::Sealed,
        Route::Other,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Route::PredictSecure => "predict_secure",
            Route::PredictPublic => "predict_public",
            Route::Health => "health",
            Route::Ready => "ready",
            Route::Metrics => "metrics",
            Route::V2Health => "v2_health",
            Route::V2Metadata => "v2_metadata",
            Route::V2InferSecure => "v2_infer_secure",
            Route::V2InferPublic => "v2_infer_public",
            Route::Attestation => "attestation",
            Route::OhttpKeys => "ohttp_keys",
            Route::Sealed => "sealed",
            Route::Other => "other",
        }
    }

    fn index(self) -> usize {
        self as usize
    }

    /// The route of a request path (the query string already removed).
    pub fn of_path(path: &str) -> Route {
        match path {
            "/predict-secure/" | "/predict-secure" => Route::PredictSecure,
            "/predict-public/" | "/predict-public" => Route::PredictPublic,
            "/health" => Route::Health,
            "/ready" => Route::Ready,
            "/metrics" => Route::Metrics,
            "/attestation" => Route::Attestation,
            OHTTP_GATEWAY => Route::OhttpKeys,
            p if p == "/v2" || p.starts_with("/v2/") => crate::v2::route_of(p),
            _ => Route::Other,
        }
    }

    /// The route of a request: its path's ([`Route::of_path`]), except that a
    /// sealed request is [`Route::Sealed`] whichever of its two paths it came to.
    pub fn of_request(is_post: bool, path: &str, content_type: Option<&str>) -> Route {
        match Route::of_path(path) {
            Route::OhttpKeys if is_post => Route::Sealed,
            Route::PredictSecure if is_post && crate::api::is_sealed_request(content_type) => Route::Sealed,
            route => route,
        }
    }
}

/// The path of the Oblivious HTTP gateway (RFC 9540's well-known name).
pub const OHTTP_GATEWAY: &str = "/.well-known/ohttp-gateway";

/// Upper bounds of the latency buckets, in seconds: from a cache-warm tiny
/// model (~1 ms) to the default backend deadline (30 s).
pub const BUCKETS: [f64; 14] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

struct Histogram {
    /// One count per bucket (not cumulative), then +Inf.
    counts: [AtomicU64; BUCKETS.len() + 1],
    sum_us: AtomicU64,
}

impl Histogram {
    fn new() -> Self {
        Histogram { counts: std::array::from_fn(|_| AtomicU64::new(0)), sum_us: AtomicU64::new(0) }
    }

    fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let slot = BUCKETS.iter().position(|&b| secs <= b).unwrap_or(BUCKETS.len());
        self.counts[slot].fetch_add(1, Ordering::Relaxed);
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
    }
}

pub struct Metrics {
    requests: Mutex<BTreeMap<(Route, u16), u64>>,
    latency: [Histogram; Route::ALL.len()],
    in_flight: AtomicI64,
    /// Times tiny_http's accept loop stopped and was started again.
    accept_restarts: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Decrements the in-flight gauge when the request is done, however it ends.
pub struct InFlight<'a>(&'a Metrics);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Metrics {
    pub fn new() -> Self {
        Metrics {
            requests: Mutex::new(BTreeMap::new()),
            latency: std::array::from_fn(|_| Histogram::new()),
            in_flight: AtomicI64::new(0),
            accept_restarts: AtomicU64::new(0),
        }
    }

    pub fn start(&self) -> InFlight<'_> {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self)
    }

    pub fn observe(&self, route: Route, status: u16, elapsed: Duration) {
        {
            let mut map = match self.requests.lock() {
                Ok(g) => g,
                Err(p) => p.into_inner(),
            };
            *map.entry((route, status)).or_insert(0) += 1;
        }
        self.latency[route.index()].observe(elapsed);
    }

    /// Counts a restart of the accept loop.
    pub fn accept_restarted(&self) {
        self.accept_restarts.fetch_add(1, Ordering::Relaxed);
    }

    /// The exposition text. `backends` is (name, up) for each backend.
    pub fn render(&self, backends: &[(&str, bool)]) -> String {
        let mut out = String::new();
        out.push_str("# HELP parent_http_requests_total HTTP requests answered, by route and status code.\n");
        out.push_str("# TYPE parent_http_requests_total counter\n");
        {
            let map = match self.requests.lock() {
                Ok(g) => g,
                Err(p) => p.into_inner(),
            };
            for ((route, status), n) in map.iter() {
                let _ = writeln!(out, "parent_http_requests_total{{route=\"{}\",code=\"{status}\"}} {n}", route.name());
            }
        }
        out.push_str("# HELP parent_http_request_duration_seconds Time from request to reply, by route.\n");
        out.push_str("# TYPE parent_http_request_duration_seconds histogram\n");
        for route in Route::ALL {
            let h = &self.latency[route.index()];
            let mut cumulative = 0u64;
            for (i, b) in BUCKETS.iter().enumerate() {
                cumulative += h.counts[i].load(Ordering::Relaxed);
                let _ = writeln!(
                    out,
                    "parent_http_request_duration_seconds_bucket{{route=\"{}\",le=\"{b}\"}} {cumulative}",
                    route.name()
                );
            }
            cumulative += h.counts[BUCKETS.len()].load(Ordering::Relaxed);
            let name = route.name();
            let sum = h.sum_us.load(Ordering::Relaxed) as f64 / 1e6;
            let _ = writeln!(out, "parent_http_request_duration_seconds_bucket{{route=\"{name}\",le=\"+Inf\"}} {cumulative}");
            let _ = writeln!(out, "parent_http_request_duration_seconds_sum{{route=\"{name}\"}} {sum}");
            let _ = writeln!(out, "parent_http_request_duration_seconds_count{{route=\"{name}\"}} {cumulative}");
        }
        out.push_str("# HELP parent_http_requests_in_flight HTTP requests being handled now.\n");
        out.push_str("# TYPE parent_http_requests_in_flight gauge\n");
        let _ = writeln!(out, "parent_http_requests_in_flight {}", self.in_flight.load(Ordering::Relaxed));
        out.push_str("# HELP parent_http_accept_restarts_total Times the HTTP accept loop stopped and was restarted.\n");
        out.push_str("# TYPE parent_http_accept_restarts_total counter\n");
        let _ = writeln!(out, "parent_http_accept_restarts_total {}", self.accept_restarts.load(Ordering::Relaxed));
        out.push_str("# HELP parent_backend_up Whether the backend answered its last check (1) or not (0).\n");
        out.push_str("# TYPE parent_backend_up gauge\n");
        for (name, up) in backends {
            let _ = writeln!(out, "parent_backend_up{{backend=\"{name}\"}} {}", u8::from(*up));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_come_from_a_fixed_set() {
        assert_eq!(Route::of_path("/predict-secure/"), Route::PredictSecure);
        assert_eq!(Route::of_path("/predict-secure"), Route::PredictSecure);
        assert_eq!(Route::of_path("/predict-public"), Route::PredictPublic);
        assert_eq!(Route::of_path("/metrics"), Route::Metrics);
        assert_eq!(Route::of_path("/predict-secure//"), Route::Other);
        assert_eq!(Route::of_path("/etc/passwd"), Route::Other);
        // OIP V2: the route comes from the path's shape and the name's suffix, never the name.
        assert_eq!(Route::of_path("/v2/models/made-up-secure/infer"), Route::V2InferSecure);
        assert_eq!(Route::of_path("/v2/models/made-up-public/versions/1/infer"), Route::V2InferPublic);
        assert_eq!(Route::of_path("/v2/models/made-up/ready"), Route::V2Metadata);
        assert_eq!(Route::of_path("/v2/health/live"), Route::V2Health);
        assert_eq!(Route::of_path("/v2/models/x/explain"), Route::Other);
        // Sealed requests and attestation.
        assert_eq!(Route::of_path("/attestation"), Route::Attestation);
        assert_eq!(Route::of_path("/attestation/"), Route::Other);
        assert_eq!(Route::of_request(false, "/.well-known/ohttp-gateway", None), Route::OhttpKeys);
        assert_eq!(Route::of_request(true, "/.well-known/ohttp-gateway", Some("text/plain")), Route::Sealed);
        assert_eq!(Route::of_request(true, "/predict-secure/", Some("message/ohttp-req")), Route::Sealed);
        assert_eq!(Route::of_request(true, "/predict-secure", Some("image/jpeg")), Route::PredictSecure);
        assert_eq!(Route::of_request(false, "/predict-secure/", Some("message/ohttp-req")), Route::PredictSecure);
        assert_eq!(Route::of_request(true, "/predict-public/", Some("message/ohttp-req")), Route::PredictPublic);
    }

    #[test]
    fn renders_counters_histogram_and_gauges() {
        let m = Metrics::new();
        {
            let _g = m.start();
            assert!(m.render(&[]).contains("parent_http_requests_in_flight 1\n"));
        }
        m.observe(Route::PredictPublic, 200, Duration::from_millis(30));
        m.observe(Route::PredictPublic, 200, Duration::from_millis(3));
        m.observe(Route::Other, 404, Duration::from_secs(100));
        let text = m.render(&[("secure", false), ("public", true)]);
        assert!(text.contains("parent_http_requests_total{route=\"predict_public\",code=\"200\"} 2\n"));
        assert!(text.contains("parent_http_requests_total{route=\"other\",code=\"404\"} 1\n"));
        assert!(text.contains("parent_http_request_duration_seconds_bucket{route=\"predict_public\",le=\"0.005\"} 1\n"));
        assert!(text.contains("parent_http_request_duration_seconds_bucket{route=\"predict_public\",le=\"0.05\"} 2\n"));
        assert!(text.contains("parent_http_request_duration_seconds_bucket{route=\"other\",le=\"30\"} 0\n"));
        assert!(text.contains("parent_http_request_duration_seconds_bucket{route=\"other\",le=\"+Inf\"} 1\n"));
        assert!(text.contains("parent_http_request_duration_seconds_count{route=\"predict_public\"} 2\n"));
        assert!(text.contains("parent_http_requests_in_flight 0\n"));
        assert!(text.contains("parent_backend_up{backend=\"secure\"} 0\n"));
        assert!(text.contains("parent_backend_up{backend=\"public\"} 1\n"));
    }
}
