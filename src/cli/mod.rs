//! The command line: what each command parses (`clap`), and the dispatch to
//! the node's commands (`node`) or the operator's (`operator`). Above both
//! halves of the library, so it may name either.

mod node;
mod operator;

use clap::{Parser, Subcommand};

use nodeboot::node::error::Error as NodeError;
use nodeboot::operator::error::Error as OperatorError;

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
pub struct Cli {
    /// More log output (-v debug, -vv trace); NODEBOOT_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    #[command(flatten)]
    Operator(operator::OperatorCommand),
    #[command(flatten)]
    Node(node::NodeCommand),
}

/// A failed command: the node's or the operator's error, each with its exit code.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    #[error(transparent)]
    Node(#[from] NodeError),
    #[error(transparent)]
    Operator(#[from] OperatorError),
}

impl Failure {
    pub fn exit_code(&self) -> u8 {
        match self {
            Failure::Node(e) => e.exit_code(),
            Failure::Operator(e) => e.exit_code(),
        }
    }
}

pub fn run(command: Command) -> Result<(), Failure> {
    match command {
        Command::Operator(c) => operator::run(c),
        Command::Node(c) => Ok(node::run(c)?),
    }
}
