//! What init reads before it runs anything: the kernel command line's `nitro_ml.parent_cid`,
//! the ramdisks' `/cmd` and `/env`, and the init ramdisk's `/modules/load.order`.
//!
//! All four are text files of lines. `/cmd` and `/env` have the format of AWS's init
//! (aws-nitro-enclaves-sdk-bootstrap `init/init.c`, `read_config`): one entry a line, the last
//! line's newline optional, each line taken whole (spaces included) as one argv element or one
//! `NAME=value` environment entry. Unlike AWS's reader, a file over [`MAX_CONFIG_LEN`], a NUL
//! byte, or a `/cmd` without a program is refused with a typed error instead of being passed on,
//! since a truncated or empty command is never what the image's builder meant.
//!
//! These are pure functions over bytes, so the tests run on the host.

use std::fmt;

/// Where AWS's init sends the heartbeat: the parent instance is CID 3 on Nitro.
pub const DEFAULT_PARENT_CID: u32 = 3;

/// The largest `/cmd`, `/env`, `/proc/cmdline` or `load.order` init reads. AWS's command line is
/// under 200 bytes and ours writes a handful of lines; 64 KiB leaves room for a long environment
/// while keeping a hostile or broken image from making PID 1 allocate without bound.
pub const MAX_CONFIG_LEN: usize = 64 * 1024;

/// The kernel command-line parameter that names the parent's CID. The emulator's vsock backend
/// (vhost-device-vsock in Unix-socket mode) forwards only to CID 2, so the emulation EIF says
/// `nitro_ml.parent_cid=2`; absent, it is [`DEFAULT_PARENT_CID`], as on Nitro.
pub const PARENT_CID_PARAM: &str = "nitro_ml.parent_cid";

#[derive(Debug, PartialEq, Eq)]
pub enum ConfigError {
    /// A file longer than [`MAX_CONFIG_LEN`] (the name and its length).
    TooLong(&'static str, usize),
    /// A NUL byte, which no argv or environment entry can carry (the name and the line).
    Nul(&'static str, usize),
    /// Bytes that are not UTF-8 (the name and the line).
    NotUtf8(&'static str, usize),
    /// `/cmd` has no program.
    EmptyCommand,
    /// An `/env` line without `=` (its line number).
    EnvWithoutEquals(usize),
    /// `nitro_ml.parent_cid` is not a CID a parent can have (the text).
    BadParentCid(String),
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooLong(name, len) => write!(
                f,
                "{name} is {len} bytes, over the {MAX_CONFIG_LEN}-byte limit"
            ),
            Self::Nul(name, line) => write!(f, "{name} line {line} holds a NUL byte"),
            Self::NotUtf8(name, line) => write!(f, "{name} line {line} is not UTF-8"),
            Self::EmptyCommand => write!(f, "/cmd names no program"),
            Self::EnvWithoutEquals(line) => write!(f, "/env line {line} has no '='"),
            Self::BadParentCid(text) => {
                write!(
                    f,
                    "{PARENT_CID_PARAM}={text} is not a parent CID (a number from 2 to 4294967294)"
                )
            }
        }
    }
}

impl std::error::Error for ConfigError {}

/// Splits a file into its lines as AWS's `read_config` does: on `\n`, the final newline
/// optional, no trimming, no comments. An empty file has no lines.
pub fn lines(name: &'static str, bytes: &[u8]) -> Result<Vec<String>, ConfigError> {
    if bytes.len() > MAX_CONFIG_LEN {
        return Err(ConfigError::TooLong(name, bytes.len()));
    }
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    let body = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    body.split(|&b| b == b'\n')
        .enumerate()
        .map(|(i, line)| {
            if line.contains(&0) {
                return Err(ConfigError::Nul(name, i + 1));
            }
            String::from_utf8(line.to_vec()).map_err(|_| ConfigError::NotUtf8(name, i + 1))
        })
        .collect()
}

/// `/cmd`: the program and its arguments, one a line.
pub fn command(bytes: &[u8]) -> Result<Vec<String>, ConfigError> {
    let argv = lines("/cmd", bytes)?;
    match argv.first() {
        Some(program) if !program.is_empty() => Ok(argv),
        _ => Err(ConfigError::EmptyCommand),
    }
}

/// `/env`: `NAME=value` entries, one a line, split at the first `=`.
pub fn environment(bytes: &[u8]) -> Result<Vec<(String, String)>, ConfigError> {
    lines("/env", bytes)?
        .into_iter()
        .enumerate()
        .map(|(i, line)| match line.split_once('=') {
            Some((name, value)) if !name.is_empty() => Ok((name.to_owned(), value.to_owned())),
            _ => Err(ConfigError::EnvWithoutEquals(i + 1)),
        })
        .collect()
}

/// The parent's CID from `/proc/cmdline`: the last `nitro_ml.parent_cid=` wins, as the kernel's
/// own parameters do. CIDs 0 and 1 (hypervisor, local) and `u32::MAX` (any) are not a parent.
pub fn parent_cid(cmdline: &str) -> Result<u32, ConfigError> {
    let mut cid = DEFAULT_PARENT_CID;
    for word in cmdline.split_ascii_whitespace() {
        let Some(value) = word
            .strip_prefix(PARENT_CID_PARAM)
            .and_then(|rest| rest.strip_prefix('='))
        else {
            continue;
        };
        cid = match value.parse::<u32>() {
            Ok(n) if (2..u32::MAX).contains(&n) => n,
            _ => return Err(ConfigError::BadParentCid(value.to_owned())),
        };
    }
    Ok(cid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_like_aws_read_config() {
        assert_eq!(lines("/cmd", b"").unwrap(), Vec::<String>::new());
        assert_eq!(lines("/cmd", b"\n").unwrap(), vec![String::new()]);
        assert_eq!(
            lines("/cmd", b"/server\n--listen\nvsock:5005\n").unwrap(),
            ["/server", "--listen", "vsock:5005"]
        );
        assert_eq!(lines("/cmd", b"/server\n--x").unwrap(), ["/server", "--x"]);
        assert_eq!(lines("/cmd", b"a b\n\nc").unwrap(), ["a b", "", "c"]);
    }

    #[test]
    fn lines_refuse_what_cannot_be_an_argument() {
        assert_eq!(
            lines("/env", b"A=1\nB=\0\n"),
            Err(ConfigError::Nul("/env", 2))
        );
        assert_eq!(
            lines("/cmd", b"\xff\n"),
            Err(ConfigError::NotUtf8("/cmd", 1))
        );
        let big = vec![b'a'; MAX_CONFIG_LEN + 1];
        assert_eq!(
            lines("/cmd", &big),
            Err(ConfigError::TooLong("/cmd", MAX_CONFIG_LEN + 1))
        );
        assert!(lines("/cmd", &big[..MAX_CONFIG_LEN]).is_ok());
    }

    #[test]
    fn command_needs_a_program() {
        assert_eq!(command(b""), Err(ConfigError::EmptyCommand));
        assert_eq!(command(b"\n--flag\n"), Err(ConfigError::EmptyCommand));
        assert_eq!(command(b"/server").unwrap(), ["/server"]);
    }

    #[test]
    fn environment_entries() {
        assert_eq!(
            environment(b"PATH=/bin\nX=a=b\nEMPTY=\n").unwrap(),
            [
                ("PATH".into(), "/bin".into()),
                ("X".into(), "a=b".into()),
                ("EMPTY".into(), String::new())
            ]
        );
        assert_eq!(environment(b"").unwrap(), []);
        assert_eq!(
            environment(b"A=1\nNOEQUALS\n"),
            Err(ConfigError::EnvWithoutEquals(2))
        );
        assert_eq!(environment(b"=x\n"), Err(ConfigError::EnvWithoutEquals(1)));
    }

    #[test]
    fn parent_cid_from_the_command_line() {
        assert_eq!(parent_cid("console=ttyS0 nomodules"), Ok(3));
        assert_eq!(parent_cid("console=ttyS0 nitro_ml.parent_cid=2\n"), Ok(2));
        assert_eq!(
            parent_cid("nitro_ml.parent_cid=2 nitro_ml.parent_cid=7"),
            Ok(7)
        );
        assert_eq!(parent_cid("nitro_ml.parent_cidx=9"), Ok(3));
        assert_eq!(parent_cid("xnitro_ml.parent_cid=9"), Ok(3));
        for bad in ["0", "1", "4294967295", "-1", "two", "", "99999999999"] {
            assert_eq!(
                parent_cid(&format!("nitro_ml.parent_cid={bad}")),
                Err(ConfigError::BadParentCid(bad.into()))
            );
        }
    }
}
