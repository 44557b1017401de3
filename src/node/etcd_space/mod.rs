//! etcd's space kept on a node, without an operator: each etcd node's
//! backup service (`nodeboot etcd backup`) runs one maintenance pass per
//! poll for its own member ([`pass`] observes and acts; [`plan`] is pure).
//!
//! - A member's file that holds much more than it uses is defragmented
//!   (OpenShift's defrag controller's rule, the thresholds in
//!   `shared::etcd::space`): one member at a time, under the etcd lock
//!   [`LOCK`], leader last. A defragmentation rewrites the member's file and
//!   the member serves nothing meanwhile.
//! - Under a `NOSPACE` alarm (the cluster refuses writes) the pass compacts
//!   the history itself (the API server cannot: its compaction is a write),
//!   defragments every member with space to give back, leader last, and
//!   disarms the alarm once every voting member's file is under its quota.
//!   etcd refuses the lock's lease then, so the pass goes on unlocked when
//!   nobody holds the lock; the fixed order still lets one node act at a
//!   time: a node acts only when its member is the first that needs it.
//! - A `CORRUPT` alarm stops everything: a human must look.
//!
//! Nothing is done unless every voting member answers with the same leader
//! and no learner is catching up; a member is defragmented only when
//! `shared::etcd::disruption` says it may be disrupted (a caught-up quorum
//! without it), asked again under the lock.

pub mod pass;

use crate::shared::etcd::disruption;
use crate::shared::etcd::space::{
    fragmented_percent, human_bytes, reclaimable, Alarm, AlarmKind, DEFRAG_MIN_FRAGMENTED_PERCENT,
    DEFRAG_MIN_RECLAIMABLE_BYTES, NOSPACE_MIN_RECLAIMABLE_PERCENT_OF_QUOTA,
};

/// The etcd lock a defragmentation holds: the one of every voluntary
/// disruption of a member (the secrets sync's restarts, the reboot
/// coordinator and `roll` take it too).
pub use crate::shared::etcd::lock::DISRUPTION as LOCK;

/// When a member's file is worth defragmenting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Thresholds {
    /// More than this share of the file is free ...
    pub min_fragmented_percent: u64,
    /// ... and more than this many bytes would be given back.
    pub min_reclaimable_bytes: u64,
    /// Under `NOSPACE`: at least this share of the quota would be given back.
    pub nospace_min_reclaimable_percent_of_quota: u64,
}

impl Thresholds {
    /// The service's: OpenShift's defrag controller (45 %, 100 MiB).
    pub const DEFAULT: Thresholds = Thresholds {
        min_fragmented_percent: DEFRAG_MIN_FRAGMENTED_PERCENT,
        min_reclaimable_bytes: DEFRAG_MIN_RECLAIMABLE_BYTES,
        nospace_min_reclaimable_percent_of_quota: NOSPACE_MIN_RECLAIMABLE_PERCENT_OF_QUOTA,
    };
}

/// What one member's `Status` and metrics say about its space.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Space {
    /// The leader it knows (0: none).
    pub leader: u64,
    /// Its database file.
    pub db_size: i64,
    /// The part of the file in use.
    pub in_use: i64,
    /// The quota it runs with.
    pub quota: i64,
    /// Its store's revision (how far it has caught up).
    pub revision: i64,
}

/// One member as a pass sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberView {
    pub id: u64,
    pub name: String,
    pub is_learner: bool,
    /// `None`: it did not answer.
    pub space: Option<Space>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    /// This node's member.
    pub me: u64,
    pub members: Vec<MemberView>,
    /// The cluster's alarms.
    pub alarms: Vec<Alarm>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    Nothing,
    /// Something is due, but not from this node now.
    Wait(String),
    /// A `CORRUPT` alarm: nothing is touched.
    Corrupt(String),
    /// Under `NOSPACE` with no member that has space to give back: compact
    /// the history, so that a defragmentation can.
    Compact,
    /// Defragment this node's member (compacting first under `NOSPACE`).
    Defragment {
        compact_first: bool,
        why: String,
    },
    /// Space is back on every voting member: disarm these alarms.
    Disarm(Vec<Alarm>),
}

/// Whether `space`'s file is worth defragmenting (`nospace`: the cluster
/// is under a `NOSPACE` alarm, when every byte counts).
pub fn worth_defragmenting(space: &Space, nospace: bool, t: &Thresholds) -> bool {
    let free = reclaimable(space.db_size, space.in_use);
    if nospace {
        free > 0 && free * 100 >= space.quota.max(0) as u64 * t.nospace_min_reclaimable_percent_of_quota
    } else {
        // Exact: more than 45 % of the file (not of the truncated percentage).
        free * 100 > space.db_size.max(0) as u64 * t.min_fragmented_percent && free > t.min_reclaimable_bytes
    }
}

fn why(space: &Space) -> String {
    format!(
        "{} of its {} file free ({} %), quota {}",
        human_bytes(reclaimable(space.db_size, space.in_use) as i64),
        human_bytes(space.db_size),
        fragmented_percent(space.db_size, space.in_use),
        human_bytes(space.quota)
    )
}

/// The members as the one disruption rule reads them.
pub fn states(o: &Observed) -> disruption::Observed {
    o.members
        .iter()
        .map(|m| disruption::MemberState {
            id: m.id,
            name: m.name.clone(),
            is_learner: m.is_learner,
            answer: m.space.map(|s| (s.leader, s.revision)),
        })
        .collect()
}

/// Pure: what this node does on this pass.
pub fn plan(o: &Observed, t: &Thresholds) -> Plan {
    let corrupt: Vec<&Alarm> = o.alarms.iter().filter(|a| a.kind == AlarmKind::Corrupt).collect();
    if !corrupt.is_empty() {
        let names: Vec<String> = corrupt.iter().map(|a| name_of(o, a.member_id)).collect();
        return Plan::Corrupt(format!(
            "CORRUPT raised by {}: its data differs from the other members'; nothing is compacted, \
             defragmented or disarmed until a human has looked",
            names.join(", ")
        ));
    }
    let nospace: Vec<Alarm> = o
        .alarms
        .iter()
        .filter(|a| a.kind == AlarmKind::NoSpace)
        .cloned()
        .collect();
    let voters = || o.members.iter().filter(|m| !m.is_learner);
    let candidates: Vec<&MemberView> = voters()
        .filter(|m| m.space.is_some_and(|s| worth_defragmenting(&s, !nospace.is_empty(), t)))
        .collect();
    if nospace.is_empty() && candidates.is_empty() {
        return Plan::Nothing;
    }
    let states = states(o);
    if let Err(why) = disruption::healthy(&states) {
        return Plan::Wait(format!("the etcd cluster is not healthy: {why}"));
    }
    let Some(first) = order(&candidates).into_iter().next() else {
        // Under NOSPACE, and no member has space to give back: either
        // every file is under its quota again, or the history must go first.
        let space_back = voters().all(|m| m.space.is_some_and(|s| s.db_size < s.quota));
        return if space_back {
            Plan::Disarm(nospace)
        } else {
            Plan::Compact
        };
    };
    if first.id != o.me {
        let me_due = candidates.iter().any(|m| m.id == o.me);
        return if me_due {
            Plan::Wait(format!(
                "{} is defragmented first (one member at a time, the leader last)",
                first.name
            ))
        } else {
            Plan::Nothing
        };
    }
    if let Err(why) = disruption::assess(&states, &first.name) {
        return Plan::Wait(format!("{} may not be disrupted now: {why}", first.name));
    }
    let space = first.space.expect("a candidate answered");
    Plan::Defragment {
        compact_first: !nospace.is_empty(),
        why: why(&space),
    }
}

/// Non-leaders by name, then the leader.
fn order<'a>(candidates: &[&'a MemberView]) -> Vec<&'a MemberView> {
    let mut sorted = candidates.to_vec();
    sorted.sort_by_key(|m| (m.space.is_some_and(|s| s.leader == m.id), m.name.clone(), m.id));
    sorted
}

fn name_of(o: &Observed, id: u64) -> String {
    o.members
        .iter()
        .find(|m| m.id == id)
        .map_or_else(|| format!("{id:x}"), |m| m.name.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: i64 = 1024 * 1024;
    const GIB: i64 = 1024 * MIB;
    const LEADER: u64 = 2;

    /// A file of `db` MiB using `used` MiB, under an 8 GiB quota, led by member 2.
    fn space(db: i64, used: i64) -> Option<Space> {
        Some(Space {
            leader: LEADER,
            db_size: db * MIB,
            in_use: used * MIB,
            quota: 8 * GIB,
            revision: 1000,
        })
    }

    fn member(id: u64, space: Option<Space>) -> MemberView {
        MemberView {
            id,
            name: format!("m{id}"),
            is_learner: false,
            space,
        }
    }

    fn cluster(me: u64, spaces: [Option<Space>; 3]) -> Observed {
        Observed {
            me,
            members: spaces
                .into_iter()
                .enumerate()
                .map(|(i, s)| member(i as u64 + 1, s))
                .collect(),
            alarms: Vec::new(),
        }
    }

    fn alarm(member_id: u64, kind: AlarmKind) -> Alarm {
        Alarm { member_id, kind }
    }

    fn defragment(compact_first: bool) -> impl Fn(&Plan) -> bool {
        move |p| matches!(p, Plan::Defragment { compact_first: c, .. } if *c == compact_first)
    }

    #[test]
    fn openshifts_rule_more_than_45_percent_and_100_mib_free() {
        let t = Thresholds::DEFAULT;
        let cases = [
            // (file MiB, in use MiB, worth it)
            (1000, 500, true),    // 50 %, 500 MiB
            (1000, 550, false),   // 45 %: not more than 45
            (1000, 549, true),    // 45.1 %
            (200, 100, false),    // 50 %, but 100 MiB: not more than 100
            (202, 100, true),     // 50.5 %, 102 MiB
            (10000, 6000, false), // 4 GiB free but 40 %
            (0, 0, false),
        ];
        for (db, used, worth) in cases {
            assert_eq!(
                worth_defragmenting(&space(db, used).unwrap(), false, &t),
                worth,
                "{db} MiB using {used} MiB"
            );
        }
    }

    #[test]
    fn under_nospace_one_percent_of_the_quota_is_worth_it() {
        let t = Thresholds::DEFAULT;
        let quota = |db, used| Space {
            quota: 16 * MIB,
            ..space(db, used).unwrap()
        };
        // A just-defragmented file has a few KiB free: not again.
        let fresh = Space {
            db_size: 548_864,
            in_use: 544_768,
            ..quota(0, 0)
        };
        assert!(!worth_defragmenting(&fresh, true, &t));
        assert!(worth_defragmenting(&quota(16, 1), true, &t));
        assert!(
            !worth_defragmenting(&quota(16, 16), true, &t),
            "nothing free: compact first"
        );
        assert!(
            !worth_defragmenting(&quota(16, 1), false, &t),
            "outside NOSPACE OpenShift's rule holds"
        );
    }

    #[test]
    fn nothing_when_no_file_is_fragmented_and_no_alarm() {
        let o = cluster(1, [space(100, 90), space(100, 90), space(100, 90)]);
        assert_eq!(plan(&o, &Thresholds::DEFAULT), Plan::Nothing);
        // Not even when a member is down: that is not this pass's business.
        let o = cluster(1, [space(100, 90), None, space(100, 90)]);
        assert_eq!(plan(&o, &Thresholds::DEFAULT), Plan::Nothing);
    }

    #[test]
    fn one_member_at_a_time_non_leaders_by_name_and_the_leader_last() {
        let t = Thresholds::DEFAULT;
        let all = [space(1000, 100), space(1000, 100), space(1000, 100)];
        // m1 first; m2 (the leader) and m3 wait for it.
        assert!(defragment(false)(&plan(&cluster(1, all), &t)));
        for me in [2, 3] {
            assert!(
                matches!(&plan(&cluster(me, all), &t), Plan::Wait(w) if w.starts_with("m1 is defragmented first")),
                "m{me}"
            );
        }
        // m1 done: m3 next, the leader still waits.
        let after_m1 = [space(100, 100), space(1000, 100), space(1000, 100)];
        assert!(defragment(false)(&plan(&cluster(3, after_m1), &t)));
        assert!(matches!(&plan(&cluster(2, after_m1), &t), Plan::Wait(w) if w.starts_with("m3")));
        assert_eq!(plan(&cluster(1, after_m1), &t), Plan::Nothing);
        // Only the leader left: its turn.
        let leader_left = [space(100, 100), space(1000, 100), space(100, 100)];
        assert!(defragment(false)(&plan(&cluster(2, leader_left), &t)));
        assert_eq!(plan(&cluster(3, leader_left), &t), Plan::Nothing);
    }

    #[test]
    fn the_leader_alone_fragmented_goes_at_once() {
        let o = cluster(2, [space(100, 90), space(1000, 100), space(100, 90)]);
        assert!(defragment(false)(&plan(&o, &Thresholds::DEFAULT)));
    }

    #[test]
    fn an_unhealthy_cluster_waits() {
        let t = Thresholds::DEFAULT;
        let frag = space(1000, 100);
        let down = cluster(1, [frag, None, frag]);
        assert!(matches!(&plan(&down, &t), Plan::Wait(w) if w.ends_with("m2 does not answer")));
        let no_leader = Space {
            leader: 0,
            ..frag.unwrap()
        };
        let o = cluster(1, [frag, Some(no_leader), frag]);
        assert!(matches!(&plan(&o, &t), Plan::Wait(w) if w.ends_with("m2 knows no leader")));
        let other = Space {
            leader: 3,
            ..frag.unwrap()
        };
        let o = cluster(1, [frag, frag, Some(other)]);
        assert!(matches!(&plan(&o, &t), Plan::Wait(w) if w.ends_with("different leaders")));
        let mut o = cluster(1, [frag, frag, frag]);
        o.members.push(MemberView {
            is_learner: true,
            ..member(4, space(10, 10))
        });
        assert!(matches!(&plan(&o, &t), Plan::Wait(w) if w.ends_with("m4 is a learner catching up")));
    }

    /// The one disruption rule: a member is not defragmented while the
    /// caught-up members without it are fewer than a quorum.
    #[test]
    fn a_member_needed_for_a_caught_up_quorum_waits() {
        let t = Thresholds::DEFAULT;
        let behind = Space {
            revision: 1000 - 5000,
            ..space(100, 90).unwrap()
        };
        let o = cluster(1, [space(1000, 100), space(100, 90), Some(behind)]);
        assert!(
            matches!(&plan(&o, &t), Plan::Wait(w) if w.starts_with("m1 may not be disrupted now") && w.contains("m3 behind")),
            "{:?}",
            plan(&o, &t)
        );
    }

    #[test]
    fn nospace_compacts_then_defragments_leader_last_then_disarms() {
        let t = Thresholds::DEFAULT;
        let q = |db: i64, used: i64| {
            Some(Space {
                quota: 16 * MIB,
                ..space(db, used).unwrap()
            })
        };
        let nospace = vec![alarm(1, AlarmKind::NoSpace)];
        let with = |me, spaces| Observed {
            alarms: nospace.clone(),
            ..cluster(me, spaces)
        };
        // Full, nothing free: every node compacts (the same compaction).
        let full = [q(16, 16), q(16, 16), q(16, 16)];
        for me in 1..=3 {
            assert_eq!(plan(&with(me, full), &t), Plan::Compact);
        }
        // Compacted: m1, then m3, then the leader; each compacts first.
        let compacted = [q(16, 1), q(16, 1), q(16, 1)];
        assert!(defragment(true)(&plan(&with(1, compacted), &t)));
        assert!(matches!(plan(&with(2, compacted), &t), Plan::Wait(_)));
        assert!(matches!(plan(&with(3, compacted), &t), Plan::Wait(_)));
        let leader_left = [q(1, 1), q(16, 1), q(1, 1)];
        assert!(defragment(true)(&plan(&with(2, leader_left), &t)));
        // Every file under its quota: any node disarms.
        let done = [q(1, 1), q(1, 1), q(1, 1)];
        for me in 1..=3 {
            assert_eq!(plan(&with(me, done), &t), Plan::Disarm(nospace.clone()));
        }
        // Live data fills the quota even compacted: compact (finds nothing), never disarm.
        let live = [q(16, 16), q(1, 1), q(1, 1)];
        assert_eq!(plan(&with(2, live), &t), Plan::Compact);
    }

    #[test]
    fn nospace_waits_for_a_healthy_cluster_too() {
        let o = Observed {
            alarms: vec![alarm(1, AlarmKind::NoSpace)],
            ..cluster(1, [space(16, 16), None, space(16, 16)])
        };
        assert!(matches!(plan(&o, &Thresholds::DEFAULT), Plan::Wait(_)));
    }

    #[test]
    fn corrupt_stops_everything() {
        let all = [space(1000, 100), space(1000, 100), space(1000, 100)];
        let o = Observed {
            alarms: vec![alarm(3, AlarmKind::Corrupt), alarm(1, AlarmKind::NoSpace)],
            ..cluster(1, all)
        };
        assert!(
            matches!(&plan(&o, &Thresholds::DEFAULT), Plan::Corrupt(why) if why.starts_with("CORRUPT raised by m3"))
        );
    }
}
