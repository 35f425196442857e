//! `enclave`: start-up of the model server (see the crate docs in lib.rs).
//!
//! In order: seed entropy if the kernel pool is not ready (before anything
//! can draw randomness), block SIGTERM/SIGINT so that one thread can wait for
//! them, parse flags, load the model (hash-checked), start the workers, bind,
//! and only then answer pings: a server that answers is ready.
#![forbid(unsafe_code)]

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use enclave::config::{self, Config, ConfigError};
use enclave::model::Model;
use enclave::pool::Pool;
use enclave::sealed::Gateway;
use enclave::{entropy, server};
use nix::sys::signal::{SigSet, Signal};
use shared::frame::{Frame, Message};
use shared::transport::Listener;

fn main() -> ExitCode {
    let started = Instant::now();
    match entropy::seed_at_boot() {
        Ok(report) => eprintln!("entropy: {report}"),
        Err(e) => {
            eprintln!("entropy: {e}");
            return ExitCode::from(1);
        }
    }
    // Block the stop signals in this thread before any other starts, so
    // every thread inherits the mask and only `wait_for_stop` receives them.
    let mut stop = SigSet::empty();
    stop.add(Signal::SIGTERM);
    stop.add(Signal::SIGINT);
    if let Err(e) = stop.thread_block() {
        eprintln!("cannot block signals: {e}");
        return ExitCode::from(1);
    }

    let cfg = match Config::from_args(std::env::args().skip(1)) {
        Ok(c) => c,
        Err(ConfigError::Help) => {
            print!("{}", config::USAGE);
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("enclave: {e}");
            return ExitCode::from(2);
        }
    };
    eprintln!("enclave {}: starting, listen {}, model {}", env!("CARGO_PKG_VERSION"), cfg.listen, cfg.model_path.display());

    if cfg.mm_threads > 1 {
        #[cfg(feature = "multithread-mm")]
        {
            use tract_linalg::multithread::{set_default_executor, Executor};
            set_default_executor(Executor::multithread_with_name(cfg.mm_threads, "mm"));
        }
        #[cfg(not(feature = "multithread-mm"))]
        {
            eprintln!("enclave: --mm-threads above 1 needs a build with the multithread-mm feature (cargo build --release -p enclave --features multithread-mm)");
            return ExitCode::from(2);
        }
    }
    let model = match Model::load(&cfg) {
        Ok(m) => Arc::new(m),
        Err(e) => {
            eprintln!("enclave: {e}");
            return ExitCode::from(1);
        }
    };
    let info = &model.info;
    eprintln!(
        "model: {} sha256 {} synthetic {} input {:?} classes {} labels {} loaded in {} ms",
        info.name,
        info.sha256_hex(),
        info.synthetic,
        info.input_shape,
        info.num_classes,
        info.label_source,
        model.load_ms
    );
    for line in enclave::engine_kernels() {
        eprintln!("engine: {line}");
    }
    let info_frame = Frame::new(0, Message::Info(info.clone()));
    if let Err(e) = info_frame.encode() {
        eprintln!("enclave: the model's description does not fit a frame: {e}");
        return ExitCode::from(1);
    }

    // The sealing key is made now, after entropy seeding, and lives only in this process.
    let gateway = match Gateway::new(cfg.nsm.clone(), cfg.key_rotation, info.clone()) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("enclave: {e}");
            return ExitCode::from(1);
        }
    };
    eprintln!("attestation: NSM {:?}; sealing key rotated every {:?}", cfg.nsm, cfg.key_rotation);

    let pool = match Pool::start(Arc::clone(&model), cfg.workers, cfg.queue_depth) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("enclave: {e}");
            return ExitCode::from(1);
        }
    };
    eprintln!(
        "workers: {} ({} threads per matrix product), queue depth {} images, max connections {}",
        cfg.workers, cfg.mm_threads, cfg.queue_depth, cfg.max_connections
    );

    let listener = match Listener::bind(&cfg.listen) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("enclave: cannot listen on {}: {e}", cfg.listen);
            return ExitCode::from(1);
        }
    };
    let shutdown = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&shutdown);
    std::thread::spawn(move || {
        let sig = stop.wait();
        eprintln!("{}: shutting down", sig.map(|s| s.as_str()).unwrap_or("signal"));
        flag.store(true, Ordering::SeqCst);
    });
    eprintln!("listening on {} (ready after {} ms)", cfg.listen, started.elapsed().as_millis());

    server::Server {
        listener,
        pool,
        info: info_frame,
        max_connections: cfg.max_connections,
        shutdown,
        on_seed: entropy::mix_uncredited,
        gateway,
    }
    .run();
    if let shared::transport::Addr::Unix(path) = &cfg.listen {
        let _ = std::fs::remove_file(path);
    }
    eprintln!("stopped");
    ExitCode::SUCCESS
}
