//! One maintenance pass of a node for its own member: observe (every
//! member's status and quota, the cluster's alarms), plan ([`super::plan`],
//! pure), act (compact, defragment under the lock, disarm), verify (the
//! member answers with a leader again before the lock is released).

use std::sync::mpsc;
use std::time::Duration;

use tracing::{info, warn};

use super::{plan, MemberView, Observed, Plan, Space, Thresholds, LOCK};
use crate::shared::etcd::space::{human_bytes, Alarm};
use crate::shared::etcd::{disruption, lock, Client, Cluster, EtcdClientError, Member, Status, TlsFiles};
use crate::shared::retry::{self, Attempt, Policy};

/// The lock's lease: a holder that dies frees it after this long; a live
/// holder renews it every third of it while its member defragments.
pub const LOCK_TTL_SECONDS: i64 = 120;
/// How long a defragmented member may take to answer with a leader again.
const BACK: Policy = Policy::new(
    Duration::from_millis(200),
    Duration::from_secs(2),
    Duration::from_secs(120),
);

#[derive(Debug, thiserror::Error)]
pub enum SpaceError {
    #[error("{what}: {source}")]
    Etcd { what: String, source: EtcdClientError },
    #[error(
        "etcd member {member} does not answer with a leader after its defragmentation: {detail}; \
         the etcd lock `{LOCK}` stays held until its lease ends"
    )]
    NotBack { member: String, detail: String },
}

fn etcd(what: impl Into<String>) -> impl FnOnce(EtcdClientError) -> SpaceError {
    let what = what.into();
    move |source| SpaceError::Etcd { what, source }
}

/// What a pass did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Done {
    Nothing,
    Waiting(String),
    Corrupt(String),
    /// Under `NOSPACE`; `freed` is false when the history was already
    /// compacted there (live data fills the quota: a human must act).
    Compacted {
        revision: i64,
        freed: bool,
    },
    Defragmented {
        member: String,
        before: i64,
        after: i64,
        /// False when etcd refused the lock's lease (`NOSPACE`) and nobody held it.
        locked: bool,
    },
    Disarmed(Vec<Alarm>),
}

impl std::fmt::Display for Done {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Done::Nothing => f.write_str("nothing to do"),
            Done::Waiting(why) => write!(f, "etcd maintenance waits: {why}"),
            Done::Corrupt(why) => f.write_str(why),
            Done::Compacted { revision, freed: true } => {
                write!(f, "NOSPACE: compacted the etcd history up to revision {revision}")
            }
            Done::Compacted { revision, freed: false } => write!(
                f,
                "NOSPACE: the etcd history is already compacted up to revision {revision}; while no member has \
                 space to give back, live data fills the quota: raise etcd_quota_bytes or delete keys"
            ),
            Done::Defragmented {
                member,
                before,
                after,
                locked,
            } => write!(
                f,
                "defragmented etcd member {member}: its file went from {} to {}{}",
                human_bytes(*before),
                human_bytes(*after),
                if *locked {
                    ""
                } else {
                    " (unlocked: etcd refused the lock's lease under NOSPACE)"
                }
            ),
            Done::Disarmed(alarms) => {
                let names: Vec<String> = alarms
                    .iter()
                    .map(|a| format!("{} of {:x}", a.kind, a.member_id))
                    .collect();
                write!(f, "space is back on every etcd member: disarmed {}", names.join(", "))
            }
        }
    }
}

/// A member's `Status` lists every alarm of the cluster it has applied
/// among its errors (`memberID:13668033151171901709 alarm:NOSPACE `, etcd 3.5).
fn lists_alarms(status: &Status) -> bool {
    status
        .errors
        .iter()
        .any(|e| e.split_whitespace().any(|w| w.starts_with("alarm:")))
}

/// This node's side of the maintenance.
pub struct Maintenance<'a> {
    /// A client of this node's member (the backup service's).
    pub etcd: &'a Client,
    /// This member's client URL, as `etcd` reaches it.
    pub endpoint: String,
    /// This member's name: the lock's holder.
    pub member_name: String,
    /// The certificate this node talks to the other members with.
    pub tls: TlsFiles,
    /// node.json's quota, for a member whose metrics do not say.
    pub configured_quota: u64,
    pub thresholds: Thresholds,
}

impl Maintenance<'_> {
    /// Observes, plans, acts; one step per pass.
    pub fn pass(&self) -> Result<Done, SpaceError> {
        let (observed, cluster) = self.observe()?;
        match plan(&observed, &self.thresholds) {
            Plan::Nothing => Ok(Done::Nothing),
            Plan::Wait(why) => Ok(Done::Waiting(why)),
            Plan::Corrupt(why) => Ok(Done::Corrupt(why)),
            Plan::Compact => {
                let (revision, freed) = self.compact()?;
                Ok(Done::Compacted { revision, freed })
            }
            Plan::Defragment { compact_first, why } => self.defragment(&cluster, compact_first, &why),
            Plan::Disarm(alarms) => {
                for alarm in &alarms {
                    self.etcd
                        .alarm_disarm(alarm)
                        .map_err(etcd(format!("disarming {} of {:x}", alarm.kind, alarm.member_id)))?;
                }
                Ok(Done::Disarmed(alarms))
            }
        }
    }

    /// Every member's space and the alarms; also a client of every member,
    /// the others first (the lock's calls go on while this one defragments).
    pub fn observe(&self) -> Result<(Observed, Client), SpaceError> {
        let mine = self.my_status()?;
        let members = self
            .etcd
            .member_list()
            .map_err(etcd(format!("{}: the member list", self.member_name)))?;
        let mut endpoints: Vec<String> = members
            .iter()
            .filter(|m| m.id != mine.member_id)
            .filter_map(|m| m.client_urls.first().cloned())
            .collect();
        endpoints.push(self.endpoint.clone());
        let cluster =
            Client::new(endpoints, &self.tls).map_err(etcd(format!("{}: the other members", self.member_name)))?;
        let views = std::thread::scope(|s| {
            let asks: Vec<_> = members
                .iter()
                .map(|m| {
                    let endpoint = if m.id == mine.member_id {
                        Some(self.endpoint.clone())
                    } else {
                        m.client_urls.first().cloned()
                    };
                    let cluster = &cluster;
                    s.spawn(move || self.view(cluster, m, endpoint))
                })
                .collect();
            asks.into_iter()
                .map(|a| a.join().expect("a status call does not panic"))
                .collect()
        });
        // The alarm list is a raft request; a member's status lists the
        // alarms it has applied, so the list is asked only when there is one.
        let alarms = if lists_alarms(&mine) {
            self.etcd
                .alarms()
                .map_err(etcd(format!("{}: the alarms", self.member_name)))?
        } else {
            Vec::new()
        };
        let observed = Observed {
            me: mine.member_id,
            members: views,
            alarms,
        };
        Ok((observed, cluster))
    }

    fn view(&self, cluster: &Client, m: &Member, endpoint: Option<String>) -> MemberView {
        let space = endpoint.and_then(|e| {
            let status = cluster.status(&e).ok()?;
            let quota = cluster
                .quota_bytes(&e)
                .ok()
                .flatten()
                .unwrap_or(self.configured_quota as i64);
            Some(Space {
                leader: status.leader,
                db_size: status.db_size,
                in_use: status.db_size_in_use,
                quota,
                revision: status.revision,
            })
        });
        MemberView {
            id: m.id,
            name: if m.started() { m.name.clone() } else { m.hex_id() },
            is_learner: m.is_learner,
            space,
        }
    }

    fn my_status(&self) -> Result<Status, SpaceError> {
        self.etcd
            .status(&self.endpoint)
            .map_err(etcd(format!("{}: its status", self.member_name)))
    }

    /// Compacts up to the current revision: the whole history goes (watchers
    /// behind it start over), which is etcd's documented way out of NOSPACE.
    fn compact(&self) -> Result<(i64, bool), SpaceError> {
        let revision = self.my_status()?.revision;
        let freed = self
            .etcd
            .compact(&self.endpoint, revision)
            .map_err(etcd(format!("compacting up to revision {revision}")))?;
        Ok((revision, freed))
    }

    fn defragment(&self, cluster: &Client, compact_first: bool, why: &str) -> Result<Done, SpaceError> {
        let me = &self.member_name;
        let held = match lock::try_acquire(cluster, LOCK, me, LOCK_TTL_SECONDS) {
            Ok(Some(held)) => Some(held),
            Ok(None) => return Ok(Done::Waiting(self.held_by(cluster)?)),
            // No lease under NOSPACE, for anyone: the members' fixed order
            // keeps it to one member at a time.
            Err(e) if e.is_no_space() => match lock::holder(cluster, LOCK) {
                Ok(None) => {
                    warn!("etcd refuses the lock's lease under NOSPACE and nobody holds `{LOCK}`: {me} goes unlocked, its turn in the members' order");
                    None
                }
                Ok(Some(_)) => return Ok(Done::Waiting(self.held_by(cluster)?)),
                Err(e) => return Err(etcd(format!("who holds the etcd lock `{LOCK}`"))(e)),
            },
            Err(e) => return Err(etcd(format!("taking the etcd lock `{LOCK}`"))(e)),
        };
        // The look that decides, under the lock: nobody else disrupts a
        // member between it and the defragmentation.
        let (again, _) = self.observe()?;
        if let Err(why) = disruption::assess(&super::states(&again), me) {
            if let Some(held) = held {
                if let Err(e) = held.release(cluster) {
                    warn!("releasing the etcd lock `{LOCK}`: {e} (it expires with its lease)");
                }
            }
            return Ok(Done::Waiting(format!("{me} may not be disrupted now: {why}")));
        }
        if compact_first {
            let (revision, _) = self.compact()?;
            info!("NOSPACE: the etcd history is compacted up to revision {revision}");
        }
        let before = self.my_status()?.db_size;
        info!("defragmenting etcd member {me}: {why}");
        let defragmented = std::thread::scope(|s| {
            let (stop, stopped) = mpsc::channel::<()>();
            if let Some(held) = &held {
                s.spawn(move || {
                    let every = Duration::from_secs(LOCK_TTL_SECONDS as u64 / 3);
                    while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(every) {
                        if let Err(e) = held.refresh(cluster) {
                            warn!("renewing the etcd lock `{LOCK}` while {me} defragments: {e}");
                        }
                    }
                });
            }
            let result = self.etcd.defragment(&self.endpoint);
            drop(stop);
            result
        });
        if let Err(e) = defragmented {
            // etcd answered (a refusal, a failed rewrite): the member is not
            // busy any more, the next may go. Without an answer it may still
            // be rewriting: the lock stays until its lease ends.
            if let (EtcdClientError::Api { .. }, Some(held)) = (&e, held) {
                if let Err(release) = held.release(cluster) {
                    warn!("releasing the etcd lock `{LOCK}` after {me}'s failed defragmentation: {release}");
                }
            }
            return Err(etcd(format!("defragmenting {me}"))(e));
        }
        let back = retry::wait_blocking(&format!("{me} to answer with a leader"), BACK, || {
            match self.etcd.status(&self.endpoint) {
                Ok(s) if s.has_leader() => Attempt::Done(s),
                Ok(_) => Attempt::Retry("it knows no leader".to_string()),
                Err(e) => Attempt::Retry(e.to_string()),
            }
        })
        .map_err(|e| SpaceError::NotBack {
            member: me.clone(),
            detail: e.to_string(),
        })?;
        let locked = held.is_some();
        if let Some(held) = held {
            held.release(cluster)
                .map_err(etcd(format!("releasing the etcd lock `{LOCK}`")))?;
        }
        Ok(Done::Defragmented {
            member: me.clone(),
            before,
            after: back.db_size,
            locked,
        })
    }

    fn held_by(&self, cluster: &Client) -> Result<String, SpaceError> {
        let holder = lock::holder(cluster, LOCK).map_err(etcd(format!("who holds the etcd lock `{LOCK}`")))?;
        Ok(format!(
            "{} holds the etcd lock `{LOCK}`",
            holder.as_deref().unwrap_or("another member")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_members_status_says_when_there_are_alarms_to_ask_for() {
        let with = |errors: &[&str]| Status {
            errors: errors.iter().map(|e| e.to_string()).collect(),
            ..Status::default()
        };
        // As etcd 3.5.16 answers /v3/maintenance/status.
        assert!(lists_alarms(&with(&["memberID:13668033151171901709 alarm:NOSPACE "])));
        assert!(lists_alarms(&with(&[
            "etcdserver: no leader",
            "memberID:1 alarm:CORRUPT "
        ])));
        assert!(!lists_alarms(&with(&["etcdserver: no leader"])));
        assert!(!lists_alarms(&with(&[])));
    }
}
