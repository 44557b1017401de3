//! `ObjectFiles` on S3: large objects streamed between a file and the
//! bucket, so a node never holds a whole etcd snapshot in memory.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use aws_sdk_s3::primitives::ByteStream;

use super::s3::{code_is, error, S3};
use crate::shared::cloud::{CloudError, ObjectFiles, ObjectHead};

fn io_error(operation: &'static str, resource: &str, e: impl std::fmt::Display) -> CloudError {
    CloudError {
        operation,
        resource: resource.to_string(),
        code: None,
        message: e.to_string(),
    }
}

fn user_metadata(m: Option<&std::collections::HashMap<String, String>>) -> BTreeMap<String, String> {
    m.map(|m| m.iter().map(|(k, v)| (k.to_lowercase(), v.clone())).collect())
        .unwrap_or_default()
}

impl ObjectFiles for S3 {
    async fn put_file(
        &self,
        bucket: &str,
        key: &str,
        path: &Path,
        metadata: &BTreeMap<String, String>,
    ) -> Result<String, CloudError> {
        let resource = format!("s3://{bucket}/{key}");
        let body = ByteStream::from_path(path)
            .await
            .map_err(|e| io_error("PutObject", &resource, format!("{}: {e}", path.display())))?;
        self.put_stream(bucket, key, body, metadata).await
    }

    async fn get_file(&self, bucket: &str, key: &str, path: &Path) -> Result<Option<ObjectHead>, CloudError> {
        let resource = format!("s3://{bucket}/{key}");
        self.calls.add();
        let mut out = match self.client.get_object().bucket(bucket).key(key).send().await {
            Ok(out) => out,
            Err(e) => {
                let e = error("GetObject", &resource, e);
                return if code_is(&e, &["NoSuchKey", "NotFound"]) {
                    Ok(None)
                } else {
                    Err(e)
                };
            }
        };
        let head = ObjectHead {
            etag: out.e_tag().unwrap_or_default().to_string(),
            size: out.content_length().unwrap_or(0).max(0) as u64,
            metadata: user_metadata(out.metadata()),
        };
        let mut file = std::fs::File::create(path)
            .map_err(|e| io_error("GetObject", &resource, format!("{}: {e}", path.display())))?;
        let mut written = 0u64;
        while let Some(bytes) = out
            .body
            .try_next()
            .await
            .map_err(|e| io_error("GetObject", &resource, format!("reading the body: {e}")))?
        {
            file.write_all(&bytes)
                .map_err(|e| io_error("GetObject", &resource, format!("{}: {e}", path.display())))?;
            written += bytes.len() as u64;
        }
        file.sync_all()
            .map_err(|e| io_error("GetObject", &resource, format!("{}: {e}", path.display())))?;
        if written != head.size {
            return Err(io_error(
                "GetObject",
                &resource,
                format!("the body ended after {written} of {} bytes", head.size),
            ));
        }
        Ok(Some(head))
    }

    async fn head(&self, bucket: &str, key: &str) -> Result<Option<ObjectHead>, CloudError> {
        let resource = format!("s3://{bucket}/{key}");
        self.calls.add();
        match self.client.head_object().bucket(bucket).key(key).send().await {
            Ok(out) => Ok(Some(ObjectHead {
                etag: out.e_tag().unwrap_or_default().to_string(),
                size: out.content_length().unwrap_or(0).max(0) as u64,
                metadata: user_metadata(out.metadata()),
            })),
            Err(e) => {
                let e = error("HeadObject", &resource, e);
                if code_is(&e, &["NoSuchKey", "NotFound"]) {
                    Ok(None)
                } else {
                    Err(e)
                }
            }
        }
    }
}
