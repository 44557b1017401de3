//! Keeping a local directory equal to a prefix of the secrets bucket: the
//! kubelet's static pods (`nodeboot sync manifests`), other synced secrets
//! with a reload command, and the one-shot secrets stage.
//!
//! One pass: read each prefix's index with a conditional GET and list the
//! prefix (one ListObjectsV2 per 1,000 objects) only when the index changed
//! or cannot be trusted (`poll`), plan against the record of what nodeboot
//! placed, fetch and decrypt only what changed, then write atomically and
//! delete. An unchanged bucket costs one conditional GET per prefix (a 304)
//! and no KMS call; a pass that would delete plans from a listing it made
//! itself; a failed listing ends the pass before anything is planned, so it
//! deletes nothing.

pub mod caps;
pub mod plan;
pub mod poll;
pub mod target;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tracing::{debug, error, info, warn};

use crate::node::root::StageError;
use crate::shared::cloud::{IfChanged, Keys, ObjectEntry, Objects};
use crate::shared::secrets::index::{self, Index};
use crate::shared::secrets::{ObjectPath, SecretError, Store};
use plan::{Action, Name, Placed, Remote};
use poll::{IndexAnswer, Seen};
pub use target::Target;

/// A directory kept equal to the union of some prefixes; for a name under
/// several, the last prefix wins (a role's secret over a common one).
#[derive(Debug, Clone)]
pub struct Source {
    /// For logs: `manifests`, `secrets`, ...
    pub label: String,
    pub prefixes: Vec<String>,
    pub target: Target,
    /// Run (no shell) after a pass that changed a file.
    pub reload: Vec<String>,
    /// On an etcd member's node, its member index: the other members'
    /// private keys are neither fetched nor kept (and removed if placed).
    pub member: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Any object that fails to fetch or open fails the pass before a file
    /// is written (the boot stage: all of a role's secrets or none).
    AllOrNothing,
    /// An object that fails is logged and left as it is locally; the rest
    /// are synced (the long-running sync).
    BestEffort,
}

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Stage(#[from] StageError),
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Secret(#[from] SecretError),
    #[error("{label}: refused to remove all {files} files of {dir}: the bucket lists nothing under {prefixes} (put {marker} to mean it)")]
    EmptyRefused {
        label: String,
        files: usize,
        dir: String,
        prefixes: String,
        marker: String,
    },
    #[error("could not drop capabilities: {0}; refusing to run with them")]
    Capabilities(String),
    #[error("{label}: reload command {command:?} {outcome}")]
    Reload {
        label: String,
        command: Vec<String>,
        outcome: String,
    },
}

/// What one pass did.
#[derive(Debug, Default)]
pub struct Report {
    pub written: Vec<String>,
    pub removed: Vec<String>,
    /// Objects that changed in the bucket but not in content: recorded, not rewritten.
    pub unchanged: Vec<String>,
    /// Objects that could not be fetched or opened (best effort only).
    pub failed: Vec<SecretError>,
    /// The listing was empty and unmarked: these removals were refused.
    pub refused_empty: Option<SyncError>,
}

impl Report {
    pub fn changed(&self) -> bool {
        !self.written.is_empty() || !self.removed.is_empty()
    }
}

/// What a pass knows of one prefix.
struct Prefix<'a> {
    name: &'a str,
    /// What the node remembered from an earlier pass.
    prior: Option<&'a Seen>,
    answer: IndexAnswer,
    /// Complete: made by this pass, or remembered (`remembered`).
    listing: Vec<ObjectEntry>,
    remembered: bool,
}

/// Reads the index of `prefix`, conditional on the remembered one.
async fn read_index<O: Objects, K: Keys>(store: &Store<'_, O, K>, prefix: &str, etag: Option<&str>) -> IndexAnswer {
    let key = index::key(prefix);
    match store
        .objects
        .get_if_changed(&store.bucket, &key, etag, index::MAX_INDEX_BYTES)
        .await
    {
        Ok(IfChanged::NotModified) => IndexAnswer::NotModified,
        Ok(IfChanged::Missing) => IndexAnswer::Missing,
        Ok(IfChanged::Changed(object)) => match Index::parse(&object.body) {
            Ok(index) => IndexAnswer::Changed {
                etag: object.etag,
                index,
            },
            Err(e) => IndexAnswer::Unreadable(e),
        },
        Err(e) => IndexAnswer::Unreadable(e.to_string()),
    }
}

/// Each prefix of `source`: its index, and its listing, made now unless
/// `poll::cached` says the remembered one is current. One failed page fails
/// the pass.
async fn observe<'a, O: Objects, K: Keys>(
    store: &Store<'_, O, K>,
    source: &'a Source,
    saved: &'a BTreeMap<String, Seen>,
    now: u64,
) -> Result<Vec<Prefix<'a>>, SecretError> {
    let mut out = Vec::new();
    for name in &source.prefixes {
        let prior = saved.get(name);
        let answer = read_index(store, name, poll::condition(prior)).await;
        let (listing, remembered) = match poll::cached(prior, &answer, now, false) {
            Some(entries) => (index::listing(entries), true),
            None => (store.list(name).await?, false),
        };
        out.push(Prefix {
            name,
            prior,
            answer,
            listing,
            remembered,
        });
    }
    Ok(out)
}

/// Lists again every prefix whose listing was remembered: a plan that
/// deletes is made from listings of this pass only.
async fn relist<O: Objects, K: Keys>(store: &Store<'_, O, K>, prefixes: &mut [Prefix<'_>]) -> Result<(), SecretError> {
    for p in prefixes.iter_mut().filter(|p| p.remembered) {
        p.listing = store.list(p.name).await?;
        p.remembered = false;
    }
    Ok(())
}

/// The objects of the prefixes for the planner (see `remote_from_listings`).
fn remote<O: Objects, K: Keys>(
    store: &Store<'_, O, K>,
    source: &Source,
    prefixes: &[Prefix<'_>],
) -> (BTreeMap<Name, Remote>, bool) {
    let listings: Vec<(&str, Vec<ObjectEntry>)> = prefixes.iter().map(|p| (p.name, p.listing.clone())).collect();
    let (remote, marked, unusable) = remote_from_listings(&listings, source.member);
    for key in unusable {
        warn!(
            "{}: skipping s3://{}/{key}: not a usable file name",
            source.label, store.bucket
        );
    }
    (remote, marked)
}

/// What the next pass may trust, per prefix, and a log line when a prefix
/// starts or stops being listed every pass.
fn remember<O: Objects, K: Keys>(
    store: &Store<'_, O, K>,
    source: &Source,
    prefixes: &[Prefix<'_>],
    now: u64,
) -> BTreeMap<String, Seen> {
    let mut out = BTreeMap::new();
    for p in prefixes {
        let seen = if p.remembered {
            p.prior.cloned()
        } else {
            poll::after_listing(p.prior, &p.answer, index::entries(&p.listing), now)
        };
        let key = format!("s3://{}/{}", store.bucket, index::key(p.name));
        let why = match &p.answer {
            IndexAnswer::Missing => "is missing (an uploader older than this nodeboot?)".to_string(),
            IndexAnswer::Unreadable(e) => format!("cannot be used ({e})"),
            _ => "does not describe the listing (a writer that keeps no index, or an upload under way)".to_string(),
        };
        match (p.prior.is_some(), seen.is_some()) {
            (true, false) => info!(
                "{}: the index {key} {why}: listing {} every pass until an upload writes an index that describes it",
                source.label, p.name
            ),
            (false, false) => debug!("{}: the index {key} {why}: listed {}", source.label, p.name),
            (false, true) => debug!("{}: the index {key} describes {}: a 304 will do", source.label, p.name),
            (true, true) => {}
        }
        if let Some(seen) = seen {
            out.insert(p.name.to_string(), seen);
        }
    }
    out
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

/// What complete listings (prefix, its objects; the last prefix wins a
/// name) hold for the planner: the objects by local name, whether a prefix
/// holds the empty marker, and the keys that are no usable file name.
/// Pure: the S3 half of the planner's input, fuzzed in fuzz/.
pub fn remote_from_listings(
    listings: &[(&str, Vec<crate::shared::cloud::ObjectEntry>)],
    member: Option<u32>,
) -> (BTreeMap<Name, Remote>, bool, Vec<String>) {
    let mut remote = BTreeMap::new();
    let mut marked = false;
    let mut unusable = Vec::new();
    for (prefix, entries) in listings {
        for entry in entries {
            if entry.key.ends_with('/') {
                continue; // a console "folder" marker
            }
            if member.is_some_and(|m| crate::shared::secrets::layout::is_other_members_key(&entry.key, m)) {
                continue;
            }
            if index::is_index(&entry.key) {
                continue; // what the pass read first, never a file
            }
            if entry.key.strip_prefix(prefix) == Some(plan::EMPTY_MARKER) {
                marked = true;
                continue;
            }
            let parsed = ObjectPath::parse(&entry.key).ok();
            match parsed
                .as_ref()
                .and_then(|key| Some((key.clone(), key.strip_prefix(prefix)?)))
            {
                Some((key, name)) => {
                    remote.insert(
                        name,
                        Remote {
                            key,
                            etag: entry.etag.clone(),
                        },
                    );
                }
                None => unusable.push(entry.key.clone()),
            }
        }
    }
    (remote, marked, unusable)
}

/// One pass over `source`. Errors that end the pass (listing, local I/O)
/// come back as `Err`; in `BestEffort` mode objects that fail are in the report.
pub async fn pass<O: Objects, K: Keys>(
    store: &Store<'_, O, K>,
    source: &Source,
    mode: Mode,
) -> Result<Report, SecretError> {
    let target = &source.target;
    let saved = target.load_seen();
    let now = unix_now();
    let mut prefixes = observe(store, source, &saved, now).await?;
    let mut record = target.load_record();
    let (mut remote, mut marked, mut local, mut actions) = planned(store, source, &prefixes, &record)?;
    if prefixes.iter().any(|p| p.remembered) && actions.iter().any(|a| matches!(a, Action::Delete { .. })) {
        debug!("{}: the plan deletes: listing again first", source.label);
        relist(store, &mut prefixes).await?;
        (remote, marked, local, actions) = planned(store, source, &prefixes, &record)?;
    }
    let seen = remember(store, source, &prefixes, now);
    let mut report = Report::default();
    if let Some(files) = plan::refused_to_empty(&remote, marked, &actions) {
        let refused = SyncError::EmptyRefused {
            label: source.label.clone(),
            files,
            dir: target.dir.display().to_string(),
            prefixes: source.prefixes.join(", "),
            marker: source
                .prefixes
                .iter()
                .map(|p| format!("s3://{}/{p}{}", store.bucket, plan::EMPTY_MARKER))
                .collect::<Vec<_>>()
                .join(" or "),
        };
        error!(
            "{}: the bucket lists nothing under {} although nodeboot placed files in {}: refusing to remove all {files} files (an accidental `manifests upload --prune`?); to empty the directory on purpose, put {} (`nodeboot manifests upload --prune --allow-empty`)",
            source.label,
            source.prefixes.join(", "),
            target.dir.display(),
            source.prefixes.iter().map(|p| format!("{p}{}", plan::EMPTY_MARKER)).collect::<Vec<_>>().join(" or "),
        );
        actions.retain(|a| !matches!(a, Action::Delete { .. }));
        report.refused_empty = Some(refused);
    }
    if actions.is_empty() {
        target.prepare()?;
        if seen != saved {
            target.save_seen(&seen)?;
        }
        return Ok(report);
    }

    // Fetch and open everything first: in AllOrNothing mode a bad object
    // must stop the pass before the first write.
    let mut fetched = Vec::new();
    for action in &actions {
        let Action::Fetch { name, key } = action else { continue };
        match store.get(key).await {
            Ok(Some(f)) => fetched.push((name.clone(), key.clone(), f)),
            // Deleted since the listing: the next pass sees it gone.
            Ok(None) => debug!("{}: {key} vanished after the listing", source.label),
            Err(e) if mode == Mode::BestEffort => {
                error!("{}: {e}; keeping the local file as it is", source.label);
                report.failed.push(e);
            }
            Err(e) => return Err(e),
        }
    }

    target.prepare()?;
    for (name, key, f) in fetched {
        let placed = |stat| Placed {
            key: key.to_string(),
            etag: f.etag.clone(),
            stat,
        };
        if target.holds(&name, f.secret.expose()) {
            if let Some(stat) = target.stat(&name)? {
                record.insert(name.clone(), placed(stat));
            }
            report.unchanged.push(name.to_string());
            continue;
        }
        if local.contains_key(&name) && !record.contains_key(&name) {
            warn!(
                "{}: replacing {}, which nodeboot did not place, with {key}",
                source.label,
                target.path(&name).display()
            );
        }
        let stat = target.write(&name, f.secret.expose())?;
        record.insert(name.clone(), placed(stat));
        info!(
            "{}: wrote {} ({} bytes) from {key}",
            source.label,
            target.path(&name).display(),
            f.secret.len()
        );
        report.written.push(name.to_string());
        crate::shared::fault::point("sync-after-write");
    }
    for action in &actions {
        match action {
            Action::Delete { name } => {
                target.remove(name)?;
                record.remove(name);
                info!(
                    "{}: removed {} (its object is gone)",
                    source.label,
                    target.path(name).display()
                );
                report.removed.push(name.to_string());
            }
            Action::Forget { name, changed: true } => {
                record.remove(name);
                warn!(
                    "{}: {} is gone from the bucket but was changed locally since nodeboot placed it: left in place",
                    source.label,
                    target.path(name).display()
                );
            }
            Action::Forget { name, changed: false } => {
                record.remove(name);
            }
            Action::Fetch { .. } => {}
        }
    }
    target.save_record(&record)?;
    if seen != saved {
        target.save_seen(&seen)?;
    }
    Ok(report)
}

/// The planner's inputs and its plan: the objects, the marker, the local
/// files among the names it needs.
type Planned = (BTreeMap<Name, Remote>, bool, BTreeMap<Name, plan::Stat>, Vec<Action>);

fn planned<O: Objects, K: Keys>(
    store: &Store<'_, O, K>,
    source: &Source,
    prefixes: &[Prefix<'_>],
    record: &BTreeMap<Name, Placed>,
) -> Result<Planned, SecretError> {
    let (remote, marked) = remote(store, source, prefixes);
    let mut local = BTreeMap::new();
    for name in plan::names_to_stat(&remote, record) {
        if let Some(stat) = source.target.stat(name)? {
            local.insert(name.clone(), stat);
        }
    }
    let actions = plan::plan(&remote, record, &local);
    Ok((remote, marked, local, actions))
}

/// Runs `command` (no shell); the error says how it ended.
pub fn reload(label: &str, command: &[String]) -> Result<(), SyncError> {
    let fail = |outcome: String| SyncError::Reload {
        label: label.to_string(),
        command: command.to_vec(),
        outcome,
    };
    let (program, args) = command.split_first().ok_or_else(|| fail("is empty".into()))?;
    let status = std::process::Command::new(program)
        .args(args)
        .status()
        .map_err(|e| fail(format!("could not start: {e}")))?;
    if status.success() {
        info!("{label}: ran {command:?}");
        Ok(())
    } else {
        Err(fail(format!("failed: {status}")))
    }
}

/// When a long-running sync's passes happen: the first at once, the next
/// after a random phase of the interval, then one every interval (see
/// `poll::first_wait`); a pass that overruns delays the next, never two at once.
pub struct Passes {
    first: bool,
    ticker: tokio::time::Interval,
}

impl Passes {
    pub fn new(interval: Duration) -> Passes {
        let second = tokio::time::Instant::now() + poll::first_wait(interval, fastrand::f64());
        let mut ticker = tokio::time::interval_at(second, interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Passes { first: true, ticker }
    }

    /// Waits for the next pass's time.
    pub async fn next(&mut self) {
        if !std::mem::take(&mut self.first) {
            self.ticker.tick().await;
        }
    }
}

pub struct Options {
    pub interval: Duration,
    /// One pass, then exit with its outcome.
    pub once: bool,
}

/// The long-running sync: one pass over every source per interval. A pass
/// that fails is logged and the next one tries again; a reload that fails
/// is retried after the next pass.
pub async fn run<O: Objects, K: Keys>(
    store: &Store<'_, O, K>,
    sources: &[Source],
    options: &Options,
) -> Result<(), SyncError> {
    let mut reload_pending = vec![false; sources.len()];
    let mut passes = Passes::new(options.interval);
    let mut failing = vec![false; sources.len()];
    loop {
        passes.next().await;
        let mut first_error = None;
        for (i, source) in sources.iter().enumerate() {
            match pass(store, source, Mode::BestEffort).await {
                Ok(report) => {
                    if failing[i] {
                        info!("{}: the bucket answers again", source.label);
                        failing[i] = false;
                    }
                    reload_pending[i] |= report.changed();
                    if !report.changed() && report.failed.is_empty() {
                        debug!("{}: in sync", source.label);
                    }
                    if let Some(e) = report.refused_empty {
                        first_error.get_or_insert(e);
                    }
                    if let Some(e) = report.failed.into_iter().next() {
                        first_error.get_or_insert(SyncError::Secret(e));
                    }
                }
                Err(e) => {
                    warn!(
                        "{}: pass failed, nothing deleted; trying again in {}s: {e}",
                        source.label,
                        options.interval.as_secs()
                    );
                    failing[i] = true;
                    first_error.get_or_insert(SyncError::Secret(e));
                }
            }
            if reload_pending[i] && !source.reload.is_empty() {
                match reload(&source.label, &source.reload) {
                    Ok(()) => reload_pending[i] = false,
                    Err(e) => {
                        warn!("{e}; trying again after the next pass");
                        first_error.get_or_insert(e);
                    }
                }
            } else {
                reload_pending[i] = false;
            }
        }
        if options.once {
            return first_error.map_or(Ok(()), Err);
        }
    }
}

/// `UID:GID`, numeric.
pub fn parse_owner(s: &str) -> Result<(u32, u32), String> {
    let (uid, gid) = s.split_once(':').ok_or_else(|| format!("owner {s:?} is not UID:GID"))?;
    match (uid.parse(), gid.parse()) {
        (Ok(uid), Ok(gid)) => Ok((uid, gid)),
        _ => Err(format!("owner {s:?} is not UID:GID (numbers)")),
    }
}

/// What `nodeboot sync manifests` keeps on this node: the role's manifests
/// and the extra prefixes of node.json.
pub fn sources(
    root: &crate::node::root::Root,
    config: &crate::shared::node_config::NodeConfig,
) -> Result<Vec<Source>, SyncError> {
    let record = |dir: &str| record_path(root, dir);
    let mut out = Vec::new();
    if let Some(m) = &config.manifests {
        out.push(Source {
            label: "manifests".into(),
            prefixes: vec![prefix(&m.prefix)?],
            target: Target {
                dir: root.path(&m.dir),
                file_mode: 0o600,
                dir_mode: None,
                owner: None,
                record: record(&m.dir),
            },
            reload: Vec::new(),
            member: None,
        });
    }
    for s in &config.synced {
        let owner = s
            .owner
            .as_deref()
            .map(parse_owner)
            .transpose()
            .map_err(SyncError::Config)?;
        out.push(Source {
            label: s.prefix.trim_end_matches('/').to_string(),
            prefixes: vec![prefix(&s.prefix)?],
            target: Target {
                dir: root.path(&s.dir),
                file_mode: 0o600,
                dir_mode: Some(0o700),
                owner,
                record: record(&s.dir),
            },
            reload: s.reload.clone(),
            member: None,
        });
    }
    if out.is_empty() {
        return Err(SyncError::Config(
            "node.json has no manifests and nothing under synced: nothing to sync on this node".into(),
        ));
    }
    Ok(out)
}

/// Where the record of `dir` lives: on disk (SYNC_RECORD_DIR). A record an
/// older nodeboot left in /run/nodeboot/sync is moved there, and the log
/// says so; nothing is adopted without a record.
fn record_path(root: &crate::node::root::Root, dir: &str) -> PathBuf {
    let name = target::record_name(dir);
    let path = root.path(crate::shared::node_config::SYNC_RECORD_DIR).join(&name);
    let old = root.state("sync").join(&name);
    if !path.exists() && old.exists() {
        match move_file(&old, &path) {
            Ok(()) => warn!(
                "moved the record of placed files from {} to {} (it now survives reboots)",
                old.display(),
                path.display()
            ),
            Err(e) => warn!(
                "could not move the record of placed files from {} to {}: {e}; starting a new record",
                old.display(),
                path.display()
            ),
        }
    }
    path
}

/// Across filesystems (tmpfs to disk): an atomic copy, then the removal.
fn move_file(from: &Path, to: &Path) -> std::io::Result<()> {
    let bytes = std::fs::read(from)?;
    std::fs::create_dir_all(to.parent().expect("records live in a directory"))?;
    crate::shared::fsutil::write_atomic(to, &bytes, 0o600)?;
    std::fs::remove_file(from)
}

/// A prefix is a folder: `manifests/etcd/`, never a partial name.
fn prefix(p: &str) -> Result<String, SyncError> {
    ObjectPath::parse(p.trim_end_matches('/'))
        .map(|p| format!("{p}/"))
        .map_err(|e| SyncError::Config(format!("node.json: prefix {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_are_numeric_uid_gid() {
        assert_eq!(parse_owner("1000:27"), Ok((1000, 27)));
        assert!(parse_owner("core").is_err());
        assert!(parse_owner("core:core").is_err());
    }

    #[test]
    fn a_prefix_is_always_a_folder() {
        assert_eq!(prefix("manifests/etcd").unwrap(), "manifests/etcd/");
        assert_eq!(prefix("manifests/etcd/").unwrap(), "manifests/etcd/");
        assert!(prefix("../x").is_err());
    }
}
