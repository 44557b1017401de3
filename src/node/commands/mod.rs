//! The node's commands: what `main` calls for `stage`, `sync`, `etcd backup`
//! and `reboot-coordinator` once arguments are parsed.

#[cfg(feature = "aws")]
pub mod backup;
#[cfg(feature = "aws")]
pub mod secrets;
pub mod stage;
