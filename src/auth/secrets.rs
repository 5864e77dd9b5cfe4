//! CHAP secrets: a [`Secret`] type that never prints itself, and loading from a file.
//!
//! A secret comes from the config inline (`secret = "..."`) or from a file
//! (`secret_file = "/etc/rewind/chap.secret"`: the first line, trimmed). Loading a file that
//! group or others may read or write returns a [`SecretWarning`] for the caller to log; it is
//! not an error, so that a working setup does not stop on upgrade.
//!
//! Length rules ([`check_secret_len`]): RFC 7143 section 9.2.1 asks for an IPsec-protected
//! channel whenever a CHAP secret has less than 96 random bits, so rewind refuses secrets
//! shorter than [`MIN_SECRET_LEN`] (12) bytes, as the Linux target and initiator do. The upper
//! bound [`MAX_SECRET_LEN`] (255) is rewind's own limit, well above the 128-bit (16 byte)
//! random secrets every implementation must accept.

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use subtle::ConstantTimeEq;
use thiserror::Error;

/// Shortest CHAP secret accepted, in bytes (96 bits).
pub const MIN_SECRET_LEN: usize = 12;
/// Longest CHAP secret accepted, in bytes.
pub const MAX_SECRET_LEN: usize = 255;
/// A secrets file is read up to this many bytes; only its first line is used.
const MAX_FILE_READ: u64 = 4096;

/// What [`Debug`](fmt::Debug), [`Display`](fmt::Display) and serialization print instead of a
/// secret.
pub const REDACTED: &str = "***";

/// A CHAP secret. Debug, Display and Serialize print `***`; equality is constant time; the
/// bytes are overwritten when the value is dropped. Read it with [`Secret::expose`], only to
/// feed a digest.
#[derive(Clone, Default)]
pub struct Secret(Vec<u8>);

impl Secret {
    pub fn new(bytes: impl Into<Vec<u8>>) -> Secret {
        Secret(bytes.into())
    }

    /// The secret bytes. Use them for hashing only: never log or format them.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Load a secret from the first line of `path`, trimmed of surrounding white space.
    ///
    /// Returns the secret and the warnings the caller should log (for example a file that
    /// group or others can read). The length is not checked here: see [`check_secret_len`].
    pub fn from_file(path: &Path) -> Result<(Secret, Vec<SecretWarning>), SecretError> {
        let io = |source| SecretError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = std::fs::File::open(path).map_err(io)?;
        let meta = file.metadata().map_err(io)?;
        if !meta.is_file() {
            return Err(SecretError::NotAFile {
                path: path.to_path_buf(),
            });
        }
        let mut warnings = Vec::new();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                warnings.push(SecretWarning::WorldReadable {
                    path: path.to_path_buf(),
                    mode,
                });
            }
        }
        let mut raw = Vec::new();
        file.take(MAX_FILE_READ).read_to_end(&mut raw).map_err(io)?;
        let first_line = raw.split(|&b| b == b'\n').next().unwrap_or(&[]);
        let trimmed = trim_ascii(first_line);
        let secret = Secret::new(trimmed);
        raw.fill(0);
        if secret.is_empty() {
            return Err(SecretError::Empty {
                path: path.to_path_buf(),
            });
        }
        Ok((secret, warnings))
    }
}

fn trim_ascii(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |p| p + 1);
    &bytes[start..end]
}

/// Refuse secrets shorter than [`MIN_SECRET_LEN`] or longer than [`MAX_SECRET_LEN`] bytes.
pub fn check_secret_len(secret: &Secret) -> Result<(), SecretError> {
    let len = secret.len();
    if len < MIN_SECRET_LEN {
        Err(SecretError::TooShort { len })
    } else if len > MAX_SECRET_LEN {
        Err(SecretError::TooLong { len })
    } else {
        Ok(())
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        for b in self.0.iter_mut() {
            // SAFETY: `b` is a valid, aligned, exclusive reference into the vector.
            unsafe { std::ptr::write_volatile(b, 0) };
        }
        std::sync::atomic::compiler_fence(std::sync::atomic::Ordering::SeqCst);
    }
}

impl PartialEq for Secret {
    fn eq(&self, other: &Secret) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}
impl Eq for Secret {}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Secret {
        Secret::new(s.as_bytes())
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Secret, D::Error> {
        let text = String::deserialize(d)?;
        Ok(Secret::new(text.into_bytes()))
    }
}

/// Serializes as `***`: a config written back out never carries a secret.
impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(REDACTED)
    }
}

/// Something about a secret the operator should hear about, without it being fatal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretWarning {
    /// The secrets file's permission bits let group or others read (or write) it.
    WorldReadable { path: PathBuf, mode: u32 },
}

impl fmt::Display for SecretWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretWarning::WorldReadable { path, mode } => write!(
                f,
                "world-readable secrets file {}: mode {mode:04o} lets group or others read it; chmod 600 it",
                path.display()
            ),
        }
    }
}

#[derive(Debug, Error)]
pub enum SecretError {
    #[error("cannot read secrets file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("secrets file {path} is not a regular file")]
    NotAFile { path: PathBuf },
    #[error("secrets file {path} has no secret on its first line")]
    Empty { path: PathBuf },
    #[error("CHAP secret is {len} bytes; use at least {MIN_SECRET_LEN} (RFC 7143 asks for 96 random bits or IPsec)")]
    TooShort { len: usize },
    #[error("CHAP secret is {len} bytes; at most {MAX_SECRET_LEN} are supported")]
    TooLong { len: usize },
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn never_prints_itself() {
        let s = Secret::from("hunter2-hunter2");
        assert_eq!(format!("{s}"), "***");
        assert_eq!(format!("{s:?}"), "***");
        assert_eq!(format!("{:?}", Some(s.clone())), "Some(***)");
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"***\"");
        assert_eq!(s.expose(), b"hunter2-hunter2");
    }

    #[test]
    fn equality_compares_bytes() {
        assert_eq!(Secret::from("abc"), Secret::from("abc"));
        assert_ne!(Secret::from("abc"), Secret::from("abd"));
        assert_ne!(Secret::from("abc"), Secret::from("abcd"));
    }

    #[test]
    fn deserializes_from_a_string() {
        #[derive(Deserialize)]
        struct T {
            secret: Secret,
        }
        let t: T = toml::from_str(r#"secret = "s3cret-s3cret""#).unwrap();
        assert_eq!(t.secret.expose(), b"s3cret-s3cret");
    }

    #[test]
    fn length_rules() {
        assert!(matches!(
            check_secret_len(&Secret::from("short")),
            Err(SecretError::TooShort { len: 5 })
        ));
        assert!(check_secret_len(&Secret::from("twelve-bytes")).is_ok());
        assert!(check_secret_len(&Secret::new(vec![b'a'; 255])).is_ok());
        assert!(matches!(
            check_secret_len(&Secret::new(vec![b'a'; 256])),
            Err(SecretError::TooLong { len: 256 })
        ));
        let msg = check_secret_len(&Secret::from("x"))
            .unwrap_err()
            .to_string();
        assert!(msg.contains("at least 12"), "{msg}");
    }

    fn write_file(dir: &Path, name: &str, body: &[u8], mode: u32) -> PathBuf {
        let path = dir.join(name);
        let mut f = std::fs::File::create(&path).unwrap();
        f.write_all(body).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        }
        let _ = mode;
        path
    }

    #[test]
    fn file_first_line_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        let p = write_file(
            dir.path(),
            "s",
            b"  correct-horse-battery \r\nsecond line\n",
            0o600,
        );
        let (s, warnings) = Secret::from_file(&p).unwrap();
        assert_eq!(s.expose(), b"correct-horse-battery");
        assert!(warnings.is_empty(), "{warnings:?}");
    }

    #[cfg(unix)]
    #[test]
    fn group_or_world_readable_file_warns() {
        let dir = tempfile::tempdir().unwrap();
        for mode in [0o644, 0o640, 0o604, 0o620] {
            let p = write_file(dir.path(), "s", b"correct-horse-battery\n", mode);
            let (_, warnings) = Secret::from_file(&p).unwrap();
            assert_eq!(
                warnings,
                vec![SecretWarning::WorldReadable {
                    path: p.clone(),
                    mode
                }]
            );
            let text = warnings[0].to_string();
            assert!(text.contains("world-readable secrets file"), "{text}");
            assert!(!text.contains("correct-horse"), "{text}");
        }
        let p = write_file(dir.path(), "s", b"correct-horse-battery\n", 0o400);
        assert!(Secret::from_file(&p).unwrap().1.is_empty());
    }

    #[test]
    fn file_errors() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope");
        assert!(matches!(
            Secret::from_file(&missing),
            Err(SecretError::Io { .. })
        ));
        let empty = write_file(dir.path(), "e", b"   \nsecret-on-line-two\n", 0o600);
        assert!(matches!(
            Secret::from_file(&empty),
            Err(SecretError::Empty { .. })
        ));
        assert!(matches!(
            Secret::from_file(dir.path()),
            Err(SecretError::NotAFile { .. }) | Err(SecretError::Io { .. })
        ));
    }
}
