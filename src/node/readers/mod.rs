//! The secrets' readers on this node, observed, and how each takes new
//! secrets (`nodeboot sync secrets`). The decision is `consumers::plan`
//! (pure); this module observes the inputs and acts, then verifies.
//!
//! - etcd: `systemctl restart etcd-member.service` under the etcd lock
//!   `disruption` (one disrupted member at a time across the cluster,
//!   whatever disrupts it) and only while `shared::etcd::disruption` says
//!   the member may go (asked again under the lock); done when it is back:
//!   a voter with the leader, within a small revision gap of it.
//! - the kubelet: `systemctl try-restart kubelet.service`.
//! - the add-on applier: started again.
//! - a static pod: its processes get SIGTERM and the kubelet starts the
//!   container again; on etcd nodes under the lock `static-pod-<name>`
//!   (one control-plane node at a time); done when the old processes are
//!   gone and the new one passes its health endpoint (`health`). One that
//!   does not stops the roll: the lock is kept and the sync fails loudly.

pub mod consumers;
pub mod health;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tracing::{error, info, warn};

use self::consumers::Consumer;
use crate::node::root::Root;
use crate::node::stage::etcd::node_client;
use crate::shared::etcd::{disruption, lock, Client};
use crate::shared::node_config::{
    NodeConfig, ADDONS_UNIT, ETCD_ENV_FILE, KUBELET_CONFIG_PATH, SECRETS_DIR, STATIC_POD_DIR,
};
use crate::shared::retry::{self, Attempt, Policy};
use crate::shared::role::Role;

/// The record of fingerprints each reader was last (re)started with.
pub const RECORD_FILE: &str = "secrets-readers.json";
const UNIT_DIR: &str = "/etc/systemd/system";
/// How long a lock outlives a holder that died.
const LOCK_TTL_SECONDS: i64 = 120;
const RESTART_WAIT: Policy = Policy::every(Duration::from_secs(1), Duration::from_secs(120));

/// Every reader on this node and the texts it is started from.
pub fn inputs(root: &Root, config: &NodeConfig) -> BTreeMap<Consumer, Vec<PathBuf>> {
    let mut out = BTreeMap::new();
    if config.role == Role::Etcd {
        out.insert(Consumer::EtcdMember, vec![root.path(ETCD_ENV_FILE)]);
        out.insert(
            Consumer::Oneshot(ADDONS_UNIT.into()),
            vec![root.path(&format!("{UNIT_DIR}/{ADDONS_UNIT}"))],
        );
    }
    if config.role.runs_kubelet() {
        out.insert(
            Consumer::Unit("kubelet.service".into()),
            vec![
                root.path(&format!("{UNIT_DIR}/kubelet.service")),
                root.path(KUBELET_CONFIG_PATH),
            ],
        );
        let dir = root.path(STATIC_POD_DIR);
        let mut manifests: Vec<PathBuf> = std::fs::read_dir(&dir)
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        manifests.sort();
        for path in manifests
            .into_iter()
            .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml" || e == "json"))
        {
            if let Some(stem) = path.file_stem().and_then(|s| s.to_str()) {
                out.insert(Consumer::StaticPod(stem.to_string()), vec![path.clone()]);
            }
        }
    }
    out
}

/// Each reader's fingerprint: the secrets its texts name, as they are now.
/// A reader whose texts do not exist (yet) is left out.
pub fn fingerprints(root: &Root, inputs: &BTreeMap<Consumer, Vec<PathBuf>>) -> BTreeMap<Consumer, String> {
    let secrets = root.path(SECRETS_DIR);
    let mut out = BTreeMap::new();
    for (consumer, texts) in inputs {
        let texts: Vec<String> = texts.iter().filter_map(|p| std::fs::read_to_string(p).ok()).collect();
        if texts.is_empty() {
            continue;
        }
        let mut files: Vec<(String, Option<Vec<u8>>)> = Vec::new();
        for reference in texts.iter().flat_map(|t| consumers::references(t, SECRETS_DIR)) {
            let path = secrets.join(&reference);
            if path.is_dir() {
                files.extend(
                    files_below(&path)
                        .into_iter()
                        .map(|(name, bytes)| (format!("{reference}/{name}"), Some(bytes))),
                );
            } else {
                files.push((reference, std::fs::read(&path).ok()));
            }
        }
        files.sort();
        files.dedup();
        out.insert(
            consumer.clone(),
            consumers::fingerprint(files.iter().map(|(n, b)| (n.as_str(), b.as_deref()))),
        );
    }
    out
}

fn files_below(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut todo = vec![(dir.to_path_buf(), String::new())];
    while let Some((d, prefix)) = todo.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let name = format!("{prefix}{}", entry.file_name().to_string_lossy());
            let path = entry.path();
            if path.is_dir() {
                todo.push((path, format!("{name}/")));
            } else if let Ok(bytes) = std::fs::read(&path) {
                out.push((name, bytes));
            }
        }
    }
    out
}

pub fn load_record(path: &Path) -> BTreeMap<Consumer, String> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return BTreeMap::new();
    };
    match serde_json::from_str::<Vec<(Consumer, String)>>(&text) {
        Ok(entries) => entries.into_iter().collect(),
        Err(e) => {
            warn!(
                "{}: unreadable ({e}); every reader is adopted as it runs now",
                path.display()
            );
            BTreeMap::new()
        }
    }
}

pub fn save_record(path: &Path, record: &BTreeMap<Consumer, String>) -> std::io::Result<()> {
    let entries: Vec<_> = record.iter().collect();
    crate::shared::fsutil::write_atomic(path, &serde_json::to_vec_pretty(&entries).expect("serialises"), 0o600)
}

/// Restarts `consumer` so it reads its new secrets; `Ok(false)`: not now
/// (another holder has the lock, or the cluster is not healthy), try again
/// on the next pass.
pub async fn restart(root: &Root, config: &NodeConfig, consumer: &Consumer) -> Result<bool, String> {
    match consumer {
        Consumer::EtcdMember => restart_etcd(root, config).await,
        Consumer::Unit(unit) => systemctl(&["try-restart", unit]).map(|()| true),
        Consumer::Oneshot(unit) => systemctl(&["start", "--no-block", unit]).map(|()| true),
        Consumer::StaticPod(name) => restart_static_pod(root, config, name).await,
    }
}

fn systemctl(args: &[&str]) -> Result<(), String> {
    let status = std::process::Command::new("systemctl")
        .args(args)
        .status()
        .map_err(|e| format!("systemctl {}: {e}", args.join(" ")))?;
    if status.success() {
        info!("ran systemctl {}", args.join(" "));
        Ok(())
    } else {
        Err(format!("systemctl {}: {status}", args.join(" ")))
    }
}

async fn restart_etcd(root: &Root, _config: &NodeConfig) -> Result<bool, String> {
    let (client, me, name) = node_client(root).map_err(|e| e.to_string())?;
    let waiting = |why: &str| {
        warn!("etcd-member.service must restart for new certificates, but {name} may not be disrupted now ({why}): waiting");
        Ok(false)
    };
    // A first look before the lock spares a lease while the cluster is not
    // ready; the look that decides is the one under the lock.
    if let Err(why) = disruption::safe_to_disrupt(&client, &name) {
        return match disruption::down_for_ended_certificates(&disruption::reaches(&client)) {
            Ok(because) => restart_together(&client, &me, &name, &because).await,
            Err(_) => waiting(&why),
        };
    }
    let Some(held) =
        lock::try_acquire(&client, lock::DISRUPTION, &name, LOCK_TTL_SECONDS).map_err(|e| e.to_string())?
    else {
        let holder = lock::holder(&client, lock::DISRUPTION)
            .ok()
            .flatten()
            .unwrap_or_default();
        info!(
            "etcd-member.service must restart for new certificates; {holder} holds the etcd lock `{}`: waiting",
            lock::DISRUPTION
        );
        return Ok(false);
    };
    if let Err(why) = disruption::safe_to_disrupt(&client, &name) {
        if let Err(e) = held.release(&client) {
            warn!(
                "releasing the etcd lock `{}`: {e} (it expires with its lease)",
                lock::DISRUPTION
            );
        }
        return waiting(&why);
    }
    systemctl(&["restart", "etcd-member.service"])?;
    // Back: a voter that answers, names the leader and is caught up with it.
    let back = retry::wait(
        &format!("{name} to be back after its restart (a voter with the leader, caught up)"),
        RESTART_WAIT,
        || {
            // Each look keeps the lock: the wait may outlast its lease.
            let _ = held.refresh(&client);
            let back = disruption::is_back(&client, &name);
            async move {
                match back {
                    Ok(()) => Attempt::Done(()),
                    Err(why) => Attempt::Retry(why),
                }
            }
        },
    )
    .await;
    match back {
        Ok(()) => {
            if let Err(e) = held.release(&client) {
                warn!(
                    "releasing the etcd lock `{}`: {e} (it expires with its lease)",
                    lock::DISRUPTION
                );
            }
            info!("etcd-member.service restarted with the new certificates; {name} is back: a voter that answers with a leader, caught up");
            Ok(true)
        }
        // Keep the lock: the next member must not restart into the same
        // failure; the lease lets it go after {LOCK_TTL_SECONDS}s.
        Err(e) => Err(format!("etcd did not come back after its restart: {e}")),
    }
}

/// The renewal came after the end: the members refuse each other and the
/// cluster is down anyway, so this member restarts with its new files at
/// once, without the lock (no lease without a leader) and without the
/// one-at-a-time rule; every member does the same on its next pass. Done
/// when this member answers over TLS again (it serves the new certificate);
/// the cluster forms once a quorum of them has restarted.
async fn restart_together(client: &Client, me: &str, name: &str, because: &str) -> Result<bool, String> {
    warn!("{because}: restarting {name}'s etcd-member.service with the new certificates now, without the lock (the cluster is down anyway; every member restarts)");
    systemctl(&["restart", "etcd-member.service"])?;
    retry::wait(
        &format!("{name} to answer over TLS with its new certificate"),
        RESTART_WAIT,
        || {
            let answer = crate::shared::etcd::Cluster::status(client, me);
            async move {
                match answer {
                    Ok(_) => Attempt::Done(()),
                    Err(e) => Attempt::Retry(e.to_string()),
                }
            }
        },
    )
    .await
    .map_err(|e| format!("etcd did not come back after its restart: {e}"))?;
    info!("etcd-member.service restarted with the new certificates; {name} answers over TLS (the cluster forms as the other members restart)");
    Ok(true)
}

/// The pids whose program (argv[0]'s file name) is `name`.
pub fn processes_named(proc_dir: &Path, name: &str) -> Vec<i32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(proc_dir).into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if pid == std::process::id() as i32 {
            continue;
        }
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let argv0 = cmdline.split(|b| *b == 0).next().unwrap_or_default();
        let program = argv0.rsplit(|b| *b == b'/').next().unwrap_or_default();
        if program == name.as_bytes() {
            out.push(pid);
        }
    }
    out.sort_unstable();
    out
}

async fn restart_static_pod(root: &Root, config: &NodeConfig, name: &str) -> Result<bool, String> {
    let client = match config.role {
        Role::Etcd => Some(node_client(root).map_err(|e| e.to_string())?),
        Role::Compute | Role::Bastion => None,
    };
    restart_pod(PodRestart {
        name,
        proc_dir: Path::new("/proc"),
        lock: client.as_ref().map(|(client, _, holder)| (client, holder.as_str())),
        health: health::endpoint(name).map(|e| e.url()),
        exit_wait: RESTART_WAIT,
        ready_wait: health::READY_WAIT,
    })
    .await
}

/// One static pod's restart for new secrets, as observed on this node.
pub struct PodRestart<'a> {
    /// The pod's name, which is its program's.
    pub name: &'a str,
    pub proc_dir: &'a Path,
    /// `(etcd client, this node's name)` on control-plane nodes: restart
    /// under the lock `static-pod-<name>`, one node at a time.
    pub lock: Option<(&'a Client, &'a str)>,
    /// Its health endpoint's URL (`health::ENDPOINTS`); `None`: done once
    /// the old processes exited.
    pub health: Option<String>,
    pub exit_wait: Policy,
    pub ready_wait: Policy,
}

/// Takes the lock, stops the pod's processes (the kubelet starts the
/// container again), waits until they exited and the new one passes its
/// health endpoint; then `health::verdict` says whether the lock goes back.
/// `Ok(false)`: another node holds the lock, try again on the next pass.
pub async fn restart_pod(r: PodRestart<'_>) -> Result<bool, String> {
    let name = r.name;
    let lock = format!("static-pod-{name}");
    let held = match r.lock {
        Some((client, holder)) => {
            match lock::try_acquire(client, &lock, holder, LOCK_TTL_SECONDS).map_err(|e| e.to_string())? {
                Some(held) => Some((client, held)),
                None => {
                    let holder = lock::holder(client, &lock).ok().flatten().unwrap_or_default();
                    info!("static pod {name} must restart for new secrets; {holder} holds {lock} (restarting it first, or stopped because it stayed unhealthy there): waiting");
                    return Ok(false);
                }
            }
        }
        None => None,
    };
    // Every look of the waits below keeps the lock's lease alive: together
    // they may last longer than its TTL.
    let keep = || {
        if let Some((client, held)) = &held {
            if let Err(e) = held.refresh(client) {
                warn!("keeping the {lock} lock: {e}");
            }
        }
    };
    let old = processes_named(r.proc_dir, name);
    if old.is_empty() {
        info!("static pod {name}: no process runs (the kubelet starts it with the new secrets)");
    }
    for pid in &old {
        // The kubelet restarts the container (restartPolicy: Always).
        if let Err(e) = nix::sys::signal::kill(nix::unistd::Pid::from_raw(*pid), nix::sys::signal::Signal::SIGTERM) {
            warn!("static pod {name}: SIGTERM to pid {pid}: {e}");
        }
    }
    let gone = retry::wait(
        &format!("static pod {name}'s old processes to exit"),
        r.exit_wait,
        || {
            keep();
            let left: Vec<i32> = processes_named(r.proc_dir, name)
                .into_iter()
                .filter(|p| old.contains(p))
                .collect();
            async move {
                if left.is_empty() {
                    Attempt::Done(())
                } else {
                    Attempt::Retry(format!("{left:?} still run"))
                }
            }
        },
    )
    .await;
    let after = match (gone, &r.health) {
        (Err(e), _) => health::After::NotStopped(e.to_string()),
        (Ok(()), None) => health::After::Unchecked,
        (Ok(()), Some(url)) => {
            info!(
                "static pod {name}: stopped {} process(es) for new secrets; waiting until {url} passes",
                old.len()
            );
            health::wait_ready(url, r.ready_wait, keep).await
        }
    };
    match health::verdict(name, held.as_ref().map(|_| lock.as_str()), &after) {
        health::Verdict::Done => {
            if let Some((client, held)) = held {
                if let Err(e) = held.release(client) {
                    warn!("releasing the {lock} lock: {e} (it expires with its lease)");
                }
            }
            match after {
                health::After::Ready => {
                    info!("static pod {name} restarted with the new secrets and passes its health check")
                }
                _ => info!(
                    "static pod {name}: stopped {} process(es) for new secrets; the kubelet starts it again",
                    old.len()
                ),
            }
            Ok(true)
        }
        // The lock is not given back: its lease runs out 120 s after the
        // last look unless the next pass takes it again (it does: the
        // fingerprint is not recorded, so the pod is restarted again).
        health::Verdict::Halt(message) => {
            error!("{message}");
            Err(message)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A static pod's process is found by its program's name, as the
    /// kubelet's container would run it (a path in argv[0]), and only it.
    #[test]
    fn processes_are_found_by_their_programs_name() {
        let dir = tempfile::tempdir().unwrap();
        let name = format!("kube-fake-{}", std::process::id());
        // A symlink, not a copy: exec of a file this multi-threaded test
        // process just wrote can fail with ETXTBSY (another test's fork
        // inherits the open write descriptor).
        let program = dir.path().join(&name);
        std::os::unix::fs::symlink("/bin/sleep", &program).unwrap();
        let mut child = std::process::Command::new(&program).arg("30").spawn().unwrap();
        // Right after the spawn the child's /proc entry can still show the
        // parent's command line for a moment: look again for up to 5 s.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let found = loop {
            let found = processes_named(Path::new("/proc"), &name);
            if !found.is_empty() || std::time::Instant::now() > deadline {
                break found;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(found, vec![child.id() as i32]);
        assert!(
            processes_named(Path::new("/proc"), &name).is_empty(),
            "gone once it exited"
        );
        assert!(
            processes_named(Path::new("/proc"), "kube-fake").is_empty(),
            "a prefix is not a name"
        );
    }

    #[test]
    fn readers_and_fingerprints_follow_the_files_the_texts_name() {
        let dir = tempfile::tempdir().unwrap();
        let root = Root(dir.path().to_path_buf());
        let write = |path: &str, text: &str| {
            let p = root.path(path);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        };
        write(
            ETCD_ENV_FILE,
            "ETCD_CERT_FILE=/run/nodeboot/secrets/etcd/member-0.crt\n",
        );
        write("/run/nodeboot/secrets/etcd/member-0.crt", "old");
        write("/run/nodeboot/secrets/ca.crt", "ca");
        write(
            &format!("{STATIC_POD_DIR}/kube-scheduler.yaml"),
            "- --kubeconfig=/run/nodeboot/secrets/scheduler.kubeconfig\n",
        );
        write("/run/nodeboot/secrets/scheduler.kubeconfig", "s1");
        // What readers read depends only on the role.
        let config: NodeConfig = serde_json::from_value(serde_json::json!({
            "version": crate::shared::node_config::NODE_CONFIG_VERSION,
            "environment": "example",
            "role": Role::Etcd,
            "region": "eu-west-1",
            "secrets_bucket": "example-secrets",
            "kms_key_id": "alias/example",
        }))
        .expect("a node.json");
        let inputs = inputs(&root, &config);
        let before = fingerprints(&root, &inputs);
        assert!(
            before.contains_key(&Consumer::EtcdMember)
                && before.contains_key(&Consumer::StaticPod("kube-scheduler".into())),
            "{before:?}"
        );
        // A file nobody names changes: nothing differs.
        write("/run/nodeboot/secrets/ca.crt", "ca2");
        assert_eq!(fingerprints(&root, &inputs), before);
        // etcd's certificate changes: only etcd's fingerprint differs.
        write("/run/nodeboot/secrets/etcd/member-0.crt", "new");
        let after = fingerprints(&root, &inputs);
        let changed: Vec<&Consumer> = before.keys().filter(|c| before[*c] != after[*c]).collect();
        assert_eq!(changed, vec![&Consumer::EtcdMember]);
    }
}
