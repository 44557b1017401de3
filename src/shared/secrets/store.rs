//! Secrets in the bucket: one KMS data key per object, the object sealed
//! with AES-256-GCM (see `format`). Objects the seed's tooling wrote with
//! plain S3 SSE-KMS are read too, when encrypted under this environment's key.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use tracing::warn;

use super::format::{self, FormatError};
use super::layout::MAX_SECRET_BYTES;
use super::{Context, ObjectPath, Secret, SecretError};
use crate::shared::cloud::{CloudError, KeyInfo, Keys, ObjectEntry, Objects, StoredObject};

/// KMS answers that mean "this blob will not open here": the key, the
/// context or the blob is wrong. Retrying cannot help.
const KMS_REFUSALS: [&str; 7] = [
    "InvalidCiphertextException",
    "IncorrectKeyException",
    "AccessDeniedException",
    "NotFoundException",
    "DisabledException",
    "KMSInvalidStateException",
    "InvalidKeyUsageException",
];

/// A secret as fetched.
#[derive(Debug)]
pub struct Fetched {
    pub secret: Secret,
    /// The ETag of the object version it came from.
    pub etag: String,
    /// Read from a plain SSE-KMS object (no client-side binding).
    pub legacy: bool,
}

/// One environment's secrets in its bucket.
pub struct Store<'a, O, K> {
    pub objects: &'a O,
    pub keys: &'a K,
    pub bucket: String,
    pub environment: String,
    /// The KMS key (id, ARN or `alias/...`) data keys are made under.
    pub key_id: String,
    /// DescribeKey's answer, once a legacy object needs it.
    key_info: OnceLock<KeyInfo>,
}

impl<'a, O: Objects, K: Keys> Store<'a, O, K> {
    pub fn new(objects: &'a O, keys: &'a K, bucket: &str, environment: &str, key_id: &str) -> Self {
        Store {
            objects,
            keys,
            bucket: bucket.to_string(),
            environment: environment.to_string(),
            key_id: key_id.to_string(),
            key_info: OnceLock::new(),
        }
    }

    fn context(&self, path: &ObjectPath) -> Context {
        Context {
            environment: self.environment.clone(),
            path: path.to_string(),
        }
    }

    /// Seals `plaintext` under a fresh data key and stores it at `path`.
    pub async fn put(&self, path: &ObjectPath, plaintext: &[u8]) -> Result<String, SecretError> {
        if plaintext.len() as u64 > MAX_SECRET_BYTES {
            return Err(SecretError::BadPath {
                path: path.to_string(),
                detail: format!(
                    "{} bytes, more than the {MAX_SECRET_BYTES} a secret may have",
                    plaintext.len()
                ),
            });
        }
        let context = self.context(path);
        let data_key = self.keys.generate_data_key(&self.key_id, &context.kms()).await?;
        let sealed = format::seal(&data_key.plaintext, &data_key.ciphertext, &context, plaintext).map_err(|e| {
            SecretError::Refused {
                path: path.to_string(),
                reason: e.to_string(),
            }
        })?;
        let metadata = BTreeMap::from([(format::METADATA_KEY.to_string(), format::VERSION.to_string())]);
        Ok(self.objects.put(&self.bucket, path.as_str(), sealed, &metadata).await?)
    }

    /// Fetches and opens the secret at `path`; `Ok(None)` when there is none.
    pub async fn get(&self, path: &ObjectPath) -> Result<Option<Fetched>, SecretError> {
        let Some(object) = self
            .objects
            .get(&self.bucket, path.as_str(), MAX_SECRET_BYTES + 4096)
            .await?
        else {
            return Ok(None);
        };
        self.open(path, object).await.map(Some)
    }

    /// Like `get`, but a missing secret is an error.
    pub async fn require(&self, path: &ObjectPath) -> Result<Fetched, SecretError> {
        self.get(path).await?.ok_or_else(|| SecretError::NotFound {
            bucket: self.bucket.clone(),
            path: path.to_string(),
        })
    }

    pub async fn list(&self, prefix: &str) -> Result<Vec<ObjectEntry>, SecretError> {
        Ok(self.objects.list(&self.bucket, prefix).await?)
    }

    pub async fn delete(&self, path: &ObjectPath) -> Result<(), SecretError> {
        Ok(self.objects.delete(&self.bucket, path.as_str()).await?)
    }

    async fn open(&self, path: &ObjectPath, object: StoredObject) -> Result<Fetched, SecretError> {
        let refused = |reason: String| SecretError::Refused {
            path: path.to_string(),
            reason,
        };
        let marked = object.metadata.get(format::METADATA_KEY);
        if marked.is_none() && !format::is_envelope(&object.body) {
            return self.open_legacy(path, object).await;
        }
        if let Some(version) = marked.filter(|v| **v != format::VERSION.to_string()) {
            return Err(refused(
                FormatError::UnsupportedVersion(version.parse().unwrap_or(0)).to_string(),
            ));
        }
        let envelope = format::parse(&object.body).map_err(|e| refused(e.to_string()))?;
        let context = self.context(path);
        let data_key = self
            .keys
            .decrypt(&self.key_id, envelope.encrypted_key, &context.kms())
            .await
            .map_err(|e| kms_error(path, e))?;
        let secret = format::open(&envelope, &data_key, &context).map_err(|e| refused(e.to_string()))?;
        Ok(Fetched {
            secret,
            etag: object.etag,
            legacy: false,
        })
    }

    /// An object as the seed stored it: S3 decrypted it already; accept it
    /// only if S3 says it was encrypted under this environment's key.
    async fn open_legacy(&self, path: &ObjectPath, object: StoredObject) -> Result<Fetched, SecretError> {
        let refused = |reason: String| SecretError::Refused {
            path: path.to_string(),
            reason,
        };
        if !object.sse.as_deref().is_some_and(|s| s.starts_with("aws:kms")) {
            return Err(refused(format!(
                "neither a nodeboot envelope nor encrypted with SSE-KMS (server-side encryption: {}); upload it with `nodeboot secrets upload`",
                object.sse.as_deref().unwrap_or("none")
            )));
        }
        let key = self.key_info().await?;
        if let Some(used) = &object.sse_kms_key {
            if used != &key.arn && used != &key.id {
                return Err(refused(format!(
                    "encrypted under the KMS key {used}, not this environment's {}",
                    key.arn
                )));
            }
        }
        warn!(secret = %path, "read a plain SSE-KMS object (the seed's format): nothing binds it to its path; upload it again with `nodeboot secrets upload`");
        Ok(Fetched {
            secret: Secret::new(object.body),
            etag: object.etag,
            legacy: true,
        })
    }

    async fn key_info(&self) -> Result<KeyInfo, SecretError> {
        if let Some(info) = self.key_info.get() {
            return Ok(info.clone());
        }
        let info = self.keys.describe_key(&self.key_id).await?.ok_or_else(|| {
            SecretError::Cloud(CloudError {
                operation: "DescribeKey",
                resource: self.key_id.clone(),
                code: Some("NotFoundException".into()),
                message: "no such key".into(),
            })
        })?;
        Ok(self.key_info.get_or_init(|| info).clone())
    }
}

fn kms_error(path: &ObjectPath, e: CloudError) -> SecretError {
    if e.code.as_deref().is_some_and(|c| KMS_REFUSALS.contains(&c)) {
        SecretError::Refused {
            path: path.to_string(),
            reason: format!(
                "KMS would not unwrap its data key ({}): the object was changed, was written for another environment or path, or under another key",
                e.code.as_deref().unwrap_or_default()
            ),
        }
    } else {
        SecretError::Cloud(e)
    }
}
