//! `nodeboot stage <name>`: runs one boot stage.

use std::time::Duration;

use crate::node::error::Error;
use crate::node::root::Root;
use crate::node::stage::discover;
#[cfg(feature = "aws")]
use crate::node::stage::{attach, mount};
#[cfg(feature = "aws")]
use crate::shared::cloud::aws::{self, Ec2};
use crate::shared::cloud::imds::Imds;

pub fn discover(root: &Root, set_hostname: bool, timeout: Duration) -> Result<(), Error> {
    let imds = Imds::from_env().with_policy(crate::shared::cloud::imds::RETRY.with_total(timeout));
    discover::run(root, &imds, set_hostname)?;
    Ok(())
}

#[cfg(feature = "aws")]
pub fn attach(root: &Root, wait_timeout: Duration, detach_grace: Duration) -> Result<(), Error> {
    let config = root.node_config().map_err(|e| Error::Attach(e.into()))?;
    crate::shared::runtime::block_on(async {
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
    use crate::node::stage::etcd;
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
    let configured = crate::shared::runtime::block_on(async {
        let sdk = aws::sdk_config(&config.region).await;
        let (s3, kms) = (
            crate::shared::cloud::aws::S3::new(&sdk),
            crate::shared::cloud::aws::Kms::new(&sdk),
        );
        let backups = stage_backups(root, &config, &s3, &kms)?;
        etcd::run(root, &Ec2::new(&sdk), &backups, binary_version).await
    })?;
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
    config: &crate::shared::node_config::NodeConfig,
    s3: &'a crate::shared::cloud::aws::S3,
    kms: &'a crate::shared::cloud::aws::Kms,
) -> Result<
    crate::node::stage::etcd::backups::StageBackups<'a, crate::shared::cloud::aws::S3, crate::shared::cloud::aws::Kms>,
    crate::node::stage::etcd::EtcdError,
> {
    let claim: crate::node::stage::attach::Claim = root.recorded(crate::node::stage::attach::CLAIM_FILE, "attach")?;
    Ok(crate::node::stage::etcd::backups::StageBackups {
        backups: crate::shared::backup::store::Backups::new(
            s3,
            kms,
            &config.secrets_bucket,
            &config.environment,
            &config.kms_key_id,
        ),
        work: root
            .path(crate::shared::node_config::ETCD_MOUNT_POINT)
            .join("nodeboot-backup"),
        member_name: crate::shared::etcd::member_name(&config.environment, claim.member),
        members: config.etcd.as_ref().map_or(0, |e| e.members),
    })
}

/// `nodeboot stage etcd-promote` in the background, its output on ours.
#[cfg(feature = "aws")]
fn spawn_promoter(root: &Root) -> Result<(), Error> {
    let me = std::env::current_exe().map_err(|source| Error::Exec {
        what: "/proc/self/exe".into(),
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
            Error::Etcd(crate::node::stage::etcd::EtcdError::Exec {
                binary: me.display().to_string(),
                source,
            })
        })?;
    Ok(())
}

pub fn etcd_promote(root: &Root, timeout: Duration) -> Result<(), Error> {
    crate::shared::runtime::block_on(crate::node::stage::etcd::promote(root, timeout))?;
    Ok(())
}

/// Mounts the claimed volume; EC2 tells its past (tag, snapshot) and gets the tag.
#[cfg(feature = "aws")]
pub fn mount(root: &Root, wait_timeout: Duration, skip_network: bool) -> Result<(), Error> {
    let config = root.node_config().map_err(|e| Error::Mount(e.into()))?;
    crate::shared::runtime::block_on(async {
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
