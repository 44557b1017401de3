//! The attach stage's decision, as a pure function of what was observed:
//! which member this node holds or should claim, and the steps to get there.

use std::collections::BTreeMap;
#[cfg(test)]
use std::collections::BTreeSet;

use crate::shared::cloud::{tags, InstanceState, NetworkInterface, Volume};

/// Everything the plan looks at.
#[derive(Debug, Clone)]
pub struct Observed {
    pub me: String,
    pub zone: String,
    /// The cluster's volumes and ENIs in every zone (tag filter only), so a
    /// member split across zones can be named.
    pub volumes: Vec<Volume>,
    pub enis: Vec<NetworkInterface>,
    /// States of the instances other than `me` that hold an attachment.
    pub instances: BTreeMap<String, InstanceState>,
}

/// One member's pair in this zone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pair {
    pub member: u32,
    pub volume: Volume,
    pub eni: NetworkInterface,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Detach from an instance that is gone or stopping, so we can take over.
    DetachVolume {
        volume_id: String,
        from: String,
    },
    AttachVolume {
        volume_id: String,
    },
    DetachEni {
        eni_id: String,
        attachment_id: String,
        from: String,
    },
    AttachEni {
        eni_id: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// This node holds the pair, both attached: nothing to do.
    Held(Pair),
    /// Work towards holding `pair`; `steps` may be empty when only waiting
    /// on attachments in progress remains.
    Claim { pair: Pair, steps: Vec<Step> },
    /// `member` is held by an instance that is stopping or shutting down:
    /// its OS may still flush to the volume. Look again later; it is taken
    /// over once `stopped` or `terminated`.
    Wait {
        member: u32,
        holder: String,
        state: InstanceState,
    },
    /// Every member in this zone is held by a live instance.
    NoFreeMember { zone: String, held: Vec<(u32, String)> },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("{resource} has tag {} = {value:?}, not a member index", tags::MEMBER)]
    BadMemberTag { resource: String, value: String },
    #[error("{resource} has no {} tag", tags::MEMBER)]
    MissingMemberTag { resource: String },
    #[error("member {member} has two {kind}s: {first} and {second}")]
    Duplicate {
        member: u32,
        kind: &'static str,
        first: String,
        second: String,
    },
    #[error("member {member}'s {kind} {resource} is in {zone}, but its {other_kind} {other} is in {other_zone}: a member's volume and ENI must share a zone")]
    SplitAcrossZones {
        member: u32,
        kind: &'static str,
        resource: String,
        zone: String,
        other_kind: &'static str,
        other: String,
        other_zone: String,
    },
    #[error("member {member} has a {kind} ({resource}) but no {missing} tagged for it")]
    Unpaired {
        member: u32,
        kind: &'static str,
        resource: String,
        missing: &'static str,
    },
    #[error(
        "no volume or ENI of this cluster is in {zone}: check the {} tags and the zone layout",
        tags::ROLE
    )]
    NothingInZone { zone: String },
    #[error("this instance holds parts of two members ({0} and {1}); detach one by hand")]
    HoldsTwoMembers(u32, u32),
    #[error("member {member}'s ENI {eni} is attached to {holder}, which is running, while this instance holds the member's volume")]
    EniHeldElsewhere { member: u32, eni: String, holder: String },
    #[error("member {member}'s volume {volume} is attached to {holder}, which is running, while this instance holds the member's ENI; detach the ENI by hand")]
    VolumeHeldElsewhere {
        member: u32,
        volume: String,
        holder: String,
    },
}

fn member_of(tags_: &BTreeMap<String, String>, resource: &str) -> Result<u32, PlanError> {
    let value = tags_.get(tags::MEMBER).ok_or_else(|| PlanError::MissingMemberTag {
        resource: resource.into(),
    })?;
    value.parse().map_err(|_| PlanError::BadMemberTag {
        resource: resource.into(),
        value: value.clone(),
    })
}

/// Pairs volumes and ENIs by member, checking the tag scheme strictly: any
/// inconsistency is an error, because a wrong pairing would give two nodes
/// the same etcd identity.
pub fn pairs(obs: &Observed) -> Result<Vec<Pair>, PlanError> {
    let mut volumes: BTreeMap<u32, &Volume> = BTreeMap::new();
    for v in &obs.volumes {
        let m = member_of(&v.tags, &v.id)?;
        if let Some(first) = volumes.insert(m, v) {
            return Err(PlanError::Duplicate {
                member: m,
                kind: "volume",
                first: first.id.clone(),
                second: v.id.clone(),
            });
        }
    }
    let mut enis: BTreeMap<u32, &NetworkInterface> = BTreeMap::new();
    for e in &obs.enis {
        let m = member_of(&e.tags, &e.id)?;
        if let Some(first) = enis.insert(m, e) {
            return Err(PlanError::Duplicate {
                member: m,
                kind: "ENI",
                first: first.id.clone(),
                second: e.id.clone(),
            });
        }
    }
    let mut out = Vec::new();
    for (&m, v) in &volumes {
        let Some(e) = enis.get(&m) else {
            if v.zone == obs.zone {
                return Err(PlanError::Unpaired {
                    member: m,
                    kind: "volume",
                    resource: v.id.clone(),
                    missing: "ENI",
                });
            }
            continue;
        };
        if v.zone != e.zone && (v.zone == obs.zone || e.zone == obs.zone) {
            return Err(PlanError::SplitAcrossZones {
                member: m,
                kind: "volume",
                resource: v.id.clone(),
                zone: v.zone.clone(),
                other_kind: "ENI",
                other: e.id.clone(),
                other_zone: e.zone.clone(),
            });
        }
        if v.zone == obs.zone {
            out.push(Pair {
                member: m,
                volume: (*v).clone(),
                eni: (*e).clone(),
            });
        }
    }
    if let Some((&m, e)) = enis
        .iter()
        .find(|(m, e)| e.zone == obs.zone && !volumes.contains_key(m))
    {
        return Err(PlanError::Unpaired {
            member: m,
            kind: "ENI",
            resource: e.id.clone(),
            missing: "volume",
        });
    }
    if out.is_empty() {
        return Err(PlanError::NothingInZone { zone: obs.zone.clone() });
    }
    Ok(out)
}

/// Who holds a resource, from this node's point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Holder<'a> {
    Free,
    Me,
    /// Stopped or terminated: nothing writes any more.
    Dead(&'a str),
    /// Stopping or shutting down: may still write, soon dead.
    GoingDown(&'a str, InstanceState),
    Live(&'a str),
}

fn holder<'a>(attachment: Option<&'a crate::shared::cloud::Attachment>, obs: &Observed) -> Holder<'a> {
    match attachment {
        None => Holder::Free,
        Some(a) if a.state == "detached" => Holder::Free,
        Some(a) if a.instance_id == obs.me => Holder::Me,
        Some(a) => match obs.instances.get(&a.instance_id) {
            Some(state) if state.cannot_write() => Holder::Dead(&a.instance_id),
            Some(state) if state.is_going_down() => Holder::GoingDown(&a.instance_id, *state),
            // Running, pending, an unknown state or no state at all: alive.
            // Never steal on a guess.
            _ => Holder::Live(&a.instance_id),
        },
    }
}

/// The holders of a pair's volume and ENI.
fn holders<'a>(p: &'a Pair, obs: &Observed) -> [Holder<'a>; 2] {
    [
        holder(volume_attachment(&p.volume), obs),
        holder(p.eni.attachment.as_ref(), obs),
    ]
}

fn volume_attachment(v: &Volume) -> Option<&crate::shared::cloud::Attachment> {
    v.attachments.iter().find(|a| a.state != "detached")
}

/// The instances (other than me) whose state the plan needs: the holders of
/// this zone's resources only, so a healthy cluster's other zones cost nothing.
pub fn holders_to_check(obs: &Observed) -> Vec<String> {
    let here = |zone: &str| zone == obs.zone;
    let mut ids: Vec<String> = obs
        .volumes
        .iter()
        .filter(|v| here(&v.zone))
        .flat_map(|v| v.attachments.iter().map(|a| a.instance_id.clone()))
        .chain(
            obs.enis
                .iter()
                .filter(|e| here(&e.zone))
                .filter_map(|e| e.attachment.as_ref().map(|a| a.instance_id.clone())),
        )
        .filter(|id| *id != obs.me && !id.is_empty())
        .collect();
    ids.sort();
    ids.dedup();
    ids
}

pub fn plan(obs: &Observed) -> Result<Plan, PlanError> {
    let pairs = pairs(obs)?;
    let holds = |p: &Pair| {
        let v = holder(volume_attachment(&p.volume), obs) == Holder::Me;
        let e = holder(p.eni.attachment.as_ref(), obs) == Holder::Me;
        v || e
    };
    let mine: Vec<&Pair> = pairs.iter().filter(|p| holds(p)).collect();
    if mine.len() > 1 {
        return Err(PlanError::HoldsTwoMembers(mine[0].member, mine[1].member));
    }
    if let Some(pair) = mine.first() {
        return finish(pair, obs);
    }
    let live = |p: &Pair| holders(p, obs).iter().any(|h| matches!(h, Holder::Live(_)));
    let going_down = |p: &Pair| holders(p, obs).iter().any(|h| matches!(h, Holder::GoingDown(..)));
    // A member that can be claimed now first; else wait for one whose holder
    // is going down rather than report none free.
    let now = pairs.iter().find(|p| !live(p) && !going_down(p));
    match now.or_else(|| pairs.iter().find(|p| !live(p))) {
        Some(pair) => finish(pair, obs),
        None => Ok(Plan::NoFreeMember {
            zone: obs.zone.clone(),
            held: pairs
                .iter()
                .map(|p| {
                    let by = volume_attachment(&p.volume)
                        .map(|a| a.instance_id.clone())
                        .unwrap_or_default();
                    (p.member, by)
                })
                .collect(),
        }),
    }
}

/// The steps that make this node hold `pair`: take each half over from a
/// dead holder if needed, then attach it. The volume goes first: it is the
/// lock, since EC2 lets only one instance attach it.
fn finish(pair: &Pair, obs: &Observed) -> Result<Plan, PlanError> {
    let mut steps = Vec::new();
    let volume = holder(volume_attachment(&pair.volume), obs);
    let eni = holder(pair.eni.attachment.as_ref(), obs);
    for h in [volume, eni] {
        if let Holder::GoingDown(holder, state) = h {
            return Ok(Plan::Wait {
                member: pair.member,
                holder: holder.into(),
                state,
            });
        }
    }
    match volume {
        Holder::Me => {}
        Holder::Free => steps.push(Step::AttachVolume {
            volume_id: pair.volume.id.clone(),
        }),
        Holder::Dead(from) => {
            steps.push(Step::DetachVolume {
                volume_id: pair.volume.id.clone(),
                from: from.into(),
            });
            steps.push(Step::AttachVolume {
                volume_id: pair.volume.id.clone(),
            });
        }
        Holder::Live(holder) => {
            return Err(PlanError::VolumeHeldElsewhere {
                member: pair.member,
                volume: pair.volume.id.clone(),
                holder: holder.into(),
            })
        }
        Holder::GoingDown(..) => unreachable!("waited for above"),
    }
    match eni {
        Holder::Me => {}
        Holder::Free => steps.push(Step::AttachEni {
            eni_id: pair.eni.id.clone(),
        }),
        Holder::Dead(from) => {
            let attachment_id = pair
                .eni
                .attachment
                .as_ref()
                .and_then(|a| a.attachment_id.clone())
                .unwrap_or_default();
            steps.push(Step::DetachEni {
                eni_id: pair.eni.id.clone(),
                attachment_id,
                from: from.into(),
            });
            steps.push(Step::AttachEni {
                eni_id: pair.eni.id.clone(),
            });
        }
        Holder::Live(holder) => {
            return Err(PlanError::EniHeldElsewhere {
                member: pair.member,
                eni: pair.eni.id.clone(),
                holder: holder.into(),
            })
        }
        Holder::GoingDown(..) => unreachable!("waited for above"),
    }
    let attached = |state: Option<&str>| state == Some("attached");
    let settled = steps.is_empty()
        && attached(volume_attachment(&pair.volume).map(|a| a.state.as_str()))
        && attached(pair.eni.attachment.as_ref().map(|a| a.state.as_str()));
    if settled {
        Ok(Plan::Held(pair.clone()))
    } else {
        Ok(Plan::Claim {
            pair: pair.clone(),
            steps,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shared::cloud::Attachment;

    const ZONE: &str = "eu-west-1a";

    fn volume(member: u32, zone: &str, holder: Option<&str>) -> Volume {
        Volume {
            id: format!("vol-{member}"),
            zone: zone.into(),
            state: if holder.is_some() { "in-use" } else { "available" }.into(),
            attachments: holder
                .map(|h| {
                    vec![Attachment {
                        instance_id: h.into(),
                        state: "attached".into(),
                        attachment_id: None,
                        device: "/dev/xvdf".into(),
                    }]
                })
                .unwrap_or_default(),
            tags: [(tags::MEMBER.to_string(), member.to_string())].into(),
            snapshot_id: None,
        }
    }

    fn eni(member: u32, zone: &str, holder: Option<&str>) -> NetworkInterface {
        NetworkInterface {
            id: format!("eni-{member}"),
            zone: zone.into(),
            subnet_id: "subnet".into(),
            private_ip: format!("10.0.0.{}", 10 + member),
            mac: format!("0e:00:00:00:00:{member:02}"),
            status: if holder.is_some() { "in-use" } else { "available" }.into(),
            attachment: holder.map(|h| Attachment {
                instance_id: h.into(),
                state: "attached".into(),
                attachment_id: Some(format!("attach-{member}")),
                device: "1".into(),
            }),
            tags: [(tags::MEMBER.to_string(), member.to_string())].into(),
        }
    }

    fn observed(pairs: &[(u32, &str, Option<&str>)], instances: &[(&str, InstanceState)]) -> Observed {
        Observed {
            me: "i-me".into(),
            zone: ZONE.into(),
            volumes: pairs.iter().map(|(m, z, h)| volume(*m, z, *h)).collect(),
            enis: pairs.iter().map(|(m, z, h)| eni(*m, z, *h)).collect(),
            instances: instances.iter().map(|(i, s)| (i.to_string(), *s)).collect(),
        }
    }

    #[test]
    fn a_fresh_node_claims_the_lowest_free_member_of_its_zone_volume_first() {
        let obs = observed(
            &[
                (0, "eu-west-1b", None),
                (1, ZONE, Some("i-other")),
                (2, ZONE, None),
                (3, ZONE, None),
            ],
            &[("i-other", InstanceState::Running)],
        );
        let Plan::Claim { pair, steps } = plan(&obs).unwrap() else {
            panic!()
        };
        assert_eq!(pair.member, 2);
        assert_eq!(
            steps,
            vec![
                Step::AttachVolume {
                    volume_id: "vol-2".into()
                },
                Step::AttachEni { eni_id: "eni-2".into() }
            ]
        );
    }

    #[test]
    fn a_node_that_holds_its_pair_does_nothing() {
        let obs = observed(&[(0, ZONE, Some("i-me")), (1, ZONE, None)], &[]);
        assert!(matches!(plan(&obs).unwrap(), Plan::Held(p) if p.member == 0));
    }

    #[test]
    fn a_half_claimed_member_is_finished_not_abandoned() {
        let mut obs = observed(&[(0, ZONE, None), (1, ZONE, None)], &[]);
        obs.volumes[1] = volume(1, ZONE, Some("i-me"));
        let Plan::Claim { pair, steps } = plan(&obs).unwrap() else {
            panic!()
        };
        assert_eq!(pair.member, 1);
        assert_eq!(steps, vec![Step::AttachEni { eni_id: "eni-1".into() }]);
    }

    #[derive(Debug, PartialEq)]
    enum Outcome {
        TakesOver,
        Waits,
        NoneFree,
    }

    fn outcome(p: &Plan) -> Outcome {
        match p {
            Plan::Claim { steps, .. } => {
                assert_eq!(
                    steps[0],
                    Step::DetachVolume {
                        volume_id: "vol-0".into(),
                        from: "i-old".into()
                    }
                );
                assert!(matches!(&steps[2], Step::DetachEni { attachment_id, .. } if attachment_id == "attach-0"));
                Outcome::TakesOver
            }
            Plan::Wait { member: 0, holder, .. } if holder == "i-old" => Outcome::Waits,
            Plan::NoFreeMember { .. } => Outcome::NoneFree,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn dead_holders_are_taken_over_dying_ones_waited_for_live_ones_never() {
        for (state, expected) in [
            (Some(InstanceState::Stopped), Outcome::TakesOver),
            (Some(InstanceState::Terminated), Outcome::TakesOver),
            (Some(InstanceState::Stopping), Outcome::Waits),
            (Some(InstanceState::ShuttingDown), Outcome::Waits),
            (Some(InstanceState::Running), Outcome::NoneFree),
            (Some(InstanceState::Pending), Outcome::NoneFree),
            (Some(InstanceState::Unknown), Outcome::NoneFree),
            // Not listed by DescribeInstances at all: alive.
            (None, Outcome::NoneFree),
        ] {
            let instances: Vec<(&str, InstanceState)> = state.map(|s| ("i-old", s)).into_iter().collect();
            let obs = observed(&[(0, ZONE, Some("i-old"))], &instances);
            assert_eq!(outcome(&plan(&obs).unwrap()), expected, "{state:?}");
        }
    }

    #[test]
    fn a_free_member_goes_before_waiting_for_a_dying_holder() {
        let obs = observed(
            &[(0, ZONE, Some("i-old")), (1, ZONE, None)],
            &[("i-old", InstanceState::ShuttingDown)],
        );
        assert!(matches!(plan(&obs).unwrap(), Plan::Claim { pair, .. } if pair.member == 1));
        let obs = observed(
            &[(0, ZONE, Some("i-live")), (1, ZONE, Some("i-old"))],
            &[("i-live", InstanceState::Running), ("i-old", InstanceState::Stopping)],
        );
        assert_eq!(
            plan(&obs).unwrap(),
            Plan::Wait {
                member: 1,
                holder: "i-old".into(),
                state: InstanceState::Stopping
            }
        );
    }

    #[test]
    fn a_half_held_member_waits_for_a_dying_holder_of_its_other_half() {
        let mut obs = observed(&[(0, ZONE, Some("i-old"))], &[("i-old", InstanceState::ShuttingDown)]);
        obs.volumes[0] = volume(0, ZONE, Some("i-me"));
        assert_eq!(
            plan(&obs).unwrap(),
            Plan::Wait {
                member: 0,
                holder: "i-old".into(),
                state: InstanceState::ShuttingDown
            }
        );
    }

    fn detaches(plan: &Plan) -> bool {
        matches!(plan, Plan::Claim { steps, .. } if steps.iter().any(|s| matches!(s, Step::DetachVolume { .. } | Step::DetachEni { .. })))
    }

    /// A holder whose OS may still run (and flush to the volume) is never
    /// detached: `stopping`/`shutting-down` still write, an unknown state
    /// or an instance DescribeInstances did not list may be running.
    #[test]
    fn only_holders_that_cannot_write_are_detached() {
        for (state, detached) in [
            (InstanceState::Stopped, true),
            (InstanceState::Terminated, true),
            (InstanceState::Stopping, false),
            (InstanceState::ShuttingDown, false),
            (InstanceState::Running, false),
            (InstanceState::Pending, false),
            (InstanceState::parse("some-state-ec2-adds-later"), false),
            (InstanceState::Unknown, false),
        ] {
            let obs = observed(&[(0, ZONE, Some("i-old"))], &[("i-old", state)]);
            assert_eq!(detaches(&plan(&obs).unwrap()), detached, "{state:?}");
        }
        let listed_nowhere = observed(&[(0, ZONE, Some("i-old"))], &[]);
        assert!(!detaches(&plan(&listed_nowhere).unwrap()));
    }

    /// Property: whatever the holders' states, a plan detaches only from
    /// `stopped` or `terminated` instances.
    #[test]
    fn no_plan_detaches_from_a_holder_that_may_write() {
        let states = [
            InstanceState::Pending,
            InstanceState::Running,
            InstanceState::ShuttingDown,
            InstanceState::Terminated,
            InstanceState::Stopping,
            InstanceState::Stopped,
            InstanceState::parse("unknown"),
        ];
        for seed in 0..2000 {
            let mut rng = fastrand::Rng::with_seed(seed);
            let members = rng.u32(1..5);
            let holders = ["i-a", "i-b", "i-c", "i-me"];
            let pick = |rng: &mut fastrand::Rng| (rng.bool()).then(|| holders[rng.usize(..holders.len())]);
            let mut obs = observed(&[], &[]);
            for m in 0..members {
                let volume_holder = pick(&mut rng);
                // The ENI usually goes with the volume; not always (a half claim, a crash).
                let eni_holder = if rng.u8(..4) == 0 {
                    pick(&mut rng)
                } else {
                    volume_holder
                };
                obs.volumes.push(volume(m, ZONE, volume_holder));
                obs.enis.push(eni(m, ZONE, eni_holder));
            }
            for h in &holders[..3] {
                if rng.u8(..5) != 0 {
                    obs.instances.insert(h.to_string(), states[rng.usize(..states.len())]);
                }
            }
            let Ok(Plan::Claim { steps, .. }) = plan(&obs) else {
                continue;
            };
            for step in steps {
                if let Step::DetachVolume { from, .. } | Step::DetachEni { from, .. } = &step {
                    let state = obs.instances.get(from);
                    assert!(
                        matches!(state, Some(InstanceState::Stopped | InstanceState::Terminated)),
                        "seed {seed}: {step:?} from a holder in {state:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn only_this_zones_holders_need_a_state_lookup() {
        let obs = observed(
            &[
                (0, "eu-west-1b", Some("i-b")),
                (1, ZONE, Some("i-a")),
                (2, ZONE, Some("i-me")),
            ],
            &[],
        );
        assert_eq!(holders_to_check(&obs), vec!["i-a".to_string()]);
    }

    #[test]
    fn tag_problems_are_errors_naming_the_resources() {
        let mut obs = observed(&[(0, ZONE, None)], &[]);
        obs.volumes.push(volume(0, ZONE, None));
        obs.volumes[1].id = "vol-dup".into();
        assert_eq!(
            plan(&obs).unwrap_err().to_string(),
            "member 0 has two volumes: vol-0 and vol-dup"
        );

        let mut obs = observed(&[(0, ZONE, None)], &[]);
        obs.enis[0].tags.insert(tags::MEMBER.into(), "zero".into());
        assert!(plan(&obs)
            .unwrap_err()
            .to_string()
            .contains("eni-0 has tag nodeboot.io/member = \"zero\""));

        let mut obs = observed(&[(0, ZONE, None)], &[]);
        obs.enis[0].zone = "eu-west-1c".into();
        assert!(plan(&obs).unwrap_err().to_string().contains("must share a zone"));

        let obs = observed(&[(0, "eu-west-1b", None)], &[]);
        assert!(matches!(plan(&obs).unwrap_err(), PlanError::NothingInZone { .. }));
    }

    /// Property: N nodes planning and acting in any interleaving, against a
    /// model of EC2 where only the first attach of a free resource wins,
    /// end with every member held by exactly one node, volume and ENI by
    /// the same one, and every node either holding one member or told none
    /// is free.
    #[test]
    fn any_interleaving_of_racing_nodes_converges() {
        for seed in 0..300 {
            let mut rng = fastrand::Rng::with_seed(seed);
            let members = rng.u32(1..5);
            let nodes: Vec<String> = (0..rng.u32(1..8)).map(|n| format!("i-{n}")).collect();
            let mut vol_holder: BTreeMap<u32, String> = BTreeMap::new();
            let mut eni_holder: BTreeMap<u32, String> = BTreeMap::new();
            let mut done: BTreeMap<String, Option<u32>> = BTreeMap::new();
            for _ in 0..10_000 {
                let pending: Vec<&String> = nodes.iter().filter(|n| !done.contains_key(*n)).collect();
                if pending.is_empty() {
                    break;
                }
                let me = pending[rng.usize(..pending.len())].clone();
                let obs = Observed {
                    me: me.clone(),
                    zone: ZONE.into(),
                    volumes: (0..members)
                        .map(|m| volume(m, ZONE, vol_holder.get(&m).map(String::as_str)))
                        .collect(),
                    enis: (0..members)
                        .map(|m| eni(m, ZONE, eni_holder.get(&m).map(String::as_str)))
                        .collect(),
                    instances: nodes.iter().map(|n| (n.clone(), InstanceState::Running)).collect(),
                };
                match plan(&obs).unwrap() {
                    Plan::Held(p) => {
                        done.insert(me, Some(p.member));
                    }
                    Plan::NoFreeMember { .. } => {
                        done.insert(me, None);
                    }
                    Plan::Wait { .. } => panic!("seed {seed}: a wait among running nodes"),
                    // Act on one step only: another node may move in between.
                    Plan::Claim { pair, steps } => match steps.first() {
                        Some(Step::AttachVolume { .. }) => {
                            vol_holder.entry(pair.member).or_insert(me);
                        }
                        Some(Step::AttachEni { .. }) => {
                            eni_holder.entry(pair.member).or_insert(me);
                        }
                        other => panic!("seed {seed}: unexpected step {other:?} among running nodes"),
                    },
                }
            }
            assert_eq!(done.len(), nodes.len(), "seed {seed}: every node finished");
            let held: Vec<u32> = done.values().flatten().copied().collect();
            let unique: BTreeSet<u32> = held.iter().copied().collect();
            assert_eq!(held.len(), unique.len(), "seed {seed}: a member held twice");
            assert_eq!(held.len() as u32, members.min(nodes.len() as u32), "seed {seed}");
            for (node, member) in &done {
                if let Some(m) = member {
                    assert_eq!(vol_holder.get(m), Some(node), "seed {seed}");
                    assert_eq!(eni_holder.get(m), Some(node), "seed {seed}");
                }
            }
        }
    }
}
