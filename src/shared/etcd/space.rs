//! etcd's space: the backend quota, its alarms and how full a member's
//! database file is. Shared by the environment's validation and `etcd
//! status` (operator) and the maintenance pass (node).
//!
//! A member's database file (bbolt) only grows: a compaction frees the
//! pages of old revisions for reuse (`dbSizeInUse` drops), a
//! defragmentation gives them back to the file system (`dbSize` drops).
//! When the file reaches `--quota-backend-bytes`, etcd raises the
//! cluster-wide `NOSPACE` alarm and refuses every write that costs space
//! (puts, transactions with a put, lease grants) until the alarm is
//! disarmed; reads, deletes and compactions go on.

use std::fmt;

const MIB: u64 = 1024 * 1024;
const GIB: u64 = 1024 * MIB;

/// etcd's suggested maximum (`MaxQuotaBytes` in etcd's backend package:
/// "a larger quota may lead to degraded performance"); etcd warns above it.
pub const MAX_QUOTA_BYTES: u64 = 8 * GIB;
/// The smallest quota an environment may set: at a full file of 256 MiB,
/// the defragmentation rule ([`DEFRAG_MIN_RECLAIMABLE_BYTES`] at
/// [`DEFRAG_MIN_FRAGMENTED_PERCENT`]) can still fire before the quota.
pub const MIN_QUOTA_BYTES: u64 = 256 * MIB;
/// The largest quota whose full database nodeboot can still back up: a
/// backup is one S3 PUT of at most 5 GiB (`backup::MAX_OBJECT_BYTES`), and
/// while it runs the member's volume (20 GiB, Terraform's etcd
/// `data_volume_size`) holds the database, its snapshot and the sealed copy
/// at once. `validate` warns above it.
pub const MAX_BACKED_UP_QUOTA_BYTES: u64 = 4 * GIB;
/// The quota `env new` writes: twice etcd's own default of 2 GiB (which
/// ends clusters with many objects or much churn), as large as backups
/// allow. OpenShift's default is etcd's suggested maximum, 8 GiB; nodeboot
/// stops at [`MAX_BACKED_UP_QUOTA_BYTES`]. etcd takes only the space it
/// writes, so a high quota costs nothing until used.
pub const DEFAULT_QUOTA_BYTES: u64 = MAX_BACKED_UP_QUOTA_BYTES;

/// OpenShift's defragmentation rule, as issue 21 adopts it: a member's file
/// is defragmented when more than this share of it is free ...
pub const DEFRAG_MIN_FRAGMENTED_PERCENT: u64 = 45;
/// ... and more than this many bytes would be given back.
pub const DEFRAG_MIN_RECLAIMABLE_BYTES: u64 = 100 * MIB;
/// Under a `NOSPACE` alarm every byte counts: a member is defragmented when
/// this share of the quota (or more) is free in its file. A file just
/// defragmented has a few pages free (4 KiB measured on etcd 3.5.16), so the
/// rule does not fire again on it.
pub const NOSPACE_MIN_RECLAIMABLE_PERCENT_OF_QUOTA: u64 = 1;

/// An alarm etcd raised (`Maintenance/Alarm`): it holds for the whole
/// cluster, and names the member that raised it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Alarm {
    pub member_id: u64,
    pub kind: AlarmKind,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum AlarmKind {
    /// The member's database reached the quota: the cluster refuses writes.
    NoSpace,
    /// A corruption check found the member's data differs from the others':
    /// the cluster refuses writes (`etcdserver: corrupt cluster`).
    Corrupt,
    /// An alarm this version does not know, as etcd named it.
    Other(String),
}

impl AlarmKind {
    /// As etcd's gateway writes it (`NOSPACE`, `CORRUPT`; proto3 JSON enum
    /// names), or its number.
    pub fn parse(name: &str) -> AlarmKind {
        match name {
            "NOSPACE" | "1" => AlarmKind::NoSpace,
            "CORRUPT" | "2" => AlarmKind::Corrupt,
            other => AlarmKind::Other(other.to_string()),
        }
    }

    /// What the alarm means for the cluster, for a human.
    pub fn meaning(&self) -> &'static str {
        match self {
            AlarmKind::NoSpace => "its database reached the quota; the cluster refuses writes until space is back",
            AlarmKind::Corrupt => {
                "its data differs from the other members'; the cluster refuses writes; a human must look"
            }
            AlarmKind::Other(_) => "an alarm nodeboot does not know",
        }
    }
}

impl fmt::Display for AlarmKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AlarmKind::NoSpace => f.write_str("NOSPACE"),
            AlarmKind::Corrupt => f.write_str("CORRUPT"),
            AlarmKind::Other(name) => f.write_str(name),
        }
    }
}

/// The free part of a database file: `dbSize - dbSizeInUse` (never negative).
pub fn reclaimable(db_size: i64, in_use: i64) -> u64 {
    (db_size - in_use).max(0) as u64
}

/// The free part as a share of the file, in percent.
pub fn fragmented_percent(db_size: i64, in_use: i64) -> u64 {
    if db_size <= 0 {
        return 0;
    }
    reclaimable(db_size, in_use) * 100 / db_size as u64
}

/// Bytes for a human: `16.0 MiB`, `8.0 GiB`, `512 B`.
pub fn human_bytes(bytes: i64) -> String {
    let b = bytes.max(0) as f64;
    let (unit, size) = [("GiB", GIB), ("MiB", MIB), ("KiB", 1024)]
        .into_iter()
        .find(|(_, size)| b >= *size as f64)
        .unwrap_or(("B", 1));
    if size == 1 {
        format!("{bytes} B")
    } else {
        format!("{:.1} {unit}", b / size as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alarms_read_by_name_and_number() {
        assert_eq!(AlarmKind::parse("NOSPACE"), AlarmKind::NoSpace);
        assert_eq!(AlarmKind::parse("2"), AlarmKind::Corrupt);
        assert_eq!(AlarmKind::parse("NEW").to_string(), "NEW");
    }

    #[test]
    fn fragmentation_of_a_file() {
        assert_eq!(reclaimable(100, 40), 60);
        assert_eq!(reclaimable(40, 100), 0);
        assert_eq!(fragmented_percent(100, 55), 45);
        assert_eq!(fragmented_percent(0, 0), 0);
    }

    #[test]
    fn bytes_for_a_human() {
        assert_eq!(human_bytes(16 * 1024 * 1024), "16.0 MiB");
        assert_eq!(human_bytes(8 * 1024 * 1024 * 1024), "8.0 GiB");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(512), "512 B");
    }
}
