//! `nodeboot prereqs`: what the seed's README made operators create by
//! hand before the first build: the KMS key (with an alias per
//! environment), the Terraform state bucket and the secrets bucket
//! (versioning on, public access blocked, encrypted by default under the
//! key). Observe, plan, act: a rerun finds everything and changes nothing.

use std::collections::BTreeMap;

use crate::shared::cloud::{tags, BucketState, Buckets, CloudError, KeyInfo, Keys};

/// What the environment asks for.
#[derive(Debug, Clone)]
pub struct Wanted {
    pub environment: String,
    pub region: String,
    /// `kms_master_id`: a key id, key ARN or `alias/NAME`.
    pub kms_key: String,
    /// The Terraform state bucket, then the secrets bucket.
    pub buckets: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyPlan {
    Use(KeyInfo),
    /// Create a key and point `alias` at it.
    Create {
        alias: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BucketStep {
    Create,
    EnableVersioning,
    BlockPublicAccess,
    EncryptByDefault,
}

impl BucketStep {
    fn describe(self) -> &'static str {
        match self {
            BucketStep::Create => "created",
            BucketStep::EnableVersioning => "versioning turned on",
            BucketStep::BlockPublicAccess => "public access blocked",
            BucketStep::EncryptByDefault => "default encryption set to the KMS key",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PrereqsError {
    #[error("kms_master_id {0:?} names no key, and nodeboot can only create a key behind an alias: set kms_master_id = \"alias/<name>\"")]
    KeyNotFound(String),
    #[error("the KMS key {id} is {state}; it cannot make data keys")]
    KeyUnusable { id: String, state: String },
    #[error("bucket {0}: the name is taken by another account (bucket names are global); choose another in the environment file")]
    BucketTaken(String),
    #[error(transparent)]
    Cloud(#[from] CloudError),
}

pub fn plan_key(kms_key: &str, found: Option<KeyInfo>) -> Result<KeyPlan, PrereqsError> {
    match found {
        Some(info) if info.state == "Enabled" => Ok(KeyPlan::Use(info)),
        Some(info) => Err(PrereqsError::KeyUnusable {
            id: kms_key.to_string(),
            state: info.state,
        }),
        None if kms_key.starts_with("alias/") => Ok(KeyPlan::Create {
            alias: kms_key.to_string(),
        }),
        None => Err(PrereqsError::KeyNotFound(kms_key.to_string())),
    }
}

/// What a bucket still needs. `key` is every name the key goes by (id,
/// ARN, alias); an encryption default naming any of them is kept.
pub fn plan_bucket(state: &BucketState, key: &[&str]) -> Vec<BucketStep> {
    if !state.exists {
        return vec![
            BucketStep::Create,
            BucketStep::EnableVersioning,
            BucketStep::BlockPublicAccess,
            BucketStep::EncryptByDefault,
        ];
    }
    let mut steps = Vec::new();
    if !state.versioning {
        steps.push(BucketStep::EnableVersioning);
    }
    if !state.public_access_blocked {
        steps.push(BucketStep::BlockPublicAccess);
    }
    let encrypted = state
        .encryption
        .as_ref()
        .is_some_and(|(algorithm, used)| algorithm == "aws:kms" && used.as_deref().is_some_and(|u| key.contains(&u)));
    if !encrypted {
        steps.push(BucketStep::EncryptByDefault);
    }
    steps
}

/// Observes, plans and acts; returns one line per resource for the operator.
pub async fn ensure(wanted: &Wanted, keys: &impl Keys, buckets: &impl Buckets) -> Result<Vec<String>, PrereqsError> {
    let mut lines = Vec::new();
    let key = match plan_key(&wanted.kms_key, keys.describe_key(&wanted.kms_key).await?)? {
        KeyPlan::Use(info) => {
            lines.push(format!("found   KMS key {} ({})", wanted.kms_key, info.arn));
            info
        }
        KeyPlan::Create { alias } => {
            let tags = BTreeMap::from([(tags::ENVIRONMENT.to_string(), wanted.environment.clone())]);
            let info = keys
                .create_key(&format!("nodeboot secrets of {}", wanted.environment), &tags)
                .await?;
            keys.create_alias(&alias, &info.id).await?;
            lines.push(format!("created KMS key {alias} ({})", info.arn));
            info
        }
    };
    let names = [key.id.as_str(), key.arn.as_str(), wanted.kms_key.as_str()];
    for bucket in &wanted.buckets {
        let state = buckets
            .bucket_state(bucket)
            .await
            .map_err(|e| match e.code.as_deref() {
                Some("Forbidden" | "AccessDenied") => PrereqsError::BucketTaken(bucket.clone()),
                _ => PrereqsError::Cloud(e),
            })?;
        let steps = plan_bucket(&state, &names);
        if steps.is_empty() {
            lines.push(format!(
                "found   bucket {bucket} (versioned, public access blocked, encrypted under the key)"
            ));
        }
        for step in steps {
            match step {
                BucketStep::Create => buckets.create_bucket(bucket, &wanted.region).await?,
                BucketStep::EnableVersioning => buckets.enable_versioning(bucket).await?,
                BucketStep::BlockPublicAccess => buckets.block_public_access(bucket).await?,
                BucketStep::EncryptByDefault => buckets.encrypt_by_default(bucket, &key.arn).await?,
            }
            let verb = if step == BucketStep::Create {
                "created"
            } else {
                "changed"
            };
            lines.push(format!("{verb} bucket {bucket}: {}", step.describe()));
        }
    }
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(state: &str) -> KeyInfo {
        KeyInfo {
            id: "k-1".into(),
            arn: "arn:aws:kms:eu-west-1:1:key/k-1".into(),
            state: state.into(),
        }
    }

    #[test]
    fn a_missing_alias_is_created_but_a_missing_key_id_is_an_error() {
        assert_eq!(
            plan_key("alias/prod-nodeboot", None).unwrap(),
            KeyPlan::Create {
                alias: "alias/prod-nodeboot".into()
            }
        );
        assert!(matches!(
            plan_key("1234abcd-12ab", None),
            Err(PrereqsError::KeyNotFound(_))
        ));
        assert_eq!(
            plan_key("alias/x", Some(key("Enabled"))).unwrap(),
            KeyPlan::Use(key("Enabled"))
        );
        assert!(matches!(
            plan_key("alias/x", Some(key("Disabled"))),
            Err(PrereqsError::KeyUnusable { .. })
        ));
    }

    #[test]
    fn a_bucket_gets_only_what_it_lacks() {
        let names = ["k-1", "arn:aws:kms:eu-west-1:1:key/k-1", "alias/x"];
        assert_eq!(plan_bucket(&BucketState::default(), &names).len(), 4);
        let done = BucketState {
            exists: true,
            versioning: true,
            public_access_blocked: true,
            encryption: Some(("aws:kms".into(), Some("alias/x".into()))),
        };
        assert!(plan_bucket(&done, &names).is_empty());
        let other_key = BucketState {
            encryption: Some(("aws:kms".into(), Some("arn:other".into()))),
            ..done.clone()
        };
        assert_eq!(plan_bucket(&other_key, &names), [BucketStep::EncryptByDefault]);
        let sse_s3 = BucketState {
            encryption: Some(("AES256".into(), None)),
            versioning: false,
            ..done
        };
        assert_eq!(
            plan_bucket(&sse_s3, &names),
            [BucketStep::EnableVersioning, BucketStep::EncryptByDefault]
        );
    }
}
