//! What the node and the operator halves both use: the cloud traits and their
//! AWS implementation, the etcd client, the secrets and backup formats,
//! `node.json`, the one retry policy and the small helpers.

pub mod backup;
pub mod cloud;
pub mod etcd;
pub mod exit;
pub mod fault;
pub mod fsutil;
pub mod node_config;
pub mod retry;
pub mod role;
pub mod runtime;
pub mod secret;
pub mod secrets;
