//! The development root CA, kept in the state directory between runs.
//!
//! `DIR/root-key.pem` (PKCS#8, mode 0600) and `DIR/root-cert.pem`, made at the
//! first run and reused after, so a client given the root once keeps trusting
//! documents across restarts. A root that expires within [`ROOT_MIN_REMAINING`]
//! is replaced by a new one (and said so); a damaged or half-present pair is
//! an error, never silently overwritten.

use std::fs::{self, DirBuilder, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;
use std::time::{Duration, SystemTime};

use crate::pki::{CertSpec, Credential};
use crate::Error;

/// The root's subject: says plainly that it is not AWS Nitro's.
pub const ROOT_SUBJECT: &str = "CN=nitro-ml development NSM root - NOT AWS Nitro,O=nitro-ml development";
/// The root's lifetime: one year.
pub const ROOT_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);
/// A stored root with less life left than this is replaced at start.
pub const ROOT_MIN_REMAINING: Duration = Duration::from_secs(7 * 24 * 3600);
/// File names in the state directory.
pub const ROOT_KEY_FILE: &str = "root-key.pem";
pub const ROOT_CERT_FILE: &str = "root-cert.pem";

/// Where the root came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RootOrigin {
    /// Read back from the state directory.
    Loaded,
    /// Made now: there was none.
    Created,
    /// Made now: the stored one expires too soon (or was not yet valid).
    Replaced,
}

/// The stored root, or a new one written there (see the module docs).
pub fn load_or_create_root(dir: &Path, now: SystemTime) -> Result<(Credential, RootOrigin), Error> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| Error::with(format!("cannot create the state directory {}", dir.display()), e))?;
    let key_path = dir.join(ROOT_KEY_FILE);
    let cert_path = dir.join(ROOT_CERT_FILE);
    let origin = match (key_path.exists(), cert_path.exists()) {
        (false, false) => RootOrigin::Created,
        (true, true) => {
            let read = |p: &Path| fs::read_to_string(p).map_err(|e| Error::with(format!("cannot read {}", p.display()), e));
            let root = Credential::from_pem(&read(&key_path)?, &read(&cert_path)?).map_err(|e| {
                Error::with(format!("the root in {} is unusable (remove the directory to start again)", dir.display()), e)
            })?;
            if root.valid_at(now) && root.valid_at(now + ROOT_MIN_REMAINING) {
                return Ok((root, RootOrigin::Loaded));
            }
            RootOrigin::Replaced
        }
        _ => {
            return Err(Error::msg(format!(
                "{} holds only one of {ROOT_KEY_FILE} and {ROOT_CERT_FILE} (remove the directory to start again)",
                dir.display()
            )))
        }
    };
    let root = Credential::self_signed(&CertSpec::ca(ROOT_SUBJECT, now, ROOT_VALIDITY))?;
    write_file(&key_path, root.key_pem()?.as_bytes(), 0o600)?;
    write_file(&cert_path, root.cert_pem().as_bytes(), 0o644)?;
    Ok((root, origin))
}

/// Writes `path` whole or not at all: a temporary file beside it (created
/// with `mode`), then a rename over it.
pub fn write_file(path: &Path, contents: &[u8], mode: u32) -> Result<(), Error> {
    let fail = |e: std::io::Error| Error::with(format!("cannot write {}", path.display()), e);
    let name = path.file_name().ok_or_else(|| Error::msg(format!("{} is not a file name", path.display())))?;
    let tmp = path.with_file_name(format!(".{}.tmp{}", name.to_string_lossy(), std::process::id()));
    let result = (|| {
        let mut f = OpenOptions::new().write(true).create(true).truncate(true).mode(mode).open(&tmp)?;
        f.write_all(contents)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(fail)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::path::PathBuf;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("dev-nsm-state-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn created_then_loaded_then_replaced_near_expiry() {
        let dir = scratch("cycle").join("nested");
        let now = SystemTime::now();
        let (a, origin) = load_or_create_root(&dir, now).unwrap();
        assert_eq!(origin, RootOrigin::Created);
        assert!(a.subject().contains("NOT AWS Nitro"));
        assert_eq!(fs::metadata(dir.join(ROOT_KEY_FILE)).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(fs::metadata(&dir).unwrap().permissions().mode() & 0o777, 0o700);
        let (b, origin) = load_or_create_root(&dir, now).unwrap();
        assert_eq!(origin, RootOrigin::Loaded);
        assert_eq!(a.cert_der(), b.cert_der());
        let (c, origin) = load_or_create_root(&dir, now + ROOT_VALIDITY - ROOT_MIN_REMAINING + Duration::from_secs(60)).unwrap();
        assert_eq!(origin, RootOrigin::Replaced);
        assert_ne!(a.cert_der(), c.cert_der());
        fs::remove_dir_all(dir.parent().unwrap()).unwrap();
    }

    #[test]
    fn damaged_state_is_an_error() {
        let dir = scratch("damaged");
        load_or_create_root(&dir, SystemTime::now()).unwrap();
        fs::write(dir.join(ROOT_CERT_FILE), "garbage").unwrap();
        let err = load_or_create_root(&dir, SystemTime::now()).unwrap_err();
        assert!(err.to_string().contains("unusable"), "{err}");
        fs::remove_file(dir.join(ROOT_CERT_FILE)).unwrap();
        let err = load_or_create_root(&dir, SystemTime::now()).unwrap_err();
        assert!(err.to_string().contains("only one of"), "{err}");
        fs::remove_dir_all(&dir).unwrap();
    }
}
