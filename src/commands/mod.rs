//! One function per CLI command: what `main` calls once arguments are parsed.

pub mod etcd;
pub mod inspect;
pub mod kubeconfig;
pub mod roll;
pub mod up;

use std::path::{Path, PathBuf};

use tracing::{info, warn};

use crate::env::{self, Loaded};
use crate::error::Error;
use crate::render;
use crate::role::Role;

pub mod secrets;

/// Runs `work` with the operator's AWS configuration: credentials from the
/// environment variables first, then the shared credentials file with the
/// profile named by `aws_profile` (as the seed maps profile to environment).
pub fn operator_runtime<T>(env: &crate::env::Environment, work: impl AsyncFnOnce(&aws_config::SdkConfig) -> Result<T, Error>) -> Result<T, Error> {
    let profile = std::env::var("AWS_PROFILE").unwrap_or_else(|_| env.aws_profile.clone());
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a tokio runtime starts");
    runtime.block_on(async {
        let sdk = crate::cloud::aws::sdk_config_with_profile(&env.region, &profile).await;
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

/// `nodeboot validate`: prints what is wrong; Ok when nothing is an error.
pub fn validate(path: &Path) -> Result<String, Error> {
    let loaded = load_env(path)?;
    let warnings = loaded.warnings.warnings().count();
    Ok(format!("{}: valid ({} warning{})", path.display(), warnings, if warnings == 1 { "" } else { "s" }))
}

/// `nodeboot render`: writes the configs and returns one line per file.
pub fn render(path: &Path, out: &Path, roles: &[Role]) -> Result<Vec<String>, Error> {
    let loaded = load_env(path)?;
    let roles: Vec<Role> = if roles.is_empty() { Role::ALL.to_vec() } else { roles.to_vec() };
    let written = render::write(&loaded.env, &roles, out)
        .map_err(|source| Error::Write { path: out.display().to_string(), source })?;
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
    lines.extend(written.iter().flat_map(|w| w.manifests.iter().map(|m| format!("{}: static pod", m.display()))));
    info!(roles = roles.len(), out = %out.display(), "rendered");
    Ok(lines)
}

/// `nodeboot env new`: the playground is `play-$USER`, as in the seed.
pub fn env_new(name: Option<String>, dir: &Path) -> Result<PathBuf, Error> {
    let name = name.unwrap_or_else(|| format!("play-{}", std::env::var("USER").unwrap_or_else(|_| "user".into())));
    Ok(env::write_new(dir, &name)?)
}

/// `nodeboot pki`: creates the missing certificates, keeps the rest.
pub fn pki(env_path: &Path, dir: Option<&Path>, rotate: &[String]) -> Result<Vec<String>, Error> {
    let loaded = load_env(env_path)?;
    let dir = dir.map(Path::to_path_buf).unwrap_or_else(|| crate::secrets::layout::default_dir(&loaded.env.name));
    let outcome = crate::pki::ensure(&dir, &crate::pki::plan(&loaded.env), rotate)?;
    let mut lines: Vec<String> = outcome.created.iter().map(|n| format!("created  {n}")).collect();
    lines.extend(outcome.kept.iter().map(|n| format!("kept     {n}")));
    lines.extend(outcome.expiring.iter().map(|(n, d)| format!("expiring {n} in {d} days")));
    lines.push(format!("in {}", dir.display()));
    Ok(lines)
}

/// `nodeboot stage <name>`: runs one boot stage.
pub mod stage {
    use std::time::Duration;

    use crate::cloud::aws::{self, Ec2};
    use crate::cloud::imds::Imds;
    use crate::error::Error;
    use crate::stage::{attach, discover, mount, Root};

    pub fn discover(root: &Root, set_hostname: bool, timeout: Duration) -> Result<(), Error> {
        let imds = Imds::from_env().with_policy(crate::cloud::imds::RETRY.with_total(timeout));
        discover::run(root, &imds, set_hostname)?;
        Ok(())
    }

    pub fn attach(root: &Root, wait_timeout: Duration, detach_grace: Duration) -> Result<(), Error> {
        let config = root.node_config().map_err(|e| Error::Attach(e.into()))?;
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a tokio runtime starts");
        runtime.block_on(async {
            let sdk = aws::sdk_config(&config.region).await;
            let ec2 = Ec2::new(&sdk);
            attach::run(root, &ec2, attach::Options { wait_timeout, detach_grace }).await
        })?;
        Ok(())
    }

    /// Writes etcd's configuration; with `exec_binary`, becomes etcd.
    pub fn etcd(root: &Root, exec_binary: Option<&str>) -> Result<(), Error> {
        let config = root.node_config().map_err(|e| Error::Etcd(e.into()))?;
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a tokio runtime starts");
        let vars = runtime.block_on(async {
            let sdk = aws::sdk_config(&config.region).await;
            crate::stage::etcd::run(root, &Ec2::new(&sdk)).await
        })?;
        drop(runtime);
        match exec_binary {
            Some(binary) => Err(crate::stage::etcd::exec(binary, &vars).into()),
            None => Ok(()),
        }
    }

    pub fn mount(root: &Root, wait_timeout: Duration, skip_network: bool) -> Result<(), Error> {
        mount::run(root, &Imds::from_env(), mount::Options { wait_timeout, skip_network })?;
        Ok(())
    }
}
