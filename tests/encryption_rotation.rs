//! `nodeboot pki --rotate encryption-key`, three times, as an operator runs
//! it: each run makes one step of the upstream order (new key second, then
//! first, then the old one dropped only with --secrets-rewritten), and every
//! run of `pki` says which step the tree is at.

mod common;

use std::path::Path;

use common::*;

fn pki(dir: &Path, extra: &[&str]) -> std::process::Output {
    let env = example_env();
    let mut args = vec!["pki", "--env", env.to_str().unwrap(), "--dir", dir.to_str().unwrap()];
    args.extend_from_slice(extra);
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_nodeboot"));
    cmd.args(&args);
    cmd.output().unwrap()
}

/// The aescbc key names of the tree's EncryptionConfiguration, in order.
fn keys(dir: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(dir.join("secure/encryption-config.yaml")).unwrap();
    let config: serde_json::Value = serde_json::from_str(&text).unwrap();
    let providers = &config["resources"][0]["providers"];
    assert_eq!(providers[1], serde_json::json!({"identity": {}}), "identity stays last");
    providers[0]["aescbc"]["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["name"].as_str().unwrap().to_string())
        .collect()
}

fn says(out: &std::process::Output, what: &str) {
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &stderr(out);
    assert!(text.contains(what), "expected {what:?} in:\n{text}");
}

#[test]
fn three_runs_make_the_three_steps_and_each_says_where_the_rotation_is() {
    let dir = tempfile::tempdir().unwrap();
    let first = pki(dir.path(), &[]);
    assert!(first.status.success(), "{}", stderr(&first));
    says(&first, "no rotation under way");
    let [a] = &keys(dir.path())[..] else { panic!() };
    let a = a.clone();

    let one = pki(dir.path(), &["--rotate", "encryption-key"]);
    assert!(one.status.success(), "{}", stderr(&one));
    says(&one, "step 1 of 3");
    let after_one = keys(dir.path());
    assert_eq!(after_one[0], a, "the old key still writes");
    let b = after_one[1].clone();
    assert_ne!(a, b);
    // A run without --rotate changes nothing and tells the same step.
    let again = pki(dir.path(), &[]);
    says(&again, "step 1 of 3");
    assert_eq!(keys(dir.path()), [a.clone(), b.clone()]);

    let two = pki(dir.path(), &["--rotate", "encryption-key"]);
    assert!(two.status.success(), "{}", stderr(&two));
    says(&two, "step 2 of 3");
    assert_eq!(keys(dir.path()), [b.clone(), a.clone()]);

    let refused = pki(dir.path(), &["--rotate", "encryption-key"]);
    assert_eq!(refused.status.code(), Some(4), "{}", stderr(&refused));
    says(&refused, "rewrite every Secret");
    assert_eq!(keys(dir.path()), [b.clone(), a.clone()], "nothing changed");

    let three = pki(dir.path(), &["--rotate", "encryption-key", "--secrets-rewritten"]);
    assert!(three.status.success(), "{}", stderr(&three));
    says(&three, "no rotation under way");
    assert_eq!(keys(dir.path()), [b]);
}
