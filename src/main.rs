//! The nodeboot command line: parse, set up logging, call one function, map
//! errors to exit codes (see README.md for the table).

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use nodeboot::commands;
use nodeboot::error::{exit, Error};
use nodeboot::role::Role;
use nodeboot::stage::Root;

#[derive(Parser)]
#[command(
    name = "nodeboot",
    version,
    about = "Boots and keeps alive a Kubernetes control plane on AWS"
)]
#[cfg_attr(
    not(feature = "aws"),
    command(after_help = "Built without the `aws` feature: only the offline commands are here. \
The commands that talk to AWS (up, prereqs, secrets, stage attach, ...) are in the default build.")
)]
struct Cli {
    /// More log output (-v debug, -vv trace); NODEBOOT_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Render one Ignition config per node role into DIR.
    Render {
        /// The environment file (environments/NAME.tfvars).
        #[arg(long = "env", value_name = "FILE")]
        env: PathBuf,
        /// Output directory; gets <role>.ign (and <role>.full.ign when over 16 KiB).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Only these roles (repeatable); all roles by default.
        #[arg(long, value_enum)]
        role: Vec<Role>,
    },
    /// Check an environment file; every problem names file, line and field.
    Validate {
        #[arg(long = "env", value_name = "FILE")]
        env: PathBuf,
        /// The Kubernetes version the cluster runs now (`kubectl version`'s
        /// server version): refuses a kubernetes_version more than one minor
        /// above it, or below it (kubelets would be newer than the API server).
        #[arg(long, value_name = "VERSION")]
        running_version: Option<String>,
        /// Also compare etcd_version with what the cluster runs (the newest backup in the secrets bucket).
        #[arg(long)]
        cluster: bool,
    },
    /// Environment files.
    Env {
        #[command(subcommand)]
        command: EnvCommand,
    },
    /// Look at a running environment (the seed's aws-instances / aws-elbs).
    #[cfg(feature = "aws")]
    Aws {
        #[command(subcommand)]
        command: AwsCommand,
    },
    /// Build the whole platform (the seed's `run`): validate, check prerequisites,
    /// pki, render, upload, terraform init and apply.
    #[cfg(feature = "aws")]
    Up {
        #[arg(long = "env", value_name = "FILE")]
        env: PathBuf,
        /// Stop at `terraform plan`.
        #[arg(long)]
        plan: bool,
        /// Merge the admin context into ~/.kube/config ($KUBECONFIG) afterwards.
        #[arg(long)]
        write_kubeconfig: bool,
        #[command(flatten)]
        terraform: TerraformArgs,
    },
    /// Print the Terraform outputs of the environment (the seed's `terraform.sh output`).
    #[cfg(feature = "aws")]
    Outputs {
        #[arg(long = "env", value_name = "FILE")]
        env: PathBuf,
        #[command(flatten)]
        terraform: TerraformArgs,
    },
    /// Print the admin kubeconfig, or merge it into ~/.kube/config with --write.
    Kubeconfig {
        #[arg(long = "env", value_name = "FILE")]
        env: PathBuf,
        /// The local secrets tree; default secrets/<environment>.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
        /// Merge into this kubeconfig (never replacing another cluster's entry).
        #[arg(long, value_name = "FILE", num_args = 0..=1, default_missing_value = "")]
        write: Option<PathBuf>,
    },
    /// Print an OpenSSH client config that reaches every node through the bastion.
    #[cfg(feature = "aws")]
    SshConfig {
        #[arg(long = "env", value_name = "FILE")]
        env: PathBuf,
    },
    /// Create the environment's certificates (keeps existing ones).
    Pki {
        #[arg(long = "env", value_name = "FILE")]
        env: PathBuf,
        /// The local secrets tree; default secrets/<environment>.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
        /// Issue this certificate, key or token again (repeatable); a CA re-issues what it signs.
        #[arg(long, value_name = "NAME")]
        rotate: Vec<String>,
        /// Also issue again every certificate and token that ends within 21 days.
        #[arg(long)]
        renew: bool,
        /// Print every certificate and token with its expiry as this instead of what changed.
        #[arg(long, value_enum)]
        output: Option<commands::Output>,
    },
    /// Create, idempotently, the KMS key (and alias) and the Terraform and secrets buckets.
    #[cfg(feature = "aws")]
    Prereqs {
        #[arg(long = "env", value_name = "FILE")]
        env: PathBuf,
    },
    /// The environment's secrets in its bucket (client-side KMS envelope encryption).
    #[cfg(feature = "aws")]
    Secrets {
        #[command(subcommand)]
        command: SecretsCommand,
    },
    /// Static-pod manifests in the secrets bucket.
    #[cfg(feature = "aws")]
    Manifests {
        #[command(subcommand)]
        command: ManifestsCommand,
    },
    /// The etcd cluster (operator side: the etcd client certificate of the local secrets tree).
    #[cfg(feature = "aws")]
    Etcd {
        #[command(subcommand)]
        command: EtcdCommand,
    },
    /// Long-running syncs on a node.
    #[cfg(feature = "aws")]
    Sync {
        /// Resolve every path (config, state, target directories) under DIR.
        #[arg(long, global = true, default_value = "/", value_name = "DIR")]
        root: PathBuf,
        #[command(subcommand)]
        command: SyncCommand,
    },
    #[cfg(feature = "aws")]
    /// Replace a role's nodes one at a time (an AMI upgrade): etcd members with a backup before each.
    Roll {
        #[arg(long = "env", value_name = "FILE")]
        env: PathBuf,
        #[arg(long, value_enum)]
        role: Role,
        /// A member's client URL (repeatable); default every member's ENI address.
        #[arg(long = "endpoint", value_name = "URL")]
        endpoints: Vec<String>,
        /// The local secrets tree with secure/etcd/client.{crt,key}; default secrets/<environment>.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
        /// How long one member may take from termination to healthy and caught up.
        #[arg(long, default_value = "15m", value_parser = humantime::parse_duration)]
        per_member: Duration,
        /// How long to wait for a healthy cluster before each member.
        #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
        healthy_wait: Duration,
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
        #[command(subcommand)]
        stage: StageCommand,
    },
}

#[cfg(feature = "aws")]
#[derive(clap::Args)]
struct TerraformArgs {
    /// The Terraform root module.
    #[arg(long, default_value = "terraform", value_name = "DIR")]
    terraform_dir: PathBuf,
    /// A local provider mirror for `terraform init -plugin-dir` (machines without internet).
    #[arg(long, value_name = "DIR")]
    plugin_dir: Option<PathBuf>,
}

#[cfg(feature = "aws")]
impl TerraformArgs {
    fn options(self, plan: bool, write_kubeconfig: bool) -> commands::up::UpOptions {
        commands::up::UpOptions {
            plan,
            write_kubeconfig,
            terraform_dir: self.terraform_dir,
            plugin_dir: self.plugin_dir,
        }
    }
}

#[cfg(feature = "aws")]
#[derive(Subcommand)]
enum AwsCommand {
    /// The environment's instances.
    Instances {
        #[arg(long = "env", value_name = "FILE")]
        env: PathBuf,
        #[arg(long, value_enum, default_value = "table")]
        output: commands::inspect::Output,
    },
    /// The environment's load balancers.
    Elbs {
        #[arg(long = "env", value_name = "FILE")]
        env: PathBuf,
        #[arg(long, value_enum, default_value = "table")]
        output: commands::inspect::Output,
    },
}

#[derive(Subcommand)]
enum StageCommand {
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

#[cfg(feature = "aws")]
#[derive(Subcommand)]
enum SecretsCommand {
    /// Encrypt and upload local files (all of the local tree by default).
    Upload {
        #[arg(long = "env", value_name = "FILE")]
        env: PathBuf,
        /// The local tree; default secrets/<environment>.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
        /// Upload even when the bucket holds the same bytes.
        #[arg(long)]
        force: bool,
        /// Files or folders, relative to the local tree (= object paths).
        paths: Vec<String>,
    },
    /// Download and decrypt into the local tree (files 0600); all by default.
    Fetch {
        #[arg(long = "env", value_name = "FILE")]
        env: PathBuf,
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
        paths: Vec<String>,
    },
    /// List the secrets (size and path).
    Ls {
        #[arg(long = "env", value_name = "FILE")]
        env: PathBuf,
        paths: Vec<String>,
    },
    /// Delete secrets (exact paths; versioning keeps the old versions).
    Rm {
        #[arg(long = "env", value_name = "FILE")]
        env: PathBuf,
        #[arg(required = true)]
        paths: Vec<String>,
    },
}

#[cfg(feature = "aws")]
#[derive(Subcommand)]
enum ManifestsCommand {
    /// Upload DIR/<role>/* to manifests/<role>/ (encrypted like every secret).
    Upload {
        #[arg(long = "env", value_name = "FILE")]
        env: PathBuf,
        /// Also remove the role's manifests that have no file in DIR/<role>/.
        #[arg(long)]
        prune: bool,
        /// With --prune: an empty DIR/<role>/ removes every manifest of the
        /// role and puts manifests/<role>/.nodeboot-empty, without which the
        /// nodes refuse to remove their last static pods.
        #[arg(long, requires = "prune")]
        allow_empty: bool,
        /// Upload even when the bucket holds the same bytes.
        #[arg(long)]
        force: bool,
        dir: PathBuf,
    },
}

#[cfg(feature = "aws")]
#[cfg(feature = "aws")]
#[derive(Subcommand)]
enum EtcdCommand {
    /// Remove a member cleanly before Terraform deletes its volume (etcd_count
    /// going down: the highest members first, never below quorum).
    RemoveMember {
        #[arg(long = "env", value_name = "FILE")]
        env: PathBuf,
        /// The local secrets tree; default secrets/<environment>.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
        /// Client URLs to ask (e.g. an SSH tunnel's https://127.0.0.1:PORT);
        /// default every other member's ENI address.
        #[arg(long, value_delimiter = ',', value_name = "URL,...")]
        endpoints: Vec<String>,
        /// The member's index or name (`<environment>-etcd-<i>`).
        member: String,
    },
    /// Members, leader, health, revision, DB size and quota, the newest backup (run where the members' client URLs are reachable, e.g. the bastion).
    Status {
        #[arg(long = "env", value_name = "FILE")]
        env: PathBuf,
        /// A member's client URL (repeatable); default every member's ENI address.
        #[arg(long = "endpoint", value_name = "URL")]
        endpoints: Vec<String>,
        /// The local secrets tree with secure/etcd/client.{crt,key}; default secrets/<environment>.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
        #[arg(long, value_enum, default_value = "table")]
        output: commands::inspect::Output,
    },
    /// List the backups in s3://<secrets bucket>/backups/etcd/, oldest first.
    Backups {
        #[arg(long = "env", value_name = "FILE")]
        env: PathBuf,
        #[arg(long, value_enum, default_value = "table")]
        output: commands::inspect::Output,
    },
    /// Restore every member from a backup (the newest by default); waits until the cluster is healthy.
    Restore {
        #[arg(long = "env", value_name = "FILE")]
        env: PathBuf,
        /// A backup id as `etcd backups` lists it.
        #[arg(long, value_name = "ID")]
        backup: Option<String>,
        /// Give up waiting for the members after this long.
        #[arg(long, default_value = "15m", value_parser = humantime::parse_duration)]
        timeout: Duration,
    },
    /// Restore a backup (the newest by default) into a scratch etcd here; check its revision and key count.
    VerifyBackup {
        #[arg(long = "env", value_name = "FILE")]
        env: PathBuf,
        #[arg(long, value_name = "ID")]
        backup: Option<String>,
        #[arg(long, default_value = "etcd", env = "NODEBOOT_ETCD")]
        etcd: String,
        /// etcd 3.5's etcdutl (split on spaces, no shell).
        #[arg(long, default_value = "etcdutl", env = "NODEBOOT_ETCDUTL")]
        etcdutl: String,
    },
    /// The node's backup service: backups on the leader every interval, restores on request.
    Backup {
        /// Resolve every path under DIR.
        #[arg(long, default_value = "/", value_name = "DIR")]
        root: PathBuf,
        /// Time between backups; default node.json's (the environment's etcd_backup_interval).
        #[arg(long, env = "NODEBOOT_ETCD_BACKUP_INTERVAL", value_parser = humantime::parse_duration)]
        interval: Option<Duration>,
        /// Time between passes (restore requests are seen within this).
        #[arg(long, env = "NODEBOOT_ETCD_BACKUP_POLL", default_value = "10s", value_parser = humantime::parse_duration)]
        poll: Duration,
        /// One pass, then exit with its outcome.
        #[arg(long)]
        once: bool,
        #[arg(long, default_value = "systemctl stop etcd-member.service")]
        stop_etcd: String,
        #[arg(long, default_value = "systemctl start etcd-member.service")]
        start_etcd: String,
        /// How long a restored member may take to see a leader.
        #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
        restore_wait: Duration,
        /// This member's client URL (the tests' etcd on another port).
        #[arg(long, default_value = "https://127.0.0.1:2379", hide = true)]
        endpoint: String,
    },
}

#[derive(Subcommand)]
enum SyncCommand {
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

#[derive(Subcommand)]
enum EnvCommand {
    /// Write environments/NAME.tfvars from the defaults (never overwrites).
    New {
        /// Environment name; defaults to the playground play-$USER.
        name: Option<String>,
        /// Directory for environment files.
        #[arg(long, default_value = "environments")]
        dir: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose);
    match run(cli.command) {
        Ok(()) => ExitCode::from(exit::OK),
        Err(err) => {
            eprintln!("{err}");
            ExitCode::from(err.exit_code())
        }
    }
}

fn run(command: Command) -> Result<(), Error> {
    match command {
        Command::Render { env, out, role } => {
            for line in commands::render(&env, &out, &role)? {
                println!("{line}");
            }
        }
        Command::Validate {
            env,
            running_version,
            cluster,
        } => {
            println!("{}", commands::validate(&env, running_version.as_deref())?);
            if cluster {
                println!("{}", validate_cluster(&env)?);
            }
        }
        Command::Env {
            command: EnvCommand::New { name, dir },
        } => {
            let path = commands::env_new(name, &dir)?;
            println!("wrote {}", path.display());
        }
        #[cfg(feature = "aws")]
        Command::Aws {
            command: AwsCommand::Instances { env, output },
        } => println!("{}", commands::inspect::instances(&env, output)?),
        #[cfg(feature = "aws")]
        Command::Aws {
            command: AwsCommand::Elbs { env, output },
        } => println!("{}", commands::inspect::load_balancers(&env, output)?),
        #[cfg(feature = "aws")]
        Command::SshConfig { env } => print!("{}", commands::inspect::ssh_config(&env)?),
        #[cfg(feature = "aws")]
        Command::Up {
            env,
            plan,
            write_kubeconfig,
            terraform,
        } => commands::up::up(&env, &terraform.options(plan, write_kubeconfig))?,
        #[cfg(feature = "aws")]
        Command::Outputs { env, terraform } => commands::up::outputs(&env, &terraform.options(false, false))?,
        Command::Kubeconfig { env, dir, write: None } => {
            print!("{}", commands::kubeconfig::print(&env, dir.as_deref())?)
        }
        Command::Kubeconfig {
            env,
            dir,
            write: Some(target),
        } => {
            let target = (!target.as_os_str().is_empty()).then_some(target);
            println!(
                "{}",
                commands::kubeconfig::write(&env, dir.as_deref(), target.as_deref())?
            )
        }
        Command::Pki {
            env,
            dir,
            rotate,
            renew,
            output,
        } => {
            let options = nodeboot::pki::Options { rotate, renew };
            for line in commands::pki(&env, dir.as_deref(), &options, output)? {
                println!("{line}");
            }
        }
        #[cfg(feature = "aws")]
        Command::Prereqs { env } => print_lines(commands::secrets::prereqs(&env)?),
        #[cfg(feature = "aws")]
        Command::Secrets { command } => print_lines(match command {
            SecretsCommand::Upload { env, dir, force, paths } => commands::secrets::upload(&env, dir, &paths, force)?,
            SecretsCommand::Fetch { env, dir, paths } => commands::secrets::fetch(&env, dir, &paths)?,
            SecretsCommand::Ls { env, paths } => commands::secrets::ls(&env, &paths)?,
            SecretsCommand::Rm { env, paths } => commands::secrets::rm(&env, &paths)?,
        }),
        #[cfg(feature = "aws")]
        Command::Manifests {
            command:
                ManifestsCommand::Upload {
                    env,
                    prune,
                    allow_empty,
                    force,
                    dir,
                },
        } => print_lines(commands::secrets::manifests_upload(
            &env,
            &dir,
            prune,
            allow_empty,
            force,
        )?),
        #[cfg(feature = "aws")]
        Command::Sync {
            root,
            command: SyncCommand::Manifests { interval, once },
        } => commands::secrets::sync_manifests(&Root(root), interval, once)?,
        #[cfg(feature = "aws")]
        Command::RebootCoordinator {
            root,
            interval,
            sentinel,
            reboot_command,
            once,
        } => commands::reboot::run(
            &Root(root),
            &commands::reboot::Options {
                interval,
                sentinel,
                reboot_command,
                once,
            },
        )?,
        #[cfg(feature = "aws")]
        Command::Sync {
            root,
            command: SyncCommand::Secrets { interval, once },
        } => commands::secrets::sync_secrets(&Root(root), interval, once)?,
        #[cfg(feature = "aws")]
        Command::Roll {
            env,
            role,
            endpoints,
            dir,
            per_member,
            healthy_wait,
        } => print_lines(commands::roll::roll(
            &env,
            role,
            commands::roll::RollOptions {
                endpoints,
                dir,
                per_member,
                healthy_wait,
            },
        )?),
        #[cfg(feature = "aws")]
        Command::Etcd { command } => match command {
            EtcdCommand::RemoveMember {
                env,
                dir,
                endpoints,
                member,
            } => print_lines(commands::etcd::remove_member(
                &env,
                dir.as_deref(),
                &endpoints,
                &member,
            )?),
            EtcdCommand::Status {
                env,
                endpoints,
                dir,
                output,
            } => {
                println!(
                    "{}",
                    commands::etcd_backup::status(
                        &env,
                        commands::etcd_backup::StatusOptions { endpoints, dir, output }
                    )?
                )
            }
            EtcdCommand::Backups { env, output } => println!("{}", commands::etcd_backup::list(&env, output)?),
            EtcdCommand::Restore { env, backup, timeout } => {
                print_lines(commands::etcd_backup::restore(&env, backup.as_deref(), timeout)?)
            }
            EtcdCommand::VerifyBackup {
                env,
                backup,
                etcd,
                etcdutl,
            } => print_lines(commands::etcd_backup::verify(
                &env,
                commands::etcd_backup::VerifyOptions { backup, etcd, etcdutl },
            )?),
            EtcdCommand::Backup {
                root,
                interval,
                poll,
                once,
                stop_etcd,
                start_etcd,
                restore_wait,
                endpoint,
            } => commands::etcd_backup::service(
                &Root(root),
                commands::etcd_backup::ServiceOptions {
                    interval,
                    poll,
                    once,
                    stop_etcd,
                    start_etcd,
                    restore_wait,
                    endpoint,
                },
            )?,
        },
        Command::Stage { root, retry, stage } => {
            let root = Root(root);
            let once = || match &stage {
                StageCommand::Discover { set_hostname, timeout } => {
                    commands::stage::discover(&root, *set_hostname, *timeout)
                }
                #[cfg(feature = "aws")]
                StageCommand::Attach {
                    wait_timeout,
                    detach_grace,
                } => commands::stage::attach(&root, *wait_timeout, *detach_grace),
                #[cfg(feature = "aws")]
                StageCommand::Secrets { owner } => commands::secrets::stage_secrets(&root, owner.as_deref()),
                #[cfg(feature = "aws")]
                StageCommand::Mount {
                    wait_timeout,
                    skip_network,
                } => commands::stage::mount(&root, *wait_timeout, *skip_network),
                #[cfg(feature = "aws")]
                StageCommand::Etcd { exec, etcd_binary } => {
                    commands::stage::etcd(&root, exec.then_some(etcd_binary.as_str()))
                }
                StageCommand::EtcdPromote { timeout } => commands::stage::etcd_promote(&root, *timeout),
            };
            if retry {
                commands::until_done::run(&root, stage.name(), once)?
            } else {
                once()?
            }
        }
    }
    Ok(())
}

/// `validate --cluster`: the etcd version rule against the newest backup (needs the bucket).
#[cfg(feature = "aws")]
fn validate_cluster(env: &std::path::Path) -> Result<String, Error> {
    commands::etcd_backup::check_version(&commands::load_env(env)?.env)
}

#[cfg(not(feature = "aws"))]
fn validate_cluster(_env: &std::path::Path) -> Result<String, Error> {
    Err(Error::Refused(
        "validate --cluster reads the secrets bucket: it needs the default build (the `aws` feature)".into(),
    ))
}

#[cfg(feature = "aws")]
fn print_lines(lines: Vec<String>) {
    for line in lines {
        println!("{line}");
    }
}

fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("NODEBOOT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .init();
}
