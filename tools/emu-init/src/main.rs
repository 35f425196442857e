//! `/init` of the emulation EIF: PID 1 under QEMU, doing what AWS's init does on Nitro.
//!
//! The production EIF boots AWS's kernel and AWS's init (aws-nitro-enclaves-sdk-bootstrap
//! `init/init.c`); neither exists outside EC2. The emulation EIF boots a Debian kernel, which
//! differs in three ways this program has to make up for, and nothing else:
//! - it has no `CONFIG_DEVTMPFS_MOUNT`, so /dev is mounted here (AWS's init tries too);
//! - virtio, virtio-mmio and vsock are modules, so they are loaded here, from the init ramdisk's
//!   `/modules/load.order` (written by scripts/emulate/kernel.sh, dependencies first), where AWS's
//!   init loads only `nsm.ko`;
//! - the emulator's vsock backend forwards only to CID 2, so the heartbeat goes to the CID named
//!   by `nitro_ml.parent_cid=` on the kernel command line (default 3, as on Nitro).
//!
//! The rest follows AWS's order: /dev, console, modules, the 0xB7 heartbeat to port 9000, `/env`
//! and `/cmd` read and deleted, chroot into `/rootfs`, the app's mounts (dev, proc, the /dev/fd
//! links, run, tmp, shm, pts, sys, the cgroup hierarchies), then the command as a child in its
//! own process group, with only the `/env` environment, and every orphan reaped until it exits.
//! Where AWS's init reboots, this one powers off: the launcher sees QEMU exit.
//!
//! What it refuses: mount points the app ramdisk lacks are not created (AWS's init would fail on
//! them too, and finding that under emulation is the point); a failed step is not skipped. Every
//! failure is logged and the machine powers off, rather than PID 1 exiting into a kernel panic
//! and `panic=30`'s half-minute wait.
//!
//! Each log line goes to the console (the serial port, QEMU's console.log) as
//! `emu-init: [   1.234567] message`, the time in seconds since boot (CLOCK_BOOTTIME, the clock of
//! the kernel's own lines); the emulator's tests read them.
#![forbid(unsafe_code)]

mod config;

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{symlink, DirBuilderExt, PermissionsExt};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use nix::errno::Errno;
use nix::kmod::{finit_module, ModuleInitFlags};
use nix::mount::{mount, MsFlags};
use nix::sys::reboot::{reboot, RebootMode};
use nix::sys::wait::{wait, WaitStatus};
use nix::time::{clock_gettime, ClockId};
use nix::unistd::{chdir, chroot, Pid};

use config::ConfigError;

/// AWS's init: the parent listens for the heartbeat on this vsock port.
const HEARTBEAT_PORT: u32 = 9000;
/// AWS's init: the byte sent, which the parent echoes.
const HEARTBEAT: u8 = 0xB7;
/// How long the heartbeat's write and read may take once connected. AWS's init declares a
/// 20-second TIMEOUT; the connect itself is bounded by the kernel's vsock connect timeout (2 s).
const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(20);
/// Where the init ramdisk keeps the modules and their order.
const MODULE_DIR: &str = "/modules";
/// `finit_module`'s flag for a compressed file (`.ko.xz`, `.ko.zst`; Linux 6.6 and later with
/// `CONFIG_MODULE_DECOMPRESS`, as Debian's 6.12 kernels have). Not in nix's flag set yet.
const MODULE_INIT_COMPRESSED_FILE: u32 = 4;
/// The kernel's current hardware RNG (absent when no hwrng driver is loaded).
const HWRNG_CURRENT: &str = "/sys/class/misc/hw_random/rng_current";
/// The PATH the command is looked up in, as AWS's init sets it (not the one from `/env`).
const DEFAULT_PATH: &str = "/sbin:/usr/sbin:/bin:/usr/bin";

/// One subsystem, one error: each variant names what failed and carries the value.
#[derive(Debug)]
enum InitError {
    Mount(&'static str, Errno),
    Mkdir(&'static str, io::Error),
    Symlink(&'static str, io::Error),
    Console(io::Error),
    Read(&'static str, io::Error),
    Config(ConfigError),
    Module(String, Errno),
    ModuleOpen(String, io::Error),
    Heartbeat {
        cid: u32,
        step: &'static str,
        error: io::Error,
    },
    HeartbeatReply(u8),
    Chroot(Errno),
    NotFound(String),
    Spawn(String, io::Error),
    Wait(Errno),
}

impl fmt::Display for InitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Mount(target, e) => write!(f, "mount {target}: {e}"),
            Self::Mkdir(path, e) => write!(f, "mkdir {path}: {e}"),
            Self::Symlink(path, e) => write!(f, "symlink {path}: {e}"),
            Self::Console(e) => write!(f, "open /dev/console: {e}"),
            Self::Read(path, e) => write!(f, "read {path}: {e}"),
            Self::Config(e) => write!(f, "{e}"),
            Self::Module(name, e) => write!(f, "finit_module {name}: {e}"),
            Self::ModuleOpen(name, e) => write!(f, "open module {name}: {e}"),
            Self::Heartbeat { cid, step, error } => write!(
                f,
                "heartbeat to vsock {cid}:{HEARTBEAT_PORT}, {step}: {error} (is {}= right? \
                 the emulator's parent is 2)",
                config::PARENT_CID_PARAM
            ),
            Self::HeartbeatReply(b) => write!(
                f,
                "heartbeat: the parent answered {b:#04x}, not {HEARTBEAT:#04x}"
            ),
            Self::Chroot(e) => write!(f, "chroot /rootfs: {e}"),
            Self::NotFound(program) => write!(f, "{program}: not found in {DEFAULT_PATH}"),
            Self::Spawn(program, e) => write!(f, "exec {program}: {e}"),
            Self::Wait(e) => write!(f, "wait: {e}"),
        }
    }
}

impl From<ConfigError> for InitError {
    fn from(e: ConfigError) -> Self {
        Self::Config(e)
    }
}

/// One console line; a failed write is dropped (there is nowhere else to say it).
fn log(message: fmt::Arguments<'_>) {
    let t = clock_gettime(ClockId::CLOCK_BOOTTIME)
        .map(|t| {
            Duration::new(
                u64::try_from(t.tv_sec()).unwrap_or(0),
                u32::try_from(t.tv_nsec()).unwrap_or(0),
            )
        })
        .unwrap_or_default();
    let line = format!(
        "emu-init: [{:5}.{:06}] {message}\n",
        t.as_secs(),
        t.subsec_micros()
    );
    let _ = io::stderr().write_all(line.as_bytes());
}

macro_rules! log {
    ($($arg:tt)*) => { log(format_args!($($arg)*)) };
}

fn main() {
    // AWS's init blocks every signal in PID 1 and unblocks them in the child. We block none:
    // the kernel never delivers a default-action signal sent from user space to PID 1 anyway,
    // and the app must start with an empty mask, which std's spawn is not relied on to restore
    // (the launcher saw a child inherit its blocked mask through it).
    match run() {
        Ok(status) => match (status.code(), status.signal()) {
            (Some(code), _) => log!("app exited with status {code}; powering off"),
            (None, Some(sig)) => log!("app killed by signal {sig}; powering off"),
            _ => log!("app ended ({status}); powering off"),
        },
        Err(e) => log!("error: {e}; powering off"),
    }
    power_off();
}

fn run() -> Result<std::process::ExitStatus, InitError> {
    mount_dev()?;
    console()?;
    log!("started");
    mkdir_if_missing("/proc")?;
    mkdir_if_missing("/sys")?;
    mount_at("proc", "/proc", "proc", nodev_nosuid_noexec(), None)?;
    mount_at("sysfs", "/sys", "sysfs", nodev_nosuid_noexec(), None)?;

    let cmdline = read_small("/proc/cmdline")?;
    let parent_cid = config::parent_cid(&String::from_utf8_lossy(&cmdline))?;
    load_modules()?;
    // Which hardware RNG feeds the kernel (Nitro: the NSM's; here virtio-rng, if the launcher
    // added the device, or none): the tests read it next to the app's entropy line.
    let hwrng = fs::read_to_string(HWRNG_CURRENT).unwrap_or_else(|_| "none\n".to_owned());
    log!("hwrng: {}", hwrng.trim());
    heartbeat(parent_cid)?;
    log!("heartbeat answered by vsock {parent_cid}:{HEARTBEAT_PORT}");

    let env = config::environment(&read_small("/env")?)?;
    let argv = config::command(&read_small("/cmd")?)?;
    let _ = fs::remove_file("/env");
    let _ = fs::remove_file("/cmd");

    chdir("/rootfs").map_err(InitError::Chroot)?;
    chroot("/rootfs").map_err(InitError::Chroot)?;
    chdir("/").map_err(InitError::Chroot)?;
    app_filesystems()?;

    let program = resolve(&argv[0])?;
    log!("exec {}", argv.join(" "));
    let child = Command::new(&program)
        .arg0(&argv[0])
        .args(&argv[1..])
        .env_clear()
        .envs(env)
        .process_group(0)
        .spawn()
        .map_err(|e| InitError::Spawn(argv[0].clone(), e))?;
    reap_until(Pid::from_raw(i32::try_from(child.id()).unwrap_or(i32::MAX)))
}

fn nodev_nosuid_noexec() -> MsFlags {
    MsFlags::MS_NODEV | MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC
}

fn mount_at(
    source: &str,
    target: &'static str,
    fstype: &str,
    flags: MsFlags,
    data: Option<&str>,
) -> Result<(), InitError> {
    mount(Some(source), target, Some(fstype), flags, data).map_err(|e| InitError::Mount(target, e))
}

/// devtmpfs on /dev; EBUSY means the kernel mounted it already (`devtmpfs.mount=1`).
fn mount_dev() -> Result<(), InitError> {
    mkdir_if_missing("/dev")?;
    mount_devtmpfs("/dev")
}

/// devtmpfs on the current root's /dev (EBUSY: already there); `label` names it in the error.
fn mount_devtmpfs(label: &'static str) -> Result<(), InitError> {
    match mount(
        Some("dev"),
        "/dev",
        Some("devtmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        None::<&str>,
    ) {
        Ok(()) | Err(Errno::EBUSY) => Ok(()),
        Err(e) => Err(InitError::Mount(label, e)),
    }
}

/// stdin, stdout and stderr on /dev/console. The kernel opened it for us only if the init
/// ramdisk carries a `dev/console` node; with devtmpfs mounted it always exists.
fn console() -> Result<(), InitError> {
    let console = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/console")
        .map_err(InitError::Console)?;
    let to_io = |e: Errno| InitError::Console(io::Error::from(e));
    nix::unistd::dup2_stdin(&console).map_err(to_io)?;
    nix::unistd::dup2_stdout(&console).map_err(to_io)?;
    nix::unistd::dup2_stderr(&console).map_err(to_io)?;
    Ok(())
}

fn mkdir_if_missing(path: &'static str) -> Result<(), InitError> {
    match fs::DirBuilder::new().mode(0o755).create(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(InitError::Mkdir(path, e)),
    }
}

/// A whole small file, refused past [`config::MAX_CONFIG_LEN`]; a missing `/env` is empty, as
/// for AWS's init (which warns and runs with a default environment).
fn read_small(path: &'static str) -> Result<Vec<u8>, InitError> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound && path == "/env" => return Ok(Vec::new()),
        Err(e) => return Err(InitError::Read(path, e)),
    };
    let mut bytes = Vec::new();
    let limit = u64::try_from(config::MAX_CONFIG_LEN)
        .unwrap_or(u64::MAX)
        .saturating_add(1);
    file.take(limit)
        .read_to_end(&mut bytes)
        .map_err(|e| InitError::Read(path, e))?;
    if bytes.len() > config::MAX_CONFIG_LEN {
        return Err(ConfigError::TooLong(path, bytes.len()).into());
    }
    Ok(bytes)
}

/// Loads `/modules/load.order`'s modules in order, then deletes them (as AWS's init deletes
/// `nsm.ko`). No list means a kernel with vsock built in: nothing to load. EEXIST (already
/// loaded) is fine.
fn load_modules() -> Result<(), InitError> {
    let order = match File::open(Path::new(MODULE_DIR).join("load.order")) {
        Ok(_) => config::lines("/modules/load.order", &read_small("/modules/load.order")?)?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            log!("no {MODULE_DIR}/load.order: no modules to load");
            return Ok(());
        }
        Err(e) => return Err(InitError::Read("/modules/load.order", e)),
    };
    for name in order.iter().filter(|n| !n.is_empty()) {
        // A bare file name: the list cannot reach outside the module directory.
        if name.contains('/') || name.starts_with('.') {
            return Err(InitError::ModuleOpen(
                name.clone(),
                io::Error::from(io::ErrorKind::InvalidInput),
            ));
        }
        let path = Path::new(MODULE_DIR).join(name);
        let file = File::open(&path).map_err(|e| InitError::ModuleOpen(name.clone(), e))?;
        let flags = if name.ends_with(".xz") || name.ends_with(".zst") {
            ModuleInitFlags::from_bits_retain(MODULE_INIT_COMPRESSED_FILE)
        } else {
            ModuleInitFlags::empty()
        };
        match finit_module(&file, c"", flags) {
            Ok(()) | Err(Errno::EEXIST) => {}
            Err(e) => return Err(InitError::Module(name.clone(), e)),
        }
        drop(file);
        let _ = fs::remove_file(&path);
    }
    log!("loaded {} modules: {}", order.len(), order.join(" "));
    Ok(())
}

/// Connect to (parent, 9000), send 0xB7, expect 0xB7 back: nitro-cli's sign that the enclave
/// booted.
fn heartbeat(cid: u32) -> Result<(), InitError> {
    let err = |step, error| InitError::Heartbeat { cid, step, error };
    let mut stream = vsock::VsockStream::connect_with_cid_port(cid, HEARTBEAT_PORT)
        .map_err(|e| err("connect", e))?;
    stream
        .set_read_timeout(Some(HEARTBEAT_TIMEOUT))
        .map_err(|e| err("timeout", e))?;
    stream
        .set_write_timeout(Some(HEARTBEAT_TIMEOUT))
        .map_err(|e| err("timeout", e))?;
    stream
        .write_all(&[HEARTBEAT])
        .map_err(|e| err("write", e))?;
    let mut reply = [0u8; 1];
    stream.read_exact(&mut reply).map_err(|e| err("read", e))?;
    if reply[0] != HEARTBEAT {
        return Err(InitError::HeartbeatReply(reply[0]));
    }
    Ok(())
}

/// Inside /rootfs, what AWS's init mounts for the app, in its order. The mount points are the
/// app ramdisk's; only /dev/shm and /dev/pts are made here, as AWS's init makes them.
fn app_filesystems() -> Result<(), InitError> {
    let fl = nodev_nosuid_noexec();
    mount_devtmpfs("/rootfs/dev")?;
    mount_at("proc", "/proc", "proc", fl, None)?;
    for (link, target) in [
        ("/dev/fd", "/proc/self/fd"),
        ("/dev/stdin", "/proc/self/fd/0"),
        ("/dev/stdout", "/proc/self/fd/1"),
        ("/dev/stderr", "/proc/self/fd/2"),
    ] {
        match symlink(target, link) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(InitError::Symlink(link, e)),
        }
    }
    mount_at("tmpfs", "/run", "tmpfs", fl, Some("mode=0755"))?;
    mount_at("tmpfs", "/tmp", "tmpfs", fl, None)?;
    mkdir_if_missing("/dev/shm")?;
    mount_at("shm", "/dev/shm", "tmpfs", fl, None)?;
    mkdir_if_missing("/dev/pts")?;
    mount_at(
        "devpts",
        "/dev/pts",
        "devpts",
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        None,
    )?;
    mount_at("sysfs", "/sys", "sysfs", fl, None)?;
    mount_at(
        "cgroup_root",
        "/sys/fs/cgroup",
        "tmpfs",
        fl,
        Some("mode=0755"),
    )?;
    cgroups()
}

/// One cgroup v1 hierarchy per enabled controller in /proc/cgroups, as AWS's init mounts them
/// (they change what the app sees, e.g. std's `available_parallelism` reads cgroup quotas). A
/// controller the Debian kernel will not mount as v1 is logged and skipped: that is the
/// emulation kernel's difference, not the app's.
fn cgroups() -> Result<(), InitError> {
    let table = read_small("/proc/cgroups")?;
    for line in String::from_utf8_lossy(&table).lines().skip(1) {
        let fields: Vec<&str> = line.split_ascii_whitespace().collect();
        let [name, _hierarchy, _groups, enabled] = fields[..] else {
            continue;
        };
        if enabled != "1" || name.is_empty() || name.contains('/') || name.starts_with('.') {
            continue;
        }
        let path = format!("/sys/fs/cgroup/{name}");
        if let Err(e) = fs::create_dir(&path) {
            log!("cgroup {name}: mkdir: {e}");
            continue;
        }
        if let Err(e) = mount(
            Some(name),
            path.as_str(),
            Some("cgroup"),
            nodev_nosuid_noexec(),
            Some(name),
        ) {
            log!("cgroup {name}: mount: {e} (skipped)");
        }
    }
    Ok(())
}

/// `execvpe`'s lookup with AWS's fixed PATH: a name with a `/` is used as it is.
fn resolve(program: &str) -> Result<PathBuf, InitError> {
    if program.contains('/') {
        return Ok(PathBuf::from(program));
    }
    DEFAULT_PATH
        .split(':')
        .map(|dir| Path::new(dir).join(program))
        .find(|p| {
            fs::metadata(p)
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
        .ok_or_else(|| InitError::NotFound(program.to_owned()))
}

/// Reaps every child (orphans re-parented to PID 1 included) until the app itself ends.
fn reap_until(app: Pid) -> Result<std::process::ExitStatus, InitError> {
    loop {
        match wait() {
            Ok(WaitStatus::Exited(pid, code)) if pid == app => {
                return Ok(std::process::ExitStatus::from_raw((code & 0xff) << 8))
            }
            Ok(WaitStatus::Signaled(pid, sig, _)) if pid == app => {
                return Ok(std::process::ExitStatus::from_raw(sig as i32))
            }
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => return Err(InitError::Wait(e)),
        }
    }
}

/// Powers the machine off; QEMU exits. If that is refused, a reboot (QEMU runs with
/// `-no-reboot`, so it exits too); if both are, PID 1 returns and the kernel panics.
fn power_off() {
    nix::unistd::sync();
    let Err(e) = reboot(RebootMode::RB_POWER_OFF);
    log!("power off: {e}; rebooting");
    let Err(e) = reboot(RebootMode::RB_AUTOBOOT);
    log!("reboot: {e}");
}
