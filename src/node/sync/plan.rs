//! The pure half of a sync: from a complete listing, the record of what
//! nodeboot placed, and what is on disk, the actions that make the
//! directory equal to the bucket. Never deletes a file nodeboot did not
//! place, nor one changed since it placed it.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::shared::secrets::ObjectPath;

/// A file name below the target directory (a checked relative path).
pub type Name = ObjectPath;

/// An object of a complete listing, under the name it gets locally.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remote {
    pub key: ObjectPath,
    pub etag: String,
}

/// What identifies one version of a local file without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stat {
    pub len: u64,
    pub mtime_ns: i128,
    pub inode: u64,
}

/// A file nodeboot wrote: from which object version, and how it looked
/// right after.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placed {
    pub key: String,
    pub etag: String,
    pub stat: Stat,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Get the object; write it unless the local file already has its bytes.
    Fetch { name: Name, key: ObjectPath },
    /// Remove a file nodeboot placed whose object is gone.
    Delete { name: Name },
    /// Stop tracking a file: gone already, or changed by someone else (it stays).
    Forget { name: Name, changed: bool },
}

/// `remote` must come from a complete listing: a caller with a failed or
/// partial one must not plan at all. `local` holds the files that exist,
/// among the names in `remote` and `record`.
pub fn plan(
    remote: &BTreeMap<Name, Remote>,
    record: &BTreeMap<Name, Placed>,
    local: &BTreeMap<Name, Stat>,
) -> Vec<Action> {
    let mut actions = Vec::new();
    for (name, object) in remote {
        let current = record
            .get(name)
            .is_some_and(|p| p.etag == object.etag && p.key == object.key.as_str() && local.get(name) == Some(&p.stat));
        if !current {
            actions.push(Action::Fetch {
                name: name.clone(),
                key: object.key.clone(),
            });
        }
    }
    for (name, placed) in record {
        if remote.contains_key(name) {
            continue;
        }
        actions.push(match local.get(name) {
            None => Action::Forget {
                name: name.clone(),
                changed: false,
            },
            Some(stat) if *stat == placed.stat => Action::Delete { name: name.clone() },
            Some(_) => Action::Forget {
                name: name.clone(),
                changed: true,
            },
        });
    }
    actions
}

pub use crate::shared::secrets::layout::EMPTY_MARKER;

/// How many files `actions` would remove although the listing is empty and
/// unmarked: an accidental `manifests upload --prune` with an empty
/// directory must not take a whole control plane down within one interval.
/// `None` when the plan may go ahead.
pub fn refused_to_empty(remote: &BTreeMap<Name, Remote>, marked: bool, actions: &[Action]) -> Option<usize> {
    let deletes = actions.iter().filter(|a| matches!(a, Action::Delete { .. })).count();
    (remote.is_empty() && !marked && deletes > 0).then_some(deletes)
}

/// The names whose local state the planner needs.
pub fn names_to_stat<'a>(remote: &'a BTreeMap<Name, Remote>, record: &'a BTreeMap<Name, Placed>) -> BTreeSet<&'a Name> {
    remote.keys().chain(record.keys()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn name(s: &str) -> Name {
        ObjectPath::parse(s).unwrap()
    }

    fn stat(n: u64) -> Stat {
        Stat {
            len: n,
            mtime_ns: n as i128 * 1000,
            inode: n,
        }
    }

    fn remote(entries: &[(&str, &str)]) -> BTreeMap<Name, Remote> {
        entries
            .iter()
            .map(|(n, e)| {
                (
                    name(n),
                    Remote {
                        key: name(&format!("manifests/etcd/{n}")),
                        etag: e.to_string(),
                    },
                )
            })
            .collect()
    }

    fn placed(entries: &[(&str, &str, u64)]) -> BTreeMap<Name, Placed> {
        entries
            .iter()
            .map(|(n, e, s)| {
                (
                    name(n),
                    Placed {
                        key: format!("manifests/etcd/{n}"),
                        etag: e.to_string(),
                        stat: stat(*s),
                    },
                )
            })
            .collect()
    }

    fn local(entries: &[(&str, u64)]) -> BTreeMap<Name, Stat> {
        entries.iter().map(|(n, s)| (name(n), stat(*s))).collect()
    }

    #[test]
    fn an_unchanged_bucket_needs_nothing() {
        let actions = plan(
            &remote(&[("a.yaml", "e1")]),
            &placed(&[("a.yaml", "e1", 1)]),
            &local(&[("a.yaml", 1)]),
        );
        assert!(actions.is_empty(), "{actions:?}");
    }

    #[test]
    fn new_and_changed_objects_and_touched_files_are_fetched() {
        let actions = plan(
            &remote(&[
                ("new.yaml", "e1"),
                ("changed.yaml", "e2"),
                ("touched.yaml", "e3"),
                ("gone-locally.yaml", "e4"),
            ]),
            &placed(&[
                ("changed.yaml", "e1", 2),
                ("touched.yaml", "e3", 3),
                ("gone-locally.yaml", "e4", 4),
            ]),
            &local(&[("changed.yaml", 2), ("touched.yaml", 30)]),
        );
        let fetched: Vec<&str> = actions
            .iter()
            .map(|a| match a {
                Action::Fetch { name, .. } => name.as_str(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            fetched,
            ["changed.yaml", "gone-locally.yaml", "new.yaml", "touched.yaml"]
        );
    }

    #[test]
    fn only_placed_unchanged_files_are_deleted() {
        let actions = plan(
            &remote(&[]),
            &placed(&[
                ("ours.yaml", "e1", 1),
                ("edited.yaml", "e2", 2),
                ("vanished.yaml", "e3", 3),
            ]),
            &local(&[("ours.yaml", 1), ("edited.yaml", 20), ("admins.yaml", 9)]),
        );
        assert_eq!(
            actions,
            [
                Action::Forget {
                    name: name("edited.yaml"),
                    changed: true
                },
                Action::Delete {
                    name: name("ours.yaml")
                },
                Action::Forget {
                    name: name("vanished.yaml"),
                    changed: false
                },
            ]
        );
    }

    #[test]
    fn an_empty_listing_empties_the_directory_only_when_marked() {
        let record = placed(&[("a.yaml", "e1", 1), ("b.yaml", "e2", 2)]);
        let local = local(&[("a.yaml", 1), ("b.yaml", 2)]);
        let actions = plan(&remote(&[]), &record, &local);
        assert_eq!(refused_to_empty(&remote(&[]), false, &actions), Some(2));
        assert_eq!(refused_to_empty(&remote(&[]), true, &actions), None);
        let one_left = remote(&[("a.yaml", "e1")]);
        assert_eq!(
            refused_to_empty(&one_left, false, &plan(&one_left, &record, &local)),
            None,
            "not emptied: deletes go ahead"
        );
        let nothing_placed = plan(&remote(&[]), &BTreeMap::new(), &local);
        assert_eq!(refused_to_empty(&remote(&[]), false, &nothing_placed), None);
    }

    fn any_state() -> impl Strategy<Value = (BTreeMap<Name, Remote>, BTreeMap<Name, Placed>, BTreeMap<Name, Stat>)> {
        let names = prop::sample::select(vec!["a", "b", "c", "d", "e"]);
        (
            prop::collection::btree_map(names.clone(), 0u8..3, 0..5),
            prop::collection::btree_map(names.clone(), (0u8..3, 0u64..3), 0..5),
            prop::collection::btree_map(names, 0u64..3, 0..5),
        )
            .prop_map(|(r, p, l)| {
                let remote = r
                    .into_iter()
                    .map(|(n, e)| {
                        (
                            name(n),
                            Remote {
                                key: name(&format!("m/{n}")),
                                etag: e.to_string(),
                            },
                        )
                    })
                    .collect();
                let placed = p
                    .into_iter()
                    .map(|(n, (e, s))| {
                        (
                            name(n),
                            Placed {
                                key: format!("m/{n}"),
                                etag: e.to_string(),
                                stat: stat(s),
                            },
                        )
                    })
                    .collect();
                let local = l.into_iter().map(|(n, s)| (name(n), stat(s))).collect();
                (remote, placed, local)
            })
    }

    /// Plays a plan: fetched files get a fresh stat and are recorded,
    /// deleted and forgotten ones leave the record.
    fn apply(
        actions: &[Action],
        remote: &BTreeMap<Name, Remote>,
        record: &mut BTreeMap<Name, Placed>,
        local: &mut BTreeMap<Name, Stat>,
        next: &mut u64,
    ) {
        for action in actions {
            match action {
                Action::Fetch { name, key } => {
                    *next += 1;
                    local.insert(name.clone(), stat(*next));
                    record.insert(
                        name.clone(),
                        Placed {
                            key: key.to_string(),
                            etag: remote[name].etag.clone(),
                            stat: stat(*next),
                        },
                    );
                }
                Action::Delete { name } => {
                    local.remove(name);
                    record.remove(name);
                }
                Action::Forget { name, .. } => {
                    record.remove(name);
                }
            }
        }
    }

    proptest! {
        #[test]
        fn never_deletes_a_file_it_did_not_place_or_that_changed((remote, record, local) in any_state()) {
            for action in plan(&remote, &record, &local) {
                if let Action::Delete { name } = action {
                    prop_assert!(!remote.contains_key(&name));
                    prop_assert_eq!(Some(&record[&name].stat), local.get(&name));
                }
            }
        }

        #[test]
        fn one_pass_converges_and_the_next_does_nothing((remote, mut record, mut local) in any_state()) {
            let mut next = 100;
            let first = plan(&remote, &record, &local);
            apply(&first, &remote, &mut record, &mut local, &mut next);
            prop_assert!(plan(&remote, &record, &local).is_empty());
            for n in remote.keys() {
                prop_assert!(local.contains_key(n));
            }
            for n in record.keys() {
                prop_assert!(remote.contains_key(n));
            }
        }
    }
}
