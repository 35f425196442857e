//! Helpers shared by the integration tests: the real documents, policies at a
//! pinned time, and a CBOR encoder to rebuild (and so break) documents.

#![allow(dead_code)]

pub mod dev;

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use sealed_client::cbor::{self, Value};
use sealed_client::root::TrustedRoot;
use sealed_client::verify::{Pcr, PcrPolicy, Policy};

/// Production enclave, 2022-10-13 (tests/data/README.md).
pub const REAL_DOC: &[u8] = include_bytes!("../data/aws-nitro-2022-10-13.cbor");
/// Its timestamp, ms since the epoch (2022-10-13T08:58:02.136Z).
pub const REAL_TIMESTAMP_MS: u64 = 1_665_651_482_136;
/// Debug-mode enclave, 2023-09-18 (tests/data/README.md).
pub const DEBUG_DOC: &[u8] = include_bytes!("../data/aws-nitro-debug-2023-09-18.cbor");
pub const DEBUG_TIMESTAMP_MS: u64 = 1_695_049_410_860;

/// The real document's PCR0, PCR1, PCR2 and PCR8, as printed by decoding it.
pub const REAL_PCRS: [(u8, &str); 4] = [
    (
        0,
        "f4d48b81a460c9916d1e685119074bf24660afd3e34fae9fca0a0d28d9d5599936332687e6f66fc890ac8cf150142d8b",
    ),
    (
        1,
        "bcdf05fefccaa8e55bf2c8d6dee9e79bbff31e34bf28a99aa19e6b29c37ee80b214a414b7607236edf26fcb78654e63f",
    ),
    (
        2,
        "d8f114da658de5481f8d9ec73907feb553560787522f705c92d7d96beed8e15e2aa611984e098c576832c292e8dc469a",
    ),
    (
        8,
        "8790eb3cce6c83d07e84b126dc61ca923333d6f66615c4a79157de48c5ab2418bdc60746ea7b7afbff03a1c6210201cb",
    ),
];

pub fn pcr(hex: &str) -> Pcr {
    sealed_client::measurements::parse_pcr(hex).unwrap()
}

pub fn pinned(list: &[(u8, &str)]) -> PcrPolicy {
    PcrPolicy::Pinned(list.iter().map(|&(i, h)| (i, pcr(h))).collect::<BTreeMap<_, _>>())
}

pub fn at_ms(ms: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(ms)
}

/// The AWS root, checking at `ms`.
pub fn aws_policy(ms: u64, pcrs: PcrPolicy) -> Policy {
    let mut policy = Policy::new(TrustedRoot::aws_nitro().unwrap(), pcrs);
    policy.check_time = at_ms(ms);
    policy
}

/// The COSE_Sign1 array's four elements, owned.
pub struct Cose {
    pub protected: Vec<u8>,
    pub payload: Vec<u8>,
    pub signature: Vec<u8>,
}

pub fn split(document: &[u8]) -> Cose {
    let top = cbor::decode(document).unwrap();
    let array = match top {
        Value::Tag(18, inner) => *inner,
        other => other,
    };
    let Value::Array(items) = array else {
        panic!("not an array")
    };
    let bytes = |v: &Value| match v {
        Value::Bytes(b) => b.to_vec(),
        _ => panic!("not bytes"),
    };
    Cose {
        protected: bytes(&items[0]),
        payload: bytes(&items[2]),
        signature: bytes(&items[3]),
    }
}

/// An untagged COSE_Sign1 from its parts (empty unprotected header).
pub fn join(cose: &Cose) -> Vec<u8> {
    let mut out = Vec::new();
    cbor::encode_head(&mut out, 4, 4);
    cbor::encode_bytes(&mut out, &cose.protected);
    out.push(0xa0);
    cbor::encode_bytes(&mut out, &cose.payload);
    cbor::encode_bytes(&mut out, &cose.signature);
    out
}

/// Encodes a value (the subset the reader accepts).
pub fn encode(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    encode_into(&mut out, value);
    out
}

fn encode_into(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Unsigned(n) => cbor::encode_head(out, 0, *n),
        Value::Negative(n) => cbor::encode_head(out, 1, *n),
        Value::Bytes(b) => cbor::encode_bytes(out, b),
        Value::Text(t) => cbor::encode_text(out, t),
        Value::Array(items) => {
            cbor::encode_head(out, 4, items.len() as u64);
            items.iter().for_each(|i| encode_into(out, i));
        }
        Value::Map(entries) => {
            cbor::encode_head(out, 5, entries.len() as u64);
            for (k, v) in entries {
                encode_into(out, k);
                encode_into(out, v);
            }
        }
        Value::Tag(tag, inner) => {
            cbor::encode_head(out, 6, *tag);
            encode_into(out, inner);
        }
        Value::Bool(b) => out.push(if *b { 0xf5 } else { 0xf4 }),
        Value::Null => out.push(0xf6),
    }
}

/// The document with its payload's field `name` replaced by `new` (added if
/// absent), the signature left as it was (so no longer valid).
pub fn with_field(document: &[u8], name: &str, new: Value) -> Vec<u8> {
    let mut cose = split(document);
    let payload = cbor::decode(&cose.payload).unwrap();
    let Value::Map(mut entries) = payload else {
        panic!("payload not a map")
    };
    match entries.iter_mut().find(|(k, _)| *k == Value::Text(name)) {
        Some(entry) => entry.1 = new,
        None => entries.push((Value::Text(name), new)),
    }
    cose.payload = encode(&Value::Map(entries));
    join(&cose)
}

/// A byte string field of the document's payload.
pub fn field_bytes(document: &[u8], name: &str) -> Vec<u8> {
    let cose = split(document);
    let payload = cbor::decode(&cose.payload).unwrap();
    match payload.get(name) {
        Some(Value::Bytes(b)) => b.to_vec(),
        other => panic!("{name}: {other:?}"),
    }
}

/// The document's `cabundle`, each certificate's DER.
pub fn cabundle(document: &[u8]) -> Vec<Vec<u8>> {
    let cose = split(document);
    let payload = cbor::decode(&cose.payload).unwrap();
    match payload.get("cabundle") {
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| match i {
                Value::Bytes(b) => b.to_vec(),
                _ => panic!("cabundle entry"),
            })
            .collect(),
        other => panic!("cabundle: {other:?}"),
    }
}

/// PEM text of a DER certificate.
pub fn pem(der: &[u8]) -> String {
    der::pem::encode_string("CERTIFICATE", der::pem::LineEnding::LF, der).unwrap()
}
