//! The tag scheme that ties an etcd member's volume and ENI together.
//! Terraform (`terraform/modules/etcd`) writes exactly these tags.

/// The environment the resource belongs to.
pub const ENVIRONMENT: &str = "nodeboot.io/environment";
/// The node role that may claim it (`etcd`).
pub const ROLE: &str = "nodeboot.io/role";
/// The member index, `0` .. `etcd_count - 1`: a volume and an ENI with the
/// same index form one member's pair.
pub const MEMBER: &str = "nodeboot.io/member";
/// Set by the mount stage on a volume once it holds a filesystem (after
/// `mkfs`, or when it first finds one), value the UTC time (RFC 3339). A
/// volume with this tag is never formatted again: if it reads blank, a
/// human must look. Terraform ignores this tag (`ignore_tags`).
pub const FORMATTED: &str = "nodeboot.io/formatted";
/// Set by `nodeboot etcd retire-member` on a retired member's volume and
/// ENI, value the member index, in place of [`ROLE`] and [`MEMBER`]: the
/// attach stage's listing (environment and role) never sees them again.
pub const RETIRED_MEMBER: &str = "nodeboot.io/retired-member";
/// On the final snapshot `retire-member` takes of a retired member's
/// volume: `<environment>-etcd-<i>`.
pub const FINAL_SNAPSHOT_OF: &str = "nodeboot.io/final-snapshot-of";
/// On the member volumes only: Data Lifecycle Manager's daily snapshots
/// select by it (`terraform/modules/etcd`).
pub const SNAPSHOTS: &str = "nodeboot.io/snapshots";
