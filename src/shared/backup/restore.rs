//! Restores on request, from one member. `nodeboot etcd restore` (operator)
//! writes a request naming the backup and the seed (a member whose node
//! runs); every etcd node's backup service acts on it:
//! - the seed stops etcd, restores the snapshot as a cluster of itself alone
//!   (a token of this restore's own) into a staging directory on the volume,
//!   moves the old data directory aside (kept as `member.pre-restore-<id>`,
//!   never deleted), moves the restored one in, has the etcd stage run again
//!   and etcd start, waits for a leader, reports done;
//! - every other member stops etcd, waits for the seed's done, moves its
//!   data aside the same way and has the etcd stage run again: with a blank
//!   volume it joins the restored cluster through the seed as a learner (the
//!   stage's ordinary join: one at a time, promoted once caught up);
//! - a member whose node was away comes back with the old data: its etcd
//!   stage waits ([`stage_step`]) instead of starting it, until its backup
//!   service moved the data aside, then joins.
//!
//! Requests and reports are sealed like secrets (envelope format 1), so only
//! a holder of the environment's KMS key can ask for a restore.
//!
//! Every step can be killed and rerun: the staging directory is renamed
//! into place only when complete, and a marker on the volume records that
//! this request's data is in place (the seed) or aside (the others).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use super::etcd::EtcdAccess;
use super::store::{BackupError, Backups};
use super::{compact_time, BackupId, PREFIX};
use crate::shared::cloud::{Keys, ObjectFiles, Objects};
use crate::shared::retry::{self, Attempt};
use crate::shared::secrets::{ObjectPath, SecretError, Store};

/// The request every member acts on; there is one at a time.
pub fn request_path() -> ObjectPath {
    ObjectPath::parse(&format!("{PREFIX}restore/request")).expect("a valid path")
}

pub fn report_path(request: &str, member: u32) -> ObjectPath {
    ObjectPath::parse(&format!("{PREFIX}restore/{request}/member-{member}")).expect("a valid path")
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// Unique per request: `<time>-<backup>`.
    pub id: String,
    pub backup: String,
    pub requested_unix: i64,
    /// The member that restores the backup; the others join it.
    #[serde(default)]
    pub seed: u32,
    #[serde(default)]
    pub kind: Kind,
}

/// What the seed's data becomes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A backup restored as a new cluster (`etcd restore`).
    #[default]
    Restore,
    /// Quorum lost, the seed survived: its own data becomes a cluster of
    /// itself alone (`etcd recover --from-member`: etcd's
    /// `--force-new-cluster`, which commits every entry of its log and keeps
    /// its cluster and member IDs); `backup` is empty.
    Recover,
}

impl Request {
    pub fn backup_id(&self) -> Option<BackupId> {
        BackupId::parse(&self.backup)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Stopping,
    Restoring,
    Starting,
    /// Not the seed: etcd stopped, waiting for the seed's restored cluster.
    Waiting,
    /// Not the seed: old data aside, joining the restored cluster.
    Joining,
    Done,
    Failed,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    pub request: String,
    pub member: u32,
    pub phase: Phase,
    /// The revision this member is at (once started).
    pub revision: i64,
    pub detail: String,
    pub unix: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error(transparent)]
    Secret(#[from] SecretError),
    #[error("{path}: unreadable: {detail}")]
    Bad { path: String, detail: String },
}

pub async fn read_json<T: for<'de> Deserialize<'de>, O: Objects, K: Keys>(
    store: &Store<'_, O, K>,
    path: &ObjectPath,
) -> Result<Option<T>, RequestError> {
    let Some(fetched) = store.get(path).await? else {
        return Ok(None);
    };
    serde_json::from_slice(fetched.secret.expose())
        .map(Some)
        .map_err(|e| RequestError::Bad {
            path: path.to_string(),
            detail: e.to_string(),
        })
}

pub async fn write_json<T: Serialize, O: Objects, K: Keys>(
    store: &Store<'_, O, K>,
    path: &ObjectPath,
    value: &T,
) -> Result<(), RequestError> {
    store.put(path, &serde_json::to_vec(value).expect("serialises")).await?;
    Ok(())
}

/// Whether `member` reported `request` done.
pub async fn is_done<O: Objects, K: Keys>(
    store: &Store<'_, O, K>,
    request: &Request,
    member: u32,
) -> Result<bool, RequestError> {
    let report: Option<Report> = read_json(store, &report_path(&request.id, member)).await?;
    Ok(report.is_some_and(|r| r.phase == Phase::Done))
}

/// What a member restores as: read from the etcd stage's `etcd.env`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberIdentity {
    pub name: String,
    pub peer_url: String,
    pub initial_cluster: String,
    pub token: String,
    pub data_dir: PathBuf,
}

impl MemberIdentity {
    /// What the etcd stage would configure: the name and peer URL of the
    /// claimed member, the initial cluster from every member's tagged ENI
    /// (read from EC2, so a restore needs no `etcd.env`: after a total loss
    /// the etcd stage may have refused to write one).
    pub fn from_enis(
        environment: &str,
        member: u32,
        enis: &[crate::shared::cloud::NetworkInterface],
        data_dir: PathBuf,
    ) -> Result<MemberIdentity, String> {
        let mut peers = BTreeMap::new();
        for eni in enis {
            let m: u32 = eni
                .tags
                .get(crate::shared::cloud::tags::MEMBER)
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| format!("{} has no valid {} tag", eni.id, crate::shared::cloud::tags::MEMBER))?;
            if peers.insert(m, eni.private_ip.clone()).is_some() {
                return Err(format!("two ENIs are tagged member {m}"));
            }
        }
        let peer = |ip: &str| format!("https://{ip}:{}", crate::shared::etcd::PEER_PORT);
        let name = |m: u32| crate::shared::etcd::member_name(environment, m);
        let mine = peers
            .get(&member)
            .ok_or_else(|| format!("no ENI is tagged member {member}"))?;
        Ok(MemberIdentity {
            name: name(member),
            peer_url: peer(mine),
            initial_cluster: peers
                .iter()
                .map(|(m, ip)| format!("{}={}", name(*m), peer(ip)))
                .collect::<Vec<_>>()
                .join(","),
            token: format!("{environment}-etcd"),
            data_dir,
        })
    }

    /// `--initial-cluster` of a cluster of this member alone (the seed's).
    pub fn alone(&self) -> String {
        format!("{}={}", self.name, self.peer_url)
    }
}

/// The commands a node restores with (program and arguments, no shell).
#[derive(Debug, Clone)]
pub struct Commands {
    pub stop_etcd: Vec<String>,
    /// Runs the etcd stage again (it configures etcd from the data now in
    /// place, or joins the restored cluster) without waiting for it.
    pub rerun_stage: Vec<String>,
    pub start_etcd: Vec<String>,
    /// `etcdutl` (3.5+) or `etcdctl` (3.4), possibly behind a `docker run` prefix.
    pub etcdutl: Vec<String>,
}

/// How far a restore moves the revision past the backup's: Kubernetes'
/// guidance for etcd 3.5 (`etcdutl snapshot restore --bump-revision
/// 1000000000 --mark-compacted`). Every revision the API servers and their
/// watchers saw before the restore is below the restored cluster's, and the
/// compaction mark makes every watch from an older revision fail and
/// re-list, instead of an informer silently missing what went back in time.
pub const REVISION_BUMP: i64 = 1_000_000_000;

/// The restored cluster's token: new for every restore request (the same on
/// every member of one restore), so its cluster and member IDs differ from
/// the old cluster's and from any earlier restore's, and a member still on
/// the old data can never join it, nor it the old cluster (etcd's recovery
/// guide restores with a new token).
pub fn restore_token(base: &str, request: &Request) -> String {
    format!("{base}-{}", request.id)
}

/// Whether this etcdutl knows `--bump-revision` (etcd 3.5.x from its later
/// patch releases; asked, not assumed, as the binary is the member's image's).
fn supports_bump(etcdutl: &[String]) -> bool {
    let Some((program, args)) = etcdutl.split_first() else {
        return false;
    };
    std::process::Command::new(program)
        .args(args)
        .args(["snapshot", "restore", "--help"])
        .output()
        .is_ok_and(|out| {
            String::from_utf8_lossy(&out.stdout).contains("--bump-revision")
                || String::from_utf8_lossy(&out.stderr).contains("--bump-revision")
        })
}

fn run(command: &[String], extra: &[&str]) -> Result<(), BackupError> {
    let (program, lead) = command
        .split_first()
        .ok_or_else(|| BackupError::Bad("an empty command".into()))?;
    let shown = format!("{} {}", command.join(" "), extra.join(" "));
    let out = Command::new(program)
        .args(lead)
        .args(extra)
        .env("ETCDCTL_API", "3")
        .output()
        .map_err(|e| BackupError::Command {
            command: shown.clone(),
            detail: e.to_string(),
        })?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        return Err(BackupError::Command {
            command: shown,
            detail: format!("{}: {}", out.status, stderr.trim().lines().last().unwrap_or("")),
        });
    }
    Ok(())
}

fn fsync_dir(dir: &Path) {
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Moves `data_dir/member` aside to `volume/member.<label>` (a dated label:
/// a restore's request, or the etcd stage's stale data), on the same volume
/// and never deleted, and syncs the volume's directory. `None`: no `member/`
/// (already aside, or never there). Renames only, so a kill leaves the data
/// either in place or aside.
pub fn keep_aside(data_dir: &Path, volume: &Path, label: &str) -> std::io::Result<Option<PathBuf>> {
    let current = data_dir.join("member");
    if !current.exists() {
        return Ok(None);
    }
    let aside = volume.join(format!("member.{label}"));
    std::fs::rename(&current, &aside)?;
    fsync_dir(volume);
    Ok(Some(aside))
}

/// Where a restore keeps its state on the etcd volume.
pub fn work_dir(volume: &Path) -> PathBuf {
    volume.join("nodeboot-restore")
}

/// The seed's marker: this request's restored data is in place.
fn in_place_marker(volume: &Path, request: &Request) -> PathBuf {
    work_dir(volume).join(format!("{}.in-place", request.id))
}

/// Another member's marker: its data from before this request is aside.
fn aside_marker(volume: &Path, request: &Request) -> PathBuf {
    work_dir(volume).join(format!("{}.aside", request.id))
}

/// Whether this member's data is already the restore's business done: the
/// restored data in place (the seed) or the old data aside (the others).
pub fn handled(volume: &Path, request: &Request) -> bool {
    in_place_marker(volume, request).exists() || aside_marker(volume, request).exists()
}

/// A restore this member has not reported done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    pub request: Request,
    /// The seed reported done: the restored cluster runs.
    pub seed_done: bool,
    /// Every member that reported done (the seed among them): the restored
    /// cluster's members, the ones a joiner asks.
    pub joined: Vec<u32>,
}

/// Reads the request and which of the `members` finished it.
pub async fn pending<O: Objects, K: Keys>(
    store: &Store<'_, O, K>,
    member: u32,
    members: u32,
) -> Result<Option<Pending>, RequestError> {
    let Some(request) = read_json::<Request, _, _>(store, &request_path()).await? else {
        return Ok(None);
    };
    if is_done(store, &request, member).await? {
        return Ok(None);
    }
    let mut joined = Vec::new();
    for m in (0..members.max(request.seed + 1)).filter(|m| *m != member) {
        if is_done(store, &request, m).await? {
            joined.push(m);
        }
    }
    let seed_done = request.seed == member || joined.contains(&request.seed);
    Ok(Some(Pending {
        request,
        seed_done,
        joined,
    }))
}

/// What the etcd stage does about a restore this member has not finished.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StageStep {
    /// No restore concerns this member: the stage plans as always.
    AsUsual,
    /// A blank volume whose old data (if any) is aside: join the restored
    /// cluster, asking only its members (the seed and those done: another
    /// member may still run the old cluster).
    JoinThrough { members: Vec<u32> },
    /// The seed of a recover: start its own data as a cluster of itself
    /// alone (`ETCD_FORCE_NEW_CLUSTER=true`, this start only).
    ForceNewCluster,
    /// Touch nothing (exit 23, retried): the backup service acts first.
    Wait(String),
}

/// Pure: the etcd stage's step for `member` during `pending`, with a blank
/// volume or not, the restore's marker on the volume or not. A volume that
/// holds data from before the restore is never started: the old cluster's
/// data must not come back beside the restored one.
pub fn stage_step(pending: Option<&Pending>, member: u32, blank: bool, handled: bool) -> StageStep {
    let Some(p) = pending else {
        return StageStep::AsUsual;
    };
    let (id, backup, seed) = (&p.request.id, &p.request.backup, p.request.seed);
    if seed == member {
        return if handled && p.request.kind == Kind::Recover && !blank {
            StageStep::ForceNewCluster
        } else if handled {
            StageStep::AsUsual
        } else {
            StageStep::Wait(format!(
                "restore {id}: this member restores backup {backup}; the backup service puts it in place"
            ))
        };
    }
    match (p.seed_done, handled, blank) {
        (false, _, _) => StageStep::Wait(format!(
            "restore {id}: member {seed} restores backup {backup} first; this member joins its cluster after"
        )),
        (true, false, _) => StageStep::Wait(format!(
            "restore {id}: the backup service keeps this member's data aside before it joins the restored cluster"
        )),
        (true, true, true) => StageStep::JoinThrough {
            members: p.joined.clone(),
        },
        (true, true, false) => StageStep::AsUsual,
    }
}

/// The Kubernetes API server's static pod, out of the kubelet's directory
/// for the whole of this member's restore, so that no API server (and no
/// watch cache) lives across the restore's revision jump: the manifest sync
/// is stopped first (else it would put the file back), the manifest is kept
/// on the etcd volume, and both come back once this member is done.
#[derive(Debug, Clone)]
pub struct StaticPods {
    /// The kubelet's static pod directory (`/etc/kubernetes/manifests`).
    pub dir: PathBuf,
    /// Where the manifests wait (on the etcd volume, kept across a reboot).
    pub held: PathBuf,
    /// The manifests taken out (`kube-apiserver.yaml`).
    pub names: Vec<String>,
    pub stop_sync: Vec<String>,
    pub start_sync: Vec<String>,
}

/// The API server's manifest, the one a restore takes out.
pub const API_SERVER_MANIFEST: &str = "kube-apiserver.yaml";

impl StaticPods {
    /// Stops the sync, then moves the manifests out (a copy on the volume
    /// first, then the file goes: the kubelet stops the pod). Converges.
    pub fn hold(&self) -> Result<(), BackupError> {
        if !self.held.is_dir() {
            info!("restore: stopping the manifest sync ({})", self.stop_sync.join(" "));
            run(&self.stop_sync, &[])?;
            std::fs::create_dir_all(&self.held).map_err(|e| BackupError::io(&self.held, e))?;
        }
        for name in &self.names {
            let (live, kept) = (self.dir.join(name), self.held.join(name));
            let Ok(bytes) = std::fs::read(&live) else {
                continue;
            };
            crate::shared::fsutil::write_atomic(&kept, &bytes, 0o600).map_err(|e| BackupError::io(&kept, e))?;
            std::fs::remove_file(&live).map_err(|e| BackupError::io(&live, e))?;
            info!(
                "restore: {name} taken out of {} (kept as {}): the kubelet stops the API server",
                self.dir.display(),
                kept.display()
            );
        }
        Ok(())
    }

    /// Puts the manifests back, starts the sync, then forgets the hold.
    /// Nothing to do when nothing is held.
    pub fn release(&self) -> Result<(), BackupError> {
        if !self.held.is_dir() {
            return Ok(());
        }
        for name in &self.names {
            let (live, kept) = (self.dir.join(name), self.held.join(name));
            let Ok(bytes) = std::fs::read(&kept) else {
                continue;
            };
            if !live.exists() {
                crate::shared::fsutil::write_atomic(&live, &bytes, 0o644).map_err(|e| BackupError::io(&live, e))?;
            }
            info!(
                "restore: {name} back in {}: the kubelet starts the API server",
                self.dir.display()
            );
        }
        info!("restore: starting the manifest sync ({})", self.start_sync.join(" "));
        run(&self.start_sync, &[])?;
        std::fs::remove_dir_all(&self.held).map_err(|e| BackupError::io(&self.held, e))
    }
}

/// How a member's pass over a request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acted {
    /// This member had reported done before.
    AlreadyDone,
    /// This member is done now.
    Done,
    /// Not the seed, and the seed has not restored yet: etcd is stopped,
    /// the next pass looks again.
    WaitingForSeed,
}

/// One member's restore, observed from the volume.
pub struct Restorer<'a, O, K, E> {
    pub backups: &'a Backups<'a, O, K>,
    pub store: &'a Store<'a, O, K>,
    pub etcd: &'a E,
    pub member: u32,
    pub identity: MemberIdentity,
    /// The etcd volume's mount point: the old data goes aside here.
    pub volume: PathBuf,
    pub endpoint: String,
    pub commands: Commands,
    /// The API server's static pod, held for the restore (none: no control plane here).
    pub static_pods: Option<StaticPods>,
    /// The etcd stage's env file (a recover's force flag goes from it).
    pub etcd_env: Option<PathBuf>,
    /// How long to wait for this member to see a leader after the start.
    pub wait: Duration,
}

impl<O: Objects + ObjectFiles, K: Keys, E: EtcdAccess> Restorer<'_, O, K, E> {
    fn work(&self) -> PathBuf {
        work_dir(&self.volume)
    }

    async fn report(&self, request: &Request, phase: Phase, revision: i64, detail: String) {
        info!(request = %request.id, phase = ?phase, "restore: {detail}");
        let report = Report {
            request: request.id.clone(),
            member: self.member,
            phase,
            revision,
            detail,
            unix: super::service::now_unix(),
        };
        if let Err(e) = write_json(self.store, &report_path(&request.id, self.member), &report).await {
            tracing::warn!("restore: cannot report progress: {e}");
        }
    }

    async fn last_report(&self, request: &Request, member: u32) -> Result<Option<Report>, BackupError> {
        read_json(self.store, &report_path(&request.id, member))
            .await
            .map_err(|e| BackupError::Bad(e.to_string()))
    }

    /// Acts on `request` unless this member already finished it.
    pub async fn act(&self, request: &Request) -> Result<Acted, BackupError> {
        if is_done(self.store, request, self.member)
            .await
            .map_err(|e| BackupError::Bad(e.to_string()))?
        {
            // A pass killed between its report and the release finishes it.
            self.release()?;
            return Ok(Acted::AlreadyDone);
        }
        if let Some(pods) = &self.static_pods {
            pods.hold()?;
        }
        let outcome = if request.seed == self.member && request.kind == Kind::Recover {
            self.recover(request).await.map(Some)
        } else if request.seed == self.member {
            self.restore(request).await.map(Some)
        } else {
            self.join(request).await
        };
        match outcome {
            Ok(Some(revision)) => {
                self.report(
                    request,
                    Phase::Done,
                    revision,
                    format!(
                        "{} is a healthy voting member at revision {revision}",
                        self.identity.name
                    ),
                )
                .await;
                self.release()?;
                Ok(Acted::Done)
            }
            Ok(None) => Ok(Acted::WaitingForSeed),
            Err(e) => {
                self.report(request, Phase::Failed, 0, e.to_string()).await;
                Err(e)
            }
        }
    }

    /// The seed of a recover: its own data, forced into a cluster of itself
    /// alone by the etcd stage's next run; the flag goes from the env file
    /// once etcd leads, so no later start forces again (that would drop the
    /// members that joined since).
    async fn recover(&self, request: &Request) -> Result<i64, BackupError> {
        let work = self.work();
        std::fs::create_dir_all(&work).map_err(|e| BackupError::io(&work, e))?;
        let marker = in_place_marker(&self.volume, request);
        if !marker.exists() {
            self.stop(request).await?;
            if !self.identity.data_dir.join("member").is_dir() {
                return Err(BackupError::Bad(format!(
                    "recover {}: {} holds no etcd data: recover from a member that does",
                    request.id,
                    self.identity.data_dir.display()
                )));
            }
            std::fs::write(&marker, "recover\n").map_err(|e| BackupError::io(&marker, e))?;
            fsync_dir(&work);
        }
        if self.etcd.status(&self.endpoint).is_err() {
            self.report(
                request,
                Phase::Starting,
                0,
                "starting etcd on this member's own data as a new cluster of one (--force-new-cluster)".into(),
            )
            .await;
            self.start()?;
        }
        let revision = self.wait_healthy(0).await?;
        if let Some(env) = &self.etcd_env {
            drop_force_flag(env)?;
        }
        Ok(revision)
    }

    /// The seed: the backup restored here as a cluster of this member alone.
    async fn restore(&self, request: &Request) -> Result<i64, BackupError> {
        let id = request.backup_id().ok_or_else(|| {
            BackupError::Bad(format!(
                "restore request {}: bad backup name {:?}",
                request.id, request.backup
            ))
        })?;
        let work = self.work();
        std::fs::create_dir_all(&work).map_err(|e| BackupError::io(&work, e))?;
        let marker = in_place_marker(&self.volume, request);
        if !marker.exists() {
            self.stop(request).await?;
            self.report(
                request,
                Phase::Restoring,
                0,
                format!(
                    "restoring backup {id} as {}, a new cluster of one member",
                    self.identity.name
                ),
            )
            .await;
            let staged = self.stage(request, &id).await?;
            self.swap_in(&staged, request)?;
            std::fs::write(&marker, id.name()).map_err(|e| BackupError::io(&marker, e))?;
            fsync_dir(&work);
        }
        if self.etcd.status(&self.endpoint).is_err() {
            self.report(
                request,
                Phase::Starting,
                0,
                format!("restored; starting etcd ({})", self.commands.start_etcd.join(" ")),
            )
            .await;
            self.start()?;
        }
        // At least the backup's revision: REVISION_BUMP above it where etcdutl bumped.
        self.wait_healthy(id.revision).await
    }

    /// Not the seed: once the seed's cluster runs, this member's data goes
    /// aside and the etcd stage joins it to that cluster. `None`: the seed
    /// has not restored yet.
    async fn join(&self, request: &Request) -> Result<Option<i64>, BackupError> {
        let work = self.work();
        std::fs::create_dir_all(&work).map_err(|e| BackupError::io(&work, e))?;
        let marker = aside_marker(&self.volume, request);
        if !marker.exists() {
            let mine = self.last_report(request, self.member).await?;
            if !mine.is_some_and(|r| r.phase == Phase::Waiting) {
                self.stop(request).await?;
            }
            let seed = self.last_report(request, request.seed).await?;
            let Some(seed) = seed.filter(|r| r.phase == Phase::Done) else {
                self.report(
                    request,
                    Phase::Waiting,
                    0,
                    format!(
                        "etcd stopped; waiting for member {} to restore backup {}",
                        request.seed, request.backup
                    ),
                )
                .await;
                return Ok(None);
            };
            if let Some(aside) = keep_aside(&self.identity.data_dir, &self.volume, &self.aside_label(request))
                .map_err(|e| BackupError::io(&self.aside(request), e))?
            {
                info!("restore: the old data directory is kept as {}", aside.display());
            }
            std::fs::write(&marker, format!("{}\n", seed.revision)).map_err(|e| BackupError::io(&marker, e))?;
            fsync_dir(&work);
        }
        let target = std::fs::read_to_string(&marker)
            .ok()
            .and_then(|t| t.trim().parse::<i64>().ok())
            .unwrap_or(0);
        if self.etcd.status(&self.endpoint).is_err() {
            self.report(
                request,
                Phase::Joining,
                0,
                format!(
                    "old data aside; joining member {}'s restored cluster as a learner",
                    request.seed
                ),
            )
            .await;
            self.start()?;
        }
        self.wait_healthy(target).await.map(Some)
    }

    fn release(&self) -> Result<(), BackupError> {
        self.static_pods.as_ref().map_or(Ok(()), StaticPods::release)
    }

    async fn stop(&self, request: &Request) -> Result<(), BackupError> {
        self.report(
            request,
            Phase::Stopping,
            0,
            format!("stopping etcd ({})", self.commands.stop_etcd.join(" ")),
        )
        .await;
        run(&self.commands.stop_etcd, &[])
    }

    /// The etcd stage again (it reads what is on the volume now), then etcd.
    fn start(&self) -> Result<(), BackupError> {
        run(&self.commands.rerun_stage, &[])?;
        run(&self.commands.start_etcd, &[])
    }

    fn aside_label(&self, request: &Request) -> String {
        format!("pre-restore-{}", request.id)
    }

    fn aside(&self, request: &Request) -> PathBuf {
        self.volume.join(format!("member.{}", self.aside_label(request)))
    }

    /// The restored data directory, complete, in `work/<request>/`.
    async fn stage(&self, request: &Request, id: &BackupId) -> Result<PathBuf, BackupError> {
        let work = self.work();
        let staged = work.join(&request.id);
        if staged.join("member").is_dir() {
            return Ok(staged);
        }
        let snapshot = work.join(format!("{}.db", id.name()));
        if !snapshot.exists() {
            self.backups.download(id, &snapshot).await?;
        }
        // etcdutl refuses an existing data directory: restore into a
        // temporary one (ours alone; a killed run's leftover is removed)
        // and rename it when complete.
        let partial = work.join(format!("{}.partial", request.id));
        if partial.exists() {
            std::fs::remove_dir_all(&partial).map_err(|e| BackupError::io(&partial, e))?;
        }
        let p = |p: &Path| p.display().to_string();
        let token = restore_token(&self.identity.token, request);
        let mut args = vec![
            "snapshot".to_string(),
            "restore".into(),
            p(&snapshot),
            "--name".into(),
            self.identity.name.clone(),
            "--initial-cluster".into(),
            self.identity.alone(),
            "--initial-cluster-token".into(),
            token,
            "--initial-advertise-peer-urls".into(),
            self.identity.peer_url.clone(),
            "--data-dir".into(),
            p(&partial),
        ];
        let bump = supports_bump(&self.commands.etcdutl);
        if bump {
            args.extend([
                "--bump-revision".into(),
                REVISION_BUMP.to_string(),
                "--mark-compacted".into(),
            ]);
        } else {
            warn!(
                "restore: {} has no --bump-revision (etcd before 3.5's later patches): the revision goes back to \
                 the backup's; restart every kube-apiserver after the restore so no watch cache outlives it",
                self.commands.etcdutl.join(" ")
            );
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run(&self.commands.etcdutl, &args)?;
        std::fs::rename(&partial, &staged).map_err(|e| BackupError::io(&staged, e))?;
        fsync_dir(&work);
        let _ = std::fs::remove_file(&snapshot);
        Ok(staged)
    }

    /// Old `member/` aside (kept), restored `member/` in.
    fn swap_in(&self, staged: &Path, request: &Request) -> Result<(), BackupError> {
        let data = &self.identity.data_dir;
        let current = data.join("member");
        if let Some(aside) = keep_aside(data, &self.volume, &self.aside_label(request))
            .map_err(|e| BackupError::io(&self.aside(request), e))?
        {
            info!("restore: the old data directory is kept as {}", aside.display());
        }
        std::fs::create_dir_all(data).map_err(|e| BackupError::io(data, e))?;
        std::fs::rename(staged.join("member"), &current).map_err(|e| BackupError::io(&current, e))?;
        fsync_dir(data);
        Ok(())
    }

    /// This member answers as a voting member (a learner is promoted by
    /// `nodeboot-etcd-promote.service` once caught up), sees a leader, and
    /// is at or past `revision`.
    async fn wait_healthy(&self, revision: i64) -> Result<i64, BackupError> {
        let policy = retry::Policy::new(Duration::from_millis(200), Duration::from_secs(3), self.wait);
        retry::wait("this member to serve the restored cluster", policy, || async {
            match self.etcd.status(&self.endpoint) {
                Ok(s) if s.leader == 0 => Attempt::Retry("no leader yet".to_string()),
                Ok(s) if s.is_learner => Attempt::Retry("a learner, not yet promoted".to_string()),
                Ok(s) if s.revision >= revision => Attempt::Done(s.revision),
                Ok(s) => Attempt::Retry(format!("at revision {}, below {revision}", s.revision)),
                Err(e) => Attempt::Retry(e),
            }
        })
        .await
        .map_err(|e| BackupError::Timeout(e.to_string()))
    }
}

/// The force flag the etcd stage wrote for a recover's first start.
pub const FORCE_NEW_CLUSTER: &str = "ETCD_FORCE_NEW_CLUSTER";

/// Removes the force flag from the env file (atomically; nothing to do
/// when it is not there).
fn drop_force_flag(env: &Path) -> Result<(), BackupError> {
    let Ok(text) = std::fs::read_to_string(env) else {
        return Ok(());
    };
    let kept: String = text
        .lines()
        .filter(|l| !l.starts_with(&format!("{FORCE_NEW_CLUSTER}=")))
        .map(|l| format!("{l}\n"))
        .collect();
    if kept != text {
        crate::shared::fsutil::write_atomic(env, kept.as_bytes(), 0o644).map_err(|e| BackupError::io(env, e))?;
        info!("recover: {FORCE_NEW_CLUSTER} removed from {}", env.display());
    }
    Ok(())
}

/// A recover request: `seed`'s own data becomes the cluster.
pub fn new_recover(seed: u32, now_unix: i64) -> Request {
    Request {
        id: format!("{}-recover-from-{seed}", compact_time(now_unix)),
        backup: String::new(),
        requested_unix: now_unix,
        seed,
        kind: Kind::Recover,
    }
}

/// A new request's id: when it was made and what it restores; `seed`
/// restores, the others join it.
pub fn new_request(backup: &BackupId, now_unix: i64, seed: u32) -> Request {
    Request {
        id: format!("{}-{}", compact_time(now_unix), backup.name()),
        backup: backup.name(),
        requested_unix: now_unix,
        seed,
        kind: Kind::Restore,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_member_identity_from_enis_matches_the_etcd_stage() {
        let eni = |m: &str, ip: &str| crate::shared::cloud::NetworkInterface {
            id: format!("eni-{m}"),
            zone: "z".into(),
            subnet_id: "s".into(),
            private_ip: ip.into(),
            mac: "m".into(),
            status: "in-use".into(),
            attachment: None,
            tags: [(crate::shared::cloud::tags::MEMBER.to_string(), m.to_string())].into(),
        };
        let enis = [eni("1", "10.0.11.10"), eni("0", "10.0.10.10")];
        let id = MemberIdentity::from_enis("e", 1, &enis, "/d".into()).unwrap();
        assert_eq!(id.name, "e-etcd-1");
        assert_eq!(id.peer_url, "https://10.0.11.10:2380");
        assert_eq!(
            id.initial_cluster,
            "e-etcd-0=https://10.0.10.10:2380,e-etcd-1=https://10.0.11.10:2380"
        );
        assert_eq!(id.token, "e-etcd");
        assert!(MemberIdentity::from_enis("e", 2, &enis, "/d".into())
            .unwrap_err()
            .contains("member 2"));
    }

    #[test]
    fn every_restore_has_a_token_of_its_own() {
        let backup = BackupId {
            unix: 1_790_000_000,
            revision: 9,
        };
        let (first, second) = (
            new_request(&backup, 1_790_000_100, 0),
            new_request(&backup, 1_790_000_200, 0),
        );
        let token = restore_token("e-etcd", &first);
        assert_ne!(token, "e-etcd", "never the bootstrap's token");
        assert_ne!(token, restore_token("e-etcd", &second), "never an earlier restore's");
        assert_eq!(
            token,
            restore_token("e-etcd", &first.clone()),
            "the same on every member"
        );
    }

    #[test]
    fn request_ids_name_time_and_backup() {
        let r = new_request(
            &BackupId {
                unix: 1_790_000_000,
                revision: 9,
            },
            1_790_000_100,
            1,
        );
        assert_eq!(r.seed, 1);
        assert_eq!(r.id, "20260921T141500Z-20260921T141320Z-r9");
        assert_eq!(
            report_path(&r.id, 2).as_str(),
            "backups/etcd/restore/20260921T141500Z-20260921T141320Z-r9/member-2"
        );
        assert_eq!(
            r.backup_id(),
            Some(BackupId {
                unix: 1_790_000_000,
                revision: 9
            })
        );
    }

    #[test]
    fn the_etcd_stage_never_starts_data_from_before_a_restore() {
        use StageStep::*;
        let request = new_request(
            &BackupId {
                unix: 1_790_000_000,
                revision: 9,
            },
            1_790_000_100,
            1,
        );
        let pending = |seed_done| Pending {
            request: request.clone(),
            seed_done,
            joined: if seed_done { vec![0, 1] } else { vec![] },
        };
        let wait = |step: StageStep| matches!(step, Wait(_));
        // (pending, member, blank, handled) -> step
        assert_eq!(stage_step(None, 0, false, false), AsUsual, "no restore");
        // The seed: waits until its restored data is in place, then starts it.
        assert!(wait(stage_step(Some(&pending(true)), 1, false, false)));
        assert!(wait(stage_step(Some(&pending(true)), 1, true, false)));
        assert_eq!(stage_step(Some(&pending(true)), 1, false, true), AsUsual);
        // Another member: nothing until the seed is done and its data is aside.
        for blank in [true, false] {
            for handled in [true, false] {
                assert!(
                    wait(stage_step(Some(&pending(false)), 0, blank, handled)),
                    "{blank} {handled}"
                );
            }
            assert!(wait(stage_step(Some(&pending(true)), 2, blank, false)), "{blank}");
        }
        assert_eq!(
            stage_step(Some(&pending(true)), 2, true, true),
            JoinThrough { members: vec![0, 1] },
            "asks the seed and the members that joined, never one that may run the old cluster"
        );
        // Joined already (its data is the restored cluster's): restarts as usual.
        assert_eq!(stage_step(Some(&pending(true)), 2, false, true), AsUsual);
        // A recover's seed forces its own data into a new cluster, once handled.
        let recover = Pending {
            request: new_recover(1, 1_790_000_100),
            seed_done: true,
            joined: vec![],
        };
        assert!(wait(stage_step(Some(&recover), 1, false, false)));
        assert_eq!(stage_step(Some(&recover), 1, false, true), ForceNewCluster);
        let Wait(reason) = stage_step(Some(&pending(false)), 0, false, false) else {
            unreachable!()
        };
        assert!(
            reason.contains("member 1 restores backup 20260921T141320Z-r9"),
            "{reason}"
        );
    }
}
