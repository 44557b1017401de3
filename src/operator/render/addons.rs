//! Cluster objects the control plane applies (server-side apply) rather than
//! runs as static pods: the RBAC that lets kubelets join by TLS bootstrap,
//! and the add-ons (see `cluster_addons`). `render` writes them to
//! `DIR/manifests/addons/`; `manifests upload` sends them to
//! `manifests/addons/`, which control-plane nodes keep in sync.

use askama::Template;
use serde_json::{json, Value};

use crate::operator::env::Environment;
use crate::operator::kube;
use crate::operator::pki::BOOTSTRAP_GROUP;

#[derive(Template)]
#[template(path = "addons/flannel.yaml", escape = "none")]
struct Flannel<'a> {
    environment: &'a str,
    version: &'a str,
    image: &'a str,
    cni_plugin_image: &'a str,
    cluster_cidr: &'a str,
    vxlan_port: u16,
}

#[derive(Template)]
#[template(path = "addons/coredns.yaml", escape = "none")]
struct CoreDns<'a> {
    environment: &'a str,
    version: &'a str,
    image: &'a str,
    cluster_domain: &'a str,
    dns_ip: &'a str,
}

/// The object-prefix and render-directory name of the add-ons.
pub const ADDONS: &str = "addons";

fn cluster_role_binding(name: &str, role: &str, group: &str) -> Value {
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/managed-by": "nodeboot"}},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": group}],
    })
}

/// kubeadm's three bindings for TLS bootstrap (`kubeadm init phase
/// bootstrap-token`), for nodeboot's token group: the token may create
/// node CSRs, which the controller-manager's approver approves
/// (`.../nodeclient`); a node may renew its own client certificate
/// (`.../selfnodeclient`). The ClusterRoles are the API server's defaults.
pub fn bootstrap_rbac() -> Vec<Value> {
    vec![
        cluster_role_binding(
            "nodeboot:kubelet-bootstrap",
            "system:node-bootstrapper",
            BOOTSTRAP_GROUP,
        ),
        cluster_role_binding(
            "nodeboot:node-autoapprove-bootstrap",
            "system:certificates.k8s.io:certificatesigningrequests:nodeclient",
            BOOTSTRAP_GROUP,
        ),
        cluster_role_binding(
            "nodeboot:node-autoapprove-certificate-rotation",
            "system:certificates.k8s.io:certificatesigningrequests:selfnodeclient",
            "system:nodes",
        ),
    ]
}

/// YAML documents separated by `---`, in a fixed order.
pub fn to_yaml(objects: &[Value]) -> String {
    let docs: Vec<String> = objects
        .iter()
        .map(|o| serde_yaml_ng::to_string(o).expect("objects serialise"))
        .collect();
    docs.join("---\n")
}

#[derive(Template)]
#[template(path = "addons/kubelet-csr-approver.yaml", escape = "none")]
struct CsrApprover<'a> {
    environment: &'a str,
    version: &'a str,
    image: &'a str,
    provider_regex: String,
    ip_prefixes: String,
}

/// The approver of kubelet serving certificates: part of node identity
/// (the kubelets ask for serving certificates, `serverTLSBootstrap`), so
/// always rendered, pinned here rather than chosen in the environment.
pub const CSR_APPROVER_VERSION: &str = "1.2.14";
pub const CSR_APPROVER_IMAGE: &str =
    "ghcr.io/postfinance/kubelet-csr-approver:v1.2.14@sha256:c0f6aa1abdc225a32f9a29992fd97f711e78e2df21434f9ce7bc60981f96a5f8";

#[derive(Template)]
#[template(path = "addons/aws-cloud-controller-manager.yaml", escape = "none")]
struct CloudController<'a> {
    environment: &'a str,
    version: &'a str,
    image: &'a str,
    args: Vec<String>,
    role_label: &'a str,
    uninitialized_taint: &'a str,
}

/// The cloud controller's command line: the AWS provider; no cloud routes
/// (Flannel's VXLAN carries pod traffic, and the route controller would need
/// route-table rights the IAM module does not grant); node CIDRs stay with
/// kube-controller-manager (`--allocate-node-cidrs` is off by default here);
/// the cluster's name is the environment's (the instances' tag
/// `kubernetes.io/cluster/<environment> = owned` names the same cluster).
pub fn cloud_controller_args(env: &Environment) -> Vec<String> {
    vec![
        "--cloud-provider=aws".into(),
        "--configure-cloud-routes=false".into(),
        format!("--cluster-name={}", env.name),
        "--leader-elect=true".into(),
        "--v=2".into(),
    ]
}

/// The node names of an environment: `<environment>-<role>-<instance id>`
/// (the hostname the discover stage sets; see `stage::discover::hostname`).
pub fn node_name_regex(env: &Environment) -> String {
    format!("^{}-(etcd|compute)-i-[0-9a-f]{{8,17}}$", env.name)
}

/// `(file name, contents)` of every add-on file, in apply order.
pub fn addons_for(env: &Environment) -> Vec<(String, String)> {
    let mut files = vec![("00-bootstrap-rbac.yaml".to_string(), to_yaml(&bootstrap_rbac()))];
    let approver = CsrApprover {
        environment: &env.name,
        version: CSR_APPROVER_VERSION,
        image: CSR_APPROVER_IMAGE,
        provider_regex: node_name_regex(env),
        ip_prefixes: env.vpc_cidr.to_string(),
    };
    files.push(("05-kubelet-csr-approver.yaml".into(), super::units::render(&approver)));
    // Always: the kubelets run with --cloud-provider=external, so no Node
    // is initialised (nor any pod scheduled off the host network) without it.
    // `validate` refuses a Kubernetes minor without a pinned release.
    if let Some(image) = crate::operator::env::addons::cloud_controller_image(&env.kubernetes_version) {
        let version = image
            .split_once(":v")
            .and_then(|(_, t)| t.split_once('@'))
            .map_or("", |(v, _)| v);
        let ccm = CloudController {
            environment: &env.name,
            version,
            image,
            args: cloud_controller_args(env),
            role_label: kube::CONTROL_PLANE_ROLE,
            uninitialized_taint: kube::UNINITIALIZED_TAINT,
        };
        files.push((
            "07-aws-cloud-controller-manager.yaml".into(),
            super::units::render(&ccm),
        ));
    }
    if let Some(release) = env.addons.flannel {
        let flannel = Flannel {
            environment: &env.name,
            version: release.version,
            image: release.images[0],
            cni_plugin_image: release.images[1],
            cluster_cidr: kube::CLUSTER_CIDR,
            vxlan_port: kube::FLANNEL_VXLAN_PORT,
        };
        files.push(("10-flannel.yaml".into(), super::units::render(&flannel)));
    }
    if let Some(release) = env.addons.coredns {
        let coredns = CoreDns {
            environment: &env.name,
            version: release.version,
            image: release.images[0],
            cluster_domain: kube::CLUSTER_DOMAIN,
            dns_ip: kube::CLUSTER_DNS_IP,
        };
        files.push(("20-coredns.yaml".into(), super::units::render(&coredns)));
    }
    files
}
