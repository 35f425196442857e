//! Documents crafted with the development NSM's toolkit (tools/dev-nsm): a
//! three-certificate chain (root, intermediate, leaf) and a document with
//! this appliance's key configuration and statement, at a fixed time.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use dev_nsm::document::DocumentSpec;
use dev_nsm::pki::{CertKind, CertSpec, Credential};
use sealed_client::root::TrustedRoot;
use sealed_client::verify::{PcrPolicy, Policy};

pub const HOUR: Duration = Duration::from_secs(3600);
/// When the documents are signed: 2025-06-15T12:00:00Z.
pub const T0_MS: u64 = 1_749_988_800_000;
pub const NONCE: [u8; 32] = [0x5a; 32];
pub const USER_DATA: &str =
    "nitro-ml-attest/1 model-sha256=21161ea3c0f5a3e1b1d2c3e4f5061728394a5b6c7d8e9f00112233445566778 debug=0";

pub fn t0() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(T0_MS)
}

/// A 41-byte key configuration: key id, X25519/HKDF-SHA256, a public key,
/// one suite HKDF-SHA256/AES-128-GCM.
pub fn key_config(key_id: u8) -> Vec<u8> {
    let mut config = vec![key_id, 0x00, 0x20];
    config.extend_from_slice(&[0x42; 32]);
    config.extend_from_slice(&[0x00, 0x04, 0x00, 0x01, 0x00, 0x01]);
    config
}

/// PCR0 to PCR15 as an NSM reports them: 0, 1, 2 measured, the rest zeros.
pub fn pcrs() -> BTreeMap<u8, [u8; 48]> {
    let mut pcrs: BTreeMap<u8, [u8; 48]> = (0..16).map(|i| (i, [0; 48])).collect();
    pcrs.insert(0, [0xa0; 48]);
    pcrs.insert(1, [0xa1; 48]);
    pcrs.insert(2, [0xa2; 48]);
    pcrs
}

pub fn pinned_pcrs() -> PcrPolicy {
    PcrPolicy::Pinned(
        [(0, [0xa0; 48]), (1, [0xa1; 48]), (2, [0xa2; 48])]
            .into_iter()
            .collect(),
    )
}

/// A development chain: root (10 days around its time), intermediate (path
/// length 0, 1 day), leaf (3 hours from 15 min before).
pub struct Chain {
    pub root: Credential,
    pub mid: Credential,
    pub leaf: Credential,
}

impl Chain {
    /// A chain valid at T0.
    pub fn new() -> Self {
        Self::at(t0())
    }

    /// A chain valid at `at`.
    pub fn at(at: SystemTime) -> Self {
        let root = Credential::self_signed(&CertSpec::ca(
            "CN=test root - NOT AWS Nitro,O=sealed-client tests",
            at - 5 * 24 * HOUR,
            10 * 24 * HOUR,
        ))
        .unwrap();
        let mid = root
            .issue(&CertSpec {
                kind: CertKind::Ca { path_len: Some(0) },
                ..CertSpec::ca("CN=test intermediate,O=sealed-client tests", at - 12 * HOUR, 24 * HOUR)
            })
            .unwrap();
        let leaf = mid
            .issue(&CertSpec::leaf(
                "CN=test leaf,O=sealed-client tests",
                at - HOUR / 4,
                3 * HOUR,
            ))
            .unwrap();
        Self { root, mid, leaf }
    }

    /// `cabundle`: root, intermediate.
    pub fn bundle(&self) -> Vec<Vec<u8>> {
        vec![self.root.cert_der().to_vec(), self.mid.cert_der().to_vec()]
    }

    /// The policy that trusts this chain's root, checking at T0 + 1 s.
    pub fn policy(&self) -> Policy {
        let root = TrustedRoot::development_from_pem(&self.root.cert_pem()).unwrap();
        let mut policy = Policy::new(root, pinned_pcrs());
        policy.check_time = t0() + Duration::from_secs(1);
        policy
    }

    /// A good document, signed by the leaf.
    pub fn document(&self) -> Vec<u8> {
        spec().sign(&self.leaf, &self.bundle())
    }
}

/// What a good document says.
pub fn spec() -> DocumentSpec {
    DocumentSpec {
        module_id: "i-0123456789abcdef0-enc0123456789abcdef".into(),
        timestamp_ms: T0_MS,
        pcrs: pcrs(),
        public_key: Some(key_config(7)),
        user_data: Some(USER_DATA.as_bytes().to_vec()),
        nonce: Some(NONCE.to_vec()),
    }
}
