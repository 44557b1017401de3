//! `nodeboot stage etcd`: the etcd member's configuration, derived from
//! what this node holds and what the cluster says. The member name comes
//! from the claimed member, the URLs from its ENI's address, the peers from
//! every member's tagged ENI (read from EC2, never hard-coded).
//!
//! Observe → plan ([`plan`], pure) → act → record:
//! - a volume that holds a member restarts as `existing` (after the version
//!   check: the binary may be at most one minor version from the one that
//!   last ran on the volume, recorded in [`ETCD_VERSION_FILE`]);
//! - a blank volume asks the other members (their client URLs, TLS with
//!   this member's certificate): nobody answers and no backup exists, or
//!   they are still forming the cluster → `new`; the cluster runs with
//!   quorum without this member → backup hook, remove this name's stale
//!   member, add this member as a learner, `existing` (promoted by
//!   [`promote`] once caught up); otherwise it touches nothing and stops
//!   ([`EtcdError::NoQuorum`], [`EtcdError::Busy`]).
//!
//! Writes `/run/nodeboot/etcd.env` (read by etcd-member.service); with
//! `--exec` it then replaces itself with etcd.

pub mod backups;
pub mod plan;

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tracing::{info, warn};

use super::attach::{Claim, CLAIM_FILE};
use super::{Root, StageError};
use crate::shared::backup::restore::{self, StageStep};
use crate::shared::cloud::{tags, CloudError, ClusterFilter, Compute};
use crate::shared::etcd::member_name;
use crate::shared::etcd::version::Version;
use crate::shared::etcd::{Client, Cluster, EtcdClientError, Member, TlsFiles};
use crate::shared::fault;
use crate::shared::fsutil;
use crate::shared::node_config::{ETCD_DATA_DIR, ETCD_ENV_FILE, ETCD_MOUNT_POINT, ETCD_VERSION_FILE, SECRETS_DIR};
use crate::shared::retry::{self, Attempt, Policy};
use plan::{Data, Evidence, Me, Observed, Plan, VolumeSeen};

pub use crate::shared::etcd::{CLIENT_PORT, PEER_PORT};

/// How long `promote` waits for this learner to catch up with the leader.
pub const PROMOTE_TIMEOUT: Duration = Duration::from_secs(600);
/// How long `MemberAdd` is asked again while etcd answers "unhealthy cluster".
const ADD_RETRY: Policy = Policy::new(
    Duration::from_millis(500),
    Duration::from_secs(2),
    Duration::from_secs(15),
);
const PROMOTE_RETRY: Policy = Policy::new(Duration::from_millis(200), Duration::from_secs(5), PROMOTE_TIMEOUT);

#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    #[error(transparent)]
    Cloud(#[from] CloudError),
    #[error("etcd members of {environment}: {detail}")]
    Members { environment: String, detail: String },
    #[error("{path} is missing: the etcd certificates come from `nodeboot stage secrets`")]
    NoCertificate { path: PathBuf },
    #[error("cannot run {binary}: {source}")]
    Exec { binary: String, source: std::io::Error },
    #[error(transparent)]
    Stage(#[from] StageError),
    /// A blank member that the cluster cannot take back (exit code 22).
    #[error(
        "{member} has a blank volume and cannot rejoin: {reason}. Nothing was changed. \
         Bring the missing members back (this stage retries), or restore the cluster from a backup: \
         nodeboot etcd restore --env <environment file>"
    )]
    NoQuorum { member: String, reason: String },
    /// A blank member that nobody answers, where the cluster existed (exit code 25).
    #[error(
        "{member} has a blank volume, no other etcd member answers, and the cluster existed: {evidence}. \
         It does not start a new, empty cluster beside the real data; nothing was changed. \
         Bring the other members back (this stage retries), or, if their data is gone, \
         restore a backup (nodeboot etcd restore --env <environment file>) \
         or recover from a surviving member (nodeboot etcd recover --env <environment file> --from-member N)"
    )]
    Existed { member: String, evidence: String },
    /// Another membership change is under way (exit code 23; the unit retries).
    #[error("{member} waits to join: {reason}")]
    Busy { member: String, reason: String },
    #[error("etcd cluster: {0}")]
    Client(#[from] EtcdClientError),
    #[error("backup before {change}: {detail}; the membership is unchanged")]
    Backup { change: String, detail: String },
    /// The binary is too far from the data's version (exit code 24).
    #[error(
        "etcd {binary} would open data last run by etcd {data} ({record}): etcd moves one minor version at a time; \
         run an etcd between them first (or set etcd_version back)"
    )]
    Version {
        binary: Version,
        data: Version,
        record: PathBuf,
    },
    #[error("cannot tell the etcd version: {detail}")]
    BinaryVersion { detail: String },
    #[error("promoting {member}: {detail}")]
    Promote { member: String, detail: String },
    /// This member's etcd runs but is not part of the cluster it talks to (exit code 26).
    #[error(
        "etcd member {member} runs but is not part of the cluster it talks to: {detail}. \
         Its data is left untouched. If the other members' cluster holds the real data, restore or rejoin this \
         member (nodeboot etcd restore --env <environment file>); if this member holds the newest data, \
         recover from it (nodeboot etcd recover --env <environment file> --from-member N)"
    )]
    Outside { member: String, detail: String },
    /// The restore request could not be read (exit code 23; the unit retries).
    #[error("reading the etcd restore request: {0}; nothing was changed")]
    Restore(String),
}

/// What the etcd stage asks of backups: `stage::etcd::backups::StageBackups`
/// implements it with the backup service's "backup now".
pub trait BackupHook {
    /// The cluster marker and the newest backup, as found: evidence that
    /// this environment's cluster has run before (so a blank member that
    /// finds nobody must not start a new cluster). `formatted` is the stage's.
    fn existed(&self) -> impl Future<Output = Result<Evidence, String>>;
    /// Takes a backup through `cluster` before `change`; an error stops the change.
    fn before_membership_change(&self, cluster: &Client, change: &str) -> impl Future<Output = Result<(), String>>;
    /// The restore `member` has not finished (`nodeboot etcd restore`), if any.
    fn pending_restore(&self, member: u32) -> impl Future<Output = Result<Option<restore::Pending>, String>>;
}

/// A backup through `client` before `change`, which it stops if it fails;
/// none while joining a restore's cluster (`restoring`), which holds the
/// backup it was just restored from.
async fn backup_before(
    backups: &impl BackupHook,
    client: &Client,
    change: &str,
    restoring: bool,
) -> Result<(), EtcdError> {
    if restoring {
        info!("no backup before {change}: the restored cluster holds the backup it was restored from");
        return Ok(());
    }
    backups
        .before_membership_change(client, change)
        .await
        .map_err(|detail| EtcdError::Backup {
            change: change.to_string(),
            detail,
        })
}

/// No backups: no evidence, and a membership change goes ahead without a
/// backup, saying so in the log (tests of the plan's acting half).
pub struct NoBackups;

impl BackupHook for NoBackups {
    async fn existed(&self) -> Result<Evidence, String> {
        Ok(Evidence::default())
    }

    async fn before_membership_change(&self, _cluster: &Client, change: &str) -> Result<(), String> {
        warn!("backup hook called before {change}: no backup taken (NoBackups)");
        Ok(())
    }

    async fn pending_restore(&self, _member: u32) -> Result<Option<restore::Pending>, String> {
        Ok(None)
    }
}

/// The TLS files of this member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tls {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Tls {
    pub fn for_member(root: &Root, member: u32) -> Tls {
        let dir = root.path(SECRETS_DIR).join("etcd");
        Tls {
            ca: dir.join("ca.crt"),
            cert: dir.join(format!("member-{member}.crt")),
            key: dir.join(format!("member-{member}.key")),
        }
    }

    pub fn files(&self) -> TlsFiles {
        TlsFiles {
            ca: self.ca.clone(),
            cert: self.cert.clone(),
            key: self.key.clone(),
        }
    }
}

fn url(ip: &str, port: u16) -> String {
    format!("https://{ip}:{port}")
}

/// `ETCD_INITIAL_CLUSTER` of a new cluster: every member's ENI.
pub fn cluster_from_enis(environment: &str, peers: &BTreeMap<u32, String>) -> String {
    let cluster: Vec<String> = peers
        .iter()
        .map(|(m, ip)| format!("{}={}", member_name(environment, *m), url(ip, PEER_PORT)))
        .collect();
    cluster.join(",")
}

/// etcd's periodic auto-compaction keeps this much history. kube-apiserver
/// compacts every 5 minutes (its `--etcd-compaction-interval` default,
/// which the render leaves), so in a running control plane etcd's own pass
/// finds the history already compacted; it is the backstop for writes no API
/// server compacts (the control plane down; nodeboot's locks and leases).
pub const AUTO_COMPACTION_RETENTION: &str = "1h";

/// How etcd manages its space: the environment's quota, etcd 3.5's
/// corruption checks (a restarted member compares its data with the
/// others' before it serves; the leader compares the followers' hashes at
/// each compaction; a mismatch raises `CORRUPT`), and periodic
/// auto-compaction. Names checked against etcd 3.5.16 (`tests/etcd_client.rs`).
pub fn space_env(quota_bytes: u64) -> Vec<(&'static str, String)> {
    vec![
        ("ETCD_QUOTA_BACKEND_BYTES", quota_bytes.to_string()),
        ("ETCD_AUTO_COMPACTION_MODE", "periodic".into()),
        ("ETCD_AUTO_COMPACTION_RETENTION", AUTO_COMPACTION_RETENTION.into()),
        ("ETCD_EXPERIMENTAL_INITIAL_CORRUPT_CHECK", "true".into()),
        ("ETCD_EXPERIMENTAL_COMPACT_HASH_CHECK_ENABLED", "true".into()),
    ]
}

/// What etcd is told, as `ETCD_*` variables in a fixed order.
pub fn member_env(
    environment: &str,
    claim: &Claim,
    initial_cluster: String,
    data_dir: &Path,
    existing: bool,
    tls: &Tls,
    quota_bytes: u64,
) -> Vec<(&'static str, String)> {
    let path = |p: &Path| p.display().to_string();
    let mut vars = vec![
        ("ETCD_NAME", member_name(environment, claim.member)),
        ("ETCD_DATA_DIR", path(data_dir)),
        ("ETCD_LISTEN_PEER_URLS", url(&claim.eni_ip, PEER_PORT)),
        (
            "ETCD_LISTEN_CLIENT_URLS",
            format!("{},{}", url(&claim.eni_ip, CLIENT_PORT), url("127.0.0.1", CLIENT_PORT)),
        ),
        ("ETCD_ADVERTISE_CLIENT_URLS", url(&claim.eni_ip, CLIENT_PORT)),
        ("ETCD_INITIAL_ADVERTISE_PEER_URLS", url(&claim.eni_ip, PEER_PORT)),
        ("ETCD_INITIAL_CLUSTER", initial_cluster),
        (
            "ETCD_INITIAL_CLUSTER_STATE",
            if existing { "existing" } else { "new" }.into(),
        ),
        ("ETCD_INITIAL_CLUSTER_TOKEN", format!("{environment}-etcd")),
        ("ETCD_CERT_FILE", path(&tls.cert)),
        ("ETCD_KEY_FILE", path(&tls.key)),
        ("ETCD_TRUSTED_CA_FILE", path(&tls.ca)),
        ("ETCD_CLIENT_CERT_AUTH", "true".into()),
        ("ETCD_PEER_CERT_FILE", path(&tls.cert)),
        ("ETCD_PEER_KEY_FILE", path(&tls.key)),
        ("ETCD_PEER_TRUSTED_CA_FILE", path(&tls.ca)),
        ("ETCD_PEER_CLIENT_CERT_AUTH", "true".into()),
    ];
    vars.extend(space_env(quota_bytes));
    vars
}

/// A new cluster starts from exactly the environment's members. (A running
/// one is what it says it is: after `etcd_count` changed, a node booted
/// with the old count still rejoins.)
pub fn check_count(environment: &str, peers: &BTreeMap<u32, String>, expected: u32) -> Result<(), EtcdError> {
    if peers.len() as u32 != expected {
        let detail = format!(
            "found {} member ENIs, the environment has {expected} members",
            peers.len()
        );
        return Err(EtcdError::Members {
            environment: environment.into(),
            detail,
        });
    }
    Ok(())
}

/// Every member's ENI address by member index, checked against the claim.
pub fn peers_from(
    environment: &str,
    enis: &[crate::shared::cloud::NetworkInterface],
    claim: &Claim,
) -> Result<BTreeMap<u32, String>, EtcdError> {
    let fail = |detail: String| EtcdError::Members {
        environment: environment.into(),
        detail,
    };
    let mut peers = BTreeMap::new();
    for eni in enis {
        let member: u32 = eni
            .tags
            .get(tags::MEMBER)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| fail(format!("{} has no valid {} tag", eni.id, tags::MEMBER)))?;
        if peers.insert(member, eni.private_ip.clone()).is_some() {
            return Err(fail(format!("two ENIs are tagged member {member}")));
        }
    }
    match peers.get(&claim.member) {
        Some(ip) if *ip == claim.eni_ip => Ok(peers),
        other => Err(fail(format!(
            "this node holds member {} at {}, but EC2 says {:?}",
            claim.member, claim.eni_ip, other
        ))),
    }
}

pub use crate::shared::etcd::observe_cluster;

/// The data's version must be at most one minor away from the binary's.
fn check_version(record: &Path, data: Data, binary: Version) -> Result<(), EtcdError> {
    if data == Data::Blank {
        return Ok(());
    }
    let text = match std::fs::read_to_string(record) {
        Ok(t) => t,
        // Data from before the record existed: nothing to compare with.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(StageError::io(record, e).into()),
    };
    let data_version: Version = text.trim().parse().map_err(|detail| StageError::BadFile {
        path: record.to_path_buf(),
        detail,
    })?;
    if Version::may_open(binary, data_version) {
        Ok(())
    } else {
        Err(EtcdError::Version {
            binary,
            data: data_version,
            record: record.to_path_buf(),
        })
    }
}

/// The version of an etcd binary, from `etcd --version`.
pub fn binary_version(binary: &str) -> Result<Version, EtcdError> {
    let out = std::process::Command::new(binary)
        .arg("--version")
        .output()
        .map_err(|source| EtcdError::Exec {
            binary: binary.into(),
            source,
        })?;
    let text = String::from_utf8_lossy(&out.stdout);
    Version::from_etcd_output(&text).ok_or_else(|| EtcdError::BinaryVersion {
        detail: format!("{binary} --version printed {:?}", text.lines().next().unwrap_or("")),
    })
}

/// Adds this member as a learner. Right after the stale member's removal
/// etcd 3.5 may answer "unhealthy cluster" (its strict reconfiguration
/// check, `mayAddMember`, wants the answering member connected to every
/// voting member for the last 5 s): asked again within `policy` here, as a
/// new run of the stage would take another backup first. Another learner
/// already joining is busy at once (exit 23; members join one at a time).
pub fn add_learner<C: Cluster>(
    cluster: &C,
    name: &str,
    peer_url: &str,
    policy: Policy,
) -> Result<crate::shared::etcd::Member, EtcdError> {
    let what = format!("etcd to add {name} ({peer_url}) as a learner");
    let added = retry::wait_blocking(&what, policy, || {
        match cluster.member_add(&[peer_url.to_string()], true) {
            Ok(m) => Attempt::Done(m),
            Err(e) if e.api_message().is_some_and(|m| m.contains("unhealthy")) => Attempt::Retry(e),
            Err(e) => Attempt::Fail(e),
        }
    });
    added.map_err(|gave| {
        let e = match gave {
            retry::Gave::Failed(e) | retry::Gave::Up { last: e, .. } => e,
        };
        match e.api_message() {
            Some(m) if m.contains("too many learner") || m.contains("unhealthy") => EtcdError::Busy {
                member: name.into(),
                reason: m.to_string(),
            },
            _ => e.into(),
        }
    })
}

/// The volume this data was last started on, on the etcd volume beside
/// `data/` (written by the stage with the version record).
pub const ETCD_VOLUME_RECORD: &str = "/var/lib/etcd/nodeboot-volume-id";
/// Since when this node has seen each learner (`<hex id> <unix seconds>` a
/// line): the clock of [`plan::STALE_LEARNER_AFTER`].
const LEARNERS_SEEN_FILE: &str = "/run/nodeboot/etcd-learners-seen";

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Whose data `data_dir` holds (its WAL) and, from `record`, the volume it
/// was last started on when that is not `volume`. `None` when the WAL cannot
/// be read: the data restarts as before, and the log says why.
pub fn read_held(data_dir: &Path, record: &Path, volume: &str) -> Option<plan::Held> {
    let id = match crate::shared::etcd::wal::identity(data_dir) {
        Ok(id) => id,
        Err(e) => {
            warn!("cannot tell whose etcd data this volume holds ({e}); it restarts unjudged");
            return None;
        }
    };
    let recorded = std::fs::read_to_string(record).ok().map(|t| t.trim().to_string());
    Some(plan::Held {
        member_id: id.member_id,
        cluster_id: id.cluster_id,
        moved_from: recorded.filter(|v| !v.is_empty() && v != volume),
    })
}

/// Keeps `data_dir/member` aside on the volume as `member.stale-<UTC time>`
/// (the restore's helper: a rename on the same volume, never a deletion).
pub fn set_aside(volume: &Path, data_dir: &Path, now_unix: i64) -> Result<PathBuf, EtcdError> {
    let label = format!("stale-{}", crate::shared::backup::compact_time(now_unix));
    let aside = volume.join(format!("member.{label}"));
    match restore::keep_aside(data_dir, volume, &label) {
        Ok(Some(path)) => Ok(path),
        Ok(None) => Ok(aside),
        Err(e) => Err(StageError::io(&aside, e).into()),
    }
}

/// Removes a learner the plan found stale, if etcd still lists it as a
/// learner (promoted meanwhile: left alone), and checks it is gone.
pub fn remove_stale_learner<C: Cluster>(cluster: &C, learner: &Member, reason: &str) -> Result<(), EtcdError> {
    let listed = cluster.member_list()?;
    match listed.iter().find(|m| m.id == learner.id) {
        None => return Ok(()),
        Some(m) if !m.is_learner => {
            info!("etcd member {} was promoted meanwhile: not removed", m.hex_id());
            return Ok(());
        }
        Some(_) => {}
    }
    match cluster.member_remove(learner.id) {
        Ok(()) => {}
        Err(e) if e.api_message().is_some_and(|m| m.contains("member not found")) => {}
        Err(e) => return Err(e.into()),
    }
    if cluster.member_list()?.iter().any(|m| m.id == learner.id) {
        return Err(EtcdError::Busy {
            member: learner.hex_id(),
            reason: "etcd still lists the learner just removed".into(),
        });
    }
    warn!(
        "removed etcd learner {} ({}): {reason}; later members can join",
        learner.hex_id(),
        learner.peer_urls.join(",")
    );
    Ok(())
}

/// The learners other than this member, each with how long this node has
/// seen it and whether EC2 leaves it a node: the instances that hold its
/// member's volume or ENI (its peer URL's address is its member's ENI).
pub async fn observe_learners(
    ec2: &impl Compute,
    filter: &ClusterFilter,
    enis: &[crate::shared::cloud::NetworkInterface],
    view: &plan::View,
    me: &Me,
    seen_file: &Path,
) -> Result<Vec<plan::LearnerSeen>, EtcdError> {
    let learners: Vec<&Member> = view
        .members
        .iter()
        .filter(|m| m.is_learner && !m.peer_urls.contains(&me.peer_url) && m.name != me.name)
        .collect();
    let now = unix_now();
    let ids: Vec<u64> = learners.iter().map(|m| m.id).collect();
    let since = learners_seen(seen_file, &ids, now);
    if learners.is_empty() {
        return Ok(Vec::new());
    }
    let volumes = ec2.volumes(filter).await?;
    let mut seen = Vec::new();
    for m in learners {
        let ip = m
            .peer_urls
            .first()
            .and_then(|u| u.strip_prefix("https://"))
            .and_then(|u| u.rsplit_once(':'))
            .map_or("", |(host, _)| host);
        let index = enis
            .iter()
            .find(|e| e.private_ip == ip)
            .and_then(|e| e.tags.get(tags::MEMBER).cloned());
        let mut holders: Vec<String> = Vec::new();
        if let Some(index) = &index {
            let attached = enis
                .iter()
                .filter(|e| e.tags.get(tags::MEMBER) == Some(index))
                .filter_map(|e| e.attachment.as_ref())
                .chain(
                    volumes
                        .iter()
                        .filter(|v| v.tags.get(tags::MEMBER) == Some(index))
                        .flat_map(|v| v.attachments.iter()),
                );
            holders.extend(attached.map(|a| a.instance_id.clone()));
        }
        holders.sort();
        holders.dedup();
        let states = if holders.is_empty() {
            BTreeMap::new()
        } else {
            ec2.instance_states(&holders).await?
        };
        let label = index.unwrap_or_else(|| format!("at {ip} (no member ENI has that address)"));
        let first = since.get(&m.id).copied().unwrap_or(now);
        seen.push(plan::LearnerSeen {
            id: m.id,
            waited: Duration::from_secs(now.saturating_sub(first).max(0) as u64),
            node: plan::node_seen(&label, &states),
        });
    }
    Ok(seen)
}

/// Since when (unix seconds) this node has seen each of `ids` a learner,
/// from `file`; learners not seen before are recorded now, the others
/// forgotten (a learner promoted or removed starts a new clock if it comes back).
fn learners_seen(file: &Path, ids: &[u64], now: i64) -> BTreeMap<u64, i64> {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    let known: BTreeMap<u64, i64> = text
        .lines()
        .filter_map(|l| {
            let (id, at) = l.split_once(' ')?;
            Some((u64::from_str_radix(id, 16).ok()?, at.trim().parse().ok()?))
        })
        .collect();
    let since: BTreeMap<u64, i64> = ids
        .iter()
        .map(|id| (*id, known.get(id).copied().unwrap_or(now)))
        .collect();
    if since != known {
        let text: String = since.iter().map(|(id, at)| format!("{id:x} {at}\n")).collect();
        if let Err(e) = fsutil::write_atomic(file, text.as_bytes(), 0o644) {
            warn!("cannot record {}: {e}", file.display());
        }
    }
    since
}

/// What the stage decided, for `--exec` and the log.
pub struct Configured {
    pub vars: Vec<(&'static str, String)>,
    /// This member joined as a learner: promote it once etcd runs.
    pub promote: bool,
}

/// Observes, plans and acts; writes the env file and the version record.
/// `binary` is the etcd version that will run (the image's on Flatcar, the
/// binary's with `--exec`).
pub async fn run(
    root: &Root,
    ec2: &impl Compute,
    backups: &impl BackupHook,
    binary: Version,
) -> Result<Configured, EtcdError> {
    let config = root.node_config()?;
    let claim: Claim = root.recorded(CLAIM_FILE, "attach")?;
    let tls = Tls::for_member(root, claim.member);
    for path in [&tls.ca, &tls.cert, &tls.key] {
        if !path.exists() {
            return Err(EtcdError::NoCertificate { path: path.clone() });
        }
    }
    let environment = &config.environment;
    let filter = ClusterFilter {
        environment: environment.clone(),
        role: config.role.to_string(),
    };
    let enis = ec2.network_interfaces(&filter).await?;
    let expected = config.etcd.as_ref().map_or(0, |e| e.members);
    let peers = peers_from(environment, &enis, &claim)?;
    let data_dir = root.path(ETCD_DATA_DIR);
    let mut data = if data_dir.join("member").is_dir() {
        Data::Member
    } else {
        Data::Blank
    };
    let record = root.path(ETCD_VERSION_FILE);
    check_version(&record, data, binary)?;

    let me = Me {
        name: member_name(environment, claim.member),
        peer_url: url(&claim.eni_ip, PEER_PORT),
    };
    // A restore this member has not finished decides first: data from before
    // it never starts, and a blank member joins the restored cluster through
    // the seed alone (another member may still run the old cluster).
    let pending = backups
        .pending_restore(claim.member)
        .await
        .map_err(EtcdError::Restore)?;
    let handled = pending
        .as_ref()
        .is_some_and(|p| restore::handled(&root.path(ETCD_MOUNT_POINT), &p.request));
    let step = restore::stage_step(pending.as_ref(), claim.member, data == Data::Blank, handled);
    let force = step == StageStep::ForceNewCluster;
    let through = match step {
        StageStep::AsUsual | StageStep::ForceNewCluster => None,
        StageStep::JoinThrough { members } => Some(members),
        StageStep::Wait(reason) => {
            return Err(EtcdError::Busy {
                member: me.name,
                reason,
            })
        }
    };
    let others: Vec<String> = peers
        .iter()
        .filter(|(m, _)| **m != claim.member && through.as_ref().is_none_or(|joined| joined.contains(m)))
        .map(|(_, ip)| url(ip, CLIENT_PORT))
        .collect();
    let client = Client::new(others, &tls.files())?;
    // Whose data the volume holds: judged against the cluster only when no
    // restore is under way (a restore decides about data from before it).
    let volume_record = root.path(ETCD_VOLUME_RECORD);
    let mut held = match (data, &pending) {
        (Data::Member, None) => read_held(&data_dir, &volume_record, &claim.volume_id),
        _ => None,
    };
    let mut rounds = 0;
    let (plan, members_seen) = loop {
        rounds += 1;
        let cluster = match (data, &held) {
            (Data::Member, None) => None,
            // Data restarts unless the cluster says it is stale: a cluster
            // that cannot be read says nothing, and must not keep it down.
            (Data::Member, Some(_)) => observe_cluster(&client).unwrap_or_else(|e| {
                warn!("cannot read the etcd cluster to judge this volume's data ({e}); it restarts unjudged");
                None
            }),
            (Data::Blank, _) => observe_cluster(&client)?,
        };
        let existed = if data == Data::Blank && cluster.is_none() {
            let mut existed = backups.existed().await.map_err(|detail| EtcdError::Backup {
                change: "deciding how to start".into(),
                detail,
            })?;
            let volumes: Vec<VolumeSeen> = ec2
                .volumes(&filter)
                .await?
                .into_iter()
                .map(|v| VolumeSeen {
                    member: v.tags.get(tags::MEMBER).cloned(),
                    formatted: v.tags.get(tags::FORMATTED).cloned(),
                    id: v.id,
                })
                .collect();
            existed.formatted = plan::formatted_before(&volumes, &claim.volume_id, plan::FORMATTED_MARGIN);
            existed
        } else {
            Evidence::default()
        };
        let members_seen = cluster.as_ref().map(|v| v.members.clone()).unwrap_or_default();
        let mut observed = Observed {
            data,
            me: me.clone(),
            cluster,
            existed,
            held: held.clone(),
            learners: Vec::new(),
        };
        // Learners matter only to a membership change: a blank member's, or
        // stale data's (EC2 is not asked for a plain restart).
        if let Some(view) = &observed.cluster {
            if data == Data::Blank || plan::stale(&observed).is_some() {
                let seen = root.path(LEARNERS_SEEN_FILE);
                observed.learners = observe_learners(ec2, &filter, &enis, view, &me, &seen).await?;
            }
        }
        let plan = plan::plan(&observed);
        info!(member = me.name, "etcd plan: {plan:?}");
        if rounds > 3 && matches!(plan, Plan::SetAside { .. } | Plan::RemoveLearner { .. }) {
            return Err(EtcdError::Busy {
                member: me.name,
                reason: format!("the membership changed under this stage three times; last plan {plan:?}"),
            });
        }
        match &plan {
            Plan::SetAside { reason } => {
                let aside = set_aside(&root.path(ETCD_MOUNT_POINT), &data_dir, unix_now())?;
                warn!(
                    member = me.name,
                    "stale etcd data: {reason}; it never starts as a voter: kept aside as {} (never deleted); \
                     this member rejoins with a blank data directory as a learner",
                    aside.display()
                );
                fault::point("etcd:after-aside");
                data = Data::Blank;
                held = None;
            }
            Plan::RemoveLearner { member, reason } => {
                let change = format!(
                    "removing etcd learner {} ({})",
                    member.hex_id(),
                    member.peer_urls.join(",")
                );
                backup_before(backups, &client, &change, through.is_some()).await?;
                remove_stale_learner(&client, member, reason)?;
            }
            _ => break (plan, members_seen),
        }
    };

    let names: BTreeMap<String, String> = peers
        .iter()
        .map(|(m, ip)| (url(ip, PEER_PORT), member_name(environment, *m)))
        .collect();
    let initial_cluster = match &plan {
        Plan::Restart => cluster_from_enis(environment, &peers),
        Plan::Bootstrap => {
            check_count(environment, &peers, expected)?;
            cluster_from_enis(environment, &peers)
        }
        Plan::Resume { .. } => plan::initial_cluster(&members_seen, &me, &names),
        Plan::Join { remove } => {
            let change = match remove {
                Some(m) => format!("replacing etcd member {} ({}) with a blank one", m.hex_id(), me.name),
                None => format!("adding etcd member {}", me.name),
            };
            backup_before(backups, &client, &change, through.is_some()).await?;
            fault::point("etcd:after-backup");
            if let Some(stale) = remove {
                match client.member_remove(stale.id) {
                    Ok(()) => info!(
                        "removed the stale etcd member {} ({})",
                        stale.hex_id(),
                        stale.peer_urls.join(",")
                    ),
                    Err(e) if e.api_message().is_some_and(|m| m.contains("member not found")) => {}
                    Err(e) => return Err(e.into()),
                }
                fault::point("etcd:after-remove");
            }
            let added = add_learner(&client, &me.name, &me.peer_url, ADD_RETRY)?;
            info!("added etcd member {} ({}) as a learner", added.hex_id(), me.peer_url);
            fault::point("etcd:after-add");
            plan::initial_cluster(&client.member_list()?, &me, &names)
        }
        Plan::Wait { reason } => {
            return Err(EtcdError::Busy {
                member: me.name,
                reason: reason.clone(),
            })
        }
        Plan::Refuse { reason } => {
            return Err(EtcdError::NoQuorum {
                member: me.name,
                reason: reason.clone(),
            })
        }
        Plan::Existed { evidence } => {
            return Err(EtcdError::Existed {
                member: me.name,
                evidence: evidence.clone(),
            })
        }
        Plan::SetAside { .. } | Plan::RemoveLearner { .. } => unreachable!("acted on in the loop above"),
    };

    let quota = config
        .etcd
        .as_ref()
        .map_or(crate::shared::etcd::space::DEFAULT_QUOTA_BYTES, |e| e.quota_bytes);
    let mut vars = member_env(
        environment,
        &claim,
        initial_cluster,
        &data_dir,
        plan.existing(),
        &tls,
        quota,
    );
    if force && plan == Plan::Restart {
        // `etcd recover --from-member`: this start only; the backup service
        // removes it once this member leads its cluster of one.
        warn!(
            "etcd recover: this member's data becomes a cluster of itself alone ({}=true)",
            restore::FORCE_NEW_CLUSTER
        );
        vars.push((restore::FORCE_NEW_CLUSTER, "true".into()));
    }
    let text: String = vars.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
    let path = root.path(ETCD_ENV_FILE);
    fsutil::write_atomic(&path, text.as_bytes(), 0o644).map_err(|e| StageError::io(&path, e))?;
    // On the volume's mount point (the mount stage made it); written before
    // etcd starts, so the next start compares with the version that ran last.
    if record.parent().is_some_and(Path::is_dir) {
        fsutil::write_atomic(&record, format!("{binary}\n").as_bytes(), 0o644)
            .map_err(|e| StageError::io(&record, e))?;
        // Where this data now starts: a snapshot or copy of this volume
        // carries this line to another volume, where it reads as moved.
        fsutil::write_atomic(&volume_record, format!("{}\n", claim.volume_id).as_bytes(), 0o644)
            .map_err(|e| StageError::io(&volume_record, e))?;
    }
    info!(
        member = claim.member,
        state = if plan.existing() { "existing" } else { "new" },
        "etcd member {} configured in {}",
        me.name,
        path.display()
    );
    Ok(Configured {
        vars,
        promote: matches!(plan, Plan::Join { .. } | Plan::Resume { .. }),
    })
}

/// `nodeboot stage etcd-promote`: once this member's etcd runs, makes it a
/// voting member as soon as etcd agrees it has caught up with the leader.
/// Done at once when it is not a learner; converges when rerun.
pub async fn promote(root: &Root, timeout: Duration) -> Result<(), EtcdError> {
    let config = root.node_config()?;
    let claim: Claim = root.recorded(CLAIM_FILE, "attach")?;
    let tls = Tls::for_member(root, claim.member);
    let me = Me {
        name: member_name(&config.environment, claim.member),
        peer_url: url(&claim.eni_ip, PEER_PORT),
    };
    // A learner serves neither MemberList nor MemberPromote ("rpc not
    // supported for learner"): ask the members its env file names.
    let env_file = root.path(ETCD_ENV_FILE);
    let text = std::fs::read_to_string(&env_file).map_err(|e| StageError::io(&env_file, e))?;
    let others = promote_endpoints(&text, &me.peer_url);
    let client = Client::new(others.clone(), &tls.files())?;
    // One client per member: its status and its linearizable member list
    // come from the same member, so they describe one cluster.
    let each = others
        .iter()
        .map(|e| Client::new(vec![e.clone()], &tls.files()))
        .collect::<Result<Vec<_>, _>>()?;
    let own = client_url_of(&me.peer_url).unwrap_or_default();
    let mine = Client::with_timeouts(vec![own.clone()], &tls.files(), OWN_STATUS_TIMEOUT, OWN_STATUS_TIMEOUT)?;
    // Started by `stage etcd --exec` just before it became etcd: when etcd
    // exits, this process is orphaned and has nothing left to promote.
    let parent = std::os::unix::process::parent_id();
    let outside_file = root.path(OUTSIDE_SINCE_FILE);
    let asked_since = std::time::Instant::now();
    let outcome = retry::wait(
        &format!("{} to be promoted", me.name),
        PROMOTE_RETRY.with_total(timeout),
        || async {
            if std::os::unix::process::parent_id() != parent {
                return Attempt::Fail(Halt::Other(
                    "the process that started this one (etcd) has exited".to_string(),
                ));
            }
            let own_ids = mine.status(&own).ok().map(|s| (s.member_id, s.cluster_id));
            let (id, learner) = match plan::standing(&me, own_ids, peers_view(&each).as_ref()) {
                plan::Standing::Unknown(why) => return Attempt::Retry(Halt::Other(why)),
                plan::Standing::Outside(why) => {
                    // Seen again a while later: a membership change seen half-way is not it.
                    let seen = outside_for(&outside_file);
                    if seen < OUTSIDE_CONFIRM {
                        return Attempt::Retry(Halt::Other(format!("{why} (asking again)")));
                    }
                    return Attempt::Fail(Halt::Outside(format!("{why}, for {}s", seen.as_secs())));
                }
                // Listed as a voter, but its own etcd has not answered yet:
                // the data it runs may be another cluster's (its peers list
                // this peer URL from before). Its own IDs decide once it
                // answers; the peers' word alone after a while.
                plan::Standing::Listed { learner: false, .. }
                    if own_ids.is_none() && asked_since.elapsed() < OWN_ANSWER_WAIT =>
                {
                    return Attempt::Retry(Halt::Other(
                        "listed as a voting member; waiting for its own etcd to answer with the member it runs".into(),
                    ));
                }
                plan::Standing::Listed { id, learner } => (id, learner),
            };
            let _ = std::fs::remove_file(&outside_file);
            if !learner {
                return Attempt::Done(false);
            }
            match client.member_promote(id) {
                Ok(()) => Attempt::Done(true),
                Err(e) => Attempt::Retry(Halt::Other(e.to_string())),
            }
        },
    )
    .await;
    match outcome {
        Ok(true) => info!("promoted etcd member {} to a voting member", me.name),
        Ok(false) => info!("etcd member {} is a voting member", me.name),
        Err(retry::Gave::Failed(Halt::Outside(detail))) => {
            return Err(EtcdError::Outside {
                member: me.name,
                detail,
            })
        }
        Err(e) => {
            return Err(EtcdError::Promote {
                member: me.name,
                detail: e.to_string(),
            })
        }
    }
    Ok(())
}

/// How long a member must be seen outside the cluster before `promote` fails for it.
const OUTSIDE_CONFIRM: Duration = Duration::from_secs(30);
/// Since when (unix seconds) this member has been seen outside the cluster,
/// kept across the promote unit's restarts: an etcd that exits (a removed
/// member) is restarted every 5 s, and its unit's stop stops this one too.
const OUTSIDE_SINCE_FILE: &str = "/run/nodeboot/etcd-outside-since";

/// How long this member has been seen outside the cluster, by `file`
/// (written now when it is not there yet).
fn outside_for(file: &Path) -> Duration {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let recorded = std::fs::read_to_string(file)
        .ok()
        .and_then(|t| t.trim().parse::<u64>().ok());
    let since = recorded.unwrap_or_else(|| {
        if let Err(e) = fsutil::write_atomic(file, format!("{now}\n").as_bytes(), 0o644) {
            warn!("cannot record {}: {e}", file.display());
        }
        now
    });
    Duration::from_secs(now.saturating_sub(since))
}
/// How long `promote` waits for this member's own etcd to confirm the
/// member it runs before it takes its peers' word that it is a voter (an
/// etcd that never published serves no client and never confirms).
const OWN_ANSWER_WAIT: Duration = Duration::from_secs(30);
/// This member's own status: an etcd that never published accepts the
/// connection and never answers.
const OWN_STATUS_TIMEOUT: Duration = Duration::from_secs(3);

/// Why `promote` stops.
enum Halt {
    Outside(String),
    Other(String),
}

impl std::fmt::Display for Halt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Halt::Outside(why) | Halt::Other(why) => f.write_str(why),
        }
    }
}

/// The cluster as the first other member with a leader sees it: its status
/// and its linearizable member list.
fn peers_view(each: &[Client]) -> Option<plan::PeersView> {
    each.iter().find_map(|client| {
        let endpoint = client.endpoints().first()?.clone();
        let status = client.status(&endpoint).ok().filter(|s| s.leader != 0)?;
        let members = client.member_list().ok()?;
        Some(plan::PeersView {
            endpoint,
            cluster_id: status.cluster_id,
            members,
        })
    })
}

/// The other members' client URLs, from the env file's initial cluster
/// (`name=https://IP:2380,...`; every member serves clients on IP:2379).
/// A cluster of one asks the member itself: it is a voter (a learner is
/// never alone), so it answers, and the member is found not to be a learner.
fn promote_endpoints(env_file: &str, my_peer_url: &str) -> Vec<String> {
    let peers = initial_cluster_peers(env_file);
    let others: Vec<String> = peers
        .iter()
        .filter(|peer| **peer != my_peer_url)
        .filter_map(|peer| client_url_of(peer))
        .collect();
    if others.is_empty() {
        return member_client_urls(env_file);
    }
    others
}

/// The peer URLs of the env file's `ETCD_INITIAL_CLUSTER` (`name=https://IP:2380,...`).
fn initial_cluster_peers(env_file: &str) -> Vec<&str> {
    let cluster = env_file
        .lines()
        .find_map(|l| l.strip_prefix("ETCD_INITIAL_CLUSTER="))
        .unwrap_or_default();
    cluster
        .split(',')
        .filter_map(|entry| entry.split_once('=').map(|(_, peer)| peer))
        .collect()
}

/// A member's client URL from its peer URL (every member serves clients on IP:2379).
fn client_url_of(peer: &str) -> Option<String> {
    peer.strip_suffix(&format!(":{PEER_PORT}"))
        .map(|base| format!("{base}:{CLIENT_PORT}"))
}

/// Every member's client URL, from the env file's initial cluster.
pub fn member_client_urls(env_file: &str) -> Vec<String> {
    initial_cluster_peers(env_file)
        .into_iter()
        .filter_map(client_url_of)
        .collect()
}

/// On a running etcd node (the secrets sync, the reboot coordinator): a
/// client of every member its env file names (this one included), with this
/// member's certificate; the member's own client URL and its name.
pub fn node_client(root: &Root) -> Result<(Client, String, String), EtcdError> {
    let claim: Claim = root.recorded(CLAIM_FILE, "attach")?;
    let env_path = root.path(ETCD_ENV_FILE);
    let env = std::fs::read_to_string(&env_path).map_err(|e| StageError::io(&env_path, e))?;
    let var = |name: &str| {
        env.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}=")))
            .map(|v| v.trim_matches('"').to_string())
    };
    let me = var("ETCD_ADVERTISE_CLIENT_URLS").ok_or_else(|| StageError::BadFile {
        path: env_path.clone(),
        detail: "no ETCD_ADVERTISE_CLIENT_URLS".into(),
    })?;
    let name = var("ETCD_NAME").unwrap_or_else(|| format!("member-{}", claim.member));
    let mut endpoints = member_client_urls(&env);
    if !endpoints.contains(&me) {
        endpoints.push(me.clone());
    }
    let client = Client::new(endpoints, &Tls::for_member(root, claim.member).files())?;
    Ok((client, me, name))
}

/// Replaces this process with etcd, configured by `vars`.
pub fn exec(binary: &str, vars: &[(&'static str, String)]) -> EtcdError {
    use std::os::unix::process::CommandExt;
    info!("exec {binary}");
    let source = std::process::Command::new(binary)
        .envs(vars.iter().map(|(k, v)| (*k, v)))
        .exec();
    EtcdError::Exec {
        binary: binary.into(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shared::cloud::NetworkInterface;

    fn eni(member: &str, ip: &str) -> NetworkInterface {
        NetworkInterface {
            id: format!("eni-{member}"),
            zone: "eu-west-1a".into(),
            subnet_id: "s".into(),
            private_ip: ip.into(),
            mac: "0e:00:00:00:00:01".into(),
            status: "in-use".into(),
            attachment: None,
            tags: [(tags::MEMBER.to_string(), member.to_string())].into(),
        }
    }

    fn claim(member: u32, ip: &str) -> Claim {
        Claim {
            member,
            instance_id: "i-1".into(),
            zone: "eu-west-1a".into(),
            volume_id: "vol-1".into(),
            device_name: "/dev/xvdf".into(),
            eni_id: "eni-x".into(),
            eni_ip: ip.into(),
            eni_mac: "0e:00:00:00:00:01".into(),
        }
    }

    #[test]
    fn initial_cluster_lists_every_member_by_eni_address() {
        let enis = [eni("2", "10.0.12.10"), eni("0", "10.0.10.10"), eni("1", "10.0.11.10")];
        let me = claim(1, "10.0.11.10");
        let peers = peers_from("env", &enis, &me).unwrap();
        check_count("env", &peers, 3).unwrap();
        let tls = Tls {
            ca: "/s/ca.crt".into(),
            cert: "/s/m.crt".into(),
            key: "/s/m.key".into(),
        };
        let vars: BTreeMap<_, _> = member_env(
            "env",
            &me,
            cluster_from_enis("env", &peers),
            Path::new("/d"),
            false,
            &tls,
            300 << 20,
        )
        .into_iter()
        .collect();
        assert_eq!(vars["ETCD_NAME"], "env-etcd-1");
        assert_eq!(
            vars["ETCD_INITIAL_CLUSTER"],
            "env-etcd-0=https://10.0.10.10:2380,env-etcd-1=https://10.0.11.10:2380,env-etcd-2=https://10.0.12.10:2380"
        );
        assert_eq!(vars["ETCD_ADVERTISE_CLIENT_URLS"], "https://10.0.11.10:2379");
        assert_eq!(vars["ETCD_INITIAL_CLUSTER_STATE"], "new");
        assert_eq!(vars["ETCD_QUOTA_BACKEND_BYTES"], "314572800");
        assert_eq!(vars["ETCD_EXPERIMENTAL_INITIAL_CORRUPT_CHECK"], "true");
        assert_eq!(vars["ETCD_EXPERIMENTAL_COMPACT_HASH_CHECK_ENABLED"], "true");
        assert_eq!(vars["ETCD_AUTO_COMPACTION_MODE"], "periodic");
        let vars: BTreeMap<_, _> = member_env(
            "env",
            &me,
            cluster_from_enis("env", &peers),
            Path::new("/d"),
            true,
            &tls,
            300 << 20,
        )
        .into_iter()
        .collect();
        assert_eq!(vars["ETCD_INITIAL_CLUSTER_STATE"], "existing");
    }

    #[test]
    fn a_learner_is_promoted_through_the_other_members() {
        let env = "ETCD_NAME=e-etcd-1\nETCD_INITIAL_CLUSTER=e-etcd-0=https://10.0.10.10:2380,e-etcd-1=https://10.0.11.10:2380,unstarted-9=https://10.0.12.10:2380\n";
        assert_eq!(
            promote_endpoints(env, "https://10.0.11.10:2380"),
            ["https://10.0.10.10:2379", "https://10.0.12.10:2379"]
        );
        assert!(promote_endpoints("", "x").is_empty());
        // A cluster of one: the member itself answers (a lab of one member
        // waited for ever with nobody to ask).
        let alone = "ETCD_INITIAL_CLUSTER=e-etcd-0=https://10.0.10.10:2380\n";
        assert_eq!(
            promote_endpoints(alone, "https://10.0.10.10:2380"),
            ["https://10.0.10.10:2379"]
        );
    }

    #[test]
    fn the_version_check_refuses_data_more_than_one_minor_away() {
        let dir = tempfile::tempdir().unwrap();
        let record = dir.path().join("etcd-version");
        let v = |s: &str| s.parse::<Version>().unwrap();
        // No record (data from before the record existed) and blank data pass.
        check_version(&record, Data::Member, v("3.6.0")).unwrap();
        std::fs::write(&record, "3.4.23\n").unwrap();
        check_version(&record, Data::Blank, v("3.6.0")).unwrap();
        check_version(&record, Data::Member, v("3.5.16")).unwrap();
        let err = check_version(&record, Data::Member, v("3.6.0")).unwrap_err();
        assert!(matches!(err, EtcdError::Version { .. }), "{err}");
        assert!(
            err.to_string()
                .contains("etcd 3.6.0 would open data last run by etcd 3.4.23"),
            "{err}"
        );
        std::fs::write(&record, "garbage\n").unwrap();
        let err = check_version(&record, Data::Member, v("3.5.16")).unwrap_err();
        assert!(err.to_string().contains("etcd-version"), "{err}");
    }

    /// A cluster whose answering members know no leader: a linearizable
    /// MemberList times out there (etcd 3.5.16: "etcdserver: request timed
    /// out" after ~9 s, seen in the lab), the local one answers.
    struct Leaderless {
        members: Vec<crate::shared::etcd::Member>,
    }

    impl Cluster for Leaderless {
        fn endpoints(&self) -> Vec<String> {
            vec!["https://10.0.11.10:2379".into(), "https://10.0.12.10:2379".into()]
        }
        fn status(&self, endpoint: &str) -> Result<crate::shared::etcd::Status, EtcdClientError> {
            if endpoint.contains("10.0.11.10") {
                return Err(EtcdClientError::Unreachable {
                    endpoint: endpoint.into(),
                    detail: "timeout: connect".into(),
                });
            }
            Ok(crate::shared::etcd::Status {
                endpoint: endpoint.into(),
                member_id: 3,
                leader: 0,
                ..Default::default()
            })
        }
        fn member_list(&self) -> Result<Vec<crate::shared::etcd::Member>, EtcdClientError> {
            Err(EtcdClientError::Api {
                endpoint: "https://10.0.12.10:2379".into(),
                call: "/v3/cluster/member/list".into(),
                code: 14,
                message: "etcdserver: request timed out".into(),
            })
        }
        fn member_list_local(&self, _endpoint: &str) -> Result<Vec<crate::shared::etcd::Member>, EtcdClientError> {
            Ok(self.members.clone())
        }
        fn member_add(&self, _: &[String], _: bool) -> Result<crate::shared::etcd::Member, EtcdClientError> {
            unreachable!("the observation changes nothing")
        }
        fn member_remove(&self, _: u64) -> Result<(), EtcdClientError> {
            unreachable!("the observation changes nothing")
        }
        fn member_promote(&self, _: u64) -> Result<(), EtcdClientError> {
            unreachable!("the observation changes nothing")
        }
    }

    #[test]
    fn a_cluster_without_a_leader_is_observed_and_refused_not_taken_for_busy() {
        let member = |id: u64, i: u32| crate::shared::etcd::Member {
            id,
            name: format!("env-etcd-{i}"),
            peer_urls: vec![format!("https://10.0.1{i}.10:2380")],
            client_urls: vec![format!("https://10.0.1{i}.10:2379")],
            is_learner: false,
        };
        let cluster = Leaderless {
            members: vec![member(1, 0), member(2, 1), member(3, 2)],
        };
        let view = observe_cluster(&cluster)
            .expect("a leaderless cluster is observed, not an error")
            .expect("one member answered");
        assert!(view.healthy.is_empty());
        assert_eq!(view.members.len(), 3);
        let me = Me {
            name: "env-etcd-0".into(),
            peer_url: "https://10.0.10.10:2380".into(),
        };
        let plan = plan::plan(&plan::Observed {
            data: Data::Blank,
            me,
            cluster: Some(view),
            existed: Evidence::default(),
            held: None,
            learners: vec![],
        });
        assert!(
            matches!(&plan, Plan::Refuse { reason } if reason.contains("no quorum without this member")),
            "{plan:?}"
        );
    }

    /// MemberAdd answering "unhealthy cluster" `refusals` times (etcd 3.5's
    /// strict reconfiguration check right after a removal), then adding.
    struct Reconfiguring {
        refusals: std::cell::Cell<u32>,
        message: &'static str,
        calls: std::cell::Cell<u32>,
    }

    impl Cluster for Reconfiguring {
        fn endpoints(&self) -> Vec<String> {
            vec!["https://10.0.11.10:2379".into()]
        }
        fn status(&self, _: &str) -> Result<crate::shared::etcd::Status, EtcdClientError> {
            unreachable!()
        }
        fn member_list(&self) -> Result<Vec<crate::shared::etcd::Member>, EtcdClientError> {
            unreachable!()
        }
        fn member_list_local(&self, _: &str) -> Result<Vec<crate::shared::etcd::Member>, EtcdClientError> {
            unreachable!()
        }
        fn member_add(
            &self,
            peer_urls: &[String],
            learner: bool,
        ) -> Result<crate::shared::etcd::Member, EtcdClientError> {
            self.calls.set(self.calls.get() + 1);
            if self.refusals.get() > 0 {
                self.refusals.set(self.refusals.get() - 1);
                return Err(EtcdClientError::Api {
                    endpoint: "https://10.0.11.10:2379".into(),
                    call: "/v3/cluster/member/add".into(),
                    code: 14,
                    message: self.message.into(),
                });
            }
            Ok(crate::shared::etcd::Member {
                id: 7,
                name: String::new(),
                peer_urls: peer_urls.to_vec(),
                client_urls: vec![],
                is_learner: learner,
            })
        }
        fn member_remove(&self, _: u64) -> Result<(), EtcdClientError> {
            unreachable!()
        }
        fn member_promote(&self, _: u64) -> Result<(), EtcdClientError> {
            unreachable!()
        }
    }

    #[test]
    fn a_learner_add_refused_as_unhealthy_right_after_a_removal_is_asked_again_in_the_same_run() {
        let fast = Policy::new(
            Duration::from_millis(1),
            Duration::from_millis(2),
            Duration::from_secs(5),
        );
        let cluster = Reconfiguring {
            refusals: 2.into(),
            message: "etcdserver: unhealthy cluster",
            calls: 0.into(),
        };
        let added =
            add_learner(&cluster, "env-etcd-0", "https://10.0.10.10:2380", fast).expect("added on the third call");
        assert!(added.is_learner && added.peer_urls == ["https://10.0.10.10:2380"]);
        assert_eq!(cluster.calls.get(), 3);
        // Another learner joining: busy at once (exit 23), not waited for here.
        let busy = Reconfiguring {
            refusals: 1.into(),
            message: "etcdserver: too many learner members in cluster",
            calls: 0.into(),
        };
        let err = add_learner(&busy, "env-etcd-0", "https://10.0.10.10:2380", fast).unwrap_err();
        assert!(matches!(err, EtcdError::Busy { .. }), "{err}");
        assert_eq!(busy.calls.get(), 1);
        // Still unhealthy when the bound runs out: busy (the unit retries).
        let stuck = Reconfiguring {
            refusals: u32::MAX.into(),
            message: "etcdserver: unhealthy cluster",
            calls: 0.into(),
        };
        let short = Policy::new(
            Duration::from_millis(1),
            Duration::from_millis(2),
            Duration::from_millis(20),
        );
        assert!(matches!(
            add_learner(&stuck, "env-etcd-0", "https://10.0.10.10:2380", short),
            Err(EtcdError::Busy { .. })
        ));
    }

    #[test]
    fn member_set_must_match_the_environment_and_the_claim() {
        let me = claim(0, "10.0.10.10");
        let two = [eni("0", "10.0.10.10"), eni("1", "10.0.11.10")];
        let peers = peers_from("env", &two, &me).unwrap();
        assert!(check_count("env", &peers, 3)
            .unwrap_err()
            .to_string()
            .contains("found 2 member ENIs, the environment has 3"));
        let dup = [eni("0", "10.0.10.10"), eni("0", "10.0.11.10"), eni("1", "10.0.12.10")];
        assert!(peers_from("env", &dup, &me)
            .unwrap_err()
            .to_string()
            .contains("two ENIs are tagged member 0"));
        let moved = [eni("0", "10.0.10.99"), eni("1", "10.0.11.10"), eni("2", "10.0.12.10")];
        assert!(peers_from("env", &moved, &me)
            .unwrap_err()
            .to_string()
            .contains("EC2 says"));
    }
}
