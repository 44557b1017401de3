//! Least privilege, derived from what the code really calls: boot each role
//! against the emulator (the etcd role including a takeover), collect the
//! AWS actions the emulator saw from nodeboot, and check that the role's
//! IAM policy in terraform/modules/iam allows exactly those. moto's recorder
//! keeps every request too: each KMS encryption context and S3 key a role
//! really sends must fit the IAM module's tables of paths (the Decrypt and
//! read conditions its policies render, which tests/terraform replays), and
//! the requests a role must never make do not.

mod common;

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Command, Output};

use common::bed::*;
use common::*;
use nodeboot::shared::role::Role;

/// Runs a nodeboot command and returns the AWS actions it made; its
/// requests join RECORDED.
fn actions_of(aws: &Aws, cmd: &mut Command) -> BTreeSet<String> {
    recorder(aws, "reset-recording");
    aws.reset_calls();
    let out: Output = cmd.output().unwrap();
    assert!(out.status.success(), "{cmd:?}: {}", stderr(&out));
    let actions = aws.calls().into_keys().collect();
    RECORDED.with(|r| r.borrow_mut().extend(recorded(aws)));
    actions
}

thread_local! {
    /// The KMS and S3 requests of the commands run so far.
    static RECORDED: RefCell<Vec<Request>> = const { RefCell::new(Vec::new()) };
}

/// What a request asked for, as IAM sees it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Request {
    /// `kms:Decrypt` or `kms:GenerateDataKey` with its encryption context.
    Kms {
        action: String,
        context: BTreeMap<String, String>,
    },
    /// An S3 action on an object key, or `s3:ListBucket` with its prefix.
    S3 { action: String, key: String },
}

/// moto's recorder: POST /moto-api/recorder/<what> (it writes to
/// $MOTO_RECORDER_FILEPATH, set before the emulator starts).
fn recorder(aws: &Aws, what: &str) {
    ureq::post(format!("{}/moto-api/recorder/{what}", aws.server.url))
        .send_empty()
        .unwrap();
}

/// The KMS and S3 requests recorded since the last reset.
fn recorded(aws: &Aws) -> Vec<Request> {
    let mut response = ureq::get(format!("{}/moto-api/recorder/download-recording", aws.server.url))
        .call()
        .unwrap();
    let text = response
        .body_mut()
        .with_config()
        .limit(1 << 30)
        .read_to_string()
        .unwrap();
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .filter_map(|l| request(&serde_json::from_str(l).unwrap()))
        .collect()
}

fn request(entry: &serde_json::Value) -> Option<Request> {
    let header = |name: &str| {
        entry["headers"]
            .as_object()
            .unwrap()
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .and_then(|(_, v)| v.as_str())
    };
    let body = || -> Vec<u8> {
        let raw = entry["body"].as_str().unwrap_or_default();
        if entry["body_encoded"].as_bool() == Some(true) {
            base64::Engine::decode(&base64::engine::general_purpose::STANDARD, raw).unwrap()
        } else {
            raw.as_bytes().to_vec()
        }
    };
    if let Some(target) = header("X-Amz-Target") {
        let action = target.strip_prefix("TrentService.")?;
        if !matches!(action, "Decrypt" | "GenerateDataKey" | "Encrypt") {
            return None;
        }
        let json: serde_json::Value = serde_json::from_slice(&body()).unwrap();
        let context = json["EncryptionContext"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
                    .collect()
            })
            .unwrap_or_default();
        return Some(Request::Kms {
            action: format!("kms:{action}"),
            context,
        });
    }
    // S3, path style: /<bucket>/<key>?<query>.
    let url = entry["url"].as_str().unwrap();
    let path_and_query = url.splitn(4, '/').nth(3).unwrap_or_default();
    let (path, query) = path_and_query.split_once('?').unwrap_or((path_and_query, ""));
    let (_bucket, key) = path.split_once('/').unwrap_or((path, ""));
    let key = percent_decoded(key);
    let param = |name: &str| {
        query
            .split('&')
            .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
            .map(percent_decoded)
    };
    let method = entry["method"].as_str().unwrap();
    let action = match (method, key.is_empty()) {
        ("GET", true) if query.contains("list-type") || param("prefix").is_some() => {
            return Some(Request::S3 {
                action: "s3:ListBucket".into(),
                key: param("prefix").unwrap_or_default(),
            })
        }
        ("GET" | "HEAD", false) => "s3:GetObject",
        ("PUT" | "POST", false) => "s3:PutObject",
        ("DELETE", false) => "s3:DeleteObject",
        _ => return None,
    };
    Some(Request::S3 {
        action: action.into(),
        key,
    })
}

fn percent_decoded(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(if bytes[i] == b'+' { b' ' } else { bytes[i] });
        i += 1;
    }
    String::from_utf8(out).unwrap()
}

/// The IAM module's tables of paths (literal locals): secret_paths per role,
/// backup_paths, restore_paths, report_paths.
struct Paths {
    secrets: BTreeMap<String, Vec<String>>,
    backups: Vec<String>,
    restore: Vec<String>,
    reports: Vec<String>,
    /// The cluster marker: read and put by etcd, deleted by no role.
    marker: Vec<String>,
}

fn iam_local(name: &str) -> hcl::Value {
    let text = std::fs::read_to_string(repo().join("terraform/modules/iam/main.tf")).unwrap();
    let body: hcl::Body = hcl::from_str(&text).expect("the IAM module parses");
    let attr = body
        .blocks()
        .filter(|b| b.identifier() == "locals")
        .flat_map(|b| b.body().attributes())
        .find(|a| a.key() == name)
        .unwrap_or_else(|| panic!("local.{name} in terraform/modules/iam/main.tf"))
        .clone();
    hcl::eval::Evaluate::evaluate(attr.expr(), &hcl::eval::Context::new()).expect("a literal")
}

fn strings(v: &hcl::Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

fn paths() -> Paths {
    Paths {
        secrets: iam_local("secret_paths")
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), strings(v)))
            .collect(),
        backups: strings(&iam_local("backup_paths")),
        restore: strings(&iam_local("restore_paths")),
        reports: strings(&iam_local("report_paths")),
        marker: strings(&iam_local("marker_paths")),
    }
}

/// IAM's StringLike: `*` any run of characters, `?` any one.
fn like(pattern: &str, value: &str) -> bool {
    match pattern.chars().next() {
        None => value.is_empty(),
        Some('*') => (0..=value.len())
            .filter(|i| value.is_char_boundary(*i))
            .any(|i| like(&pattern[1..], &value[i..])),
        Some(c) => value
            .chars()
            .next()
            .is_some_and(|v| (c == '?' || c == v) && like(&pattern[c.len_utf8()..], &value[v.len_utf8()..])),
    }
}

fn any_like(patterns: &[String], value: &str) -> bool {
    patterns.iter().any(|p| like(p, value))
}

/// Whether the module's tables let `role` make the request: the conditions
/// terraform/modules/iam renders (environment, path, purpose; object keys).
fn fits(paths: &Paths, environment: &str, role: &str, request: &Request) -> bool {
    let own = paths.secrets.get(role).cloned().unwrap_or_default();
    let etcd = role == "etcd";
    match request {
        Request::Kms { action, context } => {
            let path = context.get("path").map(String::as_str).unwrap_or_default();
            if context.get("environment").map(String::as_str) != Some(environment) || path.is_empty() {
                return false;
            }
            match (action.as_str(), context.get("purpose").map(String::as_str)) {
                ("kms:Decrypt", None) => any_like(&own, path) || (etcd && any_like(&paths.restore, path)),
                ("kms:Decrypt" | "kms:GenerateDataKey", Some("etcd-backup")) => etcd && any_like(&paths.backups, path),
                ("kms:GenerateDataKey", None) => etcd && any_like(&paths.reports, path),
                _ => false,
            }
        }
        Request::S3 { action, key } => {
            let mut readable = own.clone();
            readable.push(format!("ignition/{role}.ign"));
            if etcd {
                readable.extend(paths.backups.iter().cloned());
            }
            match action.as_str() {
                "s3:GetObject" => any_like(&readable, key) || (etcd && any_like(&paths.marker, key)),
                "s3:ListBucket" => any_like(&readable, key),
                "s3:PutObject" => etcd && (any_like(&paths.backups, key) || any_like(&paths.marker, key)),
                "s3:DeleteObject" => etcd && any_like(&paths.backups, key) && !any_like(&paths.marker, key),
                _ => false,
            }
        }
    }
}

fn kms(action: &str, context: &[(&str, &str)]) -> Request {
    Request::Kms {
        action: action.into(),
        context: context.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
    }
}

#[test]
fn each_roles_data_key_is_decrypted_by_that_role_only() {
    // Format 4 (src/shared/secrets/bundle.rs): a role's data key for an
    // upload is bound to {environment, path: the role's scope}.
    let paths = paths();
    for role in [Role::Etcd, Role::Compute] {
        let scope = nodeboot::shared::secrets::bundle::scope(role).unwrap();
        let request = kms("kms:Decrypt", &[("environment", "example"), ("path", &scope)]);
        for reader in [Role::Etcd, Role::Compute] {
            assert_eq!(
                fits(&paths, "example", &reader.to_string(), &request),
                reader == role,
                "{reader} decrypting {role}'s data key ({scope})"
            );
        }
    }
}

#[test]
fn the_path_tables_refuse_what_a_role_must_never_ask() {
    let paths = paths();
    let backup = "backups/etcd/20261130T113500Z-r1234.snapshot";
    let refused = [
        // A worker opens none of the control plane's secrets and no backup.
        (
            "compute",
            kms("kms:Decrypt", &[("environment", "example"), ("path", "secure/ca.key")]),
        ),
        (
            "compute",
            kms(
                "kms:Decrypt",
                &[("environment", "example"), ("path", "secure/etcd/member-0.key")],
            ),
        ),
        (
            "compute",
            kms(
                "kms:Decrypt",
                &[("environment", "example"), ("path", backup), ("purpose", "etcd-backup")],
            ),
        ),
        (
            "compute",
            kms(
                "kms:Decrypt",
                &[("environment", "example"), ("path", "backups/etcd/restore/request")],
            ),
        ),
        (
            "compute",
            kms(
                "kms:GenerateDataKey",
                &[("environment", "example"), ("path", backup), ("purpose", "etcd-backup")],
            ),
        ),
        // Nor does the control plane open a worker's, another environment's,
        // or a secret without its path.
        (
            "etcd",
            kms(
                "kms:Decrypt",
                &[("environment", "example"), ("path", "compute/kube-proxy.kubeconfig")],
            ),
        ),
        (
            "etcd",
            kms("kms:Decrypt", &[("environment", "other"), ("path", "secure/ca.key")]),
        ),
        ("etcd", kms("kms:Decrypt", &[("environment", "example")])),
        // A backup's purpose binds its path; a node seals no secret and no restore request.
        (
            "etcd",
            kms(
                "kms:Decrypt",
                &[
                    ("environment", "example"),
                    ("path", "secure/ca.key"),
                    ("purpose", "etcd-backup"),
                ],
            ),
        ),
        (
            "etcd",
            kms(
                "kms:GenerateDataKey",
                &[("environment", "example"), ("path", "secure/ca.key")],
            ),
        ),
        (
            "etcd",
            kms(
                "kms:GenerateDataKey",
                &[("environment", "example"), ("path", "backups/etcd/restore/request")],
            ),
        ),
        (
            "compute",
            Request::S3 {
                action: "s3:GetObject".into(),
                key: "secure/ca.key".into(),
            },
        ),
        (
            "compute",
            Request::S3 {
                action: "s3:GetObject".into(),
                key: backup.into(),
            },
        ),
        (
            "etcd",
            Request::S3 {
                action: "s3:PutObject".into(),
                key: "secure/ca.key".into(),
            },
        ),
        (
            "bastion",
            Request::S3 {
                action: "s3:GetObject".into(),
                key: "common/ca.crt".into(),
            },
        ),
        // No role deletes the cluster marker (the bootstrap guard's evidence).
        (
            "etcd",
            Request::S3 {
                action: "s3:DeleteObject".into(),
                key: "backups/etcd-cluster/marker.json".into(),
            },
        ),
        (
            "compute",
            Request::S3 {
                action: "s3:PutObject".into(),
                key: "backups/etcd-cluster/marker.json".into(),
            },
        ),
    ];
    for (role, request) in &refused {
        assert!(!fits(&paths, "example", role, request), "{role} may {request:?}");
    }
    // And the tables do let a role open its own.
    assert!(fits(
        &paths,
        "example",
        "compute",
        &kms(
            "kms:Decrypt",
            &[("environment", "example"), ("path", "compute/kubelet.key")]
        )
    ));
    assert!(fits(
        &paths,
        "example",
        "etcd",
        &kms(
            "kms:Decrypt",
            &[("environment", "example"), ("path", backup), ("purpose", "etcd-backup")]
        )
    ));
}

/// The IAM action that allows an API action the emulator counted.
fn iam_action(api: &str) -> String {
    match api {
        "GetObject" | "HeadObject" => "s3:GetObject".into(),
        // A multipart upload (the streamed backups) is s3:PutObject's.
        "PutObject" | "CreateMultipartUpload" | "UploadPart" | "CompleteMultipartUpload" => "s3:PutObject".into(),
        "DeleteObject" => "s3:DeleteObject".into(),
        "ListObjectsV2" | "ListObjects" => "s3:ListBucket".into(),
        "Decrypt" | "GenerateDataKey" | "DescribeKey" | "Encrypt" => format!("kms:{api}"),
        a if a.starts_with("Describe") || a.starts_with("Attach") || a.starts_with("Detach") || a == "CreateTags" => {
            format!("ec2:{a}")
        }
        other => panic!("no IAM mapping for API action {other}: add it here and to the role's policy"),
    }
}

/// `local.nodeboot_actions` of the IAM module: role -> every action of every group.
fn policy_actions() -> BTreeMap<String, BTreeSet<String>> {
    let text = std::fs::read_to_string(repo().join("terraform/modules/iam/main.tf")).unwrap();
    let body: hcl::Body = hcl::from_str(&text).expect("the IAM module parses");
    let locals = body
        .blocks()
        .find(|b| b.identifier() == "locals" && b.body().attributes().any(|a| a.key() == "nodeboot_actions"))
        .expect("locals with nodeboot_actions");
    let attr = locals
        .body()
        .attributes()
        .find(|a| a.key() == "nodeboot_actions")
        .unwrap();
    let value: hcl::Value =
        hcl::eval::Evaluate::evaluate(attr.expr(), &hcl::eval::Context::new()).expect("a literal map");
    let mut out = BTreeMap::new();
    for (role, groups) in value.as_object().unwrap() {
        let mut actions = BTreeSet::new();
        for list in groups.as_object().unwrap().values() {
            for a in list.as_array().unwrap() {
                let a = a.as_str().unwrap().to_string();
                assert!(!a.contains('*'), "{role}: wildcard action {a}");
                actions.insert(a);
            }
        }
        out.insert(role.clone(), actions);
    }
    out
}

/// One pass of the node's backup service (`nodeboot etcd backup --once`)
/// against a real etcd 3.5 member with this node's own certificate, after
/// an old backup that retention prunes: what a backup pass calls.
fn backup_once(node: &Node, aws: &Aws) -> BTreeSet<String> {
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(node.root().join("etc/nodeboot/node.json")).unwrap()).unwrap();
    let bucket = config["secrets_bucket"].as_str().unwrap().to_string();
    let member = node.claim().unwrap()["member"].as_u64().unwrap() as u32;
    let tls = common::etcd::member_tls(&node.root().join("run/nodeboot/secrets/etcd"), member);
    let dir = tempfile::tempdir().unwrap();
    let ports = common::etcd::Ports::free();
    let etcd = common::etcd::Member::start(dir.path(), &tls, "m", &ports, &format!("m={}", ports.peer_url()), "new");
    let client = nodeboot::shared::etcd::Client::new(vec![etcd.client_url.clone()], &tls).unwrap();
    common::etcd::wait_until("etcd answers", std::time::Duration::from_secs(30), || {
        nodeboot::shared::etcd::Cluster::status(&client, &etcd.client_url).is_ok_and(|s| s.has_leader())
    });
    let s3 = aws_sdk_s3::Client::new(&common::secrets_bed::sdk_config(&aws.server.url));
    // Two earlier backups of this hour by the bucket's clock (their names'
    // times do not count): the first is the hour's, the second goes.
    let (first, old) = (
        "backups/etcd/20200101T000000Z-r1.snapshot",
        "backups/etcd/20200101T000100Z-r1.snapshot",
    );
    for key in [first, old] {
        runtime()
            .block_on(
                s3.put_object()
                    .bucket(&bucket)
                    .key(key)
                    .body(b"old".to_vec().into())
                    .send(),
            )
            .unwrap();
    }
    // Due by the bucket's time: older than the interval.
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_nodeboot"));
    cmd.arg("etcd")
        .arg("backup")
        .arg("--root")
        .arg(node.root())
        .args(["--once", "--interval", "1s", "--endpoint", &etcd.client_url])
        .envs(aws.env());
    let seen = actions_of(aws, &mut cmd);
    let listed = runtime()
        .block_on(s3.list_objects_v2().bucket(&bucket).prefix("backups/etcd/").send())
        .unwrap();
    let keys: Vec<String> = listed
        .contents()
        .iter()
        .filter_map(|o| o.key().map(str::to_string))
        .collect();
    assert!(!keys.iter().any(|k| k == old), "the old backup was pruned: {keys:?}");
    assert!(keys.iter().any(|k| k == first), "the hour's first is kept: {keys:?}");
    assert_eq!(keys.len(), 2, "and one fresh backup: {keys:?}");
    seen
}

fn operator(dir: &Path, aws: &Aws, args: &[&str]) {
    let out = Command::new(env!("CARGO_BIN_EXE_nodeboot"))
        .args(args)
        .current_dir(dir)
        .envs(aws.env())
        .env_remove("AWS_PROFILE")
        .output()
        .unwrap();
    assert!(out.status.success(), "{args:?}: {}", stderr(&out));
}

struct UnmountOnDrop(std::path::PathBuf);

impl Drop for UnmountOnDrop {
    fn drop(&mut self) {
        unmount_all(&self.0);
    }
}

fn sync_once(node: &Node, aws: &Aws) -> Command {
    // A control-plane node's sync asks systemd to apply changed add-ons
    // (`systemctl start --no-block nodeboot-addons.service`); no systemd
    // manages this host's test node, so a stand-in accepts the job.
    let bin = node.root().join("test-bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::write(bin.join("systemctl"), "#!/bin/sh\nexit 0\n").unwrap();
    std::fs::set_permissions(
        bin.join("systemctl"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_nodeboot"));
    cmd.arg("sync")
        .arg("--root")
        .arg(node.root())
        .args(["manifests", "--once"])
        .envs(aws.env())
        .env("PATH", path);
    cmd
}

#[test]
fn each_roles_iam_policy_allows_exactly_what_its_boot_calls() {
    // The etcd boot includes the mount stage, on a loop device.
    if !require_root("each_roles_iam_policy_allows_exactly_what_its_boot_calls") {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    // moto writes what it records here (read when it starts); the only test
    // of this binary that starts an emulator.
    std::env::set_var("MOTO_RECORDER_FILEPATH", work.path().join("moto-recording.jsonl"));
    let aws = Aws::start(0);
    recorder(&aws, "start-recording");
    let env_path = example_env();
    let env_arg = env_path.to_str().unwrap();
    // The operator's side: buckets and key, PKI, secrets and manifests.
    operator(work.path(), &aws, &["prereqs", "--env", env_arg]);
    operator(work.path(), &aws, &["pki", "--env", env_arg]);
    operator(
        work.path(),
        &aws,
        &["secrets", "upload", "--env", env_arg, "common", "secure", "compute"],
    );
    operator(work.path(), &aws, &["render", "--env", env_arg, "--out", "out"]);
    operator(
        work.path(),
        &aws,
        &["manifests", "upload", "--env", env_arg, "out/manifests"],
    );

    let env = environment("example", 3);
    let vpc = Vpc::create(&aws, &env);
    create_members(&aws, &env, &vpc);
    let mut seen: BTreeMap<Role, BTreeSet<String>> = BTreeMap::new();
    let mut requests: BTreeMap<Role, Vec<Request>> = BTreeMap::new();
    RECORDED.with(|r| r.borrow_mut().clear());

    // etcd: the whole boot, then a replacement that takes the member over.
    let first = Node::launch_role(&aws, &env, &vpc, "eu-west-1a", Role::Etcd);
    let etcd = seen.entry(Role::Etcd).or_default();
    let volume = LoopVolume::new(16);
    for stage in [&["discover"][..], &["attach", "--wait-timeout", "30s"]] {
        etcd.extend(actions_of(&aws, &mut first.stage_cmd(&aws, stage, &[])));
    }
    plug_volume(&first, first.claim().unwrap()["volume_id"].as_str().unwrap(), &volume);
    {
        let _unmount = UnmountOnDrop(first.root().to_path_buf());
        etcd.extend(actions_of(
            &aws,
            &mut first.stage_cmd(&aws, &["mount", "--skip-network", "--wait-timeout", "5s"], &[]),
        ));
    }
    assert!(
        etcd.contains("CreateTags"),
        "the mount stage tagged the volume it formatted: {etcd:?}"
    );
    for stage in [&["secrets"][..], &["etcd"]] {
        etcd.extend(actions_of(&aws, &mut first.stage_cmd(&aws, stage, &[])));
    }
    etcd.extend(actions_of(&aws, &mut sync_once(&first, &aws)));
    etcd.extend(backup_once(&first, &aws));
    assert!(
        etcd.contains("PutObject") && etcd.contains("DeleteObject"),
        "the backup service wrote and pruned: {etcd:?}"
    );
    first.stop(&aws);
    let second = Node::launch_role(&aws, &env, &vpc, "eu-west-1a", Role::Etcd);
    for stage in [
        &["discover"][..],
        &["attach", "--wait-timeout", "30s", "--detach-grace", "2s"],
    ] {
        etcd.extend(actions_of(&aws, &mut second.stage_cmd(&aws, stage, &[])));
    }
    assert!(etcd.contains("DetachVolume"), "the takeover path ran: {etcd:?}");
    // A node that finds no free member gives up (node.json's bound, here 1 s)
    // and powers itself off: no AWS call, so no permission.
    let surplus = Node::launch_role(&aws, &env, &vpc, "eu-west-1a", Role::Etcd);
    surplus.set_boot_bounds(60, 1);
    join_auto_scaling_group(&aws, &surplus, "iam-etcd-a");
    etcd.extend(actions_of(&aws, &mut surplus.stage_cmd(&aws, &["discover"], &[])));
    aws.reset_calls();
    let out = surplus.stage_cmd(&aws, &["--retry", "attach"], &[]).output().unwrap();
    assert_eq!(out.status.code(), Some(10), "{}", stderr(&out));
    assert!(surplus.powered_off(), "the give-up path ran: {}", stderr(&out));
    etcd.extend(aws.calls().into_keys());

    requests.insert(Role::Etcd, RECORDED.with(|r| r.take()));

    // compute: discover, secrets, manifests.
    let worker = Node::launch_role(&aws, &env, &vpc, "eu-west-1b", Role::Compute);
    let compute = seen.entry(Role::Compute).or_default();
    for stage in [&["discover"][..], &["secrets"]] {
        compute.extend(actions_of(&aws, &mut worker.stage_cmd(&aws, stage, &[])));
    }
    compute.extend(actions_of(&aws, &mut sync_once(&worker, &aws)));
    requests.insert(Role::Compute, RECORDED.with(|r| r.take()));

    let policy = policy_actions();
    for (role, apis) in &seen {
        let derived: BTreeSet<String> = apis.iter().map(|a| iam_action(a)).collect();
        let allowed = &policy[role.as_str()];
        assert_eq!(
            &derived, allowed,
            "{role}: the code calls {derived:?} but the policy allows {allowed:?}"
        );
    }
    assert!(policy["bastion"].is_empty(), "the bastion calls nothing");

    // Every context and key a role really sent fits the module's tables.
    let paths = paths();
    let refused: Vec<String> = requests
        .iter()
        .flat_map(|(role, requests)| requests.iter().map(move |r| (role, r)))
        .filter(|(role, request)| !fits(&paths, "example", role.as_str(), request))
        .map(|(role, request)| format!("{role}: {request:?}"))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    assert!(
        refused.is_empty(),
        "requests the boot really sent that the policies refuse:\n{}",
        refused.join("\n")
    );
    // An etcd node fetches and opens its own member's key only (both nodes
    // here claimed member 0, in eu-west-1a): modules/iam denies every other
    // zone's member keys, which must never stop a boot.
    let member_keys: BTreeSet<&str> = requests[&Role::Etcd]
        .iter()
        .filter_map(|r| match r {
            Request::S3 { key, .. } => Some(key.as_str()),
            Request::Kms { context, .. } => context.get("path").map(String::as_str),
        })
        .filter(|key| key.starts_with("secure/etcd/member-") && key.ends_with(".key"))
        .collect();
    assert_eq!(member_keys, BTreeSet::from(["secure/etcd/member-0.key"]));
    let decrypted = |role: Role, prefix: &str| {
        requests[&role].iter().any(|r| matches!(r, Request::Kms { action, context } if action == "kms:Decrypt" && context.get("path").is_some_and(|p| p.starts_with(prefix))))
    };
    // Envelope format 4: what an upload sealed for a role (common/, its
    // folder, its manifests) opens with one Decrypt of the role's data key,
    // bound to the role's scope; a member's key keeps its own (format 1).
    let decrypts = |role: Role| -> BTreeSet<String> {
        requests[&role]
            .iter()
            .filter_map(|r| match r {
                Request::Kms { action, context } if action == "kms:Decrypt" => context.get("path").cloned(),
                _ => None,
            })
            .collect()
    };
    assert!(
        decrypted(Role::Etcd, "secure/") && decrypts(Role::Etcd).contains("secure/etcd/member-0.key"),
        "{:?}",
        requests[&Role::Etcd]
    );
    assert_eq!(
        decrypts(Role::Compute),
        BTreeSet::from(["compute/".to_string()]),
        "{:?}",
        requests[&Role::Compute]
    );
    let sealed_backup = requests[&Role::Etcd].iter().any(|r| matches!(r, Request::Kms { action, context } if action == "kms:GenerateDataKey" && context.get("purpose").map(String::as_str) == Some("etcd-backup")));
    assert!(
        sealed_backup,
        "the backup pass sealed a backup: {:?}",
        requests[&Role::Etcd]
    );
    let marker_written = requests[&Role::Etcd].iter().any(
        |r| matches!(r, Request::S3 { action, key } if action == "s3:PutObject" && key == "backups/etcd-cluster/marker.json"),
    );
    assert!(
        marker_written,
        "the backup pass wrote the cluster marker: {:?}",
        requests[&Role::Etcd]
    );
}
