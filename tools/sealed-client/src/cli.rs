//! The command line: options, and the run (attest, verify, seal, send, open,
//! print). `main.rs` only calls [`main`].

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use crate::http::{self, Timeouts, Url};
use crate::root::{RootKind, TrustedRoot};
use crate::verify::{self, Pcr, PcrPolicy, Policy, Verified, MAX_DOCUMENT_LEN};
use crate::{hex, measurements, printable, seal};

/// Exit statuses.
pub mod exit {
    /// The enclave answered, status 200; its JSON is on stdout.
    pub const OK: u8 = 0;
    /// The attestation document was refused: nothing was sent.
    pub const REFUSED: u8 = 1;
    /// Bad command line or unreadable input file.
    pub const USAGE: u8 = 2;
    /// The parent could not be reached, or answered an error or nonsense.
    pub const TRANSPORT: u8 = 3;
    /// The enclave answered an error status; its JSON is on stdout.
    pub const INNER_ERROR: u8 = 4;
}

pub const USAGE: &str = "\
usage: sealed-client [OPTIONS] IMAGE

Verifies the enclave's attestation document, then sends IMAGE (JPEG or PNG) as
an Oblivious HTTP request sealed to the attested key, and prints the enclave's
JSON answer. Nothing is sent before the document passes every check.

  --url URL            the parent front, http://host[:port] (default http://127.0.0.1:8080).
                       Plain HTTP only, no TLS: the document is checked by its
                       signatures and the request is encrypted to the enclave.
  --measurements FILE  pin PCR0, PCR1, PCR2 (and PCR8 if present) from nitro-cli's
                       measurements JSON (build/measurements.json)
  --pcr N=HEX          pin PCR N (0 to 31) to HEX (96 hex digits); repeatable
  --dev-root FILE      trust this development root certificate (PEM) instead of
                       the AWS Nitro root: for `make dev` (.run/dev-nsm-root.pem)
  --allow-debug        accept a debug-mode enclave (PCR0 all zeros)
  --no-pcr-check       pin no PCR (development only)
  --max-age SECS       oldest document accepted, 1 to 86400 (default 300)
  --top-k N            classes in the answer, 1 to 100 (default: the enclave's, 5)
  --verbose            say on stderr what was verified
  -h, --help           this help

Exit status: 0 answered; 1 attestation refused; 2 usage; 3 transport or
server error; 4 the enclave answered an error (its JSON is printed).
";

/// Largest image read (the parent's body limit).
pub const MAX_IMAGE_LEN: usize = 16 * 1024 * 1024;
/// Largest sealed answer read: the JSON is a few KiB, padded to 4096 bytes.
pub const MAX_ANSWER_LEN: usize = 1024 * 1024;
/// Largest error body read from the parent.
const MAX_ERROR_LEN: usize = 64 * 1024;

/// The parsed command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    pub url: Url,
    pub measurements: Option<PathBuf>,
    pub pcrs: BTreeMap<u8, Pcr>,
    pub dev_root: Option<PathBuf>,
    pub allow_debug: bool,
    pub no_pcr_check: bool,
    pub max_age: Duration,
    pub top_k: Option<u8>,
    pub verbose: bool,
    pub image: PathBuf,
}

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Help,
    Run(Options),
}

/// Parses the arguments (without the program name).
pub fn parse_args<I: IntoIterator<Item = String>>(args: I) -> Result<Command, String> {
    let mut url = None;
    let mut measurements = None;
    let mut pcrs = BTreeMap::new();
    let mut dev_root = None;
    let (mut allow_debug, mut no_pcr_check, mut verbose) = (false, false, false);
    let mut max_age = None;
    let mut top_k = None;
    let mut images = Vec::new();

    let mut args = args.into_iter();
    let mut only_operands = false;
    while let Some(arg) = args.next() {
        if only_operands || !arg.starts_with('-') || arg == "-" {
            images.push(arg);
            continue;
        }
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        let takes_value = matches!(
            name.as_str(),
            "--url" | "--measurements" | "--pcr" | "--dev-root" | "--max-age" | "--top-k"
        );
        let value = if takes_value {
            match inline {
                Some(v) => v,
                None => args.next().ok_or_else(|| format!("{name} needs a value"))?,
            }
        } else {
            if inline.is_some() {
                return Err(format!("{name} takes no value"));
            }
            String::new()
        };
        let once = |slot: bool| {
            if slot {
                Err(format!("{name} given twice"))
            } else {
                Ok(())
            }
        };
        match name.as_str() {
            "-h" | "--help" => return Ok(Command::Help),
            "--" => only_operands = true,
            "--url" => {
                once(url.is_some())?;
                url = Some(Url::parse(&value).map_err(|e| format!("--url: {e}"))?);
            }
            "--measurements" => {
                once(measurements.is_some())?;
                measurements = Some(PathBuf::from(value));
            }
            "--pcr" => {
                let (index, hex_value) = value.split_once('=').ok_or("--pcr takes N=HEX")?;
                let index = measurements::parse_index(index)
                    .ok_or_else(|| format!("--pcr {index}: not a PCR index from 0 to 31"))?;
                let pcr = measurements::parse_pcr(hex_value).map_err(|e| format!("--pcr {index}: {e}"))?;
                if pcrs.insert(index, pcr).is_some() {
                    return Err(format!("--pcr {index} given twice"));
                }
            }
            "--dev-root" => {
                once(dev_root.is_some())?;
                dev_root = Some(PathBuf::from(value));
            }
            "--allow-debug" => {
                once(allow_debug)?;
                allow_debug = true;
            }
            "--no-pcr-check" => {
                once(no_pcr_check)?;
                no_pcr_check = true;
            }
            "--verbose" | "-v" => verbose = true,
            "--max-age" => {
                once(max_age.is_some())?;
                let secs = parse_number(&value, 1, 86400).ok_or("--max-age: a number of seconds from 1 to 86400")?;
                max_age = Some(Duration::from_secs(secs));
            }
            "--top-k" => {
                once(top_k.is_some())?;
                let k = parse_number(&value, 1, 100).ok_or("--top-k: a number from 1 to 100")?;
                top_k = Some(k as u8);
            }
            _ => return Err(format!("unknown option {name}")),
        }
    }

    let image = match images.len() {
        1 => PathBuf::from(images.remove(0)),
        0 => return Err("no IMAGE given".into()),
        _ => return Err("one IMAGE only".into()),
    };
    if no_pcr_check && (measurements.is_some() || !pcrs.is_empty()) {
        return Err("--no-pcr-check contradicts --measurements and --pcr".into());
    }
    if !no_pcr_check && measurements.is_none() && pcrs.is_empty() {
        return Err(
            "no PCR pinned: pass --measurements FILE or --pcr N=HEX (or --no-pcr-check, development only)".into(),
        );
    }
    Ok(Command::Run(Options {
        url: match url {
            Some(u) => u,
            None => Url::parse("http://127.0.0.1:8080").map_err(|e| e.to_string())?,
        },
        measurements,
        pcrs,
        dev_root,
        allow_debug,
        no_pcr_check,
        max_age: max_age.unwrap_or(verify::DEFAULT_MAX_AGE),
        top_k,
        verbose,
        image,
    }))
}

/// A decimal number from `min` to `max`, digits only.
fn parse_number(text: &str, min: u64, max: u64) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) || text.len() > 10 {
        return None;
    }
    text.parse().ok().filter(|n| (min..=max).contains(n))
}

/// A failure of the run, with its exit status.
struct Failure(u8, String);

/// Runs the command line: returns the exit status. The inner JSON goes to
/// `out`, messages to `err`.
pub fn main(args: Vec<String>, out: &mut dyn Write, err: &mut dyn Write) -> u8 {
    let options = match parse_args(args) {
        Ok(Command::Help) => {
            let _ = out.write_all(USAGE.as_bytes());
            return exit::OK;
        }
        Ok(Command::Run(options)) => options,
        Err(e) => {
            let _ = writeln!(err, "sealed-client: {e}\n\n{USAGE}");
            return exit::USAGE;
        }
    };
    match run(&options, out, err) {
        Ok(status) => status,
        Err(Failure(status, message)) => {
            let _ = writeln!(err, "sealed-client: {message}");
            status
        }
    }
}

fn run(options: &Options, out: &mut dyn Write, err: &mut dyn Write) -> Result<u8, Failure> {
    let usage = |m: String| Failure(exit::USAGE, m);
    let transport = |m: String| Failure(exit::TRANSPORT, m);

    // Everything local first: a mistake here sends nothing.
    let root = match &options.dev_root {
        None => TrustedRoot::aws_nitro().map_err(|e| Failure(exit::REFUSED, e.to_string()))?,
        Some(path) => {
            let pem = read_file(path, 64 * 1024).map_err(usage)?;
            let pem = String::from_utf8(pem).map_err(|_| usage(format!("{}: not PEM text", path.display())))?;
            TrustedRoot::development_from_pem(&pem).map_err(|e| usage(format!("--dev-root {}: {e}", path.display())))?
        }
    };
    let pcr_policy = if options.no_pcr_check {
        PcrPolicy::NotChecked
    } else {
        let mut pinned = BTreeMap::new();
        if let Some(path) = &options.measurements {
            let json = read_file(path, measurements::MAX_FILE_LEN).map_err(usage)?;
            let json = String::from_utf8(json).map_err(|_| usage(format!("{}: not UTF-8", path.display())))?;
            pinned =
                measurements::parse(&json).map_err(|e| usage(format!("--measurements {}: {e}", path.display())))?;
        }
        for (&index, value) in &options.pcrs {
            if pinned.get(&index).is_some_and(|v| v != value) {
                return Err(usage(format!(
                    "--pcr {index} differs from PCR{index} in the measurements file"
                )));
            }
            pinned.insert(index, *value);
        }
        PcrPolicy::Pinned(pinned)
    };
    let image = read_file(&options.image, MAX_IMAGE_LEN).map_err(usage)?;
    if let Some(path) = &options.dev_root {
        let _ = writeln!(
            err,
            "sealed-client: WARNING: verifying against a DEVELOPMENT root ({}, SHA-256 {}), NOT the AWS Nitro root.\n\
             sealed-client: WARNING: a document it accepts proves nothing about an enclave: whoever holds that \
             root's key can read the image. Development only.",
            path.display(),
            root.fingerprint()
        );
    }

    // The attestation document, for a fresh nonce.
    let mut nonce = [0u8; 32];
    getrandom::getrandom(&mut nonce).map_err(|e| transport(format!("no random bytes for the nonce: {e}")))?;
    let timeouts = Timeouts::default();
    let path = format!("/attestation?nonce={}", hex::encode(&nonce));
    let answer = http::get(&options.url, &path, MAX_DOCUMENT_LEN.max(MAX_ERROR_LEN), timeouts)
        .map_err(|e| transport(format!("GET {}{path}: {e}", options.url)))?;
    if answer.status != 200 {
        return Err(transport(format!(
            "GET /attestation: the parent answered {}: {}",
            answer.status,
            excerpt(&answer.body)
        )));
    }
    if !answer.has_type("application/cbor") {
        return Err(transport(format!(
            "GET /attestation: Content-Type {:?}, not application/cbor",
            answer.content_type.as_deref().unwrap_or("")
        )));
    }

    // Verification: nothing is sent unless every check passes.
    let mut policy = Policy::new(root, pcr_policy);
    policy.max_age = options.max_age;
    policy.allow_debug = options.allow_debug;
    let verified = verify::verify(&answer.body, &nonce, &policy)
        .map_err(|e| Failure(exit::REFUSED, format!("attestation refused: {e}")))?;
    if options.verbose {
        report(err, options, &policy, &verified);
    }

    // The sealed request.
    let sealed = seal::seal(&verified.key_config, &image, options.top_k).map_err(|e| transport(e.to_string()))?;
    let answer = http::post(
        &options.url,
        seal::PATH,
        "message/ohttp-req",
        &sealed.request,
        MAX_ANSWER_LEN,
        timeouts,
    )
    .map_err(|e| transport(format!("POST {}{}: {e}", options.url, seal::PATH)))?;
    if answer.status != 200 {
        let key_rejected = answer.status == 400 && answer.has_type("application/problem+json");
        return Err(transport(if key_rejected {
            format!(
                "the gateway does not accept key id {} (the enclave rotated its key or restarted): run again",
                verified.key_config.key_id()
            )
        } else {
            format!(
                "POST {}: the parent answered {}: {}",
                seal::PATH,
                answer.status,
                excerpt(&answer.body)
            )
        }));
    }
    if !answer.has_type("message/ohttp-res") {
        return Err(transport(format!(
            "POST {}: Content-Type {:?}, not message/ohttp-res",
            seal::PATH,
            answer.content_type.as_deref().unwrap_or("")
        )));
    }
    let inner = sealed.open(&answer.body).map_err(|e| transport(e.to_string()))?;

    let _ = out.write_all(&inner.body);
    if !inner.body.ends_with(b"\n") {
        let _ = out.write_all(b"\n");
    }
    let _ = out.flush();
    if inner.status != 200 {
        let _ = writeln!(err, "sealed-client: the enclave answered status {}", inner.status);
        return Ok(exit::INNER_ERROR);
    }
    Ok(exit::OK)
}

/// Reads a whole file of at most `limit` bytes.
fn read_file(path: &std::path::Path, limit: usize) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut bytes = Vec::new();
    file.take(limit as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if bytes.len() > limit {
        return Err(format!("{}: larger than {limit} bytes", path.display()));
    }
    Ok(bytes)
}

/// The start of an untrusted body, printable.
fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(300)]);
    let more = if body.len() > 300 { "..." } else { "" };
    format!("{}{more}", printable(text.trim_end()))
}

/// What was verified, on stderr (--verbose).
fn report(err: &mut dyn Write, options: &Options, policy: &Policy, v: &Verified) {
    let a = &v.attested;
    let root = match a.root {
        RootKind::AwsNitro => format!("AWS Nitro root (SHA-256 {})", policy.root.fingerprint()),
        RootKind::Development => format!(
            "DEVELOPMENT root (SHA-256 {}): not evidence of an enclave",
            policy.root.fingerprint()
        ),
    };
    let mut lines = vec![
        format!("verified the attestation document from {}", options.url),
        format!("  root:      {root}"),
    ];
    for (i, subject) in a.chain_subjects.iter().enumerate() {
        let role = match i {
            0 => "root",
            _ if i + 1 == a.chain_subjects.len() => "leaf",
            _ => "CA",
        };
        lines.push(format!("  chain {i}:   {subject} ({role})"));
    }
    lines.push(format!("  module id: {}", printable(&a.module_id)));
    lines.push(format!(
        "  signed:    {} (age {:.1} s, max {} s)",
        verify::format_time(a.timestamp_ms),
        a.age.as_secs_f64(),
        policy.max_age.as_secs()
    ));
    for (index, value) in &a.pcrs {
        let pinned = match &policy.pcrs {
            PcrPolicy::Pinned(p) if p.contains_key(index) => " (pinned, equal)",
            _ => "",
        };
        if pinned.is_empty() && value.iter().all(|&b| b == 0) {
            continue;
        }
        lines.push(format!("  PCR{index:<2}      {}{pinned}", hex::encode(value)));
    }
    if matches!(policy.pcrs, PcrPolicy::NotChecked) {
        lines.push("  PCRs:      NOT CHECKED (--no-pcr-check)".to_string());
    }
    lines.push(format!(
        "  key:       id {}, X25519 {} (HKDF-SHA256, AES-128-GCM)",
        v.key_config.key_id(),
        hex::encode(v.key_config.public_key())
    ));
    lines.push(format!(
        "  user_data: {}",
        printable(&String::from_utf8_lossy(&v.user_data))
    ));
    for line in lines {
        let _ = writeln!(err, "sealed-client: {line}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn run_options(list: &[&str]) -> Options {
        match parse_args(args(list)).unwrap() {
            Command::Run(o) => o,
            Command::Help => panic!("help"),
        }
    }

    #[test]
    fn defaults_and_values() {
        let o = run_options(&["--no-pcr-check", "cat.jpg"]);
        assert_eq!(o.url.to_string(), "http://127.0.0.1:8080");
        assert_eq!(o.max_age, Duration::from_secs(300));
        assert_eq!((o.top_k, o.verbose, o.allow_debug), (None, false, false));
        assert_eq!(o.image, PathBuf::from("cat.jpg"));

        let pcr1 = "ab".repeat(48);
        let o = run_options(&[
            "--url=http://[::1]:9",
            "--measurements",
            "m.json",
            "--pcr",
            &format!("1={pcr1}"),
            "--dev-root",
            "root.pem",
            "--allow-debug",
            "--max-age",
            "60",
            "--top-k=3",
            "--verbose",
            "--",
            "-odd name.png",
        ]);
        assert_eq!(o.url.port, 9);
        assert_eq!(o.measurements, Some(PathBuf::from("m.json")));
        assert_eq!(o.pcrs.get(&1), Some(&[0xab; 48]));
        assert_eq!(o.dev_root, Some(PathBuf::from("root.pem")));
        assert_eq!((o.allow_debug, o.verbose, o.top_k), (true, true, Some(3)));
        assert_eq!(o.max_age, Duration::from_secs(60));
        assert_eq!(o.image, PathBuf::from("-odd name.png"));
        assert_eq!(parse_args(args(&["x", "--help"])), Ok(Command::Help));
    }

    #[test]
    fn usage_errors() {
        let pcr = "00".repeat(48);
        for (list, message) in [
            (vec!["--no-pcr-check"], "no IMAGE given"),
            (vec!["--no-pcr-check", "a", "b"], "one IMAGE only"),
            (vec!["a"], "no PCR pinned"),
            (vec!["--no-pcr-check", "--pcr", &format!("0={pcr}"), "a"], "contradicts"),
            (vec!["--pcr", "32=00", "a"], "not a PCR index"),
            (vec!["--pcr", "1=abc", "a"], "--pcr 1: not hex digits"),
            (vec!["--pcr", "1=abcd", "a"], "--pcr 1: 2 bytes, not 48"),
            (vec!["--pcr", "1", "a"], "--pcr takes N=HEX"),
            (vec!["--no-pcr-check", "--top-k", "0", "a"], "--top-k"),
            (vec!["--no-pcr-check", "--top-k", "101", "a"], "--top-k"),
            (vec!["--no-pcr-check", "--max-age", "-5", "a"], "--max-age"),
            (vec!["--no-pcr-check", "--url", "https://x", "a"], "no TLS"),
            (
                vec!["--no-pcr-check", "--frobnicate", "a"],
                "unknown option --frobnicate",
            ),
            (vec!["--no-pcr-check", "--verbose=yes", "a"], "takes no value"),
            (vec!["--no-pcr-check", "--url"], "--url needs a value"),
            (
                vec!["--no-pcr-check", "--allow-debug", "--allow-debug", "a"],
                "given twice",
            ),
        ] {
            let e = parse_args(args(&list)).unwrap_err();
            assert!(e.contains(message), "{list:?}: {e}");
        }
        let twice = vec![
            "--pcr".to_string(),
            format!("1={pcr}"),
            "--pcr".into(),
            format!("1={pcr}"),
            "a".into(),
        ];
        assert!(parse_args(twice).unwrap_err().contains("given twice"));
    }
}
