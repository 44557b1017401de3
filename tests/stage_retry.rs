//! `nodeboot stage --retry`, what the boot units run: a stage retries inside
//! its process until it succeeds, stops at once on what retrying cannot fix,
//! and gives up after node.json's bounds, powering an etcd node off (its
//! launch template terminates it on shutdown, its auto-scaling group replaces
//! it) without any Auto Scaling call. Against the emulator (moto's EC2 and
//! Auto Scaling) through the real SDK; the power-off command is a recorder
//! here (`Node::stage_cmd`). tests/lab/test_boot_chain.py runs the same under
//! systemd, where `systemctl poweroff` ends the machine.

mod common;

use std::process::Output;

use common::bed::*;
use common::stderr;

struct Cluster {
    aws: Aws,
    env: nodeboot::operator::env::Environment,
    vpc: Vpc,
}

fn cluster(name: &str) -> Cluster {
    let aws = Aws::start(0);
    let env = environment(name, 3);
    let vpc = Vpc::create(&aws, &env);
    create_members(&aws, &env, &vpc);
    Cluster { aws, env, vpc }
}

impl Cluster {
    /// A discovered etcd node in `zone` whose node.json has these boot bounds.
    fn node(&self, zone: &str, give_up: u64, no_free_member: u64) -> Node {
        let node = Node::launch(&self.aws, &self.env, &self.vpc, zone);
        node.set_boot_bounds(give_up, no_free_member);
        let out = node.stage(&self.aws, &["discover"]);
        assert!(out.status.success(), "discover: {}", stderr(&out));
        node
    }

    fn join_group(&self, node: &Node, group: &str) {
        join_auto_scaling_group(&self.aws, node, group);
    }

    fn health(&self, node: &Node) -> String {
        instance_health(&self.aws, node)
    }
}

fn retried(c: &Cluster, node: &Node, stage: &[&str]) -> Output {
    let mut args = vec!["--retry"];
    args.extend_from_slice(stage);
    node.stage_cmd(&c.aws, &args, &[]).output().unwrap()
}

#[test]
fn retried_attach_outlasts_throttling_past_the_sdks_own_retries() {
    let c = cluster("retry-throttle");
    let node = c.node("eu-west-1a", 120, 60);
    // The SDK makes 6 attempts per call; 8 throttled calls fail the first
    // attempt of the stage (exit 13) and the second one succeeds.
    c.aws.throttle("AttachVolume", 8);
    let out = retried(&c, &node, &["attach", "--wait-timeout", "30s"]);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("attempt 1 failed (exit 13), retrying"), "{err}");
    assert!(err.contains("stage attach succeeded after 2 attempts"), "{err}");
    assert_eq!(c.aws.calls()["AttachVolume"], 9, "8 throttled, then one that worked");
    assert!(node.claim().is_some());
}

#[test]
fn retried_attach_outlasts_an_attachment_slower_than_one_attempt() {
    let c = cluster("retry-slow");
    let node = c.node("eu-west-1a", 120, 60);
    c.aws.set_attach_delay(3000);
    let out = retried(&c, &node, &["attach", "--wait-timeout", "1s"]);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("attempt 1 failed (exit 11), retrying"), "{err}");
    assert_eq!(
        c.aws.calls()["AttachVolume"],
        1,
        "a later attempt waits for the attachment the first one started"
    );
}

#[test]
fn bad_input_stops_at_once_and_sends_no_signal() {
    let c = cluster("retry-bad");
    let node = c.node("eu-west-1a", 120, 60);
    c.join_group(&node, "retry-bad-a");
    std::fs::write(node.root().join("etc/nodeboot/node.json"), "{ not json").unwrap();
    c.aws.reset_calls();
    let out = retried(&c, &node, &["attach"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("stage attach stopped: exit 2 is not retried"), "{err}");
    assert!(!err.contains("waiting for stage attach"), "no second attempt: {err}");
    assert_eq!(c.aws.total_calls(), 0, "{:?}", c.aws.calls());
    assert_eq!(c.health(&node), "HEALTHY");
    assert!(!node.powered_off(), "a permanent failure leaves the node for a human");
}

#[test]
fn no_free_member_gives_up_after_its_bound_and_powers_the_node_off() {
    let c = cluster("retry-nofree");
    let first = c.node("eu-west-1b", 120, 60);
    assert!(first.stage(&c.aws, &["attach"]).status.success());
    let second = c.node("eu-west-1b", 120, 3);
    c.join_group(&second, "retry-nofree-b");
    c.aws.reset_calls();
    let out = retried(&c, &second, &["attach"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(10), "{err}");
    let line = err
        .lines()
        .find(|l| l.starts_with("stage attach gave up after"))
        .unwrap_or_else(|| panic!("one give-up line: {err}"));
    // The stage's own account of its wait: at least the bound (3 s), more than one attempt.
    let (seconds, attempts) = gave_up_after(line);
    assert!(seconds >= 3 && attempts >= 2, "{line}");
    assert!(
        line.contains("powering off (touch ") && line.contains("no free etcd member in eu-west-1b"),
        "{line}"
    );
    assert!(second.powered_off(), "{err}");
    // No Auto Scaling call: the group learns it from EC2 (the instance terminates).
    assert_eq!(c.aws.calls().get("SetInstanceHealth"), None);
    assert_eq!(c.health(&second), "HEALTHY");
    assert!(!first.powered_off());
}

#[test]
fn a_power_off_that_fails_is_said_in_the_give_up_line() {
    let c = cluster("retry-nopower");
    let first = c.node("eu-west-1a", 120, 60);
    assert!(first.stage(&c.aws, &["attach"]).status.success());
    let second = c.node("eu-west-1a", 120, 1);
    let out = second
        .stage_cmd(
            &c.aws,
            &["--retry", "attach"],
            &[("NODEBOOT_POWEROFF_COMMAND", "false")],
        )
        .output()
        .unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(10), "{err}");
    let line = err
        .lines()
        .find(|l| l.starts_with("stage attach gave up after"))
        .unwrap_or_else(|| panic!("one give-up line: {err}"));
    assert!(line.contains("could not power off (false): exit status: 1"), "{line}");
}

#[test]
fn an_aws_error_that_never_clears_gives_up_after_the_total_bound() {
    let c = cluster("retry-total");
    let node = c.node("eu-west-1c", 3, 60);
    c.join_group(&node, "retry-total-c");
    // IAM not allowing the call (yet): the SDK does not retry it, the stage does.
    c.aws
        .inject_error("DescribeVolumes", 1000, "UnauthorizedOperation", 403);
    let out = retried(&c, &node, &["attach"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(13), "{err}");
    assert!(
        err.contains("stage attach gave up after 3s") || err.contains("stage attach gave up after 4s"),
        "{err}"
    );
    assert!(err.contains("UnauthorizedOperation"), "{err}");
    assert!(node.powered_off(), "{err}");
    assert_eq!(c.aws.calls().get("SetInstanceHealth"), None);
}

#[test]
fn a_compute_node_that_gives_up_sends_no_signal() {
    let c = cluster("retry-compute");
    let node = Node::launch_role(
        &c.aws,
        &c.env,
        &c.vpc,
        "eu-west-1a",
        nodeboot::shared::role::Role::Compute,
    );
    node.set_boot_bounds(2, 1);
    assert!(node.stage(&c.aws, &["discover"]).status.success());
    // No bucket: every attempt fails with an AWS error until the bound.
    let out = retried(&c, &node, &["secrets"]);
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("stage secrets gave up") && err.contains("no auto-scaling signal for this role"),
        "{err}"
    );
    assert_eq!(c.aws.calls().get("SetInstanceHealth"), None);
    assert!(!node.powered_off(), "{err}");
}

/// "stage attach gave up after 4s and 3 attempts; ..." -> (4, 3).
fn gave_up_after(line: &str) -> (u64, u32) {
    let rest = line.split("gave up after ").nth(1).expect("the give-up line");
    let seconds = rest.split('s').next().unwrap().parse().expect("seconds");
    let attempts = rest
        .split(" and ")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .expect("attempts");
    (seconds, attempts)
}
