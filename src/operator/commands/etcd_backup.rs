//! `nodeboot etcd ...`: the operator's `status`, `backups`,
//! `verify-backup`, and the node's long-running `backup` service.
//!
//! How the operator reaches etcd: `backups` needs only the secrets bucket,
//! and `restore` (`etcd_restore.rs`) the bucket and EC2's describe calls (a
//! restore is a request the nodes act on, and they report their progress
//! there), so they run anywhere with the environment's AWS credentials. `status` talks to the members' client URLs, which are
//! private: run it where they are reachable (on the bastion, through
//! `ssh -F <(nodeboot ssh-config --env F) bastion`, or with `--endpoint`
//! through a tunnel), with the etcd client certificate of the local
//! secrets tree. `verify-backup` runs a scratch etcd on this machine.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;
use tracing::warn;

use super::inspect::Output;
use super::load_env;
use crate::operator::env::Environment;
use crate::operator::error::Error;
use crate::shared::backup::etcd::EtcdAccess;
use crate::shared::backup::service::now_unix;
use crate::shared::backup::store::{BackupError, Backups, Entry, Stored};
use crate::shared::backup::{rfc3339, BackupId};
use crate::shared::cloud::aws::{Kms, S3};
use crate::shared::etcd::space::{human_bytes, Alarm};
use crate::shared::etcd::CLIENT_PORT;
use crate::shared::etcd::{Client, Cluster, Member, Status, TlsFiles};
use crate::shared::retry::{self, Attempt};

pub(super) fn backups<'a>(env: &Environment, s3: &'a S3, kms: &'a Kms) -> Backups<'a, S3, Kms> {
    Backups::new(s3, kms, &env.secrets_bucket_name, &env.name, &env.kms_master_id)
}

fn with_operator<T>(env: &Environment, work: impl AsyncFnOnce(&S3, &Kms) -> Result<T, Error>) -> Result<T, Error> {
    super::operator_runtime(env, async |sdk| work(&S3::new(sdk), &Kms::new(sdk)).await)
}

fn age(unix: i64) -> String {
    let secs = (now_unix() - unix).max(0) as u64;
    short_duration(secs)
}

fn short_duration(secs: u64) -> String {
    humantime::format_duration(Duration::from_secs(secs))
        .to_string()
        .split(' ')
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
}

#[derive(Serialize)]
struct BackupRow {
    id: String,
    /// When the bucket stored it (`LastModified`): its age is from this, not
    /// from the time in its name (the taking node's clock).
    time: String,
    age_seconds: i64,
    revision: i64,
    bytes: u64,
    /// Set when it is older than two backup intervals: no member took one
    /// when due (every backup service down, or S3 refused them all).
    #[serde(skip_serializing_if = "Option::is_none")]
    warning: Option<String>,
}

/// Pure: the row of a backup stored at `stored.stored_unix`, at `now`; a
/// warning past two intervals (a healthy voting member would have taken one).
fn row(stored: &Stored, now: i64, interval: Duration) -> BackupRow {
    let e = &stored.entry;
    let age_seconds = (now - stored.stored_unix).max(0);
    let stale = age_seconds as u64 > 2 * interval.as_secs();
    BackupRow {
        id: e.id.name(),
        time: rfc3339(stored.stored_unix),
        age_seconds,
        revision: e.id.revision,
        bytes: e.size,
        warning: stale.then(|| {
            format!(
                "the newest backup is {} old, more than two backup intervals ({}): no member has backed up since; \
                 see each etcd node's journal (journalctl -u nodeboot-etcd-backup.service)",
                short_duration(age_seconds as u64),
                humantime::format_duration(interval)
            )
        }),
    }
}

/// `nodeboot etcd backups`: every backup, oldest first.
pub fn list(env_path: &Path, output: Output) -> Result<String, Error> {
    let env = load_env(env_path)?.env;
    let stored = with_operator(&env, async |s3, kms| Ok(backups(&env, s3, kms).listing().await?))?;
    let (now, interval) = (now_unix(), env.etcd_backup.interval);
    Ok(match output {
        Output::Json => serde_json::to_string_pretty(&stored.iter().map(|s| row(s, now, interval)).collect::<Vec<_>>())
            .expect("serialises"),
        Output::Table => {
            let mut t = comfy_table::Table::new();
            t.load_preset(comfy_table::presets::ASCII_FULL_CONDENSED)
                .set_header(vec!["Backup", "Time", "Age", "Revision", "Bytes"]);
            for s in &stored {
                let e = &s.entry;
                t.add_row(vec![
                    e.id.name(),
                    rfc3339(s.stored_unix),
                    age(s.stored_unix),
                    e.id.revision.to_string(),
                    e.size.to_string(),
                ]);
            }
            format!(
                "{t}\n{} backup(s) in s3://{}/{}",
                stored.len(),
                env.secrets_bucket_name,
                crate::shared::backup::PREFIX
            )
        }
    })
}

/// A client of `endpoints` with the operator's etcd client certificate
/// (`secure/etcd/client.*` of the local secrets tree, `dir` or the default).
/// The endpoints the operator asked for, else every member's client URL.
pub fn member_endpoints(env: &Environment, given: &[String]) -> Vec<String> {
    if !given.is_empty() {
        return given.to_vec();
    }
    env.etcd_members()
        .iter()
        .map(|m| format!("https://{}:{CLIENT_PORT}", m.ip))
        .collect()
}

pub fn operator_client(env: &Environment, dir: Option<&Path>, endpoints: Vec<String>) -> Result<Client, Error> {
    let dir = dir
        .map(Path::to_path_buf)
        .unwrap_or_else(|| crate::shared::secrets::layout::default_dir(&env.name))
        .join("secure/etcd");
    let tls = TlsFiles {
        ca: dir.join("ca.crt"),
        cert: dir.join("client.crt"),
        key: dir.join("client.key"),
    };
    Client::new(endpoints, &tls).map_err(Error::Etcd)
}

#[derive(Serialize)]
struct MemberRow {
    name: String,
    endpoint: String,
    healthy: bool,
    leader: bool,
    revision: i64,
    raft_term: u64,
    db_size: i64,
    db_size_in_use: i64,
    /// The quota the member runs with, from its metrics; `None` when it
    /// could not be read.
    quota_bytes: Option<i64>,
    /// The alarms this member raised (`NOSPACE`, `CORRUPT`).
    alarms: Vec<String>,
    version: String,
    error: Option<String>,
    /// Why this member's etcd, though it answers, is not part of the
    /// cluster (another cluster's data, a member ID the cluster does not
    /// list, never published); `None` for a member of it.
    outside: Option<String>,
}

#[derive(Serialize)]
struct AlarmRow {
    member: String,
    member_id: String,
    alarm: String,
}

#[derive(Serialize)]
struct StatusReport {
    environment: String,
    healthy: bool,
    leader: Option<String>,
    members: Vec<MemberRow>,
    /// Every alarm of the cluster (an alarm holds for all members).
    alarms: Vec<AlarmRow>,
    /// The environment's `etcd_quota_bytes`: what a member is given when its
    /// etcd stage next runs (a member's own is in `members[].quota_bytes`).
    environment_quota_bytes: u64,
    /// Why the cluster is not healthy; empty when it is.
    problems: Vec<String>,
    newest_backup: Option<BackupRow>,
}

pub struct StatusOptions {
    pub endpoints: Vec<String>,
    pub dir: Option<PathBuf>,
    pub output: Output,
}

/// One member's status and the quota it runs with, or why it did not answer.
type Answer = Result<(Status, Option<i64>), String>;

/// What `status` asked of the members.
struct Observed {
    /// Per endpoint that answered: the member list its own etcd holds (a
    /// member running another cluster's data answers with that cluster's).
    lists: BTreeMap<String, Vec<Member>>,
    /// Per endpoint: its status and quota, or why it did not answer.
    answers: Vec<(String, Answer)>,
    alarms: Result<Vec<Alarm>, String>,
    /// The environment's member index of each endpoint that is a member's
    /// client URL in the layout.
    indices: BTreeMap<String, u32>,
}

fn observe(env: &Environment, etcd: &Client, endpoints: &[String]) -> Observed {
    let lists = endpoints
        .iter()
        .filter_map(|e| Some((e.clone(), etcd.member_list_local(e).ok()?)))
        .collect();
    let indices = env
        .etcd_members()
        .iter()
        .map(|m| (format!("https://{}:{CLIENT_PORT}", m.ip), m.index))
        .collect();
    let answers = endpoints
        .iter()
        .map(|endpoint| {
            let answer = Cluster::status(etcd, endpoint).map_err(|e| e.to_string()).map(|s| {
                let quota = etcd.quota_bytes(endpoint).unwrap_or_else(|e| {
                    warn!("the quota of {endpoint}: {e}");
                    None
                });
                (s, quota)
            });
            (endpoint.clone(), answer)
        })
        .collect();
    Observed {
        lists,
        answers,
        alarms: etcd.alarms().map_err(|e| e.to_string()),
        indices,
    }
}

/// Pure: the cluster the members run, as most answering members see it
/// (a tie goes to the longer member list, then the lower ID): its ID and
/// member list. Not the first endpoint's: that may be the outsider.
fn the_cluster(observed: &Observed) -> Option<(u64, Vec<Member>)> {
    let mut votes: BTreeMap<u64, (usize, Vec<Member>)> = BTreeMap::new();
    for (endpoint, answer) in &observed.answers {
        let Ok((s, _)) = answer else { continue };
        let entry = votes.entry(s.cluster_id).or_default();
        entry.0 += 1;
        if let Some(list) = observed.lists.get(endpoint) {
            if list.len() > entry.1.len() {
                entry.1 = list.clone();
            }
        }
    }
    votes
        .into_iter()
        .max_by(|(a_id, a), (b_id, b)| {
            (a.0, a.1.len(), std::cmp::Reverse(*a_id)).cmp(&(b.0, b.1.len(), std::cmp::Reverse(*b_id)))
        })
        .map(|(id, (_, list))| (id, list))
}

/// Pure: why the member answering at `endpoint` with `s` is not part of
/// `cluster` (its ID and member list), or `None` when it is.
fn outside_reason(s: &Status, cluster: u64, members: &[Member]) -> Option<String> {
    const WAY_OUT: &str = "see the recovery runbook: nodeboot etcd restore when this cluster holds the real data, \
                           nodeboot etcd recover --from-member N when this member does";
    if s.cluster_id != cluster {
        return Some(format!(
            "its etcd runs as member {:x} of cluster {:x}, not in this cluster ({cluster:x}) (ID mismatch: the data of \
             another cluster; its etcd logs \"ID mismatch\" when it meets this cluster's members); {WAY_OUT}",
            s.member_id, s.cluster_id
        ));
    }
    match members.iter().find(|m| m.id == s.member_id) {
        None if !members.is_empty() => Some(format!(
            "its etcd runs as member {:x}, not in this cluster ({cluster:x}): the cluster does not list that ID (ID \
             mismatch: removed, or data from before a restore); {WAY_OUT}",
            s.member_id
        )),
        Some(m) if m.name.is_empty() => Some(format!(
            "its etcd runs as member {:x}, which this cluster ({cluster:x}) lists but never saw publish (its etcd logs \
             \"failed to publish local member\"); {WAY_OUT}",
            s.member_id
        )),
        _ => None,
    }
}

/// Pure: the report and whether the cluster is healthy: every member
/// answers, they agree on one leader, and no alarm holds.
fn assess(env: &Environment, observed: Observed, newest: Option<BackupRow>) -> StatusReport {
    let (cluster, listed) = the_cluster(&observed).unwrap_or_default();
    let names: BTreeMap<u64, String> = listed
        .iter()
        .filter(|m| !m.name.is_empty())
        .map(|m| (m.id, m.name.clone()))
        .collect();
    let name = |id: u64| names.get(&id).cloned().unwrap_or_else(|| format!("{id:x}"));
    // How the report names a member that is not part of the cluster: its
    // place in the environment, else the name its own etcd gives it.
    let label = |endpoint: &str, s: &Status| match observed.indices.get(endpoint) {
        Some(i) => format!("member {i}"),
        None => observed
            .lists
            .get(endpoint)
            .and_then(|l| l.iter().find(|m| m.id == s.member_id && !m.name.is_empty()))
            .map(|m| format!("member {}", m.name))
            .unwrap_or_else(|| format!("member {:x}", s.member_id)),
    };
    let alarms = observed.alarms.as_ref().map(Vec::as_slice).unwrap_or_default();
    let mut problems = Vec::new();
    let mut leaders = BTreeSet::new();
    let mut members = Vec::new();
    let mut clusters: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    for (endpoint, answer) in &observed.answers {
        let endpoint = endpoint.clone();
        match answer.clone() {
            Ok((s, quota_bytes)) => {
                let outside = outside_reason(&s, cluster, &listed);
                let shown = match &outside {
                    Some(_) => label(&endpoint, &s),
                    None => name(s.member_id),
                };
                clusters.entry(s.cluster_id).or_default().push(shown.clone());
                if let Some(reason) = &outside {
                    problems.push(format!("{shown} ({endpoint}): {reason}"));
                } else if s.has_leader() {
                    leaders.insert(s.leader);
                } else {
                    problems.push(format!("member {} ({endpoint}) knows no leader", name(s.member_id)));
                }
                members.push(MemberRow {
                    name: shown,
                    endpoint,
                    healthy: outside.is_none() && s.has_leader(),
                    leader: outside.is_none() && s.leader == s.member_id,
                    revision: s.revision,
                    raft_term: s.raft_term,
                    db_size: s.db_size,
                    db_size_in_use: s.db_size_in_use,
                    quota_bytes,
                    alarms: alarms
                        .iter()
                        .filter(|a| a.member_id == s.member_id)
                        .map(|a| a.kind.to_string())
                        .collect(),
                    version: s.version,
                    error: None,
                    outside,
                });
            }
            Err(e) => {
                problems.push(format!("{endpoint} does not answer"));
                members.push(MemberRow {
                    name: "?".into(),
                    endpoint,
                    healthy: false,
                    leader: false,
                    revision: 0,
                    raft_term: 0,
                    db_size: 0,
                    db_size_in_use: 0,
                    quota_bytes: None,
                    alarms: Vec::new(),
                    version: String::new(),
                    error: Some(e),
                    outside: None,
                });
            }
        }
    }
    if leaders.len() > 1 {
        problems.push(format!("the members name {} different leaders", leaders.len()));
    }
    if clusters.len() > 1 {
        let each: Vec<String> = clusters
            .iter()
            .map(|(id, who)| format!("cluster {id:x}: {}", who.join(", ")))
            .collect();
        problems.push(format!("the members run different clusters ({})", each.join("; ")));
    }
    for a in alarms {
        problems.push(format!(
            "member {} raises {}: {}",
            name(a.member_id),
            a.kind,
            a.kind.meaning()
        ));
    }
    if let Err(e) = &observed.alarms {
        problems.push(format!("the alarms could not be read: {e}"));
    }
    let leader = (leaders.len() == 1)
        .then(|| leaders.iter().next().map(|id| name(*id)))
        .flatten();
    StatusReport {
        environment: env.name.clone(),
        healthy: problems.is_empty() && leader.is_some(),
        leader,
        members,
        alarms: alarms
            .iter()
            .map(|a| AlarmRow {
                member: name(a.member_id),
                member_id: format!("{:x}", a.member_id),
                alarm: a.kind.to_string(),
            })
            .collect(),
        environment_quota_bytes: env.etcd_quota_bytes,
        problems,
        newest_backup: newest,
    }
}

/// `nodeboot etcd status`: each member's view, the leader, space and
/// alarms, the newest backup. Fails (exit 30) when a member does not
/// answer, the cluster has no leader, or an alarm holds (`NOSPACE`,
/// `CORRUPT`), naming the member.
pub fn status(env_path: &Path, options: StatusOptions) -> Result<String, Error> {
    let env = load_env(env_path)?.env;
    let endpoints = member_endpoints(&env, &options.endpoints);
    let etcd = operator_client(&env, options.dir.as_deref(), endpoints.clone())?;
    let observed = observe(&env, &etcd, &endpoints);
    let certificates = super::etcd_certs::status(&env, options.dir.as_deref(), &endpoints);
    let newest =
        with_operator(&env, async |s3, kms| Ok(backups(&env, s3, kms).listing().await?.pop())).unwrap_or_else(|e| {
            warn!("cannot list the backups: {e}");
            None
        });
    let report = assess(
        &env,
        observed,
        newest.as_ref().map(|s| row(s, now_unix(), env.etcd_backup.interval)),
    );
    let text = match options.output {
        Output::Json => super::etcd_certs::json(&report, &certificates),
        Output::Table => super::etcd_certs::with_lines(status_table(&report), &certificates),
    };
    if report.healthy && certificates.ending.is_empty() {
        Ok(text)
    } else if report.healthy {
        println!("{text}");
        Err(super::etcd_certs::failure(&env.name, &certificates))
    } else {
        println!("{text}");
        let why = if report.problems.is_empty() {
            "no leader".to_string()
        } else {
            report.problems.join("; ")
        };
        Err(Error::Unhealthy(format!("etcd of {} is not healthy: {why}", env.name)))
    }
}

fn status_table(r: &StatusReport) -> String {
    let mut t = comfy_table::Table::new();
    t.load_preset(comfy_table::presets::ASCII_FULL_CONDENSED)
        .set_header(vec![
            "Member", "Endpoint", "Health", "Leader", "Revision", "Term", "DB size", "In use", "Quota", "Alarms",
            "Version",
        ]);
    for m in &r.members {
        let quota = match (m.quota_bytes, &m.error) {
            (Some(q), _) => human_bytes(q),
            (None, None) => format!("{} (environment's)", human_bytes(r.environment_quota_bytes as i64)),
            (None, Some(_)) => String::new(),
        };
        t.add_row(vec![
            m.name.clone(),
            m.endpoint.clone(),
            match (&m.error, &m.outside) {
                (Some(e), _) => format!("unreachable: {e}"),
                (None, Some(_)) => "NOT in this cluster".into(),
                (None, None) if m.healthy => "healthy".into(),
                (None, None) => "no leader".into(),
            },
            if m.leader { "*".into() } else { String::new() },
            m.revision.to_string(),
            m.raft_term.to_string(),
            human_bytes(m.db_size),
            human_bytes(m.db_size_in_use),
            quota,
            m.alarms.join(","),
            m.version.clone(),
        ]);
    }
    let backup = match &r.newest_backup {
        Some(b) => format!("{} ({} s old, revision {})", b.id, b.age_seconds, b.revision),
        None => "none".into(),
    };
    let mut lines = vec![
        t.to_string(),
        format!(
            "cluster: {}; leader: {}; quota: each member's own (its metrics); the environment's etcd_quota_bytes: {}",
            if r.healthy { "healthy" } else { "NOT healthy" },
            r.leader.as_deref().unwrap_or("none"),
            human_bytes(r.environment_quota_bytes as i64)
        ),
    ];
    lines.extend(r.problems.iter().map(|p| format!("problem: {p}")));
    lines.push(format!("newest backup: {backup}"));
    if let Some(warning) = r.newest_backup.as_ref().and_then(|b| b.warning.as_ref()) {
        lines.push(format!("warning: {warning}"));
    }
    lines.join("\n")
}

pub(super) async fn choose(b: &Backups<'_, S3, Kms>, wanted: Option<&str>) -> Result<Entry, Error> {
    let entries = b.list().await?;
    match wanted {
        None => entries.last().cloned().ok_or_else(|| {
            BackupError::NoBackups {
                bucket: b.store.bucket.clone(),
            }
            .into()
        }),
        Some(w) => {
            let id = BackupId::parse(w)
                .ok_or_else(|| Error::Refused(format!("{w:?} is not a backup id (see `nodeboot etcd backups`)")))?;
            entries.into_iter().find(|e| e.id == id).ok_or_else(|| {
                BackupError::NotFound {
                    bucket: b.store.bucket.clone(),
                    key: id.key(),
                }
                .into()
            })
        }
    }
}

pub struct VerifyOptions {
    pub backup: Option<String>,
    pub etcd: String,
    pub etcdutl: String,
}

/// `nodeboot etcd verify-backup`: restores a backup into a scratch etcd here.
pub fn verify(env_path: &Path, options: VerifyOptions) -> Result<Vec<String>, Error> {
    let env = load_env(env_path)?.env;
    let scratch = tempfile::Builder::new()
        .prefix("nodeboot-verify-")
        .tempdir()
        .map_err(|e| Error::Write {
            path: "a scratch directory".into(),
            source: e,
        })?;
    let snapshot = scratch.path().join("snapshot.db");
    let started = Instant::now();
    let (entry, meta) = with_operator(&env, async |s3, kms| {
        let b = backups(&env, s3, kms);
        let entry = choose(&b, options.backup.as_deref()).await?;
        let meta = b.download(&entry.id, &snapshot).await?;
        Ok((entry, meta))
    })?;
    let downloaded = started.elapsed();
    let data = scratch.path().join("data");
    let restore_started = Instant::now();
    let port = free_port()?;
    let peer_port = free_port()?;
    let peer = format!("http://127.0.0.1:{peer_port}");
    let client = format!("http://127.0.0.1:{port}");
    let etcdutl = crate::shared::backup::words(&options.etcdutl);
    let run = |cmd: &[String], args: &[&str]| -> Result<(), Error> {
        let (program, lead) = cmd
            .split_first()
            .ok_or_else(|| Error::Refused("an empty command".into()))?;
        let out = std::process::Command::new(program)
            .args(lead)
            .args(args)
            .env("ETCDCTL_API", "3")
            .output()
            .map_err(|e| {
                Error::Backup(BackupError::Command {
                    command: program.clone(),
                    detail: e.to_string(),
                })
            })?;
        if out.status.success() {
            Ok(())
        } else {
            Err(Error::Backup(BackupError::Command {
                command: format!("{} {}", cmd.join(" "), args.join(" ")),
                detail: String::from_utf8_lossy(&out.stderr)
                    .trim()
                    .lines()
                    .last()
                    .unwrap_or("")
                    .to_string(),
            }))
        }
    };
    let p = |p: &Path| p.display().to_string();
    let initial = format!("verify={peer}");
    run(
        &etcdutl,
        &[
            "snapshot",
            "restore",
            &p(&snapshot),
            "--name",
            "verify",
            "--initial-cluster",
            &initial,
            "--initial-advertise-peer-urls",
            &peer,
            "--data-dir",
            &p(&data),
        ],
    )?;
    let log = std::fs::File::create(scratch.path().join("etcd.log")).map_err(|e| Error::Write {
        path: "etcd.log".into(),
        source: e,
    })?;
    let mut child = std::process::Command::new(&options.etcd)
        .args([
            "--name",
            "verify",
            "--data-dir",
            &p(&data),
            "--listen-client-urls",
            &client,
            "--advertise-client-urls",
            &client,
        ])
        .args([
            "--listen-peer-urls",
            &peer,
            "--initial-advertise-peer-urls",
            &peer,
            "--initial-cluster",
            &initial,
        ])
        .stdout(log.try_clone().map_err(|e| Error::Write {
            path: "etcd.log".into(),
            source: e,
        })?)
        .stderr(log)
        .spawn()
        .map_err(|e| {
            Error::Backup(BackupError::Command {
                command: options.etcd.clone(),
                detail: e.to_string(),
            })
        })?;
    let etcd = Client::plain_local(vec![client.clone()]);
    let checked = {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime starts");
        runtime.block_on(retry::wait(
            "the scratch etcd to answer",
            retry::Policy::new(
                Duration::from_millis(100),
                Duration::from_secs(1),
                Duration::from_secs(60),
            ),
            || async {
                match etcd.key_count(Some(meta.revision)) {
                    Ok(v) => Attempt::Done(v),
                    Err(e) => Attempt::Retry(e),
                }
            },
        ))
    };
    let _ = child.kill();
    let _ = child.wait();
    let restored = restore_started.elapsed();
    let (keys, revision) = checked.map_err(|e| Error::Timeout(e.to_string()))?;
    if keys != meta.keys || revision < meta.revision {
        return Err(Error::Backup(BackupError::Refused {
            bucket: env.secrets_bucket_name.clone(),
            key: entry.key.clone(),
            reason: format!(
                "restored {keys} keys at revision {revision}; its metadata says {} keys at revision {}",
                meta.keys, meta.revision
            ),
        }));
    }
    Ok(vec![
        format!(
            "backup {} verified: {} keys at revision {} (taken {} by {}, etcd {})",
            entry.id,
            keys,
            meta.revision,
            rfc3339(meta.unix),
            meta.taken_by,
            meta.etcd_version
        ),
        format!(
            "download and decrypt: {:.2}s ({} bytes sealed, {} bytes of snapshot)",
            downloaded.as_secs_f64(),
            entry.size,
            meta.size
        ),
        format!(
            "restore into a scratch etcd until it answered: {:.2}s",
            restored.as_secs_f64()
        ),
    ])
}

fn free_port() -> Result<u16, Error> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| Error::Write {
        path: "a local port".into(),
        source: e,
    })?;
    Ok(l.local_addr()
        .map_err(|e| Error::Write {
            path: "a local port".into(),
            source: e,
        })?
        .port())
}

/// The version rule against the running cluster: the etcd version in the
/// newest backup's metadata. `Ok(line)` says what was compared.
pub fn check_version(env: &Environment) -> Result<String, Error> {
    with_operator(env, async |s3, kms| {
        let b = backups(env, s3, kms);
        let Some(newest) = b.newest().await? else {
            return Ok(format!(
                "etcd {}: no backup yet, nothing to compare with",
                env.etcd_version
            ));
        };
        let head = b.head_metadata(&newest.id).await?;
        let Some(running) = head
            .as_ref()
            .and_then(|h| h.metadata.get("nodeboot-etcd-version"))
            .filter(|v| !v.is_empty())
        else {
            return Ok(format!(
                "etcd {}: backup {} records no etcd version",
                env.etcd_version, newest.id
            ));
        };
        crate::shared::etcd::version::check_change(running, &env.etcd_version)
            .map(|()| {
                format!(
                    "etcd {running} -> {}: allowed (from backup {})",
                    env.etcd_version, newest.id
                )
            })
            .map_err(|why| {
                Error::VersionRefused(format!(
                    "etcd_version: {why} (the cluster runs {running}, says backup {})",
                    newest.id
                ))
            })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shared::etcd::space::AlarmKind;

    fn example() -> Environment {
        crate::operator::env::load(Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/environments/example.tfvars"
        )))
        .unwrap()
        .env
    }

    #[test]
    fn the_newest_backups_age_is_the_buckets_and_warns_past_two_intervals() {
        let now = 1_790_000_000;
        let interval = Duration::from_secs(900);
        let stored = |age: i64, named_ahead: i64| Stored {
            entry: Entry {
                id: BackupId {
                    unix: now - age + named_ahead,
                    revision: 7,
                },
                key: String::new(),
                size: 1,
            },
            stored_unix: now - age,
        };
        // Named a day in the future by a clock ahead: as old as the bucket says.
        let r = row(&stored(60, 86_400), now, interval);
        assert_eq!((r.age_seconds, r.warning.is_none()), (60, true));
        assert!(
            row(&stored(1800, 0), now, interval).warning.is_none(),
            "two intervals: still on time"
        );
        let late = row(&stored(1801, 0), now, interval)
            .warning
            .expect("past two intervals");
        assert!(late.contains("more than two backup intervals (15m)"), "{late}");
    }

    fn member(id: u64) -> Member {
        Member {
            id,
            name: format!("m{id}"),
            peer_urls: vec![format!("https://m{id}:2380")],
            client_urls: vec![format!("https://m{id}")],
            is_learner: false,
        }
    }

    fn answer(id: u64, leader: u64, quota: Option<i64>) -> (String, Answer) {
        let status = Status {
            endpoint: format!("https://m{id}"),
            member_id: id,
            leader,
            revision: 9,
            db_size: 20 << 20,
            db_size_in_use: 5 << 20,
            version: "3.5.16".into(),
            ..Status::default()
        };
        (format!("https://m{id}"), Ok((status, quota)))
    }

    fn observed(answers: Vec<(String, Answer)>, alarms: Vec<Alarm>) -> Observed {
        let list: Vec<Member> = (1..=3).map(member).collect();
        Observed {
            lists: answers.iter().map(|(e, _)| (e.clone(), list.clone())).collect(),
            answers,
            alarms: Ok(alarms),
            indices: BTreeMap::new(),
        }
    }

    #[test]
    fn a_member_outside_the_cluster_it_talks_to_is_a_problem() {
        let env = example();
        // Member 9 answers (its own etcd runs) but the member list has no 9:
        // a returning member shut out by a younger cluster ("ID mismatch").
        let stranger = vec![answer(9, 9, None), answer(1, 2, None), answer(2, 2, None)];
        let r = assess(&env, observed(stranger, vec![]), None);
        assert!(!r.healthy, "{r:?}", r = r.problems);
        assert_eq!(
            r.leader.as_deref(),
            Some("m2"),
            "the outsider's own leader is not the cluster's"
        );
        assert!(
            r.problems.iter().any(|p| p
                .contains("member 9 (https://m9): its etcd runs as member 9, not in this cluster")
                && p.contains("ID mismatch")),
            "{:?}",
            r.problems
        );
        assert_eq!(r.members.iter().filter(|m| m.outside.is_some()).count(), 1);
        // Listed without a name: it never published.
        let mut unpublished = observed(vec![answer(1, 2, None), answer(2, 2, None), answer(3, 2, None)], vec![]);
        for list in unpublished.lists.values_mut() {
            list[2].name.clear();
        }
        let r = assess(&env, unpublished, None);
        assert!(
            r.problems
                .iter()
                .any(|p| p.contains("member 3 (https://m3)") && p.contains("never saw publish")),
            "{:?}",
            r.problems
        );
        // Another cluster's data at a member's address, answering first: the
        // cluster is the majority's, and the outsider is named by its place.
        let mut split = vec![answer(3, 3, None), answer(1, 2, None), answer(2, 2, None)];
        if let (_, Ok((s, _))) = &mut split[0] {
            s.cluster_id = 0xbad;
        }
        let mut o = observed(split, vec![]);
        o.lists.insert("https://m3".into(), vec![member(3)]);
        o.indices.insert("https://m3".into(), 2);
        let r = assess(&env, o, None);
        assert!(
            r.problems.iter().any(|p| p.starts_with(
                "member 2 (https://m3): its etcd runs as member 3 of cluster bad, not in this cluster (0)"
            )),
            "{:?}",
            r.problems
        );
        assert!(
            r.problems
                .iter()
                .any(|p| p.contains("run different clusters") && p.contains("cluster bad: member 2")),
            "{:?}",
            r.problems
        );
    }

    #[test]
    fn healthy_is_every_member_answering_one_leader_and_no_alarm() {
        let env = example();
        let all = || vec![answer(1, 2, Some(16 << 20)), answer(2, 2, None), answer(3, 2, None)];
        let r = assess(&env, observed(all(), vec![]), None);
        assert!(r.healthy && r.problems.is_empty(), "{:?}", r.problems);
        assert_eq!(r.leader.as_deref(), Some("m2"));
        assert_eq!(r.members[0].quota_bytes, Some(16 << 20));
        assert_eq!(r.environment_quota_bytes, env.etcd_quota_bytes);

        for kind in [AlarmKind::NoSpace, AlarmKind::Corrupt] {
            let alarm = Alarm {
                member_id: 3,
                kind: kind.clone(),
            };
            let r = assess(&env, observed(all(), vec![alarm]), None);
            assert!(!r.healthy);
            assert_eq!(r.members[2].alarms, [kind.to_string()]);
            assert!(r.members[0].alarms.is_empty());
            assert!(
                r.problems[0].starts_with(&format!("member m3 raises {kind}: ")),
                "{:?}",
                r.problems
            );
            assert_eq!(r.alarms[0].member, "m3");
        }

        let mut down = all();
        down[1].1 = Err("connection refused".into());
        let r = assess(&env, observed(down, vec![]), None);
        assert!(!r.healthy);
        assert_eq!(r.problems, ["https://m2 does not answer"]);

        let split = vec![answer(1, 1, None), answer(2, 2, None), answer(3, 0, None)];
        let r = assess(&env, observed(split, vec![]), None);
        assert!(!r.healthy && r.leader.is_none());
        assert_eq!(
            r.problems,
            [
                "member m3 (https://m3) knows no leader",
                "the members name 2 different leaders"
            ]
        );
    }

    #[test]
    fn the_table_shows_sizes_quotas_and_alarms_for_a_human() {
        let env = example();
        let alarm = Alarm {
            member_id: 1,
            kind: AlarmKind::NoSpace,
        };
        let r = assess(
            &env,
            observed(vec![answer(1, 1, Some(16 << 20)), answer(2, 1, None)], vec![alarm]),
            None,
        );
        let table = status_table(&r);
        assert!(
            table.contains("16.0 MiB") && table.contains("NOSPACE") && table.contains("20.0 MiB"),
            "{table}"
        );
        assert!(
            table.contains("4.0 GiB (environment's)"),
            "a member whose quota was not read: {table}"
        );
        assert!(table.contains("problem: member m1 raises NOSPACE"), "{table}");
    }
}
