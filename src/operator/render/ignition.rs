//! Environment + role -> Ignition 3.4.0 config, as typed structs.

use base64::Engine;
use ignition_config::v3_4 as ign;

use crate::operator::env::{Environment, NodebootSource};
use crate::shared::node_config::{AUDIT_POLICY_PATH, KUBELET_CONFIG_PATH, NODE_CONFIG_PATH, STATIC_POD_DIR};
use crate::shared::role::Role;

use super::{files, units};

pub const SPEC_VERSION: &str = "3.4.0";

/// The user Flatcar and Fedora CoreOS both ship for logins.
const LOGIN_USER: &str = "core";

pub fn config_for(env: &Environment, role: Role) -> ign::Config {
    let mut config = ign::Config::new(ign::Ignition::new(SPEC_VERSION.into()));
    config.passwd = Some(passwd(env));
    let mut storage = storage(env, role);
    let rendered = units::units_for(env, role);
    // The unit files travel gzipped in storage.files (Ignition writes them
    // before it enables units); systemd.units only enables them. Inline
    // unit contents cannot be compressed, and the etcd role's units alone
    // would take most of EC2's 16 KiB of user data.
    storage
        .files
        .get_or_insert_with(Vec::new)
        .extend(rendered.iter().map(|u| {
            data_file(
                &format!("{UNIT_DIR}/{}", u.name),
                0o644,
                without_comments(&u.contents).as_bytes(),
            )
        }));
    config.storage = Some(storage);
    config.systemd = Some(ign::Systemd {
        units: Some(
            rendered
                .into_iter()
                .map(|u| {
                    let mut unit = ign::Unit::new(u.name);
                    // A unit another one starts (a timer's service) has no
                    // [Install] section: enabling it would mean nothing.
                    unit.enabled = Some(u.contents.contains("\n[Install]\n"));
                    unit
                })
                .collect(),
        ),
    });
    config
}

/// Flatcar's update settings (update_engine and locksmithd read it).
pub const UPDATE_CONF_PATH: &str = "/etc/flatcar/update.conf";

/// Per role: etcd nodes reboot only through `nodeboot reboot-coordinator`
/// (one at a time, see src/node/reboot/mod.rs), so locksmithd must not; workers get
/// a new OS by being replaced (the compute group's instance refresh on a
/// new image), never in place; the bastion reboots when an update is staged.
pub fn update_conf(role: Role) -> &'static str {
    match role {
        Role::Etcd => "REBOOT_STRATEGY=off\n",
        Role::Compute => "SERVER=disabled\n",
        Role::Bastion => "REBOOT_STRATEGY=reboot\n",
    }
}

/// Where Ignition writes unit files (as it does for `systemd.units[].contents`).
pub const UNIT_DIR: &str = "/etc/systemd/system";

/// Deterministic gzip (no name, no time): rendering twice gives the same bytes.
fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut encoder = flate2::GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), flate2::Compression::best());
    encoder.write_all(bytes).expect("writing to memory");
    encoder.finish().expect("writing to memory")
}

/// A unit as Ignition carries it: without its comment lines, which explain
/// the template (units/ in the source keeps them) but would cost a third of
/// the 16 KiB of EC2 user data. systemd ignores them, so the node runs the
/// same unit.
fn without_comments(contents: &str) -> String {
    let mut out = String::from("# Rendered by nodeboot; the commented template is units/ in its source.\n");
    for line in contents.lines().filter(|l| !l.trim_start().starts_with('#')) {
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// A config whose only job is to fetch the real one from `source` and check
/// it against `sha512_hex` (EC2 user data holds at most 16 KiB).
pub fn pointer_config(source: String, sha512_hex: &str) -> ign::Config {
    let mut ignition = ign::Ignition::new(SPEC_VERSION.into());
    ignition.config = Some(ign::IgnitionConfig {
        merge: None,
        replace: Some(resource(source, Some(sha512_hex))),
    });
    ign::Config::new(ignition)
}

fn passwd(env: &Environment) -> ign::Passwd {
    let mut core = ign::User::new(LOGIN_USER.into());
    core.ssh_authorized_keys = Some(env.ssh_authorized_keys.clone());
    ign::Passwd {
        groups: None,
        users: Some(vec![core]),
    }
}

fn storage(env: &Environment, role: Role) -> ign::Storage {
    let node_config =
        serde_json::to_vec_pretty(&super::node_config::node_config(env, role)).expect("node config serialises");
    let mut files = vec![data_file(NODE_CONFIG_PATH, 0o644, &node_config)];
    if let NodebootSource::S3 { path, url, sha512 } = &env.nodeboot {
        files.push(file(path, 0o755, resource(url.clone(), Some(sha512))));
    }
    let mut directories = Vec::new();
    if role.runs_kubelet() {
        files.push(data_file(
            KUBELET_CONFIG_PATH,
            0o644,
            files::kubelet_config(role).as_bytes(),
        ));
        let mut dir = ign::Directory::new(STATIC_POD_DIR.into());
        dir.mode = Some(0o755);
        directories.push(dir);
    }
    // The sync's sandbox can write only directories that exist.
    for synced in &super::node_config::node_config(env, role).synced {
        let mut dir = ign::Directory::new(synced.dir.clone());
        dir.mode = Some(0o755);
        directories.push(dir);
    }
    files.push(data_file(UPDATE_CONF_PATH, 0o644, update_conf(role).as_bytes()));
    if role == Role::Etcd {
        files.push(data_file(AUDIT_POLICY_PATH, 0o600, files::audit_policy().as_bytes()));
    }
    ign::Storage {
        directories: (!directories.is_empty()).then_some(directories),
        files: Some(files),
        ..Default::default()
    }
}

fn file(path: &str, mode: i64, contents: ign::Resource) -> ign::File {
    let mut f = ign::File::new(path.into());
    f.mode = Some(mode);
    f.overwrite = Some(true);
    f.contents = Some(contents);
    f
}

fn resource(source: String, sha512_hex: Option<&str>) -> ign::Resource {
    ign::Resource {
        source: Some(source),
        verification: sha512_hex.map(|h| ign::Verification {
            hash: Some(format!("sha512-{h}")),
        }),
        ..Default::default()
    }
}

/// RFC 2397 data URL; base64 keeps any byte and is what Butane emits.
/// A file whose contents travel in the config itself, gzipped (EC2 user
/// data holds 16 KiB; Ignition decompresses before it writes).
fn data_file(path: &str, mode: i64, bytes: &[u8]) -> ign::File {
    let mut f = file(path, mode, resource(data_url(&gzip(bytes)), None));
    if let Some(contents) = f.contents.as_mut() {
        contents.compression = Some("gzip".into());
    }
    f
}

fn data_url(bytes: &[u8]) -> String {
    format!(
        "data:;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    )
}
