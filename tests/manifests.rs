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
    let mut bad = encryption.clone();
    bad["resources"][0]["providers"][0]["aescbc"]["key"] = serde_json::json!([]);
    assert!(!check(&schema("encryptionconfiguration-v1"), "typo", &bad).is_empty());
    let policy = nodeboot::operator::render::files::audit_policy().replace("level: Request\n", "level: Everything\n");
    assert!(!check(&schema("policy-audit-v1"), "typo", &yaml(&policy)).is_empty());
}
