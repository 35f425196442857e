//! The development PCRs and the measurements file.
//!
//! On Nitro, PCR0/1/2 measure the enclave image, its kernel and its
//! application, and `nitro-cli build-enclave` prints them as JSON (kept as
//! `build/measurements.json`). Here they are stand-ins with the same roles:
//! PCR0 = SHA-384 of the model server binary, PCR1 = SHA-384 of the string
//! [`KERNEL_MEASURED`], PCR2 = SHA-384 of the model file. Every other PCR is
//! zero. The JSON is written in nitro-cli's form, so a client pins the
//! development PCRs exactly as it pins real ones.
//!
//! With `--eif`, the PCRs are instead those of an enclave image file, as
//! nitro-cli and the hypervisor compute them (read by tools/eif's checking
//! reader): the emulation image with the development NSM
//! (`make eif-emulate-dev-nsm`) then attests the measurements it really has,
//! the ones `eif describe` prints.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::path::Path;

use sha2::{Digest, Sha384};

use crate::document::PCR_LEN;
use crate::{hex, Error};

/// What PCR1 is the SHA-384 of (there is no kernel to measure here).
pub const KERNEL_MEASURED: &str = "dev-nsm kernel";
/// PCRs 0 to 15 appear in documents, as on Nitro.
pub const DOCUMENT_PCR_COUNT: u8 = 16;

/// SHA-384 of `bytes`.
pub fn sha384(bytes: &[u8]) -> [u8; PCR_LEN] {
    Sha384::digest(bytes).into()
}

/// SHA-384 of a file's contents, read in chunks.
pub fn sha384_file(path: &Path) -> Result<[u8; PCR_LEN], Error> {
    let fail = |e: std::io::Error| Error::with(format!("cannot read {}", path.display()), e);
    let mut file = File::open(path).map_err(fail)?;
    let mut hasher = Sha384::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buf).map_err(fail)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finalize().into())
}

/// The three measured PCRs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Measurements {
    pub pcr0: [u8; PCR_LEN],
    pub pcr1: [u8; PCR_LEN],
    pub pcr2: [u8; PCR_LEN],
}

impl Measurements {
    /// Measures the model server binary and the model file.
    pub fn of_files(enclave_bin: &Path, model: &Path) -> Result<Measurements, Error> {
        Ok(Measurements { pcr0: sha384_file(enclave_bin)?, pcr1: sha384(KERNEL_MEASURED.as_bytes()), pcr2: sha384_file(model)? })
    }

    /// The PCRs of an enclave image file: read whole (at most the EIF format's
    /// own limit) and checked section by section before anything is measured.
    pub fn of_eif(path: &Path) -> Result<Measurements, Error> {
        let fail = |e: std::io::Error| Error::with(format!("cannot read {}", path.display()), e);
        let mut bytes = Vec::new();
        File::open(path).map_err(fail)?.take(eif::format::MAX_EIF_LEN + 1).read_to_end(&mut bytes).map_err(fail)?;
        let image = eif::Eif::read(&bytes).map_err(|e| Error::with(format!("{} is not an enclave image", path.display()), e))?;
        let m = image.measurements();
        Ok(Measurements { pcr0: m.pcr0, pcr1: m.pcr1, pcr2: m.pcr2 })
    }

    /// PCRs 0 to 15 as a document carries them: these three, the rest zero.
    pub fn document_pcrs(&self) -> BTreeMap<u8, [u8; PCR_LEN]> {
        let mut pcrs: BTreeMap<u8, [u8; PCR_LEN]> = (0..DOCUMENT_PCR_COUNT).map(|i| (i, [0; PCR_LEN])).collect();
        pcrs.insert(0, self.pcr0);
        pcrs.insert(1, self.pcr1);
        pcrs.insert(2, self.pcr2);
        pcrs
    }

    /// The JSON `nitro-cli build-enclave` prints (two-space indentation,
    /// uppercase keys, lowercase hex), with a final newline.
    pub fn to_json(&self) -> String {
        format!(
            "{{\n  \"Measurements\": {{\n    \"HashAlgorithm\": \"Sha384 {{ ... }}\",\n    \"PCR0\": \"{}\",\n    \"PCR1\": \"{}\",\n    \"PCR2\": \"{}\"\n  }}\n}}\n",
            hex(&self.pcr0),
            hex(&self.pcr1),
            hex(&self.pcr2)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha384_known_answer() {
        // FIPS 180-2 example "abc".
        assert_eq!(
            hex(&sha384(b"abc")),
            "cb00753f45a35e8bb5a03d699ac65007272c32ab0eded1631a8b605a43ff5bed8086072ba1e7cc2358baeca134c825a7"
        );
    }

    #[test]
    fn json_form_and_document_pcrs() {
        let m = Measurements { pcr0: [0xab; PCR_LEN], pcr1: [1; PCR_LEN], pcr2: [2; PCR_LEN] };
        let json = m.to_json();
        assert!(json.starts_with("{\n  \"Measurements\": {\n    \"HashAlgorithm\": \"Sha384 { ... }\",\n    \"PCR0\": \"abab"));
        assert!(json.contains(&format!("\"PCR2\": \"{}\"\n  }}\n}}\n", "02".repeat(48))));
        let pcrs = m.document_pcrs();
        assert_eq!(pcrs.len(), 16);
        assert_eq!(pcrs[&1], [1; PCR_LEN]);
        assert_eq!(pcrs[&15], [0; PCR_LEN]);
    }

    #[test]
    fn eif_measurements_are_the_image_s() {
        let dir = std::env::temp_dir().join(format!("dev-nsm-measure-eif-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let writer = eif::EifWriter {
            kernel: vec![0x4b; 3000],
            cmdline: b"console=ttyS0".to_vec(),
            metadata: b"{}".to_vec(),
            ramdisks: vec![b"boot".to_vec(), b"app".to_vec()],
        };
        let (bytes, want) = writer.write().unwrap();
        let path = dir.join("enclave.eif");
        std::fs::write(&path, &bytes).unwrap();
        let m = Measurements::of_eif(&path).unwrap();
        assert_eq!((m.pcr0, m.pcr1, m.pcr2), (want.pcr0, want.pcr1, want.pcr2));
        // The same JSON as `eif build --measurements` writes.
        assert_eq!(m.to_json(), want.to_json());
        // A damaged image is refused, not measured.
        std::fs::write(&path, &bytes[..bytes.len() - 1]).unwrap();
        let err = Measurements::of_eif(&path).unwrap_err().to_string();
        assert!(err.contains("is not an enclave image"), "{err}");
        std::fs::write(&path, b"not an eif").unwrap();
        assert!(Measurements::of_eif(&path).is_err());
        let err = Measurements::of_eif(&dir.join("missing.eif")).unwrap_err().to_string();
        assert!(err.contains("missing.eif"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn missing_file_names_the_path() {
        let err = sha384_file(Path::new("/nonexistent/dev-nsm-model.onnx")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/dev-nsm-model.onnx"), "{err}");
    }
}
