//! `nodeboot render` against the upstream Ignition 3.4.0 schema, Ignition's
//! own semantic checks, and systemd's unit verifier.

mod common;

use std::path::Path;
use std::process::Command;

use common::ignition_lint::{file_contents, lint};
use common::*;
use nodeboot::operator::env;
use nodeboot::operator::render::{self, USER_DATA_LIMIT};
use nodeboot::shared::role::Role;
use serde_json::Value;

fn render_dir(env_path: &Path, out: &Path) {
    let run = nodeboot(&[
        "render",
        "--env",
        env_path.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(run.status.success(), "render failed: {}", stderr(&run));
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn assert_valid_ignition(config: &Value, what: &str) {
    let schema = ignition_schema("3_4");
    let validator = jsonschema::validator_for(&schema).expect("upstream schema compiles");
    let errors: Vec<String> = validator
        .iter_errors(config)
        .map(|e| format!("{} at {}", e, e.instance_path))
        .collect();
    assert!(
        errors.is_empty(),
        "{what} fails the Ignition 3.4.0 schema:\n{}",
        errors.join("\n")
    );
    let problems = lint(config, &schema);
    assert!(
        problems.is_empty(),
        "{what} fails Ignition's semantic checks:\n{}",
        problems.join("\n")
    );
    assert_eq!(config["ignition"]["version"], "3.4.0", "{what}");
}

#[test]
fn example_configs_pass_upstream_schema_and_ignition_checks() {
    let out = tempfile::tempdir().unwrap();
    render_dir(&example_env(), out.path());
    for role in Role::ALL {
        let path = out.path().join(format!("{role}.ign"));
        assert_valid_ignition(&read_json(&path), &path.display().to_string());
    }
}

#[test]
fn lint_catches_what_ignition_would_refuse() {
    // The checker itself must be able to fail, or the test above proves nothing.
    let schema = ignition_schema("3_4");
    let out = tempfile::tempdir().unwrap();
    render_dir(&example_env(), out.path());
    let good = read_json(&out.path().join("etcd.ign"));

    let mut typo = good.clone();
    typo["systemd"]["units"][0]["enable"] = Value::Bool(true);
    assert!(lint(&typo, &schema).iter().any(|p| p.contains("unused key \"enable\"")));

    let mut relative = good.clone();
    relative["storage"]["files"][0]["path"] = "etc/x".into();
    assert!(lint(&relative, &schema).iter().any(|p| p.contains("not absolute")));

    let mut dup = good.clone();
    let first = dup["systemd"]["units"][0].clone();
    dup["systemd"]["units"].as_array_mut().unwrap().push(first);
    assert!(lint(&dup, &schema).iter().any(|p| p.contains("duplicate unit")));

    let mut bad_data = good.clone();
    bad_data["storage"]["files"][0]["contents"]["source"] = "data:;base64,!!!".into();
    assert!(lint(&bad_data, &schema).iter().any(|p| p.contains("does not decode")));

    let mut bad_suffix = good;
    bad_suffix["systemd"]["units"][0]["name"] = "nodeboot-discover".into();
    assert!(lint(&bad_suffix, &schema).iter().any(|p| p.contains("unit suffix")));
}

#[test]
fn rendering_twice_is_byte_identical() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    render_dir(&example_env(), a.path());
    render_dir(&example_env(), b.path());
    for role in Role::ALL {
        let name = format!("{role}.ign");
        assert_eq!(
            std::fs::read(a.path().join(&name)).unwrap(),
            std::fs::read(b.path().join(&name)).unwrap(),
            "{name}"
        );
    }
}

/// systemd's own verifier, run in a throw-away root that holds what Flatcar
/// ships: the host's unit library (sysinit.target and friends), docker and
/// containerd units, and the executables the units start.
#[test]
fn every_rendered_unit_passes_systemd_analyze_verify() {
    let loaded = env::load(&example_env()).unwrap();
    for role in Role::ALL {
        let root = tempfile::tempdir().unwrap();
        let root = root.path();
        let unit_dir = root.join("etc/systemd/system");
        std::fs::create_dir_all(&unit_dir).unwrap();
        let lib = root.join("usr/lib/systemd/system");
        std::fs::create_dir_all(&lib).unwrap();
        for entry in std::fs::read_dir("/usr/lib/systemd/system").expect("systemd's unit library is installed") {
            let entry = entry.unwrap();
            if entry.file_type().unwrap().is_file() {
                std::fs::copy(entry.path(), lib.join(entry.file_name())).unwrap();
            }
        }
        for stub in ["docker.service", "containerd.service"] {
            std::fs::write(
                lib.join(stub),
                "[Unit]\nDescription=stub of Flatcar's unit\n[Service]\nExecStart=/usr/bin/true\n",
            )
            .unwrap();
        }
        let mut names = Vec::new();
        for unit in render::units_for(&loaded.env, role) {
            for exe in executables(&unit.contents) {
                let path = root.join(exe.trim_start_matches('/'));
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(&path, "#!/bin/sh\n").unwrap();
                std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
            }
            std::fs::write(unit_dir.join(&unit.name), &unit.contents).unwrap();
            names.push(format!("etc/systemd/system/{}", unit.name));
        }
        let run = Command::new("systemd-analyze")
            .arg("verify")
            .arg(format!("--root={}", root.display()))
            .args(&names)
            .current_dir(root)
            .output()
            .expect("systemd-analyze is installed (Debian package systemd)");
        let diagnostics = String::from_utf8_lossy(&run.stderr);
        // verify exits 0 on parse warnings ("ignoring: ..."), so any output is a failure.
        assert!(
            run.status.success() && diagnostics.trim().is_empty(),
            "{role}: systemd-analyze verify:\n{diagnostics}"
        );
    }
}

/// Absolute executables named by Exec*= lines (a leading '-' means "may fail").
fn executables(unit: &str) -> Vec<String> {
    unit.lines()
        .filter(|l| l.starts_with("Exec"))
        .filter_map(|l| {
            l.split_once('=')
                .map(|(_, cmd)| cmd.trim_start_matches(['-', '@', '+', '!']))
        })
        .filter_map(|cmd| cmd.split_whitespace().next().map(str::to_string))
        .filter(|exe| exe.starts_with('/'))
        .collect()
}

#[test]
fn boot_stages_are_ordered_and_retried() {
    let loaded = env::load(&example_env()).unwrap();
    let units = render::units_for(&loaded.env, Role::Etcd);
    let chain = ["discover", "attach", "mount", "etcd"];
    for pair in chain.windows(2) {
        let unit = units
            .iter()
            .find(|u| u.name == format!("nodeboot-{}.service", pair[1]))
            .unwrap();
        let before = format!("nodeboot-{}.service", pair[0]);
        assert!(
            unit.contents
                .lines()
                .any(|l| l.starts_with("Requires=") && l.contains(&before)),
            "{} requires {before}",
            unit.name
        );
        assert!(
            unit.contents
                .lines()
                .any(|l| l.starts_with("After=") && l.contains(&before)),
            "{} after {before}",
            unit.name
        );
        // The stage waits in its process; a systemd restart would leave the
        // units after it dead (tests/lab/test_boot_chain.py shows why).
        assert!(
            unit.contents
                .lines()
                .any(|l| l.starts_with("ExecStart=") && l.contains(" stage --retry ")),
            "{}",
            unit.name
        );
        assert!(
            unit.contents.lines().any(|l| l == "TimeoutStartSec=infinity"),
            "{}",
            unit.name
        );
        assert!(
            !unit.contents.lines().any(|l| l.starts_with("Restart")),
            "{}: no Restart=",
            unit.name
        );
    }
    // A learner is promoted once its etcd runs: after the member unit, retried like a stage.
    let promote = units
        .iter()
        .find(|u| u.name == "nodeboot-etcd-promote.service")
        .unwrap();
    assert!(
        promote
            .contents
            .lines()
            .any(|l| l.starts_with("After=") && l.contains("etcd-member.service")),
        "{}",
        promote.contents
    );
    assert!(
        promote
            .contents
            .lines()
            .any(|l| l.starts_with("ExecStart=") && l.ends_with(" stage --retry etcd-promote")),
        "{}",
        promote.contents
    );
    let sync = units.iter().find(|u| u.name == "nodeboot-manifests.service").unwrap();
    assert!(sync.contents.contains("Restart=always"));
    let names: Vec<String> = render::units_for(&loaded.env, Role::Bastion)
        .into_iter()
        .map(|u| u.name)
        .collect();
    assert_eq!(names, ["nodeboot-discover.service"]);
}

#[test]
fn five_zone_seven_member_environment_renders_and_validates() {
    let dir = tempfile::tempdir().unwrap();
    let text = seven_members_in_five_zones();
    let path = env_file(dir.path(), "big.tfvars", &text);
    let run = nodeboot(&["validate", "--env", path.to_str().unwrap()]);
    assert!(run.status.success(), "{}", stderr(&run));
    let out = dir.path().join("out");
    render_dir(&path, &out);
    for role in Role::ALL {
        assert_valid_ignition(
            &read_json(&out.join(format!("{role}.ign"))),
            &format!("7-member {role}"),
        );
    }
    let members = env::load(&path).unwrap().env.etcd_members();
    let ips: Vec<String> = members.iter().map(|m| m.ip.to_string()).collect();
    assert_eq!(
        ips,
        [
            "10.80.10.10",
            "10.80.11.10",
            "10.80.12.10",
            "10.80.13.10",
            "10.80.14.10",
            "10.80.10.11",
            "10.80.11.11"
        ]
    );
}

/// Adds ssh keys until the full config crosses EC2's user data limit, and
/// checks both sides: at the last size that fits, the config is the full
/// one; past it, a pointer whose hash matches the full config.
#[test]
fn user_data_limit_switches_to_a_pointer_config_exactly_when_crossed() {
    let base = env::load(&example_env()).unwrap().env;
    let key = |i: usize| format!("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI{:0>40} user{i}@example", i);
    let mut env = base.clone();
    let mut last_fitting = None;
    for i in 0..200 {
        env.ssh_authorized_keys.push(key(i));
        let full = render::full_config(&env, Role::Etcd);
        if full.len() > USER_DATA_LIMIT {
            break;
        }
        last_fitting = Some(env.clone());
    }
    let fitting = last_fitting.expect("the example fits in user data");
    assert!(
        render::full_config(&env, Role::Etcd).len() > USER_DATA_LIMIT,
        "200 keys should cross 16 KiB"
    );

    let below = render::render_role(&fitting, Role::Etcd, USER_DATA_LIMIT);
    assert!(below.full.is_none());
    assert!(below.user_data.len() <= USER_DATA_LIMIT);
    assert!(
        below.user_data.len() > USER_DATA_LIMIT - 200,
        "the fitting config is right at the limit"
    );

    let above = render::render_role(&env, Role::Etcd, USER_DATA_LIMIT);
    let full = above.full.clone().expect("over the limit: full config kept aside");
    let pointer: Value = serde_json::from_slice(&above.user_data).unwrap();
    assert_valid_ignition(&pointer, "pointer config");
    let replace = &pointer["ignition"]["config"]["replace"];
    assert_eq!(
        replace["source"],
        format!("s3://{}/ignition/etcd.ign", env.secrets_bucket_name)
    );
    let expected = format!("sha512-{}", sha512_hex(&full));
    assert_eq!(replace["verification"]["hash"], expected);
    assert_valid_ignition(&serde_json::from_slice(&full).unwrap(), "full config");
    assert!(above.user_data.len() < 1024);
}

fn sha512_hex(bytes: &[u8]) -> String {
    // Independent of nodeboot's own hashing: ask coreutils.
    let mut child = Command::new("sha512sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), bytes).unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8(out.stdout)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

#[test]
fn render_writes_pointer_and_full_files_and_removes_stale_full() {
    let dir = tempfile::tempdir().unwrap();
    let keys: Vec<String> = (0..150)
        .map(|i| format!("\"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI{:0>40} u{i}\"", i))
        .collect();
    let big = env_file(
        dir.path(),
        "big.tfvars",
        &example_with(&[("ssh_authorized_keys", &format!("[{}]", keys.join(", ")))]),
    );
    let out = dir.path().join("out");
    render_dir(&big, &out);
    assert!(out.join("etcd.full.ign").exists());
    let pointer = read_json(&out.join("etcd.ign"));
    assert!(pointer["ignition"]["config"]["replace"]["source"].is_string());

    render_dir(&example_env(), &out);
    assert!(
        !out.join("etcd.full.ign").exists(),
        "a stale full config would be uploaded by mistake"
    );
    assert!(read_json(&out.join("etcd.ign"))["systemd"].is_object());
}

#[test]
fn render_refuses_a_bastion_config_over_the_user_data_limit() {
    // The bastion's instance profile has no S3 rights (terraform/modules/iam),
    // so a pointer config would leave it unbootable: refuse, write nothing.
    let dir = tempfile::tempdir().unwrap();
    let keys: Vec<String> = (0..200)
        .map(|i| format!("\"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI{:0>40} u{i}\"", i))
        .collect();
    let big = env_file(
        dir.path(),
        "big.tfvars",
        &example_with(&[("ssh_authorized_keys", &format!("[{}]", keys.join(", ")))]),
    );
    let env = env::load(&big).unwrap().env;
    assert!(
        render::full_config(&env, Role::Bastion).len() > USER_DATA_LIMIT,
        "200 keys put the bastion over 16 KiB"
    );
    assert!(!render::can_fetch_full_config(Role::Bastion));

    let out = dir.path().join("out");
    let run = nodeboot(&["render", "--env", big.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert_eq!(run.status.code(), Some(2), "bad input: {}", stderr(&run));
    let message = stderr(&run);
    assert!(
        message.contains("bastion Ignition config is") && message.contains("16384"),
        "{message}"
    );
    assert!(
        !out.join("etcd.ign").exists() && !out.join("bastion.ign").exists(),
        "nothing is written"
    );

    // Only the bastion is refused: etcd alone still gets its pointer config.
    let run = nodeboot(&[
        "render",
        "--env",
        big.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--role",
        "etcd",
    ]);
    assert!(run.status.success(), "{}", stderr(&run));
    assert!(out.join("etcd.full.ign").exists());
}

#[test]
fn s3_sourced_binary_is_fetched_and_verified() {
    let dir = tempfile::tempdir().unwrap();
    let hash = "ab".repeat(64);
    let text = example_with(&[
        ("nodeboot_source", "\"s3\""),
        ("nodeboot_s3_url", "\"s3://example-artifacts/nodeboot/0.1.0/nodeboot\""),
        ("nodeboot_sha512", &format!("\"{hash}\"")),
    ]);
    let path = env_file(dir.path(), "s3.tfvars", &text);
    let out = dir.path().join("out");
    render_dir(&path, &out);
    let config = read_json(&out.join("compute.ign"));
    assert_valid_ignition(&config, "compute with s3 binary");
    let files = config["storage"]["files"].as_array().unwrap();
    let binary = files
        .iter()
        .find(|f| f["path"] == "/opt/bin/nodeboot")
        .expect("binary file entry");
    assert_eq!(
        binary["contents"]["source"],
        "s3://example-artifacts/nodeboot/0.1.0/nodeboot"
    );
    assert_eq!(binary["contents"]["verification"]["hash"], format!("sha512-{hash}"));
    assert_eq!(binary["mode"], 0o755);
}

#[test]
fn node_config_in_ignition_is_what_the_stages_read() {
    let out = tempfile::tempdir().unwrap();
    render_dir(&example_env(), out.path());
    let config = read_json(&out.path().join("etcd.ign"));
    let file = config["storage"]["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["path"] == "/etc/nodeboot/node.json")
        .unwrap();
    let bytes = file_contents(file).unwrap();
    let node: nodeboot::shared::node_config::NodeConfig = serde_json::from_slice(&bytes).expect("stages can parse it");
    assert_eq!(node.role, Role::Etcd);
    assert_eq!(node.environment, "example");
    assert_eq!(node.etcd.unwrap().members, 3);
}

/// The `Requires=` of one rendered unit.
fn requires(units: &[render::UnitFile], name: &str) -> Vec<String> {
    let unit = units
        .iter()
        .find(|u| u.name == name)
        .unwrap_or_else(|| panic!("{name} is rendered"));
    unit.contents
        .lines()
        .filter_map(|l| l.strip_prefix("Requires="))
        .flat_map(|l| l.split_whitespace().map(str::to_string))
        .collect()
}

#[test]
fn secrets_come_after_attach_on_etcd_nodes_and_before_etcd() {
    let loaded = env::load(&example_env()).unwrap();
    let etcd = render::units_for(&loaded.env, Role::Etcd);
    let secrets = requires(&etcd, "nodeboot-secrets.service");
    assert!(
        secrets.contains(&"nodeboot-attach.service".to_string()),
        "the claim names the member whose key is fetched: {secrets:?}"
    );
    let etcd_stage = requires(&etcd, "nodeboot-etcd.service");
    assert!(
        etcd_stage.contains(&"nodeboot-secrets.service".to_string()),
        "{etcd_stage:?}"
    );
    let order: Vec<&str> = etcd
        .iter()
        .map(|u| u.name.as_str())
        .filter(|n| {
            n.starts_with("nodeboot-")
                && *n != "nodeboot-manifests.service"
                && *n != "nodeboot-etcd-promote.service"
                && *n != "nodeboot-secrets-sync.service"
                && *n != "nodeboot-etcd-backup.service"
                && *n != "nodeboot-reboot.service"
                && !n.starts_with("nodeboot-addons.")
        })
        .collect();
    assert_eq!(
        order,
        [
            "nodeboot-discover.service",
            "nodeboot-attach.service",
            "nodeboot-mount.service",
            "nodeboot-secrets.service",
            "nodeboot-etcd.service"
        ]
    );
    // A compute node has no attach: its secrets follow discover alone.
    let compute = render::units_for(&loaded.env, Role::Compute);
    assert_eq!(
        requires(&compute, "nodeboot-secrets.service"),
        ["nodeboot-discover.service"]
    );
}

#[test]
fn the_etcd_container_mounts_only_the_etcd_secrets() {
    let loaded = env::load(&example_env()).unwrap();
    let units = render::units_for(&loaded.env, Role::Etcd);
    let member = units.iter().find(|u| u.name == "etcd-member.service").unwrap();
    let volumes: Vec<&str> = member
        .contents
        .split_whitespace()
        .collect::<Vec<_>>()
        .windows(2)
        .filter(|w| w[0] == "--volume")
        .map(|w| w[1])
        .collect();
    assert_eq!(
        volumes,
        [
            "/var/lib/etcd:/var/lib/etcd:rw",
            "/run/nodeboot/secrets/etcd:/run/nodeboot/secrets/etcd:ro"
        ]
    );
}

/// The dev binary has the abort hook (tests/check-static checks that the
/// release binary, which lacks it, renders through the same point).
#[test]
fn render_killed_after_its_first_file_converges_on_rerun() {
    let out = tempfile::tempdir().unwrap();
    let env_path = example_env();
    let args = [
        "render",
        "--env",
        env_path.to_str().unwrap(),
        "--out",
        out.path().to_str().unwrap(),
    ];
    let killed = Command::new(env!("CARGO_BIN_EXE_nodeboot"))
        .args(args)
        .env(nodeboot::shared::fault::VAR, "render:after-user-data")
        .output()
        .unwrap();
    assert!(
        !killed.status.success() && stderr(&killed).contains("aborting at render:after-user-data"),
        "{}",
        stderr(&killed)
    );
    assert!(
        out.path().join("bastion.ign").exists()
            || out.path().join("compute.ign").exists()
            || out.path().join("etcd.ign").exists()
    );
    render_dir(&env_path, out.path());
    let again = tempfile::tempdir().unwrap();
    render_dir(&env_path, again.path());
    for role in Role::ALL {
        assert_eq!(
            std::fs::read(out.path().join(format!("{role}.ign"))).unwrap(),
            std::fs::read(again.path().join(format!("{role}.ign"))).unwrap()
        );
    }
}

/// The kubelet registers the node under its hostname: nothing overrides it,
/// and it starts only after discover has set it (through secrets, which
/// requires discover).
#[test]
fn the_kubelets_node_name_is_the_hostname_discover_set() {
    let loaded = env::load(&example_env()).unwrap();
    for role in [Role::Etcd, Role::Compute] {
        let units = render::units_for(&loaded.env, role);
        let kubelet = units.iter().find(|u| u.name == "kubelet.service").unwrap();
        assert!(
            !kubelet.contents.contains("hostname-override") && !kubelet.contents.contains("--node-name"),
            "{role}: {}",
            kubelet.contents
        );
        let config = render::kubelet_config(role);
        assert!(!config.contains("hostnameOverride"), "{role}: {config}");
        let mut chain = vec!["kubelet.service".to_string()];
        while let Some(next) = requires(&units, chain.last().unwrap())
            .into_iter()
            .find(|u| u.starts_with("nodeboot-"))
        {
            let unit = units.iter().find(|u| u.name == *chain.last().unwrap()).unwrap();
            assert!(
                unit.contents
                    .lines()
                    .any(|l| l.starts_with("After=") && l.contains(&next)),
                "{role}: {} after {next}",
                unit.name
            );
            chain.push(next);
        }
        assert_eq!(chain.last().unwrap(), "nodeboot-discover.service", "{role}: {chain:?}");
        let discover = units.iter().find(|u| u.name == "nodeboot-discover.service").unwrap();
        assert!(discover.contents.contains("discover --set-hostname"), "{role}");
    }
}

/// Each unit's exposure as the real `systemd-analyze security` scores it,
/// offline (the unit file alone). Before the units were hardened every one
/// scored 9.6 ("UNSAFE"); each must stay at or under its ceiling here.
/// `python3 bench/unit-security.py` prints the same scores as a table.
#[test]
fn every_unit_scores_under_its_exposure_ceiling() {
    let ceilings = [
        ("nodeboot-discover.service", 2.3),
        ("nodeboot-attach.service", 2.0),
        ("nodeboot-mount.service", 4.5),
        ("nodeboot-etcd.service", 2.0),
        ("nodeboot-secrets.service", 2.0),
        ("nodeboot-etcd-promote.service", 2.0),
        ("nodeboot-reboot.service", 2.0),
        // No ProtectProc=invisible: it must see a static pod's processes
        // to stop them, whichever user they run as.
        ("nodeboot-secrets-sync.service", 2.2),
        ("nodeboot-manifests.service", 2.0),
        ("etcd-member.service", 2.0),
        ("nodeboot-addons.service", 2.0),
        ("nodeboot-etcd-backup.service", 2.0),
        ("kubelet.service", 9.3),
    ];
    let loaded = env::load(&example_env()).unwrap();
    let mut failures = Vec::new();
    for role in Role::ALL {
        let dir = tempfile::tempdir().unwrap();
        // Exposure is a service's (a timer runs no process of its own).
        for unit in render::units_for(&loaded.env, role)
            .into_iter()
            .filter(|u| u.name.ends_with(".service"))
        {
            let path = dir.path().join(&unit.name);
            std::fs::write(&path, &unit.contents).unwrap();
            let run = Command::new("systemd-analyze")
                .args(["security", "--offline=yes", "--no-pager"])
                .arg(&path)
                .current_dir(dir.path())
                .output()
                .expect("systemd-analyze is installed (Debian package systemd)");
            let text = String::from_utf8_lossy(&run.stdout);
            let score: f64 = text
                .lines()
                .find_map(|l| {
                    l.split_once("Overall exposure level for ")?
                        .1
                        .split_once(": ")?
                        .1
                        .split_whitespace()
                        .next()?
                        .parse()
                        .ok()
                })
                .unwrap_or_else(|| {
                    panic!(
                        "{role}/{}: no score:\n{text}\n{}",
                        unit.name,
                        String::from_utf8_lossy(&run.stderr)
                    )
                });
            let ceiling = ceilings
                .iter()
                .find(|(n, _)| *n == unit.name)
                .unwrap_or_else(|| panic!("{}: no ceiling set", unit.name))
                .1;
            eprintln!("{role:<8} {:<28} {score:.1} (ceiling {ceiling:.1})", unit.name);
            if score > ceiling {
                failures.push(format!("{role}/{}: exposure {score:.1} over {ceiling:.1}", unit.name));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Every directory the manifest sync writes (node.json's `manifests.dir` and
/// each `synced[].dir`) is writable in its sandbox and exists at boot:
/// `ProtectSystem=strict` makes the rest of /etc read-only, and the add-on
/// sync once failed every pass with "Read-only file system" in the lab.
#[test]
fn the_manifest_sync_may_write_every_directory_it_keeps() {
    let loaded = env::load(&example_env()).unwrap();
    for role in Role::ALL {
        let node = nodeboot::operator::render::node_config::node_config(&loaded.env, role);
        let mut dirs: Vec<String> = node.synced.iter().map(|s| s.dir.clone()).collect();
        dirs.extend(node.manifests.iter().map(|m| m.dir.clone()));
        if dirs.is_empty() {
            continue;
        }
        let units = render::units_for(&loaded.env, role);
        let sync = units
            .iter()
            .find(|u| u.name == "nodeboot-manifests.service")
            .unwrap_or_else(|| panic!("{role}: no sync unit"));
        let writable: Vec<&str> = sync
            .contents
            .lines()
            .filter_map(|l| l.strip_prefix("ReadWritePaths="))
            .flat_map(str::split_whitespace)
            .collect();
        let config: Value = serde_json::from_slice(&render::full_config(&loaded.env, role)).unwrap();
        let made: Vec<String> = config["storage"]["directories"]
            .as_array()
            .map(|a| a.iter().map(|d| d["path"].as_str().unwrap().to_string()).collect())
            .unwrap_or_default();
        for dir in &dirs {
            assert!(
                writable.contains(&dir.as_str()),
                "{role}: the sync writes {dir}, ReadWritePaths={writable:?}"
            );
            assert!(
                made.contains(dir),
                "{role}: {dir} is not made by Ignition ({made:?}): ReadWritePaths= of a missing path fails the unit"
            );
        }
    }
}

/// Flatcar's update settings per role: locksmithd never reboots an etcd node
/// (the reboot coordinator does, one at a time), workers are replaced
/// rather than updated in place, the bastion reboots by itself.
#[test]
fn update_conf_per_role_leaves_etcd_reboots_to_the_coordinator() {
    let loaded = env::load(&example_env()).unwrap();
    let expected = [
        (Role::Etcd, "REBOOT_STRATEGY=off\n"),
        (Role::Compute, "SERVER=disabled\n"),
        (Role::Bastion, "REBOOT_STRATEGY=reboot\n"),
    ];
    for (role, want) in expected {
        let config: Value = serde_json::from_slice(&render::full_config(&loaded.env, role)).unwrap();
        let file = config["storage"]["files"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["path"] == "/etc/flatcar/update.conf")
            .unwrap_or_else(|| panic!("{role}: no update.conf"));
        assert_eq!(String::from_utf8(file_contents(file).unwrap()).unwrap(), want, "{role}");
        let coordinated = render::units_for(&loaded.env, role)
            .iter()
            .any(|u| u.name == "nodeboot-reboot.service");
        assert_eq!(
            coordinated,
            role == Role::Etcd,
            "{role}: the reboot coordinator runs on etcd nodes only"
        );
    }
}

/// kubeadm's mark-control-plane phase, done by the add-on applier on each
/// control-plane node for its own Node (NodeRestriction forbids the kubelet
/// the role label, see tests/rbac.rs): the role label, kubeadm's
/// exclude-from-external-load-balancers label and the taint, named by the
/// hostname discover set (the kubelet's node name). After the apply, which
/// carries the RBAC the kubelets need to register at all. The commands run
/// here through `sh` as systemd would start them (`$$` is systemd's escape
/// of `$`), with a recorder in docker's place.
#[test]
fn the_addon_applier_marks_its_own_node_as_kubeadm_does() {
    let loaded = env::load(&example_env()).unwrap();
    let units = render::units_for(&loaded.env, Role::Etcd);
    let applier = units.iter().find(|u| u.name == "nodeboot-addons.service").unwrap();
    let joined = applier.contents.replace("\\\n", " ");
    let execs: Vec<&str> = joined.lines().filter_map(|l| l.strip_prefix("ExecStart=")).collect();
    assert!(execs[0].contains(" apply "), "the apply comes first: {execs:?}");
    let dir = tempfile::tempdir().unwrap();
    let calls = dir.path().join("calls");
    let docker = dir.path().join("docker");
    std::fs::write(
        &docker,
        format!(
            "#!/bin/sh\nprintf '%s\\n' \"$@\" >> {}\necho --- >> {}\n",
            calls.display(),
            calls.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&docker, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    for exec in &execs[1..] {
        let script = exec
            .strip_prefix("/bin/sh -c '")
            .and_then(|s| s.strip_suffix('\''))
            .unwrap_or_else(|| panic!("not a shell line: {exec}"));
        let script = script
            .replace("$$", "$")
            .replace("/usr/bin/docker", docker.to_str().unwrap());
        let run = Command::new("sh").args(["-c", &script]).output().unwrap();
        assert!(run.status.success(), "{script}: {}", stderr(&run));
    }
    let hostname = String::from_utf8(Command::new("uname").arg("-n").output().unwrap().stdout).unwrap();
    let hostname = hostname.trim();
    let recorded = std::fs::read_to_string(&calls).unwrap_or_default();
    let kubectl: Vec<Vec<&str>> = recorded
        .split("---\n")
        .filter(|c| !c.is_empty())
        .map(|call| {
            let args: Vec<&str> = call.lines().collect();
            let image = args
                .iter()
                .position(|a| a.starts_with("registry.k8s.io/kubectl:"))
                .unwrap();
            assert_eq!(&args[..3], ["run", "--rm", "--network"], "{args:?}");
            args[image + 1..].to_vec()
        })
        .collect();
    let common = [
        "--kubeconfig=/run/nodeboot/secrets/addons-applier.kubeconfig",
        "--server=https://127.0.0.1:6443",
    ];
    let want = [
        [
            &common[..],
            &[
                "label",
                "node",
                hostname,
                "node-role.kubernetes.io/control-plane=",
                "node.kubernetes.io/exclude-from-external-load-balancers=",
                "--overwrite",
            ],
        ]
        .concat(),
        [
            &common[..],
            &[
                "taint",
                "node",
                hostname,
                "node-role.kubernetes.io/control-plane:NoSchedule",
                "--overwrite",
            ],
        ]
        .concat(),
    ];
    assert_eq!(kubectl, want);
    assert!(
        render::units_for(&loaded.env, Role::Compute)
            .iter()
            .all(|u| u.name != "nodeboot-addons.service"),
        "workers apply nothing"
    );
}
