//! Channel throughput (the study's Fig. 2, right): our framed protocol over
//! the model server's transport against a raw socket copy of the same sizes
//! on the same transport.
//!
//! What exactly is measured, per message size n:
//! - framed: one connection to a running model server; each round sends one
//!   `Infer` frame carrying one "image" of n zero bytes and waits for the
//!   reply. The server reads the 16-byte header, checks the length, reads the
//!   body into a fresh buffer, decodes it (copying the image out), queues it
//!   for a worker, whose signature check refuses it at once, and answers a
//!   small `Error` frame. So this is the model server's whole ingest path for
//!   an image of n bytes, round trip included, minus decoding and inference.
//! - raw: the same client pattern (n bytes out, a 16-byte answer back) against
//!   a sink thread in this process on a Unix socket of its own, reading into
//!   a reused buffer: the transport alone.
//!
//! Throughput is n x rounds / elapsed, in payload bytes (headers not
//! counted), after two warm-up rounds. The ratio framed / raw says what the
//! protocol costs. Nitro's vsock cannot be measured here; on an instance the
//! same code runs against `vsock:CID:PORT`.

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use shared::frame::{read_frame, ErrorCode, Frame, InferRequest, Message};
use shared::transport::{Addr, Stream};

pub struct ChannelPoint {
    pub bytes: usize,
    pub framed_bps: f64,
    pub raw_bps: f64,
    pub framed_rounds: u64,
    pub raw_rounds: u64,
}

impl ChannelPoint {
    pub fn ratio(&self) -> f64 {
        self.framed_bps / self.raw_bps
    }

    pub fn to_json(&self) -> Value {
        json!({ "bytes": self.bytes, "framed_bytes_per_s": self.framed_bps, "raw_bytes_per_s": self.raw_bps,
                "ratio": self.ratio(), "framed_rounds": self.framed_rounds, "raw_rounds": self.raw_rounds })
    }
}

/// Runs each round until `min_time` has passed (and at least 3 rounds).
fn timed(min_time: Duration, mut round: impl FnMut() -> Result<(), String>) -> Result<(u64, Duration), String> {
    round()?;
    round()?;
    let t0 = Instant::now();
    let mut rounds = 0u64;
    while rounds < 3 || t0.elapsed() < min_time {
        round()?;
        rounds += 1;
    }
    Ok((rounds, t0.elapsed()))
}

fn framed(server: &Addr, n: usize, min_time: Duration) -> Result<(u64, Duration), String> {
    let mut s = Stream::connect(server).map_err(|e| format!("channel: cannot connect to {server}: {e}"))?;
    let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
    let frame = Frame::new(1, Message::Infer(InferRequest { top_k: 1, images: vec![vec![0u8; n]] }));
    let bytes = frame.encode().map_err(|e| format!("channel: {e}"))?;
    timed(min_time, || {
        s.write_all(&bytes).map_err(|e| format!("channel: send: {e}"))?;
        match read_frame(&mut s).map_err(|e| format!("channel: reply: {e}"))?.map(|r| r.message()) {
            Some(Ok(Message::Error(e))) if e.code() == Some(ErrorCode::BadImage) => Ok(()),
            Some(Ok(Message::Error(e))) => Err(format!("channel: unexpected error reply {:?}: {}", e.code(), e.message)),
            other => Err(format!("channel: unexpected reply {other:?}")),
        }
    })
}

fn raw(dir: &Path, n: usize, min_time: Duration) -> Result<(u64, Duration), String> {
    let path = dir.join("raw.sock");
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path).map_err(|e| format!("channel: {}: {e}", path.display()))?;
    let sink = std::thread::spawn(move || -> std::io::Result<()> {
        let (mut c, _) = listener.accept()?;
        let mut buf = vec![0u8; n];
        loop {
            match c.read_exact(&mut buf) {
                Ok(()) => c.write_all(&[0u8; 16])?,
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    });
    let mut s = UnixStream::connect(&path).map_err(|e| format!("channel: {e}"))?;
    let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
    let payload = vec![0u8; n];
    let mut ack = [0u8; 16];
    let r = timed(min_time, || {
        s.write_all(&payload).map_err(|e| format!("channel: raw send: {e}"))?;
        s.read_exact(&mut ack).map_err(|e| format!("channel: raw ack: {e}"))
    });
    drop(s);
    let _ = sink.join();
    let _ = std::fs::remove_file(&path);
    r
}

/// Measures each size, framed then raw (same process, same run).
pub fn run(server: &Addr, dir: &Path, sizes: &[usize], min_time: Duration) -> Result<Vec<ChannelPoint>, String> {
    let mut out = Vec::new();
    for &n in sizes {
        let (fr, ft) = framed(server, n, min_time)?;
        let (rr, rt) = raw(dir, n, min_time)?;
        let p = ChannelPoint {
            bytes: n,
            framed_bps: (n as f64 * fr as f64) / ft.as_secs_f64(),
            raw_bps: (n as f64 * rr as f64) / rt.as_secs_f64(),
            framed_rounds: fr,
            raw_rounds: rr,
        };
        eprintln!(
            "  channel {:>10} B: framed {:7.2} Gbit/s, raw {:7.2} Gbit/s, ratio {:.1}%",
            n,
            p.framed_bps * 8e-9,
            p.raw_bps * 8e-9,
            p.ratio() * 100.0
        );
        out.push(p);
    }
    Ok(out)
}
