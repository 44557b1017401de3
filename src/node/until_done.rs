//! `nodeboot stage --retry NAME`, what the boot units run: the stage is
//! retried inside this process, with the one retry policy, until it succeeds,
//! meets an error retrying cannot fix, or reaches node.json's `boot` bounds.
//!
//! Why in the process and not with systemd's `Restart=`: under systemd (252
//! and newer, systemd issue #18856) a `Type=oneshot` unit that fails fails
//! its `Requires=` dependants at once, whatever its `Restart=` says; they stay
//! dead after the restarted unit succeeds. Waiting here keeps the unit's start
//! job running (`TimeoutStartSec=infinity`), so the units after it wait too.
//!
//! A stage that gives up fails its unit (no `Restart=` hides it), says so in
//! one line, and on an etcd node powers the node off: the etcd launch
//! template terminates an instance that shuts itself down, and its
//! auto-scaling group replaces it, instead of keeping a node that passes
//! EC2's health checks but never became a member. Powering off needs no AWS
//! permission and can end only this node; `autoscaling:SetInstanceHealth`,
//! the way before, cannot be limited to the caller's own instance, so any
//! etcd node could have had every other one replaced (issue 23 item 2).

use std::time::{Duration, Instant};

use tracing::{error, info, warn};

use crate::node::error::Error;
use crate::node::root::Root;
use crate::shared::exit;
use crate::shared::node_config::BootConfig;
use crate::shared::retry::{self, Attempt, Gave, Policy};
use crate::shared::role::Role;

/// What to do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Retry,
    /// Retrying cannot fix it: stop now, the unit fails.
    Permanent,
    /// Retrying might fix it, but the node has waited long enough.
    GiveUp,
}

/// Exit codes whose cause waiting cannot change (README's exit-code table):
/// 1 a bug; 2 bad input (node.json, arguments: baked into the instance's
/// user data); 3 a local file that cannot be read or written (node.json
/// missing, a read-only or full `/run`); 4 refused to overwrite; 15 a device
/// holding something else, which a human must look at; 26 an etcd member
/// outside the cluster it talks to (an operator restores or recovers; a
/// power-off would only replace a node that holds data). Every other code is
/// something AWS, the kernel or the operator (uploading secrets, fixing
/// tags, IAM propagating) fixes while the node waits.
pub const PERMANENT: [u8; 7] = [
    exit::INTERNAL,
    exit::BAD_INPUT,
    exit::IO,
    exit::REFUSED,
    exit::DEVICE_REFUSED,
    exit::HELD_DATA,
    exit::ETCD_OUTSIDE,
];

/// Pure: the verdict on a failed attempt with exit `code`, when "no free
/// member" has been the answer for `no_free_for` (None: it was not).
/// The total bound is the retry policy's own.
pub fn verdict(code: u8, no_free_for: Option<Duration>, bounds: &BootConfig) -> Verdict {
    if PERMANENT.contains(&code) {
        return Verdict::Permanent;
    }
    match no_free_for {
        Some(waited)
            if code == exit::NO_FREE_MEMBER && waited >= Duration::from_secs(bounds.no_free_member_seconds) =>
        {
            Verdict::GiveUp
        }
        _ => Verdict::Retry,
    }
}

/// Polls AWS no faster than every second and at least every 30 s.
fn policy(bounds: &BootConfig) -> Policy {
    Policy::new(
        Duration::from_secs(1),
        Duration::from_secs(30),
        Duration::from_secs(bounds.give_up_seconds),
    )
}

/// A failed attempt, with the verdict on it.
enum Failed {
    Retry(Error),
    Permanent(Error),
    GaveUp(Error),
}

impl Failed {
    fn into_error(self) -> Error {
        match self {
            Failed::Retry(e) | Failed::Permanent(e) | Failed::GaveUp(e) => e,
        }
    }
}

impl std::fmt::Display for Failed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failed::Retry(e) | Failed::Permanent(e) | Failed::GaveUp(e) => write!(f, "{e}"),
        }
    }
}

/// Runs `attempt` until it succeeds, fails for good, or node.json's bounds pass.
/// On an etcd node a give-up runs `poweroff` (no shell; split on spaces).
pub fn run(
    root: &Root,
    stage: &str,
    poweroff: &str,
    mut attempt: impl FnMut() -> Result<(), Error>,
) -> Result<(), Error> {
    // An unreadable node.json is bad input: the first attempt says so and stops.
    let config = root.node_config().ok();
    let bounds = config.as_ref().map(|c| c.boot.clone()).unwrap_or_default();
    let started = Instant::now();
    let mut attempts = 0u32;
    let mut no_free_since: Option<Instant> = None;
    let what = format!("stage {stage} (gives up after {}s)", bounds.give_up_seconds);
    let outcome = retry::wait_blocking(&what, policy(&bounds), || {
        attempts += 1;
        let err = match attempt() {
            Ok(()) => return Attempt::Done(()),
            Err(err) => err,
        };
        let code = err.exit_code();
        no_free_since = if code == exit::NO_FREE_MEMBER {
            Some(no_free_since.unwrap_or_else(Instant::now))
        } else {
            None
        };
        match verdict(code, no_free_since.map(|t| t.elapsed()), &bounds) {
            Verdict::Retry => {
                warn!(
                    stage,
                    attempt = attempts,
                    code,
                    "attempt {attempts} failed (exit {code}), retrying: {err}"
                );
                Attempt::Retry(Failed::Retry(err))
            }
            Verdict::Permanent => Attempt::Fail(Failed::Permanent(err)),
            Verdict::GiveUp => Attempt::Fail(Failed::GaveUp(err)),
        }
    });
    let last = match outcome {
        Ok(()) => {
            if attempts > 1 {
                info!(
                    stage,
                    attempts,
                    seconds = started.elapsed().as_secs(),
                    "stage {stage} succeeded after {attempts} attempts"
                );
            }
            return Ok(());
        }
        Err(Gave::Failed(Failed::Permanent(err))) => {
            error!(
                stage,
                code = err.exit_code(),
                "stage {stage} stopped: exit {} is not retried, retrying cannot fix it",
                err.exit_code()
            );
            return Err(err);
        }
        Err(Gave::Failed(failed)) | Err(Gave::Up { last: failed, .. }) => failed.into_error(),
    };
    let seconds = started.elapsed().as_secs();
    let gave_up = |signal: String, last: Error| Error::GaveUp {
        stage: stage.to_string(),
        seconds,
        attempts,
        signal,
        source: Box::new(last),
    };
    if config.as_ref().map(|c| c.role) != Some(Role::Etcd) {
        return Err(gave_up("no auto-scaling signal for this role".to_string(), last));
    }
    // Said before the power-off, which stops this unit (SIGTERM) and may
    // come before the command line prints the error.
    let signal = format!(
        "powering off ({poweroff}): the instance terminates on shutdown and its auto-scaling group replaces it"
    );
    let mut err = gave_up(signal, last);
    error!(stage, code = err.exit_code(), "{err}");
    if let (Err(detail), Error::GaveUp { signal, .. }) = (power_off(poweroff), &mut err) {
        *signal = format!("could not power off ({poweroff}): {detail}");
    }
    Err(err)
}

/// Asks the init system to power the node off; returns once it has the request.
fn power_off(command: &str) -> Result<(), String> {
    let mut words = command.split_whitespace();
    let program = words.next().ok_or("the power-off command is empty")?;
    let status = std::process::Command::new(program)
        .args(words)
        .status()
        .map_err(|e| e.to_string())?;
    if status.success() {
        Ok(())
    } else {
        Err(status.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bounds() -> BootConfig {
        BootConfig {
            give_up_seconds: 3600,
            no_free_member_seconds: 600,
        }
    }

    #[test]
    fn bad_input_and_refused_devices_are_never_retried() {
        for code in [1, 2, 3, 4, 15, exit::ETCD_OUTSIDE] {
            assert_eq!(verdict(code, None, &bounds()), Verdict::Permanent, "exit {code}");
        }
    }

    #[test]
    fn what_aws_or_an_operator_can_fix_is_retried() {
        // timeout, metadata, AWS API, resources, system command, secrets refused or missing
        for code in [11, 12, 13, 14, 16, 20, 21] {
            assert_eq!(verdict(code, None, &bounds()), Verdict::Retry, "exit {code}");
        }
    }

    #[test]
    fn no_free_member_gives_up_after_its_own_bound() {
        assert_eq!(
            verdict(exit::NO_FREE_MEMBER, Some(Duration::from_secs(0)), &bounds()),
            Verdict::Retry
        );
        assert_eq!(
            verdict(exit::NO_FREE_MEMBER, Some(Duration::from_secs(599)), &bounds()),
            Verdict::Retry
        );
        assert_eq!(
            verdict(exit::NO_FREE_MEMBER, Some(Duration::from_secs(600)), &bounds()),
            Verdict::GiveUp
        );
        // Other failures are bounded by the total only.
        assert_eq!(
            verdict(exit::AWS, Some(Duration::from_secs(9999)), &bounds()),
            Verdict::Retry
        );
    }

    #[test]
    fn retries_until_success_and_counts_attempts() {
        let dir = tempfile::tempdir().unwrap();
        let root = Root(dir.path().to_path_buf());
        let mut tries = 0;
        let result = run(&root, "probe", "false", || {
            tries += 1;
            if tries < 3 {
                Err(Error::Cloud(crate::shared::cloud::CloudError {
                    operation: "DescribeVolumes",
                    resource: "vol-1".into(),
                    code: Some("RequestLimitExceeded".into()),
                    message: "not yet".into(),
                }))
            } else {
                Ok(())
            }
        });
        assert!(result.is_ok());
        assert_eq!(tries, 3);
    }

    #[test]
    fn a_permanent_failure_stops_at_once_with_its_own_code() {
        let dir = tempfile::tempdir().unwrap();
        let root = Root(dir.path().to_path_buf());
        let mut tries = 0;
        let err = run(&root, "probe", "false", || {
            tries += 1;
            Err(Error::Refused("no".into()))
        })
        .unwrap_err();
        assert_eq!(tries, 1);
        assert_eq!(err.exit_code(), exit::REFUSED);
    }
}
