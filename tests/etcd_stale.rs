//! Stale data and stale learners against a real etcd 3.5 (issue 20, points
//! 7 and 8): the WAL names the member etcd reports; a member whose data was
//! put back from an older copy is planned aside, its data kept, its old ID
//! removed and a blank learner added, promoted with every key, the old ID
//! never listed again; a learner whose node is gone is removed so the next
//! member joins, one whose node runs is waited for.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use common::etcd::*;
use nodeboot::node::stage::etcd::plan::{
    self, Data, Evidence, LearnerSeen, Me, NodeSeen, Observed, Plan, STALE_LEARNER_AFTER,
};
use nodeboot::node::stage::etcd::{add_learner, observe_learners, read_held, remove_stale_learner, set_aside};
use nodeboot::shared::etcd::{observe_cluster, wal, Client, Cluster, View};
use nodeboot::shared::retry::Policy;

const ADD: Policy = Policy::new(
    Duration::from_millis(200),
    Duration::from_secs(1),
    Duration::from_secs(30),
);

fn ports_of(m: &Member) -> Ports {
    let port = |url: &str| url.rsplit_once(':').unwrap().1.parse().unwrap();
    Ports {
        client: port(&m.client_url),
        peer: port(&m.peer_url),
    }
}

fn copy_dir(from: &Path, to: &Path) {
    let out = std::process::Command::new("cp")
        .args(["-a", from.to_str().unwrap(), to.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// The cluster as the stage observes it through `client` (the other members).
fn view(client: &Client) -> View {
    observe_cluster(client).unwrap().expect("the other members answer")
}

fn observed(data: Data, me: &Me, view: View) -> Observed {
    Observed {
        data,
        me: me.clone(),
        cluster: Some(view),
        existed: Evidence::default(),
        held: None,
        learners: vec![],
    }
}

/// A voter's removal right after a member stopped may be refused as
/// "unhealthy cluster" for 5 s (etcd's strict reconfiguration check).
fn remove(client: &Client, id: u64) {
    wait_until("the member is removed", Duration::from_secs(30), || {
        match client.member_remove(id) {
            Ok(()) => true,
            Err(e) if e.api_message().is_some_and(|m| m.contains("member not found")) => true,
            Err(e) => {
                assert!(e.is_unavailable(), "{e}");
                false
            }
        }
    });
}

#[test]
fn a_stopped_members_wal_names_the_member_and_cluster_etcd_reported() {
    let dir = tempfile::tempdir().unwrap();
    let etcd_dir = pki(dir.path());
    let mut members = start_cluster(dir.path(), &etcd_dir, 3);
    let client = Client::new(vec![members[2].client_url.clone()], &member_tls(&etcd_dir, 2)).unwrap();
    let mut status = None;
    wait_until("member 2 answers with a leader", Duration::from_secs(30), || {
        status = client.status(&members[2].client_url).ok().filter(|s| s.has_leader());
        status.is_some()
    });
    let status = status.unwrap();
    members[2].kill();
    let id = wal::identity(&members[2].data_dir).unwrap();
    assert_eq!((id.member_id, id.cluster_id), (status.member_id, status.cluster_id));
    // No WAL: an error that names the directory, never a guess.
    let err = wal::identity(dir.path()).unwrap_err();
    assert!(err.to_string().contains("member/wal"), "{err}");
}

#[test]
fn data_put_back_from_an_older_copy_is_kept_aside_and_rejoins_as_a_learner_under_a_new_id() {
    let dir = tempfile::tempdir().unwrap();
    let etcd_dir = pki(dir.path());
    let mut members = start_cluster(dir.path(), &etcd_dir, 3);
    let tls2 = member_tls(&etcd_dir, 2);
    let others = Client::new(
        vec![members[0].client_url.clone(), members[1].client_url.clone()],
        &member_tls(&etcd_dir, 0),
    )
    .unwrap();
    wait_until("the cluster has a leader", Duration::from_secs(30), || {
        others.status(&members[0].client_url).is_ok_and(|s| s.has_leader())
    });
    for i in 0..100 {
        others.put(format!("/k/{i}").as_bytes(), b"before").unwrap();
    }
    let ports = ports_of(&members[2]);
    let initial = format!(
        "m0={},m1={},m2={}",
        members[0].peer_url, members[1].peer_url, members[2].peer_url
    );
    let c2 = Client::new(vec![members[2].client_url.clone()], &tls2).unwrap();
    wait_until("member 2 has every key", Duration::from_secs(30), || {
        c2.count_prefix(b"/k/").is_ok_and(|(n, _)| n == 100)
    });
    let old_id = c2.status(&members[2].client_url).unwrap().member_id;

    // The snapshot at T: member 2 stopped, its data copied.
    members[2].kill();
    let data_dir = members[2].data_dir.clone();
    let at_t = dir.path().join("m2.at-t");
    copy_dir(&data_dir, &at_t);
    // Member 2 runs on and acknowledges more; then its volume is "restored".
    members[2] = Member::start(dir.path(), &tls2, "m2", &ports, &initial, "new");
    for i in 100..200 {
        others.put(format!("/k/{i}").as_bytes(), b"after").unwrap();
    }
    wait_until("member 2 has the later keys", Duration::from_secs(30), || {
        c2.count_prefix(b"/k/").is_ok_and(|(n, _)| n == 200)
    });
    members[2].kill();
    std::fs::remove_dir_all(&data_dir).unwrap();
    std::fs::rename(&at_t, &data_dir).unwrap();
    // The copy names the volume it was started on; this one is new.
    let record = dir.path().join("nodeboot-volume-id");
    std::fs::write(&record, "vol-0old\n").unwrap();

    let me = Me {
        name: "m2".into(),
        peer_url: members[2].peer_url.clone(),
    };
    let held = read_held(&data_dir, &record, "vol-0new").expect("the WAL is read");
    assert_eq!(held.member_id, old_id);
    assert_eq!(held.moved_from.as_deref(), Some("vol-0old"));
    // Before the change: the same data on its own volume restarts.
    let same = read_held(&data_dir, &record, "vol-0old").unwrap();
    let o = Observed {
        held: Some(same),
        ..observed(Data::Member, &me, view(&others))
    };
    assert_eq!(plan::plan(&o), Plan::Restart);

    // The stage's plan: aside.
    let o = Observed {
        held: Some(held),
        ..observed(Data::Member, &me, view(&others))
    };
    let Plan::SetAside { reason } = plan::plan(&o) else {
        panic!("{:?}", plan::plan(&o))
    };
    assert!(reason.contains("vol-0old"), "{reason}");
    let aside = set_aside(dir.path(), &data_dir, 1_765_000_000).unwrap();
    assert_eq!(aside, dir.path().join("member.stale-20251206T054640Z"));
    assert_eq!(
        wal::identity_of_member_dir(&aside).unwrap().member_id,
        old_id,
        "kept, not deleted"
    );
    assert!(!data_dir.join("member").exists());

    // Then a blank member's join: the old ID removed, a learner added.
    let o = observed(Data::Blank, &me, view(&others));
    let Plan::Join { remove: Some(stale) } = plan::plan(&o) else {
        panic!("{:?}", plan::plan(&o))
    };
    assert_eq!(stale.id, old_id);
    remove(&others, old_id);
    let added = add_learner(&others, "m2", &me.peer_url, ADD).unwrap();
    assert_ne!(added.id, old_id);
    let cluster = plan::initial_cluster(&others.member_list().unwrap(), &me, &BTreeMap::new());
    members[2] = Member::start(dir.path(), &tls2, "m2", &ports, &cluster, "existing");
    wait_until("the learner is promoted", Duration::from_secs(60), || {
        others.member_promote(added.id).is_ok()
    });
    let listed = others.member_list().unwrap();
    assert!(listed.iter().all(|m| m.id != old_id), "{listed:?}");
    assert!(listed.iter().any(|m| m.id == added.id && !m.is_learner));
    wait_until("member 2 serves every key", Duration::from_secs(30), || {
        c2.count_prefix(b"/k/").is_ok_and(|(n, _)| n == 200)
    });
    assert_eq!(c2.status(&members[2].client_url).unwrap().member_id, added.id);
    // Its data now starts under the new ID: nothing stale any more.
    members[2].kill();
    let held = read_held(&data_dir, &record, "vol-0old").unwrap();
    assert_eq!(held.member_id, added.id);
    let o = Observed {
        held: Some(held),
        ..observed(Data::Member, &me, view(&others))
    };
    assert_eq!(plan::plan(&o), Plan::Restart);
}

#[test]
fn a_learner_whose_node_is_gone_is_removed_and_the_next_member_joins() {
    let dir = tempfile::tempdir().unwrap();
    let etcd_dir = pki(dir.path());
    let members = start_cluster(dir.path(), &etcd_dir, 3);
    let client = Client::new(
        members.iter().map(|m| m.client_url.clone()).collect(),
        &member_tls(&etcd_dir, 0),
    )
    .unwrap();
    wait_until("the cluster has a leader", Duration::from_secs(30), || {
        client.status(&members[0].client_url).is_ok_and(|s| s.has_leader())
    });
    // A learner added for a node that never started (its instance terminated).
    let dead = add_learner(&client, "m3", &Ports::free().peer_url(), ADD).unwrap();
    let me = Me {
        name: "m3".into(),
        peer_url: Ports::free().peer_url(),
    };
    let seen = |waited, node| LearnerSeen {
        id: dead.id,
        waited,
        node,
    };
    let gone = || NodeSeen::Gone("no instance holds member 3's volume or ENI".into());
    let alive = || NodeSeen::Alive("member 3's instance i-3 is running".into());
    // Alive however long, or gone for less than the bound: wait.
    for learner in [
        seen(STALE_LEARNER_AFTER * 4, alive()),
        seen(STALE_LEARNER_AFTER - Duration::from_secs(1), gone()),
    ] {
        let o = Observed {
            learners: vec![learner],
            ..observed(Data::Blank, &me, view(&client))
        };
        assert!(matches!(plan::plan(&o), Plan::Wait { .. }), "{:?}", plan::plan(&o));
    }
    // The joiner cannot join beside it: etcd 3.5 allows one learner.
    let refused = client.member_add(std::slice::from_ref(&me.peer_url), true).unwrap_err();
    assert!(
        refused.api_message().is_some_and(|m| m.contains("too many learner")),
        "{refused}"
    );

    let o = Observed {
        learners: vec![seen(STALE_LEARNER_AFTER, gone())],
        ..observed(Data::Blank, &me, view(&client))
    };
    let Plan::RemoveLearner { member, reason } = plan::plan(&o) else {
        panic!("{:?}", plan::plan(&o))
    };
    assert_eq!(member.id, dead.id);
    remove_stale_learner(&client, &member, &reason).unwrap();
    assert!(client.member_list().unwrap().iter().all(|m| m.id != dead.id));
    // Converges: a second removal of the same learner is done already.
    remove_stale_learner(&client, &member, &reason).unwrap();
    let o = observed(Data::Blank, &me, view(&client));
    assert_eq!(plan::plan(&o), Plan::Join { remove: None });
    let added = add_learner(&client, "m3", &me.peer_url, ADD).unwrap();
    assert!(added.is_learner);

    // A learner promoted since the plan saw it is left alone.
    let ports = Ports::free();
    remove(&client, added.id);
    let live = add_learner(&client, "m4", &ports.peer_url(), ADD).unwrap();
    let initial = plan::initial_cluster(
        &client.member_list().unwrap(),
        &Me {
            name: "m4".into(),
            peer_url: ports.peer_url(),
        },
        &BTreeMap::new(),
    );
    let _m4 = Member::start(
        dir.path(),
        &member_tls(&etcd_dir, 0),
        "m4",
        &ports,
        &initial,
        "existing",
    );
    wait_until("the live learner is promoted", Duration::from_secs(60), || {
        client.member_promote(live.id).is_ok()
    });
    remove_stale_learner(&client, &live, "a stale view").unwrap();
    assert!(client
        .member_list()
        .unwrap()
        .iter()
        .any(|m| m.id == live.id && !m.is_learner));
}

/// The EC2 side of a stale learner, through the real SDK against the
/// emulator: the learner's peer address is its member's ENI; the instances
/// holding that member's volume or ENI decide whether its node is gone.
#[test]
fn ec2_says_a_learners_node_is_gone_only_when_no_live_instance_holds_its_member() {
    use common::bed::*;
    use nodeboot::shared::cloud::aws::Ec2;
    use nodeboot::shared::cloud::{ClusterFilter, Compute};
    use nodeboot::shared::etcd::Member as EtcdMember;

    let aws = Aws::start(0);
    let env = environment("stale-learner", 3);
    let vpc = Vpc::create(&aws, &env);
    let members = create_members(&aws, &env, &vpc);
    let node = Node::launch(&aws, &env, &vpc, "eu-west-1c");
    assert!(node.stage(&aws, &["discover"]).status.success());
    let out = node.stage(&aws, &["attach", "--wait-timeout", "30s"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(node.claim().unwrap()["member"], 2);

    let ec2 = Ec2::new(&common::secrets_bed::sdk_config(&aws.server.url));
    let filter = ClusterFilter {
        environment: env.name.clone(),
        role: "etcd".into(),
    };
    let learner = |id: u64, ip: &str| EtcdMember {
        id,
        name: String::new(),
        peer_urls: vec![format!("https://{ip}:2380")],
        client_urls: vec![],
        is_learner: true,
    };
    let view = View {
        members: vec![learner(9, &members[2].eni_ip), learner(10, "10.0.99.99")],
        ..Default::default()
    };
    let me = Me {
        name: format!("{}-etcd-0", env.name),
        peer_url: format!("https://{}:2380", members[0].eni_ip),
    };
    let dir = tempfile::tempdir().unwrap();
    let seen_file = dir.path().join("etcd-learners-seen");
    let observe = || {
        let rt = runtime();
        rt.block_on(async {
            let enis = ec2.network_interfaces(&filter).await.unwrap();
            observe_learners(&ec2, &filter, &enis, &view, &me, &seen_file)
                .await
                .unwrap()
        })
    };
    let node_of = |seen: &[LearnerSeen], id: u64| seen.iter().find(|l| l.id == id).unwrap().clone();

    // Member 2's instance runs: alive. An address no member ENI has: gone.
    let first = observe();
    assert!(
        matches!(&node_of(&first, 9).node, NodeSeen::Alive(w) if w.contains(&node.instance_id)),
        "{first:?}"
    );
    assert!(
        matches!(&node_of(&first, 10).node, NodeSeen::Gone(w) if w.contains("no member ENI")),
        "{first:?}"
    );
    assert!(node_of(&first, 9).waited < Duration::from_secs(5));
    // The clock is this node's first sight, kept in the file.
    let text = std::fs::read_to_string(&seen_file).unwrap();
    let back: String = text
        .lines()
        .map(|l| {
            let (id, at) = l.split_once(' ').unwrap();
            format!("{id} {}\n", at.parse::<i64>().unwrap() - 1000)
        })
        .collect();
    std::fs::write(&seen_file, back).unwrap();
    assert!(node_of(&observe(), 9).waited >= Duration::from_secs(1000));

    // Stopped: it may start again, alive.
    node.stop(&aws);
    wait_until("the instance is stopped", Duration::from_secs(30), || {
        node.state(&aws) == "stopped"
    });
    assert!(matches!(&node_of(&observe(), 9).node, NodeSeen::Alive(w) if w.contains("stopped")));
    // Terminated: gone.
    node.terminate(&aws);
    wait_until("the instance is terminated", Duration::from_secs(30), || {
        node.state(&aws) == "terminated"
    });
    let last = observe();
    assert!(matches!(&node_of(&last, 9).node, NodeSeen::Gone(_)), "{last:?}");
    // Learners that are gone from the view are forgotten by the file.
    let view_none = View::default();
    let rt = runtime();
    rt.block_on(async {
        let enis = ec2.network_interfaces(&filter).await.unwrap();
        assert!(observe_learners(&ec2, &filter, &enis, &view_none, &me, &seen_file)
            .await
            .unwrap()
            .is_empty());
    });
    assert_eq!(std::fs::read_to_string(&seen_file).unwrap(), "");
}
