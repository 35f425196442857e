//! The metadata section (EIF v4): who built the image, from what, when.
//!
//! nitro-cli stores a JSON object of the aws-nitro-enclaves-image-format `EifIdentityInfo`
//! shape, keys in this order:
//!
//! ```text
//! {"ImageName": str, "ImageVersion": str,
//!  "BuildMetadata": {"BuildTime": str, "BuildTool": str, "BuildToolVersion": str,
//!                    "OperatingSystem": str, "KernelVersion": str},
//!  "DockerInfo": any, "CustomMetadata": any}
//! ```
//!
//! The section is neither measured nor signed, so nothing here changes a PCR; but it is in the
//! file, so for byte-identical EIFs every value is fixed by the inputs: the build time comes
//! from SOURCE_DATE_EPOCH (the reproducible-builds convention) or is the epoch, and there is
//! no docker image (`DockerInfo` is null, as is `CustomMetadata`). Written by hand, compact,
//! as serde_json would write it.

use std::fmt::Write as _;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Metadata {
    pub image_name: String,
    pub image_version: String,
    pub build_time: String,
    pub build_tool: String,
    pub build_tool_version: String,
    pub operating_system: String,
    pub kernel_version: String,
}

/// A JSON string literal, quotes included.
pub fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for ch in s.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                // Writing to a String cannot fail.
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

impl Metadata {
    pub fn to_json(&self) -> String {
        format!(
            "{{\"ImageName\":{},\"ImageVersion\":{},\"BuildMetadata\":{{\"BuildTime\":{},\"BuildTool\":{},\
             \"BuildToolVersion\":{},\"OperatingSystem\":{},\"KernelVersion\":{}}},\"DockerInfo\":null,\
             \"CustomMetadata\":null}}",
            json_string(&self.image_name),
            json_string(&self.image_version),
            json_string(&self.build_time),
            json_string(&self.build_tool),
            json_string(&self.build_tool_version),
            json_string(&self.operating_system),
            json_string(&self.kernel_version),
        )
    }
}

/// RFC 3339 in UTC with a "+00:00" offset, as nitro-cli's BuildTime, for seconds since the
/// epoch (civil date from days since 1970-01-01, proleptic Gregorian calendar).
pub fn rfc3339(secs: u64) -> String {
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (h, m, s) = (rem / 3600, rem % 3600 / 60, rem % 60);
    // Shift the epoch to 0000-03-01 so that leap days end each 400/100/4-year cycle.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    format!("{year:04}-{month:02}-{d:02}T{h:02}:{m:02}:{s:02}+00:00")
}

/// The kernel release a bzImage names, if it says one: the x86 boot protocol's setup header
/// ("HdrS" at 0x202) has at 0x20E a pointer, less 0x200, to a NUL-terminated string that
/// begins with the release ("6.1.0 (builder@host) #1 ..."). Anything odd gives None.
pub fn bzimage_kernel_version(kernel: &[u8]) -> Option<String> {
    const MAX_LEN: usize = 256;
    if kernel.get(0x202..0x206)? != b"HdrS" {
        return None;
    }
    let ptr = u16::from_le_bytes(kernel.get(0x20E..0x210)?.try_into().ok()?);
    if ptr == 0 {
        return None;
    }
    let start = usize::from(ptr).checked_add(0x200)?;
    let tail = kernel.get(start..)?;
    let text = &tail[..tail.len().min(MAX_LEN)];
    let end = text.iter().position(|&b| b == 0 || b == b' ')?;
    let release = std::str::from_utf8(&text[..end]).ok()?;
    if release.is_empty() || !release.bytes().all(|b| b.is_ascii_graphic()) {
        return None;
    }
    Some(release.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00+00:00");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00+00:00");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20+00:00");
        assert_eq!(rfc3339(4_107_542_399), "2100-02-28T23:59:59+00:00");
    }

    #[test]
    fn json_escapes() {
        assert_eq!(json_string("a\"b\\c\n\u{1}é"), "\"a\\\"b\\\\c\\n\\u0001é\"");
    }

    #[test]
    fn metadata_shape() {
        let m = Metadata {
            image_name: "n".into(),
            image_version: "v".into(),
            build_time: rfc3339(0),
            build_tool: "t".into(),
            build_tool_version: "1".into(),
            operating_system: "Linux".into(),
            kernel_version: "unknown".into(),
        };
        assert_eq!(
            m.to_json(),
            "{\"ImageName\":\"n\",\"ImageVersion\":\"v\",\"BuildMetadata\":{\"BuildTime\":\"1970-01-01T00:00:00+00:00\",\
             \"BuildTool\":\"t\",\"BuildToolVersion\":\"1\",\"OperatingSystem\":\"Linux\",\"KernelVersion\":\"unknown\"},\
             \"DockerInfo\":null,\"CustomMetadata\":null}"
        );
    }

    #[test]
    fn kernel_version_from_setup_header() {
        let mut k = vec![0u8; 0x400];
        k[0x202..0x206].copy_from_slice(b"HdrS");
        k[0x20E..0x210].copy_from_slice(&0x100u16.to_le_bytes());
        k[0x300..0x316].copy_from_slice(b"4.14.256-209.484 (b@h)");
        assert_eq!(bzimage_kernel_version(&k).as_deref(), Some("4.14.256-209.484"));
        k[0x20E] = 0xF0; // points past the end
        k[0x20F] = 0x7F;
        assert_eq!(bzimage_kernel_version(&k), None);
        assert_eq!(bzimage_kernel_version(b"not a kernel"), None);
    }
}
