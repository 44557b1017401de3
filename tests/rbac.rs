//! The TLS bootstrap flow and the health probes, checked with the rendered
//! RBAC objects, the API server's default roles (tests/data/kubernetes/
//! default-rbac.yaml) and a small evaluator of the documented rules:
//! RBAC (https://kubernetes.io/docs/reference/access-authn-authz/rbac/),
//! the bootstrap-token authenticator, the Node authorizer's node rules and
//! the NodeRestriction admission plugin, and the CSR approver's node-client
//! recognisers (pkg/controller/certificates/approver/sarapprove.go).

mod common;

use std::path::Path;

use base64::Engine;
use common::*;
use serde::Deserialize;
use serde_yaml_ng::Value;
use x509_parser::prelude::FromDer;

// ---------------------------------------------------------------- evaluator

#[derive(Debug, Clone)]
struct User {
    name: String,
    groups: Vec<String>,
}

#[derive(Debug, Clone)]
enum Request {
    Resource {
        verb: &'static str,
        group: &'static str,
        resource: &'static str,
        name: Option<String>,
    },
    NonResource {
        verb: &'static str,
        path: String,
    },
}

fn res(verb: &'static str, group: &'static str, resource: &'static str) -> Request {
    Request::Resource {
        verb,
        group,
        resource,
        name: None,
    }
}

fn named(verb: &'static str, group: &'static str, resource: &'static str, name: &str) -> Request {
    Request::Resource {
        verb,
        group,
        resource,
        name: Some(name.into()),
    }
}

fn url(path: &str) -> Request {
    Request::NonResource {
        verb: "get",
        path: path.into(),
    }
}

#[derive(Default)]
struct Policy {
    /// ClusterRole name -> rules.
    roles: Vec<(String, Vec<Value>)>,
    /// (ClusterRole name, subjects) of each ClusterRoleBinding.
    bindings: Vec<(String, Vec<Value>)>,
}

fn strings(v: &Value) -> Vec<String> {
    v.as_sequence()
        .map(|s| s.iter().filter_map(|x| x.as_str().map(str::to_string)).collect())
        .unwrap_or_default()
}

impl Policy {
    fn add(&mut self, doc: &Value) {
        match doc["kind"].as_str() {
            Some("ClusterRole") => {
                let rules = doc["rules"].as_sequence().cloned().unwrap_or_default();
                self.roles
                    .push((doc["metadata"]["name"].as_str().unwrap().into(), rules));
            }
            Some("ClusterRoleBinding") => {
                assert_eq!(doc["roleRef"]["kind"], "ClusterRole");
                let subjects = doc["subjects"].as_sequence().cloned().unwrap_or_default();
                self.bindings
                    .push((doc["roleRef"]["name"].as_str().unwrap().into(), subjects));
            }
            // The one namespaced binding nodeboot renders: the cloud
            // controller's read of the API server's client-CA configmap
            // (a default Role, as every controller manager is given it);
            // it grants nothing cluster-wide, which is all this models.
            Some("RoleBinding")
                if doc["roleRef"]["kind"] == "Role"
                    && doc["roleRef"]["name"] == "extension-apiserver-authentication-reader"
                    && doc["metadata"]["namespace"] == "kube-system" => {}
            Some("Role") | Some("RoleBinding") => panic!("namespaced RBAC is not modelled: {doc:?}"),
            _ => {}
        }
    }

    fn rules(&self, role: &str) -> Vec<Value> {
        self.roles
            .iter()
            .filter(|(n, _)| n == role)
            .flat_map(|(_, r)| r.clone())
            .collect()
    }
}

fn any_matches(list: &[String], want: &str) -> bool {
    list.iter().any(|x| x == "*" || x == want)
}

/// Whether one PolicyRule allows the request (RBAC's RuleAllows).
fn rule_allows(rule: &Value, req: &Request) -> bool {
    match req {
        Request::Resource {
            verb,
            group,
            resource,
            name,
        } => {
            let names = strings(&rule["resourceNames"]);
            any_matches(&strings(&rule["verbs"]), verb)
                && any_matches(&strings(&rule["apiGroups"]), group)
                && strings(&rule["resources"]).iter().any(|r| {
                    r == "*"
                        || r == resource
                        || r.strip_suffix("/*")
                            .is_some_and(|base| resource.starts_with(&format!("{base}/")))
                })
                && (names.is_empty() || name.as_ref().is_some_and(|n| names.contains(n)))
        }
        Request::NonResource { verb, path } => {
            any_matches(&strings(&rule["verbs"]), verb)
                && strings(&rule["nonResourceURLs"])
                    .iter()
                    .any(|u| u == path || u.strip_suffix('*').is_some_and(|p| path.starts_with(p)))
        }
    }
}

fn subject_matches(subject: &Value, user: &User) -> bool {
    match subject["kind"].as_str() {
        Some("User") => subject["name"].as_str() == Some(&user.name),
        Some("Group") => user.groups.iter().any(|g| subject["name"].as_str() == Some(g)),
        _ => false,
    }
}

fn rbac_allows(policy: &Policy, user: &User, req: &Request) -> bool {
    policy
        .bindings
        .iter()
        .filter(|(_, subjects)| subjects.iter().any(|s| subject_matches(s, user)))
        .any(|(role, _)| policy.rules(role).iter().any(|r| rule_allows(r, req)))
}

/// A node identity as the Node authorizer recognises it.
fn node_name(user: &User) -> Option<&str> {
    user.name
        .strip_prefix("system:node:")
        .filter(|_| user.groups.iter().any(|g| g == "system:nodes"))
}

/// `--authorization-mode=Node,RBAC`: the Node authorizer decides node
/// identities' requests from its node rules (no opinion otherwise), RBAC
/// the rest; then NodeRestriction admits a node's writes to Node objects
/// only for its own.
fn allowed(policy: &Policy, modes: &[String], admission: &[String], user: &User, req: &Request) -> bool {
    let authorized = modes.iter().any(|mode| match mode.as_str() {
        "Node" => {
            node_name(user).is_some()
                && policy
                    .rules("nodeboot-test:node-authorizer-rules")
                    .iter()
                    .any(|r| rule_allows(r, req))
        }
        "RBAC" => rbac_allows(policy, user, req),
        other => panic!("authorization mode {other} is not modelled"),
    });
    if !authorized {
        return false;
    }
    match (node_name(user), req) {
        (
            Some(own),
            Request::Resource {
                verb: "create" | "update" | "patch" | "delete",
                group: "",
                resource: "nodes" | "nodes/status",
                name,
            },
        ) if admission.iter().any(|a| a == "NodeRestriction") => name.as_deref() == Some(own),
        _ => true,
    }
}

// ---------------------------------------------------------- the evaluator's own tests

fn policy_from(text: &str) -> Policy {
    let mut p = Policy::default();
    for doc in serde_yaml_ng::Deserializer::from_str(text) {
        p.add(&Value::deserialize(doc).unwrap());
    }
    p
}

#[test]
fn evaluator_follows_the_rbac_rules_it_models() {
    let p = policy_from(
        r#"
kind: ClusterRole
metadata: {name: r}
rules:
  - {apiGroups: [""], resources: [pods], verbs: [get]}
  - {apiGroups: [apps], resources: ["deployments/*"], verbs: ["*"]}
  - {apiGroups: [""], resources: [secrets], verbs: [get], resourceNames: [only]}
  - {nonResourceURLs: ["/logs/*", /exact], verbs: [get]}
---
kind: ClusterRoleBinding
roleRef: {kind: ClusterRole, name: r}
subjects: [{kind: Group, name: g}, {kind: User, name: u}]
"#,
    );
    let in_group = User {
        name: "x".into(),
        groups: vec!["g".into()],
    };
    let by_name = User {
        name: "u".into(),
        groups: vec![],
    };
    let other = User {
        name: "v".into(),
        groups: vec!["h".into()],
    };
    // (request, allowed for a bound user)
    let table = [
        (res("get", "", "pods"), true),
        (res("list", "", "pods"), false),
        (res("get", "apps", "pods"), false),
        (res("delete", "apps", "deployments/scale"), true),
        (res("delete", "apps", "deployments"), false),
        (named("get", "", "secrets", "only"), true),
        (named("get", "", "secrets", "other"), false),
        (res("get", "", "secrets"), false),
        (url("/logs/x"), true),
        (url("/exact"), true),
        (url("/exact/sub"), false),
        (
            Request::NonResource {
                verb: "post",
                path: "/exact".into(),
            },
            false,
        ),
    ];
    for (req, want) in &table {
        assert_eq!(rbac_allows(&p, &in_group, req), *want, "group member: {req:?}");
        assert_eq!(rbac_allows(&p, &by_name, req), *want, "user: {req:?}");
        assert!(!rbac_allows(&p, &other, req), "unbound: {req:?}");
    }
}

#[test]
fn node_restriction_limits_a_node_to_its_own_object() {
    let p = default_policy();
    let modes = vec!["Node".to_string(), "RBAC".to_string()];
    let node = User {
        name: "system:node:a".into(),
        groups: vec!["system:nodes".into(), "system:authenticated".into()],
    };
    let not_a_node = User {
        name: "system:node:a".into(),
        groups: vec!["system:authenticated".into()],
    };
    let with = vec!["NodeRestriction".to_string()];
    assert!(allowed(&p, &modes, &with, &node, &named("update", "", "nodes", "a")));
    assert!(!allowed(&p, &modes, &with, &node, &named("update", "", "nodes", "b")));
    assert!(
        allowed(&p, &modes, &[], &node, &named("update", "", "nodes", "b")),
        "without the admission plugin any node is writable"
    );
    assert!(
        !allowed(&p, &modes, &with, &not_a_node, &named("update", "", "nodes", "a")),
        "the name alone is no node identity"
    );
    assert!(
        !allowed(
            &p,
            &["RBAC".to_string()],
            &with,
            &node,
            &named("update", "", "nodes", "a")
        ),
        "RBAC alone grants nodes nothing"
    );
}

// ---------------------------------------------------------- the rendered cluster

fn default_policy() -> Policy {
    policy_from(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/kubernetes/default-rbac.yaml"
        ))
        .unwrap(),
    )
}

struct Cluster {
    policy: Policy,
    modes: Vec<String>,
    admission: Vec<String>,
    apiserver: Vec<String>,
    apiserver_pod: Value,
    secrets: tempfile::TempDir,
    rendered: tempfile::TempDir,
}

fn flag<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    args.iter().find_map(|a| a.strip_prefix(&format!("{name}=")))
}

/// `nodeboot pki` and `nodeboot render` of the example environment, the
/// rendered add-on RBAC on top of the API server's defaults.
fn cluster() -> Cluster {
    let secrets = tempfile::tempdir().unwrap();
    let rendered = tempfile::tempdir().unwrap();
    let env = example_env();
    let run = nodeboot(&[
        "pki",
        "--env",
        env.to_str().unwrap(),
        "--dir",
        secrets.path().to_str().unwrap(),
    ]);
    assert!(run.status.success(), "{}", stderr(&run));
    let run = nodeboot(&[
        "render",
        "--env",
        env.to_str().unwrap(),
        "--out",
        rendered.path().to_str().unwrap(),
    ]);
    assert!(run.status.success(), "{}", stderr(&run));
    let mut policy = default_policy();
    let addons = rendered.path().join("manifests/addons");
    for entry in std::fs::read_dir(&addons).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        for doc in serde_yaml_ng::Deserializer::from_str(&text) {
            let doc = Value::deserialize(doc).unwrap();
            assert!(
                !doc["metadata"]["name"]
                    .as_str()
                    .unwrap_or("")
                    .starts_with("nodeboot-test:"),
                "reserved test name"
            );
            policy.add(&doc);
        }
    }
    let apiserver_pod: Value = serde_yaml_ng::from_str(
        &std::fs::read_to_string(rendered.path().join("manifests/etcd/kube-apiserver.yaml")).unwrap(),
    )
    .unwrap();
    let apiserver = strings(&apiserver_pod["spec"]["containers"][0]["command"]);
    let list = |name: &str| {
        flag(&apiserver, name)
            .map(|v| v.split(',').map(str::to_string).collect())
            .unwrap_or_default()
    };
    Cluster {
        policy,
        modes: list("--authorization-mode"),
        admission: list("--enable-admission-plugins"),
        apiserver: apiserver.clone(),
        apiserver_pod,
        secrets,
        rendered,
    }
}

/// The bootstrap-token authenticator (plugin/pkg/auth/authenticator/token/
/// bootstrap): `<id>.<secret>` against the Secret `bootstrap-token-<id>`.
fn authenticate_token(bearer: &str, secret: &serde_json::Value, now: i64) -> Option<User> {
    let (id, token_secret) = bearer.split_once('.')?;
    let form = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if !form(id, 6) || !form(token_secret, 16) {
        return None;
    }
    let data = &secret["stringData"];
    let ok = secret["type"] == "bootstrap.kubernetes.io/token"
        && secret["metadata"]["namespace"] == "kube-system"
        && secret["metadata"]["name"] == format!("bootstrap-token-{id}")
        && data["token-id"] == id
        && data["token-secret"] == token_secret
        && data["usage-bootstrap-authentication"] == "true";
    let expires = nodeboot_time(data["expiration"].as_str()?)?;
    if !ok || expires <= now {
        return None;
    }
    let mut groups = vec!["system:bootstrappers".to_string()];
    for g in data["auth-extra-groups"]
        .as_str()
        .unwrap_or("")
        .split(',')
        .filter(|g| !g.is_empty())
    {
        assert!(
            g.starts_with("system:bootstrappers:"),
            "the API refuses extra group {g}"
        );
        groups.push(g.into());
    }
    groups.push("system:authenticated".into());
    Some(User {
        name: format!("system:bootstrap:{id}"),
        groups,
    })
}

fn nodeboot_time(s: &str) -> Option<i64> {
    let out = std::process::Command::new("date")
        .args(["-u", "-d", s, "+%s"])
        .output()
        .ok()?;
    String::from_utf8(out.stdout).ok()?.trim().parse().ok()
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn kubeconfig(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn bootstrap_user(c: &Cluster, folder: &str) -> User {
    let kc = kubeconfig(&c.secrets.path().join(format!("{folder}/bootstrap-kubelet.kubeconfig")));
    let secret: serde_json::Value =
        serde_json::from_slice(&std::fs::read(c.secrets.path().join("secure/addons/bootstrap-token.yaml")).unwrap())
            .unwrap();
    let bearer = kc["users"][0]["user"]["token"].as_str().expect("a token user");
    assert!(
        kc["users"][0]["user"].get("client-certificate-data").is_none(),
        "no shared client certificate"
    );
    authenticate_token(bearer, &secret, now()).expect("the API accepts the bootstrap kubeconfig's token")
}

/// The CSR a kubelet sends for its client certificate: an ECDSA P-256 key,
/// `O=system:nodes, CN=system:node:<node name>`, no SANs.
fn kubelet_client_csr(node: &str) -> Vec<u8> {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::default();
    let mut dn = rcgen::DistinguishedName::new();
    dn.push(rcgen::DnType::OrganizationName, "system:nodes");
    dn.push(rcgen::DnType::CommonName, format!("system:node:{node}"));
    params.distinguished_name = dn;
    params.serialize_request(&key).unwrap().der().to_vec()
}

/// ValidateKubeletClientCSR + isNodeClientCert: what makes the approver
/// treat a CSR as a node client certificate request, and `self` when the
/// requester already is that node. Returns the subresource to authorise.
fn recognise(csr_der: &[u8], signer: &str, usages: &[&str], requester: &User) -> Option<&'static str> {
    let (_, csr) = x509_parser::certification_request::X509CertificationRequest::from_der(csr_der).ok()?;
    let subject = &csr.certification_request_info.subject;
    let orgs: Vec<&str> = subject.iter_organization().filter_map(|o| o.as_str().ok()).collect();
    let cn = subject.iter_common_name().next()?.as_str().ok()?;
    let has_sans = csr
        .requested_extensions()
        .into_iter()
        .flatten()
        .any(|e| matches!(e, x509_parser::extensions::ParsedExtension::SubjectAlternativeName(_)));
    let mut u: Vec<&str> = usages.to_vec();
    u.retain(|x| *x != "key encipherment");
    u.sort();
    if signer != "kubernetes.io/kube-apiserver-client-kubelet"
        || orgs != ["system:nodes"]
        || !cn.starts_with("system:node:")
        || has_sans
        || u != ["client auth", "digital signature"]
    {
        return None;
    }
    Some(if requester.name == cn {
        "certificatesigningrequests/selfnodeclient"
    } else {
        "certificatesigningrequests/nodeclient"
    })
}

fn csr_object(node: &str, der: &[u8]) -> serde_json::Value {
    let pem = format!(
        "-----BEGIN CERTIFICATE REQUEST-----\n{}\n-----END CERTIFICATE REQUEST-----\n",
        base64::engine::general_purpose::STANDARD.encode(der)
    );
    serde_json::json!({
        "apiVersion": "certificates.k8s.io/v1",
        "kind": "CertificateSigningRequest",
        "metadata": {"generateName": format!("node-csr-{node}-")},
        "spec": {
            "request": base64::engine::general_purpose::STANDARD.encode(pem),
            "signerName": "kubernetes.io/kube-apiserver-client-kubelet",
            "usages": ["digital signature", "client auth"],
        },
    })
}

#[test]
fn a_kubelet_joins_with_the_bootstrap_token_and_nothing_more() {
    let c = cluster();
    assert_eq!(flag(&c.apiserver, "--enable-bootstrap-token-auth"), Some("true"));
    for folder in ["compute", "secure"] {
        let user = bootstrap_user(&c, folder);
        let may = |req: &Request| allowed(&c.policy, &c.modes, &c.admission, &user, req);
        // It creates its CSR and fetches it back (get, or list/watch by name).
        for verb in ["create", "get", "list", "watch"] {
            assert!(
                may(&res(verb, "certificates.k8s.io", "certificatesigningrequests")),
                "{folder}: {verb} csr"
            );
        }
        // The approver's SubjectAccessReview for a new node's client CSR.
        let node = nodeboot::node::stage::discover::hostname(
            "example",
            nodeboot::shared::role::Role::Compute,
            "i-0123456789abcdef0",
        );
        let csr = kubelet_client_csr(&node);
        let sub = recognise(
            &csr,
            "kubernetes.io/kube-apiserver-client-kubelet",
            &["digital signature", "client auth"],
            &user,
        )
        .expect("a node client CSR");
        assert_eq!(sub, "certificatesigningrequests/nodeclient");
        // The CSR object the kubelet would send is valid for the API.
        let object = c.rendered.path().join(format!("csr-{folder}.json"));
        std::fs::write(&object, serde_json::to_vec(&csr_object(&node, &csr)).unwrap()).unwrap();
        let run = std::process::Command::new("kubernetes-validate")
            .args(["--strict", "--quiet", "-k", "1.31.0"])
            .arg(&object)
            .output()
            .unwrap();
        assert!(
            run.status.success(),
            "{}{}",
            String::from_utf8_lossy(&run.stdout),
            String::from_utf8_lossy(&run.stderr)
        );
        assert!(
            may(&res(
                "create",
                "certificates.k8s.io",
                "certificatesigningrequests/nodeclient"
            )),
            "{folder}: auto-approval"
        );
        // Nothing else: no CSR approval or deletion, no node, pod, secret.
        for req in [
            res("update", "certificates.k8s.io", "certificatesigningrequests/approval"),
            res("delete", "certificates.k8s.io", "certificatesigningrequests"),
            res(
                "create",
                "certificates.k8s.io",
                "certificatesigningrequests/selfnodeclient",
            ),
            named("get", "", "nodes", &node),
            res("create", "", "nodes"),
            res("list", "", "pods"),
            res("get", "", "secrets"),
            res("list", "", "configmaps"),
            res("create", "", "serviceaccounts/token"),
        ] {
            assert!(!may(&req), "{folder}: the bootstrap identity may {req:?}");
        }
    }
}

#[test]
fn the_node_identity_renews_itself_and_writes_only_its_own_node() {
    let c = cluster();
    assert!(
        c.modes.first().map(String::as_str) == Some("Node") && c.modes.iter().any(|m| m == "RBAC"),
        "{:?}",
        c.modes
    );
    assert!(c.admission.iter().any(|a| a == "NodeRestriction"), "{:?}", c.admission);
    let me = nodeboot::node::stage::discover::hostname(
        "example",
        nodeboot::shared::role::Role::Compute,
        "i-0123456789abcdef0",
    );
    let other = nodeboot::node::stage::discover::hostname(
        "example",
        nodeboot::shared::role::Role::Compute,
        "i-0fedcba9876543210",
    );
    // What the signed CSR makes of the kubelet: CN and O of its request.
    let node = User {
        name: format!("system:node:{me}"),
        groups: vec!["system:nodes".into(), "system:authenticated".into()],
    };
    let may = |req: &Request| allowed(&c.policy, &c.modes, &c.admission, &node, req);
    assert!(may(&named("update", "", "nodes", &me)) && may(&named("patch", "", "nodes/status", &me)));
    assert!(!may(&named("update", "", "nodes", &other)) && !may(&named("patch", "", "nodes/status", &other)));
    // Renewal: its own CSR is recognised as self and auto-approved.
    let csr = kubelet_client_csr(&me);
    let sub = recognise(
        &csr,
        "kubernetes.io/kube-apiserver-client-kubelet",
        &["digital signature", "client auth"],
        &node,
    )
    .unwrap();
    assert_eq!(sub, "certificatesigningrequests/selfnodeclient");
    assert!(may(&res("create", "certificates.k8s.io", sub)));
    // A node asking for another node's certificate is not "self".
    let theirs = kubelet_client_csr(&other);
    let sub = recognise(
        &theirs,
        "kubernetes.io/kube-apiserver-client-kubelet",
        &["digital signature", "client auth"],
        &node,
    )
    .unwrap();
    assert!(
        !may(&res("create", "certificates.k8s.io", sub)),
        "a node may not get another node's certificate approved"
    );
}

#[test]
fn the_recogniser_refuses_what_is_no_node_client_request() {
    let user = User {
        name: "system:bootstrap:abcdef".into(),
        groups: vec![],
    };
    let good = kubelet_client_csr("n");
    let usages = ["digital signature", "client auth"];
    assert!(recognise(&good, "kubernetes.io/kube-apiserver-client-kubelet", &usages, &user).is_some());
    assert!(recognise(&good, "kubernetes.io/kubelet-serving", &usages, &user).is_none());
    assert!(recognise(
        &good,
        "kubernetes.io/kube-apiserver-client-kubelet",
        &["digital signature", "server auth"],
        &user
    )
    .is_none());
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["n.example".to_string()]).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, "system:masters");
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "system:node:n");
    let masters = params.serialize_request(&key).unwrap().der().to_vec();
    assert!(recognise(&masters, "kubernetes.io/kube-apiserver-client-kubelet", &usages, &user).is_none());
}

#[test]
fn an_expired_or_foreign_token_is_refused() {
    let c = cluster();
    let secret_path = c.secrets.path().join("secure/addons/bootstrap-token.yaml");
    let secret: serde_json::Value = serde_json::from_slice(&std::fs::read(&secret_path).unwrap()).unwrap();
    let bearer = kubeconfig(&c.secrets.path().join("compute/bootstrap-kubelet.kubeconfig"))["users"][0]["user"]
        ["token"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(authenticate_token(&bearer, &secret, now()).is_some());
    let expires = nodeboot_time(secret["stringData"]["expiration"].as_str().unwrap()).unwrap();
    assert!(authenticate_token(&bearer, &secret, expires + 1).is_none(), "expired");
    let (id, _) = bearer.split_once('.').unwrap();
    assert!(
        authenticate_token(&format!("{id}.0000000000000000"), &secret, now()).is_none(),
        "wrong secret"
    );
}

#[test]
fn every_health_probe_is_allowed_unauthenticated() {
    let c = cluster();
    // Anonymous requests reach the authorizer only with --anonymous-auth on.
    assert_ne!(
        flag(&c.apiserver, "--anonymous-auth"),
        Some("false"),
        "probes would get 401"
    );
    let anonymous = User {
        name: "system:anonymous".into(),
        groups: vec!["system:unauthenticated".into()],
    };
    let container = &c.apiserver_pod["spec"]["containers"][0];
    let mut probed = 0;
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        let get = &container[probe]["httpGet"];
        if get.is_null() {
            continue;
        }
        assert!(
            get["httpHeaders"].is_null(),
            "{probe}: the kubelet's probe carries no credentials"
        );
        let path = get["path"].as_str().unwrap();
        assert!(
            allowed(&c.policy, &c.modes, &c.admission, &anonymous, &url(path)),
            "{probe} {path}: 403 for the kubelet's probe"
        );
        probed += 1;
    }
    assert_eq!(probed, 3, "liveness, readiness and startup probes");
    // And anonymous gets nothing more than public info.
    for req in [
        url("/api"),
        url("/apis"),
        url("/metrics"),
        res("get", "", "nodes"),
        res("list", "", "secrets"),
    ] {
        assert!(
            !allowed(&c.policy, &c.modes, &c.admission, &anonymous, &req),
            "anonymous may {req:?}"
        );
    }
    // controller-manager and scheduler serve /healthz to anyone
    // (--authorization-always-allow-paths, default /healthz,/readyz,/livez).
    for name in ["kube-controller-manager", "kube-scheduler"] {
        let pod: Value = serde_yaml_ng::from_str(
            &std::fs::read_to_string(c.rendered.path().join(format!("manifests/etcd/{name}.yaml"))).unwrap(),
        )
        .unwrap();
        let args = strings(&pod["spec"]["containers"][0]["command"]);
        let always = flag(&args, "--authorization-always-allow-paths").unwrap_or("/healthz,/readyz,/livez");
        let path = pod["spec"]["containers"][0]["livenessProbe"]["httpGet"]["path"]
            .as_str()
            .unwrap();
        assert!(
            always.split(',').any(|p| p == path),
            "{name}: {path} needs authorization"
        );
    }
}

#[test]
fn the_bootstrap_kubeconfigs_point_each_role_at_its_api_and_trust_the_cluster_ca() {
    let c = cluster();
    let ca = std::fs::read(c.secrets.path().join("common/ca.crt")).unwrap();
    for (folder, server) in [
        ("compute", "https://kubeapi.example.internal"),
        ("secure", "https://127.0.0.1:6443"),
    ] {
        let kc = kubeconfig(&c.secrets.path().join(format!("{folder}/bootstrap-kubelet.kubeconfig")));
        assert_eq!(kc["clusters"][0]["cluster"]["server"], server);
        let embedded = base64::engine::general_purpose::STANDARD
            .decode(
                kc["clusters"][0]["cluster"]["certificate-authority-data"]
                    .as_str()
                    .unwrap(),
            )
            .unwrap();
        assert_eq!(embedded, ca, "{folder}");
    }
}

// ---------------------------------------------------------- the control plane's role label and taint

/// The labels a kubelet may set on its own Node: `IsKubeletLabel`
/// (staging/src/k8s.io/kubelet/pkg/apis/well_known_labels.go, 1.31): a
/// fixed set, and the `kubelet.kubernetes.io` and `node.kubernetes.io`
/// namespaces (and their subdomains).
fn is_kubelet_label(key: &str) -> bool {
    const FIXED: [&str; 11] = [
        "kubernetes.io/hostname",
        "topology.kubernetes.io/zone",
        "topology.kubernetes.io/region",
        "failure-domain.beta.kubernetes.io/zone",
        "failure-domain.beta.kubernetes.io/region",
        "beta.kubernetes.io/instance-type",
        "node.kubernetes.io/instance-type",
        "kubernetes.io/os",
        "kubernetes.io/arch",
        "beta.kubernetes.io/os",
        "beta.kubernetes.io/arch",
    ];
    let namespace = key.rsplit_once('/').map_or("", |(ns, _)| ns);
    FIXED.contains(&key)
        || ["kubelet.kubernetes.io", "node.kubernetes.io"]
            .iter()
            .any(|allowed| namespace == *allowed || namespace.ends_with(&format!(".{allowed}")))
}

/// NodeRestriction's `getForbiddenLabels`
/// (plugin/pkg/admission/noderestriction/admission.go, 1.31): the
/// `node-restriction.kubernetes.io` namespace, and every other
/// `kubernetes.io` or `k8s.io` label that is not a kubelet label.
fn forbidden_to_a_kubelet(key: &str) -> bool {
    let namespace = key.rsplit_once('/').map_or("", |(ns, _)| ns);
    let within = |domain: &str| namespace == domain || namespace.ends_with(&format!(".{domain}"));
    within("node-restriction.kubernetes.io")
        || ((within("kubernetes.io") || within("k8s.io")) && !is_kubelet_label(key))
}

#[derive(Debug, Clone, Default)]
struct NodeObject {
    labels: std::collections::BTreeMap<String, String>,
    /// (key, effect)
    taints: Vec<(String, String)>,
}

/// NodeRestriction's `admitNode` for a node identity writing its own Node:
/// on create no forbidden label; on update no forbidden label changed and
/// the taints unchanged ("is not allowed to modify taints").
fn node_restriction_admits(old: Option<&NodeObject>, new: &NodeObject) -> Result<(), String> {
    let changed: Vec<&String> = new
        .labels
        .iter()
        .filter(|(k, v)| old.and_then(|o| o.labels.get(*k)) != Some(*v))
        .map(|(k, _)| k)
        .chain(
            old.into_iter()
                .flat_map(|o| o.labels.keys())
                .filter(|k| !new.labels.contains_key(*k)),
        )
        .collect();
    let forbidden: Vec<&&String> = changed.iter().filter(|k| forbidden_to_a_kubelet(k)).collect();
    if !forbidden.is_empty() {
        return Err(format!("is not allowed to set the following labels: {forbidden:?}"));
    }
    if old.is_some_and(|o| o.taints != new.taints) {
        return Err("is not allowed to modify taints".into());
    }
    Ok(())
}

#[test]
fn node_restriction_keeps_kubelets_from_the_role_label_and_their_taints() {
    assert!(forbidden_to_a_kubelet("node-role.kubernetes.io/control-plane"));
    assert!(forbidden_to_a_kubelet("node-restriction.kubernetes.io/x"));
    assert!(forbidden_to_a_kubelet("example.k8s.io/x"));
    assert!(!forbidden_to_a_kubelet(
        "node.kubernetes.io/exclude-from-external-load-balancers"
    ));
    assert!(!forbidden_to_a_kubelet("x.kubelet.kubernetes.io/y"));
    assert!(!forbidden_to_a_kubelet("kubernetes.io/hostname"));
    assert!(!forbidden_to_a_kubelet("nodeboot.io/anything"));
    let tainted = NodeObject {
        taints: vec![("t".into(), "NoSchedule".into())],
        ..Default::default()
    };
    assert!(
        node_restriction_admits(None, &tainted).is_ok(),
        "taints at registration"
    );
    assert!(node_restriction_admits(Some(&tainted), &NodeObject::default()).is_err());
    let mut labelled = tainted.clone();
    labelled
        .labels
        .insert("node-role.kubernetes.io/control-plane".into(), "".into());
    assert!(node_restriction_admits(None, &labelled).is_err());
    assert!(
        node_restriction_admits(Some(&labelled), &tainted).is_err(),
        "nor remove it"
    );
}

/// A control-plane kubelet registers its Node tainted as the rendered
/// configuration says, which NodeRestriction admits; it may neither give
/// itself kubeadm's role label (so the kubelet is not asked to: a forbidden
/// `--node-labels` also stops the kubelet at start) nor drop the taint
/// later. The add-on applier, in system:masters, may set both on the Node.
#[test]
fn a_control_plane_node_is_tainted_by_its_kubelet_and_labelled_by_the_applier() {
    let c = cluster();
    let me =
        nodeboot::node::stage::discover::hostname("example", nodeboot::shared::role::Role::Etcd, "i-0123456789abcdef0");
    let config: Value = serde_yaml_ng::from_str(&nodeboot::operator::render::kubelet_config(
        nodeboot::shared::role::Role::Etcd,
    ))
    .unwrap();
    // What the kubelet registers (pkg/kubelet/kubelet_node_status.go, initialNode).
    let mut registered = NodeObject::default();
    for (key, value) in [
        ("kubernetes.io/hostname", me.as_str()),
        ("kubernetes.io/os", "linux"),
        ("kubernetes.io/arch", "amd64"),
        ("beta.kubernetes.io/os", "linux"),
        ("beta.kubernetes.io/arch", "amd64"),
    ] {
        registered.labels.insert(key.into(), value.into());
    }
    for taint in config["registerWithTaints"].as_sequence().into_iter().flatten() {
        registered.taints.push((
            taint["key"].as_str().unwrap().into(),
            taint["effect"].as_str().unwrap().into(),
        ));
    }
    let role = "node-role.kubernetes.io/control-plane";
    assert_eq!(registered.taints, vec![(role.to_string(), "NoSchedule".to_string())]);
    node_restriction_admits(None, &registered).unwrap();
    let mut self_labelled = registered.clone();
    self_labelled.labels.insert(role.into(), "".into());
    assert!(node_restriction_admits(None, &self_labelled).is_err());
    assert!(node_restriction_admits(Some(&registered), &self_labelled).is_err());
    assert!(
        node_restriction_admits(
            Some(&registered),
            &NodeObject {
                taints: vec![],
                ..registered.clone()
            }
        )
        .is_err(),
        "a kubelet cannot untaint itself"
    );
    let units = nodeboot::operator::render::units_for(
        &nodeboot::operator::env::load(&example_env()).unwrap().env,
        nodeboot::shared::role::Role::Etcd,
    );
    let kubelet = units.iter().find(|u| u.name == "kubelet.service").unwrap();
    assert!(!kubelet.contents.contains("--node-labels"), "{}", kubelet.contents);

    // The applier's identity is the subject of its client certificate.
    let kc = kubeconfig(&c.secrets.path().join("secure/addons-applier.kubeconfig"));
    let pem = base64::engine::general_purpose::STANDARD
        .decode(kc["users"][0]["user"]["client-certificate-data"].as_str().unwrap())
        .unwrap();
    let (_, pem) = x509_parser::pem::parse_x509_pem(&pem).unwrap();
    let cert = pem.parse_x509().unwrap();
    let applier = User {
        name: cert
            .subject()
            .iter_common_name()
            .next()
            .unwrap()
            .as_str()
            .unwrap()
            .into(),
        groups: cert
            .subject()
            .iter_organization()
            .map(|o| o.as_str().unwrap().to_string())
            .chain(["system:authenticated".to_string()])
            .collect(),
    };
    for verb in ["get", "patch", "update"] {
        assert!(
            allowed(
                &c.policy,
                &c.modes,
                &c.admission,
                &applier,
                &named(verb, "", "nodes", &me)
            ),
            "{applier:?} may not {verb} {me}"
        );
    }
}
