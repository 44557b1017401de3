//! `nodeboot stage attach`: claim one etcd member's volume and ENI in this
//! node's zone, taking them over from a dead instance when needed.
//!
//! Observe (two describes, one more when a holder's state matters) → plan
//! (pure, `plan.rs`) → act (attach, wait, verify the attachment is ours) →
//! record `/run/nodeboot/claim.json`. Two nodes racing for a member cannot
//! both win: EC2 lets one instance attach a volume, and each node checks
//! `Attachments[].InstanceId` before it believes it holds the member.

pub mod plan;

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use self::plan::{Observed, Pair, Plan, PlanError, Step};
use super::discover::{Facts, FACTS_FILE};
use super::{Root, StageError};
use crate::shared::cloud::{CloudError, ClusterFilter, Compute, InstanceState};
use crate::shared::fault;
use crate::shared::retry::{self, Attempt, Gave, Policy};

pub const CLAIM_FILE: &str = "claim.json";
/// eth1: the ENI is the instance's second interface.
pub const ENI_DEVICE_INDEX: i32 = 1;

/// What this node holds, for the mount and etcd stages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claim {
    pub member: u32,
    pub instance_id: String,
    pub zone: String,
    pub volume_id: String,
    pub device_name: String,
    pub eni_id: String,
    pub eni_ip: String,
    pub eni_mac: String,
}

#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// How long to wait for one attachment or detachment before giving up.
    pub wait_timeout: Duration,
    /// How long a polite detach from a dead instance may take before it is forced.
    pub detach_grace: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            wait_timeout: Duration::from_secs(300),
            detach_grace: Duration::from_secs(60),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    #[error("no free etcd member in {zone}: {}", describe_held(held))]
    NoFreeMember { zone: String, held: Vec<(u32, String)> },
    #[error("cluster resources of {environment}/{role}: {source}")]
    Resources {
        environment: String,
        role: String,
        source: PlanError,
    },
    #[error(transparent)]
    Cloud(#[from] CloudError),
    #[error("{0}")]
    Timeout(String),
    #[error("lost every race for a member after {0} rounds; another node keeps winning")]
    Contended(u32),
    #[error(transparent)]
    Stage(#[from] StageError),
}

fn describe_held(held: &[(u32, String)]) -> String {
    let parts: Vec<String> = held.iter().map(|(m, by)| format!("member {m} held by {by}")).collect();
    format!(
        "{} (the node retries; a member frees when its instance stops or terminates)",
        parts.join(", ")
    )
}

/// Why an attempt at a member has not succeeded (yet).
enum Lost {
    /// Not done yet (an attachment in progress): wait and look again.
    Pending(String),
    /// Another node got there first: plan again.
    Race(String),
    Failed(AttachError),
}

impl std::fmt::Display for Lost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Lost::Pending(why) | Lost::Race(why) => f.write_str(why),
            Lost::Failed(e) => write!(f, "{e}"),
        }
    }
}

impl From<CloudError> for Lost {
    fn from(e: CloudError) -> Self {
        if e.is_conflict() {
            Lost::Race(e.to_string())
        } else {
            Lost::Failed(e.into())
        }
    }
}

/// An attachment or detachment EC2 is making: a look every 0.4 s, so the
/// stage notices within 0.4 s (backoff's growing gaps noticed seconds
/// late). Two describes a look at most; EC2's budget for describe calls is
/// a bucket of 100 refilled at 20 a second per account.
const POLL: Policy = Policy::every(Duration::from_millis(400), Duration::from_secs(300));
/// A holder that is stopping or shutting down takes seconds to minutes.
const GOING_DOWN_POLL: Policy = Policy::new(Duration::from_secs(1), Duration::from_secs(5), Duration::from_secs(300));

pub async fn run(root: &Root, ec2: &impl Compute, options: Options) -> Result<Claim, AttachError> {
    let started = Instant::now();
    let config = root.node_config()?;
    let facts: Facts = root.recorded(FACTS_FILE, "discover")?;
    let filter = ClusterFilter {
        environment: config.environment.clone(),
        role: config.role.to_string(),
    };
    let device_name = config
        .etcd
        .as_ref()
        .map(|e| e.device_name.clone())
        .unwrap_or_else(|| crate::shared::node_config::ETCD_DEVICE_NAME.into());
    let rounds = config.etcd.as_ref().map_or(3, |e| e.members + 2);
    for round in 1..=rounds {
        let plan = plan_once_no_holder_is_going_down(ec2, &facts, &filter, options).await?;
        let pair = match plan {
            Plan::NoFreeMember { zone, held } => return Err(AttachError::NoFreeMember { zone, held }),
            Plan::Wait { .. } => unreachable!("waited through"),
            Plan::Held(pair) => pair,
            Plan::Claim { pair, steps } => {
                info!(member = pair.member, volume = %pair.volume.id, eni = %pair.eni.id, "claiming member {} ({} steps)", pair.member, steps.len());
                match act(ec2, &facts.identity.instance_id, &pair, &steps, &device_name, options).await {
                    Ok(()) => pair,
                    Err(Lost::Race(why)) => {
                        warn!(
                            round,
                            "lost member {} to another node ({why}); planning again", pair.member
                        );
                        continue;
                    }
                    Err(Lost::Failed(e)) => return Err(e),
                    Err(Lost::Pending(why)) => return Err(AttachError::Timeout(why)),
                }
            }
        };
        let claim = Claim {
            member: pair.member,
            instance_id: facts.identity.instance_id.clone(),
            zone: facts.identity.availability_zone.clone(),
            volume_id: pair.volume.id.clone(),
            device_name: device_name.clone(),
            eni_id: pair.eni.id.clone(),
            eni_ip: pair.eni.private_ip.clone(),
            eni_mac: pair.eni.mac.clone(),
        };
        let path = root.record(CLAIM_FILE, &claim)?;
        info!(
            member = claim.member,
            api_calls = ec2.api_calls(),
            seconds = format!("{:.1}", started.elapsed().as_secs_f64()),
            "holding member {} (volume {}, ENI {} {}); recorded {}",
            claim.member,
            claim.volume_id,
            claim.eni_id,
            claim.eni_ip,
            path.display()
        );
        return Ok(claim);
    }
    Err(AttachError::Contended(rounds))
}

/// Observes and plans until the plan is not to wait for a holder that is
/// stopping or shutting down (its OS may still write to the volume),
/// logging the wait; bounded by `wait_timeout`.
async fn plan_once_no_holder_is_going_down(
    ec2: &impl Compute,
    facts: &Facts,
    filter: &ClusterFilter,
    options: Options,
) -> Result<Plan, AttachError> {
    let what = "a member's holder to stop or terminate";
    retry::wait(what, GOING_DOWN_POLL.with_total(options.wait_timeout), || async {
        let observed = match observe(ec2, facts, filter).await {
            Ok(o) => o,
            Err(e) => return Attempt::Fail(AttachError::from(e)),
        };
        match plan::plan(&observed) {
            Ok(Plan::Wait { member, holder, state }) => Attempt::Retry(AttachError::Timeout(format!(
                "member {member} is held by {holder}, which is {} and may still write to it",
                state.name()
            ))),
            Ok(plan) => Attempt::Done(plan),
            Err(source) => Attempt::Fail(AttachError::Resources {
                environment: filter.environment.clone(),
                role: filter.role.clone(),
                source,
            }),
        }
    })
    .await
    .map_err(|e| match e {
        Gave::Failed(e) => e,
        Gave::Up { what, elapsed, last } => AttachError::Timeout(format!(
            "gave up waiting for {what} after {}s: {last}",
            elapsed.as_secs()
        )),
    })
}

async fn observe(ec2: &impl Compute, facts: &Facts, filter: &ClusterFilter) -> Result<Observed, CloudError> {
    let (volumes, enis) = tokio::try_join!(ec2.volumes(filter), ec2.network_interfaces(filter))?;
    let mut observed = Observed {
        me: facts.identity.instance_id.clone(),
        zone: facts.identity.availability_zone.clone(),
        volumes,
        enis,
        instances: Default::default(),
    };
    let holders = plan::holders_to_check(&observed);
    if !holders.is_empty() {
        observed.instances = ec2.instance_states(&holders).await?;
    }
    Ok(observed)
}

async fn act(
    ec2: &impl Compute,
    me: &str,
    pair: &Pair,
    steps: &[Step],
    device: &str,
    options: Options,
) -> Result<(), Lost> {
    // Take both halves over from a dead holder at once: each detach waits on
    // EC2, and waiting for them one after the other doubles a replacement's boot.
    let volume_takeover = steps.iter().find_map(|step| match step {
        Step::DetachVolume { volume_id, from } => Some((volume_id, from)),
        _ => None,
    });
    let eni_takeover = steps.iter().find_map(|step| match step {
        Step::DetachEni {
            eni_id,
            attachment_id,
            from,
        } => Some((eni_id, attachment_id, from)),
        _ => None,
    });
    let (volume, eni) = tokio::join!(
        async {
            match volume_takeover {
                Some((volume_id, from)) => take_volume_over(ec2, volume_id, from, options).await,
                None => Ok(()),
            }
        },
        async {
            match eni_takeover {
                Some((eni_id, attachment_id, from)) => take_eni_over(ec2, eni_id, attachment_id, from, options).await,
                None => Ok(()),
            }
        },
    );
    volume?;
    eni?;
    for step in steps {
        match step {
            Step::AttachVolume { volume_id } => {
                ec2.attach_volume(volume_id, me, device).await?;
                fault::point("attach:after-attach-volume");
            }
            Step::AttachEni { eni_id } => {
                ec2.attach_network_interface(eni_id, me, ENI_DEVICE_INDEX).await?;
                fault::point("attach:after-attach-eni");
            }
            Step::DetachVolume { .. } | Step::DetachEni { .. } => {}
        }
    }
    // Verify: both attachments are ours and complete. This also covers a
    // rerun that finds attachments still "attaching".
    wait_volume_attached(ec2, &pair.volume.id, me, options).await?;
    fault::point("attach:after-volume-verified");
    wait_eni_attached(ec2, &pair.eni.id, me, options).await?;
    Ok(())
}

fn timeout(e: Gave<Lost>) -> Lost {
    match e {
        Gave::Failed(lost) => lost,
        Gave::Up { what, elapsed, last } => {
            let last = match last {
                Lost::Pending(s) | Lost::Race(s) => s,
                Lost::Failed(e) => e.to_string(),
            };
            Lost::Failed(AttachError::Timeout(format!(
                "gave up waiting for {what} after {}s (last: {last})",
                elapsed.as_secs()
            )))
        }
    }
}

async fn wait_volume_attached(ec2: &impl Compute, volume_id: &str, me: &str, options: Options) -> Result<(), Lost> {
    let what = format!("volume {volume_id} to attach to {me}");
    retry::wait(&what, POLL.with_total(options.wait_timeout), || async {
        let volume = match ec2.volume(volume_id).await {
            Ok(v) => v,
            Err(e) => return Attempt::Fail(Lost::from(e)),
        };
        match volume.attachments.iter().find(|a| a.state != "detached") {
            Some(a) if a.instance_id == me && a.state == "attached" => Attempt::Done(()),
            Some(a) if a.instance_id == me => Attempt::Retry(Lost::Pending(format!("{volume_id} is {}", a.state))),
            Some(a) => Attempt::Fail(Lost::Race(format!("{volume_id} is attached to {}", a.instance_id))),
            None => Attempt::Retry(Lost::Pending(format!("{volume_id} shows no attachment yet"))),
        }
    })
    .await
    .map_err(timeout)
}

async fn wait_eni_attached(ec2: &impl Compute, eni_id: &str, me: &str, options: Options) -> Result<(), Lost> {
    let what = format!("ENI {eni_id} to attach to {me}");
    retry::wait(&what, POLL.with_total(options.wait_timeout), || async {
        let eni = match ec2.network_interface(eni_id).await {
            Ok(e) => e,
            Err(e) => return Attempt::Fail(Lost::from(e)),
        };
        match &eni.attachment {
            Some(a) if a.instance_id == me && a.state == "attached" => Attempt::Done(()),
            Some(a) if a.instance_id == me => Attempt::Retry(Lost::Pending(format!("{eni_id} is {}", a.state))),
            Some(a) if a.state != "detached" => {
                Attempt::Fail(Lost::Race(format!("{eni_id} is attached to {}", a.instance_id)))
            }
            _ => Attempt::Retry(Lost::Pending(format!("{eni_id} shows no attachment yet"))),
        }
    })
    .await
    .map_err(timeout)
}

/// Detaches a dead instance's volume: politely first, forced after the grace time.
async fn take_volume_over(ec2: &impl Compute, volume_id: &str, from: &str, options: Options) -> Result<(), Lost> {
    let detach = |force| async move {
        match ec2.detach_volume(volume_id, from, force).await {
            // Already detaching or detached: go on to wait.
            Err(e) if e.is_conflict() => Ok(()),
            other => other,
        }
    };
    let state = || async {
        let v = ec2.volume(volume_id).await?;
        let holder = v
            .attachments
            .iter()
            .find(|a| a.state != "detached")
            .map(|a| a.instance_id.clone());
        Ok::<_, CloudError>((v.state, holder))
    };
    take_over(ec2, &format!("volume {volume_id}"), from, options, detach, state).await
}

async fn take_eni_over(
    ec2: &impl Compute,
    eni_id: &str,
    attachment_id: &str,
    from: &str,
    options: Options,
) -> Result<(), Lost> {
    let detach = |force| async move {
        match ec2.detach_network_interface(attachment_id, force).await {
            Err(e) if e.is_conflict() || e.is_not_found() => Ok(()),
            other => other,
        }
    };
    let state = || async {
        let e = ec2.network_interface(eni_id).await?;
        let holder = e.attachment.filter(|a| a.state != "detached").map(|a| a.instance_id);
        Ok::<_, CloudError>((e.status, holder))
    };
    take_over(ec2, &format!("ENI {eni_id}"), from, options, detach, state).await
}

/// Detaches `what` from the dead (stopped or terminated) instance `from`
/// and waits until it is `available`: a polite detach first, forced once
/// `detach_grace` has passed and only if `from` still cannot write. If
/// another node attaches it meanwhile, the race is lost: plan again.
async fn take_over<D, S>(
    ec2: &impl Compute,
    what: &str,
    from: &str,
    options: Options,
    detach: impl Fn(bool) -> D,
    state: impl Fn() -> S,
) -> Result<(), Lost>
where
    D: std::future::Future<Output = Result<(), CloudError>>,
    S: std::future::Future<Output = Result<(String, Option<String>), CloudError>>,
{
    for force in [false, true] {
        if force {
            let now = ec2
                .instance_states(&[from.to_string()])
                .await?
                .get(from)
                .copied()
                .unwrap_or(InstanceState::Unknown);
            if !now.cannot_write() {
                return Err(Lost::Race(format!(
                    "{from} is {} now; not forcing {what} off it",
                    now.name()
                )));
            }
        }
        info!(from, force, "detaching {what} from dead instance {from}");
        detach(force).await?;
        fault::point("attach:after-detach");
        let total = if force {
            options.wait_timeout
        } else {
            options.detach_grace
        };
        let waited = retry::wait(
            &format!("{what} to detach from {from}"),
            POLL.with_total(total),
            || async {
                match state().await {
                    Ok((s, _)) if s == "available" => Attempt::Done(()),
                    Ok((_, Some(holder))) if holder != from => {
                        Attempt::Fail(Lost::Race(format!("{what} is attached to {holder}")))
                    }
                    Ok((s, _)) => Attempt::Retry(Lost::Pending(format!("{what} is {s}"))),
                    Err(e) => Attempt::Fail(Lost::from(e)),
                }
            },
        )
        .await;
        match waited {
            Ok(()) => return Ok(()),
            Err(Gave::Up { .. }) if !force => warn!("{what} did not detach within {}s; forcing", total.as_secs()),
            Err(e) => return Err(timeout(e)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// EC2 makes an attachment in seconds; a poll that backs off to 5 s
    /// gaps would notice it seconds late. Half a second at most, no more
    /// than two describes a second per node.
    #[test]
    fn an_attachment_is_polled_at_least_every_half_second() {
        let gaps = POLL.first_delays(100);
        assert!(gaps.iter().all(|d| *d <= Duration::from_millis(500)), "{gaps:?}");
        assert!(
            gaps.iter().all(|d| *d >= Duration::from_millis(250)),
            "within EC2's describe budget: {gaps:?}"
        );
    }
}
