//! The AWS implementations, on the official SDK. Endpoints, credentials and
//! region follow the SDK's standard chain, so `AWS_ENDPOINT_URL` points the
//! same code at the local emulator in tests.

pub mod ec2;
pub mod inventory;
pub mod kms;
pub mod retire;
pub mod s3;
mod s3_files;

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_smithy_http_client::tls;

pub use ec2::Ec2;
pub use kms::Kms;
pub use s3::S3;

/// Throttling (`RequestLimitExceeded`) and transient errors are retried by
/// the SDK's standard policy: at most this many attempts per call, with
/// exponential backoff, inside the SDK's retry token budget.
const MAX_ATTEMPTS: u32 = 6;

/// The one HTTP client: hyper with rustls and ring (no aws-lc, no OpenSSL),
/// so the binary links statically against musl.
pub fn http_client() -> aws_sdk_ec2::config::SharedHttpClient {
    aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(tls::rustls_provider::CryptoMode::Ring))
        .build_https()
}

/// Loads the SDK configuration for `region` (endpoints and credentials from
/// the standard chain: `AWS_ENDPOINT_URL`, environment, profile, IMDS).
pub async fn sdk_config(region: &str) -> SdkConfig {
    loader(region).load().await
}

/// The operator's configuration: credentials from the environment
/// variables first, then `profile` in the shared credentials file.
pub async fn sdk_config_with_profile(region: &str, profile: &str) -> SdkConfig {
    loader(region).profile_name(profile).load().await
}

fn loader(region: &str) -> aws_config::ConfigLoader {
    aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new(region.to_string()))
        .http_client(http_client())
        .retry_config(
            RetryConfig::standard()
                .with_max_attempts(MAX_ATTEMPTS)
                .with_initial_backoff(Duration::from_millis(200))
                .with_max_backoff(Duration::from_secs(5)),
        )
}

/// Counts API calls (not SDK retries) so the stages can report them.
#[derive(Debug, Default)]
pub struct CallCount(AtomicU32);

impl CallCount {
    pub fn add(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(&self) -> u32 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A `CloudError` naming the operation and resource, from an SDK error.
pub(crate) fn cloud_error<E, R>(
    operation: &'static str,
    resource: &str,
    err: aws_sdk_ec2::error::SdkError<E, R>,
) -> crate::shared::cloud::CloudError
where
    E: aws_sdk_ec2::error::ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    let (code, message) = describe_sdk_error(&err);
    crate::shared::cloud::CloudError {
        operation,
        resource: resource.to_string(),
        code,
        message,
    }
}

/// The error code and message of an SDK error, without its `Debug` dump.
pub(crate) fn describe_sdk_error<E, R>(err: &aws_sdk_ec2::error::SdkError<E, R>) -> (Option<String>, String)
where
    E: aws_sdk_ec2::error::ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    match err.as_service_error() {
        Some(service) => (
            service.code().map(str::to_string),
            service
                .message()
                .map(str::to_string)
                .unwrap_or_else(|| service.to_string()),
        ),
        None => (None, aws_sdk_ec2::error::DisplayErrorContext(err).to_string()),
    }
}
