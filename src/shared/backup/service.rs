//! `nodeboot etcd backup`: the long-running service on every etcd node.
//! Each pass: act on a restore request meant for this member (see
//! `restore`), then, on the leader only, take a backup when the newest one
//! is older than the interval, and prune. One backup per interval per
//! cluster: only the leader writes, and it decides from the bucket's
//! listing, not from its own memory, so a new leader carries on the rhythm.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tracing::{info, warn};

use super::etcd::EtcdAccess;
use super::retention::Retention;
use super::store::{sha256_file, BackupError, Backups, Entry};
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

/// What a pass observed, for [`plan_backup`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    pub now_unix: i64,
    pub is_leader: bool,
    pub revision: i64,
    pub newest: Option<BackupId>,
    /// The backup the latest restore request named, and when it was made.
    pub restored: Option<(BackupId, i64)>,
}

/// Pure: take a backup now?
///
/// A cluster whose revision is below the newest backup's is refused: it is
/// most likely a fresh, empty cluster after every volume was lost, and its
/// backup would become "the newest" that a restore picks. The exception is
/// a cluster restored (on request) from an older backup since then.
pub fn plan_backup(o: &Observed, interval: Duration) -> BackupDecision {
    if !o.is_leader {
        return BackupDecision::Wait("not the leader".into());
    }
    let Some(newest) = &o.newest else {
        return BackupDecision::Take;
    };
    if o.revision < newest.revision {
        let restored_since = o
            .restored
            .as_ref()
            .is_some_and(|(id, at)| *at >= newest.unix && id.revision <= o.revision);
        if !restored_since {
            return BackupDecision::Refuse(format!(
                "the cluster is at revision {}, behind the newest backup {newest}: an empty or rolled-back cluster is not backed up \
                 over it; restore it with `nodeboot etcd restore`",
                o.revision
            ));
        }
    }
    let age = o.now_unix - newest.unix;
    if age >= interval.as_secs() as i64 || age < 0 {
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
    /// Temporary files, on the etcd volume (as large as the database).
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
        std::fs::create_dir_all(&self.work).map_err(|e| BackupError::io(&self.work, e))?;
        // Linearizable: the snapshot that follows holds at least this revision.
        let (keys, revision) = self.etcd.key_count(None).map_err(BackupError::Etcd)?;
        let members = self.etcd.members().map(|m| m.len() as u32).unwrap_or(self.members);
        let unix = now_unix();
        let snapshot = self.work.join(format!("snapshot-{unix}.db.tmp"));
        let taken = self.etcd.snapshot(endpoint, &snapshot).map_err(BackupError::Etcd);
        let result = match taken {
            Ok(from) => match self.etcd.status(&from) {
                Ok(status) => {
                    self.seal_and_upload(&snapshot, (revision, keys), members, &status.version, unix)
                        .await
                }
                Err(e) => Err(BackupError::Etcd(e)),
            },
            Err(e) => Err(e),
        };
        let _ = std::fs::remove_file(&snapshot);
        let entry = result?;
        info!(
            backup = %entry.id,
            bytes = entry.size,
            seconds = format!("{:.2}", started.elapsed().as_secs_f64()),
            "etcd backup written to s3://{}/{}",
            self.backups.store.bucket,
            entry.key
        );
        Ok(entry)
    }

    async fn seal_and_upload(
        &self,
        snapshot: &Path,
        (revision, keys): (i64, u64),
        members: u32,
        version: &str,
        unix: i64,
    ) -> Result<Entry, BackupError> {
        let (sha256, size) = sha256_file(snapshot)?;
        let meta = Metadata {
            environment: self.backups.store.environment.clone(),
            revision,
            keys,
            members,
            etcd_version: version.to_string(),
            unix,
            sha256,
            size,
            taken_by: self.member_name.clone(),
        };
        self.backups.upload(snapshot, &meta, &self.work).await
    }

    /// One pass of the backup half: back up when due, then prune.
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
        let is_leader = status.leader != 0 && status.leader == status.member_id;
        if !is_leader {
            return Ok(None);
        }
        let newest = self.backups.newest().await?.map(|e| e.id);
        let observed = Observed {
            now_unix: now_unix(),
            is_leader,
            revision: status.revision,
            newest,
            restored,
        };
        match plan_backup(&observed, interval) {
            BackupDecision::Take => {}
            BackupDecision::Wait(why) => {
                tracing::debug!("no backup yet: {why}");
                return Ok(None);
            }
            BackupDecision::Refuse(why) => {
                warn!("no backup: {why}");
                return Ok(None);
            }
        }
        let entry = self.backup_now(Some(&self.endpoint)).await?;
        let plan = self.backups.prune(now_unix(), retention).await?;
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

    #[test]
    fn backs_up_on_the_leader_when_the_newest_is_older_than_the_interval() {
        let interval = Duration::from_secs(900);
        let o = |is_leader, revision, newest, restored| Observed {
            now_unix: NOW,
            is_leader,
            revision,
            newest,
            restored,
        };
        let table = [
            (o(false, 10, None, None), "wait"),
            (o(true, 10, None, None), "take"),
            (o(true, 10, Some(id(899, 5)), None), "wait"),
            (o(true, 10, Some(id(900, 5)), None), "take"),
            (o(true, 10, Some(id(-60, 5)), None), "take"),
            // an empty cluster after total loss does not back up over the real data
            (o(true, 1, Some(id(3600, 500)), None), "refuse"),
            // ...unless it was restored on request from an older backup since
            (
                o(true, 300, Some(id(3600, 500)), Some((id(7200, 300), NOW - 60))),
                "take",
            ),
            // a restore request older than the newest backup does not count
            (
                o(true, 300, Some(id(3600, 500)), Some((id(7200, 300), NOW - 4000))),
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
}
