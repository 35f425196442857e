//! `eif`: builds, checks and unpacks Nitro Enclave Image Files without Docker or nitro-cli.
//!
//! ```text
//! eif app-ramdisk --enclave BIN --model-dir DIR --output FILE [--arg ARG]...
//! eif init-ramdisk --init FILE [--file DEST=SRC]... --output FILE
//! eif build --kernel FILE --cmdline FILE --ramdisk FILE [--ramdisk FILE]... --output EIF
//!           [--measurements JSON] [--name NAME] [--version VER]
//! eif describe EIF
//! eif extract EIF --kernel OUT --initrd OUT --cmdline OUT
//! ```
//!
//! `app-ramdisk --arg` appends one argument to the image's command (repeatable, in order), for
//! development images only: the emulation image with the development NSM passes `--arg --nsm
//! --arg vsock:2:9100`. It changes the ramdisk, so PCR2 is not production's; without it the
//! ramdisk is the production one.
//!
//! `build` prints the measurements on stdout in nitro-cli build-enclave's JSON shape, and
//! writes the same text to --measurements if given. Whitespace around the cmdline file's text is
//! dropped, as nitro-cli build-enclave trims it (files end with a newline; the kernel command
//! line stored in an EIF has none), so the same blobs give the same PCRs through both. The
//! metadata's BuildTime is SOURCE_DATE_EPOCH if set, else the epoch, so that the EIF is
//! byte-reproducible. `describe` and `extract` check the whole file first (`Eif::read`) and
//! stop with one line naming what is wrong. Exit status: 0 done, 1 error, 2 usage.
//! Outputs are written to a temporary name beside them, then renamed, so that an error never
//! leaves half a file where a good one was expected.

#![forbid(unsafe_code)]

use eif::format::{MAX_CMDLINE_LEN, MAX_EIF_LEN};
use eif::metadata::{bzimage_kernel_version, json_string, rfc3339};
use eif::ramdisk::{app_ramdisk, init_ramdisk, MODEL_FILES};
use eif::{Eif, EifWriter, Metadata};
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

const USAGE: &str = "usage:
  eif app-ramdisk --enclave BIN --model-dir DIR --output FILE [--arg ARG]...
                  (--arg: appended to the command; development images only, other PCR2)
  eif init-ramdisk --init FILE [--file DEST=SRC]... --output FILE
  eif build --kernel FILE --cmdline FILE --ramdisk FILE [--ramdisk FILE]... --output EIF
            [--measurements JSON] [--name NAME] [--version VER]
  eif describe EIF
  eif extract EIF --kernel OUT --initrd OUT --cmdline OUT";

/// Largest input file read (kernel, ramdisk, binary, model): the EIF's own limit.
const MAX_INPUT_LEN: u64 = MAX_EIF_LEN;

enum Failure {
    Usage(String),
    Error(String),
}

type Result<T> = std::result::Result<T, Failure>;

fn err<T>(msg: impl Into<String>) -> Result<T> {
    Err(Failure::Error(msg.into()))
}

fn usage<T>(msg: impl Into<String>) -> Result<T> {
    Err(Failure::Usage(msg.into()))
}

/// Options of one subcommand: `--name value` pairs (repeatable) and positional arguments.
struct Args {
    opts: Vec<(String, String)>,
    positional: Vec<String>,
}

impl Args {
    fn parse(args: &[String], known: &[&str]) -> Result<Args> {
        let mut opts = Vec::new();
        let mut positional = Vec::new();
        let mut it = args.iter();
        while let Some(a) = it.next() {
            if let Some(name) = a.strip_prefix("--") {
                if !known.contains(&name) {
                    return usage(format!("unknown option '{a}'"));
                }
                let Some(v) = it.next() else { return usage(format!("'{a}' needs a value")) };
                opts.push((name.to_string(), v.clone()));
            } else {
                positional.push(a.clone());
            }
        }
        Ok(Args { opts, positional })
    }

    fn all(&self, name: &str) -> Vec<&str> {
        self.opts.iter().filter(|(n, _)| n == name).map(|(_, v)| v.as_str()).collect()
    }

    fn optional(&self, name: &str) -> Result<Option<&str>> {
        match self.all(name).as_slice() {
            [] => Ok(None),
            [v] => Ok(Some(v)),
            _ => usage(format!("--{name} given more than once")),
        }
    }

    fn required(&self, name: &str) -> Result<&str> {
        match self.optional(name)? {
            Some(v) => Ok(v),
            None => usage(format!("--{name} is required")),
        }
    }

    fn no_positional(&self) -> Result<()> {
        match self.positional.first() {
            Some(p) => usage(format!("unexpected argument '{p}'")),
            None => Ok(()),
        }
    }
}

fn read(path: &str) -> Result<Vec<u8>> {
    let f = fs::File::open(path).or_else(|e| err(format!("cannot read {path}: {e}")))?;
    let mut data = Vec::new();
    f.take(MAX_INPUT_LEN + 1).read_to_end(&mut data).or_else(|e| err(format!("cannot read {path}: {e}")))?;
    if data.len() as u64 > MAX_INPUT_LEN {
        return err(format!("{path} is larger than {MAX_INPUT_LEN} bytes"));
    }
    Ok(data)
}

fn write(path: &str, data: &[u8]) -> Result<()> {
    let target = PathBuf::from(path);
    let name = target.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    if name.is_empty() {
        return err(format!("output path '{path}' names no file"));
    }
    let tmp = target.with_file_name(format!(".{name}.tmp"));
    fs::write(&tmp, data).or_else(|e| err(format!("cannot write {}: {e}", tmp.display())))?;
    fs::rename(&tmp, &target).or_else(|e| {
        let _ = fs::remove_file(&tmp);
        err(format!("cannot write {path}: {e}"))
    })
}

fn app_ramdisk_cmd(args: &[String]) -> Result<()> {
    let a = Args::parse(args, &["enclave", "model-dir", "output", "arg"])?;
    a.no_positional()?;
    let enclave = read(a.required("enclave")?)?;
    let dir = Path::new(a.required("model-dir")?);
    let mut model = Vec::new();
    for name in MODEL_FILES {
        let p = dir.join(name);
        if !p.is_file() {
            return err(format!("model file missing: {}", p.display()));
        }
        model.push((name.to_string(), read(&p.to_string_lossy())?));
    }
    let bytes = app_ramdisk(enclave, model, &a.all("arg")).or_else(|e| err(e.to_string()))?;
    write(a.required("output")?, &bytes)
}

fn init_ramdisk_cmd(args: &[String]) -> Result<()> {
    let a = Args::parse(args, &["init", "file", "output"])?;
    a.no_positional()?;
    let init = read(a.required("init")?)?;
    let mut files = Vec::new();
    for spec in a.all("file") {
        let Some((dest, src)) = spec.split_once('=') else {
            return usage(format!("--file wants DEST=SRC, got '{spec}'"));
        };
        files.push((dest.to_string(), read(src)?));
    }
    let bytes = init_ramdisk(init, files).or_else(|e| err(e.to_string()))?;
    write(a.required("output")?, &bytes)
}

fn build_time() -> Result<String> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Err(_) => Ok(rfc3339(0)),
        Ok(v) if v.is_empty() => Ok(rfc3339(0)),
        Ok(v) => match v.parse::<u64>() {
            // Up to the year 9999, so the date keeps four digits.
            Ok(s) if s <= 253_402_300_799 => Ok(rfc3339(s)),
            _ => err(format!("SOURCE_DATE_EPOCH must be seconds since 1970 (up to year 9999), got '{v}'")),
        },
    }
}

fn build_cmd(args: &[String]) -> Result<()> {
    let a = Args::parse(args, &["kernel", "cmdline", "ramdisk", "output", "measurements", "name", "version"])?;
    a.no_positional()?;
    let kernel = read(a.required("kernel")?)?;
    let cmdline = read(a.required("cmdline")?)?;
    // As nitro-cli build-enclave does (it reads the file to a string and trims it), so that
    // the same blobs give the same PCR0/PCR1 through either tool.
    let cmdline = cmdline.trim_ascii().to_vec();
    if cmdline.len() > MAX_CMDLINE_LEN {
        return err(format!("the cmdline file holds {} bytes, more than {MAX_CMDLINE_LEN}", cmdline.len()));
    }
    let ramdisk_paths = a.all("ramdisk");
    if ramdisk_paths.is_empty() {
        return usage("--ramdisk is required (the boot ramdisk first, then the application's)");
    }
    let ramdisks = ramdisk_paths.iter().map(|p| read(p)).collect::<Result<Vec<_>>>()?;
    let metadata = Metadata {
        image_name: a.optional("name")?.unwrap_or("nitro-ml-enclave").to_string(),
        image_version: a.optional("version")?.unwrap_or("0").to_string(),
        build_time: build_time()?,
        build_tool: "nitro-ml eif".to_string(),
        build_tool_version: env!("CARGO_PKG_VERSION").to_string(),
        operating_system: "Linux".to_string(),
        kernel_version: bzimage_kernel_version(&kernel).unwrap_or_else(|| "unknown".to_string()),
    };
    let writer = EifWriter { kernel, cmdline, metadata: metadata.to_json().into_bytes(), ramdisks };
    let (bytes, m) = writer.write().or_else(|e| err(e.to_string()))?;
    // Read back what was written, with every check describe makes.
    let back = Eif::read(&bytes).or_else(|e| err(format!("internal error: the EIF written does not read back: {e}")))?;
    if back.measurements() != &m {
        return err("internal error: the EIF written measures differently when read back");
    }
    write(a.required("output")?, &bytes)?;
    let json = m.to_json();
    if let Some(path) = a.optional("measurements")? {
        write(path, json.as_bytes())?;
    }
    out(&json)
}

/// Prints to stdout; a closed pipe (`| head`) is an error message, not a panic.
fn out(text: &str) -> Result<()> {
    let mut o = std::io::stdout().lock();
    o.write_all(text.as_bytes()).and_then(|()| o.flush()).or_else(|e| err(format!("cannot write to stdout: {e}")))
}

fn read_eif(path: &str) -> Result<Eif> {
    let bytes = read(path)?;
    Eif::read(&bytes).or_else(|e| err(format!("{path}: {e}")))
}

/// serde_json's pretty form of `v`, its continuation lines indented by `indent` spaces.
fn pretty(v: &serde_json::Value, indent: usize) -> String {
    let text = serde_json::to_string_pretty(v).unwrap_or_else(|_| "null".to_string());
    text.replace('\n', &format!("\n{}", " ".repeat(indent)))
}

fn describe_cmd(args: &[String]) -> Result<()> {
    let a = Args::parse(args, &[])?;
    let [path] = a.positional.as_slice() else { return usage("describe takes one EIF path") };
    let e = read_eif(path)?;
    let mut fields: Vec<(String, String)> = vec![
        ("EifVersion".into(), e.version().to_string()),
        ("Measurements".into(), e.measurements().json_object(2)),
        ("IsSigned".into(), "false".into()),
        ("CheckCRC".into(), "true".into()),
        ("ArchType".into(), json_string("x86_64")),
    ];
    if let Some(meta) = e.metadata() {
        let v: serde_json::Value =
            serde_json::from_slice(meta).or_else(|x| err(format!("{path}: the metadata section is not JSON: {x}")))?;
        let Some(obj) = v.as_object() else { return err(format!("{path}: the metadata section is not a JSON object")) };
        // nitro-cli's keys in its order first, then any others (sorted).
        let order = ["ImageName", "ImageVersion", "BuildMetadata", "DockerInfo", "CustomMetadata"];
        for k in order {
            if let Some(x) = obj.get(k) {
                fields.push((k.to_string(), pretty(x, 2)));
            }
        }
        for (k, x) in obj {
            if !order.contains(&k.as_str()) {
                fields.push((k.clone(), pretty(x, 2)));
            }
        }
    }
    let sections: Vec<String> = e
        .sections()
        .iter()
        .map(|s| format!("    {{\n      \"Type\": \"{}\",\n      \"Offset\": {},\n      \"Size\": {}\n    }}", s.kind, s.offset, s.size))
        .collect();
    fields.push(("Sections".into(), format!("[\n{}\n  ]", sections.join(",\n"))));
    let body: Vec<String> = fields.iter().map(|(k, v)| format!("  {}: {v}", json_string(k))).collect();
    out(&format!("{{\n{}\n}}\n", body.join(",\n")))
}

fn extract_cmd(args: &[String]) -> Result<()> {
    let a = Args::parse(args, &["kernel", "initrd", "cmdline"])?;
    let [path] = a.positional.as_slice() else { return usage("extract takes one EIF path") };
    let (k, i, c) = (a.required("kernel")?, a.required("initrd")?, a.required("cmdline")?);
    let e = read_eif(path)?;
    write(k, e.kernel())?;
    write(i, &e.initrd())?;
    write(c, e.cmdline())
}

fn run(args: &[String]) -> Result<()> {
    let Some((cmd, rest)) = args.split_first() else { return usage("no command given") };
    match cmd.as_str() {
        "app-ramdisk" => app_ramdisk_cmd(rest),
        "init-ramdisk" => init_ramdisk_cmd(rest),
        "build" => build_cmd(rest),
        "describe" => describe_cmd(rest),
        "extract" => extract_cmd(rest),
        "-h" | "--help" | "help" => {
            println!("{USAGE}");
            Ok(())
        }
        other => usage(format!("unknown command '{other}'")),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Error(msg)) => {
            eprintln!("eif: error: {msg}");
            ExitCode::from(1)
        }
        Err(Failure::Usage(msg)) => {
            eprintln!("eif: {msg}\n{USAGE}");
            ExitCode::from(2)
        }
    }
}
