//! Which backups to delete: a pure planner over one complete listing.
//!
//! Ages are the bucket's: each object's `LastModified`, measured from the
//! newest `LastModified` of the listing (the backup the pruning pass has
//! just written), never from the pruning node's clock or from the time in
//! a backup's name (the taking node's clock): a node whose clock runs
//! ahead prunes nothing early, and a backup named in the future is as old
//! as it is.
//!
//! The newest backup (the highest revision: backups are ordered by the
//! cluster's revision) is always kept. Younger than `hourly_for`, the oldest
//! backup of each UTC hour is kept; younger than `daily_for`, the oldest of
//! each UTC day; older ones go. A listing that failed (or was cut short,
//! which the listing reports as a failure) deletes nothing; objects under
//! the prefix that are not backups (restore requests, foreign files) are
//! never touched.

use std::collections::BTreeSet;
use std::time::Duration;

use super::BackupId;
use crate::shared::cloud::DatedObject;

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

/// The order of backups: by the cluster's revision, then by when the
/// bucket stored them. The last is the newest.
pub fn order(id: &BackupId, stored_unix: i64) -> (i64, i64, i64) {
    (id.revision, stored_unix, id.unix)
}

/// `listing` is every object under the backup prefix with its
/// `LastModified`, or why it could not be had.
pub fn plan(listing: Result<&[DatedObject], &str>, policy: Retention) -> PrunePlan {
    let objects = match listing {
        Ok(objects) => objects,
        Err(why) => {
            return PrunePlan {
                skipped: Some(format!("the listing failed ({why}); nothing is deleted")),
                ..Default::default()
            }
        }
    };
    let backups: Vec<(BackupId, &DatedObject)> = objects
        .iter()
        .filter_map(|o| BackupId::from_key(&o.key).map(|id| (id, o)))
        .collect();
    let Some(newest) = backups
        .iter()
        .max_by_key(|(id, o)| order(id, o.stored_unix))
        .map(|(_, o)| o.key.clone())
    else {
        return PrunePlan::default();
    };
    let now = backups.iter().map(|(_, o)| o.stored_unix).max().unwrap_or_default();
    let mut by_age: Vec<&(BackupId, &DatedObject)> = backups.iter().collect();
    by_age.sort_by_key(|(id, o)| (o.stored_unix, order(id, o.stored_unix)));
    let mut hours = BTreeSet::new();
    let mut days = BTreeSet::new();
    let mut delete = Vec::new();
    // Oldest first, so each tier keeps the first backup of its hour or day:
    // a kept backup stays kept as newer ones arrive.
    for (_, o) in by_age {
        let age = now - o.stored_unix;
        // Both tiers see every backup they cover (no short circuit): a
        // backup kept as its hour's first also stands for its day.
        let hourly = age < policy.hourly_for.as_secs() as i64 && hours.insert(o.stored_unix.div_euclid(3600));
        let daily = age < policy.daily_for.as_secs() as i64 && days.insert(o.stored_unix.div_euclid(86_400));
        let keep = o.key == newest || hourly || daily;
        if !keep {
            delete.push(o.key.clone());
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

    /// A backup stored at `stored`, named by a clock `skew` seconds off, at `revision`.
    fn object(stored: i64, skew: i64, revision: i64) -> DatedObject {
        DatedObject {
            key: BackupId {
                unix: stored + skew,
                revision,
            }
            .key(),
            size: 1,
            stored_unix: stored,
        }
    }

    /// Ages (by the bucket) of the deleted backups; the newest is stored `NOW`.
    fn ages(listing: &[i64], policy: Retention) -> Vec<i64> {
        let mut objects: Vec<DatedObject> = listing.iter().map(|age| object(NOW - age, 0, 7)).collect();
        if !listing.contains(&0) {
            objects.push(object(NOW, 0, 7));
        }
        let plan = plan(Ok(&objects), policy);
        let mut got: Vec<i64> = plan
            .delete
            .iter()
            .map(|k| NOW - objects.iter().find(|o| &o.key == k).unwrap().stored_unix)
            .collect();
        got.sort();
        got
    }

    fn minutes(n: i64) -> i64 {
        n * 60
    }

    #[test]
    fn the_tiers_keep_one_per_hour_then_one_per_day() {
        let p = Retention::default();
        // (ages of the backups in the listing besides one stored now, ages that are deleted)
        let table: Vec<(Vec<i64>, Vec<i64>)> = vec![
            (vec![], vec![]),
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
                vec![8 * D + 3 * H, 8 * D + minutes(1)],
            ),
            // past a year: gone
            (vec![0, 366 * D, 500 * D], vec![366 * D, 500 * D]),
        ];
        for (listing, want) in table {
            let mut want = want.clone();
            want.sort();
            assert_eq!(ages(&listing, p), want, "listing {listing:?}");
        }
    }

    #[test]
    fn a_shorter_policy_is_honoured() {
        let p = Retention {
            hourly_for: Duration::from_secs(2 * 3600),
            daily_for: Duration::from_secs(3 * 86_400),
        };
        // 3 h ago is past the hourly tier and in the same day as 4 h ago, the day's first
        assert_eq!(ages(&[0, 3 * H, 4 * H, 4 * D], p), vec![3 * H, 4 * D]);
    }

    #[test]
    fn the_newest_by_revision_is_kept_even_when_every_tier_is_zero() {
        let p = Retention {
            hourly_for: Duration::ZERO,
            daily_for: Duration::ZERO,
        };
        let objects = [object(NOW - 30, 0, 9), object(NOW - 20, 0, 8), object(NOW, 0, 7)];
        let plan = plan(Ok(&objects), p);
        assert_eq!(plan.delete, vec![objects[1].key.clone(), objects[2].key.clone()]);
    }

    #[test]
    fn a_failed_listing_deletes_nothing() {
        let plan = plan(
            Err("ListObjectsV2: a truncated page came without a continuation token"),
            Retention {
                hourly_for: Duration::ZERO,
                daily_for: Duration::ZERO,
            },
        );
        assert!(plan.delete.is_empty());
        assert!(plan.skipped.unwrap().contains("nothing is deleted"));
    }

    #[test]
    fn ages_are_the_buckets_not_the_names() {
        // Names from clocks a day ahead and a year behind: the bucket stored
        // all three this hour, so the hourly tier sees one hour's backups.
        let objects = [
            object(NOW - minutes(12), D, 7),
            object(NOW - minutes(6), -365 * D, 8),
            object(NOW, 0, 9),
        ];
        let plan = plan(Ok(&objects), Retention::default());
        assert_eq!(
            plan.delete,
            vec![objects[1].key.clone()],
            "the hour's first and the newest stay"
        );
        // A backup named in the future is as old as the bucket says: past a
        // year it goes like any other.
        let old_future = [object(NOW - 400 * D, 800 * D, 7), object(NOW, 0, 9)];
        assert_eq!(plan_keys(&old_future), vec![old_future[0].key.clone()]);
    }

    fn plan_keys(objects: &[DatedObject]) -> Vec<String> {
        plan(Ok(objects), Retention::default()).delete
    }

    #[test]
    fn foreign_objects_are_never_deleted() {
        let mut objects: Vec<DatedObject> = ["backups/etcd/restore/request", "backups/etcd/notes.txt"]
            .iter()
            .map(|k| DatedObject {
                key: k.to_string(),
                size: 1,
                stored_unix: NOW - 500 * D,
            })
            .collect();
        objects.push(object(NOW - 400 * D, 0, 5));
        objects.push(object(NOW, 0, 9));
        let plan = plan(Ok(&objects), Retention::default());
        assert_eq!(plan.delete, vec![objects[2].key.clone()]);
        assert_eq!(plan.kept, 1);
    }
}
