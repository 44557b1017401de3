//! `nodeboot roll --env F --role etcd`: replace the etcd nodes one at a
//! time (an AMI upgrade). For each member: wait for a healthy cluster, take
//! a backup, take the etcd lock `disruption` (the one of every voluntary
//! disruption: a node's restart for new files, its reboot or its
//! defragmentation waits while roll holds it, and roll waits for them) and,
//! under it, `shared::etcd::disruption`'s word that the member may go;
//! terminate the instance that holds the member (its autoscaling group
//! launches the replacement, whose boot takes the member over), wait until
//! the member is back, healthy and caught up, and give the lock back.
//! Stops at the first failure and says where (a lock kept then frees
//! itself when its lease ends). Talks to etcd like `etcd status` (run it
//! where the members' client URLs are reachable) and to EC2, S3 and KMS.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tracing::info;

use super::etcd_backup::{member_endpoints, operator_client};
use super::load_env;
use crate::operator::env::Environment;
use crate::operator::error::Error;
use crate::shared::backup::etcd::EtcdAccess;
use crate::shared::backup::service::NodeBackup;
use crate::shared::backup::store::Backups;
use crate::shared::cloud::aws::{Ec2, Kms, S3};
use crate::shared::cloud::{tags, ClusterFilter, Compute, InstanceState, Instances};
use crate::shared::etcd::{disruption, lock, member_name, Client};
use crate::shared::retry::{self, Attempt};
use crate::shared::role::Role;

/// The holder's name roll takes the lock under: a roll run again after a
/// kill takes its own lock over.
pub const LOCK_HOLDER: &str = "nodeboot-roll";
/// A killed roll's lock frees itself this long after its last renewal.
const LOCK_TTL_SECONDS: i64 = 120;

pub struct RollOptions {
    pub endpoints: Vec<String>,
    pub dir: Option<PathBuf>,
    /// How long one member may take from termination to healthy and caught up.
    pub per_member: Duration,
    /// How long to wait for a healthy cluster before each member.
    pub healthy_wait: Duration,
}

/// The cluster as seen through every endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    pub leader: u64,
    pub revisions: BTreeMap<String, i64>,
}

/// Healthy: every endpoint answers, every one sees the same leader, and no
/// member is a learner or unstarted.
pub fn health(etcd: &impl EtcdAccess, endpoints: &[String]) -> Result<Health, String> {
    let mut leaders = std::collections::BTreeSet::new();
    let mut revisions = BTreeMap::new();
    for e in endpoints {
        let s = etcd.status(e)?;
        if s.leader == 0 {
            return Err(format!("{e} has no leader"));
        }
        leaders.insert(s.leader);
        revisions.insert(e.clone(), s.revision);
    }
    if leaders.len() != 1 {
        return Err(format!("the endpoints name {} leaders", leaders.len()));
    }
    let members = etcd.members()?;
    if let Some(m) = members.iter().find(|m| m.is_learner || m.name.is_empty()) {
        return Err(format!(
            "member {:x} ({}) is {}",
            m.id,
            m.name,
            if m.is_learner { "a learner" } else { "not started" }
        ));
    }
    if members.len() != endpoints.len() {
        return Err(format!(
            "{} members listed, {} expected",
            members.len(),
            endpoints.len()
        ));
    }
    Ok(Health {
        leader: *leaders.iter().next().expect("one leader"),
        revisions,
    })
}

fn policy_for(total: Duration) -> retry::Policy {
    retry::Policy::new(Duration::from_millis(500), Duration::from_secs(5), total)
}

/// Waits for the etcd lock `disruption` and, under it, for `name` to be
/// safe to disrupt (asked again under the lock: nobody else disrupts a
/// member between the look and the termination). A look that finds it
/// unsafe gives the lock back.
async fn take_lock(
    etcd: &Client,
    endpoints: &[String],
    name: &str,
    policy: retry::Policy,
) -> Result<lock::Held, String> {
    retry::wait(
        &format!("the etcd lock `disruption` to terminate {name}"),
        policy,
        || async {
            let held = match lock::try_acquire(etcd, lock::DISRUPTION, LOCK_HOLDER, LOCK_TTL_SECONDS) {
                Ok(Some(held)) => held,
                Ok(None) => {
                    let holder = lock::holder(etcd, lock::DISRUPTION).ok().flatten().unwrap_or_default();
                    return Attempt::Retry(format!("{holder} holds the etcd lock `disruption`"));
                }
                Err(e) => return Attempt::Retry(e.to_string()),
            };
            let safe = health(etcd, endpoints).and_then(|_| disruption::safe_to_disrupt(etcd, name));
            match safe {
                Ok(()) => Attempt::Done(held),
                Err(why) => {
                    let _ = held.release(etcd);
                    Attempt::Retry(format!("{name} may not be disrupted now: {why}"))
                }
            }
        },
    )
    .await
    .map_err(|e| e.to_string())
}

fn member_holders(volumes: &[crate::shared::cloud::Volume]) -> BTreeMap<u32, Option<String>> {
    volumes
        .iter()
        .filter_map(|v| {
            let member = v.tags.get(tags::MEMBER)?.parse().ok()?;
            Some((
                member,
                v.attachments
                    .iter()
                    .find(|a| a.state == "attached" || a.state == "attaching")
                    .map(|a| a.instance_id.clone()),
            ))
        })
        .collect()
}

pub fn roll(env_path: &Path, role: crate::shared::role::Role, options: RollOptions) -> Result<Vec<String>, Error> {
    if role != Role::Etcd {
        return Err(Error::Refused(format!(
            "roll --role {role}: only etcd nodes are rolled by nodeboot (the others have no state)"
        )));
    }
    let env = load_env(env_path)?.env;
    let endpoints = member_endpoints(&env, &options.endpoints);
    let etcd = operator_client(&env, options.dir.as_deref(), endpoints.clone())?;
    super::operator_runtime(&env, async |sdk| {
        let (ec2, s3, kms) = (Ec2::new(sdk), S3::new(sdk), Kms::new(sdk));
        roll_members(&env, &endpoints, &etcd, &ec2, &s3, &kms, &options).await
    })
}

#[allow(clippy::too_many_arguments)]
async fn roll_members(
    env: &Environment,
    endpoints: &[String],
    etcd: &Client,
    ec2: &Ec2,
    s3: &S3,
    kms: &Kms,
    options: &RollOptions,
) -> Result<Vec<String>, Error> {
    let filter = ClusterFilter {
        environment: env.name.clone(),
        role: Role::Etcd.to_string(),
    };
    let holders = member_holders(&ec2.volumes(&filter).await.map_err(Error::Cloud)?);
    let work = tempfile::tempdir().map_err(|e| Error::Write {
        path: "a temporary directory".into(),
        source: e,
    })?;
    let node = NodeBackup {
        backups: Backups::new(s3, kms, &env.secrets_bucket_name, &env.name, &env.kms_master_id),
        etcd,
        endpoint: endpoints[0].clone(),
        work: work.path().to_path_buf(),
        member_name: "nodeboot-roll".into(),
        members: env.etcd_count,
    };
    let mut lines = Vec::new();
    let started = Instant::now();
    for member in 0..env.etcd_count {
        let at = |step: &str, e: String| {
            let done: Vec<String> = (0..member).map(|m| m.to_string()).collect();
            let left: Vec<String> = (member + 1..env.etcd_count).map(|m| m.to_string()).collect();
            Error::Unhealthy(format!(
                "roll stopped at member {member} ({step}): {e}\n  replaced: [{}]; not touched: [{}]; run `nodeboot etcd status` and `nodeboot roll` again once healthy",
                done.join(", "),
                left.join(", ")
            ))
        };
        let Some(Some(old)) = holders.get(&member).cloned() else {
            return Err(at("find its instance", "no instance holds its volume".into()));
        };
        let t = Instant::now();
        let policy = retry::Policy::new(Duration::from_millis(500), Duration::from_secs(5), options.healthy_wait);
        let before = retry::wait("a healthy etcd cluster", policy, || async {
            match health(etcd, endpoints) {
                Ok(h) => Attempt::Done(h),
                Err(e) => Attempt::Retry(e),
            }
        })
        .await
        .map_err(|e| at("wait for a healthy cluster", e.to_string()))?;
        let leader_endpoint = endpoints
            .iter()
            .find(|e| etcd.status(e).is_ok_and(|s| s.member_id == before.leader))
            .unwrap_or(&endpoints[0])
            .clone();
        let backup = node
            .backup_now(Some(&leader_endpoint))
            .await
            .map_err(|e| at("take a backup", e.to_string()))?;
        let name = member_name(&env.name, member);
        let held = take_lock(etcd, endpoints, &name, policy_for(options.healthy_wait))
            .await
            .map_err(|e| at("take the etcd lock `disruption`", e))?;
        eprintln!(
            "member {member}: backup {} taken, the etcd lock `{}` held; terminating {old}",
            backup.id,
            lock::DISRUPTION
        );
        ec2.terminate_instance(&old)
            .await
            .map_err(|e| at(&format!("terminate {old}"), e.to_string()))?;
        let target = before.revisions.values().copied().max().unwrap_or(0);
        let policy = retry::Policy::new(Duration::from_secs(1), Duration::from_secs(5), options.per_member);
        let replacement = retry::wait(
            &format!("member {member}'s replacement to be healthy and caught up"),
            policy,
            || async {
                let holders = match ec2.volumes(&filter).await {
                    Ok(v) => member_holders(&v),
                    Err(e) => return Attempt::Retry(e.to_string()),
                };
                let Some(Some(now)) = holders.get(&member).cloned() else {
                    return Attempt::Retry("its volume is not attached yet".into());
                };
                if now == old {
                    return Attempt::Retry(format!("{old} still holds its volume"));
                }
                match ec2.instance_states(std::slice::from_ref(&now)).await {
                    Ok(states) if states.get(&now) == Some(&InstanceState::Running) => {}
                    Ok(_) => return Attempt::Retry(format!("{now} is not running")),
                    Err(e) => return Attempt::Retry(e.to_string()),
                }
                // Each look keeps the lock: the wait outlasts its lease.
                if let Err(e) = held.refresh(etcd) {
                    return Attempt::Retry(format!("keeping the etcd lock: {e}"));
                }
                match health(etcd, endpoints) {
                    Ok(h) if h.revisions.values().all(|r| *r >= target) => {}
                    Ok(_) => return Attempt::Retry("a member is still catching up".into()),
                    Err(e) => return Attempt::Retry(e),
                }
                match disruption::is_back(etcd, &name) {
                    Ok(()) => Attempt::Done(now),
                    Err(e) => Attempt::Retry(e),
                }
            },
        )
        .await
        .map_err(|e| at(&format!("wait for the replacement of {old}"), e.to_string()))?;
        held.release(etcd)
            .map_err(|e| at("give the etcd lock `disruption` back", e.to_string()))?;
        let line = format!(
            "member {member}: {old} replaced by {replacement} in {:.0}s (backup {})",
            t.elapsed().as_secs_f64(),
            backup.id
        );
        info!("{line}");
        eprintln!("{line}");
        lines.push(line);
    }
    lines.push(format!(
        "rolled {} etcd members in {:.0}s; the cluster is healthy",
        env.etcd_count,
        started.elapsed().as_secs_f64()
    ));
    Ok(lines)
}
