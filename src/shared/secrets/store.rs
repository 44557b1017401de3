//! Secrets in the bucket, sealed with AES-256-GCM (see `format`): what the
//! nodes of a role read is sealed with one KMS data key per role and store
//! (one upload), wrapped for each role that reads it (format 4, `bundle`);
//! anything else with a data key of its own (format 1). Unwrapped data keys
//! are kept for the store's life, keyed by the wrapped key and its KMS
//! context, so objects sealed with one data key cost one Decrypt. Objects
//! the seed's tooling wrote with plain S3 SSE-KMS are read too, when
//! encrypted under this environment's key.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock};

use tracing::warn;

use super::format::{self, FormatError, SlotKey};
use super::layout::MAX_SECRET_BYTES;
use super::{bundle, Context, ObjectPath, Secret, SecretError};
use crate::shared::cloud::{CloudError, DataKey, KeyInfo, Keys, ObjectEntry, Objects, StoredObject};
use crate::shared::role::Role;

/// Unwrapped data keys a store keeps at most (a long-running sync meets one
/// more per upload); the oldest goes first.
const UNWRAPPED_KEPT: usize = 32;

/// A wrapped data key and the KMS context it was unwrapped with: KMS binds
/// the two, so the cache does too.
type Wrapped = (Vec<u8>, BTreeMap<String, String>);

/// Data keys KMS unwrapped, oldest first: a store's own, or shared by the
/// stores of one process (`Store::sharing`), so that a boot stage's next
/// attempt does not ask KMS again for what the last one unwrapped.
#[derive(Clone, Default)]
pub struct UnwrappedKeys(Arc<Mutex<Vec<(Wrapped, Secret)>>>);

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
    /// The scope (`bundle::scope`) whose slot this store opens format 4
    /// objects through: a node's role's. None (an operator): any slot.
    reader: Option<String>,
    /// Data keys KMS unwrapped.
    unwrapped: UnwrappedKeys,
    /// The data key of each scope this store seals with (made on first use).
    sealing: tokio::sync::Mutex<BTreeMap<String, DataKey>>,
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
            reader: None,
            unwrapped: UnwrappedKeys::default(),
            sealing: tokio::sync::Mutex::new(BTreeMap::new()),
        }
    }

    /// A node's store: format 4 objects are opened through `role`'s slot
    /// only, the data key its IAM policy lets it unwrap.
    pub fn reading_as(mut self, role: Role) -> Self {
        self.reader = bundle::scope(role);
        self
    }

    /// Keeps the data keys it unwraps in `keys`, shared with other stores.
    pub fn sharing(mut self, keys: &UnwrappedKeys) -> Self {
        self.unwrapped = keys.clone();
        self
    }

    /// The KMS context of a role's data key: the environment and the scope.
    fn scope_context(&self, scope: &str) -> BTreeMap<String, String> {
        Context {
            environment: self.environment.clone(),
            path: scope.to_string(),
        }
        .kms()
    }

    /// KMS's Decrypt of `encrypted_key` under `context`, once per store.
    async fn unwrap_key(
        &self,
        path: &ObjectPath,
        encrypted_key: &[u8],
        context: BTreeMap<String, String>,
    ) -> Result<Secret, SecretError> {
        let wrapped = (encrypted_key.to_vec(), context);
        let cached = self
            .unwrapped
            .0
            .lock()
            .expect("never poisoned")
            .iter()
            .find(|(w, _)| *w == wrapped)
            .map(|(_, k)| k.clone());
        if let Some(key) = cached {
            return Ok(key);
        }
        let key = self
            .keys
            .decrypt(&self.key_id, encrypted_key, &wrapped.1)
            .await
            .map_err(|e| kms_error(path, e))?;
        let mut unwrapped = self.unwrapped.0.lock().expect("never poisoned");
        if unwrapped.len() >= UNWRAPPED_KEPT {
            unwrapped.remove(0);
        }
        unwrapped.push((wrapped, key.clone()));
        Ok(key)
    }

    fn is_unwrapped(&self, encrypted_key: &[u8], context: &BTreeMap<String, String>) -> bool {
        self.unwrapped
            .0
            .lock()
            .expect("never poisoned")
            .iter()
            .any(|((k, c), _)| k == encrypted_key && c == context)
    }

    /// Seals `plaintext` for `path`: for its readers' roles with this
    /// store's data key of each (format 4), or under a fresh data key of
    /// its own when no role's nodes read it (format 1).
    async fn seal(&self, path: &ObjectPath, context: &Context, plaintext: &[u8]) -> Result<(Vec<u8>, u8), SecretError> {
        let refused = |e: FormatError| SecretError::Refused {
            path: path.to_string(),
            reason: e.to_string(),
        };
        let scopes: Vec<String> = bundle::readers(path.as_str())
            .into_iter()
            .filter_map(bundle::scope)
            .collect();
        if scopes.is_empty() {
            let data_key = self.keys.generate_data_key(&self.key_id, &context.kms()).await?;
            let sealed =
                format::seal(&data_key.plaintext, &data_key.ciphertext, context, plaintext).map_err(refused)?;
            return Ok((sealed, format::VERSION));
        }
        let mut sealing = self.sealing.lock().await;
        for scope in &scopes {
            if !sealing.contains_key(scope) {
                let key = self
                    .keys
                    .generate_data_key(&self.key_id, &self.scope_context(scope))
                    .await?;
                sealing.insert(scope.clone(), key);
            }
        }
        let slots: Vec<SlotKey<'_>> = scopes
            .iter()
            .map(|scope| SlotKey {
                scope,
                data_key: &sealing[scope].plaintext,
                encrypted_key: &sealing[scope].ciphertext,
            })
            .collect();
        let sealed = format::seal_bundled(&slots, context, plaintext).map_err(refused)?;
        Ok((sealed, format::BUNDLED))
    }

    fn context(&self, path: &ObjectPath) -> Context {
        Context {
            environment: self.environment.clone(),
            path: path.to_string(),
        }
    }

    /// Seals `plaintext` (see `seal`) and stores it at `path`.
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
        let (sealed, version) = self.seal(path, &context, plaintext).await?;
        let metadata = BTreeMap::from([(format::METADATA_KEY.to_string(), version.to_string())]);
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
        let known = [format::VERSION, format::BUNDLED].map(|v| v.to_string());
        if let Some(version) = marked.filter(|v| !known.contains(v)) {
            return Err(refused(
                FormatError::UnsupportedVersion(version.parse().unwrap_or(0)).to_string(),
            ));
        }
        let context = self.context(path);
        let secret = match format::version(&object.body) {
            Ok(format::BUNDLED) => self.open_bundled(path, &object.body, &context).await?,
            _ => {
                let envelope = format::parse(&object.body).map_err(|e| refused(e.to_string()))?;
                let data_key = self.unwrap_key(path, envelope.encrypted_key, context.kms()).await?;
                format::open(&envelope, &data_key, &context).map_err(|e| refused(e.to_string()))?
            }
        };
        Ok(Fetched {
            secret,
            etag: object.etag,
            legacy: false,
        })
    }

    /// A format 4 object, through this node's role's slot (an operator:
    /// the first slot whose data key is unwrapped already, else the first).
    async fn open_bundled(&self, path: &ObjectPath, body: &[u8], context: &Context) -> Result<Secret, SecretError> {
        let refused = |e: FormatError| SecretError::Refused {
            path: path.to_string(),
            reason: e.to_string(),
        };
        let envelope = format::parse_bundled(body).map_err(refused)?;
        let slot = match &self.reader {
            Some(scope) => envelope.slots.iter().position(|s| s.scope == scope),
            None => envelope
                .slots
                .iter()
                .position(|s| self.is_unwrapped(s.encrypted_key, &self.scope_context(s.scope)))
                .or(Some(0)),
        };
        let Some(slot) = slot else {
            return Err(refused(FormatError::NoSlot {
                sealed: envelope.slots.iter().map(|s| s.scope.to_string()).collect(),
                wanted: self.reader.clone().unwrap_or_default(),
            }));
        };
        let chosen = &envelope.slots[slot];
        let data_key = self
            .unwrap_key(path, chosen.encrypted_key, self.scope_context(chosen.scope))
            .await?;
        format::open_bundled(&envelope, slot, &data_key, context).map_err(refused)
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
