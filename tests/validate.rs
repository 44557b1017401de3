//! `nodeboot validate`: every bad-input class names the file, the line and
//! the field, and exits with code 2.

mod common;

use common::*;

struct Case {
    field: &'static str,
    value: String,
    /// The field the message must name (not always the one edited).
    names: &'static str,
    says: &'static str,
}

fn run_case(case: &Case) -> (Option<i32>, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let text = example_with(&[(case.field, &case.value)]);
    let path = env_file(dir.path(), "bad.tfvars", &text);
    let out = nodeboot(&["validate", "--env", path.to_str().unwrap()]);
    let expected_prefix = format!("{}:{}: {}:", path.display(), line_of(&text, case.names), case.names);
    (out.status.code(), stderr(&out), expected_prefix)
}

#[test]
fn each_bad_input_class_names_file_line_and_field() {
    let cases = [
        Case {
            field: "etcd_cont",
            value: "3".into(),
            names: "etcd_cont",
            says: "did you mean `etcd_count`?",
        },
        Case {
            field: "compute_subnets",
            value: "[\"10.80.10.128/25\", \"10.80.21.0/24\", \"10.80.22.0/24\"]".into(),
            names: "compute_subnets",
            says: "overlaps 10.80.10.0/24 (secure_subnets index 0)",
        },
        Case {
            field: "elb_subnets",
            value: "[\"10.81.100.0/24\", \"10.80.101.0/24\", \"10.80.102.0/24\"]".into(),
            names: "elb_subnets",
            says: "outside vpc_cidr 10.80.0.0/16",
        },
        Case {
            field: "availability_zones",
            value: "[\"eu-west-1a\"]".into(),
            names: "availability_zones",
            says: "needs at least 2",
        },
        Case {
            field: "etcd_count",
            value: "0".into(),
            names: "etcd_count",
            says: "0 members",
        },
        Case {
            field: "vpc_cidr",
            value: "\"10.80.0.0/33\"".into(),
            names: "vpc_cidr",
            says: "expected an IPv4 CIDR",
        },
        Case {
            field: "etcd_count",
            value: "\"three\"".into(),
            names: "etcd_count",
            says: "found \"three\"",
        },
        Case {
            field: "region",
            value: "\"Ireland\"".into(),
            names: "region",
            says: "expected an AWS region",
        },
    ];
    for case in &cases {
        let (code, err, prefix) = run_case(case);
        assert_eq!(code, Some(2), "{}: exit code; stderr:\n{err}", case.field);
        let line = err
            .lines()
            .find(|l| l.contains(&prefix))
            .unwrap_or_else(|| panic!("no line with {prefix:?} in:\n{err}"));
        assert!(
            line.contains(case.says),
            "{}: {line:?} should say {:?}",
            case.field,
            case.says
        );
    }
}

#[test]
fn even_member_count_and_open_access_lists_are_warnings_not_errors() {
    for (field, value, says) in [
        ("etcd_count", "4", "prefer an odd count"),
        ("kubeapi_access_list", "[\"0.0.0.0/0\"]", "whole internet"),
        ("ssh_access_list", "[\"0.0.0.0/0\", \"10.0.0.0/8\"]", "whole internet"),
        (
            "etcd_quota_bytes",
            "8589934592",
            "above 4.0 GiB a full database cannot be backed up",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let text = example_with(&[(field, value)]);
        let path = env_file(dir.path(), "warn.tfvars", &text);
        let out = nodeboot(&["validate", "--env", path.to_str().unwrap()]);
        let err = stderr(&out);
        assert!(
            out.status.success(),
            "{field}: warnings must not fail validation:\n{err}"
        );
        let prefix = format!("{}:{}: {field}:", path.display(), line_of(&text, field));
        assert!(
            err.lines()
                .any(|l| l.contains("WARN") && l.contains(&prefix) && l.contains(says)),
            "{field}: {err}"
        );
    }
}

#[test]
fn missing_field_and_missing_file_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let text: String = example_with(&[])
        .lines()
        .filter(|l| !l.starts_with("region"))
        .map(|l| format!("{l}\n"))
        .collect();
    let path = env_file(dir.path(), "missing.tfvars", &text);
    let out = nodeboot(&["validate", "--env", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains(&format!("{}: region: missing; expected an AWS region", path.display())),
        "{}",
        stderr(&out)
    );

    let out = nodeboot(&["validate", "--env", "/nonexistent/env.tfvars"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("/nonexistent/env.tfvars"));
}

#[test]
fn render_refuses_an_invalid_environment_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = env_file(dir.path(), "bad.tfvars", &example_with(&[("etcd_count", "0")]));
    let out_dir = dir.path().join("out");
    let out = nodeboot(&[
        "render",
        "--env",
        path.to_str().unwrap(),
        "--out",
        out_dir.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(!out_dir.exists());
}

#[test]
fn env_new_writes_the_defaults_and_never_overwrites() {
    let dir = tempfile::tempdir().unwrap();
    let envs = dir.path().join("environments");
    let out = nodeboot(&["env", "new", "play-test", "--dir", envs.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let path = envs.join("play-test.tfvars");
    let written = std::fs::read_to_string(&path).unwrap();
    assert!(written.contains("environment = \"play-test\""));
    let check = nodeboot(&["validate", "--env", path.to_str().unwrap()]);
    assert!(
        check.status.success(),
        "a new environment validates: {}",
        stderr(&check)
    );

    std::fs::write(&path, "# my edits\n").unwrap();
    let again = nodeboot(&["env", "new", "play-test", "--dir", envs.to_str().unwrap()]);
    assert_eq!(again.status.code(), Some(4));
    assert!(stderr(&again).contains("already exists"));
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "# my edits\n");
}

#[test]
fn example_environment_is_exactly_the_defaults() {
    let example = std::fs::read_to_string(example_env()).unwrap();
    assert_eq!(
        example,
        nodeboot::operator::env::default_text("example"),
        "environments/example.tfvars drifted from the env-new template"
    );
}

/// The members' recorded layout (what `up` writes after an apply) beside `path`.
fn record_layout(path: &std::path::Path, members: &[(u32, &str, &str)]) {
    let members: Vec<String> = members
        .iter()
        .map(|(i, zone, ip)| format!("{{\"index\": {i}, \"zone\": \"{zone}\", \"ip\": \"{ip}\"}}"))
        .collect();
    std::fs::write(
        nodeboot::operator::env::record_path(path),
        format!("{{\"members\": [{}]}}\n", members.join(", ")),
    )
    .unwrap();
}

const EXAMPLE_MEMBERS: [(u32, &str, &str); 3] = [
    (0, "eu-west-1a", "10.80.10.10"),
    (1, "eu-west-1b", "10.80.11.10"),
    (2, "eu-west-1c", "10.80.12.10"),
];

#[test]
fn validate_refuses_a_zone_list_that_moves_a_recorded_member() {
    let dir = tempfile::tempdir().unwrap();
    let text = example_with(&[("availability_zones", "[\"eu-west-1b\", \"eu-west-1a\", \"eu-west-1c\"]")]);
    let path = env_file(dir.path(), "example.tfvars", &text);
    // Without a record nothing exists yet: any layout is fine.
    assert!(nodeboot(&["validate", "--env", path.to_str().unwrap()])
        .status
        .success());

    record_layout(&path, &EXAMPLE_MEMBERS);
    let out = nodeboot(&["validate", "--env", path.to_str().unwrap()]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    let prefix = format!(
        "{}:{}: availability_zones:",
        path.display(),
        line_of(&text, "availability_zones")
    );
    assert!(err.contains(&prefix), "{err}");
    assert!(
        err.contains("etcd member 0 would move from eu-west-1a (10.80.10.10) to eu-west-1b (10.80.10.10)"),
        "{err}"
    );
    assert!(err.contains("etcd member 1 would move"), "{err}");
    assert!(!err.contains("etcd member 2"), "member 2 stays in eu-west-1c: {err}");
    // render loads the same way: nothing is rendered for a moving layout.
    let out = nodeboot(&[
        "render",
        "--env",
        path.to_str().unwrap(),
        "--out",
        dir.path().join("out").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn validate_accepts_a_zone_appended_when_no_member_moves() {
    let dir = tempfile::tempdir().unwrap();
    let text = example_with(&[
        (
            "availability_zones",
            "[\"eu-west-1a\", \"eu-west-1b\", \"eu-west-1c\", \"eu-west-1d\"]",
        ),
        (
            "secure_subnets",
            "[\"10.80.10.0/24\", \"10.80.11.0/24\", \"10.80.12.0/24\", \"10.80.13.0/24\"]",
        ),
        (
            "compute_subnets",
            "[\"10.80.20.0/24\", \"10.80.21.0/24\", \"10.80.22.0/24\", \"10.80.23.0/24\"]",
        ),
        (
            "elb_subnets",
            "[\"10.80.100.0/24\", \"10.80.101.0/24\", \"10.80.102.0/24\", \"10.80.103.0/24\"]",
        ),
        (
            "mgmt_subnets",
            "[\"10.80.110.0/24\", \"10.80.111.0/24\", \"10.80.112.0/24\", \"10.80.113.0/24\"]",
        ),
    ]);
    let path = env_file(dir.path(), "example.tfvars", &text);
    record_layout(&path, &EXAMPLE_MEMBERS);
    let out = nodeboot(&["validate", "--env", path.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));

    // A changed secure subnet moves the member's address: refused on that field.
    let moved = text.replace(
        "\"10.80.11.0/24\", \"10.80.12.0/24\", \"10.80.13.0/24\"",
        "\"10.80.14.0/24\", \"10.80.12.0/24\", \"10.80.13.0/24\"",
    );
    std::fs::write(&path, &moved).unwrap();
    let out = nodeboot(&["validate", "--env", path.to_str().unwrap()]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains(
            "secure_subnets: etcd member 1 would move from eu-west-1b (10.80.11.10) to eu-west-1b (10.80.14.10)"
        ),
        "{err}"
    );
}

#[test]
fn min_healthy_percentage_and_public_zone_id_are_checked() {
    for (field, value, says) in [
        ("compute_min_healthy_percentage", "101", "101 is not a percentage"),
        ("public_zone_id", "\"example.com\"", "a Route 53 zone id"),
    ] {
        let (code, err, prefix) = run_case(&Case {
            field,
            value: value.into(),
            names: field,
            says,
        });
        assert_eq!(code, Some(2), "{err}");
        assert!(err.contains(&prefix) && err.contains(says), "{err}");
    }
    let dir = tempfile::tempdir().unwrap();
    let text = example_with(&[
        ("public_zone_id", "\"create\""),
        ("public_zone_name", "\"other.example.com\""),
    ]);
    let path = env_file(dir.path(), "zone.tfvars", &text);
    let err = stderr(&nodeboot(&["validate", "--env", path.to_str().unwrap()]));
    assert!(
        err.contains("public_zone_name: with public_zone_id = \"create\" the zone is example.<parent zone>"),
        "{err}"
    );
    let text = example_with(&[
        ("public_zone_id", "\"create\""),
        ("public_zone_name", "\"example.example.com\""),
    ]);
    let path = env_file(dir.path(), "zone.tfvars", &text);
    assert!(nodeboot(&["validate", "--env", path.to_str().unwrap()])
        .status
        .success());
}

#[test]
fn validate_refuses_a_version_skew_with_the_running_cluster() {
    let env = example_env();
    let run = |running: &str| nodeboot(&["validate", "--env", env.to_str().unwrap(), "--running-version", running]);
    // The example is 1.31.4.
    for ok in ["1.31.0", "v1.31.4", "1.30.9"] {
        let out = run(ok);
        assert!(out.status.success(), "{ok}: {}", stderr(&out));
    }
    let two_minors = run("1.29.3");
    assert_eq!(two_minors.status.code(), Some(2));
    assert!(
        stderr(&two_minors)
            .contains("kubernetes_version: the cluster runs 1.29.3; upgrade one minor at a time (1.30 first)"),
        "{}",
        stderr(&two_minors)
    );
    let downgrade = run("1.32.1");
    assert_eq!(downgrade.status.code(), Some(2));
    assert!(
        stderr(&downgrade).contains("kubelets may not be newer than kube-apiserver"),
        "{}",
        stderr(&downgrade)
    );
}

/// 5 -> 3 (issue 11, issue 20 item 10): the members above the new count
/// are retired before `up` (`prevent_destroy` stops a plan that deletes
/// them); validate says so, with the commands in the order that keeps
/// quorum (highest first), and no `terraform state rm`.
#[test]
fn validate_explains_the_order_of_an_etcd_count_going_down() {
    let dir = tempfile::tempdir().unwrap();
    let five = env_file(dir.path(), "example.tfvars", &example_with(&[("etcd_count", "5")]));
    let loaded = nodeboot::operator::env::load(&five).unwrap();
    nodeboot::operator::env::write_record(&five, &loaded.env).unwrap();
    // Same count: nothing to say.
    let out = nodeboot(&["validate", "--env", five.to_str().unwrap()]);
    assert!(
        out.status.success() && !stderr(&out).contains("retire-member"),
        "{}",
        stderr(&out)
    );

    let text = example_with(&[("etcd_count", "3")]);
    std::fs::write(&five, &text).unwrap();
    let out = nodeboot(&["validate", "--env", five.to_str().unwrap()]);
    let err = stderr(&out);
    assert!(
        out.status.success(),
        "a warning, not an error (the members may be retired already): {err}"
    );
    let prefix = format!("{}:{}: etcd_count:", five.display(), line_of(&text, "etcd_count"));
    assert!(err.contains(&prefix), "{err}");
    let four = err
        .find(&format!("nodeboot etcd retire-member --env {} --yes 4", five.display()))
        .unwrap_or_else(|| panic!("{err}"));
    let three = err
        .find(&format!("nodeboot etcd retire-member --env {} --yes 3", five.display()))
        .unwrap_or_else(|| panic!("{err}"));
    assert!(four < three, "highest first: {err}");
    assert!(
        !err.contains(&format!("retire-member --env {} --yes 2", five.display())),
        "member 2 stays: {err}"
    );
    assert!(
        err.contains("prevent_destroy") && err.contains("final snapshot"),
        "{err}"
    );
    assert!(!err.contains("state rm"), "{err}");
}

#[test]
fn etcd_quota_bytes_is_bounded_and_reaches_the_members_env_through_node_json() {
    for (value, says) in [
        (
            "1048576",
            "1048576 (1.0 MiB) is outside 268435456 (256.0 MiB) to 8589934592 (8.0 GiB",
        ),
        ("8589934593", "is outside 268435456 (256.0 MiB) to 8589934592 (8.0 GiB"),
        ("\"8GiB\"", "found \"8GiB\""),
    ] {
        let (code, err, prefix) = run_case(&Case {
            field: "etcd_quota_bytes",
            value: value.into(),
            names: "etcd_quota_bytes",
            says,
        });
        assert_eq!(code, Some(2), "{err}");
        assert!(err.contains(&prefix) && err.contains(says), "{value}: {err}");
    }

    use nodeboot::node::stage::attach::Claim;
    use nodeboot::node::stage::etcd::{member_env, Tls};
    use nodeboot::shared::node_config::NodeConfig;
    use nodeboot::shared::role::Role;
    let text = example_with(&[("etcd_quota_bytes", "268435456")]);
    let env = nodeboot::operator::env::from_text(std::path::Path::new("e.tfvars"), &text)
        .unwrap()
        .env;
    let rendered = nodeboot::operator::render::node_config::node_config(&env, Role::Etcd);
    let json = serde_json::to_string(&rendered).unwrap();
    let config: NodeConfig = serde_json::from_str(&json).unwrap();
    let quota = config.etcd.as_ref().unwrap().quota_bytes;
    assert_eq!(quota, 268_435_456, "{json}");
    let claim = Claim {
        member: 0,
        instance_id: "i-0".into(),
        zone: "eu-west-1a".into(),
        volume_id: "vol-0".into(),
        device_name: "/dev/xvdf".into(),
        eni_id: "eni-0".into(),
        eni_ip: "10.80.10.10".into(),
        eni_mac: "02:00:00:00:00:01".into(),
    };
    let tls = Tls {
        ca: "ca".into(),
        cert: "c".into(),
        key: "k".into(),
    };
    let vars = member_env(
        &env.name,
        &claim,
        String::new(),
        std::path::Path::new("/d"),
        false,
        &tls,
        quota,
    );
    assert!(
        vars.contains(&("ETCD_QUOTA_BACKEND_BYTES", "268435456".into())),
        "{vars:?}"
    );

    // A node.json written before the field: etcd gets the default quota.
    let old = json.replace(",\"quota_bytes\":268435456", "");
    assert_ne!(old, json);
    let config: NodeConfig = serde_json::from_str(&old).unwrap();
    assert_eq!(config.etcd.unwrap().quota_bytes, 4 << 30);
}
