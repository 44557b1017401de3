//! Kubeconfigs with embedded credentials. Written as JSON, which is YAML
//! and what kubectl reads.

use base64::Engine;
use serde_json::json;

use super::KubeconfigSpec;

pub fn render(spec: &KubeconfigSpec, ca_pem: &str, cert_pem: &str, key_pem: &str) -> String {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    // Named after the cluster so merging into ~/.kube/config never collides
    // with another cluster's `admin`.
    let user = format!("{}-{}", spec.cluster, spec.user);
    let value = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": spec.cluster, "cluster": {"server": spec.server, "certificate-authority-data": b64(ca_pem)}}],
        "users": [{"name": user, "user": {"client-certificate-data": b64(cert_pem), "client-key-data": b64(key_pem)}}],
        "contexts": [{"name": format!("{}@{}", user, spec.cluster), "context": {"cluster": spec.cluster, "user": user}}],
        "current-context": format!("{}@{}", user, spec.cluster),
        "preferences": {},
    });
    serde_json::to_string_pretty(&value).expect("kubeconfig serialises") + "\n"
}

/// A kubeconfig whose user authenticates with a bearer token (the kubelet's
/// bootstrap kubeconfig).
pub fn render_token(cluster: &str, server: &str, user: &str, token: &str, ca_pem: &str) -> String {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let value = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": cluster, "cluster": {"server": server, "certificate-authority-data": b64(ca_pem)}}],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": format!("{user}@{cluster}"), "context": {"cluster": cluster, "user": user}}],
        "current-context": format!("{user}@{cluster}"),
        "preferences": {},
    });
    serde_json::to_string_pretty(&value).expect("kubeconfig serialises") + "\n"
}
