//! The systemd units of each role, from the askama templates in `units/`.

use askama::Template;

use crate::operator::env::Environment;
use crate::shared::node_config::*;
use crate::shared::role::Role;

/// One unit file of a rendered config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitFile {
    pub name: String,
    pub contents: String,
}

impl UnitFile {
    /// The unit `name`, rendered from its template.
    fn of(name: impl Into<String>, template: &impl Template) -> UnitFile {
        UnitFile {
            name: name.into(),
            contents: render(template),
        }
    }
}

/// A boot stage: `nodeboot stage --retry NAME`, one oneshot unit each. The
/// stage itself waits and retries (see `commands::until_done`): systemd's
/// `Restart=` cannot, since a failed oneshot fails its dependants for good.
struct Stage {
    name: &'static str,
    description: &'static str,
    /// The stages (by name) that must have succeeded first, among the role's.
    after: &'static [&'static str],
    args: &'static str,
    /// Least privilege: what the stage may do and write.
    limits: Limits,
}

/// A stage's privileges, for the unit's sandbox.
struct Limits {
    /// CapabilityBoundingSet=; empty: none at all.
    caps: &'static str,
    why_caps: &'static str,
    /// The paths it writes (ProtectSystem=strict around them); `None`: no
    /// mount namespace at all (the mount stage mounts for the host).
    write_paths: Option<&'static str>,
    /// Netlink for `ip`; AF_UNIX for D-Bus and the resolver; IP for AWS.
    netlink: bool,
    /// System calls beyond @system-service.
    extra_syscalls: &'static str,
}

const AWS_ONLY: Limits = Limits {
    caps: "",
    why_caps: "none: it only talks to AWS and writes root's files",
    write_paths: Some("/run/nodeboot"),
    netlink: false,
    extra_syscalls: "",
};

/// A client of the local etcd member: reads this node's files, writes nothing but its state.
const ETCD_CLIENT_ONLY: Limits = Limits {
    caps: "",
    why_caps: "none: it only talks to etcd",
    write_paths: Some("/run/nodeboot"),
    netlink: false,
    extra_syscalls: "",
};

const STAGES: [Stage; 5] = [
    Stage {
        name: "discover",
        description: "instance identity from IMDSv2",
        after: &[],
        args: " --set-hostname",
        limits: Limits {
            caps: "CAP_SYS_ADMIN",
            why_caps: "CAP_SYS_ADMIN sets the hostname",
            write_paths: Some("/run/nodeboot /etc"),
            netlink: false,
            extra_syscalls: " sethostname",
        },
    },
    Stage {
        name: "attach",
        description: "claim this zone's etcd volume and ENI",
        after: &["discover"],
        args: "",
        limits: AWS_ONLY,
    },
    Stage {
        name: "mount",
        description: "mount the etcd volume, bring up the ENI address",
        after: &["attach"],
        args: "",
        limits: Limits {
            caps: "CAP_SYS_ADMIN CAP_NET_ADMIN",
            why_caps: "CAP_SYS_ADMIN mounts, CAP_NET_ADMIN sets the ENI's address and routes",
            write_paths: None,
            netlink: true,
            extra_syscalls: "",
        },
    },
    Stage {
        name: "etcd",
        description: "write the etcd member configuration",
        after: &["mount", "secrets"],
        args: "",
        // Writes the data's etcd version on the volume, beside data/.
        limits: Limits {
            caps: "",
            why_caps: "none: it talks to AWS and etcd, and writes root's files",
            write_paths: Some("/run/nodeboot /var/lib/etcd"),
            netlink: false,
            extra_syscalls: "",
        },
    },
    // After attach where there is one: an etcd node fetches only the key of the member it claimed.
    Stage {
        name: "secrets",
        description: "fetch and decrypt this role's secrets",
        after: &["discover", "attach"],
        args: "",
        limits: AWS_ONLY,
    },
];

fn stages_of(role: Role) -> &'static [&'static str] {
    match role {
        Role::Etcd => &["discover", "attach", "mount", "secrets", "etcd"],
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
    caps: &'a str,
    why_caps: &'a str,
    address_families: &'a str,
    write_paths: Option<&'a str>,
    extra_syscalls: &'a str,
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
    mount_point: &'a str,
    /// A restore takes the API server's manifest out of it and puts it back.
    static_pod_dir: &'a str,
    interval_seconds: u64,
}

#[derive(Template)]
#[template(path = "kubelet.service", escape = "none")]
struct KubeletUnit<'a> {
    kubernetes_version: &'a str,
    kubelet: &'a str,
    kubelet_config: &'a str,
    kubeconfig: &'a str,
    secrets_dir: &'a str,
    static_pod_dir: &'a str,
    dropin_dir: &'a str,
}

#[derive(Template)]
#[template(path = "nodeboot-manifests.service", escape = "none")]
struct ManifestSyncUnit<'a> {
    binary: &'a str,
    static_pod_dir: &'a str,
    /// The directories of node.json's `synced` (the add-ons on etcd nodes).
    synced_dirs: Vec<String>,
    interval: u64,
    state_dir: &'a str,
    /// StateDirectory= (relative to /var/lib): where the sync keeps its record.
    record_dir: &'a str,
}

#[derive(Template)]
#[template(path = "nodeboot-reboot.service", escape = "none")]
struct RebootUnit<'a> {
    binary: &'a str,
}

#[derive(Template)]
#[template(path = "nodeboot-secrets-sync.service", escape = "none")]
struct SecretsSyncUnit<'a> {
    binary: &'a str,
    secrets_dir: &'a str,
    state_dir: &'a str,
    interval: u64,
    /// The readers it may restart start first.
    after: Vec<&'a str>,
}

/// Seconds between two passes of the secrets sync.
pub const SECRETS_SYNC_INTERVAL_SECONDS: u64 = 60;

#[derive(Template)]
#[template(path = "nodeboot-addons.service", escape = "none")]
struct AddonsUnit<'a> {
    kubernetes_version: &'a str,
    image: String,
    addons_dir: &'a str,
    secrets_dir: &'a str,
    server: &'a str,
    role_label: &'a str,
    exclude_label: &'a str,
    taint_effect: &'a str,
}

#[derive(Template)]
#[template(path = "nodeboot-addons.timer", escape = "none")]
struct AddonsTimer {
    interval_minutes: u32,
}

/// Upstream's kubectl image of the cluster's release (published with every
/// Kubernetes release since 1.28), pinned by digest; it applies the add-ons.
pub fn kubectl_image(version: &str) -> String {
    crate::operator::env::images::kubernetes_image(version, "kubectl")
}

/// The etcd container image the member unit runs (etcd's official release image).
pub fn etcd_image(version: &str) -> String {
    crate::shared::node_config::etcd_image(version)
}

/// Every unit of `role`, in boot order.
pub fn units_for(env: &Environment, role: Role) -> Vec<UnitFile> {
    let binary = env.nodeboot.path();
    let mut units = Vec::new();
    for name in stages_of(role) {
        let stage = STAGES
            .iter()
            .find(|s| s.name == *name)
            .expect("every listed stage is defined");
        let deps: Vec<String> = stage
            .after
            .iter()
            .filter(|d| stages_of(role).contains(d))
            .map(|d| stage_unit_name(d))
            .collect();
        let unit = StageUnit {
            role,
            stage: stage.name,
            description: stage.description,
            binary,
            args: stage.args,
            after: deps.clone(),
            requires: deps,
            caps: stage.limits.caps,
            why_caps: stage.limits.why_caps,
            address_families: if stage.limits.netlink {
                "AF_UNIX AF_INET AF_INET6 AF_NETLINK"
            } else {
                "AF_UNIX AF_INET AF_INET6"
            },
            write_paths: stage.limits.write_paths,
            extra_syscalls: stage.limits.extra_syscalls,
        };
        units.push(UnitFile::of(stage_unit_name(stage.name), &unit));
    }
    if role == Role::Etcd {
        let unit = EtcdMemberUnit {
            etcd_version: &env.etcd_version,
            image: etcd_image(&env.etcd_version),
            env_file: ETCD_ENV_FILE,
            mount_point: ETCD_MOUNT_POINT,
            secrets_dir: SECRETS_DIR,
        };
        units.push(UnitFile::of("etcd-member.service", &unit));
        let addons = AddonsUnit {
            kubernetes_version: &env.kubernetes_version,
            image: kubectl_image(&env.kubernetes_version),
            addons_dir: ADDONS_DIR,
            secrets_dir: SECRETS_DIR,
            server: crate::operator::kube::LOCAL_URL,
            role_label: crate::operator::kube::CONTROL_PLANE_ROLE,
            exclude_label: crate::operator::kube::EXCLUDE_FROM_LOAD_BALANCERS,
            taint_effect: crate::operator::kube::CONTROL_PLANE_TAINT_EFFECT,
        };
        units.push(UnitFile::of(ADDONS_UNIT, &addons));
        units.push(UnitFile::of(
            "nodeboot-addons.timer",
            &AddonsTimer { interval_minutes: 5 },
        ));
        // A member that joined as a learner becomes a voter once caught up;
        // on every other start this finds it a voter and is done at once.
        let after = vec!["etcd-member.service".to_string()];
        let promote = StageUnit {
            role,
            stage: "etcd-promote",
            description: "promote this etcd member once it has caught up",
            binary,
            args: "",
            after: after.clone(),
            requires: after,
            caps: ETCD_CLIENT_ONLY.caps,
            why_caps: ETCD_CLIENT_ONLY.why_caps,
            address_families: "AF_UNIX AF_INET AF_INET6",
            write_paths: ETCD_CLIENT_ONLY.write_paths,
            extra_syscalls: ETCD_CLIENT_ONLY.extra_syscalls,
        };
        units.push(UnitFile::of(stage_unit_name("etcd-promote"), &promote));
        let backup = EtcdBackupUnit {
            binary,
            mount_point: ETCD_MOUNT_POINT,
            static_pod_dir: STATIC_POD_DIR,
            interval_seconds: env.etcd_backup.interval.as_secs(),
        };
        units.push(UnitFile::of("nodeboot-etcd-backup.service", &backup));
        units.push(UnitFile::of("nodeboot-reboot.service", &RebootUnit { binary }));
    }
    if role.runs_kubelet() {
        let kubelet = KubeletUnit {
            kubernetes_version: &env.kubernetes_version,
            kubelet: KUBELET_BINARY,
            kubelet_config: KUBELET_CONFIG_PATH,
            kubeconfig: KUBELET_KUBECONFIG,
            secrets_dir: SECRETS_DIR,
            static_pod_dir: STATIC_POD_DIR,
            dropin_dir: crate::shared::node_config::KUBELET_DROPIN_DIR,
        };
        units.push(UnitFile::of("kubelet.service", &kubelet));
        let sync = ManifestSyncUnit {
            binary,
            static_pod_dir: STATIC_POD_DIR,
            synced_dirs: super::node_config::node_config(env, role)
                .synced
                .into_iter()
                .map(|s| s.dir)
                .collect(),
            interval: MANIFEST_SYNC_INTERVAL_SECONDS,
            state_dir: STATE_DIR,
            record_dir: SYNC_RECORD_DIR
                .strip_prefix("/var/lib/")
                .expect("the record lives under /var/lib"),
        };
        units.push(UnitFile::of("nodeboot-manifests.service", &sync));
    }
    if stages_of(role).contains(&"secrets") {
        let mut after = Vec::new();
        if role == Role::Etcd {
            after.push("etcd-member.service");
        }
        if role.runs_kubelet() {
            after.push("kubelet.service");
        }
        let sync = SecretsSyncUnit {
            binary,
            secrets_dir: SECRETS_DIR,
            state_dir: STATE_DIR,
            interval: SECRETS_SYNC_INTERVAL_SECONDS,
            after,
        };
        units.push(UnitFile::of("nodeboot-secrets-sync.service", &sync));
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
