//! nodeboot: renders the Ignition configs of a Kubernetes platform on AWS and
//! runs the boot stages of its nodes. See ARCHITECTURE.md for the map.

pub mod backup;
pub mod cloud;
pub mod commands;
pub mod env;
pub mod error;
pub mod etcd;
pub mod fault;
pub mod fsutil;
pub mod fuzzing;
pub mod kube;
pub mod node_config;
pub mod pki;
pub mod reboot;
pub mod render;
pub mod retry;
pub mod role;
pub mod secrets;
pub mod stage;
pub mod sync;
