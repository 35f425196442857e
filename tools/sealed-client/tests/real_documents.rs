//! The verifier against two real AWS Nitro attestation documents (see
//! tests/data/README.md for where they come from): they verify against the
//! embedded AWS root at their own timestamp, and every check refuses them
//! when the document, the time or the policy is changed.

mod common;

use std::time::Duration;

use common::*;
use sealed_client::cbor::Value;
use sealed_client::root::{TrustedRoot, AWS_NITRO_ROOT_SHA256};
use sealed_client::verify::{verify, verify_attestation, PcrPolicy, VerifyError};

fn real_nonce() -> Vec<u8> {
    field_bytes(REAL_DOC, "nonce")
}

fn real_policy(ms: u64) -> sealed_client::verify::Policy {
    aws_policy(ms, pinned(&REAL_PCRS))
}

fn refusal(document: &[u8], nonce: &[u8], policy: &sealed_client::verify::Policy) -> VerifyError {
    let err = verify_attestation(document, nonce, policy).unwrap_err();
    // Every refusal has a message saying what failed.
    assert!(!err.to_string().is_empty());
    err
}

#[test]
fn the_real_document_verifies_at_its_own_timestamp() {
    let attested = verify_attestation(REAL_DOC, &real_nonce(), &real_policy(REAL_TIMESTAMP_MS)).unwrap();
    assert_eq!(attested.module_id, "i-020b6af9246d90e92-enc0183d09086c24190");
    assert_eq!(attested.timestamp_ms, REAL_TIMESTAMP_MS);
    assert_eq!(attested.age, Duration::ZERO);
    assert_eq!(attested.pcrs.len(), 16);
    for (index, hex) in REAL_PCRS {
        assert_eq!(attested.pcrs[&index], pcr(hex), "PCR{index}");
    }
    assert_eq!(attested.chain_subjects.len(), 5);
    assert_eq!(attested.chain_subjects[0], "CN=aws.nitro-enclaves,OU=AWS,O=Amazon,C=US");
    assert!(attested.chain_subjects[4].contains("CN=i-020b6af9246d90e92-enc0183d09086c24190.us-east-1.aws"));
    assert_eq!((attested.public_key, attested.user_data), (None, None));

    // Within the default max age (300 s) later, still fine.
    let later = REAL_TIMESTAMP_MS + 299_000;
    let attested = verify_attestation(REAL_DOC, &real_nonce(), &real_policy(later)).unwrap();
    assert_eq!(attested.age, Duration::from_secs(299));
}

#[test]
fn the_real_document_is_refused_by_the_appliance_checks() {
    // It passes steps 1 to 6 but carries no key: not from this appliance.
    let err = verify(REAL_DOC, &real_nonce(), &real_policy(REAL_TIMESTAMP_MS)).unwrap_err();
    assert_eq!(err, VerifyError::BadPublicKey("the document has none".into()));
    assert_eq!(err.to_string(), "bad public_key: the document has none");
}

#[test]
fn the_real_document_is_refused_now_as_expired() {
    let now = aws_policy(0, pinned(&REAL_PCRS));
    let mut policy = now.clone();
    policy.check_time = std::time::SystemTime::now();
    match refusal(REAL_DOC, &real_nonce(), &policy) {
        VerifyError::CertificateExpired { subject, not_after, .. } => {
            // The first certificate below the root: the regional CA, 20 days.
            assert_eq!(
                subject,
                "CN=2f442bd2442676f0.us-east-1.aws.nitro-enclaves,OU=AWS,O=Amazon,C=US"
            );
            assert_eq!(not_after, "2022-10-28T13:32:56Z");
        }
        other => panic!("{other}"),
    }
}

#[test]
fn certificate_validity_has_60_seconds_of_leeway() {
    // The leaf: not before 2022-10-13T08:57:59Z, not after 2022-10-13T11:58:02Z.
    let not_before_ms = 1_665_651_479_000;
    let not_after_ms = 1_665_662_282_000;
    let nonce = real_nonce();
    let mut policy = real_policy(not_after_ms + 60_000);
    policy.max_age = Duration::from_secs(86400);
    verify_attestation(REAL_DOC, &nonce, &policy).unwrap();
    policy.check_time = at_ms(not_after_ms + 61_000);
    match refusal(REAL_DOC, &nonce, &policy) {
        VerifyError::CertificateExpired {
            subject,
            not_after,
            check_time,
        } => {
            assert!(
                subject.contains("CN=i-020b6af9246d90e92-enc0183d09086c24190"),
                "{subject}"
            );
            assert_eq!(
                (not_after.as_str(), check_time.as_str()),
                ("2022-10-13T11:58:02Z", "2022-10-13T11:59:03Z")
            );
        }
        other => panic!("{other}"),
    }

    policy.check_time = at_ms(not_before_ms - 61_000);
    match refusal(REAL_DOC, &nonce, &policy) {
        VerifyError::CertificateNotYetValid {
            subject, not_before, ..
        } => {
            assert!(
                subject.contains("CN=i-020b6af9246d90e92-enc0183d09086c24190"),
                "{subject}"
            );
            assert_eq!(not_before, "2022-10-13T08:57:59Z");
        }
        other => panic!("{other}"),
    }
    let err = refusal(REAL_DOC, &nonce, &policy).to_string();
    assert!(
        err.contains("is not valid before 2022-10-13T08:57:59Z (checked at 2022-10-13T08:56:58Z)"),
        "{err}"
    );
}

#[test]
fn a_wrong_nonce_is_refused() {
    let mut nonce = real_nonce();
    nonce[255] ^= 1;
    let policy = real_policy(REAL_TIMESTAMP_MS);
    assert_eq!(refusal(REAL_DOC, &nonce, &policy), VerifyError::NonceMismatch);
    assert_eq!(refusal(REAL_DOC, &nonce[..32], &policy), VerifyError::NonceMismatch);
    assert_eq!(refusal(REAL_DOC, &[], &policy), VerifyError::NonceMismatch);
}

#[test]
fn a_stale_or_future_document_is_refused() {
    let nonce = real_nonce();
    match refusal(REAL_DOC, &nonce, &real_policy(REAL_TIMESTAMP_MS + 301_000)) {
        VerifyError::StaleDocument { age, max_age } => {
            assert_eq!((age, max_age), (Duration::from_secs(301), Duration::from_secs(300)))
        }
        other => panic!("{other}"),
    }
    let mut policy = real_policy(REAL_TIMESTAMP_MS + 61_000);
    policy.max_age = Duration::from_secs(60);
    let err = refusal(REAL_DOC, &nonce, &policy);
    assert_eq!(
        err.to_string(),
        "stale document: signed 61 s ago, the maximum age is 60 s"
    );

    // In the future by up to the leeway is fine, beyond it is not.
    verify_attestation(REAL_DOC, &nonce, &real_policy(REAL_TIMESTAMP_MS - 60_000)).unwrap();
    match refusal(REAL_DOC, &nonce, &real_policy(REAL_TIMESTAMP_MS - 61_000)) {
        VerifyError::FutureDocument { ahead, leeway } => {
            assert_eq!((ahead, leeway), (Duration::from_secs(61), Duration::from_secs(60)))
        }
        other => panic!("{other}"),
    }
}

#[test]
fn pcr_checks() {
    let nonce = real_nonce();
    let zeros = "00".repeat(48);
    let mut list = REAL_PCRS.to_vec();
    list[1].1 = &zeros;
    match refusal(REAL_DOC, &nonce, &aws_policy(REAL_TIMESTAMP_MS, pinned(&list))) {
        VerifyError::PcrMismatch { index, expected, got } => {
            assert_eq!(
                (index, expected.as_str(), got.as_str()),
                (1, zeros.as_str(), REAL_PCRS[1].1)
            );
        }
        other => panic!("{other}"),
    }
    let err = refusal(REAL_DOC, &nonce, &aws_policy(REAL_TIMESTAMP_MS, pinned(&list)));
    assert_eq!(
        err.to_string(),
        format!("PCR1 mismatch: expected {zeros}, got {}", REAL_PCRS[1].1)
    );

    // PCR 20 is not in the document (it has 0 to 15).
    let policy = aws_policy(REAL_TIMESTAMP_MS, pinned(&[(0, REAL_PCRS[0].1), (20, &zeros)]));
    assert_eq!(
        refusal(REAL_DOC, &nonce, &policy),
        VerifyError::PcrMissing { index: 20 }
    );

    // Nothing pinned is refused; "not checked" must be said.
    let policy = aws_policy(REAL_TIMESTAMP_MS, PcrPolicy::Pinned(Default::default()));
    assert_eq!(refusal(REAL_DOC, &nonce, &policy), VerifyError::NoPcrsPinned);
    verify_attestation(REAL_DOC, &nonce, &aws_policy(REAL_TIMESTAMP_MS, PcrPolicy::NotChecked)).unwrap();

    // Only PCR0 pinned is enough.
    verify_attestation(
        REAL_DOC,
        &nonce,
        &aws_policy(REAL_TIMESTAMP_MS, pinned(&REAL_PCRS[..1])),
    )
    .unwrap();
}

#[test]
fn a_real_debug_mode_document_needs_allow_debug() {
    let nonce = field_bytes(DEBUG_DOC, "nonce");
    let policy = aws_policy(DEBUG_TIMESTAMP_MS, PcrPolicy::NotChecked);
    let err = refusal(DEBUG_DOC, &nonce, &policy);
    assert_eq!(err, VerifyError::DebugEnclave);
    assert!(err.to_string().starts_with("PCR0 is all zeros"), "{err}");

    let mut policy = aws_policy(DEBUG_TIMESTAMP_MS, pinned(&[(0, &"00".repeat(48))]));
    assert_eq!(refusal(DEBUG_DOC, &nonce, &policy), VerifyError::DebugEnclave);
    policy.allow_debug = true;
    let attested = verify_attestation(DEBUG_DOC, &nonce, &policy).unwrap();
    assert_eq!(attested.module_id, "i-0918f6c55e3b61d89-enc018aa8b8e2285d13");
    // Its user_data is a P-256 key, not this appliance's statement... but
    // first it has no public_key.
    assert_eq!(
        verify(DEBUG_DOC, &nonce, &policy).unwrap_err(),
        VerifyError::BadPublicKey("the document has none".into())
    );
    // Debug allowed does not mean any PCR0: pinning the real one still refuses.
    let mut policy = aws_policy(DEBUG_TIMESTAMP_MS, pinned(&REAL_PCRS[..1]));
    policy.allow_debug = true;
    assert!(matches!(
        refusal(DEBUG_DOC, &nonce, &policy),
        VerifyError::PcrMismatch { index: 0, .. }
    ));
}

#[test]
fn a_changed_payload_breaks_the_cose_signature() {
    let nonce = real_nonce();
    let policy = real_policy(REAL_TIMESTAMP_MS);
    // One character of the module id, in place.
    let at = REAL_DOC.windows(19).position(|w| w == b"i-020b6af9246d90e92").unwrap();
    let mut document = REAL_DOC.to_vec();
    document[at + 5] = b'c';
    let err = refusal(&document, &nonce, &policy);
    assert_eq!(err, VerifyError::BadCoseSignature);
    assert_eq!(
        err.to_string(),
        "bad COSE signature: the document is not signed by its leaf certificate's key"
    );
    // A changed signature.
    let mut cose = split(REAL_DOC);
    cose.signature[10] ^= 0x40;
    assert_eq!(refusal(&join(&cose), &nonce, &policy), VerifyError::BadCoseSignature);
    // A signature of another length.
    cose.signature.pop();
    assert_eq!(refusal(&join(&cose), &nonce, &policy), VerifyError::BadCoseSignature);
    // The same document re-encoded part by part is still the same document.
    verify_attestation(&join(&split(REAL_DOC)), &nonce, &policy).unwrap();
}

#[test]
fn a_changed_certificate_breaks_the_chain() {
    let nonce = real_nonce();
    let policy = real_policy(REAL_TIMESTAMP_MS);
    let bundle = cabundle(REAL_DOC);
    // The last byte of the zonal CA's signature, in place.
    let zonal = &bundle[2];
    let at = REAL_DOC.windows(zonal.len()).position(|w| w == &zonal[..]).unwrap();
    let mut document = REAL_DOC.to_vec();
    document[at + zonal.len() - 1] ^= 1;
    match refusal(&document, &nonce, &policy) {
        VerifyError::ChainSignature { subject, issuer } => {
            assert!(
                subject.ends_with("CN=aa7d944093e8ba36.zonal.us-east-1.aws.nitro-enclaves"),
                "{subject}"
            );
            assert!(issuer.starts_with("CN=2f442bd2442676f0.us-east-1"), "{issuer}");
        }
        other => panic!("{other}"),
    }
    // A changed byte inside the signed part (the zonal CA's name).
    let mut document = REAL_DOC.to_vec();
    let name_at = at + zonal.windows(16).position(|w| w == b"aa7d944093e8ba36").unwrap();
    document[name_at] = b'b';
    // The instance CA now names an issuer that is not the certificate before it... but
    // first the zonal CA's own signature fails.
    assert!(matches!(
        refusal(&document, &nonce, &policy),
        VerifyError::ChainSignature { .. }
    ));

    // Intermediates out of order: names do not chain.
    let mut swapped = bundle.clone();
    swapped.swap(1, 2);
    let items = swapped.iter().map(|c| Value::Bytes(c)).collect();
    let document = with_field(REAL_DOC, "cabundle", Value::Array(items));
    match refusal(&document, &nonce, &policy) {
        VerifyError::ChainName {
            subject,
            issuer,
            previous,
        } => {
            assert!(subject.contains("CN=aa7d944093e8ba36.zonal"), "{subject}");
            assert!(issuer.starts_with("CN=2f442bd2442676f0"), "{issuer}");
            assert_eq!(previous, "CN=aws.nitro-enclaves,OU=AWS,O=Amazon,C=US");
        }
        other => panic!("{other}"),
    }
    // An intermediate left out: the same.
    let items = [&bundle[0], &bundle[2], &bundle[3]]
        .iter()
        .map(|c| Value::Bytes(c))
        .collect();
    let document = with_field(REAL_DOC, "cabundle", Value::Array(items));
    assert!(matches!(
        refusal(&document, &nonce, &policy),
        VerifyError::ChainName { .. }
    ));
}

#[test]
fn the_root_must_be_the_pinned_one() {
    let nonce = real_nonce();
    let bundle = cabundle(REAL_DOC);
    // Another certificate as cabundle[0], the AWS root pinned.
    let mut items: Vec<Value> = bundle.iter().map(|c| Value::Bytes(c)).collect();
    items[0] = Value::Bytes(&bundle[1]);
    let document = with_field(REAL_DOC, "cabundle", Value::Array(items));
    let err = refusal(&document, &nonce, &real_policy(REAL_TIMESTAMP_MS));
    let got = sealed_client::root::fingerprint(&bundle[1]);
    assert_eq!(err, VerifyError::NotFromAwsNitro { got: got.clone() });
    assert!(err
        .to_string()
        .starts_with("this document is not from AWS Nitro; pass --dev-root to accept a development NSM"));

    // A development root pinned, and a document from AWS: the wrong root.
    let mut policy = real_policy(REAL_TIMESTAMP_MS);
    policy.root = TrustedRoot::development_from_pem(&pem(&bundle[1])).unwrap();
    let err = refusal(REAL_DOC, &nonce, &policy);
    assert_eq!(
        err,
        VerifyError::WrongRoot {
            expected: got,
            got: AWS_NITRO_ROOT_SHA256.into()
        }
    );
    assert!(err
        .to_string()
        .starts_with("wrong root: the document's root certificate has SHA-256 641a0321"));
}

#[test]
fn structure_checks() {
    let nonce = real_nonce();
    let policy = real_policy(REAL_TIMESTAMP_MS);
    let malformed = |document: &[u8]| match refusal(document, &nonce, &policy) {
        VerifyError::Malformed(what) => what,
        other => panic!("{other}"),
    };

    // Tagged 18 (the contract's form) verifies as the untagged one does.
    let tagged = [&[0xd2][..], REAL_DOC].concat();
    verify_attestation(&tagged, &nonce, &policy).unwrap();
    let tagged_17 = [&[0xd1][..], REAL_DOC].concat();
    assert_eq!(malformed(&tagged_17), "CBOR tag 17, not 18 (COSE_Sign1)");
    assert!(malformed(&REAL_DOC[..REAL_DOC.len() - 1]).contains("length past the end"));
    assert!(malformed(&[REAL_DOC, &[0]].concat()).contains("trailing bytes"));
    assert!(malformed(&[]).starts_with("not CBOR"));
    assert!(malformed(&vec![0x40; 16385]).contains("16385 bytes, more than 16384"));

    // Another algorithm in the protected header (-36, ES512).
    let mut cose = split(REAL_DOC);
    assert_eq!(cose.protected, [0xa1, 0x01, 0x38, 0x22]);
    cose.protected = vec![0xa1, 0x01, 0x38, 0x23];
    assert!(matches!(
        refusal(&join(&cose), &nonce, &policy),
        VerifyError::UnsupportedAlgorithm(_)
    ));
    // Extra header parameters are refused too.
    cose.protected = vec![0xa2, 0x01, 0x38, 0x22, 0x04, 0x41, 0x00];
    assert!(matches!(
        refusal(&join(&cose), &nonce, &policy),
        VerifyError::UnsupportedAlgorithm(_)
    ));

    // Payload fields of the wrong type or missing.
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "module_id",
            Value::Unsigned(1),
            "module_id is an unsigned integer, not a non-empty text string",
        ),
        (
            "digest",
            Value::Bytes(b"SHA384"),
            "digest is a byte string, not a text string",
        ),
        (
            "timestamp",
            Value::Text("now"),
            "timestamp is a text string, not a positive integer",
        ),
        ("pcrs", Value::Map(vec![]), "pcrs is a map, not a non-empty map"),
        (
            "pcrs",
            Value::Map(vec![(Value::Unsigned(32), Value::Bytes(&[0; 48]))]),
            "a pcrs index is not an integer from 0 to 31",
        ),
        (
            "pcrs",
            Value::Map(vec![(Value::Unsigned(1), Value::Bytes(&[0; 32]))]),
            "PCR1 is 32 bytes, not 48",
        ),
        (
            "pcrs",
            Value::Map(vec![(Value::Unsigned(1), Value::Bytes(&[1; 48]))]),
            "no PCR0 in pcrs",
        ),
        ("certificate", Value::Null, "certificate is null, not a byte string"),
        (
            "cabundle",
            Value::Array(vec![]),
            "cabundle has 0 certificates, not 1 to 8",
        ),
        (
            "cabundle",
            Value::Bytes(b"x"),
            "cabundle is a byte string, not an array",
        ),
        (
            "nonce",
            Value::Text("x"),
            "nonce is a text string, not a byte string or null",
        ),
        (
            "public_key",
            Value::Bool(true),
            "public_key is a boolean, not a byte string or null",
        ),
    ];
    for (name, value, message) in cases {
        let document = with_field(REAL_DOC, name, value);
        assert_eq!(malformed(&document), message, "{name}");
    }
    match refusal(&with_field(REAL_DOC, "digest", Value::Text("SHA256")), &nonce, &policy) {
        VerifyError::UnsupportedAlgorithm(what) => assert_eq!(what, "digest \"SHA256\", not SHA384"),
        other => panic!("{other}"),
    }
}
