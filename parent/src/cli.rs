//! Command-line parsing for the parent.
//!
//! Two commands share one binary: the HTTP front (the default) and
//! `parent ping ADDR`, which `make run` and the scripts use to wait until a
//! model server has loaded its model. Parsing is hand-written (a dozen flags do
//! not need a dependency) and strict: an unknown flag, a missing value or a
//! value out of its range is an error naming the flag, and `main` exits 2.
//! Every numeric flag is bounded by a named limit from `shared::limits`, so a
//! typo cannot ask for a million threads or a body limit above what a frame can
//! carry.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use shared::limits::{
    BACKEND_DEADLINE, BACKEND_POOL_SIZE, HTTP_IO_TIMEOUT, HTTP_THREADS, MAX_BACKEND_DEADLINE,
    MAX_HTTP_BODY, MAX_HTTP_IO_TIMEOUT, MAX_HTTP_THREADS,
};
use shared::transport::{Addr, AddrError};

/// Default wait of `parent ping`, in seconds: an efficientnet model loads in
/// well under a second, an enclave boots in a few.
pub const DEFAULT_PING_TIMEOUT_SECS: u64 = 30;
/// Longest wait `parent ping --timeout` accepts, in seconds.
pub const MAX_PING_TIMEOUT_SECS: u64 = 3600;

pub const USAGE: &str = "\
usage: parent [OPTIONS]              run the HTTP front
       parent ping ADDR [--timeout SECS]
                                     wait until the model server at ADDR answers Ping

options:
  --listen IP:PORT     HTTP address to listen on (default 127.0.0.1:8080)
  --secure ADDR        the enclave's model server (default vsock:16:5005)
  --public ADDR        the public model server (default unix:.run/public.sock)
  --threads N          HTTP handler threads (default 16, 1..=256)
  --max-body BYTES     largest request body (default 16777216 = 16 MiB, the maximum)
  --deadline-ms MS     deadline of one backend round trip (default 30000, 1..=600000)
  --pool N             connections kept open to each backend (default and most 8)
  --io-timeout-ms MS   HTTP read/write idle timeout per connection (default 10000, 1000..=300000)
  --sealed-only        refuse plaintext secure requests (/predict-secure/ and OIP V2 <model>-secure
                       infer) with 403 sealed_only: the enclave takes only sealed requests
                       (Content-Type: message/ohttp-req; docs/SEALED.md)
  -h, --help           print this help

ADDR is vsock:CID:PORT, unix:/path, or hybrid-vsock:/path:PORT (a guest's vsock port through
its vsock device's Unix socket: the emulated enclave of `make emulate`).

ping options:
  --timeout SECS       give up after SECS seconds (default 30); retries every 100 ms
";

/// The HTTP front's configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub listen: SocketAddr,
    pub secure: Addr,
    pub public: Addr,
    pub threads: usize,
    pub max_body: usize,
    pub deadline: Duration,
    pub pool: usize,
    pub io_timeout: Duration,
    pub sealed_only: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            secure: Addr::Vsock { cid: 16, port: 5005 },
            public: Addr::Unix(".run/public.sock".into()),
            threads: HTTP_THREADS,
            max_body: MAX_HTTP_BODY,
            deadline: BACKEND_DEADLINE,
            pool: BACKEND_POOL_SIZE,
            io_timeout: HTTP_IO_TIMEOUT,
            sealed_only: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    Serve(Config),
    Ping { addr: Addr, timeout: Duration },
    Help,
}

/// Why the command line was refused. The Display text is printed before the usage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CliError {
    /// A flag this program does not know.
    UnknownFlag(String),
    /// A flag given as the last argument, without its value.
    MissingValue(&'static str),
    /// A value that is not a number in the flag's range.
    OutOfRange { flag: &'static str, value: String, min: u64, max: u64 },
    /// `--listen` that is not IP:PORT.
    BadListen(String),
    /// A backend address that does not parse.
    BadAddr { flag: &'static str, error: AddrError },
    /// `parent ping` without its address.
    PingWithoutAddr,
    /// A positional argument where none is expected.
    UnexpectedArgument(String),
    /// `--flag=value` for a flag that takes no value.
    UnexpectedValue(&'static str),
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CliError::UnknownFlag(s) => write!(f, "unknown option {s:?}"),
            CliError::MissingValue(flag) => write!(f, "{flag} needs a value"),
            CliError::OutOfRange { flag, value, min, max } => {
                write!(f, "{flag} must be a whole number from {min} to {max}, got {value:?}")
            }
            CliError::BadListen(s) => write!(f, "--listen must be IP:PORT (e.g. 127.0.0.1:8080), got {s:?}"),
            CliError::BadAddr { flag, error } => write!(f, "{flag}: {error}"),
            CliError::PingWithoutAddr => write!(f, "ping needs the model server's address (vsock:CID:PORT, unix:/path or hybrid-vsock:/path:PORT)"),
            CliError::UnexpectedArgument(s) => write!(f, "unexpected argument {s:?}"),
            CliError::UnexpectedValue(flag) => write!(f, "{flag} takes no value"),
        }
    }
}

impl std::error::Error for CliError {}

fn number(flag: &'static str, value: &str, min: u64, max: u64) -> Result<u64, CliError> {
    match value.parse::<u64>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(CliError::OutOfRange { flag, value: value.to_string(), min, max }),
    }
}

fn to_usize(n: u64) -> usize {
    // Every bound above is far below usize::MAX on the 64-bit targets we build for.
    usize::try_from(n).unwrap_or(usize::MAX)
}

fn addr(flag: &'static str, value: &str) -> Result<Addr, CliError> {
    value.parse().map_err(|error| CliError::BadAddr { flag, error })
}

/// Parses the arguments after the program name.
pub fn parse<I: IntoIterator<Item = String>>(args: I) -> Result<Command, CliError> {
    let mut args = args.into_iter().peekable();
    if args.peek().map(String::as_str) == Some("ping") {
        args.next();
        return parse_ping(args);
    }
    let mut cfg = Config::default();
    while let Some(arg) = args.next() {
        // `--flag=value` and `--flag value` are both accepted.
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        let mut value = |name: &'static str| -> Result<String, CliError> {
            match inline.clone() {
                Some(v) => Ok(v),
                None => args.next().ok_or(CliError::MissingValue(name)),
            }
        };
        match flag.as_str() {
            "-h" | "--help" => return Ok(Command::Help),
            "--listen" => {
                let v = value("--listen")?;
                cfg.listen = v.parse().map_err(|_| CliError::BadListen(v.clone()))?;
            }
            "--secure" => cfg.secure = addr("--secure", &value("--secure")?)?,
            "--public" => cfg.public = addr("--public", &value("--public")?)?,
            "--threads" => {
                cfg.threads = to_usize(number("--threads", &value("--threads")?, 1, MAX_HTTP_THREADS as u64)?)
            }
            "--max-body" => {
                cfg.max_body = to_usize(number("--max-body", &value("--max-body")?, 1, MAX_HTTP_BODY as u64)?)
            }
            "--deadline-ms" => {
                let max = u64::try_from(MAX_BACKEND_DEADLINE.as_millis()).unwrap_or(u64::MAX);
                cfg.deadline = Duration::from_millis(number("--deadline-ms", &value("--deadline-ms")?, 1, max)?);
            }
            "--io-timeout-ms" => {
                let max = u64::try_from(MAX_HTTP_IO_TIMEOUT.as_millis()).unwrap_or(u64::MAX);
                cfg.io_timeout = Duration::from_millis(number("--io-timeout-ms", &value("--io-timeout-ms")?, 1000, max)?);
            }
            // No more than the model servers' frame budget is sized for.
            "--pool" => cfg.pool = to_usize(number("--pool", &value("--pool")?, 1, BACKEND_POOL_SIZE as u64)?),
            "--sealed-only" if inline.is_some() => return Err(CliError::UnexpectedValue("--sealed-only")),
            "--sealed-only" => cfg.sealed_only = true,
            other if other.starts_with('-') => return Err(CliError::UnknownFlag(other.to_string())),
            other => return Err(CliError::UnexpectedArgument(other.to_string())),
        }
    }
    Ok(Command::Serve(cfg))
}

fn parse_ping<I: Iterator<Item = String>>(args: I) -> Result<Command, CliError> {
    let mut addr_arg: Option<Addr> = None;
    let mut timeout = Duration::from_secs(DEFAULT_PING_TIMEOUT_SECS);
    let mut args = args;
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        match flag.as_str() {
            "-h" | "--help" => return Ok(Command::Help),
            "--timeout" => {
                let v = match inline {
                    Some(v) => v,
                    None => args.next().ok_or(CliError::MissingValue("--timeout"))?,
                };
                timeout = Duration::from_secs(number("--timeout", &v, 1, MAX_PING_TIMEOUT_SECS)?);
            }
            other if other.starts_with('-') => return Err(CliError::UnknownFlag(other.to_string())),
            other if addr_arg.is_none() => addr_arg = Some(addr("ADDR", other)?),
            other => return Err(CliError::UnexpectedArgument(other.to_string())),
        }
    }
    let addr = addr_arg.ok_or(CliError::PingWithoutAddr)?;
    Ok(Command::Ping { addr, timeout })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &[&str]) -> Result<Command, CliError> {
        parse(args.iter().map(|s| s.to_string()))
    }

    #[test]
    fn defaults() {
        assert_eq!(p(&[]), Ok(Command::Serve(Config::default())));
        let d = Config::default();
        assert_eq!(d.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(d.secure.to_string(), "vsock:16:5005");
        assert_eq!(d.public.to_string(), "unix:.run/public.sock");
    }

    #[test]
    fn all_flags_both_spellings() {
        let c = p(&[
            "--listen", "0.0.0.0:80", "--secure=unix:/s.sock", "--public", "unix:/p.sock", "--threads", "4",
            "--max-body=1000", "--deadline-ms", "1500", "--pool", "2", "--io-timeout-ms", "2500", "--sealed-only",
        ]);
        let want = Config {
            listen: "0.0.0.0:80".parse().unwrap(),
            secure: Addr::Unix("/s.sock".into()),
            public: Addr::Unix("/p.sock".into()),
            threads: 4,
            max_body: 1000,
            deadline: Duration::from_millis(1500),
            pool: 2,
            io_timeout: Duration::from_millis(2500),
            sealed_only: true,
        };
        assert_eq!(c, Ok(Command::Serve(want)));
    }

    #[test]
    fn bad_flags_name_the_problem() {
        assert_eq!(p(&["--nope"]), Err(CliError::UnknownFlag("--nope".into())));
        assert_eq!(p(&["--threads"]), Err(CliError::MissingValue("--threads")));
        assert_eq!(
            p(&["--threads", "0"]),
            Err(CliError::OutOfRange { flag: "--threads", value: "0".into(), min: 1, max: 256 })
        );
        assert_eq!(
            p(&["--max-body", "16777217"]),
            Err(CliError::OutOfRange { flag: "--max-body", value: "16777217".into(), min: 1, max: 16777216 })
        );
        assert_eq!(
            p(&["--pool", "x"]),
            Err(CliError::OutOfRange { flag: "--pool", value: "x".into(), min: 1, max: 8 })
        );
        assert_eq!(
            p(&["--io-timeout-ms", "999"]),
            Err(CliError::OutOfRange { flag: "--io-timeout-ms", value: "999".into(), min: 1000, max: 300000 })
        );
        assert_eq!(p(&["--listen", "localhost"]), Err(CliError::BadListen("localhost".into())));
        assert_eq!(
            p(&["--secure", "tcp:1"]),
            Err(CliError::BadAddr { flag: "--secure", error: AddrError::UnknownScheme("tcp:1".into()) })
        );
        assert_eq!(p(&["stray"]), Err(CliError::UnexpectedArgument("stray".into())));
        assert_eq!(p(&["--sealed-only=yes"]), Err(CliError::UnexpectedValue("--sealed-only")));
        assert_eq!(p(&["--help"]), Ok(Command::Help));
    }

    #[test]
    fn ping_command() {
        assert_eq!(
            p(&["ping", "unix:/x.sock"]),
            Ok(Command::Ping { addr: Addr::Unix("/x.sock".into()), timeout: Duration::from_secs(30) })
        );
        assert_eq!(
            p(&["ping", "vsock:16:5005", "--timeout", "5"]),
            Ok(Command::Ping { addr: Addr::Vsock { cid: 16, port: 5005 }, timeout: Duration::from_secs(5) })
        );
        assert_eq!(p(&["ping"]), Err(CliError::PingWithoutAddr));
        assert_eq!(
            p(&["ping", "unix:/x", "--timeout", "0"]),
            Err(CliError::OutOfRange { flag: "--timeout", value: "0".into(), min: 1, max: 3600 })
        );
        assert_eq!(p(&["ping", "unix:/x", "unix:/y"]), Err(CliError::UnexpectedArgument("unix:/y".into())));
    }
}
