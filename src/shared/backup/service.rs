//! `nodeboot etcd backup`: the long-running service on every etcd node.
//! Each pass: act on a restore request meant for this member (see
//! `restore`), then take a backup when one is due, and prune. Due: on the
//! leader when the newest backup is older than the interval; on any other
//! healthy voting member when it is older than two intervals (the leader
//! cannot reach S3, or its service is down), so backups never stall. One
//! member at a time (the etcd lock `backup`, the decision made again under
//! it); every member decides from the bucket's listing, ordered by the
//! cluster's revision and aged by the bucket's `LastModified`, never by a
//! node's memory or clock. Before it writes, the pass checks the cluster
//! marker (`marker`): a younger cluster is never backed up over an older one.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tracing::{debug, error, info, warn};

use super::etcd::{EndpointStatus, EtcdAccess};
use super::marker::{self, Marker};
use super::retention::Retention;
use super::store::{BackupError, Backups, Entry};
use super::{BackupId, Metadata};
use crate::shared::cloud::{Keys, ObjectFiles, Objects};

pub fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// What a pass does about backups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackupDecision {
    Take,
    /// Not this pass: the reason (logged at debug).
    Wait(String),
    /// Never without an operator: the reason (logged as a warning).
    Refuse(String),
}

/// This member's part in the cluster, from its own status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Leader,
    /// A voting member that knows a leader.
    Follower,
    /// A learner, or a member without a leader: takes no backup.
    Other,
}

impl Role {
    pub fn of(status: &EndpointStatus) -> Role {
        if status.is_learner || status.leader == 0 {
            Role::Other
        } else if status.leader == status.member_id {
            Role::Leader
        } else {
            Role::Follower
        }
    }
}

/// The etcd lock that lets one member at a time take a scheduled backup.
pub const LOCK: &str = "backup";
/// The lock's lease: a holder that dies frees it after this long.
pub const LOCK_TTL_SECONDS: i64 = 600;

/// What a pass observed, for [`plan_backup`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    /// This node's clock: only compared with the bucket's `LastModified`.
    pub now_unix: i64,
    pub role: Role,
    pub revision: i64,
    /// The newest backup (the highest revision) and when the bucket stored it.
    pub newest: Option<(BackupId, i64)>,
    /// The backup the latest restore request named, and when it was made.
    pub restored: Option<(BackupId, i64)>,
}

/// Pure: take a backup now?
///
/// A cluster whose revision is below the newest backup's is refused: it is
/// most likely a fresh, empty cluster after every volume was lost, and its
/// backup would become "the newest" that a restore picks. The exception is
/// a cluster restored (on request) from an older backup since then.
///
/// The newest backup's age is the bucket's (`LastModified`), so a backup
/// named in the future by a clock that ran ahead is as old as it is: no
/// backup on every pass. The leader takes one when it is older than the
/// interval, any other voting member when it is older than two.
pub fn plan_backup(o: &Observed, interval: Duration) -> BackupDecision {
    let due = match o.role {
        Role::Other => return BackupDecision::Wait("not a voting member with a leader".into()),
        Role::Leader => interval.as_secs() as i64,
        Role::Follower => 2 * interval.as_secs() as i64,
    };
    let Some((newest, stored)) = &o.newest else {
        return BackupDecision::Take;
    };
    if o.revision < newest.revision {
        let restored_since = o
            .restored
            .as_ref()
            .is_some_and(|(id, at)| *at >= *stored && id.revision <= o.revision);
        if !restored_since {
            return BackupDecision::Refuse(format!(
                "the cluster is at revision {}, behind the newest backup {newest}: an empty or rolled-back cluster is not backed up \
                 over it; restore it with `nodeboot etcd restore`",
                o.revision
            ));
        }
    }
    let age = (o.now_unix - stored).max(0);
    if age >= due {
        BackupDecision::Take
    } else {
        BackupDecision::Wait(format!("the newest backup {newest} is {age}s old"))
    }
}

/// Where and as whom a node takes backups.
pub struct NodeBackup<'a, O, K, E> {
    pub backups: Backups<'a, O, K>,
    pub etcd: &'a E,
    /// This member's client URL on this node (`https://127.0.0.1:2379`).
    pub endpoint: String,
    /// The node's backup work directory on the etcd volume. Backups write
    /// nothing there since format 3 (they stream from etcd to S3); kept so the
    /// node's commands name one place for the backup's files.
    pub work: PathBuf,
    pub member_name: String,
    pub members: u32,
}

impl<O: Objects + ObjectFiles, K: Keys, E: EtcdAccess> NodeBackup<'_, O, K, E> {
    /// Takes a backup now: of `endpoint`'s database (this node's member), or
    /// of the first member that answers when `None` (the etcd stage's hook,
    /// before a membership change, through the other members).
    pub async fn backup_now(&self, endpoint: Option<&str>) -> Result<Entry, BackupError> {
        let started = std::time::Instant::now();
        // Linearizable: the snapshot that follows holds at least this revision.
        let (keys, revision) = self.etcd.key_count(None).map_err(BackupError::Etcd)?;
        let members = self.etcd.members().map(|m| m.len() as u32).unwrap_or(self.members);
        let unix = now_unix();
        // Streamed from etcd through the sealer into S3's parts: nothing on
        // the etcd volume, memory about one part.
        let (from, snapshot) = self.etcd.snapshot(endpoint).map_err(BackupError::Etcd)?;
        let version = self.etcd.status(&from).map_err(BackupError::Etcd)?.version;
        let meta = Metadata {
            environment: self.backups.store.environment.clone(),
            revision,
            keys,
            members,
            etcd_version: version,
            unix,
            sha256: String::new(),
            size: 0,
            taken_by: self.member_name.clone(),
        };
        let (entry, meta) = self.backups.upload(&meta, snapshot).await?;
        let seconds = started.elapsed().as_secs_f64();
        info!(
            backup = %entry.id,
            bytes = entry.size,
            snapshot_bytes = meta.size,
            seconds = format!("{seconds:.2}"),
            mib_per_s = format!("{:.1}", entry.size as f64 / seconds.max(1e-3) / 1048576.0),
            "etcd backup written to s3://{}/{}",
            self.backups.store.bucket,
            entry.key
        );
        Ok(entry)
    }

    /// When the service starts: gives back the lock [`LOCK`] if it names
    /// this member. No other process takes it in this member's name, so it
    /// is a killed run's (a restart mid-backup, a crash), whose lease would
    /// keep every member from backing up for [`LOCK_TTL_SECONDS`] whenever
    /// this run cannot take it over itself (it reaches no S3, so it never
    /// gets as far as the lock). True once etcd answered.
    pub async fn started(&self) -> bool {
        match self.etcd.release_own_lock(LOCK, &self.member_name) {
            Ok(true) => {
                info!(
                    "gave back the etcd lock {LOCK}, held in this member's name by a run that was stopped mid-backup"
                );
                true
            }
            Ok(false) => true,
            Err(e) => {
                debug!("cannot check the etcd lock {LOCK} yet ({e}); again next pass");
                false
            }
        }
    }

    /// One pass of the backup half: back up when due (one member at a
    /// time, under the etcd lock [`LOCK`]), then prune.
    pub async fn pass(
        &self,
        interval: Duration,
        retention: Retention,
        restored: Option<(BackupId, i64)>,
    ) -> Result<Option<Entry>, BackupError> {
        let status = match self.etcd.status(&self.endpoint) {
            Ok(s) => s,
            Err(e) => {
                info!("etcd here does not answer ({e}); no backup this pass");
                return Ok(None);
            }
        };
        let role = Role::of(&status);
        if role == Role::Other || !self.due(&status, role, interval, &restored).await? {
            return Ok(None);
        }
        let lease = match self.etcd.try_lock(LOCK, &self.member_name, LOCK_TTL_SECONDS) {
            Ok(Some(lease)) => lease,
            Ok(None) => {
                debug!("another member holds the etcd lock {LOCK}: no backup this pass");
                return Ok(None);
            }
            Err(e) => {
                info!("cannot take the etcd lock {LOCK} ({e}); no backup this pass");
                return Ok(None);
            }
        };
        let result = self.take_locked(&status, role, interval, retention, &restored).await;
        if let Err(e) = self.etcd.unlock(lease) {
            warn!("giving the etcd lock {LOCK} back: {e} (its lease frees it in {LOCK_TTL_SECONDS}s)");
        }
        result
    }

    /// Whether a backup is due, from a fresh listing; a refusal is logged.
    async fn due(
        &self,
        status: &EndpointStatus,
        role: Role,
        interval: Duration,
        restored: &Option<(BackupId, i64)>,
    ) -> Result<bool, BackupError> {
        let newest = self.backups.listing().await?.pop();
        let observed = Observed {
            now_unix: now_unix(),
            role,
            revision: status.revision,
            newest: newest.map(|s| (s.entry.id, s.stored_unix)),
            restored: restored.clone(),
        };
        Ok(match plan_backup(&observed, interval) {
            BackupDecision::Take => true,
            BackupDecision::Wait(why) => {
                debug!("no backup yet: {why}");
                false
            }
            BackupDecision::Refuse(why) => {
                warn!("no backup: {why}");
                false
            }
        })
    }

    async fn take_locked(
        &self,
        status: &EndpointStatus,
        role: Role,
        interval: Duration,
        retention: Retention,
        restored: &Option<(BackupId, i64)>,
    ) -> Result<Option<Entry>, BackupError> {
        // Again under the lock: the member that held it may have just written one.
        if !self.due(status, role, interval, restored).await? || !self.marker_allows(status, restored).await? {
            return Ok(None);
        }
        if role == Role::Follower {
            info!("the newest backup is older than two intervals: this member takes one (the leader did not)");
        }
        let entry = self.backup_now(Some(&self.endpoint)).await?;
        let plan = self.backups.prune(retention).await?;
        if let Some(why) = &plan.skipped {
            warn!("pruning skipped: {why}");
        } else if !plan.delete.is_empty() {
            info!(
                deleted = plan.delete.len(),
                kept = plan.kept,
                "pruned old backups: {}",
                plan.delete.join(", ")
            );
        }
        Ok(Some(entry))
    }

    /// Checks the cluster marker against this member's cluster; writes it
    /// when there is none yet, or a restore made this cluster since.
    async fn marker_allows(
        &self,
        status: &EndpointStatus,
        restored: &Option<(BackupId, i64)>,
    ) -> Result<bool, BackupError> {
        let store = &self.backups.store;
        let found = marker::read(store.objects, &store.bucket).await?;
        let request = restored
            .as_ref()
            .map(|(id, at)| format!("{id} requested {}", super::rfc3339(*at)));
        match marker::check(found.as_ref(), status.cluster_id, request.as_deref()) {
            marker::Check::Matches => Ok(true),
            marker::Check::Write(why) => {
                let new = Marker {
                    environment: store.environment.clone(),
                    cluster_id: marker::hex(status.cluster_id),
                    unix: now_unix(),
                    written_by: self.member_name.clone(),
                    // Always the latest request: a younger cluster after it is no restore's.
                    restore: request,
                };
                marker::write(store.objects, &store.bucket, &new).await?;
                info!("cluster marker s3://{}/{} written: {why}", store.bucket, marker::KEY);
                Ok(true)
            }
            marker::Check::Mismatch(why) => {
                error!("no backup: {why}");
                Ok(false)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_790_000_000;

    fn id(age: i64, revision: i64) -> BackupId {
        BackupId {
            unix: NOW - age,
            revision,
        }
    }

    /// The newest backup, stored `age` seconds ago by the bucket's clock.
    fn newest(age: i64, revision: i64) -> Option<(BackupId, i64)> {
        Some((id(age, revision), NOW - age))
    }

    #[test]
    fn the_leader_backs_up_each_interval_any_voter_after_two() {
        use Role::*;
        let interval = Duration::from_secs(900);
        let o = |role, revision, newest, restored| Observed {
            now_unix: NOW,
            role,
            revision,
            newest,
            restored,
        };
        let table = [
            (o(Other, 10, None, None), "wait"),
            (o(Leader, 10, None, None), "take"),
            (o(Follower, 10, None, None), "take"),
            (o(Leader, 10, newest(899, 5), None), "wait"),
            (o(Leader, 10, newest(900, 5), None), "take"),
            // the leader cannot reach S3: another voting member after two intervals
            (o(Follower, 10, newest(900, 5), None), "wait"),
            (o(Follower, 10, newest(1799, 5), None), "wait"),
            (o(Follower, 10, newest(1800, 5), None), "take"),
            (o(Other, 10, newest(86_400, 5), None), "wait"),
            // an empty cluster after total loss does not back up over the real data
            (o(Leader, 1, newest(3600, 500), None), "refuse"),
            (o(Follower, 1, newest(3600, 500), None), "refuse"),
            // ...unless it was restored on request from an older backup since
            (
                o(Leader, 300, newest(3600, 500), Some((id(7200, 300), NOW - 60))),
                "take",
            ),
            // a restore request older than the newest backup does not count
            (
                o(Leader, 300, newest(3600, 500), Some((id(7200, 300), NOW - 4000))),
                "refuse",
            ),
        ];
        for (observed, want) in table {
            let got = match plan_backup(&observed, interval) {
                BackupDecision::Take => "take",
                BackupDecision::Wait(_) => "wait",
                BackupDecision::Refuse(_) => "refuse",
            };
            assert_eq!(got, want, "{observed:?}");
        }
    }

    #[test]
    fn a_backup_named_in_the_future_is_aged_by_the_bucket_no_storm() {
        let interval = Duration::from_secs(900);
        // Named a day ahead by a clock that ran ahead, stored 60 s ago.
        let future = Some((
            BackupId {
                unix: NOW + 86_400,
                revision: 5,
            },
            NOW - 60,
        ));
        let o = Observed {
            now_unix: NOW,
            role: Role::Leader,
            revision: 10,
            newest: future,
            restored: None,
        };
        assert!(matches!(plan_backup(&o, interval), BackupDecision::Wait(_)));
        // Stored "after now" by a bucket whose clock is ahead of this node's: not due.
        let ahead = Observed {
            newest: newest(-120, 5),
            ..o
        };
        assert!(matches!(plan_backup(&ahead, interval), BackupDecision::Wait(_)));
    }
}
