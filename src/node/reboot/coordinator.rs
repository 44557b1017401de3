//! `nodeboot reboot-coordinator`: observes (update_engine, the sentinel,
//! the marker, the etcd lock, the members' health), plans with
//! `reboot::plan` (pure) and acts; see `src/node/reboot/mod.rs`.

use std::path::Path;
use std::time::Duration;

use tracing::{info, warn};

use crate::node::reboot::{self, Action, Marker, Observed, RebootError};
use crate::node::root::Root;
use crate::shared::etcd::{disruption, lock, Client};

/// The lock every etcd node's coordinator takes before it reboots: the one
/// of every voluntary disruption of a member.
pub const LOCK: &str = lock::DISRUPTION;
/// The marker, on disk: it must outlive the reboot.
pub const MARKER: &str = "/var/lib/nodeboot/reboot-lock.json";
/// Longer than a reboot; frees the lock of a node that never comes back.
const LOCK_TTL_SECONDS: i64 = 900;

pub struct Options {
    pub interval: Duration,
    pub sentinel: String,
    pub reboot_command: String,
    pub once: bool,
}

pub fn run(root: &Root, options: &Options) -> Result<(), RebootError> {
    let marker_path = root.path(MARKER);
    let mut last_wait = String::new();
    loop {
        let (client, _me_url, me) = crate::node::stage::etcd::node_client(root).map_err(RebootError::Etcd)?;
        let boot_id = boot_token(root)?;
        // One look at the members serves both questions.
        let members = disruption::observe(&client).map_err(|e| format!("the member list: {e}"));
        let observed = Observed {
            boot_id: boot_id.clone(),
            needed: root.path(&options.sentinel).exists() || update_engine_says_reboot(),
            marker: std::fs::read(&marker_path)
                .ok()
                .and_then(|b| serde_json::from_slice::<Marker>(&b).ok()),
            holder: lock::holder(&client, LOCK).ok().flatten(),
            safe: members
                .as_ref()
                .map_err(Clone::clone)
                .and_then(|o| disruption::assess(o, &me)),
            me_back: members.as_ref().is_ok_and(|o| disruption::back(o, &me).is_ok()),
        };
        let next = reboot::next_look(&observed, options.interval);
        match reboot::plan(&observed, &me) {
            Action::Nothing => last_wait.clear(),
            Action::Wait(why) => {
                if why != last_wait {
                    info!("reboot wanted; waiting: {why}");
                    last_wait = why;
                }
            }
            Action::Reboot => reboot_under_lock(&client, &me, &boot_id, &marker_path, &options.reboot_command)?,
            Action::Release => {
                lock::release_if_held_by(&client, LOCK, &me)
                    .map_err(|e| RebootError::Lock(format!("releasing the etcd lock `{LOCK}`: {e}")))?;
                if let Err(e) = std::fs::remove_file(&marker_path) {
                    if e.kind() != std::io::ErrorKind::NotFound {
                        return Err(RebootError::File {
                            path: marker_path,
                            source: e,
                        });
                    }
                }
                match observed.marker {
                    Some(m) if m.boot_id != boot_id => {
                        info!("{me} is back after its reboot (a voter with the leader, caught up): released the etcd lock `{LOCK}`")
                    }
                    _ => info!("{me}: no reboot wanted any more: released the etcd lock `{LOCK}` and the marker"),
                }
            }
        }
        if options.once {
            return Ok(());
        }
        std::thread::sleep(next);
    }
}

fn reboot_under_lock(
    client: &Client,
    me: &str,
    boot_id: &str,
    marker_path: &Path,
    command: &str,
) -> Result<(), RebootError> {
    let file = |source| RebootError::File {
        path: marker_path.to_path_buf(),
        source,
    };
    // The marker first: a kill between the two leaves a marker without the
    // lock, which the next pass releases once healthy (nothing to release).
    let marker = Marker {
        holder: me.to_string(),
        boot_id: boot_id.to_string(),
        unix: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0),
    };
    std::fs::create_dir_all(marker_path.parent().expect("a directory")).map_err(file)?;
    crate::shared::fsutil::write_atomic(marker_path, &serde_json::to_vec(&marker).expect("serialises"), 0o644)
        .map_err(file)?;
    match lock::try_acquire(client, LOCK, me, LOCK_TTL_SECONDS)
        .map_err(|e| RebootError::Lock(format!("taking the etcd lock `{LOCK}`: {e}")))?
    {
        Some(held) => {
            // The look that decides, under the lock: nobody else disrupts
            // a member between it and the reboot.
            if let Err(why) = disruption::safe_to_disrupt(client, me) {
                let _ = held.release(client);
                let _ = std::fs::remove_file(marker_path);
                info!("reboot wanted; waiting: {me} may not be disrupted now: {why}");
                return Ok(());
            }
            info!("{me} holds the etcd lock `{LOCK}`: rebooting for the staged OS update");
            let mut words = command.split_whitespace();
            let failed = |detail: String| RebootError::Command {
                command: command.to_string(),
                detail,
            };
            let program = words
                .next()
                .ok_or_else(|| failed("the reboot command is empty".into()))?;
            let status = std::process::Command::new(program)
                .args(words)
                .status()
                .map_err(|e| failed(e.to_string()))?;
            if !status.success() {
                return Err(failed(status.to_string()));
            }
            Ok(())
        }
        None => {
            // Another node won the race: not ours to reboot now.
            let _ = std::fs::remove_file(marker_path);
            warn!("{me}: another node took the etcd lock `{LOCK}` first; waiting");
            Ok(())
        }
    }
}

/// This boot's identity: a random token in /run (a tmpfs, empty at every
/// boot), made on the first look. Not the kernel's boot_id: a container
/// shares its host's, and the lab's nodes are containers.
fn boot_token(root: &Root) -> Result<String, RebootError> {
    let path = root.state("boot-token");
    if let Ok(token) = std::fs::read_to_string(&path) {
        if !token.trim().is_empty() {
            return Ok(token.trim().to_string());
        }
    }
    let token = format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..));
    crate::shared::fsutil::write_atomic(&path, token.as_bytes(), 0o644).map_err(|source| RebootError::File {
        path: path.clone(),
        source,
    })?;
    Ok(token)
}

fn update_engine_says_reboot() -> bool {
    std::process::Command::new("update_engine_client")
        .arg("-status")
        .output()
        .is_ok_and(|out| {
            out.status.success() && reboot::update_engine_needs_reboot(&String::from_utf8_lossy(&out.stdout))
        })
}
