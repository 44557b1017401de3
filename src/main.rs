//! The nodeboot command line: parse, set up logging, call one function, map
//! errors to exit codes (see README.md for the table).

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use nodeboot::commands;
use nodeboot::error::{exit, Error};
use nodeboot::role::Role;

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
