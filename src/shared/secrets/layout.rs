//! Where secrets live: object keys in the bucket and the operator's local
//! tree, which mirror each other (the seed's `platform/secrets` layout).
//!
//! ```text
//! secrets/<environment>/        the local tree (default; --dir to change)
//!   common/                     every node that pulls secrets
//!   secure/                     etcd / control-plane nodes (role etcd)
//!   compute/                    Kubernetes workers (role compute)
//!   manifests/<role>/           static pods, kept in sync on the nodes
//! ```
//!
//! `secrets/<environment>/common/ca.crt` is the object `common/ca.crt`.

use std::fmt;
use std::path::{Path, PathBuf};

use super::SecretError;
use crate::shared::fsutil;
use crate::shared::role::Role;

/// The top-level folders of the tree.
pub const FOLDERS: [&str; 4] = ["common", "secure", "compute", "manifests"];

/// The largest secret nodeboot stores or fetches; a node holds each one in
/// memory while decrypting it.
pub const MAX_SECRET_BYTES: u64 = 64 * 1024 * 1024;

/// Where `secrets fetch` and `upload` look when not told.
pub fn default_dir(environment: &str) -> PathBuf {
    Path::new("secrets").join(environment)
}

/// The folder of a role's own secrets (besides `common/`); the seed calls
/// the etcd and control-plane layer "secure".
pub fn role_folder(role: Role) -> Option<&'static str> {
    match role {
        Role::Etcd => Some("secure"),
        Role::Compute => Some("compute"),
        Role::Bastion => None,
    }
}

/// Whether `key` is another etcd member's private key
/// (`secure/etcd/member-<j>.key`, `j != member`): a member's node fetches
/// only its own, so one node's disclosure is one member's key.
pub fn is_other_members_key(key: &str, member: u32) -> bool {
    key.strip_prefix("secure/etcd/member-")
        .and_then(|rest| rest.strip_suffix(".key"))
        .is_some_and(|index| index != member.to_string())
}

/// The manifests of `role`, as an object prefix.
pub fn manifests_prefix(role: Role) -> String {
    format!("manifests/{role}/")
}

/// A checked object key: relative, `/`-separated, no empty, `.` or `..`
/// component, so it maps onto a path below a directory and nowhere else.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectPath(String);

impl ObjectPath {
    pub fn parse(s: &str) -> Result<ObjectPath, SecretError> {
        let bad = |detail: &str| SecretError::BadPath {
            path: s.to_string(),
            detail: detail.to_string(),
        };
        if s.is_empty() || s.len() > 1024 {
            return Err(bad("an object path has 1 to 1024 bytes"));
        }
        if s.starts_with('/') || s.ends_with('/') {
            return Err(bad(
                "an object path is relative and names a file (no leading or trailing '/')",
            ));
        }
        if s.chars().any(|c| c.is_control() || c == '\\') {
            return Err(bad("control characters and '\\' are not allowed"));
        }
        if s.split('/').any(|c| c.is_empty() || c == "." || c == "..") {
            return Err(bad("empty, '.' and '..' components are not allowed"));
        }
        Ok(ObjectPath(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The path below `prefix` (`manifests/etcd/a.yaml` below
    /// `manifests/etcd/` is `a.yaml`).
    pub fn strip_prefix(&self, prefix: &str) -> Option<ObjectPath> {
        self.0
            .strip_prefix(prefix)
            .and_then(|rest| ObjectPath::parse(rest).ok())
    }

    pub fn under(&self, dir: &Path) -> PathBuf {
        dir.join(&self.0)
    }

    /// Whether it lies in one of the tree's folders.
    pub fn in_layout(&self) -> bool {
        FOLDERS.contains(&self.0.split('/').next().unwrap_or(""))
    }
}

impl fmt::Display for ObjectPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Every regular file below `dir/sub` (or the file `dir/sub`), as object
/// paths relative to `dir`, sorted. Hidden files (editor and temp files)
/// are skipped; a symlink is refused rather than followed.
pub fn local_files(dir: &Path, sub: &str) -> Result<Vec<(ObjectPath, PathBuf)>, SecretError> {
    let start = if sub.is_empty() {
        dir.to_path_buf()
    } else {
        dir.join(sub)
    };
    let mut out = Vec::new();
    walk(dir, &start, &mut out)?;
    out.sort();
    Ok(out)
}

fn walk(dir: &Path, path: &Path, out: &mut Vec<(ObjectPath, PathBuf)>) -> Result<(), SecretError> {
    let meta = std::fs::symlink_metadata(path).map_err(|e| SecretError::io(path, e))?;
    if meta.is_dir() {
        let entries = std::fs::read_dir(path).map_err(|e| SecretError::io(path, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| SecretError::io(path, e))?;
            if !entry.file_name().to_string_lossy().starts_with('.') {
                walk(dir, &entry.path(), out)?;
            }
        }
        return Ok(());
    }
    let relative = path.strip_prefix(dir).unwrap_or(path).to_string_lossy().into_owned();
    if !meta.is_file() {
        return Err(SecretError::BadPath {
            path: path.display().to_string(),
            detail: "not a regular file (symlinks are not followed)".into(),
        });
    }
    out.push((ObjectPath::parse(&relative)?, path.to_path_buf()));
    Ok(())
}

/// Writes a fetched secret below `dir`: directories 0700, the file 0600,
/// atomically.
pub fn write_local(dir: &Path, path: &ObjectPath, bytes: &[u8]) -> Result<PathBuf, SecretError> {
    let target = path.under(dir);
    let parent = target.parent().expect("an object path has a parent below dir");
    create_private_dirs(parent)?;
    fsutil::write_atomic(&target, bytes, 0o600).map_err(|e| SecretError::io(&target, e))?;
    Ok(target)
}

/// `mkdir -p` with mode 0700 for the directories it creates.
pub fn create_private_dirs(dir: &Path) -> Result<(), SecretError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| SecretError::io(dir, e))
}

/// The object an operator puts under a prefix to say "empty is right":
/// without it, a complete but empty listing never removes the last files.
pub const EMPTY_MARKER: &str = ".nodeboot-empty";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_other_members_keys_are_out_of_scope() {
        assert!(is_other_members_key("secure/etcd/member-0.key", 1));
        assert!(is_other_members_key("secure/etcd/member-10.key", 1));
        assert!(!is_other_members_key("secure/etcd/member-1.key", 1));
        assert!(
            !is_other_members_key("secure/etcd/member-0.crt", 1),
            "certificates are public"
        );
        assert!(!is_other_members_key("secure/etcd/ca.crt", 1));
        assert!(!is_other_members_key("secure/apiserver.key", 1));
        assert!(!is_other_members_key("common/etcd/member-0.key", 1));
    }

    #[test]
    fn object_paths_stay_below_their_directory() {
        for good in [
            "common/ca.crt",
            "manifests/etcd/kube-apiserver.yaml",
            "a",
            "secure/etcd/peer.key",
        ] {
            assert_eq!(ObjectPath::parse(good).unwrap().as_str(), good);
        }
        for bad in [
            "",
            "/etc/passwd",
            "common/",
            "common//x",
            "../x",
            "common/../../x",
            "./x",
            "a\\b",
            "a\nb",
        ] {
            assert!(ObjectPath::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn the_layout_has_four_folders_and_one_per_role() {
        assert!(ObjectPath::parse("manifests/etcd/a.yaml").unwrap().in_layout());
        assert!(!ObjectPath::parse("ignition/etcd.ign").unwrap().in_layout());
        assert_eq!(role_folder(Role::Etcd), Some("secure"));
        assert_eq!(role_folder(Role::Bastion), None);
        assert_eq!(
            ObjectPath::parse("manifests/etcd/a.yaml")
                .unwrap()
                .strip_prefix(&manifests_prefix(Role::Etcd))
                .unwrap()
                .as_str(),
            "a.yaml"
        );
    }

    #[test]
    fn local_files_skip_hidden_ones_and_map_to_keys() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("common/sub")).unwrap();
        std::fs::write(dir.path().join("common/ca.crt"), "x").unwrap();
        std::fs::write(dir.path().join("common/sub/b"), "x").unwrap();
        std::fs::write(dir.path().join("common/.ca.crt.swp"), "x").unwrap();
        let files: Vec<String> = local_files(dir.path(), "")
            .unwrap()
            .into_iter()
            .map(|(p, _)| p.to_string())
            .collect();
        assert_eq!(files, ["common/ca.crt", "common/sub/b"]);
        let one: Vec<String> = local_files(dir.path(), "common/ca.crt")
            .unwrap()
            .into_iter()
            .map(|(p, _)| p.to_string())
            .collect();
        assert_eq!(one, ["common/ca.crt"]);
    }
}
