//! The Kubernetes images a cluster of each release runs, pinned by digest:
//! the control plane's static pods, kube-proxy and the add-on applier's
//! kubectl. A tag moved in the registry can never change what runs, and the
//! AMI bake pulls exactly these (`nodeboot images`), so a node boots with no
//! registry reachable. `validate` refuses a `kubernetes_version` without a
//! line here.
//!
//! The digests are registry.k8s.io's, as its promoter manifest records each
//! tag (kubernetes/k8s.io `registry.k8s.io/images/k8s-staging-kubernetes/images.yaml`,
//! the multi-architecture index of each image). To add a release: its five
//! digests from that file, then `make ami` for it.

/// One Kubernetes release's images (`repository:tag@sha256:...`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KubernetesImages {
    pub version: &'static str,
    pub apiserver: &'static str,
    pub controller_manager: &'static str,
    pub scheduler: &'static str,
    pub proxy: &'static str,
    pub kubectl: &'static str,
}

pub const KUBERNETES_RELEASES: &[KubernetesImages] = &[KubernetesImages {
    version: "1.31.4",
    apiserver: "registry.k8s.io/kube-apiserver:v1.31.4@sha256:ace6a943b058439bd6daeb74f152e7c36e6fc0b5e481cdff9364cd6ca0473e5e",
    controller_manager: "registry.k8s.io/kube-controller-manager:v1.31.4@sha256:4bd1d4a449e7a1a4f375bd7c71abf48a95f8949b38f725ded255077329f21f7b",
    scheduler: "registry.k8s.io/kube-scheduler:v1.31.4@sha256:1a3081cb7d21763d22eb2c0781cc462d89f501ed523ad558dea1226f128fbfdd",
    proxy: "registry.k8s.io/kube-proxy:v1.31.4@sha256:1739b3febca392035bf6edfe31efdfa55226be7b57389b2001ae357f7dcb99cf",
    kubectl: "registry.k8s.io/kubectl:v1.31.4@sha256:a519329b1bf8f7889e4c902f7147e6933d6a6e1dde25e8171973642396e31f0d",
}];

/// The pinned images of `version` (`1.31.4`, with or without a `v`).
pub fn kubernetes(version: &str) -> Option<&'static KubernetesImages> {
    let version = version.trim_start_matches('v');
    KUBERNETES_RELEASES.iter().find(|r| r.version == version)
}

/// The image of `component` of release `version`: pinned when nodeboot
/// knows the release (which `validate` requires), the bare tag otherwise
/// (what a hand-made environment that skipped validation gets).
pub fn kubernetes_image(version: &str, component: &str) -> String {
    let pinned = kubernetes(version).map(|r| match component {
        "kube-apiserver" => r.apiserver,
        "kube-controller-manager" => r.controller_manager,
        "kube-scheduler" => r.scheduler,
        "kube-proxy" => r.proxy,
        "kubectl" => r.kubectl,
        other => panic!("no Kubernetes image {other}"),
    });
    pinned.map_or_else(
        || format!("registry.k8s.io/{component}:v{}", version.trim_start_matches('v')),
        str::to_string,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_release_names_its_own_tag_and_a_sha256_digest_per_image() {
        for r in KUBERNETES_RELEASES {
            for (component, image) in [
                ("kube-apiserver", r.apiserver),
                ("kube-controller-manager", r.controller_manager),
                ("kube-scheduler", r.scheduler),
                ("kube-proxy", r.proxy),
                ("kubectl", r.kubectl),
            ] {
                let (reference, digest) = image.split_once("@sha256:").expect("pinned");
                assert_eq!(reference, format!("registry.k8s.io/{component}:v{}", r.version));
                assert!(
                    digest.len() == 64 && digest.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()),
                    "{image}"
                );
                assert_eq!(kubernetes_image(r.version, component), image);
            }
        }
        assert_eq!(
            kubernetes_image("1.99.0", "kube-proxy"),
            "registry.k8s.io/kube-proxy:v1.99.0"
        );
        assert!(kubernetes("v1.31.4").is_some());
    }
}
