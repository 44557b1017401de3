//! Cluster-wide Kubernetes settings derived from the environment, shared by
//! the PKI (certificate names) and the rendered manifests.

use crate::env::Environment;

pub const SERVICE_CIDR: &str = "10.32.0.0/16";
/// The `kubernetes` service: the first address of the service range.
pub const KUBERNETES_SERVICE_IP: &str = "10.32.0.1";
pub const CLUSTER_CIDR: &str = "10.200.0.0/16";
pub const CLUSTER_DOMAIN: &str = "cluster.local";
pub const API_PORT: u16 = 6443;
/// How the control plane on an etcd node reaches its own kube-apiserver.
pub const LOCAL_URL: &str = "https://127.0.0.1:6443";

/// The public name of the API (the seed's `kube-<env>.<public zone>`).
pub fn public_host(env: &Environment) -> String {
    format!("kube-{}.{}", env.name, env.public_zone_name)
}

/// The internal load balancer's name in the private zone.
pub fn internal_host(env: &Environment) -> String {
    format!("kubeapi.{}", env.private_zone_name)
}

/// The load balancers listen on 443 and forward to 6443.
pub fn public_url(env: &Environment) -> String {
    format!("https://{}", public_host(env))
}

pub fn internal_url(env: &Environment) -> String {
    format!("https://{}", internal_host(env))
}
