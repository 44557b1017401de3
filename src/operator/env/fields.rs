//! Typed reading of single fields: each reader checks one value and, when it
//! is wrong, says which field, on which line, what was expected and what was
//! found.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use super::diag::{Diagnostic, Diagnostics};
use super::parse::RawEnv;

/// Every field an environment file may hold, with what it expects. Unknown
/// keys are matched against these names to suggest the one meant.
pub const FIELDS: &[(&str, &str)] = &[
    ("environment", "a name of 3-32 lower-case letters, digits and '-'"),
    ("aws_account", "a 12-digit AWS account id"),
    ("aws_profile", "the profile name in ~/.aws/credentials"),
    ("region", "an AWS region such as \"eu-west-1\""),
    ("availability_zones", "a list of zones of the region, such as [\"eu-west-1a\", \"eu-west-1b\"]"),
    ("vpc_cidr", "an IPv4 CIDR such as \"10.80.0.0/16\""),
    ("secure_subnets", "a list of IPv4 CIDRs, one per availability zone"),
    ("compute_subnets", "a list of IPv4 CIDRs, one per availability zone"),
    ("elb_subnets", "a list of IPv4 CIDRs, one per availability zone"),
    ("mgmt_subnets", "a list of IPv4 CIDRs, one per availability zone"),
    ("etcd_count", "an odd number of etcd members, 1 or more"),
    ("etcd_instance_type", "an EC2 instance type such as \"m6i.large\""),
    ("compute_count", "a number of compute nodes, 0 or more"),
    ("compute_instance_type", "an EC2 instance type such as \"m6i.large\""),
    ("compute_min_healthy_percentage", "a percentage of workers kept in service while they are replaced, 0 to 100"),
    ("bastion_instance_type", "an EC2 instance type such as \"t3.micro\""),
    ("flatcar_channel", "one of \"stable\", \"beta\", \"alpha\""),
    ("kubernetes_version", "a version such as \"1.31.4\""),
    ("etcd_version", "a version such as \"3.5.17\""),
    ("etcd_backup_interval", "a duration from \"1m\" to \"24h\" such as \"15m\""),
    ("etcd_backup_keep_hourly", "a duration such as \"7d\": how long one backup per hour is kept"),
    ("etcd_backup_keep_daily", "a duration such as \"365d\", at least etcd_backup_keep_hourly"),
    ("etcd_quota_bytes", "etcd's database quota in bytes, from 268435456 (256 MiB) to 8589934592 (8 GiB, etcd's suggested maximum)"),
    ("nodeboot_source", "\"ami\" (baked into the image) or \"s3\" (fetched at boot)"),
    ("nodeboot_path", "an absolute path such as \"/opt/bin/nodeboot\""),
    ("nodeboot_s3_url", "an S3 URL such as \"s3://bucket/nodeboot\" (empty when nodeboot_source = \"ami\")"),
    ("nodeboot_sha512", "the binary's SHA-512 as 128 hex digits (empty when nodeboot_source = \"ami\")"),
    ("kms_master_id", "a KMS key id, key ARN or \"alias/NAME\""),
    ("secrets_bucket_name", "an S3 bucket name"),
    ("terraform_bucket_name", "an S3 bucket name"),
    ("public_zone_name", "a DNS name such as \"example.com\""),
    ("public_zone_id", "\"\" (the existing zone public_zone_name), a Route 53 zone id such as \"Z0123456789ABCDEFGHIJ\", or \"create\""),
    ("private_zone_name", "a DNS name such as \"example.internal\""),
    ("kubeapi_access_list", "a list of IPv4 CIDRs"),
    ("ssh_access_list", "a list of IPv4 CIDRs"),
    ("ssh_authorized_keys", "a list of OpenSSH public keys"),
    ("addons", "a list of cluster add-ons: \"flannel\", \"coredns\""),
    ("flannel_version", "a Flannel release nodeboot pins, such as \"0.26.0\""),
    ("coredns_version", "a CoreDNS release nodeboot pins, such as \"1.11.3\""),
];

fn expected(field: &str) -> &'static str {
    FIELDS
        .iter()
        .find(|(name, _)| *name == field)
        .map(|(_, e)| *e)
        .unwrap_or("a value")
}

/// Reads fields out of a parsed file, collecting every problem instead of
/// stopping at the first, so one run of `validate` shows them all.
pub struct Reader<'a> {
    raw: &'a RawEnv,
    pub diags: Diagnostics,
}

impl<'a> Reader<'a> {
    pub fn new(raw: &'a RawEnv) -> Self {
        let mut reader = Reader {
            raw,
            diags: Diagnostics::default(),
        };
        reader.check_unknown_keys();
        reader
    }

    /// The environment file, as the diagnostics name it.
    pub fn file(&self) -> &str {
        &self.raw.file
    }

    pub fn line(&self, field: &str) -> Option<usize> {
        self.raw.attrs.get(field).map(|a| a.line)
    }

    pub fn error(&mut self, field: &str, message: impl Into<String>) {
        let line = self.line(field);
        self.diags
            .push(Diagnostic::error(&self.raw.file, line, Some(field), message));
    }

    pub fn warning(&mut self, field: &str, message: impl Into<String>) {
        let line = self.line(field);
        self.diags
            .push(Diagnostic::warning(&self.raw.file, line, Some(field), message));
    }

    fn check_unknown_keys(&mut self) {
        let unknown: Vec<String> = self
            .raw
            .attrs
            .keys()
            .filter(|k| !FIELDS.iter().any(|(name, _)| name == k))
            .cloned()
            .collect();
        for key in unknown {
            let hint = match nearest_field(&key) {
                Some(near) => format!("; did you mean `{near}`?"),
                None => String::new(),
            };
            self.error(&key, format!("unknown field{hint}"));
        }
    }

    /// The field's value parsed by `parse`, or `None` after recording why not.
    /// `parse` answers `Err(found)` with a short description of what was there.
    fn read<T>(&mut self, field: &str, parse: impl FnOnce(&hcl::Value) -> Result<T, String>) -> Option<T> {
        let Some(attr) = self.raw.attrs.get(field) else {
            self.error(field, format!("missing; expected {}", expected(field)));
            return None;
        };
        match parse(&attr.value) {
            Ok(v) => Some(v),
            Err(found) => {
                self.error(field, format!("expected {}, found {found}", expected(field)));
                None
            }
        }
    }

    pub fn string(&mut self, field: &str, valid: impl Fn(&str) -> bool) -> Option<String> {
        self.read(field, |v| match v {
            hcl::Value::String(s) if valid(s) => Ok(s.clone()),
            other => Err(describe(other)),
        })
    }

    pub fn count(&mut self, field: &str) -> Option<u32> {
        self.read(field, |v| match v {
            hcl::Value::Number(n) => n
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| describe(v)),
            other => Err(describe(other)),
        })
    }

    /// A whole number of bytes (or any other unit too large for `count`).
    pub fn number(&mut self, field: &str) -> Option<u64> {
        self.read(field, |v| match v {
            hcl::Value::Number(n) => n.as_u64().ok_or_else(|| describe(v)),
            other => Err(describe(other)),
        })
    }

    pub fn string_list(&mut self, field: &str, valid: impl Fn(&str) -> bool) -> Option<Vec<String>> {
        self.read(field, |v| {
            let hcl::Value::Array(items) = v else {
                return Err(describe(v));
            };
            items
                .iter()
                .enumerate()
                .map(|(i, item)| match item {
                    hcl::Value::String(s) if valid(s) => Ok(s.clone()),
                    other => Err(format!("{} at index {i}", describe(other))),
                })
                .collect()
        })
    }

    pub fn cidr(&mut self, field: &str) -> Option<Ipv4Net> {
        self.read(field, |v| match v {
            hcl::Value::String(s) => parse_cidr(s).ok_or_else(|| describe(v)),
            other => Err(describe(other)),
        })
    }

    pub fn cidr_list(&mut self, field: &str) -> Option<Vec<Ipv4Net>> {
        let strings = self.string_list(field, |s| parse_cidr(s).is_some())?;
        Some(strings.iter().filter_map(|s| parse_cidr(s)).collect())
    }
}

/// A CIDR whose address is the network address (`10.0.0.1/16` is refused:
/// Terraform's AWS provider refuses it too, and it is almost always a typo).
pub fn parse_cidr(s: &str) -> Option<Ipv4Net> {
    let net: Ipv4Net = s.parse().ok()?;
    (net.addr() == net.network()).then_some(net)
}

pub fn nearest_field(key: &str) -> Option<&'static str> {
    FIELDS
        .iter()
        .map(|(name, _)| (strsim::damerau_levenshtein(key, name), *name))
        .filter(|(distance, name)| *distance <= 3.max(name.len() / 3))
        .min()
        .map(|(_, name)| name)
}

/// A short, quoted description of a value for "found ..." messages.
fn describe(v: &hcl::Value) -> String {
    match v {
        hcl::Value::String(s) => format!("{s:?}"),
        hcl::Value::Number(n) => format!("the number {n}"),
        hcl::Value::Bool(b) => format!("the boolean {b}"),
        hcl::Value::Null => "null".into(),
        hcl::Value::Array(_) => "a list".into(),
        hcl::Value::Object(_) => "an object".into(),
    }
}

/// The address of host number `n` in `net`, if the subnet has one.
pub fn host(net: Ipv4Net, n: u32) -> Option<Ipv4Addr> {
    let base = u32::from(net.network());
    let size = 1u64 << (32 - net.prefix_len());
    (u64::from(n) < size).then(|| Ipv4Addr::from(base + n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_field_suggests_misspelt_keys() {
        assert_eq!(nearest_field("etcd_cont"), Some("etcd_count"));
        assert_eq!(nearest_field("vpc_cdir"), Some("vpc_cidr"));
        assert_eq!(nearest_field("availability_zone"), Some("availability_zones"));
        assert_eq!(nearest_field("completely_unrelated_thing"), None);
    }

    #[test]
    fn cidr_with_host_bits_is_refused() {
        assert!(parse_cidr("10.0.0.0/16").is_some());
        assert!(parse_cidr("10.0.0.1/16").is_none());
        assert!(parse_cidr("10.0.0.0/33").is_none());
    }
}
