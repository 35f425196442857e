//! The NSM's request/response protocol, answered with development documents.
//!
//! Requests and answers are the CBOR the NSM driver carries (docs/SEALED.md,
//! "The NSM interface"), i.e. serde's externally tagged encoding of the
//! `aws-nitro-enclaves-nsm-api` types:
//!
//! - `{"Attestation": {"user_data": bstr|null, "nonce": bstr|null,
//!   "public_key": bstr|null}}` (a missing field counts as null) ->
//!   `{"Attestation": {"document": bstr}}`;
//! - `{"DescribePCR": {"index": uint}}` -> `{"DescribePCR": {"lock": bool, "data": bstr}}`;
//! - on failure `{"Error": "<code>"}`.
//!
//! Which error for what:
//!
//! | input | answer |
//! |---|---|
//! | not one well-formed CBOR item (or bytes after it) | `InvalidArgument` |
//! | well-formed, but no operation we serve (`DescribeNSM`, `GetRandom`, `ExtendPCR`, `LockPCR`, `LockPCRs`, unknown names, other shapes) | `InvalidOperation` |
//! | a served operation with unknown, repeated or mistyped fields | `InvalidArgument` |
//! | `user_data` or `nonce` over 512 bytes, `public_key` over 1024, a request over 4096 (the NSM's limits) | `InputTooLarge` |
//! | `DescribePCR` index 32 or more | `InvalidIndex` |
//! | the chain cannot be renewed (the root expired while running), an answer over 16384 bytes | `InternalError` |

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ciborium::Value as In;

use crate::cbor::Value;
use crate::document::{DocumentSpec, PCR_LEN};
use crate::pki::{CertKind, CertSpec, Credential};
use crate::Error;

/// Largest request, in bytes (the NSM driver's request buffer).
pub const MAX_REQUEST_LEN: usize = 4096;
/// Largest answer, in bytes (`MAX_DOCUMENT_LEN` in docs/SEALED.md).
pub const MAX_RESPONSE_LEN: usize = 16384;
/// Largest `user_data`, in bytes (the NSM's validation rules).
pub const MAX_USER_DATA_LEN: usize = 512;
/// Largest `nonce`, in bytes.
pub const MAX_NONCE_LEN: usize = 512;
/// Largest `public_key`, in bytes.
pub const MAX_PUBLIC_KEY_LEN: usize = 1024;
/// PCR indexes `DescribePCR` accepts: 0 to 31, as the NSM has 32.
pub const PCR_COUNT: u16 = 32;
/// PCRs 0 to 15 are locked (measured at boot); 16 to 31 are free.
pub const LOCKED_PCR_COUNT: u16 = 16;

/// The leaf's lifetime: 3 hours, as on Nitro.
pub const LEAF_VALIDITY: Duration = Duration::from_secs(3 * 3600);
/// A new leaf is issued when the current one has less than this left, as
/// Nitro does (about 15 minutes before expiry).
pub const LEAF_RENEW_BEFORE: Duration = Duration::from_secs(15 * 60);
/// The intermediate's lifetime (at most the root's remaining life).
pub const INTERMEDIATE_VALIDITY: Duration = Duration::from_secs(30 * 24 * 3600);

/// Subject of the intermediate CA.
pub const INTERMEDIATE_SUBJECT: &str = "CN=nitro-ml development NSM intermediate - NOT AWS Nitro,O=nitro-ml development";
/// Subject of the signing leaf.
pub const LEAF_SUBJECT: &str = "CN=nitro-ml development NSM signer - NOT AWS Nitro,O=nitro-ml development";

/// The NSM's error codes (`ErrorCode` of the NSM API) that this service answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorCode {
    InvalidArgument,
    InvalidIndex,
    InvalidOperation,
    InputTooLarge,
    InternalError,
}

impl ErrorCode {
    /// The name the NSM writes, e.g. `"InvalidArgument"`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidArgument => "InvalidArgument",
            ErrorCode::InvalidIndex => "InvalidIndex",
            ErrorCode::InvalidOperation => "InvalidOperation",
            ErrorCode::InputTooLarge => "InputTooLarge",
            ErrorCode::InternalError => "InternalError",
        }
    }
}

/// A request this service serves, decoded and checked against the limits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    Attestation { user_data: Option<Vec<u8>>, nonce: Option<Vec<u8>>, public_key: Option<Vec<u8>> },
    DescribePCR { index: u16 },
}

impl Request {
    /// The operation's name, for logs.
    pub fn name(&self) -> &'static str {
        match self {
            Request::Attestation { .. } => "Attestation",
            Request::DescribePCR { .. } => "DescribePCR",
        }
    }
}

/// An answer, before encoding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Response {
    Attestation { document: Vec<u8> },
    DescribePCR { lock: bool, data: Vec<u8> },
    Error(ErrorCode),
}

impl Response {
    /// The answer's CBOR bytes.
    pub fn encode(&self) -> Vec<u8> {
        let one = |k: &str, v: Value| Value::Map(vec![(Value::text(k), v)]);
        match self {
            Response::Attestation { document } => one("Attestation", one("document", Value::bytes(document))),
            Response::DescribePCR { lock, data } => one(
                "DescribePCR",
                Value::Map(vec![(Value::text("lock"), Value::Bool(*lock)), (Value::text("data"), Value::bytes(data))]),
            ),
            Response::Error(code) => one("Error", Value::text(code.as_str())),
        }
        .encode()
    }
}

/// Decodes one request and checks it against the NSM's limits.
pub fn parse_request(bytes: &[u8]) -> Result<Request, ErrorCode> {
    if bytes.len() > MAX_REQUEST_LEN {
        return Err(ErrorCode::InputTooLarge);
    }
    let mut rest = bytes;
    // A request nests two maps deep; 16 levels is plenty and bounds the recursion.
    let value: In = ciborium::de::from_reader_with_recursion_limit(&mut rest, 16).map_err(|_| ErrorCode::InvalidArgument)?;
    if !rest.is_empty() {
        return Err(ErrorCode::InvalidArgument);
    }
    let In::Map(entries) = value else {
        // Unit operations (`"DescribeNSM"`, `"GetRandom"`) and anything else.
        return Err(ErrorCode::InvalidOperation);
    };
    let [(In::Text(op), body)] = entries.as_slice() else {
        return Err(ErrorCode::InvalidOperation);
    };
    match op.as_str() {
        "Attestation" => parse_attestation(body),
        "DescribePCR" => parse_describe_pcr(body),
        _ => Err(ErrorCode::InvalidOperation),
    }
}

/// The fields of a request body, by text key: unknown or repeated keys, or
/// keys that are not text, are refused.
fn fields<'a>(body: &'a In, known: &[&str]) -> Result<BTreeMap<String, &'a In>, ErrorCode> {
    let In::Map(entries) = body else { return Err(ErrorCode::InvalidArgument) };
    let mut out = BTreeMap::new();
    for (k, v) in entries {
        let In::Text(k) = k else { return Err(ErrorCode::InvalidArgument) };
        if !known.contains(&k.as_str()) || out.insert(k.clone(), v).is_some() {
            return Err(ErrorCode::InvalidArgument);
        }
    }
    Ok(out)
}

fn parse_attestation(body: &In) -> Result<Request, ErrorCode> {
    let f = fields(body, &["user_data", "nonce", "public_key"])?;
    let field = |name: &str, max: usize| -> Result<Option<Vec<u8>>, ErrorCode> {
        match f.get(name) {
            None | Some(In::Null) => Ok(None),
            Some(In::Bytes(b)) if b.len() > max => Err(ErrorCode::InputTooLarge),
            Some(In::Bytes(b)) => Ok(Some(b.clone())),
            Some(_) => Err(ErrorCode::InvalidArgument),
        }
    };
    Ok(Request::Attestation {
        user_data: field("user_data", MAX_USER_DATA_LEN)?,
        nonce: field("nonce", MAX_NONCE_LEN)?,
        public_key: field("public_key", MAX_PUBLIC_KEY_LEN)?,
    })
}

fn parse_describe_pcr(body: &In) -> Result<Request, ErrorCode> {
    let f = fields(body, &["index"])?;
    let Some(In::Integer(i)) = f.get("index") else { return Err(ErrorCode::InvalidArgument) };
    let index = u16::try_from(i128::from(*i)).map_err(|_| ErrorCode::InvalidArgument)?;
    Ok(Request::DescribePCR { index })
}

/// One request's outcome: the answer's bytes, and what to log (no content).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Handled {
    pub response: Vec<u8>,
    /// The operation's name, or `"-"` when the request was not understood.
    pub op: &'static str,
    /// `None` on success.
    pub error: Option<ErrorCode>,
}

/// The certificates below the root, renewed as they near expiry.
struct Issued {
    intermediate: Credential,
    leaf: Credential,
}

/// The development NSM's state: a module id, the PCRs and the signing chain.
pub struct DevNsm {
    module_id: String,
    pcrs: [[u8; PCR_LEN]; PCR_COUNT as usize],
    root: Credential,
    issued: Mutex<Issued>,
}

impl DevNsm {
    /// An NSM signing under `root`, with these PCR values (unlisted ones are
    /// zero; indexes from 32 up are refused). Issues an intermediate and a
    /// leaf valid from now.
    pub fn new(root: Credential, module_id: String, pcrs: &BTreeMap<u8, [u8; PCR_LEN]>) -> Result<DevNsm, Error> {
        let mut values = [[0u8; PCR_LEN]; PCR_COUNT as usize];
        for (&i, v) in pcrs {
            *values.get_mut(usize::from(i)).ok_or_else(|| Error::msg(format!("PCR index {i} is not below {PCR_COUNT}")))? = *v;
        }
        let now = SystemTime::now();
        let intermediate = issue_intermediate(&root, now)?;
        let leaf = issue_leaf(&intermediate, now)?;
        Ok(DevNsm { module_id, pcrs: values, root, issued: Mutex::new(Issued { intermediate, leaf }) })
    }

    /// The root CA (its certificate is `cabundle[0]` of every document).
    pub fn root(&self) -> &Credential {
        &self.root
    }

    /// The module id written in documents.
    pub fn module_id(&self) -> &str {
        &self.module_id
    }

    /// The current intermediate and leaf certificates, DER.
    pub fn chain_der(&self) -> (Vec<u8>, Vec<u8>) {
        let issued = self.lock();
        (issued.intermediate.cert_der().to_vec(), issued.leaf.cert_der().to_vec())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Issued> {
        // Nothing panics while holding it; if something did, the data is still whole.
        self.issued.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Answers one request (CBOR bytes) with CBOR bytes.
    pub fn handle(&self, request: &[u8]) -> Handled {
        let parsed = parse_request(request);
        let op = parsed.as_ref().map_or("-", Request::name);
        let response = match parsed {
            Err(code) => Response::Error(code),
            Ok(Request::DescribePCR { index }) => match self.describe_pcr(index) {
                Ok((lock, data)) => Response::DescribePCR { lock, data: data.to_vec() },
                Err(code) => Response::Error(code),
            },
            Ok(Request::Attestation { user_data, nonce, public_key }) => match self.attest_at(SystemTime::now(), user_data, nonce, public_key) {
                Ok(document) => Response::Attestation { document },
                Err(code) => Response::Error(code),
            },
        };
        let mut bytes = response.encode();
        let mut error = match response {
            Response::Error(code) => Some(code),
            _ => None,
        };
        if bytes.len() > MAX_RESPONSE_LEN {
            error = Some(ErrorCode::InternalError);
            bytes = Response::Error(ErrorCode::InternalError).encode();
        }
        Handled { response: bytes, op, error }
    }

    /// A PCR: whether it is locked, and its value.
    pub fn describe_pcr(&self, index: u16) -> Result<(bool, [u8; PCR_LEN]), ErrorCode> {
        let value = self.pcrs.get(usize::from(index)).ok_or(ErrorCode::InvalidIndex)?;
        Ok((index < LOCKED_PCR_COUNT, *value))
    }

    /// A signed document as of `now` (renewing the leaf, and the intermediate,
    /// first if they near expiry), with PCRs 0 to 15.
    pub fn attest_at(
        &self,
        now: SystemTime,
        user_data: Option<Vec<u8>>,
        nonce: Option<Vec<u8>>,
        public_key: Option<Vec<u8>>,
    ) -> Result<Vec<u8>, ErrorCode> {
        let timestamp_ms = now.duration_since(UNIX_EPOCH).map_err(|_| ErrorCode::InternalError)?.as_millis();
        let timestamp_ms = u64::try_from(timestamp_ms).map_err(|_| ErrorCode::InternalError)?;
        let mut issued = self.lock();
        self.renew(&mut issued, now).map_err(|e| {
            eprintln!("dev-nsm: cannot renew the signing chain: {e}");
            ErrorCode::InternalError
        })?;
        let spec = DocumentSpec {
            module_id: self.module_id.clone(),
            timestamp_ms,
            pcrs: (0..LOCKED_PCR_COUNT as u8).map(|i| (i, self.pcrs[usize::from(i)])).collect(),
            public_key,
            user_data,
            nonce,
        };
        let cabundle = [self.root.cert_der().to_vec(), issued.intermediate.cert_der().to_vec()];
        Ok(spec.sign(&issued.leaf, &cabundle))
    }

    /// Makes the chain valid at `now` for at least `LEAF_RENEW_BEFORE`.
    fn renew(&self, issued: &mut Issued, now: SystemTime) -> Result<(), Error> {
        if !self.root.valid_at(now + LEAF_RENEW_BEFORE) {
            return Err(Error::msg("the development root is not valid now; restart dev-nsm to make a new one"));
        }
        if !issued.intermediate.valid_at(now + LEAF_VALIDITY) {
            issued.intermediate = issue_intermediate(&self.root, now)?;
            issued.leaf = issue_leaf(&issued.intermediate, now)?;
            eprintln!("dev-nsm: renewed the intermediate and the leaf");
        } else if !issued.leaf.valid_at(now) || !issued.leaf.valid_at(now + LEAF_RENEW_BEFORE) {
            issued.leaf = issue_leaf(&issued.intermediate, now)?;
            eprintln!("dev-nsm: renewed the leaf");
        }
        Ok(())
    }
}

fn issue_intermediate(root: &Credential, now: SystemTime) -> Result<Credential, Error> {
    let not_after = (now + INTERMEDIATE_VALIDITY).min(root.not_after());
    let spec = CertSpec { subject: INTERMEDIATE_SUBJECT.into(), not_before: now, not_after, kind: CertKind::Ca { path_len: Some(0) } };
    root.issue(&spec).map_err(|e| Error::with("cannot issue the intermediate", e))
}

fn issue_leaf(intermediate: &Credential, now: SystemTime) -> Result<Credential, Error> {
    // Not back-dated, as on Nitro.
    let not_after = (now + LEAF_VALIDITY).min(intermediate.not_after());
    let spec = CertSpec { subject: LEAF_SUBJECT.into(), not_before: now, not_after, kind: CertKind::Leaf };
    intermediate.issue(&spec).map_err(|e| Error::with("cannot issue the leaf", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nsm() -> DevNsm {
        let root = Credential::self_signed(&CertSpec::ca("CN=t root", SystemTime::now(), Duration::from_secs(86400 * 365))).unwrap();
        let pcrs = [(0u8, [0xaa; PCR_LEN]), (2, [0xbb; PCR_LEN]), (20, [0xcc; PCR_LEN])].into_iter().collect();
        DevNsm::new(root, "dev-nsm-test".into(), &pcrs).unwrap()
    }

    fn enc(v: Value) -> Vec<u8> {
        v.encode()
    }

    fn map(entries: Vec<(&str, Value)>) -> Value {
        Value::Map(entries.into_iter().map(|(k, v)| (Value::text(k), v)).collect())
    }

    fn attestation(user_data: Value, nonce: Value, public_key: Value) -> Vec<u8> {
        enc(map(vec![("Attestation", map(vec![("user_data", user_data), ("nonce", nonce), ("public_key", public_key)]))]))
    }

    #[test]
    fn attestation_requests_and_limits() {
        let b = |n: usize| Value::Bytes(vec![7; n]);
        assert_eq!(
            parse_request(&attestation(b(512), b(512), b(1024))),
            Ok(Request::Attestation { user_data: Some(vec![7; 512]), nonce: Some(vec![7; 512]), public_key: Some(vec![7; 1024]) })
        );
        assert_eq!(
            parse_request(&attestation(Value::Null, Value::Null, Value::Null)),
            Ok(Request::Attestation { user_data: None, nonce: None, public_key: None })
        );
        assert_eq!(
            parse_request(&enc(map(vec![("Attestation", map(vec![("nonce", b(3))]))]))),
            Ok(Request::Attestation { user_data: None, nonce: Some(vec![7; 3]), public_key: None })
        );
        assert_eq!(parse_request(&attestation(b(513), Value::Null, Value::Null)), Err(ErrorCode::InputTooLarge));
        assert_eq!(parse_request(&attestation(Value::Null, b(513), Value::Null)), Err(ErrorCode::InputTooLarge));
        assert_eq!(parse_request(&attestation(Value::Null, Value::Null, b(1025))), Err(ErrorCode::InputTooLarge));
        assert_eq!(parse_request(&attestation(Value::text("x"), Value::Null, Value::Null)), Err(ErrorCode::InvalidArgument));
        let unknown = enc(map(vec![("Attestation", map(vec![("nonce", b(1)), ("extra", b(1))]))]));
        assert_eq!(parse_request(&unknown), Err(ErrorCode::InvalidArgument));
        let repeated = enc(map(vec![("Attestation", map(vec![("nonce", b(1)), ("nonce", b(2))]))]));
        assert_eq!(parse_request(&repeated), Err(ErrorCode::InvalidArgument));
        assert_eq!(parse_request(&enc(map(vec![("Attestation", Value::Null)]))), Err(ErrorCode::InvalidArgument));
    }

    #[test]
    fn other_requests() {
        let describe = |index: Value| enc(map(vec![("DescribePCR", map(vec![("index", index)]))]));
        assert_eq!(parse_request(&describe(Value::Uint(31))), Ok(Request::DescribePCR { index: 31 }));
        assert_eq!(parse_request(&describe(Value::Uint(70_000))), Err(ErrorCode::InvalidArgument));
        assert_eq!(parse_request(&describe(Value::NegInt(0))), Err(ErrorCode::InvalidArgument));
        assert_eq!(parse_request(&describe(Value::text("0"))), Err(ErrorCode::InvalidArgument));
        assert_eq!(parse_request(&enc(Value::text("DescribeNSM"))), Err(ErrorCode::InvalidOperation));
        assert_eq!(parse_request(&enc(Value::text("GetRandom"))), Err(ErrorCode::InvalidOperation));
        assert_eq!(parse_request(&enc(map(vec![("LockPCR", map(vec![("index", Value::Uint(0))]))]))), Err(ErrorCode::InvalidOperation));
        assert_eq!(parse_request(&enc(Value::Uint(5))), Err(ErrorCode::InvalidOperation));
        assert_eq!(parse_request(&enc(Value::Map(vec![]))), Err(ErrorCode::InvalidOperation));
        assert_eq!(parse_request(&[]), Err(ErrorCode::InvalidArgument));
        assert_eq!(parse_request(&[0xff, 0x00, 0x13]), Err(ErrorCode::InvalidArgument));
        let mut trailing = describe(Value::Uint(0));
        trailing.push(0);
        assert_eq!(parse_request(&trailing), Err(ErrorCode::InvalidArgument));
        assert_eq!(parse_request(&vec![0x80; MAX_REQUEST_LEN + 1]), Err(ErrorCode::InputTooLarge));
        // Deep nesting is refused, not a stack overflow.
        assert_eq!(parse_request(&vec![0x81; 4000]), Err(ErrorCode::InvalidArgument));
    }

    #[test]
    fn answers() {
        let nsm = nsm();
        let pcr = |i: u64| nsm.handle(&enc(map(vec![("DescribePCR", map(vec![("index", Value::Uint(i))]))]))).response;
        let want = |lock: bool, data: [u8; PCR_LEN]| Response::DescribePCR { lock, data: data.to_vec() }.encode();
        assert_eq!(pcr(0), want(true, [0xaa; PCR_LEN]));
        assert_eq!(pcr(1), want(true, [0; PCR_LEN]));
        assert_eq!(pcr(20), want(false, [0xcc; PCR_LEN]));
        assert_eq!(pcr(32), Response::Error(ErrorCode::InvalidIndex).encode());
        // {"Error": "InvalidOperation"}, byte for byte.
        let mut want_err = vec![0xa1, 0x65];
        want_err.extend_from_slice(b"Error");
        want_err.push(0x70);
        want_err.extend_from_slice(b"InvalidOperation");
        let h = nsm.handle(&enc(Value::text("DescribeNSM")));
        assert_eq!(h.response, want_err);
        assert_eq!((h.op, h.error), ("-", Some(ErrorCode::InvalidOperation)));

        let h = nsm.handle(&attestation(Value::Null, Value::bytes(b"n"), Value::Null));
        assert_eq!((h.op, h.error), ("Attestation", None));
        let v: In = ciborium::from_reader(&h.response[..]).unwrap();
        let doc = v.as_map().unwrap()[0].1.as_map().unwrap()[0].1.as_bytes().unwrap().clone();
        assert_eq!(doc[0], 0xd2);
        assert!(doc.len() < MAX_RESPONSE_LEN);
    }

    #[test]
    fn leaf_is_renewed_before_expiry() {
        let nsm = nsm();
        let (mid0, leaf0) = nsm.chain_der();
        let now = SystemTime::now();
        nsm.attest_at(now + Duration::from_secs(3600), None, None, None).unwrap();
        assert_eq!(nsm.chain_der(), (mid0.clone(), leaf0.clone()), "an hour in: same leaf");
        nsm.attest_at(now + LEAF_VALIDITY - LEAF_RENEW_BEFORE + Duration::from_secs(1), None, None, None).unwrap();
        let (mid1, leaf1) = nsm.chain_der();
        assert_eq!(mid1, mid0);
        assert_ne!(leaf1, leaf0, "a new leaf before the old one expires");
        nsm.attest_at(now + INTERMEDIATE_VALIDITY, None, None, None).unwrap();
        let (mid2, _) = nsm.chain_der();
        assert_ne!(mid2, mid0, "a new intermediate too, near its expiry");
        assert_eq!(nsm.attest_at(now + Duration::from_secs(86400 * 366), None, None, None), Err(ErrorCode::InternalError));
    }
}
