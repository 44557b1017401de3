//! `nodeboot etcd backup` on a node: the backup service (backups, restores
//! on request) and, on each poll after them, the maintenance of its
//! member's space (`node::etcd_space`: defragmentation, NOSPACE's way out).

use std::path::Path;
use std::time::Duration;

use tracing::{error, info, warn};

use crate::node::error::Error;
use crate::node::etcd_space::pass::{Done, Maintenance, SpaceError};
use crate::node::etcd_space::Thresholds;
use crate::node::root::Root;
use crate::node::stage::attach::{Claim, CLAIM_FILE};
use crate::node::stage::etcd::Tls;
use crate::shared::backup::restore::{self, Commands, MemberIdentity, Request, Restorer, StaticPods};
use crate::shared::backup::retention::Retention;
use crate::shared::backup::service::NodeBackup;
use crate::shared::backup::store::Backups;
use crate::shared::cloud::aws::{self, Kms, S3};
use crate::shared::cloud::Compute;
use crate::shared::etcd::Client;
use crate::shared::node_config::ETCD_MOUNT_POINT;
use crate::shared::secrets::Store;

pub struct ServiceOptions {
    pub interval: Option<Duration>,
    pub poll: Duration,
    pub once: bool,
    pub stop_etcd: String,
    pub rerun_stage: String,
    pub start_etcd: String,
    pub stop_manifests: String,
    pub start_manifests: String,
    pub restore_wait: Duration,
    /// This member's client URL.
    pub endpoint: String,
}

/// `nodeboot etcd backup` on a node: forever (or `--once`), one pass per poll.
pub fn service(root: &Root, options: ServiceOptions) -> Result<(), Error> {
    let config = root.node_config().map_err(|e| Error::Etcd(e.into()))?;
    let etcd_config = config.etcd.clone().ok_or_else(|| {
        Error::Refused(format!(
            "{}: not an etcd node",
            root.path(crate::shared::node_config::NODE_CONFIG_PATH).display()
        ))
    })?;
    let claim: Claim = root.recorded(CLAIM_FILE, "attach").map_err(|e| Error::Etcd(e.into()))?;
    let tls = Tls::for_member(root, claim.member);
    let etcd = Client::new(vec![options.endpoint.clone()], &tls.files()).map_err(|e| Error::Etcd(e.into()))?;
    let interval = options
        .interval
        .unwrap_or(Duration::from_secs(etcd_config.backup.interval_seconds));
    let retention = Retention {
        hourly_for: Duration::from_secs(etcd_config.backup.keep_hourly_seconds),
        daily_for: Duration::from_secs(etcd_config.backup.keep_daily_seconds),
    };
    let volume = root.path(ETCD_MOUNT_POINT);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime starts");
    runtime.block_on(async {
        let sdk = aws::sdk_config(&config.region).await;
        let (s3, kms, ec2) = (S3::new(&sdk), Kms::new(&sdk), crate::shared::cloud::aws::Ec2::new(&sdk));
        let node = NodeBackup {
            backups: Backups::new(
                &s3,
                &kms,
                &config.secrets_bucket,
                &config.environment,
                &config.kms_key_id,
            ),
            etcd: &etcd,
            endpoint: options.endpoint.clone(),
            work: volume.join("nodeboot-backup"),
            member_name: crate::shared::etcd::member_name(&config.environment, claim.member),
            members: etcd_config.members,
        };
        let store = Store::new(
            &s3,
            &kms,
            &config.secrets_bucket,
            &config.environment,
            &config.kms_key_id,
        );
        let maintenance = Maintenance {
            etcd: &etcd,
            endpoint: options.endpoint.clone(),
            member_name: node.member_name.clone(),
            tls: tls.files(),
            configured_quota: etcd_config.quota_bytes,
            thresholds: Thresholds::DEFAULT,
        };
        let mut last_space = String::new();
        info!(interval = %humantime::format_duration(interval), member = claim.member, "etcd backup service started");
        let mut lock_checked = false;
        loop {
            if !lock_checked {
                lock_checked = node.started().await;
            }
            let outcome = pass(
                root,
                &ec2,
                &node,
                &store,
                &etcd,
                claim.member,
                &volume,
                &options,
                interval,
                retention,
            )
            .await;
            // Space is kept whatever became of the backup (S3 may be away).
            let space = maintenance.pass();
            report_space(&space, &mut last_space);
            if options.once {
                outcome?;
                space?;
                return Ok(());
            }
            if let Err(e) = outcome {
                warn!("etcd backup pass failed: {e}");
            }
            tokio::time::sleep(options.poll).await;
        }
    })
}

#[allow(clippy::too_many_arguments)]
async fn pass(
    root: &Root,
    ec2: &crate::shared::cloud::aws::Ec2,
    node: &NodeBackup<'_, S3, Kms, Client>,
    store: &Store<'_, S3, Kms>,
    etcd: &Client,
    member: u32,
    volume: &Path,
    options: &ServiceOptions,
    interval: Duration,
    retention: Retention,
) -> Result<(), Error> {
    let request: Option<Request> = restore::read_json(store, &restore::request_path())
        .await
        .map_err(request_error)?;
    let pending = match &request {
        Some(r) => !restore::is_done(store, r, member).await.map_err(request_error)?,
        None => false,
    };
    if let (Some(request), true) = (&request, pending) {
        let config = root.node_config().map_err(|e| Error::Etcd(e.into()))?;
        let filter = crate::shared::cloud::ClusterFilter {
            environment: config.environment.clone(),
            role: config.role.to_string(),
        };
        let enis = ec2.network_interfaces(&filter).await.map_err(Error::Cloud)?;
        let data_dir = root.path(
            config
                .etcd
                .as_ref()
                .map_or(crate::shared::node_config::ETCD_DATA_DIR, |e| e.data_dir.as_str()),
        );
        let identity = MemberIdentity::from_enis(&config.environment, member, &enis, data_dir)
            .map_err(|e| Error::Refused(format!("etcd members of {}: {e}", config.environment)))?;
        let restorer = Restorer {
            backups: &node.backups,
            store,
            etcd,
            member,
            identity,
            volume: volume.to_path_buf(),
            endpoint: node.endpoint.clone(),
            commands: Commands {
                stop_etcd: crate::shared::backup::words(&options.stop_etcd),
                rerun_stage: crate::shared::backup::words(&options.rerun_stage),
                start_etcd: crate::shared::backup::words(&options.start_etcd),
                etcdutl: config.etcd.as_ref().map(|e| e.etcdutl()).unwrap_or_default(),
            },
            static_pods: Some(StaticPods {
                dir: root.path(crate::shared::node_config::STATIC_POD_DIR),
                held: restore::work_dir(volume).join("held-static-pods"),
                names: vec![restore::API_SERVER_MANIFEST.to_string()],
                stop_sync: crate::shared::backup::words(&options.stop_manifests),
                start_sync: crate::shared::backup::words(&options.start_manifests),
            }),
            etcd_env: Some(root.path(crate::shared::node_config::ETCD_ENV_FILE)),
            wait: options.restore_wait,
        };
        if restorer.act(request).await? == restore::Acted::WaitingForSeed {
            // etcd stays stopped until the seed restored: no backup of the old cluster.
            return Ok(());
        }
    }
    let restored = request
        .as_ref()
        .and_then(|r| r.backup_id().map(|id| (id, r.requested_unix)));
    node.pass(interval, retention, restored).await?;
    Ok(())
}

/// Logs what the maintenance did; a state that lasts (a wait, CORRUPT) once.
fn report_space(space: &Result<Done, SpaceError>, last: &mut String) {
    let done = match space {
        Ok(Done::Nothing) => {
            last.clear();
            return;
        }
        Ok(done) => done,
        Err(e) => {
            warn!("etcd maintenance pass failed: {e}");
            return;
        }
    };
    let text = done.to_string();
    let repeated = text == *last;
    match done {
        Done::Corrupt(_) if !repeated => error!("{text}"),
        Done::Compacted { freed: false, .. } if !repeated => warn!("{text}"),
        Done::Waiting(_) if !repeated => info!("{text}"),
        Done::Corrupt(_) | Done::Compacted { freed: false, .. } | Done::Waiting(_) => {}
        Done::Compacted { freed: true, .. } | Done::Defragmented { .. } | Done::Disarmed(_) | Done::Nothing => {
            info!("{text}")
        }
    }
    *last = text;
}

fn request_error(e: restore::RequestError) -> Error {
    match e {
        restore::RequestError::Secret(s) => Error::Secret(s),
        other => Error::Refused(other.to_string()),
    }
}
