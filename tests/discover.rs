//! `nodeboot stage discover` against the IMDSv2 double (tests/bed/imds.py).

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use common::bed::*;
use serde_json::json;

struct Setup {
    root: tempfile::TempDir,
    imds: Server,
}

fn setup(fault: &str) -> Setup {
    let root = tempfile::tempdir().unwrap();
    let env = environment("disco", 3);
    let config = nodeboot::operator::render::node_config::node_config(&env, nodeboot::shared::role::Role::Etcd);
    std::fs::create_dir_all(root.path().join("etc/nodeboot")).unwrap();
    std::fs::write(
        root.path().join("etc/nodeboot/node.json"),
        serde_json::to_vec(&config).unwrap(),
    )
    .unwrap();
    let identity = root.path().join("identity.json");
    write_json_atomic(
        &identity,
        &json!({
            "instance_id": "i-0123456789abcdef0",
            "availability_zone": "eu-west-1b",
            "region": "eu-west-1",
            "interfaces": [
                {"mac": "0a:1b:2c:3d:4e:5f", "device_number": 0, "interface_id": "eni-0aaaaaaaaaaaaaaaa",
                 "local_ipv4s": ["10.80.11.23"], "subnet_id": "subnet-1", "subnet_ipv4_cidr_block": "10.80.11.0/24", "vpc_id": "vpc-1"},
                {"mac": "0a:1b:2c:3d:4e:60", "device_number": 1, "interface_id": "eni-0bbbbbbbbbbbbbbbb",
                 "local_ipv4s": ["10.80.11.10"], "subnet_id": "subnet-1", "subnet_ipv4_cidr_block": "10.80.11.0/24", "vpc_id": "vpc-1"}
            ],
            "fault": fault,
        }),
    );
    let mut cmd = Command::new("python3");
    cmd.arg(common::repo().join("tests/bed/imds.py"))
        .args(["--listen", "127.0.0.1:0", "--slow-seconds", "30", "--identity"])
        .arg(&identity);
    Setup {
        imds: start_server(cmd),
        root,
    }
}

fn discover(s: &Setup, extra: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_nodeboot"))
        .args(["stage", "--root"])
        .arg(s.root.path())
        .arg("discover")
        .args(extra)
        .env("AWS_EC2_METADATA_SERVICE_ENDPOINT", &s.imds.url)
        .output()
        .unwrap()
}

#[test]
fn discover_records_the_identity_from_imdsv2() {
    let s = setup("none");
    let out = discover(&s, &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let facts: serde_json::Value =
        serde_json::from_slice(&std::fs::read(s.root.path().join("run/nodeboot/facts.json")).unwrap()).unwrap();
    assert_eq!(facts["instance_id"], "i-0123456789abcdef0");
    assert_eq!(facts["availability_zone"], "eu-west-1b");
    assert_eq!(facts["region"], "eu-west-1");
    assert_eq!(facts["private_ip"], "10.80.11.23");
    assert_eq!(facts["mac"], "0a:1b:2c:3d:4e:5f");
    assert_eq!(facts["interfaces"][1]["interface_id"], "eni-0bbbbbbbbbbbbbbbb");
    assert_eq!(facts["environment"], "disco");
    assert_eq!(facts["role"], "etcd");
    assert_eq!(facts["hostname"], "disco-etcd-i-0123456789abcdef0");
    // The kubelet's providerID drop-in, for the AWS cloud controller.
    let dropin = s.root.path().join("run/nodeboot/kubelet.conf.d/10-provider-id.conf");
    let text = std::fs::read_to_string(&dropin).unwrap();
    assert!(
        text.lines()
            .any(|l| l == "providerID: aws:///eu-west-1b/i-0123456789abcdef0"),
        "{text}"
    );

    // Rerun converges to the same file.
    let before = std::fs::read(s.root.path().join("run/nodeboot/facts.json")).unwrap();
    assert!(discover(&s, &[]).status.success());
    assert_eq!(
        before,
        std::fs::read(s.root.path().join("run/nodeboot/facts.json")).unwrap()
    );
}

/// The failure's stderr.
fn assert_metadata_failure(fault: &str, says: &str, extra: &[&str]) -> String {
    let s = setup(fault);
    let out = discover(&s, extra);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(12), "{fault}: exit code; stderr:\n{err}");
    assert!(err.contains(says), "{fault}: stderr should say {says:?}:\n{err}");
    assert!(
        !s.root.path().join("run/nodeboot/facts.json").exists(),
        "{fault}: nothing recorded"
    );
    err
}

#[test]
fn a_404_is_an_answer_not_a_retry() {
    let err = assert_metadata_failure("404", "instance metadata has no meta-data/instance-id", &[]);
    assert!(!err.contains("waiting for"), "404 must not be retried:\n{err}");
}

#[test]
fn garbage_metadata_is_refused_with_the_path() {
    assert_metadata_failure("garbage", "instance metadata meta-data/instance-id", &[]);
}

#[test]
fn no_token_never_falls_back_to_imdsv1() {
    assert_metadata_failure("no-token", "refused a token (IMDSv2): HTTP 403", &[]);
}

#[test]
fn a_silent_metadata_service_times_out_within_the_bound() {
    let err = assert_metadata_failure("slow", "gave up on", &["--timeout", "3s"]);
    // The stage's own account: it gave up at its 3 s bound, plus at most the one attempt
    // in flight then (a token and a read, each cut at IMDS's 2 s request timeout).
    let seconds: u64 = err
        .split(" after ")
        .nth(1)
        .and_then(|rest| rest.split('s').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("a give-up with its time:\n{err}"));
    assert!(
        (3..=7).contains(&seconds),
        "bounded at 3 s + one attempt: {seconds}s\n{err}"
    );
}

#[test]
fn unreachable_metadata_service_is_retried_then_reported() {
    let s = setup("none");
    let out = Command::new(env!("CARGO_BIN_EXE_nodeboot"))
        .args(["stage", "--root"])
        .arg(s.root.path())
        .args(["discover", "--timeout", "1s"])
        .env("AWS_EC2_METADATA_SERVICE_ENDPOINT", "http://127.0.0.1:9")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(12), "{err}");
    assert!(err.contains("127.0.0.1:9") && err.contains("gave up"), "{err}");
}

/// `--set-hostname` in a UTS namespace of its own (unshare, util-linux), so
/// the test machine keeps its name: the name is set now and for every later
/// boot (/etc/hostname), and it is one the kubelet registers unchanged.
#[test]
fn set_hostname_persists_it_in_etc_hostname_as_a_valid_node_name() {
    if !require_root("a UTS namespace for sethostname") {
        return;
    }
    let s = setup("none");
    let in_namespace = |extra: &[&str]| {
        let script = format!("\"$0\" stage --root \"$1\" discover {} && hostname", extra.join(" "));
        Command::new("unshare")
            .args(["--uts", "sh", "-c", &script, env!("CARGO_BIN_EXE_nodeboot")])
            .arg(s.root.path())
            .env("AWS_EC2_METADATA_SERVICE_ENDPOINT", &s.imds.url)
            .output()
            .unwrap()
    };
    let out = in_namespace(&["--set-hostname"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let live = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert_eq!(live, "disco-etcd-i-0123456789abcdef0");
    let persisted = std::fs::read_to_string(s.root.path().join("etc/hostname")).expect("/etc/hostname is written");
    assert_eq!(
        persisted,
        format!("{live}\n"),
        "the next boot starts with the same name"
    );
    // The kubelet's node name is the hostname (no --hostname-override):
    // a lowercase RFC 1123 name of at most 63 characters per label.
    assert!(
        live.len() <= 63
            && live
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
        "{live}"
    );
    assert_eq!(
        std::fs::metadata(s.root.path().join("etc/hostname"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o644
    );

    // Without --set-hostname nothing is written.
    let plain = setup("none");
    assert!(discover(&plain, &[]).status.success());
    assert!(!plain.root.path().join("etc/hostname").exists());
}
