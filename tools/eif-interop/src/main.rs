//! eif-interop: reads and writes Enclave Image Format files with AWS's own EIF library
//! (`aws-nitro-enclaves-image-format` 0.3.0, the code under nitro-cli's `build-enclave` and
//! `describe-eif`), so that tests/eif/interop.sh can check our `eif` tool against an
//! implementation we did not write. See README.md.
//!
//!   eif-interop pcrs EIF
//!       Their reader (`EifReader::from_eif`) walks the sections, their CRC check
//!       (`check_crc`) must pass, and their `get_pcrs` gives PCR0/1/2 (and PCR8 when signed).
//!       Prints JSON shaped like `nitro-cli describe-eif`; exit 1 with a message on stderr when
//!       their reader refuses the file or the CRC does not match.
//!   eif-interop build --kernel F --cmdline F --ramdisk F [--ramdisk F]... --output EIF
//!       [--arch x86_64|aarch64] [--name S] [--version S] [--build-time S] [--build-tool S]
//!       [--build-tool-version S] [--img-os S] [--img-kernel S]
//!       Their writer (`EifBuilder`, unsigned, SHA-384) as `eif_build` 0.2.1 drives it, with the
//!       command line read from a file and trimmed of surrounding whitespace as `nitro-cli
//!       build-enclave` does with its blobs' `cmdline` file (`cmdline.trim()` in nitro-cli's
//!       src/lib.rs), and a fixed build time by default, so that the output is reproducible.
//!       Prints `{"Measurements": {...}}`.

use aws_nitro_enclaves_image_format::defs::{
    EifBuildInfo, EifIdentityInfo, EIF_HDR_ARCH_ARM64, EIF_MAGIC,
};
use aws_nitro_enclaves_image_format::utils::eif_reader::EifReader;
use aws_nitro_enclaves_image_format::utils::{get_pcrs, EifBuilder};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha384};
use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::path::Path;
use std::process::ExitCode;

const USAGE: &str = "usage:
  eif-interop pcrs EIF
  eif-interop build --kernel FILE --cmdline FILE --ramdisk FILE [--ramdisk FILE]... --output EIF
                    [--arch x86_64|aarch64] [--name S] [--version S] [--build-time S]
                    [--build-tool S] [--build-tool-version S] [--img-os S] [--img-kernel S]";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("pcrs") if args.len() == 2 => pcrs(&args[1]),
        Some("build") => build(&args[1..]),
        Some("-h" | "--help") => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        _ => Err(USAGE.to_string()),
    };
    match result {
        Ok(out) => {
            println!("{}", serde_json::to_string_pretty(&out).expect("JSON"));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("eif-interop: {e}");
            ExitCode::FAILURE
        }
    }
}

fn measurements_json(m: BTreeMap<String, String>) -> Value {
    Value::Object(m.into_iter().map(|(k, v)| (k, Value::String(v))).collect::<Map<_, _>>())
}

fn pcrs(path: &str) -> Result<Value, String> {
    let mut reader = EifReader::from_eif(path.to_string())?;
    let header = reader.get_header();
    if !reader.check_crc() {
        return Err(format!(
            "CRC mismatch: the header says {:#010x}, the file's CRC-32 is {:#010x}",
            header.eif_crc32, reader.eif_crc
        ));
    }
    let signed = reader.signature_section.is_some();
    let measurements = get_pcrs(
        &mut reader.image_hasher,
        &mut reader.bootstrap_hasher,
        &mut reader.app_hasher,
        &mut reader.cert_hasher,
        Sha384::new(),
        signed,
    )?;
    // The header's section table as their parser reads it (their reader itself walks the
    // sections one after another and does not use the table).
    let n = (header.num_sections as usize).min(header.section_offsets.len());
    let table: Vec<Value> = (0..n)
        .map(|i| json!({"Offset": header.section_offsets[i], "Size": header.section_sizes[i]}))
        .collect();
    let mut out = json!({
        "EifVersion": header.version,
        "Measurements": measurements_json(measurements),
        "IsSigned": signed,
        "CheckCRC": true,
        "ArmKernel": header.flags & EIF_HDR_ARCH_ARM64 != 0,
        "Header": {
            "MagicOk": header.magic == EIF_MAGIC,
            "Flags": header.flags,
            "DefaultMemory": header.default_mem,
            "DefaultCpus": header.default_cpus,
            "NumSections": header.num_sections,
            "SectionTable": table,
            "Crc32": format!("{:#010x}", header.eif_crc32),
        },
    });
    if let Some(meta) = reader.get_metadata() {
        out["ImageName"] = json!(meta.img_name);
        out["ImageVersion"] = json!(meta.img_version);
        out["Metadata"] = serde_json::to_value(&meta).map_err(|e| e.to_string())?;
    }
    Ok(out)
}

fn build(args: &[String]) -> Result<Value, String> {
    let (mut kernel, mut cmdline, mut output) = (None, None, None);
    let mut ramdisks = Vec::new();
    let mut arch = "x86_64".to_string();
    let mut name = None;
    let mut version = "1.0".to_string();
    let mut build_time = "1970-01-01T00:00:00+00:00".to_string();
    let mut build_tool = env!("CARGO_PKG_NAME").to_string();
    let mut build_tool_version = env!("CARGO_PKG_VERSION").to_string();
    let mut img_os = "OS".to_string();
    let mut img_kernel = "kernel".to_string();
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?.clone();
        match flag.as_str() {
            "--kernel" => kernel = Some(value),
            "--cmdline" => cmdline = Some(value),
            "--ramdisk" => ramdisks.push(value),
            "--output" => output = Some(value),
            "--arch" => arch = value,
            "--name" => name = Some(value),
            "--version" => version = value,
            "--build-time" => build_time = value,
            "--build-tool" => build_tool = value,
            "--build-tool-version" => build_tool_version = value,
            "--img-os" => img_os = value,
            "--img-kernel" => img_kernel = value,
            _ => return Err(format!("unknown option {flag}\n{USAGE}")),
        }
    }
    let kernel = kernel.ok_or_else(|| format!("--kernel is required\n{USAGE}"))?;
    let cmdline = cmdline.ok_or_else(|| format!("--cmdline is required\n{USAGE}"))?;
    let output = output.ok_or_else(|| format!("--output is required\n{USAGE}"))?;
    if ramdisks.is_empty() {
        return Err(format!("at least one --ramdisk is required\n{USAGE}"));
    }
    let flags = match arch.as_str() {
        "x86_64" => 0,
        "aarch64" => EIF_HDR_ARCH_ARM64,
        _ => return Err(format!("--arch {arch}: x86_64 or aarch64")),
    };
    // Their builder panics on a missing file or a NUL in the command line: checked here first.
    for f in std::iter::once(&kernel).chain(&ramdisks) {
        std::fs::metadata(f).map_err(|e| format!("{f}: {e}"))?;
    }
    let cmdline_bytes = std::fs::read(&cmdline).map_err(|e| format!("{cmdline}: {e}"))?;
    let cmdline_text = String::from_utf8(cmdline_bytes)
        .map_err(|_| format!("{cmdline}: not UTF-8"))?
        .trim()
        .to_string();
    if cmdline_text.contains('\0') {
        return Err(format!("{cmdline}: contains a NUL byte"));
    }

    // The metadata section as eif_build 0.2.1 fills it (same options and defaults), with a
    // fixed build time by default.
    let eif_info = EifIdentityInfo {
        img_name: name.unwrap_or_else(|| {
            Path::new(&kernel)
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("kernel")
                .to_string()
        }),
        img_version: version,
        build_info: EifBuildInfo {
            build_time,
            build_tool,
            build_tool_version,
            img_os,
            img_kernel,
        },
        docker_info: json!(null),
        custom_info: json!(null),
    };
    let mut builder =
        EifBuilder::new(Path::new(&kernel), cmdline_text, None, Sha384::new(), flags, eif_info);
    for r in &ramdisks {
        builder.add_ramdisk(Path::new(r));
    }
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&output)
        .map_err(|e| format!("{output}: {e}"))?;
    let measurements = builder.write_to(&mut file);
    Ok(json!({ "Measurements": measurements_json(measurements) }))
}
