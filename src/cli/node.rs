//! The node's commands on the command line: `stage`, `sync`,
//! `reboot-coordinator` (and `etcd backup`, under the operator's `etcd`).

use std::path::PathBuf;
use std::time::Duration;

use clap::Subcommand;

use nodeboot::node;
use nodeboot::node::error::Error as NodeError;
use nodeboot::node::root::Root;

#[derive(Subcommand)]
pub enum NodeCommand {
    /// Long-running syncs on a node.
    #[cfg(feature = "aws")]
    Sync {
        /// Resolve every path (config, state, target directories) under DIR.
        #[arg(long, global = true, default_value = "/", value_name = "DIR")]
        root: PathBuf,
        #[command(subcommand)]
        command: SyncCommand,
    },
    /// On an etcd node: reboot for a staged OS update only under the etcd
    /// reboot lock, one node at a time, while the other members are healthy.
    #[cfg(feature = "aws")]
    RebootCoordinator {
        #[arg(long, default_value = "/", value_name = "DIR")]
        root: PathBuf,
        /// Time between two looks.
        #[arg(long, value_parser = humantime::parse_duration, default_value = "30s")]
        interval: Duration,
        /// A file whose existence asks for a coordinated reboot (besides update_engine).
        #[arg(long, default_value = "/run/reboot-required")]
        sentinel: String,
        /// How to reboot (no shell; split on spaces).
        #[arg(long, env = "NODEBOOT_REBOOT_COMMAND", default_value = "systemctl reboot")]
        reboot_command: String,
        /// One look (and its action), then exit.
        #[arg(long)]
        once: bool,
    },
    /// Run one boot stage on a node (systemd runs them in order).
    Stage {
        /// Resolve every path (config, state, devices, mount points) under DIR.
        #[arg(long, global = true, default_value = "/", value_name = "DIR")]
        root: PathBuf,
        /// Retry what retrying can fix, until node.json's `boot` bounds (the boot units run this).
        #[arg(long, global = true)]
        retry: bool,
        /// With --retry, how an etcd node that gives up powers itself off
        /// (no shell; split on spaces): its instance terminates on shutdown.
        #[arg(
            long,
            global = true,
            env = "NODEBOOT_POWEROFF_COMMAND",
            default_value = "systemctl poweroff"
        )]
        poweroff_command: String,
        #[command(subcommand)]
        stage: StageCommand,
    },
}

#[derive(Subcommand)]
pub enum StageCommand {
    /// Read the instance identity from IMDSv2 into /run/nodeboot/facts.json.
    Discover {
        /// Also set the hostname to <environment>-<role>-<instance id>.
        #[arg(long)]
        set_hostname: bool,
        /// Give up on an unreachable or failing metadata service after this long.
        #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
        timeout: Duration,
    },
    /// Claim this zone's etcd member: its EBS volume and its ENI.
    #[cfg(feature = "aws")]
    Attach {
        /// Give up waiting for one attachment or detachment after this long
        /// (one attempt's budget; `--retry` starts another attempt).
        #[arg(long, env = "NODEBOOT_ATTACH_WAIT_TIMEOUT", default_value = "300s", value_parser = humantime::parse_duration)]
        wait_timeout: Duration,
        /// Wait this long for a dead instance's volume to detach before forcing it.
        #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
        detach_grace: Duration,
    },
    /// Write the etcd member's configuration (/run/nodeboot/etcd.env).
    #[cfg(feature = "aws")]
    Etcd {
        /// Then replace this process with etcd (containers, the lab).
        #[arg(long)]
        exec: bool,
        /// The etcd binary for --exec.
        #[arg(long, default_value = "etcd")]
        etcd_binary: String,
    },
    /// Make this etcd member a voting member once it has caught up (after it
    /// joined as a learner); done at once when it is one already.
    EtcdPromote {
        /// Give up after this long.
        #[arg(long, default_value = "600s", value_parser = humantime::parse_duration)]
        timeout: Duration,
    },
    /// Fetch and decrypt the role's secrets into /run/nodeboot/secrets (all or nothing).
    #[cfg(feature = "aws")]
    Secrets {
        /// UID:GID to give the directory and files to (default root).
        #[arg(long, value_name = "UID:GID")]
        owner: Option<String>,
    },
    /// Mount the claimed volume (formatting only a blank one) and bring up the ENI address.
    #[cfg(feature = "aws")]
    Mount {
        /// Give up waiting for the device or the interface after this long.
        #[arg(long, default_value = "120s", value_parser = humantime::parse_duration)]
        wait_timeout: Duration,
        /// Only the volume; leave the network alone.
        #[arg(long)]
        skip_network: bool,
    },
}

impl StageCommand {
    fn name(&self) -> &'static str {
        match self {
            StageCommand::Discover { .. } => "discover",
            #[cfg(feature = "aws")]
            StageCommand::Attach { .. } => "attach",
            #[cfg(feature = "aws")]
            StageCommand::Secrets { .. } => "secrets",
            #[cfg(feature = "aws")]
            StageCommand::Mount { .. } => "mount",
            #[cfg(feature = "aws")]
            StageCommand::Etcd { .. } => "etcd",
            StageCommand::EtcdPromote { .. } => "etcd-promote",
        }
    }
}

#[derive(Subcommand)]
pub enum SyncCommand {
    /// Keep this node's secrets equal to the bucket (the secrets stage, kept
    /// running) and restart exactly the components whose files changed.
    Secrets {
        /// Time between passes.
        #[arg(long, value_parser = humantime::parse_duration, default_value = "60s")]
        interval: Duration,
        /// One pass, then exit with its outcome.
        #[arg(long)]
        once: bool,
    },
    /// Keep the static-pod directory (and node.json's synced prefixes) equal to the bucket.
    Manifests {
        /// Time between passes; default node.json's interval_seconds (10s).
        #[arg(long, value_parser = humantime::parse_duration)]
        interval: Option<Duration>,
        /// One pass, then exit with its outcome.
        #[arg(long)]
        once: bool,
    },
}

pub fn run(command: NodeCommand) -> Result<(), NodeError> {
    match command {
        #[cfg(feature = "aws")]
        NodeCommand::Sync {
            root,
            command: SyncCommand::Manifests { interval, once },
        } => node::commands::secrets::sync_manifests(&Root(root), interval, once)?,
        #[cfg(feature = "aws")]
        NodeCommand::RebootCoordinator {
            root,
            interval,
            sentinel,
            reboot_command,
            once,
        } => node::reboot::coordinator::run(
            &Root(root),
            &node::reboot::coordinator::Options {
                interval,
                sentinel,
                reboot_command,
                once,
            },
        )?,
        #[cfg(feature = "aws")]
        NodeCommand::Sync {
            root,
            command: SyncCommand::Secrets { interval, once },
        } => node::commands::secrets::sync_secrets(&Root(root), interval, once)?,
        NodeCommand::Stage {
            root,
            retry,
            poweroff_command,
            stage,
        } => {
            let root = Root(root);
            let once = || match &stage {
                StageCommand::Discover { set_hostname, timeout } => {
                    node::commands::stage::discover(&root, *set_hostname, *timeout)
                }
                #[cfg(feature = "aws")]
                StageCommand::Attach {
                    wait_timeout,
                    detach_grace,
                } => node::commands::stage::attach(&root, *wait_timeout, *detach_grace),
                #[cfg(feature = "aws")]
                StageCommand::Secrets { owner } => node::commands::secrets::stage_secrets(&root, owner.as_deref()),
                #[cfg(feature = "aws")]
                StageCommand::Mount {
                    wait_timeout,
                    skip_network,
                } => node::commands::stage::mount(&root, *wait_timeout, *skip_network),
                #[cfg(feature = "aws")]
                StageCommand::Etcd { exec, etcd_binary } => {
                    node::commands::stage::etcd(&root, exec.then_some(etcd_binary.as_str()))
                }
                StageCommand::EtcdPromote { timeout } => node::commands::stage::etcd_promote(&root, *timeout),
            };
            if retry {
                node::until_done::run(&root, stage.name(), &poweroff_command, once)?
            } else {
                once()?
            }
        }
    }
    Ok(())
}

/// `etcd backup`: the node's backup service, listed under the operator's `etcd`.
#[cfg(feature = "aws")]
#[derive(clap::Args)]
pub struct BackupArgs {
    /// Resolve every path under DIR.
    #[arg(long, default_value = "/", value_name = "DIR")]
    pub root: PathBuf,
    /// Time between backups; default node.json's (the environment's etcd_backup_interval).
    #[arg(long, env = "NODEBOOT_ETCD_BACKUP_INTERVAL", value_parser = humantime::parse_duration)]
    pub interval: Option<Duration>,
    /// Time between passes (restore requests are seen within this).
    #[arg(long, env = "NODEBOOT_ETCD_BACKUP_POLL", default_value = "10s", value_parser = humantime::parse_duration)]
    pub poll: Duration,
    /// One pass, then exit with its outcome.
    #[arg(long)]
    pub once: bool,
    #[arg(long, default_value = "systemctl stop etcd-member.service")]
    pub stop_etcd: String,
    /// Runs the etcd stage again after a restore put data in place or aside (it configures etcd
    /// from the restored data, or joins the restored cluster); a stage waiting in its retry
    /// backoff starts over at once.
    #[arg(long, default_value = "systemctl --no-block restart nodeboot-etcd.service")]
    pub rerun_stage: String,
    /// Starts etcd after a restore (once the stage ran again); the promote unit too, which the
    /// stop took down with etcd (it `Requires=` etcd-member.service).
    #[arg(
        long,
        default_value = "systemctl --no-block start etcd-member.service nodeboot-etcd-promote.service"
    )]
    pub start_etcd: String,
    /// Stops the manifest sync before a restore takes the API server's static pod out (else the
    /// sync would put it back).
    #[arg(long, default_value = "systemctl stop nodeboot-manifests.service")]
    pub stop_manifests: String,
    /// Starts the manifest sync again once the API server's static pod is back.
    #[arg(long, default_value = "systemctl --no-block start nodeboot-manifests.service")]
    pub start_manifests: String,
    /// How long a restored member may take to see a leader.
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    pub restore_wait: Duration,
    /// This member's client URL (the tests' etcd on another port).
    #[arg(long, default_value = "https://127.0.0.1:2379", hide = true)]
    pub endpoint: String,
}

#[cfg(feature = "aws")]
impl BackupArgs {
    pub fn run(self) -> Result<(), NodeError> {
        let options = node::commands::backup::ServiceOptions {
            interval: self.interval,
            poll: self.poll,
            once: self.once,
            stop_etcd: self.stop_etcd,
            rerun_stage: self.rerun_stage,
            start_etcd: self.start_etcd,
            stop_manifests: self.stop_manifests,
            start_manifests: self.start_manifests,
            restore_wait: self.restore_wait,
            endpoint: self.endpoint,
        };
        node::commands::backup::service(&Root(self.root), options)
    }
}
