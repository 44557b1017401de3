//! What runs on a node: the boot stages in boot order (`stage`), the syncs
//! (`sync`), the reboot coordinator (`reboot`), etcd's space (`etcd_space`), `stage --retry`
//! (`until_done`) and the node's commands (`commands`). Reads `node.json`
//! (`shared::node_config`), never the operator's environment file.

pub mod commands;
pub mod error;
pub mod etcd_space;
#[cfg(feature = "aws")]
pub mod readers;
pub mod reboot;
pub mod root;
pub mod stage;
pub mod sync;
pub mod until_done;
