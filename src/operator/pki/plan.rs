//! Every certificate, key pair and kubeconfig of an environment, and where
//! each lives in the secrets tree. Pure: the tests read it as a table.
//!
//! On a node, `stage secrets` puts `common/X` and the role's folder's `X`
//! (`secure/` for etcd nodes, `compute/` for workers) at
//! `/run/nodeboot/secrets/X`: the manifests refer to them there.

use crate::operator::env::Environment;
use crate::operator::kube;
use crate::shared::etcd::member_name;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usage {
    Ca,
    Server,
    /// Serves and connects (etcd members talk to each other both ways).
    ServerAndClient,
    Client,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertSpec {
    /// The name `--rotate` takes: `etcd-member-0`, `apiserver`, ...
    pub id: String,
    /// Paths in the secrets tree.
    pub cert: String,
    pub key: String,
    pub common_name: String,
    pub organization: Option<String>,
    /// The CA (by id) that signs it; `None` for a CA itself.
    pub issuer: Option<String>,
    pub sans: Vec<String>,
    pub usage: Usage,
    /// An etcd member's: ends clear of the other members' (`ends::member_end`).
    pub stagger: bool,
}

/// A bare key pair (the service-account signing key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyPairSpec {
    pub id: String,
    pub key: String,
    pub public: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeconfigSpec {
    pub id: String,
    pub path: String,
    pub cluster: String,
    pub server: String,
    /// Client certificate (by id) and the CA (by id) that serves the API.
    pub user: String,
    pub ca: String,
}

/// The kubelets' TLS-bootstrap token: a `bootstrap.kubernetes.io/token`
/// Secret for the API (control plane only) and bootstrap kubeconfigs that
/// carry the token (one per role folder, each with the URL that role uses).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootstrapTokenSpec {
    pub id: String,
    /// The Secret, applied to the cluster as an add-on by the control plane.
    pub secret: String,
    /// `(path, server)` of each bootstrap kubeconfig.
    pub kubeconfigs: Vec<(String, String)>,
    pub cluster: String,
    /// The CA (by id) that serves the API.
    pub ca: String,
}

/// The key kube-apiserver encrypts Secrets with in etcd, inside the
/// `EncryptionConfiguration` it reads (`--encryption-provider-config`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncryptionKeySpec {
    pub id: String,
    pub path: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pki {
    pub certs: Vec<CertSpec>,
    pub key_pairs: Vec<KeyPairSpec>,
    pub kubeconfigs: Vec<KubeconfigSpec>,
    pub bootstrap_token: BootstrapTokenSpec,
    pub encryption_key: EncryptionKeySpec,
}

impl Pki {
    pub fn cert(&self, id: &str) -> &CertSpec {
        self.certs
            .iter()
            .find(|c| c.id == id)
            .unwrap_or_else(|| panic!("the plan names certificate {id}"))
    }
}

/// Where the cluster CA's key lives: with the control plane (role etcd),
/// whose kube-controller-manager signs the kubelets' certificates with it
/// (`--cluster-signing-key-file`). Never in `common/` or `compute/`.
pub const CLUSTER_CA_KEY: &str = "secure/ca.key";
/// Where it lived before the controller-manager signed; `ensure` moves it.
pub const OLD_CLUSTER_CA_KEY: &str = "ca/kubernetes-ca.key";

/// The group every nodeboot bootstrap token adds (kubeadm's pattern
/// `system:bootstrappers:<tool>:default-node-token`); the RBAC objects bind it.
pub const BOOTSTRAP_GROUP: &str = "system:bootstrappers:nodeboot:default-node-token";

fn ca(id: &str, cert: &str, common_name: String) -> CertSpec {
    CertSpec {
        id: id.into(),
        cert: cert.into(),
        key: if id == "kubernetes-ca" {
            CLUSTER_CA_KEY.into()
        } else {
            format!("ca/{id}.key")
        },
        common_name,
        organization: None,
        issuer: None,
        sans: vec![],
        usage: Usage::Ca,
        stagger: false,
    }
}

fn leaf(id: &str, path: &str, issuer: &str, cn: &str, org: Option<&str>, sans: Vec<String>, usage: Usage) -> CertSpec {
    CertSpec {
        id: id.into(),
        cert: format!("{path}.crt"),
        key: format!("{path}.key"),
        common_name: cn.into(),
        organization: org.map(str::to_string),
        issuer: Some(issuer.into()),
        sans,
        usage,
        stagger: false,
    }
}

pub fn plan(env: &Environment) -> Pki {
    let name = &env.name;
    let members = env.etcd_members();
    let mut certs = vec![
        ca("kubernetes-ca", "common/ca.crt", format!("{name}-kubernetes-ca")),
        ca("etcd-ca", "secure/etcd/ca.crt", format!("{name}-etcd-ca")),
        ca(
            "front-proxy-ca",
            "secure/front-proxy-ca.crt",
            format!("{name}-front-proxy-ca"),
        ),
    ];
    for m in &members {
        let sans = vec![
            m.ip.to_string(),
            "127.0.0.1".into(),
            "localhost".into(),
            format!("etcd-{}.{}", m.index, env.private_zone_name),
        ];
        let cn = member_name(name, m.index);
        certs.push(CertSpec {
            stagger: true,
            ..leaf(
                &format!("etcd-member-{}", m.index),
                &format!("secure/etcd/member-{}", m.index),
                "etcd-ca",
                &cn,
                None,
                sans,
                Usage::ServerAndClient,
            )
        });
    }
    certs.push(leaf(
        "etcd-client",
        "secure/etcd/client",
        "etcd-ca",
        &format!("{name}-etcd-client"),
        None,
        vec![],
        Usage::Client,
    ));
    let mut apiserver_sans = vec![
        kube::public_host(env),
        kube::internal_host(env),
        "kubernetes".into(),
        "kubernetes.default".into(),
        "kubernetes.default.svc".into(),
        format!("kubernetes.default.svc.{}", kube::CLUSTER_DOMAIN),
        kube::KUBERNETES_SERVICE_IP.into(),
        "127.0.0.1".into(),
    ];
    apiserver_sans.extend(members.iter().map(|m| m.ip.to_string()));
    certs.extend([
        leaf(
            "apiserver",
            "secure/apiserver",
            "kubernetes-ca",
            "kube-apiserver",
            None,
            apiserver_sans,
            Usage::Server,
        ),
        leaf(
            "apiserver-kubelet-client",
            "secure/apiserver-kubelet-client",
            "kubernetes-ca",
            "kube-apiserver-kubelet-client",
            Some("system:masters"),
            vec![],
            Usage::Client,
        ),
        leaf(
            "front-proxy-client",
            "secure/front-proxy-client",
            "front-proxy-ca",
            "front-proxy-client",
            None,
            vec![],
            Usage::Client,
        ),
        leaf(
            "admin",
            "ca/admin",
            "kubernetes-ca",
            "kubernetes-admin",
            Some("system:masters"),
            vec![],
            Usage::Client,
        ),
        // The control plane's add-on applier (nodeboot-addons.service): its own
        // identity, so the operator's admin kubeconfig never leaves ca/. The
        // control plane already holds cluster-admin material (the cluster CA
        // key, the API server's kubelet client), so this adds no exposure.
        leaf(
            "addons-applier",
            "ca/addons-applier",
            "kubernetes-ca",
            "nodeboot:addons-applier",
            Some("system:masters"),
            vec![],
            Usage::Client,
        ),
        leaf(
            "controller-manager",
            "ca/controller-manager",
            "kubernetes-ca",
            "system:kube-controller-manager",
            None,
            vec![],
            Usage::Client,
        ),
        leaf(
            "scheduler",
            "ca/scheduler",
            "kubernetes-ca",
            "system:kube-scheduler",
            None,
            vec![],
            Usage::Client,
        ),
        // No kubelet certificate: every kubelet gets its own identity,
        // system:node:<its hostname>, by TLS bootstrap (see BootstrapTokenSpec).
        leaf(
            "kube-proxy",
            "ca/kube-proxy",
            "kubernetes-ca",
            "system:kube-proxy",
            None,
            vec![],
            Usage::Client,
        ),
    ]);
    let key_pairs = vec![KeyPairSpec {
        id: "service-account".into(),
        key: "secure/sa.key".into(),
        public: "secure/sa.pub".into(),
    }];
    let kc = |id: &str, path: &str, server: String| KubeconfigSpec {
        id: format!("{id}-kubeconfig"),
        path: path.into(),
        cluster: name.clone(),
        server,
        user: id.into(),
        ca: "kubernetes-ca".into(),
    };
    let kubeconfigs = vec![
        // In ca/, which is never uploaded: the admin's credentials never leave the operator's machine.
        kc("admin", ADMIN_KUBECONFIG, kube::public_url(env)),
        kc(
            "controller-manager",
            "secure/controller-manager.kubeconfig",
            kube::LOCAL_URL.into(),
        ),
        kc("scheduler", "secure/scheduler.kubeconfig", kube::LOCAL_URL.into()),
        kc("addons-applier", ADDONS_KUBECONFIG, kube::LOCAL_URL.into()),
        // kube-proxy runs on every node role; the control plane reaches its
        // own API locally (no load-balancer hairpin), workers the internal LB.
        kc("kube-proxy", "compute/kube-proxy.kubeconfig", kube::internal_url(env)),
        KubeconfigSpec {
            id: "kube-proxy-local-kubeconfig".into(),
            ..kc("kube-proxy", "secure/kube-proxy.kubeconfig", kube::LOCAL_URL.into())
        },
    ];
    let bootstrap_token = BootstrapTokenSpec {
        id: "bootstrap-token".into(),
        secret: "secure/addons/bootstrap-token.yaml".into(),
        kubeconfigs: vec![
            ("compute/bootstrap-kubelet.kubeconfig".into(), kube::internal_url(env)),
            ("secure/bootstrap-kubelet.kubeconfig".into(), kube::LOCAL_URL.into()),
        ],
        cluster: name.clone(),
        ca: "kubernetes-ca".into(),
    };
    let encryption_key = EncryptionKeySpec {
        id: "encryption-key".into(),
        path: "secure/encryption-config.yaml".into(),
    };
    Pki {
        certs,
        key_pairs,
        kubeconfigs,
        bootstrap_token,
        encryption_key,
    }
}

/// The admin kubeconfig, in the local tree only (`ca/` is not a folder of the bucket's layout).
pub const ADMIN_KUBECONFIG: &str = "ca/admin.kubeconfig";
/// Where nodeboot before 0.2 wrote it, inside `secure/`, so `secrets upload` sent it to the bucket.
pub const LEGACY_ADMIN_KUBECONFIG: &str = "secure/kubeconfig_admin";
/// The add-on applier's kubeconfig, for the control plane (not in
/// `secure/addons/`, whose files are applied as manifests).
pub const ADDONS_KUBECONFIG: &str = "secure/addons-applier.kubeconfig";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_issuer_is_a_ca_planned_before_what_it_signs() {
        let env = crate::operator::env::load(std::path::Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/environments/example.tfvars"
        )))
        .unwrap()
        .env;
        let pki = plan(&env);
        for (i, c) in pki.certs.iter().enumerate() {
            if let Some(issuer) = &c.issuer {
                let at = pki.certs.iter().position(|x| &x.id == issuer).expect("issuer planned");
                assert!(at < i && pki.certs[at].usage == Usage::Ca, "{}", c.id);
            }
            assert!(
                !c.key.starts_with("common/") && !c.key.starts_with("compute/"),
                "{}: a private key would reach workers",
                c.id
            );
        }
        for c in pki.certs.iter().filter(|c| c.usage == Usage::Ca) {
            let allowed = if c.id == "kubernetes-ca" {
                CLUSTER_CA_KEY.to_string()
            } else {
                format!("ca/{}.key", c.id)
            };
            assert_eq!(
                c.key, allowed,
                "{}: only the cluster CA's key goes to the control plane, the others are never uploaded",
                c.id
            );
        }
    }
}
