//! The environment file: one Terraform variables file (`environments/NAME.tfvars`)
//! that drives both Terraform and nodeboot.

pub mod addons;
mod diag;
mod fields;
pub mod images;
mod layout;
mod parse;
mod scaffold;
mod validate;

use std::path::Path;

use ipnet::Ipv4Net;
use serde::Serialize;

pub use diag::{Diagnostic, Diagnostics, Severity};
pub use fields::FIELDS;
pub use layout::Member;
pub use scaffold::{default_text, write_new, ScaffoldError};
pub use validate::syntax;

use fields::Reader;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NodebootSource {
    /// Baked into the machine image at `path`.
    Ami { path: String },
    /// Fetched by Ignition from `url` into `path`, checked against `sha512`.
    S3 { path: String, url: String, sha512: String },
}

impl NodebootSource {
    pub fn path(&self) -> &str {
        match self {
            NodebootSource::Ami { path } | NodebootSource::S3 { path, .. } => path,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subnets {
    pub secure: Vec<Ipv4Net>,
    pub compute: Vec<Ipv4Net>,
    pub elb: Vec<Ipv4Net>,
    pub mgmt: Vec<Ipv4Net>,
}

/// When the etcd backup service snapshots and how long backups are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EtcdBackupPolicy {
    pub interval: std::time::Duration,
    pub keep_hourly: std::time::Duration,
    pub keep_daily: std::time::Duration,
}

/// A validated environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Environment {
    pub name: String,
    pub aws_account: String,
    pub aws_profile: String,
    pub region: String,
    pub availability_zones: Vec<String>,
    pub vpc_cidr: Ipv4Net,
    pub subnets: Subnets,
    pub etcd_count: u32,
    pub etcd_instance_type: String,
    pub compute_count: u32,
    pub compute_instance_type: String,
    /// Share of the workers kept in service while an instance refresh replaces them.
    pub compute_min_healthy_percentage: u32,
    pub bastion_instance_type: String,
    pub flatcar_channel: String,
    pub kubernetes_version: String,
    pub etcd_version: String,
    pub etcd_backup: EtcdBackupPolicy,
    /// etcd's `--quota-backend-bytes` on every member.
    pub etcd_quota_bytes: u64,
    pub nodeboot: NodebootSource,
    pub kms_master_id: String,
    pub secrets_bucket_name: String,
    pub terraform_bucket_name: String,
    pub public_zone_name: String,
    /// How Terraform gets the public zone: `""` the existing zone named
    /// `public_zone_name`, a zone id, or `"create"` (a new zone delegated
    /// from its parent).
    pub public_zone_id: String,
    pub private_zone_name: String,
    pub kubeapi_access_list: Vec<Ipv4Net>,
    pub ssh_access_list: Vec<Ipv4Net>,
    pub ssh_authorized_keys: Vec<String>,
    pub addons: addons::Addons,
}

/// A loaded environment and the warnings it earned.
#[derive(Debug)]
pub struct Loaded {
    pub env: Environment,
    pub warnings: Diagnostics,
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read environment file {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{0}")]
    Invalid(Diagnostics),
}

/// Reads, parses and validates an environment file, and checks it against
/// the members' recorded layout beside it, if any (`layout::record_path`).
pub fn load(path: &Path) -> Result<Loaded, LoadError> {
    let text = std::fs::read_to_string(path).map_err(|source| LoadError::Read {
        path: path.display().to_string(),
        source,
    })?;
    let record = layout::read_record(path);
    from_text_with(path, &text, record).map_err(LoadError::Invalid)
}

pub use layout::{record_path, write_record};

/// Parses and validates environment text; `path` is only used in messages.
pub fn from_text(path: &Path, text: &str) -> Result<Loaded, Diagnostics> {
    from_text_with(path, text, Ok(None))
}

fn from_text_with(
    path: &Path,
    text: &str,
    record: Result<Option<layout::Record>, String>,
) -> Result<Loaded, Diagnostics> {
    let raw = parse::parse(path, text)?;
    let mut reader = Reader::new(&raw);
    let env = read_fields(&mut reader);
    match env {
        Some(env) if !reader.diags.has_errors() => {
            validate::check(&env, &mut reader);
            validate::check_recorded_layout(&env, record, &mut reader);
            let diags = std::mem::take(&mut reader.diags);
            if diags.has_errors() {
                Err(diags)
            } else {
                Ok(Loaded { env, warnings: diags })
            }
        }
        _ => Err(reader.diags),
    }
}

/// Reads every field with its own syntax check; cross-field rules come later
/// in `validate`. Returns `None` when any field could not be read.
fn read_fields(r: &mut Reader) -> Option<Environment> {
    use validate::syntax::*;
    let name = r.string("environment", is_environment_name);
    let aws_account = r.string("aws_account", |s| {
        s.len() == 12 && s.bytes().all(|b| b.is_ascii_digit())
    });
    let aws_profile = r.string("aws_profile", |s| !s.trim().is_empty());
    let region = r.string("region", is_region);
    let availability_zones = r.string_list("availability_zones", is_region_like_zone);
    let vpc_cidr = r.cidr("vpc_cidr");
    let secure = r.cidr_list("secure_subnets");
    let compute = r.cidr_list("compute_subnets");
    let elb = r.cidr_list("elb_subnets");
    let mgmt = r.cidr_list("mgmt_subnets");
    let etcd_count = r.count("etcd_count");
    let etcd_instance_type = r.string("etcd_instance_type", is_instance_type);
    let compute_count = r.count("compute_count");
    let compute_instance_type = r.string("compute_instance_type", is_instance_type);
    let compute_min_healthy_percentage = r.count("compute_min_healthy_percentage").filter(|p| {
        let ok = *p <= 100;
        if !ok {
            r.error(
                "compute_min_healthy_percentage",
                format!("{p} is not a percentage (0 to 100)"),
            );
        }
        ok
    });
    let bastion_instance_type = r.string("bastion_instance_type", is_instance_type);
    let flatcar_channel = r.string("flatcar_channel", |s| FLATCAR_CHANNELS.contains(&s));
    let kubernetes_version = r.string("kubernetes_version", is_version);
    let etcd_version = r.string("etcd_version", is_version);
    let etcd_backup = read_backup_policy(r);
    let etcd_quota_bytes = read_quota(r);
    let nodeboot = read_nodeboot_source(r);
    let kms_master_id = r.string("kms_master_id", is_kms_key_id);
    let secrets_bucket_name = r.string("secrets_bucket_name", is_bucket_name);
    let terraform_bucket_name = r.string("terraform_bucket_name", is_bucket_name);
    let public_zone_name = r.string("public_zone_name", is_dns_name);
    let public_zone_id = r.string("public_zone_id", |s| {
        s.is_empty() || s == "create" || is_route53_zone_id(s)
    });
    let private_zone_name = r.string("private_zone_name", is_dns_name);
    let kubeapi_access_list = r.cidr_list("kubeapi_access_list");
    let ssh_access_list = r.cidr_list("ssh_access_list");
    let ssh_authorized_keys = r.string_list("ssh_authorized_keys", is_ssh_public_key);
    let addons = read_addons(r);

    Some(Environment {
        name: name?,
        aws_account: aws_account?,
        aws_profile: aws_profile?,
        region: region?,
        availability_zones: availability_zones?,
        vpc_cidr: vpc_cidr?,
        subnets: Subnets {
            secure: secure?,
            compute: compute?,
            elb: elb?,
            mgmt: mgmt?,
        },
        etcd_count: etcd_count?,
        etcd_instance_type: etcd_instance_type?,
        compute_count: compute_count?,
        compute_instance_type: compute_instance_type?,
        compute_min_healthy_percentage: compute_min_healthy_percentage?,
        bastion_instance_type: bastion_instance_type?,
        flatcar_channel: flatcar_channel?,
        kubernetes_version: kubernetes_version?,
        etcd_version: etcd_version?,
        etcd_backup: etcd_backup?,
        etcd_quota_bytes: etcd_quota_bytes?,
        nodeboot: nodeboot?,
        kms_master_id: kms_master_id?,
        secrets_bucket_name: secrets_bucket_name?,
        terraform_bucket_name: terraform_bucket_name?,
        public_zone_name: public_zone_name?,
        public_zone_id: public_zone_id?,
        private_zone_name: private_zone_name?,
        kubeapi_access_list: kubeapi_access_list?,
        ssh_access_list: ssh_access_list?,
        ssh_authorized_keys: ssh_authorized_keys?,
        addons: addons?,
    })
}

/// `addons` and the version field of each: a known add-on, listed once, at
/// a version nodeboot has the image digests of.
fn read_addons(r: &mut Reader) -> Option<addons::Addons> {
    let names = r.string_list("addons", |s| addons::ADDON_NAMES.contains(&s));
    let flannel = r.string("flannel_version", validate::syntax::is_version);
    let coredns = r.string("coredns_version", validate::syntax::is_version);
    let (names, flannel, coredns) = (names?, flannel?, coredns?);
    let mut seen = std::collections::BTreeSet::new();
    for name in &names {
        if !seen.insert(name.as_str()) {
            r.error("addons", format!("{name} is listed twice"));
        }
    }
    let mut pick = |addon: &str, field: &str, version: &str| -> Option<Option<&'static addons::Release>> {
        if !names.iter().any(|n| n == addon) {
            return Some(None);
        }
        match addons::release(addon, version) {
            Some(release) => Some(Some(release)),
            None => {
                let known = addons::known_versions(addon).join(", ");
                r.error(
                    field,
                    format!("nodeboot has no pinned images for {addon} {version} (known: {known})"),
                );
                None
            }
        }
    };
    let flannel = pick("flannel", "flannel_version", &flannel);
    let coredns = pick("coredns", "coredns_version", &coredns);
    if flannel == Some(None) {
        r.warning("addons", "no flannel: bring your own CNI, or nodes stay NotReady");
    }
    Some(addons::Addons {
        flannel: flannel?,
        coredns: coredns?,
    })
}

fn read_backup_policy(r: &mut Reader) -> Option<EtcdBackupPolicy> {
    let duration = |s: &str| humantime::parse_duration(s).ok();
    let interval = r.string("etcd_backup_interval", |s| {
        duration(s)
            .is_some_and(|d| d >= std::time::Duration::from_secs(60) && d <= std::time::Duration::from_secs(86_400))
    });
    let hourly = r.string("etcd_backup_keep_hourly", |s| duration(s).is_some());
    let daily = r.string("etcd_backup_keep_daily", |s| duration(s).is_some());
    let policy = EtcdBackupPolicy {
        interval: duration(&interval?)?,
        keep_hourly: duration(&hourly?)?,
        keep_daily: duration(&daily?)?,
    };
    if policy.keep_daily < policy.keep_hourly {
        r.error(
            "etcd_backup_keep_daily",
            "shorter than etcd_backup_keep_hourly; the daily tier keeps backups after the hourly one ends",
        );
        return None;
    }
    Some(policy)
}

/// `etcd_quota_bytes`: within [`MIN_QUOTA_BYTES`, `MAX_QUOTA_BYTES`] (etcd
/// itself takes any number, and warns above its suggested maximum).
fn read_quota(r: &mut Reader) -> Option<u64> {
    use crate::shared::etcd::space::{human_bytes, MAX_BACKED_UP_QUOTA_BYTES, MAX_QUOTA_BYTES, MIN_QUOTA_BYTES};
    let quota = r.number("etcd_quota_bytes")?;
    if !(MIN_QUOTA_BYTES..=MAX_QUOTA_BYTES).contains(&quota) {
        r.error(
            "etcd_quota_bytes",
            format!(
                "{quota} ({}) is outside {MIN_QUOTA_BYTES} ({}) to {MAX_QUOTA_BYTES} ({}, etcd's suggested maximum)",
                human_bytes(quota as i64),
                human_bytes(MIN_QUOTA_BYTES as i64),
                human_bytes(MAX_QUOTA_BYTES as i64)
            ),
        );
        return None;
    }
    if quota > MAX_BACKED_UP_QUOTA_BYTES {
        r.warning(
            "etcd_quota_bytes",
            format!(
                "above {} a full database cannot be backed up: a backup is one S3 PUT of at most 5 GiB, and the 20 GiB etcd \
                 volume holds the database, its snapshot and the sealed copy at once",
                human_bytes(MAX_BACKED_UP_QUOTA_BYTES as i64)
            ),
        );
    }
    Some(quota)
}

fn read_nodeboot_source(r: &mut Reader) -> Option<NodebootSource> {
    use validate::syntax::*;
    let source = r.string("nodeboot_source", |s| s == "ami" || s == "s3");
    let path = r.string("nodeboot_path", is_absolute_path);
    let url = r.string("nodeboot_s3_url", |s| s.is_empty() || is_s3_url(s));
    let sha512 = r.string("nodeboot_sha512", |s| s.is_empty() || is_sha512_hex(s));
    let (source, path, url, sha512) = (source?, path?, url?, sha512?);
    if source == "ami" {
        return Some(NodebootSource::Ami { path });
    }
    if url.is_empty() {
        r.error("nodeboot_s3_url", "required when nodeboot_source = \"s3\"");
    }
    if sha512.is_empty() {
        r.error(
            "nodeboot_sha512",
            "required when nodeboot_source = \"s3\" (Ignition verifies the download)",
        );
    }
    (!url.is_empty() && !sha512.is_empty()).then(|| NodebootSource::S3 {
        path,
        url,
        sha512: sha512.to_lowercase(),
    })
}
