//! The error every node command returns, and the exit code each kind maps
//! to (`shared::exit`; README.md has the table). `stage --retry` decides
//! from the code whether waiting can help.

use crate::node::etcd_space::pass::SpaceError;
use crate::node::reboot::RebootError;
use crate::node::root::StageError;
use crate::node::stage::attach::AttachError;
use crate::node::stage::discover::DiscoverError;
use crate::node::stage::eni::EniError;
use crate::node::stage::etcd::EtcdError;
use crate::node::stage::mount::MountError;
use crate::node::sync::SyncError;
use crate::shared::backup::store::BackupError;
use crate::shared::cloud::imds::ImdsError;
use crate::shared::cloud::CloudError;
use crate::shared::exit;
use crate::shared::secrets::SecretError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("discover: {0}")]
    Discover(#[from] DiscoverError),
    #[error("attach: {0}")]
    Attach(#[from] AttachError),
    #[error("mount: {0}")]
    Mount(#[from] MountError),
    #[error("etcd: {0}")]
    Etcd(#[from] EtcdError),
    #[error("secrets: {0}")]
    SecretsStage(SyncError),
    #[error("sync: {0}")]
    Sync(SyncError),
    #[error("etcd backup: {0}")]
    Backup(#[from] BackupError),
    /// A request or report in the secrets bucket (a restore's).
    #[error("{0}")]
    Secret(#[from] SecretError),
    #[error("reboot-coordinator: {0}")]
    Reboot(#[from] RebootError),
    /// The maintenance of etcd's space (the backup service's other half).
    #[error("etcd maintenance: {0}")]
    Space(#[from] SpaceError),
    #[error(transparent)]
    Cloud(CloudError),
    /// Not the role or state this command runs in (an etcd command on a compute node).
    #[error("refused: {0}")]
    Refused(String),
    #[error("cannot run {what}: {source}")]
    Exec { what: String, source: std::io::Error },
    /// A boot stage retried until its bound (`stage --retry`); exits with the last failure's code.
    #[error("stage {stage} gave up after {seconds}s and {attempts} attempts; {signal}; last failure: {source}")]
    GaveUp {
        stage: String,
        seconds: u64,
        attempts: u32,
        signal: String,
        source: Box<Error>,
    },
}

pub(crate) fn stage_code(e: &StageError) -> u8 {
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

fn sync_code(e: &SyncError) -> u8 {
    match e {
        SyncError::Stage(e) => stage_code(e),
        SyncError::Config(_) => exit::BAD_INPUT,
        SyncError::Secret(e) => exit::secret(e),
        SyncError::Reload { .. } => exit::SYSTEM,
        SyncError::EmptyRefused { .. } => exit::REFUSED,
        SyncError::Capabilities(_) => exit::SYSTEM,
    }
}

fn attach_code(e: &AttachError) -> u8 {
    match e {
        AttachError::NoFreeMember { .. } | AttachError::Contended(_) => exit::NO_FREE_MEMBER,
        AttachError::Timeout(_) => exit::TIMEOUT,
        AttachError::Cloud(_) => exit::AWS,
        AttachError::Resources { .. } => exit::RESOURCES,
        AttachError::Stage(e) => stage_code(e),
    }
}

fn mount_code(e: &MountError) -> u8 {
    match e {
        MountError::NoDevice { .. } | MountError::NoInterface { .. } | MountError::Eni(EniError::Network { .. }) => {
            exit::TIMEOUT
        }
        MountError::NotBlank { .. } | MountError::NotBlock(_) | MountError::MountedElsewhere { .. } => {
            exit::DEVICE_REFUSED
        }
        MountError::Command { .. } | MountError::Mount { .. } | MountError::Eni(EniError::Command { .. }) => {
            exit::SYSTEM
        }
        MountError::HeldData { .. } => exit::HELD_DATA,
        MountError::Cloud(_) => exit::AWS,
        MountError::Metadata(e) => discover_code(e),
        MountError::Stage(e) | MountError::Eni(EniError::Stage(e)) => stage_code(e),
    }
}

pub(crate) fn etcd_code(e: &EtcdError) -> u8 {
    match e {
        EtcdError::Cloud(_) => exit::AWS,
        EtcdError::Members { .. } | EtcdError::NoCertificate { .. } => exit::RESOURCES,
        EtcdError::Exec { .. } | EtcdError::BinaryVersion { .. } => exit::SYSTEM,
        EtcdError::Stage(e) => stage_code(e),
        EtcdError::NoQuorum { .. } => exit::ETCD_NO_QUORUM,
        EtcdError::Existed { .. } => exit::ETCD_EXISTED,
        EtcdError::Outside { .. } => exit::ETCD_OUTSIDE,
        EtcdError::Busy { .. }
        | EtcdError::Client(_)
        | EtcdError::Backup { .. }
        | EtcdError::Promote { .. }
        | EtcdError::Restore(_) => exit::ETCD_BUSY,
        EtcdError::Version { .. } => exit::ETCD_VERSION,
    }
}

fn reboot_code(e: &RebootError) -> u8 {
    match e {
        RebootError::Etcd(e) => etcd_code(e),
        RebootError::File { .. } => exit::IO,
        RebootError::Lock(_) => exit::ETCD_BUSY,
        RebootError::Command { .. } => exit::SYSTEM,
    }
}

impl Error {
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Discover(e) => discover_code(e),
            Error::Attach(e) => attach_code(e),
            Error::Mount(e) => mount_code(e),
            Error::Etcd(e) => etcd_code(e),
            Error::SecretsStage(e) | Error::Sync(e) => sync_code(e),
            Error::Backup(e) => exit::backup(e),
            Error::Secret(e) => exit::secret(e),
            Error::Reboot(e) => reboot_code(e),
            Error::Space(_) => exit::ETCD_UNHEALTHY,
            Error::Cloud(_) => exit::AWS,
            Error::Refused(_) => exit::REFUSED,
            Error::Exec { .. } => exit::SYSTEM,
            Error::GaveUp { source, .. } => source.exit_code(),
        }
    }
}
