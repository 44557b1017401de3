//! `nodeboot etcd retire-member --env F [--yes] MEMBER` (issue 20 item 10):
//! `etcd_count` down with `prevent_destroy` on the members' volumes, ENIs
//! and address reservations. Once the environment file counts fewer
//! members, each member above the count, the highest first:
//!
//! 1. leaves the etcd cluster (`remove-member`'s plan: the highest first,
//!    never below quorum; already gone is done);
//! 2. its volume and ENI lose the tags the attach stage lists and pairs by
//!    (`nodeboot.io/role`, `nodeboot.io/member`, and DLM's
//!    `nodeboot.io/snapshots`) and get `nodeboot.io/retired-member = <i>`:
//!    from here no node can ever claim them, whatever happens next;
//! 3. a final snapshot of the volume, tagged
//!    `nodeboot.io/final-snapshot-of = <env>-etcd-<i>`, completed;
//! 4. the instance that holds them (the member's node) is terminated with
//!    one fewer desired in its zone's group, so the group launches no
//!    replacement and Terraform's lower size terminates no other member's
//!    node;
//! 5. the address reservation, the ENI and the volume are deleted.
//!
//! Terraform is not run: at the next `nodeboot up`, its refresh finds the
//! three objects gone and forgets them, so the lowered count plans no
//! destroy and `prevent_destroy` never fires (tests/etcd_retire.rs shows it
//! with the real provider). Deleting through EC2 touches exactly the
//! member's three objects; a targeted `terraform destroy` would also
//! destroy what depends on them (the etcd groups' `depends_on`), and a
//! `terraform state rm` would leave the objects in AWS. Every step is
//! idempotent: a run stopped anywhere is run again.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{load_env, operator_runtime};
use crate::operator::env::Environment;
use crate::operator::error::Error;
use crate::shared::cloud::aws::retire::{gone, Retirer};
use crate::shared::cloud::{tags, CloudError, Compute, InstanceState, NetworkInterface, Retirement, Volume};
use crate::shared::etcd::member_name;
use crate::shared::retry::{self, Attempt, Policy};

/// A snapshot of a full member volume takes minutes; a termination too.
const WAIT: Policy = Policy::every(Duration::from_secs(5), Duration::from_secs(30 * 60));
const QUICK: Policy = Policy::new(
    Duration::from_millis(200),
    Duration::from_secs(5),
    Duration::from_secs(10 * 60),
);

pub struct RetireOptions {
    pub dir: Option<PathBuf>,
    pub endpoints: Vec<String>,
    pub yes: bool,
}

/// Pure: the member index `member` names (`3` or `<env>-etcd-3`), or why
/// it may not be retired: the environment file still counts it.
pub fn retirable(env: &Environment, member: &str) -> Result<u32, String> {
    let index = member
        .parse::<u32>()
        .ok()
        .or_else(|| member.strip_prefix(&format!("{}-etcd-", env.name))?.parse().ok())
        .ok_or_else(|| format!("{member:?} is no member of {}: give its index or its name", env.name))?;
    if index < env.etcd_count {
        return Err(format!(
            "member {index} is one of the etcd_count = {} members of {}: lower etcd_count in the environment file \
             first (nodeboot validate then prints the members to retire, the highest first)",
            env.etcd_count, env.name
        ));
    }
    Ok(index)
}

/// What the command says it will do (without `--yes`) and does.
pub fn steps(env: &Environment, index: u32) -> Vec<String> {
    let name = member_name(&env.name, index);
    vec![
        format!("remove {name} from the etcd cluster (the highest member first, never below quorum)"),
        format!(
            "untag its volume and ENI ({}, {}): no node can claim them again; tag them {} = {index}",
            tags::ROLE,
            tags::MEMBER,
            tags::RETIRED_MEMBER
        ),
        format!(
            "take a final snapshot of its volume, tagged {} = {name}",
            tags::FINAL_SNAPSHOT_OF
        ),
        "terminate the instance that holds them, with one fewer desired in its autoscaling group".into(),
        "delete its address reservation, ENI and volume (Terraform forgets them at the next refresh)".into(),
    ]
}

/// Pure: the tags a retired member's volume or ENI loses.
pub const UNTAGGED: [&str; 3] = [tags::ROLE, tags::MEMBER, tags::SNAPSHOTS];

/// Pure: the tags it gets.
pub fn retired_tags(env: &Environment, index: u32) -> BTreeMap<String, String> {
    BTreeMap::from([
        (tags::RETIRED_MEMBER.to_string(), index.to_string()),
        ("Name".to_string(), format!("{}-retired", member_name(&env.name, index))),
    ])
}

/// Pure: the one volume and ENI of a member, from the listings by member
/// tag and by retired tag (a rerun finds them retagged); two of a kind is
/// a tag error a human must look at.
pub fn one<T: Clone>(kind: &str, index: u32, found: Vec<T>, id: impl Fn(&T) -> &str) -> Result<Option<T>, String> {
    let mut seen: BTreeMap<String, T> = BTreeMap::new();
    for item in found {
        seen.insert(id(&item).to_string(), item);
    }
    match seen.len() {
        0 | 1 => Ok(seen.into_values().next()),
        _ => Err(format!(
            "member {index} has {} {kind}s ({}): fix their tags by hand",
            seen.len(),
            seen.keys().cloned().collect::<Vec<_>>().join(", ")
        )),
    }
}

pub fn retire_member(env_path: &Path, options: &RetireOptions, member: &str) -> Result<Vec<String>, Error> {
    let env = load_env(env_path)?.env;
    let index = retirable(&env, member).map_err(Error::Refused)?;
    if !options.yes {
        let mut text = format!("retire-member {index} of {} will:", env.name);
        for (n, s) in steps(&env, index).iter().enumerate() {
            text.push_str(&format!("\n  {}. {s}", n + 1));
        }
        text.push_str("\npass --yes to do it");
        return Err(Error::Refused(text));
    }
    let mut lines =
        super::etcd::remove_member(env_path, options.dir.as_deref(), &options.endpoints, &index.to_string())?;
    lines.extend(operator_runtime(&env, async |sdk| {
        retire_resources(&env, &Retirer::new(sdk), index).await
    })?);
    lines.push(format!(
        "member {index} is retired: run `nodeboot up` (Terraform finds its volume, ENI and reservation gone and \
         forgets them; nothing else of the members changes)"
    ));
    Ok(lines)
}

fn cloud(e: CloudError) -> Error {
    Error::Cloud(e)
}

fn gave(what: &str, e: retry::Gave<CloudError>) -> Error {
    match e {
        retry::Gave::Failed(e) => Error::Cloud(e),
        retry::Gave::Up { last, .. } => Error::Timeout(format!("{what}: {last}")),
    }
}

async fn observe(
    env: &Environment,
    aws: &Retirer,
    index: u32,
) -> Result<(Option<Volume>, Option<NetworkInterface>), Error> {
    let i = index.to_string();
    let listed = [
        (tags::ENVIRONMENT, env.name.as_str()),
        (tags::ROLE, "etcd"),
        (tags::MEMBER, i.as_str()),
    ];
    let retired = [
        (tags::ENVIRONMENT, env.name.as_str()),
        (tags::RETIRED_MEMBER, i.as_str()),
    ];
    let mut volumes = aws.volumes_tagged(&listed).await.map_err(cloud)?;
    volumes.extend(aws.volumes_tagged(&retired).await.map_err(cloud)?);
    volumes.retain(|v| v.state != "deleted");
    let mut enis = aws.network_interfaces_tagged(&listed).await.map_err(cloud)?;
    enis.extend(aws.network_interfaces_tagged(&retired).await.map_err(cloud)?);
    let volume = one("volume", index, volumes, |v| &v.id).map_err(Error::Missing)?;
    let eni = one("ENI", index, enis, |e| &e.id).map_err(Error::Missing)?;
    Ok((volume, eni))
}

async fn retire_resources(env: &Environment, aws: &Retirer, index: u32) -> Result<Vec<String>, Error> {
    let name = member_name(&env.name, index);
    let (volume, eni) = observe(env, aws, index).await?;
    let mut lines = Vec::new();
    // Untagged first: from here no node lists them, whatever comes next.
    let ids: Vec<&str> = volume
        .iter()
        .map(|v| v.id.as_str())
        .chain(eni.iter().map(|e| e.id.as_str()))
        .collect();
    for id in &ids {
        aws.retag(id, &UNTAGGED, &retired_tags(env, index))
            .await
            .map_err(cloud)?;
    }
    if !ids.is_empty() {
        lines.push(format!(
            "untagged {} (tag {} = {index})",
            ids.join(", "),
            tags::RETIRED_MEMBER
        ));
    }
    if crate::shared::fault::fails("retire:after-retag") {
        return Err(Error::Refused("NODEBOOT_FAIL_AT=retire:after-retag".into()));
    }
    if let Some(v) = &volume {
        let snapshot = final_snapshot(env, aws, index, v).await?;
        lines.push(format!(
            "final snapshot {snapshot} of {} (tag {} = {name})",
            v.id,
            tags::FINAL_SNAPSHOT_OF
        ));
    }
    let holders: Vec<String> = volume
        .iter()
        .flat_map(|v| v.attachments.iter().map(|a| a.instance_id.clone()))
        .chain(
            eni.iter()
                .filter_map(|e| e.attachment.as_ref().map(|a| a.instance_id.clone())),
        )
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    for holder in holders {
        lines.extend(end_holder(aws, &holder).await?);
    }
    if let Some(e) = &eni {
        wait_detached(aws, "ENI", &e.id).await?;
        let ip = format!("{}/32", e.private_ip);
        for (id, cidr) in aws.cidr_reservations(&e.subnet_id).await.map_err(cloud)? {
            if cidr == ip {
                match aws.delete_cidr_reservation(&id).await {
                    Err(err) if !gone(&err) => return Err(cloud(err)),
                    _ => lines.push(format!("deleted the address reservation {id} ({ip})")),
                }
            }
        }
        match aws.delete_network_interface(&e.id).await {
            Err(err) if !gone(&err) => return Err(cloud(err)),
            _ => lines.push(format!("deleted ENI {} ({})", e.id, e.private_ip)),
        }
    }
    if let Some(v) = &volume {
        wait_detached(aws, "volume", &v.id).await?;
        match aws.delete_volume(&v.id).await {
            Err(err) if !gone(&err) => return Err(cloud(err)),
            _ => {}
        }
        // Terraform's refresh forgets a volume only once EC2 no longer lists it.
        let what = format!("volume {} to be deleted", v.id);
        retry::wait(&what, QUICK, || async {
            match aws.ec2().volume(&v.id).await {
                Err(e) if gone(&e) => Attempt::Done(()),
                Ok(v) if v.state == "deleted" => Attempt::Done(()),
                Ok(v) => Attempt::Retry(CloudError {
                    operation: "DescribeVolumes",
                    resource: v.id.clone(),
                    code: None,
                    message: format!("still {}", v.state),
                }),
                Err(e) => Attempt::Fail(e),
            }
        })
        .await
        .map_err(|e| gave(&what, e))?;
        lines.push(format!("deleted volume {}", v.id));
    }
    if volume.is_none() && eni.is_none() {
        lines.push(format!("{name} has no volume or ENI left (retired before)"));
    }
    Ok(lines)
}

/// The final snapshot of `v`, taken once (a rerun finds it), completed.
async fn final_snapshot(env: &Environment, aws: &Retirer, index: u32, v: &Volume) -> Result<String, Error> {
    let name = member_name(&env.name, index);
    let tagged = [(tags::FINAL_SNAPSHOT_OF, name.as_str())];
    let existing = aws.snapshots_tagged(&tagged).await.map_err(cloud)?;
    let id = match existing.into_iter().find(|s| s.volume_id == v.id && s.state != "error") {
        Some(s) => s.id,
        None => {
            let tags_ = BTreeMap::from([
                (tags::FINAL_SNAPSHOT_OF.to_string(), name.clone()),
                (tags::ENVIRONMENT.to_string(), env.name.clone()),
                ("Name".to_string(), format!("{name}-final")),
            ]);
            let description = format!("final snapshot of {name}, retired by nodeboot etcd retire-member");
            aws.create_snapshot(&v.id, &description, &tags_).await.map_err(cloud)?
        }
    };
    let what = format!("snapshot {id} of {} to complete", v.id);
    retry::wait(&what, WAIT, || async {
        match aws.snapshots_tagged(&tagged).await {
            Ok(all) => match all.iter().find(|s| s.id == id).map(|s| s.state.as_str()) {
                Some("completed") => Attempt::Done(()),
                Some("error") => Attempt::Fail(CloudError {
                    operation: "CreateSnapshot",
                    resource: id.clone(),
                    code: None,
                    message: "the snapshot failed: nothing was deleted; run retire-member again".into(),
                }),
                state => Attempt::Retry(CloudError {
                    operation: "DescribeSnapshots",
                    resource: id.clone(),
                    code: None,
                    message: state.unwrap_or("not listed yet").to_string(),
                }),
            },
            Err(e) => Attempt::Retry(e),
        }
    })
    .await
    .map_err(|e| gave(&what, e))?;
    Ok(id)
}

/// Terminates the instance that holds the member (its node, whose etcd
/// member was removed), unless stopped or terminated, and waits until it is.
async fn end_holder(aws: &Retirer, instance: &str) -> Result<Vec<String>, Error> {
    let ids = [instance.to_string()];
    let state = aws.ec2().instance_states(&ids).await.map_err(cloud)?;
    let state = state.get(instance).copied().unwrap_or(InstanceState::Unknown);
    let mut lines = Vec::new();
    if !state.cannot_write() {
        let group = aws.terminate_with_its_group(instance).await.map_err(cloud)?;
        lines.push(match group {
            Some(g) => format!("terminated {instance} (it held the member) with one fewer desired in {g}"),
            None => format!("terminated {instance} (it held the member)"),
        });
    }
    let what = format!("{instance} to be terminated");
    retry::wait(&what, WAIT, || async {
        match aws.ec2().instance_states(&ids).await {
            Ok(s) if s.get(instance).is_some_and(|s| s.cannot_write()) => Attempt::Done(()),
            Ok(s) => Attempt::Retry(CloudError {
                operation: "DescribeInstances",
                resource: instance.to_string(),
                code: None,
                message: s
                    .get(instance)
                    .copied()
                    .unwrap_or(InstanceState::Unknown)
                    .name()
                    .to_string(),
            }),
            Err(e) => Attempt::Retry(e),
        }
    })
    .await
    .map_err(|e| gave(&what, e))?;
    Ok(lines)
}

/// Waits until the volume or ENI is attached to nothing (its holder gone).
async fn wait_detached(aws: &Retirer, kind: &str, id: &str) -> Result<(), Error> {
    let what = format!("{kind} {id} to be detached");
    retry::wait(&what, QUICK, || async {
        let attached = if kind == "volume" {
            aws.ec2().volume(id).await.map(|v| !v.attachments.is_empty())
        } else {
            aws.ec2().network_interface(id).await.map(|e| e.attachment.is_some())
        };
        match attached {
            Ok(false) => Attempt::Done(()),
            Err(e) if gone(&e) => Attempt::Done(()),
            Ok(true) => Attempt::Retry(CloudError {
                operation: "Describe",
                resource: id.to_string(),
                code: None,
                message: "still attached".into(),
            }),
            Err(e) => Attempt::Retry(e),
        }
    })
    .await
    .map_err(|e| gave(&what, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(count: u32) -> Environment {
        let mut env = crate::operator::env::load(Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/environments/example.tfvars"
        )))
        .unwrap()
        .env;
        env.etcd_count = count;
        env
    }

    #[test]
    fn only_a_member_above_the_count_is_retired() {
        assert_eq!(retirable(&env(3), "3"), Ok(3));
        assert_eq!(retirable(&env(3), "example-etcd-4"), Ok(4));
        let within = retirable(&env(3), "2").unwrap_err();
        assert!(within.contains("lower etcd_count"), "{within}");
        assert!(retirable(&env(3), "other-etcd-4").is_err());
    }

    #[test]
    fn a_retired_pair_loses_the_tags_attach_lists_and_pairs_by() {
        assert!(UNTAGGED.contains(&tags::ROLE) && UNTAGGED.contains(&tags::MEMBER));
        let added = retired_tags(&env(3), 3);
        assert!(!added.contains_key(tags::ROLE) && !added.contains_key(tags::MEMBER));
        assert_eq!(added[tags::RETIRED_MEMBER], "3");
    }

    #[test]
    fn two_volumes_of_one_member_stop_it() {
        let ids = |v: &Vec<&str>| v.iter().map(|s| s.to_string()).collect::<Vec<String>>();
        assert_eq!(
            one("volume", 3, ids(&vec!["vol-1", "vol-1"]), |s| s),
            Ok(Some("vol-1".into()))
        );
        assert!(one("volume", 3, ids(&vec!["vol-1", "vol-2"]), |s| s).is_err());
        assert_eq!(one::<String>("volume", 3, vec![], |s| s), Ok(None));
    }
}
