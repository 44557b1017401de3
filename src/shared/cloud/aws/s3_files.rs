//! `ObjectFiles` on S3: large objects streamed in parts (multipart upload)
//! and read as their body arrives, so a node never holds a whole etcd
//! snapshot in memory nor needs a temporary copy of it.

use std::collections::BTreeMap;

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};

use super::s3::{code_is, error, S3};
use crate::shared::cloud::{CloudError, ObjectBody, ObjectFiles, ObjectHead};

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

/// A GetObject's body as it arrives.
pub struct S3Body {
    body: ByteStream,
    resource: String,
    expected: u64,
    read: u64,
}

impl ObjectBody for S3Body {
    async fn next_bytes(&mut self) -> Result<Option<Vec<u8>>, CloudError> {
        let next = self
            .body
            .try_next()
            .await
            .map_err(|e| io_error("GetObject", &self.resource, format!("reading the body: {e}")))?;
        match next {
            Some(bytes) => {
                self.read += bytes.len() as u64;
                Ok(Some(bytes.to_vec()))
            }
            None if self.read != self.expected => Err(io_error(
                "GetObject",
                &self.resource,
                format!("the body ended after {} of {} bytes", self.read, self.expected),
            )),
            None => Ok(None),
        }
    }
}

impl ObjectFiles for S3 {
    type Body = S3Body;

    async fn create_upload(
        &self,
        bucket: &str,
        key: &str,
        metadata: &BTreeMap<String, String>,
    ) -> Result<String, CloudError> {
        let resource = format!("s3://{bucket}/{key}");
        self.calls.add();
        let out = self
            .client
            .create_multipart_upload()
            .bucket(bucket)
            .key(key)
            .content_type("application/octet-stream")
            .set_metadata(Some(metadata.iter().map(|(k, v)| (k.clone(), v.clone())).collect()))
            .send()
            .await
            .map_err(|e| error("CreateMultipartUpload", &resource, e))?;
        out.upload_id()
            .map(str::to_string)
            .ok_or_else(|| io_error("CreateMultipartUpload", &resource, "no upload id in the answer"))
    }

    async fn upload_part(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        number: i32,
        body: Vec<u8>,
    ) -> Result<String, CloudError> {
        let resource = format!("s3://{bucket}/{key} part {number}");
        self.calls.add();
        let out = self
            .client
            .upload_part()
            .bucket(bucket)
            .key(key)
            .upload_id(upload_id)
            .part_number(number)
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|e| error("UploadPart", &resource, e))?;
        Ok(out.e_tag().unwrap_or_default().to_string())
    }

    async fn complete_upload(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        parts: &[(i32, String)],
    ) -> Result<String, CloudError> {
        let resource = format!("s3://{bucket}/{key}");
        self.calls.add();
        let parts = parts
            .iter()
            .map(|(n, etag)| CompletedPart::builder().part_number(*n).e_tag(etag).build())
            .collect();
        let out = self
            .client
            .complete_multipart_upload()
            .bucket(bucket)
            .key(key)
            .upload_id(upload_id)
            .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(parts)).build())
            .send()
            .await
            .map_err(|e| error("CompleteMultipartUpload", &resource, e))?;
        Ok(out.e_tag().unwrap_or_default().to_string())
    }

    async fn abort_upload(&self, bucket: &str, key: &str, upload_id: &str) -> Result<(), CloudError> {
        let resource = format!("s3://{bucket}/{key}");
        self.calls.add();
        self.client
            .abort_multipart_upload()
            .bucket(bucket)
            .key(key)
            .upload_id(upload_id)
            .send()
            .await
            .map(drop)
            .map_err(|e| error("AbortMultipartUpload", &resource, e))
    }

    async fn get_body(&self, bucket: &str, key: &str) -> Result<Option<(ObjectHead, S3Body)>, CloudError> {
        let resource = format!("s3://{bucket}/{key}");
        self.calls.add();
        let out = match self.client.get_object().bucket(bucket).key(key).send().await {
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
        let body = S3Body {
            body: out.body,
            resource,
            expected: head.size,
            read: 0,
        };
        Ok(Some((head, body)))
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
