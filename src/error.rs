//! The error every command returns, and the exit code each kind maps to.
//! The codes are documented in README.md; scripts and systemd units rely on
//! them (units do not retry exit code 2).

use crate::cloud::imds::ImdsError;
use crate::env::{Diagnostics, LoadError, ScaffoldError};
use crate::pki::PkiError;
use crate::secrets::prereqs::PrereqsError;
use crate::secrets::SecretError;
use crate::stage::attach::AttachError;
use crate::stage::discover::DiscoverError;
use crate::stage::etcd::EtcdError;
use crate::stage::mount::MountError;
use crate::stage::StageError;
use crate::sync::SyncError;

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
    #[error("discover: {0}")]
    Discover(#[from] DiscoverError),
    #[error("attach: {0}")]
    Attach(#[from] AttachError),
    #[error("mount: {0}")]
    Mount(#[from] MountError),
    #[error("etcd: {0}")]
    Etcd(#[from] EtcdError),
    #[error("pki: {0}")]
    Pki(#[from] PkiError),
    #[error("{0}")]
    Secrets(#[from] SecretError),
    #[error("prereqs: {0}")]
    Prereqs(#[from] PrereqsError),
    #[error("secrets: {0}")]
    SecretsStage(SyncError),
    #[error("sync: {0}")]
    Sync(SyncError),
    #[error(transparent)]
    Cloud(crate::cloud::CloudError),
    #[error("{step} failed: {source}\n  what to do: {hint}")]
    Step {
        step: String,
        hint: String,
        source: Box<Error>,
    },
    #[error("missing: {0}")]
    Missing(String),
    #[error("refused: {0}")]
    Refused(String),
    /// The reboot coordinator cannot observe or act (etcd, files).
    #[error("reboot-coordinator: {0}")]
    Reboot(String),
    #[error("version skew: {0}")]
    VersionSkew(String),
    #[error("{command}: {detail}")]
    Terraform { command: String, detail: String },
    #[error("render: {0}")]
    Render(#[from] crate::render::RenderError),
    /// A boot stage retried until its bound (`stage --retry`); exits with the last failure's code.
    #[error("stage {stage} gave up after {seconds}s and {attempts} attempts; {signal}; last failure: {source}")]
    GaveUp {
        stage: String,
        seconds: u64,
        attempts: u32,
        signal: String,
        source: Box<Error>,
    },
    #[error("etcd backup: {0}")]
    Backup(#[from] crate::backup::store::BackupError),
    #[error("{0}")]
    Unhealthy(String),
    #[error("{0}")]
    Timeout(String),
    #[error("refused: {0}")]
    VersionRefused(String),
}

/// Exit codes. 2 matches clap's own code for bad arguments.
pub mod exit {
    pub const OK: u8 = 0;
    pub const INTERNAL: u8 = 1;
    pub const BAD_INPUT: u8 = 2;
    pub const IO: u8 = 3;
    pub const REFUSED: u8 = 4;
    pub const NO_FREE_MEMBER: u8 = 10;
    pub const TIMEOUT: u8 = 11;
    pub const METADATA: u8 = 12;
    pub const AWS: u8 = 13;
    pub const RESOURCES: u8 = 14;
    pub const DEVICE_REFUSED: u8 = 15;
    pub const SYSTEM: u8 = 16;
    pub const TERRAFORM: u8 = 17;
    /// A volume that held data reads blank: nodeboot will not format it.
    pub const HELD_DATA: u8 = 18;
    /// A secret would not decrypt or authenticate: changed, another
    /// environment's or path's, under another key, or in no known format.
    pub const SECRET_REFUSED: u8 = 20;
    /// The named secret does not exist.
    pub const NOT_FOUND: u8 = 21;
    /// A blank etcd member that the cluster cannot take back (no member
    /// answers and backups exist, or no quorum without it): nothing was
    /// changed; the message names `nodeboot etcd restore`.
    pub const ETCD_NO_QUORUM: u8 = 22;
    /// The etcd cluster is busy (another member joining) or did not answer a
    /// call the stage needed; retrying helps.
    pub const ETCD_BUSY: u8 = 23;
    /// The etcd binary is more than one minor version from the data's.
    pub const ETCD_VERSION: u8 = 24;
    /// etcd does not answer, has no leader, or a restore failed on a member.
    pub const ETCD_UNHEALTHY: u8 = 30;
    /// An `etcd_version` change of more than one minor version, or a downgrade.
    pub const ETCD_VERSION_REFUSED: u8 = 31;
}

fn stage_code(e: &StageError) -> u8 {
    match e {
        StageError::Io { .. } => exit::IO,
        StageError::BadFile { .. } | StageError::NotYet { .. } => exit::BAD_INPUT,
    }
}

fn discover_code(e: &DiscoverError) -> u8 {
    match e {
        DiscoverError::Metadata(ImdsError::Unavailable { .. } | ImdsError::NoToken { .. } | ImdsError::Bad { .. })
        | DiscoverError::Missing(_)
        | DiscoverError::Garbage { .. } => exit::METADATA,
        DiscoverError::WrongRegion { .. } => exit::BAD_INPUT,
        DiscoverError::Stage(e) => stage_code(e),
        DiscoverError::Hostname { .. } => exit::SYSTEM,
    }
}

fn secret_code(e: &SecretError) -> u8 {
    match e {
        SecretError::Refused { .. } => exit::SECRET_REFUSED,
        SecretError::NotFound { .. } => exit::NOT_FOUND,
        SecretError::Cloud(_) => exit::AWS,
        SecretError::BadPath { .. } => exit::BAD_INPUT,
        SecretError::Io { .. } => exit::IO,
    }
}

fn sync_code(e: &SyncError) -> u8 {
    match e {
        SyncError::Stage(e) => stage_code(e),
        SyncError::Config(_) => exit::BAD_INPUT,
        SyncError::Secret(e) => secret_code(e),
        SyncError::Reload { .. } => exit::SYSTEM,
        SyncError::EmptyRefused { .. } => exit::REFUSED,
        SyncError::Capabilities(_) => exit::SYSTEM,
    }
}

fn backup_code(e: &crate::backup::store::BackupError) -> u8 {
    use crate::backup::store::BackupError as B;
    match e {
        B::Refused { .. } => exit::SECRET_REFUSED,
        B::NotFound { .. } | B::NoBackups { .. } => exit::NOT_FOUND,
        B::Io { .. } => exit::IO,
        B::TooLarge { .. } | B::Bad(_) => exit::BAD_INPUT,
        B::Cloud(_) => exit::AWS,
        B::Etcd(_) => exit::ETCD_UNHEALTHY,
        B::Command { .. } => exit::SYSTEM,
        B::Timeout(_) => exit::TIMEOUT,
    }
}

impl Error {
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::InvalidEnvironment(_) => exit::BAD_INPUT,
            Error::Load(LoadError::Invalid(_)) => exit::BAD_INPUT,
            Error::Load(LoadError::Read { .. }) => exit::BAD_INPUT,
            Error::Scaffold(ScaffoldError::BadName(_)) => exit::BAD_INPUT,
            Error::Scaffold(ScaffoldError::Exists(_)) => exit::REFUSED,
            Error::Scaffold(ScaffoldError::Write { .. }) | Error::Write { .. } => exit::IO,
            Error::Discover(e) => discover_code(e),
            Error::Attach(e) => match e {
                AttachError::NoFreeMember { .. } | AttachError::Contended(_) => exit::NO_FREE_MEMBER,
                AttachError::Timeout(_) => exit::TIMEOUT,
                AttachError::Cloud(_) => exit::AWS,
                AttachError::Resources { .. } => exit::RESOURCES,
                AttachError::Stage(e) => stage_code(e),
            },
            Error::Mount(e) => match e {
                MountError::NoDevice { .. } | MountError::NoInterface { .. } | MountError::Network { .. } => {
                    exit::TIMEOUT
                }
                MountError::NotBlank { .. } | MountError::NotBlock(_) | MountError::MountedElsewhere { .. } => {
                    exit::DEVICE_REFUSED
                }
                MountError::Command { .. } | MountError::Mount { .. } => exit::SYSTEM,
                MountError::HeldData { .. } => exit::HELD_DATA,
                MountError::Cloud(_) => exit::AWS,
                MountError::Metadata(e) => discover_code(e),
                MountError::Stage(e) => stage_code(e),
            },
            Error::Etcd(e) => match e {
                EtcdError::Cloud(_) => exit::AWS,
                EtcdError::Members { .. } | EtcdError::NoCertificate { .. } => exit::RESOURCES,
                EtcdError::Exec { .. } | EtcdError::BinaryVersion { .. } => exit::SYSTEM,
                EtcdError::Stage(e) => stage_code(e),
                EtcdError::NoQuorum { .. } => exit::ETCD_NO_QUORUM,
                EtcdError::Busy { .. }
                | EtcdError::Client(_)
                | EtcdError::Backup { .. }
                | EtcdError::Promote { .. } => exit::ETCD_BUSY,
                EtcdError::Version { .. } => exit::ETCD_VERSION,
            },
            Error::Cloud(_) => exit::AWS,
            Error::Step { source, .. } | Error::GaveUp { source, .. } => source.exit_code(),
            Error::Missing(_) => exit::RESOURCES,
            Error::VersionSkew(_) => exit::BAD_INPUT,
            Error::Reboot(_) => exit::ETCD_BUSY,
            Error::Refused(_) => exit::REFUSED,
            Error::Terraform { .. } => exit::TERRAFORM,
            Error::Render(crate::render::RenderError::TooLarge { .. }) => exit::BAD_INPUT,
            Error::Render(crate::render::RenderError::Write { .. }) => exit::IO,
            Error::Pki(e) => match e {
                PkiError::Io { .. } => exit::IO,
                PkiError::Bad { .. } | PkiError::UnknownRotate(..) => exit::BAD_INPUT,
                PkiError::Generate { .. } | PkiError::Random(_) => exit::INTERNAL,
            },
            Error::Secrets(e) => secret_code(e),
            Error::Prereqs(e) => match e {
                PrereqsError::KeyNotFound(_) => exit::BAD_INPUT,
                PrereqsError::KeyUnusable { .. } => exit::RESOURCES,
                PrereqsError::BucketTaken(_) => exit::REFUSED,
                PrereqsError::Cloud(_) => exit::AWS,
            },
            Error::SecretsStage(e) | Error::Sync(e) => sync_code(e),
            Error::Backup(e) => backup_code(e),
            Error::Unhealthy(_) => exit::ETCD_UNHEALTHY,
            Error::Timeout(_) => exit::TIMEOUT,
            Error::VersionRefused(_) => exit::ETCD_VERSION_REFUSED,
        }
    }
}
