//! `nodeboot pki`: the environment's certificates, generated with rcgen,
//! written into the local secrets tree (`secrets/<environment>/`, the
//! seed's `platform/secrets` layout) that `nodeboot secrets upload` sends
//! to the bucket and `nodeboot stage secrets` pulls onto the nodes.
//!
//! `plan` (pure) lists every certificate, key pair, kubeconfig, the
//! kubelets' bootstrap token and the Secrets encryption key; `ensure`
//! creates what is missing and keeps the rest, so a rerun changes no byte.
//! A CA created (or rotated) in a run re-issues everything it signs. CA
//! private keys live in `ca/`, which is not a folder of the layout and is
//! never uploaded, except the cluster CA's: the control plane's
//! controller-manager signs kubelet certificates with it (`secure/ca.key`).

pub mod ends;
mod kubeconfig;
mod plan;
pub mod rotation;
mod token;

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use time::{Duration, OffsetDateTime};
use tracing::{info, warn};

pub use plan::{
    plan, BootstrapTokenSpec, CertSpec, EncryptionKeySpec, KubeconfigSpec, Pki, Usage, ADMIN_KUBECONFIG,
    BOOTSTRAP_GROUP, CLUSTER_CA_KEY, LEGACY_ADMIN_KUBECONFIG,
};
pub use token::{encryption_step, rfc3339, BootstrapToken, ENCRYPTION_KEY_BYTES};

use crate::shared::fsutil;

pub const CA_VALIDITY_DAYS: i64 = 3650;
pub const LEAF_VALIDITY_DAYS: i64 = 365;
pub use ends::{Due, RENEW_DAYS, WARN_DAYS};
/// How long a bootstrap token lets new kubelets join (renewed like a certificate).
pub const BOOTSTRAP_TOKEN_VALIDITY_DAYS: i64 = 90;

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: {detail}")]
    Bad { path: PathBuf, detail: String },
    #[error("{name}: {source}")]
    Generate { name: String, source: rcgen::Error },
    #[error("--rotate {0}: no such certificate (known: {1})")]
    UnknownRotate(String, String),
    #[error("no randomness from the operating system: {0}")]
    Random(String),
    /// A step nodeboot will not take yet (the key rotation's last one).
    #[error("{path}: refused: {detail}")]
    Refused { path: PathBuf, detail: String },
}

/// What `ensure` is asked to do besides creating what is missing.
#[derive(Debug, Default, Clone)]
pub struct Options {
    /// Issue these again (`--rotate NAME`); a CA re-issues what it signs.
    pub rotate: Vec<String>,
    /// Issue again everything that ends within `RENEW_DAYS` (`--renew`).
    pub renew: bool,
    /// With `renew`: leave a CA that ends soon as it is and report it in
    /// `Outcome::cas_ending` (`up`): a new CA changes everything it signs at
    /// once, and what trusts only the old one (members not yet restarted,
    /// kubelets) refuses the new certificates; the operator rotates a CA.
    pub keep_cas: bool,
    /// `--secrets-rewritten`: every Secret was rewritten under the new
    /// encryption key, so the key rotation's last step may drop the old one.
    pub secrets_rewritten: bool,
    /// Test only (`pki --test-validity-secs N`, hidden): leaf certificates
    /// issued in this run end this long after they start instead of
    /// `LEAF_VALIDITY_DAYS`, so a lab can watch them end within minutes.
    /// CAs and the bootstrap token keep their validity.
    pub test_leaf_validity: Option<Duration>,
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    pub created: Vec<String>,
    pub kept: Vec<String>,
    /// Certificates that end within `WARN_DAYS`, with days left (after this run).
    pub expiring: Vec<(String, i64)>,
    /// What `renew` issued again because it ended within `RENEW_DAYS`, with
    /// the days it had left.
    pub renewed: Vec<(String, i64)>,
    /// CAs that end within `RENEW_DAYS`, left to the operator (`keep_cas`).
    pub cas_ending: Vec<(String, i64)>,
}

/// Creates what is missing under `dir` (and what `rotate` names); keeps the rest.
pub fn ensure(dir: &Path, pki: &Pki, rotate: &[String]) -> Result<Outcome, PkiError> {
    ensure_with(
        dir,
        pki,
        &Options {
            rotate: rotate.to_vec(),
            ..Options::default()
        },
    )
}

/// The ids `--rotate` takes.
pub fn rotatable(pki: &Pki) -> Vec<&str> {
    let mut ids: Vec<&str> = pki.certs.iter().map(|c| c.id.as_str()).collect();
    ids.extend(pki.key_pairs.iter().map(|k| k.id.as_str()));
    ids.extend([pki.bootstrap_token.id.as_str(), pki.encryption_key.id.as_str()]);
    ids
}

pub fn ensure_with(dir: &Path, pki: &Pki, options: &Options) -> Result<Outcome, PkiError> {
    let known = rotatable(pki);
    for name in &options.rotate {
        if !known.contains(&name.as_str()) {
            return Err(PkiError::UnknownRotate(name.clone(), known.join(", ")));
        }
    }
    migrate_cluster_ca_key(dir)?;
    let mut rotate: BTreeSet<String> = options.rotate.iter().cloned().collect();
    let mut outcome = Outcome::default();
    if options.renew {
        for item in inventory(dir, pki)? {
            if let Some(days) = item.days_left.filter(|d| *d < RENEW_DAYS) {
                if options.keep_cas && item.kind == "ca" {
                    outcome.cas_ending.push((item.id, days));
                    continue;
                }
                info!("{} ends in {days} days: renewing", item.id);
                outcome.renewed.push((item.id.clone(), days));
                rotate.insert(item.id);
            }
        }
    }
    let mut renewed: BTreeSet<String> = BTreeSet::new();
    // Where the member certificates issued in this run end (see `ends::member_end`).
    let mut member_ends: Vec<OffsetDateTime> = Vec::new();
    let keeps = |spec: &CertSpec, renewed: &BTreeSet<String>| {
        let signer_renewed = spec.issuer.as_ref().is_some_and(|i| renewed.contains(i));
        dir.join(&spec.cert).exists() && dir.join(&spec.key).exists() && !signer_renewed && !rotate.contains(&spec.id)
    };
    for spec in &pki.certs {
        if keeps(spec, &renewed) {
            outcome.kept.push(spec.id.clone());
            continue;
        }
        let validity = options.test_leaf_validity.unwrap_or(Duration::days(LEAF_VALIDITY_DAYS));
        let now = OffsetDateTime::now_utc();
        let end = if spec.stagger {
            // The other members' certificates that stay; the signer of a
            // member is planned before every member, so `keeps` is final.
            let mut others = member_ends.clone();
            for other in pki.certs.iter().filter(|o| o.stagger && o.id != spec.id) {
                if keeps(other, &renewed) {
                    others.push(not_after(&dir.join(&other.cert))?);
                }
            }
            let end = ends::member_end(now, validity, &others);
            member_ends.push(end);
            end
        } else {
            now + validity
        };
        issue(dir, pki, spec, now, end)?;
        renewed.insert(spec.id.clone());
        outcome.created.push(spec.id.clone());
    }
    for pair in &pki.key_pairs {
        let (private, public) = (dir.join(&pair.key), dir.join(&pair.public));
        if private.exists() && public.exists() && !rotate.contains(&pair.id) {
            outcome.kept.push(pair.id.clone());
            continue;
        }
        let key = KeyPair::generate().map_err(|source| PkiError::Generate {
            name: pair.id.clone(),
            source,
        })?;
        write(&private, key.serialize_pem().as_bytes(), 0o600)?;
        write(&public, key.public_key_pem().as_bytes(), 0o644)?;
        outcome.created.push(pair.id.clone());
    }
    move_legacy_admin_kubeconfig(dir)?;
    for kc in &pki.kubeconfigs {
        let path = dir.join(&kc.path);
        if path.exists() && !renewed.contains(&kc.user) && !renewed.contains(&kc.ca) {
            outcome.kept.push(kc.id.clone());
            continue;
        }
        let user = pki.cert(&kc.user);
        let ca = pki.cert(&kc.ca);
        let text = kubeconfig::render(
            kc,
            &read(&dir.join(&ca.cert))?,
            &read(&dir.join(&user.cert))?,
            &read(&dir.join(&user.key))?,
        );
        write(&path, text.as_bytes(), 0o600)?;
        outcome.created.push(kc.id.clone());
    }
    ensure_bootstrap_token(
        dir,
        pki,
        rotate.contains(&pki.bootstrap_token.id),
        &renewed,
        &mut outcome,
    )?;
    ensure_encryption_key(
        dir,
        &pki.encryption_key,
        rotate.contains(&pki.encryption_key.id),
        options.secrets_rewritten,
        &mut outcome,
    )?;
    for item in inventory(dir, pki)? {
        if let Some(days) = item.days_left.filter(|d| *d < WARN_DAYS) {
            warn!(
                "{} expires in {days} days: renew it with `nodeboot pki --renew` (or `--rotate {}`)",
                item.id, item.id
            );
            outcome.expiring.push((item.id, days));
        }
    }
    Ok(outcome)
}

/// An older tree kept the admin kubeconfig in `secure/`, which is uploaded:
/// move it to `ca/` (the same credentials), and say that the bucket's copy
/// is the operator's to remove.
fn move_legacy_admin_kubeconfig(dir: &Path) -> Result<(), PkiError> {
    let (old, new) = (
        dir.join(plan::LEGACY_ADMIN_KUBECONFIG),
        dir.join(plan::ADMIN_KUBECONFIG),
    );
    if !old.exists() {
        return Ok(());
    }
    if new.exists() {
        std::fs::remove_file(&old).map_err(|e| PkiError::Io {
            path: old.clone(),
            source: e,
        })?;
    } else {
        std::fs::create_dir_all(new.parent().expect("in ca/")).map_err(|e| PkiError::Io {
            path: new.clone(),
            source: e,
        })?;
        std::fs::rename(&old, &new).map_err(|e| PkiError::Io {
            path: old.clone(),
            source: e,
        })?;
    }
    warn!(
        "moved {} to {}: the admin kubeconfig never leaves this machine; if it was uploaded, remove the bucket's copy with `nodeboot secrets rm --env F {}`",
        old.display(),
        new.display(),
        plan::LEGACY_ADMIN_KUBECONFIG
    );
    Ok(())
}

/// The cluster CA's key moved from `ca/` (never uploaded) to the control
/// plane's folder when the controller-manager began to sign kubelet
/// certificates; a tree made before keeps its CA.
fn migrate_cluster_ca_key(dir: &Path) -> Result<(), PkiError> {
    let (old, new) = (dir.join(plan::OLD_CLUSTER_CA_KEY), dir.join(CLUSTER_CA_KEY));
    if old.exists() && !new.exists() {
        let parent = new.parent().expect("secure/ca.key has a parent");
        std::fs::create_dir_all(parent).map_err(|source| PkiError::Io {
            path: parent.into(),
            source,
        })?;
        std::fs::rename(&old, &new).map_err(|source| PkiError::Io {
            path: new.clone(),
            source,
        })?;
        info!("moved {} to {}", old.display(), new.display());
    }
    Ok(())
}

fn ensure_bootstrap_token(
    dir: &Path,
    pki: &Pki,
    rotate: bool,
    renewed: &BTreeSet<String>,
    outcome: &mut Outcome,
) -> Result<(), PkiError> {
    let spec = &pki.bootstrap_token;
    let secret_path = dir.join(&spec.secret);
    let existing = if secret_path.exists() && !rotate {
        Some(BootstrapToken::read(&secret_path)?)
    } else {
        None
    };
    let token = match existing {
        Some(token) => token,
        None => {
            let token =
                BootstrapToken::generate(OffsetDateTime::now_utc() + Duration::days(BOOTSTRAP_TOKEN_VALIDITY_DAYS))?;
            write(&secret_path, token.secret_manifest().as_bytes(), 0o600)?;
            outcome.created.push(spec.id.clone());
            renewed_token(&token, dir, pki, outcome)?;
            return Ok(());
        }
    };
    let stale = spec.kubeconfigs.iter().any(|(path, _)| !dir.join(path).exists()) || renewed.contains(&spec.ca);
    if stale {
        renewed_token(&token, dir, pki, outcome)?;
    } else {
        outcome.kept.push(spec.id.clone());
    }
    Ok(())
}

fn renewed_token(token: &BootstrapToken, dir: &Path, pki: &Pki, outcome: &mut Outcome) -> Result<(), PkiError> {
    let spec = &pki.bootstrap_token;
    let ca = read(&dir.join(&pki.cert(&spec.ca).cert))?;
    for (path, server) in &spec.kubeconfigs {
        let bearer = token.bearer();
        let text = kubeconfig::render_token(
            &spec.cluster,
            server,
            &token.user(),
            &String::from_utf8_lossy(bearer.expose()),
            &ca,
        );
        write(&dir.join(path), text.as_bytes(), 0o600)?;
    }
    outcome.created.push(format!("{}-kubeconfigs", spec.id));
    Ok(())
}

fn ensure_encryption_key(
    dir: &Path,
    spec: &EncryptionKeySpec,
    rotate: bool,
    secrets_rewritten: bool,
    outcome: &mut Outcome,
) -> Result<(), PkiError> {
    let path = dir.join(&spec.path);
    let existing = if path.exists() {
        Some(token::EncryptionConfig::read(&path)?)
    } else {
        None
    };
    let config = match existing {
        Some(_) if !rotate => {
            outcome.kept.push(spec.id.clone());
            return Ok(());
        }
        // One step of the staged rotation (`rotation`).
        Some(config) => config.rotated_at(OffsetDateTime::now_utc(), secrets_rewritten, &path)?,
        None => token::EncryptionConfig::generate(OffsetDateTime::now_utc())?,
    };
    write(&path, config.render().as_bytes(), 0o600)?;
    outcome.created.push(spec.id.clone());
    Ok(())
}

/// One credential of the tree and when it ends.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Item {
    pub id: String,
    pub kind: &'static str,
    pub path: String,
    /// RFC 3339, UTC; `None` for what does not expire (keys).
    pub not_after: Option<String>,
    pub days_left: Option<i64>,
    /// What its end calls for (`ok`, `warn`, `renew`, `ended`; see `ends`).
    pub due: Due,
}

/// Every certificate and the bootstrap token with its end, in plan order;
/// what does not exist yet is left out.
pub fn inventory(dir: &Path, pki: &Pki) -> Result<Vec<Item>, PkiError> {
    let mut items = Vec::new();
    let now = OffsetDateTime::now_utc();
    for spec in &pki.certs {
        let path = dir.join(&spec.cert);
        if !path.exists() {
            continue;
        }
        let end = not_after(&path)?;
        let kind = if spec.usage == Usage::Ca { "ca" } else { "certificate" };
        items.push(Item {
            id: spec.id.clone(),
            kind,
            path: spec.cert.clone(),
            not_after: Some(token::rfc3339(end)),
            days_left: Some(ends::days_between(now, end)),
            due: Due::of(ends::days_between(now, end)),
        });
    }
    let secret = dir.join(&pki.bootstrap_token.secret);
    if secret.exists() {
        let end = BootstrapToken::read(&secret)?.expiration;
        items.push(Item {
            id: pki.bootstrap_token.id.clone(),
            kind: "bootstrap-token",
            path: pki.bootstrap_token.secret.clone(),
            not_after: Some(token::rfc3339(end)),
            days_left: Some(ends::days_between(now, end)),
            due: Due::of(ends::days_between(now, end)),
        });
    }
    Ok(items)
}

/// Issues `spec` from `now` (a little before, for clocks that are behind)
/// to `end`; a CA ends `CA_VALIDITY_DAYS` from now whatever `end` says.
fn issue(dir: &Path, pki: &Pki, spec: &CertSpec, now: OffsetDateTime, end: OffsetDateTime) -> Result<(), PkiError> {
    let generate = |source| PkiError::Generate {
        name: spec.id.clone(),
        source,
    };
    let key_pair = KeyPair::generate().map_err(generate)?;
    let params = params(spec, now, end)?;
    let certificate = match &spec.issuer {
        None => params.self_signed(&key_pair),
        Some(ca) => {
            let ca = pki.cert(ca);
            let ca_key = read_key(&dir.join(&ca.key))?;
            let issuer = Issuer::from_ca_cert_pem(&read(&dir.join(&ca.cert))?, ca_key).map_err(generate)?;
            params.signed_by(&key_pair, &issuer)
        }
    }
    .map_err(generate)?;
    write(&dir.join(&spec.key), key_pair.serialize_pem().as_bytes(), 0o600)?;
    write(&dir.join(&spec.cert), certificate.pem().as_bytes(), 0o644)?;
    info!(name = %spec.id, "issued {}", spec.cert);
    Ok(())
}

fn params(spec: &CertSpec, now: OffsetDateTime, end: OffsetDateTime) -> Result<CertificateParams, PkiError> {
    let generate = |source| PkiError::Generate {
        name: spec.id.clone(),
        source,
    };
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
    // A little slack for clocks that are behind.
    params.not_before = now - Duration::minutes(5);
    match spec.usage {
        Usage::Ca => {
            params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
            params.key_usages = vec![
                KeyUsagePurpose::KeyCertSign,
                KeyUsagePurpose::CrlSign,
                KeyUsagePurpose::DigitalSignature,
            ];
            params.not_after = now + Duration::days(CA_VALIDITY_DAYS);
        }
        Usage::Server | Usage::ServerAndClient | Usage::Client => {
            params.is_ca = IsCa::ExplicitNoCa;
            params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
            params.extended_key_usages = match spec.usage {
                Usage::Client => vec![ExtendedKeyUsagePurpose::ClientAuth],
                Usage::Server => vec![ExtendedKeyUsagePurpose::ServerAuth],
                _ => vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth],
            };
            params.use_authority_key_identifier_extension = true;
            params.not_after = end;
        }
    }
    Ok(params)
}

/// Days until the certificate at `path` ends (negative once it has).
pub fn days_left(path: &Path) -> Result<i64, PkiError> {
    Ok(ends::days_between(OffsetDateTime::now_utc(), not_after(path)?))
}

/// When the certificate at `path` ends.
pub fn not_after(path: &Path) -> Result<OffsetDateTime, PkiError> {
    let pem_text = read(path)?;
    let bad = |detail: String| PkiError::Bad {
        path: path.into(),
        detail,
    };
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem_text.as_bytes()).map_err(|e| bad(format!("not PEM: {e}")))?;
    let cert = pem.parse_x509().map_err(|e| bad(format!("not a certificate: {e}")))?;
    OffsetDateTime::from_unix_timestamp(cert.validity().not_after.timestamp())
        .map_err(|e| bad(format!("end date: {e}")))
}

fn read(path: &Path) -> Result<String, PkiError> {
    std::fs::read_to_string(path).map_err(|source| PkiError::Io {
        path: path.into(),
        source,
    })
}

fn read_key(path: &Path) -> Result<KeyPair, PkiError> {
    KeyPair::from_pem(&read(path)?).map_err(|e| PkiError::Bad {
        path: path.into(),
        detail: format!("not a private key: {e}"),
    })
}

fn write(path: &Path, bytes: &[u8], mode: u32) -> Result<(), PkiError> {
    let dir = path.parent().expect("PKI files live in a directory");
    std::fs::create_dir_all(dir).map_err(|source| PkiError::Io {
        path: dir.into(),
        source,
    })?;
    fsutil::write_atomic(path, bytes, mode).map_err(|source| PkiError::Io {
        path: path.into(),
        source,
    })
}
