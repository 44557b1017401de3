//! Backups in the secrets bucket: seal a snapshot as etcd streams it and
//! upload it in parts (no copy on disk), list, open one into a file as its
//! body arrives (one copy: the opened snapshot), prune.

use std::fs::File;
use std::io::{BufWriter, Read};
use std::path::{Path, PathBuf};

use tracing::{info, warn};

use super::retention::{self, PrunePlan, Retention};
use super::{context, context_aad, format, BackupId, Metadata, MAX_OBJECT_BYTES, PREFIX};
use crate::shared::cloud::{CloudError, Keys, ObjectBody, ObjectFiles, Objects};
use crate::shared::secrets::Store;

/// Bytes per uploaded part: S3 takes parts of 5 MiB and more (but the last),
/// at most 10,000 of them. The service's memory is about one part.
pub const PART_BYTES: usize = 8 * 1024 * 1024;
/// S3's most parts in one upload.
pub const MAX_PARTS: usize = 10_000;
/// What a download leaves free on its volume beyond the snapshot it writes.
pub const KEEP_FREE_BYTES: u64 = 64 * 1024 * 1024;

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
    #[error("backup of {size} bytes sealed is over the {MAX_OBJECT_BYTES}-byte limit of one S3 multipart upload ({MAX_PARTS} parts of {PART_BYTES} bytes)")]
    TooLarge { size: u64 },
    /// Opening a backup here would fill the volume.
    #[error("{path}: {free} bytes free, the backup needs {needed} (and {KEEP_FREE_BYTES} bytes are kept free): free space on that volume or open it elsewhere")]
    NoRoom { path: PathBuf, needed: u64, free: u64 },
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

/// Free bytes on the volume of `dir` (for an unprivileged process, as `df` shows them).
pub fn free_bytes(dir: &Path) -> Result<u64, BackupError> {
    let st = nix::sys::statvfs::statvfs(dir).map_err(|e| BackupError::io(dir, e.into()))?;
    Ok(st.blocks_available() as u64 * st.fragment_size() as u64)
}

/// Refuses when writing `needed` bytes into `dir` would leave less than
/// [`KEEP_FREE_BYTES`] free.
pub fn ensure_room(dir: &Path, needed: u64) -> Result<(), BackupError> {
    let free = free_bytes(dir)?;
    if free < needed.saturating_add(KEEP_FREE_BYTES) {
        return Err(BackupError::NoRoom {
            path: dir.to_path_buf(),
            needed,
            free,
        });
    }
    Ok(())
}

/// What the reader thread hands the uploader.
enum Sealed {
    Part(Vec<u8>),
    Done {
        digest: format::Digest,
        /// Time spent waiting for the snapshot's bytes.
        reading: std::time::Duration,
    },
    Failed(BackupError),
}

/// The reader thread: reads the snapshot, seals it, hands over parts of at
/// least [`PART_BYTES`] (the header in the first, the last one shorter).
fn seal_parts(
    key: &str,
    sealer: format::Sealer,
    header: Vec<u8>,
    mut snapshot: Box<dyn Read + Send>,
    tx: &std::sync::mpsc::SyncSender<Sealed>,
) {
    let capacity = PART_BYTES + format::CHUNK_BYTES as usize;
    let mut part = header;
    part.reserve(capacity);
    let mut buf = vec![0u8; 256 * 1024];
    let mut sealer = Some(sealer);
    let mut reading = std::time::Duration::ZERO;
    while let Some(open) = sealer.as_mut() {
        let started = std::time::Instant::now();
        let n = match format::read_full(&mut snapshot, &mut buf) {
            Ok(n) => n,
            Err(e) => {
                let _ = tx.send(Sealed::Failed(BackupError::Etcd(format!("reading the snapshot: {e}"))));
                return;
            }
        };
        reading += started.elapsed();
        let sealed = if n == 0 {
            sealer.take().expect("sealing").finish(&mut part).map(Some)
        } else {
            open.update(&buf[..n], &mut part).map(|()| None)
        };
        let digest = match sealed {
            Ok(digest) => digest,
            Err(e) => {
                let _ = tx.send(Sealed::Failed(BackupError::Bad(format!("sealing {key}: {e}"))));
                return;
            }
        };
        if part.len() >= PART_BYTES || digest.is_some() {
            let next = Vec::with_capacity(if digest.is_some() { 0 } else { capacity });
            if tx.send(Sealed::Part(std::mem::replace(&mut part, next))).is_err() {
                return; // the uploader gave up
            }
        }
        if let Some(digest) = digest {
            let _ = tx.send(Sealed::Done { digest, reading });
        }
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

    /// Seals `snapshot` as it is read (format 3) and uploads it in parts of
    /// [`PART_BYTES`]: no temporary file, memory about one part. `meta`
    /// needs no hash nor size: they travel in the sealed trailer, and the
    /// returned metadata has them. Nothing is left in the bucket on failure
    /// (the key exists only once the upload completes; its parts are aborted).
    pub async fn upload(
        &self,
        meta: &Metadata,
        snapshot: Box<dyn Read + Send>,
    ) -> Result<(Entry, Metadata), BackupError> {
        let id = meta.id();
        let key = id.key();
        let ctx = context(&self.store.environment, &key);
        let data_key = self.store.keys.generate_data_key(&self.store.key_id, &ctx).await?;
        let meta_json = serde_json::to_vec(meta).expect("metadata serialises");
        let (sealer, header) = format::Sealer::new(
            &data_key.plaintext,
            &data_key.ciphertext,
            &context_aad(&ctx),
            &meta_json,
        )
        .map_err(|e| BackupError::Bad(format!("sealing {key}: {e}")))?;
        let (objects, bucket) = (self.store.objects, &self.store.bucket);
        let upload_id = objects.create_upload(bucket, &key, &meta.s3()).await?;
        let sent = self.send_parts(&key, &upload_id, sealer, header, snapshot).await;
        let completed = match sent {
            Ok((parts, digest, size)) => objects
                .complete_upload(bucket, &key, &upload_id, &parts)
                .await
                .map(|_| (digest, size))
                .map_err(BackupError::from),
            Err(e) => Err(e),
        };
        match completed {
            Ok((digest, size)) => {
                let meta = Metadata {
                    sha256: digest.sha256,
                    size: digest.size,
                    ..meta.clone()
                };
                Ok((Entry { id, key, size }, meta))
            }
            Err(e) => {
                if let Err(abort) = objects.abort_upload(bucket, &key, &upload_id).await {
                    warn!(
                        "the unfinished upload {upload_id} of s3://{bucket}/{key} keeps its parts until aborted \
                         (aws s3api abort-multipart-upload): {abort}"
                    );
                }
                Err(e)
            }
        }
    }

    /// Uploads the parts a reader thread seals (see [`seal_parts`]): while
    /// one part uploads, the next is read from etcd and sealed. Returns the
    /// parts, the plaintext's digest and the sealed size.
    async fn send_parts(
        &self,
        key: &str,
        upload_id: &str,
        sealer: format::Sealer,
        header: Vec<u8>,
        snapshot: Box<dyn Read + Send>,
    ) -> Result<(Vec<(i32, String)>, format::Digest, u64), BackupError> {
        // One part uploading, one waiting, one being filled: memory is three parts.
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let key_name = key.to_string();
        let reader = std::thread::spawn(move || seal_parts(&key_name, sealer, header, snapshot, &tx));
        let mut parts = Vec::new();
        let mut size = 0u64;
        let mut uploading = std::time::Duration::ZERO;
        let outcome = loop {
            // Blocks this (single-threaded) runtime only while no part is ready.
            match rx.recv() {
                Ok(Sealed::Part(body)) => {
                    if parts.len() >= MAX_PARTS {
                        break Err(BackupError::TooLarge { size });
                    }
                    size += body.len() as u64;
                    let number = parts.len() as i32 + 1;
                    let started = std::time::Instant::now();
                    let sent = self
                        .store
                        .objects
                        .upload_part(&self.store.bucket, key, upload_id, number, body)
                        .await;
                    uploading += started.elapsed();
                    match sent {
                        Ok(etag) => parts.push((number, etag)),
                        Err(e) => break Err(e.into()),
                    }
                }
                Ok(Sealed::Done { digest, reading }) => {
                    info!(
                        reading = format!("{:.2}", reading.as_secs_f64()),
                        uploading = format!("{:.2}", uploading.as_secs_f64()),
                        "seconds spent waiting for etcd's stream and for S3's parts"
                    );
                    break Ok(digest);
                }
                Ok(Sealed::Failed(e)) => break Err(e),
                Err(_) => break Err(BackupError::Bad(format!("sealing {key}: the reader stopped"))),
            }
        };
        drop(rx); // a reader still running fails its next send and stops
        let _ = reader.join();
        outcome.map(|digest| (parts, digest, size))
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

    /// Downloads and opens backup `id` into `out` as its body arrives
    /// (written to a temporary file beside it and renamed only once every
    /// chunk authenticated and the digest matched; refused before writing
    /// when the volume has no room for it). Returns the authenticated
    /// metadata. Memory: about one chunk.
    pub async fn download(&self, id: &BackupId, out: &Path) -> Result<Metadata, BackupError> {
        let key = id.key();
        let dir = out
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let partial = dir.join(format!(".{}.open.tmp", id.name()));
        let result = self.download_into(&key, dir, &partial).await;
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

    async fn download_into(&self, key: &str, dir: &Path, partial: &Path) -> Result<Metadata, BackupError> {
        let Some((head, mut body)) = self.store.objects.get_body(&self.store.bucket, key).await? else {
            return Err(BackupError::NotFound {
                bucket: self.store.bucket.clone(),
                key: key.to_string(),
            });
        };
        // The opened snapshot is smaller than the object (no header, no tags).
        ensure_room(dir, head.size)?;
        let mut stored = Vec::new();
        let header = loop {
            if let Some(header) = format::parse_header(&stored).map_err(|e| self.refused(key, e))? {
                break header;
            }
            match body.next_bytes().await? {
                Some(bytes) => stored.extend_from_slice(&bytes),
                None => return Err(self.refused(key, format::StreamError::Truncated)),
            }
        };
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
        let file = File::create(partial).map_err(|e| BackupError::io(partial, e))?;
        let mut output = BufWriter::with_capacity(1 << 20, file);
        let refused = |e: format::StreamError| match e {
            format::StreamError::Io(e) => BackupError::io(partial, e),
            e => self.refused(key, e),
        };
        let mut opener = format::Opener::new(&header, &data_key, &context_aad(&ctx)).map_err(refused)?;
        opener.update(&stored[header.len()..], &mut output).map_err(refused)?;
        drop(stored);
        while let Some(bytes) = body.next_bytes().await? {
            opener.update(&bytes, &mut output).map_err(refused)?;
        }
        let digest = opener.finish(&mut output).map_err(refused)?;
        output
            .into_inner()
            .map_err(|e| BackupError::io(partial, e.into_error()))?
            .sync_all()
            .map_err(|e| BackupError::io(partial, e))?;
        let mut meta: Metadata = serde_json::from_slice(&header.metadata)
            .map_err(|e| self.refused(key, format!("unreadable metadata: {e}")))?;
        if header.version == format::VERSION_2 {
            // Format 2 recorded the hash in its header; format 3's trailer was checked.
            if digest.sha256 != meta.sha256 || digest.size != meta.size {
                return Err(self.refused(
                    key,
                    format!(
                        "the snapshot's SHA-256 {} ({} bytes) is not the recorded {} ({} bytes)",
                        digest.sha256, digest.size, meta.sha256, meta.size
                    ),
                ));
            }
        } else {
            meta.sha256 = digest.sha256;
            meta.size = digest.size;
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
