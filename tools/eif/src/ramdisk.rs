//! The two ramdisks of our EIF, in the layout nitro-cli gives them.
//!
//! nitro-cli (aws-nitro-enclaves-cli `enclave_build`) builds two archives, and AWS's init
//! (aws-nitro-enclaves-sdk-bootstrap `init/init.c`) expects exactly that shape:
//!
//! - ramdisk 1, the boot ramdisk (measured into PCR1 with the kernel and cmdline): `dev/`,
//!   `init`, and the NSM driver `nsm.ko`, which init loads with finit_module and deletes.
//! - ramdisk 2, the application (PCR2): the image's file system under `rootfs/`, the empty
//!   mount points `rootfs/{dev,proc,run,sys,tmp,var}`, and two files at the top, `cmd` and
//!   `env`. init reads each line by line (getline, one trailing '\n' removed) into an argv and
//!   an envp, deletes both, chroots into /rootfs and execs argv with execvpe. nitro-cli writes
//!   them from the docker image's CMD and ENV, each element followed by '\n'.
//!
//! Our image's CMD and ENV are fixed (`APP_CMD`, `APP_ENV`): those of Dockerfile.enclave's
//! scratch image, whose ENV is Docker's default PATH. A development image may append arguments
//! to the command (`eif app-ramdisk --arg`: the emulation image with the development NSM adds
//! `--nsm vsock:2:9100`); without any, cmd is exactly `APP_CMD`, so the production ramdisk and
//! its PCR2 do not change. An appended argument can hold neither a newline (init would split it
//! into two) nor a NUL (init's C strings would cut it), and is at most [`MAX_ARG_LEN`] bytes.

use crate::cpio::{Archive, CpioError};
use std::fmt;

/// Longest argument appended to the command: far above any flag the model server takes, far
/// below the kernel's own limit on one argument (MAX_ARG_STRLEN, 128 KiB).
pub const MAX_ARG_LEN: usize = 4096;
/// Most arguments appended to the command.
pub const MAX_EXTRA_ARGS: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppRamdiskError {
    /// An appended argument with a newline or NUL, empty, or over `MAX_ARG_LEN` bytes.
    BadArg(String),
    /// More than `MAX_EXTRA_ARGS` appended arguments.
    TooManyArgs(usize),
    Cpio(CpioError),
}

impl fmt::Display for AppRamdiskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AppRamdiskError::BadArg(a) => write!(
                f,
                "command argument {a:?} must be 1 to {MAX_ARG_LEN} bytes without a newline or NUL (init reads cmd line by line)"
            ),
            AppRamdiskError::TooManyArgs(n) => write!(f, "{n} command arguments appended, more than {MAX_EXTRA_ARGS}"),
            AppRamdiskError::Cpio(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for AppRamdiskError {}

impl From<CpioError> for AppRamdiskError {
    fn from(e: CpioError) -> Self {
        AppRamdiskError::Cpio(e)
    }
}

/// Dockerfile.enclave's CMD, one argument a line.
pub const APP_CMD: &[&str] = &["/enclave", "--listen", "vsock:5005", "--model", "/model"];
/// The environment Docker gives a FROM scratch image (its default PATH), one a line.
pub const APP_ENV: &[&str] = &["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"];
/// The model files the server needs, under rootfs/model/.
pub const MODEL_FILES: &[&str] = &["model.onnx", "labels.txt", "manifest.txt"];
/// Mount points init expects under rootfs/ (nitro-cli's customer ramdisk template).
pub const ROOTFS_DIRS: &[&str] = &["dev", "proc", "run", "sys", "tmp", "var"];

/// `lines` each followed by '\n', as nitro-cli writes cmd and env.
pub fn lines_file(lines: &[&str]) -> Vec<u8> {
    let mut out = Vec::new();
    for l in lines {
        out.extend_from_slice(l.as_bytes());
        out.push(b'\n');
    }
    out
}

/// The application ramdisk: rootfs/enclave (0755), rootfs/model/* (0644), the mount points,
/// cmd (`APP_CMD` then `extra_args`) and env. `model` holds (file name, bytes) for each of
/// MODEL_FILES.
pub fn app_ramdisk(
    enclave: Vec<u8>,
    model: Vec<(String, Vec<u8>)>,
    extra_args: &[&str],
) -> Result<Vec<u8>, AppRamdiskError> {
    if extra_args.len() > MAX_EXTRA_ARGS {
        return Err(AppRamdiskError::TooManyArgs(extra_args.len()));
    }
    if let Some(bad) = extra_args.iter().find(|a| a.is_empty() || a.len() > MAX_ARG_LEN || a.contains(['\n', '\0'])) {
        return Err(AppRamdiskError::BadArg(bad.to_string()));
    }
    let cmd: Vec<&str> = APP_CMD.iter().chain(extra_args).copied().collect();
    let mut a = Archive::new();
    a.file("cmd", 0o644, lines_file(&cmd));
    a.file("env", 0o644, lines_file(APP_ENV));
    a.dir("rootfs", 0o755);
    for d in ROOTFS_DIRS {
        a.dir(&format!("rootfs/{d}"), 0o755);
    }
    a.file("rootfs/enclave", 0o755, enclave);
    a.dir("rootfs/model", 0o755);
    for (name, data) in model {
        a.file(&format!("rootfs/model/{name}"), 0o644, data);
    }
    Ok(a.to_bytes()?)
}

/// The boot ramdisk: dev/ (0755), init (0755), and each (path, bytes) of `files` (0644, with
/// its parent directories as 0755 entries).
pub fn init_ramdisk(init: Vec<u8>, files: Vec<(String, Vec<u8>)>) -> Result<Vec<u8>, CpioError> {
    let mut a = Archive::new();
    a.dir("dev", 0o755);
    a.file("init", 0o755, init);
    for (path, data) in files {
        a.file_with_parents(&path, 0o644, data);
    }
    a.to_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cmd_and_env_as_init_reads_them() {
        assert_eq!(lines_file(APP_CMD), b"/enclave\n--listen\nvsock:5005\n--model\n/model\n");
        assert_eq!(lines_file(APP_ENV), b"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n");
    }

    #[test]
    fn app_layout() {
        let model = MODEL_FILES.iter().map(|n| (n.to_string(), n.as_bytes().to_vec())).collect();
        let bytes = app_ramdisk(b"ELF".to_vec(), model, &[]).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        let names: Vec<&str> = text
            .split("070701")
            .skip(1)
            .map(|e| e.get(104..).unwrap_or("").split('\0').next().unwrap_or(""))
            .collect();
        assert_eq!(names, vec![
            "cmd",
            "env",
            "rootfs",
            "rootfs/dev",
            "rootfs/enclave",
            "rootfs/model",
            "rootfs/model/labels.txt",
            "rootfs/model/manifest.txt",
            "rootfs/model/model.onnx",
            "rootfs/proc",
            "rootfs/run",
            "rootfs/sys",
            "rootfs/tmp",
            "rootfs/var",
            "TRAILER!!!"
        ]);
    }

    #[test]
    fn appended_arguments() {
        let model: Vec<(String, Vec<u8>)> = MODEL_FILES.iter().map(|n| (n.to_string(), vec![])).collect();
        let plain = app_ramdisk(b"ELF".to_vec(), model.clone(), &[]).unwrap();
        let with = app_ramdisk(b"ELF".to_vec(), model.clone(), &["--nsm", "vsock:2:9100"]).unwrap();
        assert_ne!(plain, with);
        let cmd = b"/enclave\n--listen\nvsock:5005\n--model\n/model\n--nsm\nvsock:2:9100\n";
        assert!(with.windows(cmd.len()).any(|w| w == cmd));
        assert!(!plain.windows(cmd.len()).any(|w| w == cmd));
        // An argument with spaces is one argument: init splits on newlines only.
        assert!(app_ramdisk(vec![], model.clone(), &["a b"]).is_ok());
        let long = "x".repeat(MAX_ARG_LEN + 1);
        for bad in ["", "a\nb", "a\0b", long.as_str()] {
            assert_eq!(app_ramdisk(vec![], model.clone(), &[bad]), Err(AppRamdiskError::BadArg(bad.to_string())));
        }
        let many = vec!["-v"; MAX_EXTRA_ARGS + 1];
        assert_eq!(app_ramdisk(vec![], model.clone(), &many), Err(AppRamdiskError::TooManyArgs(MAX_EXTRA_ARGS + 1)));
        assert!(app_ramdisk(vec![], model, &many[1..]).is_ok());
    }

    #[test]
    fn init_layout_with_nested_file() {
        let bytes = init_ramdisk(b"INIT".to_vec(), vec![("modules/vsock.ko.xz".into(), vec![1, 2])]).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        for n in ["dev\0", "init\0", "modules\0", "modules/vsock.ko.xz\0"] {
            assert!(text.contains(n), "{n}");
        }
        assert_eq!(
            init_ramdisk(vec![], vec![("init".into(), vec![])]),
            Err(CpioError::Duplicate("init".into()))
        );
    }
}
