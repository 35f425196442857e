//! Every refusal of docs/SEALED.md "What a client checks", each on a
//! document crafted with the development NSM's toolkit that breaks exactly
//! one thing, and each asserting its own error variant and message.

mod common;

use std::time::Duration;

use common::dev::*;
use dev_nsm::document::{cose_sign1, cose_sign1_from_parts, es384_signature, DocumentSpec, PROTECTED_ES384};
use dev_nsm::pki::{CertKind, CertSpec, Credential};
use sealed_client::root::{RootKind, TrustedRoot};
use sealed_client::verify::{verify, PcrPolicy, Policy, VerifyError};

fn refuse(document: &[u8], policy: &Policy) -> VerifyError {
    let err = verify(document, &NONCE, policy).unwrap_err();
    assert!(!err.to_string().is_empty());
    err
}

/// The document `spec` signed by `leaf` with `bundle`.
fn signed(spec: &DocumentSpec, leaf: &Credential, bundle: &[Vec<u8>]) -> Vec<u8> {
    spec.sign(leaf, bundle)
}

#[test]
fn a_good_document_verifies() {
    let chain = Chain::new();
    let verified = verify(&chain.document(), &NONCE, &chain.policy()).unwrap();
    assert_eq!(verified.key_config.key_id(), 7);
    assert_eq!(verified.key_config.public_key(), &[0x42; 32]);
    assert_eq!(verified.key_config.encoded(), &key_config(7)[..]);
    assert_eq!(verified.user_data, USER_DATA.as_bytes());
    let a = &verified.attested;
    assert_eq!(a.root, RootKind::Development);
    assert_eq!(a.module_id, "i-0123456789abcdef0-enc0123456789abcdef");
    assert_eq!(a.timestamp_ms, T0_MS);
    assert_eq!(a.age, Duration::from_secs(1));
    assert_eq!(a.pcrs, pcrs());
    assert_eq!(
        a.chain_subjects,
        [
            "CN=test root - NOT AWS Nitro,O=sealed-client tests",
            "CN=test intermediate,O=sealed-client tests",
            "CN=test leaf,O=sealed-client tests"
        ]
    );
    // dev-nsm writes tag 18; untagged is the same document.
    let document = chain.document();
    assert_eq!(document[0], 0xd2);
    verify(&document[1..], &NONCE, &chain.policy()).unwrap();
}

#[test]
fn a_development_document_without_dev_root_is_not_from_aws() {
    let chain = Chain::new();
    let mut policy = chain.policy();
    policy.root = TrustedRoot::aws_nitro().unwrap();
    let err = refuse(&chain.document(), &policy);
    assert_eq!(
        err,
        VerifyError::NotFromAwsNitro {
            got: sealed_client::root::fingerprint(chain.root.cert_der())
        }
    );
    assert!(err
        .to_string()
        .starts_with("this document is not from AWS Nitro; pass --dev-root to accept a development NSM"));
}

#[test]
fn another_development_root_is_the_wrong_root() {
    let chain = Chain::new();
    let other = Chain::new();
    match refuse(&chain.document(), &other.policy()) {
        VerifyError::WrongRoot { expected, got } => {
            assert_eq!(expected, sealed_client::root::fingerprint(other.root.cert_der()));
            assert_eq!(got, sealed_client::root::fingerprint(chain.root.cert_der()));
        }
        other => panic!("{other}"),
    }
    // The other chain's intermediate under our root: the names chain, the signature does not.
    let mut bundle = chain.bundle();
    bundle[1] = other.mid.cert_der().to_vec();
    let leaf = other.leaf.clone();
    match refuse(&signed(&spec(), &leaf, &bundle), &chain.policy()) {
        VerifyError::ChainSignature { subject, issuer } => {
            assert_eq!(subject, "CN=test intermediate,O=sealed-client tests");
            assert_eq!(issuer, "CN=test root - NOT AWS Nitro,O=sealed-client tests");
        }
        other => panic!("{other}"),
    }
}

#[test]
fn a_link_with_a_bad_signature_is_a_broken_chain() {
    let chain = Chain::new();
    // A rogue intermediate with the real one's name but its own key signs the leaf.
    let rogue = Credential::self_signed(&CertSpec {
        kind: CertKind::Ca { path_len: Some(0) },
        ..CertSpec::ca("CN=test intermediate,O=sealed-client tests", t0() - HOUR, 2 * HOUR)
    })
    .unwrap();
    let leaf = rogue
        .issue(&CertSpec::leaf(
            "CN=test leaf,O=sealed-client tests",
            t0() - HOUR,
            2 * HOUR,
        ))
        .unwrap();
    let err = refuse(&signed(&spec(), &leaf, &chain.bundle()), &chain.policy());
    assert_eq!(
        err,
        VerifyError::ChainSignature {
            subject: "CN=test leaf,O=sealed-client tests".into(),
            issuer: "CN=test intermediate,O=sealed-client tests".into()
        }
    );
    assert_eq!(
        err.to_string(),
        "broken certificate chain: the signature of \"CN=test leaf,O=sealed-client tests\" does not verify \
         with the key of its issuer \"CN=test intermediate,O=sealed-client tests\""
    );
}

#[test]
fn a_leaf_from_another_issuer_is_a_broken_chain() {
    let chain = Chain::new();
    let stranger = chain
        .root
        .issue(&CertSpec::ca("CN=stranger", t0() - HOUR, 2 * HOUR))
        .unwrap();
    let leaf = stranger
        .issue(&CertSpec::leaf("CN=test leaf", t0() - HOUR, 2 * HOUR))
        .unwrap();
    match refuse(&signed(&spec(), &leaf, &chain.bundle()), &chain.policy()) {
        VerifyError::ChainName {
            subject,
            issuer,
            previous,
        } => {
            assert_eq!((subject.as_str(), issuer.as_str()), ("CN=test leaf", "CN=stranger"));
            assert_eq!(previous, "CN=test intermediate,O=sealed-client tests");
        }
        other => panic!("{other}"),
    }
}

#[test]
fn issuers_must_be_cas() {
    let chain = Chain::new();
    // A leaf (cA false) that signs another leaf.
    let not_ca = chain
        .root
        .issue(&CertSpec::leaf("CN=not a CA", t0() - HOUR, 2 * HOUR))
        .unwrap();
    let leaf = not_ca
        .issue(&CertSpec::leaf("CN=test leaf", t0() - HOUR, 2 * HOUR))
        .unwrap();
    let bundle = vec![chain.root.cert_der().to_vec(), not_ca.cert_der().to_vec()];
    let err = refuse(&signed(&spec(), &leaf, &bundle), &chain.policy());
    assert_eq!(
        err,
        VerifyError::NotCa {
            subject: "CN=not a CA".into(),
            reason: "its basicConstraints say cA false".into()
        }
    );
    assert_eq!(
        err.to_string(),
        "certificate \"CN=not a CA\" issues another but is not a CA: its basicConstraints say cA false"
    );

    // The intermediate allows no CA below it (path length 0): a second one is refused.
    let second = chain
        .mid
        .issue(&CertSpec {
            kind: CertKind::Ca { path_len: None },
            ..CertSpec::ca("CN=second", t0() - HOUR, 2 * HOUR)
        })
        .unwrap();
    let leaf = second
        .issue(&CertSpec::leaf("CN=test leaf", t0() - HOUR, 2 * HOUR))
        .unwrap();
    let bundle = [chain.bundle(), vec![second.cert_der().to_vec()]].concat();
    assert_eq!(
        refuse(&signed(&spec(), &leaf, &bundle), &chain.policy()),
        VerifyError::NotCa {
            subject: "CN=test intermediate,O=sealed-client tests".into(),
            reason: "its pathLenConstraint is exceeded".into()
        }
    );

    // A leaf that signs the document must be allowed digitalSignature: a CA key
    // (keyCertSign, cRLSign) signing a document is refused.
    let ca_leaf = chain
        .mid
        .issue(&CertSpec {
            kind: CertKind::Ca { path_len: Some(0) },
            ..CertSpec::ca("CN=ca leaf", t0() - HOUR, 2 * HOUR)
        })
        .unwrap();
    match refuse(&signed(&spec(), &ca_leaf, &chain.bundle()), &chain.policy()) {
        VerifyError::BadCertificate {
            position,
            subject,
            reason,
        } => {
            assert_eq!((position.as_str(), subject.as_str()), ("certificate", "CN=ca leaf"));
            assert_eq!(reason, "its keyUsage does not allow digitalSignature");
        }
        other => panic!("{other}"),
    }
}

#[test]
fn certificates_must_be_valid_at_the_check_time() {
    let chain = Chain::new();
    // The leaf expired an hour before T0.
    let old = chain
        .mid
        .issue(&CertSpec::leaf("CN=old leaf", t0() - 4 * HOUR, 3 * HOUR))
        .unwrap();
    match refuse(&signed(&spec(), &old, &chain.bundle()), &chain.policy()) {
        VerifyError::CertificateExpired {
            subject,
            not_after,
            check_time,
        } => {
            assert_eq!(subject, "CN=old leaf");
            assert_eq!(not_after, "2025-06-15T11:00:00Z");
            assert_eq!(check_time, "2025-06-15T12:00:01Z");
        }
        other => panic!("{other}"),
    }
    // An intermediate valid only from an hour after T0.
    let early = chain
        .root
        .issue(&CertSpec {
            kind: CertKind::Ca { path_len: Some(0) },
            ..CertSpec::ca("CN=early", t0() + HOUR, HOUR)
        })
        .unwrap();
    let leaf = early
        .issue(&CertSpec::leaf("CN=test leaf", t0() - HOUR, 3 * HOUR))
        .unwrap();
    let bundle = vec![chain.root.cert_der().to_vec(), early.cert_der().to_vec()];
    let err = refuse(&signed(&spec(), &leaf, &bundle), &chain.policy());
    assert_eq!(
        err,
        VerifyError::CertificateNotYetValid {
            subject: "CN=early".into(),
            not_before: "2025-06-15T13:00:00Z".into(),
            check_time: "2025-06-15T12:00:01Z".into()
        }
    );
    assert!(err.to_string().contains("is this machine's clock behind?"), "{err}");
    // The root too is checked.
    let mut policy = chain.policy();
    policy.check_time = t0() + 6 * 24 * HOUR;
    policy.max_age = Duration::from_secs(7 * 24 * 3600);
    match refuse(&chain.document(), &policy) {
        VerifyError::CertificateExpired { subject, .. } => {
            assert_eq!(subject, "CN=test root - NOT AWS Nitro,O=sealed-client tests")
        }
        other => panic!("{other}"),
    }
}

#[test]
fn the_document_must_be_signed_by_the_leaf() {
    let chain = Chain::new();
    let payload = spec().payload(chain.leaf.cert_der(), &chain.bundle()).encode();
    // Signed by the intermediate's key instead.
    let err = refuse(&cose_sign1(&payload, chain.mid.signing_key()), &chain.policy());
    assert_eq!(err, VerifyError::BadCoseSignature);
    // The leaf's signature of another payload (another nonce), sent with this one.
    let other = DocumentSpec {
        nonce: Some(vec![1; 32]),
        ..spec()
    };
    let other_payload = other.payload(chain.leaf.cert_der(), &chain.bundle()).encode();
    let signature = es384_signature(chain.leaf.signing_key(), &PROTECTED_ES384, &other_payload);
    let document = cose_sign1_from_parts(&PROTECTED_ES384, &payload, &signature);
    assert_eq!(refuse(&document, &chain.policy()), VerifyError::BadCoseSignature);
    // A signature that is not 96 bytes.
    let document = cose_sign1_from_parts(&PROTECTED_ES384, &payload, &signature[..95]);
    assert_eq!(refuse(&document, &chain.policy()), VerifyError::BadCoseSignature);
}

#[test]
fn es384_only() {
    let chain = Chain::new();
    let payload = spec().payload(chain.leaf.cert_der(), &chain.bundle()).encode();
    // {1: -7} (ES256), signed correctly over that header.
    let es256 = [0xa1, 0x01, 0x26];
    let signature = es384_signature(chain.leaf.signing_key(), &es256, &payload);
    match refuse(&cose_sign1_from_parts(&es256, &payload, &signature), &chain.policy()) {
        VerifyError::UnsupportedAlgorithm(what) => assert!(what.contains("not {1: -35}"), "{what}"),
        other => panic!("{other}"),
    }
    // No algorithm at all.
    let signature = es384_signature(chain.leaf.signing_key(), &[0xa0], &payload);
    assert!(matches!(
        refuse(&cose_sign1_from_parts(&[0xa0], &payload, &signature), &chain.policy()),
        VerifyError::UnsupportedAlgorithm(_)
    ));
}

#[test]
fn the_nonce_must_be_the_one_sent() {
    let chain = Chain::new();
    let document = chain.document();
    let policy = chain.policy();
    let mut other = NONCE;
    other[31] ^= 0x80;
    assert_eq!(
        verify(&document, &other, &policy).unwrap_err(),
        VerifyError::NonceMismatch
    );
    assert_eq!(
        verify(&document, &NONCE[..31], &policy).unwrap_err(),
        VerifyError::NonceMismatch
    );
    let no_nonce = DocumentSpec { nonce: None, ..spec() };
    let err = refuse(&signed(&no_nonce, &chain.leaf, &chain.bundle()), &policy);
    assert_eq!(err, VerifyError::NonceMismatch);
    assert!(err.to_string().starts_with("nonce mismatch"), "{err}");
}

#[test]
fn the_document_must_be_fresh() {
    let chain = Chain::new();
    let mut policy = chain.policy();
    policy.check_time = t0() + Duration::from_secs(301);
    assert_eq!(
        refuse(&chain.document(), &policy),
        VerifyError::StaleDocument {
            age: Duration::from_secs(301),
            max_age: Duration::from_secs(300)
        }
    );
    policy.max_age = Duration::from_secs(600);
    verify(&chain.document(), &NONCE, &policy).unwrap();

    let future = DocumentSpec {
        timestamp_ms: T0_MS + 61_001,
        ..spec()
    };
    let err = refuse(&signed(&future, &chain.leaf, &chain.bundle()), &chain.policy());
    assert_eq!(
        err,
        VerifyError::FutureDocument {
            ahead: Duration::from_millis(60_001),
            leeway: Duration::from_secs(60)
        }
    );
    assert!(err.to_string().starts_with("document from the future"), "{err}");
    let near_future = DocumentSpec {
        timestamp_ms: T0_MS + 61_000,
        ..spec()
    };
    verify(
        &signed(&near_future, &chain.leaf, &chain.bundle()),
        &NONCE,
        &chain.policy(),
    )
    .unwrap();
}

#[test]
fn pinned_pcrs_must_match() {
    let chain = Chain::new();
    let mut policy = chain.policy();
    policy.pcrs = PcrPolicy::Pinned([(0, [0xa0; 48]), (2, [0xb2; 48])].into_iter().collect());
    let err = refuse(&chain.document(), &policy);
    assert_eq!(
        err,
        VerifyError::PcrMismatch {
            index: 2,
            expected: "b2".repeat(48),
            got: "a2".repeat(48)
        }
    );
    assert_eq!(
        err.to_string(),
        format!("PCR2 mismatch: expected {}, got {}", "b2".repeat(48), "a2".repeat(48))
    );

    // PCR8 pinned (a signed EIF), the document has none.
    let few = DocumentSpec {
        pcrs: pcrs().into_iter().filter(|(i, _)| *i < 8).collect(),
        ..spec()
    };
    policy.pcrs = PcrPolicy::Pinned([(0, [0xa0; 48]), (8, [0; 48])].into_iter().collect());
    let err = refuse(&signed(&few, &chain.leaf, &chain.bundle()), &policy);
    assert_eq!(err, VerifyError::PcrMissing { index: 8 });
    assert_eq!(err.to_string(), "PCR8 is pinned but not in the document");

    policy.pcrs = PcrPolicy::Pinned(Default::default());
    assert_eq!(refuse(&chain.document(), &policy), VerifyError::NoPcrsPinned);
    policy.pcrs = PcrPolicy::NotChecked;
    verify(&chain.document(), &NONCE, &policy).unwrap();
}

#[test]
fn an_all_zero_pcr0_needs_allow_debug() {
    let chain = Chain::new();
    let mut zero = pcrs();
    zero.insert(0, [0; 48]);
    let debug = DocumentSpec { pcrs: zero, ..spec() };
    let document = signed(&debug, &chain.leaf, &chain.bundle());
    let mut policy = chain.policy();
    policy.pcrs = PcrPolicy::NotChecked;
    let err = refuse(&document, &policy);
    assert_eq!(err, VerifyError::DebugEnclave);
    assert!(err.to_string().contains("pass --allow-debug"), "{err}");
    policy.allow_debug = true;
    verify(&document, &NONCE, &policy).unwrap();
    // Allowed, but the pinned (production) PCR0 still differs.
    policy.pcrs = pinned_pcrs();
    assert!(matches!(
        refuse(&document, &policy),
        VerifyError::PcrMismatch { index: 0, .. }
    ));
}

#[test]
fn public_key_must_be_one_key_configuration_of_the_suite() {
    let chain = Chain::new();
    let bad_key = |public_key: Option<Vec<u8>>| {
        let spec = DocumentSpec { public_key, ..spec() };
        match refuse(&signed(&spec, &chain.leaf, &chain.bundle()), &chain.policy()) {
            VerifyError::BadPublicKey(what) => what,
            other => panic!("{other}"),
        }
    };
    assert_eq!(bad_key(None), "the document has none");
    // As a length-prefixed list (application/ohttp-keys).
    let list = [&[0x00, 0x29][..], &key_config(7)].concat();
    assert_eq!(bad_key(Some(list)), "it is 43 bytes, not one 41-byte key configuration");
    // Two suites.
    let mut two = key_config(7);
    two.splice(35..37, [0x00, 0x08]);
    two.extend_from_slice(&[0x00, 0x01, 0x00, 0x03]);
    assert_eq!(bad_key(Some(two)), "it is 45 bytes, not one 41-byte key configuration");
    // P-256 KEM (0x0010), ChaCha20-Poly1305 (0x0003).
    let mut p256 = key_config(7);
    p256[2] = 0x10;
    assert_eq!(bad_key(Some(p256)), "KEM 0x0010, not X25519/HKDF-SHA256 (0x0020)");
    let mut chacha = key_config(7);
    chacha[40] = 0x03;
    assert_eq!(
        bad_key(Some(chacha)),
        "suite KDF 0x0001 AEAD 0x0003, not HKDF-SHA256 (0x0001) with AES-128-GCM (0x0001)"
    );
    // A DER public key (what other Nitro applications put there).
    assert_eq!(
        bad_key(Some(vec![0x30; 91])),
        "it is 91 bytes, not one 41-byte key configuration"
    );
}

#[test]
fn user_data_must_be_this_appliances_statement() {
    let chain = Chain::new();
    let bad = |user_data: Option<&[u8]>| {
        let spec = DocumentSpec {
            user_data: user_data.map(<[u8]>::to_vec),
            ..spec()
        };
        let err = refuse(&signed(&spec, &chain.leaf, &chain.bundle()), &chain.policy());
        match &err {
            VerifyError::BadUserData(_) => err.to_string(),
            other => panic!("{other}"),
        }
    };
    assert_eq!(bad(None), "bad user_data: the document has none");
    assert_eq!(
        bad(Some(b"nitro-ml-attest/2 model-sha256=00 debug=0")),
        "bad user_data: it does not start with \"nitro-ml-attest/1 \""
    );
    assert_eq!(
        bad(Some(b"nitro-ml-attest/1")),
        "bad user_data: it does not start with \"nitro-ml-attest/1 \""
    );
    assert_eq!(
        bad(Some(b"")),
        "bad user_data: it does not start with \"nitro-ml-attest/1 \""
    );
}
