//! The sealed-request client: verifies the enclave's Nitro attestation
//! document, then sends one image as an Oblivious HTTP (RFC 9458) request
//! sealed to the attested key, so that only the measured enclave can read the
//! image and the answer. docs/SEALED.md is the contract it implements.
//!
//! - [`verify`]: the attestation document's checks ([`verify::verify`]).
//! - [`root`]: the pinned AWS Nitro root, or an explicit development root.
//! - [`seal`]: the inner Binary HTTP request and the OHTTP encapsulation.
//! - [`http`]: a minimal blocking HTTP/1.1 client (`http://` only).
//! - [`measurements`]: nitro-cli's measurements JSON, the PCRs to pin.
//! - [`cli`]: the command line.

pub mod cbor;
mod chain;
pub mod cli;
pub mod hex;
pub mod http;
pub mod measurements;
pub mod root;
pub mod seal;
pub mod verify;

/// `text` with control characters escaped, so that strings from the document
/// (certificate names, module id) cannot drive the terminal they are printed to.
pub fn printable(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}
