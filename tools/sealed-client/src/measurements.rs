//! The PCRs to pin, from nitro-cli's measurements JSON (what `nitro-cli
//! build-enclave` prints and `make eif` saves as `build/measurements.json`;
//! `make dev` writes `.run/dev-measurements.json` in the same form):
//!
//! ```json
//! {"Measurements": {"HashAlgorithm": "Sha384 { ... }",
//!                   "PCR0": "<96 hex digits>", "PCR1": "...", "PCR2": "...", "PCR8": "..."}}
//! ```
//!
//! PCR0, PCR1 and PCR2 are required; PCR8 (the signing certificate of a
//! signed EIF) and any other `PCRn` are pinned when present. Other keys are
//! ignored.

use std::collections::BTreeMap;

use crate::hex;
use crate::verify::{Pcr, MAX_PCR_INDEX, PCR_LEN};

/// The largest measurements file read (nitro-cli's is about 400 bytes).
pub const MAX_FILE_LEN: usize = 64 * 1024;

/// Parses the measurements JSON into the PCRs it pins.
pub fn parse(json: &str) -> Result<BTreeMap<u8, Pcr>, String> {
    if json.len() > MAX_FILE_LEN {
        return Err(format!("more than {MAX_FILE_LEN} bytes"));
    }
    let value: serde_json::Value = serde_json::from_str(json).map_err(|e| format!("not JSON: {e}"))?;
    let measurements = value
        .get("Measurements")
        .and_then(serde_json::Value::as_object)
        .ok_or("no \"Measurements\" object")?;
    if let Some(algorithm) = measurements.get("HashAlgorithm") {
        let algorithm = algorithm.as_str().ok_or("HashAlgorithm is not a string")?;
        if !algorithm.to_ascii_lowercase().starts_with("sha384") {
            return Err(format!("HashAlgorithm {algorithm:?}, not SHA-384"));
        }
    }
    let mut pcrs = BTreeMap::new();
    for (key, value) in measurements {
        let Some(index) = key.strip_prefix("PCR") else { continue };
        let index = parse_index(index).ok_or_else(|| format!("{key}: not PCR0 to PCR{MAX_PCR_INDEX}"))?;
        let text = value.as_str().ok_or_else(|| format!("{key} is not a string"))?;
        pcrs.insert(index, parse_pcr(text).map_err(|e| format!("{key}: {e}"))?);
    }
    for required in [0, 1, 2] {
        if !pcrs.contains_key(&required) {
            return Err(format!("no PCR{required}"));
        }
    }
    Ok(pcrs)
}

/// A PCR index, 0 to 31, in decimal without sign or leading zeros.
pub fn parse_index(text: &str) -> Option<u8> {
    let canonical =
        !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) && (text == "0" || !text.starts_with('0'));
    let index: u8 = text.parse().ok().filter(|_| canonical)?;
    (index <= MAX_PCR_INDEX).then_some(index)
}

/// A PCR value: exactly 96 hex digits (48 bytes).
pub fn parse_pcr(text: &str) -> Result<Pcr, String> {
    let bytes = hex::decode(text).ok_or("not hex digits")?;
    Pcr::try_from(bytes.as_slice()).map_err(|_| format!("{} bytes, not {PCR_LEN} (96 hex digits)", bytes.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indexes() {
        assert_eq!(parse_index("0"), Some(0));
        assert_eq!(parse_index("31"), Some(31));
        for bad in ["", "32", "-1", "+1", "01", "1a", "256"] {
            assert_eq!(parse_index(bad), None, "{bad}");
        }
    }
}
