//! The Kubernetes static-pod manifests each role's kubelet runs, from the
//! askama templates in `manifests/`. `up` uploads them to
//! `manifests/<role>/` in the secrets bucket; `nodeboot sync manifests`
//! keeps each node's static-pod directory equal to them.

use askama::Template;

use crate::operator::env::Environment;
use crate::operator::kube;
use crate::shared::etcd::CLIENT_PORT;
use crate::shared::node_config::{AUDIT_LOG_DIR, AUDIT_POLICY_PATH, SECRETS_DIR};
use crate::shared::role::Role;

/// What every manifest template may use.
pub struct Common {
    pub environment: String,
    pub version: String,
    pub port: u16,
    /// The etcd members' client URLs, from their ENI addresses.
    pub etcd_servers: String,
    pub secrets: &'static str,
    pub issuer: String,
    pub service_cidr: &'static str,
    pub cluster_cidr: &'static str,
    pub node_cidr_mask_size: u8,
    pub audit_policy: &'static str,
    pub audit_log_dir: &'static str,
    pub audit_max_age_days: u32,
    pub audit_max_backups: u32,
    pub audit_max_size_mb: u32,
    pub flex_volume_dir: &'static str,
    /// Each component's image, pinned by digest (`env::images`).
    pub apiserver_image: String,
    pub controller_manager_image: String,
    pub scheduler_image: String,
    pub proxy_image: String,
}

macro_rules! manifest {
    ($name:ident, $path:literal) => {
        #[derive(Template)]
        #[template(path = $path, escape = "none")]
        struct $name<'a> {
            c: &'a Common,
        }
    };
}

manifest!(ApiServer, "kube-apiserver.yaml");
manifest!(ControllerManager, "kube-controller-manager.yaml");
manifest!(Scheduler, "kube-scheduler.yaml");
manifest!(Proxy, "kube-proxy.yaml");

pub fn common(env: &Environment) -> Common {
    let etcd_servers: Vec<String> = env
        .etcd_members()
        .iter()
        .map(|m| format!("https://{}:{CLIENT_PORT}", m.ip))
        .collect();
    let image = |component| crate::operator::env::images::kubernetes_image(&env.kubernetes_version, component);
    Common {
        environment: env.name.clone(),
        version: env.kubernetes_version.clone(),
        port: kube::API_PORT,
        etcd_servers: etcd_servers.join(","),
        secrets: SECRETS_DIR,
        issuer: kube::internal_url(env),
        service_cidr: kube::SERVICE_CIDR,
        cluster_cidr: kube::CLUSTER_CIDR,
        node_cidr_mask_size: kube::NODE_CIDR_MASK_SIZE,
        audit_policy: AUDIT_POLICY_PATH,
        audit_log_dir: AUDIT_LOG_DIR,
        audit_max_age_days: kube::AUDIT_MAX_AGE_DAYS,
        audit_max_backups: kube::AUDIT_MAX_BACKUPS,
        audit_max_size_mb: kube::AUDIT_MAX_SIZE_MB,
        flex_volume_dir: kube::FLEX_VOLUME_DIR,
        apiserver_image: image("kube-apiserver"),
        controller_manager_image: image("kube-controller-manager"),
        scheduler_image: image("kube-scheduler"),
        proxy_image: image("kube-proxy"),
    }
}

/// `(file name, contents)` of every manifest `role` runs, in a fixed order.
pub fn manifests_for(env: &Environment, role: Role) -> Vec<(String, String)> {
    let c = common(env);
    let render = |t: &dyn askama::DynTemplate| super::units::finish(t.dyn_render().expect("manifest templates render"));
    match role {
        Role::Etcd => vec![
            ("kube-apiserver.yaml".into(), render(&ApiServer { c: &c })),
            (
                "kube-controller-manager.yaml".into(),
                render(&ControllerManager { c: &c }),
            ),
            ("kube-scheduler.yaml".into(), render(&Scheduler { c: &c })),
            // kube-proxy on the control plane too: webhooks and aggregated
            // APIs behind a ClusterIP are reached from here.
            ("kube-proxy.yaml".into(), render(&Proxy { c: &c })),
        ],
        Role::Compute => vec![("kube-proxy.yaml".into(), render(&Proxy { c: &c }))],
        Role::Bastion => vec![],
    }
}
