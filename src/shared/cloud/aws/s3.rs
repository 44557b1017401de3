//! `Objects` and `Buckets` on S3.

use std::collections::BTreeMap;

use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    BucketLocationConstraint, BucketVersioningStatus, CreateBucketConfiguration, PublicAccessBlockConfiguration,
    ServerSideEncryption, ServerSideEncryptionByDefault, ServerSideEncryptionConfiguration, ServerSideEncryptionRule,
    VersioningConfiguration,
};
use aws_sdk_s3::Client;

use super::{cloud_error, CallCount};
use crate::shared::cloud::{
    BucketState, Buckets, CloudError, DatedObject, IfChanged, ObjectEntry, Objects, StoredObject,
};

pub struct S3 {
    pub(crate) client: Client,
    pub calls: CallCount,
}

impl S3 {
    /// PutObject of `body` (bytes or a file) with user `metadata`; its ETag.
    pub(crate) async fn put_stream(
        &self,
        bucket: &str,
        key: &str,
        body: ByteStream,
        metadata: &BTreeMap<String, String>,
    ) -> Result<String, CloudError> {
        self.calls.add();
        let out = self
            .client
            .put_object()
            .bucket(bucket)
            .key(key)
            .content_type("application/octet-stream")
            .set_metadata(Some(metadata.iter().map(|(k, v)| (k.clone(), v.clone())).collect()))
            .body(body)
            .send()
            .await
            .map_err(|e| error("PutObject", &format!("s3://{bucket}/{key}"), e))?;
        Ok(out.e_tag().unwrap_or_default().to_string())
    }

    /// Path-style addressing whenever an endpoint is overridden: the
    /// emulator (and most S3 look-alikes) cannot route `bucket.127.0.0.1`.
    pub fn new(config: &aws_config::SdkConfig) -> Self {
        let builder = aws_sdk_s3::config::Builder::from(config).force_path_style(config.endpoint_url().is_some());
        S3 {
            client: Client::from_conf(builder.build()),
            calls: CallCount::default(),
        }
    }
}

/// The error with its code; S3 answers HEAD requests without a body, so a
/// bare 404 or 403 gets the code `NotFound` or `Forbidden`.
pub(crate) fn error<E>(
    operation: &'static str,
    resource: &str,
    err: aws_sdk_s3::error::SdkError<E, HttpResponse>,
) -> CloudError
where
    E: aws_sdk_s3::error::ProvideErrorMetadata + std::error::Error + 'static,
{
    let status = err.raw_response().map(|r| r.status().as_u16());
    let mut e = cloud_error(operation, resource, err);
    if e.code.is_none() {
        e.code = match status {
            // A conditional GET of an unchanged object: no body, so no code.
            Some(304) => Some("NotModified".into()),
            Some(404) => Some("NotFound".into()),
            Some(403) => Some("Forbidden".into()),
            _ => None,
        };
    }
    e
}

pub(crate) fn code_is(e: &CloudError, codes: &[&str]) -> bool {
    e.code.as_deref().is_some_and(|c| codes.contains(&c))
}

impl S3 {
    /// Every object under `prefix` as S3 lists it, all pages; a page that
    /// fails (or a truncated one without a token) fails the listing.
    pub(super) async fn list_objects(
        &self,
        bucket: &str,
        prefix: &str,
    ) -> Result<Vec<aws_sdk_s3::types::Object>, CloudError> {
        let resource = format!("s3://{bucket}/{prefix}");
        let mut entries = Vec::new();
        let mut token: Option<String> = None;
        loop {
            self.calls.add();
            let page = self
                .client
                .list_objects_v2()
                .bucket(bucket)
                .prefix(prefix)
                .set_continuation_token(token.take())
                .send()
                .await
                .map_err(|e| error("ListObjectsV2", &resource, e))?;
            entries.extend(page.contents().iter().cloned());
            if !page.is_truncated().unwrap_or(false) {
                return Ok(entries);
            }
            // A truncated page without a token to go on from is a partial
            // listing: fail rather than let a caller act on it.
            token = Some(
                page.next_continuation_token()
                    .filter(|t| !t.is_empty())
                    .map(str::to_string)
                    .ok_or_else(|| CloudError {
                        operation: "ListObjectsV2",
                        resource: resource.clone(),
                        code: None,
                        message: "a truncated page came without a continuation token".into(),
                    })?,
            );
        }
    }
}

impl Objects for S3 {
    async fn list_dated(&self, bucket: &str, prefix: &str) -> Result<Vec<DatedObject>, CloudError> {
        Ok(self
            .list_objects(bucket, prefix)
            .await?
            .iter()
            .filter_map(|o| {
                Some(DatedObject {
                    key: o.key()?.to_string(),
                    size: o.size().unwrap_or_default().max(0) as u64,
                    stored_unix: o.last_modified()?.secs(),
                })
            })
            .collect())
    }

    async fn list(&self, bucket: &str, prefix: &str) -> Result<Vec<ObjectEntry>, CloudError> {
        Ok(self
            .list_objects(bucket, prefix)
            .await?
            .iter()
            .filter_map(|o| {
                Some(ObjectEntry {
                    key: o.key()?.to_string(),
                    etag: o.e_tag().unwrap_or_default().to_string(),
                    size: o.size().unwrap_or_default().max(0) as u64,
                })
            })
            .collect())
    }

    async fn get(&self, bucket: &str, key: &str, max_bytes: u64) -> Result<Option<StoredObject>, CloudError> {
        Ok(match self.get_if_changed(bucket, key, None, max_bytes).await? {
            IfChanged::Changed(object) => Some(object),
            IfChanged::Missing | IfChanged::NotModified => None,
        })
    }

    async fn get_if_changed(
        &self,
        bucket: &str,
        key: &str,
        etag: Option<&str>,
        max_bytes: u64,
    ) -> Result<IfChanged, CloudError> {
        let resource = format!("s3://{bucket}/{key}");
        self.calls.add();
        let request = self.client.get_object().bucket(bucket).key(key);
        let out = match request.set_if_none_match(etag.map(str::to_string)).send().await {
            Ok(out) => out,
            Err(e) => {
                let e = error("GetObject", &resource, e);
                return if code_is(&e, &["NoSuchKey", "NotFound"]) {
                    Ok(IfChanged::Missing)
                } else if etag.is_some() && code_is(&e, &["NotModified"]) {
                    Ok(IfChanged::NotModified)
                } else {
                    Err(e)
                };
            }
        };
        let size = out.content_length().unwrap_or(0).max(0) as u64;
        if size > max_bytes {
            return Err(CloudError {
                operation: "GetObject",
                resource,
                code: None,
                message: format!("{size} bytes, more than the {max_bytes} nodeboot accepts"),
            });
        }
        let etag = out.e_tag().unwrap_or_default().to_string();
        let metadata = out
            .metadata()
            .map(|m| m.iter().map(|(k, v)| (k.to_lowercase(), v.clone())).collect())
            .unwrap_or_default();
        let sse = out.server_side_encryption().map(|s| s.as_str().to_string());
        let sse_kms_key = out.ssekms_key_id().map(str::to_string);
        let body = out.body.collect().await.map_err(|e| CloudError {
            operation: "GetObject",
            resource: resource.clone(),
            code: None,
            message: format!("reading the body: {e}"),
        })?;
        Ok(IfChanged::Changed(StoredObject {
            body: body.into_bytes().to_vec(),
            etag,
            metadata,
            sse,
            sse_kms_key,
        }))
    }

    async fn put(
        &self,
        bucket: &str,
        key: &str,
        body: Vec<u8>,
        metadata: &BTreeMap<String, String>,
    ) -> Result<String, CloudError> {
        self.put_stream(bucket, key, ByteStream::from(body), metadata).await
    }

    async fn delete(&self, bucket: &str, key: &str) -> Result<(), CloudError> {
        self.calls.add();
        self.client
            .delete_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| error("DeleteObject", &format!("s3://{bucket}/{key}"), e))?;
        Ok(())
    }

    fn api_calls(&self) -> u32 {
        self.calls.get()
    }
}

impl Buckets for S3 {
    async fn bucket_state(&self, bucket: &str) -> Result<BucketState, CloudError> {
        self.calls.add();
        if let Err(e) = self.client.head_bucket().bucket(bucket).send().await {
            let e = error("HeadBucket", bucket, e);
            return if code_is(&e, &["NotFound", "NoSuchBucket"]) {
                Ok(BucketState::default())
            } else {
                Err(e)
            };
        }
        self.calls.add();
        let versioning = self
            .client
            .get_bucket_versioning()
            .bucket(bucket)
            .send()
            .await
            .map_err(|e| error("GetBucketVersioning", bucket, e))?;
        self.calls.add();
        let public_access_blocked = match self.client.get_public_access_block().bucket(bucket).send().await {
            Ok(out) => out.public_access_block_configuration().is_some_and(|c| {
                [
                    c.block_public_acls(),
                    c.ignore_public_acls(),
                    c.block_public_policy(),
                    c.restrict_public_buckets(),
                ]
                .iter()
                .all(|b| *b == Some(true))
            }),
            Err(e) => {
                let e = error("GetPublicAccessBlock", bucket, e);
                if !code_is(&e, &["NoSuchPublicAccessBlockConfiguration"]) {
                    return Err(e);
                }
                false
            }
        };
        self.calls.add();
        let encryption = match self.client.get_bucket_encryption().bucket(bucket).send().await {
            Ok(out) => out
                .server_side_encryption_configuration()
                .and_then(|c| c.rules().first())
                .and_then(|r| r.apply_server_side_encryption_by_default())
                .map(|d| {
                    (
                        d.sse_algorithm().as_str().to_string(),
                        d.kms_master_key_id().map(str::to_string),
                    )
                }),
            Err(e) => {
                let e = error("GetBucketEncryption", bucket, e);
                if !code_is(&e, &["ServerSideEncryptionConfigurationNotFoundError"]) {
                    return Err(e);
                }
                None
            }
        };
        Ok(BucketState {
            exists: true,
            versioning: versioning.status() == Some(&BucketVersioningStatus::Enabled),
            public_access_blocked,
            encryption,
        })
    }

    async fn create_bucket(&self, bucket: &str, region: &str) -> Result<(), CloudError> {
        self.calls.add();
        let mut request = self.client.create_bucket().bucket(bucket);
        // us-east-1 is the one region that refuses an explicit location.
        if region != "us-east-1" {
            request = request.create_bucket_configuration(
                CreateBucketConfiguration::builder()
                    .location_constraint(BucketLocationConstraint::from(region))
                    .build(),
            );
        }
        match request.send().await {
            Ok(_) => Ok(()),
            Err(e) => {
                let e = error("CreateBucket", bucket, e);
                if code_is(&e, &["BucketAlreadyOwnedByYou"]) {
                    Ok(())
                } else {
                    Err(e)
                }
            }
        }
    }

    async fn enable_versioning(&self, bucket: &str) -> Result<(), CloudError> {
        self.calls.add();
        let config = VersioningConfiguration::builder()
            .status(BucketVersioningStatus::Enabled)
            .build();
        self.client
            .put_bucket_versioning()
            .bucket(bucket)
            .versioning_configuration(config)
            .send()
            .await
            .map_err(|e| error("PutBucketVersioning", bucket, e))?;
        Ok(())
    }

    async fn block_public_access(&self, bucket: &str) -> Result<(), CloudError> {
        self.calls.add();
        let config = PublicAccessBlockConfiguration::builder()
            .block_public_acls(true)
            .ignore_public_acls(true)
            .block_public_policy(true)
            .restrict_public_buckets(true)
            .build();
        self.client
            .put_public_access_block()
            .bucket(bucket)
            .public_access_block_configuration(config)
            .send()
            .await
            .map_err(|e| error("PutPublicAccessBlock", bucket, e))?;
        Ok(())
    }

    async fn encrypt_by_default(&self, bucket: &str, kms_key_arn: &str) -> Result<(), CloudError> {
        self.calls.add();
        let default = ServerSideEncryptionByDefault::builder()
            .sse_algorithm(ServerSideEncryption::AwsKms)
            .kms_master_key_id(kms_key_arn)
            .build()
            .expect("the algorithm is set");
        let rule = ServerSideEncryptionRule::builder()
            .apply_server_side_encryption_by_default(default)
            .bucket_key_enabled(true)
            .build();
        let config = ServerSideEncryptionConfiguration::builder()
            .rules(rule)
            .build()
            .expect("the rules are set");
        self.client
            .put_bucket_encryption()
            .bucket(bucket)
            .server_side_encryption_configuration(config)
            .send()
            .await
            .map_err(|e| error("PutBucketEncryption", bucket, e))?;
        Ok(())
    }
}
