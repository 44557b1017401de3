//! When credentials end, and what nodeboot does about it. Pure: the
//! thresholds every command applies (`pki`, `up`, `etcd status`) and where a
//! new etcd member certificate ends, table-tested below.
//!
//! The members' certificates must not end on one day (kops#12620: issued
//! together, they all ended together and the whole cluster stopped at once).
//! A member certificate therefore ends at least [`gap`] away from every
//! other member certificate that stays; a cluster whose operator renews late
//! loses one member first, with quorum kept, not all of them.

use time::{Duration, OffsetDateTime};

/// `pki`, `pki --output` and `up` warn about what ends within this many days
/// (ten more than [`RENEW_DAYS`]: the run before a renewal says what is coming).
pub const WARN_DAYS: i64 = 45;
/// `pki --renew` and every `up` issue again what ends within this many days:
/// more than a month (31 days) with four days to spare, so an operator who
/// runs `up` monthly renews everything before it ends.
pub const RENEW_DAYS: i64 = 35;
/// `etcd status` fails (exit 32) when a certificate it sees ends within this many days.
pub const STATUS_FAIL_DAYS: i64 = 14;

/// What a credential's end calls for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Due {
    /// More than `WARN_DAYS` left.
    Ok,
    /// Within `WARN_DAYS`: said by every `pki` and `up`.
    Warn,
    /// Within `RENEW_DAYS`: `up` (and `pki --renew`) issue it again.
    Renew,
    /// Already ended.
    Ended,
}

impl Due {
    pub fn of(days_left: i64) -> Due {
        match days_left {
            d if d < 0 => Due::Ended,
            d if d < RENEW_DAYS => Due::Renew,
            d if d < WARN_DAYS => Due::Warn,
            _ => Due::Ok,
        }
    }

    /// The word the listings print (the JSON's too).
    pub fn as_str(self) -> &'static str {
        match self {
            Due::Ok => "ok",
            Due::Warn => "warn",
            Due::Renew => "renew",
            Due::Ended => "ended",
        }
    }
}

/// Whole days from `now` to `end`, rounded down (negative once it ended).
pub fn days_between(now: OffsetDateTime, end: OffsetDateTime) -> i64 {
    (end.unix_timestamp() - now.unix_timestamp()).div_euclid(86_400)
}

/// How far apart member certificates end: a week for a year's validity,
/// proportionally less for a shorter one (the lab's test validity of
/// minutes keeps every end within it).
pub fn gap(validity: Duration) -> Duration {
    (validity / 50_i32).min(Duration::days(7))
}

/// Where a member certificate issued at `now` for `validity` ends: the full
/// validity if no other member's certificate (`others`, those that stay)
/// ends within [`gap`] of it, else earlier in steps of the gap, the first
/// end that is clear. "Within" allows 1 % of a gap, the moments between
/// certificates issued one after the other. Among `2 * others + 1` steps one
/// is always clear (each other end rules out at most two), so a certificate
/// loses at most `2 * (members - 1)` gaps: 8 weeks of a year with five members.
pub fn member_end(now: OffsetDateTime, validity: Duration, others: &[OffsetDateTime]) -> OffsetDateTime {
    let step = gap(validity);
    let clearance = step - step / 100_i32;
    let clear = |end: OffsetDateTime| others.iter().all(|o| (*o - end).abs() >= clearance);
    (0..=2 * others.len() as i32)
        .map(|k| now + validity - step * k)
        .find(|end| clear(*end))
        .unwrap_or(now + validity)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(days: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap() + Duration::days(days)
    }

    #[test]
    fn what_an_end_calls_for() {
        for (days, due) in [
            (365, Due::Ok),
            (45, Due::Ok),
            (44, Due::Warn),
            (35, Due::Warn),
            (34, Due::Renew),
            (31, Due::Renew),
            (20, Due::Renew),
            (0, Due::Renew),
            (-1, Due::Ended),
        ] {
            assert_eq!(Due::of(days), due, "{days} days");
        }
        assert_eq!(days_between(at(0), at(10) - Duration::seconds(1)), 9);
        assert_eq!(days_between(at(0), at(0) - Duration::seconds(1)), -1);
    }

    #[test]
    fn members_issued_together_end_a_week_apart() {
        let year = Duration::days(365);
        let mut ends = Vec::new();
        for _ in 0..5 {
            let end = member_end(at(0), year, &ends);
            ends.push(end);
        }
        assert_eq!(ends, [at(365), at(358), at(351), at(344), at(337)]);
    }

    #[test]
    fn a_member_renewed_alone_keeps_clear_of_the_others() {
        let year = Duration::days(365);
        // Renewed 7 days after another member was: the full year would end
        // on the other's day, so it ends a week earlier.
        assert_eq!(member_end(at(7), year, &[at(372)]), at(365));
        // Clear of both neighbours within a gap, either side.
        assert_eq!(member_end(at(0), year, &[at(367), at(361)]), at(351));
        // Nothing near: the full validity.
        assert_eq!(member_end(at(0), year, &[at(300), at(200)]), at(365));
        // Issued a moment after another (the same run): still a week apart.
        let moment = Duration::seconds(2);
        assert_eq!(member_end(at(0) + moment, year, &[at(365)]), at(358) + moment);
    }

    #[test]
    fn every_member_end_is_a_gap_from_every_other_whatever_the_others() {
        let year = Duration::days(365);
        // Any set of other ends, on and off the grid: the end found is clear
        // of each and no earlier than 2 * others gaps.
        for seed in 0..2_000i64 {
            let others: Vec<OffsetDateTime> = (0..4)
                .map(|i| at(300 + (seed * 7919 + i * 104_729) % 70) + Duration::hours((seed * 31 + i) % 24))
                .collect();
            let end = member_end(at(0), year, &others);
            assert!(
                others.iter().all(|o| (*o - end).abs() >= gap(year) * 0.99),
                "{seed}: {end} near {others:?}"
            );
            assert!(end >= at(365) - gap(year) * 8, "{seed}: {end}");
        }
    }

    #[test]
    fn a_test_validity_of_minutes_staggers_within_it() {
        let two_minutes = Duration::minutes(2);
        assert_eq!(gap(two_minutes), Duration::milliseconds(2_400));
        let first = member_end(at(0), two_minutes, &[]);
        let second = member_end(at(0), two_minutes, &[first]);
        assert_eq!(first - second, Duration::milliseconds(2_400));
    }
}
