//! The processes under test: start, time, watch and stop them.
//!
//! What it does: starts the local stack as `scripts/dev.sh` does (two model
//! servers, the same `enclave` binary on two Unix sockets, and the parent;
//! with [`Stack::start_attested`], also the development NSM, `dev-nsm`, which
//! the secure model server then uses with `--nsm unix:PATH`),
//! measuring each model server from `exec` to its first answered Ping and the
//! whole stack from the first `exec` to `/ready` answering 200; starts other
//! servers (the peer) the same way; samples resident memory from
//! `/proc/PID/status`.
//!
//! Why it is built this way: the suite must leave no process behind, even on
//! Ctrl-C or failure. Every child is registered in [`CHILDREN`] when spawned;
//! [`Proc`]'s `Drop` stops it, and [`install_signal_guard`] stops them all
//! when the bench receives SIGINT, SIGTERM or SIGHUP (the signals are blocked
//! in every thread and waited for by one, so no handler code runs in signal
//! context; children start with an empty mask, as `std::process` does).

use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, SigSet, Signal};
use nix::unistd::Pid;
use shared::frame::{read_frame, write_frame, Frame, Message};
use shared::transport::{Addr, Stream};

use crate::http;

/// The pids of every child still running, for the signal guard.
static CHILDREN: Mutex<Vec<u32>> = Mutex::new(Vec::new());

fn children() -> std::sync::MutexGuard<'static, Vec<u32>> {
    CHILDREN.lock().unwrap_or_else(|p| p.into_inner())
}

/// Blocks SIGINT/SIGTERM/SIGHUP in this (the main) thread before any other
/// thread starts, and waits for them in one thread: on a signal every child
/// is stopped (TERM, then KILL after a grace) and the bench exits 130.
pub fn install_signal_guard() {
    let mut set = SigSet::empty();
    set.add(Signal::SIGINT);
    set.add(Signal::SIGTERM);
    set.add(Signal::SIGHUP);
    if let Err(e) = set.thread_block() {
        eprintln!("bench: cannot block signals ({e}); Ctrl-C may leave processes behind");
        return;
    }
    std::thread::spawn(move || {
        let sig = set.wait();
        eprintln!("\nbench: {}: stopping every process started by the bench", sig.map(|s| s.as_str()).unwrap_or("signal"));
        let pids: Vec<u32> = children().clone();
        stop_pids(&pids, Duration::from_secs(12));
        std::process::exit(130);
    });
}

fn alive(pid: u32) -> bool {
    // A zombie still answers kill(0); /proc says whether it is one.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => !s.rsplit(')').next().map(|rest| rest.trim_start().starts_with('Z')).unwrap_or(false),
        Err(_) => false,
    }
}

fn stop_pids(pids: &[u32], grace: Duration) {
    for &p in pids {
        let _ = kill(Pid::from_raw(p as i32), Signal::SIGTERM);
    }
    let until = Instant::now() + grace;
    while Instant::now() < until && pids.iter().any(|&p| alive(p)) {
        std::thread::sleep(Duration::from_millis(20));
    }
    for &p in pids {
        if alive(p) {
            let _ = kill(Pid::from_raw(p as i32), Signal::SIGKILL);
        }
    }
}

/// A child process, stopped and reaped on drop.
pub struct Proc {
    pub name: String,
    pub child: Child,
    pub started: Instant,
    pub log: PathBuf,
}

impl Proc {
    pub fn spawn(name: &str, program: &Path, args: &[String], log: PathBuf) -> Result<Proc, String> {
        let out = File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
        let err = out.try_clone().map_err(|e| e.to_string())?;
        // Register under the lock, so the signal guard sees the child as soon as it exists.
        let mut reg = children();
        let started = Instant::now();
        let child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("cannot start {name} ({}): {e}", program.display()))?;
        reg.push(child.id());
        Ok(Proc { name: name.into(), child, started, log })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    /// SIGTERM, wait up to `grace`, then SIGKILL; always reaps.
    pub fn stop(&mut self, grace: Duration) {
        let pid = self.pid();
        if !self.exited() {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
            let until = Instant::now() + grace;
            while Instant::now() < until && !self.exited() {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
        children().retain(|&p| p != pid);
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(12));
    }
}

/// One Ping round trip to a model server; true on Pong.
pub fn ping(addr: &Addr, timeout: Duration) -> bool {
    let Ok(mut s) = Stream::connect(addr) else { return false };
    let _ = s.set_read_timeout(Some(timeout));
    let _ = s.set_write_timeout(Some(timeout));
    if write_frame(&mut s, &Frame::new(7, Message::Ping)).is_err() {
        return false;
    }
    matches!(read_frame(&mut s), Ok(Some(raw)) if matches!(raw.message(), Ok(Message::Pong)))
}

/// Waits until every `(process, address)` answers Ping, polling all of them
/// in one loop so that each time is its own (exec to first Pong), however
/// the others fare. Returns the times in the order given.
pub fn wait_pings(servers: &mut [(&mut Proc, &Addr)], within: Duration) -> Result<Vec<Duration>, String> {
    let mut times: Vec<Option<Duration>> = vec![None; servers.len()];
    loop {
        for (i, (p, addr)) in servers.iter_mut().enumerate() {
            if times[i].is_some() {
                continue;
            }
            if ping(addr, Duration::from_secs(2)) {
                times[i] = Some(p.started.elapsed());
            } else if p.exited() {
                return Err(format!("{} exited before answering Ping; last log lines:\n{}", p.name, p.log_tail()));
            } else if p.started.elapsed() > within {
                return Err(format!("{} did not answer Ping within {within:?}", p.name));
            }
        }
        if times.iter().all(Option::is_some) {
            return Ok(times.into_iter().flatten().collect());
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Waits until GET `path` answers 200.
pub fn wait_http(procs: &mut [&mut Proc], addr: SocketAddr, path: &str, since: Instant, within: Duration) -> Result<Duration, String> {
    loop {
        if let Ok(r) = http::get(addr, path, Duration::from_secs(2)) {
            if r.status == 200 {
                return Ok(since.elapsed());
            }
        }
        for p in procs.iter_mut() {
            if p.exited() {
                return Err(format!("{} exited; last log lines:\n{}", p.name, p.log_tail()));
            }
        }
        if since.elapsed() > within {
            return Err(format!("http://{addr}{path} did not answer 200 within {within:?}"));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The local stack: the secure and public model servers and the parent.
pub struct Stack {
    pub secure: Proc,
    pub public: Proc,
    pub parent: Proc,
    pub public_addr: Addr,
    pub times: StartTimes,
    /// The development NSM of an attested stack, and what it wrote.
    pub nsm: Option<DevNsm>,
}

/// The development NSM (tools/dev-nsm) and the files a client pins: its root
/// certificate (PEM) and the PCRs it reports (nitro-cli's measurements JSON).
pub struct DevNsm {
    pub proc: Proc,
    pub socket: PathBuf,
    pub root_pem: PathBuf,
    pub measurements: PathBuf,
}

impl DevNsm {
    /// Starts `BIN/dev-nsm` with its state, socket and output files in `dir`,
    /// measuring `enclave` (PCR0) and `model_file` (PCR2), and waits for its
    /// socket: dev-nsm binds it only once both files are written.
    pub fn start(bin: &Path, enclave: &Path, model_file: &Path, dir: &Path) -> Result<DevNsm, String> {
        let program = bin.join("dev-nsm");
        if !program.is_file() {
            return Err(format!("{} is missing: run `make bench-build`", program.display()));
        }
        let (socket, root_pem, measurements) = (dir.join("nsm.sock"), dir.join("dev-nsm-root.pem"), dir.join("dev-measurements.json"));
        for f in [&socket, &root_pem, &measurements] {
            let _ = std::fs::remove_file(f);
        }
        let path = |p: &Path| p.display().to_string();
        let args = vec![
            "--socket".into(), path(&socket), "--state-dir".into(), path(&dir.join("dev-nsm")),
            "--enclave-bin".into(), path(enclave), "--model".into(), path(model_file),
            "--root-out".into(), path(&root_pem), "--measurements-out".into(), path(&measurements),
        ];
        let mut proc = Proc::spawn("development NSM", &program, &args, dir.join("dev-nsm.log"))?;
        let within = Duration::from_secs(60);
        while !socket.exists() {
            if proc.exited() {
                return Err(format!("dev-nsm exited before binding its socket; last log lines:\n{}", proc.log_tail()));
            }
            if proc.started.elapsed() > within {
                return Err(format!("dev-nsm did not bind {} within {within:?}", socket.display()));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(DevNsm { proc, socket, root_pem, measurements })
    }
}

#[derive(Debug, Clone, Copy)]
pub struct StartTimes {
    /// exec of each model server to its first Pong, seconds.
    pub secure_s: f64,
    pub public_s: f64,
    /// First exec to /ready answering 200, seconds.
    pub stack_s: f64,
}

impl Stack {
    /// Starts the stack with binaries from `bin`, model directory `model`,
    /// sockets and logs in `dir`, the parent listening on `listen`.
    pub fn start(bin: &Path, model: &Path, dir: &Path, listen: SocketAddr, extra_parent: &[String]) -> Result<Stack, String> {
        Self::start_with(bin, model, dir, listen, extra_parent, false)
    }

    /// [`Stack::start`], with the development NSM started first (not counted
    /// in the start times) and the secure model server given `--nsm unix:PATH`,
    /// so that `GET /attestation` answers: the `enclave` binary must be built
    /// with the cargo feature `enclave/dev-nsm` (`make bench-build` does).
    pub fn start_attested(bin: &Path, model: &Path, dir: &Path, listen: SocketAddr, extra_parent: &[String]) -> Result<Stack, String> {
        Self::start_with(bin, model, dir, listen, extra_parent, true)
    }

    fn start_with(bin: &Path, model: &Path, dir: &Path, listen: SocketAddr, extra_parent: &[String], attested: bool) -> Result<Stack, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let sock = |n: &str| dir.join(format!("{n}.sock"));
        for n in ["secure", "public"] {
            let _ = std::fs::remove_file(sock(n));
        }
        let enclave = bin.join("enclave");
        let nsm = if attested { Some(DevNsm::start(bin, &enclave, &model.join("model.onnx"), dir)?) } else { None };
        let server_args = |n: &str| {
            vec!["--listen".to_string(), format!("unix:{}", sock(n).display()), "--model".into(), model.display().to_string()]
        };
        let mut secure_args = server_args("secure");
        if let Some(n) = &nsm {
            secure_args.extend(["--nsm".to_string(), format!("unix:{}", n.socket.display())]);
        }
        let t0 = Instant::now();
        let mut secure = Proc::spawn("secure model server", &enclave, &secure_args, dir.join("secure.log"))?;
        let mut public = Proc::spawn("public model server", &enclave, &server_args("public"), dir.join("public.log"))?;
        let mut pargs = vec![
            "--listen".to_string(),
            listen.to_string(),
            "--secure".into(),
            format!("unix:{}", sock("secure").display()),
            "--public".into(),
            format!("unix:{}", sock("public").display()),
        ];
        pargs.extend_from_slice(extra_parent);
        let mut parent = Proc::spawn("parent", &bin.join("parent"), &pargs, dir.join("parent.log"))?;
        let secure_addr = Addr::Unix(sock("secure"));
        let public_addr = Addr::Unix(sock("public"));
        let within = Duration::from_secs(120);
        let t = wait_pings(&mut [(&mut secure, &secure_addr), (&mut public, &public_addr)], within)?;
        let (secure_s, public_s) = (t[0].as_secs_f64(), t[1].as_secs_f64());
        let stack_s = wait_http(&mut [&mut secure, &mut public, &mut parent], listen, "/ready", t0, within)?.as_secs_f64();
        Ok(Stack { secure, public, parent, public_addr, times: StartTimes { secure_s, public_s, stack_s }, nsm })
    }

    pub fn pids(&self) -> [(&'static str, u32); 3] {
        [("secure", self.secure.pid()), ("public", self.public.pid()), ("parent", self.parent.pid())]
    }

    /// Stops the parent first (no new requests), then the model servers, then the NSM.
    pub fn stop(mut self) {
        self.parent.stop(Duration::from_secs(12));
        self.public.stop(Duration::from_secs(12));
        self.secure.stop(Duration::from_secs(12));
        if let Some(n) = self.nsm.as_mut() {
            n.proc.stop(Duration::from_secs(12));
        }
    }
}

/// A `/proc/PID/status` field in KiB (VmRSS, VmHWM).
pub fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = text.lines().find(|l| l.starts_with(field) && l[field.len()..].starts_with(':'))?;
    line[field.len() + 1..].trim().trim_end_matches("kB").trim().parse().ok()
}

/// Samples VmRSS of each pid every 100 ms until stopped.
pub struct RssSampler {
    stop: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<Vec<Vec<u64>>>>,
}

impl RssSampler {
    pub fn start(pids: Vec<u32>) -> RssSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let handle = std::thread::spawn(move || {
            let mut samples: Vec<Vec<u64>> = vec![Vec::new(); pids.len()];
            while !flag.load(Ordering::Relaxed) {
                for (i, &p) in pids.iter().enumerate() {
                    if let Some(k) = status_kib(p, "VmRSS") {
                        samples[i].push(k);
                    }
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            samples
        });
        RssSampler { stop, handle: Some(handle) }
    }

    /// Stops sampling; returns the samples of each pid, in KiB.
    pub fn finish(mut self) -> Vec<Vec<u64>> {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.take().and_then(|h| h.join().ok()).unwrap_or_default()
    }
}
