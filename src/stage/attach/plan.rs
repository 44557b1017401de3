//! The attach stage's decision, as a pure function of what was observed:
//! which member this node holds or should claim, and the steps to get there.

use std::collections::BTreeMap;

use crate::cloud::{tags, InstanceState, NetworkInterface, Volume};

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
    DetachVolume { volume_id: String, from: String },
    AttachVolume { volume_id: String },
    DetachEni { eni_id: String, attachment_id: String, from: String },
    AttachEni { eni_id: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// This node holds the pair, both attached: nothing to do.
    Held(Pair),
    /// Work towards holding `pair`; `steps` may be empty when only waiting
    /// on attachments in progress remains.
    Claim { pair: Pair, steps: Vec<Step> },
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
    Duplicate { member: u32, kind: &'static str, first: String, second: String },
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
    Unpaired { member: u32, kind: &'static str, resource: String, missing: &'static str },
    #[error("no volume or ENI of this cluster is in {zone}: check the {} tags and the zone layout", tags::ROLE)]
    NothingInZone { zone: String },
    #[error("this instance holds parts of two members ({0} and {1}); detach one by hand")]
    HoldsTwoMembers(u32, u32),
    #[error("member {member}'s ENI {eni} is attached to {holder}, which is running, while this instance holds the member's volume")]
    EniHeldElsewhere { member: u32, eni: String, holder: String },
}

fn member_of(tags_: &BTreeMap<String, String>, resource: &str) -> Result<u32, PlanError> {
    let value = tags_.get(tags::MEMBER).ok_or_else(|| PlanError::MissingMemberTag { resource: resource.into() })?;
    value.parse().map_err(|_| PlanError::BadMemberTag { resource: resource.into(), value: value.clone() })
}

/// Pairs volumes and ENIs by member, checking the tag scheme strictly: any
/// inconsistency is an error, because a wrong pairing would give two nodes
/// the same etcd identity.
pub fn pairs(obs: &Observed) -> Result<Vec<Pair>, PlanError> {
    let mut volumes: BTreeMap<u32, &Volume> = BTreeMap::new();
    for v in &obs.volumes {
        let m = member_of(&v.tags, &v.id)?;
        if let Some(first) = volumes.insert(m, v) {
            return Err(PlanError::Duplicate { member: m, kind: "volume", first: first.id.clone(), second: v.id.clone() });
        }
    }
    let mut enis: BTreeMap<u32, &NetworkInterface> = BTreeMap::new();
    for e in &obs.enis {
        let m = member_of(&e.tags, &e.id)?;
        if let Some(first) = enis.insert(m, e) {
            return Err(PlanError::Duplicate { member: m, kind: "ENI", first: first.id.clone(), second: e.id.clone() });
        }
    }
    let mut out = Vec::new();
    for (&m, v) in &volumes {
        let Some(e) = enis.get(&m) else {
            if v.zone == obs.zone {
                return Err(PlanError::Unpaired { member: m, kind: "volume", resource: v.id.clone(), missing: "ENI" });
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
            out.push(Pair { member: m, volume: (*v).clone(), eni: (*e).clone() });
        }
    }
    if let Some((&m, e)) = enis.iter().find(|(m, e)| e.zone == obs.zone && !volumes.contains_key(m)) {
        return Err(PlanError::Unpaired { member: m, kind: "ENI", resource: e.id.clone(), missing: "volume" });
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
    Dead(&'a str),
    Live(&'a str),
}

fn holder<'a>(attachment: Option<&'a crate::cloud::Attachment>, obs: &Observed) -> Holder<'a> {
    match attachment {
        None => Holder::Free,
        Some(a) if a.state == "detached" => Holder::Free,
        Some(a) if a.instance_id == obs.me => Holder::Me,
        Some(a) => match obs.instances.get(&a.instance_id) {
            Some(state) if state.is_dead() => Holder::Dead(&a.instance_id),
            // Unknown state is treated as alive: never steal on a guess.
            _ => Holder::Live(&a.instance_id),
        },
    }
}

fn volume_attachment(v: &Volume) -> Option<&crate::cloud::Attachment> {
    v.attachments.iter().find(|a| a.state != "detached")
}

/// The instances (other than me) whose state the plan needs.
pub fn holders_to_check(obs: &Observed) -> Vec<String> {
    let mut ids: Vec<String> = obs
        .volumes
        .iter()
        .flat_map(|v| v.attachments.iter().map(|a| a.instance_id.clone()))
        .chain(obs.enis.iter().filter_map(|e| e.attachment.as_ref().map(|a| a.instance_id.clone())))
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
    let claimable = |p: &&Pair| {
        let v = holder(volume_attachment(&p.volume), obs);
        let e = holder(p.eni.attachment.as_ref(), obs);
        !matches!(v, Holder::Live(_)) && !matches!(e, Holder::Live(_))
    };
    match pairs.iter().find(claimable) {
        Some(pair) => finish(pair, obs),
        None => Ok(Plan::NoFreeMember {
            zone: obs.zone.clone(),
            held: pairs
                .iter()
                .map(|p| {
                    let by = volume_attachment(&p.volume).map(|a| a.instance_id.clone()).unwrap_or_default();
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
    match volume {
        Holder::Me => {}
        Holder::Free => steps.push(Step::AttachVolume { volume_id: pair.volume.id.clone() }),
        Holder::Dead(from) => {
            steps.push(Step::DetachVolume { volume_id: pair.volume.id.clone(), from: from.into() });
            steps.push(Step::AttachVolume { volume_id: pair.volume.id.clone() });
        }
        // We hold the ENI but a live node took the volume: it won the member.
        Holder::Live(_) => return Ok(Plan::NoFreeMember { zone: obs.zone.clone(), held: vec![(pair.member, String::new())] }),
    }
    match eni {
        Holder::Me => {}
        Holder::Free => steps.push(Step::AttachEni { eni_id: pair.eni.id.clone() }),
        Holder::Dead(from) => {
            let attachment_id = pair.eni.attachment.as_ref().and_then(|a| a.attachment_id.clone()).unwrap_or_default();
            steps.push(Step::DetachEni { eni_id: pair.eni.id.clone(), attachment_id, from: from.into() });
            steps.push(Step::AttachEni { eni_id: pair.eni.id.clone() });
        }
        Holder::Live(holder) => {
            return Err(PlanError::EniHeldElsewhere { member: pair.member, eni: pair.eni.id.clone(), holder: holder.into() })
        }
    }
    let attached = |state: Option<&str>| state == Some("attached");
    let settled = steps.is_empty()
        && attached(volume_attachment(&pair.volume).map(|a| a.state.as_str()))
        && attached(pair.eni.attachment.as_ref().map(|a| a.state.as_str()));
    if settled {
        Ok(Plan::Held(pair.clone()))
    } else {
        Ok(Plan::Claim { pair: pair.clone(), steps })
    }
}
