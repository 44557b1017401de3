//! `nodeboot stage discover`: who am I? Reads the instance identity from
//! IMDSv2 and records it in `/run/nodeboot/facts.json`.

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};
use tracing::info;

use super::{Root, StageError};
use crate::shared::cloud::imds::ImdsError;
use crate::shared::cloud::Metadata;
use crate::shared::node_config::{kubelet_provider_id, KUBELET_PROVIDER_ID_DROPIN};
use crate::shared::role::Role;

pub const FACTS_FILE: &str = "facts.json";

/// What the later stages know of this node: its identity and its config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Facts {
    #[serde(flatten)]
    pub identity: Identity,
    pub environment: String,
    pub role: Role,
    pub hostname: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interface {
    pub mac: String,
    pub device_number: u32,
    pub interface_id: String,
}

#[derive(Debug, thiserror::Error)]
pub enum DiscoverError {
    #[error(transparent)]
    Metadata(#[from] ImdsError),
    #[error("instance metadata has no {0}")]
    Missing(String),
    #[error("instance metadata {path}: {value:?} is not {expected}")]
    Garbage {
        path: String,
        value: String,
        expected: &'static str,
    },
    #[error("this instance runs in {actual}, but its config (node.json) is for {expected}")]
    WrongRegion { actual: String, expected: String },
    #[error(transparent)]
    Stage(#[from] StageError),
    #[error("cannot set the hostname to {hostname}: {source}")]
    Hostname { hostname: String, source: nix::Error },
}

/// Observes the identity, records it, and (on a real node) sets the hostname.
pub fn run(root: &Root, metadata: &impl Metadata, set_hostname: bool) -> Result<Facts, DiscoverError> {
    let config = root.node_config()?;
    let identity = observe(metadata)?;
    if identity.region != config.region {
        return Err(DiscoverError::WrongRegion {
            actual: identity.region,
            expected: config.region,
        });
    }
    let hostname = hostname(&config.environment, config.role, &identity.instance_id);
    let facts = Facts {
        identity,
        environment: config.environment,
        role: config.role,
        hostname,
    };
    let path = root.record(FACTS_FILE, &facts)?;
    if facts.role.runs_kubelet() {
        write_provider_id(root, &facts.identity)?;
    }
    if set_hostname {
        persist_hostname(root, &facts.hostname)?;
        nix::unistd::sethostname(&facts.hostname).map_err(|source| DiscoverError::Hostname {
            hostname: facts.hostname.clone(),
            source,
        })?;
    }
    let id = &facts.identity;
    info!(instance = %id.instance_id, zone = %id.availability_zone, ip = %id.private_ip, "discovered; recorded {}", path.display());
    Ok(facts)
}

/// /etc/hostname, so the name holds from the next boot's first moment
/// (systemd reads it before any unit runs) and the kubelet, which registers
/// the node under its hostname, never sees another name. Not rewritten
/// when it already says so.
fn persist_hostname(root: &Root, hostname: &str) -> Result<(), DiscoverError> {
    let path = root.path(HOSTNAME_FILE);
    let text = format!("{hostname}\n");
    if std::fs::read_to_string(&path).is_ok_and(|t| t == text) {
        return Ok(());
    }
    crate::shared::fsutil::write_atomic(&path, text.as_bytes(), 0o644).map_err(|e| StageError::io(&path, e))?;
    Ok(())
}

pub const HOSTNAME_FILE: &str = "/etc/hostname";

/// The kubelet's providerID drop-in (`--config-dir`), for the cloud
/// controller; not rewritten when it already says so.
fn write_provider_id(root: &Root, identity: &Identity) -> Result<(), DiscoverError> {
    let path = root.path(KUBELET_PROVIDER_ID_DROPIN);
    let text = kubelet_provider_id(&identity.availability_zone, &identity.instance_id);
    if std::fs::read_to_string(&path).is_ok_and(|t| t == text) {
        return Ok(());
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| StageError::io(dir, e))?;
    }
    crate::shared::fsutil::write_atomic(&path, text.as_bytes(), 0o644).map_err(|e| StageError::io(&path, e))?;
    Ok(())
}

/// `<environment>-<role>-<instance id>`: unique, and says what the node is.
pub fn hostname(environment: &str, role: Role, instance_id: &str) -> String {
    format!("{environment}-{role}-{instance_id}")
}

/// What IMDS says about this instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub instance_id: String,
    pub availability_zone: String,
    pub region: String,
    pub private_ip: Ipv4Addr,
    /// The primary interface's MAC.
    pub mac: String,
    pub interfaces: Vec<Interface>,
}

pub fn observe(md: &impl Metadata) -> Result<Identity, DiscoverError> {
    let instance_id = field(md, "meta-data/instance-id", "an instance id (i-...)", is_instance_id)?;
    let availability_zone = field(
        md,
        "meta-data/placement/availability-zone",
        "an availability zone",
        is_zone,
    )?;
    let region = field(md, "meta-data/placement/region", "a region", |s| {
        is_zone(&format!("{s}a"))
    })?;
    if !availability_zone.starts_with(&region) {
        return Err(DiscoverError::Garbage {
            path: "meta-data/placement/availability-zone".into(),
            value: availability_zone,
            expected: "a zone of the instance's region",
        });
    }
    let private_ip = field(md, "meta-data/local-ipv4", "an IPv4 address", |s| {
        s.parse::<Ipv4Addr>().is_ok()
    })?
    .parse()
    .expect("checked");
    let mac = field(md, "meta-data/mac", "a MAC address", is_mac)?;
    let interfaces = interfaces(md)?;
    Ok(Identity {
        instance_id,
        availability_zone,
        region,
        private_ip,
        mac,
        interfaces,
    })
}

/// Every network interface EC2 reports, the hot-plugged ones included.
pub fn interfaces(md: &impl Metadata) -> Result<Vec<Interface>, DiscoverError> {
    let listing = required(md, "meta-data/network/interfaces/macs/")?;
    let mut out = Vec::new();
    for entry in listing
        .lines()
        .map(|l| l.trim().trim_end_matches('/'))
        .filter(|l| !l.is_empty())
    {
        if !is_mac(entry) {
            return Err(DiscoverError::Garbage {
                path: "meta-data/network/interfaces/macs/".into(),
                value: entry.into(),
                expected: "a list of MAC addresses",
            });
        }
        let base = format!("meta-data/network/interfaces/macs/{entry}");
        let device_number = field(md, &format!("{base}/device-number"), "a device number", |s| {
            s.parse::<u32>().is_ok()
        })?
        .parse()
        .expect("checked");
        let interface_id = field(md, &format!("{base}/interface-id"), "an interface id (eni-...)", |s| {
            s.starts_with("eni-")
        })?;
        out.push(Interface {
            mac: entry.to_lowercase(),
            device_number,
            interface_id,
        });
    }
    out.sort_by_key(|i| i.device_number);
    Ok(out)
}

fn required(md: &impl Metadata, path: &str) -> Result<String, DiscoverError> {
    md.get(path)?.ok_or_else(|| DiscoverError::Missing(path.to_string()))
}

/// A metadata value that must exist and look like `expected`.
pub fn field(
    md: &impl Metadata,
    path: &str,
    expected: &'static str,
    valid: impl Fn(&str) -> bool,
) -> Result<String, DiscoverError> {
    let value = required(md, path)?.trim().to_string();
    if valid(&value) {
        Ok(value)
    } else {
        Err(DiscoverError::Garbage {
            path: path.into(),
            value: value.chars().take(80).collect(),
            expected,
        })
    }
}

fn is_instance_id(s: &str) -> bool {
    s.strip_prefix("i-")
        .is_some_and(|h| (8..=17).contains(&h.len()) && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn is_zone(s: &str) -> bool {
    crate::shared::cloud::is_region_like_zone(s)
}

pub fn is_mac(s: &str) -> bool {
    let parts: Vec<&str> = s.split(':').collect();
    parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// In-memory metadata for the pure parsing logic; the IMDSv2 protocol is
    /// tested against the test bed's double in tests/stages.rs.
    struct Fake(BTreeMap<&'static str, &'static str>);

    impl Metadata for Fake {
        fn get(&self, path: &str) -> Result<Option<String>, ImdsError> {
            Ok(self.0.get(path).map(|s| s.to_string()))
        }
    }

    fn good() -> BTreeMap<&'static str, &'static str> {
        BTreeMap::from([
            ("meta-data/instance-id", "i-0123456789abcdef0"),
            ("meta-data/placement/availability-zone", "eu-west-1b"),
            ("meta-data/placement/region", "eu-west-1"),
            ("meta-data/local-ipv4", "10.80.11.23"),
            ("meta-data/mac", "0e:00:00:00:00:01"),
            (
                "meta-data/network/interfaces/macs/",
                "0e:00:00:00:00:01/\n0e:00:00:00:00:02/",
            ),
            ("meta-data/network/interfaces/macs/0e:00:00:00:00:01/device-number", "0"),
            (
                "meta-data/network/interfaces/macs/0e:00:00:00:00:01/interface-id",
                "eni-1",
            ),
            ("meta-data/network/interfaces/macs/0e:00:00:00:00:02/device-number", "1"),
            (
                "meta-data/network/interfaces/macs/0e:00:00:00:00:02/interface-id",
                "eni-2",
            ),
        ])
    }

    #[test]
    fn identity_is_read_with_all_interfaces() {
        let id = observe(&Fake(good())).unwrap();
        assert_eq!(id.instance_id, "i-0123456789abcdef0");
        assert_eq!(id.interfaces.len(), 2);
        assert_eq!(id.interfaces[1].interface_id, "eni-2");
    }

    #[test]
    fn garbage_and_absent_values_name_the_path() {
        let mut bad = good();
        bad.insert("meta-data/local-ipv4", "<html>");
        let err = observe(&Fake(bad)).unwrap_err().to_string();
        assert!(
            err.contains("meta-data/local-ipv4") && err.contains("not an IPv4 address"),
            "{err}"
        );

        let mut missing = good();
        missing.remove("meta-data/placement/region");
        assert_eq!(
            observe(&Fake(missing)).unwrap_err().to_string(),
            "instance metadata has no meta-data/placement/region"
        );

        let mut wrong_zone = good();
        wrong_zone.insert("meta-data/placement/availability-zone", "us-east-1a");
        assert!(observe(&Fake(wrong_zone))
            .unwrap_err()
            .to_string()
            .contains("zone of the instance's region"));
    }
}
