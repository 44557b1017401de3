//! `nodeboot stage etcd`: the etcd member's configuration, derived from
//! what this node holds. The member name comes from the claimed member, the
//! URLs from its ENI's address, the initial cluster from every member's ENI
//! (read from EC2, never hard-coded), and the cluster state from the data
//! directory: a volume that already holds a member rejoins as `existing`.
//!
//! Writes `/run/nodeboot/etcd.env` (read by etcd-member.service); with
//! `--exec` it then replaces itself with etcd.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use tracing::info;

use super::attach::{Claim, CLAIM_FILE};
use super::{Root, StageError};
use crate::cloud::{tags, CloudError, ClusterFilter, Compute};
use crate::fsutil;
use crate::node_config::{ETCD_DATA_DIR, ETCD_ENV_FILE, SECRETS_DIR};
use crate::pki::etcd_member_name;

pub const PEER_PORT: u16 = 2380;
pub const CLIENT_PORT: u16 = 2379;

#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    #[error(transparent)]
    Cloud(#[from] CloudError),
    #[error("etcd members of {environment}: {detail}")]
    Members { environment: String, detail: String },
    #[error("{path} is missing: the etcd certificates come from `nodeboot stage secrets`")]
    NoCertificate { path: PathBuf },
    #[error("cannot run {binary}: {source}")]
    Exec { binary: String, source: std::io::Error },
    #[error(transparent)]
    Stage(#[from] StageError),
}

/// The TLS files of this member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tls {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Tls {
    pub fn for_member(root: &Root, member: u32) -> Tls {
        let dir = root.path(SECRETS_DIR).join("etcd");
        Tls { ca: dir.join("ca.crt"), cert: dir.join(format!("member-{member}.crt")), key: dir.join(format!("member-{member}.key")) }
    }
}

/// What etcd is told, as `ETCD_*` variables in a fixed order.
pub fn member_env(
    environment: &str,
    claim: &Claim,
    peers: &BTreeMap<u32, String>,
    data_dir: &Path,
    existing: bool,
    tls: &Tls,
) -> Vec<(&'static str, String)> {
    let url = |ip: &str, port: u16| format!("https://{ip}:{port}");
    let cluster: Vec<String> =
        peers.iter().map(|(m, ip)| format!("{}={}", etcd_member_name(environment, *m), url(ip, PEER_PORT))).collect();
    let path = |p: &Path| p.display().to_string();
    vec![
        ("ETCD_NAME", etcd_member_name(environment, claim.member)),
        ("ETCD_DATA_DIR", path(data_dir)),
        ("ETCD_LISTEN_PEER_URLS", url(&claim.eni_ip, PEER_PORT)),
        ("ETCD_LISTEN_CLIENT_URLS", format!("{},{}", url(&claim.eni_ip, CLIENT_PORT), url("127.0.0.1", CLIENT_PORT))),
        ("ETCD_ADVERTISE_CLIENT_URLS", url(&claim.eni_ip, CLIENT_PORT)),
        ("ETCD_INITIAL_ADVERTISE_PEER_URLS", url(&claim.eni_ip, PEER_PORT)),
        ("ETCD_INITIAL_CLUSTER", cluster.join(",")),
        ("ETCD_INITIAL_CLUSTER_STATE", if existing { "existing" } else { "new" }.into()),
        ("ETCD_INITIAL_CLUSTER_TOKEN", format!("{environment}-etcd")),
        ("ETCD_CERT_FILE", path(&tls.cert)),
        ("ETCD_KEY_FILE", path(&tls.key)),
        ("ETCD_TRUSTED_CA_FILE", path(&tls.ca)),
        ("ETCD_CLIENT_CERT_AUTH", "true".into()),
        ("ETCD_PEER_CERT_FILE", path(&tls.cert)),
        ("ETCD_PEER_KEY_FILE", path(&tls.key)),
        ("ETCD_PEER_TRUSTED_CA_FILE", path(&tls.ca)),
        ("ETCD_PEER_CLIENT_CERT_AUTH", "true".into()),
    ]
}

/// Every member's ENI address by member index, checked against the claim
/// and the expected member count.
pub fn peers_from(
    environment: &str,
    enis: &[crate::cloud::NetworkInterface],
    claim: &Claim,
    expected: u32,
) -> Result<BTreeMap<u32, String>, EtcdError> {
    let fail = |detail: String| EtcdError::Members { environment: environment.into(), detail };
    let mut peers = BTreeMap::new();
    for eni in enis {
        let member: u32 = eni
            .tags
            .get(tags::MEMBER)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| fail(format!("{} has no valid {} tag", eni.id, tags::MEMBER)))?;
        if peers.insert(member, eni.private_ip.clone()).is_some() {
            return Err(fail(format!("two ENIs are tagged member {member}")));
        }
    }
    if peers.len() as u32 != expected {
        return Err(fail(format!("found {} member ENIs, the environment has {expected} members", peers.len())));
    }
    match peers.get(&claim.member) {
        Some(ip) if *ip == claim.eni_ip => Ok(peers),
        other => Err(fail(format!("this node holds member {} at {}, but EC2 says {:?}", claim.member, claim.eni_ip, other))),
    }
}

/// Writes the env file; returns the variables for `--exec`.
pub async fn run(root: &Root, ec2: &impl Compute) -> Result<Vec<(&'static str, String)>, EtcdError> {
    let config = root.node_config()?;
    let claim: Claim = root.recorded(CLAIM_FILE, "attach")?;
    let tls = Tls::for_member(root, claim.member);
    for path in [&tls.ca, &tls.cert, &tls.key] {
        if !path.exists() {
            return Err(EtcdError::NoCertificate { path: path.clone() });
        }
    }
    let filter = ClusterFilter { environment: config.environment.clone(), role: config.role.to_string() };
    let enis = ec2.network_interfaces(&filter).await?;
    let expected = config.etcd.as_ref().map_or(0, |e| e.members);
    let peers = peers_from(&config.environment, &enis, &claim, expected)?;
    let data_dir = root.path(ETCD_DATA_DIR);
    let existing = data_dir.join("member").is_dir();
    let vars = member_env(&config.environment, &claim, &peers, &data_dir, existing, &tls);
    let text: String = vars.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
    let path = root.path(ETCD_ENV_FILE);
    fsutil::write_atomic(&path, text.as_bytes(), 0o644).map_err(|e| StageError::io(&path, e))?;
    info!(
        member = claim.member,
        state = if existing { "existing" } else { "new" },
        "etcd member {} configured in {}",
        etcd_member_name(&config.environment, claim.member),
        path.display()
    );
    Ok(vars)
}

/// Replaces this process with etcd, configured by `vars`.
pub fn exec(binary: &str, vars: &[(&'static str, String)]) -> EtcdError {
    use std::os::unix::process::CommandExt;
    info!("exec {binary}");
    let source = std::process::Command::new(binary).envs(vars.iter().map(|(k, v)| (*k, v))).exec();
    EtcdError::Exec { binary: binary.into(), source }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cloud::NetworkInterface;

    fn eni(member: &str, ip: &str) -> NetworkInterface {
        NetworkInterface {
            id: format!("eni-{member}"),
            zone: "eu-west-1a".into(),
            subnet_id: "s".into(),
            private_ip: ip.into(),
            mac: "0e:00:00:00:00:01".into(),
            status: "in-use".into(),
            attachment: None,
            tags: [(tags::MEMBER.to_string(), member.to_string())].into(),
        }
    }

    fn claim(member: u32, ip: &str) -> Claim {
        Claim {
            member,
            instance_id: "i-1".into(),
            zone: "eu-west-1a".into(),
            volume_id: "vol-1".into(),
            device_name: "/dev/xvdf".into(),
            eni_id: "eni-x".into(),
            eni_ip: ip.into(),
            eni_mac: "0e:00:00:00:00:01".into(),
        }
    }

    #[test]
    fn initial_cluster_lists_every_member_by_eni_address() {
        let enis = [eni("2", "10.0.12.10"), eni("0", "10.0.10.10"), eni("1", "10.0.11.10")];
        let me = claim(1, "10.0.11.10");
        let peers = peers_from("env", &enis, &me, 3).unwrap();
        let tls = Tls { ca: "/s/ca.crt".into(), cert: "/s/m.crt".into(), key: "/s/m.key".into() };
        let vars: BTreeMap<_, _> = member_env("env", &me, &peers, Path::new("/d"), false, &tls).into_iter().collect();
        assert_eq!(vars["ETCD_NAME"], "env-etcd-1");
        assert_eq!(
            vars["ETCD_INITIAL_CLUSTER"],
            "env-etcd-0=https://10.0.10.10:2380,env-etcd-1=https://10.0.11.10:2380,env-etcd-2=https://10.0.12.10:2380"
        );
        assert_eq!(vars["ETCD_ADVERTISE_CLIENT_URLS"], "https://10.0.11.10:2379");
        assert_eq!(vars["ETCD_INITIAL_CLUSTER_STATE"], "new");
        let vars: BTreeMap<_, _> = member_env("env", &me, &peers, Path::new("/d"), true, &tls).into_iter().collect();
        assert_eq!(vars["ETCD_INITIAL_CLUSTER_STATE"], "existing");
    }

    #[test]
    fn member_set_must_match_the_environment_and_the_claim() {
        let me = claim(0, "10.0.10.10");
        let two = [eni("0", "10.0.10.10"), eni("1", "10.0.11.10")];
        assert!(peers_from("env", &two, &me, 3).unwrap_err().to_string().contains("found 2 member ENIs, the environment has 3"));
        let dup = [eni("0", "10.0.10.10"), eni("0", "10.0.11.10"), eni("1", "10.0.12.10")];
        assert!(peers_from("env", &dup, &me, 3).unwrap_err().to_string().contains("two ENIs are tagged member 0"));
        let moved = [eni("0", "10.0.10.99"), eni("1", "10.0.11.10"), eni("2", "10.0.12.10")];
        assert!(peers_from("env", &moved, &me, 3).unwrap_err().to_string().contains("EC2 says"));
    }
}
