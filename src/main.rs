//! The nodeboot command line: parse, set up logging, call one function, map
//! errors to exit codes (see README.md for the table).

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use nodeboot::commands;
use nodeboot::error::{exit, Error};
use nodeboot::role::Role;
use nodeboot::stage::Root;

#[derive(Parser)]
#[command(name = "nodeboot", version, about = "Boots and keeps alive a Kubernetes control plane on AWS")]
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
    },
    /// Environment files.
    Env {
        #[command(subcommand)]
        command: EnvCommand,
    },
    /// Run one boot stage on a node (systemd runs them in order).
    Stage {
        /// Resolve every path (config, state, devices, mount points) under DIR.
        #[arg(long, global = true, default_value = "/", value_name = "DIR")]
        root: PathBuf,
        #[command(subcommand)]
        stage: StageCommand,
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
    Attach {
        /// Give up waiting for one attachment or detachment after this long.
        #[arg(long, default_value = "300s", value_parser = humantime::parse_duration)]
        wait_timeout: Duration,
        /// Wait this long for a dead instance's volume to detach before forcing it.
        #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
        detach_grace: Duration,
    },
    /// Mount the claimed volume (formatting only a blank one) and bring up the ENI address.
    Mount {
        /// Give up waiting for the device or the interface after this long.
        #[arg(long, default_value = "120s", value_parser = humantime::parse_duration)]
        wait_timeout: Duration,
        /// Only the volume; leave the network alone.
        #[arg(long)]
        skip_network: bool,
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
        Command::Validate { env } => println!("{}", commands::validate(&env)?),
        Command::Env { command: EnvCommand::New { name, dir } } => {
            let path = commands::env_new(name, &dir)?;
            println!("wrote {}", path.display());
        }
        Command::Stage { root, stage } => {
            let root = Root(root);
            match stage {
                StageCommand::Discover { set_hostname, timeout } => commands::stage::discover(&root, set_hostname, timeout)?,
                StageCommand::Attach { wait_timeout, detach_grace } => commands::stage::attach(&root, wait_timeout, detach_grace)?,
                StageCommand::Mount { wait_timeout, skip_network } => commands::stage::mount(&root, wait_timeout, skip_network)?,
            }
        }
    }
    Ok(())
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
