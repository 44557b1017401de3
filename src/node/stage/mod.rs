//! The boot stages, one file each, run by systemd in order:
//! discover → attach → mount → etcd → secrets. Each reads what the earlier
//! ones recorded under `/run/nodeboot` and converges when rerun.

pub mod attach;
pub mod discover;
pub mod eni;
pub mod etcd;
pub mod mount;
pub mod secrets;

pub use crate::node::root::{Root, StageError};
