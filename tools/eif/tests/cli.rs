//! The `eif` binary end to end, as `make eif` drives it: two app ramdisks, two init ramdisks
//! and two EIFs built from the same inputs in two different directories must be the same
//! bytes with the same PCRs; PCR2 must be the extend of the app ramdisk's digest; `describe`
//! must print the PCRs `build` printed; `extract` must give back kernel, cmdline and the
//! concatenated ramdisks; a damaged EIF must be refused in one line. If GNU cpio is
//! installed, it must list the app ramdisk with the modes we wrote.

use sha2::{Digest, Sha384};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("eif-cli-{}-{name}", std::process::id()));
    let _ = fs::remove_dir_all(&d);
    fs::create_dir_all(&d).unwrap();
    d
}

fn eif(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_eif"))
        .args(args)
        .current_dir(cwd)
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .output()
        .unwrap()
}

fn ok(o: Output) -> String {
    assert!(o.status.success(), "failed: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout).unwrap()
}

fn pcr(json: &str, name: &str) -> String {
    let key = format!("\"{name}\": \"");
    let line = json.lines().find(|l| l.trim_start().starts_with(&key)).unwrap_or_else(|| panic!("no {name} in {json}"));
    let v = line.trim().trim_start_matches(&key).trim_end_matches(',').trim_end_matches('"').to_string();
    assert_eq!(v.len(), 96, "{v}");
    v
}

/// Inputs in `dir`: stand-in kernel, cmdline (with a trailing newline), init, nsm.ko, an
/// "enclave binary" and a model directory. Written in a different order in each directory
/// would make no difference; file contents alone matter.
fn inputs(dir: &Path) {
    fs::write(dir.join("bzImage"), vec![0x4b; 5000]).unwrap();
    fs::write(dir.join("cmdline"), "reboot=k panic=30 pci=off console=ttyS0\n").unwrap();
    fs::write(dir.join("init"), b"\x7fELF stand-in init").unwrap();
    fs::write(dir.join("nsm.ko"), b"stand-in nsm.ko").unwrap();
    fs::write(dir.join("enclave"), vec![0x7f; 3001]).unwrap();
    fs::create_dir_all(dir.join("model")).unwrap();
    fs::write(dir.join("model/model.onnx"), vec![1u8; 777]).unwrap();
    fs::write(dir.join("model/labels.txt"), "cat\ndog\n").unwrap();
    fs::write(dir.join("model/manifest.txt"), "name = tiny\n").unwrap();
}

fn build_in(dir: &Path) -> String {
    inputs(dir);
    ok(eif(&["app-ramdisk", "--enclave", "enclave", "--model-dir", "model", "--output", "app.cpio"], dir));
    ok(eif(&["init-ramdisk", "--init", "init", "--file", "nsm.ko=nsm.ko", "--output", "boot.cpio"], dir));
    ok(eif(
        &[
            "build", "--kernel", "bzImage", "--cmdline", "cmdline", "--ramdisk", "boot.cpio", "--ramdisk", "app.cpio",
            "--output", "enclave.eif", "--measurements", "measurements.json", "--name", "t", "--version", "1",
        ],
        dir,
    ))
}

#[test]
fn reproducible_measured_and_described() {
    let a = tmpdir("a");
    let b = tmpdir("b-a-longer-name");
    let out_a = build_in(&a);
    let out_b = build_in(&b);
    assert_eq!(fs::read(a.join("enclave.eif")).unwrap(), fs::read(b.join("enclave.eif")).unwrap());
    assert_eq!(out_a, out_b);
    assert_eq!(fs::read_to_string(a.join("measurements.json")).unwrap(), out_a);
    assert!(out_a.starts_with("{\n  \"Measurements\": {\n    \"HashAlgorithm\": \"Sha384 { ... }\",\n"));

    // PCR2 = SHA384(0^48 || SHA384(app ramdisk)).
    let app = fs::read(a.join("app.cpio")).unwrap();
    let mut h = Sha384::new();
    h.update([0u8; 48]);
    h.update(Sha384::digest(&app));
    let want: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(pcr(&out_a, "PCR2"), want);

    let desc = ok(eif(&["describe", "enclave.eif"], &a));
    for p in ["PCR0", "PCR1", "PCR2"] {
        assert_eq!(pcr(&desc, p), pcr(&out_a, p), "{p}");
    }
    for want in [
        "\"EifVersion\": 4,",
        "\"IsSigned\": false,",
        "\"CheckCRC\": true,",
        "\"ArchType\": \"x86_64\",",
        "\"ImageName\": \"t\",",
        "\"BuildTime\": \"2023-11-14T22:13:20+00:00\"",
        "\"KernelVersion\": \"unknown\"",
        "\"Type\": \"metadata\"",
    ] {
        assert!(desc.contains(want), "describe lacks {want}:\n{desc}");
    }
    let v: serde_json::Value = serde_json::from_str(&desc).unwrap();
    assert_eq!(v["Sections"].as_array().unwrap().len(), 5);

    ok(eif(&["extract", "enclave.eif", "--kernel", "k.out", "--initrd", "i.out", "--cmdline", "c.out"], &a));
    assert_eq!(fs::read(a.join("k.out")).unwrap(), fs::read(a.join("bzImage")).unwrap());
    assert_eq!(fs::read(a.join("c.out")).unwrap(), b"reboot=k panic=30 pci=off console=ttyS0");
    let mut initrd = fs::read(a.join("boot.cpio")).unwrap();
    initrd.extend_from_slice(&app);
    assert_eq!(fs::read(a.join("i.out")).unwrap(), initrd);

    // One byte changed: refused, one line, exit 1.
    let mut bad = fs::read(a.join("enclave.eif")).unwrap();
    let n = bad.len();
    bad[n - 1] ^= 0xff;
    fs::write(a.join("bad.eif"), &bad).unwrap();
    let o = eif(&["describe", "bad.eif"], &a);
    assert_eq!(o.status.code(), Some(1));
    let e = String::from_utf8(o.stderr).unwrap();
    assert!(e.starts_with("eif: error: bad.eif: CRC mismatch") && e.lines().count() == 1, "{e}");
    let o = eif(&["extract", "bad.eif", "--kernel", "k2", "--initrd", "i2", "--cmdline", "c2"], &a);
    assert_eq!(o.status.code(), Some(1));
    assert!(!a.join("k2").exists());

    // GNU cpio, if installed, reads our archive and sees our modes and owners.
    match Command::new("cpio").args(["-itv", "--quiet"]).stdin(fs::File::open(a.join("app.cpio")).unwrap()).output() {
        Ok(o) if o.status.success() => {
            let list = String::from_utf8(o.stdout).unwrap();
            for (mode, name) in [
                ("-rw-r--r--", "cmd"),
                ("-rw-r--r--", "env"),
                ("drwxr-xr-x", "rootfs"),
                ("drwxr-xr-x", "rootfs/dev"),
                ("-rwxr-xr-x", "rootfs/enclave"),
                ("drwxr-xr-x", "rootfs/model"),
                ("-rw-r--r--", "rootfs/model/model.onnx"),
                ("drwxr-xr-x", "rootfs/tmp"),
            ] {
                assert!(
                    list.lines().any(|l| l.starts_with(mode) && l.ends_with(&format!(" {name}"))),
                    "cpio -itv lacks {mode} {name}:\n{list}"
                );
            }
            assert!(list.lines().all(|l| l.contains(" root ") || l.contains(" 0 ")), "{list}");
            assert_eq!(list.lines().count(), 14, "{list}");
        }
        _ => println!("note: GNU cpio not installed or failed; skipped the cpio -itv check"),
    }

    let _ = fs::remove_dir_all(&a);
    let _ = fs::remove_dir_all(&b);
}

#[test]
fn usage_and_input_errors() {
    let d = tmpdir("errors");
    inputs(&d);
    let o = eif(&["build", "--kernel", "bzImage"], &d);
    assert_eq!(o.status.code(), Some(2));
    fs::remove_file(d.join("model/labels.txt")).unwrap();
    let o = eif(&["app-ramdisk", "--enclave", "enclave", "--model-dir", "model", "--output", "x"], &d);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("model file missing: model/labels.txt"));
    let o = eif(&["init-ramdisk", "--init", "init", "--file", "/abs=nsm.ko", "--output", "x"], &d);
    assert_eq!(o.status.code(), Some(1));
    assert!(!d.join("x").exists());
    let _ = fs::remove_dir_all(&d);
}

/// `app-ramdisk --arg`: appended to cmd in order, so the ramdisk (and PCR2) differ; without
/// it the bytes are those of the plain call, whatever else is the same.
#[test]
fn app_ramdisk_appended_arguments() {
    let d = tmpdir("args");
    inputs(&d);
    let base = ["app-ramdisk", "--enclave", "enclave", "--model-dir", "model", "--output"];
    ok(eif(&[&base[..], &["plain.cpio"]].concat(), &d));
    ok(eif(&[&base[..], &["dev.cpio", "--arg", "--nsm", "--arg", "vsock:2:9100"]].concat(), &d));
    let plain = fs::read(d.join("plain.cpio")).unwrap();
    let dev = fs::read(d.join("dev.cpio")).unwrap();
    assert_ne!(plain, dev);
    let holds = |hay: &[u8], needle: &[u8]| hay.windows(needle.len()).any(|w| w == needle);
    assert!(holds(&dev, b"/enclave\n--listen\nvsock:5005\n--model\n/model\n--nsm\nvsock:2:9100\n"));
    assert!(holds(&plain, b"/enclave\n--listen\nvsock:5005\n--model\n/model\n"));
    assert!(!holds(&plain, b"--nsm"));
    let o = eif(&[&base[..], &["bad.cpio", "--arg", "a\nb"]].concat(), &d);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("without a newline"), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(!d.join("bad.cpio").exists());
    let o = eif(&[&base[..], &["bad.cpio", "--arg"]].concat(), &d);
    assert_eq!(o.status.code(), Some(2));
    let _ = fs::remove_dir_all(&d);
}
