//! Which running component reads which secret, and which of them must
//! restart after the secrets changed (`nodeboot sync secrets`).
//!
//! Observed, not listed by hand: a component's *inputs* are the texts it is
//! started from (etcd's environment file, the kubelet's unit and config, a
//! static pod's manifest, the add-on applier's unit), and the secrets it
//! reads are the paths under the secrets directory those texts name. Its
//! *fingerprint* is the SHA-256 of those files' names and contents. The
//! plan (pure) compares fingerprints with the ones recorded when each
//! component was last (re)started: a component restarts when, and only
//! when, a file it reads changed. A sync killed between writing a file and
//! restarting its reader finds the difference again on its next pass.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// A component that reads secrets, and how it takes new ones.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", content = "name", rename_all = "kebab-case")]
pub enum Consumer {
    /// This node's etcd member (`etcd-member.service`): restarted one
    /// member at a time, only while the rest of the cluster is healthy.
    EtcdMember,
    /// A systemd service restarted with `systemctl try-restart`.
    Unit(String),
    /// A oneshot started again (`systemctl start --no-block`): the add-ons.
    Oneshot(String),
    /// A static pod, by its manifest's file stem: its processes are stopped
    /// and the kubelet starts them again (restartPolicy Always).
    StaticPod(String),
}

impl std::fmt::Display for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Consumer::EtcdMember => write!(f, "etcd-member.service"),
            Consumer::Unit(u) | Consumer::Oneshot(u) => write!(f, "{u}"),
            Consumer::StaticPod(p) => write!(f, "static pod {p}"),
        }
    }
}

/// The paths under `secrets_dir` that `text` names: every token that starts
/// with `secrets_dir/` (a file or a folder below it). The directory itself
/// (a pod mounting the whole tree) names nothing in particular.
pub fn references(text: &str, secrets_dir: &str) -> BTreeSet<String> {
    let base = format!("{}/", secrets_dir.trim_end_matches('/'));
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find(&base) {
        let tail = &rest[at + base.len()..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || "._-/".contains(c)))
            .unwrap_or(tail.len());
        let name = tail[..end].trim_end_matches('/');
        if !name.is_empty() {
            out.insert(name.to_string());
        }
        rest = &tail[end..];
    }
    out
}

/// Whether the secret `name` (relative to the secrets directory) is one
/// that `reference` names: the file itself, or a file below a folder.
pub fn reads(reference: &str, name: &str) -> bool {
    name == reference || name.strip_prefix(reference).is_some_and(|rest| rest.starts_with('/'))
}

/// The fingerprint of what a consumer reads: its referenced secret files
/// (`name` → contents, or `None` when absent), in name order.
pub fn fingerprint<'a>(files: impl IntoIterator<Item = (&'a str, Option<&'a [u8]>)>) -> String {
    let mut sorted: Vec<_> = files.into_iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    let mut hash = Sha256::new();
    for (name, contents) in sorted {
        hash.update((name.len() as u64).to_le_bytes());
        hash.update(name.as_bytes());
        match contents {
            Some(bytes) => {
                hash.update([1]);
                hash.update(Sha256::digest(bytes));
            }
            None => hash.update([0]),
        }
    }
    hex(&hash.finalize())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What to do, per consumer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Never seen (a fresh record, e.g. after a reboot: it started with
    /// the files as they are): record its fingerprint, restart nothing.
    Adopt(Consumer),
    /// A file it reads changed since it was (re)started.
    Restart(Consumer),
}

/// Pure: the recorded fingerprints against the current ones. A consumer no
/// longer present is dropped from the record by the caller (no step).
pub fn plan(recorded: &BTreeMap<Consumer, String>, current: &BTreeMap<Consumer, String>) -> Vec<Step> {
    current
        .iter()
        .filter_map(|(consumer, now)| match recorded.get(consumer) {
            None => Some(Step::Adopt(consumer.clone())),
            Some(then) if then != now => Some(Step::Restart(consumer.clone())),
            Some(_) => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIR: &str = "/run/nodeboot/secrets";

    #[test]
    fn references_are_the_paths_under_the_secrets_directory() {
        let manifest = "    - --kubeconfig=/run/nodeboot/secrets/controller-manager.kubeconfig\n    - --root-ca-file=/run/nodeboot/secrets/ca.crt\n      mountPath: /run/nodeboot/secrets\n      path: /run/nodeboot/secrets\n";
        assert_eq!(
            references(manifest, DIR),
            BTreeSet::from(["ca.crt".to_string(), "controller-manager.kubeconfig".to_string()])
        );
        let env = "ETCD_CERT_FILE=/run/nodeboot/secrets/etcd/member-0.crt\nETCD_TRUSTED_CA_FILE=\"/run/nodeboot/secrets/etcd/ca.crt\"\n";
        assert_eq!(
            references(env, DIR),
            BTreeSet::from(["etcd/ca.crt".to_string(), "etcd/member-0.crt".to_string()])
        );
        // A folder (the add-ons) and a lookalike prefix that is not below it.
        let unit = "--filename=/run/nodeboot/secrets/addons --x=/run/nodeboot/secretsmore/a";
        assert_eq!(references(unit, DIR), BTreeSet::from(["addons".to_string()]));
        assert!(references("nothing here", DIR).is_empty());
    }

    #[test]
    fn a_folder_reference_reads_the_files_below_it_only() {
        assert!(reads("addons", "addons/bootstrap-token.yaml"));
        assert!(reads("ca.crt", "ca.crt"));
        assert!(!reads("addons", "addons-applier.kubeconfig"));
        assert!(!reads("etcd/ca.crt", "etcd/ca.crt.bak"));
    }

    #[test]
    fn a_fingerprint_changes_with_any_content_name_or_presence() {
        let base = fingerprint([("a", Some(&b"1"[..])), ("b", Some(&b"2"[..]))]);
        assert_eq!(
            base,
            fingerprint([("b", Some(&b"2"[..])), ("a", Some(&b"1"[..]))]),
            "order of observation does not matter"
        );
        assert_ne!(base, fingerprint([("a", Some(&b"1"[..])), ("b", Some(&b"3"[..]))]));
        assert_ne!(base, fingerprint([("a", Some(&b"1"[..])), ("c", Some(&b"2"[..]))]));
        assert_ne!(base, fingerprint([("a", Some(&b"1"[..])), ("b", None)]));
        assert_ne!(
            fingerprint([("ab", Some(&b""[..]))]),
            fingerprint([("a", Some(&b"b"[..]))])
        );
    }

    #[test]
    fn only_consumers_whose_inputs_changed_restart_and_new_ones_are_adopted() {
        let etcd = Consumer::EtcdMember;
        let kubelet = Consumer::Unit("kubelet.service".into());
        let apiserver = Consumer::StaticPod("kube-apiserver".into());
        let recorded = BTreeMap::from([(etcd.clone(), "e1".to_string()), (kubelet.clone(), "k1".to_string())]);
        let current = BTreeMap::from([
            (etcd.clone(), "e2".to_string()),
            (kubelet.clone(), "k1".to_string()),
            (apiserver.clone(), "a1".to_string()),
        ]);
        assert_eq!(
            plan(&recorded, &current),
            vec![Step::Restart(etcd.clone()), Step::Adopt(apiserver)]
        );
        assert!(plan(&current, &current).is_empty(), "nothing changed: nothing restarts");
        assert!(plan(&BTreeMap::new(), &BTreeMap::new()).is_empty());
    }
}
