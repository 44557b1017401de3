//! The etcd stage's [`BackupHook`], filled by the backup service's
//! "backup now": the stage asks it before every membership change it makes
//! (only once it has seen a quorum answer), and asks whether the cluster
//! marker or a backup shows that the cluster ran before.

use std::path::PathBuf;

use tracing::info;

use super::plan::Evidence;
use super::BackupHook;
use crate::shared::backup::service::NodeBackup;
use crate::shared::backup::store::{BackupError, Backups};
use crate::shared::backup::{marker, rfc3339};
use crate::shared::cloud::{Keys, ObjectFiles, Objects};
use crate::shared::etcd::Client;

pub struct StageBackups<'a, O, K> {
    /// The environment's backups in its secrets bucket.
    pub backups: Backups<'a, O, K>,
    /// Temporary files, on the etcd volume (as large as the database).
    pub work: PathBuf,
    /// Who takes it (the backup's metadata): this member's name.
    pub member_name: String,
    pub members: u32,
}

impl<O: Objects + ObjectFiles, K: Keys> BackupHook for StageBackups<'_, O, K> {
    /// The marker (an unreadable one counts) and the newest backup.
    async fn existed(&self) -> Result<Evidence, String> {
        let store = &self.backups.store;
        let place = format!("s3://{}/{}", store.bucket, marker::KEY);
        let marker = match marker::read(store.objects, &store.bucket).await {
            Ok(None) => None,
            Ok(Some(m)) => Some(format!(
                "{place} (cluster {}, written {})",
                m.cluster_id,
                rfc3339(m.unix)
            )),
            Err(BackupError::Bad(why)) => Some(why),
            Err(e) => return Err(e.to_string()),
        };
        let backup = self.backups.newest().await.map_err(|e| e.to_string())?;
        Ok(Evidence {
            marker,
            backup: backup.map(|b| format!("s3://{}/{}", store.bucket, b.key)),
            formatted: Vec::new(),
        })
    }

    /// A backup through `cluster` (the other members): the key count is a
    /// linearizable read, so it fails without quorum, and the snapshot
    /// comes from the first member that answers.
    async fn before_membership_change(&self, cluster: &Client, change: &str) -> Result<(), String> {
        let node = NodeBackup {
            backups: self.backups.clone(),
            etcd: cluster,
            endpoint: String::new(),
            work: self.work.clone(),
            member_name: self.member_name.clone(),
            members: self.members,
        };
        let entry = node.backup_now(None).await.map_err(|e| e.to_string())?;
        info!(backup = %entry.id, "backup taken before {change}");
        Ok(())
    }

    async fn pending_restore(&self, member: u32) -> Result<Option<crate::shared::backup::restore::Pending>, String> {
        crate::shared::backup::restore::pending(&self.backups.store, member, self.members)
            .await
            .map_err(|e| e.to_string())
    }
}
