//! The secrets commands: the operator's `prereqs`, `secrets
//! upload|fetch|ls|rm` and `manifests upload`, and the node's `stage
//! secrets` and `sync manifests`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use tracing::warn;

use super::load_env;
use crate::operator::env::Environment;
use crate::operator::error::Error;
use crate::operator::prereqs::{self, Wanted};
use crate::shared::cloud::aws::{Kms, S3};
use crate::shared::cloud::{Keys, Objects};
use crate::shared::role::Role;
use crate::shared::secrets::index::{self, Index};
use crate::shared::secrets::layout::EMPTY_MARKER;
use crate::shared::secrets::layout::{self, FOLDERS};
use crate::shared::secrets::{ObjectPath, SecretError, Store};

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
    if let Some((path, _)) = files.iter().find(|(p, _)| index::is_index(p.as_str())) {
        return Err(SecretError::BadPath {
            path: path.to_string(),
            detail: format!(
                "{} is the name of a folder's index, which uploads write",
                index::INDEX_NAME
            ),
        }
        .into());
    }
    Ok(files)
}

/// The folders that hold `keys`, each a prefix a node may sync.
fn folders_of<'a>(keys: impl IntoIterator<Item = &'a ObjectPath>) -> BTreeSet<String> {
    keys.into_iter().flat_map(|k| index::folders(k.as_str())).collect()
}

/// Rewrites the index of each prefix whose index no longer describes it
/// (see `shared::secrets::index`). Called after the objects are put or
/// removed, so a node that sees the new index lists the new objects; one
/// that reads the old index meanwhile sees it changed next time. An index
/// that still describes the prefix is left alone (its nodes are current).
async fn refresh_indexes<O: Objects, K: Keys>(
    store: &Store<'_, O, K>,
    prefixes: &BTreeSet<String>,
) -> Result<Vec<String>, Error> {
    let metadata = std::collections::BTreeMap::from([(index::METADATA_KEY.to_string(), index::FORMAT.to_string())]);
    let mut lines = Vec::new();
    for prefix in prefixes {
        let listing = store.list(prefix).await?;
        let key = index::key(prefix);
        // One that cannot be read or parsed is replaced.
        let current = store.objects.get(&store.bucket, &key, index::MAX_INDEX_BYTES).await;
        if let Ok(Some(object)) = &current {
            if Index::parse(&object.body).is_ok_and(|i| i.describes(&listing)) {
                continue;
            }
        }
        let index = Index::of(&listing, index::new_generation());
        store
            .objects
            .put(&store.bucket, &key, index.to_bytes(), &metadata)
            .await
            .map_err(SecretError::from)?;
        lines.push(format!("indexed   {prefix} ({} objects)", index.objects.len()));
    }
    Ok(lines)
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
        let store = store(env, s3, kms);
        let mut lines = upload_files(&store, &files, force).await?;
        lines.extend(refresh_indexes(&store, &folders_of(files.iter().map(|(p, _)| p))).await?);
        Ok(lines)
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
            .filter(|e| !index::is_index(&e.key))
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
        lines.extend(refresh_indexes(&store, &folders_of(&paths)).await?);
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
    names.push(crate::operator::render::addons::ADDONS);
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
            let listed: Vec<String> = store
                .list(&prefix)
                .await?
                .into_iter()
                .map(|e| e.key)
                .filter(|k| !index::is_index(k))
                .collect();
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
        // Each role's prefix and the folders above it, even with nothing in
        // it: its nodes find an index from the first upload on.
        let indexed = folders_of(work.iter().map(|(_, marker, _)| marker));
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
        lines.extend(refresh_indexes(&store, &indexed).await?);
        Ok(lines)
    })
}
