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
