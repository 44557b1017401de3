//! Which nodes read a secret, and so which data keys seal it (envelope
//! format 4, see `format`): one data key per role for each upload, instead
//! of one per object, so a node's boot asks KMS once for what one upload
//! sealed for its role (issue 24 part 2, a boot storm).
//!
//! A role's data key is bound, in KMS, to the context
//! `{"environment": <environment>, "path": <the role's scope>}`, the scope
//! being the role's own folder (`secure/`, `compute/`): a path inside the
//! folders the node role's IAM policy lets it decrypt (terraform/modules/iam,
//! `secret_paths`), and outside every other role's. So a worker can unwrap
//! only the compute key and an etcd node only the etcd key, as before; an
//! object both read (`common/`) carries its content key wrapped once per
//! role. Each object stays bound to its own path by GCM's associated data.
//!
//! A member's private key (`secure/etcd/member-<i>.key`) is read by one node
//! only, and keeps a data key of its own (format 1): sharing the etcd key
//! would let any etcd node open it with one Decrypt it makes anyway.
//! Anything else outside this table (restore requests, reports) keeps
//! format 1 too.

use crate::shared::role::Role;

use super::layout::role_folder;

/// The scope of `role`'s data keys: its own folder, `secure/` or `compute/`.
pub fn scope(role: Role) -> Option<String> {
    role_folder(role).map(|folder| format!("{folder}/"))
}

/// Whether `path` is one etcd member's private key.
fn is_member_key(path: &str) -> bool {
    path.strip_prefix("secure/etcd/member-")
        .and_then(|rest| rest.strip_suffix(".key"))
        .is_some_and(|index| !index.is_empty() && index.bytes().all(|b| b.is_ascii_digit()))
}

/// The roles whose nodes read `path`, whose data keys seal it; none: the
/// object gets a data key of its own (format 1).
pub fn readers(path: &str) -> Vec<Role> {
    let first = |prefix: &str| path.strip_prefix(prefix).is_some_and(|rest| !rest.is_empty());
    if is_member_key(path) {
        Vec::new()
    } else if first("common/") {
        vec![Role::Etcd, Role::Compute]
    } else if first("secure/") || first("manifests/etcd/") || first("manifests/addons/") {
        vec![Role::Etcd]
    } else if first("compute/") || first("manifests/compute/") {
        vec![Role::Compute]
    } else {
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_path_is_sealed_for_the_roles_that_read_it() {
        use Role::{Compute, Etcd};
        let table: [(&str, &[Role]); 14] = [
            ("common/ca.crt", &[Etcd, Compute]),
            ("common/sub/dir/file", &[Etcd, Compute]),
            ("secure/apiserver.key", &[Etcd]),
            ("secure/etcd/ca.crt", &[Etcd]),
            ("secure/etcd/member-0.crt", &[Etcd]),
            ("secure/etcd/member-0.key", &[]),
            ("secure/etcd/member-12.key", &[]),
            ("secure/etcd/member-x.key", &[Etcd]),
            ("compute/kubelet.kubeconfig", &[Compute]),
            ("manifests/compute/kube-proxy.yaml", &[Compute]),
            ("manifests/etcd/kube-apiserver.yaml", &[Etcd]),
            ("manifests/addons/flannel.yaml", &[Etcd]),
            ("backups/etcd/restore/request", &[]),
            ("commonx/file", &[]),
        ];
        for (path, roles) in table {
            assert_eq!(readers(path), roles, "{path}");
        }
    }

    #[test]
    fn a_roles_scope_is_its_own_folder_and_no_other_roles() {
        assert_eq!(scope(Role::Etcd).as_deref(), Some("secure/"));
        assert_eq!(scope(Role::Compute).as_deref(), Some("compute/"));
        assert_eq!(scope(Role::Bastion), None);
        // A scope is read by its role only.
        for role in [Role::Etcd, Role::Compute] {
            let scope = scope(role).unwrap();
            assert_eq!(readers(&format!("{scope}x")), [role]);
        }
    }
}
