//! Which backups to delete: a pure planner over one complete listing.
//!
//! The newest backup is always kept. Younger than `hourly_for`, the oldest
//! backup of each UTC hour is kept; younger than `daily_for`, the oldest of
//! each UTC day; older ones go. A listing that failed (or was cut short,
//! which `Objects::list` reports as a failure) deletes nothing; objects
//! under the prefix that are not backups (restore requests, foreign files)
//! are never touched; a backup dated in the future (a skewed clock) is kept.

use std::collections::BTreeSet;
use std::time::Duration;

use super::BackupId;

/// How long each tier keeps backups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    pub hourly_for: Duration,
    pub daily_for: Duration,
}

impl Default for Retention {
    /// etcd-manager's: hourly for 7 days, daily for a year.
    fn default() -> Self {
        Retention {
            hourly_for: Duration::from_secs(7 * 86_400),
            daily_for: Duration::from_secs(365 * 86_400),
        }
    }
}

/// The prune plan: object keys to delete, and why nothing when nothing.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PrunePlan {
    pub delete: Vec<String>,
    pub kept: usize,
    /// Set when the plan refused to delete anything.
    pub skipped: Option<String>,
}

/// `listing` is every key under the backup prefix, or why it could not be had.
pub fn plan(listing: Result<&[String], &str>, now_unix: i64, policy: Retention) -> PrunePlan {
    let keys = match listing {
        Ok(keys) => keys,
        Err(why) => {
            return PrunePlan {
                skipped: Some(format!("the listing failed ({why}); nothing is deleted")),
                ..Default::default()
            }
        }
    };
    let mut backups: Vec<(BackupId, &String)> = keys
        .iter()
        .filter_map(|k| BackupId::from_key(k).map(|id| (id, k)))
        .collect();
    backups.sort();
    let Some(newest) = backups.last().map(|(id, _)| id.clone()) else {
        return PrunePlan::default();
    };
    let mut hours = BTreeSet::new();
    let mut days = BTreeSet::new();
    let mut delete = Vec::new();
    // Oldest first, so each tier keeps the first backup of its hour or day:
    // a kept backup stays kept as newer ones arrive.
    for (id, key) in &backups {
        let age = now_unix - id.unix;
        // Both tiers see every backup they cover (no short circuit): a
        // backup kept as its hour's first also stands for its day.
        let hourly = age < policy.hourly_for.as_secs() as i64 && hours.insert(id.unix.div_euclid(3600));
        let daily = age < policy.daily_for.as_secs() as i64 && days.insert(id.unix.div_euclid(86_400));
        let keep = *id == newest || age < 0 || hourly || daily;
        if !keep {
            delete.push((*key).clone());
        }
    }
    PrunePlan {
        kept: backups.len() - delete.len(),
        delete,
        skipped: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // 2026-09-21T14:13:20Z: 13 min 20 s into an hour, 14 h 13 min into a day.
    const NOW: i64 = 1_790_000_000;
    const H: i64 = 3600;
    const D: i64 = 86_400;

    fn key(unix: i64) -> String {
        BackupId { unix, revision: 7 }.key()
    }

    fn ages(listing: &[i64], policy: Retention) -> Vec<i64> {
        let keys: Vec<String> = listing.iter().map(|age| key(NOW - age)).collect();
        let plan = plan(Ok(&keys), NOW, policy);
        plan.delete
            .iter()
            .map(|k| NOW - BackupId::from_key(k).unwrap().unix)
            .collect()
    }

    fn minutes(n: i64) -> i64 {
        n * 60
    }

    #[test]
    fn the_tiers_keep_one_per_hour_then_one_per_day() {
        let p = Retention::default();
        // (ages of the backups in the listing, ages that are deleted)
        let table: Vec<(Vec<i64>, Vec<i64>)> = vec![
            (vec![], vec![]),
            // one backup, however old, is the newest: kept
            (vec![400 * D], vec![]),
            // every 15 minutes within the current hour: all but the hour's first go, the newest stays
            (
                vec![0, minutes(15), minutes(30), minutes(45)],
                vec![minutes(15), minutes(30)],
            ),
            // hourly tier: the first of each clock hour
            (
                vec![minutes(5), 2 * H + minutes(5), 2 * H + minutes(10)],
                vec![2 * H + minutes(5)],
            ),
            // past 7 days: one per day
            (
                vec![0, 8 * D + minutes(1), 8 * D + 3 * H, 8 * D + 5 * H],
                vec![8 * D + minutes(1), 8 * D + 3 * H],
            ),
            // past a year: gone, unless it is the newest
            (vec![0, 366 * D, 500 * D], vec![366 * D, 500 * D]),
        ];
        for (listing, want) in table {
            let mut got = ages(&listing, p);
            got.sort();
            let mut want = want.clone();
            want.sort();
            assert_eq!(got, want, "listing {listing:?}");
        }
    }

    #[test]
    fn a_shorter_policy_is_honoured() {
        let p = Retention {
            hourly_for: Duration::from_secs(2 * 3600),
            daily_for: Duration::from_secs(3 * 86_400),
        };
        let deleted = ages(&[0, 3 * H, 4 * H, 4 * D], p);
        // 3 h ago is past the hourly tier and in the same day as 4 h ago, the day's first
        assert_eq!(deleted, vec![4 * D, 3 * H]);
    }

    #[test]
    fn the_newest_is_kept_even_when_every_tier_is_zero() {
        let p = Retention {
            hourly_for: Duration::ZERO,
            daily_for: Duration::ZERO,
        };
        assert_eq!(ages(&[10, 20, 30], p), vec![30, 20]);
    }

    #[test]
    fn a_failed_listing_deletes_nothing() {
        let plan = plan(
            Err("ListObjectsV2: a truncated page came without a continuation token"),
            NOW,
            Retention {
                hourly_for: Duration::ZERO,
                daily_for: Duration::ZERO,
            },
        );
        assert!(plan.delete.is_empty());
        assert!(plan.skipped.unwrap().contains("nothing is deleted"));
    }

    #[test]
    fn foreign_objects_and_future_backups_are_never_deleted() {
        let keys = vec![
            "backups/etcd/restore/request".to_string(),
            "backups/etcd/notes.txt".to_string(),
            key(NOW + 3 * H),
            key(NOW + 2 * H),
            key(NOW - 400 * D),
            key(NOW - 500 * D),
        ];
        let plan = plan(Ok(&keys), NOW, Retention::default());
        assert_eq!(plan.delete, vec![key(NOW - 500 * D), key(NOW - 400 * D)]);
        assert_eq!(plan.kept, 2);
    }
}
