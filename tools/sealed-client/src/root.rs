//! The root certificate a document's chain must start from: the AWS Nitro
//! Enclaves root, pinned by its fingerprint, or a development root given
//! explicitly by the user (`--dev-root FILE`, the root `make dev`'s NSM writes).

use std::fmt;

use der::Decode;
use sha2::{Digest, Sha256};
use x509_cert::Certificate;

use crate::hex;

/// The AWS Nitro Enclaves root certificate (G1), PEM. Public data, not code.
///
/// Provenance: AWS publishes it as `AWS_NitroEnclaves_Root-G1.zip` at
/// <https://aws-nitro-enclaves.amazonaws.com/AWS_NitroEnclaves_Root-G1.zip>, and
/// gives the SHA-256 of its DER encoding ([`AWS_NITRO_ROOT_SHA256`]) in
/// "Verifying the root of trust" (docs.aws.amazon.com/enclaves/latest/user/verify-root.html).
/// The bytes here were taken from the public repository
/// evervault/attestation-doc-validation, file `attestation-doc-validation/src/nitro.pem`
/// (commit 084ba280db363cba543fc58ce0822df1e0e3fa08), and checked against that
/// fingerprint: [`TrustedRoot::aws_nitro`] checks it again at every start, and a
/// test does too. Subject `C=US, O=Amazon, OU=AWS, CN=aws.nitro-enclaves`,
/// P-384, valid 2019-10-28T13:28:05Z to 2049-10-28T14:28:05Z.
pub const AWS_NITRO_ROOT_PEM: &str = include_str!("aws_nitro_root_g1.pem");

/// SHA-256 of the AWS Nitro root's DER encoding, as AWS publishes it.
pub const AWS_NITRO_ROOT_SHA256: &str = "641a0321a3e244efe456463195d606317ed7cdcc3c1756e09893f3c68f79bb5b";

/// Which kind of root a policy trusts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RootKind {
    /// The AWS Nitro Enclaves root: documents from a real NSM.
    AwsNitro,
    /// A development root (the development NSM of `make dev`): the documents
    /// prove nothing about an enclave.
    Development,
}

/// A pinned root certificate: a document is accepted only if its `cabundle[0]`
/// is exactly these DER bytes.
#[derive(Clone)]
pub struct TrustedRoot {
    kind: RootKind,
    der: Vec<u8>,
    sha256: [u8; 32],
}

/// Why a root certificate could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootError(pub String);

impl fmt::Display for RootError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RootError {}

impl TrustedRoot {
    /// The embedded AWS Nitro root, after checking that its DER SHA-256 is the
    /// published [`AWS_NITRO_ROOT_SHA256`] (an error here means the embedded
    /// certificate was altered: nothing can be verified).
    pub fn aws_nitro() -> Result<Self, RootError> {
        let root = Self::from_pem(RootKind::AwsNitro, AWS_NITRO_ROOT_PEM)
            .map_err(|e| RootError(format!("the embedded AWS Nitro root: {e}")))?;
        if root.fingerprint() != AWS_NITRO_ROOT_SHA256 {
            return Err(RootError(format!(
                "the embedded AWS Nitro root has SHA-256 {}, not the published {AWS_NITRO_ROOT_SHA256}",
                root.fingerprint()
            )));
        }
        Ok(root)
    }

    /// A development root from the PEM text of one certificate (the file
    /// `make dev` writes to `.run/dev-nsm-root.pem`).
    pub fn development_from_pem(pem: &str) -> Result<Self, RootError> {
        Self::from_pem(RootKind::Development, pem)
    }

    /// Which kind of root this is.
    pub fn kind(&self) -> RootKind {
        self.kind
    }

    /// The certificate's DER bytes.
    pub fn der(&self) -> &[u8] {
        &self.der
    }

    /// SHA-256 of the DER bytes, lowercase hex.
    pub fn fingerprint(&self) -> String {
        hex::encode(&self.sha256)
    }

    /// Whether `der` is this root, byte for byte.
    pub fn matches(&self, der: &[u8]) -> bool {
        self.der == der
    }

    fn from_pem(kind: RootKind, pem: &str) -> Result<Self, RootError> {
        let (label, der) =
            der::pem::decode_vec(pem.trim().as_bytes()).map_err(|e| RootError(format!("not one PEM block: {e}")))?;
        if label != "CERTIFICATE" {
            return Err(RootError(format!("a PEM \"{label}\", not a CERTIFICATE")));
        }
        Certificate::from_der(&der).map_err(|e| RootError(format!("not an X.509 certificate: {e}")))?;
        Ok(Self {
            kind,
            sha256: Sha256::digest(&der).into(),
            der,
        })
    }
}

impl fmt::Debug for TrustedRoot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TrustedRoot({:?}, sha256 {})", self.kind, self.fingerprint())
    }
}

/// SHA-256 of some DER bytes, lowercase hex (for messages about other roots).
pub fn fingerprint(der: &[u8]) -> String {
    hex::encode(&Sha256::digest(der))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_aws_root_has_the_published_fingerprint() {
        let root = TrustedRoot::aws_nitro().unwrap();
        assert_eq!(root.kind(), RootKind::AwsNitro);
        assert_eq!(root.fingerprint(), AWS_NITRO_ROOT_SHA256);
        assert_eq!(fingerprint(root.der()), AWS_NITRO_ROOT_SHA256);
    }

    #[test]
    fn a_development_root_must_be_one_pem_certificate() {
        let err = TrustedRoot::development_from_pem("hello").unwrap_err();
        assert!(err.0.starts_with("not one PEM block"), "{err}");
        let key = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
        let err = TrustedRoot::development_from_pem(key).unwrap_err();
        assert_eq!(err.0, "a PEM \"PRIVATE KEY\", not a CERTIFICATE");
        let not_x509 = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        let err = TrustedRoot::development_from_pem(not_x509).unwrap_err();
        assert!(err.0.starts_with("not an X.509 certificate"), "{err}");
        // The AWS root itself loads as a (mislabelled) development root.
        let dev = TrustedRoot::development_from_pem(AWS_NITRO_ROOT_PEM).unwrap();
        assert_eq!(dev.kind(), RootKind::Development);
    }
}
