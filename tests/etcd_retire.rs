//! `nodeboot etcd retire-member` (issue 20 item 10): lowering `etcd_count`
//! with `prevent_destroy` on the members' volumes, ENIs and address
//! reservations. Against the bed's EC2 emulator, with real etcd 3.5 and,
//! for the plan, the real Terraform and AWS provider (the local plugin
//! directory, as tests/terraform) over the repository's `modules/etcd`.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use common::bed::{auto_scaling_client, create_members, environment, join_auto_scaling_group, runtime, Aws, Node, Vpc};
use common::etcd::{member_tls, pki, wait_until, Member, Ports};
use common::{example_with, repo, stderr};
use nodeboot::shared::cloud::tags;
use nodeboot::shared::etcd::{Client, Cluster};

const NAME: &str = "ret";

/// The environment file `ret` with `etcd_count` members (the count the
/// operator has just lowered it to).
fn env_file(dir: &Path, etcd_count: u32) -> PathBuf {
    let path = dir.join(format!("{NAME}.tfvars"));
    let text = example_with(&[
        ("environment", &format!("\"{NAME}\"")),
        ("aws_profile", &format!("\"{NAME}\"")),
        ("etcd_count", &etcd_count.to_string()),
    ]);
    std::fs::write(&path, text).unwrap();
    path
}

fn retire(aws: &Aws, env: &Path, secrets: &Path, endpoints: &[String], args: &[&str], fail_at: Option<&str>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_nodeboot"));
    cmd.args(["etcd", "retire-member", "--env"])
        .arg(env)
        .arg("--dir")
        .arg(secrets)
        .arg(format!("--endpoints={}", endpoints.join(",")))
        .args(args)
        .envs(aws.env())
        .env("NODEBOOT_LOG", "info")
        .env_remove("AWS_PROFILE");
    if let Some(point) = fail_at {
        cmd.env("NODEBOOT_FAIL_AT", point);
    }
    cmd.output().unwrap()
}

/// A real etcd cluster of `n` members named as the environment names them
/// (`ret-etcd-<i>`), every member certificate naming 127.0.0.1.
fn etcd_cluster(dir: &Path, etcd_dir: &Path, n: u32) -> (Vec<Member>, Vec<String>) {
    let ports: Vec<Ports> = (0..n).map(|_| Ports::free()).collect();
    let initial: Vec<String> = ports
        .iter()
        .enumerate()
        .map(|(i, p)| format!("{NAME}-etcd-{i}={}", p.peer_url()))
        .collect();
    let members: Vec<Member> = ports
        .iter()
        .enumerate()
        .map(|(i, p)| {
            Member::start(
                dir,
                &member_tls(etcd_dir, 0),
                &format!("{NAME}-etcd-{i}"),
                p,
                &initial.join(","),
                "new",
            )
        })
        .collect();
    let urls: Vec<String> = ports.iter().map(Ports::client_url).collect();
    (members, urls)
}

fn describe_volume_tags(aws: &Aws, id: &str) -> Option<Vec<(String, String)>> {
    runtime().block_on(async {
        let out = aws.ec2.describe_volumes().volume_ids(id).send().await;
        let out = out.ok()?;
        let v = out.volumes().first()?;
        (v.state().map(|s| s.as_str()) != Some("deleted")).then(|| {
            v.tags()
                .iter()
                .map(|t| (t.key().unwrap().to_string(), t.value().unwrap().to_string()))
                .collect()
        })
    })
}

fn eni_exists(aws: &Aws, id: &str) -> bool {
    runtime().block_on(async {
        aws.ec2
            .describe_network_interfaces()
            .network_interface_ids(id)
            .send()
            .await
            .is_ok_and(|o| !o.network_interfaces().is_empty())
    })
}

/// The snapshots tagged as member `index`'s final one.
fn final_snapshots(aws: &Aws, index: u32) -> Vec<(String, String)> {
    runtime().block_on(async {
        let out = aws
            .ec2
            .describe_snapshots()
            .owner_ids("self")
            .filters(
                aws_sdk_ec2::types::Filter::builder()
                    .name(format!("tag:{}", "nodeboot.io/final-snapshot-of"))
                    .values(format!("{NAME}-etcd-{index}"))
                    .build(),
            )
            .send()
            .await
            .unwrap();
        out.snapshots()
            .iter()
            .map(|s| {
                (
                    s.snapshot_id().unwrap().to_string(),
                    s.volume_id().unwrap_or_default().to_string(),
                )
            })
            .collect()
    })
}

fn attach_volume_and_eni(aws: &Aws, node: &Node, volume: &str, eni: &str) {
    runtime().block_on(async {
        aws.ec2
            .attach_volume()
            .volume_id(volume)
            .instance_id(&node.instance_id)
            .device("/dev/xvdf")
            .send()
            .await
            .unwrap();
        aws.ec2
            .attach_network_interface()
            .network_interface_id(eni)
            .instance_id(&node.instance_id)
            .device_index(1)
            .send()
            .await
            .unwrap();
    });
}

#[test]
fn a_node_in_a_retired_members_zone_attaches_and_the_retired_pair_is_never_claimed() {
    let dir = tempfile::tempdir().unwrap();
    let etcd_dir = pki(dir.path());
    let secrets = dir.path().join("secrets");
    // Four members (zones a, b, c, a); the operator lowers etcd_count to 3.
    let aws = Aws::start(0);
    let env = environment(NAME, 4);
    let vpc = Vpc::create(&aws, &env);
    let members = create_members(&aws, &env, &vpc);
    let retired = members[3].clone();
    assert_eq!(retired.zone, members[0].zone);
    let (_etcd, urls) = etcd_cluster(dir.path(), &etcd_dir, 4);
    let client = Client::new(urls.clone(), &member_tls(&etcd_dir, 0)).unwrap();
    wait_until("a leader", Duration::from_secs(30), || client.put(b"/up", b"1").is_ok());
    // Member 3's node holds its pair, in its zone's autoscaling group.
    let holder = Node::launch(&aws, &env, &vpc, &retired.zone);
    attach_volume_and_eni(&aws, &holder, &retired.volume_id, &retired.eni_id);
    join_auto_scaling_group(&aws, &holder, "ret-etcd-a");
    let file = env_file(dir.path(), 3);

    // Without --yes: says what it would do, changes nothing.
    let out = retire(&aws, &file, &secrets, &urls, &["3"], None);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(stderr(&out).contains("--yes"), "{}", stderr(&out));
    assert_eq!(client.member_list().unwrap().len(), 4);
    // A member the environment file still counts is refused.
    let out = retire(&aws, &file, &secrets, &urls, &["2", "--yes"], None);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(stderr(&out).contains("etcd_count"), "{}", stderr(&out));

    // Killed once it has untagged the pair (before the deletions): a node
    // in the zone never sees the retired pair, whatever happens next.
    let out = retire(
        &aws,
        &file,
        &secrets,
        &urls,
        &["3", "--yes"],
        Some("retire:after-retag"),
    );
    assert!(!out.status.success(), "{}", stderr(&out));
    let names: Vec<String> = client.member_list().unwrap().into_iter().map(|m| m.name).collect();
    assert_eq!(names.len(), 3, "removed from etcd first: {names:?}");
    assert!(!names.contains(&format!("{NAME}-etcd-3")), "{names:?}");
    let tags_now = describe_volume_tags(&aws, &retired.volume_id).expect("not deleted yet");
    assert!(
        !tags_now.iter().any(|(k, _)| k == tags::MEMBER || k == tags::ROLE),
        "{tags_now:?}"
    );
    let node = Node::launch(&aws, &env, &vpc, &retired.zone);
    assert!(node.stage(&aws, &["discover"]).status.success());
    let out = node.stage(&aws, &["attach", "--wait-timeout", "30s", "--detach-grace", "2s"]);
    assert!(
        out.status.success(),
        "attach in the retired member's zone: {}",
        stderr(&out)
    );
    assert_eq!(node.claim().unwrap()["member"], 0, "{:?}", node.claim());

    // Run again: converges. The holder is terminated through its group (one
    // fewer desired), a final snapshot tagged for the operator, the pair gone.
    let out = retire(&aws, &file, &secrets, &urls, &["3", "--yes"], None);
    let err = format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
    assert!(out.status.success(), "{err}");
    assert_eq!(holder.state(&aws), "terminated", "{err}");
    let snapshots = final_snapshots(&aws, 3);
    assert_eq!(snapshots.len(), 1, "{snapshots:?}");
    assert_eq!(snapshots[0].1, retired.volume_id);
    assert!(err.contains(&snapshots[0].0), "the message names the snapshot: {err}");
    assert_eq!(describe_volume_tags(&aws, &retired.volume_id), None, "volume deleted");
    assert!(!eni_exists(&aws, &retired.eni_id), "ENI deleted");
    for m in &members[..3] {
        assert!(describe_volume_tags(&aws, &m.volume_id).is_some() && eni_exists(&aws, &m.eni_id));
    }
    let asg = auto_scaling_client(&aws);
    let group = runtime().block_on(async {
        asg.describe_auto_scaling_groups()
            .auto_scaling_group_names("ret-etcd-a")
            .send()
            .await
            .unwrap()
    });
    assert_eq!(group.auto_scaling_groups()[0].desired_capacity(), Some(0));
    // A third run finds nothing left to do.
    let out = retire(&aws, &file, &secrets, &urls, &["3", "--yes"], None);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(final_snapshots(&aws, 3).len(), 1, "no second snapshot");
}

/// What the Terraform README's old route left (`terraform state rm`, the
/// ENI deleted, the volume kept for its snapshot): a tagged volume without
/// its ENI stops every etcd node of its zone in attach (exit 14). Retiring
/// the member clears it.
#[test]
fn a_half_pair_left_by_the_old_state_rm_route_stops_attach_until_retire_member() {
    let dir = tempfile::tempdir().unwrap();
    let etcd_dir = pki(dir.path());
    let secrets = dir.path().join("secrets");
    let aws = Aws::start(0);
    let env = environment(NAME, 4);
    let vpc = Vpc::create(&aws, &env);
    let members = create_members(&aws, &env, &vpc);
    let retired = members[3].clone();
    runtime().block_on(async {
        aws.ec2
            .delete_network_interface()
            .network_interface_id(&retired.eni_id)
            .send()
            .await
            .unwrap();
    });
    let node = Node::launch(&aws, &env, &vpc, &retired.zone);
    assert!(node.stage(&aws, &["discover"]).status.success());
    let attach = |node: &Node| node.stage(&aws, &["attach", "--wait-timeout", "30s", "--detach-grace", "2s"]);
    let out = attach(&node);
    assert_eq!(out.status.code(), Some(14), "{}", stderr(&out));
    assert!(stderr(&out).contains(&retired.volume_id), "{}", stderr(&out));

    // Member 3 left etcd before (a cluster of three answers).
    let (_etcd, urls) = etcd_cluster(dir.path(), &etcd_dir, 3);
    let client = Client::new(urls.clone(), &member_tls(&etcd_dir, 0)).unwrap();
    wait_until("a leader", Duration::from_secs(30), || client.put(b"/up", b"1").is_ok());
    let out = retire(&aws, &env_file(dir.path(), 3), &secrets, &urls, &["3", "--yes"], None);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(final_snapshots(&aws, 3).len(), 1);
    assert_eq!(describe_volume_tags(&aws, &retired.volume_id), None);
    let out = attach(&node);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(node.claim().unwrap()["member"], 0, "{:?}", node.claim());
}

// ---- the plan, with the real Terraform ------------------------------------

fn plugin_dir() -> PathBuf {
    PathBuf::from(std::env::var("NODEBOOT_TF_PLUGIN_DIR").unwrap_or_else(|_| "/opt/tf-plugins".into()))
}

fn terraform(dir: &Path, args: &[&str]) -> Output {
    Command::new("terraform")
        .args(args)
        .arg("-no-color")
        .current_dir(dir)
        .env("TF_IN_AUTOMATION", "1")
        .env("CHECKPOINT_DISABLE", "1")
        .output()
        .expect("terraform on PATH")
}

const TARGETS: [&str; 3] = [
    "-target=module.etcd.aws_ebs_volume.member",
    "-target=module.etcd.aws_network_interface.member",
    "-target=module.etcd.aws_ec2_subnet_cidr_reservation.member",
];

/// A root module over a copy of the repository's `modules/etcd`, its
/// provider pointed at the emulator. The plans target the members'
/// resources (the emulator has no Data Lifecycle Manager); `prevent_destroy`
/// and the refresh are per resource, as in the whole tree's plan.
fn terraform_root(dir: &Path, aws: &Aws, env: &nodeboot::operator::env::Environment, vpc: &Vpc) -> PathBuf {
    let root = dir.join("tf");
    let modules = root.join("modules");
    std::fs::create_dir_all(&modules).unwrap();
    let copied = Command::new("cp")
        .arg("-r")
        .arg(repo().join("terraform/modules/etcd"))
        .arg(repo().join("terraform/modules/node-group"))
        .arg(&modules)
        .status()
        .unwrap();
    assert!(copied.success());
    let config = common::secrets_bed::sdk_config(&aws.server.url);
    let kms = runtime().block_on(async {
        let key = aws_sdk_kms::Client::new(&config).create_key().send().await.unwrap();
        key.key_metadata().unwrap().arn().unwrap().to_string()
    });
    let quote = |v: Vec<String>| v.iter().map(|s| format!("{s:?}")).collect::<Vec<_>>().join(", ");
    let zones = quote(env.availability_zones.clone());
    let secure = quote(env.subnets.secure.iter().map(|c| c.to_string()).collect());
    let ids = quote(
        env.availability_zones
            .iter()
            .map(|z| vpc.subnets[z].0.clone())
            .collect(),
    );
    let url = &aws.server.url;
    let vpc_id = runtime().block_on(async {
        let subnet = &vpc.subnets[&env.availability_zones[0]].0;
        let out = aws.ec2.describe_subnets().subnet_ids(subnet).send().await.unwrap();
        out.subnets()[0].vpc_id().unwrap().to_string()
    });
    let main = format!(
        r#"
terraform {{
  required_providers {{
    aws = {{ source = "hashicorp/aws" }}
  }}
}}

variable "etcd_count" {{
  type = number
}}

provider "aws" {{
  region                      = "eu-west-1"
  access_key                  = "testing"
  secret_key                  = "testing"
  skip_credentials_validation = true
  skip_requesting_account_id  = true
  skip_metadata_api_check     = true
  skip_region_validation      = true
  endpoints {{
    ec2         = "{url}"
    sts         = "{url}"
    iam         = "{url}"
    autoscaling = "{url}"
  }}
}}

module "etcd" {{
  source                = "./modules/etcd"
  environment           = "{NAME}"
  availability_zones    = [{zones}]
  vpc_id                = "{vpc_id}"
  secure_subnets        = [{secure}]
  secure_subnet_ids     = [{ids}]
  etcd_count            = var.etcd_count
  instance_type         = "t3.medium"
  ami_id                = "ami-12c6146b"
  instance_profile_name = "unused"
  kms_key_arn           = "{kms}"
  target_group_arns     = []
  user_data             = base64encode("{{}}")
}}
"#
    );
    std::fs::write(root.join("main.tf"), main).unwrap();
    let init = terraform(
        &root,
        &[
            "init",
            "-input=false",
            &format!("-plugin-dir={}", plugin_dir().display()),
        ],
    );
    assert!(
        init.status.success(),
        "terraform init: {}{}",
        String::from_utf8_lossy(&init.stdout),
        stderr(&init)
    );
    root
}

fn plan(root: &Path, count: u32) -> (bool, String) {
    let var = format!("-var=etcd_count={count}");
    let mut args = vec!["plan", "-input=false", "-refresh=true", &var];
    args.extend(TARGETS);
    let out = terraform(root, &args);
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
    (out.status.success(), text)
}

#[test]
fn lowering_etcd_count_plans_after_retire_member_and_destroys_no_other_member() {
    if std::env::var("NODEBOOT_SKIP_TF_VALIDATE").as_deref() == Ok("1") {
        eprintln!("NODEBOOT_SKIP_TF_VALIDATE=1: the Terraform plan test is opted out, as tests/terraform's");
        return;
    }
    if !plugin_dir().is_dir() {
        panic!(
            "{} does not exist: the AWS provider's plugin directory (NODEBOOT_TF_PLUGIN_DIR)",
            plugin_dir().display()
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let etcd_dir = pki(dir.path());
    let secrets = dir.path().join("secrets");
    let aws = Aws::start(0);
    let env = environment(NAME, 3);
    let vpc = Vpc::create(&aws, &env);
    let root = terraform_root(dir.path(), &aws, &env, &vpc);
    let var = "-var=etcd_count=3".to_string();
    let mut apply = vec!["apply", "-input=false", "-auto-approve", &var];
    apply.extend(TARGETS);
    let out = terraform(&root, &apply);
    assert!(
        out.status.success(),
        "apply: {}{}",
        String::from_utf8_lossy(&out.stdout),
        stderr(&out)
    );
    let (ok, text) = plan(&root, 3);
    assert!(
        ok && text.contains("No changes"),
        "the emulator reads back what Terraform wrote:\n{text}"
    );

    // Today: etcd_count = 2 stops at prevent_destroy.
    let (ok, text) = plan(&root, 2);
    assert!(!ok, "{text}");
    let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        flat.contains("Resource module.etcd.aws_ebs_volume.member[2] has lifecycle.prevent_destroy"),
        "{text}"
    );
    for i in [0, 1] {
        assert!(!flat.contains(&format!("member[{i}] will be destroyed")), "{text}");
        assert!(!flat.contains(&format!("member[{i}] must be replaced")), "{text}");
    }

    // The sequence: retire member 2 (a real cluster of three), then plan.
    let (_etcd, urls) = etcd_cluster(dir.path(), &etcd_dir, 3);
    let client = Client::new(urls.clone(), &member_tls(&etcd_dir, 0)).unwrap();
    wait_until("a leader", Duration::from_secs(30), || client.put(b"/up", b"1").is_ok());
    let file = env_file(dir.path(), 2);
    let out = retire(&aws, &file, &secrets, &urls, &["2", "--yes"], None);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(client.member_list().unwrap().len(), 2);
    assert_eq!(final_snapshots(&aws, 2).len(), 1);
    let (ok, text) = plan(&root, 2);
    assert!(ok, "{text}");
    assert!(
        text.contains("No changes"),
        "nothing destroyed, nothing replaced:\n{text}"
    );
    // And member 2's address may be reserved again: back to 3 creates it anew.
    let (ok, text) = plan(&root, 3);
    assert!(
        ok && text.contains("Plan: 3 to add, 0 to change, 0 to destroy"),
        "{text}"
    );
}
