//! Every container image a node of an environment runs, and which runtime
//! runs it: the list the AMI bake pulls (`nodeboot images`) and saves into
//! the image, which a node imports at boot (`nodeboot-images.service`), so
//! no boot needs a registry. Built from the same tables the render uses;
//! `tests/pinned_images.rs` checks it against the rendered manifests, add-ons
//! and units.

use crate::operator::env::{images, Environment};

/// Who runs an image on the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Runtime {
    /// The kubelet, through containerd's CRI (namespace `k8s.io`): static
    /// pods and every add-on.
    Containerd,
    /// `docker run` in a unit: etcd and the add-on applier's kubectl.
    Docker,
}

impl Runtime {
    pub fn as_str(self) -> &'static str {
        match self {
            Runtime::Containerd => "containerd",
            Runtime::Docker => "docker",
        }
    }
}

/// `(runtime, image)` of every image, sorted, each once.
pub fn node_images(env: &Environment) -> Vec<(Runtime, String)> {
    let kube = |component| images::kubernetes_image(&env.kubernetes_version, component);
    let mut out = vec![
        (Runtime::Containerd, kube("kube-apiserver")),
        (Runtime::Containerd, kube("kube-controller-manager")),
        (Runtime::Containerd, kube("kube-scheduler")),
        (Runtime::Containerd, kube("kube-proxy")),
        (Runtime::Containerd, super::addons::CSR_APPROVER_IMAGE.to_string()),
        (Runtime::Docker, super::units::kubectl_image(&env.kubernetes_version)),
        (Runtime::Docker, super::units::etcd_image(&env.etcd_version)),
    ];
    if let Some(image) = crate::operator::env::addons::cloud_controller_image(&env.kubernetes_version) {
        out.push((Runtime::Containerd, image.to_string()));
    }
    for release in [env.addons.flannel, env.addons.coredns].into_iter().flatten() {
        out.extend(release.images.iter().map(|i| (Runtime::Containerd, i.to_string())));
    }
    out.sort();
    out.dedup();
    out
}
