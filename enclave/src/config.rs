//! Command-line flags and the model manifest.
//!
//! The model server is configured by flags only; a model directory may carry a
//! `manifest.txt` (written by `make model`) that supplies the model's name,
//! expected SHA-256, labels and preprocessing, so the right normalisation is
//! used without extra flags. Flags given explicitly win over the manifest.
//!
//! The manifest is `key = value` lines, `#` comments, nothing else: the
//! trusted base parses no JSON. Unknown keys are errors, so a typo is caught.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use shared::transport::Addr;

use crate::nsm::Nsm;
use crate::preprocess::{Interpolation, Preprocess};

pub const USAGE: &str = "\
enclave - the model server of the mixed-privacy appliance

Serves one ONNX image classifier over length-prefixed frames (see shared/src/frame.rs).
Runs inside the Nitro Enclave on vsock, or on the parent as the public server on a Unix socket.

USAGE:
    enclave --model PATH [options]

OPTIONS:
    --listen ADDR          vsock:PORT, vsock:CID:PORT or unix:/path   [default: vsock:5005]
    --model PATH           a model directory holding manifest.txt, or an .onnx file
    --labels PATH          class labels, one per line, line index = class id
                           [default: from the manifest, else none]
    --name NAME            model name reported to clients [default: manifest, else file stem]
    --workers N            inference threads [default: number of CPUs]
    --mm-threads N         threads for each matrix product (tract's multithread-mm);
                           >1 cuts one image's latency at low load, adds nothing
                           when every worker is busy [default: 1]
    --queue-depth N        images waiting for a worker before `busy` [default: 32 per worker]
    --max-connections N    simultaneous connections before `busy` [default: 64]
    --input-size N         square model input, pixels [default: manifest, else 224]
    --resize N             short side before the centre crop [default: manifest, else 256]
    --interpolation I      bilinear | bicubic [default: manifest, else bilinear]
    --mean R,G,B           per-channel mean on [0,1] pixels [default: manifest, else ImageNet]
    --std R,G,B            per-channel std [default: manifest, else ImageNet]
    --jpeg-scaling B       true: decode a baseline JPEG that the resize shrinks 2x or more
                           at 1/2, 1/4 or 1/8 of its size (DCT scaling, faster; scores move
                           by up to a few hundredths); false: always at full size
                           [default: manifest, else true]
    --nsm NSM              attestation: /dev/nsm (the NSM driver), none, or the development
                           NSM at unix:PATH or vsock:CID:PORT (CID 2: the host under
                           emulation); builds with the dev-nsm feature only
                           [default: /dev/nsm]
    --key-rotation SECS    sealing key lifetime; the previous key still opens requests
                           for 600 s after rotation [default: 86400]
    -h, --help             this text

The defaults reproduce torchvision's Resize(256), CenterCrop(224), ToTensor,
Normalize(mean=[0.485,0.456,0.406], std=[0.229,0.224,0.225]).
";

#[derive(Debug, Clone, PartialEq)]
pub enum ConfigError {
    Help,
    UnknownFlag(String),
    MissingValue(String),
    BadValue { flag: String, value: String, why: String },
    MissingModel,
    Manifest { path: PathBuf, line: usize, why: String },
    Io { path: PathBuf, why: String },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Help => write!(f, "{USAGE}"),
            ConfigError::UnknownFlag(s) => write!(f, "unknown flag {s:?} (see --help)"),
            ConfigError::MissingValue(s) => write!(f, "flag {s} needs a value"),
            ConfigError::BadValue { flag, value, why } => write!(f, "bad value {value:?} for {flag}: {why}"),
            ConfigError::MissingModel => write!(f, "--model PATH is required (see --help)"),
            ConfigError::Manifest { path, line, why } => write!(f, "{}:{line}: {why}", path.display()),
            ConfigError::Io { path, why } => write!(f, "cannot read {}: {why}", path.display()),
        }
    }
}

impl std::error::Error for ConfigError {}

/// Everything the server needs to start.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: Addr,
    pub model_path: PathBuf,
    pub labels_path: Option<PathBuf>,
    pub name: String,
    /// The SHA-256 the manifest promises for the model file, if any.
    pub expected_sha256: Option<String>,
    pub synthetic: bool,
    pub label_source: String,
    pub workers: usize,
    pub mm_threads: usize,
    pub queue_depth: usize,
    pub max_connections: usize,
    pub preprocess: Preprocess,
    pub nsm: Nsm,
    pub key_rotation: Duration,
}

/// The manifest's keys, all optional except where `make model` always writes them.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Manifest {
    pub name: Option<String>,
    pub synthetic: Option<bool>,
    pub source: Option<String>,
    pub model: Option<String>,
    pub sha256: Option<String>,
    pub labels: Option<String>,
    pub label_source: Option<String>,
    pub input_size: Option<u32>,
    pub resize: Option<u32>,
    pub interpolation: Option<Interpolation>,
    pub mean: Option<[f32; 3]>,
    pub std: Option<[f32; 3]>,
    pub jpeg_scaling: Option<bool>,
}

/// Largest manifest we read; a real one is under 1 KiB.
const MAX_MANIFEST_LEN: u64 = 64 * 1024;

impl Manifest {
    pub fn parse(text: &str, path: &Path) -> Result<Manifest, ConfigError> {
        let mut m = Manifest::default();
        for (i, raw) in text.lines().enumerate() {
            let err = |why: String| ConfigError::Manifest { path: path.to_path_buf(), line: i + 1, why };
            let line = raw.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let (key, value) = line.split_once('=').ok_or_else(|| err("expected `key = value`".into()))?;
            let (key, value) = (key.trim(), value.trim());
            let bad = |why: String| err(format!("{key}: {why}"));
            match key {
                "format" if value == "1" => {}
                "format" => return Err(bad(format!("unsupported manifest format {value:?}"))),
                "name" => m.name = Some(value.to_string()),
                "synthetic" => m.synthetic = Some(parse_bool(value).map_err(bad)?),
                "source" => m.source = Some(value.to_string()),
                "model" => m.model = Some(value.to_string()),
                "sha256" => m.sha256 = Some(parse_sha256(value).map_err(bad)?),
                "labels" => m.labels = Some(value.to_string()),
                "label_source" => m.label_source = Some(value.to_string()),
                "input_size" => m.input_size = Some(parse_side(value).map_err(bad)?),
                "resize" => m.resize = Some(parse_side(value).map_err(bad)?),
                "interpolation" => m.interpolation = Some(value.parse().map_err(bad)?),
                "mean" => m.mean = Some(parse_triple(value).map_err(bad)?),
                "std" => m.std = Some(parse_triple(value).map_err(bad)?),
                "jpeg_scaling" => m.jpeg_scaling = Some(parse_bool(value).map_err(bad)?),
                _ => return Err(err(format!("unknown key {key:?}"))),
            }
        }
        Ok(m)
    }

    pub fn load(path: &Path) -> Result<Manifest, ConfigError> {
        let text = read_small(path, MAX_MANIFEST_LEN)?;
        Manifest::parse(&text, path)
    }
}

/// Reads a text file of at most `max` bytes.
pub fn read_small(path: &Path, max: u64) -> Result<String, ConfigError> {
    use std::io::Read;
    let io = |e: std::io::Error| ConfigError::Io { path: path.to_path_buf(), why: e.to_string() };
    let file = std::fs::File::open(path).map_err(io)?;
    let mut text = String::new();
    file.take(max + 1).read_to_string(&mut text).map_err(io)?;
    if text.len() as u64 > max {
        return Err(ConfigError::Io { path: path.to_path_buf(), why: format!("larger than {max} bytes") });
    }
    Ok(text)
}

fn parse_bool(v: &str) -> Result<bool, String> {
    match v {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(format!("expected true or false, got {v:?}")),
    }
}

fn parse_sha256(v: &str) -> Result<String, String> {
    if v.len() == 64 && v.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        Ok(v.to_string())
    } else {
        Err(format!("expected 64 lowercase hex digits, got {v:?}"))
    }
}

/// Sizes of the model input and resize step: at least 8 pixels (anything
/// smaller is not an image model), at most 4096 (far beyond any classifier).
fn parse_side(v: &str) -> Result<u32, String> {
    match v.parse::<u32>() {
        Ok(n) if (8..=4096).contains(&n) => Ok(n),
        _ => Err(format!("expected a size from 8 to 4096 pixels, got {v:?}")),
    }
}

fn parse_triple(v: &str) -> Result<[f32; 3], String> {
    let parts: Vec<&str> = v.split(',').map(str::trim).collect();
    let [a, b, c] = parts.as_slice() else {
        return Err(format!("expected three comma-separated numbers, got {v:?}"));
    };
    let num = |s: &str| match s.parse::<f32>() {
        Ok(x) if x.is_finite() => Ok(x),
        _ => Err(format!("{s:?} is not a finite number")),
    };
    Ok([num(a)?, num(b)?, num(c)?])
}

fn parse_count(flag: &str, v: &str) -> Result<usize, ConfigError> {
    match v.parse::<usize>() {
        Ok(n) if (1..=4096).contains(&n) => Ok(n),
        _ => Err(ConfigError::BadValue { flag: flag.into(), value: v.into(), why: "expected a number from 1 to 4096".into() }),
    }
}

impl Config {
    /// Parses the flags (without the program name), reading the manifest if
    /// `--model` names a directory.
    pub fn from_args(args: impl IntoIterator<Item = String>) -> Result<Config, ConfigError> {
        let mut args = args.into_iter();
        let mut flags: Vec<(String, String)> = Vec::new();
        while let Some(flag) = args.next() {
            if flag == "-h" || flag == "--help" {
                return Err(ConfigError::Help);
            }
            const KNOWN: [&str; 16] = [
                "--listen", "--model", "--labels", "--name", "--workers", "--mm-threads", "--queue-depth", "--max-connections",
                "--input-size", "--resize", "--interpolation", "--mean", "--std", "--jpeg-scaling", "--nsm", "--key-rotation",
            ];
            if !KNOWN.contains(&flag.as_str()) {
                return Err(ConfigError::UnknownFlag(flag));
            }
            let value = args.next().ok_or_else(|| ConfigError::MissingValue(flag.clone()))?;
            flags.push((flag, value));
        }
        let get = |name: &str| flags.iter().rev().find(|(f, _)| f == name).map(|(_, v)| v.as_str());
        let bad = |flag: &str, value: &str, why: String| ConfigError::BadValue {
            flag: flag.into(),
            value: value.into(),
            why,
        };

        let listen = get("--listen").unwrap_or("vsock:5005");
        let listen: Addr = listen.parse().map_err(|e: shared::transport::AddrError| bad("--listen", listen, e.to_string()))?;

        let model_arg = PathBuf::from(get("--model").ok_or(ConfigError::MissingModel)?);
        let (manifest, dir, model_path) = if model_arg.is_dir() {
            let manifest = Manifest::load(&model_arg.join("manifest.txt"))?;
            let file = manifest.model.clone().unwrap_or_else(|| "model.onnx".into());
            (manifest, model_arg.clone(), model_arg.join(file))
        } else {
            let dir = model_arg.parent().map(Path::to_path_buf).unwrap_or_default();
            (Manifest::default(), dir, model_arg.clone())
        };

        let labels_path = match get("--labels") {
            Some(p) => Some(PathBuf::from(p)),
            None => manifest.labels.as_ref().map(|l| dir.join(l)),
        };
        let name = get("--name").map(str::to_string).or(manifest.name.clone()).unwrap_or_else(|| {
            model_path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "model".into())
        });

        let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        let workers = match get("--workers") {
            Some(v) => parse_count("--workers", v)?,
            None => cpus,
        };
        let mm_threads = match get("--mm-threads") {
            Some(v) => parse_count("--mm-threads", v)?,
            None => 1,
        };
        let queue_depth = match get("--queue-depth") {
            Some(v) => parse_count("--queue-depth", v)?,
            None => workers * shared::limits::QUEUE_DEPTH_PER_WORKER,
        };
        let max_connections = match get("--max-connections") {
            Some(v) => parse_count("--max-connections", v)?,
            None => shared::limits::MAX_CONNECTIONS,
        };

        let side = |flag: &str, from_manifest: Option<u32>, default: u32| -> Result<u32, ConfigError> {
            match get(flag) {
                Some(v) => parse_side(v).map_err(|why| bad(flag, v, why)),
                None => Ok(from_manifest.unwrap_or(default)),
            }
        };
        let triple = |flag: &str, from_manifest: Option<[f32; 3]>, default: [f32; 3]| -> Result<[f32; 3], ConfigError> {
            match get(flag) {
                Some(v) => parse_triple(v).map_err(|why| bad(flag, v, why)),
                None => Ok(from_manifest.unwrap_or(default)),
            }
        };
        let input_size = side("--input-size", manifest.input_size, 224)?;
        let resize = side("--resize", manifest.resize, 256)?;
        if resize < input_size {
            return Err(bad("--resize", &resize.to_string(), format!("must be at least the input size {input_size}")));
        }
        let interpolation = match get("--interpolation") {
            Some(v) => v.parse().map_err(|why| bad("--interpolation", v, why))?,
            None => manifest.interpolation.unwrap_or(Interpolation::Bilinear),
        };
        let mean = triple("--mean", manifest.mean, [0.485, 0.456, 0.406])?;
        let std = triple("--std", manifest.std, [0.229, 0.224, 0.225])?;
        if std.iter().any(|s| *s <= 0.0) {
            return Err(bad("--std", &format!("{std:?}"), "every std must be positive".into()));
        }
        let jpeg_scaling = match get("--jpeg-scaling") {
            Some(v) => parse_bool(v).map_err(|why| bad("--jpeg-scaling", v, why))?,
            None => manifest.jpeg_scaling.unwrap_or(true),
        };

        let nsm = get("--nsm").unwrap_or("/dev/nsm");
        let nsm = nsm.parse().map_err(|why| bad("--nsm", nsm, why))?;
        let key_rotation = match get("--key-rotation") {
            Some(v) => match v.parse::<u64>() {
                Ok(n) if (1..=365 * 86400).contains(&n) => Duration::from_secs(n),
                _ => return Err(bad("--key-rotation", v, "expected seconds from 1 to 31536000".into())),
            },
            None => shared::limits::DEFAULT_KEY_ROTATION,
        };

        Ok(Config {
            listen,
            model_path,
            labels_path,
            name,
            expected_sha256: manifest.sha256.clone(),
            synthetic: manifest.synthetic.unwrap_or(false),
            label_source: manifest.label_source.clone().unwrap_or_else(|| "none".into()),
            workers,
            mm_threads,
            queue_depth,
            max_connections,
            preprocess: Preprocess { input_size, resize, interpolation, mean, std, jpeg_scaling },
            nsm,
            key_rotation,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn manifest_parses_every_key() {
        let text = "# made by make model\nformat = 1\nname = efficientnet-lite0\nsynthetic = false\n\
            source = PyPI x\nmodel = model.onnx\nsha256 = 21161ea3f3009e4f062272db2b3dd9b1e76994e7578b64de09399a21e0142643\n\
            labels = labels.txt\nlabel_source = torchvision (line index = class id)\ninput_size = 224\nresize = 256\n\
            interpolation = bicubic\nmean = 0.498039,0.498039,0.498039\nstd = 0.501961, 0.501961, 0.501961\n\
            jpeg_scaling = false\n";
        let m = Manifest::parse(text, Path::new("m")).unwrap();
        assert_eq!(m.jpeg_scaling, Some(false));
        assert_eq!(m.name.as_deref(), Some("efficientnet-lite0"));
        assert_eq!(m.interpolation, Some(Interpolation::Bicubic));
        assert_eq!(m.std, Some([0.501961; 3]));
        assert_eq!(m.label_source.as_deref(), Some("torchvision (line index = class id)"));
    }

    #[test]
    fn manifest_errors_name_the_line() {
        let e = Manifest::parse("format = 1\nnmae = x\n", Path::new("m")).unwrap_err();
        assert_eq!(e, ConfigError::Manifest { path: "m".into(), line: 2, why: "unknown key \"nmae\"".into() });
        let e = Manifest::parse("sha256 = ABC\n", Path::new("m")).unwrap_err();
        assert!(matches!(e, ConfigError::Manifest { line: 1, .. }));
        let e = Manifest::parse("just words\n", Path::new("m")).unwrap_err();
        assert!(matches!(e, ConfigError::Manifest { line: 1, .. }));
        let e = Manifest::parse("mean = 1,2\n", Path::new("m")).unwrap_err();
        assert!(matches!(e, ConfigError::Manifest { line: 1, .. }));
        let e = Manifest::parse("input_size = 100000\n", Path::new("m")).unwrap_err();
        assert!(matches!(e, ConfigError::Manifest { line: 1, .. }));
        let e = Manifest::parse("format = 2\n", Path::new("m")).unwrap_err();
        assert!(matches!(e, ConfigError::Manifest { line: 1, .. }));
    }

    #[test]
    fn flags_default_to_torchvision_preprocessing() {
        let c = Config::from_args(args("--model /nonexistent/m.onnx --listen unix:/tmp/x.sock")).unwrap();
        assert_eq!(c.preprocess.input_size, 224);
        assert_eq!(c.preprocess.resize, 256);
        assert_eq!(c.preprocess.interpolation, Interpolation::Bilinear);
        assert_eq!(c.preprocess.mean, [0.485, 0.456, 0.406]);
        assert_eq!(c.name, "m");
        assert!(c.workers >= 1);
        assert_eq!(c.queue_depth, c.workers * shared::limits::QUEUE_DEPTH_PER_WORKER);
        assert_eq!(c.mm_threads, 1);
        assert!(c.preprocess.jpeg_scaling);
        let c = Config::from_args(args("--model m.onnx --jpeg-scaling false")).unwrap();
        assert!(!c.preprocess.jpeg_scaling);
    }

    #[test]
    fn bad_flags_are_explained() {
        assert_eq!(Config::from_args(args("--help")).unwrap_err(), ConfigError::Help);
        assert_eq!(Config::from_args(args("--bogus 1")).unwrap_err(), ConfigError::UnknownFlag("--bogus".into()));
        assert_eq!(Config::from_args(args("--model")).unwrap_err(), ConfigError::MissingValue("--model".into()));
        assert_eq!(Config::from_args(args("--workers 2")).unwrap_err(), ConfigError::MissingModel);
        assert!(matches!(
            Config::from_args(args("--model m.onnx --workers 0")).unwrap_err(),
            ConfigError::BadValue { .. }
        ));
        assert!(matches!(
            Config::from_args(args("--model m.onnx --listen tcp:1")).unwrap_err(),
            ConfigError::BadValue { .. }
        ));
        assert!(matches!(
            Config::from_args(args("--model m.onnx --resize 100")).unwrap_err(),
            ConfigError::BadValue { .. }
        ));
        assert!(matches!(
            Config::from_args(args("--model m.onnx --std 0,1,1")).unwrap_err(),
            ConfigError::BadValue { .. }
        ));
        assert!(matches!(
            Config::from_args(args("--model m.onnx --interpolation nearest")).unwrap_err(),
            ConfigError::BadValue { .. }
        ));
        assert!(matches!(
            Config::from_args(args("--model m.onnx --jpeg-scaling yes")).unwrap_err(),
            ConfigError::BadValue { .. }
        ));
    }
}
