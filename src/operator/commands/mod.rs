//! One function per CLI command: what `main` calls once arguments are parsed.

#[cfg(feature = "aws")]
pub mod down;
#[cfg(feature = "aws")]
pub mod etcd;
#[cfg(feature = "aws")]
pub mod etcd_backup;
#[cfg(feature = "aws")]
pub mod etcd_certs;
#[cfg(feature = "aws")]
pub mod etcd_restore;
#[cfg(feature = "aws")]
pub mod etcd_retire;
#[cfg(feature = "aws")]
pub mod inspect;
pub mod kubeconfig;
#[cfg(feature = "aws")]
pub mod roll;
#[cfg(feature = "aws")]
pub mod up;

use std::path::{Path, PathBuf};

use tracing::{info, warn};

use crate::operator::env::{self, Loaded};
use crate::operator::error::Error;
use crate::operator::render;
use crate::shared::role::Role;

#[cfg(feature = "aws")]
pub mod secrets;

/// Runs `work` with the operator's AWS configuration: credentials from the
/// environment variables first, then the shared credentials file with the
/// profile named by `aws_profile` (as the seed maps profile to environment).
#[cfg(feature = "aws")]
pub fn operator_runtime<T>(
    env: &crate::operator::env::Environment,
    work: impl AsyncFnOnce(&aws_config::SdkConfig) -> Result<T, Error>,
) -> Result<T, Error> {
    let profile = std::env::var("AWS_PROFILE").unwrap_or_else(|_| env.aws_profile.clone());
    crate::shared::runtime::block_on(async {
        let sdk = crate::shared::cloud::aws::sdk_config_with_profile(&env.region, &profile).await;
        work(&sdk).await
    })
}

/// Loads and validates an environment file, logging its warnings.
pub fn load_env(path: &Path) -> Result<Loaded, Error> {
    let loaded = env::load(path)?;
    for w in loaded.warnings.warnings() {
        warn!("{w}");
    }
    Ok(loaded)
}

/// `nodeboot images`: every image the environment's nodes run, one a line
/// (`<runtime> <repository:tag@sha256:...>`): what the AMI bake pulls.
pub fn images(env_path: &Path) -> Result<Vec<String>, Error> {
    let loaded = load_env(env_path)?;
    Ok(render::images::node_images(&loaded.env)
        .into_iter()
        .map(|(runtime, image)| format!("{} {image}", runtime.as_str()))
        .collect())
}

/// `nodeboot validate`: prints what is wrong; Ok when nothing is an error.
pub fn validate(path: &Path, running_version: Option<&str>) -> Result<String, Error> {
    let loaded = load_env(path)?;
    if let Some(problem) =
        running_version.and_then(|running| crate::operator::kube::skew_problem(running, &loaded.env.kubernetes_version))
    {
        return Err(Error::VersionSkew(format!(
            "{}: kubernetes_version: {problem}",
            path.display()
        )));
    }
    let warnings = loaded.warnings.warnings().count();
    Ok(format!(
        "{}: valid ({} warning{})",
        path.display(),
        warnings,
        if warnings == 1 { "" } else { "s" }
    ))
}

/// `nodeboot render`: writes the configs and returns one line per file.
pub fn render(path: &Path, out: &Path, roles: &[Role]) -> Result<Vec<String>, Error> {
    let loaded = load_env(path)?;
    let roles: Vec<Role> = if roles.is_empty() {
        Role::ALL.to_vec()
    } else {
        roles.to_vec()
    };
    let written = render::write(&loaded.env, &roles, out)?;
    let mut lines: Vec<String> = written
        .iter()
        .map(|w| match &w.full {
            None => format!("{}: {} bytes", w.user_data.display(), w.user_data_len),
            Some(full) => format!(
                "{}: {} bytes, pointer to {} (upload {} there)",
                w.user_data.display(),
                w.user_data_len,
                render::full_config_url(&loaded.env, w.role),
                full.display()
            ),
        })
        .collect();
    let kind = |m: &Path| {
        if m.parent().is_some_and(|d| d.ends_with(render::addons::ADDONS)) {
            "add-on"
        } else {
            "static pod"
        }
    };
    lines.extend(
        written
            .iter()
            .flat_map(|w| w.manifests.iter().map(|m| format!("{}: {}", m.display(), kind(m)))),
    );
    info!(roles = roles.len(), out = %out.display(), "rendered");
    Ok(lines)
}

/// `nodeboot env new`: the playground is `play-$USER`, as in the seed.
pub fn env_new(name: Option<String>, dir: &Path) -> Result<PathBuf, Error> {
    let name = name.unwrap_or_else(|| format!("play-{}", std::env::var("USER").unwrap_or_else(|_| "user".into())));
    Ok(env::write_new(dir, &name)?)
}

/// `nodeboot pki`: creates the missing certificates, keeps the rest; with
/// `output`, lists every certificate and token with its expiry instead.
pub fn pki(
    env_path: &Path,
    dir: Option<&Path>,
    options: &crate::operator::pki::Options,
    output: Option<Output>,
) -> Result<Vec<String>, Error> {
    let loaded = load_env(env_path)?;
    let dir = dir
        .map(Path::to_path_buf)
        .unwrap_or_else(|| crate::shared::secrets::layout::default_dir(&loaded.env.name));
    let plan = crate::operator::pki::plan(&loaded.env);
    let outcome = crate::operator::pki::ensure_with(&dir, &plan, options)?;
    if let Some(format) = output {
        let items = crate::operator::pki::inventory(&dir, &plan)?;
        return Ok(match format {
            Output::Json => vec![serde_json::to_string_pretty(&items).expect("inventory serialises")],
            Output::Table => {
                let mut lines: Vec<String> = items
                    .iter()
                    .map(|i| {
                        format!(
                            "{:<28} {:<16} {:<22} {:>5} days  {:<6} {}",
                            i.id,
                            i.kind,
                            i.not_after.as_deref().unwrap_or("-"),
                            i.days_left.unwrap_or_default(),
                            i.due.as_str(),
                            i.path
                        )
                    })
                    .collect();
                lines.extend(expiry_warning(&items));
                lines
            }
        });
    }
    let mut lines: Vec<String> = outcome
        .renewed
        .iter()
        .map(|(n, d)| format!("renewed  {n}: it ended in {d} days"))
        .collect();
    lines.extend(outcome.created.iter().map(|n| format!("created  {n}")));
    lines.extend(outcome.kept.iter().map(|n| format!("kept     {n}")));
    lines.extend(
        outcome
            .expiring
            .iter()
            .map(|(n, d)| format!("expiring {n} in {d} days")),
    );
    if let Some(step) = crate::operator::pki::encryption_step(&dir.join(&plan.encryption_key.path))? {
        lines.push(step.describe());
    }
    lines.push(format!("in {}", dir.display()));
    Ok(lines)
}

/// The warning `pki --output table` and `up` print when something ends
/// within `WARN_DAYS` (none otherwise).
pub fn expiry_warning(items: &[crate::operator::pki::Item]) -> Option<String> {
    use crate::operator::pki::{Due, RENEW_DAYS, WARN_DAYS};
    let soon: Vec<String> = items
        .iter()
        .filter(|i| i.due > Due::Ok)
        .map(|i| format!("{} ({} days)", i.id, i.days_left.unwrap_or_default()))
        .collect();
    (!soon.is_empty()).then(|| {
        format!(
            "warning: {} end within {WARN_DAYS} days: {}; `nodeboot up` or `nodeboot pki --renew` issues again what ends within {RENEW_DAYS}",
            soon.len(),
            soon.join(", ")
        )
    })
}

/// How a listing is printed (`pki --output`, `inspect`): here, not in
/// `inspect`, so the offline build (no AWS) has it too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Table,
    Json,
}
