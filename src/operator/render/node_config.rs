//! `node.json` for a role, built from the environment: the contract
//! between `render` and the node's stages (`shared::node_config`), so that
//! node code never reads the environment file.

use crate::operator::env::Environment;
use crate::shared::node_config::*;
use crate::shared::role::Role;

/// What `render` writes to `/etc/nodeboot/node.json` for `role`.
pub fn node_config(env: &Environment, role: Role) -> NodeConfig {
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
            vpc_cidr: Some(env.vpc_cidr),
            backup: EtcdBackupConfig {
                interval_seconds: env.etcd_backup.interval.as_secs(),
                keep_hourly_seconds: env.etcd_backup.keep_hourly.as_secs(),
                keep_daily_seconds: env.etcd_backup.keep_daily.as_secs(),
                etcdutl: None,
            },
            quota_bytes: env.etcd_quota_bytes,
        }),
        manifests: role.runs_kubelet().then(|| ManifestsConfig {
            prefix: format!("manifests/{role}/"),
            dir: STATIC_POD_DIR.into(),
            interval_seconds: MANIFEST_SYNC_INTERVAL_SECONDS,
        }),
        // The control plane keeps the add-ons fresh and has them applied
        // after a pass that changed one.
        synced: if role == Role::Etcd {
            vec![SyncedConfig {
                prefix: ADDONS_PREFIX.into(),
                dir: ADDONS_DIR.into(),
                owner: None,
                reload: ["systemctl", "start", "--no-block", ADDONS_UNIT]
                    .map(String::from)
                    .to_vec(),
            }]
        } else {
            Vec::new()
        },
        boot: BootConfig::default(),
    }
}
