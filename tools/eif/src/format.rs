//! The EIF container: one header, then sections, each a small header and its body.
//!
//! This is the file `nitro-cli run-enclave` loads. We read it the way the hypervisor and
//! QEMU's loader must trust it, so the reader checks every field before anything uses it,
//! in the order the bytes come: the file's length against `MAX_EIF_LEN`, the header, then each
//! section's place, header, type and size, and the CRC last (so that a damaged structure is
//! named for what is wrong with it, not reported as a CRC mismatch). The writer produces the
//! layout nitro-cli writes, and `Eif::read` of what it writes gives back the same parts.
//!
//! Policy for a malformed file: refuse it whole, with the first problem found, as an
//! `EifError` naming the bad value. We are stricter than QEMU's loader in four ways, each
//! because it would let two tools disagree about what is measured or leave bytes unchecked:
//! sections must lie back to back from the end of the header to the end of the file (no gaps,
//! overlaps or trailing bytes), in the order kernel, cmdline, [metadata], ramdisks; unused
//! header slots must be zero; and signed files are refused (PCR8 is not computed here).
//!
//! The header, 548 bytes, big-endian (aws-nitro-enclaves-image-format `EifHeader`):
//!
//! ```text
//!  offset  size  field
//!       0     4  magic ".eif"
//!       4     2  version            4 (V4 added the metadata section; QEMU wants >= 4)
//!       6     2  flags              bit 0: aarch64; we accept only 0 (x86_64)
//!       8     8  default_mem        1 GiB, as nitro-cli writes it (run-enclave ignores it)
//!      16     8  default_cpus       2, likewise
//!      24     2  reserved           0
//!      26     2  num_sections       at most MAX_SECTIONS
//!      28   256  section_offsets    32 x u64, from the start of the file
//!     284   256  section_sizes      32 x u64, body sizes (without the 12-byte section header)
//!     540     4  unused             0
//!     544     4  eif_crc32          CRC-32 of every other byte of the file (below)
//! ```
//!
//! A section, at its offset (`EifSectionHeader`):
//!
//! ```text
//!       0     2  section_type       1 kernel, 2 cmdline, 3 ramdisk, 4 signature, 5 metadata
//!       2     2  flags              0
//!       4     8  section_size       must equal section_sizes[i]
//!      12     .  body
//! ```
//!
//! The CRC (`EifBuilder::compute_crc`, and QEMU checks it the same way): CRC-32/ISO-HDLC over
//! the header's first 544 bytes, then each section's 12-byte header and body, in file order.

use crate::crc32::Crc32;
use crate::measure::Measurements;
use std::fmt;

pub const MAGIC: [u8; 4] = *b".eif";
/// The version we write; the oldest we read (the first with a metadata section).
pub const VERSION: u16 = 4;
pub const HEADER_LEN: usize = 548;
pub const SECTION_HEADER_LEN: usize = 12;
/// Slots in the header's offset and size tables.
pub const MAX_SECTIONS: usize = 32;
/// Offset of the CRC field: everything before it is covered by the CRC.
pub const CRC_OFFSET: usize = 544;
/// What nitro-cli writes in the header's default memory and CPU fields.
pub const DEFAULT_MEM: u64 = 1024 * 1024 * 1024;
pub const DEFAULT_CPUS: u64 = 2;
/// Largest EIF read or written: 4 GiB. Ours is about 40 MB; nitro-cli needs 4 x the EIF's size
/// in enclave memory, so a larger file is a mistake, and the reader holds it in memory.
pub const MAX_EIF_LEN: u64 = 4 * 1024 * 1024 * 1024;
/// Longest kernel command line, in bytes: x86's COMMAND_LINE_SIZE is 2048 with its NUL.
pub const MAX_CMDLINE_LEN: usize = 2047;
/// Largest metadata section: a JSON object of a few hundred bytes (nitro-cli's, with the
/// docker inspect output in it, a few KiB).
pub const MAX_METADATA_LEN: usize = 1024 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SectionKind {
    Kernel,
    Cmdline,
    Ramdisk,
    Signature,
    Metadata,
}

impl SectionKind {
    pub fn from_u16(v: u16) -> Option<SectionKind> {
        match v {
            1 => Some(SectionKind::Kernel),
            2 => Some(SectionKind::Cmdline),
            3 => Some(SectionKind::Ramdisk),
            4 => Some(SectionKind::Signature),
            5 => Some(SectionKind::Metadata),
            _ => None,
        }
    }

    pub fn to_u16(self) -> u16 {
        match self {
            SectionKind::Kernel => 1,
            SectionKind::Cmdline => 2,
            SectionKind::Ramdisk => 3,
            SectionKind::Signature => 4,
            SectionKind::Metadata => 5,
        }
    }

    /// The name nitro-cli and QEMU use for it.
    pub fn name(self) -> &'static str {
        match self {
            SectionKind::Kernel => "kernel",
            SectionKind::Cmdline => "cmdline",
            SectionKind::Ramdisk => "ramdisk",
            SectionKind::Signature => "signature",
            SectionKind::Metadata => "metadata",
        }
    }

    /// Position in the layout we accept: kernel, cmdline, metadata, then ramdisks.
    fn rank(self) -> u8 {
        match self {
            SectionKind::Kernel => 0,
            SectionKind::Cmdline => 1,
            SectionKind::Metadata => 2,
            SectionKind::Ramdisk => 3,
            SectionKind::Signature => 4,
        }
    }
}

impl fmt::Display for SectionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Everything that can be wrong with an EIF, read or about to be written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EifError {
    /// The file is larger than `MAX_EIF_LEN` (or would be, when writing).
    FileTooLarge(u64),
    /// Fewer bytes than a header.
    HeaderTruncated(usize),
    BadMagic([u8; 4]),
    /// Older than `VERSION`.
    UnsupportedVersion(u16),
    /// Non-zero flags: 1 is an aarch64 image.
    UnsupportedFlags(u16),
    /// num_sections above `MAX_SECTIONS` (or too many ramdisks to write).
    TooManySections(usize),
    /// A header table slot at or after num_sections is not zero.
    UnusedSlotNotZero(usize),
    /// A non-zero reserved or unused header field.
    ReservedNotZero(u64),
    /// Section `index` starts before the previous one ends (or inside the header).
    SectionOverlap { index: usize, offset: u64, expected: u64 },
    /// Section `index` starts after the previous one ends, leaving unchecked bytes.
    SectionGap { index: usize, offset: u64, expected: u64 },
    /// Section `index` (header or body) ends at `end`, past the file's `file_len` bytes.
    SectionBeyondFile { index: usize, end: u64, file_len: u64 },
    /// Section `index`'s own size field differs from the header's table.
    SectionSizeMismatch { index: usize, table: u64, section: u64 },
    SectionFlags { index: usize, flags: u16 },
    UnknownSectionType { index: usize, section_type: u16 },
    /// A second kernel, cmdline or metadata section.
    DuplicateSection { index: usize, kind: SectionKind },
    /// A section of `kind` after one that must come after it.
    SectionOutOfOrder { index: usize, kind: SectionKind, after: SectionKind },
    /// A signature section: signed EIFs are not supported.
    Signed { index: usize },
    MissingSection(SectionKind),
    /// Bytes after the last section.
    TrailingBytes(u64),
    CmdlineTooLong(usize),
    /// A NUL at this position of the cmdline.
    CmdlineHasNul(usize),
    MetadataTooLarge(usize),
    /// The metadata is not UTF-8 (its error's byte position).
    MetadataNotUtf8(usize),
    CrcMismatch { stored: u32, computed: u32 },
}

impl fmt::Display for EifError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use EifError::*;
        match self {
            FileTooLarge(n) => write!(f, "EIF of {n} bytes is larger than the {MAX_EIF_LEN}-byte limit"),
            HeaderTruncated(n) => write!(f, "file of {n} bytes is shorter than an EIF header ({HEADER_LEN} bytes)"),
            BadMagic(m) => write!(f, "not an EIF: magic is {m:02x?}, expected \".eif\""),
            UnsupportedVersion(v) => write!(f, "EIF version {v} is not supported (need {VERSION} or later)"),
            UnsupportedFlags(fl) => write!(
                f,
                "EIF flags 0x{fl:04x} are not supported (only 0, x86_64{})",
                if fl & 1 != 0 { "; bit 0 means aarch64" } else { "" }
            ),
            TooManySections(n) => write!(f, "{n} sections, more than the format's {MAX_SECTIONS}"),
            UnusedSlotNotZero(i) => write!(f, "header slot {i} is beyond num_sections but not zero"),
            ReservedNotZero(v) => write!(f, "a reserved header field is {v}, not 0"),
            SectionOverlap { index, offset, expected } => write!(
                f,
                "section {index} starts at {offset}, before the end of what precedes it ({expected}): overlapping or out of order"
            ),
            SectionGap { index, offset, expected } => write!(
                f,
                "section {index} starts at {offset}, leaving a gap after the previous end ({expected})"
            ),
            SectionBeyondFile { index, end, file_len } => {
                write!(f, "section {index} ends at byte {end}, beyond the file's {file_len} bytes (truncated?)")
            }
            SectionSizeMismatch { index, table, section } => write!(
                f,
                "section {index}: the header says {table} bytes, its section header says {section}"
            ),
            SectionFlags { index, flags } => write!(f, "section {index} has flags 0x{flags:04x}, expected 0"),
            UnknownSectionType { index, section_type } => write!(f, "section {index} has unknown type {section_type}"),
            DuplicateSection { index, kind } => write!(f, "section {index} is a second {kind} section"),
            SectionOutOfOrder { index, kind, after } => write!(
                f,
                "section {index} is a {kind} section after a {after} section (expected order: kernel, cmdline, metadata, ramdisks)"
            ),
            Signed { index } => write!(f, "section {index} is a signature: signed EIFs are not supported"),
            MissingSection(k) => write!(f, "no {k} section"),
            TrailingBytes(n) => write!(f, "{n} bytes after the last section"),
            CmdlineTooLong(n) => write!(f, "kernel command line of {n} bytes is longer than {MAX_CMDLINE_LEN}"),
            CmdlineHasNul(p) => write!(f, "kernel command line has a NUL byte at position {p}"),
            MetadataTooLarge(n) => write!(f, "metadata section of {n} bytes is larger than {MAX_METADATA_LEN}"),
            MetadataNotUtf8(p) => write!(f, "metadata section is not UTF-8 (at byte {p})"),
            CrcMismatch { stored, computed } => {
                write!(f, "CRC mismatch: the header says 0x{stored:08x}, the file's bytes give 0x{computed:08x}")
            }
        }
    }
}

impl std::error::Error for EifError {}

/// A borrowed slice read front to back; `take` fails rather than reading past the end.
struct Cursor<'a> {
    buf: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.buf.len() {
            return None;
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Some(head)
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2).and_then(|b| b.try_into().ok()).map(u16::from_be_bytes)
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4).and_then(|b| b.try_into().ok()).map(u32::from_be_bytes)
    }
    fn u64(&mut self) -> Option<u64> {
        self.take(8).and_then(|b| b.try_into().ok()).map(u64::from_be_bytes)
    }
}

/// Where one section is and what it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SectionInfo {
    pub kind: SectionKind,
    /// Offset of its 12-byte section header.
    pub offset: u64,
    /// Size of its body.
    pub size: u64,
}

/// A checked EIF: its parts, copied out of the file, and its measurements.
#[derive(Clone, Debug)]
pub struct Eif {
    version: u16,
    flags: u16,
    default_mem: u64,
    default_cpus: u64,
    crc: u32,
    sections: Vec<SectionInfo>,
    kernel: Vec<u8>,
    cmdline: Vec<u8>,
    metadata: Option<Vec<u8>>,
    ramdisks: Vec<Vec<u8>>,
    measurements: Measurements,
}

fn check_cmdline(cmdline: &[u8]) -> Result<(), EifError> {
    if cmdline.len() > MAX_CMDLINE_LEN {
        return Err(EifError::CmdlineTooLong(cmdline.len()));
    }
    if let Some(p) = cmdline.iter().position(|&b| b == 0) {
        return Err(EifError::CmdlineHasNul(p));
    }
    Ok(())
}

fn check_metadata(metadata: &[u8]) -> Result<(), EifError> {
    if metadata.len() > MAX_METADATA_LEN {
        return Err(EifError::MetadataTooLarge(metadata.len()));
    }
    std::str::from_utf8(metadata).map_err(|e| EifError::MetadataNotUtf8(e.valid_up_to()))?;
    Ok(())
}

impl Eif {
    /// Checks a whole EIF file and returns its parts.
    pub fn read(bytes: &[u8]) -> Result<Eif, EifError> {
        let file_len = bytes.len() as u64;
        if file_len > MAX_EIF_LEN {
            return Err(EifError::FileTooLarge(file_len));
        }
        let truncated = || EifError::HeaderTruncated(bytes.len());
        let mut c = Cursor { buf: bytes };
        let header = c.take(HEADER_LEN).ok_or_else(truncated)?;
        let mut h = Cursor { buf: header };
        let magic: [u8; 4] = h.take(4).and_then(|m| m.try_into().ok()).ok_or_else(truncated)?;
        if magic != MAGIC {
            return Err(EifError::BadMagic(magic));
        }
        let version = h.u16().ok_or_else(truncated)?;
        if version < VERSION {
            return Err(EifError::UnsupportedVersion(version));
        }
        let flags = h.u16().ok_or_else(truncated)?;
        if flags != 0 {
            return Err(EifError::UnsupportedFlags(flags));
        }
        let default_mem = h.u64().ok_or_else(truncated)?;
        let default_cpus = h.u64().ok_or_else(truncated)?;
        let reserved = h.u16().ok_or_else(truncated)?;
        if reserved != 0 {
            return Err(EifError::ReservedNotZero(u64::from(reserved)));
        }
        let num_sections = usize::from(h.u16().ok_or_else(truncated)?);
        if num_sections > MAX_SECTIONS {
            return Err(EifError::TooManySections(num_sections));
        }
        let mut offsets = [0u64; MAX_SECTIONS];
        for o in offsets.iter_mut() {
            *o = h.u64().ok_or_else(truncated)?;
        }
        let mut sizes = [0u64; MAX_SECTIONS];
        for s in sizes.iter_mut() {
            *s = h.u64().ok_or_else(truncated)?;
        }
        let unused = h.u32().ok_or_else(truncated)?;
        if unused != 0 {
            return Err(EifError::ReservedNotZero(u64::from(unused)));
        }
        let stored_crc = h.u32().ok_or_else(truncated)?;
        for i in num_sections..MAX_SECTIONS {
            if offsets[i] != 0 || sizes[i] != 0 {
                return Err(EifError::UnusedSlotNotZero(i));
            }
        }

        let mut crc = Crc32::new();
        crc.update(&header[..CRC_OFFSET]);
        let mut sections = Vec::with_capacity(num_sections);
        let mut kernel = None;
        let mut cmdline = None;
        let mut metadata = None;
        let mut ramdisks = Vec::new();
        let mut previous: Option<SectionKind> = None;
        let mut expected = HEADER_LEN as u64;
        for i in 0..num_sections {
            let offset = offsets[i];
            if offset < expected {
                return Err(EifError::SectionOverlap { index: i, offset, expected });
            }
            if offset > expected {
                return Err(EifError::SectionGap { index: i, offset, expected });
            }
            let beyond = |end: u64| EifError::SectionBeyondFile { index: i, end, file_len };
            let body_start = offset.checked_add(SECTION_HEADER_LEN as u64).ok_or_else(|| beyond(u64::MAX))?;
            let end = body_start.checked_add(sizes[i]).ok_or_else(|| beyond(u64::MAX))?;
            // The table's size is checked against the file before the section header is read.
            if end > file_len {
                return Err(beyond(end));
            }
            // offset == expected == bytes consumed so far, so the cursor is at the section.
            let section_header = c.take(SECTION_HEADER_LEN).ok_or_else(|| beyond(body_start))?;
            let mut s = Cursor { buf: section_header };
            let section_type = s.u16().ok_or_else(|| beyond(body_start))?;
            let section_flags = s.u16().ok_or_else(|| beyond(body_start))?;
            let section_size = s.u64().ok_or_else(|| beyond(body_start))?;
            if section_size != sizes[i] {
                return Err(EifError::SectionSizeMismatch { index: i, table: sizes[i], section: section_size });
            }
            if section_flags != 0 {
                return Err(EifError::SectionFlags { index: i, flags: section_flags });
            }
            let kind = SectionKind::from_u16(section_type)
                .ok_or(EifError::UnknownSectionType { index: i, section_type })?;
            if kind == SectionKind::Signature {
                return Err(EifError::Signed { index: i });
            }
            if let Some(prev) = previous {
                if kind == prev && kind != SectionKind::Ramdisk {
                    return Err(EifError::DuplicateSection { index: i, kind });
                }
                if kind.rank() < prev.rank() {
                    return Err(EifError::SectionOutOfOrder { index: i, kind, after: prev });
                }
            }
            previous = Some(kind);
            let len = usize::try_from(sizes[i]).map_err(|_| beyond(end))?;
            let body = c.take(len).ok_or_else(|| beyond(end))?;
            crc.update(section_header);
            crc.update(body);
            match kind {
                SectionKind::Kernel => kernel = Some(body.to_vec()),
                SectionKind::Cmdline => {
                    check_cmdline(body)?;
                    cmdline = Some(body.to_vec());
                }
                SectionKind::Metadata => {
                    check_metadata(body)?;
                    metadata = Some(body.to_vec());
                }
                SectionKind::Ramdisk => ramdisks.push(body.to_vec()),
                SectionKind::Signature => {}
            }
            sections.push(SectionInfo { kind, offset, size: sizes[i] });
            expected = end;
        }
        if expected < file_len {
            return Err(EifError::TrailingBytes(file_len - expected));
        }
        let kernel = kernel.ok_or(EifError::MissingSection(SectionKind::Kernel))?;
        let cmdline = cmdline.ok_or(EifError::MissingSection(SectionKind::Cmdline))?;
        if ramdisks.is_empty() {
            return Err(EifError::MissingSection(SectionKind::Ramdisk));
        }
        let computed = crc.finish();
        if computed != stored_crc {
            return Err(EifError::CrcMismatch { stored: stored_crc, computed });
        }
        let refs: Vec<&[u8]> = ramdisks.iter().map(Vec::as_slice).collect();
        let measurements = Measurements::of(&kernel, &cmdline, &refs);
        Ok(Eif {
            version,
            flags,
            default_mem,
            default_cpus,
            crc: stored_crc,
            sections,
            kernel,
            cmdline,
            metadata,
            ramdisks,
            measurements,
        })
    }

    pub fn version(&self) -> u16 {
        self.version
    }
    pub fn flags(&self) -> u16 {
        self.flags
    }
    pub fn default_mem(&self) -> u64 {
        self.default_mem
    }
    pub fn default_cpus(&self) -> u64 {
        self.default_cpus
    }
    pub fn crc(&self) -> u32 {
        self.crc
    }
    pub fn sections(&self) -> &[SectionInfo] {
        &self.sections
    }
    pub fn kernel(&self) -> &[u8] {
        &self.kernel
    }
    /// The command line as stored: no trailing NUL, no newline.
    pub fn cmdline(&self) -> &[u8] {
        &self.cmdline
    }
    pub fn metadata(&self) -> Option<&[u8]> {
        self.metadata.as_deref()
    }
    pub fn ramdisks(&self) -> &[Vec<u8>] {
        &self.ramdisks
    }
    /// All ramdisks one after the other, as QEMU's EIF loader builds its initrd.
    pub fn initrd(&self) -> Vec<u8> {
        self.ramdisks.concat()
    }
    pub fn measurements(&self) -> &Measurements {
        &self.measurements
    }
}

/// What goes into an EIF. `write` lays it out as nitro-cli does: header, kernel, cmdline,
/// metadata, ramdisks in the order given (the first is the boot ramdisk, measured into PCR1;
/// the others into PCR2).
#[derive(Clone, Debug, Default)]
pub struct EifWriter {
    pub kernel: Vec<u8>,
    pub cmdline: Vec<u8>,
    pub metadata: Vec<u8>,
    pub ramdisks: Vec<Vec<u8>>,
}

impl EifWriter {
    /// The EIF's bytes and its measurements.
    pub fn write(&self) -> Result<(Vec<u8>, Measurements), EifError> {
        check_cmdline(&self.cmdline)?;
        check_metadata(&self.metadata)?;
        if self.ramdisks.is_empty() {
            return Err(EifError::MissingSection(SectionKind::Ramdisk));
        }
        let mut bodies: Vec<(SectionKind, &[u8])> = vec![
            (SectionKind::Kernel, &self.kernel),
            (SectionKind::Cmdline, &self.cmdline),
            (SectionKind::Metadata, &self.metadata),
        ];
        bodies.extend(self.ramdisks.iter().map(|r| (SectionKind::Ramdisk, r.as_slice())));
        if bodies.len() > MAX_SECTIONS {
            return Err(EifError::TooManySections(bodies.len()));
        }
        let mut offsets = [0u64; MAX_SECTIONS];
        let mut sizes = [0u64; MAX_SECTIONS];
        let mut at = HEADER_LEN as u64;
        for (i, (_, body)) in bodies.iter().enumerate() {
            offsets[i] = at;
            sizes[i] = body.len() as u64;
            at = at
                .checked_add(SECTION_HEADER_LEN as u64)
                .and_then(|a| a.checked_add(body.len() as u64))
                .ok_or(EifError::FileTooLarge(u64::MAX))?;
            if at > MAX_EIF_LEN {
                return Err(EifError::FileTooLarge(at));
            }
        }
        // at <= MAX_EIF_LEN, which fits in usize on the 64-bit hosts this tool runs on.
        let total = usize::try_from(at).map_err(|_| EifError::FileTooLarge(at))?;
        let mut out = Vec::with_capacity(total);
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&VERSION.to_be_bytes());
        out.extend_from_slice(&0u16.to_be_bytes()); // flags: x86_64
        out.extend_from_slice(&DEFAULT_MEM.to_be_bytes());
        out.extend_from_slice(&DEFAULT_CPUS.to_be_bytes());
        out.extend_from_slice(&0u16.to_be_bytes()); // reserved
        // bodies.len() <= MAX_SECTIONS (32).
        out.extend_from_slice(&(bodies.len() as u16).to_be_bytes());
        for o in offsets {
            out.extend_from_slice(&o.to_be_bytes());
        }
        for s in sizes {
            out.extend_from_slice(&s.to_be_bytes());
        }
        out.extend_from_slice(&0u32.to_be_bytes()); // unused
        debug_assert_eq!(out.len(), CRC_OFFSET);
        out.extend_from_slice(&0u32.to_be_bytes()); // CRC, filled in below
        for (kind, body) in &bodies {
            out.extend_from_slice(&kind.to_u16().to_be_bytes());
            out.extend_from_slice(&0u16.to_be_bytes());
            out.extend_from_slice(&(body.len() as u64).to_be_bytes());
            out.extend_from_slice(body);
        }
        let mut crc = Crc32::new();
        crc.update(&out[..CRC_OFFSET]);
        crc.update(&out[HEADER_LEN..]);
        out[CRC_OFFSET..HEADER_LEN].copy_from_slice(&crc.finish().to_be_bytes());
        let refs: Vec<&[u8]> = self.ramdisks.iter().map(Vec::as_slice).collect();
        Ok((out, Measurements::of(&self.kernel, &self.cmdline, &refs)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crc32::crc32;
    use crate::measure::pcr_of;

    fn parts() -> EifWriter {
        EifWriter {
            kernel: b"KERNEL-BYTES".to_vec(),
            cmdline: b"console=ttyS0 reboot=k".to_vec(),
            metadata: b"{\"ImageName\":\"t\"}".to_vec(),
            ramdisks: vec![b"boot-ramdisk".to_vec(), b"app-ramdisk".to_vec()],
        }
    }

    fn good() -> Vec<u8> {
        parts().write().unwrap().0
    }

    fn put_u16(b: &mut [u8], at: usize, v: u16) {
        b[at..at + 2].copy_from_slice(&v.to_be_bytes());
    }
    fn put_u64(b: &mut [u8], at: usize, v: u64) {
        b[at..at + 8].copy_from_slice(&v.to_be_bytes());
    }
    fn offset_at(i: usize) -> usize {
        28 + 8 * i
    }
    fn size_at(i: usize) -> usize {
        284 + 8 * i
    }
    fn get_u64(b: &[u8], at: usize) -> u64 {
        u64::from_be_bytes(b[at..at + 8].try_into().unwrap())
    }
    /// Recomputes the CRC, so that a test reaches the structural check it is about.
    fn fix_crc(b: &mut [u8]) {
        let mut c = Crc32::new();
        c.update(&b[..CRC_OFFSET]);
        c.update(&b[HEADER_LEN..]);
        let v = c.finish();
        b[CRC_OFFSET..HEADER_LEN].copy_from_slice(&v.to_be_bytes());
    }

    #[test]
    fn sizes_pinned() {
        assert_eq!(HEADER_LEN, 4 + 2 + 2 + 8 + 8 + 2 + 2 + 32 * 8 * 2 + 4 + 4);
        assert_eq!(CRC_OFFSET, HEADER_LEN - 4);
    }

    #[test]
    fn layout_as_nitro_cli_writes_it() {
        let b = good();
        assert_eq!(&b[0..4], b".eif");
        assert_eq!(&b[4..8], &[0, 4, 0, 0]);
        assert_eq!(get_u64(&b, 8), 1 << 30);
        assert_eq!(get_u64(&b, 16), 2);
        assert_eq!(&b[24..28], &[0, 0, 0, 5]);
        let w = parts();
        let kinds = [1u16, 2, 5, 3, 3];
        let bodies: [&[u8]; 5] = [&w.kernel, &w.cmdline, &w.metadata, &w.ramdisks[0], &w.ramdisks[1]];
        let mut at = HEADER_LEN as u64;
        for i in 0..5 {
            assert_eq!(get_u64(&b, offset_at(i)), at);
            assert_eq!(get_u64(&b, size_at(i)), bodies[i].len() as u64);
            let o = at as usize;
            assert_eq!(u16::from_be_bytes([b[o], b[o + 1]]), kinds[i]);
            assert_eq!(&b[o + 2..o + 4], &[0, 0]);
            assert_eq!(get_u64(&b, o + 4), bodies[i].len() as u64);
            assert_eq!(&b[o + 12..o + 12 + bodies[i].len()], bodies[i]);
            at += 12 + bodies[i].len() as u64;
        }
        assert_eq!(at, b.len() as u64);
        // The CRC covers the whole file but its own four bytes.
        let mut covered = b[..CRC_OFFSET].to_vec();
        covered.extend_from_slice(&b[HEADER_LEN..]);
        assert_eq!(u32::from_be_bytes(b[544..548].try_into().unwrap()), crc32(&covered));
    }

    #[test]
    fn round_trip() {
        let w = parts();
        let (bytes, m) = w.write().unwrap();
        let e = Eif::read(&bytes).unwrap();
        assert_eq!(e.kernel(), w.kernel.as_slice());
        assert_eq!(e.cmdline(), w.cmdline.as_slice());
        assert_eq!(e.metadata(), Some(w.metadata.as_slice()));
        assert_eq!(e.ramdisks(), w.ramdisks.as_slice());
        assert_eq!(e.initrd(), b"boot-ramdiskapp-ramdisk".to_vec());
        assert_eq!(e.measurements(), &m);
        assert_eq!(m.pcr2, pcr_of(&[b"app-ramdisk"]));
        assert_eq!(e.sections().iter().map(|s| s.kind).collect::<Vec<_>>(), vec![
            SectionKind::Kernel,
            SectionKind::Cmdline,
            SectionKind::Metadata,
            SectionKind::Ramdisk,
            SectionKind::Ramdisk
        ]);
        // And writing what was read gives the same file.
        let again = EifWriter {
            kernel: e.kernel().to_vec(),
            cmdline: e.cmdline().to_vec(),
            metadata: e.metadata().unwrap().to_vec(),
            ramdisks: e.ramdisks().to_vec(),
        };
        assert_eq!(again.write().unwrap().0, bytes);
    }

    #[test]
    fn deterministic() {
        assert_eq!(good(), good());
    }

    #[test]
    fn bad_magic() {
        let mut b = good();
        b[0] = b'E';
        assert_eq!(Eif::read(&b).unwrap_err(), EifError::BadMagic(*b"Eeif"));
    }

    #[test]
    fn short_header() {
        let b = good();
        assert_eq!(Eif::read(&b[..547]).unwrap_err(), EifError::HeaderTruncated(547));
        assert_eq!(Eif::read(&[]).unwrap_err(), EifError::HeaderTruncated(0));
    }

    #[test]
    fn version_3() {
        let mut b = good();
        put_u16(&mut b, 4, 3);
        assert_eq!(Eif::read(&b).unwrap_err(), EifError::UnsupportedVersion(3));
    }

    #[test]
    fn flags_1_is_aarch64() {
        let mut b = good();
        put_u16(&mut b, 6, 1);
        assert_eq!(Eif::read(&b).unwrap_err(), EifError::UnsupportedFlags(1));
    }

    #[test]
    fn bad_crc() {
        let mut b = good();
        let last = b.len() - 1;
        b[last] ^= 1;
        let stored = u32::from_be_bytes(b[544..548].try_into().unwrap());
        match Eif::read(&b).unwrap_err() {
            EifError::CrcMismatch { stored: s, computed } => {
                assert_eq!(s, stored);
                assert_ne!(computed, stored);
            }
            e => panic!("{e:?}"),
        }
        // A flipped bit in the stored CRC itself.
        let mut b = good();
        b[547] ^= 0x80;
        assert!(matches!(Eif::read(&b).unwrap_err(), EifError::CrcMismatch { .. }));
    }

    #[test]
    fn truncated_section() {
        let b = good();
        let len = b.len() as u64;
        assert_eq!(
            Eif::read(&b[..b.len() - 3]).unwrap_err(),
            EifError::SectionBeyondFile { index: 4, end: len, file_len: len - 3 }
        );
        // Cut inside the last section's 12-byte header.
        let last = get_u64(&b, offset_at(4));
        let cut = (last + 5) as usize;
        assert_eq!(
            Eif::read(&b[..cut]).unwrap_err(),
            EifError::SectionBeyondFile { index: 4, end: len, file_len: cut as u64 }
        );
    }

    #[test]
    fn section_beyond_file() {
        let mut b = good();
        let size = get_u64(&b, size_at(4));
        put_u64(&mut b, size_at(4), size + 1000);
        let end = get_u64(&b, offset_at(4)) + 12 + size + 1000;
        assert_eq!(
            Eif::read(&b).unwrap_err(),
            EifError::SectionBeyondFile { index: 4, end, file_len: b.len() as u64 }
        );
        // An offset so large that offset + size overflows u64.
        let mut b = good();
        put_u64(&mut b, size_at(4), u64::MAX - 4);
        assert_eq!(
            Eif::read(&b).unwrap_err(),
            EifError::SectionBeyondFile { index: 4, end: u64::MAX, file_len: b.len() as u64 }
        );
    }

    #[test]
    fn overlap_and_wrong_order() {
        // Section 1 pointed back at section 0.
        let mut b = good();
        put_u64(&mut b, offset_at(1), HEADER_LEN as u64);
        let expected = get_u64(&good(), offset_at(1));
        assert_eq!(
            Eif::read(&b).unwrap_err(),
            EifError::SectionOverlap { index: 1, offset: HEADER_LEN as u64, expected }
        );
        // Table entries 3 and 4 swapped (offsets and sizes): out of file order.
        let mut b = good();
        let (o3, o4, s3, s4) =
            (get_u64(&b, offset_at(3)), get_u64(&b, offset_at(4)), get_u64(&b, size_at(3)), get_u64(&b, size_at(4)));
        put_u64(&mut b, offset_at(3), o4);
        put_u64(&mut b, offset_at(4), o3);
        put_u64(&mut b, size_at(3), s4);
        put_u64(&mut b, size_at(4), s3);
        assert_eq!(Eif::read(&b).unwrap_err(), EifError::SectionGap { index: 3, offset: o4, expected: o3 });
        // The section types in the wrong order: a ramdisk where the cmdline should be.
        let mut b = good();
        let o1 = get_u64(&b, offset_at(1)) as usize;
        put_u16(&mut b, o1, 3);
        fix_crc(&mut b);
        assert_eq!(
            Eif::read(&b).unwrap_err(),
            EifError::SectionOutOfOrder { index: 2, kind: SectionKind::Metadata, after: SectionKind::Ramdisk }
        );
        // Two kernels.
        let mut b = good();
        put_u16(&mut b, o1, 1);
        fix_crc(&mut b);
        assert_eq!(Eif::read(&b).unwrap_err(), EifError::DuplicateSection { index: 1, kind: SectionKind::Kernel });
    }

    #[test]
    fn trailing_bytes() {
        let mut b = good();
        b.extend_from_slice(&[0; 7]);
        assert_eq!(Eif::read(&b).unwrap_err(), EifError::TrailingBytes(7));
    }

    #[test]
    fn unknown_section_type_and_flags() {
        let mut b = good();
        let o = get_u64(&b, offset_at(2)) as usize;
        put_u16(&mut b, o, 6);
        assert_eq!(Eif::read(&b).unwrap_err(), EifError::UnknownSectionType { index: 2, section_type: 6 });
        put_u16(&mut b, o, 0);
        assert_eq!(Eif::read(&b).unwrap_err(), EifError::UnknownSectionType { index: 2, section_type: 0 });
        let mut b = good();
        put_u16(&mut b, o + 2, 1);
        assert_eq!(Eif::read(&b).unwrap_err(), EifError::SectionFlags { index: 2, flags: 1 });
        let mut b = good();
        put_u16(&mut b, o, 4);
        assert_eq!(Eif::read(&b).unwrap_err(), EifError::Signed { index: 2 });
        let mut b = good();
        put_u64(&mut b, o + 4, 1);
        let table = get_u64(&b, size_at(2));
        assert_eq!(Eif::read(&b).unwrap_err(), EifError::SectionSizeMismatch { index: 2, table, section: 1 });
    }

    #[test]
    fn too_many_sections_and_oversized_fields() {
        let mut b = good();
        put_u16(&mut b, 26, 33);
        assert_eq!(Eif::read(&b).unwrap_err(), EifError::TooManySections(33));
        let mut b = good();
        put_u64(&mut b, offset_at(31), 1);
        assert_eq!(Eif::read(&b).unwrap_err(), EifError::UnusedSlotNotZero(31));
        let mut b = good();
        put_u16(&mut b, 24, 9);
        assert_eq!(Eif::read(&b).unwrap_err(), EifError::ReservedNotZero(9));

        let mut w = parts();
        w.ramdisks = vec![vec![1]; 30];
        assert_eq!(w.write().unwrap_err(), EifError::TooManySections(33));
        let mut w = parts();
        w.cmdline = vec![b'x'; MAX_CMDLINE_LEN + 1];
        assert_eq!(w.write().unwrap_err(), EifError::CmdlineTooLong(MAX_CMDLINE_LEN + 1));
        let mut w = parts();
        w.cmdline = b"a\0b".to_vec();
        assert_eq!(w.write().unwrap_err(), EifError::CmdlineHasNul(1));
        let mut w = parts();
        w.metadata = vec![b' '; MAX_METADATA_LEN + 1];
        assert_eq!(w.write().unwrap_err(), EifError::MetadataTooLarge(MAX_METADATA_LEN + 1));
        let mut w = parts();
        w.metadata = vec![b'{', 0xff];
        assert_eq!(w.write().unwrap_err(), EifError::MetadataNotUtf8(1));
        // A NUL in a file's cmdline section is refused on reading too.
        let mut b = EifWriter { cmdline: b"ab".to_vec(), ..parts() }.write().unwrap().0;
        let o = get_u64(&b, offset_at(1)) as usize;
        b[o + 13] = 0;
        assert_eq!(Eif::read(&b).unwrap_err(), EifError::CmdlineHasNul(1));
    }

    #[test]
    fn missing_kernel_cmdline_or_ramdisk() {
        let mut w = parts();
        w.ramdisks.clear();
        assert_eq!(w.write().unwrap_err(), EifError::MissingSection(SectionKind::Ramdisk));

        // A file of one cmdline and one ramdisk, built by hand.
        let build = |sections: &[(u16, &[u8])]| {
            let mut b = vec![0u8; HEADER_LEN];
            b[0..4].copy_from_slice(b".eif");
            put_u16(&mut b, 4, 4);
            put_u16(&mut b, 26, sections.len() as u16);
            let mut at = HEADER_LEN as u64;
            for (i, (t, body)) in sections.iter().enumerate() {
                put_u64(&mut b, offset_at(i), at);
                put_u64(&mut b, size_at(i), body.len() as u64);
                b.extend_from_slice(&t.to_be_bytes());
                b.extend_from_slice(&[0, 0]);
                b.extend_from_slice(&(body.len() as u64).to_be_bytes());
                b.extend_from_slice(body);
                at += 12 + body.len() as u64;
            }
            fix_crc(&mut b);
            b
        };
        assert_eq!(
            Eif::read(&build(&[(2, b"c"), (3, b"r")])).unwrap_err(),
            EifError::MissingSection(SectionKind::Kernel)
        );
        assert_eq!(
            Eif::read(&build(&[(1, b"k"), (3, b"r")])).unwrap_err(),
            EifError::MissingSection(SectionKind::Cmdline)
        );
        assert_eq!(
            Eif::read(&build(&[(1, b"k"), (2, b"c"), (5, b"{}")])).unwrap_err(),
            EifError::MissingSection(SectionKind::Ramdisk)
        );
        assert_eq!(Eif::read(&build(&[])).unwrap_err(), EifError::MissingSection(SectionKind::Kernel));
        // Without metadata (as EIF versions before 4 were laid out) it is fine.
        let e = Eif::read(&build(&[(1, b"k"), (2, b"c"), (3, b"r")])).unwrap();
        assert_eq!(e.metadata(), None);
        assert_eq!(e.measurements().pcr1, pcr_of(&[b"kcr"]));
    }
}
