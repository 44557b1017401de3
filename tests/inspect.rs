//! `nodeboot aws instances`, `aws elbs` and `ssh-config` against the
//! emulated EC2 and ELBv2.

mod common;

use std::process::Command;

use aws_sdk_ec2::types::{ResourceType, Tag, TagSpecification};
use common::bed::*;
use common::*;

fn tagged(resource: ResourceType, name: &str, role: &str, env: &str) -> TagSpecification {
    TagSpecification::builder()
        .resource_type(resource)
        .tags(Tag::builder().key("Name").value(name).build())
        .tags(
            Tag::builder()
                .key(nodeboot::shared::cloud::tags::ENVIRONMENT)
                .value(env)
                .build(),
        )
        .tags(
            Tag::builder()
                .key(nodeboot::shared::cloud::tags::ROLE)
                .value(role)
                .build(),
        )
        .build()
}

/// Launches `role` instances tagged for `env` into the default VPC's subnet of `zone`.
fn launch(aws: &Aws, env: &str, role: &str, zone: &str) -> String {
    runtime().block_on(async {
        let out = aws
            .ec2
            .run_instances()
            .image_id("ami-12c6146b")
            .min_count(1)
            .max_count(1)
            .placement(aws_sdk_ec2::types::Placement::builder().availability_zone(zone).build())
            .tag_specifications(tagged(ResourceType::Instance, &format!("{env}-{role}"), role, env))
            .send()
            .await
            .unwrap();
        out.instances()[0].instance_id().unwrap().to_string()
    })
}

fn run(aws: &Aws, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_nodeboot"))
        .args(args)
        .envs(aws.env())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn aws_instances_lists_only_this_environments_instances() {
    let aws = Aws::start(0);
    let etcd = launch(&aws, "example", "etcd", "eu-west-1a");
    let compute = launch(&aws, "example", "compute", "eu-west-1b");
    let other = launch(&aws, "someone-else", "etcd", "eu-west-1a");
    let env = example_env();
    let table = run(&aws, &["aws", "instances", "--env", env.to_str().unwrap()]);
    assert!(table.contains(&etcd) && table.contains(&compute), "{table}");
    assert!(
        table.contains("example-etcd") && table.contains("eu-west-1b") && table.contains("running"),
        "{table}"
    );
    assert!(
        !table.contains(&other),
        "another environment's instance is listed:\n{table}"
    );
    let json: serde_json::Value = serde_json::from_str(&run(
        &aws,
        &["aws", "instances", "--env", env.to_str().unwrap(), "--output", "json"],
    ))
    .unwrap();
    assert_eq!(json.as_array().unwrap().len(), 2);
    assert_eq!(json[0]["name"], "example-compute");
    assert_eq!(json[0]["instance_id"], compute.as_str());
}

#[test]
fn aws_elbs_lists_the_environments_load_balancers() {
    let aws = Aws::start(0);
    let config = runtime().block_on(
        aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new(REGION))
            .endpoint_url(&aws.server.url)
            .http_client(nodeboot::shared::cloud::aws::http_client())
            .credentials_provider(aws_sdk_ec2::config::Credentials::new(
                "testing", "testing", None, None, "bed",
            ))
            .load(),
    );
    let elb = aws_sdk_elasticloadbalancingv2::Client::new(&config);
    let subnets: Vec<String> = runtime().block_on(async {
        let out = aws.ec2.describe_subnets().send().await.unwrap();
        out.subnets()
            .iter()
            .take(2)
            .map(|s| s.subnet_id().unwrap().to_string())
            .collect()
    });
    for (name, env) in [
        ("example-kubeapi", "example"),
        ("example-kubeapi-int", "example"),
        ("other-kubeapi", "other"),
    ] {
        runtime()
            .block_on(
                elb.create_load_balancer()
                    .name(name)
                    .r#type(aws_sdk_elasticloadbalancingv2::types::LoadBalancerTypeEnum::Network)
                    .set_subnets(Some(subnets.clone()))
                    .tags(
                        aws_sdk_elasticloadbalancingv2::types::Tag::builder()
                            .key(nodeboot::shared::cloud::tags::ENVIRONMENT)
                            .value(env)
                            .build(),
                    )
                    .send(),
            )
            .unwrap();
    }
    let env = example_env();
    let table = run(&aws, &["aws", "elbs", "--env", env.to_str().unwrap()]);
    assert!(
        table.contains("example-kubeapi") && table.contains("example-kubeapi-int"),
        "{table}"
    );
    assert!(!table.contains("other-kubeapi"), "{table}");
    assert!(table.contains(".elb.amazonaws.com"), "DNS names shown: {table}");
}

#[test]
fn ssh_config_goes_through_the_bastion_and_ssh_accepts_it() {
    let aws = Aws::start(0);
    let bastion = launch(&aws, "example", "bastion", "eu-west-1a");
    launch(&aws, "example", "etcd", "eu-west-1b");
    let env = example_env();
    let config = run(&aws, &["ssh-config", "--env", env.to_str().unwrap()]);
    assert!(config.contains("Host example-bastion"), "{config}");
    assert!(config.contains("ProxyJump example-bastion"), "{config}");
    assert!(
        !config.contains(&format!("example-bastion-{bastion}")),
        "the bastion is not proxied through itself:\n{config}"
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ssh_config");
    std::fs::write(&file, &config).unwrap();
    let host = config
        .lines()
        .find_map(|l| l.strip_prefix("Host example-etcd-"))
        .map(|rest| format!("example-etcd-{}", rest.split_whitespace().next().unwrap()))
        .unwrap();
    let out = Command::new("ssh")
        .args(["-G", "-F"])
        .arg(&file)
        .arg(&host)
        .output()
        .expect("ssh (openssh-client) is installed");
    let resolved = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "ssh -G refused the config: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        resolved.contains("proxyjump example-bastion") && resolved.contains("user core"),
        "{resolved}"
    );
}
