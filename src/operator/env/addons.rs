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
