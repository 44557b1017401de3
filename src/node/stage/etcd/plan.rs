//! The etcd stage's decision: a pure function of what it observed (the data
//! directory, the cluster through the other members' client URLs, whether
//! backups say the cluster existed). Table-tested over every combination.

use std::collections::BTreeMap;

use crate::shared::etcd::Member;

/// This member: its name and its peer URL (on its ENI).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Me {
    pub name: String,
    pub peer_url: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Data {
    /// No `member/` directory: a new, replaced or never-started volume.
    Blank,
    /// The volume holds a member's data.
    Member,
}

pub use crate::shared::etcd::View;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    pub data: Data,
    pub me: Me,
    /// `None`: no other member answered at all. Only observed for a blank volume.
    pub cluster: Option<View>,
    /// Backups exist: the cluster has run before (from the backup hook).
    pub history: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// The volume holds a member: etcd resumes as that member (`existing`).
    Restart,
    /// The first boot of the cluster (nothing answers and no backup exists,
    /// or the members that answer are still forming it): `new`, initial
    /// cluster from EC2.
    Bootstrap,
    /// A blank volume and a running cluster with quorum without this member:
    /// back up, remove `remove` (the stale member of this name or peer URL,
    /// if any), add this member as a learner, start `existing`.
    Join { remove: Option<Member> },
    /// This member was added and never started (an earlier run was stopped
    /// after `MemberAdd`): start `existing`.
    Resume { member: Member },
    /// Another member is joining (added, not started or not promoted): one
    /// at a time; try again later.
    Wait { reason: String },
    /// A blank member that the cluster cannot take back: touch nothing.
    Refuse { reason: String },
}

impl Plan {
    /// Whether etcd starts with `initial-cluster-state=existing`.
    pub fn existing(&self) -> bool {
        matches!(self, Plan::Restart | Plan::Join { .. } | Plan::Resume { .. })
    }
}

/// Whether this member is `m`: the same peer URL, or the same name.
fn is_me(me: &Me, m: &Member) -> bool {
    m.peer_urls.contains(&me.peer_url) || (!m.name.is_empty() && m.name == me.name)
}

pub fn plan(o: &Observed) -> Plan {
    if o.data == Data::Member {
        return Plan::Restart;
    }
    let Some(view) = &o.cluster else {
        return if o.history {
            Plan::Refuse {
                reason: "no other etcd member answers, and backups show that the cluster existed".into(),
            }
        } else {
            Plan::Bootstrap
        };
    };
    // etcd publishes a member's client URLs through the raft log, so before
    // the first leader no member has any: the cluster is still forming.
    if view.members.iter().all(|m| m.client_urls.is_empty()) {
        return Plan::Bootstrap;
    }
    let mine = view.members.iter().find(|m| is_me(&o.me, m));
    if let Some(m) = mine {
        if !m.started() && m.peer_urls == [o.me.peer_url.clone()] {
            return Plan::Resume { member: m.clone() };
        }
    }
    let voters: Vec<&Member> = view.members.iter().filter(|m| !m.is_learner).collect();
    let quorum = voters.len() / 2 + 1;
    let healthy = voters
        .iter()
        .filter(|m| Some(m.id) != mine.map(|x| x.id) && view.healthy.contains(&m.id))
        .count();
    if healthy < quorum {
        return Plan::Refuse {
            reason: format!(
                "the cluster has no quorum without this member: {healthy} of {} voting members answer with a leader, {quorum} needed",
                voters.len()
            ),
        };
    }
    if let Some(other) = view
        .members
        .iter()
        .find(|m| Some(m.id) != mine.map(|x| x.id) && (!m.started() || m.is_learner))
    {
        let what = if other.started() {
            "is a learner, not yet promoted"
        } else {
            "was added and has not started"
        };
        return Plan::Wait {
            reason: format!(
                "member {} ({}) {what}; members join one at a time",
                other.hex_id(),
                other.peer_urls.join(",")
            ),
        };
    }
    Plan::Join { remove: mine.cloned() }
}

/// `ETCD_INITIAL_CLUSTER` for joining a running cluster: exactly its
/// members (etcd checks the set), this member under its own name, the
/// others under their published names, else the name EC2's tags give their
/// peer URL, else a placeholder.
pub fn initial_cluster(members: &[Member], me: &Me, names_by_peer_url: &BTreeMap<String, String>) -> String {
    let mut entries = Vec::new();
    for m in members {
        let name = if is_me(me, m) {
            me.name.clone()
        } else if m.started() {
            m.name.clone()
        } else {
            m.peer_urls
                .iter()
                .find_map(|u| names_by_peer_url.get(u).cloned())
                .unwrap_or_else(|| format!("unstarted-{}", m.hex_id()))
        };
        for url in &m.peer_urls {
            entries.push(format!("{name}={url}"));
        }
    }
    entries.sort();
    entries.join(",")
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    const ME: &str = "env-etcd-0";
    const MY_URL: &str = "https://10.0.10.10:2380";

    fn me() -> Me {
        Me {
            name: ME.into(),
            peer_url: MY_URL.into(),
        }
    }

    fn member(id: u64, name: &str, peer: &str, learner: bool) -> Member {
        let started = !name.is_empty();
        Member {
            id,
            name: name.into(),
            peer_urls: vec![peer.into()],
            client_urls: if started {
                vec![peer.replace("2380", "2379")]
            } else {
                vec![]
            },
            is_learner: learner,
        }
    }

    fn others() -> Vec<Member> {
        vec![
            member(2, "env-etcd-1", "https://10.0.11.10:2380", false),
            member(3, "env-etcd-2", "https://10.0.12.10:2380", false),
        ]
    }

    /// A cluster of the two others plus this member as `listed` says.
    fn view(listed: Listed, quorum: bool) -> View {
        let mut members = others();
        match listed {
            Listed::No => {}
            Listed::Unstarted => members.push(member(1, "", MY_URL, true)),
            Listed::Stale => members.push(member(1, ME, MY_URL, false)),
        }
        let healthy = if quorum { [2, 3].into() } else { [3].into() };
        View { members, healthy }
    }

    #[derive(Debug, Clone, Copy)]
    enum Listed {
        No,
        Unstarted,
        Stale,
    }

    fn observed(data: Data, cluster: Option<View>, history: bool) -> Observed {
        Observed {
            data,
            me: me(),
            cluster,
            history,
        }
    }

    #[derive(Debug, PartialEq, Eq)]
    enum Kind {
        Restart,
        Bootstrap,
        JoinRemoving,
        Join,
        Resume,
        Wait,
        Refuse,
    }

    fn kind(p: &Plan) -> Kind {
        match p {
            Plan::Restart => Kind::Restart,
            Plan::Bootstrap => Kind::Bootstrap,
            Plan::Join { remove: Some(m) } => {
                assert_eq!(m.id, 1, "removes this member's stale entry, nothing else");
                Kind::JoinRemoving
            }
            Plan::Join { remove: None } => Kind::Join,
            Plan::Resume { member } => {
                assert_eq!(member.id, 1);
                Kind::Resume
            }
            Plan::Wait { .. } => Kind::Wait,
            Plan::Refuse { .. } => Kind::Refuse,
        }
    }

    #[test]
    fn every_combination_of_data_answer_listing_and_quorum() {
        use Kind::*;
        // (data blank, cluster answers, listed, quorum without me) -> plan
        let table = [
            (false, false, Listed::No, false, Restart),
            (false, false, Listed::No, true, Restart),
            (false, true, Listed::No, false, Restart),
            (false, true, Listed::No, true, Restart),
            (false, true, Listed::Unstarted, false, Restart),
            (false, true, Listed::Unstarted, true, Restart),
            (false, true, Listed::Stale, false, Restart),
            (false, true, Listed::Stale, true, Restart),
            (true, true, Listed::No, false, Refuse),
            (true, true, Listed::No, true, Join),
            (true, true, Listed::Unstarted, false, Resume),
            (true, true, Listed::Unstarted, true, Resume),
            (true, true, Listed::Stale, false, Refuse),
            (true, true, Listed::Stale, true, JoinRemoving),
        ];
        for (blank, answers, listed, quorum, want) in table {
            for history in [false, true] {
                let data = if blank { Data::Blank } else { Data::Member };
                let cluster = answers.then(|| view(listed, quorum));
                let got = plan(&observed(data, cluster, history));
                assert_eq!(
                    kind(&got),
                    want,
                    "blank={blank} answers={answers} listed={listed:?} quorum={quorum} history={history}: {got:?}"
                );
            }
        }
        // Nothing answers: a blank member starts a new cluster only without backups.
        assert_eq!(kind(&plan(&observed(Data::Blank, None, false))), Bootstrap);
        assert_eq!(kind(&plan(&observed(Data::Blank, None, true))), Refuse);
        assert_eq!(kind(&plan(&observed(Data::Member, None, true))), Restart);
    }

    #[test]
    fn members_still_forming_the_cluster_mean_bootstrap() {
        // Started with `new`, waiting for peers: listed from --initial-cluster, nothing published.
        let mut members = others();
        members.push(member(1, ME, MY_URL, false));
        for m in &mut members {
            m.client_urls.clear();
        }
        let v = View {
            members,
            healthy: BTreeSet::new(),
        };
        assert_eq!(plan(&observed(Data::Blank, Some(v), true)), Plan::Bootstrap);
    }

    #[test]
    fn quorum_counts_voting_members_other_than_this_one() {
        // Five voters, this one stale: three others healthy is a quorum of five, two is not.
        let mut members = others();
        members.push(member(1, ME, MY_URL, false));
        members.push(member(4, "env-etcd-3", "https://10.0.10.11:2380", false));
        members.push(member(5, "env-etcd-4", "https://10.0.11.11:2380", false));
        let v = |healthy: &[u64]| View {
            members: members.clone(),
            healthy: healthy.iter().copied().collect(),
        };
        assert!(matches!(
            plan(&observed(Data::Blank, Some(v(&[2, 3, 4])), false)),
            Plan::Join { remove: Some(_) }
        ));
        assert!(matches!(
            plan(&observed(Data::Blank, Some(v(&[2, 3])), false)),
            Plan::Refuse { .. }
        ));
        // This member's own entry answering (it cannot: this node holds its address) never counts.
        assert!(matches!(
            plan(&observed(Data::Blank, Some(v(&[1, 2, 3])), false)),
            Plan::Refuse { .. }
        ));
        // A learner is no voter: it neither counts towards nor raises the quorum.
        let mut with_learner = v(&[2, 3, 4]);
        with_learner
            .members
            .push(member(6, "", "https://10.0.12.11:2380", true));
        with_learner.healthy.insert(6);
        assert!(matches!(
            plan(&observed(Data::Blank, Some(with_learner), false)),
            Plan::Wait { .. }
        ));
    }

    #[test]
    fn members_join_one_at_a_time() {
        // Another new member was added and has not started, or started and is still a learner.
        for other in [
            member(9, "", "https://10.0.10.11:2380", true),
            member(9, "env-etcd-3", "https://10.0.10.11:2380", true),
        ] {
            let mut members = others();
            members.push(other);
            let v = View {
                members,
                healthy: [2, 3].into(),
            };
            match plan(&observed(Data::Blank, Some(v), true)) {
                Plan::Wait { reason } => assert!(
                    reason.contains("members join one at a time") && reason.contains("10.0.10.11"),
                    "{reason}"
                ),
                p => panic!("{p:?}"),
            }
        }
    }

    #[test]
    fn a_stale_entry_is_found_by_name_even_with_another_peer_url() {
        let mut members = others();
        members.push(member(1, ME, "https://10.0.10.99:2380", false));
        let v = View {
            members,
            healthy: [2, 3].into(),
        };
        assert!(matches!(plan(&observed(Data::Blank, Some(v), false)), Plan::Join { remove: Some(m) } if m.id == 1));
    }

    #[test]
    fn initial_cluster_for_a_join_names_every_member_once() {
        let mut members = others();
        members.push(member(1, "", MY_URL, true));
        members.push(member(7, "", "https://10.0.12.11:2380", false));
        members.push(member(8, "", "https://10.0.12.12:2380", false));
        let names = [("https://10.0.12.11:2380".to_string(), "env-etcd-5".to_string())].into();
        assert_eq!(
            initial_cluster(&members, &me(), &names),
            "env-etcd-0=https://10.0.10.10:2380,env-etcd-1=https://10.0.11.10:2380,env-etcd-2=https://10.0.12.10:2380,\
             env-etcd-5=https://10.0.12.11:2380,unstarted-8=https://10.0.12.12:2380"
        );
    }
}
