//! Exit codes: each means one kind of failure, whichever command fails with
//! it. Documented in README.md's table; scripts and systemd units rely on
//! them (`stage --retry` stops at once on the permanent ones). 2 matches
//! clap's own code for bad arguments. The errors of the shared modules map
//! here; the node's and the operator's errors map in `node::error` and
//! `operator::error`.

use crate::shared::backup::store::BackupError;
use crate::shared::secrets::SecretError;

pub const OK: u8 = 0;
pub const INTERNAL: u8 = 1;
pub const BAD_INPUT: u8 = 2;
pub const IO: u8 = 3;
pub const REFUSED: u8 = 4;
pub const NO_FREE_MEMBER: u8 = 10;
pub const TIMEOUT: u8 = 11;
pub const METADATA: u8 = 12;
pub const AWS: u8 = 13;
pub const RESOURCES: u8 = 14;
pub const DEVICE_REFUSED: u8 = 15;
pub const SYSTEM: u8 = 16;
pub const TERRAFORM: u8 = 17;
/// A volume that held data reads blank: nodeboot will not format it.
pub const HELD_DATA: u8 = 18;
/// A secret would not decrypt or authenticate: changed, another
/// environment's or path's, under another key, or in no known format.
pub const SECRET_REFUSED: u8 = 20;
/// The named secret does not exist.
pub const NOT_FOUND: u8 = 21;
/// A blank etcd member that the cluster cannot take back (no member
/// answers and backups exist, or no quorum without it): nothing was
/// changed; the message names `nodeboot etcd restore`.
pub const ETCD_NO_QUORUM: u8 = 22;
/// The etcd cluster is busy (another member joining) or did not answer a
/// call the stage needed; retrying helps.
pub const ETCD_BUSY: u8 = 23;
/// The etcd binary is more than one minor version from the data's.
pub const ETCD_VERSION: u8 = 24;
/// A blank etcd member that nobody answers, where the cluster existed (the
/// cluster marker, a backup, or another member's volume formatted earlier):
/// it never starts a new cluster; the message names `nodeboot etcd restore`
/// and `nodeboot etcd recover`. Retried: the other members may come back.
pub const ETCD_EXISTED: u8 = 25;
/// `stage etcd-promote`: this member's etcd runs but is not part of the
/// cluster its peers run (a younger cluster at their addresses, or another
/// member ID under its peer URL; etcd logs "ID mismatch"). Not retried: the
/// unit fails, the node stays up, its data untouched; the message names
/// `nodeboot etcd restore` and `nodeboot etcd recover`.
pub const ETCD_OUTSIDE: u8 = 26;
/// etcd does not answer, has no leader, or a restore failed on a member.
pub const ETCD_UNHEALTHY: u8 = 30;
/// An `etcd_version` change of more than one minor version, or a downgrade.
pub const ETCD_VERSION_REFUSED: u8 = 31;
/// `etcd status`: the cluster is healthy, but a certificate a member serves
/// or the client certificate ends within 14 days (or has ended).
pub const CERTIFICATES_ENDING: u8 = 32;

pub fn secret(e: &SecretError) -> u8 {
    match e {
        SecretError::Refused { .. } => SECRET_REFUSED,
        SecretError::NotFound { .. } => NOT_FOUND,
        SecretError::Cloud(_) => AWS,
        SecretError::BadPath { .. } => BAD_INPUT,
        SecretError::Io { .. } => IO,
    }
}

pub fn backup(e: &BackupError) -> u8 {
    match e {
        BackupError::Refused { .. } => SECRET_REFUSED,
        BackupError::NotFound { .. } | BackupError::NoBackups { .. } => NOT_FOUND,
        BackupError::Io { .. } | BackupError::NoRoom { .. } => IO,
        BackupError::TooLarge { .. } | BackupError::Bad(_) => BAD_INPUT,
        BackupError::Cloud(_) => AWS,
        BackupError::Etcd(_) => ETCD_UNHEALTHY,
        BackupError::Command { .. } => SYSTEM,
        BackupError::Timeout(_) => TIMEOUT,
    }
}
