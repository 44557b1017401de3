//! Every flag each Kubernetes component is given (the static pods' commands,
//! the kubelet unit's ExecStart) is checked against the per-version table of
//! that component's flags in tests/data/kubernetes/flags.tsv, taken from the
//! upstream reference pages: an unknown, removed or deprecated flag fails.

mod common;

use common::*;
use nodeboot::shared::role::Role;

#[derive(Debug)]
struct Flag {
    component: String,
    name: String,
    first: (u32, u32),
    last: Option<(u32, u32)>,
    deprecated: Option<(u32, u32)>,
}

fn minor(v: &str) -> (u32, u32) {
    let mut parts = v
        .split('.')
        .map(|p| p.parse::<u32>().unwrap_or_else(|_| panic!("version {v}")));
    (parts.next().unwrap(), parts.next().unwrap())
}

fn table() -> Vec<Flag> {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/kubernetes/flags.tsv")).unwrap();
    let opt = |s: &str| (s != "-").then(|| minor(s));
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            assert_eq!(f.len(), 5, "flags.tsv: {l:?}");
            Flag {
                component: f[0].into(),
                name: f[1].into(),
                first: minor(f[2]),
                last: opt(f[3]),
                deprecated: opt(f[4]),
            }
        })
        .collect()
}

/// Why `flag` may not be given to `component` at `version`, if it may not.
fn refuse(table: &[Flag], component: &str, flag: &str, version: (u32, u32)) -> Option<String> {
    let Some(row) = table.iter().find(|f| f.component == component && f.name == flag) else {
        return Some(format!(
            "{component} {flag}: unknown flag (not in tests/data/kubernetes/flags.tsv)"
        ));
    };
    if version < row.first {
        return Some(format!(
            "{component} {flag}: added in {:?}, after {version:?}",
            row.first
        ));
    }
    if let Some(last) = row.last.filter(|l| version > *l) {
        return Some(format!("{component} {flag}: removed after {last:?}"));
    }
    if let Some(since) = row.deprecated.filter(|d| version >= *d) {
        return Some(format!("{component} {flag}: deprecated since {since:?}"));
    }
    None
}

/// `(component, flags)` of every process nodeboot starts for a role.
fn invocations(env: &nodeboot::operator::env::Environment, role: Role) -> Vec<(String, Vec<String>)> {
    let mut out = Vec::new();
    for (name, text) in nodeboot::operator::render::manifests::manifests_for(env, role) {
        let pod: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
        for container in pod["spec"]["containers"].as_sequence().unwrap() {
            let command: Vec<String> = container["command"]
                .as_sequence()
                .unwrap()
                .iter()
                .map(|c| c.as_str().unwrap().to_string())
                .collect();
            out.push((command[0].clone(), command[1..].to_vec()));
        }
    }
    if role == Role::Etcd {
        // The add-ons' command lines the table knows (the cloud controller's).
        for (name, text) in nodeboot::operator::render::addons::addons_for(env) {
            for doc in serde_yaml_ng::Deserializer::from_str(&text) {
                let object: serde_yaml_ng::Value = serde::Deserialize::deserialize(doc).unwrap();
                let Some(containers) = object["spec"]["template"]["spec"]["containers"].as_sequence() else {
                    continue;
                };
                for container in containers {
                    if container["name"] == "aws-cloud-controller-manager" {
                        let args = container["args"]
                            .as_sequence()
                            .unwrap_or_else(|| panic!("{name}: args"));
                        out.push((
                            "aws-cloud-controller-manager".into(),
                            args.iter().map(|a| a.as_str().unwrap().to_string()).collect(),
                        ));
                    }
                }
            }
        }
    }
    for unit in nodeboot::operator::render::units_for(env, role) {
        // Every ExecStart with its continuation lines joined.
        let joined = unit.contents.replace("\\\n", " ");
        for exec in joined.lines().filter_map(|l| l.strip_prefix("ExecStart=")) {
            let words: Vec<String> = exec.split_whitespace().map(str::to_string).collect();
            if unit.name == "kubelet.service" {
                out.push(("kubelet".into(), words[1..].to_vec()));
            } else if let Some(at) = words.iter().position(|w| w.starts_with("registry.k8s.io/kubectl:")) {
                // `docker run ... IMAGE FLAGS... apply FLAGS...` (or `label
                // node NAME KEY=...`, inside `sh -c '...'`): kubectl's
                // flags, its subcommand and arguments left out.
                out.push((
                    "kubectl".into(),
                    words[at + 1..]
                        .iter()
                        .map(|w| w.trim_end_matches('\''))
                        .filter(|w| w.starts_with("--"))
                        .map(str::to_string)
                        .collect(),
                ));
            }
        }
    }
    out
}

fn flag_name(arg: &str) -> &str {
    arg.split('=').next().unwrap()
}

#[test]
fn every_rendered_flag_exists_and_is_current_for_the_environments_version() {
    let env = nodeboot::operator::env::load(&example_env()).unwrap().env;
    let version = minor(&env.kubernetes_version);
    let table = table();
    let mut checked = 0;
    let mut components = std::collections::BTreeSet::new();
    for role in Role::ALL {
        for (component, args) in invocations(&env, role) {
            components.insert(component.clone());
            for arg in &args {
                assert!(arg.starts_with("--"), "{component}: {arg:?} is not a --flag");
                if let Some(why) = refuse(&table, &component, flag_name(arg), version) {
                    panic!("{role}: {why}");
                }
                checked += 1;
            }
        }
    }
    let want = [
        "aws-cloud-controller-manager",
        "kube-apiserver",
        "kube-controller-manager",
        "kube-proxy",
        "kube-scheduler",
        "kubectl",
        "kubelet",
    ];
    assert_eq!(components.into_iter().collect::<Vec<_>>(), want);
    assert!(checked > 60, "only {checked} flags checked");
}

#[test]
fn the_check_refuses_unknown_removed_and_deprecated_flags() {
    let table = table();
    let v131 = (1, 31);
    assert_eq!(refuse(&table, "kube-apiserver", "--etcd-servers", v131), None);
    assert!(refuse(&table, "kube-apiserver", "--insecure-port", v131)
        .unwrap()
        .contains("removed after"));
    assert!(
        refuse(&table, "kube-apiserver", "--insecure-port", (1, 23))
            .unwrap()
            .contains("deprecated"),
        "accepted by 1.23, but deprecated"
    );
    assert_eq!(
        refuse(
            &table,
            "kube-controller-manager",
            "--cluster-signing-cert-file",
            (1, 23)
        ),
        None
    );
    assert!(refuse(&table, "kube-apiserver", "--no-such-flag", v131)
        .unwrap()
        .contains("unknown flag"));
    assert!(
        refuse(&table, "kube-scheduler", "--etcd-servers", v131)
            .unwrap()
            .contains("unknown flag"),
        "flags are per component"
    );
    assert!(refuse(&table, "kubelet", "--pod-infra-container-image", v131)
        .unwrap()
        .contains("deprecated"));
    assert!(refuse(&table, "kubelet", "--container-runtime", v131)
        .unwrap()
        .contains("removed"));
    assert!(refuse(&table, "kube-apiserver", "--authentication-config", (1, 28))
        .unwrap()
        .contains("added in"));
}

#[test]
fn a_removed_flag_in_a_rendered_manifest_is_caught() {
    // The same walk as above over a manifest with a flag slipped in.
    let env = nodeboot::operator::env::load(&example_env()).unwrap().env;
    let table = table();
    let (_, mut args) = invocations(&env, Role::Etcd)
        .into_iter()
        .find(|(c, _)| c == "kube-apiserver")
        .unwrap();
    args.push("--insecure-port=0".into());
    let refused: Vec<String> = args
        .iter()
        .filter_map(|a| refuse(&table, "kube-apiserver", flag_name(a), minor(&env.kubernetes_version)))
        .collect();
    assert_eq!(refused.len(), 1, "{refused:?}");
}
