//! `nodeboot etcd restore`: the operator's half of a restore from one
//! member. Observe (the backup, which members' nodes run: their tagged ENIs
//! and the instances holding them), plan (the seed, who must report:
//! [`choose_seed`] and [`progress`], pure), act (the request), verify (the
//! members' reports until every reachable member is a healthy voter at or
//! past the restored revision). The nodes do the work (`shared::backup::restore`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use tracing::info;

use super::etcd_backup::{backups, choose};
use super::load_env;
use crate::operator::env::Environment;
use crate::operator::error::Error;
use crate::shared::backup::restore::{self, Phase, Report, Request};
use crate::shared::backup::service::now_unix;
use crate::shared::cloud::aws::{Ec2, Kms, S3};
use crate::shared::cloud::{tags, ClusterFilter, Compute, InstanceState};
use crate::shared::node_config::ETCD_MOUNT_POINT;
use crate::shared::role::Role;
use crate::shared::secrets::Store;

pub struct RestoreOptions {
    pub backup: Option<String>,
    /// The member that restores; default the lowest whose node runs.
    pub member: Option<u32>,
    pub timeout: Duration,
}

/// Which members' nodes run: a running instance holds the member's ENI.
pub async fn running_members(env: &Environment, ec2: &Ec2) -> Result<BTreeSet<u32>, Error> {
    Ok(member_instances(env, ec2)
        .await?
        .into_iter()
        .filter(|(_, held)| held.as_ref().is_some_and(|(_, state)| *state == InstanceState::Running))
        .map(|(m, _)| m)
        .collect())
}

/// Each tagged member ENI's holder and its state (None: not attached).
pub async fn member_instances(env: &Environment, ec2: &Ec2) -> Result<MemberInstances, Error> {
    let filter = ClusterFilter {
        environment: env.name.clone(),
        role: Role::Etcd.to_string(),
    };
    let enis = ec2.network_interfaces(&filter).await.map_err(Error::Cloud)?;
    let holders: BTreeMap<u32, String> = enis
        .iter()
        .filter_map(|e| {
            let member = e.tags.get(tags::MEMBER)?.parse().ok()?;
            Some((member, e.attachment.as_ref()?.instance_id.clone()))
        })
        .collect();
    let ids: Vec<String> = holders.values().cloned().collect();
    let states = if ids.is_empty() {
        BTreeMap::new()
    } else {
        ec2.instance_states(&ids).await.map_err(Error::Cloud)?
    };
    let mut out: MemberInstances = enis
        .iter()
        .filter_map(|e| e.tags.get(tags::MEMBER)?.parse().ok())
        .map(|m| (m, None))
        .collect();
    for (m, id) in holders {
        let state = states.get(&id).copied().unwrap_or(InstanceState::Unknown);
        out.insert(m, Some((id, state)));
    }
    Ok(out)
}

/// Member → the instance holding its ENI and that instance's state.
pub type MemberInstances = BTreeMap<u32, Option<(String, InstanceState)>>;

/// Pure: whether `etcd recover --from-member from` may go ahead, and what
/// it will do (one line each), or why not. Every other member must be
/// gone for EC2 (its instance stopped, stopping, shutting down, terminated,
/// or no instance holds its ENI): a member that may still run could hold
/// newer data, or form a quorum beside the recovered cluster.
pub fn recover_plan(instances: &MemberInstances, members: u32, from: u32) -> Result<Vec<String>, String> {
    if from >= members {
        return Err(format!(
            "member {from}: the environment has members 0 to {}",
            members - 1
        ));
    }
    match instances.get(&from) {
        Some(Some((id, InstanceState::Running))) => {
            let mut lines = vec![format!(
                "member {from} (instance {id}): its own data becomes the cluster: etcd starts once with \
                 --force-new-cluster (every entry of its log committed, its cluster and member IDs kept, every \
                 other member removed from the membership)"
            )];
            let mut alive = Vec::new();
            for m in (0..members).filter(|m| *m != from) {
                let gone = match instances.get(&m) {
                    None | Some(None) => "no instance holds its ENI".to_string(),
                    Some(Some((id, state))) => match state {
                        InstanceState::Stopped
                        | InstanceState::Stopping
                        | InstanceState::ShuttingDown
                        | InstanceState::Terminated => format!("instance {id} is {state:?}").to_lowercase(),
                        _ => {
                            alive.push(format!("member {m} (instance {id}: {state:?})"));
                            continue;
                        }
                    },
                };
                lines.push(format!(
                    "member {m} ({gone}): joins member {from}'s cluster as a learner when its node comes back, its \
                     data kept aside"
                ));
            }
            if !alive.is_empty() {
                return Err(format!(
                    "{} may still run etcd: recover only when every other member is gone for EC2 (stopped, \
                     terminated, or no instance); if they run and a quorum answers, nothing needs recovering",
                    alive.join(", ")
                ));
            }
            lines.push(format!(
                "writes that only the other members had are lost; the kube-apiserver of member {from}'s node is \
                 taken out while it recovers"
            ));
            Ok(lines)
        }
        Some(Some((id, state))) => Err(format!(
            "member {from}: instance {id} is {state:?}: recover from a member whose node runs"
        )),
        _ => Err(format!(
            "member {from}: no instance holds its ENI: recover from a member whose node runs"
        )),
    }
}

/// Pure: the member that restores. The one asked for must run (a seed that
/// never acts leaves nobody to join); by default the lowest that runs.
pub fn choose_seed(running: &BTreeSet<u32>, members: u32, wanted: Option<u32>) -> Result<u32, String> {
    match wanted {
        Some(m) if m >= members => Err(format!("member {m}: the environment has members 0 to {}", members - 1)),
        Some(m) if !running.contains(&m) => Err(format!(
            "member {m}: no running instance holds its ENI, so nothing would restore; choose a member whose \
             node runs ({})",
            list(running)
        )),
        Some(m) => Ok(m),
        None => running.iter().copied().find(|m| *m < members).ok_or_else(|| {
            "no etcd member's node runs (no running instance holds a member ENI): start or replace one, then restore"
                .to_string()
        }),
    }
}

fn list(members: &BTreeSet<u32>) -> String {
    if members.is_empty() {
        return "none".into();
    }
    members.iter().map(u32::to_string).collect::<Vec<_>>().join(", ")
}

/// Where a restore stands, from the reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    /// Every expected member (and the seed) reported done.
    pub complete: bool,
    /// Members done.
    pub done: BTreeSet<u32>,
    /// The lowest revision a member reported done at.
    pub revision: Option<i64>,
    /// Expected members not done, with what they last said.
    pub working: BTreeMap<u32, String>,
    /// Members whose node did not run when the restore was asked and that
    /// have not reported done: they join when they come back.
    pub to_join: BTreeSet<u32>,
}

/// Pure: `expected` are the members whose node ran at the request (the
/// seed among them); a member that reports, expected or not, counts.
pub fn progress(members: u32, seed: u32, expected: &BTreeSet<u32>, reports: &BTreeMap<u32, Report>) -> Progress {
    let done: BTreeSet<u32> = reports
        .values()
        .filter(|r| r.phase == Phase::Done)
        .map(|r| r.member)
        .collect();
    let mut working = BTreeMap::new();
    for m in expected.iter().copied().chain([seed]) {
        if done.contains(&m) {
            continue;
        }
        let said = match reports.get(&m) {
            Some(r) if r.phase == Phase::Failed => format!("failed, retrying at its next pass: {}", r.detail),
            Some(r) => format!("{}: {}", phase_name(r.phase), r.detail),
            None => "no report yet".to_string(),
        };
        working.insert(m, said);
    }
    let to_join = (0..members)
        .filter(|m| !done.contains(m) && !working.contains_key(m))
        .collect();
    let revision = reports
        .values()
        .filter(|r| r.phase == Phase::Done)
        .map(|r| r.revision)
        .min();
    Progress {
        complete: working.is_empty(),
        done,
        revision,
        working,
        to_join,
    }
}

fn phase_name(phase: Phase) -> &'static str {
    match phase {
        Phase::Stopping => "stopping",
        Phase::Restoring => "restoring",
        Phase::Starting => "starting",
        Phase::Waiting => "waiting for the seed",
        Phase::Joining => "joining",
        Phase::Done => "done",
        Phase::Failed => "failed",
    }
}

fn describe(working: &BTreeMap<u32, String>) -> String {
    working
        .iter()
        .map(|(m, s)| format!("member {m}: {s}"))
        .collect::<Vec<_>>()
        .join("; ")
}

/// `nodeboot etcd restore`: writes the request, then waits for the reports.
pub fn restore(env_path: &Path, options: RestoreOptions) -> Result<Vec<String>, Error> {
    let env = load_env(env_path)?.env;
    super::operator_runtime(&env, async |sdk| {
        let (s3, kms, ec2) = (S3::new(sdk), Kms::new(sdk), Ec2::new(sdk));
        let b = backups(&env, &s3, &kms);
        let entry = choose(&b, options.backup.as_deref()).await?;
        let running = running_members(&env, &ec2).await?;
        let seed = choose_seed(&running, env.etcd_count, options.member).map_err(Error::Refused)?;
        let expected: BTreeSet<u32> = running.into_iter().filter(|m| *m < env.etcd_count).collect();
        let store = Store::new(&s3, &kms, &env.secrets_bucket_name, &env.name, &env.kms_master_id);
        let request = restore::new_request(&entry.id, now_unix(), seed);
        restore::write_json(&store, &restore::request_path(), &request)
            .await
            .map_err(request_error)?;
        info!(
            "restore {} requested: member {seed} restores backup {} as a new cluster; the others whose nodes run ({}) \
             join it as learners, one at a time",
            request.id,
            entry.id,
            list(&expected.iter().copied().filter(|m| *m != seed).collect())
        );
        let last = watch(&env, &store, &request, &expected, options.timeout).await?;
        let revision = last.revision.unwrap_or(entry.id.revision);
        let mut lines = vec![format!(
            "restored backup {} (revision {}) on member {seed}; members {} are healthy voting members at revision \
             {revision} or later; each member's data from before is kept on its volume as \
             {ETCD_MOUNT_POINT}/member.pre-restore-{}",
            entry.id,
            entry.id.revision,
            list(&last.done),
            request.id
        )];
        if !last.to_join.is_empty() {
            lines.push(format!(
                "still to join: member {} (no running instance held the ENI when the restore was asked); each \
                 joins the restored cluster when its node comes back, its old data kept aside",
                list(&last.to_join)
            ));
        }
        Ok(lines)
    })
}

/// Prints each member's report as it changes until the restore is complete.
async fn watch(
    env: &Environment,
    store: &Store<'_, S3, Kms>,
    request: &Request,
    expected: &BTreeSet<u32>,
    timeout: Duration,
) -> Result<Progress, Error> {
    let started = Instant::now();
    let mut seen: BTreeMap<u32, (Phase, String)> = BTreeMap::new();
    let mut reports: BTreeMap<u32, Report> = BTreeMap::new();
    loop {
        for m in 0..env.etcd_count {
            match restore::read_json::<Report, _, _>(store, &restore::report_path(&request.id, m)).await {
                Ok(Some(r)) => {
                    reports.insert(m, r);
                }
                Ok(None) => {}
                // S3 or KMS for a moment: the next look reads it again.
                Err(e) => info!("reading member {m}'s report: {e}"),
            }
        }
        for r in reports.values() {
            let now = (r.phase, r.detail.clone());
            if seen.get(&r.member) != Some(&now) {
                eprintln!(
                    "[{:>4}s] member {}: {}: {}",
                    started.elapsed().as_secs(),
                    r.member,
                    phase_name(r.phase),
                    r.detail
                );
                seen.insert(r.member, now);
            }
        }
        let p = progress(env.etcd_count, request.seed, expected, &reports);
        if p.complete {
            return Ok(p);
        }
        if started.elapsed() >= timeout {
            let what = format!(
                "restore {}: after {}s not every reachable member is a healthy voting member: {}. The nodes go on \
                 by themselves; `nodeboot etcd status` shows the members",
                request.id,
                started.elapsed().as_secs(),
                describe(&p.working)
            );
            let failed = p
                .working
                .keys()
                .any(|m| reports.get(m).is_some_and(|r| r.phase == Phase::Failed));
            return Err(if failed {
                Error::Unhealthy(what)
            } else {
                Error::Timeout(what)
            });
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

pub struct RecoverOptions {
    pub from_member: u32,
    pub yes: bool,
    pub timeout: Duration,
}

/// `nodeboot etcd recover --from-member N`: quorum lost, member N survived.
/// Checks EC2, says what it will do, and asks for `--yes`; then writes the
/// request and waits until member N leads its cluster of one.
pub fn recover(env_path: &Path, options: RecoverOptions) -> Result<Vec<String>, Error> {
    let env = load_env(env_path)?.env;
    super::operator_runtime(&env, async |sdk| {
        let (s3, kms, ec2) = (S3::new(sdk), Kms::new(sdk), Ec2::new(sdk));
        let instances = member_instances(&env, &ec2).await?;
        let plan = recover_plan(&instances, env.etcd_count, options.from_member)
            .map_err(|e| Error::Refused(format!("etcd recover: {e}")))?;
        for line in &plan {
            eprintln!("recover: {line}");
        }
        if !options.yes {
            return Err(Error::Refused(
                "etcd recover: nothing done; run again with --yes to go ahead".into(),
            ));
        }
        let store = Store::new(&s3, &kms, &env.secrets_bucket_name, &env.name, &env.kms_master_id);
        let request = restore::new_recover(options.from_member, now_unix());
        restore::write_json(&store, &restore::request_path(), &request)
            .await
            .map_err(request_error)?;
        info!("recover {} requested", request.id);
        let expected: BTreeSet<u32> = [options.from_member].into();
        let last = watch(&env, &store, &request, &expected, options.timeout).await?;
        Ok(vec![
            format!(
                "recovered from member {}: it leads a cluster of one at revision {}",
                options.from_member,
                last.revision.unwrap_or(0)
            ),
            format!(
                "still to join: member {} (each joins as a learner when its node comes back, its old data kept \
                 aside as {ETCD_MOUNT_POINT}/member.pre-restore-{})",
                list(&last.to_join),
                request.id
            ),
        ])
    })
}

fn request_error(e: restore::RequestError) -> Error {
    match e {
        restore::RequestError::Secret(s) => Error::Secrets(s),
        other => Error::Refused(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(member: u32, phase: Phase) -> (u32, Report) {
        (
            member,
            Report {
                request: "r".into(),
                member,
                phase,
                revision: 7,
                detail: "d".into(),
                unix: 0,
            },
        )
    }

    #[test]
    fn recover_refuses_unless_every_other_member_is_gone_for_ec2() {
        let held = |id: &str, state| Some((id.to_string(), state));
        let mut instances: MemberInstances = [
            (0, held("i-0", InstanceState::Running)),
            (1, held("i-1", InstanceState::Stopped)),
            (2, None),
        ]
        .into();
        let plan = recover_plan(&instances, 3, 0).unwrap();
        assert!(plan[0].contains("--force-new-cluster"), "{plan:?}");
        assert!(plan[1].contains("member 1 (instance i-1 is stopped)"), "{plan:?}");
        assert!(plan[2].contains("member 2 (no instance holds its ENI)"), "{plan:?}");
        // From a member whose node does not run: refused.
        assert!(recover_plan(&instances, 3, 1).unwrap_err().contains("Stopped"));
        assert!(recover_plan(&instances, 3, 3).unwrap_err().contains("members 0 to 2"));
        // Another member that runs, or that EC2 cannot tell: refused, naming it.
        for state in [InstanceState::Running, InstanceState::Pending, InstanceState::Unknown] {
            instances.insert(2, held("i-2", state));
            let e = recover_plan(&instances, 3, 0).unwrap_err();
            assert!(e.contains("member 2 (instance i-2"), "{e}");
        }
        instances.insert(2, held("i-2", InstanceState::Terminated));
        assert!(recover_plan(&instances, 3, 0).is_ok());
    }

    #[test]
    fn the_seed_is_a_member_whose_node_runs() {
        let running: BTreeSet<u32> = [1, 2].into();
        assert_eq!(choose_seed(&running, 3, None), Ok(1));
        assert_eq!(choose_seed(&running, 3, Some(2)), Ok(2));
        assert!(choose_seed(&running, 3, Some(0))
            .unwrap_err()
            .contains("no running instance"));
        assert!(choose_seed(&running, 3, Some(3))
            .unwrap_err()
            .contains("members 0 to 2"));
        assert!(choose_seed(&BTreeSet::new(), 3, None)
            .unwrap_err()
            .contains("no etcd member's node runs"));
    }

    #[test]
    fn a_restore_is_complete_when_every_reachable_member_is_done_and_names_who_is_to_join() {
        let expected: BTreeSet<u32> = [0, 1].into();
        // Member 2's node was away: not waited for, named as still to join.
        let reports: BTreeMap<u32, Report> = [report(0, Phase::Done), report(1, Phase::Done)].into();
        let p = progress(3, 0, &expected, &reports);
        assert!(p.complete);
        assert_eq!(p.to_join, [2].into());
        // A member that failed is still worked on (it retries): not complete, not aborted.
        let reports: BTreeMap<u32, Report> = [report(0, Phase::Done), report(1, Phase::Failed)].into();
        let p = progress(3, 0, &expected, &reports);
        assert!(!p.complete);
        assert!(p.working[&1].contains("failed, retrying"), "{p:?}");
        // No report yet from an expected member.
        let p = progress(3, 0, &expected, &[report(0, Phase::Done)].into());
        assert_eq!(p.working[&1], "no report yet");
        // A member that came back and joined counts, expected or not.
        let reports: BTreeMap<u32, Report> =
            [report(0, Phase::Done), report(1, Phase::Done), report(2, Phase::Done)].into();
        let p = progress(3, 0, &expected, &reports);
        assert!(p.complete && p.to_join.is_empty());
        // The seed is waited for even if its node was not seen running.
        assert!(
            !progress(
                3,
                2,
                &expected,
                &[report(0, Phase::Done), report(1, Phase::Done)].into()
            )
            .complete
        );
    }
}
