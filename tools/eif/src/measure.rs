//! The three PCRs an EIF fixes, computed exactly as nitro-cli and the Nitro hypervisor do.
//!
//! Each PCR starts as 48 zero bytes and is extended once with the SHA-384 of everything it
//! covers, taken in file order (aws-nitro-enclaves-image-format: `EifBuilder::measure` feeds
//! each hasher without a cache and ends with `tpm_extend_finalize_reset`; QEMU's
//! `hw/core/eif.c` hashes the same bytes):
//!
//! ```text
//!   PCR0 = SHA384( 0^48 || SHA384( kernel || cmdline || ramdisk 1 || ramdisk 2 || ... ) )
//!   PCR1 = SHA384( 0^48 || SHA384( kernel || cmdline || ramdisk 1 ) )
//!   PCR2 = SHA384( 0^48 || SHA384( ramdisk 2 || ramdisk 3 || ... ) )
//! ```
//!
//! The cmdline is measured as stored (no NUL). Section headers, the metadata section and the
//! CRC are not measured: two EIFs that differ only in their metadata (a build time) attest the
//! same. A signature would add PCR8; we never sign, and the reader refuses signed files.

use sha2::{Digest, Sha384};
use std::fmt::Write as _;

/// Length of a SHA-384 digest and of each PCR.
pub const PCR_LEN: usize = 48;

/// What nitro-cli prints as the hash algorithm: the Debug form of its sha2 hasher.
pub const HASH_ALGORITHM: &str = "Sha384 { ... }";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Measurements {
    pub pcr0: [u8; PCR_LEN],
    pub pcr1: [u8; PCR_LEN],
    pub pcr2: [u8; PCR_LEN],
}

/// SHA-384(0^48 || digest): one TPM-style extend of a zeroed register.
pub fn extend(digest: &[u8; PCR_LEN]) -> [u8; PCR_LEN] {
    let mut h = Sha384::new();
    h.update([0u8; PCR_LEN]);
    h.update(digest);
    h.finalize().into()
}

/// The PCR of a sequence of byte strings: the extend of their concatenation's digest.
pub fn pcr_of(parts: &[&[u8]]) -> [u8; PCR_LEN] {
    let mut h = Sha384::new();
    for p in parts {
        h.update(p);
    }
    extend(&h.finalize().into())
}

pub fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        // Writing to a String cannot fail.
        let _ = write!(s, "{b:02x}");
    }
    s
}

impl Measurements {
    /// Measures the sections nitro-cli measures, in the order they are in the file.
    pub fn of(kernel: &[u8], cmdline: &[u8], ramdisks: &[&[u8]]) -> Measurements {
        let mut image: Vec<&[u8]> = vec![kernel, cmdline];
        image.extend_from_slice(ramdisks);
        let boot: Vec<&[u8]> = vec![kernel, cmdline, ramdisks.first().copied().unwrap_or(&[])];
        let app: &[&[u8]] = ramdisks.get(1..).unwrap_or(&[]);
        Measurements { pcr0: pcr_of(&image), pcr1: pcr_of(&boot), pcr2: pcr_of(app) }
    }

    pub fn pcr0_hex(&self) -> String {
        hex(&self.pcr0)
    }
    pub fn pcr1_hex(&self) -> String {
        hex(&self.pcr1)
    }
    pub fn pcr2_hex(&self) -> String {
        hex(&self.pcr2)
    }

    /// The `"Measurements": {...}` object's lines, indented by `indent` spaces, without a
    /// trailing newline: one `"PCRn": "hex"` per line, as scripts/nitro/lib.sh's json_value
    /// reads them.
    pub fn json_object(&self, indent: usize) -> String {
        let pad = " ".repeat(indent);
        format!(
            "{{\n{pad}  \"HashAlgorithm\": \"{HASH_ALGORITHM}\",\n{pad}  \"PCR0\": \"{}\",\n{pad}  \"PCR1\": \"{}\",\n{pad}  \"PCR2\": \"{}\"\n{pad}}}",
            self.pcr0_hex(),
            self.pcr1_hex(),
            self.pcr2_hex()
        )
    }

    /// What `nitro-cli build-enclave` prints on stdout, with its trailing newline.
    pub fn to_json(&self) -> String {
        format!("{{\n  \"Measurements\": {}\n}}\n", self.json_object(2))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extend_of_empty() {
        // PCR of nothing: SHA384(0^48 || SHA384("")).
        let empty: [u8; 48] = Sha384::digest(b"").into();
        assert_eq!(pcr_of(&[]), extend(&empty));
        assert_eq!(Measurements::of(b"k", b"c", &[b"r"]).pcr2, pcr_of(&[]));
    }

    #[test]
    fn split_between_pcrs() {
        let m = Measurements::of(b"kernel", b"cmd", &[b"boot", b"app1", b"app2"]);
        assert_eq!(m.pcr0, pcr_of(&[b"kernelcmdbootapp1app2"]));
        assert_eq!(m.pcr1, pcr_of(&[b"kernelcmdboot"]));
        assert_eq!(m.pcr2, pcr_of(&[b"app1app2"]));
    }

    #[test]
    fn json_shape() {
        let m = Measurements { pcr0: [0xab; 48], pcr1: [0; 48], pcr2: [1; 48] };
        let j = m.to_json();
        assert!(j.starts_with("{\n  \"Measurements\": {\n    \"HashAlgorithm\": \"Sha384 { ... }\",\n    \"PCR0\": \"abab"));
        assert!(j.ends_with("\"\n  }\n}\n"));
        assert!(j.contains(&format!("\n    \"PCR2\": \"{}\"\n", "01".repeat(48))));
    }
}
