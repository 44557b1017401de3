//! The nodeboot command line: parse (`cli`), set up logging, run one
//! command, map its error to an exit code (see README.md for the table).

mod cli;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;

use nodeboot::shared::exit;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    init_logging(cli.verbose);
    match cli::run(cli.command) {
        Ok(()) => ExitCode::from(exit::OK),
        Err(err) => {
            eprintln!("{err}");
            ExitCode::from(err.exit_code())
        }
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
