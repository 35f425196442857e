//! Transports: where frames travel.
//!
//! Three kinds of address, one syntax:
//!
//! ```text
//!  vsock:PORT                 listen on any CID (inside the enclave)
//!  vsock:CID:PORT             a given CID (the parent connects to the enclave's CID)
//!  unix:/path                 a Unix-domain stream socket (the public server, tests)
//!  hybrid-vsock:/path:PORT    a guest's vsock PORT through a vhost-user vsock device's
//!                             Unix socket (the emulated enclave, `make emulate`)
//! ```
//!
//! [`Listener`] and [`Stream`] mirror `std::net` and wrap either kind, so the
//! model server and the parent are written once against `Read + Write` and the
//! tests run the very same code over Unix sockets. Nothing here parses frames.
//!
//! Hybrid vsock is how a VM's vsock device that lives in a host process
//! (vhost-device-vsock, Firecracker) lets host programs reach the guest without
//! the host's own AF_VSOCK: connect to the device's Unix socket, write
//! `CONNECT <port>\n`, read `OK <host port>\n`; from then on the Unix stream
//! is the guest's vsock stream. It is for connecting only; the enclave side
//! always listens on real vsock.

use std::fmt;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{recv, MsgFlags};
use vsock::{VsockListener, VsockStream, VMADDR_CID_ANY};

/// Longest Unix socket path the kernel accepts (`sun_path` is 108 bytes, NUL included).
const MAX_UNIX_PATH: usize = 107;

/// How long the hybrid-vsock handshake may take, from the `CONNECT` line to
/// the device's `OK` line. The device answers once the guest accepted (or
/// closes if nothing listens), so a second is generous even under software
/// emulation; a silent device is an error, never a hang.
pub const HYBRID_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// Longest `OK <port>\n` line the handshake reads (`OK ` + a u32 + newline
/// is 14 bytes); anything longer is not the protocol.
const MAX_HYBRID_REPLY: usize = 32;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Addr {
    /// `cid` is `VMADDR_CID_ANY` for `vsock:PORT`.
    Vsock { cid: u32, port: u32 },
    Unix(PathBuf),
    /// `hybrid-vsock:PATH:PORT`: the guest's vsock `port` through the device's
    /// Unix socket at `path`.
    HybridVsock { path: PathBuf, port: u32 },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AddrError {
    /// No `vsock:`, `unix:` or `hybrid-vsock:` prefix.
    UnknownScheme(String),
    /// A CID or port that is not a 32-bit unsigned number.
    BadNumber(String),
    /// `vsock:` with other than one or two fields.
    BadVsock(String),
    /// CIDs 0-2 are the hypervisor's, loopback and the host's (on Nitro, 0-3
    /// are reserved and the parent is 3, which is allowed for connecting to it).
    ReservedCid(u32),
    /// `unix:` with an empty or over-long path.
    BadUnixPath(String),
    /// `hybrid-vsock:` without a `:PORT` after the path.
    BadHybrid(String),
}

impl fmt::Display for AddrError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AddrError::UnknownScheme(s) => write!(f, "address {s:?} must start with vsock:, unix: or hybrid-vsock:"),
            AddrError::BadNumber(s) => write!(f, "{s:?} is not a valid CID or port number"),
            AddrError::BadVsock(s) => write!(f, "vsock address {s:?} must be vsock:PORT or vsock:CID:PORT"),
            AddrError::ReservedCid(c) => write!(f, "CID {c} is reserved (use 3 for the parent, 4 or above for an enclave)"),
            AddrError::BadUnixPath(s) => {
                write!(f, "unix socket path {s:?} must be non-empty and at most {MAX_UNIX_PATH} bytes")
            }
            AddrError::BadHybrid(s) => write!(f, "hybrid vsock address {s:?} must be hybrid-vsock:/path/to/socket:PORT"),
        }
    }
}

impl std::error::Error for AddrError {}

impl FromStr for Addr {
    type Err = AddrError;

    fn from_str(s: &str) -> Result<Addr, AddrError> {
        if let Some(rest) = s.strip_prefix("vsock:") {
            let num = |t: &str| t.parse::<u32>().map_err(|_| AddrError::BadNumber(t.to_string()));
            let fields: Vec<&str> = rest.split(':').collect();
            let (cid, port) = match fields.as_slice() {
                [port] => (VMADDR_CID_ANY, num(port)?),
                [cid, port] => (num(cid)?, num(port)?),
                _ => return Err(AddrError::BadVsock(s.to_string())),
            };
            if cid <= 2 {
                return Err(AddrError::ReservedCid(cid));
            }
            Ok(Addr::Vsock { cid, port })
        } else if let Some(path) = s.strip_prefix("unix:") {
            Ok(Addr::Unix(unix_path(path)?))
        } else if let Some(rest) = s.strip_prefix("hybrid-vsock:") {
            // The port is after the last colon, so a path may contain colons.
            let (path, port) = rest.rsplit_once(':').ok_or_else(|| AddrError::BadHybrid(s.to_string()))?;
            let port = port.parse::<u32>().map_err(|_| AddrError::BadNumber(port.to_string()))?;
            Ok(Addr::HybridVsock { path: unix_path(path)?, port })
        } else {
            Err(AddrError::UnknownScheme(s.to_string()))
        }
    }
}

fn unix_path(path: &str) -> Result<PathBuf, AddrError> {
    if path.is_empty() || path.len() > MAX_UNIX_PATH {
        return Err(AddrError::BadUnixPath(path.to_string()));
    }
    Ok(PathBuf::from(path))
}

impl fmt::Display for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Addr::Vsock { cid, port } if *cid == VMADDR_CID_ANY => write!(f, "vsock:{port}"),
            Addr::Vsock { cid, port } => write!(f, "vsock:{cid}:{port}"),
            Addr::Unix(p) => write!(f, "unix:{}", p.display()),
            Addr::HybridVsock { path, port } => write!(f, "hybrid-vsock:{}:{port}", path.display()),
        }
    }
}

/// A connected stream of either kind.
pub enum Stream {
    Unix(UnixStream),
    Vsock(VsockStream),
}

impl Stream {
    pub fn connect(addr: &Addr) -> io::Result<Stream> {
        match addr {
            Addr::Unix(p) => UnixStream::connect(p).map(Stream::Unix),
            Addr::Vsock { cid, port } => VsockStream::connect_with_cid_port(*cid, *port).map(Stream::Vsock),
            Addr::HybridVsock { path, port } => hybrid_connect(path, *port, HYBRID_HANDSHAKE_TIMEOUT).map(Stream::Unix),
        }
    }

    pub fn set_read_timeout(&self, d: Option<Duration>) -> io::Result<()> {
        match self {
            Stream::Unix(s) => s.set_read_timeout(d),
            Stream::Vsock(s) => s.set_read_timeout(d),
        }
    }

    pub fn set_write_timeout(&self, d: Option<Duration>) -> io::Result<()> {
        match self {
            Stream::Unix(s) => s.set_write_timeout(d),
            Stream::Vsock(s) => s.set_write_timeout(d),
        }
    }

    pub fn shutdown(&self) -> io::Result<()> {
        match self {
            Stream::Unix(s) => s.shutdown(std::net::Shutdown::Both),
            Stream::Vsock(s) => s.shutdown(std::net::Shutdown::Both),
        }
    }

    /// Stops writing; the peer reads end of stream after what was sent.
    pub fn shutdown_write(&self) -> io::Result<()> {
        match self {
            Stream::Unix(s) => s.shutdown(std::net::Shutdown::Write),
            Stream::Vsock(s) => s.shutdown(std::net::Shutdown::Write),
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Unix(s) => s.read(buf),
            Stream::Vsock(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Unix(s) => s.write(buf),
            Stream::Vsock(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Unix(s) => s.flush(),
            Stream::Vsock(s) => s.flush(),
        }
    }
}

impl AsFd for Stream {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Stream::Unix(s) => s.as_fd(),
            Stream::Vsock(s) => s.as_fd(),
        }
    }
}

/// Connects to the guest's vsock `port` through the device's Unix socket:
///
/// ```text
///  -> CONNECT <port>\n
///  <- OK <host port>\n      then the stream is the guest's
/// ```
///
/// The reply is read one byte at a time, so nothing of the guest's stream is
/// taken with it. A closed socket (nothing listens on that port in the guest)
/// is `ConnectionRefused`; a reply that is not `OK <number>` is `InvalidData`.
fn hybrid_connect(path: &std::path::Path, port: u32, timeout: Duration) -> io::Result<UnixStream> {
    let mut s = UnixStream::connect(path)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    s.write_all(format!("CONNECT {port}\n").as_bytes())?;
    let mut line = Vec::with_capacity(MAX_HYBRID_REPLY);
    let mut byte = [0u8; 1];
    loop {
        match s.read(&mut byte) {
            Ok(0) => {
                let why = format!("nothing listens on vsock port {port} behind {}", path.display());
                return Err(io::Error::new(io::ErrorKind::ConnectionRefused, why));
            }
            Ok(_) if byte[0] == b'\n' => break,
            Ok(_) if line.len() < MAX_HYBRID_REPLY => line.push(byte[0]),
            Ok(_) => return Err(io::Error::new(io::ErrorKind::InvalidData, "hybrid vsock reply too long")),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                return Err(io::Error::new(io::ErrorKind::TimedOut, "no hybrid vsock reply in time"));
            }
            Err(e) => return Err(e),
        }
    }
    let ok = std::str::from_utf8(&line).ok().and_then(|l| l.strip_prefix("OK ")).is_some_and(|n| n.parse::<u32>().is_ok());
    if !ok {
        let why = format!("hybrid vsock reply {:?} is not OK <port>", String::from_utf8_lossy(&line));
        return Err(io::Error::new(io::ErrorKind::InvalidData, why));
    }
    s.set_read_timeout(None)?;
    s.set_write_timeout(None)?;
    Ok(s)
}

/// Waits up to `timeout` for `fd` to become readable (data, end of stream or
/// error). `Ok(false)` on timeout or signal: the caller re-checks its state.
pub fn wait_readable(fd: &impl AsFd, timeout: Duration) -> io::Result<bool> {
    let ms = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
    let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
    match poll(&mut fds, PollTimeout::from(ms)) {
        Ok(0) | Err(nix::errno::Errno::EINTR) => Ok(false),
        Ok(_) => Ok(true),
        Err(e) => Err(e.into()),
    }
}

/// Whether the peer of `fd` has hung up, without taking anything from it:
/// a non-blocking peek that finds the end of the stream (or an error) says
/// so; pending data or nothing yet means the peer is still there.
pub fn peer_hung_up(fd: &impl AsFd) -> bool {
    let flags = MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT;
    match recv(fd.as_fd().as_raw_fd(), &mut [0u8; 1], flags) {
        Ok(0) => true,
        Ok(_) | Err(Errno::EAGAIN | Errno::EINTR) => false,
        Err(_) => true,
    }
}

/// A listening socket of either kind.
pub enum Listener {
    Unix(UnixListener),
    Vsock(VsockListener),
}

impl Listener {
    /// Binds `addr`. A Unix socket file left behind by a dead server is
    /// removed first; one that still answers is an `AddrInUse` error.
    pub fn bind(addr: &Addr) -> io::Result<Listener> {
        match addr {
            Addr::Unix(p) => {
                if let Ok(meta) = std::fs::symlink_metadata(p) {
                    if meta.file_type().is_socket() && UnixStream::connect(p).is_err() {
                        std::fs::remove_file(p)?;
                    }
                }
                UnixListener::bind(p).map(Listener::Unix)
            }
            Addr::Vsock { cid, port } => VsockListener::bind_with_cid_port(*cid, *port).map(Listener::Vsock),
            Addr::HybridVsock { .. } => Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!("{addr} can only be connected to: the guest listens on vsock, not the host"),
            )),
        }
    }

    /// Waits up to `timeout` for a connection. `Ok(None)` when none came, so
    /// the caller can look at its shutdown flag between waits.
    pub fn accept_timeout(&self, timeout: Duration) -> io::Result<Option<Stream>> {
        if !wait_readable(self, timeout)? {
            return Ok(None);
        }
        let stream = match self {
            Listener::Unix(l) => l.accept().map(|(s, _)| Stream::Unix(s)),
            Listener::Vsock(l) => l.accept().map(|(s, _)| Stream::Vsock(s)),
        };
        match stream {
            Ok(s) => Ok(Some(s)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::Interrupted => Ok(None),
            Err(e) => Err(e),
        }
    }
}

impl AsFd for Listener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Listener::Unix(l) => l.as_fd(),
            Listener::Vsock(l) => l.as_fd(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Addr, AddrError> {
        s.parse()
    }

    #[test]
    fn parses_vsock_forms() {
        assert_eq!(parse("vsock:5005"), Ok(Addr::Vsock { cid: VMADDR_CID_ANY, port: 5005 }));
        assert_eq!(parse("vsock:16:5005"), Ok(Addr::Vsock { cid: 16, port: 5005 }));
        assert_eq!(parse("vsock:3:8000"), Ok(Addr::Vsock { cid: 3, port: 8000 }));
    }

    #[test]
    fn parses_unix() {
        assert_eq!(parse("unix:/tmp/x.sock"), Ok(Addr::Unix(PathBuf::from("/tmp/x.sock"))));
        assert_eq!(parse("unix:rel.sock"), Ok(Addr::Unix(PathBuf::from("rel.sock"))));
    }

    #[test]
    fn rejects_bad_addresses_with_the_right_error() {
        assert_eq!(parse("tcp:1.2.3.4:80"), Err(AddrError::UnknownScheme("tcp:1.2.3.4:80".into())));
        assert_eq!(parse("5005"), Err(AddrError::UnknownScheme("5005".into())));
        assert_eq!(parse("vsock:"), Err(AddrError::BadNumber("".into())));
        assert_eq!(parse("vsock:x"), Err(AddrError::BadNumber("x".into())));
        assert_eq!(parse("vsock:16:-1"), Err(AddrError::BadNumber("-1".into())));
        assert_eq!(parse("vsock:16:99999999999"), Err(AddrError::BadNumber("99999999999".into())));
        assert_eq!(parse("vsock:1:2:3"), Err(AddrError::BadVsock("vsock:1:2:3".into())));
        assert_eq!(parse("vsock:2:5005"), Err(AddrError::ReservedCid(2)));
        assert_eq!(parse("vsock:1:5005"), Err(AddrError::ReservedCid(1)));
        assert_eq!(parse("vsock:0:5005"), Err(AddrError::ReservedCid(0)));
        assert_eq!(parse("unix:"), Err(AddrError::BadUnixPath("".into())));
        let long = format!("unix:/{}", "a".repeat(200));
        assert!(matches!(parse(&long), Err(AddrError::BadUnixPath(_))));
    }

    #[test]
    fn parses_hybrid_vsock() {
        let addr = |path: &str, port| Ok(Addr::HybridVsock { path: PathBuf::from(path), port });
        assert_eq!(parse("hybrid-vsock:/run/emu/vsock.sock:5005"), addr("/run/emu/vsock.sock", 5005));
        assert_eq!(parse("hybrid-vsock:/odd:name.sock:7"), addr("/odd:name.sock", 7));
        assert_eq!(parse("hybrid-vsock:/run/v.sock"), Err(AddrError::BadHybrid("hybrid-vsock:/run/v.sock".into())));
        assert_eq!(parse("hybrid-vsock:nocolon"), Err(AddrError::BadHybrid("hybrid-vsock:nocolon".into())));
        assert_eq!(parse("hybrid-vsock::5005"), Err(AddrError::BadUnixPath("".into())));
        assert_eq!(parse("hybrid-vsock:/v.sock:x"), Err(AddrError::BadNumber("x".into())));
        let bound = Listener::bind(&parse("hybrid-vsock:/run/v.sock:5005").unwrap());
        assert_eq!(bound.err().map(|e| e.kind()), Some(io::ErrorKind::Unsupported));
    }

    /// What the stand-in device does after the CONNECT line.
    #[derive(Debug, Clone, Copy)]
    enum Device {
        /// Answers, then sends "guest" and echoes 4 bytes.
        Reply(&'static [u8]),
        /// Closes: nothing listens on that port in the guest.
        Close,
        /// Says nothing for 2 s.
        Silent,
    }

    /// A stand-in for the vsock device's Unix socket.
    fn fake_device(dir: &std::path::Path, device: Device) -> PathBuf {
        let path = dir.join("vsock.sock");
        let listener = UnixListener::bind(&path).unwrap();
        std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut line = Vec::new();
            let mut b = [0u8; 1];
            while s.read(&mut b).unwrap() == 1 && b[0] != b'\n' {
                line.push(b[0]);
            }
            assert_eq!(line, b"CONNECT 5005");
            match device {
                Device::Close => {}
                Device::Silent => std::thread::sleep(Duration::from_secs(2)),
                Device::Reply(reply) => {
                    // The reply and the guest's first bytes in one write: the
                    // handshake must not swallow the latter.
                    let _ = s.write_all(&[reply, b"guest"].concat());
                    let mut buf = [0u8; 4];
                    if s.read_exact(&mut buf).is_ok() {
                        s.write_all(&buf).unwrap();
                    }
                }
            }
        });
        path
    }

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("transport-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn hybrid_handshake_then_the_guest_stream() {
        let dir = scratch("hybrid");
        let path = fake_device(&dir, Device::Reply(b"OK 1073741824\n"));
        let mut s = Stream::connect(&Addr::HybridVsock { path, port: 5005 }).unwrap();
        let mut buf = [0u8; 5];
        s.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"guest");
        s.write_all(b"ping").unwrap();
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"ping");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn hybrid_refusals_have_their_kinds() {
        let cases = [
            (Device::Close, io::ErrorKind::ConnectionRefused),
            (Device::Reply(b"ERR no listener\n"), io::ErrorKind::InvalidData),
            (Device::Reply(b"OK port\n"), io::ErrorKind::InvalidData),
            (Device::Reply(&[b'O'; 40]), io::ErrorKind::InvalidData),
            (Device::Silent, io::ErrorKind::TimedOut),
        ];
        for (i, (device, kind)) in cases.into_iter().enumerate() {
            let dir = scratch(&format!("hybrid-refused-{i}"));
            let path = fake_device(&dir, device);
            let got = hybrid_connect(&path, 5005, Duration::from_millis(300)).map(|_| ());
            assert_eq!(got.err().map(|e| e.kind()), Some(kind), "{device:?}");
            std::fs::remove_dir_all(&dir).unwrap();
        }
    }

    #[test]
    fn display_round_trips() {
        for s in ["vsock:5005", "vsock:16:5005", "unix:/run/x.sock", "hybrid-vsock:/run/v.sock:5005"] {
            assert_eq!(parse(s).map(|a| a.to_string()), Ok(s.to_string()));
        }
    }

    #[test]
    fn unix_listener_accepts_and_replaces_stale_socket() {
        let dir = std::env::temp_dir().join(format!("transport-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let addr = Addr::Unix(dir.join("s.sock"));
        drop(Listener::bind(&addr).unwrap()); // leaves a stale socket file behind
        let l = Listener::bind(&addr).unwrap();
        assert!(l.accept_timeout(Duration::from_millis(10)).unwrap().is_none());
        let mut c = Stream::connect(&addr).unwrap();
        let mut s = l.accept_timeout(Duration::from_secs(5)).unwrap().unwrap();
        c.write_all(b"hi").unwrap();
        let mut buf = [0u8; 2];
        s.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"hi");
        // A live socket is not stolen.
        assert_eq!(Listener::bind(&addr).err().map(|e| e.kind()), Some(io::ErrorKind::AddrInUse));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
