//! The rendered static-pod manifests: valid for the environment's
//! Kubernetes version (kubernetes-validate's strict schemas), pointing at
//! the etcd members' ENI addresses, and referring only to secrets that
//! `nodeboot pki` creates where `stage secrets` puts them.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use common::*;
use nodeboot::shared::role::Role;

fn kubernetes_validate(version: &str, files: &[std::path::PathBuf]) -> std::process::Output {
    Command::new("kubernetes-validate")
        .args(["--strict", "--quiet", "-k", version])
        .args(files)
        .output()
        .expect("kubernetes-validate is installed (pip, tests/requirements.txt)")
}

fn render(env: &Path, out: &Path) {
    let run = nodeboot(&["render", "--env", env.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert!(run.status.success(), "{}", stderr(&run));
}

fn files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    out.sort();
    out
}

#[test]
fn manifests_validate_against_the_kubernetes_schema_of_the_environment() {
    let out = tempfile::tempdir().unwrap();
    render(&example_env(), out.path());
    let env = nodeboot::operator::env::load(&example_env()).unwrap().env;
    let minor = env.kubernetes_version.rsplit_once('.').unwrap().0.to_string() + ".0";
    let mut all = files(&out.path().join("manifests/etcd"));
    all.extend(files(&out.path().join("manifests/compute")));
    assert_eq!(
        all.len(),
        5,
        "four static pods on the control plane, kube-proxy on workers: {all:?}"
    );
    let addons = files(&out.path().join("manifests/addons"));
    assert!(!addons.is_empty());
    all.extend(addons);
    // The bootstrap-token Secret `nodeboot pki` makes, applied with the add-ons.
    let secrets = tempfile::tempdir().unwrap();
    let pki = nodeboot(&[
        "pki",
        "--env",
        example_env().to_str().unwrap(),
        "--dir",
        secrets.path().to_str().unwrap(),
    ]);
    assert!(pki.status.success(), "{}", stderr(&pki));
    all.extend(files(&secrets.path().join("secure/addons")));
    let run = kubernetes_validate(&minor, &all);
    assert!(
        run.status.success(),
        "{}{}",
        String::from_utf8_lossy(&run.stdout),
        stderr(&run)
    );

    // The checker must be able to fail: a misspelt field is refused.
    let broken = out.path().join("broken.yaml");
    let text = std::fs::read_to_string(&all[0])
        .unwrap()
        .replace("hostNetwork: true", "hostNetwrk: true");
    std::fs::write(&broken, text).unwrap();
    assert!(!kubernetes_validate(&minor, &[broken]).status.success());
}

#[test]
fn kube_apiserver_lists_exactly_the_member_eni_addresses() {
    let dir = tempfile::tempdir().unwrap();
    let env_file = env_file(dir.path(), "seven.tfvars", &seven_members_in_five_zones());
    let out = dir.path().join("out");
    render(&env_file, &out);
    let apiserver = std::fs::read_to_string(out.join("manifests/etcd/kube-apiserver.yaml")).unwrap();
    let servers = apiserver
        .lines()
        .find_map(|l| l.trim().strip_prefix("- --etcd-servers="))
        .unwrap();
    let env = nodeboot::operator::env::load(&env_file).unwrap().env;
    let expected: Vec<String> = env
        .etcd_members()
        .iter()
        .map(|m| format!("https://{}:2379", m.ip))
        .collect();
    assert_eq!(servers.split(',').collect::<Vec<_>>(), expected);
    assert_eq!(expected.len(), 7);
}

/// Every `/run/nodeboot/secrets/X` a role's manifest mounts must be a file
/// `nodeboot pki` writes to `common/X` or to the role's folder.
#[test]
fn manifests_refer_only_to_secrets_the_pki_creates_for_that_role() {
    let env = nodeboot::operator::env::load(&example_env()).unwrap().env;
    let pki = nodeboot::operator::pki::plan(&env);
    let mut produced: BTreeSet<String> = BTreeSet::new();
    for c in &pki.certs {
        produced.insert(c.cert.clone());
        produced.insert(c.key.clone());
    }
    for k in &pki.key_pairs {
        produced.insert(k.key.clone());
        produced.insert(k.public.clone());
    }
    produced.extend(pki.kubeconfigs.iter().map(|k| k.path.clone()));
    produced.extend(pki.bootstrap_token.kubeconfigs.iter().map(|(path, _)| path.clone()));
    produced.insert(pki.encryption_key.path.clone());
    for (role, folder) in [(Role::Etcd, "secure"), (Role::Compute, "compute")] {
        for (name, text) in nodeboot::operator::render::manifests::manifests_for(&env, role) {
            for reference in text
                .split(|c: char| c.is_whitespace() || c == '=')
                .filter_map(|w| w.strip_prefix("/run/nodeboot/secrets/"))
            {
                let found = [format!("common/{reference}"), format!("{folder}/{reference}")]
                    .iter()
                    .any(|p| produced.contains(p));
                assert!(
                    found,
                    "{name} ({role}) refers to {reference}, which pki does not create for {folder}/ or common/"
                );
            }
        }
    }
}

fn schema(name: &str) -> jsonschema::Validator {
    let path = format!(
        "{}/tests/data/kubernetes/schemas/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let schema: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    jsonschema::validator_for(&schema).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn check(validator: &jsonschema::Validator, what: &str, value: &serde_json::Value) -> Vec<String> {
    validator
        .iter_errors(value)
        .map(|e| format!("{what}: {e} at {}", e.instance_path))
        .collect()
}

fn yaml(text: &str) -> serde_json::Value {
    serde_yaml_ng::from_str(text).unwrap()
}

/// The component configuration files have no OpenAPI schema (they are not
/// API objects): they are checked against strict schemas of their upstream
/// Go types (tests/data/kubernetes/schemas/, field lists from 1.31).
#[test]
fn kubelet_encryption_audit_and_kubeconfig_files_match_their_types() {
    let env = nodeboot::operator::env::load(&example_env()).unwrap().env;
    let secrets = tempfile::tempdir().unwrap();
    let pki = nodeboot(&[
        "pki",
        "--env",
        example_env().to_str().unwrap(),
        "--dir",
        secrets.path().to_str().unwrap(),
    ]);
    assert!(pki.status.success(), "{}", stderr(&pki));
    let mut problems = Vec::new();
    let kubelet = schema("kubeletconfiguration-v1beta1");
    for role in [Role::Etcd, Role::Compute] {
        problems.extend(check(
            &kubelet,
            &format!("kubelet config ({role})"),
            &yaml(&nodeboot::operator::render::files::kubelet_config(role)),
        ));
    }
    problems.extend(check(
        &schema("policy-audit-v1"),
        "audit policy",
        &yaml(&nodeboot::operator::render::files::audit_policy()),
    ));
    let encryption: serde_json::Value =
        serde_json::from_slice(&std::fs::read(secrets.path().join("secure/encryption-config.yaml")).unwrap()).unwrap();
    problems.extend(check(
        &schema("encryptionconfiguration-v1"),
        "encryption config",
        &encryption,
    ));
    let plan = nodeboot::operator::pki::plan(&env);
    let mut kubeconfigs: Vec<String> = plan.kubeconfigs.iter().map(|k| k.path.clone()).collect();
    kubeconfigs.extend(plan.bootstrap_token.kubeconfigs.iter().map(|(p, _)| p.clone()));
    let config = schema("config-kubeconfig-v1");
    for path in &kubeconfigs {
        let value: serde_json::Value =
            serde_json::from_slice(&std::fs::read(secrets.path().join(path)).unwrap()).unwrap();
        problems.extend(check(&config, path, &value));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert_eq!(
        kubeconfigs.len(),
        8,
        "admin, controller-manager, scheduler, addons-applier, kube-proxy (2), bootstrap (2)"
    );

    // The schemas refuse a misspelt or misplaced field.
    let typo = nodeboot::operator::render::files::kubelet_config(Role::Compute)
        .replace("serverTLSBootstrap", "serverTlsBootstrap");
    assert!(!check(&kubelet, "typo", &yaml(&typo)).is_empty());
    let taint = nodeboot::operator::render::files::kubelet_config(Role::Etcd).replace("effect: ", "efect: ");
    assert!(!check(&kubelet, "taint", &yaml(&taint)).is_empty());
    let mut bad = encryption.clone();
    bad["resources"][0]["providers"][0]["aescbc"]["key"] = serde_json::json!([]);
    assert!(!check(&schema("encryptionconfiguration-v1"), "typo", &bad).is_empty());
    let policy = nodeboot::operator::render::files::audit_policy().replace("level: Request\n", "level: Everything\n");
    assert!(!check(&schema("policy-audit-v1"), "typo", &yaml(&policy)).is_empty());
}

// ------------------------------------------------ kubeadm's taint, probes and requests (issue 22 items 4 and 7)

/// kubeadm's control-plane taint (`kubeadm init`'s nodeRegistration.taints,
/// and its mark-control-plane phase).
const CONTROL_PLANE_TAINT: (&str, &str) = ("node-role.kubernetes.io/control-plane", "NoSchedule");

/// `Toleration.ToleratesTaint` (staging/src/k8s.io/api/core/v1/toleration.go):
/// an empty effect matches every effect, an empty key (with `Exists`) every
/// key; `Equal` (the default operator) compares the value.
fn tolerates(toleration: &serde_json::Value, key: &str, value: &str, effect: &str) -> bool {
    let field = |name: &str| toleration[name].as_str().unwrap_or("");
    if !field("effect").is_empty() && field("effect") != effect {
        return false;
    }
    if !field("key").is_empty() && field("key") != key {
        return false;
    }
    match field("operator") {
        "" | "Equal" => field("value") == value,
        "Exists" => true,
        _ => false,
    }
}

fn tolerates_control_plane(pod_spec: &serde_json::Value) -> bool {
    let (key, effect) = CONTROL_PLANE_TAINT;
    pod_spec["tolerations"]
        .as_array()
        .is_some_and(|ts| ts.iter().any(|t| tolerates(t, key, "", effect)))
}

#[test]
fn the_toleration_rule_matches_kubernetes() {
    let (key, effect) = CONTROL_PLANE_TAINT;
    let table = [
        (serde_json::json!({"operator": "Exists"}), true),
        (serde_json::json!({"operator": "Exists", "effect": "NoSchedule"}), true),
        (serde_json::json!({"operator": "Exists", "effect": "NoExecute"}), false),
        (serde_json::json!({"key": key, "effect": "NoSchedule"}), true),
        (
            serde_json::json!({"key": key, "operator": "Equal", "value": "x"}),
            false,
        ),
        (
            serde_json::json!({"key": "CriticalAddonsOnly", "operator": "Exists"}),
            false,
        ),
        (
            serde_json::json!({"key": "node-role.kubernetes.io/master", "operator": "Exists"}),
            false,
        ),
    ];
    for (toleration, want) in table {
        assert_eq!(tolerates(&toleration, key, "", effect), want, "{toleration}");
    }
}

/// The control plane's kubelets register tainted, as kubeadm's do; workers do not.
#[test]
fn control_plane_kubelets_register_with_kubeadms_taint() {
    let (key, effect) = CONTROL_PLANE_TAINT;
    let etcd = yaml(&nodeboot::operator::render::files::kubelet_config(Role::Etcd));
    assert_eq!(
        etcd["registerWithTaints"],
        serde_json::json!([{"key": key, "effect": effect}]),
        "{etcd:#}"
    );
    let compute = yaml(&nodeboot::operator::render::files::kubelet_config(Role::Compute));
    assert!(compute["registerWithTaints"].is_null(), "{compute:#}");
}

/// Every pod that must run on every node, or on the control plane, tolerates
/// the control-plane taint; CoreDNS exactly as kubeadm's does.
#[test]
fn add_ons_that_must_run_on_the_control_plane_tolerate_its_taint() {
    let out = tempfile::tempdir().unwrap();
    render(&example_env(), out.path());
    let mut specs = std::collections::BTreeMap::new();
    for path in files(&out.path().join("manifests/addons")) {
        let text = std::fs::read_to_string(&path).unwrap();
        for doc in serde_yaml_ng::Deserializer::from_str(&text) {
            let doc: serde_json::Value = serde::Deserialize::deserialize(doc).unwrap();
            if let Some(spec) = doc.pointer("/spec/template/spec") {
                let name = format!(
                    "{}/{}",
                    doc["kind"].as_str().unwrap(),
                    doc["metadata"]["name"].as_str().unwrap()
                );
                specs.insert(name, spec.clone());
            }
        }
    }
    for role in ["etcd", "compute"] {
        let proxy =
            yaml(&std::fs::read_to_string(out.path().join(format!("manifests/{role}/kube-proxy.yaml"))).unwrap());
        specs.insert(format!("static pod kube-proxy ({role})"), proxy["spec"].clone());
    }
    // (pod, why it must run on the control plane)
    let must = [
        ("DaemonSet/kube-flannel-ds", "the pod network on every node"),
        ("Deployment/coredns", "kubeadm's CoreDNS tolerates the control plane"),
        (
            "Deployment/kubelet-csr-approver",
            "serving certificates are approved before any worker exists",
        ),
        // The kubelet admits a static pod whatever its node's NoSchedule
        // taints (it checks only NoExecute, and not for static pods); the
        // toleration is kubeadm's kube-proxy's (`operator: Exists`) and
        // keeps the mirror pod through NoExecute taints too.
        ("static pod kube-proxy (etcd)", "service routing on every node"),
        ("static pod kube-proxy (compute)", "service routing on every node"),
    ];
    for (name, why) in must {
        let spec = specs
            .get(name)
            .unwrap_or_else(|| panic!("{name} not rendered: {:?}", specs.keys()));
        assert!(
            tolerates_control_plane(spec),
            "{name} ({why}) does not tolerate the taint: {spec:#}"
        );
    }
    for name in ["static pod kube-proxy (etcd)", "static pod kube-proxy (compute)"] {
        assert_eq!(
            specs[name]["tolerations"],
            serde_json::json!([{"operator": "Exists"}]),
            "{name}"
        );
    }
    assert_eq!(
        specs["Deployment/coredns"]["tolerations"],
        serde_json::json!([
            {"key": "CriticalAddonsOnly", "operator": "Exists"},
            {"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"},
        ]),
        "kubeadm 1.31's CoreDNS Deployment"
    );
}

/// What kubeadm 1.31 writes into its static pods
/// (cmd/kubeadm/app/phases/controlplane/manifests.go, app/util/staticpod:
/// LivenessProbe(host, path, port, scheme) = initialDelay 10, timeout 15,
/// failureThreshold 8, period 10; ReadinessProbe = timeout 15, failure 3,
/// period 1; StartupProbe = initialDelay 10, timeout 15, period 10,
/// failureThreshold ceil(4m / 10s) = 24), the requests of
/// app/phases/controlplane and etcd, and priorityClassName.
/// kubeadm probes the API server on its advertise address; nodeboot on
/// 127.0.0.1 (the same process, reached without leaving the node).
#[test]
fn static_pods_have_kubeadms_probes_requests_and_priority() {
    fn probe(path: &str, port: u16, initial_delay: Option<u32>, period: u32, failure: u32) -> serde_json::Value {
        let mut p = serde_json::json!({
            "httpGet": {"host": "127.0.0.1", "path": path, "port": port, "scheme": "HTTPS"},
            "timeoutSeconds": 15,
            "periodSeconds": period,
            "failureThreshold": failure,
        });
        if let Some(d) = initial_delay {
            p["initialDelaySeconds"] = d.into();
        }
        p
    }
    let liveness = |path, port| probe(path, port, Some(10), 10, 8);
    let readiness = |path, port| probe(path, port, None, 1, 3);
    let startup = |path, port| probe(path, port, Some(10), 10, 24);
    // (manifest, cpu request, liveness, readiness, startup)
    let kubeadm = [
        (
            "kube-apiserver",
            "250m",
            liveness("/livez", 6443),
            readiness("/readyz", 6443),
            startup("/livez", 6443),
        ),
        (
            "kube-controller-manager",
            "200m",
            liveness("/healthz", 10257),
            serde_json::Value::Null,
            startup("/healthz", 10257),
        ),
        (
            "kube-scheduler",
            "100m",
            liveness("/healthz", 10259),
            serde_json::Value::Null,
            startup("/healthz", 10259),
        ),
    ];
    let env = nodeboot::operator::env::load(&example_env()).unwrap().env;
    let manifests = nodeboot::operator::render::manifests::manifests_for(&env, Role::Etcd);
    let mut problems = Vec::new();
    for (name, cpu, live, ready, start) in &kubeadm {
        let text = &manifests
            .iter()
            .find(|(file, _)| file == &format!("{name}.yaml"))
            .unwrap_or_else(|| panic!("no {name}"))
            .1;
        let pod = yaml(text);
        let container = &pod["spec"]["containers"][0];
        for (field, want) in [
            ("livenessProbe", live),
            ("readinessProbe", ready),
            ("startupProbe", start),
        ] {
            if container[field] != *want {
                problems.push(format!("{name} {field}: {} , kubeadm: {want}", container[field]));
            }
        }
        let want_resources = serde_json::json!({"requests": {"cpu": cpu}});
        if container["resources"] != want_resources {
            problems.push(format!(
                "{name} resources: {}, kubeadm: {want_resources}",
                container["resources"]
            ));
        }
        if pod["spec"]["priorityClassName"] != "system-node-critical" {
            problems.push(format!(
                "{name}: priorityClassName {}",
                pod["spec"]["priorityClassName"]
            ));
        }
    }
    for (_, text) in nodeboot::operator::render::manifests::manifests_for(&env, Role::Compute) {
        let pod = yaml(&text);
        assert_eq!(pod["spec"]["priorityClassName"], "system-node-critical", "{pod:#}");
    }
    // etcd is no static pod here (etcd-member.service runs it with docker),
    // so kubeadm's etcd probes and requests have no place to go.
    assert!(
        manifests.iter().all(|(file, _)| !file.starts_with("etcd")),
        "{:?}",
        manifests.iter().map(|(f, _)| f).collect::<Vec<_>>()
    );
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Flatcar's /usr is read-only: the kubelet's FlexVolume directory is on
/// /opt (Flatcar's documented place), and the controller-manager looks for
/// the same plugins there, mounted read-write as kubeadm mounts its default
/// (`flexvolume-dir`, DirectoryOrCreate).
#[test]
fn the_flexvolume_directory_is_writable_on_flatcar_and_shared_with_the_controller_manager() {
    const DIR: &str = "/opt/libexec/kubernetes/kubelet-plugins/volume/exec";
    for role in [Role::Etcd, Role::Compute] {
        let kubelet = yaml(&nodeboot::operator::render::files::kubelet_config(role));
        assert_eq!(kubelet["volumePluginDir"], DIR, "{role}: {kubelet:#}");
    }
    let env = nodeboot::operator::env::load(&example_env()).unwrap().env;
    let manifests = nodeboot::operator::render::manifests::manifests_for(&env, Role::Etcd);
    let pod = yaml(
        &manifests
            .iter()
            .find(|(f, _)| f == "kube-controller-manager.yaml")
            .unwrap()
            .1,
    );
    let container = &pod["spec"]["containers"][0];
    let command: Vec<&str> = container["command"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    assert!(
        command.contains(&format!("--flex-volume-plugin-dir={DIR}").as_str()),
        "{command:?}"
    );
    let mount = container["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["mountPath"] == DIR)
        .unwrap_or_else(|| panic!("{DIR} not mounted: {container:#}"));
    assert_ne!(mount["readOnly"], true, "FlexVolume drivers talk over sockets there");
    let volume = pod["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == mount["name"])
        .unwrap();
    assert_eq!(
        volume["hostPath"],
        serde_json::json!({"path": DIR, "type": "DirectoryOrCreate"}),
        "{volume}"
    );
}

/// The secrets sync gates a static pod's restart on its health endpoint
/// (`node::readers::health::ENDPOINTS`): every static pod has one, and it
/// is what the pod's own probe asks (the readiness probe, else liveness).
#[test]
fn the_restart_gate_asks_what_each_static_pods_probe_asks() {
    use nodeboot::node::readers::health::{endpoint, Scheme};
    let env = nodeboot::operator::env::load(&example_env()).unwrap().env;
    let mut compared = 0;
    for role in [Role::Etcd, Role::Compute] {
        for (file, text) in nodeboot::operator::render::manifests::manifests_for(&env, role) {
            let name = file.trim_end_matches(".yaml");
            let gate = endpoint(name).unwrap_or_else(|| panic!("{name}: restarts without a health gate"));
            let container = &yaml(&text)["spec"]["containers"][0];
            let probe = [&container["readinessProbe"], &container["livenessProbe"]]
                .into_iter()
                .find(|p| !p.is_null());
            let Some(probe) = probe else { continue };
            let get = &probe["httpGet"];
            let scheme = match gate.scheme {
                Scheme::Https => "HTTPS",
                Scheme::Http => "HTTP",
            };
            assert_eq!(
                (
                    get["host"].as_str(),
                    get["scheme"].as_str(),
                    get["port"].as_u64(),
                    get["path"].as_str()
                ),
                (
                    Some("127.0.0.1"),
                    Some(scheme),
                    Some(u64::from(gate.port)),
                    Some(gate.path)
                ),
                "{name}"
            );
            compared += 1;
        }
    }
    assert_eq!(
        compared, 3,
        "kube-apiserver, -controller-manager, -scheduler (kube-proxy has no probe)"
    );
}

#[test]
fn control_plane_static_pods_run_under_the_runtime_default_seccomp_profile() {
    // kubeadm 1.31 (app/phases/controlplane) sets the pod's
    // securityContext.seccompProfile to RuntimeDefault on every control-plane
    // static pod; kube-proxy is privileged (iptables), which runs unconfined
    // whatever the profile, so it is left as kubeadm leaves its DaemonSet.
    let env = nodeboot::operator::env::load(&example_env()).unwrap().env;
    for (name, text) in nodeboot::operator::render::manifests::manifests_for(&env, Role::Etcd) {
        let pod: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).unwrap();
        let profile = &pod["spec"]["securityContext"]["seccompProfile"]["type"];
        if name == "kube-proxy.yaml" {
            assert_eq!(
                pod["spec"]["containers"][0]["securityContext"]["privileged"], true,
                "{name}"
            );
            continue;
        }
        assert_eq!(
            profile, "RuntimeDefault",
            "{name}: {:?}",
            pod["spec"]["securityContext"]
        );
    }
}
