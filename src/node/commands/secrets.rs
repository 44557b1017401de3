//! The node's secrets commands: `stage secrets`, `sync secrets` and `sync
//! manifests`.

use std::time::Duration;

use tracing::{info, warn};

use crate::node::error::Error;
use crate::node::root::Root;
use crate::node::sync::{self, SyncError};
use crate::shared::cloud::aws::{self, Kms, S3};
use crate::shared::node_config::MANIFEST_SYNC_INTERVAL_SECONDS;
use crate::shared::secrets::store::UnwrappedKeys;
use crate::shared::secrets::Store;

/// The data keys this process unwrapped: `stage --retry secrets` builds a
/// store per attempt, and an attempt after a throttled one asks KMS for
/// nothing the last one had.
static UNWRAPPED: std::sync::LazyLock<UnwrappedKeys> = std::sync::LazyLock::new(UnwrappedKeys::default);

/// The node's secrets: opened through its role's data keys (one Decrypt
/// per upload's key, kept for the process's life, see `shared::secrets::store`).
fn node_store<'a>(config: &crate::shared::node_config::NodeConfig, s3: &'a S3, kms: &'a Kms) -> Store<'a, S3, Kms> {
    Store::new(s3, kms, &config.secrets_bucket, &config.environment, &config.kms_key_id)
        .reading_as(config.role)
        .sharing(&UNWRAPPED)
}

/// `nodeboot stage secrets`.
pub fn stage_secrets(root: &Root, owner: Option<&str>) -> Result<(), Error> {
    let fail = Error::SecretsStage;
    let owner = owner
        .map(sync::parse_owner)
        .transpose()
        .map_err(|e| fail(SyncError::Config(e)))?;
    let config = root.node_config().map_err(|e| fail(e.into()))?;
    crate::shared::runtime::block_on(async {
        let sdk = aws::sdk_config(&config.region).await;
        let (s3, kms) = (S3::new(&sdk), Kms::new(&sdk));
        let done = crate::node::stage::secrets::run(root, &node_store(&config, &s3, &kms), owner).await;
        // Calls, not the SDK's retries of them (bench/boot-storm.py reads this line).
        info!(
            s3_calls = s3.calls.get(),
            kms_calls = kms.calls.get(),
            "secrets: {} S3 and {} KMS calls",
            s3.calls.get(),
            kms.calls.get()
        );
        done
    })
    .map_err(fail)?;
    Ok(())
}

/// `nodeboot sync secrets`: the secrets stage kept running. Every
/// interval: one all-or-nothing pass (a certificate never arrives without
/// its key), then every reader of a secret that changed takes it (see
/// `node::readers`): observe the fingerprints of what each reader reads,
/// plan against the record of what it was started with (pure), restart,
/// record. A pass or restart that fails is tried again on the next tick.
pub fn sync_secrets(root: &Root, interval: Duration, once: bool) -> Result<(), Error> {
    use crate::node::readers::{self, consumers};
    let fail = Error::SecretsStage;
    if interval.is_zero() {
        return Err(fail(SyncError::Config("the interval must be more than 0s".into())));
    }
    let config = root.node_config().map_err(|e| fail(e.into()))?;
    let record_path = root.state(readers::RECORD_FILE);
    let save = |record: &_| {
        readers::save_record(&record_path, record)
            .map_err(|e| SyncError::Stage(crate::node::root::StageError::io(&record_path, e)))
    };
    info!(
        "secrets: keeping {} equal to the bucket every {}s; a reader restarts when a file it reads changes",
        root.path(crate::shared::node_config::SECRETS_DIR).display(),
        interval.as_secs_f64()
    );
    crate::shared::runtime::block_on(async {
        let sdk = aws::sdk_config(&config.region).await;
        let (s3, kms) = (S3::new(&sdk), Kms::new(&sdk));
        let store = node_store(&config, &s3, &kms);
        let mut passes = sync::Passes::new(interval);
        loop {
            passes.next().await;
            let mut failed = None;
            if let Err(e) = crate::node::stage::secrets::run(root, &store, None).await {
                warn!(
                    "secrets: pass failed, nothing written; trying again in {}s: {e}",
                    interval.as_secs()
                );
                failed = Some(e);
            }
            let current = readers::fingerprints(root, &readers::inputs(root, &config));
            // Written only when it changes: a quiet tick writes nothing.
            let mut saved = readers::load_record(&record_path);
            let mut record = saved.clone();
            record.retain(|c, _| current.contains_key(c));
            for step in consumers::plan(&record, &current) {
                match step {
                    consumers::Step::Adopt(c) => {
                        record.insert(c.clone(), current[&c].clone());
                    }
                    consumers::Step::Restart(c) => {
                        info!("secrets: a file {c} reads changed: restarting it");
                        match readers::restart(root, &config, &c).await {
                            Ok(true) => {
                                record.insert(c.clone(), current[&c].clone());
                            }
                            Ok(false) => {}
                            Err(e) => {
                                warn!("secrets: restarting {c}: {e}; trying again in {}s", interval.as_secs());
                                failed.get_or_insert(SyncError::Config(format!("restarting {c}: {e}")));
                            }
                        }
                    }
                }
                // After every step: a kill later keeps what is done.
                if record != saved {
                    save(&record)?;
                    saved = record.clone();
                }
            }
            if record != saved {
                save(&record)?;
            }
            if once {
                return failed.map_or(Ok(()), Err);
            }
        }
    })
    .map_err(fail)
}

/// `nodeboot sync manifests`: drops the capabilities it does not need
/// before any thread starts, then syncs every interval (or once).
pub fn sync_manifests(root: &Root, interval: Option<Duration>, once: bool) -> Result<(), Error> {
    let config = root.node_config().map_err(|e| Error::Sync(e.into()))?;
    let sources = sync::sources(root, &config).map_err(Error::Sync)?;
    let interval = interval
        .or_else(|| {
            config
                .manifests
                .as_ref()
                .map(|m| Duration::from_secs(m.interval_seconds))
        })
        .unwrap_or(Duration::from_secs(MANIFEST_SYNC_INTERVAL_SECONDS));
    if interval.is_zero() {
        return Err(Error::Sync(SyncError::Config(
            "the interval must be more than 0s".into(),
        )));
    }
    let keep = sync::caps::needed(sources.iter().any(|s| s.target.owner.is_some()));
    // A sync that could not drop its capabilities would run every pass and
    // every reload command with them: stop instead (systemd restarts it).
    let kept = if crate::shared::fault::fails("sync:drop-capabilities") {
        Err("injected by NODEBOOT_FAIL_AT".to_string())
    } else {
        sync::caps::keep_only(&keep).map_err(|e| e.to_string())
    };
    match kept.map_err(|detail| Error::Sync(SyncError::Capabilities(detail)))? {
        kept if kept.is_empty() => info!("capabilities: kept none (root's own files need none)"),
        kept => info!(
            "capabilities: kept {} (to give files to their owner), dropped the rest",
            kept.join(", ")
        ),
    }
    for s in &sources {
        info!(
            "{}: keeping {} equal to s3://{}/{} every {}s",
            s.label,
            s.target.dir.display(),
            config.secrets_bucket,
            s.prefixes.join(", "),
            interval.as_secs_f64()
        );
    }
    crate::shared::runtime::block_on(async {
        let sdk = aws::sdk_config(&config.region).await;
        let (s3, kms) = (S3::new(&sdk), Kms::new(&sdk));
        sync::run(
            &node_store(&config, &s3, &kms),
            &sources,
            &sync::Options { interval, once },
        )
        .await
    })
    .map_err(Error::Sync)
}
