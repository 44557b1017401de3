//! One function per CLI command: what `main` calls once arguments are parsed.

#[cfg(feature = "aws")]
pub mod etcd;
#[cfg(feature = "aws")]
pub mod etcd_backup;
#[cfg(feature = "aws")]
pub mod inspect;
pub mod kubeconfig;
#[cfg(feature = "aws")]
pub mod reboot;
#[cfg(feature = "aws")]
pub mod roll;
#[cfg(feature = "aws")]
pub mod up;

use std::path::{Path, PathBuf};

use tracing::{info, warn};

use crate::env::{self, Loaded};
use crate::error::Error;
use crate::render;
use crate::role::Role;

#[cfg(feature = "aws")]
pub mod secrets;
pub mod until_done;

/// Runs `work` with the operator's AWS configuration: credentials from the
/// environment variables first, then the shared credentials file with the
/// profile named by `aws_profile` (as the seed maps profile to environment).
#[cfg(feature = "aws")]
pub fn operator_runtime<T>(
    env: &crate::env::Environment,
    work: impl AsyncFnOnce(&aws_config::SdkConfig) -> Result<T, Error>,
) -> Result<T, Error> {
    let profile = std::env::var("AWS_PROFILE").unwrap_or_else(|_| env.aws_profile.clone());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime starts");
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
pub fn validate(path: &Path, running_version: Option<&str>) -> Result<String, Error> {
    let loaded = load_env(path)?;
    if let Some(problem) =
        running_version.and_then(|running| crate::kube::skew_problem(running, &loaded.env.kubernetes_version))
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
    options: &crate::pki::Options,
    output: Option<Output>,
) -> Result<Vec<String>, Error> {
    let loaded = load_env(env_path)?;
    let dir = dir
        .map(Path::to_path_buf)
        .unwrap_or_else(|| crate::secrets::layout::default_dir(&loaded.env.name));
    let plan = crate::pki::plan(&loaded.env);
    let outcome = crate::pki::ensure_with(&dir, &plan, options)?;
    if let Some(format) = output {
        let items = crate::pki::inventory(&dir, &plan)?;
        return Ok(match format {
            Output::Json => vec![serde_json::to_string_pretty(&items).expect("inventory serialises")],
            Output::Table => items
                .iter()
                .map(|i| {
                    format!(
                        "{:<28} {:<16} {:<22} {:>5} days  {}",
                        i.id,
                        i.kind,
                        i.not_after.as_deref().unwrap_or("-"),
                        i.days_left.unwrap_or_default(),
                        i.path
                    )
                })
                .collect(),
        });
    }
    let mut lines: Vec<String> = outcome.created.iter().map(|n| format!("created  {n}")).collect();
    lines.extend(outcome.kept.iter().map(|n| format!("kept     {n}")));
    lines.extend(
        outcome
            .expiring
            .iter()
            .map(|(n, d)| format!("expiring {n} in {d} days")),
    );
    lines.push(format!("in {}", dir.display()));
    Ok(lines)
}

/// `nodeboot stage <name>`: runs one boot stage.
pub mod stage {
    use std::time::Duration;

    #[cfg(feature = "aws")]
    use crate::cloud::aws::{self, Ec2};
    use crate::cloud::imds::Imds;
    use crate::error::Error;
    #[cfg(feature = "aws")]
    use crate::stage::{attach, mount};
    use crate::stage::{discover, Root};

    pub fn discover(root: &Root, set_hostname: bool, timeout: Duration) -> Result<(), Error> {
        let imds = Imds::from_env().with_policy(crate::cloud::imds::RETRY.with_total(timeout));
        discover::run(root, &imds, set_hostname)?;
        Ok(())
    }

    #[cfg(feature = "aws")]
    pub fn attach(root: &Root, wait_timeout: Duration, detach_grace: Duration) -> Result<(), Error> {
        let config = root.node_config().map_err(|e| Error::Attach(e.into()))?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime starts");
        runtime.block_on(async {
            let sdk = aws::sdk_config(&config.region).await;
            let ec2 = Ec2::new(&sdk);
            attach::run(
                root,
                &ec2,
                attach::Options {
                    wait_timeout,
                    detach_grace,
                },
            )
            .await
        })?;
        Ok(())
    }

    /// Writes etcd's configuration; with `exec_binary`, becomes etcd. A
    /// member that joined as a learner is promoted by `stage etcd-promote`:
    /// its own unit under systemd, a child started here with `--exec`.
    #[cfg(feature = "aws")]
    pub fn etcd(root: &Root, exec_binary: Option<&str>) -> Result<(), Error> {
        use crate::stage::etcd;
        let config = root.node_config().map_err(|e| Error::Etcd(e.into()))?;
        let binary_version = match exec_binary {
            Some(binary) => etcd::binary_version(binary)?,
            None => {
                let wanted = config.etcd.as_ref().map(|e| e.version.as_str()).unwrap_or_default();
                wanted.parse().map_err(|detail| {
                    Error::Etcd(etcd::EtcdError::BinaryVersion {
                        detail: format!("node.json etcd.version: {detail}"),
                    })
                })?
            }
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime starts");
        let configured = runtime.block_on(async {
            let sdk = aws::sdk_config(&config.region).await;
            let (s3, kms) = (crate::cloud::aws::S3::new(&sdk), crate::cloud::aws::Kms::new(&sdk));
            let backups = stage_backups(root, &config, &s3, &kms)?;
            etcd::run(root, &Ec2::new(&sdk), &backups, binary_version).await
        })?;
        drop(runtime);
        let Some(binary) = exec_binary else { return Ok(()) };
        if configured.promote {
            spawn_promoter(root)?;
        }
        Err(etcd::exec(binary, &configured.vars).into())
    }

    /// The etcd stage's backups: the secrets bucket, this member's name,
    /// temporary files on the etcd volume.
    #[cfg(feature = "aws")]
    fn stage_backups<'a>(
        root: &Root,
        config: &crate::node_config::NodeConfig,
        s3: &'a crate::cloud::aws::S3,
        kms: &'a crate::cloud::aws::Kms,
    ) -> Result<
        crate::backup::hook::StageBackups<'a, crate::cloud::aws::S3, crate::cloud::aws::Kms>,
        crate::stage::etcd::EtcdError,
    > {
        let claim: crate::stage::attach::Claim = root.recorded(crate::stage::attach::CLAIM_FILE, "attach")?;
        Ok(crate::backup::hook::StageBackups {
            objects: s3,
            keys: kms,
            bucket: config.secrets_bucket.clone(),
            environment: config.environment.clone(),
            key_id: config.kms_key_id.clone(),
            work: root.path(crate::node_config::ETCD_MOUNT_POINT).join("nodeboot-backup"),
            member_name: crate::pki::etcd_member_name(&config.environment, claim.member),
            members: config.etcd.as_ref().map_or(0, |e| e.members),
        })
    }

    /// `nodeboot stage etcd-promote` in the background, its output on ours.
    #[cfg(feature = "aws")]
    fn spawn_promoter(root: &Root) -> Result<(), Error> {
        let me = std::env::current_exe().map_err(|source| Error::Write {
            path: "/proc/self/exe".into(),
            source,
        })?;
        std::process::Command::new(&me)
            .arg("stage")
            .arg("--root")
            .arg(&root.0)
            .arg("etcd-promote")
            .stdin(std::process::Stdio::null())
            .spawn()
            .map_err(|source| {
                Error::Etcd(crate::stage::etcd::EtcdError::Exec {
                    binary: me.display().to_string(),
                    source,
                })
            })?;
        Ok(())
    }

    pub fn etcd_promote(root: &Root, timeout: Duration) -> Result<(), Error> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime starts");
        runtime.block_on(crate::stage::etcd::promote(root, timeout))?;
        Ok(())
    }

    /// Mounts the claimed volume; EC2 tells its past (tag, snapshot) and gets the tag.
    #[cfg(feature = "aws")]
    pub fn mount(root: &Root, wait_timeout: Duration, skip_network: bool) -> Result<(), Error> {
        let config = root.node_config().map_err(|e| Error::Mount(e.into()))?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime starts");
        runtime.block_on(async {
            let sdk = aws::sdk_config(&config.region).await;
            mount::run(
                root,
                &Imds::from_env(),
                &Ec2::new(&sdk),
                mount::Options {
                    wait_timeout,
                    skip_network,
                },
            )
            .await
        })?;
        Ok(())
    }
}

/// How a listing is printed (`pki --output`, `inspect`): here, not in
/// `inspect`, so the offline build (no AWS) has it too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Table,
    Json,
}
