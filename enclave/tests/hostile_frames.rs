//! The frame-level hostile-input suite: malformed frames sent straight to a
//! real model server over a Unix socket. Each case has one expected outcome:
//! the exact error code, and whether the server keeps or closes the
//! connection (see the policy in enclave/src/server.rs). After the whole
//! suite the server still answers correctly and its memory is back near
//! where it started.
//!
//! Needs `models/tiny-test` (`make test` prepares it).

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[path = "support/images.rs"]
mod images;

use images::{jpeg, jpeg_bomb, png, png_bomb};
use shared::frame::*;
use shared::limits::{MAX_FRAME_LEN, MAX_IMAGES, MAX_SEED_LEN, MAX_TOP_K};

fn header(kind: u8, body_len: u32) -> Vec<u8> {
    Header { kind, body_len, request_id: 77 }.encode().to_vec()
}

fn frame(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut v = header(kind, body.len() as u32);
    v.extend_from_slice(body);
    v
}

fn infer_body(top_k: u16, count: u16, images: &[&[u8]]) -> Vec<u8> {
    let mut b = top_k.to_le_bytes().to_vec();
    b.extend_from_slice(&count.to_le_bytes());
    for img in images {
        b.extend_from_slice(&(img.len() as u32).to_le_bytes());
        b.extend_from_slice(img);
    }
    b
}

fn infer(images: &[&[u8]]) -> Vec<u8> {
    frame(0x05, &infer_body(3, images.len() as u16, images))
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Expect {
    /// An error frame with this code; the connection stays usable.
    Keep(ErrorCode),
    /// An error frame with this code, then the connection is closed.
    Close(ErrorCode),
    /// The connection is closed, with or without a `malformed` frame (the
    /// peer ended or stalled mid-frame: nothing sensible to answer).
    Closed,
    /// A normal result: the input is odd but valid.
    Result,
}

fn cases() -> Vec<(&'static str, Vec<u8>, bool, Expect)> {
    use ErrorCode::*;
    use Expect::*;
    let good_png = png(20, 20);
    let good_jpeg = jpeg(20, 20);
    let mut bad_crc = png(20, 20);
    bad_crc[30] ^= 0xff; // IHDR CRC
    let big_count = infer_body(3, 3, &[b"ab", b"cd"]);
    let mut huge_len = infer_body(3, 1, &[]);
    huge_len.extend_from_slice(&u32::MAX.to_le_bytes());
    let sixty_five: Vec<&[u8]> = vec![b"x"; MAX_IMAGES + 1];
    let mut v = vec![
        // (name, bytes, half-close the write side after sending, expectation)
        ("HTTP request on the frame port", b"POST /predict HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), false, Close(Malformed)),
        ("TLS ClientHello", vec![0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03, 0, 0, 0, 0, 0], false, Close(Malformed)),
        ("sixteen zero bytes", vec![0; 16], false, Close(Malformed)),
        ("version 0", { let mut h = header(1, 0); h[2] = 0; h }, false, Close(Malformed)),
        ("version 255", { let mut h = header(1, 0); h[2] = 255; h }, false, Close(Malformed)),
        ("length u32::MAX", header(5, u32::MAX), false, Close(Malformed)),
        ("length one over the limit", header(5, MAX_FRAME_LEN + 1), false, Close(Malformed)),
        ("kind 0x00", frame(0x00, &[]), false, Keep(Malformed)),
        ("kind 0xff with a body", frame(0xff, &[1; 10]), false, Keep(Malformed)),
        ("Pong as a request", frame(0x02, &[]), false, Keep(UnexpectedKind)),
        ("Error as a request", frame(0x07, &[3, 0, 0, 0]), false, Keep(UnexpectedKind)),
        ("Result as a request", Frame::new(1, Message::Result(InferReply { images: vec![ImageResult { timings: StageTimings::default(), top: vec![] }] })).encode().unwrap(), false, Keep(UnexpectedKind)),
        ("Ping with a trailing byte", frame(0x01, &[0]), false, Keep(Malformed)),
        ("InfoQuery with a body", frame(0x03, &[1, 2, 3]), false, Keep(Malformed)),
        ("Infer with zero images", frame(0x05, &infer_body(3, 0, &[])), false, Keep(Malformed)),
        ("Infer with top_k 0", frame(0x05, &infer_body(0, 1, &[b"x"])), false, Keep(Malformed)),
        ("Infer with top_k over the limit", frame(0x05, &infer_body(MAX_TOP_K as u16 + 1, 1, &[b"x"])), false, Keep(Malformed)),
        ("Infer with too many images", frame(0x05, &infer_body(3, (MAX_IMAGES + 1) as u16, &sixty_five)), false, Keep(Malformed)),
        ("Infer count above the images present", frame(0x05, &big_count), false, Keep(Malformed)),
        ("Infer count below the images present", frame(0x05, &infer_body(3, 1, &[b"ab", b"cd"])), false, Keep(Malformed)),
        ("Infer image length u32::MAX", frame(0x05, &huge_len), false, Keep(Malformed)),
        ("Infer body shorter than its header fields", frame(0x05, &[3]), false, Keep(Malformed)),
        ("Seed of zero bytes", frame(0x08, &[]), false, Keep(Malformed)),
        ("Seed over the limit", frame(0x08, &vec![1; MAX_SEED_LEN + 1]), false, Keep(Malformed)),
        ("Error with invalid UTF-8", frame(0x07, &[1, 0, 2, 0, 0xff, 0xfe]), false, Keep(Malformed)),
        ("image of zero bytes", infer(&[b""]), false, Keep(BadImage)),
        ("image of text", infer(&[b"hello, I am not an image"]), false, Keep(BadImage)),
        ("GIF image", infer(&[b"GIF89a\x01\x00\x01\x00\x00\x00\x00;"]), false, Keep(UnsupportedFormat)),
        ("BMP image", infer(&[b"BM\x3a\x00\x00\x00\x00\x00\x00\x00\x36\x00\x00\x00"]), false, Keep(UnsupportedFormat)),
        ("PNG claiming 60000x60000", infer(&[&png_bomb(60_000, 60_000)]), false, Keep(ImageTooLarge)),
        ("PNG claiming 12001x1", infer(&[&png_bomb(12_001, 1)]), false, Keep(ImageTooLarge)),
        ("PNG claiming 0x0", infer(&[&png_bomb(0, 0)]), false, Keep(BadImage)),
        ("JPEG claiming 65000x65000", infer(&[&jpeg_bomb(65_000, 65_000)]), false, Keep(ImageTooLarge)),
        ("truncated PNG", infer(&[&good_png[..good_png.len() / 2]]), false, Keep(BadImage)),
        ("truncated JPEG", infer(&[&good_jpeg[..good_jpeg.len() / 2]]), false, Keep(BadImage)),
        ("PNG with a bad header CRC", infer(&[&bad_crc]), false, Keep(BadImage)),
        ("JPEG signature only", infer(&[b"\xff\xd8\xff"]), false, Keep(BadImage)),
        ("PNG signature only", infer(&[b"\x89PNG\r\n\x1a\n"]), false, Keep(BadImage)),
        ("one good image, one bad", infer(&[&good_png, b"junk"]), false, Keep(BadImage)),
        ("1x1 PNG (valid, tiny)", infer(&[&png(1, 1)]), false, Result),
        ("1x4000 JPEG (valid, extreme aspect)", infer(&[&jpeg(1, 4000)]), false, Result),
        ("half a header, then end of stream", header(1, 0)[..7].to_vec(), true, Closed),
        ("header promising a body, then end of stream", header(5, 1000), true, Closed),
    ];
    // A valid frame with its last byte missing, then end of stream.
    let mut cut = infer(&[&good_png]);
    cut.pop();
    v.push(("valid frame minus its last byte", cut, true, Closed));
    v
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

struct Server {
    child: Child,
    sock: PathBuf,
    dir: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn start() -> Server {
    let model = root().join("models/tiny-test");
    assert!(model.exists(), "models/tiny-test is missing: run `make model MODEL=tiny-test` (make test does it)");
    let dir = std::env::temp_dir().join(format!("enclave-hostile-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let sock = dir.join("s.sock");
    let child = Command::new(env!("CARGO_BIN_EXE_enclave"))
        .args(["--listen", &format!("unix:{}", sock.display()), "--model"])
        .arg(&model)
        .stderr(std::fs::File::create(dir.join("stderr.log")).unwrap())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let s = Server { child, sock, dir };
    let deadline = Instant::now() + Duration::from_secs(30);
    while ping(&s).is_err() {
        assert!(Instant::now() < deadline, "server never answered ping");
        std::thread::sleep(Duration::from_millis(20));
    }
    s
}

fn connect(s: &Server) -> UnixStream {
    let c = UnixStream::connect(&s.sock).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    c
}

fn ping(s: &Server) -> Result<(), String> {
    let mut c = UnixStream::connect(&s.sock).map_err(|e| e.to_string())?;
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write_frame(&mut c, &Frame::new(5, Message::Ping)).map_err(|e| e.to_string())?;
    match read_frame(&mut c) {
        Ok(Some(raw)) if raw.message() == Ok(Message::Pong) => Ok(()),
        other => Err(format!("{other:?}")),
    }
}

fn rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap()
}

/// Reads until end of stream; true if the server closed the connection.
fn closed(c: &mut UnixStream) -> bool {
    let mut rest = Vec::new();
    matches!(c.read_to_end(&mut rest), Ok(0) | Err(_)) && rest.is_empty()
}

#[test]
fn every_hostile_frame_gets_its_specific_answer_and_the_server_survives() {
    let s = start();
    // Warm up, then take the baseline memory.
    for _ in 0..3 {
        let mut c = connect(&s);
        c.write_all(&infer(&[&png(50, 50)])).unwrap();
        read_frame(&mut c).unwrap();
    }
    let rss_before = rss_kb(s.child.id());
    let cases = cases();
    assert!(cases.len() >= 20);
    let mut failures = Vec::new();
    for round in 0..3 {
        for (name, bytes, half_close, expect) in &cases {
            let mut c = connect(&s);
            c.write_all(bytes).unwrap();
            if *half_close {
                c.shutdown(std::net::Shutdown::Write).unwrap();
            }
            let got = read_frame(&mut c);
            let outcome = match (&got, expect) {
                (Ok(Some(raw)), Expect::Keep(code) | Expect::Close(code)) => match raw.message() {
                    Ok(Message::Error(e)) if e.code() == Some(*code) => {
                        if matches!(expect, Expect::Close(_)) {
                            if closed(&mut c) { Ok(()) } else { Err("connection left open".to_string()) }
                        } else {
                            // Still usable: a ping on the same connection.
                            write_frame(&mut c, &Frame::new(6, Message::Ping)).unwrap();
                            match read_frame(&mut c).map(|r| r.map(|r| r.message())) {
                                Ok(Some(Ok(Message::Pong))) => Ok(()),
                                other => Err(format!("connection not usable after the error: {other:?}")),
                            }
                        }
                    }
                    other => Err(format!("expected {code:?}, got {other:?}")),
                },
                (Ok(Some(raw)), Expect::Result) => match raw.message() {
                    Ok(Message::Result(r)) if r.images.len() == 1 => Ok(()),
                    other => Err(format!("expected a result, got {other:?}")),
                },
                (Ok(None) | Err(_), Expect::Closed) => Ok(()),
                (Ok(Some(raw)), Expect::Closed) => match raw.message() {
                    Ok(Message::Error(e)) if e.code() == Some(ErrorCode::Malformed) && closed(&mut c) => Ok(()),
                    other => Err(format!("expected a close, got {other:?}")),
                },
                (other, _) => Err(format!("expected {expect:?}, got {other:?}")),
            };
            if let Err(why) = outcome {
                failures.push(format!("round {round}, {name}: {why}"));
            }
        }
    }
    assert!(failures.is_empty(), "{} cases failed:\n{}", failures.len(), failures.join("\n"));

    // The server still answers correctly, and has not grown.
    ping(&s).unwrap();
    let mut c = connect(&s);
    write_frame(&mut c, &Frame::new(9, Message::Infer(InferRequest { top_k: 3, images: vec![png(40, 40)] }))).unwrap();
    let raw = read_frame(&mut c).unwrap().unwrap();
    assert!(matches!(raw.message(), Ok(Message::Result(r)) if r.images[0].top.len() == 3));
    let rss_after = rss_kb(s.child.id());
    assert!(
        rss_after < rss_before + 64 * 1024,
        "RSS grew from {rss_before} kB to {rss_after} kB over {} hostile frames",
        3 * cases.len()
    );
    eprintln!("hostile frames: {} cases x 3 rounds, RSS {rss_before} kB -> {rss_after} kB", cases.len());
}
