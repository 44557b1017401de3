//! `Keys` on KMS.

use std::collections::{BTreeMap, HashMap};

use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{DataKeySpec, Tag};
use aws_sdk_kms::Client;

use super::{cloud_error as error, CallCount};
use crate::shared::cloud::{CloudError, DataKey, KeyInfo, Keys};
use crate::shared::secret::Secret;

pub struct Kms {
    client: Client,
    pub calls: CallCount,
}

impl Kms {
    pub fn new(config: &aws_config::SdkConfig) -> Self {
        Kms {
            client: Client::new(config),
            calls: CallCount::default(),
        }
    }
}

fn context_map(context: &BTreeMap<String, String>) -> HashMap<String, String> {
    context.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

fn key_info(m: &aws_sdk_kms::types::KeyMetadata) -> KeyInfo {
    KeyInfo {
        id: m.key_id().to_string(),
        arn: m.arn().unwrap_or_default().to_string(),
        state: m.key_state().map(|s| s.as_str().to_string()).unwrap_or_default(),
    }
}

impl Keys for Kms {
    async fn generate_data_key(&self, key_id: &str, context: &BTreeMap<String, String>) -> Result<DataKey, CloudError> {
        self.calls.add();
        let out = self
            .client
            .generate_data_key()
            .key_id(key_id)
            .key_spec(DataKeySpec::Aes256)
            .set_encryption_context(Some(context_map(context)))
            .send()
            .await
            .map_err(|e| error("GenerateDataKey", key_id, e))?;
        let missing = |what: &str| CloudError {
            operation: "GenerateDataKey",
            resource: key_id.into(),
            code: None,
            message: format!("the answer has no {what}"),
        };
        let plaintext = out.plaintext().ok_or_else(|| missing("plaintext key"))?;
        let ciphertext = out.ciphertext_blob().ok_or_else(|| missing("ciphertext blob"))?;
        Ok(DataKey {
            plaintext: Secret::new(plaintext.as_ref().to_vec()),
            ciphertext: ciphertext.as_ref().to_vec(),
        })
    }

    async fn decrypt(
        &self,
        key_id: &str,
        ciphertext: &[u8],
        context: &BTreeMap<String, String>,
    ) -> Result<Secret, CloudError> {
        self.calls.add();
        // Naming the key makes KMS refuse a blob made under any other key.
        let out = self
            .client
            .decrypt()
            .key_id(key_id)
            .ciphertext_blob(Blob::new(ciphertext))
            .set_encryption_context(Some(context_map(context)))
            .send()
            .await
            .map_err(|e| error("Decrypt", key_id, e))?;
        let plaintext = out.plaintext().ok_or_else(|| CloudError {
            operation: "Decrypt",
            resource: key_id.into(),
            code: None,
            message: "the answer has no plaintext".into(),
        })?;
        Ok(Secret::new(plaintext.as_ref().to_vec()))
    }

    async fn describe_key(&self, key_id: &str) -> Result<Option<KeyInfo>, CloudError> {
        self.calls.add();
        match self.client.describe_key().key_id(key_id).send().await {
            Ok(out) => Ok(out.key_metadata().map(key_info)),
            Err(e) => {
                let e = error("DescribeKey", key_id, e);
                if e.code.as_deref() == Some("NotFoundException") {
                    Ok(None)
                } else {
                    Err(e)
                }
            }
        }
    }

    /// Creates a symmetric key and turns on its yearly automatic rotation.
    async fn create_key(&self, description: &str, tags: &BTreeMap<String, String>) -> Result<KeyInfo, CloudError> {
        self.calls.add();
        let tags = tags
            .iter()
            .map(|(k, v)| {
                Tag::builder()
                    .tag_key(k)
                    .tag_value(v)
                    .build()
                    .expect("key and value are set")
            })
            .collect();
        let out = self
            .client
            .create_key()
            .description(description)
            .set_tags(Some(tags))
            .send()
            .await
            .map_err(|e| error("CreateKey", description, e))?;
        let info = out.key_metadata().map(key_info).ok_or_else(|| CloudError {
            operation: "CreateKey",
            resource: description.into(),
            code: None,
            message: "the answer has no key metadata".into(),
        })?;
        self.calls.add();
        self.client
            .enable_key_rotation()
            .key_id(&info.id)
            .send()
            .await
            .map_err(|e| error("EnableKeyRotation", &info.id, e))?;
        Ok(info)
    }

    async fn create_alias(&self, alias: &str, key_id: &str) -> Result<(), CloudError> {
        self.calls.add();
        self.client
            .create_alias()
            .alias_name(alias)
            .target_key_id(key_id)
            .send()
            .await
            .map_err(|e| error("CreateAlias", alias, e))?;
        Ok(())
    }

    fn api_calls(&self) -> u32 {
        self.calls.get()
    }
}
