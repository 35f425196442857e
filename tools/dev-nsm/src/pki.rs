//! P-384 keys and X.509 certificates for the development attestation chain.
//!
//! Every certificate is signed with ecdsa-with-SHA384 by a P-384 key, and
//! carries exactly these extensions, like the certificates of AWS Nitro's
//! chain: basicConstraints (critical; `cA` true with an optional path length
//! for a CA, false for a leaf), keyUsage (critical; keyCertSign and cRLSign
//! for a CA, digitalSignature for a leaf), subjectKeyIdentifier and, below the
//! root, authorityKeyIdentifier. Nothing checks that a child's validity fits
//! its issuer's or that the issuer is a CA: tests build such broken chains on
//! purpose; [`crate::nsm::DevNsm`] keeps its own chain consistent.

use std::str::FromStr;
use std::time::{Duration, SystemTime};

use p384::ecdsa::{DerSignature, SigningKey};
use p384::pkcs8::{DecodePrivateKey, EncodePrivateKey, LineEnding};
use rand_core::{OsRng, RngCore};
use x509_cert::builder::{Builder, CertificateBuilder, Profile};
use x509_cert::der::referenced::OwnedToRef;
use x509_cert::der::{Decode, DecodePem, Encode, EncodePem};
use x509_cert::ext::pkix::{AuthorityKeyIdentifier, BasicConstraints, KeyUsage, KeyUsages, SubjectKeyIdentifier};
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;
use x509_cert::spki::{EncodePublicKey, SubjectPublicKeyInfoOwned};
use x509_cert::time::{Time, Validity};
use x509_cert::Certificate;

use crate::Error;

/// What a certificate is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CertKind {
    /// A certificate authority: may sign certificates (and CRLs).
    /// `path_len`: how many CAs may follow it in a chain (`None`: no limit).
    Ca { path_len: Option<u8> },
    /// An end entity: signs documents, not certificates.
    Leaf,
}

/// The subject, validity window and kind of a certificate to issue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertSpec {
    /// The subject as an RFC 4514 string, e.g. `"CN=test root,O=nitro-ml"`.
    pub subject: String,
    /// Start of validity (stored with one-second precision, rounded down).
    pub not_before: SystemTime,
    /// End of validity (stored with one-second precision, rounded down).
    pub not_after: SystemTime,
    pub kind: CertKind,
}

impl CertSpec {
    /// A CA valid from `not_before` for `validity`, with no path length limit.
    pub fn ca(subject: &str, not_before: SystemTime, validity: Duration) -> CertSpec {
        CertSpec { subject: subject.to_owned(), not_before, not_after: not_before + validity, kind: CertKind::Ca { path_len: None } }
    }

    /// A leaf valid from `not_before` for `validity`.
    pub fn leaf(subject: &str, not_before: SystemTime, validity: Duration) -> CertSpec {
        CertSpec { subject: subject.to_owned(), not_before, not_after: not_before + validity, kind: CertKind::Leaf }
    }
}

/// A P-384 private key and the certificate of its public key. Any credential
/// can issue children with [`Credential::issue`] (even a leaf, for tests of
/// chains that must be refused).
#[derive(Clone)]
pub struct Credential {
    key: SigningKey,
    cert: Certificate,
    der: Vec<u8>,
}

impl std::fmt::Debug for Credential {
    /// The subject only: the private key is never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential").field("subject", &self.subject()).finish_non_exhaustive()
    }
}

impl Credential {
    /// A new key and its self-signed certificate (a root, when `spec` is a CA).
    pub fn self_signed(spec: &CertSpec) -> Result<Credential, Error> {
        let key = SigningKey::random(&mut OsRng);
        let cert = build_certificate(spec, &key, None)?;
        Credential::assemble(key, cert)
    }

    /// A new key and its certificate, signed by this credential's key with
    /// this certificate's subject as issuer.
    pub fn issue(&self, spec: &CertSpec) -> Result<Credential, Error> {
        self.issue_for_key(spec, SigningKey::random(&mut OsRng))
    }

    /// As [`Credential::issue`], for a key chosen by the caller (a test may
    /// certify a key it also uses elsewhere).
    pub fn issue_for_key(&self, spec: &CertSpec, key: SigningKey) -> Result<Credential, Error> {
        let cert = build_certificate(spec, &key, Some(self))?;
        Credential::assemble(key, cert)
    }

    /// A credential from a stored key and certificate (DER), refused unless
    /// the certificate is for that key.
    pub fn from_parts(key: SigningKey, cert_der: &[u8]) -> Result<Credential, Error> {
        let cert = Certificate::from_der(cert_der).map_err(|e| Error::with("not a DER X.509 certificate", e))?;
        let ours = spki_of(&key)?;
        if cert.tbs_certificate.subject_public_key_info != ours {
            return Err(Error::msg("the certificate is not for this key"));
        }
        Credential::assemble(key, cert)
    }

    /// A credential from PEM texts: a PKCS#8 private key and a certificate.
    pub fn from_pem(key_pem: &str, cert_pem: &str) -> Result<Credential, Error> {
        let key = SigningKey::from_pkcs8_pem(key_pem).map_err(|e| Error::with("not a PKCS#8 P-384 private key", e))?;
        let cert = Certificate::from_pem(cert_pem).map_err(|e| Error::with("not a PEM X.509 certificate", e))?;
        let der = cert.to_der().map_err(|e| Error::with("cannot re-encode the certificate", e))?;
        Credential::from_parts(key, &der)
    }

    fn assemble(key: SigningKey, cert: Certificate) -> Result<Credential, Error> {
        let der = cert.to_der().map_err(|e| Error::with("cannot encode the certificate", e))?;
        Ok(Credential { key, cert, der })
    }

    /// The certificate, DER.
    pub fn cert_der(&self) -> &[u8] {
        &self.der
    }

    /// The certificate, PEM (`-----BEGIN CERTIFICATE-----`, LF line ends).
    pub fn cert_pem(&self) -> String {
        // Encoding a certificate we hold already decoded cannot fail.
        self.cert.to_pem(LineEnding::LF).expect("PEM encoding of a decoded certificate")
    }

    /// The private key as PKCS#8 PEM, for the state directory only.
    pub fn key_pem(&self) -> Result<String, Error> {
        let pem = self.key.to_pkcs8_pem(LineEnding::LF).map_err(|e| Error::with("cannot encode the private key", e))?;
        Ok(pem.to_string())
    }

    /// The private key, to sign with.
    pub fn signing_key(&self) -> &SigningKey {
        &self.key
    }

    /// The certificate's subject, as an RFC 4514 string.
    pub fn subject(&self) -> String {
        self.cert.tbs_certificate.subject.to_string()
    }

    /// Start of the certificate's validity.
    pub fn not_before(&self) -> SystemTime {
        self.cert.tbs_certificate.validity.not_before.to_system_time()
    }

    /// End of the certificate's validity.
    pub fn not_after(&self) -> SystemTime {
        self.cert.tbs_certificate.validity.not_after.to_system_time()
    }

    /// Whether `at` lies within the validity window (both ends included).
    pub fn valid_at(&self, at: SystemTime) -> bool {
        self.not_before() <= at && at <= self.not_after()
    }
}

/// The SubjectPublicKeyInfo of a P-384 key (id-ecPublicKey, secp384r1).
fn spki_of(key: &SigningKey) -> Result<SubjectPublicKeyInfoOwned, Error> {
    let der = key.verifying_key().to_public_key_der().map_err(|e| Error::with("cannot encode the public key", e))?;
    SubjectPublicKeyInfoOwned::from_der(der.as_bytes()).map_err(|e| Error::with("cannot decode the public key", e))
}

/// A random positive 16-byte serial number (RFC 5280 allows up to 20).
fn random_serial() -> Result<SerialNumber, Error> {
    let mut bytes = [0u8; 16];
    OsRng.fill_bytes(&mut bytes);
    bytes[0] = (bytes[0] & 0x7f) | 0x40; // positive, and exactly 16 octets
    SerialNumber::new(&bytes).map_err(|e| Error::with("serial number", e))
}

fn x509_time(t: SystemTime, which: &str) -> Result<Time, Error> {
    // The builder turns it into UTCTime up to 2049, as RFC 5280 requires.
    Time::try_from(t).map_err(|e| Error::with(format!("{which} cannot be written in a certificate"), e))
}

/// Builds and signs a certificate for `subject_key`: signed by `issuer`, or
/// self-signed when `issuer` is `None`.
fn build_certificate(spec: &CertSpec, subject_key: &SigningKey, issuer: Option<&Credential>) -> Result<Certificate, Error> {
    let subject = Name::from_str(&spec.subject).map_err(|e| Error::with(format!("bad subject {:?}", spec.subject), e))?;
    let validity = Validity { not_before: x509_time(spec.not_before, "notBefore")?, not_after: x509_time(spec.not_after, "notAfter")? };
    let spki = spki_of(subject_key)?;
    let signer = issuer.map(|i| &i.key).unwrap_or(subject_key);
    let profile = Profile::Manual { issuer: issuer.map(|i| i.cert.tbs_certificate.subject.clone()) };
    let what = format!("cannot build the certificate for {:?}", spec.subject);
    let fail = |e: x509_cert::builder::Error| Error::with(&what, e);
    let fail_der = |e: x509_cert::der::Error| Error::with(&what, e);

    let mut builder = CertificateBuilder::new(profile, random_serial()?, validity, subject, spki.clone(), signer).map_err(fail)?;
    let (ca, path_len_constraint, usage) = match spec.kind {
        CertKind::Ca { path_len } => (true, path_len, KeyUsages::KeyCertSign | KeyUsages::CRLSign),
        CertKind::Leaf => (false, None, KeyUsages::DigitalSignature.into()),
    };
    builder.add_extension(&BasicConstraints { ca, path_len_constraint }).map_err(fail)?;
    builder.add_extension(&KeyUsage(usage)).map_err(fail)?;
    builder.add_extension(&SubjectKeyIdentifier::try_from(spki.owned_to_ref()).map_err(fail_der)?).map_err(fail)?;
    if let Some(issuer) = issuer {
        let issuer_spki = &issuer.cert.tbs_certificate.subject_public_key_info;
        builder.add_extension(&AuthorityKeyIdentifier::try_from(issuer_spki.owned_to_ref()).map_err(fail_der)?).map_err(fail)?;
    }
    builder.build::<DerSignature>().map_err(fail)
}

#[cfg(test)]
mod tests {
    use super::*;
    use p384::ecdsa::signature::Verifier;
    use p384::ecdsa::VerifyingKey;

    const HOUR: Duration = Duration::from_secs(3600);

    fn verifies(child: &Credential, issuer: &Credential) -> bool {
        let tbs = child.cert.tbs_certificate.to_der().unwrap();
        let sig = DerSignature::from_bytes(child.cert.signature.raw_bytes()).unwrap();
        let key = VerifyingKey::try_from(issuer.cert.tbs_certificate.subject_public_key_info.owned_to_ref()).unwrap();
        key.verify(&tbs, &sig).is_ok()
    }

    #[test]
    fn chain_links_verify_and_names_chain() {
        let now = SystemTime::now();
        let root = Credential::self_signed(&CertSpec::ca("CN=t root,O=x", now, 24 * HOUR)).unwrap();
        let mid = root.issue(&CertSpec { kind: CertKind::Ca { path_len: Some(0) }, ..CertSpec::ca("CN=t mid", now, 2 * HOUR) }).unwrap();
        let leaf = mid.issue(&CertSpec::leaf("CN=t leaf", now, HOUR)).unwrap();
        assert!(verifies(&root, &root));
        assert!(verifies(&mid, &root));
        assert!(verifies(&leaf, &mid));
        assert!(!verifies(&leaf, &root));
        assert_eq!(leaf.cert.tbs_certificate.issuer, mid.cert.tbs_certificate.subject);
        assert_eq!(root.subject(), "CN=t root,O=x");
        // One-second precision, rounded down.
        let secs = |t: SystemTime| t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
        assert_eq!(secs(leaf.not_before()), secs(now));
        assert_eq!(secs(leaf.not_after()), secs(now + HOUR));
        assert!(leaf.valid_at(now + HOUR - Duration::from_secs(1)));
        assert!(!leaf.valid_at(now + HOUR + Duration::from_secs(1)));
    }

    #[test]
    fn stored_parts_round_trip_and_mismatch_is_refused() {
        let now = SystemTime::now();
        let root = Credential::self_signed(&CertSpec::ca("CN=t root", now, HOUR)).unwrap();
        let other = Credential::self_signed(&CertSpec::ca("CN=t other", now, HOUR)).unwrap();
        let back = Credential::from_pem(&root.key_pem().unwrap(), &root.cert_pem()).unwrap();
        assert_eq!(back.cert_der(), root.cert_der());
        let err = Credential::from_pem(&other.key_pem().unwrap(), &root.cert_pem()).unwrap_err();
        assert!(err.to_string().contains("not for this key"), "{err}");
        assert!(Credential::from_parts(root.signing_key().clone(), b"not der").is_err());
    }

    #[test]
    fn bad_subject_is_a_clear_error() {
        let err = Credential::self_signed(&CertSpec::ca("no equals sign", SystemTime::now(), HOUR)).unwrap_err();
        assert!(err.to_string().contains("bad subject"), "{err}");
    }
}
