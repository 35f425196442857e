//! Verification of the enclave's attestation document, in the order of
//! docs/SEALED.md "What a client checks", each failure its own
//! [`VerifyError`] variant:
//!
//! 1. COSE_Sign1 (tag 18, or untagged as the real NSM sends it), protected
//!    header `{1: -35}` (ES384) only; the payload's fields with their types.
//! 2. `cabundle[0]` is the pinned root ([`TrustedRoot`]).
//! 3. The chain root -> ... -> leaf (`chain.rs`) at the check time, with leeway.
//! 4. The COSE signature, with the leaf's key.
//! 5. The nonce is the one sent (constant-time); the timestamp is fresh.
//! 6. PCR0 not all zeros unless debug is allowed; every pinned PCR equal.
//! 7. `public_key` is exactly one key configuration of the suite
//!    X25519 / HKDF-SHA256 / AES-128-GCM; `user_data` starts with
//!    [`USER_DATA_PREFIX`].
//!
//! [`verify_attestation`] does steps 1 to 6 (any Nitro document, such as a
//! real one published as test data, can pass them); [`verify`] adds step 7,
//! what this appliance's enclave puts in its documents. Nothing in the
//! document is trusted or returned before the step that vouches for it.

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, SystemTime};

use p384::ecdsa::signature::Verifier;
use p384::ecdsa::Signature;

use crate::cbor::{self, Value};
use crate::root::{self, RootKind, TrustedRoot, AWS_NITRO_ROOT_SHA256};
use crate::{chain, hex};

/// Largest document accepted, as the parent relays it (`MAX_DOCUMENT_LEN`
/// in docs/SEALED.md; a real one is about 4.5 KB).
pub const MAX_DOCUMENT_LEN: usize = 16384;
/// Most certificates in `cabundle` (AWS sends 4: root, regional, zonal, instance).
pub const MAX_CABUNDLE: usize = 8;
/// Length of a PCR: a SHA-384 digest.
pub const PCR_LEN: usize = 48;
/// Highest PCR index an NSM has (PCR0 to PCR31).
pub const MAX_PCR_INDEX: u8 = 31;
/// Default tolerance for clock skew between the client, the NSM and the CAs.
pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(60);
/// Default oldest document accepted (`--max-age`).
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(300);
/// The statement the enclave puts in `user_data`, up to the model digest.
pub const USER_DATA_PREFIX: &[u8] = b"nitro-ml-attest/1 ";
/// The only HPKE suite accepted (RFC 9458 section 8.2's mandatory one):
/// KEM X25519/HKDF-SHA256, KDF HKDF-SHA256, AEAD AES-128-GCM.
pub const KEM_X25519_HKDF_SHA256: u16 = 0x0020;
pub const KDF_HKDF_SHA256: u16 = 0x0001;
pub const AEAD_AES_128_GCM: u16 = 0x0001;
/// Length of one key configuration of that suite:
/// `key_id(1) kem(2) pk(32) sym_len(2) kdf(2) aead(2)`.
pub const KEY_CONFIG_LEN: usize = 41;

/// One PCR value.
pub type Pcr = [u8; PCR_LEN];

/// Which PCRs must have which values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PcrPolicy {
    /// Each listed PCR must equal its value. An empty list is refused by
    /// the verifier (nothing pinned proves nothing): use `NotChecked` to say so.
    Pinned(BTreeMap<u8, Pcr>),
    /// No PCR is compared (`--no-pcr-check`, development only). The all-zero
    /// PCR0 check still applies.
    NotChecked,
}

/// What the verifier accepts.
#[derive(Debug, Clone)]
pub struct Policy {
    /// The only root accepted as `cabundle[0]`.
    pub root: TrustedRoot,
    /// When the certificates must be valid and from when the document's age
    /// is counted: now, or a pinned time in tests.
    pub check_time: SystemTime,
    /// Oldest document accepted.
    pub max_age: Duration,
    /// Tolerance for clock skew (certificate validity, document in the future).
    pub leeway: Duration,
    pub pcrs: PcrPolicy,
    /// Accept an all-zero PCR0 (an enclave run with `--debug-mode`).
    pub allow_debug: bool,
}

impl Policy {
    /// A policy checking at the current time, with the default max age and
    /// leeway, debug enclaves refused.
    pub fn new(root: TrustedRoot, pcrs: PcrPolicy) -> Self {
        Self {
            root,
            check_time: SystemTime::now(),
            max_age: DEFAULT_MAX_AGE,
            leeway: DEFAULT_LEEWAY,
            pcrs,
            allow_debug: false,
        }
    }
}

/// The checked contents of a document that passed steps 1 to 6.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attested {
    /// Which kind of root the chain starts from.
    pub root: RootKind,
    /// The enclave's id, as the NSM names it (`i-...-enc...`).
    pub module_id: String,
    /// When the NSM signed the document, milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
    /// The document's age at the check time (zero if it is slightly ahead).
    pub age: Duration,
    /// Every PCR of the document.
    pub pcrs: BTreeMap<u8, Pcr>,
    /// Subjects of the chain's certificates, root first, leaf last.
    pub chain_subjects: Vec<String>,
    pub public_key: Option<Vec<u8>>,
    pub user_data: Option<Vec<u8>>,
}

/// An OHTTP key configuration (RFC 9458 section 3) of the one accepted suite.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyConfig {
    encoded: [u8; KEY_CONFIG_LEN],
}

impl KeyConfig {
    /// Parses exactly one key configuration of the accepted suite.
    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        let encoded: [u8; KEY_CONFIG_LEN] = bytes.try_into().map_err(|_| {
            format!(
                "it is {} bytes, not one {KEY_CONFIG_LEN}-byte key configuration",
                bytes.len()
            )
        })?;
        let u16_at = |i: usize| u16::from_be_bytes([encoded[i], encoded[i + 1]]);
        let (kem, sym_len, kdf, aead) = (u16_at(1), u16_at(35), u16_at(37), u16_at(39));
        if kem != KEM_X25519_HKDF_SHA256 {
            return Err(format!("KEM 0x{kem:04x}, not X25519/HKDF-SHA256 (0x0020)"));
        }
        if sym_len != 4 {
            return Err(format!(
                "{sym_len} bytes of symmetric suites, not exactly one suite (4)"
            ));
        }
        if (kdf, aead) != (KDF_HKDF_SHA256, AEAD_AES_128_GCM) {
            return Err(format!(
                "suite KDF 0x{kdf:04x} AEAD 0x{aead:04x}, not HKDF-SHA256 (0x0001) with AES-128-GCM (0x0001)"
            ));
        }
        Ok(Self { encoded })
    }

    /// The key identifier the gateway knows this key by.
    pub fn key_id(&self) -> u8 {
        self.encoded[0]
    }

    /// The enclave's X25519 public key.
    pub fn public_key(&self) -> &[u8] {
        &self.encoded[3..35]
    }

    /// The 41 bytes, as the OHTTP client takes them.
    pub fn encoded(&self) -> &[u8] {
        &self.encoded
    }
}

/// A document that passed every check: the key to seal requests to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub key_config: KeyConfig,
    /// The enclave's statement (`nitro-ml-attest/1 model-sha256=... debug=...`).
    pub user_data: Vec<u8>,
    pub attested: Attested,
}

/// Why a document was refused. Each check has its own variant; the message
/// says which check failed and, where it helps, with what values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VerifyError {
    /// Step 1: not a COSE_Sign1 with the documented payload.
    Malformed(String),
    /// Step 1 and 3: an algorithm other than ES384 / ecdsa-with-SHA384 / P-384.
    UnsupportedAlgorithm(String),
    /// Step 2: the AWS root is pinned and the document's root is another one.
    NotFromAwsNitro { got: String },
    /// Step 2: a development root is pinned and the document's root is another one.
    WrongRoot { expected: String, got: String },
    /// Step 3: a certificate that cannot be used (unparsable, bad key, bad extension).
    BadCertificate {
        position: String,
        subject: String,
        reason: String,
    },
    /// Step 3: a certificate's issuer name is not the previous certificate's subject.
    ChainName {
        subject: String,
        issuer: String,
        previous: String,
    },
    /// Step 3: a certificate's signature does not verify with its issuer's key.
    ChainSignature { subject: String, issuer: String },
    /// Step 3: an issuing certificate that is not allowed to issue.
    NotCa { subject: String, reason: String },
    /// Step 3: a certificate expired before the check time (beyond the leeway).
    CertificateExpired {
        subject: String,
        not_after: String,
        check_time: String,
    },
    /// Step 3: a certificate not yet valid at the check time (beyond the leeway).
    CertificateNotYetValid {
        subject: String,
        not_before: String,
        check_time: String,
    },
    /// Step 4: the COSE signature does not verify with the leaf's key.
    BadCoseSignature,
    /// Step 5: the document's nonce is not the one sent (or is absent).
    NonceMismatch,
    /// Step 5: the document is older than the max age.
    StaleDocument { age: Duration, max_age: Duration },
    /// Step 5: the document is from the future, beyond the leeway.
    FutureDocument { ahead: Duration, leeway: Duration },
    /// Step 6: PCR0 is all zeros (debug mode) and debug is not allowed.
    DebugEnclave,
    /// Step 6: nothing is pinned and `NotChecked` was not said.
    NoPcrsPinned,
    /// Step 6: a pinned PCR is not in the document.
    PcrMissing { index: u8 },
    /// Step 6: a pinned PCR has another value.
    PcrMismatch { index: u8, expected: String, got: String },
    /// Step 7: `public_key` is not one key configuration of the accepted suite.
    BadPublicKey(String),
    /// Step 7: `user_data` is not this appliance's statement.
    BadUserData(String),
    /// The policy itself cannot be applied (a check time before 1970).
    BadPolicy(String),
}

impl fmt::Display for VerifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use VerifyError::*;
        match self {
            Malformed(what) => write!(f, "malformed attestation document: {what}"),
            UnsupportedAlgorithm(what) => write!(f, "unsupported algorithm (ES384 only): {what}"),
            NotFromAwsNitro { got } => write!(
                f,
                "this document is not from AWS Nitro; pass --dev-root to accept a development NSM \
                 (its root certificate has SHA-256 {got}, the AWS Nitro root's is {AWS_NITRO_ROOT_SHA256})"
            ),
            WrongRoot { expected, got } => write!(
                f,
                "wrong root: the document's root certificate has SHA-256 {got}, the pinned development root's is {expected}"
            ),
            BadCertificate { position, subject, reason } if subject.is_empty() => {
                write!(f, "bad certificate {position}: {reason}")
            }
            BadCertificate { position, subject, reason } => {
                write!(f, "bad certificate {position} ({subject}): {reason}")
            }
            ChainName { subject, issuer, previous } => write!(
                f,
                "broken certificate chain: \"{subject}\" names its issuer \"{issuer}\", but the certificate before it is \"{previous}\""
            ),
            ChainSignature { subject, issuer } => write!(
                f,
                "broken certificate chain: the signature of \"{subject}\" does not verify with the key of its issuer \"{issuer}\""
            ),
            NotCa { subject, reason } => {
                write!(f, "certificate \"{subject}\" issues another but is not a CA: {reason}")
            }
            CertificateExpired { subject, not_after, check_time } => write!(
                f,
                "certificate \"{subject}\" expired at {not_after} (checked at {check_time}): the document is old, or this machine's clock is ahead"
            ),
            CertificateNotYetValid { subject, not_before, check_time } => write!(
                f,
                "certificate \"{subject}\" is not valid before {not_before} (checked at {check_time}); is this machine's clock behind?"
            ),
            BadCoseSignature => f.write_str(
                "bad COSE signature: the document is not signed by its leaf certificate's key",
            ),
            NonceMismatch => f.write_str(
                "nonce mismatch: the document does not carry the nonce sent with this request (replayed or foreign document)",
            ),
            StaleDocument { age, max_age } => write!(
                f,
                "stale document: signed {} s ago, the maximum age is {} s",
                age.as_secs(),
                max_age.as_secs()
            ),
            FutureDocument { ahead, leeway } => write!(
                f,
                "document from the future: signed {} s after the check time (leeway {} s); is this machine's clock behind?",
                ahead.as_secs(),
                leeway.as_secs()
            ),
            DebugEnclave => f.write_str(
                "PCR0 is all zeros: the enclave runs in debug mode, where the parent can read its memory; pass --allow-debug to accept it (development only)",
            ),
            NoPcrsPinned => f.write_str(
                "no PCR is pinned: pass --measurements FILE or --pcr N=HEX (or --no-pcr-check, development only)",
            ),
            PcrMissing { index } => write!(f, "PCR{index} is pinned but not in the document"),
            PcrMismatch { index, expected, got } => {
                write!(f, "PCR{index} mismatch: expected {expected}, got {got}")
            }
            BadPublicKey(what) => write!(f, "bad public_key: {what}"),
            BadUserData(what) => write!(f, "bad user_data: {what}"),
            BadPolicy(what) => write!(f, "unusable verification policy: {what}"),
        }
    }
}

impl std::error::Error for VerifyError {}

/// Verifies `document` against `nonce` (the one sent) and `policy`: every
/// check of docs/SEALED.md, and returns the key to seal requests to.
pub fn verify(document: &[u8], nonce: &[u8], policy: &Policy) -> Result<Verified, VerifyError> {
    let attested = verify_attestation(document, nonce, policy)?;
    let public_key = attested
        .public_key
        .as_deref()
        .ok_or_else(|| VerifyError::BadPublicKey("the document has none".into()))?;
    let key_config = KeyConfig::parse(public_key).map_err(VerifyError::BadPublicKey)?;
    let user_data = attested
        .user_data
        .clone()
        .ok_or_else(|| VerifyError::BadUserData("the document has none".into()))?;
    if !user_data.starts_with(USER_DATA_PREFIX) {
        return Err(VerifyError::BadUserData(format!(
            "it does not start with \"{}\"",
            String::from_utf8_lossy(USER_DATA_PREFIX)
        )));
    }
    Ok(Verified {
        key_config,
        user_data,
        attested,
    })
}

/// Steps 1 to 6: the document is an authentic, fresh NSM document for this
/// nonce, from an enclave with the pinned PCRs. Says nothing about
/// `public_key` and `user_data` (returned unchecked, but authenticated).
pub fn verify_attestation(document: &[u8], nonce: &[u8], policy: &Policy) -> Result<Attested, VerifyError> {
    let check_ms = policy
        .check_time
        .duration_since(SystemTime::UNIX_EPOCH)
        .ok()
        .and_then(|d| u64::try_from(d.as_millis()).ok())
        .ok_or_else(|| VerifyError::BadPolicy("the check time is before 1970".into()))?;
    let leeway_ms = u64::try_from(policy.leeway.as_millis()).unwrap_or(u64::MAX);

    // 1. Structure.
    if document.len() > MAX_DOCUMENT_LEN {
        return Err(malformed(format!(
            "{} bytes, more than {MAX_DOCUMENT_LEN}",
            document.len()
        )));
    }
    let cose = CoseSign1::parse(document)?;
    let payload = Payload::parse(cose.payload)?;

    // 2. The pinned root.
    let root_der = payload.cabundle[0];
    if !policy.root.matches(root_der) {
        let got = root::fingerprint(root_der);
        return Err(match policy.root.kind() {
            RootKind::AwsNitro => VerifyError::NotFromAwsNitro { got },
            RootKind::Development => VerifyError::WrongRoot {
                expected: policy.root.fingerprint(),
                got,
            },
        });
    }

    // 3. The chain.
    let chain = chain::verify(&payload.cabundle, payload.certificate, check_ms, leeway_ms)?;

    // 4. The document's signature by the leaf.
    let signature = Signature::from_slice(cose.signature).map_err(|_| VerifyError::BadCoseSignature)?;
    chain
        .leaf_key
        .verify(&cose.signed_bytes(), &signature)
        .map_err(|_| VerifyError::BadCoseSignature)?;

    // 5. Nonce and freshness.
    if !payload.nonce.is_some_and(|n| constant_time_eq(n, nonce)) {
        return Err(VerifyError::NonceMismatch);
    }
    let age = if payload.timestamp_ms > check_ms {
        let ahead = Duration::from_millis(payload.timestamp_ms - check_ms);
        if ahead > policy.leeway {
            return Err(VerifyError::FutureDocument {
                ahead,
                leeway: policy.leeway,
            });
        }
        Duration::ZERO
    } else {
        let age = Duration::from_millis(check_ms - payload.timestamp_ms);
        if age > policy.max_age {
            return Err(VerifyError::StaleDocument {
                age,
                max_age: policy.max_age,
            });
        }
        age
    };

    // 6. PCRs (PCR0 is present: Payload::parse checked).
    let debug = payload.pcrs.get(&0).is_none_or(|pcr0| pcr0.iter().all(|&b| b == 0));
    if debug && !policy.allow_debug {
        return Err(VerifyError::DebugEnclave);
    }
    match &policy.pcrs {
        PcrPolicy::NotChecked => {}
        PcrPolicy::Pinned(pinned) if pinned.is_empty() => return Err(VerifyError::NoPcrsPinned),
        PcrPolicy::Pinned(pinned) => {
            for (&index, expected) in pinned {
                let got = payload.pcrs.get(&index).ok_or(VerifyError::PcrMissing { index })?;
                if got != expected {
                    return Err(VerifyError::PcrMismatch {
                        index,
                        expected: hex::encode(expected),
                        got: hex::encode(got),
                    });
                }
            }
        }
    }

    Ok(Attested {
        root: policy.root.kind(),
        module_id: payload.module_id.to_string(),
        timestamp_ms: payload.timestamp_ms,
        age,
        pcrs: payload.pcrs,
        chain_subjects: chain.subjects,
        public_key: payload.public_key.map(<[u8]>::to_vec),
        user_data: payload.user_data.map(<[u8]>::to_vec),
    })
}

fn malformed(what: String) -> VerifyError {
    VerifyError::Malformed(what)
}

/// Compares two byte strings in time that depends on their lengths only.
/// The nonce is not secret, but a comparison that stops at the first
/// difference would tell a forger how much of a guess was right.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// A time in milliseconds since the Unix epoch, as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn format_time(ms: u64) -> String {
    der::DateTime::from_unix_duration(Duration::from_millis(ms))
        .map(|t| t.to_string())
        .unwrap_or_else(|_| format!("{ms} ms after the epoch"))
}

/// The parts of a COSE_Sign1 (RFC 9052 section 4.2), borrowed from the document.
struct CoseSign1<'a> {
    protected: &'a [u8],
    payload: &'a [u8],
    signature: &'a [u8],
}

impl<'a> CoseSign1<'a> {
    fn parse(document: &'a [u8]) -> Result<Self, VerifyError> {
        let top = cbor::decode(document).map_err(|e| malformed(format!("not CBOR: {e}")))?;
        // The contract says tag 18; the real NSM sends the array untagged
        // (RFC 9052 allows both where the type is known from context).
        let array = match top {
            Value::Tag(18, inner) => *inner,
            Value::Tag(tag, _) => return Err(malformed(format!("CBOR tag {tag}, not 18 (COSE_Sign1)"))),
            other => other,
        };
        let [protected, unprotected, payload, signature] = match array {
            Value::Array(items) => <[Value; 4]>::try_from(items)
                .map_err(|items| malformed(format!("a COSE_Sign1 has 4 elements, not {}", items.len())))?,
            other => return Err(malformed(format!("{}, not a COSE_Sign1 array", other.kind()))),
        };
        let (Value::Bytes(protected), Value::Map(_), Value::Bytes(payload), Value::Bytes(signature)) =
            (protected, unprotected, payload, signature)
        else {
            return Err(malformed(
                "a COSE_Sign1 is [protected: bstr, unprotected: map, payload: bstr, signature: bstr]".into(),
            ));
        };
        // Protected header: exactly {1 (alg): -35 (ES384)}.
        let header = cbor::decode(protected).map_err(|e| malformed(format!("protected header is not CBOR: {e}")))?;
        if header != Value::Map(vec![(Value::Unsigned(1), Value::Negative(34))]) {
            return Err(VerifyError::UnsupportedAlgorithm(format!(
                "the protected header is {header:?}, not {{1: -35}} (alg ES384 alone)"
            )));
        }
        Ok(Self {
            protected,
            payload,
            signature,
        })
    }

    /// `Sig_structure = ["Signature1", protected, external_aad = h'', payload]`,
    /// the bytes the signature covers (RFC 9052 section 4.4).
    fn signed_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.payload.len() + self.protected.len() + 32);
        cbor::encode_head(&mut out, 4, 4);
        cbor::encode_text(&mut out, "Signature1");
        cbor::encode_bytes(&mut out, self.protected);
        cbor::encode_bytes(&mut out, &[]);
        cbor::encode_bytes(&mut out, self.payload);
        out
    }
}

/// The attestation document's payload (AWS "Attestation document
/// specification"), borrowed from the document.
struct Payload<'a> {
    module_id: &'a str,
    timestamp_ms: u64,
    pcrs: BTreeMap<u8, Pcr>,
    certificate: &'a [u8],
    cabundle: Vec<&'a [u8]>,
    public_key: Option<&'a [u8]>,
    user_data: Option<&'a [u8]>,
    nonce: Option<&'a [u8]>,
}

impl<'a> Payload<'a> {
    /// Fields are looked up by name. Fields not in the specification are
    /// ignored: they are signed by the NSM like the rest, mean nothing to
    /// this client, and AWS may add some.
    fn parse(bytes: &'a [u8]) -> Result<Self, VerifyError> {
        let map = cbor::decode(bytes).map_err(|e| malformed(format!("payload is not CBOR: {e}")))?;
        if !matches!(map, Value::Map(_)) {
            return Err(malformed(format!("payload is {}, not a map", map.kind())));
        }
        let field = |name: &'static str| map.get(name).ok_or_else(|| malformed(format!("no {name}")));
        let wrong =
            |name: &str, expected: &str, got: &Value| malformed(format!("{name} is {}, not {expected}", got.kind()));
        let bytes_field = |name: &'static str| match field(name)? {
            Value::Bytes(b) => Ok(*b),
            other => Err(wrong(name, "a byte string", other)),
        };
        // public_key, user_data and nonce are optional: absent or null.
        let optional_bytes = |name: &'static str| match map.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bytes(b)) => Ok(Some(*b)),
            Some(other) => Err(wrong(name, "a byte string or null", other)),
        };

        let module_id = match field("module_id")? {
            Value::Text(t) if !t.is_empty() => *t,
            other => return Err(wrong("module_id", "a non-empty text string", other)),
        };
        match field("digest")? {
            Value::Text("SHA384") => {}
            Value::Text(other) => {
                return Err(VerifyError::UnsupportedAlgorithm(format!(
                    "digest {other:?}, not SHA384"
                )))
            }
            other => return Err(wrong("digest", "a text string", other)),
        }
        let timestamp_ms = match field("timestamp")? {
            Value::Unsigned(t) if *t > 0 => *t,
            other => return Err(wrong("timestamp", "a positive integer", other)),
        };

        let mut pcrs = BTreeMap::new();
        match field("pcrs")? {
            Value::Map(entries) if !entries.is_empty() => {
                for (index, value) in entries {
                    let index = match index {
                        Value::Unsigned(i) if *i <= u64::from(MAX_PCR_INDEX) => *i as u8,
                        _ => return Err(malformed("a pcrs index is not an integer from 0 to 31".into())),
                    };
                    let value: Pcr = match value {
                        Value::Bytes(b) => (*b)
                            .try_into()
                            .map_err(|_| malformed(format!("PCR{index} is {} bytes, not {PCR_LEN}", b.len())))?,
                        other => return Err(wrong("a PCR", "a byte string", other)),
                    };
                    pcrs.insert(index, value);
                }
            }
            other => return Err(wrong("pcrs", "a non-empty map", other)),
        }
        if !pcrs.contains_key(&0) {
            return Err(malformed("no PCR0 in pcrs".into()));
        }

        let certificate = bytes_field("certificate")?;
        let cabundle = match field("cabundle")? {
            Value::Array(items) if !items.is_empty() && items.len() <= MAX_CABUNDLE => items
                .iter()
                .map(|item| match item {
                    Value::Bytes(b) => Ok(*b),
                    other => Err(wrong("a cabundle entry", "a byte string", other)),
                })
                .collect::<Result<Vec<_>, _>>()?,
            Value::Array(items) => {
                return Err(malformed(format!(
                    "cabundle has {} certificates, not 1 to {MAX_CABUNDLE}",
                    items.len()
                )))
            }
            other => return Err(wrong("cabundle", "an array", other)),
        };

        Ok(Self {
            module_id,
            timestamp_ms,
            pcrs,
            certificate,
            cabundle,
            public_key: optional_bytes("public_key")?,
            user_data: optional_bytes("user_data")?,
            nonce: optional_bytes("nonce")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_config_is_exactly_one_config_of_the_suite() {
        let mut good = vec![7, 0x00, 0x20];
        good.extend_from_slice(&[0xab; 32]);
        good.extend_from_slice(&[0x00, 0x04, 0x00, 0x01, 0x00, 0x01]);
        let config = KeyConfig::parse(&good).unwrap();
        assert_eq!(config.key_id(), 7);
        assert_eq!(config.public_key(), &[0xab; 32]);
        assert_eq!(config.encoded(), &good[..]);

        let with = |i: usize, b: u8| {
            let mut v = good.clone();
            v[i] = b;
            v
        };
        assert!(KeyConfig::parse(&good[..40]).unwrap_err().contains("40 bytes"));
        // As a length-prefixed list (application/ohttp-keys), it is 43 bytes.
        let list = [&[0x00, 0x29][..], &good].concat();
        assert!(KeyConfig::parse(&list).unwrap_err().contains("43 bytes"));
        assert!(KeyConfig::parse(&with(2, 0x10)).unwrap_err().contains("KEM 0x0010"));
        assert!(KeyConfig::parse(&with(36, 0x08))
            .unwrap_err()
            .contains("8 bytes of symmetric suites"));
        assert!(KeyConfig::parse(&with(40, 0x03)).unwrap_err().contains("AEAD 0x0003"));
        assert!(KeyConfig::parse(&with(38, 0x02)).unwrap_err().contains("KDF 0x0002"));
    }

    #[test]
    fn constant_time_eq_compares() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert!(constant_time_eq(b"", b""));
    }

    #[test]
    fn times_are_formatted() {
        assert_eq!(format_time(1_665_651_482_136), "2022-10-13T08:58:02Z");
    }
}
