//! The cluster add-ons an environment may ask for, and the versions nodeboot
//! knows: each pinned by the image digest of that release, so a tag moved in
//! the registry can never change what runs.

/// An add-on release: the version the environment file names and the
/// images it runs (`repository:tag@sha256:...`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Release {
    pub addon: &'static str,
    pub version: &'static str,
    pub images: &'static [&'static str],
}

/// The add-ons nodeboot renders. The digests are the registries' manifest
/// digests of these tags (as containerd records them after a pull); see
/// README "Add-ons" for how to add a release.
pub const RELEASES: &[Release] = &[
    Release {
        addon: "flannel",
        version: "0.26.0",
        images: &[
            "docker.io/flannel/flannel:v0.26.0@sha256:eed00c71b4e1b303e245472f5501574d171a53860607948884d91e1781730f07",
            "docker.io/flannel/flannel-cni-plugin:v1.5.1-flannel2@sha256:5d4fb9f90389a33b397fba4c8f371454c21aa146696aec46481214892e66c1b8",
        ],
    },
    Release {
        addon: "coredns",
        version: "1.11.3",
        images: &["registry.k8s.io/coredns/coredns:v1.11.3@sha256:9caabbf6238b189a65d0d6e6ac138de60d6a1c419e5a341fbbb7c78382559c6e"],
    },
];

pub const ADDON_NAMES: [&str; 2] = ["flannel", "coredns"];

pub fn release(addon: &str, version: &str) -> Option<&'static Release> {
    RELEASES.iter().find(|r| r.addon == addon && r.version == version)
}

pub fn known_versions(addon: &str) -> Vec<&'static str> {
    RELEASES
        .iter()
        .filter(|r| r.addon == addon)
        .map(|r| r.version)
        .collect()
}

/// The AWS cloud-controller-manager (kubernetes/cloud-provider-aws), one
/// release line per Kubernetes minor: its `v1.N.x` is built against and
/// tested with Kubernetes 1.N (the project's README: "use the version that
/// matches your Kubernetes minor"), so the cluster's minor picks it and a
/// minor without a line here is refused (`validate`); the add-on is rendered by
/// `render::addons`. Pinned by the digest
/// registry.k8s.io serves for the tag (its promoter manifest,
/// kubernetes/k8s.io `registry.k8s.io/images/k8s-staging-provider-aws/images.yaml`).
pub const CLOUD_CONTROLLER_RELEASES: &[(&str, &str)] = &[
    (
        "1.30",
        "registry.k8s.io/provider-aws/cloud-controller-manager:v1.30.10@sha256:d24df67308f35fe2c71aa48047170f2eeb3b39d23ede4b79351143f58c7a380e",
    ),
    (
        "1.31",
        "registry.k8s.io/provider-aws/cloud-controller-manager:v1.31.9@sha256:4dc7e514e03ad28fa475153831c1d2bb40f19c65c1afc9caa83fa6025c018bb0",
    ),
    (
        "1.32",
        "registry.k8s.io/provider-aws/cloud-controller-manager:v1.32.8@sha256:1bb79227d3f631d686ee1dfaa36ffcd6780f4d54918b0e54aa5d635a987b3fe5",
    ),
];

/// The cloud-controller-manager image for a cluster of `kubernetes_version`
/// (`1.N.x`): the release of the same minor, or `None`.
pub fn cloud_controller_image(kubernetes_version: &str) -> Option<&'static str> {
    let mut parts = kubernetes_version.trim_start_matches('v').split('.');
    let minor = format!("{}.{}", parts.next()?, parts.next()?);
    CLOUD_CONTROLLER_RELEASES
        .iter()
        .find(|(m, _)| *m == minor)
        .map(|(_, image)| *image)
}

/// The add-ons an environment runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Addons {
    /// Flannel's release, when the environment runs it (the CNI).
    pub flannel: Option<&'static Release>,
    pub coredns: Option<&'static Release>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cloud_controller_is_the_release_of_the_clusters_minor_pinned_by_digest() {
        for (kubernetes, wanted) in [
            ("1.31.4", Some("v1.31.")),
            ("v1.31.0", Some("v1.31.")),
            ("1.30.9", Some("v1.30.")),
            ("1.32.1", Some("v1.32.")),
            ("1.29.9", None),
            ("1.33.0", None),
            ("garbage", None),
        ] {
            let image = cloud_controller_image(kubernetes);
            match wanted {
                Some(tag) => assert!(
                    image.is_some_and(|i| i.contains(&format!("cloud-controller-manager:{tag}"))),
                    "{kubernetes}: {image:?}"
                ),
                None => assert_eq!(image, None, "{kubernetes}"),
            }
        }
        for (minor, image) in CLOUD_CONTROLLER_RELEASES {
            let (reference, digest) = image.split_once("@sha256:").expect("pinned by digest");
            assert!(
                digest.len() == 64 && digest.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()),
                "{image}"
            );
            let tag = reference.rsplit_once(":v").expect("tagged").1;
            assert!(tag.starts_with(&format!("{minor}.")), "{image}: not the {minor} line");
        }
    }

    #[test]
    fn every_image_is_pinned_by_a_sha256_digest_and_tagged_with_its_release() {
        for r in RELEASES {
            assert!(ADDON_NAMES.contains(&r.addon));
            for image in r.images {
                let (reference, digest) = image
                    .split_once("@sha256:")
                    .unwrap_or_else(|| panic!("{image}: no digest"));
                assert!(
                    digest.len() == 64 && digest.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()),
                    "{image}"
                );
                assert!(
                    reference.rsplit_once(':').is_some_and(|(_, tag)| tag.starts_with('v')),
                    "{image}: no tag"
                );
            }
            assert!(
                r.images[0].contains(&format!(":v{}@", r.version)),
                "{}: the first image is the release",
                r.addon
            );
        }
    }
}
