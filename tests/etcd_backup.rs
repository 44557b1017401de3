//! etcd backups against the emulator, as an operator runs them:
//! `nodeboot etcd restore` refusing a missing backup, and the version rule
//! of `validate --cluster` and `up`.

mod common;

use common::secrets_bed::*;
use common::stderr;

#[test]
fn restore_refuses_an_unknown_backup_and_an_empty_bucket() {
    let p = Platform::new("bk-none");
    let out = p.nodeboot(&["etcd", "restore", "--timeout", "2s", "--env"], &[]);
    assert_eq!(out.status.code(), Some(21), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("no backups under s3://bk-none-secrets/backups/etcd/"),
        "{}",
        stderr(&out)
    );
    let out = p.nodeboot(
        &[
            "etcd",
            "restore",
            "--backup",
            "20260101T000000Z-r5",
            "--timeout",
            "2s",
            "--env",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(21), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("backups/etcd/20260101T000000Z-r5.snapshot"),
        "{}",
        stderr(&out)
    );
}

/// A backup object as the version rule sees it: only its key and the user
/// metadata matter, the body is never read.
fn fake_backup(p: &Platform, unix: i64, etcd_version: &str) {
    let id = nodeboot::shared::backup::BackupId { unix, revision: 100 };
    let metadata = std::collections::HashMap::from([
        ("nodeboot-format".to_string(), "2".to_string()),
        ("nodeboot-etcd-version".to_string(), etcd_version.to_string()),
    ]);
    p.put_raw(&id.key(), b"not read", &metadata);
}

#[test]
fn validate_with_the_cluster_and_up_refuse_skipping_a_minor_version_or_going_down() {
    let p = Platform::new("bk-version");
    let validate = |version: &str| {
        let quoted = format!("\"{version}\"");
        let env = p.other_env_file("bk-version", &[("etcd_version", quoted.as_str())]);
        p.nodeboot_with(&["validate", "--cluster", "--env"], &env, &[])
    };
    let none = validate("3.6.0");
    assert!(
        none.status.success(),
        "no backup yet: nothing to compare: {}",
        stderr(&none)
    );
    assert!(String::from_utf8_lossy(&none.stdout).contains("no backup yet"));
    fake_backup(&p, 1_700_000_000, "3.3.9");
    fake_backup(&p, 1_790_000_000, "3.4.23"); // the newest says what runs
    for (version, ok) in [
        ("3.4.30", true),
        ("3.5.17", true),
        ("3.4.1", true),
        ("3.6.0", false),
        ("3.3.9", false),
    ] {
        let out = validate(version);
        assert_eq!(out.status.success(), ok, "{version}: {}", stderr(&out));
        if !ok {
            assert_eq!(out.status.code(), Some(31), "{version}: {}", stderr(&out));
            assert!(
                stderr(&out).contains("etcd_version") && stderr(&out).contains("3.4.23"),
                "{}",
                stderr(&out)
            );
        }
    }
    // up stops at its version step, before it generates or uploads anything.
    let env = p.other_env_file("bk-version", &[("etcd_version", "\"3.6.0\"")]);
    let up = p.nodeboot_with(&["up", "--plan", "--env"], &env, &[]);
    assert_eq!(up.status.code(), Some(31), "{}", stderr(&up));
    assert!(
        stderr(&up).contains("check the etcd version against the cluster's failed"),
        "{}",
        stderr(&up)
    );
    assert!(!p.dir.path().join("build").exists());
}
