//! Cluster-wide Kubernetes settings derived from the environment, shared by
//! the PKI (certificate names) and the rendered manifests.

use crate::operator::env::Environment;

pub const SERVICE_CIDR: &str = "10.32.0.0/16";
/// The `kubernetes` service: the first address of the service range.
pub const KUBERNETES_SERVICE_IP: &str = "10.32.0.1";
pub const CLUSTER_CIDR: &str = "10.200.0.0/16";
/// Each node's share of CLUSTER_CIDR (the controller-manager allocates it, the CNI uses it).
pub const NODE_CIDR_MASK_SIZE: u8 = 24;
/// Flannel's VXLAN port (the Linux default); Terraform opens it between nodes.
pub const FLANNEL_VXLAN_PORT: u16 = 8472;
/// Cluster DNS (CoreDNS's service): the tenth address of the service range.
pub const CLUSTER_DNS_IP: &str = "10.32.0.10";
pub const CLUSTER_DOMAIN: &str = "cluster.local";
pub const API_PORT: u16 = 6443;
/// How the control plane on an etcd node reaches its own kube-apiserver.
pub const LOCAL_URL: &str = "https://127.0.0.1:6443";

/// kubeadm's role label and taint of control-plane nodes. The kubelets
/// register with the taint (`registerWithTaints`); NodeRestriction forbids a
/// kubelet to set the label on its own Node (a `kubernetes.io` label outside
/// the kubelet's allowed set), so the add-on applier sets both on its node,
/// as kubeadm's mark-control-plane phase does.
pub const CONTROL_PLANE_ROLE: &str = "node-role.kubernetes.io/control-plane";
pub const CONTROL_PLANE_TAINT_EFFECT: &str = "NoSchedule";
/// kubeadm's mark-control-plane sets it too: no cloud load balancer sends
/// Service traffic through control-plane nodes.
pub const EXCLUDE_FROM_LOAD_BALANCERS: &str = "node.kubernetes.io/exclude-from-external-load-balancers";

/// FlexVolume drivers: the kubelet's `volumePluginDir` and the
/// controller-manager's `--flex-volume-plugin-dir`. Flatcar's /usr is
/// read-only; its documentation puts them here.
pub const FLEX_VOLUME_DIR: &str = "/opt/libexec/kubernetes/kubelet-plugins/volume/exec";

/// The taint every kubelet with `--cloud-provider=external` registers with
/// until the cloud controller has initialised its Node (zone labels,
/// addresses); the controller itself must tolerate it.
pub const UNINITIALIZED_TAINT: &str = "node.cloudprovider.kubernetes.io/uninitialized";

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

/// kube-apiserver's audit log: rotated at this size, kept this long and this often.
pub const AUDIT_MAX_SIZE_MB: u32 = 100;
pub const AUDIT_MAX_AGE_DAYS: u32 = 30;
pub const AUDIT_MAX_BACKUPS: u32 = 10;

/// Why upgrading a cluster that runs `running` to `wanted` breaks the
/// Kubernetes version-skew policy, if it does
/// (https://kubernetes.io/releases/version-skew-policy/): the control plane
/// moves one minor at a time, and never below its kubelets, which run the
/// version the cluster ran (a downgrade would leave them newer than it).
pub fn skew_problem(running: &str, wanted: &str) -> Option<String> {
    let minor = |v: &str| -> Option<(u32, u32)> {
        let mut parts = v.trim_start_matches('v').split('.');
        Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
    };
    let (Some(run), Some(want)) = (minor(running), minor(wanted)) else {
        return Some(format!("cannot compare {running} with {wanted}: not MAJOR.MINOR.PATCH"));
    };
    if run.0 != want.0 {
        return Some(format!(
            "the cluster runs {running}; a change of major version to {wanted} is not supported"
        ));
    }
    if want.1 < run.1 {
        return Some(format!(
            "the cluster runs {running}; {wanted} would put the control plane below the kubelets that run {}.{} (kubelets may not be newer than kube-apiserver)",
            run.0, run.1
        ));
    }
    if want.1 > run.1 + 1 {
        return Some(format!(
            "the cluster runs {running}; upgrade one minor at a time ({}.{} first), not to {wanted}",
            run.0,
            run.1 + 1
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::skew_problem;

    #[test]
    fn skew_allows_patches_and_one_minor_up_only() {
        for (running, wanted, ok) in [
            ("1.31.4", "1.31.4", true),
            ("1.31.4", "1.31.9", true),
            ("1.31.4", "1.31.1", true),
            ("1.31.4", "1.32.0", true),
            ("v1.31.4", "1.32.0", true),
            ("1.31.4", "1.33.0", false),
            ("1.31.4", "1.30.9", false),
            ("1.31.4", "2.0.0", false),
            ("garbage", "1.31.0", false),
        ] {
            assert_eq!(
                skew_problem(running, wanted).is_none(),
                ok,
                "{running} -> {wanted}: {:?}",
                skew_problem(running, wanted)
            );
        }
        assert!(skew_problem("1.31.4", "1.33.0").unwrap().contains("1.32 first"));
        assert!(skew_problem("1.31.4", "1.30.9").unwrap().contains("kubelets"));
    }
}
