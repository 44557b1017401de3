//! The platform's secrets in the secrets bucket: client-side envelope
//! encryption under the environment's KMS key (`format`, `store`), the
//! local tree operators keep them in (`layout`). The buckets and key they
//! need are the operator's `prereqs`.

pub mod bundle;
pub mod format;
pub mod index;
pub mod layout;
pub mod store;

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::shared::cloud::CloudError;

pub use crate::shared::secret::Secret;
pub use layout::ObjectPath;
pub use store::Store;

/// What a stored secret is bound to: KMS checks it when unwrapping the data
/// key, and it is part of the ciphertext's associated data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Context {
    pub environment: String,
    /// The object key, e.g. `common/ca.crt`.
    pub path: String,
}

impl Context {
    /// The KMS encryption context (visible in CloudTrail: which environment
    /// and which secret a decrypt was for).
    pub fn kms(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("environment".to_string(), self.environment.clone()),
            ("path".to_string(), self.path.clone()),
        ])
    }

    /// The context as associated data: each pair, sorted by key, as
    /// `u16 length, key, u16 length, value` (lengths big-endian).
    pub fn aad(&self) -> Vec<u8> {
        context_aad(&self.kms())
    }
}

/// An encryption context as associated data: each pair, sorted by key, as
/// `u16 length, key, u16 length, value` (shared with the backups' format 2).
pub fn context_aad(context: &BTreeMap<String, String>) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v) in context {
        for part in [k.as_bytes(), v.as_bytes()] {
            out.extend_from_slice(&(part.len().min(u16::MAX as usize) as u16).to_be_bytes());
            out.extend_from_slice(part);
        }
    }
    out
}

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// Decryption or authentication failed; retrying cannot help.
    #[error("{path}: refused: {reason}")]
    Refused { path: String, reason: String },
    #[error("{path}: no such secret in s3://{bucket}")]
    NotFound { bucket: String, path: String },
    #[error(transparent)]
    Cloud(#[from] CloudError),
    #[error("{path}: {detail}")]
    BadPath { path: String, detail: String },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

impl SecretError {
    pub fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        SecretError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_never_prints_its_bytes() {
        let s = Secret::new(b"hunter2".to_vec());
        assert_eq!(format!("{s}"), "[redacted]");
        assert_eq!(format!("{s:?}"), "[redacted]");
        assert_eq!(format!("{:?}", Some(&s)), "Some([redacted])");
    }

    #[test]
    fn the_context_binds_environment_and_path_unambiguously() {
        let a = Context {
            environment: "ab".into(),
            path: "c".into(),
        };
        let b = Context {
            environment: "a".into(),
            path: "bc".into(),
        };
        assert_ne!(a.aad(), b.aad());
        assert_eq!(a.kms()["environment"], "ab");
    }
}
