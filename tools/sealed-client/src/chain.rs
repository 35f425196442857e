//! The certificate chain of an attestation document: `cabundle` (root first)
//! then the leaf `certificate`, each certificate signed by the one before it.
//!
//! What is checked, for every link (RFC 5280 path validation, cut down to what
//! the NSM's chains use): the issuer's name is the child's issuer name; the
//! issuer is a CA (basicConstraints cA, keyCertSign if keyUsage is present,
//! pathLenConstraint respected); the child's signature is ecdsa-with-SHA384
//! and verifies with the issuer's P-384 key; every certificate (the root too)
//! is valid at the check time, give or take the leeway; no certificate has a
//! critical extension this code does not understand. The leaf's key must be
//! P-384 (it signs the document) and, if keyUsage is present, allow
//! digitalSignature. Whether the root is the pinned one is checked before,
//! by its bytes (`verify.rs`); its self-signature is not checked, as it adds
//! nothing to a byte-for-byte pin.

use der::asn1::ObjectIdentifier;
use der::{Decode, Encode};
use p384::ecdsa::signature::Verifier;
use p384::ecdsa::{Signature, VerifyingKey};
use x509_cert::ext::pkix::{BasicConstraints, KeyUsage};
use x509_cert::Certificate;

use crate::verify::VerifyError;

/// ecdsa-with-SHA384 (RFC 5758): the only certificate signature accepted.
const ECDSA_WITH_SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.3");
/// id-ecPublicKey (RFC 5480).
const ID_EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
/// secp384r1 (RFC 5480): the only curve accepted.
const SECP384R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");
/// The critical extensions understood (and checked) here.
const ID_CE_BASIC_CONSTRAINTS: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.19");
const ID_CE_KEY_USAGE: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.15");

/// The result of a verified chain.
pub struct Chain {
    /// The leaf's key, which must have signed the document.
    pub leaf_key: VerifyingKey,
    /// Every certificate's subject, root first, leaf last (RFC 4514 form).
    pub subjects: Vec<String>,
}

/// One parsed certificate and where it came from.
struct Cert {
    /// `cabundle[i]` or `certificate`, for messages.
    position: String,
    subject: String,
    cert: Certificate,
}

/// Verifies `bundle` (root first) then `leaf` at `check_ms` (milliseconds
/// since the Unix epoch) with `leeway_ms` of tolerance on validity periods.
/// The caller has already checked that `bundle[0]` is the pinned root.
pub fn verify(bundle: &[&[u8]], leaf: &[u8], check_ms: u64, leeway_ms: u64) -> Result<Chain, VerifyError> {
    let mut certs = Vec::with_capacity(bundle.len() + 1);
    for (i, der) in bundle.iter().enumerate() {
        certs.push(parse(format!("cabundle[{i}]"), der)?);
    }
    certs.push(parse("certificate".to_string(), leaf)?);
    let leaf_index = certs.len() - 1;

    // Root to leaf; each certificate's origin (its issuer's signature) is
    // checked before anything is said about its contents.
    for (i, cert) in certs.iter().enumerate() {
        if i > 0 {
            let issuer = &certs[i - 1];
            if cert.cert.tbs_certificate.issuer != issuer.cert.tbs_certificate.subject {
                return Err(VerifyError::ChainName {
                    subject: cert.subject.clone(),
                    issuer: crate::printable(&cert.cert.tbs_certificate.issuer.to_string()),
                    previous: issuer.subject.clone(),
                });
            }
            // The CA certificates strictly between this issuer and the leaf.
            let cas_below = leaf_index - i;
            check_issuer(issuer, cas_below)?;
            check_signature(cert, issuer)?;
        }
        check_extensions(cert)?;
        check_validity(cert, check_ms, leeway_ms)?;
    }

    let leaf = &certs[leaf_index];
    let leaf_key = p384_key(leaf)?;
    if let Some(usage) = key_usage(leaf)? {
        if !usage.digital_signature() {
            return Err(bad(leaf, "its keyUsage does not allow digitalSignature"));
        }
    }
    Ok(Chain {
        leaf_key,
        subjects: certs.into_iter().map(|c| c.subject).collect(),
    })
}

fn bad(cert: &Cert, reason: impl Into<String>) -> VerifyError {
    VerifyError::BadCertificate {
        position: cert.position.clone(),
        subject: cert.subject.clone(),
        reason: reason.into(),
    }
}

/// Parses one DER certificate and insists that it re-encodes to the same
/// bytes: the signature is checked over the re-encoded TBS part, so the two
/// must be identical (strict DER only).
fn parse(position: String, der: &[u8]) -> Result<Cert, VerifyError> {
    let fail = |reason: String| VerifyError::BadCertificate {
        position: position.clone(),
        subject: String::new(),
        reason,
    };
    let cert = Certificate::from_der(der).map_err(|e| fail(format!("not an X.509 certificate: {e}")))?;
    match cert.to_der() {
        Ok(again) if again == der => {}
        _ => return Err(fail("not in canonical DER".to_string())),
    }
    let subject = crate::printable(&cert.tbs_certificate.subject.to_string());
    Ok(Cert {
        position,
        subject,
        cert,
    })
}

/// Refuses critical extensions other than basicConstraints and keyUsage
/// (RFC 5280 4.2: a certificate with an unrecognised critical extension must
/// be rejected), and duplicated extensions.
fn check_extensions(cert: &Cert) -> Result<(), VerifyError> {
    let extensions = cert.cert.tbs_certificate.extensions.as_deref().unwrap_or(&[]);
    for (i, ext) in extensions.iter().enumerate() {
        if extensions[..i].iter().any(|e| e.extn_id == ext.extn_id) {
            return Err(bad(cert, format!("extension {} appears twice", ext.extn_id)));
        }
        if ext.critical && ext.extn_id != ID_CE_BASIC_CONSTRAINTS && ext.extn_id != ID_CE_KEY_USAGE {
            return Err(bad(cert, format!("unknown critical extension {}", ext.extn_id)));
        }
    }
    Ok(())
}

fn check_validity(cert: &Cert, check_ms: u64, leeway_ms: u64) -> Result<(), VerifyError> {
    let validity = &cert.cert.tbs_certificate.validity;
    let not_before = millis(validity.not_before.to_unix_duration());
    let not_after = millis(validity.not_after.to_unix_duration());
    if check_ms.saturating_add(leeway_ms) < not_before {
        return Err(VerifyError::CertificateNotYetValid {
            subject: cert.subject.clone(),
            not_before: validity.not_before.to_string(),
            check_time: crate::verify::format_time(check_ms),
        });
    }
    if check_ms > not_after.saturating_add(leeway_ms) {
        return Err(VerifyError::CertificateExpired {
            subject: cert.subject.clone(),
            not_after: validity.not_after.to_string(),
            check_time: crate::verify::format_time(check_ms),
        });
    }
    Ok(())
}

fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The issuer of another certificate must be a CA allowed to sign
/// certificates, with `cas_below` CA certificates under it before the leaf.
fn check_issuer(issuer: &Cert, cas_below: usize) -> Result<(), VerifyError> {
    let not_ca = |reason: &str| VerifyError::NotCa {
        subject: issuer.subject.clone(),
        reason: reason.to_string(),
    };
    let constraints = issuer
        .cert
        .tbs_certificate
        .get::<BasicConstraints>()
        .map_err(|e| bad(issuer, format!("unreadable basicConstraints: {e}")))?;
    match constraints {
        None => return Err(not_ca("it has no basicConstraints extension")),
        Some((_, c)) if !c.ca => return Err(not_ca("its basicConstraints say cA false")),
        Some((_, c)) => {
            if let Some(max) = c.path_len_constraint {
                if cas_below > usize::from(max) {
                    return Err(not_ca("its pathLenConstraint is exceeded"));
                }
            }
        }
    }
    if let Some(usage) = key_usage(issuer)? {
        if !usage.key_cert_sign() {
            return Err(not_ca("its keyUsage does not allow keyCertSign"));
        }
    }
    Ok(())
}

fn key_usage(cert: &Cert) -> Result<Option<KeyUsage>, VerifyError> {
    cert.cert
        .tbs_certificate
        .get::<KeyUsage>()
        .map(|found| found.map(|(_, usage)| usage))
        .map_err(|e| bad(cert, format!("unreadable keyUsage: {e}")))
}

/// The certificate's public key, which must be an uncompressed or compressed
/// P-384 point.
fn p384_key(cert: &Cert) -> Result<VerifyingKey, VerifyError> {
    let spki = &cert.cert.tbs_certificate.subject_public_key_info;
    let curve = spki
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.decode_as::<ObjectIdentifier>().ok());
    if spki.algorithm.oid != ID_EC_PUBLIC_KEY || curve != Some(SECP384R1) {
        return Err(VerifyError::UnsupportedAlgorithm(format!(
            "{} ({}) has a key of algorithm {}, not an EC P-384 key",
            cert.position, cert.subject, spki.algorithm.oid
        )));
    }
    let point = spki
        .subject_public_key
        .as_bytes()
        .ok_or_else(|| bad(cert, "its public key is not a whole number of bytes"))?;
    VerifyingKey::from_sec1_bytes(point).map_err(|_| bad(cert, "its public key is not a valid P-384 point"))
}

/// The child's signature: ecdsa-with-SHA384 (same identifier inside and
/// outside the signed part, no parameters), verifying over the TBS bytes with
/// the issuer's key.
fn check_signature(child: &Cert, issuer: &Cert) -> Result<(), VerifyError> {
    let outer = &child.cert.signature_algorithm;
    let inner = &child.cert.tbs_certificate.signature;
    if outer.oid != ECDSA_WITH_SHA384 || outer != inner || outer.parameters.is_some() {
        return Err(VerifyError::UnsupportedAlgorithm(format!(
            "{} ({}) is signed with {}, not ecdsa-with-SHA384",
            child.position, child.subject, outer.oid
        )));
    }
    let issuer_key = p384_key(issuer)?;
    let broken = || VerifyError::ChainSignature {
        subject: child.subject.clone(),
        issuer: issuer.subject.clone(),
    };
    let signature = child
        .cert
        .signature
        .as_bytes()
        .and_then(|der| Signature::from_der(der).ok())
        .ok_or_else(broken)?;
    let tbs = child.cert.tbs_certificate.to_der().map_err(|_| broken())?;
    issuer_key.verify(&tbs, &signature).map_err(|_| broken())
}
