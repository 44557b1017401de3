//! The etcd stage's decision: a pure function of what it observed (the data
//! directory, the cluster through the other members' client URLs, the
//! evidence that the cluster existed). Table-tested over every combination.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::shared::cloud::InstanceState;
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
    /// What says the cluster ran before. Only observed for a blank volume
    /// that nobody answers.
    pub existed: Evidence,
    /// Whose data the volume holds, read without starting etcd. Only
    /// observed for a volume with data and no restore under way.
    pub held: Option<Held>,
    /// The learners that hold up a membership change, as this node has
    /// seen them. Only observed when one does.
    pub learners: Vec<LearnerSeen>,
}

/// What a volume's data says of itself (its WAL: `shared::etcd::wal`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    pub member_id: u64,
    pub cluster_id: u64,
    /// The volume this data was last started on, when it is not this
    /// member's volume: the data came from a snapshot or a copy of another
    /// volume (EBS restores a snapshot only into a new volume), so it may be
    /// older than what its member had acknowledged since.
    pub moved_from: Option<String>,
}

/// A learner that holds up joins, as this node observed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LearnerSeen {
    pub id: u64,
    /// How long this node has seen it a learner (`/run/nodeboot`, so from
    /// this boot's first sight of it).
    pub waited: Duration,
    /// Its member's instance, as EC2 says.
    pub node: NodeSeen,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeSeen {
    /// An instance that may still run holds the member's volume or ENI.
    Alive(String),
    /// No instance holds them, or only terminated ones: the learner can never start.
    Gone(String),
}

/// How long a learner may hold up joins before a joiner whose EC2 says its
/// node is gone removes it. Longer than a live learner can take: a node
/// boots in minutes, and `stage etcd-promote` waits up to
/// [`super::PROMOTE_TIMEOUT`] (10 minutes) for it to catch up; a slow
/// learner whose instance runs is never removed, however long it takes.
pub const STALE_LEARNER_AFTER: Duration = Duration::from_secs(15 * 60);

/// Pure: whether the instances holding a member's volume or ENI (`holders`,
/// by id, with their states) leave its learner a node to run on.
pub fn node_seen(member: &str, holders: &BTreeMap<String, InstanceState>) -> NodeSeen {
    if holders.is_empty() {
        return NodeSeen::Gone(format!("no instance holds member {member}'s volume or ENI"));
    }
    let alive: Vec<String> = holders
        .iter()
        .filter(|(_, s)| **s != InstanceState::Terminated)
        .map(|(i, s)| format!("{i} is {}", s.name()))
        .collect();
    if alive.is_empty() {
        let ids: Vec<&str> = holders.keys().map(String::as_str).collect();
        NodeSeen::Gone(format!(
            "member {member}'s volume and ENI are held only by terminated instances ({})",
            ids.join(", ")
        ))
    } else {
        NodeSeen::Alive(format!("member {member}'s instance {}", alive.join(", ")))
    }
}

/// The evidence that this environment's etcd cluster has run before: any
/// one of them forbids a blank member to start a new cluster, so no single
/// deletion (a lifecycle rule emptying `backups/`, a new bucket, a lost
/// volume) lets an empty cluster start beside the real data.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Evidence {
    /// The cluster marker object (`backup::marker`), as found.
    pub marker: Option<String>,
    /// The newest backup, as found.
    pub backup: Option<String>,
    /// Other members' volumes tagged `nodeboot.io/formatted` more than
    /// [`FORMATTED_MARGIN`] before this member's own volume: they held a
    /// filesystem long before this member's existed, so their members ran.
    /// On a first boot every volume is formatted within moments of the
    /// others, so none counts.
    pub formatted: Vec<String>,
}

impl Evidence {
    pub fn any(&self) -> bool {
        self.marker.is_some() || self.backup.is_some() || !self.formatted.is_empty()
    }

    /// Every piece, for the refusal's message.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(m) = &self.marker {
            parts.push(format!("the cluster marker {m}"));
        }
        if let Some(b) = &self.backup {
            parts.push(format!("the backup {b}"));
        }
        for v in &self.formatted {
            parts.push(format!("member volume {v}"));
        }
        parts.join("; ")
    }
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
    /// A blank member that nobody answers, where a cluster existed: it must
    /// not start a new one (an empty cluster beside the real data). Touch
    /// nothing; the way out is a restore or a recovery, by an operator.
    Existed { evidence: String },
    /// The volume holds data the cluster has moved past ([`stale`]) and
    /// the cluster runs with quorum without it: keep the data aside on the
    /// volume (never deleted), then plan again as a blank member (which
    /// removes the old member and joins as a learner).
    SetAside { reason: String },
    /// A learner whose node is gone holds up every join: remove it, then
    /// plan again.
    RemoveLearner { member: Member, reason: String },
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
        let (Some(reason), Some(view), Some(held)) = (stale(o), &o.cluster, &o.held) else {
            return Plan::Restart;
        };
        let mine: Vec<u64> = view
            .members
            .iter()
            .filter(|m| m.id == held.member_id || is_me(&o.me, m))
            .map(|m| m.id)
            .collect();
        return match may_change(o, view, &mine) {
            Ok(()) => Plan::SetAside { reason },
            // Without this member the cluster has no quorum: its vote may be
            // what brings the cluster back (every volume restored from
            // snapshots after a total loss), so it starts as before.
            Err(Plan::Refuse { .. }) => Plan::Restart,
            Err(other) => other,
        };
    }
    let Some(view) = &o.cluster else {
        return if o.existed.any() {
            Plan::Existed {
                evidence: o.existed.describe(),
            }
        } else {
            Plan::Bootstrap
        };
    };
    // etcd publishes a member's client URLs through the raft log, so before
    // the first leader no member has any: the cluster is still forming.
    if forming(view) {
        return Plan::Bootstrap;
    }
    let mine = view.members.iter().find(|m| is_me(&o.me, m));
    if let Some(m) = mine {
        if !m.started() && m.peer_urls == [o.me.peer_url.clone()] {
            return Plan::Resume { member: m.clone() };
        }
    }
    let ids: Vec<u64> = mine.map(|m| m.id).into_iter().collect();
    if let Err(p) = may_change(o, view, &ids) {
        return p;
    }
    Plan::Join { remove: mine.cloned() }
}

fn forming(view: &View) -> bool {
    view.members.iter().all(|m| m.client_urls.is_empty())
}

/// Pure: why the volume's data must not start as a voter, if it must not.
/// Judged only against a running cluster of the same cluster ID that lists
/// published members (data of another cluster, or with nobody to compare
/// with, restarts as before: `stage etcd-promote` reports a member outside
/// its cluster). The rule follows etcd 3.5's operations guide: a member
/// whose data is lost or unusable is removed and added back with a blank
/// data directory ("Replace a failed machine",
/// etcd.io/docs/v3.5/op-guide/runtime-configuration), and data from a
/// snapshot never rejoins under its old identity (`snapshot restore`
/// rewrites the member and cluster IDs for that reason,
/// etcd.io/docs/v3.5/op-guide/recovery): raft counts on a member never
/// forgetting the entries and votes it acknowledged. Stale is:
/// - the data's member ID is not in the cluster's member list: the member
///   was removed (or replaced under this peer URL) since the data was
///   written;
/// - the data was last started on another volume ([`Held::moved_from`]):
///   a volume restored from an EBS snapshot (DLM's daily ones) or copied
///   holds what its member had at the snapshot's time, whatever it
///   acknowledged after. A data directory's age cannot be read against the
///   cluster's own record (etcd keeps none per member), so this is judged by
///   where the data has been, which EBS makes exact: a snapshot is
///   restored only into a new volume.
pub fn stale(o: &Observed) -> Option<String> {
    let (Some(view), Some(held)) = (&o.cluster, &o.held) else {
        return None;
    };
    if forming(view) || view.cluster_id != held.cluster_id {
        return None;
    }
    let what = format!(
        "its data is etcd member {:x} of cluster {:x}",
        held.member_id, held.cluster_id
    );
    if !view.members.iter().any(|m| m.id == held.member_id) {
        return Some(format!("{what}, which the cluster no longer lists"));
    }
    held.moved_from.as_ref().map(|v| {
        format!(
            "{what}, last started on volume {v}, not this one: restored from a snapshot or copied, \
             it may be older than what the member acknowledged since"
        )
    })
}

/// Pure: whether the cluster may change its membership for this member
/// (whose entries are `mine`): a quorum of the voting members other than
/// this one answers with a leader, and no other member is joining; a
/// learner whose node is gone and that has held up joins for
/// [`STALE_LEARNER_AFTER`] is to be removed.
fn may_change(o: &Observed, view: &View, mine: &[u64]) -> Result<(), Plan> {
    let voters: Vec<&Member> = view.members.iter().filter(|m| !m.is_learner).collect();
    let quorum = voters.len() / 2 + 1;
    let healthy = voters
        .iter()
        .filter(|m| !mine.contains(&m.id) && view.healthy.contains(&m.id))
        .count();
    if healthy < quorum {
        return Err(Plan::Refuse {
            reason: format!(
                "the cluster has no quorum without this member: {healthy} of {} voting members answer with a leader, {quorum} needed",
                voters.len()
            ),
        });
    }
    let Some(other) = view
        .members
        .iter()
        .find(|m| !mine.contains(&m.id) && (!m.started() || m.is_learner))
    else {
        return Ok(());
    };
    let seen = o.learners.iter().find(|l| l.id == other.id && other.is_learner);
    if let Some(LearnerSeen {
        waited,
        node: NodeSeen::Gone(why),
        ..
    }) = seen
    {
        if *waited >= STALE_LEARNER_AFTER {
            return Err(Plan::RemoveLearner {
                member: other.clone(),
                reason: format!("a learner for {}s (not promoted) and {why}", waited.as_secs()),
            });
        }
    }
    let what = if other.started() {
        "is a learner, not yet promoted"
    } else {
        "was added and has not started"
    };
    let since = seen.map_or(String::new(), |l| {
        let node = match &l.node {
            NodeSeen::Alive(w) | NodeSeen::Gone(w) => w,
        };
        format!(" (seen so for {}s; {node})", l.waited.as_secs())
    });
    Err(Plan::Wait {
        reason: format!(
            "member {} ({}) {what}{since}; members join one at a time",
            other.hex_id(),
            other.peer_urls.join(",")
        ),
    })
}

/// One of the environment's member volumes as EC2 lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeSeen {
    pub id: String,
    /// Its `nodeboot.io/member` tag.
    pub member: Option<String>,
    /// Its `nodeboot.io/formatted` tag (RFC 3339, the formatting node's clock).
    pub formatted: Option<String>,
}

/// How much earlier than this member's own volume another member's must
/// have been formatted to count as evidence. A first boot formats every
/// volume within moments (and a slow node that formats later finds the
/// others forming the cluster, unless they are stuck: then it waits for
/// them, retried); the margin also covers the nodes' clock skew (the tag's
/// time is the formatting node's). The price: a cluster lost within its
/// first 10 minutes is guarded by its marker and backups only.
pub const FORMATTED_MARGIN: std::time::Duration = std::time::Duration::from_secs(600);

/// The volumes other than `mine` tagged formatted more than `margin`
/// before `mine` was (every tagged one when `mine` is not tagged; an
/// unreadable time counts): they held a member's data while this one did
/// not exist.
pub fn formatted_before(volumes: &[VolumeSeen], mine: &str, margin: std::time::Duration) -> Vec<String> {
    let time = |v: &VolumeSeen| v.formatted.as_deref().map(humantime::parse_rfc3339_weak);
    let my_time = volumes
        .iter()
        .find(|v| v.id == mine)
        .and_then(time)
        .and_then(Result::ok);
    volumes
        .iter()
        .filter(|v| v.id != mine)
        .filter(|v| match time(v) {
            None => false,
            Some(Ok(t)) => my_time.is_none_or(|mine| t + margin < mine),
            Some(Err(_)) => true,
        })
        .map(|v| {
            format!(
                "{} (member {}, formatted {})",
                v.id,
                v.member.as_deref().unwrap_or("?"),
                v.formatted.as_deref().unwrap_or_default()
            )
        })
        .collect()
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

/// Where a running member stands in the cluster its peers run: what
/// `stage etcd-promote` decides each try (issue 20, a younger cluster).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Standing {
    /// Listed under this member's own ID: promote it if a learner, else done.
    Listed { id: u64, learner: bool },
    /// Not decidable yet (no other member answers with a leader): ask again.
    Unknown(String),
    /// This member's etcd runs but is not part of the cluster it talks to
    /// (etcd logs "ID mismatch" / "failed to publish local member"): a
    /// failure for an operator, never retried into a power-off.
    Outside(String),
}

/// What `promote` saw of the cluster: one other member that answered with a
/// leader, its cluster ID and its (linearizable) member list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeersView {
    pub endpoint: String,
    pub cluster_id: u64,
    pub members: Vec<Member>,
}

/// Pure: this member's standing, from the cluster its peers run and, when
/// its own etcd answers, its own member and cluster IDs. An etcd that never
/// published serves no client, so `mine` is often None: then the peers'
/// list decides alone (this peer URL absent: outside).
pub fn standing(me: &Me, mine: Option<(u64, u64)>, peers: Option<&PeersView>) -> Standing {
    let Some(peers) = peers else {
        return Standing::Unknown("no other member answers with a leader".into());
    };
    let cluster = format!("cluster {:x} (as {} answers)", peers.cluster_id, peers.endpoint);
    let Some(listed) = peers.members.iter().find(|m| m.peer_urls.contains(&me.peer_url)) else {
        return Standing::Outside(format!("{cluster} does not list its peer URL {}", me.peer_url));
    };
    match mine {
        Some((_, own_cluster)) if own_cluster != peers.cluster_id => Standing::Outside(format!(
            "its etcd runs cluster {own_cluster:x}, the other members {cluster}"
        )),
        Some((own_id, _)) if own_id != listed.id => Standing::Outside(format!(
            "its etcd runs as member {own_id:x}, but {cluster} lists its peer URL {} as member {}",
            me.peer_url,
            listed.hex_id()
        )),
        _ => Standing::Listed {
            id: listed.id,
            learner: listed.is_learner,
        },
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::time::Duration;

    use super::*;

    const ME: &str = "env-etcd-0";
    const MY_URL: &str = "https://10.0.10.10:2380";
    const CLUSTER: u64 = 0xc1;

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
        View {
            members,
            healthy,
            cluster_id: CLUSTER,
        }
    }

    #[derive(Debug, Clone, Copy)]
    enum Listed {
        No,
        Unstarted,
        Stale,
    }

    /// With `history`, a backup says the cluster existed.
    fn observed(data: Data, cluster: Option<View>, history: bool) -> Observed {
        Observed {
            data,
            me: me(),
            cluster,
            existed: Evidence {
                backup: history.then(|| "20261130T113500Z-r1234".into()),
                ..Default::default()
            },
            held: None,
            learners: vec![],
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
        Existed,
        SetAside,
        RemoveLearner,
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
            Plan::Existed { .. } => Kind::Existed,
            Plan::SetAside { .. } => Kind::SetAside,
            Plan::RemoveLearner { .. } => Kind::RemoveLearner,
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
        // Nothing answers: a blank member starts a new cluster only without evidence.
        assert_eq!(kind(&plan(&observed(Data::Blank, None, false))), Bootstrap);
        assert_eq!(kind(&plan(&observed(Data::Blank, None, true))), Existed);
        assert_eq!(kind(&plan(&observed(Data::Member, None, true))), Restart);
    }

    #[test]
    fn any_one_piece_of_evidence_forbids_a_new_cluster_when_nobody_answers() {
        let marker = || Some("s3://b/backups/etcd-cluster/marker.json (cluster 5a7c)".to_string());
        let backup = || Some("20261130T113500Z-r1234".to_string());
        let formatted = || vec!["vol-2 (member 2, formatted 2026-11-30T11:35:00Z)".to_string()];
        let table = [
            (Evidence::default(), None),
            (
                Evidence {
                    marker: marker(),
                    ..Default::default()
                },
                Some("the cluster marker s3://b/backups/etcd-cluster/marker.json (cluster 5a7c)"),
            ),
            (
                Evidence {
                    backup: backup(),
                    ..Default::default()
                },
                Some("the backup 20261130T113500Z-r1234"),
            ),
            (
                Evidence {
                    formatted: formatted(),
                    ..Default::default()
                },
                Some("member volume vol-2 (member 2, formatted 2026-11-30T11:35:00Z)"),
            ),
            (
                Evidence {
                    marker: marker(),
                    backup: backup(),
                    formatted: formatted(),
                },
                Some("marker.json (cluster 5a7c); the backup 20261130T113500Z-r1234; member volume vol-2"),
            ),
        ];
        for (existed, want) in table {
            let o = Observed {
                data: Data::Blank,
                me: me(),
                cluster: None,
                existed: existed.clone(),
                held: None,
                learners: vec![],
            };
            match (plan(&o), want) {
                (Plan::Bootstrap, None) => {}
                (Plan::Existed { evidence }, Some(want)) => assert!(evidence.contains(want), "{evidence}"),
                (got, want) => panic!("{existed:?}: {got:?}, want {want:?}"),
            }
            // A volume with data restarts whatever the evidence.
            assert_eq!(
                plan(&Observed {
                    data: Data::Member,
                    ..o
                }),
                Plan::Restart
            );
        }
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
            cluster_id: CLUSTER,
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
            cluster_id: CLUSTER,
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
                cluster_id: CLUSTER,
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
            cluster_id: CLUSTER,
        };
        assert!(matches!(plan(&observed(Data::Blank, Some(v), false)), Plan::Join { remove: Some(m) } if m.id == 1));
    }

    /// This member's volume with data whose WAL says `held`, and the cluster as `view` says.
    fn with_data(view: Option<View>, held: Held) -> Observed {
        Observed {
            held: Some(held),
            ..observed(Data::Member, view, true)
        }
    }

    fn held(member_id: u64, cluster_id: u64, moved_from: Option<&str>) -> Held {
        Held {
            member_id,
            cluster_id,
            moved_from: moved_from.map(str::to_string),
        }
    }

    #[test]
    fn stale_data_is_set_aside_only_while_the_cluster_runs_with_quorum_without_it() {
        use Kind::*;
        let snapshot = Some("vol-0old");
        // (listed as, data's member ID, cluster ID, data moved from, quorum without me) -> plan
        let table = [
            // The data's member is listed and the data never left this volume: a restart.
            (Listed::Stale, 1, CLUSTER, None, true, Restart),
            (Listed::Stale, 1, CLUSTER, None, false, Restart),
            // Restored from a snapshot of another volume: aside, then a blank join.
            (Listed::Stale, 1, CLUSTER, snapshot, true, SetAside),
            // ... unless the cluster needs its vote: every volume restored after a total loss.
            (Listed::Stale, 1, CLUSTER, snapshot, false, Restart),
            // The data's member ID is no longer listed (removed, or replaced under this peer URL).
            (Listed::No, 1, CLUSTER, None, true, SetAside),
            (Listed::Stale, 9, CLUSTER, None, true, SetAside),
            (Listed::No, 1, CLUSTER, None, false, Restart),
            // Data of another cluster is not judged here: it restarts and
            // `etcd-promote` reports it outside (exit 26), its data untouched.
            (Listed::No, 1, 0xc2, None, true, Restart),
            (Listed::Stale, 1, 0xc2, snapshot, true, Restart),
        ];
        for (listed, member_id, cluster_id, moved_from, quorum, want) in table {
            let o = with_data(Some(view(listed, quorum)), held(member_id, cluster_id, moved_from));
            let got = plan(&o);
            assert_eq!(
                kind(&got),
                want,
                "{listed:?} {member_id} {cluster_id:x} {moved_from:?} {quorum}: {got:?}"
            );
            if let Plan::SetAside { reason } = got {
                assert!(reason.contains(&format!("member {member_id:x}")), "{reason}");
            }
        }
        // Nobody answers, or the members are still forming a cluster: nothing to compare with.
        let o = with_data(None, held(1, CLUSTER, snapshot));
        assert_eq!(plan(&o), Plan::Restart);
        let mut forming = view(Listed::Stale, true);
        forming.members.iter_mut().for_each(|m| m.client_urls.clear());
        assert_eq!(
            plan(&with_data(Some(forming), held(1, CLUSTER, snapshot))),
            Plan::Restart
        );
        // A volume whose WAL could not be read (no `held`) restarts as before.
        assert_eq!(
            plan(&observed(Data::Member, Some(view(Listed::No, true)), true)),
            Plan::Restart
        );
    }

    #[test]
    fn set_aside_data_rejoins_as_a_blank_member_removing_its_old_id() {
        let v = view(Listed::Stale, true);
        let o = with_data(Some(v.clone()), held(1, CLUSTER, Some("vol-0old")));
        assert!(matches!(plan(&o), Plan::SetAside { .. }));
        // Once the data is aside the volume is blank: the ordinary join removes member 1.
        let after = Observed {
            data: Data::Blank,
            held: None,
            ..o
        };
        assert!(matches!(plan(&after), Plan::Join { remove: Some(m) } if m.id == 1));
        // Another member joining: wait, the data stays where it is.
        let mut busy = v;
        busy.members
            .push(member(9, "env-etcd-3", "https://10.0.10.11:2380", true));
        let o = with_data(Some(busy), held(1, CLUSTER, Some("vol-0old")));
        assert!(matches!(plan(&o), Plan::Wait { .. }), "{:?}", plan(&o));
    }

    #[test]
    fn a_learner_is_removed_only_when_its_node_is_gone_and_it_held_joins_past_the_bound() {
        let learner = |name: &str| member(9, name, "https://10.0.12.11:2380", true);
        let gone = || NodeSeen::Gone("no instance holds member 3's volume or ENI".into());
        let alive = || NodeSeen::Alive("member 3's instance i-3 is running".into());
        let long = STALE_LEARNER_AFTER;
        let short = STALE_LEARNER_AFTER - Duration::from_secs(1);
        for (name, waited, node, remove) in [
            ("", long, gone(), true),
            ("env-etcd-3", long, gone(), true),
            ("env-etcd-3", long + long, gone(), true),
            ("env-etcd-3", short, gone(), false),
            // Alive and merely slow: never removed, however long.
            ("env-etcd-3", long * 10, alive(), false),
            ("", long * 10, alive(), false),
        ] {
            let mut members = others();
            members.push(learner(name));
            let v = View {
                members,
                healthy: [2, 3].into(),
                cluster_id: CLUSTER,
            };
            let seen = LearnerSeen {
                id: 9,
                waited,
                node: node.clone(),
            };
            // A blank joiner, and a member whose stale data waits to rejoin.
            for o in [
                Observed {
                    learners: vec![seen.clone()],
                    ..observed(Data::Blank, Some(v.clone()), true)
                },
                Observed {
                    learners: vec![seen.clone()],
                    ..with_data(Some(v.clone()), held(1, CLUSTER, Some("vol-old")))
                },
            ] {
                match (plan(&o), remove) {
                    (Plan::RemoveLearner { member, reason }, true) => {
                        assert_eq!(member.id, 9);
                        assert!(reason.contains("no instance holds member 3"), "{reason}");
                    }
                    (Plan::Wait { reason }, false) => {
                        assert!(
                            reason.contains(&format!("seen so for {}s", waited.as_secs())),
                            "{reason}"
                        )
                    }
                    (got, _) => panic!("{name:?} {waited:?} {node:?}: {got:?}"),
                }
            }
        }
        // Not seen (no observation): wait, as before.
        let mut members = others();
        members.push(learner("env-etcd-3"));
        let v = View {
            members,
            healthy: [2, 3].into(),
            cluster_id: CLUSTER,
        };
        assert!(matches!(plan(&observed(Data::Blank, Some(v), true)), Plan::Wait { .. }));
        // Without quorum nothing is removed: a refusal, as before.
        let mut no_quorum = view(Listed::No, false);
        no_quorum.members.push(learner(""));
        let o = Observed {
            learners: vec![LearnerSeen {
                id: 9,
                waited: long,
                node: gone(),
            }],
            ..observed(Data::Blank, Some(no_quorum), true)
        };
        assert!(matches!(plan(&o), Plan::Refuse { .. }));
    }

    #[test]
    fn a_node_is_gone_only_when_no_instance_or_only_terminated_ones_hold_its_member() {
        use InstanceState::*;
        let holders = |h: &[(&str, InstanceState)]| -> BTreeMap<String, InstanceState> {
            h.iter().map(|(i, s)| (i.to_string(), *s)).collect()
        };
        let gone = |n: &NodeSeen| matches!(n, NodeSeen::Gone(_));
        assert!(gone(&node_seen("3", &holders(&[]))));
        assert!(gone(&node_seen("3", &holders(&[("i-1", Terminated)]))));
        assert!(gone(&node_seen(
            "3",
            &holders(&[("i-1", Terminated), ("i-2", Terminated)])
        )));
        // Stopped may start again; shutting down, unknown or unlisted may still run.
        for s in [Pending, Running, Stopping, Stopped, ShuttingDown, Unknown] {
            assert!(!gone(&node_seen("3", &holders(&[("i-1", s)]))), "{s:?}");
            assert!(
                !gone(&node_seen("3", &holders(&[("i-0", Terminated), ("i-1", s)]))),
                "{s:?}"
            );
        }
    }

    #[test]
    fn volumes_formatted_well_before_this_members_own_are_evidence() {
        let m = FORMATTED_MARGIN;
        let v = |id: &str, member: &str, formatted: Option<&str>| VolumeSeen {
            id: id.into(),
            member: Some(member.into()),
            formatted: formatted.map(str::to_string),
        };
        let first_boot = [
            v("vol-0", "0", Some("2026-11-30T11:35:02Z")),
            v("vol-1", "1", Some("2026-11-30T11:35:00Z")),
            v("vol-2", "2", None),
        ];
        // A first boot: two seconds apart is no evidence, either way.
        assert!(formatted_before(&first_boot, "vol-1", m).is_empty());
        assert!(formatted_before(&first_boot, "vol-0", m).is_empty());
        // Without a margin the earlier one would count (the margin is what lets both start).
        assert_eq!(
            formatted_before(&first_boot, "vol-0", Duration::ZERO),
            ["vol-1 (member 1, formatted 2026-11-30T11:35:00Z)"]
        );
        // Formatted in the same second: neither is before the other.
        let same = [
            v("vol-0", "0", Some("2026-11-30T11:35:00Z")),
            v("vol-1", "1", Some("2026-11-30T11:35:00Z")),
        ];
        assert!(formatted_before(&same, "vol-0", Duration::ZERO).is_empty());
        // Two replaced volumes and a surviving member's from last month.
        let replaced = [
            v("vol-a", "0", Some("2026-12-07T10:00:00Z")),
            v("vol-b", "1", Some("2026-12-07T10:00:05Z")),
            v("vol-2", "2", Some("2026-11-02T09:00:00Z")),
        ];
        for mine in ["vol-a", "vol-b"] {
            let found = formatted_before(&replaced, mine, m);
            assert!(found.iter().any(|f| f.starts_with("vol-2 (member 2")), "{found:?}");
        }
        // A slow first boot: 9 minutes apart is no evidence, 11 minutes is.
        let slow = [
            v("vol-0", "0", Some("2026-11-30T11:44:00Z")),
            v("vol-1", "1", Some("2026-11-30T11:35:00Z")),
        ];
        assert!(formatted_before(&slow, "vol-0", m).is_empty());
        let late = [
            v("vol-0", "0", Some("2026-11-30T11:46:00Z")),
            v("vol-1", "1", Some("2026-11-30T11:35:00Z")),
        ];
        assert_eq!(formatted_before(&late, "vol-0", m).len(), 1);
        // This volume untagged: every tagged one counts; an unreadable time counts.
        let odd = [
            v("vol-0", "0", None),
            v("vol-1", "1", Some("yesterday")),
            v("vol-2", "2", None),
        ];
        assert_eq!(formatted_before(&odd, "vol-0", m).len(), 1);
        assert_eq!(formatted_before(&odd, "vol-2", m).len(), 1);
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
    #[test]
    fn a_running_member_outside_the_cluster_it_talks_to_is_outside_never_promoted() {
        let view = |cluster_id, members: Vec<Member>| PeersView {
            endpoint: "https://10.0.11.10:2379".into(),
            cluster_id,
            members,
        };
        let listed = |learner| {
            let mut m = others();
            m.push(member(1, ME, MY_URL, learner));
            view(0xc1, m)
        };
        let outside = |s: Standing| matches!(s, Standing::Outside(_));
        // Nobody else answers with a leader: ask again.
        assert!(matches!(standing(&me(), None, None), Standing::Unknown(_)));
        // Listed: a learner is promoted, a voter is done; its own etcd agrees or is silent.
        assert_eq!(
            standing(&me(), None, Some(&listed(true))),
            Standing::Listed { id: 1, learner: true }
        );
        assert_eq!(
            standing(&me(), Some((1, 0xc1)), Some(&listed(false))),
            Standing::Listed { id: 1, learner: false }
        );
        // A younger cluster at the peers' addresses does not list this peer URL.
        assert!(outside(standing(&me(), None, Some(&view(0xc2, others())))));
        assert!(outside(standing(&me(), Some((1, 0xc1)), Some(&view(0xc2, others())))));
        // Its own etcd runs another cluster, or another member ID under this peer URL.
        assert!(outside(standing(&me(), Some((1, 0xc9)), Some(&listed(true)))));
        assert!(outside(standing(&me(), Some((9, 0xc1)), Some(&listed(false)))));
        // The message names the way out and says the data is untouched.
        let Standing::Outside(why) = standing(&me(), None, Some(&view(0xc2, others()))) else {
            unreachable!()
        };
        assert!(why.contains(MY_URL) && why.contains("c2"), "{why}");
    }
}
