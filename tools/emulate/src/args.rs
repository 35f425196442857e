//! The command line, parsed and bounded before anything starts.
//!
//! ```text
//! emulate --eif FILE --run-dir DIR [--cid 16] [--memory-mib N] [--cpus N] [--rng on|off (on)]
//!         [--cpu-rng on|off (on)] [--kvm] [--heartbeat-timeout SECONDS]
//! ```

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// nitro-cli's default enclave CID in this project (mk/nitro.mk ENCLAVE_CID).
pub const DEFAULT_CID: u32 = 16;
/// nitro-cli accepts enclave CIDs from 4 (0-2 are reserved, 3 is the parent) to u32::MAX - 1.
pub const MIN_CID: u32 = 4;
/// The production enclave's CPU count (mk/nitro.mk ENCLAVE_CPUS).
pub const DEFAULT_CPUS: u32 = 2;
/// More vCPUs than this is a typo, not a test: TCG runs one host thread per vCPU.
pub const MAX_CPUS: u32 = 64;
/// The smallest guest worth booting: the Debian kernel alone needs ~100 MiB before the ramdisks.
pub const MIN_MEMORY_MIB: u64 = 256;
/// QEMU's memfd backend on a development machine: 64 GiB is far past any model here.
pub const MAX_MEMORY_MIB: u64 = 64 * 1024;
/// A heartbeat timeout longer than an hour is a mistake.
pub const MAX_HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(3600);

#[derive(Debug, PartialEq, Eq)]
pub struct Options {
    pub eif: PathBuf,
    pub run_dir: PathBuf,
    pub cid: u32,
    /// None: computed from the EIF's size (`memory_for`).
    pub memory_mib: Option<u64>,
    pub cpus: u32,
    /// A virtio-rng device (default on): on Nitro the NSM driver registers a hardware RNG, and
    /// QEMU 7.2 has no NSM, so virtio-rng stands in for it. Off shows the guest with RDRAND alone.
    pub rng: bool,
    /// RDRAND and RDSEED in the guest's CPU (default on, as every Nitro host has them). Off, with
    /// `--rng on`, the kernel's pool is not ready when the model server starts, which then seeds
    /// it from /dev/hwrng as it would from the NSM's; with `--rng off` too, it has no source
    /// and must stop with its entropy error.
    pub cpu_rng: bool,
    pub kvm: bool,
    /// None: nitro-cli's rule (`heartbeat_timeout_for`).
    pub heartbeat_timeout: Option<Duration>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum UsageError {
    Unknown(String),
    MissingValue(&'static str),
    Missing(&'static str),
    Repeated(&'static str),
    BadNumber(&'static str, String),
    OutOfRange(&'static str, u64),
    /// An on/off option with another value.
    BadSwitch(&'static str, String),
}

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unknown(a) => write!(f, "unknown argument '{a}'"),
            Self::MissingValue(o) => write!(f, "{o} needs a value"),
            Self::Missing(o) => write!(f, "{o} is required"),
            Self::Repeated(o) => write!(f, "{o} is given twice"),
            Self::BadNumber(o, v) => write!(f, "{o} takes a number, not '{v}'"),
            Self::OutOfRange(o, v) => {
                let range = match *o {
                    "--cid" => format!("{MIN_CID} to {}", u32::MAX - 1),
                    "--cpus" => format!("1 to {MAX_CPUS}"),
                    "--memory-mib" => format!("{MIN_MEMORY_MIB} to {MAX_MEMORY_MIB}"),
                    _ => format!("1 to {}", MAX_HEARTBEAT_TIMEOUT.as_secs()),
                };
                write!(f, "{o} {v} is out of range ({range})")
            }
            Self::BadSwitch(o, v) => write!(f, "{o} takes on or off, not '{v}'"),
        }
    }
}

pub const USAGE: &str =
    "usage: emulate --eif FILE --run-dir DIR [--cid 16] [--memory-mib N] [--cpus 2] \
[--rng on|off] [--cpu-rng on|off] [--kvm] [--heartbeat-timeout SECONDS]";

fn number(opt: &'static str, v: &str, min: u64, max: u64) -> Result<u64, UsageError> {
    let n: u64 = v
        .parse()
        .map_err(|_| UsageError::BadNumber(opt, v.to_owned()))?;
    if n < min || n > max {
        return Err(UsageError::OutOfRange(opt, n));
    }
    Ok(n)
}

fn set<T>(slot: &mut Option<T>, opt: &'static str, value: T) -> Result<(), UsageError> {
    if slot.replace(value).is_some() {
        return Err(UsageError::Repeated(opt));
    }
    Ok(())
}

pub fn parse(args: &[String]) -> Result<Options, UsageError> {
    let (mut eif, mut run_dir, mut cid, mut memory, mut cpus, mut rng, mut cpu_rng, mut timeout) =
        (None, None, None, None, None, None, None, None);
    let mut kvm = false;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let opt: &'static str = match arg.as_str() {
            "--eif" => "--eif",
            "--run-dir" => "--run-dir",
            "--cid" => "--cid",
            "--memory-mib" => "--memory-mib",
            "--cpus" => "--cpus",
            "--rng" => "--rng",
            "--cpu-rng" => "--cpu-rng",
            "--heartbeat-timeout" => "--heartbeat-timeout",
            "--kvm" => {
                if kvm {
                    return Err(UsageError::Repeated("--kvm"));
                }
                kvm = true;
                continue;
            }
            _ => return Err(UsageError::Unknown(arg.clone())),
        };
        let v = it.next().ok_or(UsageError::MissingValue(opt))?;
        match opt {
            "--eif" => set(&mut eif, opt, PathBuf::from(v))?,
            "--run-dir" => set(&mut run_dir, opt, PathBuf::from(v))?,
            "--cid" => set(
                &mut cid,
                opt,
                number(opt, v, MIN_CID.into(), (u32::MAX - 1).into())?,
            )?,
            "--memory-mib" => set(
                &mut memory,
                opt,
                number(opt, v, MIN_MEMORY_MIB, MAX_MEMORY_MIB)?,
            )?,
            "--cpus" => set(&mut cpus, opt, number(opt, v, 1, MAX_CPUS.into())?)?,
            "--heartbeat-timeout" => set(
                &mut timeout,
                opt,
                number(opt, v, 1, MAX_HEARTBEAT_TIMEOUT.as_secs())?,
            )?,
            _ => {
                let slot = if opt == "--rng" {
                    &mut rng
                } else {
                    &mut cpu_rng
                };
                match v.as_str() {
                    "on" => set(slot, opt, true)?,
                    "off" => set(slot, opt, false)?,
                    _ => return Err(UsageError::BadSwitch(opt, v.clone())),
                }
            }
        }
    }
    Ok(Options {
        eif: eif.ok_or(UsageError::Missing("--eif"))?,
        run_dir: run_dir.ok_or(UsageError::Missing("--run-dir"))?,
        // Both were range-checked against u32 bounds above.
        cid: cid.map_or(DEFAULT_CID, |c| u32::try_from(c).unwrap_or(DEFAULT_CID)),
        memory_mib: memory,
        cpus: cpus.map_or(DEFAULT_CPUS, |c| u32::try_from(c).unwrap_or(DEFAULT_CPUS)),
        rng: rng.unwrap_or(true),
        cpu_rng: cpu_rng.unwrap_or(true),
        kvm,
        heartbeat_timeout: timeout.map(Duration::from_secs),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &[&str]) -> Result<Options, UsageError> {
        parse(&args.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn defaults() {
        let o = p(&["--eif", "a.eif", "--run-dir", "d"]).unwrap();
        assert_eq!(
            o,
            Options {
                eif: "a.eif".into(),
                run_dir: "d".into(),
                cid: 16,
                memory_mib: None,
                cpus: 2,
                rng: true,
                cpu_rng: true,
                kvm: false,
                heartbeat_timeout: None
            }
        );
    }

    #[test]
    fn everything() {
        let o = p(&[
            "--run-dir",
            "d",
            "--eif",
            "e",
            "--cid",
            "20",
            "--memory-mib",
            "1024",
            "--cpus",
            "1",
            "--rng",
            "off",
            "--cpu-rng",
            "off",
            "--kvm",
            "--heartbeat-timeout",
            "5",
        ])
        .unwrap();
        assert_eq!(
            (o.cid, o.memory_mib, o.cpus, o.rng, o.cpu_rng, o.kvm),
            (20, Some(1024), 1, false, false, true)
        );
        assert_eq!(o.heartbeat_timeout, Some(Duration::from_secs(5)));
    }

    #[test]
    fn refusals() {
        assert_eq!(p(&["--run-dir", "d"]), Err(UsageError::Missing("--eif")));
        assert_eq!(p(&["--eif", "e"]), Err(UsageError::Missing("--run-dir")));
        assert_eq!(p(&["--eif"]), Err(UsageError::MissingValue("--eif")));
        assert_eq!(
            p(&["--eif", "e", "--eif", "f"]),
            Err(UsageError::Repeated("--eif"))
        );
        assert_eq!(p(&["--kvm", "--kvm"]), Err(UsageError::Repeated("--kvm")));
        assert_eq!(p(&["-x"]), Err(UsageError::Unknown("-x".into())));
        assert_eq!(p(&["--cid", "3"]), Err(UsageError::OutOfRange("--cid", 3)));
        assert_eq!(
            p(&["--cid", "4294967295"]),
            Err(UsageError::OutOfRange("--cid", 4294967295))
        );
        assert_eq!(
            p(&["--cid", "x"]),
            Err(UsageError::BadNumber("--cid", "x".into()))
        );
        assert_eq!(
            p(&["--cpus", "0"]),
            Err(UsageError::OutOfRange("--cpus", 0))
        );
        assert_eq!(
            p(&["--cpus", "65"]),
            Err(UsageError::OutOfRange("--cpus", 65))
        );
        assert_eq!(
            p(&["--memory-mib", "128"]),
            Err(UsageError::OutOfRange("--memory-mib", 128))
        );
        assert_eq!(
            p(&["--memory-mib", "-1"]),
            Err(UsageError::BadNumber("--memory-mib", "-1".into()))
        );
        assert_eq!(
            p(&["--rng", "yes"]),
            Err(UsageError::BadSwitch("--rng", "yes".into()))
        );
        assert_eq!(
            p(&["--cpu-rng", "1"]),
            Err(UsageError::BadSwitch("--cpu-rng", "1".into()))
        );
        assert_eq!(
            p(&["--cpu-rng", "on", "--cpu-rng", "on"]),
            Err(UsageError::Repeated("--cpu-rng"))
        );
        assert_eq!(
            p(&["--heartbeat-timeout", "0"]),
            Err(UsageError::OutOfRange("--heartbeat-timeout", 0))
        );
    }
}
