//! Root-only tests never pass silently: without root they fail with their
//! reason, and with NODEBOOT_SKIP_ROOT_TESTS=1 they say `skipped` in the
//! output of `cargo test`. Checked by running this very test binary as an
//! unprivileged user (setpriv, util-linux) on the probe below.

mod common;

use std::process::Command;

use common::bed::{require_root, root_decision, RootDecision};

/// A root-only test that does nothing else: the subject of the test below.
#[test]
fn probe_needs_root() {
    // Fails without root unless opted out; then it says "skipped" and returns.
    let _ran = require_root("the probe");
}

#[test]
fn only_an_explicit_opt_out_skips() {
    assert_eq!(root_decision(true, None), RootDecision::Run);
    assert_eq!(root_decision(true, Some("1")), RootDecision::Run);
    assert_eq!(root_decision(false, Some("1")), RootDecision::Skip);
    for other in [None, Some("0"), Some(""), Some("yes")] {
        assert_eq!(root_decision(false, other), RootDecision::Fail, "{other:?}");
    }
}

#[test]
fn a_root_only_test_without_root_fails_with_its_reason_or_says_skipped() {
    if !require_root("running a test as another user") {
        return;
    }
    let me = std::env::current_exe().unwrap();
    let as_nobody = |opt_out: Option<&str>| {
        let mut cmd = Command::new("setpriv");
        cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(&me)
            .args(["--exact", "probe_needs_root", "--test-threads=1"]);
        cmd.env_remove("NODEBOOT_SKIP_ROOT_TESTS").env("RUST_BACKTRACE", "0");
        if let Some(v) = opt_out {
            cmd.env("NODEBOOT_SKIP_ROOT_TESTS", v);
        }
        let out = cmd.output().expect("setpriv runs (util-linux)");
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };

    let (passed, text) = as_nobody(None);
    assert!(!passed, "without root and without the opt-out it fails:\n{text}");
    assert!(
        text.contains("the probe needs root") && text.contains("NODEBOOT_SKIP_ROOT_TESTS=1"),
        "says why:\n{text}"
    );

    let (passed, text) = as_nobody(Some("1"));
    assert!(passed, "{text}");
    assert!(
        text.contains("test probe_needs_root ... skipped (NODEBOOT_SKIP_ROOT_TESTS=1: the probe needs root)"),
        "says skipped:\n{text}"
    );
}
