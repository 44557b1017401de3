//! The pure half of polling: when a pass may plan from the listing it made
//! before instead of listing again, and when the passes happen.
//!
//! A node remembers, per prefix, the last listing whose index described it
//! exactly (`Seen`). A pass asks for the index with `If-None-Match` and that
//! index's ETag; only a 304 (the index unchanged), a remembered listing
//! younger than `FULL_LISTING_EVERY` and a plan that deletes nothing let it
//! skip the LIST. Anything else (the index changed, is missing, unreadable,
//! or did not describe the last listing; an old listing; a delete) lists,
//! as every pass did before the index existed. Why the index needs no
//! authentication: `shared::secrets::index`.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::shared::secrets::index::{Entry, Index};

/// A full listing at least this often, whatever the index says: a writer
/// that keeps no index (an older nodeboot, another tool) changing a prefix
/// whose index stays the same is seen within this time. At a pass every
/// 10 s, one LIST an hour costs 1/29 of the conditional GETs it rides on.
pub const FULL_LISTING_EVERY: Duration = Duration::from_secs(3600);

/// What a node remembers about a prefix whose index described its listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seen {
    /// The ETag of the index that described `listing`.
    pub index_etag: String,
    /// When `listing` was made (seconds since the epoch).
    pub listed_at: u64,
    /// The complete listing, as the index holds it.
    pub listing: Vec<Entry>,
}

/// What the conditional GET of a prefix's index answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IndexAnswer {
    /// 304: the index still has the ETag the node sent.
    NotModified,
    /// The index, changed (or asked for without a condition).
    Changed { etag: String, index: Index },
    /// No index: a bucket an older nodeboot or another tool wrote.
    Missing,
    /// Not an index, too large, or it could not be read.
    Unreadable(String),
}

/// The ETag to send with `If-None-Match`: the remembered index's, if any.
pub fn condition(seen: Option<&Seen>) -> Option<&str> {
    seen.map(|s| s.index_etag.as_str())
}

/// The remembered listing, when this pass may plan from it: the index is
/// unchanged since it described that listing, the listing is younger than
/// `FULL_LISTING_EVERY` (a clock that went back makes it old), and the
/// caller does not need a listing of its own (`relist`: a plan that deletes).
pub fn cached<'a>(seen: Option<&'a Seen>, answer: &IndexAnswer, now: u64, relist: bool) -> Option<&'a [Entry]> {
    let seen = seen?;
    let young = now
        .checked_sub(seen.listed_at)
        .is_some_and(|age| age < FULL_LISTING_EVERY.as_secs());
    (*answer == IndexAnswer::NotModified && young && !relist).then_some(seen.listing.as_slice())
}

/// What to remember after a listing: `Some` only when an index describes
/// it exactly (the one just read, or the remembered one if the answer was
/// 304), so that the next pass may trust a 304. `None` makes every pass
/// list until an upload writes an index that describes the prefix.
pub fn after_listing(seen: Option<&Seen>, answer: &IndexAnswer, listing: Vec<Entry>, now: u64) -> Option<Seen> {
    let index_etag = match answer {
        IndexAnswer::Changed { etag, index } if index.objects == listing => etag.clone(),
        IndexAnswer::NotModified => seen.filter(|s| s.listing == listing)?.index_etag.clone(),
        _ => return None,
    };
    Some(Seen {
        index_etag,
        listed_at: now,
        listing,
    })
}

/// When the passes of a long-running sync happen: the first at once (a
/// booting node wants its files), the second after `phase` × `interval`
/// (`phase` drawn uniformly from [0, 1) per process), then one every
/// `interval`. The random phase is the jitter: a fleet started in the same
/// second (an instance refresh, a restart of every node) polls spread over
/// the interval and stays spread, since every node keeps the same period.
/// Jitter on each wait instead would either stretch some waits past the
/// interval (a change could take longer than `interval` to reach a node)
/// or shorten them all (more requests); this keeps both as they were.
pub fn first_wait(interval: Duration, phase: f64) -> Duration {
    interval.mul_f64(phase.clamp(0.0, 1.0)).min(interval)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn entry(key: &str, etag: &str) -> Entry {
        Entry {
            key: key.into(),
            etag: etag.into(),
            size: 1,
        }
    }

    fn index(objects: &[Entry]) -> Index {
        Index {
            format: 1,
            generation: "g".into(),
            objects: objects.to_vec(),
        }
    }

    fn seen(listing: &[Entry], listed_at: u64) -> Seen {
        Seen {
            index_etag: "\"i1\"".into(),
            listed_at,
            listing: listing.to_vec(),
        }
    }

    const HOUR: u64 = 3600;

    #[test]
    fn an_unchanged_index_reuses_the_listing_it_described_for_an_hour() {
        let listing = [entry("m/a", "1")];
        let s = seen(&listing, 1000);
        assert_eq!(condition(Some(&s)), Some("\"i1\""));
        let not_modified = IndexAnswer::NotModified;
        assert_eq!(cached(Some(&s), &not_modified, 1000, false), Some(&listing[..]));
        assert_eq!(
            cached(Some(&s), &not_modified, 1000 + HOUR - 1, false),
            Some(&listing[..])
        );
        assert_eq!(cached(Some(&s), &not_modified, 1000 + HOUR, false), None, "an hour old");
        assert_eq!(cached(Some(&s), &not_modified, 999, false), None, "the clock went back");
        assert_eq!(
            cached(Some(&s), &not_modified, 1000, true),
            None,
            "a plan that deletes lists"
        );
    }

    #[test]
    fn anything_but_a_304_on_a_remembered_listing_lists() {
        let listing = [entry("m/a", "1")];
        let s = seen(&listing, 1000);
        let changed = IndexAnswer::Changed {
            etag: "\"i2\"".into(),
            index: index(&listing),
        };
        for answer in [changed, IndexAnswer::Missing, IndexAnswer::Unreadable("x".into())] {
            assert_eq!(cached(Some(&s), &answer, 1000, false), None, "{answer:?}");
        }
        assert_eq!(condition(None), None);
        assert_eq!(
            cached(None, &IndexAnswer::NotModified, 1000, false),
            None,
            "a 304 to a GET that sent no condition proves nothing"
        );
    }

    #[test]
    fn only_an_index_that_describes_the_listing_is_remembered() {
        let listing = vec![entry("m/a", "1"), entry("m/b", "2")];
        let matching = IndexAnswer::Changed {
            etag: "\"i2\"".into(),
            index: index(&listing),
        };
        assert_eq!(
            after_listing(None, &matching, listing.clone(), 5),
            Some(Seen {
                index_etag: "\"i2\"".into(),
                listed_at: 5,
                listing: listing.clone()
            })
        );
        let stale = IndexAnswer::Changed {
            etag: "\"i2\"".into(),
            index: index(&listing[..1]),
        };
        assert_eq!(after_listing(None, &stale, listing.clone(), 5), None);
        assert_eq!(after_listing(None, &IndexAnswer::Missing, listing.clone(), 5), None);
        assert_eq!(
            after_listing(None, &IndexAnswer::Unreadable("x".into()), listing.clone(), 5),
            None
        );
        // A listing on a 304 (an hour on, or a plan that deletes): the
        // remembered index still describes it, or nothing is remembered.
        let s = seen(&listing, 1);
        assert_eq!(
            after_listing(Some(&s), &IndexAnswer::NotModified, listing.clone(), 5),
            Some(seen(&listing, 5))
        );
        assert_eq!(
            after_listing(Some(&s), &IndexAnswer::NotModified, listing[..1].to_vec(), 5),
            None,
            "changed behind an unchanged index"
        );
        assert_eq!(after_listing(None, &IndexAnswer::NotModified, listing, 5), None);
    }

    #[test]
    fn the_first_wait_is_a_phase_of_one_interval() {
        let i = Duration::from_secs(10);
        assert_eq!(first_wait(i, 0.0), Duration::ZERO);
        assert_eq!(first_wait(i, 0.25), Duration::from_millis(2500));
        assert_eq!(first_wait(i, 1.5), i, "never more than the interval");
        assert_eq!(first_wait(i, -1.0), Duration::ZERO);
    }

    /// A prefix as a sequence of events: writers change objects (with or
    /// without writing the index afterwards), time passes, the node polls.
    #[derive(Debug, Clone)]
    enum Event {
        /// An object changes; `indexed`: the writer then rewrites the index.
        Write {
            object: u8,
            indexed: bool,
        },
        /// An index-keeping writer's upload that changed nothing.
        Reindex,
        Pass {
            minutes: u64,
            deletes: bool,
        },
    }

    fn any_event() -> impl Strategy<Value = Event> {
        prop_oneof![
            (0u8..4, any::<bool>()).prop_map(|(object, indexed)| Event::Write { object, indexed }),
            Just(Event::Reindex),
            (0u64..40, any::<bool>()).prop_map(|(minutes, deletes)| Event::Pass { minutes, deletes }),
        ]
    }

    proptest! {
        /// The bucket's side plays S3 (the index's ETag changes with every
        /// write) and the node's side plays `sync::observe` with the
        /// functions above. Whatever the events: a pass sees the bucket as it
        /// is whenever the last writer kept the index (and always within
        /// FULL_LISTING_EVERY of a change), and never plans from a listing
        /// older than that.
        #[test]
        fn a_pass_sees_every_indexed_change_and_every_change_within_the_hour(
            events in prop::collection::vec(any_event(), 1..60)
        ) {
            let mut objects = [0u32; 4];
            let mut index_objects: Option<Vec<Entry>> = None;
            let mut index_etag = 0u32;
            let mut now = 10_000u64;
            let mut seen: Option<Seen> = None;
            // When the bucket last changed without its index following.
            let mut unindexed_since: Option<u64> = None;
            let listing = |objects: &[u32; 4]| -> Vec<Entry> {
                objects.iter().enumerate().map(|(i, v)| entry(&format!("m/{i}"), &v.to_string())).collect()
            };
            for event in events {
                match event {
                    Event::Write { object, indexed } => {
                        objects[object as usize] += 1;
                        if indexed {
                            index_objects = Some(listing(&objects));
                            index_etag += 1;
                            unindexed_since = None;
                        } else {
                            unindexed_since.get_or_insert(now);
                        }
                    }
                    Event::Reindex => {
                        if index_objects.as_ref() != Some(&listing(&objects)) {
                            index_objects = Some(listing(&objects));
                            index_etag += 1;
                            unindexed_since = None;
                        }
                    }
                    Event::Pass { minutes, deletes } => {
                        now += minutes * 60;
                        let etag = format!("\"{index_etag}\"");
                        let answer = match &index_objects {
                            None => IndexAnswer::Missing,
                            Some(_) if condition(seen.as_ref()) == Some(etag.as_str()) => IndexAnswer::NotModified,
                            Some(o) => IndexAnswer::Changed { etag, index: index(o) },
                        };
                        let view = match cached(seen.as_ref(), &answer, now, deletes) {
                            Some(entries) => {
                                prop_assert!(now - seen.as_ref().unwrap().listed_at < FULL_LISTING_EVERY.as_secs());
                                entries.to_vec()
                            }
                            None => {
                                let fresh = listing(&objects);
                                seen = after_listing(seen.as_ref(), &answer, fresh.clone(), now);
                                fresh
                            }
                        };
                        let current = listing(&objects);
                        if unindexed_since.is_none() || deletes {
                            prop_assert_eq!(&view, &current, "an indexed change missed");
                        }
                        if let Some(since) = unindexed_since {
                            if now - since >= FULL_LISTING_EVERY.as_secs() {
                                prop_assert_eq!(&view, &current, "an unindexed change missed for an hour");
                            }
                        }
                    }
                }
            }
        }
    }
}
