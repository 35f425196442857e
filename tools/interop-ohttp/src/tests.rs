//! The harness's own tests. The gateway here is aloha's server side, so these check the harness's
//! plumbing (key selection, the HTTP exchange, the inner response's padding, the exit paths), NOT
//! interoperability: that is tests/interop/ohttp.sh against the real model server.

use super::*;
use aloha::id::{AeadId, KdfId, KemId};
use std::io::BufRead;
use std::net::TcpListener;
use std::thread;

fn varint(n: u64, out: &mut Vec<u8>) {
    match n {
        0..=0x3f => out.push(n as u8),
        0x40..=0x3fff => out.extend_from_slice(&((n as u16) | 0x4000).to_be_bytes()),
        0x4000..=0x3fff_ffff => out.extend_from_slice(&((n as u32) | 0x8000_0000).to_be_bytes()),
        _ => out.extend_from_slice(&(n | 0xc000_0000_0000_0000).to_be_bytes()),
    }
}

fn sized(b: &[u8], out: &mut Vec<u8>) {
    varint(b.len() as u64, out);
    out.extend_from_slice(b);
}

/// A known-length BHTTP response written byte by byte from RFC 9292 section 3 (not by aloha), as
/// docs/SEALED.md says the model server writes it: status, one content-type field, the body, no
/// trailers, zeros up to a multiple of `pad`.
fn padded_response(status: u64, body: &[u8], pad: usize) -> Vec<u8> {
    let mut m = vec![1u8];
    varint(status, &mut m);
    let mut fields = Vec::new();
    sized(b"content-type", &mut fields);
    sized(b"application/json", &mut fields);
    sized(&fields, &mut m);
    sized(body, &mut m);
    m.push(0); // empty trailer section
    let total = m.len().div_ceil(pad) * pad;
    m.resize(total, 0);
    m
}

fn server_config(id: u8) -> Config {
    Config::builder()
        .with_id(id)
        .gen_keypair(KemId::X25519HKDFSHA256, &mut rand::rng())
        .push_alg(KdfId::HKDFSHA256, AeadId::AESGCM128)
        .build()
        .unwrap()
}

fn encode_keys(configs: &[Config]) -> Vec<u8> {
    let keys: Keys = configs.iter().map(|c| c.get_client()).collect();
    let mut out = Vec::new();
    keys.compose(&mut out).unwrap();
    out
}

#[test]
fn inner_request_is_known_length_bhttp() {
    let m = inner_request(
        "127.0.0.1:8080",
        "/predict-secure/?top_k=5",
        "image/jpeg",
        b"\xff\xd8\xff",
    )
    .unwrap();
    let mut want = vec![0u8];
    for part in [
        &b"POST"[..],
        b"https",
        b"127.0.0.1:8080",
        b"/predict-secure/?top_k=5",
    ] {
        sized(part, &mut want);
    }
    let mut fields = Vec::new();
    sized(b"content-type", &mut fields);
    sized(b"image/jpeg", &mut fields);
    sized(&fields, &mut want);
    sized(b"\xff\xd8\xff", &mut want);
    want.push(0);
    assert_eq!(m, want);
}

#[test]
fn inner_response_with_padding_parses() {
    let body = br#"{"class_ids":[285]}"#;
    let m = padded_response(200, body, 4096);
    assert_eq!(m.len(), 4096);
    let r = parse_inner_response(&m).unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.content, body);
    assert_eq!(
        r.fields,
        vec![("content-type".to_string(), "application/json".to_string())]
    );
    assert_eq!(r.padding, 4096 - (1 + 2 + 1 + 30 + 1 + body.len() + 1));
    // Without padding too, and a large body (2-byte and 4-byte length prefixes).
    let big = vec![b'x'; 20_000];
    let r = parse_inner_response(&padded_response(413, &big, 1)).unwrap();
    assert_eq!((r.status, r.content.len(), r.padding), (413, 20_000, 0));
}

#[test]
fn inner_response_rejects_nonzero_padding_and_request_framing() {
    let mut m = padded_response(200, b"{}", 4096);
    *m.last_mut().unwrap() = 1;
    assert!(matches!(parse_inner_response(&m), Err(Failure::Answer(_))));
    let req = inner_request("h", "/", "image/png", b"x").unwrap();
    assert!(matches!(
        parse_inner_response(&req),
        Err(Failure::Answer(_))
    ));
}

#[test]
fn selects_first_usable_configuration() {
    let p256 = Config::builder()
        .with_id(7)
        .gen_keypair(KemId::DHP256HKDFSHA256, &mut rand::rng())
        .push_alg(KdfId::HKDFSHA256, AeadId::AESGCM128)
        .build()
        .unwrap();
    let chacha_then_aes = Config::builder()
        .with_id(8)
        .gen_keypair(KemId::X25519HKDFSHA256, &mut rand::rng())
        .push_alg(KdfId::HKDFSHA256, AeadId::CHACHA20POLY1305)
        .push_alg(KdfId::HKDFSHA256, AeadId::AESGCM128)
        .build()
        .unwrap();
    let plain = server_config(9);
    let (_, idx, id) = select_config(&encode_keys(&[
        p256.clone(),
        chacha_then_aes,
        plain.clone(),
    ]))
    .unwrap();
    assert_eq!((idx, id), (1, 8));
    let (_, idx, id) = select_config(&encode_keys(&[plain])).unwrap();
    assert_eq!((idx, id), (0, 9));
    assert!(matches!(
        select_config(&encode_keys(&[p256])),
        Err(Failure::Local(_))
    ));
    assert!(matches!(select_config(&[0, 41, 1]), Err(Failure::Local(_))));
    assert!(matches!(select_config(&[]), Err(Failure::Local(_))));
}

#[test]
fn base_urls() {
    assert_eq!(
        parse_base("http://127.0.0.1:18090").unwrap(),
        Base {
            host: "127.0.0.1".into(),
            port: 18090,
            prefix: "".into()
        }
    );
    assert_eq!(
        parse_base("http://localhost/x/").unwrap(),
        Base {
            host: "localhost".into(),
            port: 80,
            prefix: "/x".into()
        }
    );
    let v6 = parse_base("http://[::1]:8080").unwrap();
    assert_eq!(
        (v6.host.as_str(), v6.port, v6.authority()),
        ("::1", 8080, "[::1]:8080".to_string())
    );
    assert!(parse_base("https://example.com").is_err());
    assert!(parse_base("http://h:x").is_err());
}

#[test]
fn http_answers() {
    let a = parse_http_answer(
        b"HTTP/1.1 200 OK\r\nContent-Type: message/ohttp-res\r\nContent-Length: 3\r\n\r\nabcdef",
    )
    .unwrap();
    assert_eq!(
        (a.status, a.content_type.as_str(), a.body.as_slice()),
        (200, "message/ohttp-res", &b"abc"[..])
    );
    let a = parse_http_answer(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n").unwrap();
    assert_eq!(a.body, b"abcde");
    assert!(parse_http_answer(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nabc").is_err());
}

/// One connection of a fake gateway: read the request, hand its body to `answer`, write back
/// what it returns (status, content type, body).
fn serve_once(
    listener: TcpListener,
    answer: impl FnOnce(&str, Vec<u8>) -> (u16, &'static str, Vec<u8>) + Send + 'static,
) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut r = std::io::BufReader::new(stream.try_clone().unwrap());
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        let target = line.split(' ').nth(1).unwrap().to_string();
        let mut length = 0;
        let mut content_type = String::new();
        loop {
            let mut h = String::new();
            r.read_line(&mut h).unwrap();
            if h == "\r\n" {
                break;
            }
            let (n, v) = h.split_once(':').unwrap();
            match n.to_ascii_lowercase().as_str() {
                "content-length" => length = v.trim().parse().unwrap(),
                "content-type" => content_type = v.trim().to_string(),
                _ => {}
            }
        }
        assert_eq!(content_type, "message/ohttp-req");
        let mut body = vec![0; length];
        r.read_exact(&mut body).unwrap();
        let (status, ct, out) = answer(&target, body);
        let mut w = stream;
        write!(
            w,
            "HTTP/1.1 {status} X\r\nContent-Type: {ct}\r\nContent-Length: {}\r\n\r\n",
            out.len()
        )
        .unwrap();
        w.write_all(&out).unwrap();
    })
}

fn temp_file(name: &str, bytes: &[u8]) -> String {
    let dir = std::env::temp_dir().join(format!("interop-ohttp-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p.to_string_lossy().into_owned()
}

fn args_for(port: u16, keys: &str, image: &str) -> Args {
    parse_args(
        [
            "--keys",
            keys,
            "--image",
            image,
            "--url",
            &format!("http://127.0.0.1:{port}"),
            "--expect-padding",
            "4096",
        ]
        .into_iter()
        .map(String::from),
    )
    .unwrap()
}

#[test]
fn exchange_with_a_fake_gateway() {
    let old = server_config(41);
    let current = server_config(42);
    let keys = temp_file("keys-ok", &encode_keys(&[current.clone(), old]));
    let image = temp_file("img-ok.jpg", b"\xff\xd8\xff\xe0 not really a jpeg");
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = serve_once(listener, move |target, sealed| {
        assert_eq!(target, "/.well-known/ohttp-gateway");
        assert_eq!(sealed[0], 42, "sealed to the first configuration");
        let (req, ctx) = current.decrypt_req(&sealed).unwrap();
        let ctrl = Parser::new(&req).next_req().unwrap();
        let c = ctrl.get().unwrap();
        assert_eq!(
            (c.method, c.path),
            (&b"POST"[..], &b"/predict-secure/?top_k=5"[..])
        );
        let headers = ctrl.next().unwrap();
        let content = headers.next().unwrap();
        let body: Vec<u8> = content.iter().flat_map(|c| c.unwrap().to_vec()).collect();
        assert_eq!(body, b"\xff\xd8\xff\xe0 not really a jpeg");
        let inner = padded_response(200, br#"{"class_ids":[285,281]}"#, 4096);
        (
            200,
            "message/ohttp-res",
            ctx.encrypt_res(&inner, &mut rand::rng()).unwrap().to_vec(),
        )
    });
    let o = run(&args_for(port, &keys, &image)).unwrap();
    server.join().unwrap();
    assert_eq!((o.key_id, o.inner.status, o.inner_len), (42, 200, 4096));
    assert_eq!(o.inner.content, br#"{"class_ids":[285,281]}"#);
}

#[test]
fn refused_and_unpadded_answers_are_reported() {
    let config = server_config(3);
    let keys = temp_file("keys-bad", &encode_keys(std::slice::from_ref(&config)));
    let image = temp_file("img-bad.png", b"\x89PNG....");

    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = serve_once(listener, |_, _| {
        (
            400,
            "application/problem+json",
            br#"{"title":"key identifier unknown"}"#.to_vec(),
        )
    });
    match run(&args_for(port, &keys, &image)) {
        Err(Failure::Refused {
            status: 400,
            content_type,
            ..
        }) => assert_eq!(content_type, "application/problem+json"),
        other => panic!("{:?}", other.map(|o| o.inner)),
    }
    server.join().unwrap();

    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = serve_once(listener, move |_, sealed| {
        let (_, ctx) = config.decrypt_req(&sealed).unwrap();
        let inner = padded_response(200, b"{}", 1000);
        (
            200,
            "message/ohttp-res",
            ctx.encrypt_res(&inner, &mut rand::rng()).unwrap().to_vec(),
        )
    });
    assert!(matches!(
        run(&args_for(port, &keys, &image)),
        Err(Failure::Answer(_))
    ));
    server.join().unwrap();
}
