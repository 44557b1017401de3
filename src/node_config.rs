//! The file the boot stages read on the node (`/etc/nodeboot/node.json`).
//! `render` writes it into every Ignition config; the stages never see the
//! environment file itself.

use serde::{Deserialize, Serialize};

use crate::env::Environment;
use crate::role::Role;

pub const NODE_CONFIG_PATH: &str = "/etc/nodeboot/node.json";
/// Run-time state: a tmpfs, so no "already ran" marker survives a reboot or
/// can be baked into an image.
pub const STATE_DIR: &str = "/run/nodeboot";
pub const SECRETS_DIR: &str = "/run/nodeboot/secrets";
pub const ETCD_ENV_FILE: &str = "/run/nodeboot/etcd.env";
pub const ETCD_MOUNT_POINT: &str = "/var/lib/etcd";
pub const ETCD_DATA_DIR: &str = "/var/lib/etcd/data";
/// The device name nodeboot asks EC2 for; Nitro instances show the volume as
/// NVMe and we find it by its by-id link instead (see the mount stage).
pub const ETCD_DEVICE_NAME: &str = "/dev/xvdf";
pub const STATIC_POD_DIR: &str = "/etc/kubernetes/manifests";
pub const KUBELET_CONFIG_PATH: &str = "/etc/kubernetes/kubelet.yaml";
pub const KUBELET_BINARY: &str = "/opt/bin/kubelet";
pub const MANIFEST_SYNC_INTERVAL_SECONDS: u64 = 10;

/// Format version of `node.json`; bump on incompatible change.
pub const NODE_CONFIG_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    pub version: u32,
    pub environment: String,
    pub role: Role,
    pub region: String,
    pub secrets_bucket: String,
    pub kms_key_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub etcd: Option<EtcdConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub manifests: Option<ManifestsConfig>,
    /// More prefixes `nodeboot sync manifests` keeps fresh (tokens, policy files).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub synced: Vec<SyncedConfig>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EtcdConfig {
    pub members: u32,
    pub version: String,
    pub device_name: String,
    pub mount_point: String,
    pub data_dir: String,
    /// The backup service (`nodeboot etcd backup`): its interval and retention.
    #[serde(default)]
    pub backup: EtcdBackupConfig,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EtcdBackupConfig {
    pub interval_seconds: u64,
    pub keep_hourly_seconds: u64,
    pub keep_daily_seconds: u64,
}

impl Default for EtcdBackupConfig {
    fn default() -> Self {
        EtcdBackupConfig { interval_seconds: 15 * 60, keep_hourly_seconds: 7 * 86_400, keep_daily_seconds: 365 * 86_400 }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestsConfig {
    /// Object prefix in the secrets bucket.
    pub prefix: String,
    pub dir: String,
    pub interval_seconds: u64,
}

/// A prefix of the secrets bucket kept in `dir` (files 0600, `dir` 0700),
/// with a command run after a pass that changed a file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncedConfig {
    pub prefix: String,
    pub dir: String,
    /// `UID:GID` of the files and of `dir`; root when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Program and arguments, run without a shell.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reload: Vec<String>,
}

impl NodeConfig {
    pub fn new(env: &Environment, role: Role) -> Self {
        NodeConfig {
            version: NODE_CONFIG_VERSION,
            environment: env.name.clone(),
            role,
            region: env.region.clone(),
            secrets_bucket: env.secrets_bucket_name.clone(),
            kms_key_id: env.kms_master_id.clone(),
            etcd: (role == Role::Etcd).then(|| EtcdConfig {
                members: env.etcd_count,
                version: env.etcd_version.clone(),
                device_name: ETCD_DEVICE_NAME.into(),
                mount_point: ETCD_MOUNT_POINT.into(),
                data_dir: ETCD_DATA_DIR.into(),
                backup: EtcdBackupConfig {
                    interval_seconds: env.etcd_backup.interval.as_secs(),
                    keep_hourly_seconds: env.etcd_backup.keep_hourly.as_secs(),
                    keep_daily_seconds: env.etcd_backup.keep_daily.as_secs(),
                },
            }),
            manifests: role.runs_kubelet().then(|| ManifestsConfig {
                prefix: format!("manifests/{role}/"),
                dir: STATIC_POD_DIR.into(),
                interval_seconds: MANIFEST_SYNC_INTERVAL_SECONDS,
            }),
            synced: Vec::new(),
        }
    }
}
