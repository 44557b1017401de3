//! etcd backups in the secrets bucket: snapshots sealed in envelope format 3
//! (`format`, chunked, streamed from etcd to S3 and from S3 to a file, never
//! whole in memory nor copied to disk to be sealed) under `backups/etcd/`, their names and metadata (here), what to
//! prune (`retention`, pure), the bucket side (`store`), the node's
//! long-running service that writes them and acts on restore requests
//! (`service`, `restore`); the etcd stage's hook is `node::stage::etcd::backups`. Which etcd
//! versions may follow which is `etcd::version`.

pub mod etcd;
pub mod format;
pub mod marker;
pub mod restore;
pub mod retention;
pub mod service;
pub mod store;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Where backups live in the secrets bucket.
pub const PREFIX: &str = "backups/etcd/";
const SUFFIX: &str = ".snapshot";
/// What the KMS encryption context's `purpose` says for a backup.
pub const PURPOSE: &str = "etcd-backup";
/// The largest sealed backup: S3's 10,000 parts of [`store::PART_BYTES`]
/// (78 GiB; etcd's suggested maximum quota is 8 GiB).
pub const MAX_OBJECT_BYTES: u64 = store::MAX_PARTS as u64 * store::PART_BYTES as u64;

/// A backup's identity, also its object key: the UTC time it was taken and
/// the revision it holds, `backups/etcd/20261130T113500Z-r1234.snapshot`.
/// Keys sort by time, so a listing is in order.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BackupId {
    pub unix: i64,
    pub revision: i64,
}

impl BackupId {
    /// `20261130T113500Z-r1234`.
    pub fn name(&self) -> String {
        format!("{}-r{}", compact_time(self.unix), self.revision)
    }

    pub fn key(&self) -> String {
        format!("{PREFIX}{}{SUFFIX}", self.name())
    }

    /// An id as a user types it (`20261130T113500Z-r1234`) or a whole key.
    pub fn parse(s: &str) -> Option<BackupId> {
        let name = s.strip_prefix(PREFIX).unwrap_or(s);
        let name = name.strip_suffix(SUFFIX).unwrap_or(name);
        let (time, revision) = name.split_once("-r")?;
        let revision: i64 = revision
            .parse()
            .ok()
            .filter(|r| *r >= 0 && revision.bytes().all(|b| b.is_ascii_digit()))?;
        Some(BackupId {
            unix: parse_compact_time(time)?,
            revision,
        })
    }

    /// Only a whole backup key: what pruning and listing act on.
    pub fn from_key(key: &str) -> Option<BackupId> {
        let name = key.strip_prefix(PREFIX)?.strip_suffix(SUFFIX)?;
        (!name.contains('/')).then(|| BackupId::parse(name)).flatten()
    }
}

impl std::fmt::Display for BackupId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name())
    }
}

/// `20261130T113500Z`
pub fn compact_time(unix: i64) -> String {
    utc(unix, "", "", "Z")
}

/// `2026-11-30T11:35:00Z`
pub fn rfc3339(unix: i64) -> String {
    utc(unix, "-", ":", "Z")
}

/// A UTC time as date `T` time, with the given separators.
fn utc(unix: i64, date_sep: &str, time_sep: &str, zone: &str) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp(unix).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}{date_sep}{:02}{date_sep}{:02}T{:02}{time_sep}{:02}{time_sep}{:02}{zone}",
        t.year(),
        t.month() as u8,
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

fn parse_compact_time(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        let part = s.get(r)?;
        part.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| part.parse().ok())
            .flatten()
    };
    let month = time::Month::try_from(num(4..6)? as u8).ok()?;
    let date = time::Date::from_calendar_date(num(0..4)? as i32, month, num(6..8)? as u8).ok()?;
    let at = time::Time::from_hms(num(9..11)? as u8, num(11..13)? as u8, num(13..15)? as u8).ok()?;
    Some(time::PrimitiveDateTime::new(date, at).assume_utc().unix_timestamp())
}

/// What a backup records about itself: sealed into the envelope's header
/// (authenticated with every chunk) and copied into the object's user
/// metadata, so a listing tool can read it with one HEAD.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metadata {
    pub environment: String,
    /// The revision and the number of keys at it, read just before the
    /// snapshot: the snapshot holds this revision (and maybe a few newer).
    pub revision: i64,
    pub keys: u64,
    pub members: u32,
    pub etcd_version: String,
    /// Seconds since the epoch, UTC.
    pub unix: i64,
    /// SHA-256 of the plaintext snapshot, hex, and its length. Format 2
    /// sealed them in the header; format 3 in its trailer (a backup is
    /// sealed while etcd streams it), so its header has neither.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sha256: String,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub size: u64,
    /// The member that took it.
    pub taken_by: String,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Metadata {
    pub fn id(&self) -> BackupId {
        BackupId {
            unix: self.unix,
            revision: self.revision,
        }
    }

    /// As S3 user metadata (`x-amz-meta-nodeboot-*`), for display only: the
    /// authenticated copy is the one in the header.
    pub fn s3(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            (
                crate::shared::secrets::format::METADATA_KEY.to_string(),
                format::VERSION.to_string(),
            ),
            ("nodeboot-revision".to_string(), self.revision.to_string()),
            ("nodeboot-keys".to_string(), self.keys.to_string()),
            ("nodeboot-members".to_string(), self.members.to_string()),
            ("nodeboot-etcd-version".to_string(), self.etcd_version.clone()),
        ])
    }
}

/// The KMS encryption context of a backup object: the environment, what
/// it is, and the object key, so a backup cannot be read as a secret, as
/// another environment's, or under another name.
pub fn context(environment: &str, key: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("environment".to_string(), environment.to_string()),
        ("path".to_string(), key.to_string()),
        ("purpose".to_string(), PURPOSE.to_string()),
    ])
}

/// The context as associated data, encoded as format 1 encodes its own.
pub fn context_aad(context: &BTreeMap<String, String>) -> Vec<u8> {
    crate::shared::secrets::context_aad(context)
}

/// Splits a command given as one string (`"docker run ... etcdctl"`) into
/// program and arguments; no shell, no quoting.
pub fn words(command: &str) -> Vec<String> {
    command.split_whitespace().map(str::to_string).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_through_names_and_keys() {
        let id = BackupId {
            unix: 1_790_000_000,
            revision: 1234,
        };
        assert_eq!(id.name(), "20260921T141320Z-r1234");
        assert_eq!(id.key(), "backups/etcd/20260921T141320Z-r1234.snapshot");
        assert_eq!(BackupId::parse("20260921T141320Z-r1234"), Some(id.clone()));
        assert_eq!(BackupId::from_key(&id.key()), Some(id.clone()));
        assert_eq!(rfc3339(id.unix), "2026-09-21T14:13:20Z");
    }

    #[test]
    fn other_names_are_not_backups() {
        for bad in [
            "backups/etcd/restore/request",
            "backups/etcd/20260921T141320Z-r12.snapshot.tmp",
            "backups/etcd/x/20260921T141320Z-r12.snapshot",
            "backups/etcd/20260231T141320Z-r12.snapshot",
            "backups/etcd/20260921T141320Z-r-1.snapshot",
            "backups/etcd/20260921T141320Z-r+1.snapshot",
            "common/20260921T141320Z-r12.snapshot",
        ] {
            assert_eq!(BackupId::from_key(bad), None, "{bad}");
        }
    }

    #[test]
    fn keys_sort_by_time() {
        let a = BackupId {
            unix: 1_790_000_000,
            revision: 99,
        };
        let b = BackupId {
            unix: 1_790_000_001,
            revision: 1,
        };
        assert!(a.key() < b.key());
        assert!(a < b);
    }

    #[test]
    fn the_context_differs_from_a_secrets() {
        let ctx = context("prod", "backups/etcd/x.snapshot");
        assert_eq!(ctx["purpose"], "etcd-backup");
        let secret = crate::shared::secrets::Context {
            environment: "prod".into(),
            path: "backups/etcd/x.snapshot".into(),
        };
        assert_ne!(context_aad(&ctx), secret.aad());
    }
}
