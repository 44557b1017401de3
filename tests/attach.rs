//! `nodeboot stage attach` against the emulated EC2 (tests/bed/aws_server.py),
//! through the real AWS SDK.

mod common;

use std::collections::BTreeSet;
use std::process::Output;
use std::time::Duration;

use common::bed::*;

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

struct Cluster {
    aws: Aws,
    env: nodeboot::operator::env::Environment,
    vpc: Vpc,
    members: Vec<MemberResources>,
}

fn cluster(name: &str, members: u32, attach_delay_ms: u64) -> Cluster {
    let aws = Aws::start(attach_delay_ms);
    let env = environment(name, members);
    let vpc = Vpc::create(&aws, &env);
    let members = create_members(&aws, &env, &vpc);
    Cluster { aws, env, vpc, members }
}

impl Cluster {
    fn node(&self, zone: &str) -> Node {
        let node = Node::launch(&self.aws, &self.env, &self.vpc, zone);
        let out = node.stage(&self.aws, &["discover"]);
        assert!(out.status.success(), "discover: {}", stderr(&out));
        node
    }
}

fn attach(c: &Cluster, node: &Node) -> Output {
    node.stage(&c.aws, &["attach", "--wait-timeout", "30s", "--detach-grace", "2s"])
}

#[test]
fn attach_claims_the_member_of_its_own_zone() {
    let c = cluster("att-zone", 3, 0);
    let node = c.node("eu-west-1b");
    c.aws.reset_calls();
    let out = attach(&c, &node);
    assert!(out.status.success(), "{}", stderr(&out));
    let calls = c.aws.total_calls();
    eprintln!("attach: {calls} API calls: {:?}", c.aws.calls());
    assert!(
        calls <= 6,
        "a fresh claim needs 2 describes, 2 attaches and 2 verifying describes, not {calls}"
    );
    let claim = node.claim().expect("claim.json recorded");
    let member = &c.members[1];
    assert_eq!(claim["member"], 1);
    assert_eq!(claim["zone"], "eu-west-1b");
    assert_eq!(claim["volume_id"], member.volume_id);
    assert_eq!(claim["eni_id"], member.eni_id);
    assert_eq!(claim["eni_ip"], "10.80.11.10");
    assert_eq!(claim["eni_mac"], member.eni_mac);
    assert_eq!(
        volume_holder(&c.aws, &member.volume_id).as_deref(),
        Some(node.instance_id.as_str())
    );
    assert_eq!(
        eni_holder(&c.aws, &member.eni_id).as_deref(),
        Some(node.instance_id.as_str())
    );
    for other in [&c.members[0], &c.members[2]] {
        assert_eq!(
            volume_holder(&c.aws, &other.volume_id),
            None,
            "other zones' members untouched"
        );
    }
}

#[test]
fn rerun_on_a_node_that_holds_its_pair_is_a_no_op() {
    let c = cluster("att-rerun", 3, 0);
    let node = c.node("eu-west-1a");
    assert!(attach(&c, &node).status.success());
    let first = node.claim().unwrap();
    c.aws.reset_calls();
    let out = attach(&c, &node);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(node.claim().unwrap(), first);
    let calls = c.aws.calls();
    assert_eq!(calls.get("AttachVolume"), None, "{calls:?}");
    assert_eq!(calls.get("AttachNetworkInterface"), None, "{calls:?}");
    assert_eq!(calls.values().sum::<u64>(), 2, "only the two describes: {calls:?}");
}

#[test]
fn attach_waits_for_attaching_with_backoff_and_logs_it() {
    let c = cluster("att-slow", 3, 1500);
    let node = c.node("eu-west-1c");
    let out = attach(&c, &node);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("waiting for volume") && err.contains("is attaching"),
        "progress is logged:\n{err}"
    );
    assert_eq!(
        volume_holder(&c.aws, &c.members[2].volume_id).as_deref(),
        Some(node.instance_id.as_str())
    );
}

#[test]
fn attach_gives_up_after_its_bound_with_exit_code_11() {
    let c = cluster("att-timeout", 3, 20_000);
    let node = c.node("eu-west-1a");
    let out = node.stage(&c.aws, &["attach", "--wait-timeout", "2s"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(11), "{err}");
    assert!(
        err.contains("gave up waiting for volume") && err.contains("after 2s"),
        "{err}"
    );
}

/// EC2 may answer a Describe call in pages, each with fewer items than
/// asked for and a NextToken. With two items a page, the first page of
/// three members lacks one member's volume or ENI: each zone's node must
/// still see its whole member, never half of one.
#[test]
fn attach_reads_every_page_of_the_cluster_listing() {
    let c = cluster("att-pages", 3, 0);
    c.aws.set_max_page(2);
    for (i, zone) in ZONES.iter().enumerate() {
        let node = c.node(zone);
        let out = attach(&c, &node);
        assert!(out.status.success(), "{zone}: {}", stderr(&out));
        assert_eq!(node.claim().unwrap()["member"], i as u64, "{zone}");
    }
}

#[test]
fn throttling_is_retried_by_the_sdk() {
    let c = cluster("att-throttle", 3, 0);
    let node = c.node("eu-west-1a");
    c.aws.throttle("AttachVolume", 2);
    c.aws.throttle("DescribeVolumes", 1);
    let out = attach(&c, &node);
    assert!(out.status.success(), "{}", stderr(&out));
    let calls = c.aws.calls();
    assert_eq!(
        calls["AttachVolume"], 3,
        "two throttled attempts, then success: {calls:?}"
    );
    assert_eq!(
        volume_holder(&c.aws, &c.members[0].volume_id).as_deref(),
        Some(node.instance_id.as_str())
    );
}

#[test]
fn a_zone_without_a_free_member_exits_10() {
    let c = cluster("att-full", 3, 0);
    let first = c.node("eu-west-1b");
    assert!(attach(&c, &first).status.success());
    let second = c.node("eu-west-1b");
    let out = attach(&c, &second);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(10), "{err}");
    assert!(
        err.contains("no free etcd member in eu-west-1b")
            && err.contains(&format!("member 1 held by {}", first.instance_id)),
        "{err}"
    );
    assert!(second.claim().is_none());
}

#[test]
fn takeover_from_a_stopped_instance() {
    let c = cluster("att-takeover", 3, 300);
    let old = c.node("eu-west-1a");
    assert!(attach(&c, &old).status.success());
    old.stop(&c.aws);
    let new = c.node("eu-west-1a");
    let out = attach(&c, &new);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains(&format!(
            "detaching volume {} from dead instance {}",
            c.members[0].volume_id, old.instance_id
        )),
        "{err}"
    );
    assert_eq!(new.claim().unwrap()["member"], 0);
    assert_eq!(
        volume_holder(&c.aws, &c.members[0].volume_id).as_deref(),
        Some(new.instance_id.as_str())
    );
    assert_eq!(
        eni_holder(&c.aws, &c.members[0].eni_id).as_deref(),
        Some(new.instance_id.as_str())
    );
}

/// Every detach the stage asked for was from a holder that could no longer
/// write: `stopped` or `terminated`.
fn assert_detached_only_dead_holders(c: &Cluster) {
    for (resource, holder, state, force) in c.aws.detaches() {
        assert!(
            state == "stopped" || state == "terminated",
            "{resource} detached (force {force}) from {holder} while it was {state}"
        );
    }
}

/// A holder that is shutting down may still flush to the volume: the
/// replacement waits (saying so) until EC2 has terminated it and released
/// the volume, and never detaches anything from it.
#[test]
fn a_shutting_down_holder_is_waited_for_not_robbed() {
    let c = cluster("att-shutdown", 3, 200);
    let old = c.node("eu-west-1a");
    assert!(attach(&c, &old).status.success());
    // Long enough to outlast the new node's launch and discover on a busy machine.
    c.aws.set_shutdown_delay(10_000);
    old.terminate(&c.aws);
    assert_eq!(old.state(&c.aws), "shutting-down");
    let new = c.node("eu-west-1a");
    let out = attach(&c, &new);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains(&format!("{}, which is shutting-down", old.instance_id)),
        "progress is logged:\n{err}"
    );
    assert_detached_only_dead_holders(&c);
    assert_eq!(
        volume_holder(&c.aws, &c.members[0].volume_id).as_deref(),
        Some(new.instance_id.as_str())
    );
    assert_eq!(
        eni_holder(&c.aws, &c.members[0].eni_id).as_deref(),
        Some(new.instance_id.as_str())
    );
}

/// The same for a holder that is stopping: wait until `stopped`, then
/// detach and take over.
#[test]
fn a_stopping_holder_is_waited_for_then_taken_over() {
    let c = cluster("att-stopping", 3, 200);
    let old = c.node("eu-west-1b");
    assert!(attach(&c, &old).status.success());
    c.aws.set_shutdown_delay(10_000);
    old.stop(&c.aws);
    assert_eq!(old.state(&c.aws), "stopping");
    let new = c.node("eu-west-1b");
    let out = attach(&c, &new);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains(&format!("{}, which is stopping", old.instance_id)),
        "progress is logged:\n{err}"
    );
    assert!(
        !c.aws.detaches().is_empty(),
        "the stopped holder's attachments were detached"
    );
    assert_detached_only_dead_holders(&c);
    assert_eq!(new.claim().unwrap()["member"], 1);
}

/// Two replacements race for one dead member: while one waits for the
/// volume to leave the dead holder, the other gets it. The loser sees the
/// new live holder and plans again (here: no member is left, exit 10)
/// instead of waiting out the detach grace and forcing a detach that is no
/// longer the dead holder's.
#[test]
fn the_loser_of_a_takeover_race_plans_again() {
    let c = cluster("att-takerace", 3, 1500);
    let old = c.node("eu-west-1a");
    assert!(attach(&c, &old).status.success());
    old.stop(&c.aws);
    let winner = c.node("eu-west-1a");
    let loser = c.node("eu-west-1a");
    let volume = c.members[0].volume_id.clone();
    let mut cmd = loser.stage_cmd(
        &c.aws,
        &["attach", "--wait-timeout", "30s", "--detach-grace", "4s"],
        &[],
    );
    let run = std::thread::spawn(move || cmd.output().unwrap());
    // The winner attaches the moment EC2 has detached the volume.
    let ec2 = c.aws.ec2.clone();
    runtime().block_on(async {
        loop {
            let v = ec2.describe_volumes().volume_ids(&volume).send().await.unwrap();
            if v.volumes()[0].state().map(|s| s.as_str()) == Some("available") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        ec2.attach_volume()
            .volume_id(&volume)
            .instance_id(&winner.instance_id)
            .device("/dev/xvdf")
            .send()
            .await
            .unwrap();
    });
    let out = run.join().unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(10), "{err}");
    // It saw the winner's attachment while waiting, or lost the AttachVolume
    // race by a hair (VolumeInUse): either way it planned again at once.
    assert!(
        err.contains("lost member 0 to another node") && err.contains("planning again"),
        "{err}"
    );
    assert!(
        err.contains(&format!("member 0 held by {}", winner.instance_id)),
        "{err}"
    );
    assert!(!err.contains("forcing"), "{err}");
    assert_detached_only_dead_holders(&c);
}

#[test]
fn a_running_holder_is_never_robbed() {
    // A node that crashed but still runs is alive to EC2: nodeboot must not
    // guess, so the second node finds no free member.
    let c = cluster("att-norob", 3, 0);
    let a = c.node("eu-west-1c");
    assert!(attach(&c, &a).status.success());
    let b = c.node("eu-west-1c");
    assert_eq!(attach(&c, &b).status.code(), Some(10));
    assert_eq!(
        volume_holder(&c.aws, &c.members[2].volume_id).as_deref(),
        Some(a.instance_id.as_str())
    );
}

fn bad_tags_case(name: &str, tweak: impl FnOnce(&Aws, &nodeboot::operator::env::Environment, &Vpc), says: &str) {
    let aws = Aws::start(0);
    let env = environment(name, 3);
    let vpc = Vpc::create(&aws, &env);
    create_members(&aws, &env, &vpc);
    tweak(&aws, &env, &vpc);
    let node = Node::launch(&aws, &env, &vpc, "eu-west-1a");
    assert!(node.stage(&aws, &["discover"]).status.success());
    let out = node.stage(&aws, &["attach", "--wait-timeout", "5s"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(14), "{name}: {err}");
    assert!(err.contains(says), "{name}: should say {says:?}:\n{err}");
    assert!(node.claim().is_none());
    assert_eq!(
        aws.calls().get("AttachVolume"),
        None,
        "{name}: nothing attached on bad tags"
    );
}

#[test]
fn missing_member_tag_is_a_clear_error() {
    bad_tags_case(
        "att-notag",
        |aws, env, vpc| {
            create_member(aws, env, vpc, 3, "eu-west-1a", "10.80.10.11", "");
        },
        "has no nodeboot.io/member tag",
    );
}

#[test]
fn duplicate_member_tag_is_a_clear_error() {
    bad_tags_case(
        "att-dup",
        |aws, env, vpc| {
            create_member(aws, env, vpc, 3, "eu-west-1a", "10.80.10.11", "0");
        },
        "member 0 has two volumes",
    );
}

#[test]
fn member_split_across_zones_is_a_clear_error() {
    bad_tags_case(
        "att-split",
        |aws, env, vpc| {
            // member 3: volume in 1a, ENI in 1b
            let m = create_member(aws, env, vpc, 3, "eu-west-1a", "10.80.10.11", "3");
            runtime()
                .block_on(
                    aws.ec2
                        .delete_network_interface()
                        .network_interface_id(&m.eni_id)
                        .send(),
                )
                .unwrap();
            let other = create_member(aws, env, vpc, 9, "eu-west-1b", "10.80.11.11", "3");
            runtime()
                .block_on(aws.ec2.delete_volume().volume_id(&other.volume_id).send())
                .unwrap();
        },
        "must share a zone",
    );
}

/// 5 nodes boot at once against 3 members in their zone: exactly 3 claim a
/// pair, no volume or ENI is claimed twice, 2 exit with "no free member".
/// Randomised start offsets and attach delays, 50 rounds.
#[test]
fn race_five_nodes_three_members_fifty_rounds() {
    let aws = Aws::start(0);
    let rounds: u32 = std::env::var("NODEBOOT_RACE_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let mut rng = fastrand::Rng::with_seed(0x5eed);
    for round in 0..rounds {
        let mut env = environment(&format!("race-{round}"), 3);
        // All three members in one zone, so all five nodes contend.
        env.availability_zones = vec!["eu-west-1a".into(), "eu-west-1b".into()];
        env.subnets.secure.truncate(2);
        let vpc = Vpc::create(&aws, &env);
        let members: Vec<MemberResources> = (0..3u32)
            .map(|i| {
                create_member(
                    &aws,
                    &env,
                    &vpc,
                    i,
                    "eu-west-1a",
                    &format!("10.80.10.{}", 10 + i),
                    &i.to_string(),
                )
            })
            .collect();
        aws.set_attach_delay(rng.u64(0..400));
        let nodes: Vec<Node> = (0..5).map(|_| Node::launch(&aws, &env, &vpc, "eu-west-1a")).collect();
        for n in &nodes {
            assert!(n.stage(&aws, &["discover"]).status.success());
        }
        let children: Vec<_> = nodes
            .iter()
            .map(|n| {
                let delay = Duration::from_millis(rng.u64(0..150));
                let mut cmd = n.stage_cmd(&aws, &["attach", "--wait-timeout", "60s"], &[("NODEBOOT_LOG", "warn")]);
                std::thread::spawn(move || {
                    std::thread::sleep(delay);
                    cmd.output().unwrap()
                })
            })
            .collect();
        let outputs: Vec<Output> = children.into_iter().map(|h| h.join().unwrap()).collect();
        let codes: Vec<Option<i32>> = outputs.iter().map(|o| o.status.code()).collect();
        let winners: Vec<&Node> = nodes
            .iter()
            .zip(&outputs)
            .filter(|(_, o)| o.status.success())
            .map(|(n, _)| n)
            .collect();
        let report = || outputs.iter().map(stderr).collect::<Vec<_>>().join("\n---\n");
        assert_eq!(winners.len(), 3, "round {round}: codes {codes:?}\n{}", report());
        assert_eq!(
            codes.iter().filter(|c| **c == Some(10)).count(),
            2,
            "round {round}: codes {codes:?}\n{}",
            report()
        );
        let claimed: BTreeSet<u64> = winners
            .iter()
            .map(|n| n.claim().unwrap()["member"].as_u64().unwrap())
            .collect();
        assert_eq!(claimed.len(), 3, "round {round}: members claimed twice");
        for m in &members {
            let v = volume_holder(&aws, &m.volume_id).expect("every volume claimed");
            let e = eni_holder(&aws, &m.eni_id).expect("every ENI claimed");
            assert_eq!(
                v, e,
                "round {round}: member {}'s volume and ENI are held by one node",
                m.member
            );
            let holder = winners.iter().find(|n| n.instance_id == v).expect("held by a winner");
            assert_eq!(
                holder.claim().unwrap()["member"],
                m.member,
                "round {round}: the holder believes it holds this member"
            );
        }
    }
}

/// Kill attach at each step (SIGABRT at a named point) and run it again: it
/// converges to the same end state as an uninterrupted run.
#[test]
fn attach_converges_after_an_abort_at_every_step() {
    for point in [
        "attach:after-attach-volume",
        "attach:after-volume-verified",
        "attach:after-attach-eni",
        "attach:after-detach",
    ] {
        let c = cluster(&format!("att-abort-{}", point.len()), 3, 200);
        let takeover = point == "attach:after-detach";
        if takeover {
            let old = c.node("eu-west-1b");
            assert!(attach(&c, &old).status.success());
            old.stop(&c.aws);
        }
        let node = c.node("eu-west-1b");
        let out = node
            .stage_cmd(
                &c.aws,
                &["attach", "--wait-timeout", "30s", "--detach-grace", "2s"],
                &[(nodeboot::shared::fault::VAR, point)],
            )
            .output()
            .unwrap();
        assert!(!out.status.success(), "{point}: the abort happened");
        assert!(
            stderr(&out).contains(&format!("aborting at {point}")),
            "{point}: {}",
            stderr(&out)
        );
        assert!(node.claim().is_none(), "{point}: nothing recorded before the end");
        let again = attach(&c, &node);
        assert!(again.status.success(), "{point}: rerun: {}", stderr(&again));
        assert_eq!(node.claim().unwrap()["member"], 1, "{point}");
        assert_eq!(
            volume_holder(&c.aws, &c.members[1].volume_id).as_deref(),
            Some(node.instance_id.as_str()),
            "{point}"
        );
        assert_eq!(
            eni_holder(&c.aws, &c.members[1].eni_id).as_deref(),
            Some(node.instance_id.as_str()),
            "{point}"
        );
    }
}
