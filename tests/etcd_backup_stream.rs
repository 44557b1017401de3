//! The bytes path of etcd backups at size (issue 24, part 3), against the
//! emulator's S3 and KMS: a backup is sealed while its snapshot streams and
//! uploaded in parts (nothing on the etcd volume), a stream that breaks or
//! a part S3 refuses leaves neither object nor parts, and backups in format 2 (earlier
//! releases) still open. The snapshot comes from a stand-in for etcd's
//! stream (deterministic bytes, or a stream that fails part-way); etcd's own
//! stream and `etcdutl` are `tests/etcd_backup_e2e.rs`'.

mod common;

use std::collections::HashMap;
use std::io::Read;

use common::bed::runtime;
use common::secrets_bed::*;
use nodeboot::shared::backup::etcd::{EndpointStatus, EtcdAccess, MemberInfo};
use nodeboot::shared::backup::service::NodeBackup;
use nodeboot::shared::backup::store::{BackupError, Backups, PART_BYTES};
use nodeboot::shared::backup::{context, context_aad, format, BackupId, Metadata};
use nodeboot::shared::cloud::aws::{Kms, S3};
use nodeboot::shared::cloud::{
    CloudError, DatedObject, IfChanged, Keys, ObjectEntry, ObjectFiles, ObjectHead, Objects, StoredObject,
};
use sha2::{Digest, Sha256};

/// `len` bytes that do not repeat within a part, the same each time.
fn snapshot_bytes(len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    let mut block = Sha256::digest(b"snapshot").to_vec();
    while out.len() < len {
        block = Sha256::digest(&block).to_vec();
        out.extend_from_slice(&block);
    }
    out.truncate(len);
    out
}

/// A reader that yields `bytes` and then, with `fail_after`, an error
/// instead of the rest (etcd stopped mid-stream).
struct Stream {
    bytes: Vec<u8>,
    at: usize,
    fail_after: Option<usize>,
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.fail_after.is_some_and(|n| self.at >= n) {
            return Err(std::io::Error::other("connection reset by the member"));
        }
        let end = self.fail_after.unwrap_or(self.bytes.len()).min(self.bytes.len());
        let n = buf.len().min(end - self.at).min(64 * 1024);
        buf[..n].copy_from_slice(&self.bytes[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// etcd as the backup service sees it: one member at revision 42 whose
/// snapshot stream is `bytes`.
struct OneMember {
    bytes: Vec<u8>,
    fail_after: Option<usize>,
}

impl EtcdAccess for OneMember {
    fn status(&self, endpoint: &str) -> Result<EndpointStatus, String> {
        Ok(EndpointStatus {
            endpoint: endpoint.to_string(),
            member_id: 1,
            cluster_id: 9,
            leader: 1,
            revision: 42,
            raft_term: 2,
            db_size: self.bytes.len() as i64,
            db_size_in_use: self.bytes.len() as i64,
            version: "3.5.16".into(),
            is_learner: false,
        })
    }
    fn members(&self) -> Result<Vec<MemberInfo>, String> {
        Ok(vec![MemberInfo {
            id: 1,
            name: "source".into(),
            peer_urls: vec![],
            client_urls: vec!["http://127.0.0.1:1".into()],
            is_learner: false,
        }])
    }
    fn snapshot(&self, endpoint: Option<&str>) -> Result<(String, Box<dyn Read + Send>), String> {
        let stream = Stream {
            bytes: self.bytes.clone(),
            at: 0,
            fail_after: self.fail_after,
        };
        Ok((endpoint.unwrap_or("http://127.0.0.1:1").to_string(), Box::new(stream)))
    }
    fn key_count(&self, _at: Option<i64>) -> Result<(u64, i64), String> {
        Ok((7, 42))
    }
    fn put(&self, _key: &str, _value: &str) -> Result<(), String> {
        Ok(())
    }
    fn try_lock(&self, _name: &str, _holder: &str, _ttl: i64) -> Result<Option<i64>, String> {
        Ok(Some(1))
    }
    fn unlock(&self, _lease: i64) -> Result<(), String> {
        Ok(())
    }
    fn release_own_lock(&self, _: &str, _: &str) -> Result<bool, String> {
        Ok(false)
    }
}

/// A backup as the node's service takes it; `work` is where format 2 put
/// its temporary copies (here a path that cannot be a directory).
fn backup(p: &Platform, etcd: &OneMember) -> Result<nodeboot::shared::backup::store::Entry, BackupError> {
    let sdk = sdk_config(&p.aws.server.url);
    backup_through(p, &S3::new(&sdk), etcd)
}

/// [`backup`] through `objects` (the emulator's S3, or it with a fault).
fn backup_through<O: Objects + ObjectFiles>(
    p: &Platform,
    objects: &O,
    etcd: &OneMember,
) -> Result<nodeboot::shared::backup::store::Entry, BackupError> {
    let sdk = sdk_config(&p.aws.server.url);
    let kms = Kms::new(&sdk);
    let blocker = tempfile::NamedTempFile::new().unwrap();
    let node = NodeBackup {
        backups: Backups::new(objects, &kms, p.bucket(), &p.env.name, &p.env.kms_master_id),
        etcd,
        endpoint: "http://127.0.0.1:1".into(),
        work: blocker.path().join("nodeboot-backup"),
        member_name: "source".into(),
        members: 1,
    };
    runtime().block_on(node.backup_now(Some("http://127.0.0.1:1")))
}

fn download(p: &Platform, id: &BackupId, out: &std::path::Path) -> Result<Metadata, BackupError> {
    let sdk = sdk_config(&p.aws.server.url);
    let (s3, kms) = (S3::new(&sdk), Kms::new(&sdk));
    runtime().block_on(Backups::new(&s3, &kms, p.bucket(), &p.env.name, &p.env.kms_master_id).download(id, out))
}

fn backup_objects(p: &Platform) -> usize {
    runtime().block_on(async {
        let out =
            p.s3.list_objects_v2()
                .bucket(p.bucket())
                .prefix("backups/")
                .send()
                .await
                .unwrap();
        out.contents().len()
    })
}

fn uploads_in_progress(p: &Platform) -> usize {
    runtime().block_on(async {
        let out = p.s3.list_multipart_uploads().bucket(p.bucket()).send().await.unwrap();
        out.uploads().len()
    })
}

#[test]
fn a_backup_streams_in_parts_with_no_room_on_the_etcd_volume_and_opens_back() {
    let p = Platform::new("bk-stream");
    let bytes = snapshot_bytes(2 * PART_BYTES + 12_345);
    let entry = backup(
        &p,
        &OneMember {
            bytes: bytes.clone(),
            fail_after: None,
        },
    )
    .expect("a backup needs no temporary file");
    let (stored, metadata) = p.get_raw(&entry.key);
    assert_eq!(&stored[..9], b"NBSECRET\x03", "envelope format 3");
    assert_eq!(stored.len() as u64, entry.size);
    assert_eq!(metadata.get("nodeboot-format").map(String::as_str), Some("3"));
    let etag = runtime().block_on(async {
        let head =
            p.s3.head_object()
                .bucket(p.bucket())
                .key(&entry.key)
                .send()
                .await
                .unwrap();
        head.e_tag().unwrap_or_default().to_string()
    });
    assert!(etag.trim_matches('"').ends_with("-3"), "three parts: {etag}");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("snap.db");
    let meta = download(&p, &entry.id, &out).unwrap();
    assert!(std::fs::read(&out).unwrap() == bytes, "the same bytes come back");
    assert_eq!(meta.size, bytes.len() as u64);
    assert_eq!(meta.sha256, hex::encode(Sha256::digest(&bytes)));
    assert_eq!(
        (meta.revision, meta.keys, meta.etcd_version.as_str()),
        (42, 7, "3.5.16")
    );
}

#[test]
fn a_snapshot_that_breaks_mid_stream_leaves_no_object_and_no_parts() {
    let p = Platform::new("bk-broken");
    let etcd = OneMember {
        bytes: snapshot_bytes(3 * PART_BYTES),
        fail_after: Some(PART_BYTES + PART_BYTES / 2),
    };
    let err = backup(&p, &etcd).unwrap_err();
    assert!(matches!(err, BackupError::Etcd(_)), "{err}");
    assert!(err.to_string().contains("connection reset"), "{err}");
    assert_eq!(backup_objects(&p), 0, "no backup object");
    assert_eq!(uploads_in_progress(&p), 0, "the upload's parts were aborted");
}

/// The emulator's S3, but part `failing` of any upload is refused as S3
/// would refuse it (a 500 after the SDK's retries): only that call is
/// faked, the upload, its other parts and its abort reach the emulator.
struct PartRefused<'a> {
    s3: &'a S3,
    failing: i32,
}

impl Objects for PartRefused<'_> {
    async fn list(&self, bucket: &str, prefix: &str) -> Result<Vec<ObjectEntry>, CloudError> {
        self.s3.list(bucket, prefix).await
    }
    async fn get(&self, bucket: &str, key: &str, max_bytes: u64) -> Result<Option<StoredObject>, CloudError> {
        self.s3.get(bucket, key, max_bytes).await
    }
    async fn get_if_changed(
        &self,
        bucket: &str,
        key: &str,
        etag: Option<&str>,
        max_bytes: u64,
    ) -> Result<IfChanged, CloudError> {
        self.s3.get_if_changed(bucket, key, etag, max_bytes).await
    }
    async fn put(
        &self,
        bucket: &str,
        key: &str,
        body: Vec<u8>,
        metadata: &std::collections::BTreeMap<String, String>,
    ) -> Result<String, CloudError> {
        self.s3.put(bucket, key, body, metadata).await
    }
    async fn delete(&self, bucket: &str, key: &str) -> Result<(), CloudError> {
        self.s3.delete(bucket, key).await
    }
    async fn list_dated(&self, bucket: &str, prefix: &str) -> Result<Vec<DatedObject>, CloudError> {
        self.s3.list_dated(bucket, prefix).await
    }
    fn api_calls(&self) -> u32 {
        self.s3.api_calls()
    }
}

impl ObjectFiles for PartRefused<'_> {
    type Body = <S3 as ObjectFiles>::Body;
    async fn create_upload(
        &self,
        bucket: &str,
        key: &str,
        metadata: &std::collections::BTreeMap<String, String>,
    ) -> Result<String, CloudError> {
        self.s3.create_upload(bucket, key, metadata).await
    }
    async fn upload_part(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        number: i32,
        body: Vec<u8>,
    ) -> Result<String, CloudError> {
        if number == self.failing {
            return Err(CloudError {
                operation: "UploadPart",
                resource: format!("s3://{bucket}/{key}"),
                code: Some("InternalError".into()),
                message: "We encountered an internal error. Please try again.".into(),
            });
        }
        self.s3.upload_part(bucket, key, upload_id, number, body).await
    }
    async fn complete_upload(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        parts: &[(i32, String)],
    ) -> Result<String, CloudError> {
        self.s3.complete_upload(bucket, key, upload_id, parts).await
    }
    async fn abort_upload(&self, bucket: &str, key: &str, upload_id: &str) -> Result<(), CloudError> {
        self.s3.abort_upload(bucket, key, upload_id).await
    }
    async fn get_body(&self, bucket: &str, key: &str) -> Result<Option<(ObjectHead, Self::Body)>, CloudError> {
        self.s3.get_body(bucket, key).await
    }
    async fn head(&self, bucket: &str, key: &str) -> Result<Option<ObjectHead>, CloudError> {
        self.s3.head(bucket, key).await
    }
}

#[test]
fn a_part_that_s3_refuses_aborts_the_upload_with_the_parts_already_sent() {
    let p = Platform::new("bk-part-refused");
    let sdk = sdk_config(&p.aws.server.url);
    let s3 = S3::new(&sdk);
    let etcd = OneMember {
        bytes: snapshot_bytes(3 * PART_BYTES),
        fail_after: None,
    };
    // Parts 1 and 2 reach the emulator; part 3 is refused.
    let err = backup_through(&p, &PartRefused { s3: &s3, failing: 3 }, &etcd).unwrap_err();
    assert!(err.to_string().contains("UploadPart"), "{err}");
    assert_eq!(backup_objects(&p), 0, "no backup object");
    assert_eq!(uploads_in_progress(&p), 0, "the upload and its two parts were aborted");
}

#[test]
fn a_format_2_backup_of_an_earlier_release_still_opens_and_a_changed_one_is_refused() {
    let p = Platform::new("bk-format2");
    let bytes = snapshot_bytes(3 * 1024 * 1024 + 5);
    let id = BackupId {
        unix: 1_790_000_000,
        revision: 77,
    };
    let meta = Metadata {
        environment: p.env.name.clone(),
        revision: 77,
        keys: 3,
        members: 3,
        etcd_version: "3.5.16".into(),
        unix: id.unix,
        sha256: hex::encode(Sha256::digest(&bytes)),
        size: bytes.len() as u64,
        taken_by: "old".into(),
    };
    // Sealed as format 2 was: the hash in the header, one PUT.
    let sdk = sdk_config(&p.aws.server.url);
    let kms = Kms::new(&sdk);
    let ctx = context(&p.env.name, &id.key());
    let data_key = runtime()
        .block_on(kms.generate_data_key(&p.env.kms_master_id, &ctx))
        .unwrap();
    let (mut sealer, mut stored) = format::Sealer::with(
        &data_key.plaintext,
        &data_key.ciphertext,
        &context_aad(&ctx),
        &serde_json::to_vec(&meta).unwrap(),
        format::CHUNK_BYTES,
        format::VERSION_2,
    )
    .unwrap();
    sealer.update(&bytes, &mut stored).unwrap();
    sealer.finish(&mut stored).unwrap();
    assert_eq!(&stored[..9], b"NBSECRET\x02");
    let s3_meta = HashMap::from([("nodeboot-format".to_string(), "2".to_string())]);
    p.put_raw(&id.key(), &stored, &s3_meta);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("snap.db");
    assert_eq!(download(&p, &id, &out).unwrap(), meta);
    assert!(std::fs::read(&out).unwrap() == bytes);
    std::fs::remove_file(&out).unwrap();
    let mut changed = stored.clone();
    let at = changed.len() - 100;
    changed[at] ^= 1;
    p.put_raw(&id.key(), &changed, &s3_meta);
    let err = download(&p, &id, &out).unwrap_err();
    assert!(matches!(err, BackupError::Refused { .. }), "{err}");
    assert!(!out.exists());
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "no temporary file is left"
    );
}
