//! The systemd units of each role, from the askama templates in `units/`.

use askama::Template;

use crate::env::Environment;
use crate::node_config::*;
use crate::role::Role;

/// One unit file of a rendered config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitFile {
    pub name: String,
    pub contents: String,
}

/// A boot stage: `nodeboot stage NAME`, one oneshot unit each.
struct Stage {
    name: &'static str,
    description: &'static str,
    /// The stages (by name) that must have succeeded first.
    after: &'static [&'static str],
    args: &'static str,
    /// How long one attempt may take before systemd kills it and retries.
    timeout_sec: u32,
}

const STAGES: [Stage; 5] = [
    Stage { name: "discover", description: "instance identity from IMDSv2", after: &[], args: " --set-hostname", timeout_sec: 120 },
    Stage { name: "attach", description: "claim this zone's etcd volume and ENI", after: &["discover"], args: "", timeout_sec: 900 },
    Stage { name: "mount", description: "mount the etcd volume, bring up the ENI address", after: &["attach"], args: "", timeout_sec: 300 },
    Stage { name: "etcd", description: "write the etcd member configuration", after: &["mount", "secrets"], args: "", timeout_sec: 120 },
    Stage { name: "secrets", description: "fetch and decrypt this role's secrets", after: &["discover"], args: "", timeout_sec: 300 },
];

fn stages_of(role: Role) -> &'static [&'static str] {
    match role {
        Role::Etcd => &["discover", "attach", "mount", "etcd", "secrets"],
        Role::Compute => &["discover", "secrets"],
        Role::Bastion => &["discover"],
    }
}

pub fn stage_unit_name(stage: &str) -> String {
    format!("nodeboot-{stage}.service")
}

#[derive(Template)]
#[template(path = "nodeboot-stage.service", escape = "none")]
struct StageUnit<'a> {
    role: Role,
    stage: &'a str,
    description: &'a str,
    binary: &'a str,
    args: &'a str,
    after: Vec<String>,
    requires: Vec<String>,
    restart_sec: u32,
    timeout_sec: u32,
}

#[derive(Template)]
#[template(path = "etcd-member.service", escape = "none")]
struct EtcdMemberUnit<'a> {
    etcd_version: &'a str,
    image: String,
    env_file: &'a str,
    mount_point: &'a str,
    secrets_dir: &'a str,
}

#[derive(Template)]
#[template(path = "nodeboot-etcd-backup.service", escape = "none")]
struct EtcdBackupUnit<'a> {
    binary: &'a str,
    image: String,
    mount_point: &'a str,
    secrets_dir: &'a str,
    interval_seconds: u64,
}

#[derive(Template)]
#[template(path = "kubelet.service", escape = "none")]
struct KubeletUnit<'a> {
    kubernetes_version: &'a str,
    kubelet: &'a str,
    kubelet_config: &'a str,
    secrets_dir: &'a str,
    static_pod_dir: &'a str,
}

#[derive(Template)]
#[template(path = "nodeboot-manifests.service", escape = "none")]
struct ManifestSyncUnit<'a> {
    binary: &'a str,
    static_pod_dir: &'a str,
    interval: u64,
}

/// The etcd container image the member unit runs (etcd's official release image).
pub fn etcd_image(version: &str) -> String {
    format!("quay.io/coreos/etcd:v{version}")
}

/// Every unit of `role`, in boot order.
pub fn units_for(env: &Environment, role: Role) -> Vec<UnitFile> {
    let binary = env.nodeboot.path();
    let mut units = Vec::new();
    for name in stages_of(role) {
        let stage = STAGES.iter().find(|s| s.name == *name).expect("every listed stage is defined");
        let deps: Vec<String> = stage.after.iter().map(|d| stage_unit_name(d)).collect();
        let unit = StageUnit {
            role,
            stage: stage.name,
            description: stage.description,
            binary,
            args: stage.args,
            after: deps.clone(),
            requires: deps,
            restart_sec: 10,
            timeout_sec: stage.timeout_sec,
        };
        units.push(UnitFile { name: stage_unit_name(stage.name), contents: render(&unit) });
    }
    if role == Role::Etcd {
        let unit = EtcdMemberUnit {
            etcd_version: &env.etcd_version,
            image: etcd_image(&env.etcd_version),
            env_file: ETCD_ENV_FILE,
            mount_point: ETCD_MOUNT_POINT,
            secrets_dir: SECRETS_DIR,
        };
        units.push(UnitFile { name: "etcd-member.service".into(), contents: render(&unit) });
        let backup = EtcdBackupUnit {
            binary,
            image: etcd_image(&env.etcd_version),
            mount_point: ETCD_MOUNT_POINT,
            secrets_dir: SECRETS_DIR,
            interval_seconds: env.etcd_backup.interval.as_secs(),
        };
        units.push(UnitFile { name: "nodeboot-etcd-backup.service".into(), contents: render(&backup) });
    }
    if role.runs_kubelet() {
        let kubelet = KubeletUnit {
            kubernetes_version: &env.kubernetes_version,
            kubelet: KUBELET_BINARY,
            kubelet_config: KUBELET_CONFIG_PATH,
            secrets_dir: SECRETS_DIR,
            static_pod_dir: STATIC_POD_DIR,
        };
        units.push(UnitFile { name: "kubelet.service".into(), contents: render(&kubelet) });
        let sync = ManifestSyncUnit { binary, static_pod_dir: STATIC_POD_DIR, interval: MANIFEST_SYNC_INTERVAL_SECONDS };
        units.push(UnitFile { name: "nodeboot-manifests.service".into(), contents: render(&sync) });
    }
    units
}

/// Templates are checked at compile time; rendering only fails on a broken
/// `Display` impl, which would be a bug here, not bad input.
pub(super) fn render(t: &impl Template) -> String {
    finish(t.render().expect("unit templates render"))
}

/// askama drops the template's final newline; POSIX text files end in one.
pub(super) fn finish(mut text: String) -> String {
    if !text.ends_with('\n') {
        text.push('\n');
    }
    text
}
