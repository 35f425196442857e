//! Uncompressed cpio "newc" archives: the EIF's ramdisks, written byte for byte the same on
//! every machine.
//!
//! The Linux kernel unpacks each ramdisk of an enclave into its initial root file system
//! (`init/initramfs.c`); the Nitro hypervisor and QEMU's EIF loader hand it the ramdisks one
//! after the other. An archive's bytes are what PCR1 and PCR2 measure, so everything that
//! could vary between two builds of the same inputs is fixed here: owner and group 0:0, mtime
//! 0, modes given by the caller (0755 or 0644), inode numbers counted 1, 2, 3, ... in the
//! archive's order, and entries sorted by path (bytewise, so a directory always comes before
//! what is inside it, which the kernel needs). Nothing is read from the file system here: the
//! caller hands over bytes.
//!
//! What it refuses (`CpioError`): absolute paths, empty, `.` or `..` components, a path twice,
//! a name longer than `MAX_NAME_LEN`, a file larger than the format's 32-bit size field, and a
//! file whose parent directory is not an entry (the kernel would fail to create it).
//!
//! One entry, "newc" (magic 070701), every number 8 ASCII hex digits:
//!
//! ```text
//!  offset  size  field
//!       0     6  magic "070701"
//!       6     8  c_ino        inode number (1, 2, 3, ... here; 0 for the trailer)
//!      14     8  c_mode       file type and permission bits (0o040755 dir, 0o100644 file)
//!      22     8  c_uid        0
//!      30     8  c_gid        0
//!      38     8  c_nlink      2 for a directory, 1 otherwise
//!      46     8  c_mtime      0
//!      54     8  c_filesize   bytes of data (0 for a directory)
//!      62     8  c_devmajor   0
//!      70     8  c_devminor   0
//!      78     8  c_rdevmajor  0
//!      86     8  c_rdevminor  0
//!      94     8  c_namesize   length of the name + 1 (its NUL)
//!     102     8  c_check      0
//!     110     .  name, NUL, zero padding to a multiple of 4 (counted from the entry's start)
//!       .     .  data, zero padding to a multiple of 4
//! ```
//!
//! The archive ends with an entry named `TRAILER!!!` (nlink 1, everything else 0), and its
//! total length is a multiple of 4, so a second archive may follow directly.

use std::fmt;

/// Length of a newc header before the name.
pub const HEADER_LEN: usize = 110;
/// Longest path accepted, in bytes. Our deepest is `rootfs/model/manifest.txt`; the kernel's
/// own limit is PATH_MAX (4096). A bound keeps a mistaken argument from making odd archives.
pub const MAX_NAME_LEN: usize = 1024;
/// Largest file the newc size field can say (8 hex digits).
pub const MAX_FILE_LEN: u64 = u32::MAX as u64;
/// Most entries in one archive: ours have at most a few dozen.
pub const MAX_ENTRIES: usize = 4096;

const MAGIC: &[u8; 6] = b"070701";
const TRAILER: &str = "TRAILER!!!";
const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CpioError {
    /// A path that is absolute, empty, or has an empty, `.` or `..` component.
    BadPath(String),
    /// A path longer than `MAX_NAME_LEN`.
    NameTooLong(usize),
    /// The same path twice.
    Duplicate(String),
    /// A file larger than `MAX_FILE_LEN`.
    FileTooLarge { path: String, len: u64 },
    /// An entry whose parent directory is not in the archive.
    MissingParent(String),
    /// A path whose parent is in the archive as a file, not a directory.
    ParentNotDirectory(String),
    /// Permission bits outside 0o7777.
    BadMode { path: String, mode: u32 },
    /// More than `MAX_ENTRIES` entries.
    TooManyEntries(usize),
}

impl fmt::Display for CpioError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CpioError::BadPath(p) => write!(
                f,
                "ramdisk path '{p}' is not a relative path of plain components (no '/', '.', '..' or empty parts at either end)"
            ),
            CpioError::NameTooLong(n) => write!(f, "ramdisk path of {n} bytes is longer than {MAX_NAME_LEN}"),
            CpioError::Duplicate(p) => write!(f, "ramdisk path '{p}' given twice"),
            CpioError::FileTooLarge { path, len } => {
                write!(f, "ramdisk file '{path}' is {len} bytes, more than cpio newc's {MAX_FILE_LEN}")
            }
            CpioError::MissingParent(p) => write!(f, "ramdisk entry '{p}' has no parent directory entry"),
            CpioError::ParentNotDirectory(p) => write!(f, "ramdisk entry '{p}' is inside a file, not a directory"),
            CpioError::BadMode { path, mode } => write!(f, "ramdisk entry '{path}' has mode {mode:o}, not within 7777"),
            CpioError::TooManyEntries(n) => write!(f, "ramdisk of {n} entries, more than {MAX_ENTRIES}"),
        }
    }
}

impl std::error::Error for CpioError {}

/// One entry: a directory or a regular file with its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    Dir { path: String, mode: u32 },
    File { path: String, mode: u32, data: Vec<u8> },
}

impl Entry {
    pub fn path(&self) -> &str {
        match self {
            Entry::Dir { path, .. } | Entry::File { path, .. } => path,
        }
    }
}

/// The entries of one archive, in any order; `to_bytes` sorts them.
#[derive(Debug, Clone, Default)]
pub struct Archive {
    entries: Vec<Entry>,
}

impl Archive {
    pub fn new() -> Self {
        Archive::default()
    }

    pub fn dir(&mut self, path: &str, mode: u32) -> &mut Self {
        self.entries.push(Entry::Dir { path: path.to_string(), mode });
        self
    }

    pub fn file(&mut self, path: &str, mode: u32, data: Vec<u8>) -> &mut Self {
        self.entries.push(Entry::File { path: path.to_string(), mode, data });
        self
    }

    /// Adds a file and, as 0755 directories, those of its parents not yet in the archive.
    pub fn file_with_parents(&mut self, path: &str, mode: u32, data: Vec<u8>) -> &mut Self {
        let mut parent = String::new();
        let parts: Vec<&str> = path.split('/').collect();
        if let Some((_, dirs)) = parts.split_last() {
            for d in dirs {
                if !parent.is_empty() {
                    parent.push('/');
                }
                parent.push_str(d);
                if !self.entries.iter().any(|e| e.path() == parent) {
                    self.dir(&parent.clone(), 0o755);
                }
            }
        }
        self.file(path, mode, data)
    }

    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// The archive's bytes: checked, sorted entries, then the trailer.
    pub fn to_bytes(&self) -> Result<Vec<u8>, CpioError> {
        if self.entries.len() > MAX_ENTRIES {
            return Err(CpioError::TooManyEntries(self.entries.len()));
        }
        let mut sorted: Vec<&Entry> = self.entries.iter().collect();
        sorted.sort_by(|a, b| a.path().as_bytes().cmp(b.path().as_bytes()));
        for (i, e) in sorted.iter().enumerate() {
            check_path(e.path())?;
            if i > 0 && sorted[i - 1].path() == e.path() {
                return Err(CpioError::Duplicate(e.path().to_string()));
            }
            if let Some((parent, _)) = e.path().rsplit_once('/') {
                match sorted.iter().find(|p| p.path() == parent) {
                    None => return Err(CpioError::MissingParent(e.path().to_string())),
                    Some(Entry::File { .. }) => return Err(CpioError::ParentNotDirectory(e.path().to_string())),
                    Some(Entry::Dir { .. }) => {}
                }
            }
        }
        let mut out = Vec::new();
        for (i, e) in sorted.iter().enumerate() {
            // Inode numbers 1.. in archive order; at most MAX_ENTRIES, so they fit in u32.
            let ino = u32::try_from(i + 1).map_err(|_| CpioError::TooManyEntries(sorted.len()))?;
            match e {
                Entry::Dir { path, mode } => {
                    let mode = check_mode(path, *mode)?;
                    push_entry(&mut out, ino, S_IFDIR | mode, 2, path, &[])?;
                }
                Entry::File { path, mode, data } => {
                    let mode = check_mode(path, *mode)?;
                    push_entry(&mut out, ino, S_IFREG | mode, 1, path, data)?;
                }
            }
        }
        push_entry(&mut out, 0, 0, 1, TRAILER, &[])?;
        Ok(out)
    }
}

fn check_mode(path: &str, mode: u32) -> Result<u32, CpioError> {
    if mode & !0o7777 != 0 {
        return Err(CpioError::BadMode { path: path.to_string(), mode });
    }
    Ok(mode)
}

fn check_path(path: &str) -> Result<(), CpioError> {
    if path.len() > MAX_NAME_LEN {
        return Err(CpioError::NameTooLong(path.len()));
    }
    let bad = path.is_empty()
        || path.contains('\0')
        || path.split('/').any(|c| c.is_empty() || c == "." || c == "..")
        || path == TRAILER;
    if bad {
        return Err(CpioError::BadPath(path.to_string()));
    }
    Ok(())
}

fn pad4(out: &mut Vec<u8>) {
    while out.len() % 4 != 0 {
        out.push(0);
    }
}

fn push_entry(out: &mut Vec<u8>, ino: u32, mode: u32, nlink: u32, name: &str, data: &[u8]) -> Result<(), CpioError> {
    let too_large = || CpioError::FileTooLarge { path: name.to_string(), len: data.len() as u64 };
    let filesize = u32::try_from(data.len()).map_err(|_| too_large())?;
    // check_path bounds the name to MAX_NAME_LEN, so its size fits.
    let namesize = u32::try_from(name.len() + 1).map_err(|_| CpioError::NameTooLong(name.len()))?;
    // Entries start at multiples of 4, so padding relative to the archive's start is the same
    // as relative to the entry's start.
    out.extend_from_slice(MAGIC);
    for field in [ino, mode, 0, 0, nlink, 0, filesize, 0, 0, 0, 0, namesize, 0] {
        out.extend_from_slice(format!("{field:08x}").as_bytes());
    }
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    pad4(out);
    out.extend_from_slice(data);
    pad4(out);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_file_pinned() {
        let mut a = Archive::new();
        a.file("a", 0o644, b"hi".to_vec());
        let bytes = a.to_bytes().unwrap();
        let mut want = Vec::new();
        // ino 1, mode 100644, uid 0, gid 0, nlink 1, mtime 0, size 2, dev 0 0, rdev 0 0, namesize 2, check 0
        want.extend_from_slice(
            b"070701\
              00000001000081a4000000000000000000000001000000000000000200000000\
              00000000000000000000000000000002\
              00000000",
        );
        assert_eq!(want.len(), HEADER_LEN);
        want.extend_from_slice(b"a\0"); // 112: already a multiple of 4
        want.extend_from_slice(b"hi\0\0"); // data padded to 4
        want.extend_from_slice(
            b"070701\
              00000000000000000000000000000000000000010000000000000000000000000000000000000000000000000000000b00000000",
        );
        want.extend_from_slice(b"TRAILER!!!\0"); // 110 + 11 = 121 -> pad to 124
        want.extend_from_slice(&[0; 3]);
        assert_eq!(bytes, want);
        assert_eq!(bytes.len() % 4, 0);
    }

    #[test]
    fn sorted_parents_first_and_directory_entry() {
        let mut a = Archive::new();
        a.file_with_parents("x/y/z", 0o644, vec![1]);
        a.dir("dev", 0o755);
        let bytes = a.to_bytes().unwrap();
        let text = String::from_utf8_lossy(&bytes);
        let pos = |n: &str| text.find(&format!("{n}\0")).unwrap();
        assert!(pos("dev") < pos("x") && pos("x") < pos("x/y") && pos("x/y") < pos("x/y/z"));
        // dev: ino 1, dir 040755, nlink 2
        assert_eq!(&bytes[6..46], b"00000001000041ed000000000000000000000002");
    }

    #[test]
    fn order_of_insertion_does_not_matter() {
        let mut a = Archive::new();
        a.dir("d", 0o755).file("d/f", 0o644, vec![7; 5]).file("e", 0o755, vec![]);
        let mut b = Archive::new();
        b.file("e", 0o755, vec![]).file("d/f", 0o644, vec![7; 5]).dir("d", 0o755);
        assert_eq!(a.to_bytes().unwrap(), b.to_bytes().unwrap());
    }

    #[test]
    fn refusals() {
        let one = |e: Entry| {
            let mut a = Archive::new();
            a.entries.push(e);
            a.to_bytes()
        };
        for p in ["/abs", "", "a//b", "a/./b", "../x", "a/", "TRAILER!!!"] {
            assert_eq!(
                one(Entry::File { path: p.into(), mode: 0o644, data: vec![] }),
                Err(CpioError::BadPath(p.into())),
                "{p}"
            );
        }
        let long = "a".repeat(MAX_NAME_LEN + 1);
        assert_eq!(one(Entry::Dir { path: long, mode: 0o755 }), Err(CpioError::NameTooLong(MAX_NAME_LEN + 1)));
        assert_eq!(
            one(Entry::File { path: "d/f".into(), mode: 0o644, data: vec![] }),
            Err(CpioError::MissingParent("d/f".into()))
        );
        assert_eq!(
            one(Entry::Dir { path: "d".into(), mode: 0o10000 }),
            Err(CpioError::BadMode { path: "d".into(), mode: 0o10000 })
        );
        let mut a = Archive::new();
        a.dir("d", 0o755).dir("d", 0o700);
        assert_eq!(a.to_bytes(), Err(CpioError::Duplicate("d".into())));
        let mut a = Archive::new();
        a.file("f", 0o644, vec![]).file("f/g", 0o644, vec![]);
        assert_eq!(a.to_bytes(), Err(CpioError::ParentNotDirectory("f/g".into())));
    }
}
