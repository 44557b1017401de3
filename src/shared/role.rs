//! The kinds of node the platform runs.

use std::fmt;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// etcd members and the Kubernetes control plane (the seed's "secure" layer).
    Etcd,
    /// Kubernetes workers.
    Compute,
    /// The ssh jump host in the management subnets.
    Bastion,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Etcd, Role::Compute, Role::Bastion];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Etcd => "etcd",
            Role::Compute => "compute",
            Role::Bastion => "bastion",
        }
    }

    /// Whether the role runs the kubelet (and so pulls secrets and manifests).
    pub fn runs_kubelet(self) -> bool {
        matches!(self, Role::Etcd | Role::Compute)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
