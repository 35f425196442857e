//! `dev-nsm`: the development NSM service (see the crate docs in lib.rs).
//!
//! In order: block SIGTERM/SIGINT so that one thread waits for them, parse
//! flags, measure the model server binary and the model, or read the enclave
//! image's PCRs (`--eif`), load or
//! make the root CA, issue the intermediate and the leaf, write the root PEM
//! and the measurements JSON, and only then bind the socket: once the socket
//! exists, both files are in place. A stop signal removes the socket and
//! exits 0.
#![forbid(unsafe_code)]

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::SystemTime;

use dev_nsm::measure::Measurements;
use dev_nsm::nsm::DevNsm;
use dev_nsm::server::{self, ServerConfig};
use dev_nsm::state::{self, RootOrigin};
use dev_nsm::{hex, Error};
use nix::sys::signal::{SigSet, Signal};
use rand_core::{OsRng, RngCore};
use sha2::{Digest, Sha256};
use x509_cert::der::DateTime;

const USAGE: &str = "\
usage: dev-nsm --socket PATH --state-dir DIR (--enclave-bin PATH --model FILE | --eif PATH)
               [--root-out FILE] [--measurements-out FILE]

The development stand-in for the Nitro Secure Module: answers the NSM's CBOR
requests (Attestation, DescribePCR) on a Unix socket, each message a 4-byte
big-endian length then the CBOR. Documents are signed by a local test CA
(made in DIR at the first run, reused after): NOT AWS Nitro.

  --socket PATH            the Unix socket to listen on
  --state-dir DIR          where the root CA's key and certificate live
  --enclave-bin PATH       the model server binary: PCR0 is its SHA-384
  --model FILE             the model file: PCR2 is its SHA-384
                           (PCR1 is the SHA-384 of \"dev-nsm kernel\")
  --eif PATH               instead of the two above: the enclave image's own PCR0-2
                           (as `eif describe` prints them), for an emulated enclave
                           booted from that image (make eif-emulate-dev-nsm)
  --root-out FILE          write the root certificate (PEM) here
  --measurements-out FILE  write PCR0-2 here, as nitro-cli build-enclave prints them
";

#[derive(Debug, PartialEq)]
struct Args {
    socket: PathBuf,
    state_dir: PathBuf,
    measured: Measured,
    root_out: Option<PathBuf>,
    measurements_out: Option<PathBuf>,
}

/// What the PCRs are taken from.
#[derive(Debug, PartialEq)]
enum Measured {
    /// The development stand-ins: the model server binary and the model file.
    Files { enclave_bin: PathBuf, model: PathBuf },
    /// An enclave image file's real PCRs.
    Eif(PathBuf),
}

#[derive(Debug, PartialEq)]
enum ArgsError {
    Help,
    Bad(String),
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Args, ArgsError> {
    let (mut socket, mut state_dir, mut enclave_bin, mut model, mut root_out, mut measurements_out) = (None, None, None, None, None, None);
    let mut eif = None;
    while let Some(flag) = args.next() {
        let slot = match flag.as_str() {
            "-h" | "--help" => return Err(ArgsError::Help),
            "--socket" => &mut socket,
            "--state-dir" => &mut state_dir,
            "--enclave-bin" => &mut enclave_bin,
            "--model" => &mut model,
            "--eif" => &mut eif,
            "--root-out" => &mut root_out,
            "--measurements-out" => &mut measurements_out,
            _ => return Err(ArgsError::Bad(format!("unknown argument {flag:?}"))),
        };
        let value = args.next().filter(|v| !v.is_empty()).ok_or_else(|| ArgsError::Bad(format!("{flag} needs a value")))?;
        if slot.replace(PathBuf::from(value)).is_some() {
            return Err(ArgsError::Bad(format!("{flag} given twice")));
        }
    }
    let need = |v: Option<PathBuf>, flag: &str| v.ok_or_else(|| ArgsError::Bad(format!("{flag} is required")));
    let (socket, state_dir) = (need(socket, "--socket")?, need(state_dir, "--state-dir")?);
    let measured = match (eif, enclave_bin, model) {
        (Some(eif), None, None) => Measured::Eif(eif),
        (Some(_), _, _) => {
            return Err(ArgsError::Bad("--eif takes the PCRs from the image: give it without --enclave-bin and --model".into()))
        }
        (None, enclave_bin, model) => Measured::Files {
            enclave_bin: need(enclave_bin, "--enclave-bin (or --eif)")?,
            model: need(model, "--model (or --eif)")?,
        },
    };
    Ok(Args {
        socket,
        state_dir,
        measured,
        root_out,
        measurements_out,
    })
}

fn main() -> ExitCode {
    // Block the stop signals before any other thread starts, so every thread
    // inherits the mask and only the main thread's wait receives them.
    let mut stop = SigSet::empty();
    stop.add(Signal::SIGTERM);
    stop.add(Signal::SIGINT);
    if let Err(e) = stop.thread_block() {
        eprintln!("dev-nsm: cannot block signals: {e}");
        return ExitCode::from(1);
    }
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(ArgsError::Help) => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(ArgsError::Bad(msg)) => {
            eprintln!("dev-nsm: {msg}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let (_accept_thread, identity) = match start(&args) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("dev-nsm: {e}");
            return ExitCode::from(1);
        }
    };
    let sig = stop.wait();
    eprintln!("dev-nsm: {}: shutting down", sig.map(|s| s.as_str()).unwrap_or("signal"));
    remove_our_socket(&args.socket, identity);
    eprintln!("dev-nsm: stopped");
    ExitCode::SUCCESS
}

/// Everything up to a listening socket served by a background thread.
/// Returns the socket's identity (device, inode), to remove only our own.
fn start(args: &Args) -> Result<(std::thread::JoinHandle<()>, (u64, u64)), Error> {
    let measurements = match &args.measured {
        Measured::Files { enclave_bin, model } => Measurements::of_files(enclave_bin, model)?,
        Measured::Eif(path) => Measurements::of_eif(path)?,
    };
    let (root, origin) = state::load_or_create_root(&args.state_dir, SystemTime::now())?;
    let origin = match origin {
        RootOrigin::Loaded => "reused",
        RootOrigin::Created => "created",
        RootOrigin::Replaced => "created (the previous one expires within a week)",
    };
    let root_sha256 = hex(&Sha256::digest(root.cert_der()));
    eprintln!(
        "dev-nsm: development root {origin} in {}: sha256 {root_sha256}, valid until {}. NOT AWS Nitro: documents signed here prove nothing about an enclave.",
        args.state_dir.display(),
        DateTime::from_system_time(root.not_after()).map_or_else(|_| "?".into(), |t| t.to_string()),
    );

    let mut id = [0u8; 8];
    OsRng.fill_bytes(&mut id);
    let module_id = format!("dev-nsm-enc{}", hex(&id));
    let root_pem = root.cert_pem();
    let nsm = Arc::new(DevNsm::new(root, module_id, &measurements.document_pcrs())?);
    if let Some(path) = &args.root_out {
        state::write_file(path, root_pem.as_bytes(), 0o644)?;
    }
    if let Some(path) = &args.measurements_out {
        state::write_file(path, measurements.to_json().as_bytes(), 0o644)?;
    }
    match &args.measured {
        Measured::Files { enclave_bin, model } => eprintln!(
            "dev-nsm: module {}; PCR0 {} (sha384 of {}), PCR1 {} (sha384 of \"{}\"), PCR2 {} (sha384 of {})",
            nsm.module_id(),
            hex(&measurements.pcr0),
            enclave_bin.display(),
            hex(&measurements.pcr1),
            dev_nsm::measure::KERNEL_MEASURED,
            hex(&measurements.pcr2),
            model.display()
        ),
        Measured::Eif(path) => eprintln!(
            "dev-nsm: module {}; PCR0 {}, PCR1 {}, PCR2 {}: the measurements of the image {}",
            nsm.module_id(),
            hex(&measurements.pcr0),
            hex(&measurements.pcr1),
            hex(&measurements.pcr2),
            path.display()
        ),
    }

    let listener = bind(&args.socket)?;
    let meta = std::fs::metadata(&args.socket).map_err(|e| Error::with(format!("cannot stat {}", args.socket.display()), e))?;
    let identity = (meta.dev(), meta.ino());
    let handle = std::thread::Builder::new()
        .name("accept".into())
        .spawn(move || server::serve(listener, nsm, ServerConfig::default()))
        .map_err(|e| Error::with("cannot start the accept thread", e))?;
    eprintln!("dev-nsm: listening on {}", args.socket.display());
    Ok((handle, identity))
}

/// Binds the socket (mode 0600). A stale socket file left by a dead run is
/// replaced; a live one (something answers) or any other file is an error.
fn bind(path: &Path) -> Result<UnixListener, Error> {
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(Error::msg(format!("{} exists and is not a socket; not replacing it", path.display())));
        }
        if UnixStream::connect(path).is_ok() {
            return Err(Error::msg(format!("{} is in use (another dev-nsm running?)", path.display())));
        }
        std::fs::remove_file(path).map_err(|e| Error::with(format!("cannot remove the stale socket {}", path.display()), e))?;
    }
    let listener = UnixListener::bind(path).map_err(|e| Error::with(format!("cannot listen on {}", path.display()), e))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| Error::with(format!("cannot restrict {}", path.display()), e))?;
    Ok(listener)
}

/// Removes the socket file if it is still the one we bound.
fn remove_our_socket(path: &Path, (dev, ino): (u64, u64)) {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.dev() == dev && meta.ino() == ino => {
            if let Err(e) = std::fs::remove_file(path) {
                eprintln!("dev-nsm: cannot remove {}: {e}", path.display());
            }
        }
        _ => eprintln!("dev-nsm: {} is no longer our socket; left alone", path.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Args, ArgsError> {
        parse_args(args.iter().map(|a| a.to_string()))
    }

    const BASE: [&str; 4] = ["--socket", "s", "--state-dir", "d"];

    #[test]
    fn files_or_an_image_never_both() {
        let files = parse(&[&BASE[..], &["--enclave-bin", "e", "--model", "m"]].concat()).unwrap();
        assert_eq!(files.measured, Measured::Files { enclave_bin: "e".into(), model: "m".into() });
        let image = parse(&[&BASE[..], &["--eif", "x.eif", "--measurements-out", "j"]].concat()).unwrap();
        assert_eq!(image.measured, Measured::Eif("x.eif".into()));
        assert_eq!(image.measurements_out, Some("j".into()));
        for extra in [&["--eif", "x", "--model", "m"][..], &["--enclave-bin", "e", "--eif", "x"], &["--eif", "x", "--enclave-bin", "e", "--model", "m"]] {
            let Err(ArgsError::Bad(msg)) = parse(&[&BASE[..], extra].concat()) else { panic!("{extra:?} accepted") };
            assert!(msg.contains("without --enclave-bin and --model"), "{msg}");
        }
        assert_eq!(parse(&BASE), Err(ArgsError::Bad("--enclave-bin (or --eif) is required".into())));
        assert_eq!(
            parse(&[&BASE[..], &["--enclave-bin", "e"]].concat()),
            Err(ArgsError::Bad("--model (or --eif) is required".into()))
        );
        assert_eq!(parse(&["--eif", "x", "--eif", "y"]), Err(ArgsError::Bad("--eif given twice".into())));
        assert_eq!(parse(&["--eif"]), Err(ArgsError::Bad("--eif needs a value".into())));
    }
}
