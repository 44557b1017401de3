//! Least privilege, derived from what the code really calls: boot each role
//! against the emulator (the etcd role including a takeover), collect the
//! AWS actions the emulator saw from nodeboot, and check that the role's
//! IAM policy in terraform/modules/iam allows exactly those.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Command, Output};

use common::bed::*;
use common::*;
use nodeboot::role::Role;

/// Runs a nodeboot command and returns the AWS actions it made.
fn actions_of(aws: &Aws, cmd: &mut Command) -> BTreeSet<String> {
    aws.reset_calls();
    let out: Output = cmd.output().unwrap();
    assert!(out.status.success(), "{cmd:?}: {}", stderr(&out));
    aws.calls().into_keys().collect()
}

/// The IAM action that allows an API action the emulator counted.
fn iam_action(api: &str) -> String {
    match api {
        "GetObject" | "HeadObject" => "s3:GetObject".into(),
        "PutObject" => "s3:PutObject".into(),
        "DeleteObject" => "s3:DeleteObject".into(),
        "ListObjectsV2" | "ListObjects" => "s3:ListBucket".into(),
        "Decrypt" | "GenerateDataKey" | "DescribeKey" | "Encrypt" => format!("kms:{api}"),
        "SetInstanceHealth" => "autoscaling:SetInstanceHealth".into(),
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
    let client = nodeboot::etcd::Client::new(vec![etcd.client_url.clone()], &tls).unwrap();
    common::etcd::wait_until("etcd answers", std::time::Duration::from_secs(30), || {
        nodeboot::etcd::Cluster::status(&client, &etcd.client_url).is_ok_and(|s| s.has_leader())
    });
    let s3 = aws_sdk_s3::Client::new(&common::secrets_bed::sdk_config(&aws.server.url));
    let old = "backups/etcd/20200101T000000Z-r1.snapshot";
    runtime()
        .block_on(
            s3.put_object()
                .bucket(&bucket)
                .key(old)
                .body(b"old".to_vec().into())
                .send(),
        )
        .unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_nodeboot"));
    cmd.arg("etcd")
        .arg("backup")
        .arg("--root")
        .arg(node.root())
        .args(["--once", "--endpoint", &etcd.client_url])
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
    assert_eq!(keys.len(), 1, "one fresh backup: {keys:?}");
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
    let aws = Aws::start(0);
    let work = tempfile::tempdir().unwrap();
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
    // and marks itself Unhealthy for its auto-scaling group.
    let surplus = Node::launch_role(&aws, &env, &vpc, "eu-west-1a", Role::Etcd);
    surplus.set_boot_bounds(60, 1);
    join_auto_scaling_group(&aws, &surplus, "iam-etcd-a");
    etcd.extend(actions_of(&aws, &mut surplus.stage_cmd(&aws, &["discover"], &[])));
    aws.reset_calls();
    let out = surplus.stage_cmd(&aws, &["--retry", "attach"], &[]).output().unwrap();
    assert_eq!(out.status.code(), Some(10), "{}", stderr(&out));
    etcd.extend(aws.calls().into_keys());
    assert!(etcd.contains("SetInstanceHealth"), "the give-up path ran: {etcd:?}");

    // compute: discover, secrets, manifests.
    let worker = Node::launch_role(&aws, &env, &vpc, "eu-west-1b", Role::Compute);
    let compute = seen.entry(Role::Compute).or_default();
    for stage in [&["discover"][..], &["secrets"]] {
        compute.extend(actions_of(&aws, &mut worker.stage_cmd(&aws, stage, &[])));
    }
    compute.extend(actions_of(&aws, &mut sync_once(&worker, &aws)));

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
}
