//! Attestation documents, shaped as AWS Nitro's (see docs/SEALED.md, "The
//! attestation document").
//!
//! A document is a COSE_Sign1 (RFC 9052) with CBOR tag 18:
//! `18([protected, {}, payload, signature])` where `protected` is the byte
//! string holding the encoding of `{1: -35}` (alg ES384), `payload` the byte
//! string holding the encoding of the payload map, and `signature` the 96-byte
//! `r || s` of ECDSA P-384 with SHA-384 over the Sig_structure
//! `["Signature1", protected, h'', payload]`.
//!
//! The payload map has text keys in the order Nitro writes them: `module_id`
//! (text), `digest` ("SHA384"), `timestamp` (uint, ms since the epoch),
//! `pcrs` (map uint -> 48-byte bstr), `certificate` (bstr, DER of the signing
//! leaf), `cabundle` (array of bstr, DER, root first), then `public_key`,
//! `user_data` and `nonce` (each a bstr, or null when not given).

use std::collections::BTreeMap;

use p384::ecdsa::signature::Signer;
use p384::ecdsa::{Signature, SigningKey};

use crate::cbor::Value;
use crate::pki::Credential;

/// CBOR tag of a COSE_Sign1 message.
pub const COSE_SIGN1_TAG: u64 = 18;
/// The protected header, encoded: `{1: -35}` (alg: ES384).
pub const PROTECTED_ES384: [u8; 4] = [0xa1, 0x01, 0x38, 0x22];
/// Length of a PCR value (SHA-384).
pub const PCR_LEN: usize = 48;
/// Length of an ES384 signature (`r || s`, 48 bytes each).
pub const SIGNATURE_LEN: usize = 96;

/// What a document says, apart from the certificates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DocumentSpec {
    /// Issuing module's id (Nitro: `i-...-enc...`).
    pub module_id: String,
    /// Creation time, milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
    /// PCR index to value, written in index order (Nitro writes 0 to 15).
    pub pcrs: BTreeMap<u8, [u8; PCR_LEN]>,
    pub public_key: Option<Vec<u8>>,
    pub user_data: Option<Vec<u8>>,
    pub nonce: Option<Vec<u8>>,
}

impl DocumentSpec {
    /// The payload map, as a CBOR value (to encode, or to alter first for a
    /// deliberately broken document): `certificate` is the signing leaf's DER,
    /// `cabundle` the DER certificates from the root down to the leaf's issuer.
    pub fn payload(&self, certificate: &[u8], cabundle: &[Vec<u8>]) -> Value {
        let opt = |b: &Option<Vec<u8>>| b.as_ref().map_or(Value::Null, |b| Value::bytes(b));
        let entry = |k: &str, v: Value| (Value::text(k), v);
        Value::Map(vec![
            entry("module_id", Value::text(&self.module_id)),
            entry("digest", Value::text("SHA384")),
            entry("timestamp", Value::Uint(self.timestamp_ms)),
            entry("pcrs", Value::Map(self.pcrs.iter().map(|(i, v)| (Value::Uint(u64::from(*i)), Value::bytes(v))).collect())),
            entry("certificate", Value::bytes(certificate)),
            entry("cabundle", Value::Array(cabundle.iter().map(|c| Value::bytes(c)).collect())),
            entry("public_key", opt(&self.public_key)),
            entry("user_data", opt(&self.user_data)),
            entry("nonce", opt(&self.nonce)),
        ])
    }

    /// The signed document: the payload names `leaf`'s certificate and is
    /// signed with `leaf`'s key; `cabundle` is root first.
    pub fn sign(&self, leaf: &Credential, cabundle: &[Vec<u8>]) -> Vec<u8> {
        let payload = self.payload(leaf.cert_der(), cabundle).encode();
        cose_sign1(&payload, leaf.signing_key())
    }
}

/// The COSE Sig_structure for a COSE_Sign1 without external data:
/// `["Signature1", protected, h'', payload]`, encoded. This is what is signed.
pub fn sig_structure(protected: &[u8], payload: &[u8]) -> Vec<u8> {
    Value::Array(vec![Value::text("Signature1"), Value::bytes(protected), Value::bytes(&[]), Value::bytes(payload)]).encode()
}

/// ES384 signature (`r || s`) of the Sig_structure over `protected` and `payload`.
pub fn es384_signature(key: &SigningKey, protected: &[u8], payload: &[u8]) -> [u8; SIGNATURE_LEN] {
    // RFC 6979 deterministic ECDSA with SHA-384 (the curve's digest).
    let signature: Signature = key.sign(&sig_structure(protected, payload));
    let mut out = [0u8; SIGNATURE_LEN];
    out.copy_from_slice(&signature.to_bytes());
    out
}

/// A tagged COSE_Sign1 over `payload` (an encoded payload map), ES384, signed with `key`.
pub fn cose_sign1(payload: &[u8], key: &SigningKey) -> Vec<u8> {
    let signature = es384_signature(key, &PROTECTED_ES384, payload);
    cose_sign1_from_parts(&PROTECTED_ES384, payload, &signature)
}

/// `18([protected, {}, payload, signature])` from its parts as given: no
/// checks, so tests can assemble wrong headers or signatures.
pub fn cose_sign1_from_parts(protected: &[u8], payload: &[u8], signature: &[u8]) -> Vec<u8> {
    Value::Tag(
        COSE_SIGN1_TAG,
        Box::new(Value::Array(vec![Value::bytes(protected), Value::Map(vec![]), Value::bytes(payload), Value::bytes(signature)])),
    )
    .encode()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::CertSpec;
    use p384::ecdsa::signature::Verifier;
    use std::time::{Duration, SystemTime};

    fn spec() -> DocumentSpec {
        DocumentSpec {
            module_id: "dev-nsm-enc0".into(),
            timestamp_ms: 1_700_000_000_123,
            pcrs: (0..16).map(|i| (i, [i; PCR_LEN])).collect(),
            public_key: Some(vec![1, 2, 3]),
            user_data: None,
            nonce: Some(vec![9; 20]),
        }
    }

    #[test]
    fn document_layout_and_signature() {
        let now = SystemTime::now();
        let root = Credential::self_signed(&CertSpec::ca("CN=r", now, Duration::from_secs(3600))).unwrap();
        let leaf = root.issue(&CertSpec::leaf("CN=l", now, Duration::from_secs(600))).unwrap();
        let doc = spec().sign(&leaf, &[root.cert_der().to_vec()]);

        // 18([...4 items]) then the protected header bstr h'a1013822'.
        assert_eq!(&doc[..7], &[0xd2, 0x84, 0x44, 0xa1, 0x01, 0x38, 0x22]);
        assert_eq!(doc[7], 0xa0); // unprotected: {}
        let v: ciborium::Value = ciborium::from_reader(&doc[..]).unwrap();
        let ciborium::Value::Tag(18, inner) = v else { panic!("not tag 18") };
        let items = inner.as_array().unwrap();
        let payload = items[2].as_bytes().unwrap();
        let signature = items[3].as_bytes().unwrap();
        assert_eq!(signature.len(), SIGNATURE_LEN);
        assert_eq!(payload, &spec().payload(leaf.cert_der(), &[root.cert_der().to_vec()]).encode());

        let keys: Vec<String> = ciborium::from_reader::<ciborium::Value, _>(&payload[..])
            .unwrap()
            .as_map()
            .unwrap()
            .iter()
            .map(|(k, _)| k.as_text().unwrap().to_owned())
            .collect();
        assert_eq!(keys, ["module_id", "digest", "timestamp", "pcrs", "certificate", "cabundle", "public_key", "user_data", "nonce"]);

        let sig = Signature::from_slice(signature).unwrap();
        let vk = leaf.signing_key().verifying_key();
        assert!(vk.verify(&sig_structure(&PROTECTED_ES384, payload), &sig).is_ok());
        let mut tampered = payload.to_vec();
        tampered[10] ^= 1;
        assert!(vk.verify(&sig_structure(&PROTECTED_ES384, &tampered), &sig).is_err());
    }

    #[test]
    fn sig_structure_bytes() {
        // 84 6a "Signature1" 44 a1013822 40 43 010203
        let s = sig_structure(&PROTECTED_ES384, &[1, 2, 3]);
        let mut want = vec![0x84, 0x6a];
        want.extend_from_slice(b"Signature1");
        want.extend_from_slice(&[0x44, 0xa1, 0x01, 0x38, 0x22, 0x40, 0x43, 1, 2, 3]);
        assert_eq!(s, want);
    }
}
