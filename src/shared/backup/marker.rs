//! The cluster marker: `backups/etcd-cluster/marker.json`, written when the
//! environment's etcd cluster first runs (by the backup pass that takes its
//! first backup) with etcd's cluster ID, and again only when a restore
//! requested by the operator made a new cluster. The etcd role may put and
//! read it but never delete it (`terraform/modules/iam`; the bucket is
//! versioned, so every version stays). It is evidence that the cluster
//! existed (`node::stage::etcd::plan::Evidence`) and the identity the backup
//! service checks before it writes a backup: a younger cluster is never
//! backed up over an older one. Plain JSON, not sealed: it says nothing
//! secret, and only its presence and cluster ID are read.

use serde::{Deserialize, Serialize};

use super::store::BackupError;
use crate::shared::cloud::Objects;

/// Beside `backups/etcd/` (whose objects an etcd node may delete), not under it.
pub const KEY: &str = "backups/etcd-cluster/marker.json";
const MAX_BYTES: u64 = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Marker {
    pub environment: String,
    /// etcd's cluster ID, hex (as `etcdctl` prints it).
    pub cluster_id: String,
    /// When it was written (the writer's clock; for people).
    pub unix: i64,
    pub written_by: String,
    /// The restore request that made this cluster, when one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore: Option<String>,
}

/// The marker, if there is one. An unreadable one is still a marker:
/// `Err` names it.
pub async fn read<O: Objects>(objects: &O, bucket: &str) -> Result<Option<Marker>, BackupError> {
    let Some(found) = objects.get(bucket, KEY, MAX_BYTES).await? else {
        return Ok(None);
    };
    serde_json::from_slice(&found.body)
        .map(Some)
        .map_err(|e| BackupError::Bad(format!("s3://{bucket}/{KEY} is not a cluster marker: {e}")))
}

pub async fn write<O: Objects>(objects: &O, bucket: &str, marker: &Marker) -> Result<(), BackupError> {
    let body = serde_json::to_vec_pretty(marker).expect("a marker serialises");
    objects.put(bucket, KEY, body, &Default::default()).await?;
    Ok(())
}

/// What a backup pass does about the marker, for [`check`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// The marker names this cluster.
    Matches,
    /// No marker yet, or a restore made this cluster since it was written:
    /// write it (the reason, for the log).
    Write(String),
    /// Another cluster's marker: no backup of this one (the reason).
    Mismatch(String),
}

/// Pure: `found` against the cluster this member runs in; `restored` names
/// the latest restore request. A restore makes a new cluster (a token of its
/// own), once per request: a marker that does not name that request yet may
/// move to the cluster it made; one that names it may not (a younger cluster
/// after that restore is no restore's). Nodes' and the operator's clocks are
/// not compared.
pub fn check(found: Option<&Marker>, cluster_id: u64, restored: Option<&str>) -> Check {
    let id = hex(cluster_id);
    let Some(marker) = found else {
        return Check::Write(format!("no cluster marker yet: cluster {id} is the first"));
    };
    if marker.cluster_id == id {
        return Check::Matches;
    }
    match restored {
        Some(request) if marker.restore.as_deref() != Some(request) => Check::Write(format!(
            "restore {request} made cluster {id} after the marker's cluster {}",
            marker.cluster_id
        )),
        _ => Check::Mismatch(format!(
            "this member's etcd runs cluster {id}, but the cluster marker s3://…/{KEY} names cluster {} \
             (written {} by {}): a younger cluster is not backed up over the older one's backups. \
             If the old cluster's data is gone for good, restore a backup (nodeboot etcd restore) \
             or recover from a surviving member (nodeboot etcd recover)",
            marker.cluster_id,
            super::rfc3339(marker.unix),
            marker.written_by
        )),
    }
}

/// A cluster or member ID as etcd prints it.
pub fn hex(id: u64) -> String {
    format!("{id:x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn marker(cluster: &str, unix: i64, restore: Option<&str>) -> Marker {
        Marker {
            environment: "env".into(),
            cluster_id: cluster.into(),
            unix,
            written_by: "env-etcd-0".into(),
            restore: restore.map(str::to_string),
        }
    }

    #[test]
    fn the_marker_names_one_cluster_and_only_a_later_restore_moves_it() {
        let kind = |c: Check| match c {
            Check::Matches => "matches",
            Check::Write(_) => "write",
            Check::Mismatch(_) => "mismatch",
        };
        let m = marker("5a7c", 1_000, None);
        let m_r0 = marker("5a7c", 1_000, Some("r0"));
        let table = [
            (None, 0x5a7c, None, "write"),
            (Some(&m), 0x5a7c, None, "matches"),
            // An empty cluster started beside the real one: never backed up.
            (Some(&m), 0x1234, None, "mismatch"),
            // A restore the marker does not name yet made it.
            (Some(&m), 0x1234, Some("r1"), "write"),
            (Some(&m_r0), 0x1234, Some("r1"), "write"),
            // A marker written for that very restore: another cluster is no restore's.
            (Some(&m_r0), 0x1234, Some("r0"), "mismatch"),
        ];
        for (found, cluster, restored, want) in table {
            assert_eq!(
                kind(check(found, cluster, restored)),
                want,
                "{found:?} {cluster:x} {restored:?}"
            );
        }
        // Once written for that restore, the same request explains nothing more.
        let after = marker("1234", 1_600, Some("r1"));
        assert_eq!(kind(check(Some(&after), 0x9999, Some("r1"))), "mismatch");
        match check(Some(&m), 0x1234, None) {
            Check::Mismatch(why) => assert!(
                why.contains("cluster 1234") && why.contains("cluster 5a7c") && why.contains("nodeboot etcd restore"),
                "{why}"
            ),
            other => panic!("{other:?}"),
        }
    }
}
