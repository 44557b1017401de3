//! The non-unit files of each role, from the askama templates in `ignition/`.

use askama::Template;

use crate::operator::kube;
use crate::shared::node_config::{SECRETS_DIR, STATIC_POD_DIR};
use crate::shared::role::Role;

#[derive(Template)]
#[template(path = "kubelet.yaml", escape = "none")]
pub struct KubeletConfig<'a> {
    pub role: Role,
    pub static_pod_dir: &'a str,
    pub secrets_dir: &'a str,
    pub cluster_domain: &'a str,
    pub cluster_dns: &'a str,
    pub volume_plugin_dir: &'a str,
    /// `(key, effect)` of the taints the node registers with.
    pub taints: Vec<(&'a str, &'a str)>,
}

pub fn kubelet_config(role: Role) -> String {
    super::units::render(&KubeletConfig {
        role,
        static_pod_dir: STATIC_POD_DIR,
        secrets_dir: SECRETS_DIR,
        cluster_domain: kube::CLUSTER_DOMAIN,
        cluster_dns: kube::CLUSTER_DNS_IP,
        volume_plugin_dir: kube::FLEX_VOLUME_DIR,
        taints: match role {
            Role::Etcd => vec![(kube::CONTROL_PLANE_ROLE, kube::CONTROL_PLANE_TAINT_EFFECT)],
            Role::Compute | Role::Bastion => vec![],
        },
    })
}

/// kube-apiserver's audit policy (`--audit-policy-file`), on control-plane nodes.
#[derive(Template)]
#[template(path = "audit-policy.yaml", escape = "none")]
pub struct AuditPolicy;

pub fn audit_policy() -> String {
    super::units::render(&AuditPolicy)
}
