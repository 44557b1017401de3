//! nodeboot: renders the Ignition configs of a Kubernetes platform on AWS and
//! runs the boot stages of its nodes. See ARCHITECTURE.md for the map.
//!
//! Three layers, each a folder: `node` (what runs on a node), `operator`
//! (what runs on an operator's machine) and `shared` (what both use). `node`
//! and `operator` depend on `shared` and never on each other; `shared`
//! depends on neither (`tests/layers.rs` checks it).

pub mod fuzzing;
pub mod node;
pub mod operator;
pub mod shared;
