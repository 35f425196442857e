//! A small CBOR encoder (RFC 8949) for what the NSM writes: attestation
//! documents and answers.
//!
//! Definite lengths only and every head in its shortest form (RFC 8949
//! section 4.2.1's "preferred serialization"), maps in the order given, so
//! the bytes are exactly what the caller built: a real NSM document keeps its
//! payload keys in a fixed, non-sorted order, and tests that craft broken
//! documents need that control too. Decoding (of requests) is ciborium's.

/// A CBOR data item, as far as the NSM's messages need.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    /// Major type 0.
    Uint(u64),
    /// Major type 1: the integer `-1 - n` is written as `NegInt(n)`, so
    /// `NegInt(34)` is -35 (the COSE algorithm identifier of ES384).
    NegInt(u64),
    /// Major type 2.
    Bytes(Vec<u8>),
    /// Major type 3.
    Text(String),
    /// Major type 4.
    Array(Vec<Value>),
    /// Major type 5, in this order (no sorting, duplicates not checked).
    Map(Vec<(Value, Value)>),
    /// Major type 6: a tag and its content.
    Tag(u64, Box<Value>),
    /// Simple values 20 and 21.
    Bool(bool),
    /// Simple value 22.
    Null,
}

impl Value {
    /// A text string from `&str`.
    pub fn text(s: &str) -> Value {
        Value::Text(s.to_owned())
    }

    /// A byte string from a slice.
    pub fn bytes(b: &[u8]) -> Value {
        Value::Bytes(b.to_vec())
    }

    /// The bytes of this item.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_into(&mut out);
        out
    }

    /// Appends the bytes of this item to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        match self {
            Value::Uint(n) => head(out, 0, *n),
            Value::NegInt(n) => head(out, 1, *n),
            Value::Bytes(b) => {
                head(out, 2, b.len() as u64);
                out.extend_from_slice(b);
            }
            Value::Text(s) => {
                head(out, 3, s.len() as u64);
                out.extend_from_slice(s.as_bytes());
            }
            Value::Array(items) => {
                head(out, 4, items.len() as u64);
                for item in items {
                    item.encode_into(out);
                }
            }
            Value::Map(entries) => {
                head(out, 5, entries.len() as u64);
                for (k, v) in entries {
                    k.encode_into(out);
                    v.encode_into(out);
                }
            }
            Value::Tag(tag, content) => {
                head(out, 6, *tag);
                content.encode_into(out);
            }
            Value::Bool(false) => out.push(0xf4),
            Value::Bool(true) => out.push(0xf5),
            Value::Null => out.push(0xf6),
        }
    }
}

/// Writes an item head: major type `major` with argument `n` in the fewest
/// bytes (the value itself below 24, else 1, 2, 4 or 8 bytes after it).
fn head(out: &mut Vec<u8>, major: u8, n: u64) {
    let m = major << 5;
    if n < 24 {
        out.push(m | n as u8);
    } else if n <= u8::MAX as u64 {
        out.push(m | 24);
        out.push(n as u8);
    } else if n <= u16::MAX as u64 {
        out.push(m | 25);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else if n <= u32::MAX as u64 {
        out.push(m | 26);
        out.extend_from_slice(&(n as u32).to_be_bytes());
    } else {
        out.push(m | 27);
        out.extend_from_slice(&n.to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::Value::{self, *};

    fn hex(v: &Value) -> String {
        v.encode().iter().map(|b| format!("{b:02x}")).collect()
    }

    // Examples from RFC 8949 appendix A.
    #[test]
    fn rfc8949_examples() {
        assert_eq!(hex(&Uint(0)), "00");
        assert_eq!(hex(&Uint(23)), "17");
        assert_eq!(hex(&Uint(24)), "1818");
        assert_eq!(hex(&Uint(255)), "18ff");
        assert_eq!(hex(&Uint(256)), "190100");
        assert_eq!(hex(&Uint(65535)), "19ffff");
        assert_eq!(hex(&Uint(65536)), "1a00010000");
        assert_eq!(hex(&Uint(1_000_000)), "1a000f4240");
        assert_eq!(hex(&Uint(1_000_000_000_000)), "1b000000e8d4a51000");
        assert_eq!(hex(&Uint(u64::MAX)), "1bffffffffffffffff");
        assert_eq!(hex(&NegInt(0)), "20");
        assert_eq!(hex(&NegInt(9)), "29");
        assert_eq!(hex(&NegInt(99)), "3863");
        assert_eq!(hex(&NegInt(34)), "3822"); // -35, ES384
        assert_eq!(hex(&Bool(false)), "f4");
        assert_eq!(hex(&Bool(true)), "f5");
        assert_eq!(hex(&Null), "f6");
        assert_eq!(hex(&Value::bytes(&[])), "40");
        assert_eq!(hex(&Value::bytes(&[1, 2, 3, 4])), "4401020304");
        assert_eq!(hex(&Value::text("")), "60");
        assert_eq!(hex(&Value::text("IETF")), "6449455446");
        assert_eq!(hex(&Value::text("\u{00fc}")), "62c3bc");
        assert_eq!(hex(&Array(vec![])), "80");
        assert_eq!(
            hex(&Array(vec![Uint(1), Array(vec![Uint(2), Uint(3)]), Array(vec![Uint(4), Uint(5)])])),
            "8301820203820405"
        );
        assert_eq!(hex(&Array((1..=25).map(Uint).collect())), "98190102030405060708090a0b0c0d0e0f101112131415161718181819");
        assert_eq!(hex(&Map(vec![])), "a0");
        assert_eq!(hex(&Map(vec![(Uint(1), Uint(2)), (Uint(3), Uint(4))])), "a201020304");
        assert_eq!(
            hex(&Map(vec![(Value::text("a"), Uint(1)), (Value::text("b"), Array(vec![Uint(2), Uint(3)]))])),
            "a26161016162820203"
        );
        assert_eq!(hex(&Tag(1, Box::new(Uint(1363896240)))), "c11a514b67b0");
        assert_eq!(hex(&Tag(18, Box::new(Array(vec![])))), "d280");
    }

    #[test]
    fn long_strings_use_longer_heads() {
        let b = Value::Bytes(vec![0; 300]).encode();
        assert_eq!(&b[..3], &[0x59, 0x01, 0x2c]);
        assert_eq!(b.len(), 303);
        let t = Value::Text("x".repeat(24)).encode();
        assert_eq!(&t[..2], &[0x78, 24]);
    }

    /// Whatever we write, ciborium (an independent decoder) reads back the same.
    #[test]
    fn ciborium_reads_it_back() {
        let v = Map(vec![
            (Value::text("module_id"), Value::text("m")),
            (Value::text("n"), NegInt(34)),
            (Value::text("big"), Uint(1 << 40)),
            (Value::text("b"), Value::Bytes(vec![7; 70_000])),
            (Value::text("null"), Null),
            (Value::text("t"), Tag(18, Box::new(Array(vec![Bool(true), Bool(false)])))),
        ]);
        let bytes = v.encode();
        let back: ciborium::Value = ciborium::from_reader(&bytes[..]).unwrap();
        let entries = back.as_map().unwrap();
        assert_eq!(entries.len(), 6);
        assert_eq!(entries[0].0.as_text(), Some("module_id"));
        assert_eq!(entries[1].1.as_integer().map(i128::from), Some(-35));
        assert_eq!(entries[2].1.as_integer().map(i128::from), Some(1 << 40));
        assert_eq!(entries[3].1.as_bytes().map(|b| b.len()), Some(70_000));
        assert!(entries[4].1.is_null());
        assert!(matches!(&entries[5].1, ciborium::Value::Tag(18, _)));
    }
}
