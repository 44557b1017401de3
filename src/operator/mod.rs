//! What runs on an operator's machine: the environment file (`env`), the
//! Ignition render (`render`), the PKI (`pki`), the cluster-wide Kubernetes
//! settings (`kube`) and the operator's commands (`commands`).

pub mod commands;
pub mod env;
pub mod error;
pub mod kube;
pub mod pki;
pub mod prereqs;
pub mod render;
