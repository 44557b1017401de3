//! Rules across fields: the network layout, the etcd cluster shape and the
//! access lists. Each problem is reported on the field a user would edit.

use ipnet::Ipv4Net;

use super::fields::{host, Reader};
use super::layout::{self, MEMBER_HOST_OFFSET};
use super::Environment;

/// Load balancers and the NAT layout need two zones at least.
pub const MIN_ZONES: usize = 2;

const SUBNET_FIELDS: [&str; 4] = ["secure_subnets", "compute_subnets", "elb_subnets", "mgmt_subnets"];

pub fn check(env: &Environment, r: &mut Reader) {
    check_zones(env, r);
    check_subnets(env, r);
    check_etcd(env, r);
    check_access(r, "kubeapi_access_list", &env.kubeapi_access_list);
    if super::images::kubernetes(&env.kubernetes_version).is_none() {
        let known: Vec<&str> = super::images::KUBERNETES_RELEASES.iter().map(|r| r.version).collect();
        r.error(
            "kubernetes_version",
            format!(
                "nodeboot pins the images of Kubernetes {} only (every image by digest, baked into the AMI): add the release's digests to KUBERNETES_RELEASES in src/operator/env/images.rs",
                known.join(", ")
            ),
        );
    }
    if !crate::shared::node_config::ETCD_IMAGES
        .iter()
        .any(|(v, _)| *v == env.etcd_version)
    {
        r.warning(
            "etcd_version",
            format!(
                "etcd {} is not pinned by digest (ETCD_IMAGES in src/shared/node_config.rs): nodes pull it by tag and need its registry",
                env.etcd_version
            ),
        );
    }
    if super::addons::cloud_controller_image(&env.kubernetes_version).is_none() {
        let known: Vec<&str> = super::addons::CLOUD_CONTROLLER_RELEASES
            .iter()
            .map(|(m, _)| *m)
            .collect();
        r.error(
            "kubernetes_version",
            format!(
                "nodeboot pins the AWS cloud-controller-manager for Kubernetes {} only (its release must match the cluster's minor): add the release's digest to CLOUD_CONTROLLER_RELEASES in src/operator/env/addons.rs",
                known.join(", ")
            ),
        );
    }
    check_access(r, "ssh_access_list", &env.ssh_access_list);
    if env.ssh_authorized_keys.is_empty() {
        r.warning("ssh_authorized_keys", "empty: nobody can log in to the nodes");
    }
    if env.public_zone_id == "create" && !delegated_zone_fits(env) {
        r.error(
            "public_zone_name",
            format!(
                "with public_zone_id = \"create\" the zone is {}.<parent zone>, where <parent zone> is an existing zone of two labels or more; {:?} is not",
                env.name, env.public_zone_name
            ),
        );
    }
    if env.secrets_bucket_name == env.terraform_bucket_name {
        r.error(
            "terraform_bucket_name",
            "must differ from secrets_bucket_name (state and secrets have different readers)",
        );
    }
}

/// Refuses a change of the zone list or the secure subnets that would move a
/// member Terraform has already created (its volume and ENI would be
/// replaced, and with them the member's data and address).
pub fn check_recorded_layout(env: &Environment, record: Result<Option<layout::Record>, String>, r: &mut Reader) {
    let record = match record {
        Ok(Some(record)) => record,
        Ok(None) => return,
        Err(e) => {
            return r.error(
                "availability_zones",
                format!("cannot read the recorded member layout {e}"),
            )
        }
    };
    let recorded = record.members.len() as u32;
    if env.etcd_count < recorded {
        let retirements: Vec<String> = (env.etcd_count..recorded)
            .rev()
            .map(|m| format!("`nodeboot etcd retire-member --env {} --yes {m}`", r.file()))
            .collect();
        r.warning(
            "etcd_count",
            format!(
                "etcd_count goes from {recorded} to {}: members {}..{}'s volumes, ENIs and address reservations have \
                 prevent_destroy, so `up` stops until they are retired. Retire them first, the highest first, so the \
                 others keep a quorum: {}; each leaves etcd, its volume and ENI lose the tags a node claims by, a final \
                 snapshot is taken, its node is terminated with one fewer desired, and its volume, ENI and reservation \
                 are deleted; then `nodeboot up` (README, \"Changing etcd_count\")",
                env.etcd_count,
                env.etcd_count,
                recorded - 1,
                retirements.join(", then ")
            ),
        );
    }
    for (old, new) in layout::moved_members(&record, env) {
        let field = if old.zone != new.zone {
            "availability_zones"
        } else {
            "secure_subnets"
        };
        r.error(
            field,
            format!(
                "etcd member {} would move from {} ({}) to {} ({}): Terraform would replace its volume and ENI. \
                 Append zones at the end, and only while no zone holds two members (terraform/README.md, \
                 \"Growing the zone list\"); the members' layout is recorded in <environment>.members.json",
                old.index, old.zone, old.ip, new.zone, new.ip
            ),
        );
    }
}

/// A created public zone is `<environment>.<parent>`, delegated from the
/// existing zone `<parent>` (two labels at least: Route 53 has no TLD zones).
fn delegated_zone_fits(env: &Environment) -> bool {
    let name = env.public_zone_name.trim_end_matches('.').to_ascii_lowercase();
    name.strip_prefix(&format!("{}.", env.name))
        .is_some_and(|parent| parent.split('.').count() >= 2)
}

fn check_zones(env: &Environment, r: &mut Reader) {
    let zones = &env.availability_zones;
    if zones.len() < MIN_ZONES {
        r.error(
            "availability_zones",
            format!(
                "{} zone(s) given; the layout needs at least {MIN_ZONES} (load balancers span two zones)",
                zones.len()
            ),
        );
    }
    for (i, zone) in zones.iter().enumerate() {
        if !zone.starts_with(&env.region) {
            r.error(
                "availability_zones",
                format!("{zone:?} (index {i}) is not a zone of region {:?}", env.region),
            );
        }
        if zones[..i].contains(zone) {
            r.error("availability_zones", format!("{zone:?} is listed twice"));
        }
    }
}

fn subnets_of<'a>(env: &'a Environment, field: &str) -> &'a [Ipv4Net] {
    match field {
        "secure_subnets" => &env.subnets.secure,
        "compute_subnets" => &env.subnets.compute,
        "elb_subnets" => &env.subnets.elb,
        _ => &env.subnets.mgmt,
    }
}

fn check_subnets(env: &Environment, r: &mut Reader) {
    let zones = env.availability_zones.len();
    let mut seen: Vec<(&str, usize, Ipv4Net)> = Vec::new();
    for field in SUBNET_FIELDS {
        let nets = subnets_of(env, field);
        if nets.len() != zones {
            r.error(
                field,
                format!(
                    "{} subnet(s) for {zones} availability zone(s); give exactly one per zone, in zone order",
                    nets.len()
                ),
            );
        }
        for (i, net) in nets.iter().enumerate() {
            if !env.vpc_cidr.contains(net) {
                r.error(field, format!("{net} (index {i}) is outside vpc_cidr {}", env.vpc_cidr));
            }
            if let Some((other_field, j, other)) = seen.iter().find(|(_, _, o)| overlaps(o, net)) {
                r.error(
                    field,
                    format!("{net} (index {i}) overlaps {other} ({other_field} index {j})"),
                );
            }
            seen.push((field, i, *net));
        }
    }
}

fn overlaps(a: &Ipv4Net, b: &Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

fn check_etcd(env: &Environment, r: &mut Reader) {
    let count = env.etcd_count;
    if count == 0 {
        r.error(
            "etcd_count",
            "0 members: etcd needs at least one (3 or 5 for a cluster that survives a failure)",
        );
        return;
    }
    if count % 2 == 0 {
        r.warning(
            "etcd_count",
            format!(
                "{count} members tolerate no more failures than {} (quorum is {}); prefer an odd count",
                count - 1,
                count / 2 + 1
            ),
        );
    }
    let zones = env.availability_zones.len();
    if zones == 0 || env.subnets.secure.len() != zones {
        return; // already reported
    }
    let worst_zone = layout::members_per_zone(count, zones).into_iter().max().unwrap_or(0);
    let quorum = count / 2 + 1;
    if count > 1 && count - worst_zone < quorum {
        r.warning(
            "availability_zones",
            format!("with {count} etcd members over {zones} zone(s), losing one zone ({worst_zone} members) loses quorum; use at least 3 zones"),
        );
    }
    for (zone, net) in env.subnets.secure.iter().enumerate() {
        let last = layout::last_member_in_zone(count, zones, zone);
        if let Some(slot) = last {
            if host(*net, MEMBER_HOST_OFFSET + slot + 1).is_none() {
                r.error(
                    "secure_subnets",
                    format!(
                        "{net} is too small for the etcd members of zone {zone} (host {} needed)",
                        MEMBER_HOST_OFFSET + slot
                    ),
                );
            }
        }
    }
}

fn check_access(r: &mut Reader, field: &str, list: &[Ipv4Net]) {
    if list.is_empty() {
        r.warning(field, "empty: nothing can reach this endpoint from outside the VPC");
    }
    if list.iter().any(|n| n.prefix_len() == 0) {
        r.warning(
            field,
            "0.0.0.0/0 opens this endpoint to the whole internet; list your own networks instead",
        );
    }
}

/// Syntax rules for single values.
pub mod syntax {
    pub const FLATCAR_CHANNELS: [&str; 3] = ["stable", "beta", "alpha"];

    pub fn is_environment_name(s: &str) -> bool {
        (3..=32).contains(&s.len())
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && s.as_bytes()[0].is_ascii_lowercase()
            && !s.ends_with('-')
    }

    pub use crate::shared::cloud::{is_region, is_region_like_zone};

    /// `m6i.large`, `t3.micro`, `c7gn.16xlarge`.
    pub fn is_instance_type(s: &str) -> bool {
        match s.split_once('.') {
            Some((family, size)) => {
                !family.is_empty()
                    && !size.is_empty()
                    && family
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                    && size.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            }
            None => false,
        }
    }

    /// `MAJOR.MINOR.PATCH`, digits only: the form release artefacts are named by.
    pub fn is_version(s: &str) -> bool {
        let parts: Vec<&str> = s.split('.').collect();
        parts.len() == 3
            && parts
                .iter()
                .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
    }

    pub fn is_absolute_path(s: &str) -> bool {
        s.starts_with('/') && !s.ends_with('/') && !s.split('/').any(|c| c == "..")
    }

    pub fn is_s3_url(s: &str) -> bool {
        match s.strip_prefix("s3://").and_then(|rest| rest.split_once('/')) {
            Some((bucket, key)) => is_bucket_name(bucket) && !key.is_empty(),
            None => false,
        }
    }

    pub fn is_sha512_hex(s: &str) -> bool {
        s.len() == 128 && s.bytes().all(|b| b.is_ascii_hexdigit())
    }

    /// A key id (UUID), a key ARN, or an alias.
    pub fn is_kms_key_id(s: &str) -> bool {
        let uuid = |s: &str| s.len() == 36 && s.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-');
        let alias = |s: &str| {
            s.strip_prefix("alias/").is_some_and(|n| {
                !n.is_empty()
                    && !n.starts_with("aws/")
                    && n.bytes().all(|b| b.is_ascii_alphanumeric() || b"/_-".contains(&b))
            })
        };
        uuid(s)
            || alias(s)
            || (s.starts_with("arn:aws") && s.contains(":kms:") && (s.contains(":key/") || s.contains(":alias/")))
    }

    /// S3's naming rules for general purpose buckets.
    pub fn is_bucket_name(s: &str) -> bool {
        (3..=63).contains(&s.len())
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
            && s.as_bytes()[0].is_ascii_alphanumeric()
            && s.as_bytes()[s.len() - 1].is_ascii_alphanumeric()
            && !s.contains("..")
            && s.parse::<std::net::Ipv4Addr>().is_err()
    }

    /// A Route 53 hosted zone id: `Z` and upper-case letters and digits.
    pub fn is_route53_zone_id(s: &str) -> bool {
        s.len() <= 32
            && s.starts_with('Z')
            && s.len() > 1
            && s.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
    }

    pub fn is_dns_name(s: &str) -> bool {
        let s = s.strip_suffix('.').unwrap_or(s);
        s.len() <= 253
            && s.contains('.')
            && s.split('.').all(|label| {
                (1..=63).contains(&label.len())
                    && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                    && !label.starts_with('-')
                    && !label.ends_with('-')
            })
    }

    /// `TYPE BASE64 [COMMENT]` with a key type OpenSSH knows.
    pub fn is_ssh_public_key(s: &str) -> bool {
        const TYPES: [&str; 7] = [
            "ssh-ed25519",
            "ssh-rsa",
            "ecdsa-sha2-nistp256",
            "ecdsa-sha2-nistp384",
            "ecdsa-sha2-nistp521",
            "sk-ssh-ed25519@openssh.com",
            "sk-ecdsa-sha2-nistp256@openssh.com",
        ];
        let mut parts = s.split_whitespace();
        let (Some(kind), Some(blob)) = (parts.next(), parts.next()) else {
            return false;
        };
        TYPES.contains(&kind)
            && blob.len() > 16
            && blob.bytes().all(|b| b.is_ascii_alphanumeric() || b"+/=".contains(&b))
            && !s.contains('\n')
    }
}

#[cfg(test)]
mod tests {
    use super::syntax::*;

    #[test]
    fn syntax_rules_accept_good_and_refuse_bad_values() {
        assert!(
            is_region("eu-west-1") && is_region("us-gov-west-1") && !is_region("eu-west") && !is_region("EU-west-1")
        );
        assert!(is_region_like_zone("eu-west-1a") && !is_region_like_zone("eu-west-1"));
        assert!(is_instance_type("m6i.large") && !is_instance_type("large"));
        assert!(is_version("1.31.4") && !is_version("v1.31.4") && !is_version("1.31"));
        assert!(is_bucket_name("my-bucket.eu") && !is_bucket_name("My_Bucket") && !is_bucket_name("192.168.1.1"));
        assert!(
            is_kms_key_id("alias/x") && is_kms_key_id("1234abcd-12ab-34cd-56ef-1234567890ab") && !is_kms_key_id("x")
        );
        assert!(is_dns_name("example.com") && !is_dns_name("-bad.com") && !is_dns_name("nodot"));
        assert!(is_s3_url("s3://bucket/key") && !is_s3_url("s3://bucket") && !is_s3_url("https://x/y"));
        assert!(is_environment_name("play-jest") && !is_environment_name("Play") && !is_environment_name("ab"));
    }
}
