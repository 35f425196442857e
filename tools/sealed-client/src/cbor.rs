//! A small strict CBOR (RFC 8949) reader for the attestation document, and the
//! few encoder helpers the COSE signature structure needs.
//!
//! Why our own and not a general CBOR crate: the document comes from the parent,
//! which the client does not trust, and it uses a tiny subset of CBOR (maps,
//! arrays, byte and text strings, integers, one tag, null). This reader
//! accepts exactly that subset, returns byte strings as slices of the input
//! (the COSE signature is checked over the exact received bytes), and refuses
//! everything else: indefinite lengths, floats, other simple values, nesting
//! deeper than [`MAX_DEPTH`], lengths past the end of the input, duplicate map
//! keys and trailing bytes. It never panics and never allocates more than the
//! number of items actually present in its input.

use std::fmt;

/// Deepest nesting accepted. The document nests 3 levels (COSE array ->
/// payload map -> `pcrs` map or `cabundle` array); 8 leaves room and bounds
/// the recursion.
pub const MAX_DEPTH: usize = 8;

/// Most entries accepted in one map. The document's largest map is `pcrs`
/// (at most 32 PCRs); the cap keeps the duplicate-key check small.
pub const MAX_MAP_ENTRIES: usize = 64;

/// One decoded CBOR item. Strings borrow from the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value<'a> {
    /// Major type 0.
    Unsigned(u64),
    /// Major type 1: the value is `-1 - n`, kept as `n` so that it cannot overflow.
    Negative(u64),
    Bytes(&'a [u8]),
    Text(&'a str),
    Array(Vec<Value<'a>>),
    /// Keys in input order, no two equal.
    Map(Vec<(Value<'a>, Value<'a>)>),
    Tag(u64, Box<Value<'a>>),
    Bool(bool),
    Null,
}

impl<'a> Value<'a> {
    /// The value of `key` (a text key) in a map; `None` if absent or not a map.
    pub fn get(&self, key: &str) -> Option<&Value<'a>> {
        match self {
            Value::Map(entries) => entries
                .iter()
                .find(|(k, _)| matches!(k, Value::Text(t) if *t == key))
                .map(|(_, v)| v),
            _ => None,
        }
    }

    /// A short name of the item's type, for error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Unsigned(_) => "an unsigned integer",
            Value::Negative(_) => "a negative integer",
            Value::Bytes(_) => "a byte string",
            Value::Text(_) => "a text string",
            Value::Array(_) => "an array",
            Value::Map(_) => "a map",
            Value::Tag(..) => "a tagged item",
            Value::Bool(_) => "a boolean",
            Value::Null => "null",
        }
    }
}

/// Why the bytes are not CBOR of the accepted subset. `offset` is where in the
/// input the problem was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CborError {
    pub offset: usize,
    pub what: &'static str,
}

impl fmt::Display for CborError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at byte {}", self.what, self.offset)
    }
}

impl std::error::Error for CborError {}

/// Decodes exactly one item that spans all of `input`.
pub fn decode(input: &[u8]) -> Result<Value<'_>, CborError> {
    let mut reader = Reader { input, pos: 0 };
    let value = reader.item(0)?;
    if reader.pos != input.len() {
        return Err(reader.error("trailing bytes after the item"));
    }
    Ok(value)
}

struct Reader<'a> {
    input: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn error(&self, what: &'static str) -> CborError {
        CborError { offset: self.pos, what }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], CborError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&end| end <= self.input.len())
            .ok_or_else(|| self.error("length past the end of the input"))?;
        let bytes = &self.input[self.pos..end];
        self.pos = end;
        Ok(bytes)
    }

    /// The initial byte's major type and the argument that follows it.
    fn head(&mut self) -> Result<(u8, u64), CborError> {
        let initial = self.take(1)?[0];
        let major = initial >> 5;
        let info = initial & 0x1f;
        let argument = match info {
            0..=23 => u64::from(info),
            24 => u64::from(self.take(1)?[0]),
            25 => u64::from(u16::from_be_bytes([self.take(1)?[0], self.take(1)?[0]])),
            26 => {
                let b = self.take(4)?;
                u64::from(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
            }
            27 => {
                let b = self.take(8)?;
                u64::from_be_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
            }
            31 => return Err(self.error("indefinite-length item (not accepted)")),
            _ => return Err(self.error("reserved additional information value")),
        };
        Ok((major, argument))
    }

    /// A length argument as usize, refused if it could not fit in the input:
    /// every element of an array or map takes at least one byte, so a count
    /// larger than what is left is a lie and is refused before allocating.
    fn length(&self, argument: u64) -> Result<usize, CborError> {
        usize::try_from(argument)
            .ok()
            .filter(|&n| n <= self.input.len() - self.pos)
            .ok_or_else(|| self.error("length past the end of the input"))
    }

    fn item(&mut self, depth: usize) -> Result<Value<'a>, CborError> {
        if depth > MAX_DEPTH {
            return Err(self.error("nesting too deep"));
        }
        let start = self.pos;
        let (major, argument) = self.head()?;
        Ok(match major {
            0 => Value::Unsigned(argument),
            1 => Value::Negative(argument),
            2 => {
                let n = self.length(argument)?;
                Value::Bytes(self.take(n)?)
            }
            3 => {
                let n = self.length(argument)?;
                let bytes = self.take(n)?;
                let text = std::str::from_utf8(bytes).map_err(|_| CborError {
                    offset: start,
                    what: "text string that is not UTF-8",
                })?;
                Value::Text(text)
            }
            4 => {
                let n = self.length(argument)?;
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(self.item(depth + 1)?);
                }
                Value::Array(items)
            }
            5 => {
                let n = self.length(argument)?;
                if n > MAX_MAP_ENTRIES {
                    return Err(CborError {
                        offset: start,
                        what: "map with too many entries",
                    });
                }
                let mut entries: Vec<(Value<'a>, Value<'a>)> = Vec::with_capacity(n);
                for _ in 0..n {
                    let key_at = self.pos;
                    let key = self.item(depth + 1)?;
                    if entries.iter().any(|(k, _)| *k == key) {
                        return Err(CborError {
                            offset: key_at,
                            what: "duplicate map key",
                        });
                    }
                    let value = self.item(depth + 1)?;
                    entries.push((key, value));
                }
                Value::Map(entries)
            }
            6 => Value::Tag(argument, Box::new(self.item(depth + 1)?)),
            _ => match argument {
                20 => Value::Bool(false),
                21 => Value::Bool(true),
                22 => Value::Null,
                _ => {
                    return Err(CborError {
                        offset: start,
                        what: "float or simple value (not accepted)",
                    })
                }
            },
        })
    }
}

/// Appends the head of a CBOR item (major type and argument), shortest form.
pub fn encode_head(out: &mut Vec<u8>, major: u8, argument: u64) {
    let m = major << 5;
    if argument < 24 {
        out.push(m | argument as u8);
    } else if argument <= u64::from(u8::MAX) {
        out.extend_from_slice(&[m | 24, argument as u8]);
    } else if argument <= u64::from(u16::MAX) {
        out.push(m | 25);
        out.extend_from_slice(&(argument as u16).to_be_bytes());
    } else if argument <= u64::from(u32::MAX) {
        out.push(m | 26);
        out.extend_from_slice(&(argument as u32).to_be_bytes());
    } else {
        out.push(m | 27);
        out.extend_from_slice(&argument.to_be_bytes());
    }
}

/// Appends a byte string.
pub fn encode_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    encode_head(out, 2, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// Appends a text string.
pub fn encode_text(out: &mut Vec<u8>, text: &str) {
    encode_head(out, 3, text.len() as u64);
    out.extend_from_slice(text.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_the_subset() {
        // {"a": [1, -2, h'0102', null, true]}
        let bytes = [0xa1, 0x61, b'a', 0x85, 0x01, 0x21, 0x42, 0x01, 0x02, 0xf6, 0xf5];
        let v = decode(&bytes).unwrap();
        assert_eq!(
            v.get("a"),
            Some(&Value::Array(vec![
                Value::Unsigned(1),
                Value::Negative(1),
                Value::Bytes(&[1, 2]),
                Value::Null,
                Value::Bool(true),
            ]))
        );
    }

    #[test]
    fn refuses_what_is_not_accepted() {
        let cases: &[(&[u8], &str)] = &[
            (&[0x5f, 0x41, 0x00, 0xff], "indefinite-length item (not accepted)"),
            (&[0xf9, 0x3c, 0x00], "float or simple value (not accepted)"),
            (&[0x01, 0x02], "trailing bytes after the item"),
            (&[0x5a, 0xff, 0xff, 0xff, 0xff], "length past the end of the input"),
            (
                &[0x9b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
                "length past the end of the input",
            ),
            (&[0xa2, 0x01, 0x02, 0x01, 0x03], "duplicate map key"),
            (&[0x62, 0xff, 0xfe], "text string that is not UTF-8"),
            (&[], "length past the end of the input"),
            (&[0x1c], "reserved additional information value"),
        ];
        for (bytes, what) in cases {
            assert_eq!(decode(bytes).unwrap_err().what, *what, "{bytes:02x?}");
        }
    }

    #[test]
    fn bounds_the_nesting() {
        let mut deep = vec![0x81; MAX_DEPTH + 1];
        deep.push(0x00);
        assert_eq!(decode(&deep).unwrap_err().what, "nesting too deep");
        let ok = [vec![0x81; MAX_DEPTH], vec![0x00]].concat();
        assert!(decode(&ok).is_ok());
    }

    #[test]
    fn encodes_heads_in_shortest_form() {
        for (arg, expected) in [
            (0u64, vec![0x40]),
            (23, vec![0x57]),
            (24, vec![0x58, 24]),
            (256, vec![0x59, 1, 0]),
            (65536, vec![0x5a, 0, 1, 0, 0]),
            (1 << 32, vec![0x5b, 0, 0, 0, 1, 0, 0, 0, 0]),
        ] {
            let mut out = Vec::new();
            encode_head(&mut out, 2, arg);
            assert_eq!(out, expected);
        }
    }
}
