//! The error every command returns, and the exit code each kind maps to.
//! The codes are documented in README.md; scripts and systemd units rely on
//! them (units do not retry exit code 2).

use crate::env::{Diagnostics, LoadError, ScaffoldError};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    InvalidEnvironment(Diagnostics),
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error(transparent)]
    Scaffold(#[from] ScaffoldError),
    #[error("cannot write {path}: {source}")]
    Write { path: String, source: std::io::Error },
}

/// Exit codes. 2 matches clap's own code for bad arguments.
pub mod exit {
    pub const OK: u8 = 0;
    pub const INTERNAL: u8 = 1;
    pub const BAD_INPUT: u8 = 2;
    pub const IO: u8 = 3;
    pub const REFUSED: u8 = 4;
}

impl Error {
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::InvalidEnvironment(_) => exit::BAD_INPUT,
            Error::Load(LoadError::Invalid(_)) => exit::BAD_INPUT,
            Error::Load(LoadError::Read { .. }) => exit::BAD_INPUT,
            Error::Scaffold(ScaffoldError::BadName(_)) => exit::BAD_INPUT,
            Error::Scaffold(ScaffoldError::Exists(_)) => exit::REFUSED,
            Error::Scaffold(ScaffoldError::Write { .. }) | Error::Write { .. } => exit::IO,
        }
    }
}
