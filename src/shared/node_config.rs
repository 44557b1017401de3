//! The file the boot stages read on the node (`/etc/nodeboot/node.json`).
//! `render` writes it into every Ignition config; the stages never see the
//! environment file itself.

use serde::{Deserialize, Serialize};

use crate::shared::role::Role;

pub const NODE_CONFIG_PATH: &str = "/etc/nodeboot/node.json";
/// Run-time state: a tmpfs, so no "already ran" marker survives a reboot or
/// can be baked into an image.
pub const STATE_DIR: &str = "/run/nodeboot";
pub const SECRETS_DIR: &str = "/run/nodeboot/secrets";
/// The sync's record of the files it placed, on disk like the directories
/// it keeps (the static pods): a record in tmpfs would be lost at a reboot,
/// and the manifests deleted from the bucket meanwhile never removed.
pub const SYNC_RECORD_DIR: &str = "/var/lib/nodeboot/sync";
pub const ETCD_ENV_FILE: &str = "/run/nodeboot/etcd.env";
pub const ETCD_MOUNT_POINT: &str = "/var/lib/etcd";
pub const ETCD_DATA_DIR: &str = "/var/lib/etcd/data";
/// On the volume, beside the data: the etcd version that last started on
/// it (one line, `3.5.16`), written by the etcd stage before it starts etcd.
pub const ETCD_VERSION_FILE: &str = "/var/lib/etcd/etcd-version";
/// The device name nodeboot asks EC2 for; Nitro instances show the volume as
/// NVMe and we find it by its by-id link instead (see the mount stage).
pub const ETCD_DEVICE_NAME: &str = "/dev/xvdf";
pub const STATIC_POD_DIR: &str = "/etc/kubernetes/manifests";
pub const KUBELET_CONFIG_PATH: &str = "/etc/kubernetes/kubelet.yaml";
pub const KUBELET_BINARY: &str = "/opt/bin/kubelet";
/// The kubelet's drop-in configuration directory (`--config-dir`, beta and
/// on by default from Kubernetes 1.30): what only the node knows at boot.
pub const KUBELET_DROPIN_DIR: &str = "/run/nodeboot/kubelet.conf.d";
/// The drop-in `stage discover` writes there (see `kubelet_provider_id`).
pub const KUBELET_PROVIDER_ID_DROPIN: &str = "/run/nodeboot/kubelet.conf.d/10-provider-id.conf";

/// The node's `providerID` as the AWS cloud-controller-manager reads it
/// (`aws:///<zone>/<instance id>`): with it the controller finds the
/// instance behind any node name, nodeboot's `<environment>-<role>-<id>` too.
pub fn provider_id(zone: &str, instance_id: &str) -> String {
    format!("aws:///{zone}/{instance_id}")
}

/// The kubelet drop-in that sets `providerID` (a drop-in must name the
/// config's apiVersion and kind; it is merged over kubelet.yaml).
pub fn kubelet_provider_id(zone: &str, instance_id: &str) -> String {
    format!(
        "# Written by nodeboot stage discover: this instance's providerID.\napiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\nproviderID: {}\n",
        provider_id(zone, instance_id)
    )
}
/// The kubelet's own kubeconfig, written by the kubelet after TLS bootstrap
/// (it points at the certificates in /var/lib/kubelet/pki).
pub const KUBELET_KUBECONFIG: &str = "/var/lib/kubelet/kubeconfig";
/// Where control-plane nodes keep the add-ons (`manifests/addons/`) that
/// nodeboot-addons.service applies.
pub const ADDONS_DIR: &str = "/etc/kubernetes/addons";
pub const ADDONS_PREFIX: &str = "manifests/addons/";
pub const ADDONS_UNIT: &str = "nodeboot-addons.service";
pub const AUDIT_POLICY_PATH: &str = "/etc/kubernetes/audit-policy.yaml";
pub const AUDIT_LOG_DIR: &str = "/var/log/kubernetes/audit";
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
    /// How long the boot stages keep retrying (`nodeboot stage --retry`).
    #[serde(default)]
    pub boot: BootConfig,
}

/// The bounds of a boot stage's retries. A stage that needs AWS retries
/// inside its process until it succeeds or meets an error retrying cannot
/// fix; past these bounds it gives up, fails its unit and (etcd nodes) marks
/// its instance unhealthy so the auto-scaling group replaces it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BootConfig {
    /// Give up on a stage after this long (an AWS outage, IAM still
    /// propagating, secrets not uploaded yet all heal within it).
    pub give_up_seconds: u64,
    /// Give up sooner when every member of this zone stays held by a live
    /// instance: the node is surplus, and waiting only hides that.
    pub no_free_member_seconds: u64,
}

pub const BOOT_GIVE_UP_SECONDS: u64 = 3600;
pub const BOOT_NO_FREE_MEMBER_SECONDS: u64 = 600;

impl Default for BootConfig {
    fn default() -> Self {
        BootConfig {
            give_up_seconds: BOOT_GIVE_UP_SECONDS,
            no_free_member_seconds: BOOT_NO_FREE_MEMBER_SECONDS,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EtcdConfig {
    pub members: u32,
    pub version: String,
    pub device_name: String,
    pub mount_point: String,
    pub data_dir: String,
    /// The VPC's range: traffic to it leaves from the member's ENI address
    /// (peers check it against their certificates). See `stage::eni`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vpc_cidr: Option<ipnet::Ipv4Net>,
    /// The backup service (`nodeboot etcd backup`): its interval and retention.
    #[serde(default)]
    pub backup: EtcdBackupConfig,
    /// etcd's `--quota-backend-bytes` (the environment's `etcd_quota_bytes`).
    #[serde(default = "default_quota_bytes")]
    pub quota_bytes: u64,
}

fn default_quota_bytes() -> u64 {
    crate::shared::etcd::space::DEFAULT_QUOTA_BYTES
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EtcdBackupConfig {
    pub interval_seconds: u64,
    pub keep_hourly_seconds: u64,
    pub keep_daily_seconds: u64,
    /// The `etcdutl` a restore runs (program and arguments, no shell;
    /// `snapshot restore ...` is appended). Default ([`EtcdConfig::etcdutl`]):
    /// etcdutl of the member's own image, by docker, with the volume mounted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etcdutl: Option<Vec<String>>,
}

/// The etcd releases nodeboot pins by digest (the registry's manifest
/// digest of the tag; the AMI bake pulls them by it, so a wrong one fails
/// the bake, never a boot).
pub const ETCD_IMAGES: &[(&str, &str)] = &[(
    "3.5.17",
    "quay.io/coreos/etcd:v3.5.17@sha256:a055da833a7c013b836ed0822e8ec1f99b059658be255ad8d0fcd31b635ae3d6",
)];

/// The container image etcd runs from (`etcd-member.service`, and etcdutl
/// for a restore): pinned by digest for a release in `ETCD_IMAGES` (which
/// `validate` asks for), the bare tag otherwise.
pub fn etcd_image(version: &str) -> String {
    ETCD_IMAGES.iter().find(|(v, _)| *v == version).map_or_else(
        || format!("quay.io/coreos/etcd:v{version}"),
        |(_, image)| image.to_string(),
    )
}

impl EtcdConfig {
    /// The command a restore runs etcdutl with: node.json's
    /// `etcd.backup.etcdutl`, else etcdutl from the image the member runs
    /// (Flatcar has no etcd binaries on the host), seeing the volume at the
    /// same path and no network.
    pub fn etcdutl(&self) -> Vec<String> {
        if let Some(command) = &self.backup.etcdutl {
            return command.clone();
        }
        let volume = format!("{0}:{0}:rw", self.mount_point);
        [
            "/usr/bin/docker",
            "run",
            "--rm",
            "--network",
            "none",
            "--volume",
            &volume,
            &etcd_image(&self.version),
            "/usr/local/bin/etcdutl",
        ]
        .map(str::to_string)
        .to_vec()
    }
}

impl Default for EtcdBackupConfig {
    fn default() -> Self {
        EtcdBackupConfig {
            interval_seconds: 15 * 60,
            keep_hourly_seconds: 7 * 86_400,
            keep_daily_seconds: 365 * 86_400,
            etcdutl: None,
        }
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
