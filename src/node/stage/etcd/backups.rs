//! The etcd stage's [`BackupHook`], filled by the backup service's
//! "backup now": the stage asks it before every membership change it makes
//! (only once it has seen a quorum answer), and asks whether backups show
//! that the cluster ran before.

use std::path::PathBuf;

use tracing::info;

use super::BackupHook;
use crate::shared::backup::service::NodeBackup;
use crate::shared::backup::store::Backups;
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
    async fn history(&self) -> Result<bool, String> {
        self.backups
            .newest()
            .await
            .map(|newest| newest.is_some())
            .map_err(|e| e.to_string())
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
}
