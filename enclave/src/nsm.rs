//! The Nitro Secure Module (NSM): attestation documents.
//!
//! One small interface, [`Nsm`], with backends chosen by the `--nsm` flag and never by a fallback:
//! - `/dev/nsm` (the default, and the only one in the enclave image): the NSM driver's ioctl,
//!   which takes a CBOR request and fills a CBOR response (at most [`REQUEST_MAX`] and
//!   [`RESPONSE_MAX`] bytes, the driver's own limits);
//! - `unix:PATH` or `vsock:CID:PORT`, only in builds with the `dev-nsm` feature: the development
//!   NSM service (tools/dev-nsm), which answers the same CBOR over a stream, each message a
//!   4-byte big-endian length then its bytes. `unix:` is for `make dev`, where the model server
//!   runs on the host; `vsock:` is for the development emulation image, where it runs in a guest
//!   and reaches dev-nsm through the vsock device (`vsock:2:9100`: the host is CID 2 there, as
//!   vhost-device-vsock forwards only to CID 2, and it hands the connection to dev-nsm's Unix
//!   socket `<run dir>/vsock.sock_9100`). CID 2 is allowed here although `shared::transport`
//!   refuses it for its own addresses (the parent's connections to an enclave); CIDs 0 and 1
//!   (hypervisor, local) and the wildcard are refused;
//! - `none`: no attestation at all.
//!
//! The CBOR here is the handful of shapes the NSM speaks (docs/SEALED.md): a request is a map
//! of one operation name to a map of its arguments; a response is a map of the operation name
//! to a map of results, or `{"Error": "<name>"}`. Nothing else is parsed, and the reader never
//! reads past its slice.

#![allow(unsafe_code)] // reason: the NSM driver's one ioctl, in `call_device`

use std::path::PathBuf;

/// The NSM driver's largest request and response (drivers/misc/nsm.c).
pub const REQUEST_MAX: usize = 0x1000;
pub const RESPONSE_MAX: usize = 0x3000;

#[derive(Debug, Clone, PartialEq)]
pub enum Nsm {
    Device(PathBuf),
    /// The development NSM service: `Addr::Unix` or `Addr::Vsock` (an explicit CID).
    #[cfg(feature = "dev-nsm")]
    DevService(shared::transport::Addr),
    None,
}

/// `unix:PATH` or `vsock:CID:PORT`: the development NSM service.
#[cfg(feature = "dev-nsm")]
fn dev_service(s: &str) -> Result<Nsm, String> {
    match s.strip_prefix("vsock:") {
        Some(rest) => dev_vsock(s, rest).map(Nsm::DevService),
        None => s.parse().map(Nsm::DevService).map_err(|e: shared::transport::AddrError| e.to_string()),
    }
}

#[cfg(not(feature = "dev-nsm"))]
fn dev_service(_: &str) -> Result<Nsm, String> {
    Err("this build has no development NSM (cargo feature dev-nsm); the enclave image never has one".into())
}

/// `vsock:CID:PORT` for the development NSM: CID 2 (the host under emulation) and above, not the
/// wildcard `u32::MAX`; the port any 32-bit number.
#[cfg(feature = "dev-nsm")]
fn dev_vsock(s: &str, rest: &str) -> Result<shared::transport::Addr, String> {
    let bad = || format!("{s:?}: expected vsock:CID:PORT, CID 2 (the host under emulation) or above");
    let (cid, port) = rest.split_once(':').ok_or_else(bad)?;
    let (cid, port) = (cid.parse::<u32>().map_err(|_| bad())?, port.parse::<u32>().map_err(|_| bad())?);
    if cid < 2 || cid == u32::MAX {
        return Err(bad());
    }
    Ok(shared::transport::Addr::Vsock { cid, port })
}

impl std::str::FromStr for Nsm {
    type Err = String;
    fn from_str(s: &str) -> Result<Nsm, String> {
        if s == "none" {
            Ok(Nsm::None)
        } else if s.starts_with('/') {
            Ok(Nsm::Device(s.into()))
        } else if s.starts_with("unix:") || s.starts_with("vsock:") {
            dev_service(s)
        } else {
            Err("expected a device path such as /dev/nsm, unix:PATH, vsock:CID:PORT or none".into())
        }
    }
}

impl Nsm {
    /// An attestation document binding `public_key`, `user_data` and `nonce`.
    pub fn attestation(&self, public_key: &[u8], user_data: &[u8], nonce: &[u8]) -> Result<Vec<u8>, String> {
        let mut req = request("Attestation", 3);
        for (name, value) in [("public_key", public_key), ("user_data", user_data), ("nonce", nonce)] {
            put_text(&mut req, name);
            put(&mut req, 2, value.len());
            req.extend_from_slice(value);
        }
        Ok(answer(&self.call(&req)?, "Attestation", "document")?.to_vec())
    }

    /// Whether PCR0 is all zeros: an enclave started in debug mode.
    pub fn debug_mode(&self) -> Result<bool, String> {
        let mut req = request("DescribePCR", 1);
        put_text(&mut req, "index");
        put(&mut req, 0, 0);
        Ok(answer(&self.call(&req)?, "DescribePCR", "data")?.iter().all(|&b| b == 0))
    }

    fn call(&self, request: &[u8]) -> Result<Vec<u8>, String> {
        match self {
            Nsm::Device(path) => call_device(path, request).map_err(|e| format!("NSM {}: {e}", path.display())),
            #[cfg(feature = "dev-nsm")]
            Nsm::DevService(addr) => call_service(addr, request).map_err(|e| format!("development NSM {addr}: {e}")),
            Nsm::None => Err("this model server runs without attestation (--nsm none)".into()),
        }
    }
}

/// The driver's ioctl argument: two iovecs, request and response.
#[repr(C)]
struct NsmMessage {
    request: nix::libc::iovec,
    response: nix::libc::iovec,
}

nix::ioctl_readwrite!(nsm_ioctl, 0x0A, 0, NsmMessage);

fn call_device(path: &std::path::Path, request: &[u8]) -> std::io::Result<Vec<u8>> {
    use std::os::fd::AsRawFd;
    let dev = std::fs::OpenOptions::new().read(true).write(true).open(path)?;
    let mut response = vec![0u8; RESPONSE_MAX];
    let mut msg = NsmMessage {
        request: nix::libc::iovec { iov_base: request.as_ptr() as *mut _, iov_len: request.len() },
        response: nix::libc::iovec { iov_base: response.as_mut_ptr().cast(), iov_len: response.len() },
    };
    // SAFETY: `msg` describes two live buffers with their true lengths; the driver reads at
    // most `request.len()` bytes (refusing over REQUEST_MAX) and writes at most
    // `response.len()`, then stores the length it wrote in `msg.response.iov_len`. Both
    // buffers outlive the call.
    unsafe { nsm_ioctl(dev.as_raw_fd(), &mut msg) }.map_err(std::io::Error::from)?;
    response.truncate(msg.response.iov_len);
    Ok(response)
}

#[cfg(feature = "dev-nsm")]
fn call_service(addr: &shared::transport::Addr, request: &[u8]) -> std::io::Result<Vec<u8>> {
    use std::io::{Error, ErrorKind, Read, Write};
    let mut s = shared::transport::Stream::connect(addr)?;
    s.set_read_timeout(Some(shared::limits::NSM_TIMEOUT))?;
    s.set_write_timeout(Some(shared::limits::NSM_TIMEOUT))?;
    s.write_all(&[&(request.len() as u32).to_be_bytes()[..], request].concat())?;
    let mut len = [0u8; 4];
    s.read_exact(&mut len)?;
    let len = u32::from_be_bytes(len) as usize;
    if len > RESPONSE_MAX {
        return Err(Error::new(ErrorKind::InvalidData, format!("answer of {len} bytes is over {RESPONSE_MAX}")));
    }
    let mut response = vec![0u8; len];
    s.read_exact(&mut response)?;
    Ok(response)
}

/// The start of a request: a map of `op` to a map of `args` arguments.
fn request(op: &str, args: usize) -> Vec<u8> {
    let mut req = vec![0xa1]; // a map of one entry
    put_text(&mut req, op);
    put(&mut req, 5, args);
    req
}

/// CBOR head: major type and argument, in the shortest form.
fn put(out: &mut Vec<u8>, major: u8, n: usize) {
    let m = major << 5;
    match n {
        0..=23 => out.push(m | n as u8),
        24..=0xff => out.extend([m | 24, n as u8]),
        0x100..=0xffff => out.extend([&[m | 25][..], &(n as u16).to_be_bytes()].concat()),
        _ => out.extend([&[m | 26][..], &(n as u32).to_be_bytes()].concat()),
    }
}

fn put_text(out: &mut Vec<u8>, s: &str) {
    put(out, 3, s.len());
    out.extend_from_slice(s.as_bytes());
}

/// A CBOR reader over a slice: definite lengths only, as the NSM writes.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    /// The next head: major type and argument.
    fn head(&mut self) -> Option<(u8, u64)> {
        let (&b, rest) = self.0.split_first()?;
        let n = match b & 31 {
            0..=23 => 0,
            i @ 24..=27 => 1 << (i - 24),
            _ => return None,
        };
        let (arg, rest) = rest.split_at_checked(n)?;
        self.0 = rest;
        Some((b >> 5, if n == 0 { u64::from(b & 31) } else { arg.iter().fold(0, |acc, &x| acc << 8 | u64::from(x)) }))
    }

    /// A byte (major 2) or text (major 3) string's bytes; a simple value or an integer is
    /// empty; anything else (arrays, maps, tags) is not in an NSM answer.
    fn string(&mut self, majors: &[u8]) -> Option<&'a [u8]> {
        match self.head()? {
            (m @ (2 | 3), n) if majors.contains(&m) => {
                let (bytes, rest) = self.0.split_at_checked(usize::try_from(n).ok()?)?;
                self.0 = rest;
                Some(bytes)
            }
            (m @ (0 | 1 | 7), _) if majors.contains(&m) => Some(&[]),
            _ => None,
        }
    }
}

/// The byte string `field` of the NSM's answer to `op`, or the NSM's error.
fn answer<'a>(resp: &'a [u8], op: &str, field: &str) -> Result<&'a [u8], String> {
    let bad = || format!("the NSM's answer to {op} is not the CBOR it should be");
    let mut r = Reader(resp);
    if r.head() != Some((5, 1)) {
        return Err(bad());
    }
    let name = r.string(&[3]).ok_or_else(bad)?;
    if name == b"Error" {
        let e = r.string(&[3]).ok_or_else(bad)?;
        return Err(format!("the NSM refused {op}: {}", String::from_utf8_lossy(e)));
    }
    let Some((5, n)) = r.head().filter(|_| name == op.as_bytes()) else { return Err(bad()) };
    for _ in 0..n {
        let key = r.string(&[3]).ok_or_else(bad)?;
        let value = r.string(&[0, 2, 3, 7]).ok_or_else(bad)?;
        if key == field.as_bytes() {
            return Ok(value);
        }
    }
    Err(format!("the NSM's answer to {op} has no {field}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_read_and_errors_reported() {
        // {"Attestation": {"document": h'0102'}}
        let mut ok = request("Attestation", 2);
        put_text(&mut ok, "lock");
        ok.push(0xf5); // true
        put_text(&mut ok, "document");
        put(&mut ok, 2, 2);
        ok.extend([1, 2]);
        assert_eq!(answer(&ok, "Attestation", "document"), Ok(&[1u8, 2][..]));
        assert!(answer(&ok, "Attestation", "nonce").unwrap_err().contains("no nonce"));
        assert!(answer(&ok, "DescribePCR", "data").unwrap_err().contains("not the CBOR"));
        // Every truncation is an error, never a panic or a read past the end.
        for n in 0..ok.len() {
            assert!(answer(&ok[..n], "Attestation", "document").is_err());
        }
        let mut err = vec![0xa1];
        put_text(&mut err, "Error");
        put_text(&mut err, "InvalidArgument");
        assert_eq!(answer(&err, "Attestation", "document"), Err("the NSM refused Attestation: InvalidArgument".into()));
    }

    #[test]
    fn heads_use_the_shortest_form() {
        for (n, want) in [(23, vec![0x57]), (24, vec![0x58, 24]), (300, vec![0x59, 1, 44]), (70000, vec![0x5a, 0, 1, 17, 112])] {
            let mut out = Vec::new();
            put(&mut out, 2, n);
            assert_eq!(out, want);
            assert_eq!(Reader(&out).head(), Some((2, n as u64)));
        }
    }

    #[test]
    fn the_flag_chooses_the_backend() {
        assert_eq!("/dev/nsm".parse(), Ok(Nsm::Device("/dev/nsm".into())));
        assert_eq!("none".parse(), Ok(Nsm::None));
        assert!("nsm".parse::<Nsm>().is_err());
        assert!("nsm".parse::<Nsm>().unwrap_err().contains("vsock:CID:PORT"));
        #[cfg(not(feature = "dev-nsm"))]
        for s in ["unix:/run/nsm.sock", "vsock:2:9100", "vsock:3:9100"] {
            assert!(s.parse::<Nsm>().unwrap_err().contains("no development NSM"), "{s}");
        }
    }

    #[cfg(feature = "dev-nsm")]
    #[test]
    fn the_development_service_over_unix_or_vsock() {
        use shared::transport::Addr;
        assert_eq!("unix:/run/nsm.sock".parse(), Ok(Nsm::DevService(Addr::Unix("/run/nsm.sock".into()))));
        assert!("unix:".parse::<Nsm>().unwrap_err().contains("must be non-empty"));
        // CID 2 is the host under emulation; 3 the parent on Nitro.
        assert_eq!("vsock:2:9100".parse(), Ok(Nsm::DevService(Addr::Vsock { cid: 2, port: 9100 })));
        assert_eq!("vsock:3:9100".parse(), Ok(Nsm::DevService(Addr::Vsock { cid: 3, port: 9100 })));
        assert_eq!(
            "vsock:4294967294:4294967295".parse(),
            Ok(Nsm::DevService(Addr::Vsock { cid: u32::MAX - 1, port: u32::MAX }))
        );
        for bad in ["vsock:9100", "vsock:0:9100", "vsock:1:9100", "vsock:4294967295:9100", "vsock:2:", "vsock::9100",
            "vsock:2:9100:1", "vsock:x:9100", "vsock:2:-1", "vsock:2:4294967296", "vsock:"]
        {
            let e = bad.parse::<Nsm>().unwrap_err();
            assert!(e.contains("expected vsock:CID:PORT"), "{bad}: {e}");
        }
    }

    /// The framing over a real stream: a Unix socket pair standing in for dev-nsm.
    #[cfg(feature = "dev-nsm")]
    #[test]
    fn the_development_service_is_called_with_length_prefixed_cbor() {
        use std::io::{Read, Write};
        let dir = std::env::temp_dir().join(format!("nsm-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("nsm.sock");
        let _ = std::fs::remove_file(&path);
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut len = [0u8; 4];
            s.read_exact(&mut len).unwrap();
            let mut req = vec![0u8; u32::from_be_bytes(len) as usize];
            s.read_exact(&mut req).unwrap();
            let mut ans = request("DescribePCR", 1);
            put_text(&mut ans, "data");
            put(&mut ans, 2, 48);
            ans.extend([0u8; 48]);
            s.write_all(&[&(ans.len() as u32).to_be_bytes()[..], &ans].concat()).unwrap();
            req
        });
        let nsm: Nsm = format!("unix:{}", path.display()).parse().unwrap();
        assert_eq!(nsm.debug_mode(), Ok(true));
        let mut want = request("DescribePCR", 1);
        put_text(&mut want, "index");
        put(&mut want, 0, 0);
        assert_eq!(server.join().unwrap(), want);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
