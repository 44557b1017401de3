//! Every container image a node runs is pinned by digest (a retag in a
//! registry never changes what runs), and the list the AMI bake pulls
//! (`nodeboot images`) is exactly what the render makes nodes run, so a node
//! boots with no registry reachable.

mod common;

use std::collections::BTreeSet;

use common::*;
use nodeboot::shared::role::Role;

/// The image references in a rendered text: `image:` lines of manifests and
/// the words of unit files that name a registry.
fn images_in(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if let Some(image) = line.strip_prefix("image:").or_else(|| line.strip_prefix("- image:")) {
            out.push(image.trim().trim_matches('"').to_string());
            continue;
        }
        for word in line.split_whitespace() {
            let word = word.trim_matches(|c| c == '\'' || c == '"');
            if ["registry.k8s.io/", "quay.io/", "docker.io/", "ghcr.io/"]
                .iter()
                .any(|r| word.starts_with(r))
            {
                out.push(word.to_string());
            }
        }
    }
    out
}

/// Every image the render makes any node run.
fn rendered_images(env: &nodeboot::operator::env::Environment) -> BTreeSet<String> {
    let mut all = BTreeSet::new();
    for role in Role::ALL {
        for (_, text) in nodeboot::operator::render::manifests::manifests_for(env, role) {
            all.extend(images_in(&text));
        }
        for unit in nodeboot::operator::render::units_for(env, role) {
            all.extend(images_in(&unit.contents));
        }
    }
    for (_, text) in nodeboot::operator::render::addons::addons_for(env) {
        all.extend(images_in(&text));
    }
    all
}

fn pinned(image: &str) -> bool {
    let Some((reference, digest)) = image.split_once("@sha256:") else {
        return false;
    };
    let tagged = reference
        .rsplit_once(':')
        .is_some_and(|(repo, tag)| !repo.is_empty() && !tag.contains('/') && !tag.is_empty());
    tagged && digest.len() == 64 && digest.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[test]
fn every_image_a_node_runs_is_pinned_by_digest() {
    let env = nodeboot::operator::env::load(&example_env()).unwrap().env;
    let images = rendered_images(&env);
    for component in [
        "kube-apiserver",
        "kube-controller-manager",
        "kube-scheduler",
        "kube-proxy",
        "kubectl",
        "etcd",
        "cloud-controller-manager",
    ] {
        assert!(
            images.iter().any(|i| i.contains(&format!("/{component}:"))),
            "{component} not found in {images:?}"
        );
    }
    let loose: Vec<_> = images.iter().filter(|i| !pinned(i)).collect();
    assert!(
        loose.is_empty(),
        "not pinned by digest (repository:tag@sha256:...): {loose:?}"
    );
}

#[test]
fn the_bakes_list_is_exactly_what_the_nodes_run() {
    let env = nodeboot::operator::env::load(&example_env()).unwrap().env;
    let out = nodeboot(&["images", "--env", example_env().to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let listed: BTreeSet<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| l.split_whitespace().last().unwrap().to_string())
        .collect();
    assert_eq!(listed, rendered_images(&env));
}
