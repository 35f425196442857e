//! The development NSM: a stand-in for the Nitro Secure Module, so that the
//! whole attestation flow of docs/SEALED.md runs without Nitro hardware
//! (`make dev`, tests). It is never part of the enclave image.
//!
//! It signs attestation documents shaped exactly like AWS Nitro's (COSE_Sign1,
//! tag 18, ES384, the same payload keys in the same order and types) with a
//! local test CA whose root says "NOT AWS Nitro" in its subject. Clients accept
//! such documents only when given that root explicitly (`--dev-root`).
//!
//! The library is also the toolkit other crates' tests use to craft documents,
//! good and deliberately broken:
//!
//! - [`pki`]: P-384 keys and X.509 certificates ([`pki::Credential`],
//!   [`pki::CertSpec`]): a self-signed root, intermediates, leaves, any
//!   validity window, any issuer (even a wrong one).
//! - [`document`]: [`document::DocumentSpec`] and the COSE_Sign1 signing of
//!   its payload, with the pieces exposed separately ([`document::sig_structure`],
//!   [`document::cose_sign1_from_parts`]) for broken variants.
//! - [`cbor`]: the small CBOR encoder the documents are written with.
//! - [`nsm`]: [`nsm::DevNsm`], which answers the NSM's CBOR requests under the
//!   NSM's limits; [`server`]: the length-prefixed Unix socket protocol.
//! - [`measure`]: the development PCRs and the `nitro-cli` measurements JSON;
//!   [`state`]: the persistent root CA in the state directory.
#![forbid(unsafe_code)]

pub mod cbor;
pub mod document;
pub mod measure;
pub mod nsm;
pub mod pki;
pub mod server;
pub mod state;

use std::fmt;

/// An error with a message that says what failed and why, for the person
/// running `make dev` or reading a failed test.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error(String);

impl Error {
    /// An error with this message.
    pub fn msg(message: impl Into<String>) -> Error {
        Error(message.into())
    }

    /// `what` failed because of `cause`.
    pub fn with(what: impl fmt::Display, cause: impl fmt::Display) -> Error {
        Error(format!("{what}: {cause}"))
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

/// Lowercase hexadecimal of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
