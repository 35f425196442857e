//! The `parent` binary: parses the command line, then either waits for a
//! model server (`parent ping ADDR`) or runs the HTTP front until SIGTERM or
//! SIGINT, which it turns into a clean exit 0.
//!
//! Signals are handled without `unsafe`: SIGTERM and SIGINT are blocked in
//! the main thread before any other thread exists (so every thread inherits
//! the mask), and one thread waits for them with `sigwait`.
#![forbid(unsafe_code)]

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{SigSet, Signal};
use parent::backend::{ping_once, Backend, BackendConfig};
use parent::cli::{self, Command, Config, USAGE};
use parent::metrics::Metrics;
use parent::listen;
use parent::server::{serve, App, Front};
use shared::transport::Addr;

fn main() -> ExitCode {
    // Print where a panic happened, never its message: a message could quote
    // request data, and the logs must never hold any.
    std::panic::set_hook(Box::new(|info| {
        let at = info.location().map(|l| format!("{}:{}", l.file(), l.line())).unwrap_or_default();
        eprintln!("parent: internal error (panic) at {at}");
    }));
    let args = std::env::args_os().skip(1).map(|a| a.to_string_lossy().into_owned());
    match cli::parse(args) {
        Err(e) => {
            eprintln!("parent: {e}\n\n{USAGE}");
            ExitCode::from(2)
        }
        Ok(Command::Help) => {
            print!("{USAGE}");
            ExitCode::SUCCESS
        }
        Ok(Command::Ping { addr, timeout }) => ping(&addr, timeout),
        Ok(Command::Serve(cfg)) => run(cfg),
    }
}

/// Retries Ping every 100 ms until the server answers or `timeout` passes.
fn ping(addr: &Addr, timeout: Duration) -> ExitCode {
    let start = Instant::now();
    let give_up = start + timeout;
    loop {
        let left = give_up.saturating_duration_since(Instant::now());
        let err = match ping_once(addr, left.clamp(Duration::from_millis(100), Duration::from_secs(1))) {
            Ok(()) => {
                println!("{addr} is ready ({} ms)", start.elapsed().as_millis());
                return ExitCode::SUCCESS;
            }
            Err(e) => e,
        };
        if Instant::now() + Duration::from_millis(100) >= give_up {
            eprintln!("parent ping: {addr} did not answer Ping within {} s: {err}", timeout.as_secs());
            return ExitCode::from(1);
        }
        thread::sleep(Duration::from_millis(100));
    }
}

fn run(cfg: Config) -> ExitCode {
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGTERM);
    signals.add(Signal::SIGINT);
    if let Err(e) = signals.thread_block() {
        eprintln!("parent: cannot block signals: {e}");
        return ExitCode::from(1);
    }
    // Our own listener, with the I/O timeouts every connection inherits
    // (parent/src/listen.rs explains why).
    if let Err(e) = listen::raise_fd_limit() {
        eprintln!("parent: cannot raise the open-file limit: {e}");
    }
    let front = match listen::bind(cfg.listen, cfg.io_timeout).and_then(Front::new) {
        Ok(f) => Arc::new(f),
        Err(e) => {
            eprintln!("parent: cannot listen on {}: {e}", cfg.listen);
            return ExitCode::from(1);
        }
    };
    let backend_cfg = BackendConfig::new(cfg.pool, cfg.deadline);
    let app = Arc::new(App {
        secure: Arc::new(Backend::new("secure", cfg.secure.clone(), backend_cfg, true)),
        public: Arc::new(Backend::new("public", cfg.public.clone(), backend_cfg, false)),
        metrics: Metrics::new(),
        max_body: cfg.max_body,
        sealed_only: cfg.sealed_only,
    });
    let shutdown = Arc::new(AtomicBool::new(false));
    {
        let shutdown = shutdown.clone();
        let spawned = thread::Builder::new().name("signals".into()).spawn(move || {
            let sig = signals.wait();
            let name = sig.map(|s| s.as_str()).unwrap_or("a signal");
            eprintln!("parent: {name} received, shutting down");
            // The handler threads look at the flag at least every 100 ms.
            shutdown.store(true, Ordering::SeqCst);
        });
        if let Err(e) = spawned {
            eprintln!("parent: cannot start the signal thread: {e}");
            return ExitCode::from(1);
        }
    }
    eprintln!(
        "parent: listening on http://{} (secure {}, public {}, {} threads, pool {}, deadline {} ms, max body {} B, io timeout {} ms{})",
        cfg.listen,
        cfg.secure,
        cfg.public,
        cfg.threads,
        cfg.pool,
        cfg.deadline.as_millis(),
        cfg.max_body,
        cfg.io_timeout.as_millis(),
        if cfg.sealed_only { ", sealed only" } else { "" }
    );
    serve(front, app, cfg.threads, shutdown);
    eprintln!("parent: stopped");
    ExitCode::SUCCESS
}
