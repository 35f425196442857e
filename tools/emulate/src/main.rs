//! `emulate`: boots an EIF in QEMU, with vsock, on any Linux machine.
//!
//! ```text
//! emulate --eif FILE --run-dir DIR [--cid 16] [--memory-mib N] [--cpus 2] [--rng on|off]
//!         [--cpu-rng on|off] [--kvm] [--heartbeat-timeout SECONDS]
//! ```
//!
//! It does for an emulation EIF (Debian kernel, tools/emu-init, the production app ramdisk)
//! what `nitro-cli run-enclave` does for a real one, with QEMU 7.2, which has no `nitro-enclave`
//! machine, and vhost-device-vsock 0.3.0 in its Unix-socket ("hybrid") mode:
//!
//! 1. reads the whole EIF and checks it with `eif::Eif::read` (header, CRC, sections), as QEMU's
//!    own EIF loader would, and prints its PCRs;
//! 2. writes DIR/kernel (the bzImage), DIR/initrd (the ramdisks, concatenated, uncompressed) and
//!    DIR/cmdline (the EIF's command line). QEMU gets that line plus, under TCG only,
//!    `tsc_early_khz=<host TSC kHz>` (see `TSC_PARAM`): a fact about the emulated hardware, not
//!    a setting of the image, unmeasured, as QEMU's nitro-enclave machine's `-append` is;
//! 3. listens on DIR/vsock.sock_9000 for the heartbeat, before anything can send it;
//! 4. starts `vhost-device-vsock --vm guest-cid=CID,socket=DIR/vhost.sock,uds-path=DIR/vsock.sock`;
//! 5. starts QEMU: `microvm` (virtio-mmio found through ACPI, no PCI), TCG unless `--kvm`, guest
//!    memory in a shared memfd (vhost-user needs it), the serial console in DIR/console.log, and
//!    a virtio-rng device unless `--rng off` (standing in for the NSM's hardware RNG);
//! 6. waits for the 0xB7 heartbeat within nitro-cli's limit (90 s per started 6 GiB of EIF),
//!    echoes it and prints `emulate: heartbeat after X.XX s`;
//! 7. runs until SIGINT, SIGTERM or SIGHUP, or until QEMU or the vhost daemon exits; then stops
//!    QEMU and the daemon (SIGTERM, then SIGKILL) and removes the sockets, the pid file, the lock
//!    and the extracted kernel and initrd. The logs (console.log, qemu.log, vhost.log) stay.
//!
//! The host reaches the guest's port P through DIR/vsock.sock: connect, write `CONNECT P\n`,
//! read `OK <n>\n`, then the raw stream (the `shared` crate's `hybrid-vsock:` transport). The
//! guest reaches the host by dialling CID 2 port P, which the daemon turns into a connection to
//! DIR/vsock.sock_P. The heartbeat is one of those.
//!
//! Exit status: 0 stopped by a signal, as asked; 1 could not start or a helper failed (QEMU or
//! vhost-device-vsock missing: `make emulate-deps`); 2 usage; 3 no heartbeat in time (or a wrong
//! one); 4 QEMU exited by itself (the enclave powered off or crashed: see DIR/console.log).
//!
//! What it refuses: a second launcher on the same run directory (an exclusive lock), a run
//! directory whose socket paths would not fit a Unix socket address or that contains a comma
//! (QEMU's and the daemon's option syntax), and host AF_VSOCK: the host side is Unix sockets only.
//! Children get SIGKILL if this process dies without cleaning up (PR_SET_PDEATHSIG), so a killed
//! launcher leaves no QEMU behind.
//!
//! Emulation is not Nitro: the kernel is Debian's, there is no NSM (QEMU 7.2 has no virtio-nsm),
//! and the timings are software emulation's: they say nothing about Nitro's.
#![deny(unsafe_code)]

mod args;

use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use eif::{Eif, EifError};
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::unistd::Pid;

use args::Options;

/// The heartbeat's port and byte (nitro-cli `ENCLAVE_READY_VSOCK_PORT`, AWS init `HEART_BEAT`).
const HEARTBEAT_PORT: u32 = 9000;
const HEARTBEAT: u8 = 0xB7;
/// nitro-cli's heartbeat limit: 90 s for each started 6 GiB of EIF (`calculate_necessary_timeout`).
const HEARTBEAT_TIMEOUT_PER_UNIT: Duration = Duration::from_secs(90);
const HEARTBEAT_EIF_UNIT: u64 = 6 << 30;
/// Once the guest has connected, how long its one byte may take.
const HEARTBEAT_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// How long vhost-device-vsock may take to create its socket (it takes milliseconds).
const VHOST_READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long QEMU and the daemon get to exit after SIGTERM before SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(3);
/// How often the children are checked while nothing else happens (SIGCHLD also wakes us).
const CHILD_CHECK_INTERVAL: Duration = Duration::from_millis(250);
/// Default guest memory: nitro-cli's floor of 4 x the EIF's size, rounded up to 256 MiB, and
/// at least 512 MiB (what the feasibility runs used); `--memory-mib` overrides it.
const MEMORY_EIF_RATIO: u64 = 4;
const MEMORY_ALIGN_MIB: u64 = 256;
const DEFAULT_MIN_MEMORY_MIB: u64 = 512;
/// sockaddr_un's sun_path holds 108 bytes with the NUL.
const MAX_SOCKET_PATH: usize = 107;
/// Lines of console.log shown when the guest did not come up.
const CONSOLE_TAIL_LINES: usize = 25;

/// Under TCG the guest's TSC is the host's, but the kernel calibrates it against the emulated
/// PIT, whose timing slips when the host is busy: with 2 busy host cores, 1 boot in 3 hung at
/// "tsc: Unable to calibrate against PIT" (microvm has no HPET or ACPI PM timer to fall back
/// on). Telling the kernel the frequency skips the calibration; 0 hangs in the same trial with
/// it. Not used with --kvm (kvmclock).
const TSC_PARAM: &str = "tsc_early_khz";
/// A TSC frequency outside 100 MHz..10 GHz is a misread, not a CPU.
const TSC_KHZ_RANGE: std::ops::RangeInclusive<u64> = 100_000..=10_000_000;

const QEMU: &str = "qemu-system-x86_64";
const VHOST: &str = "vhost-device-vsock";

/// One error type for the launcher; its Display is the message the user sees.
#[derive(Debug)]
enum LaunchError {
    ToolMissing(&'static str),
    Kvm(io::Error),
    RunDir(PathBuf, io::Error),
    BadRunDir(PathBuf, &'static str),
    AlreadyRunning(PathBuf),
    ReadEif(PathBuf, io::Error),
    EifTooLarge(u64),
    Eif(EifError),
    CmdlineNotText,
    Write(PathBuf, io::Error),
    Listen(PathBuf, io::Error),
    Spawn(&'static str, io::Error),
    VhostNotReady(Duration),
    VhostExited(ExitStatus),
    Signals(Errno),
    HeartbeatTimeout(Duration),
    HeartbeatIo(io::Error),
    HeartbeatByte(u8),
    QemuExited {
        status: ExitStatus,
        before_heartbeat: bool,
    },
}

impl fmt::Display for LaunchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ToolMissing(tool) => write!(
                f,
                "{tool} not found in PATH: run `make emulate-deps` (apt-get install --no-install-recommends \
                 qemu-system-x86; cargo install vhost-device-vsock --version 0.3.0 --locked)"
            ),
            Self::Kvm(e) => write!(f, "--kvm: /dev/kvm: {e}"),
            Self::RunDir(p, e) => write!(f, "run directory {}: {e}", p.display()),
            Self::BadRunDir(p, why) => write!(f, "run directory {}: {why}", p.display()),
            Self::AlreadyRunning(p) => write!(f, "another emulate runs in {} (its lock is held)", p.display()),
            Self::ReadEif(p, e) => write!(f, "read {}: {e}", p.display()),
            Self::EifTooLarge(n) => write!(f, "EIF of {n} bytes is over the {}-byte limit", eif::format::MAX_EIF_LEN),
            Self::Eif(e) => write!(f, "not a valid EIF: {e}"),
            Self::CmdlineNotText => write!(f, "the EIF's command line is not UTF-8 text without NUL bytes"),
            Self::Write(p, e) => write!(f, "write {}: {e}", p.display()),
            Self::Listen(p, e) => write!(f, "listen on {}: {e}", p.display()),
            Self::Spawn(tool, e) => write!(f, "start {tool}: {e}"),
            Self::VhostNotReady(t) => write!(f, "{VHOST} did not create its socket within {} s", t.as_secs()),
            Self::VhostExited(s) => write!(f, "{VHOST} exited ({s}); see vhost.log"),
            Self::Signals(e) => write!(f, "signal setup: {e}"),
            Self::HeartbeatTimeout(t) => write!(f, "no heartbeat within {} s; see console.log", t.as_secs()),
            Self::HeartbeatIo(e) => write!(f, "heartbeat: {e}"),
            Self::HeartbeatByte(b) => write!(f, "heartbeat: got {b:#04x}, expected {HEARTBEAT:#04x}"),
            Self::QemuExited { status, before_heartbeat } => write!(
                f,
                "QEMU exited ({status}){}; see console.log",
                if *before_heartbeat { " before the heartbeat" } else { "" }
            ),
        }
    }
}

impl LaunchError {
    fn exit_code(&self) -> u8 {
        match self {
            Self::HeartbeatTimeout(_) | Self::HeartbeatIo(_) | Self::HeartbeatByte(_) => 3,
            Self::QemuExited { .. } => 4,
            _ => 1,
        }
    }
}

fn say(message: fmt::Arguments<'_>) {
    let _ = writeln!(io::stdout(), "emulate: {message}");
}

macro_rules! say {
    ($($arg:tt)*) => { say(format_args!($($arg)*)) };
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    if argv.iter().any(|a| a == "--help" || a == "-h") {
        println!("{}", args::USAGE);
        return ExitCode::SUCCESS;
    }
    let options = match args::parse(&argv) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("emulate: {e}\n{}", args::USAGE);
            return ExitCode::from(2);
        }
    };
    match run(&options) {
        Ok(signal) => {
            say!("stopped by {signal}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("emulate: error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

/// The files of one run directory.
struct Paths {
    dir: PathBuf,
    kernel: PathBuf,
    initrd: PathBuf,
    cmdline: PathBuf,
    console: PathBuf,
    qemu_log: PathBuf,
    vhost_log: PathBuf,
    qemu_pid: PathBuf,
    lock: PathBuf,
    vhost_sock: PathBuf,
    vsock_sock: PathBuf,
    heartbeat_sock: PathBuf,
}

impl Paths {
    fn new(dir: &Path) -> Paths {
        let p = |name: &str| dir.join(name);
        Paths {
            dir: dir.to_path_buf(),
            kernel: p("kernel"),
            initrd: p("initrd"),
            cmdline: p("cmdline"),
            console: p("console.log"),
            qemu_log: p("qemu.log"),
            vhost_log: p("vhost.log"),
            qemu_pid: p("qemu.pid"),
            lock: p("emulate.lock"),
            vhost_sock: p("vhost.sock"),
            vsock_sock: p("vsock.sock"),
            heartbeat_sock: p(&format!("vsock.sock_{HEARTBEAT_PORT}")),
        }
    }

    /// The longest socket path the daemon may be asked to connect to (`vsock.sock_` + 10 digits)
    /// must fit sun_path, and QEMU's and the daemon's `key=value,...` syntax forbids commas.
    fn check(&self) -> Result<(), LaunchError> {
        let longest = self.vsock_sock.as_os_str().len() + "_4294967295".len();
        if longest > MAX_SOCKET_PATH {
            return Err(LaunchError::BadRunDir(
                self.dir.clone(),
                "too long for Unix socket paths (use a shorter one)",
            ));
        }
        if self.dir.as_os_str().as_encoded_bytes().contains(&b',') {
            return Err(LaunchError::BadRunDir(
                self.dir.clone(),
                "contains a comma, which QEMU options cannot carry",
            ));
        }
        Ok(())
    }
}

/// nitro-cli's heartbeat limit for an EIF of `len` bytes.
fn heartbeat_timeout_for(len: u64) -> Duration {
    let units = len.div_ceil(HEARTBEAT_EIF_UNIT).max(1);
    HEARTBEAT_TIMEOUT_PER_UNIT.saturating_mul(u32::try_from(units).unwrap_or(u32::MAX))
}

/// The default guest memory for an EIF of `len` bytes.
fn memory_for(len: u64) -> u64 {
    let floor = len.div_ceil(1 << 20).saturating_mul(MEMORY_EIF_RATIO);
    floor
        .div_ceil(MEMORY_ALIGN_MIB)
        .saturating_mul(MEMORY_ALIGN_MIB)
        .max(DEFAULT_MIN_MEMORY_MIB)
}

/// `name` in PATH; vhost-device-vsock also in ~/.cargo/bin, where `cargo install` puts it.
fn find_tool(name: &'static str) -> Result<PathBuf, LaunchError> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    if let Some(home) = std::env::var_os("HOME") {
        dirs.push(Path::new(&home).join(".cargo/bin"));
    }
    dirs.into_iter()
        .map(|d| d.join(name))
        .find(|p| {
            use std::os::unix::fs::PermissionsExt;
            fs::metadata(p)
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
        .ok_or(LaunchError::ToolMissing(name))
}

/// The host's TSC frequency in kHz from /proc/cpuinfo's first `cpu MHz` (constant on every CPU
/// with `constant_tsc`, which a TCG guest's TSC follows), if it reads as one.
fn host_tsc_khz(cpuinfo: &str) -> Option<u64> {
    let mhz: f64 = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("cpu MHz")
                .and_then(|r| r.split_once(':'))
                .map(|(_, v)| v.trim())
        })?
        .parse()
        .ok()?;
    let khz = (mhz * 1000.0).round();
    if !khz.is_finite() || khz < 0.0 {
        return None;
    }
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    // finite, non-negative, range-checked next
    let khz = khz as u64;
    TSC_KHZ_RANGE.contains(&khz).then_some(khz)
}

/// The QEMU command line (without the program).
fn qemu_args(o: &Options, paths: &Paths, memory_mib: u64, cmdline: &str) -> Vec<String> {
    let s = |p: &Path| p.display().to_string();
    let mut a: Vec<String> = Vec::new();
    let mut push = |items: &[&str]| a.extend(items.iter().map(|i| i.to_string()));
    if o.kvm {
        push(&["-accel", "kvm", "-cpu", "host"]);
    } else {
        // `max` under TCG has RDRAND, which `random.trust_cpu=on` credits; without it (and
        // RDSEED) the pool waits for other sources, as on a CPU that offers none.
        push(&[
            "-accel",
            "tcg",
            "-cpu",
            if o.cpu_rng {
                "max"
            } else {
                "max,-rdrand,-rdseed"
            },
        ]);
    }
    push(&["-M", "microvm,pcie=off,rtc=on,memory-backend=mem"]);
    push(&["-smp", &o.cpus.to_string(), "-m", &format!("{memory_mib}M")]);
    push(&[
        "-object",
        &format!("memory-backend-memfd,id=mem,size={memory_mib}M,share=on"),
    ]);
    push(&[
        "-kernel",
        &s(&paths.kernel),
        "-initrd",
        &s(&paths.initrd),
        "-append",
        cmdline,
    ]);
    push(&[
        "-chardev",
        &format!("socket,id=vsock0,path={}", s(&paths.vhost_sock)),
    ]);
    push(&["-device", "vhost-user-vsock-device,chardev=vsock0"]);
    if o.rng {
        push(&["-device", "virtio-rng-device"]);
    }
    push(&[
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-no-reboot",
    ]);
    push(&["-serial", &format!("file:{}", s(&paths.console))]);
    a
}

/// A child that gets SIGKILL when this process dies, in its own process group (a terminal's
/// Ctrl-C reaches only us; we stop the children in order).
#[allow(unsafe_code)] // pre_exec is unsafe: the closure runs between fork and exec.
fn spawn(
    tool: &'static str,
    program: &Path,
    args: &[String],
    log: &Path,
) -> Result<Child, LaunchError> {
    let out = File::create(log).map_err(|e| LaunchError::Write(log.to_path_buf(), e))?;
    let err = out
        .try_clone()
        .map_err(|e| LaunchError::Write(log.to_path_buf(), e))?;
    let mut command = Command::new(program);
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0);
    // SAFETY: prctl(PR_SET_PDEATHSIG) and pthread_sigmask are async-signal-safe and touch no
    // memory of the parent; the closure allocates nothing and only returns an io::Error built
    // from an errno. The mask must be emptied here: the child inherits ours (SIGINT, SIGTERM,
    // SIGHUP, SIGCHLD blocked for the signalfd), and std's spawn does not reset it on this path
    // (measured: vhost-device-vsock then ignored SIGTERM and needed the SIGKILL).
    unsafe {
        command.pre_exec(|| {
            SigSet::empty().thread_set_mask().map_err(io::Error::from)?;
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(io::Error::from)
        });
    }
    command.spawn().map_err(|e| LaunchError::Spawn(tool, e))
}

/// QEMU and the daemon, and the files to remove, stopped and removed exactly once, whatever
/// path `run` leaves by.
struct Session<'a> {
    paths: &'a Paths,
    qemu: Option<Child>,
    vhost: Option<Child>,
    _lock: Flock<File>,
}

impl Session<'_> {
    fn stop(child: &mut Option<Child>) {
        let Some(mut c) = child.take() else { return };
        if let Ok(None) = c.try_wait() {
            let pid = Pid::from_raw(i32::try_from(c.id()).unwrap_or(i32::MAX));
            let _ = kill(pid, Signal::SIGTERM);
            let deadline = Instant::now() + STOP_TIMEOUT;
            while Instant::now() < deadline {
                if !matches!(c.try_wait(), Ok(None)) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
        }
        let _ = c.wait();
    }
}

impl Drop for Session<'_> {
    fn drop(&mut self) {
        Session::stop(&mut self.qemu);
        Session::stop(&mut self.vhost);
        let p = self.paths;
        for f in [
            &p.vhost_sock,
            &p.vsock_sock,
            &p.heartbeat_sock,
            &p.qemu_pid,
            &p.kernel,
            &p.initrd,
            &p.lock,
        ] {
            let _ = fs::remove_file(f);
        }
    }
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), LaunchError> {
    fs::write(path, bytes).map_err(|e| LaunchError::Write(path.to_path_buf(), e))
}

fn read_eif(path: &Path) -> Result<Vec<u8>, LaunchError> {
    let file = File::open(path).map_err(|e| LaunchError::ReadEif(path.to_path_buf(), e))?;
    let len = file
        .metadata()
        .map_err(|e| LaunchError::ReadEif(path.to_path_buf(), e))?
        .len();
    if len > eif::format::MAX_EIF_LEN {
        return Err(LaunchError::EifTooLarge(len));
    }
    let mut bytes = Vec::new();
    file.take(eif::format::MAX_EIF_LEN + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| LaunchError::ReadEif(path.to_path_buf(), e))?;
    Ok(bytes)
}

fn tail(path: &Path, lines: usize) {
    let Ok(text) = fs::read(path) else { return };
    let text = String::from_utf8_lossy(&text);
    let all: Vec<&str> = text.lines().collect();
    eprintln!("emulate: last lines of {}:", path.display());
    for l in &all[all.len().saturating_sub(lines)..] {
        eprintln!("  {l}");
    }
}

/// What woke the wait loop.
enum Event {
    Signal(Signal),
    Heartbeat,
    Tick,
}

/// Waits up to `timeout` for a signal or (if given) a connection on `listener`.
fn wait_event(
    signals: &SignalFd,
    listener: Option<&UnixListener>,
    timeout: Duration,
) -> Result<Event, LaunchError> {
    let ms = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
    let mut fds = vec![PollFd::new(signals.as_fd(), PollFlags::POLLIN)];
    if let Some(l) = listener {
        fds.push(PollFd::new(l.as_fd(), PollFlags::POLLIN));
    }
    match poll(&mut fds, PollTimeout::from(ms)) {
        Ok(0) | Err(Errno::EINTR) => return Ok(Event::Tick),
        Ok(_) => {}
        Err(e) => return Err(LaunchError::Signals(e)),
    }
    let ready = |fd: &PollFd| fd.revents().is_some_and(|r| !r.is_empty());
    if ready(&fds[0]) {
        if let Ok(Some(info)) = signals.read_signal() {
            if let Ok(sig) = Signal::try_from(i32::try_from(info.ssi_signo).unwrap_or(0)) {
                return Ok(Event::Signal(sig));
            }
        }
        return Ok(Event::Tick);
    }
    if fds.get(1).is_some_and(ready) {
        return Ok(Event::Heartbeat);
    }
    Ok(Event::Tick)
}

/// Accepts the guest's heartbeat connection: one 0xB7 read, echoed.
fn answer_heartbeat(listener: &UnixListener) -> Result<(), LaunchError> {
    let (mut stream, _) = listener.accept().map_err(LaunchError::HeartbeatIo)?;
    stream
        .set_nonblocking(false)
        .map_err(LaunchError::HeartbeatIo)?;
    stream
        .set_read_timeout(Some(HEARTBEAT_READ_TIMEOUT))
        .map_err(LaunchError::HeartbeatIo)?;
    stream
        .set_write_timeout(Some(HEARTBEAT_READ_TIMEOUT))
        .map_err(LaunchError::HeartbeatIo)?;
    let mut byte = [0u8; 1];
    stream
        .read_exact(&mut byte)
        .map_err(LaunchError::HeartbeatIo)?;
    if byte[0] != HEARTBEAT {
        return Err(LaunchError::HeartbeatByte(byte[0]));
    }
    stream.write_all(&byte).map_err(LaunchError::HeartbeatIo)
}

/// Checks that neither child has exited.
fn check_children(session: &mut Session<'_>, before_heartbeat: bool) -> Result<(), LaunchError> {
    if let Some(q) = session.qemu.as_mut() {
        if let Ok(Some(status)) = q.try_wait() {
            session.qemu = None;
            return Err(LaunchError::QemuExited {
                status,
                before_heartbeat,
            });
        }
    }
    if let Some(v) = session.vhost.as_mut() {
        if let Ok(Some(status)) = v.try_wait() {
            session.vhost = None;
            return Err(LaunchError::VhostExited(status));
        }
    }
    Ok(())
}

fn run(o: &Options) -> Result<Signal, LaunchError> {
    let qemu_bin = find_tool(QEMU)?;
    let vhost_bin = find_tool(VHOST)?;
    if o.kvm {
        fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/kvm")
            .map_err(LaunchError::Kvm)?;
    }

    // The EIF, checked whole before anything starts.
    let bytes = read_eif(&o.eif)?;
    let image = Eif::read(&bytes).map_err(LaunchError::Eif)?;
    let cmdline = std::str::from_utf8(image.cmdline()).map_err(|_| LaunchError::CmdlineNotText)?;
    if cmdline.contains('\0') {
        return Err(LaunchError::CmdlineNotText);
    }
    let eif_len = u64::try_from(bytes.len()).unwrap_or(u64::MAX);
    let memory_mib = o.memory_mib.unwrap_or_else(|| memory_for(eif_len));
    let heartbeat_limit = o
        .heartbeat_timeout
        .unwrap_or_else(|| heartbeat_timeout_for(eif_len));
    let m = image.measurements();
    say!(
        "{} ({} bytes): PCR0 {}",
        o.eif.display(),
        eif_len,
        m.pcr0_hex()
    );
    say!("PCR1 {} PCR2 {}", m.pcr1_hex(), m.pcr2_hex());

    // The run directory, locked for this run, with nothing stale in it.
    let paths = Paths::new(&o.run_dir);
    paths.check()?;
    fs::create_dir_all(&paths.dir).map_err(|e| LaunchError::RunDir(paths.dir.clone(), e))?;
    let lock_file =
        File::create(&paths.lock).map_err(|e| LaunchError::RunDir(paths.lock.clone(), e))?;
    let lock = Flock::lock(lock_file, FlockArg::LockExclusiveNonblock)
        .map_err(|_| LaunchError::AlreadyRunning(paths.dir.clone()))?;
    for stale in [
        &paths.vhost_sock,
        &paths.vsock_sock,
        &paths.heartbeat_sock,
        &paths.qemu_pid,
    ] {
        let _ = fs::remove_file(stale);
    }
    let mut session = Session {
        paths: &paths,
        qemu: None,
        vhost: None,
        _lock: lock,
    };
    write_file(&paths.kernel, image.kernel())?;
    write_file(&paths.initrd, &image.initrd())?;
    write_file(&paths.cmdline, image.cmdline())?;
    drop(bytes);

    // Signals as events, from here on: blocked, read through a signalfd. Children get an empty
    // mask back in `spawn`.
    let mut mask = SigSet::empty();
    for s in [
        Signal::SIGINT,
        Signal::SIGTERM,
        Signal::SIGHUP,
        Signal::SIGCHLD,
    ] {
        mask.add(s);
    }
    mask.thread_set_mask().map_err(LaunchError::Signals)?;
    let signals =
        SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC).map_err(LaunchError::Signals)?;

    // The heartbeat listener exists before the guest can dial it.
    let listener = UnixListener::bind(&paths.heartbeat_sock)
        .map_err(|e| LaunchError::Listen(paths.heartbeat_sock.clone(), e))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| LaunchError::Listen(paths.heartbeat_sock.clone(), e))?;

    let vm = format!(
        "guest-cid={},socket={},uds-path={}",
        o.cid,
        paths.vhost_sock.display(),
        paths.vsock_sock.display()
    );
    session.vhost = Some(spawn(
        VHOST,
        &vhost_bin,
        &["--vm".into(), vm.clone()],
        &paths.vhost_log,
    )?);
    say!("{} --vm {vm}", vhost_bin.display());
    let started = Instant::now();
    while !paths.vhost_sock.exists() {
        check_children(&mut session, true)?;
        if started.elapsed() > VHOST_READY_TIMEOUT {
            return Err(LaunchError::VhostNotReady(VHOST_READY_TIMEOUT));
        }
        std::thread::sleep(Duration::from_millis(10));
    }

    let mut append = cmdline.to_owned();
    if !o.kvm {
        match fs::read_to_string("/proc/cpuinfo")
            .ok()
            .as_deref()
            .and_then(host_tsc_khz)
        {
            Some(khz) => {
                append = format!("{append} {TSC_PARAM}={khz}");
                say!("appended {TSC_PARAM}={khz} (emulated hardware, unmeasured)");
            }
            None => say!("warning: host TSC frequency unknown; the guest may hang calibrating it"),
        }
    }
    let qargs = qemu_args(o, &paths, memory_mib, &append);
    say!("{} {}", qemu_bin.display(), shell_words(&qargs));
    let boot = Instant::now();
    let qemu = spawn(QEMU, &qemu_bin, &qargs, &paths.qemu_log)?;
    write_file(&paths.qemu_pid, format!("{}\n", qemu.id()).as_bytes())?;
    session.qemu = Some(qemu);

    // Boot: until the heartbeat, a signal, a child's exit, or the limit.
    let outcome = loop {
        let left = heartbeat_limit.saturating_sub(boot.elapsed());
        if left.is_zero() {
            break Err(LaunchError::HeartbeatTimeout(heartbeat_limit));
        }
        match wait_event(&signals, Some(&listener), left.min(CHILD_CHECK_INTERVAL))? {
            Event::Signal(Signal::SIGCHLD) | Event::Tick => {
                if let Err(e) = check_children(&mut session, true) {
                    break Err(e);
                }
            }
            Event::Signal(sig) => return Ok(sig),
            Event::Heartbeat => break answer_heartbeat(&listener),
        }
    };
    if let Err(e) = outcome {
        tail(&paths.console, CONSOLE_TAIL_LINES);
        return Err(e);
    }
    say!("heartbeat after {:.2} s", boot.elapsed().as_secs_f64());
    drop(listener);
    let _ = fs::remove_file(&paths.heartbeat_sock);
    say!(
        "enclave CID {} up; host -> enclave port P: connect {}, send \"CONNECT P\\n\"",
        o.cid,
        paths.vsock_sock.display()
    );

    loop {
        match wait_event(&signals, None, CHILD_CHECK_INTERVAL)? {
            Event::Signal(Signal::SIGCHLD) | Event::Tick | Event::Heartbeat => {
                if let Err(e) = check_children(&mut session, false) {
                    if matches!(e, LaunchError::QemuExited { .. }) {
                        tail(&paths.console, CONSOLE_TAIL_LINES);
                    }
                    return Err(e);
                }
            }
            Event::Signal(sig) => return Ok(sig),
        }
    }
}

/// Arguments quoted for a shell, for the log line that shows the exact command.
fn shell_words(args: &[String]) -> String {
    args.iter()
        .map(|a| {
            if !a.is_empty()
                && a.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_./=,:@+".contains(&b))
            {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heartbeat_limit_like_nitro_cli() {
        assert_eq!(heartbeat_timeout_for(0), Duration::from_secs(90));
        assert_eq!(heartbeat_timeout_for(1), Duration::from_secs(90));
        assert_eq!(heartbeat_timeout_for(6 << 30), Duration::from_secs(90));
        assert_eq!(
            heartbeat_timeout_for((6 << 30) + 1),
            Duration::from_secs(180)
        );
    }

    #[test]
    fn tsc_from_cpuinfo() {
        assert_eq!(
            host_tsc_khz("processor\t: 0\ncpu MHz\t\t: 2599.998\ncpu MHz\t\t: 1.0\n"),
            Some(2_599_998)
        );
        assert_eq!(host_tsc_khz("cpu MHz : 3000\n"), Some(3_000_000));
        assert_eq!(host_tsc_khz("cpu MHz\t: 0.5\n"), None);
        assert_eq!(host_tsc_khz("cpu MHz\t: NaN\n"), None);
        assert_eq!(host_tsc_khz("cpu MHz\t: x\n"), None);
        assert_eq!(host_tsc_khz("model name: y\n"), None);
    }

    #[test]
    fn memory_floor() {
        assert_eq!(memory_for(0), 512);
        assert_eq!(memory_for(30 << 20), 512);
        assert_eq!(memory_for(200 << 20), 1024);
        assert_eq!(memory_for((200 << 20) + 1), 1024);
        assert_eq!(memory_for(257 << 20), 1280);
    }

    #[test]
    fn run_dir_checks() {
        assert!(Paths::new(Path::new(".run/emulate")).check().is_ok());
        let long = "d".repeat(100);
        assert!(matches!(
            Paths::new(Path::new(&long)).check(),
            Err(LaunchError::BadRunDir(..))
        ));
        assert!(matches!(
            Paths::new(Path::new("a,b")).check(),
            Err(LaunchError::BadRunDir(..))
        ));
    }

    #[test]
    fn qemu_command() {
        let o = args::parse(&[
            "--eif".into(),
            "x".into(),
            "--run-dir".into(),
            "d".into(),
            "--rng".into(),
            "on".into(),
        ])
        .unwrap();
        let a = qemu_args(&o, &Paths::new(Path::new("d")), 512, "console=ttyS0 x=1");
        let line = shell_words(&a);
        assert!(
            line.starts_with(
                "-accel tcg -cpu max -M microvm,pcie=off,rtc=on,memory-backend=mem -smp 2 -m 512M"
            ),
            "{line}"
        );
        assert!(line.contains("-object memory-backend-memfd,id=mem,size=512M,share=on"));
        assert!(line.contains("-append 'console=ttyS0 x=1'"));
        assert!(line.contains("-chardev socket,id=vsock0,path=d/vhost.sock -device vhost-user-vsock-device,chardev=vsock0"));
        assert!(line.contains("-device virtio-rng-device"));
        assert!(line.ends_with("-serial file:d/console.log"));
    }
}
