//! The operator's commands on the command line.

use std::path::PathBuf;
#[cfg(feature = "aws")]
use std::time::Duration;

use clap::Subcommand;

use super::Failure;
use nodeboot::operator::commands;
use nodeboot::operator::error::Error as OperatorError;
use nodeboot::shared::role::Role;

#[derive(Subcommand)]
pub enum OperatorCommand {
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
    /// Every container image the nodes run, pinned by digest (`<runtime> <image>`): what the AMI bake pulls.
    Images {
        #[arg(long = "env", value_name = "FILE")]
        env: PathBuf,
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
    /// Delete every Terraform resource of the environment, its etcd members'
    /// volumes (each after a final snapshot), ENIs and addresses included:
    /// `--confirm NAME`, or `--yes` for a playground (play-*).
    #[cfg(feature = "aws")]
    Down {
        #[arg(long = "env", value_name = "FILE")]
        env: PathBuf,
        /// The environment's name, typed again: lifts prevent_destroy on its members.
        #[arg(long, value_name = "NAME")]
        confirm: Option<String>,
        /// Confirmation enough for a playground (an environment named play-*).
        #[arg(long)]
        yes: bool,
        /// Prepare build/<env>/down/terraform and print the commands; run nothing.
        #[arg(long)]
        dry_run: bool,
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
        /// Also issue again every certificate and token that ends within 35 days (RENEW_DAYS).
        #[arg(long)]
        renew: bool,
        /// With `--rotate encryption-key` at step 2 of 3: every Secret was rewritten, drop the old key.
        #[arg(long)]
        secrets_rewritten: bool,
        /// Print every certificate and token with its expiry as this instead of what changed.
        #[arg(long, value_enum)]
        output: Option<commands::Output>,
        /// Test only: leaf certificates issued in this run end this many seconds after they start.
        /// Only in builds with debug assertions, as the fault hooks (`tests/check-static`).
        #[cfg(debug_assertions)]
        #[arg(long, value_name = "SECONDS", hide = true)]
        test_validity_secs: Option<u32>,
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
}

#[cfg(feature = "aws")]
#[derive(clap::Args)]
pub struct TerraformArgs {
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
pub enum AwsCommand {
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

#[cfg(feature = "aws")]
#[derive(Subcommand)]
pub enum SecretsCommand {
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
pub enum ManifestsCommand {
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

/// The member an etcd membership command acts on, and how to reach the others.
#[cfg(feature = "aws")]
#[derive(clap::Args)]
pub struct MemberTarget {
    #[arg(long = "env", value_name = "FILE")]
    env: PathBuf,
    /// The local secrets tree; default secrets/<environment>.
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// Client URLs to ask (e.g. an SSH tunnel's https://127.0.0.1:PORT);
    /// default every other member's ENI address.
    #[arg(long, value_delimiter = ',', value_name = "URL,...")]
    endpoints: Vec<String>,
    /// The member's index or name (`<environment>-etcd-<i>`); for
    /// retire-member, at or above etcd_count.
    member: String,
}

#[cfg(feature = "aws")]
#[derive(Subcommand)]
pub enum EtcdCommand {
    /// Remove a member cleanly before Terraform deletes its volume (etcd_count
    /// going down: the highest members first, never below quorum).
    RemoveMember {
        #[command(flatten)]
        target: MemberTarget,
    },
    /// Retire a member above a lowered etcd_count, the highest first: remove it
    /// from etcd, untag its volume and ENI (no node claims them again), take a
    /// final snapshot, terminate its node with one fewer desired, delete its
    /// reservation, ENI and volume; then `up` plans no destroy.
    RetireMember {
        #[command(flatten)]
        target: MemberTarget,
        /// Do it; without, say what it would do and change nothing (exit 4).
        #[arg(long)]
        yes: bool,
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
    /// Restore a backup (the newest by default) on one member; the others join it. Waits until every
    /// member whose node runs is a healthy voting member.
    Restore {
        #[arg(long = "env", value_name = "FILE")]
        env: PathBuf,
        /// A backup id as `etcd backups` lists it.
        #[arg(long, value_name = "ID")]
        backup: Option<String>,
        /// The member that restores the backup (the others join it); default the lowest whose node runs.
        #[arg(long, value_name = "N")]
        member: Option<u32>,
        /// Give up waiting for the members after this long.
        #[arg(long, default_value = "15m", value_parser = humantime::parse_duration)]
        timeout: Duration,
    },
    /// Quorum lost, one member survived: its own data becomes the cluster (etcd's
    /// --force-new-cluster), the others join it as learners when they come back. Refused unless
    /// EC2 says every other member's instance is stopped, terminated or absent; asks for --yes.
    Recover {
        #[arg(long = "env", value_name = "FILE")]
        env: PathBuf,
        /// The surviving member.
        #[arg(long, value_name = "N")]
        from_member: u32,
        /// Go ahead (without it: print what would happen, change nothing, exit 4).
        #[arg(long)]
        yes: bool,
        /// Give up waiting for the member after this long.
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
    #[cfg(feature = "aws")]
    Backup(super::node::BackupArgs),
}

#[derive(Subcommand)]
pub enum EnvCommand {
    /// Write environments/NAME.tfvars from the defaults (never overwrites).
    New {
        /// Environment name; defaults to the playground play-$USER.
        name: Option<String>,
        /// Directory for environment files.
        #[arg(long, default_value = "environments")]
        dir: PathBuf,
    },
}

pub fn run(command: OperatorCommand) -> Result<(), Failure> {
    match command {
        OperatorCommand::Render { env, out, role } => {
            for line in commands::render(&env, &out, &role)? {
                println!("{line}");
            }
        }
        OperatorCommand::Images { env } => {
            for line in commands::images(&env)? {
                println!("{line}");
            }
        }
        OperatorCommand::Validate {
            env,
            running_version,
            cluster,
        } => {
            println!("{}", commands::validate(&env, running_version.as_deref())?);
            if cluster {
                println!("{}", validate_cluster(&env)?);
            }
        }
        OperatorCommand::Env {
            command: EnvCommand::New { name, dir },
        } => {
            let path = commands::env_new(name, &dir)?;
            println!("wrote {}", path.display());
        }
        #[cfg(feature = "aws")]
        OperatorCommand::Aws {
            command: AwsCommand::Instances { env, output },
        } => println!("{}", commands::inspect::instances(&env, output)?),
        #[cfg(feature = "aws")]
        OperatorCommand::Aws {
            command: AwsCommand::Elbs { env, output },
        } => println!("{}", commands::inspect::load_balancers(&env, output)?),
        #[cfg(feature = "aws")]
        OperatorCommand::SshConfig { env } => print!("{}", commands::inspect::ssh_config(&env)?),
        #[cfg(feature = "aws")]
        OperatorCommand::Up {
            env,
            plan,
            write_kubeconfig,
            terraform,
        } => commands::up::up(&env, &terraform.options(plan, write_kubeconfig))?,
        #[cfg(feature = "aws")]
        OperatorCommand::Down {
            env,
            confirm,
            yes,
            dry_run,
            terraform,
        } => commands::down::down(
            &env,
            &commands::down::DownOptions {
                confirm,
                yes,
                dry_run,
                terraform: terraform.options(false, false),
            },
        )?,
        #[cfg(feature = "aws")]
        OperatorCommand::Outputs { env, terraform } => commands::up::outputs(&env, &terraform.options(false, false))?,
        OperatorCommand::Kubeconfig { env, dir, write: None } => {
            print!("{}", commands::kubeconfig::print(&env, dir.as_deref())?)
        }
        OperatorCommand::Kubeconfig {
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
        OperatorCommand::Pki {
            env,
            dir,
            rotate,
            renew,
            secrets_rewritten,
            output,
            #[cfg(debug_assertions)]
            test_validity_secs,
        } => {
            #[cfg(not(debug_assertions))]
            let test_validity_secs: Option<u32> = None;
            let options = nodeboot::operator::pki::Options {
                rotate,
                renew,
                secrets_rewritten,
                test_leaf_validity: test_validity_secs.map(|s| time::Duration::seconds(s.into())),
                ..Default::default()
            };
            for line in commands::pki(&env, dir.as_deref(), &options, output)? {
                println!("{line}");
            }
        }
        #[cfg(feature = "aws")]
        OperatorCommand::Prereqs { env } => print_lines(commands::secrets::prereqs(&env)?),
        #[cfg(feature = "aws")]
        OperatorCommand::Secrets { command } => print_lines(match command {
            SecretsCommand::Upload { env, dir, force, paths } => commands::secrets::upload(&env, dir, &paths, force)?,
            SecretsCommand::Fetch { env, dir, paths } => commands::secrets::fetch(&env, dir, &paths)?,
            SecretsCommand::Ls { env, paths } => commands::secrets::ls(&env, &paths)?,
            SecretsCommand::Rm { env, paths } => commands::secrets::rm(&env, &paths)?,
        }),
        #[cfg(feature = "aws")]
        OperatorCommand::Manifests {
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
        OperatorCommand::Roll {
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
        OperatorCommand::Etcd { command } => match command {
            EtcdCommand::RemoveMember { target: t } => print_lines(commands::etcd::remove_member(
                &t.env,
                t.dir.as_deref(),
                &t.endpoints,
                &t.member,
            )?),
            EtcdCommand::RetireMember { target: t, yes } => print_lines(commands::etcd_retire::retire_member(
                &t.env,
                &commands::etcd_retire::RetireOptions {
                    dir: t.dir,
                    endpoints: t.endpoints,
                    yes,
                },
                &t.member,
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
            EtcdCommand::Restore {
                env,
                backup,
                member,
                timeout,
            } => print_lines(commands::etcd_restore::restore(
                &env,
                commands::etcd_restore::RestoreOptions {
                    backup,
                    member,
                    timeout,
                },
            )?),
            EtcdCommand::Recover {
                env,
                from_member,
                yes,
                timeout,
            } => print_lines(commands::etcd_restore::recover(
                &env,
                commands::etcd_restore::RecoverOptions {
                    from_member,
                    yes,
                    timeout,
                },
            )?),
            EtcdCommand::VerifyBackup {
                env,
                backup,
                etcd,
                etcdutl,
            } => print_lines(commands::etcd_backup::verify(
                &env,
                commands::etcd_backup::VerifyOptions { backup, etcd, etcdutl },
            )?),
            EtcdCommand::Backup(args) => args.run()?,
        },
    }
    Ok(())
}

/// `validate --cluster`: the etcd version rule against the newest backup (needs the bucket).
#[cfg(feature = "aws")]
fn validate_cluster(env: &std::path::Path) -> Result<String, OperatorError> {
    commands::etcd_backup::check_version(&commands::load_env(env)?.env)
}

#[cfg(not(feature = "aws"))]
fn validate_cluster(_env: &std::path::Path) -> Result<String, OperatorError> {
    Err(OperatorError::Refused(
        "validate --cluster reads the secrets bucket: it needs the default build (the `aws` feature)".into(),
    ))
}

#[cfg(feature = "aws")]
fn print_lines(lines: Vec<String>) {
    for line in lines {
        println!("{line}");
    }
}
