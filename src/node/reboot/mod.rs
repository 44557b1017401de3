//! OS updates never take etcd's quorum down: at most one etcd node reboots
//! at a time (`nodeboot reboot-coordinator`, `nodeboot-reboot.service` on
//! etcd nodes).
//!
//! Flatcar's update_engine stages an update; locksmithd would reboot at
//! once, on every node that staged it. The rendered
//! `/etc/flatcar/update.conf` of etcd nodes says `REBOOT_STRATEGY=off`, and
//! this service reboots instead, under the etcd lock `disruption` (one
//! holder, see `etcd::lock`; the secrets sync's restarts, the space
//! maintenance and `roll` take the same) and only while
//! `shared::etcd::disruption` says its member may go (no learner, every
//! other voter answers, one leader, a caught-up quorum without it), asked
//! again under the lock. Before it reboots it writes a marker on disk;
//! after the boot (the service starts after etcd-member.service) the
//! marker says "I hold the lock": it looks every second until this member
//! is back (a voter with the leader, within a small revision gap of it),
//! then releases the lock and removes the marker. The lock's lease
//! outlives a reboot; if the node never comes back the lease frees the
//! lock, and the rule still keeps the next node from rebooting while a
//! member is down.
//!
//! A reboot is needed when update_engine says so
//! (`update_engine_client -status` prints `UPDATE_STATUS_UPDATED_NEED_REBOOT`)
//! or the sentinel file `/run/reboot-required` exists (the convention of
//! Debian and kured; an operator can ask for a coordinated reboot with it).

#[cfg(feature = "aws")]
pub mod coordinator;

/// Why the reboot coordinator cannot observe or act; each kind has its own exit code.
#[derive(Debug, thiserror::Error)]
pub enum RebootError {
    /// This member's claim, etcd configuration or certificates (the etcd stage's files).
    #[error(transparent)]
    Etcd(#[from] crate::node::stage::etcd::EtcdError),
    /// The marker or the boot token.
    #[error("{path}: {source}")]
    File {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    /// Taking or releasing the lock: etcd did not answer.
    #[error("{0}")]
    Lock(String),
    /// The reboot command could not run or failed.
    #[error("{command}: {detail}")]
    Command { command: String, detail: String },
}

use serde::{Deserialize, Serialize};

/// What the coordinator sees on one pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    /// update_engine or the sentinel asks for a reboot.
    pub needed: bool,
    /// The marker this node wrote before it rebooted under the lock.
    pub marker: Option<Marker>,
    /// This boot's id (a token in /run, which every boot starts empty): a
    /// marker of another boot means the reboot happened.
    pub boot_id: String,
    /// Who holds the lock now (None: free).
    pub holder: Option<String>,
    /// `shared::etcd::disruption`: this member may be disrupted now, or why not.
    pub safe: Result<(), String>,
    /// This member is back: a voter with the leader, caught up.
    pub me_back: bool,
}

/// Written on disk before the reboot, read after it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Marker {
    pub holder: String,
    pub unix: i64,
    /// The boot it was written in.
    pub boot_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Nothing,
    Wait(String),
    /// Write the marker, take the lock, reboot.
    Reboot,
    /// Back from our reboot and healthy, or no reboot wanted any more:
    /// release the lock (if it is ours) and remove the marker.
    Release,
}

/// Pure: what to do now, as `me`.
pub fn plan(o: &Observed, me: &str) -> Action {
    let rebooted = o.marker.as_ref().is_some_and(|m| m.boot_id != o.boot_id);
    if rebooted {
        return if o.me_back {
            Action::Release
        } else {
            Action::Wait(format!(
                "{me} rebooted; waiting until it is back (a voter with the leader, caught up) before the next disruption"
            ))
        };
    }
    // A marker of this boot: a run killed (or a race lost) between the
    // marker and the reboot; what follows decides as if it were not there.
    if !o.needed {
        // Ours, or a marker left: the reboot is no longer wanted.
        return if o.holder.as_deref() == Some(me) || o.marker.is_some() {
            Action::Release
        } else {
            Action::Nothing
        };
    }
    match o.holder.as_deref() {
        Some(other) if other != me => Action::Wait(format!("{other} holds the etcd lock `disruption`")),
        _ => match &o.safe {
            Err(why) => Action::Wait(format!("{me} may not be disrupted now: {why}")),
            Ok(()) => Action::Reboot,
        },
    }
}

/// How long until the next look: every second while this node, back from
/// its own reboot, still holds the lock (the next node waits for it),
/// else `interval`.
pub fn next_look(o: &Observed, interval: std::time::Duration) -> std::time::Duration {
    let rebooted = o.marker.as_ref().is_some_and(|m| m.boot_id != o.boot_id);
    if rebooted {
        RECOVERY_LOOK.min(interval)
    } else {
        interval
    }
}

/// The look after a reboot, until the lock is released.
pub const RECOVERY_LOOK: std::time::Duration = std::time::Duration::from_secs(1);

/// Whether `update_engine_client -status` output says a staged update waits for a reboot.
pub fn update_engine_needs_reboot(status: &str) -> bool {
    status
        .lines()
        .any(|l| l.trim() == "CURRENT_OP=UPDATE_STATUS_UPDATED_NEED_REBOOT")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `marker`: None, Some(true) written in an earlier boot, Some(false) in this one.
    fn o(needed: bool, marker: Option<bool>, holder: Option<&str>, others: bool, me: bool) -> Observed {
        Observed {
            needed,
            marker: marker.map(|earlier| Marker {
                holder: "m0".into(),
                unix: 1,
                boot_id: if earlier { "boot-1" } else { "boot-2" }.into(),
            }),
            boot_id: "boot-2".into(),
            holder: holder.map(str::to_string),
            safe: if others {
                Ok(())
            } else {
                Err("m2 is a learner catching up".into())
            },
            me_back: me,
        }
    }

    /// Every combination of the inputs.
    #[test]
    fn the_plan_over_every_combination() {
        for needed in [false, true] {
            for marker in [None, Some(false), Some(true)] {
                for holder in [None, Some("m0"), Some("m1")] {
                    for others in [false, true] {
                        for me in [false, true] {
                            let got = plan(&o(needed, marker, holder, others, me), "m0");
                            let want = if marker == Some(true) {
                                if me {
                                    Action::Release
                                } else {
                                    Action::Wait(String::new())
                                }
                            } else if !needed {
                                if holder == Some("m0") || marker.is_some() {
                                    Action::Release
                                } else {
                                    Action::Nothing
                                }
                            } else if holder == Some("m1") || !others {
                                Action::Wait(String::new())
                            } else {
                                Action::Reboot
                            };
                            let same = match (&got, &want) {
                                (Action::Wait(_), Action::Wait(_)) => true,
                                _ => got == want,
                            };
                            assert!(same, "needed={needed} marker={marker:?} holder={holder:?} others={others} me={me}: {got:?}, want {want:?}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn another_holder_or_an_unhealthy_cluster_makes_it_wait_and_says_why() {
        assert_eq!(
            plan(&o(true, None, Some("m1"), true, true), "m0"),
            Action::Wait("m1 holds the etcd lock `disruption`".into())
        );
        assert!(
            matches!(plan(&o(true, None, None, false, true), "m0"), Action::Wait(w) if w.contains("m0 may not be disrupted now: m2 is a learner"))
        );
    }

    /// Back from its own reboot, the node looks every second until it has
    /// released the lock (the test of the lab waited out a 30 s pass).
    #[test]
    fn after_its_own_reboot_it_looks_every_second_until_released() {
        let interval = std::time::Duration::from_secs(30);
        assert_eq!(
            next_look(&o(false, Some(true), Some("m0"), true, false), interval),
            RECOVERY_LOOK
        );
        assert_eq!(
            next_look(&o(true, Some(true), Some("m0"), true, true), interval),
            RECOVERY_LOOK
        );
        assert_eq!(next_look(&o(true, None, None, true, true), interval), interval);
        assert_eq!(
            next_look(&o(true, Some(false), Some("m0"), true, true), interval),
            interval
        );
        let short = std::time::Duration::from_millis(200);
        assert_eq!(next_look(&o(false, Some(true), None, true, false), short), short);
    }

    #[test]
    fn update_engine_status_is_read_by_its_current_op() {
        let staged = "LAST_CHECKED_TIME=1700000000\nPROGRESS=0.000000\nCURRENT_OP=UPDATE_STATUS_UPDATED_NEED_REBOOT\nNEW_VERSION=3975.2.0\n";
        assert!(update_engine_needs_reboot(staged));
        assert!(!update_engine_needs_reboot("CURRENT_OP=UPDATE_STATUS_IDLE\n"));
        assert!(!update_engine_needs_reboot("CURRENT_OP=UPDATE_STATUS_DOWNLOADING\n"));
    }
}
