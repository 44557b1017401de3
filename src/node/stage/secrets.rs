//! `nodeboot stage secrets`: pulls and decrypts the role's secrets
//! (`common/` and the role's folder, the role's winning on a clash) into
//! the tmpfs directory /run/nodeboot/secrets: directory 0700, files 0600,
//! both given to `--owner` if set. Every object is fetched and opened
//! before the first file is written, so a tampered object, a wrong key or
//! another environment's object fails the stage and writes nothing. A rerun
//! converges: unchanged files are kept, secrets gone from the bucket removed.
//! An etcd node fetches only its own member's key (`secure/etcd/member-<i>.key`
//! of its claim), so it runs after `attach`.

use tracing::info;

use super::attach::{Claim, CLAIM_FILE};
use super::Root;
use crate::node::sync::{self, Mode, Source, SyncError, Target};
use crate::shared::cloud::{Keys, Objects};
use crate::shared::node_config::{NodeConfig, SECRETS_DIR};
use crate::shared::role::Role;
use crate::shared::secrets::layout::role_folder;
use crate::shared::secrets::Store;

pub const RECORD_FILE: &str = "secrets.placed.json";

/// `member`: the etcd member this node holds (its claim), whose key is
/// the only member key it fetches.
pub fn source(root: &Root, config: &NodeConfig, owner: Option<(u32, u32)>, member: Option<u32>) -> Source {
    let mut prefixes = vec!["common/".to_string()];
    prefixes.extend(role_folder(config.role).map(|f| format!("{f}/")));
    Source {
        label: "secrets".into(),
        prefixes,
        target: Target {
            dir: root.path(SECRETS_DIR),
            file_mode: 0o600,
            dir_mode: Some(0o700),
            owner,
            record: root.state(RECORD_FILE),
        },
        reload: Vec::new(),
        member,
    }
}

pub async fn run<O: Objects, K: Keys>(
    root: &Root,
    store: &Store<'_, O, K>,
    owner: Option<(u32, u32)>,
) -> Result<sync::Report, SyncError> {
    let config = root.node_config()?;
    // An etcd node runs this after attach: its claim says which member it is.
    let member = match config.role {
        Role::Etcd => Some(root.recorded::<Claim>(CLAIM_FILE, "attach")?.member),
        _ => None,
    };
    let source = source(root, &config, owner, member);
    let report = sync::pass(store, &source, Mode::AllOrNothing).await?;
    info!(
        written = report.written.len(),
        removed = report.removed.len(),
        kept = report.unchanged.len(),
        "secrets of {} in {} (from {})",
        config.role,
        source.target.dir.display(),
        source.prefixes.join(", ")
    );
    Ok(report)
}
