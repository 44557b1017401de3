//! `nodeboot render`: one Ignition config per role, ready for EC2 user data.
//!
//! Output is deterministic (no timestamps, fixed field order): the same
//! environment gives byte-identical files, so Terraform sees no diff.

pub mod addons;
pub mod files;
mod ignition;
pub mod images;
pub mod manifests;
pub mod node_config;
mod units;

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha512};

use crate::operator::env::Environment;
use crate::shared::fsutil;
use crate::shared::role::Role;

pub use self::files::kubelet_config;
pub use self::ignition::SPEC_VERSION;
pub use self::units::{etcd_image, units_for, UnitFile};

/// EC2 refuses user data over 16 KiB (before base64).
pub const USER_DATA_LIMIT: usize = 16 * 1024;

/// What `render` produced for one role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub role: Role,
    /// The config to put in user data: the full one, or a pointer to it.
    pub user_data: Vec<u8>,
    /// The full config when it is too large for user data: upload it to
    /// `full_config_url`; the pointer in `user_data` fetches and checks it.
    pub full: Option<Vec<u8>>,
}

/// Where the full config of `role` lives when user data only holds a pointer.
pub fn full_config_url(env: &Environment, role: Role) -> String {
    format!("s3://{}/{}", env.secrets_bucket_name, full_config_key(role))
}

pub fn full_config_key(role: Role) -> String {
    format!("ignition/{role}.ign")
}

/// Whether nodes of `role` may read their full config from the secrets
/// bucket (`ignition/<role>.ign`), so that a pointer config works for them.
/// terraform/modules/iam grants that read to the roles that pull secrets;
/// the bastion's instance profile has no S3 rights at all.
pub fn can_fetch_full_config(role: Role) -> bool {
    role.runs_kubelet()
}

/// Why `write` rendered nothing.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error(
        "the {role} Ignition config is {bytes} bytes, over EC2's {limit}-byte user_data limit, and {role} nodes \
         cannot fetch a full config from the secrets bucket (their instance profile has no S3 access), so a \
         pointer config would never boot: make it smaller (ssh_authorized_keys is most of it)",
        limit = USER_DATA_LIMIT
    )]
    TooLarge { role: Role, bytes: usize },
    #[error("cannot write {path}: {source}")]
    Write { path: String, source: std::io::Error },
}

/// The serialised full config of `role`.
pub fn full_config(env: &Environment, role: Role) -> Vec<u8> {
    to_bytes(&ignition::config_for(env, role))
}

/// Renders `role`, falling back to a pointer config above `limit` bytes.
pub fn render_role(env: &Environment, role: Role, limit: usize) -> Rendered {
    let full = full_config(env, role);
    if full.len() <= limit {
        return Rendered {
            role,
            user_data: full,
            full: None,
        };
    }
    let hash = hex::encode(Sha512::digest(&full));
    let pointer = to_bytes(&ignition::pointer_config(full_config_url(env, role), &hash));
    Rendered {
        role,
        user_data: pointer,
        full: Some(full),
    }
}

/// Serialises without the `null`s the generated types carry for unset
/// optional fields: smaller user data, and what Butane emits.
fn to_bytes(config: &ignition_config::v3_4::Config) -> Vec<u8> {
    let mut value = serde_json::to_value(config).expect("ignition config serialises");
    strip_nulls(&mut value);
    serde_json::to_vec(&value).expect("json value serialises")
}

fn strip_nulls(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            map.retain(|_, v| !v.is_null());
            map.values_mut().for_each(strip_nulls);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(strip_nulls),
        _ => {}
    }
}

/// Paths written for one role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    pub role: Role,
    pub user_data: PathBuf,
    pub user_data_len: usize,
    pub full: Option<PathBuf>,
    pub manifests: Vec<PathBuf>,
}

/// Writes `DIR/<role>.ign` (and `DIR/<role>.full.ign` when needed) for each
/// role, and its static-pod manifests to `DIR/manifests/<role>/`. A stale
/// `.full.ign` from an earlier, larger render is removed so it can never be
/// uploaded by mistake.
///
/// Every role is rendered and checked before the first file is written: a
/// role that would need a pointer config it cannot fetch fails the whole
/// render and writes nothing.
pub fn write(env: &Environment, roles: &[Role], out: &Path) -> Result<Vec<Written>, RenderError> {
    let rendered: Vec<Rendered> = roles
        .iter()
        .map(|&role| render_role(env, role, USER_DATA_LIMIT))
        .collect();
    if let Some(r) = rendered
        .iter()
        .find(|r| r.full.is_some() && !can_fetch_full_config(r.role))
    {
        return Err(RenderError::TooLarge {
            role: r.role,
            bytes: r.full.as_ref().map_or(0, Vec::len),
        });
    }
    write_rendered(env, &rendered, out).map_err(|source| RenderError::Write {
        path: out.display().to_string(),
        source,
    })
}

fn write_rendered(env: &Environment, rendered: &[Rendered], out: &Path) -> std::io::Result<Vec<Written>> {
    std::fs::create_dir_all(out)?;
    let mut written = Vec::new();
    for rendered in rendered {
        let role = rendered.role;
        let user_data = out.join(format!("{role}.ign"));
        let full_path = out.join(format!("{role}.full.ign"));
        fsutil::write_atomic(&user_data, &rendered.user_data, 0o644)?;
        crate::shared::fault::point("render:after-user-data");
        let full = match &rendered.full {
            Some(bytes) => {
                fsutil::write_atomic(&full_path, bytes, 0o644)?;
                Some(full_path)
            }
            None => {
                fsutil::remove_if_exists(&full_path)?;
                None
            }
        };
        let mut manifests = Vec::new();
        for (name, text) in manifests::manifests_for(env, role) {
            let dir = out.join("manifests").join(role.as_str());
            std::fs::create_dir_all(&dir)?;
            let path = dir.join(name);
            fsutil::write_atomic(&path, text.as_bytes(), 0o644)?;
            manifests.push(path);
        }
        if role == Role::Etcd {
            // The control plane applies the add-ons: rendered beside its static pods.
            let dir = out.join("manifests").join(addons::ADDONS);
            std::fs::create_dir_all(&dir)?;
            for (name, text) in addons::addons_for(env) {
                let path = dir.join(name);
                fsutil::write_atomic(&path, text.as_bytes(), 0o644)?;
                manifests.push(path);
            }
        }
        written.push(Written {
            role,
            user_data,
            user_data_len: rendered.user_data.len(),
            full,
            manifests,
        });
    }
    Ok(written)
}
