//! `nodeboot pki`: the environment's certificates, generated with rcgen.
//!
//! `plan` (pure) lists every certificate the platform needs and what goes in
//! it; `ensure` creates the missing ones and keeps the rest, so a rerun
//! changes no byte. A CA created in a run re-issues everything it signs.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    SanType,
};
use time::{Duration, OffsetDateTime};
use tracing::info;

use crate::env::Environment;
use crate::fsutil;

/// What a certificate is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usage {
    Ca,
    /// Serves and connects (etcd members talk to each other both ways).
    ServerAndClient,
    Client,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertSpec {
    /// Path under the PKI directory without extension: `etcd/member-0`.
    pub name: String,
    pub common_name: String,
    pub organization: Option<String>,
    /// The CA (by `name`) that signs it; `None` for a CA itself.
    pub issuer: Option<String>,
    pub sans: Vec<String>,
    pub usage: Usage,
}

pub const CA_VALIDITY_DAYS: i64 = 3650;
pub const LEAF_VALIDITY_DAYS: i64 = 365;

/// Every certificate of the environment, CAs first.
pub fn plan(env: &Environment) -> Vec<CertSpec> {
    let mut specs = vec![CertSpec {
        name: "etcd/ca".into(),
        common_name: format!("{}-etcd-ca", env.name),
        organization: None,
        issuer: None,
        sans: vec![],
        usage: Usage::Ca,
    }];
    for m in env.etcd_members() {
        specs.push(CertSpec {
            name: format!("etcd/member-{}", m.index),
            common_name: etcd_member_name(&env.name, m.index),
            organization: None,
            issuer: Some("etcd/ca".into()),
            sans: vec![
                m.ip.to_string(),
                "127.0.0.1".into(),
                "localhost".into(),
                format!("etcd-{}.{}", m.index, env.private_zone_name),
            ],
            usage: Usage::ServerAndClient,
        });
    }
    specs.push(CertSpec {
        name: "etcd/client".into(),
        common_name: format!("{}-etcd-client", env.name),
        organization: None,
        issuer: Some("etcd/ca".into()),
        sans: vec![],
        usage: Usage::Client,
    });
    specs
}

/// The etcd member name of member `index`; the etcd stage uses the same.
pub fn etcd_member_name(environment: &str, index: u32) -> String {
    format!("{environment}-etcd-{index}")
}

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: {detail}")]
    Bad { path: PathBuf, detail: String },
    #[error("{name}: {source}")]
    Generate { name: String, source: rcgen::Error },
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    pub created: Vec<String>,
    pub kept: Vec<String>,
}

pub fn cert_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.crt"))
}

pub fn key_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.key"))
}

/// Creates what is missing under `dir`; keeps what exists.
pub fn ensure(dir: &Path, specs: &[CertSpec]) -> Result<Outcome, PkiError> {
    let mut outcome = Outcome::default();
    let mut new_cas: BTreeSet<&str> = BTreeSet::new();
    for spec in specs {
        let (cert, key) = (cert_path(dir, &spec.name), key_path(dir, &spec.name));
        let signer_is_new = spec.issuer.as_deref().is_some_and(|i| new_cas.contains(i));
        if cert.exists() && key.exists() && !signer_is_new {
            outcome.kept.push(spec.name.clone());
            continue;
        }
        let key_pair = KeyPair::generate().map_err(|source| PkiError::Generate { name: spec.name.clone(), source })?;
        let params = params(spec)?;
        let certificate = match &spec.issuer {
            None => params.self_signed(&key_pair),
            Some(ca) => {
                let ca_key = read_key(&key_path(dir, ca))?;
                let ca_pem = read(&cert_path(dir, ca))?;
                let issuer = Issuer::from_ca_cert_pem(&ca_pem, ca_key).map_err(|source| PkiError::Generate { name: ca.clone(), source })?;
                params.signed_by(&key_pair, &issuer)
            }
        }
        .map_err(|source| PkiError::Generate { name: spec.name.clone(), source })?;
        write(&key, key_pair.serialize_pem().as_bytes(), 0o600)?;
        write(&cert, certificate.pem().as_bytes(), 0o644)?;
        if spec.usage == Usage::Ca {
            new_cas.insert(&spec.name);
        }
        info!(name = %spec.name, "created certificate {}", cert.display());
        outcome.created.push(spec.name.clone());
    }
    Ok(outcome)
}

fn params(spec: &CertSpec) -> Result<CertificateParams, PkiError> {
    let generate = |source| PkiError::Generate { name: spec.name.clone(), source };
    let mut params = CertificateParams::default();
    params.subject_alt_names = spec
        .sans
        .iter()
        .map(|s| match s.parse::<IpAddr>() {
            Ok(ip) => Ok(SanType::IpAddress(ip)),
            Err(_) => s.clone().try_into().map(SanType::DnsName),
        })
        .collect::<Result<_, _>>()
        .map_err(generate)?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, spec.common_name.clone());
    if let Some(o) = &spec.organization {
        dn.push(DnType::OrganizationName, o.clone());
    }
    params.distinguished_name = dn;
    let now = OffsetDateTime::now_utc();
    // A little slack for clocks that are behind.
    params.not_before = now - Duration::minutes(5);
    match spec.usage {
        Usage::Ca => {
            params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
            params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
            params.not_after = now + Duration::days(CA_VALIDITY_DAYS);
        }
        Usage::ServerAndClient | Usage::Client => {
            params.is_ca = IsCa::ExplicitNoCa;
            params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
            params.extended_key_usages = match spec.usage {
                Usage::Client => vec![ExtendedKeyUsagePurpose::ClientAuth],
                _ => vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth],
            };
            params.use_authority_key_identifier_extension = true;
            params.not_after = now + Duration::days(LEAF_VALIDITY_DAYS);
        }
    }
    Ok(params)
}

fn read(path: &Path) -> Result<String, PkiError> {
    std::fs::read_to_string(path).map_err(|source| PkiError::Io { path: path.into(), source })
}

fn read_key(path: &Path) -> Result<KeyPair, PkiError> {
    KeyPair::from_pem(&read(path)?).map_err(|e| PkiError::Bad { path: path.into(), detail: format!("not a private key: {e}") })
}

fn write(path: &Path, bytes: &[u8], mode: u32) -> Result<(), PkiError> {
    let dir = path.parent().expect("PKI files live in a directory");
    std::fs::create_dir_all(dir).map_err(|source| PkiError::Io { path: dir.into(), source })?;
    fsutil::write_atomic(path, bytes, mode).map_err(|source| PkiError::Io { path: path.into(), source })
}
