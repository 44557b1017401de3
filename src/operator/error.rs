//! The error every operator command returns, and the exit code each kind
//! maps to (`shared::exit`; README.md has the table).

use crate::operator::env::{Diagnostics, LoadError, ScaffoldError};
use crate::operator::pki::PkiError;
use crate::operator::prereqs::PrereqsError;
use crate::operator::render::RenderError;
use crate::shared::backup::store::BackupError;
use crate::shared::cloud::CloudError;
use crate::shared::etcd::EtcdClientError;
use crate::shared::exit;
use crate::shared::secrets::SecretError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    InvalidEnvironment(Diagnostics),
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error(transparent)]
    Scaffold(#[from] ScaffoldError),
    #[error("cannot write {path}: {source}")]
    Write { path: String, source: std::io::Error },
    #[error("pki: {0}")]
    Pki(#[from] PkiError),
    #[error("{0}")]
    Secrets(#[from] SecretError),
    #[error("prereqs: {0}")]
    Prereqs(#[from] PrereqsError),
    #[error("render: {0}")]
    Render(#[from] RenderError),
    #[error("etcd backup: {0}")]
    Backup(#[from] BackupError),
    /// etcd did not answer the operator's client.
    #[error("etcd: {0}")]
    Etcd(#[from] EtcdClientError),
    #[error(transparent)]
    Cloud(CloudError),
    #[error("{step} failed: {source}\n  what to do: {hint}")]
    Step {
        step: String,
        hint: String,
        source: Box<Error>,
    },
    /// A prerequisite or a resource of the environment is missing.
    #[error("missing: {0}")]
    Missing(String),
    #[error("refused: {0}")]
    Refused(String),
    #[error("version skew: {0}")]
    VersionSkew(String),
    #[error("{command}: {detail}")]
    Terraform { command: String, detail: String },
    #[error("{0}")]
    Unhealthy(String),
    /// A certificate that etcd serves or that reaches it ends within
    /// `pki::ends::STATUS_FAIL_DAYS` (`etcd status`).
    #[error("{0}")]
    CertificatesEnding(String),
    #[error("{0}")]
    Timeout(String),
    #[error("refused: {0}")]
    VersionRefused(String),
}

impl Error {
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::InvalidEnvironment(_) | Error::Load(_) | Error::VersionSkew(_) => exit::BAD_INPUT,
            Error::Scaffold(ScaffoldError::BadName(_)) => exit::BAD_INPUT,
            Error::Scaffold(ScaffoldError::Exists(_)) => exit::REFUSED,
            Error::Scaffold(ScaffoldError::Write { .. }) | Error::Write { .. } => exit::IO,
            Error::Pki(e) => match e {
                PkiError::Io { .. } => exit::IO,
                PkiError::Bad { .. } | PkiError::UnknownRotate(..) => exit::BAD_INPUT,
                PkiError::Generate { .. } | PkiError::Random(_) => exit::INTERNAL,
                PkiError::Refused { .. } => exit::REFUSED,
            },
            Error::Secrets(e) => exit::secret(e),
            Error::Prereqs(e) => match e {
                PrereqsError::KeyNotFound(_) => exit::BAD_INPUT,
                PrereqsError::KeyUnusable { .. } => exit::RESOURCES,
                PrereqsError::BucketTaken(_) => exit::REFUSED,
                PrereqsError::Cloud(_) => exit::AWS,
            },
            Error::Render(RenderError::TooLarge { .. }) => exit::BAD_INPUT,
            Error::Render(RenderError::Write { .. }) => exit::IO,
            Error::Backup(e) => exit::backup(e),
            Error::Etcd(_) | Error::Unhealthy(_) => exit::ETCD_UNHEALTHY,
            Error::CertificatesEnding(_) => exit::CERTIFICATES_ENDING,
            Error::Cloud(_) => exit::AWS,
            Error::Step { source, .. } => source.exit_code(),
            Error::Missing(_) => exit::RESOURCES,
            Error::Refused(_) => exit::REFUSED,
            Error::Terraform { .. } => exit::TERRAFORM,
            Error::Timeout(_) => exit::TIMEOUT,
            Error::VersionRefused(_) => exit::ETCD_VERSION_REFUSED,
        }
    }
}
