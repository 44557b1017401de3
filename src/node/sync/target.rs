//! The local half of a sync: a directory, the record of the files nodeboot
//! placed in it (kept where the caller says: beside the directory's own
//! lifetime, /var/lib/nodeboot for the static pods on disk, /run/nodeboot
//! for the secrets in tmpfs), and atomic writes and removals.

use std::collections::BTreeMap;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tracing::warn;

use super::plan::{Name, Placed, Stat};
use super::poll::Seen;
use crate::shared::fsutil;
use crate::shared::secrets::SecretError;

#[derive(Debug, Clone)]
pub struct Target {
    pub dir: PathBuf,
    pub file_mode: u32,
    /// Enforced on `dir` itself (and used for the directories nodeboot
    /// creates); `None` leaves an existing directory's mode alone and
    /// creates missing ones 0755.
    pub dir_mode: Option<u32>,
    pub owner: Option<(u32, u32)>,
    /// Where the record of placed files is kept.
    pub record: PathBuf,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct RecordFile {
    placed: BTreeMap<String, Placed>,
}

impl Target {
    /// Creates the directory, and gives it its mode and owner if enforced.
    pub fn prepare(&self) -> Result<(), SecretError> {
        self.create_dirs(&self.dir)?;
        if let Some(mode) = self.dir_mode {
            let meta = std::fs::metadata(&self.dir).map_err(|e| SecretError::io(&self.dir, e))?;
            if meta.permissions().mode() & 0o7777 != mode {
                std::fs::set_permissions(&self.dir, std::fs::Permissions::from_mode(mode))
                    .map_err(|e| SecretError::io(&self.dir, e))?;
            }
            if let Some((uid, gid)) = self.owner.filter(|(u, g)| meta.uid() != *u || meta.gid() != *g) {
                std::os::unix::fs::chown(&self.dir, Some(uid), Some(gid)).map_err(|e| SecretError::io(&self.dir, e))?;
            }
        }
        Ok(())
    }

    fn create_dirs(&self, dir: &Path) -> Result<(), SecretError> {
        if dir.is_dir() {
            return Ok(());
        }
        if let Some(parent) = dir.parent() {
            self.create_dirs(parent)?;
        }
        let mode = self.dir_mode.unwrap_or(0o755);
        match std::fs::DirBuilder::new().mode(mode).create(dir) {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => return Err(SecretError::io(dir, e)),
            _ => {}
        }
        // Only the directories below the target belong to its owner.
        if dir.starts_with(&self.dir) {
            if let Some((uid, gid)) = self.owner {
                std::os::unix::fs::chown(dir, Some(uid), Some(gid)).map_err(|e| SecretError::io(dir, e))?;
            }
        }
        Ok(())
    }

    pub fn path(&self, name: &Name) -> PathBuf {
        name.under(&self.dir)
    }

    /// The record; a missing or unreadable one is empty, which is safe:
    /// nothing gets deleted, and files already right are adopted unchanged.
    pub fn load_record(&self) -> BTreeMap<Name, Placed> {
        let file: RecordFile = match std::fs::read(&self.record) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                warn!(
                    "{}: unreadable ({e}); starting a new record (nothing will be deleted this pass)",
                    self.record.display()
                );
                RecordFile::default()
            }),
            Err(_) => RecordFile::default(),
        };
        file.placed
            .into_iter()
            .filter_map(|(n, p)| Some((Name::parse(&n).ok()?, p)))
            .collect()
    }

    pub fn save_record(&self, record: &BTreeMap<Name, Placed>) -> Result<(), SecretError> {
        let file = RecordFile {
            placed: record.iter().map(|(n, p)| (n.to_string(), p.clone())).collect(),
        };
        let mut bytes = serde_json::to_vec_pretty(&file).expect("the record serialises");
        bytes.push(b'\n');
        let dir = self.record.parent().expect("the record lives in a directory");
        std::fs::create_dir_all(dir).map_err(|e| SecretError::io(dir, e))?;
        fsutil::write_atomic(&self.record, &bytes, 0o600).map_err(|e| SecretError::io(&self.record, e))
    }

    /// Where what the next pass may trust of each prefix is kept (`poll`):
    /// beside the record: `<record name>.listings` (records end in `.json`,
    /// so no record has this name).
    pub fn seen_path(&self) -> PathBuf {
        self.record.with_extension("listings")
    }

    /// What the last pass remembered of each prefix; a missing or
    /// unreadable file remembers nothing, which is safe: the pass lists.
    pub fn load_seen(&self) -> BTreeMap<String, Seen> {
        let path = self.seen_path();
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                warn!("{}: unreadable ({e}); listing every prefix this pass", path.display());
                BTreeMap::new()
            }),
            Err(_) => BTreeMap::new(),
        }
    }

    pub fn save_seen(&self, seen: &BTreeMap<String, Seen>) -> Result<(), SecretError> {
        let path = self.seen_path();
        let mut bytes = serde_json::to_vec_pretty(seen).expect("what a pass remembers serialises");
        bytes.push(b'\n');
        let dir = path.parent().expect("it lives beside the record");
        std::fs::create_dir_all(dir).map_err(|e| SecretError::io(dir, e))?;
        fsutil::write_atomic(&path, &bytes, 0o600).map_err(|e| SecretError::io(&path, e))
    }

    /// The file's identity, `None` when there is no regular file.
    pub fn stat(&self, name: &Name) -> Result<Option<Stat>, SecretError> {
        let path = self.path(name);
        match std::fs::symlink_metadata(&path) {
            Ok(m) if m.is_file() => Ok(Some(Stat {
                len: m.len(),
                mtime_ns: m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128,
                inode: m.ino(),
            })),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(SecretError::io(&path, e)),
        }
    }

    /// Whether the file already holds exactly `bytes` (then it is not
    /// rewritten: the kubelet restarts a static pod whose file is rewritten).
    pub fn holds(&self, name: &Name, bytes: &[u8]) -> bool {
        let path = self.path(name);
        std::fs::metadata(&path).is_ok_and(|m| m.len() == bytes.len() as u64)
            && std::fs::read(&path).is_ok_and(|b| b == bytes)
    }

    /// Writes atomically (a reader sees the old file or the new one, never
    /// part of one) and returns the new file's identity.
    pub fn write(&self, name: &Name, bytes: &[u8]) -> Result<Stat, SecretError> {
        let path = self.path(name);
        self.create_dirs(path.parent().expect("below the target"))?;
        fsutil::write_atomic_owned(&path, bytes, self.file_mode, self.owner).map_err(|e| SecretError::io(&path, e))?;
        self.stat(name)?
            .ok_or_else(|| SecretError::io(&path, std::io::Error::other("vanished right after it was written")))
    }

    pub fn remove(&self, name: &Name) -> Result<(), SecretError> {
        let path = self.path(name);
        fsutil::remove_if_exists(&path).map_err(|e| SecretError::io(&path, e))
    }
}

/// The record's file name for a directory: `/etc/kubernetes/manifests`
/// is recorded in `etc-kubernetes-manifests.json`.
pub fn record_name(dir: &str) -> String {
    let slug: String = dir
        .trim_matches('/')
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    format!("{slug}.json")
}
