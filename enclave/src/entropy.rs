//! Entropy at enclave boot.
//!
//! An enclave boots with no disk, no network, no interrupts from real devices and no saved
//! random seed, so the kernel's random pool may still be uninitialised when our server starts;
//! `getrandom` then blocks, and anything that needs randomness (hash-map keys, TLS, nonces)
//! hangs. The AWS init in an EIF does nothing about this. What the enclave does have is the
//! Nitro Secure Module (NSM): recent kernels register it as a hardware RNG, `/dev/hwrng`.
//!
//! [`seed_at_boot`] runs first thing in `main`:
//!
//! 1. Ask the kernel, without blocking, whether the pool is ready (`getrandom` with
//!    `GRND_NONBLOCK`). If it is, do nothing: the kernel already seeded itself (often from the
//!    very same NSM device, through its `hwrng` thread).
//! 2. Otherwise read [`SEED_BYTES`] from `/dev/hwrng`, waiting at most [`HWRNG_TIMEOUT`]. The
//!    NSM driver only answers blocking reads (it returns nothing to `O_NONBLOCK` readers), so
//!    the read runs on a helper thread and we stop waiting for it at the deadline.
//! 3. Credit those bytes to the pool with the `RNDADDENTROPY` ioctl on `/dev/random`, at
//!    8 bits per byte: the NSM is a hardware TRNG inside the trusted boundary.
//! 4. Check again that the pool is now ready.
//!
//! Every way this can fail ends in a typed [`EntropyError`] whose text says what to do; it never
//! hangs. The caller decides whether to exit (it should: a server without entropy is broken).
//!
//! [`mix_uncredited`] is for bytes from the parent instance (the `Seed` frame). The parent is
//! untrusted, so its bytes are written to `/dev/urandom`, which mixes them into the pool
//! **without crediting any entropy**: they can only add unpredictability, never stand in for it.
//!
//! What this module refuses: crediting anything that did not come from `/dev/hwrng`; waiting
//! without a bound; and `unsafe` outside the two system calls below, each with its SAFETY note.
//! With nsm.rs's ioctl, these are the only `unsafe` code in the enclave crate.
//!
//! The decision logic ([`seed_with`]) talks to the OS only through the [`EntropyOs`] trait, so
//! the tests drive every branch with a fake and never touch the real devices.

#![deny(unsafe_op_in_unsafe_fn)]
#![allow(unsafe_code)] // reason: getrandom(GRND_NONBLOCK) and ioctl(RNDADDENTROPY), nothing else

use std::fmt;
use std::fs::OpenOptions;
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::libc;

/// How many bytes we read from the hardware RNG and credit: 512 bits, twice the 256 bits the
/// kernel's CRNG needs to count as initialised.
pub const SEED_BYTES: usize = 64;

/// How long we wait for the hardware RNG. One NSM request takes milliseconds; five seconds is
/// generous and still short enough that a broken device shows up at once in the console.
pub const HWRNG_TIMEOUT: Duration = Duration::from_secs(5);

/// The largest parent-supplied buffer [`mix_uncredited`] accepts. The kernel would take more,
/// but mixing more than a page adds nothing and the parent is untrusted.
pub const MAX_MIX_BYTES: usize = 4096;

/// The kernel's hardware-RNG character device (the NSM registers itself as `nsm-hwrng`).
pub const HWRNG_PATH: &str = "/dev/hwrng";

/// `RNDADDENTROPY` from `<linux/random.h>`: `_IOW('R', 0x03, int[2])`.
///
/// ```text
///  bits 31-30  29-16          15-8        7-0
///       dir=01 size=8         type='R'    nr=0x03
///       write  (two c_int)    0x52
/// ```
const RNDADDENTROPY: libc::c_ulong = (1 << 30) | (8 << 16) | ((b'R' as libc::c_ulong) << 8) | 0x03;

/// The argument of `RNDADDENTROPY`, `struct rand_pool_info` with its flexible array sized for
/// one seed: the kernel reads the two counts, then `buf_size` bytes that follow them.
#[repr(C)]
struct RandPoolInfo {
    entropy_count: libc::c_int,
    buf_size: libc::c_int,
    buf: [u8; SEED_BYTES],
}

/// The three things seeding needs from the operating system: the seam the tests replace.
pub trait EntropyOs {
    /// Whether the kernel's pool is initialised, asked without blocking.
    fn pool_ready(&mut self) -> io::Result<bool>;
    /// Fills `buf` from the hardware RNG, giving up after `timeout` with
    /// `ErrorKind::TimedOut`. Returns how many bytes it read (fewer on end of file).
    fn read_hwrng(&mut self, buf: &mut [u8], timeout: Duration) -> io::Result<usize>;
    /// Adds `bytes` to the pool and credits 8 bits of entropy per byte.
    fn credit(&mut self, bytes: &[u8]) -> io::Result<()>;
}

/// What [`seed_at_boot`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// The pool was already initialised; nothing was read or credited.
    AlreadyReady,
    /// The pool was not initialised; this many bytes from `/dev/hwrng` were credited.
    Credited { bytes: usize },
}

/// The outcome of a successful seeding, printed as one log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Report {
    pub action: Action,
    pub elapsed: Duration,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.action {
            Action::AlreadyReady => write!(f, "kernel pool already initialised, nothing to do ({:?})", self.elapsed),
            Action::Credited { bytes } => write!(
                f,
                "kernel pool was not initialised; credited {bytes} bytes ({} bits) \
                 from {HWRNG_PATH} ({:?})",
                bytes * 8,
                self.elapsed
            ),
        }
    }
}

/// Why the pool could not be seeded. The text is what the operator reads in the console.
#[derive(Debug)]
pub enum EntropyError {
    /// `getrandom(GRND_NONBLOCK)` failed with something other than "not ready yet".
    Probe(io::Error),
    /// `/dev/hwrng` could not be opened or read (missing on kernels without the NSM driver).
    HwrngUnavailable(io::Error),
    /// `/dev/hwrng` gave no answer within the timeout.
    HwrngTimeout(Duration),
    /// `/dev/hwrng` ended before giving a full seed.
    HwrngShortRead { got: usize, want: usize },
    /// The `RNDADDENTROPY` ioctl failed (it needs `CAP_SYS_ADMIN`).
    Credit(io::Error),
    /// The bytes were credited but the kernel still reports the pool as not ready.
    StillNotReady,
}

impl fmt::Display for EntropyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Probe(e) => write!(f, "cannot ask the kernel whether its random pool is ready: {e}"),
            Self::HwrngUnavailable(e) => write!(
                f,
                "random pool not initialised and {HWRNG_PATH} is unusable ({e}); \
                 this kernel lacks the NSM hardware RNG driver: use a newer nitro-cli blob set"
            ),
            Self::HwrngTimeout(t) => {
                write!(f, "random pool not initialised and {HWRNG_PATH} gave nothing within {t:?}")
            }
            Self::HwrngShortRead { got, want } => {
                write!(f, "{HWRNG_PATH} returned {got} bytes, expected {want}")
            }
            Self::Credit(e) => write!(
                f,
                "crediting hardware RNG bytes with RNDADDENTROPY failed: {e} \
                 (the enclave process must run as root)"
            ),
            Self::StillNotReady => {
                write!(f, "credited {SEED_BYTES} bytes but the kernel pool is still not initialised")
            }
        }
    }
}

impl std::error::Error for EntropyError {}

/// Makes sure the kernel's random pool is initialised, using the real devices. Call it before
/// anything that may need randomness.
pub fn seed_at_boot() -> Result<Report, EntropyError> {
    seed_with(&mut RealOs)
}

/// The decision logic of [`seed_at_boot`], over any [`EntropyOs`].
pub fn seed_with(os: &mut impl EntropyOs) -> Result<Report, EntropyError> {
    let start = Instant::now();
    if os.pool_ready().map_err(EntropyError::Probe)? {
        return Ok(Report { action: Action::AlreadyReady, elapsed: start.elapsed() });
    }

    let mut seed = [0u8; SEED_BYTES];
    let got = os.read_hwrng(&mut seed, HWRNG_TIMEOUT).map_err(|e| match e.kind() {
        io::ErrorKind::TimedOut => EntropyError::HwrngTimeout(HWRNG_TIMEOUT),
        _ => EntropyError::HwrngUnavailable(e),
    })?;
    if got < SEED_BYTES {
        return Err(EntropyError::HwrngShortRead { got, want: SEED_BYTES });
    }
    let credited = os.credit(&seed).map_err(EntropyError::Credit);
    seed.fill(0);
    credited?;

    if !os.pool_ready().map_err(EntropyError::Probe)? {
        return Err(EntropyError::StillNotReady);
    }
    Ok(Report { action: Action::Credited { bytes: got }, elapsed: start.elapsed() })
}

/// Mixes `bytes` into the kernel pool without crediting any entropy (for the untrusted parent's
/// `Seed` frame). Refuses more than [`MAX_MIX_BYTES`].
pub fn mix_uncredited(bytes: &[u8]) -> io::Result<()> {
    mix_into(Path::new("/dev/urandom"), bytes)
}

fn mix_into(device: &Path, bytes: &[u8]) -> io::Result<()> {
    if bytes.len() > MAX_MIX_BYTES {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("seed of {} bytes is larger than the {MAX_MIX_BYTES}-byte maximum", bytes.len()),
        ));
    }
    OpenOptions::new().write(true).open(device)?.write_all(bytes)
}

/// The real operating system: `getrandom`, `/dev/hwrng`, `/dev/random`.
struct RealOs;

impl EntropyOs for RealOs {
    fn pool_ready(&mut self) -> io::Result<bool> {
        let mut byte = [0u8; 1];
        loop {
            // SAFETY: the pointer and length describe `byte`, a live, writable 1-byte buffer
            // owned by this frame; getrandom writes at most that many bytes and keeps no pointer.
            let n = unsafe { libc::getrandom(byte.as_mut_ptr().cast(), byte.len(), libc::GRND_NONBLOCK) };
            match Errno::result(n) {
                Ok(_) => return Ok(true),
                Err(Errno::EAGAIN) => return Ok(false),
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    fn read_hwrng(&mut self, buf: &mut [u8], timeout: Duration) -> io::Result<usize> {
        let want = buf.len();
        let (tx, rx) = mpsc::channel();
        // If the device never answers, this thread stays blocked in read(2); we stop waiting
        // and report the timeout. Nothing else runs on it.
        thread::Builder::new().name("hwrng".into()).spawn(move || {
            let mut data = vec![0u8; want];
            let result = OpenOptions::new().read(true).open(HWRNG_PATH).and_then(|mut dev| {
                let mut filled = 0;
                while filled < want {
                    match dev.read(&mut data[filled..]) {
                        Ok(0) => break,
                        Ok(n) => filled += n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e),
                    }
                }
                Ok(filled)
            });
            let _ = tx.send(result.map(|n| (data, n)));
        })?;
        match rx.recv_timeout(timeout) {
            Ok(Ok((data, n))) => {
                buf[..n].copy_from_slice(&data[..n]);
                Ok(n)
            }
            Ok(Err(e)) => Err(e),
            Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "hardware RNG did not answer")),
        }
    }

    fn credit(&mut self, bytes: &[u8]) -> io::Result<()> {
        let mut info = RandPoolInfo { entropy_count: 0, buf_size: 0, buf: [0; SEED_BYTES] };
        let len = bytes.len().min(SEED_BYTES);
        info.buf[..len].copy_from_slice(&bytes[..len]);
        // Both fit in a c_int: len <= SEED_BYTES = 64.
        info.buf_size = len as libc::c_int;
        info.entropy_count = (len * 8) as libc::c_int;
        let random = OpenOptions::new().write(true).open("/dev/random")?;
        // SAFETY: `random` is an open descriptor for the whole call; `info` is a live
        // `#[repr(C)] rand_pool_info` whose `buf` holds `buf_size` initialised bytes, which is
        // all the kernel reads; the kernel only reads through the pointer and keeps no copy of it.
        let rc = unsafe { libc::ioctl(random.as_raw_fd(), RNDADDENTROPY, &info as *const RandPoolInfo) };
        info.buf.fill(0);
        Errno::result(rc).map(drop).map_err(io::Error::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A scripted OS: each field is what the next call answers; calls are recorded.
    struct FakeOs {
        ready: Vec<io::Result<bool>>,
        hwrng: Option<io::Result<usize>>,
        credit: Option<io::Result<()>>,
        calls: Vec<&'static str>,
        credited: Vec<u8>,
    }

    impl FakeOs {
        fn new(ready: Vec<io::Result<bool>>) -> Self {
            FakeOs { ready, hwrng: None, credit: None, calls: Vec::new(), credited: Vec::new() }
        }
    }

    impl EntropyOs for FakeOs {
        fn pool_ready(&mut self) -> io::Result<bool> {
            self.calls.push("pool_ready");
            self.ready.remove(0)
        }
        fn read_hwrng(&mut self, buf: &mut [u8], timeout: Duration) -> io::Result<usize> {
            self.calls.push("read_hwrng");
            assert_eq!(timeout, HWRNG_TIMEOUT);
            let n = self.hwrng.take().expect("unexpected hwrng read")?;
            buf[..n].fill(0xA5);
            Ok(n)
        }
        fn credit(&mut self, bytes: &[u8]) -> io::Result<()> {
            self.calls.push("credit");
            self.credited = bytes.to_vec();
            self.credit.take().expect("unexpected credit")
        }
    }

    #[test]
    fn pool_already_ready_does_nothing() {
        let mut os = FakeOs::new(vec![Ok(true)]);
        let report = seed_with(&mut os).unwrap();
        assert_eq!(report.action, Action::AlreadyReady);
        assert_eq!(os.calls, ["pool_ready"]);
        assert!(report.to_string().starts_with("kernel pool already initialised"));
    }

    #[test]
    fn not_ready_and_hwrng_works_credits_a_full_seed() {
        let mut os = FakeOs::new(vec![Ok(false), Ok(true)]);
        os.hwrng = Some(Ok(SEED_BYTES));
        os.credit = Some(Ok(()));
        let report = seed_with(&mut os).unwrap();
        assert_eq!(report.action, Action::Credited { bytes: SEED_BYTES });
        assert_eq!(os.calls, ["pool_ready", "read_hwrng", "credit", "pool_ready"]);
        assert_eq!(os.credited, vec![0xA5; SEED_BYTES]);
        assert!(report.to_string().contains("credited 64 bytes (512 bits) from /dev/hwrng"));
    }

    #[test]
    fn hwrng_missing_is_unavailable() {
        let mut os = FakeOs::new(vec![Ok(false)]);
        os.hwrng = Some(Err(io::Error::from(io::ErrorKind::NotFound)));
        let err = seed_with(&mut os).unwrap_err();
        assert!(matches!(&err, EntropyError::HwrngUnavailable(e) if e.kind() == io::ErrorKind::NotFound));
        assert_eq!(os.calls, ["pool_ready", "read_hwrng"]);
        assert!(err.to_string().contains("/dev/hwrng is unusable"));
    }

    #[test]
    fn hwrng_timeout_is_reported_not_waited_on() {
        let mut os = FakeOs::new(vec![Ok(false)]);
        os.hwrng = Some(Err(io::Error::from(io::ErrorKind::TimedOut)));
        let err = seed_with(&mut os).unwrap_err();
        assert!(matches!(err, EntropyError::HwrngTimeout(t) if t == HWRNG_TIMEOUT));
        assert_eq!(os.calls, ["pool_ready", "read_hwrng"]);
    }

    #[test]
    fn hwrng_short_read_credits_nothing() {
        let mut os = FakeOs::new(vec![Ok(false)]);
        os.hwrng = Some(Ok(10));
        let err = seed_with(&mut os).unwrap_err();
        assert!(matches!(err, EntropyError::HwrngShortRead { got: 10, want: SEED_BYTES }));
        assert_eq!(os.calls, ["pool_ready", "read_hwrng"]);
    }

    #[test]
    fn credit_failure_is_reported() {
        let mut os = FakeOs::new(vec![Ok(false)]);
        os.hwrng = Some(Ok(SEED_BYTES));
        os.credit = Some(Err(io::Error::from_raw_os_error(libc::EPERM)));
        let err = seed_with(&mut os).unwrap_err();
        assert!(matches!(&err, EntropyError::Credit(e) if e.raw_os_error() == Some(libc::EPERM)));
        assert_eq!(os.calls, ["pool_ready", "read_hwrng", "credit"]);
    }

    #[test]
    fn still_not_ready_after_credit_is_an_error() {
        let mut os = FakeOs::new(vec![Ok(false), Ok(false)]);
        os.hwrng = Some(Ok(SEED_BYTES));
        os.credit = Some(Ok(()));
        assert!(matches!(seed_with(&mut os), Err(EntropyError::StillNotReady)));
    }

    #[test]
    fn probe_failure_is_reported() {
        let mut os = FakeOs::new(vec![Err(io::Error::from_raw_os_error(libc::ENOSYS))]);
        assert!(matches!(seed_with(&mut os), Err(EntropyError::Probe(_))));
        assert_eq!(os.calls, ["pool_ready"]);
    }

    #[test]
    fn rndaddentropy_request_code_matches_the_kernel_header() {
        // _IOW('R', 0x03, int[2]) on x86_64 and aarch64.
        assert_eq!(RNDADDENTROPY, 0x4008_5203);
        assert_eq!(std::mem::size_of::<RandPoolInfo>(), 2 * 4 + SEED_BYTES);
    }

    #[test]
    fn mix_writes_the_bytes_and_bounds_them() {
        let path = std::env::temp_dir().join(format!("entropy-mix-{}", std::process::id()));
        std::fs::write(&path, b"").unwrap();
        mix_into(&path, b"parent seed").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"parent seed");
        let err = mix_into(&path, &[0u8; MAX_MIX_BYTES + 1]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn mix_uncredited_accepts_a_small_seed() {
        // Writing to /dev/urandom only mixes; it credits nothing and needs no privilege.
        mix_uncredited(b"test seed").unwrap();
    }
}
