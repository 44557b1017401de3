//! `nodeboot up --plan` against the emulated AWS: every step up to
//! Terraform runs, and `terraform init` stops with a message that says
//! what is needed (no providers can be downloaded here).

mod common;

use std::process::{Command, Output};

use common::bed::*;
use common::*;

fn nodeboot_in(dir: &std::path::Path, aws: &Aws, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nodeboot"))
        .args(args)
        .current_dir(dir)
        .envs(aws.env())
        .env_remove("AWS_PROFILE")
        .env("NODEBOOT_LOG", "warn")
        .output()
        .unwrap()
}

/// A scratch copy of the Terraform tree, so init leaves nothing in the repo.
fn terraform_copy(dir: &std::path::Path) -> std::path::PathBuf {
    let copy = dir.join("terraform");
    let status = Command::new("cp")
        .arg("-r")
        .arg(repo().join("terraform"))
        .arg(&copy)
        .status()
        .unwrap();
    assert!(status.success());
    let _ = std::fs::remove_dir_all(copy.join(".terraform"));
    copy
}

#[test]
fn up_without_prerequisites_says_to_run_prereqs() {
    let aws = Aws::start(0);
    let dir = tempfile::tempdir().unwrap();
    let env = example_env();
    let out = nodeboot_in(dir.path(), &aws, &["up", "--plan", "--env", env.to_str().unwrap()]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(14), "{err}");
    assert!(
        err.contains("check prerequisites (KMS key, state and secrets buckets) failed"),
        "{err}"
    );
    assert!(err.contains("KMS key alias/example-nodeboot does not exist"), "{err}");
    assert!(err.contains("what to do: run `nodeboot prereqs --env"), "{err}");
    assert!(
        !dir.path().join("secrets").exists(),
        "nothing generated before the check passes"
    );
}

#[test]
fn up_plan_runs_every_step_and_stops_at_terraform_init_with_a_clear_message() {
    let aws = Aws::start(0);
    let dir = tempfile::tempdir().unwrap();
    let env = example_env();
    let env_arg = env.to_str().unwrap();
    let prereqs = nodeboot_in(dir.path(), &aws, &["prereqs", "--env", env_arg]);
    assert!(prereqs.status.success(), "{}", stderr(&prereqs));
    let tf = terraform_copy(dir.path());
    let out = nodeboot_in(
        dir.path(),
        &aws,
        &[
            "up",
            "--plan",
            "--env",
            env_arg,
            "--terraform-dir",
            tf.to_str().unwrap(),
        ],
    );
    let err = stderr(&out);
    for done in [
        "validate the environment: done",
        "check prerequisites (KMS key, state and secrets buckets): done",
        "pki: done",
        "render Ignition configs and manifests: done",
        "upload secrets: done",
        "upload manifests: done",
        "upload full Ignition configs: done",
    ] {
        assert!(err.contains(done), "missing {done:?}:\n{err}");
    }
    assert_eq!(out.status.code(), Some(17), "{err}");
    assert!(err.contains("terraform init failed"), "{err}");
    assert!(
        err.contains("what to do: terraform init needs the AWS provider"),
        "{err}"
    );
    assert!(err.contains("--plugin-dir"), "{err}");
    assert!(dir.path().join("build/example/ignition/etcd.ign").exists());
    assert!(dir
        .path()
        .join("build/example/ignition/manifests/etcd/kube-apiserver.yaml")
        .exists());

    // What up uploaded is in the bucket, encrypted, and reads back.
    let ls = nodeboot_in(dir.path(), &aws, &["secrets", "ls", "--env", env_arg]);
    let listing = String::from_utf8_lossy(&ls.stdout);
    for key in [
        "common/ca.crt",
        "secure/etcd/member-0.key",
        "manifests/etcd/kube-apiserver.yaml",
    ] {
        assert!(listing.contains(key), "{key} not uploaded:\n{listing}\n{}", stderr(&ls));
    }
    assert!(!listing.contains("ca/"), "CA keys stay local:\n{listing}");
    assert!(
        !listing.contains("kubeconfig_admin") && !listing.contains("admin.kubeconfig"),
        "the admin kubeconfig never leaves this machine:\n{listing}"
    );
    assert!(
        dir.path().join("secrets/example/ca/admin.kubeconfig").exists(),
        "it stays in the local tree"
    );

    // A second run changes nothing locally and uploads nothing new.
    let again = nodeboot_in(
        dir.path(),
        &aws,
        &[
            "up",
            "--plan",
            "--env",
            env_arg,
            "--terraform-dir",
            tf.to_str().unwrap(),
        ],
    );
    let err = stderr(&again);
    assert!(err.contains("0 created"), "pki keeps everything on a rerun:\n{err}");
    assert!(!err.contains("uploaded  "), "nothing uploaded again:\n{err}");
}

/// issue 21: every `up` renews what ends within 35 days (a monthly run never
/// meets an end) before it uploads, with a line saying so, and warns about
/// what ends within 45: etcd and
/// control-plane certificates and the bootstrap token alike.
#[test]
fn up_renews_what_ends_within_35_days_before_the_upload_and_warns_at_45() {
    let aws = Aws::start(0);
    let dir = tempfile::tempdir().unwrap();
    let env = example_env();
    let env_arg = env.to_str().unwrap();
    let prereqs = nodeboot_in(dir.path(), &aws, &["prereqs", "--env", env_arg]);
    assert!(prereqs.status.success(), "{}", stderr(&prereqs));
    let days = |n: u32| (n * 86_400).to_string();
    // Every leaf certificate ends in 20 days, the scheduler's in 40.
    for extra in [
        vec!["--test-validity-secs", &days(20)],
        vec!["--rotate", "scheduler", "--test-validity-secs", &days(40)],
    ] {
        let mut args = vec!["pki", "--env", env_arg];
        args.extend(extra);
        let out = nodeboot_in(dir.path(), &aws, &args);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    // The bootstrap token ends in 10 days.
    let token = dir.path().join("secrets/example/secure/addons/bootstrap-token.yaml");
    let text = std::fs::read_to_string(&token).unwrap();
    let soon = std::process::Command::new("date")
        .args(["-u", "-d", "+10 days", "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .unwrap();
    let soon = String::from_utf8_lossy(&soon.stdout).trim().to_string();
    let expiration = text.split("\"expiration\": \"").nth(1).unwrap()[..20].to_string();
    std::fs::write(&token, text.replace(&expiration, &soon)).unwrap();

    let tf = terraform_copy(dir.path());
    let up = [
        "up",
        "--plan",
        "--env",
        env_arg,
        "--terraform-dir",
        tf.to_str().unwrap(),
    ];
    let out = nodeboot_in(dir.path(), &aws, &up);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(17), "stops at terraform init:\n{err}");
    // Whole days left, rounded down: a day less once a second has passed.
    let said = |err: &str, text: &dyn Fn(u32) -> String, days: u32| {
        assert!(
            err.contains(&text(days)) || err.contains(&text(days - 1)),
            "{}:\n{err}",
            text(days)
        )
    };
    for id in ["etcd-member-0", "etcd-member-2", "etcd-client", "apiserver", "admin"] {
        said(
            &err,
            &|d| format!("renewed {id}: it ended in {d} days (up renews what ends within 35 days)"),
            20,
        );
    }
    said(&err, &|d| format!("renewed bootstrap-token: it ended in {d} days"), 10);
    assert!(!err.contains("renewed scheduler"), "{err}");
    let warning = |d| format!("warning: 1 end within 45 days: scheduler ({d} days)");
    said(&err, &warning, 40);
    let renewed_at = err.find("renewed etcd-member-0").unwrap();
    assert!(
        renewed_at < err.find("upload secrets: done").unwrap(),
        "before the upload"
    );

    // The bucket holds the renewed files.
    let fetched = dir.path().join("fetched");
    let fetch = nodeboot_in(
        dir.path(),
        &aws,
        &[
            "secrets",
            "fetch",
            "--env",
            env_arg,
            "--dir",
            fetched.to_str().unwrap(),
            "secure/etcd/member-0.crt",
            "secure/addons/bootstrap-token.yaml",
        ],
    );
    assert!(fetch.status.success(), "{}", stderr(&fetch));
    for path in ["secure/etcd/member-0.crt", "secure/addons/bootstrap-token.yaml"] {
        assert_eq!(
            std::fs::read(fetched.join(path)).unwrap(),
            std::fs::read(dir.path().join("secrets/example").join(path)).unwrap(),
            "{path}"
        );
    }
    let left =
        nodeboot::operator::pki::days_left(&dir.path().join("secrets/example/secure/etcd/member-0.crt")).unwrap();
    assert!(left >= 364, "{left}");

    // The next run renews nothing and still warns about the scheduler.
    let again = nodeboot_in(dir.path(), &aws, &up);
    let err = stderr(&again);
    assert!(!err.contains("renewed "), "{err}");
    assert!(err.contains("0 created"), "{err}");
    said(&err, &warning, 40);
}
