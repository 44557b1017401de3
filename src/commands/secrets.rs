//! The secrets commands: the operator's `prereqs`, `secrets
//! upload|fetch|ls|rm` and `manifests upload`, and the node's `stage
//! secrets` and `sync manifests`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tracing::{info, warn};

use super::load_env;
use crate::cloud::aws::{self, Kms, S3};
use crate::cloud::{Keys, Objects};
use crate::env::Environment;
use crate::error::Error;
use crate::node_config::MANIFEST_SYNC_INTERVAL_SECONDS;
use crate::role::Role;
use crate::secrets::layout::{self, FOLDERS};
use crate::secrets::prereqs::{self, Wanted};
use crate::secrets::{ObjectPath, SecretError, Store};
use crate::stage::Root;
use crate::sync::plan::EMPTY_MARKER;
use crate::sync::{self, SyncError};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime starts")
}

/// Runs `work` with the operator's S3 and KMS clients for `env` (the
/// configuration every operator command shares, see `operator_runtime`).
fn with_operator<T>(env: &Environment, work: impl AsyncFnOnce(&S3, &Kms) -> Result<T, Error>) -> Result<T, Error> {
    super::operator_runtime(env, async |sdk| work(&S3::new(sdk), &Kms::new(sdk)).await)
}

fn store<'a>(env: &Environment, s3: &'a S3, kms: &'a Kms) -> Store<'a, S3, Kms> {
    Store::new(s3, kms, &env.secrets_bucket_name, &env.name, &env.kms_master_id)
}

/// `nodeboot prereqs`: one line per resource, created or found.
pub fn prereqs(env_path: &Path) -> Result<Vec<String>, Error> {
    let env = load_env(env_path)?.env;
    let wanted = Wanted {
        environment: env.name.clone(),
        region: env.region.clone(),
        kms_key: env.kms_master_id.clone(),
        buckets: vec![env.terraform_bucket_name.clone(), env.secrets_bucket_name.clone()],
    };
    with_operator(&env, async |s3, kms| Ok(prereqs::ensure(&wanted, kms, s3).await?))
}

/// Local files to upload, as (object path, file), all inside the layout.
fn files_to_upload(dir: &Path, paths: &[String]) -> Result<Vec<(ObjectPath, PathBuf)>, Error> {
    let mut files = Vec::new();
    if paths.is_empty() {
        files = layout::local_files(dir, "")?;
    }
    for p in paths {
        files.extend(layout::local_files(dir, p.trim_end_matches('/'))?);
    }
    files.sort();
    files.dedup();
    if let Some((path, _)) = files.iter().find(|(p, _)| !p.in_layout()) {
        return Err(SecretError::BadPath {
            path: path.to_string(),
            detail: format!(
                "not in the secrets layout (folders {} below {})",
                FOLDERS.join("/, "),
                dir.display()
            ),
        }
        .into());
    }
    Ok(files)
}

/// Uploads each file unless the bucket already holds the same bytes (then
/// nodes see no change); `force` uploads regardless.
async fn upload_files<O: Objects, K: Keys>(
    store: &Store<'_, O, K>,
    files: &[(ObjectPath, PathBuf)],
    force: bool,
) -> Result<Vec<String>, Error> {
    let mut lines = Vec::new();
    for (path, file) in files {
        let bytes = std::fs::read(file).map_err(|e| SecretError::io(file, e))?;
        if !force {
            match store.get(path).await {
                Ok(Some(current)) if !current.legacy && current.secret.expose() == bytes.as_slice() => {
                    lines.push(format!("unchanged {path}"));
                    continue;
                }
                Err(SecretError::Refused { reason, .. }) => {
                    warn!("{path}: replacing an object that does not open ({reason})")
                }
                Err(e) => return Err(e.into()),
                _ => {}
            }
        }
        store.put(path, &bytes).await?;
        lines.push(format!("uploaded  {path} ({} bytes)", bytes.len()));
    }
    Ok(lines)
}

pub fn upload(env_path: &Path, dir: Option<PathBuf>, paths: &[String], force: bool) -> Result<Vec<String>, Error> {
    upload_for(&load_env(env_path)?.env, dir, paths, force)
}

/// `upload` for an environment already loaded (`up` validates it once).
pub fn upload_for(
    env: &Environment,
    dir: Option<PathBuf>,
    paths: &[String],
    force: bool,
) -> Result<Vec<String>, Error> {
    let dir = dir.unwrap_or_else(|| layout::default_dir(&env.name));
    let files = files_to_upload(&dir, paths)?;
    with_operator(env, async |s3, kms| {
        upload_files(&store(env, s3, kms), &files, force).await
    })
}

/// The keys below the given paths (each a key or a folder); every folder of
/// the layout when none is given. A path matching nothing is an error.
async fn remote_keys<O: Objects, K: Keys>(
    store: &Store<'_, O, K>,
    paths: &[String],
) -> Result<Vec<(ObjectPath, u64)>, Error> {
    let wanted: Vec<String> = if paths.is_empty() {
        FOLDERS.iter().map(|f| f.to_string()).collect()
    } else {
        paths.to_vec()
    };
    let mut keys = Vec::new();
    for p in &wanted {
        let p = ObjectPath::parse(p.trim_end_matches('/'))?;
        let found: Vec<_> = store
            .list(p.as_str())
            .await?
            .into_iter()
            .filter(|e| e.key == p.as_str() || e.key.starts_with(&format!("{p}/")))
            .filter_map(|e| Some((ObjectPath::parse(&e.key).ok()?, e.size)))
            .collect();
        if found.is_empty() && !paths.is_empty() {
            return Err(SecretError::NotFound {
                bucket: store.bucket.clone(),
                path: p.to_string(),
            }
            .into());
        }
        keys.extend(found);
    }
    keys.sort();
    keys.dedup();
    Ok(keys)
}

/// `nodeboot secrets fetch`: every secret is fetched and opened before the
/// first file is written, so one bad object writes nothing.
pub fn fetch(env_path: &Path, dir: Option<PathBuf>, paths: &[String]) -> Result<Vec<String>, Error> {
    let env = load_env(env_path)?.env;
    let dir = dir.unwrap_or_else(|| layout::default_dir(&env.name));
    let fetched = with_operator(&env, async |s3, kms| {
        let store = store(&env, s3, kms);
        let mut fetched = Vec::new();
        for (path, _) in remote_keys(&store, paths).await? {
            let f = store.require(&path).await?;
            fetched.push((path, f.secret));
        }
        Ok(fetched)
    })?;
    let mut lines = Vec::new();
    for (path, secret) in fetched {
        let file = layout::write_local(&dir, &path, secret.expose())?;
        lines.push(format!("fetched {path} -> {}", file.display()));
    }
    Ok(lines)
}

pub fn ls(env_path: &Path, paths: &[String]) -> Result<Vec<String>, Error> {
    let env = load_env(env_path)?.env;
    let keys = with_operator(&env, async |s3, kms| remote_keys(&store(&env, s3, kms), paths).await)?;
    Ok(keys
        .into_iter()
        .map(|(path, size)| format!("{size:>10}  {path}"))
        .collect())
}

/// `nodeboot secrets rm`: exact paths only (no folders), each must exist.
/// With versioning on, S3 keeps the old versions.
pub fn rm(env_path: &Path, paths: &[String]) -> Result<Vec<String>, Error> {
    let env = load_env(env_path)?.env;
    let paths = paths
        .iter()
        .map(|p| ObjectPath::parse(p))
        .collect::<Result<Vec<_>, _>>()?;
    with_operator(&env, async |s3, kms| {
        let store = store(&env, s3, kms);
        let mut lines = Vec::new();
        for path in &paths {
            if !store.list(path.as_str()).await?.iter().any(|e| e.key == path.as_str()) {
                return Err(SecretError::NotFound {
                    bucket: store.bucket.clone(),
                    path: path.to_string(),
                }
                .into());
            }
            store.delete(path).await?;
            lines.push(format!("removed {path}"));
        }
        Ok(lines)
    })
}

/// `nodeboot manifests upload DIR`: `DIR/<role>/` goes to
/// `manifests/<role>/`; with `prune`, that role's objects with no local
/// file are removed (and so, by the sync, from the nodes). Pruning a role
/// to nothing takes `allow_empty`, which also puts the empty marker the
/// nodes need before they remove their last manifests.
pub fn manifests_upload(
    env_path: &Path,
    dir: &Path,
    prune: bool,
    allow_empty: bool,
    force: bool,
) -> Result<Vec<String>, Error> {
    manifests_upload_for(&load_env(env_path)?.env, dir, prune, allow_empty, force)
}

/// `manifests upload` for an environment already loaded.
pub fn manifests_upload_for(
    env: &Environment,
    dir: &Path,
    prune: bool,
    allow_empty: bool,
    force: bool,
) -> Result<Vec<String>, Error> {
    // Each role's static pods, and the add-ons the control plane applies.
    let mut names: Vec<&str> = Role::ALL
        .into_iter()
        .filter(|r| r.runs_kubelet())
        .map(Role::as_str)
        .collect();
    names.push(crate::render::addons::ADDONS);
    names.retain(|name| dir.join(name).is_dir());
    if names.is_empty() {
        return Err(SecretError::BadPath {
            path: dir.display().to_string(),
            detail: "holds no role directory (etcd/, compute/) of manifests".into(),
        }
        .into());
    }
    with_operator(env, async |s3, kms| {
        let store = store(env, s3, kms);
        let mut work = Vec::new();
        for name in names {
            let prefix = format!("manifests/{name}/");
            let files: Vec<(ObjectPath, PathBuf)> = layout::local_files(&dir.join(name), "")?
                .into_iter()
                .map(|(file_name, file)| Ok((ObjectPath::parse(&format!("{prefix}{file_name}"))?, file)))
                .collect::<Result<_, SecretError>>()?;
            let marker = ObjectPath::parse(&format!("{prefix}{EMPTY_MARKER}"))?;
            let listed: Vec<String> = store.list(&prefix).await?.into_iter().map(|e| e.key).collect();
            let others = listed.iter().filter(|k| **k != marker.as_str()).count();
            if prune && files.is_empty() && others > 0 && !allow_empty {
                return Err(Error::Refused(format!(
                    "--prune with no file in {} would remove all {others} objects of manifests/{name}/, and the nodes would stop what they run from it: pass --allow-empty if that is what you mean",
                    dir.join(name).display()
                )));
            }
            work.push((files, marker, listed));
        }
        let mut lines = Vec::new();
        for (files, marker, listed) in work {
            lines.extend(upload_files(&store, &files, force).await?);
            let marked = listed.iter().any(|k| *k == marker.as_str());
            if prune {
                for key in listed.iter().filter(|k| **k != marker.as_str()) {
                    if !files.iter().any(|(p, _)| p.as_str() == key) {
                        store.delete(&ObjectPath::parse(key)?).await?;
                        lines.push(format!("removed   {key}"));
                    }
                }
            }
            if files.is_empty() && prune && allow_empty && !marked {
                store
                    .put(
                        &marker,
                        b"emptied on purpose by `nodeboot manifests upload --prune --allow-empty`\n",
                    )
                    .await?;
                lines.push(format!("marked    {marker}"));
            } else if !files.is_empty() && marked {
                // Manifests again: a later empty listing is an accident again.
                store.delete(&marker).await?;
                lines.push(format!("unmarked  {marker}"));
            }
        }
        Ok(lines)
    })
}

fn node_store<'a>(config: &crate::node_config::NodeConfig, s3: &'a S3, kms: &'a Kms) -> Store<'a, S3, Kms> {
    Store::new(s3, kms, &config.secrets_bucket, &config.environment, &config.kms_key_id)
}

/// `nodeboot stage secrets`.
pub fn stage_secrets(root: &Root, owner: Option<&str>) -> Result<(), Error> {
    let fail = Error::SecretsStage;
    let owner = owner
        .map(sync::parse_owner)
        .transpose()
        .map_err(|e| fail(SyncError::Config(e)))?;
    let config = root.node_config().map_err(|e| fail(e.into()))?;
    runtime()
        .block_on(async {
            let sdk = aws::sdk_config(&config.region).await;
            let (s3, kms) = (S3::new(&sdk), Kms::new(&sdk));
            crate::stage::secrets::run(root, &node_store(&config, &s3, &kms), owner).await
        })
        .map_err(fail)?;
    Ok(())
}

/// `nodeboot sync secrets`: the secrets stage kept running. Every
/// interval: one all-or-nothing pass (a certificate never arrives without
/// its key), then every reader of a secret that changed takes it (see
/// `sync::readers`): observe the fingerprints of what each reader reads,
/// plan against the record of what it was started with (pure), restart,
/// record. A pass or restart that fails is tried again on the next tick.
pub fn sync_secrets(root: &Root, interval: Duration, once: bool) -> Result<(), Error> {
    use crate::sync::{consumers, readers};
    let fail = Error::SecretsStage;
    if interval.is_zero() {
        return Err(fail(SyncError::Config("the interval must be more than 0s".into())));
    }
    let config = root.node_config().map_err(|e| fail(e.into()))?;
    let record_path = root.state(readers::RECORD_FILE);
    let save = |record: &_| {
        readers::save_record(&record_path, record)
            .map_err(|e| SyncError::Stage(crate::stage::StageError::io(&record_path, e)))
    };
    info!(
        "secrets: keeping {} equal to the bucket every {}s; a reader restarts when a file it reads changes",
        root.path(crate::node_config::SECRETS_DIR).display(),
        interval.as_secs_f64()
    );
    runtime()
        .block_on(async {
            let sdk = aws::sdk_config(&config.region).await;
            let (s3, kms) = (S3::new(&sdk), Kms::new(&sdk));
            let store = node_store(&config, &s3, &kms);
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                let mut failed = None;
                if let Err(e) = crate::stage::secrets::run(root, &store, None).await {
                    warn!(
                        "secrets: pass failed, nothing written; trying again in {}s: {e}",
                        interval.as_secs()
                    );
                    failed = Some(e);
                }
                let current = readers::fingerprints(root, &readers::inputs(root, &config));
                // Written only when it changes: a quiet tick writes nothing.
                let mut saved = readers::load_record(&record_path);
                let mut record = saved.clone();
                record.retain(|c, _| current.contains_key(c));
                for step in consumers::plan(&record, &current) {
                    match step {
                        consumers::Step::Adopt(c) => {
                            record.insert(c.clone(), current[&c].clone());
                        }
                        consumers::Step::Restart(c) => {
                            info!("secrets: a file {c} reads changed: restarting it");
                            match readers::restart(root, &config, &c).await {
                                Ok(true) => {
                                    record.insert(c.clone(), current[&c].clone());
                                }
                                Ok(false) => {}
                                Err(e) => {
                                    warn!("secrets: restarting {c}: {e}; trying again in {}s", interval.as_secs());
                                    failed.get_or_insert(SyncError::Config(format!("restarting {c}: {e}")));
                                }
                            }
                        }
                    }
                    // After every step: a kill later keeps what is done.
                    if record != saved {
                        save(&record)?;
                        saved = record.clone();
                    }
                }
                if record != saved {
                    save(&record)?;
                }
                if once {
                    return failed.map_or(Ok(()), Err);
                }
            }
        })
        .map_err(fail)
}

/// `nodeboot sync manifests`: drops the capabilities it does not need
/// before any thread starts, then syncs every interval (or once).
pub fn sync_manifests(root: &Root, interval: Option<Duration>, once: bool) -> Result<(), Error> {
    let config = root.node_config().map_err(|e| Error::Sync(e.into()))?;
    let sources = sync::sources(root, &config).map_err(Error::Sync)?;
    let interval = interval
        .or_else(|| {
            config
                .manifests
                .as_ref()
                .map(|m| Duration::from_secs(m.interval_seconds))
        })
        .unwrap_or(Duration::from_secs(MANIFEST_SYNC_INTERVAL_SECONDS));
    if interval.is_zero() {
        return Err(Error::Sync(SyncError::Config(
            "the interval must be more than 0s".into(),
        )));
    }
    let keep = sync::caps::needed(sources.iter().any(|s| s.target.owner.is_some()));
    // A sync that could not drop its capabilities would run every pass and
    // every reload command with them: stop instead (systemd restarts it).
    let kept = if crate::fault::fails("sync:drop-capabilities") {
        Err("injected by NODEBOOT_FAIL_AT".to_string())
    } else {
        sync::caps::keep_only(&keep).map_err(|e| e.to_string())
    };
    match kept.map_err(|detail| Error::Sync(SyncError::Capabilities(detail)))? {
        kept if kept.is_empty() => info!("capabilities: kept none (root's own files need none)"),
        kept => info!(
            "capabilities: kept {} (to give files to their owner), dropped the rest",
            kept.join(", ")
        ),
    }
    for s in &sources {
        info!(
            "{}: keeping {} equal to s3://{}/{} every {}s",
            s.label,
            s.target.dir.display(),
            config.secrets_bucket,
            s.prefixes.join(", "),
            interval.as_secs_f64()
        );
    }
    runtime()
        .block_on(async {
            let sdk = aws::sdk_config(&config.region).await;
            let (s3, kms) = (S3::new(&sdk), Kms::new(&sdk));
            sync::run(
                &node_store(&config, &s3, &kms),
                &sources,
                &sync::Options { interval, once },
            )
            .await
        })
        .map_err(Error::Sync)
}
