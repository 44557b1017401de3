//! `nodeboot etcd ...`: operator commands that talk to the etcd cluster with
//! the operator's etcd client certificate (`secure/etcd/client.*` of the
//! local secrets tree). The members are private: run them where their client
//! URLs are reachable (a node, the bastion), or through an SSH tunnel and
//! `--endpoints https://127.0.0.1:PORT` (every member certificate names
//! 127.0.0.1).

use std::collections::BTreeSet;
use std::path::Path;

use std::time::Duration;

use tracing::info;

use super::load_env;
use crate::operator::env::Environment;
use crate::operator::error::Error;
use crate::shared::etcd::member_name;
use crate::shared::etcd::{observe_cluster, CLIENT_PORT};
use crate::shared::etcd::{Client, Cluster, Member, TlsFiles};
use crate::shared::retry::{self, Attempt, Policy};

const REMOVE_RETRY: Policy = Policy::new(
    Duration::from_millis(500),
    Duration::from_secs(3),
    Duration::from_secs(60),
);

/// What `remove-member` does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemovePlan {
    /// Not in the cluster (removed before): nothing to do.
    AlreadyGone,
    Remove(Member),
    Refuse(String),
}

/// The member index in a member name `<environment>-etcd-<i>`.
fn index_of(environment: &str, name: &str) -> Option<u32> {
    name.strip_prefix(&format!("{environment}-etcd-"))?.parse().ok()
}

/// Pure: members go highest first (Terraform deletes the highest indices
/// when `etcd_count` goes down), and never below quorum.
pub fn plan_remove(
    environment: &str,
    members: &[Member],
    healthy: &BTreeSet<u64>,
    index: u32,
    peer_url: &str,
) -> RemovePlan {
    let name = member_name(environment, index);
    let Some(target) = members
        .iter()
        .find(|m| m.name == name || m.peer_urls.iter().any(|u| u == peer_url))
    else {
        return RemovePlan::AlreadyGone;
    };
    if let Some(higher) = members
        .iter()
        .filter_map(|m| index_of(environment, &m.name))
        .filter(|i| *i > index)
        .max()
    {
        return RemovePlan::Refuse(format!(
            "{} is still a member: remove members from the highest down ({} first), as Terraform deletes the highest when etcd_count goes down",
            member_name(environment, higher),
            member_name(environment, higher)
        ));
    }
    let voters: Vec<&Member> = members.iter().filter(|m| !m.is_learner && m.id != target.id).collect();
    let quorum = voters.len() / 2 + 1;
    let up = voters.iter().filter(|m| healthy.contains(&m.id)).count();
    if up < quorum {
        return RemovePlan::Refuse(format!(
            "without {name} the cluster would have {up} healthy of {} voting members, {quorum} needed: bring the others back first",
            voters.len()
        ));
    }
    RemovePlan::Remove(target.clone())
}

/// `nodeboot etcd remove-member --env F [--dir D] [--endpoints URLS] MEMBER`.
pub fn remove_member(
    env_path: &Path,
    dir: Option<&Path>,
    endpoints: &[String],
    member: &str,
) -> Result<Vec<String>, Error> {
    let env = load_env(env_path)?.env;
    let index = member
        .parse::<u32>()
        .ok()
        .or_else(|| index_of(&env.name, member))
        .ok_or_else(|| {
            Error::Refused(format!(
                "{member:?} is no member of {}: give its index or its name {}",
                env.name,
                member_name(&env.name, 0)
            ))
        })?;
    let layout = members_up_to(&env, index);
    let peer_url = format!(
        "https://{}:{}",
        layout[index as usize].ip,
        crate::shared::etcd::PEER_PORT
    );
    let endpoints: Vec<String> = if endpoints.is_empty() {
        layout
            .iter()
            .filter(|m| m.index != index)
            .map(|m| format!("https://{}:{CLIENT_PORT}", m.ip))
            .collect()
    } else {
        endpoints.to_vec()
    };
    let client = Client::new(endpoints, &operator_tls(&env, dir)).map_err(Error::Etcd)?;
    let view = observe_cluster(&client)
        .map_err(Error::Etcd)?
        .ok_or_else(|| Error::Unhealthy(format!("removing {member}: no etcd member answers")))?;
    match plan_remove(&env.name, &view.members, &view.healthy, index, &peer_url) {
        RemovePlan::AlreadyGone => Ok(vec![format!(
            "{} is not a member (already removed)",
            member_name(&env.name, index)
        )]),
        RemovePlan::Refuse(reason) => Err(Error::Refused(reason)),
        RemovePlan::Remove(m) => {
            // etcd answers "unhealthy cluster" (retryable) until the others
            // have been connected for 5 s; "member not found" means done.
            let what = format!("etcd to remove {}", m.name);
            let removed = retry::wait_blocking(&what, REMOVE_RETRY, || match client.member_remove(m.id) {
                Ok(()) => Attempt::Done(()),
                Err(e) if e.api_message().is_some_and(|m| m.contains("member not found")) => Attempt::Done(()),
                Err(e) if e.is_unavailable() => Attempt::Retry(e),
                Err(e) => Attempt::Fail(e),
            });
            removed.map_err(|e| match e {
                retry::Gave::Failed(e) | retry::Gave::Up { last: e, .. } => Error::Etcd(e),
            })?;
            info!("removed etcd member {} ({})", m.hex_id(), m.name);
            let left = client.member_list().map_err(Error::Etcd)?;
            let mut lines = vec![format!(
                "removed {} ({}, {})",
                member_name(&env.name, index),
                m.hex_id(),
                m.peer_urls.join(",")
            )];
            lines.push(format!(
                "members now: {}",
                left.iter().map(|m| m.name.as_str()).collect::<Vec<_>>().join(", ")
            ));
            Ok(lines)
        }
    }
}

/// The layout's members `0..max(etcd_count, index + 1)`: a member above the
/// (already lowered) count still has its place.
fn members_up_to(env: &Environment, index: u32) -> Vec<crate::operator::env::Member> {
    let mut wider = env.clone();
    wider.etcd_count = env.etcd_count.max(index + 1);
    wider.etcd_members()
}

/// The operator's etcd client certificate: `secure/etcd/` of `dir`, default `secrets/<environment>`.
pub(super) fn operator_tls(env: &Environment, dir: Option<&Path>) -> TlsFiles {
    let dir = dir
        .map(Path::to_path_buf)
        .unwrap_or_else(|| crate::shared::secrets::layout::default_dir(&env.name))
        .join("secure/etcd");
    TlsFiles {
        ca: dir.join("ca.crt"),
        cert: dir.join("client.crt"),
        key: dir.join("client.key"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(id: u64, name: &str, learner: bool) -> Member {
        Member {
            id,
            name: name.into(),
            peer_urls: vec![format!("https://10.0.0.{id}:2380")],
            client_urls: vec![format!("https://10.0.0.{id}:2379")],
            is_learner: learner,
        }
    }

    fn five() -> Vec<Member> {
        (0..5).map(|i| m(i + 1, &format!("e-etcd-{i}"), false)).collect()
    }

    #[test]
    fn members_are_removed_highest_first_and_only_with_quorum() {
        let all: BTreeSet<u64> = (1..=5).collect();
        assert_eq!(
            plan_remove("e", &five(), &all, 4, "x"),
            RemovePlan::Remove(m(5, "e-etcd-4", false))
        );
        match plan_remove("e", &five(), &all, 3, "x") {
            RemovePlan::Refuse(r) => assert!(r.contains("e-etcd-4 first"), "{r}"),
            p => panic!("{p:?}"),
        }
        let four: Vec<Member> = five().into_iter().take(4).collect();
        assert_eq!(
            plan_remove("e", &four, &all, 4, "https://10.0.0.5:2380"),
            RemovePlan::AlreadyGone
        );
        assert_eq!(
            plan_remove("e", &four, &all, 3, "x"),
            RemovePlan::Remove(m(4, "e-etcd-3", false))
        );
        // Four members, two of the remaining three down: no quorum after the removal.
        let two: BTreeSet<u64> = [1, 4].into();
        match plan_remove("e", &four, &two, 3, "x") {
            RemovePlan::Refuse(r) => assert!(r.contains("1 healthy of 3 voting members, 2 needed"), "{r}"),
            p => panic!("{p:?}"),
        }
        // An unstarted member is found by its peer URL.
        let mut with_new = four.clone();
        with_new.push(m(9, "", true));
        assert_eq!(
            plan_remove("e", &with_new, &all, 4, "https://10.0.0.9:2380"),
            RemovePlan::Remove(m(9, "", true))
        );
    }
}
