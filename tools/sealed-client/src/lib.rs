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

/// `text` with everything but printable ASCII escaped (`\n`, `\u{202e}`), so
/// that strings from the document or the parent (certificate names, module
/// id, error bodies) can neither drive the terminal they are printed to nor
/// disguise themselves with invisible or right-to-left characters.
pub fn printable(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c == ' ' || c.is_ascii_graphic() {
                c.to_string()
            } else {
                c.escape_default().to_string()
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn printable_escapes_all_but_printable_ascii() {
        assert_eq!(super::printable("CN=a b,O=c"), "CN=a b,O=c");
        assert_eq!(super::printable("a\x1b[2Jb\n"), r"a\u{1b}[2Jb\n");
        assert_eq!(super::printable("x\u{202e}y\u{e9}"), r"x\u{202e}y\u{e9}");
    }
}
