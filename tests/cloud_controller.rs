//! The AWS cloud-controller-manager as rendered, against what its own
//! documentation (kubernetes/cloud-provider-aws docs/prerequisites.md and
//! getting_started.md) requires: `--cloud-provider=external` on every
//! kubelet and on kube-controller-manager, a providerID
//! `aws:///<zone>/<instance id>` on every node (nodeboot's node names are
//! neither of the two the controller can look up by name), the controller's
//! release of the cluster's minor, tolerations that let it start on nodes it
//! has not initialised yet, and an IAM policy that is its documented one less
//! only what belongs to controllers the rendered flags turn off.

mod common;

use std::collections::BTreeSet;

use common::*;
use nodeboot::shared::role::Role;

fn example() -> nodeboot::operator::env::Environment {
    nodeboot::operator::env::load(&example_env()).unwrap().env
}

/// The add-on's objects, from the render.
fn cloud_controller_objects(env: &nodeboot::operator::env::Environment) -> Vec<serde_yaml_ng::Value> {
    let addons = nodeboot::operator::render::addons::addons_for(env);
    let (_, text) = addons
        .iter()
        .find(|(name, _)| name.contains("aws-cloud-controller-manager"))
        .expect("the cloud controller is an add-on of every environment");
    serde_yaml_ng::Deserializer::from_str(text)
        .map(|doc| serde::Deserialize::deserialize(doc).unwrap())
        .collect()
}

fn daemon_set(objects: &[serde_yaml_ng::Value]) -> &serde_yaml_ng::Value {
    objects.iter().find(|o| o["kind"] == "DaemonSet").expect("a DaemonSet")
}

fn strings(v: &serde_yaml_ng::Value) -> Vec<String> {
    v.as_sequence()
        .unwrap_or_else(|| panic!("a list: {v:?}"))
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

fn args(objects: &[serde_yaml_ng::Value]) -> Vec<String> {
    strings(&daemon_set(objects)["spec"]["template"]["spec"]["containers"][0]["args"])
}

#[test]
fn every_kubelet_and_the_controller_manager_leave_the_cloud_to_the_external_controller() {
    let env = example();
    for role in [Role::Etcd, Role::Compute] {
        let units = nodeboot::operator::render::units_for(&env, role);
        let kubelet = units.iter().find(|u| u.name == "kubelet.service").unwrap();
        let exec = kubelet.contents.lines().find(|l| l.starts_with("ExecStart=")).unwrap();
        for flag in [
            "--cloud-provider=external".to_string(),
            format!("--config-dir={}", nodeboot::shared::node_config::KUBELET_DROPIN_DIR),
        ] {
            assert!(
                exec.split_whitespace().any(|w| w == flag),
                "{role}: {flag} not in {exec}"
            );
        }
    }
    let manifests = nodeboot::operator::render::manifests::manifests_for(&env, Role::Etcd);
    let (_, kcm) = manifests
        .iter()
        .find(|(n, _)| n == "kube-controller-manager.yaml")
        .unwrap();
    assert!(
        kcm.lines().any(|l| l.trim() == "- --cloud-provider=external"),
        "kube-controller-manager: {kcm}"
    );
}

#[test]
fn the_provider_id_names_the_instance_as_the_controller_parses_it() {
    // What stage discover writes into the kubelet's drop-in directory.
    let text = nodeboot::shared::node_config::kubelet_provider_id("eu-west-1b", "i-0123456789abcdef0");
    let doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).unwrap();
    assert_eq!(doc["apiVersion"], "kubelet.config.k8s.io/v1beta1");
    assert_eq!(doc["kind"], "KubeletConfiguration");
    let id = doc["providerID"].as_str().unwrap();
    // cloud-provider-aws: KubernetesInstanceID.MapToAWSInstanceID accepts
    // aws:///<zone>/<instance id> (and the bare id); the zone is what the
    // node's topology labels come from.
    let rest = id.strip_prefix("aws:///").expect("aws:/// scheme");
    let (zone, instance) = rest.split_once('/').unwrap();
    assert_eq!((zone, instance), ("eu-west-1b", "i-0123456789abcdef0"));
    assert!(nodeboot::shared::node_config::KUBELET_PROVIDER_ID_DROPIN
        .starts_with(nodeboot::shared::node_config::KUBELET_DROPIN_DIR));
    assert!(
        nodeboot::shared::node_config::KUBELET_PROVIDER_ID_DROPIN.ends_with(".conf"),
        "the kubelet reads only *.conf drop-ins"
    );
}

#[test]
fn the_controller_is_its_minors_release_and_starts_on_nodes_it_has_not_initialised() {
    let env = example();
    let objects = cloud_controller_objects(&env);
    let ds = daemon_set(&objects);
    let pod = &ds["spec"]["template"]["spec"];
    let image = pod["containers"][0]["image"].as_str().unwrap();
    let minor = env.kubernetes_version.rsplit_once('.').unwrap().0;
    assert!(
        image.starts_with(&format!(
            "registry.k8s.io/provider-aws/cloud-controller-manager:v{minor}."
        )) && image.contains("@sha256:"),
        "{image}: not the {minor} release pinned by digest"
    );
    assert_eq!(pod["hostNetwork"], true, "no pod network before it runs");
    assert_eq!(
        pod["nodeSelector"]["node-role.kubernetes.io/control-plane"], "",
        "only where the instance profile carries its policy"
    );
    let tolerated: BTreeSet<String> = pod["tolerations"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|t| t["key"].as_str().unwrap().to_string())
        .collect();
    for key in [
        "node.cloudprovider.kubernetes.io/uninitialized",
        "node-role.kubernetes.io/control-plane",
        "node.kubernetes.io/not-ready",
    ] {
        assert!(tolerated.contains(key), "{key} not tolerated: {tolerated:?}");
    }
    let args = args(&objects);
    for flag in ["--cloud-provider=aws", "--configure-cloud-routes=false"] {
        assert!(args.iter().any(|a| a == flag), "{flag} not in {args:?}");
    }
    assert!(
        args.contains(&format!("--cluster-name={}", env.name)),
        "the cluster the instances' kubernetes.io/cluster/<environment> tag names: {args:?}"
    );
    // Its RBAC: it writes Nodes and Services' status, and leads by a Lease.
    let role = objects.iter().find(|o| o["kind"] == "ClusterRole").unwrap();
    let resources: BTreeSet<String> = role["rules"]
        .as_sequence()
        .unwrap()
        .iter()
        .flat_map(|r| strings(&r["resources"]))
        .collect();
    for resource in ["nodes", "nodes/status", "services/status", "leases", "events"] {
        assert!(resources.contains(resource), "{resource}: {resources:?}");
    }
}

/// The cloud controller's actions in terraform/modules/iam/cloud_controller.tf.
fn granted() -> BTreeSet<String> {
    let text = std::fs::read_to_string(repo().join("terraform/modules/iam/cloud_controller.tf")).unwrap();
    let body: hcl::Body = hcl::from_str(&text).expect("the module file parses");
    let attr = body
        .blocks()
        .filter(|b| b.identifier() == "locals")
        .flat_map(|b| b.body().attributes())
        .find(|a| a.key() == "cloud_controller_actions")
        .expect("local.cloud_controller_actions")
        .clone();
    let value: hcl::Value =
        hcl::eval::Evaluate::evaluate(attr.expr(), &hcl::eval::Context::new()).expect("a literal map");
    value
        .as_object()
        .unwrap()
        .values()
        .flat_map(|list| list.as_array().unwrap().iter().map(|a| a.as_str().unwrap().to_string()))
        .collect()
}

fn documented() -> BTreeSet<String> {
    std::fs::read_to_string(repo().join("tests/data/cloud-provider-aws/control-plane-policy.txt"))
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(str::to_string)
        .collect()
}

/// What nodeboot leaves out of the documented policy, and why: the flag of
/// the rendered command line that turns the controller needing it off, or
/// (None) the reason no controller of this release calls it.
const LEFT_OUT: &[(&str, Option<&str>, &str)] = &[
    (
        "ec2:CreateRoute",
        Some("--configure-cloud-routes=false"),
        "route controller",
    ),
    (
        "ec2:DeleteRoute",
        Some("--configure-cloud-routes=false"),
        "route controller",
    ),
    (
        "ec2:ModifyInstanceAttribute",
        Some("--configure-cloud-routes=false"),
        "route controller: source/destination check off for routed pod ranges",
    ),
    (
        "ec2:AttachVolume",
        None,
        "volumes are the EBS CSI driver's, not a controller of the CCM",
    ),
    ("ec2:CreateVolume", None, "volumes are the EBS CSI driver's"),
    ("ec2:DeleteVolume", None, "volumes are the EBS CSI driver's"),
    ("ec2:DescribeVolumes", None, "volumes are the EBS CSI driver's"),
    ("ec2:DetachVolume", None, "volumes are the EBS CSI driver's"),
    ("ec2:ModifyVolume", None, "volumes are the EBS CSI driver's"),
    (
        "kms:DescribeKey",
        None,
        "only for encrypted volumes it creates, which it does not",
    ),
];

#[test]
fn the_controllers_policy_is_its_documented_one_less_what_the_rendered_flags_turn_off() {
    let (granted, documented) = (granted(), documented());
    let undocumented: Vec<_> = granted.difference(&documented).collect();
    assert!(
        undocumented.is_empty(),
        "granted but not in its documentation: {undocumented:?}"
    );
    assert!(granted.iter().all(|a| !a.contains('*')), "no wildcard: {granted:?}");
    let args = args(&cloud_controller_objects(&example()));
    let mut explained = BTreeSet::new();
    for (action, flag, why) in LEFT_OUT {
        assert!(
            documented.contains(*action),
            "{action}: not documented, so nothing to leave out"
        );
        assert!(!granted.contains(*action), "{action} is left out ({why}) but granted");
        if let Some(flag) = flag {
            assert!(
                args.iter().any(|a| a == flag),
                "{action} is left out because {flag} turns off the {why}, but the render lacks it: {args:?}"
            );
        }
        explained.insert(action.to_string());
    }
    let missing: Vec<_> = documented
        .difference(&granted)
        .filter(|a| !explained.contains(*a))
        .collect();
    assert!(
        missing.is_empty(),
        "documented, neither granted nor explained: {missing:?}"
    );
}

#[test]
fn validate_refuses_a_kubernetes_minor_without_a_pinned_controller() {
    let dir = tempfile::tempdir().unwrap();
    let env = env_file(
        dir.path(),
        "example.tfvars",
        &example_with(&[("kubernetes_version", "\"1.29.9\"")]),
    );
    let out = nodeboot(&["validate", "--env", env.to_str().unwrap()]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("kubernetes_version") && err.contains("cloud-controller-manager"),
        "{err}"
    );
}
