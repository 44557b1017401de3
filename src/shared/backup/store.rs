//! Backups in the secrets bucket: seal a snapshot file into a temporary
//! file, upload it, list, open one into a file, prune.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::retention::{self, PrunePlan, Retention};
use super::{context, context_aad, format, BackupId, Metadata, MAX_OBJECT_BYTES, PREFIX};
use crate::shared::cloud::{CloudError, Keys, ObjectFiles, Objects};
use crate::shared::secrets::Store;

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// The object does not open: changed, cut short, another environment's.
    #[error("backup s3://{bucket}/{key} is refused: {reason}")]
    Refused {
        bucket: String,
        key: String,
        reason: String,
    },
    #[error("no backup s3://{bucket}/{key}")]
    NotFound { bucket: String, key: String },
    #[error("no backups under s3://{bucket}/{PREFIX}")]
    NoBackups { bucket: String },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("backup of {size} bytes sealed is over the {MAX_OBJECT_BYTES}-byte limit of one S3 PutObject")]
    TooLarge { size: u64 },
    #[error(transparent)]
    Cloud(#[from] CloudError),
    #[error("etcd: {0}")]
    Etcd(String),
    #[error("{command} failed: {detail}")]
    Command { command: String, detail: String },
    #[error("{0}")]
    Bad(String),
    #[error("gave up: {0}")]
    Timeout(String),
}

impl BackupError {
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        BackupError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// A backup of a listing and when the bucket stored it (`LastModified`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub entry: Entry,
    pub stored_unix: i64,
}

/// One backup of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub id: BackupId,
    pub key: String,
    pub size: u64,
}

/// SHA-256 (hex) and length of a file, read once in chunks.
pub fn sha256_file(path: &Path) -> Result<(String, u64), BackupError> {
    let mut file = File::open(path).map_err(|e| BackupError::io(path, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut len = 0u64;
    loop {
        let n = file.read(&mut buf).map_err(|e| BackupError::io(path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        len += n as u64;
    }
    Ok((hex::encode(hasher.finalize()), len))
}

/// A writer that hashes what passes through.
struct Hashing<W> {
    inner: W,
    hasher: Sha256,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// One environment's backups: in its secrets bucket, under its KMS key.
pub struct Backups<'a, O, K> {
    /// The bucket, key and clients (backups use them directly: their own
    /// envelope format, streamed through files).
    pub store: Store<'a, O, K>,
}

impl<O: Objects + ObjectFiles, K: Keys> Clone for Backups<'_, O, K> {
    fn clone(&self) -> Self {
        let s = &self.store;
        Backups::new(s.objects, s.keys, &s.bucket, &s.environment, &s.key_id)
    }
}

impl<'a, O: Objects + ObjectFiles, K: Keys> Backups<'a, O, K> {
    pub fn new(objects: &'a O, keys: &'a K, bucket: &str, environment: &str, key_id: &str) -> Self {
        Backups {
            store: Store::new(objects, keys, bucket, environment, key_id),
        }
    }

    fn refused(&self, key: &str, reason: impl std::fmt::Display) -> BackupError {
        BackupError::Refused {
            bucket: self.store.bucket.clone(),
            key: key.to_string(),
            reason: reason.to_string(),
        }
    }

    /// Seals the snapshot at `snapshot` (described by `meta`) through a
    /// temporary file in `work` and uploads it. Memory: one chunk.
    pub async fn upload(&self, snapshot: &Path, meta: &Metadata, work: &Path) -> Result<Entry, BackupError> {
        let id = meta.id();
        let key = id.key();
        let ctx = context(&self.store.environment, &key);
        let data_key = self.store.keys.generate_data_key(&self.store.key_id, &ctx).await?;
        let sealed_path = work.join(format!("{}.sealed.tmp", id.name()));
        let sealed = (|| -> Result<u64, BackupError> {
            let input = File::open(snapshot).map_err(|e| BackupError::io(snapshot, e))?;
            let output = File::create(&sealed_path).map_err(|e| BackupError::io(&sealed_path, e))?;
            let mut output = BufWriter::new(output);
            let meta_json = serde_json::to_vec(meta).expect("metadata serialises");
            let n = format::seal(
                &data_key.plaintext,
                &data_key.ciphertext,
                &context_aad(&ctx),
                &meta_json,
                &mut BufReader::new(input),
                &mut output,
            )
            .map_err(|e| BackupError::Bad(format!("sealing {}: {e}", snapshot.display())))?;
            output
                .into_inner()
                .map_err(|e| BackupError::io(&sealed_path, e.into_error()))?
                .sync_all()
                .map_err(|e| BackupError::io(&sealed_path, e))?;
            Ok(n)
        })();
        let result = match sealed {
            Ok(size) if size > MAX_OBJECT_BYTES => Err(BackupError::TooLarge { size }),
            Ok(size) => self
                .store
                .objects
                .put_file(&self.store.bucket, &key, &sealed_path, &meta.s3())
                .await
                .map(|_| size)
                .map_err(BackupError::from),
            Err(e) => Err(e),
        };
        let _ = std::fs::remove_file(&sealed_path);
        Ok(Entry { id, key, size: result? })
    }

    /// Every backup with the time the bucket stored it, oldest first: by
    /// the cluster's revision, then by that time (`retention::order`), never
    /// by the time in a name (the taking node's clock). Fails on a failed or
    /// partial listing.
    pub async fn listing(&self) -> Result<Vec<Stored>, BackupError> {
        let mut stored: Vec<Stored> = self
            .store
            .objects
            .list_dated(&self.store.bucket, PREFIX)
            .await?
            .into_iter()
            .filter_map(|o| {
                BackupId::from_key(&o.key).map(|id| Stored {
                    entry: Entry {
                        id,
                        key: o.key,
                        size: o.size,
                    },
                    stored_unix: o.stored_unix,
                })
            })
            .collect();
        stored.sort_by_key(|s| retention::order(&s.entry.id, s.stored_unix));
        Ok(stored)
    }

    /// Every backup, oldest first (see [`Backups::listing`]).
    pub async fn list(&self) -> Result<Vec<Entry>, BackupError> {
        Ok(self.listing().await?.into_iter().map(|s| s.entry).collect())
    }

    /// The newest backup: the highest revision.
    pub async fn newest(&self) -> Result<Option<Entry>, BackupError> {
        Ok(self.list().await?.pop())
    }

    /// The metadata as stored beside the object (HEAD; for display and
    /// the version rule, not authenticated).
    pub async fn head_metadata(&self, id: &BackupId) -> Result<Option<crate::shared::cloud::ObjectHead>, BackupError> {
        Ok(self.store.objects.head(&self.store.bucket, &id.key()).await?)
    }

    /// Downloads and opens backup `id` into `out` (written to a temporary
    /// file beside it and renamed only once every chunk authenticated and
    /// the SHA-256 matched). Returns the authenticated metadata.
    pub async fn download(&self, id: &BackupId, out: &Path) -> Result<Metadata, BackupError> {
        let key = id.key();
        let dir = out.parent().unwrap_or(Path::new("."));
        let sealed_path = dir.join(format!(".{}.sealed.tmp", id.name()));
        let partial = dir.join(format!(".{}.open.tmp", id.name()));
        let result = self.download_into(&key, &sealed_path, &partial).await;
        let _ = std::fs::remove_file(&sealed_path);
        match result {
            Ok(meta) => {
                std::fs::rename(&partial, out).map_err(|e| BackupError::io(out, e))?;
                Ok(meta)
            }
            Err(e) => {
                let _ = std::fs::remove_file(&partial);
                Err(e)
            }
        }
    }

    async fn download_into(&self, key: &str, sealed_path: &Path, partial: &Path) -> Result<Metadata, BackupError> {
        if self
            .store
            .objects
            .get_file(&self.store.bucket, key, sealed_path)
            .await?
            .is_none()
        {
            return Err(BackupError::NotFound {
                bucket: self.store.bucket.clone(),
                key: key.to_string(),
            });
        }
        let file = File::open(sealed_path).map_err(|e| BackupError::io(sealed_path, e))?;
        let mut input = BufReader::new(file);
        let header = format::read_header(&mut input).map_err(|e| self.refused(key, e))?;
        let ctx = context(&self.store.environment, key);
        let data_key = self
            .store
            .keys
            .decrypt(&self.store.key_id, &header.encrypted_key, &ctx)
            .await
            .map_err(|e| {
                if e.code
                    .as_deref()
                    .is_some_and(|c| c.contains("Invalid") || c.contains("Denied") || c.contains("Incorrect"))
                {
                    self.refused(
                        key,
                        format!(
                            "KMS would not unwrap its data key ({})",
                            e.code.as_deref().unwrap_or_default()
                        ),
                    )
                } else {
                    BackupError::Cloud(e)
                }
            })?;
        let output = File::create(partial).map_err(|e| BackupError::io(partial, e))?;
        let mut output = Hashing {
            inner: BufWriter::new(output),
            hasher: Sha256::new(),
        };
        let size = format::open(&header, &data_key, &context_aad(&ctx), &mut input, &mut output)
            .map_err(|e| self.refused(key, e))?;
        let Hashing { inner, hasher } = output;
        inner
            .into_inner()
            .map_err(|e| BackupError::io(partial, e.into_error()))?
            .sync_all()
            .map_err(|e| BackupError::io(partial, e))?;
        let meta: Metadata = serde_json::from_slice(&header.metadata)
            .map_err(|e| self.refused(key, format!("unreadable metadata: {e}")))?;
        let sha = hex::encode(hasher.finalize());
        if sha != meta.sha256 || size != meta.size {
            return Err(self.refused(
                key,
                format!(
                    "the snapshot's SHA-256 {sha} ({size} bytes) is not the recorded {} ({} bytes)",
                    meta.sha256, meta.size
                ),
            ));
        }
        if BackupId::from_key(key) != Some(meta.id()) {
            return Err(self.refused(key, format!("its metadata names backup {}", meta.id())));
        }
        Ok(meta)
    }

    /// Deletes what the retention plan says, from a fresh listing (ages by
    /// the bucket's `LastModified`); a failed listing deletes nothing.
    pub async fn prune(&self, policy: Retention) -> Result<PrunePlan, BackupError> {
        let listing = self
            .store
            .objects
            .list_dated(&self.store.bucket, PREFIX)
            .await
            .map_err(|e| e.to_string());
        let plan = match &listing {
            Ok(objects) => retention::plan(Ok(objects), policy),
            Err(e) => retention::plan(Err(e), policy),
        };
        for key in &plan.delete {
            self.store.objects.delete(&self.store.bucket, key).await?;
        }
        Ok(plan)
    }
}
