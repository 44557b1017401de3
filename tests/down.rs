//! `nodeboot down --env F` (issue 23 item 7): refuses without the
//! environment's name typed again (`--yes` is enough for a playground only),
//! lifts `prevent_destroy` in a copy of the Terraform tree only, then runs
//! `terraform init` and `terraform destroy` there. Terraform here is a
//! recorder on PATH; tests/terraform/test_platform.py runs the real
//! Terraform over the copy `down --dry-run` prepares.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;
use nodeboot::operator::commands::down::{OVERRIDE_FILE, PROTECTED};

/// A `terraform` that records its directory, arguments and whether the
/// override is there, and fails `destroy` when asked to.
fn fake_terraform(dir: &Path, fail_destroy: bool) -> PathBuf {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let log = dir.join("terraform.log");
    let script = format!(
        "#!/bin/sh\n\
         echo \"$PWD|$*|$(ls modules/etcd/{OVERRIDE_FILE} 2>/dev/null)\" >> {log}\n\
         if [ \"$1\" = destroy ] && [ {fail} = 1 ]; then echo 'Error: boom' >&2; exit 1; fi\n\
         exit 0\n",
        log = log.display(),
        fail = u8::from(fail_destroy),
    );
    let path = bin.join("terraform");
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    bin
}

fn down(dir: &Path, bin: &Path, env: &Path, args: &[&str]) -> Output {
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    Command::new(env!("CARGO_BIN_EXE_nodeboot"))
        .arg("down")
        .arg("--env")
        .arg(env)
        .arg("--terraform-dir")
        .arg(repo().join("terraform"))
        .args(args)
        .current_dir(dir)
        .env("PATH", path)
        .env("NODEBOOT_LOG", "warn")
        .output()
        .unwrap()
}

fn runs(dir: &Path) -> Vec<Vec<String>> {
    std::fs::read_to_string(dir.join("terraform.log"))
        .unwrap_or_default()
        .lines()
        .map(|l| l.split('|').map(str::to_string).collect())
        .collect()
}

/// `env new play-tester`: a playground's environment file.
fn playground(dir: &Path) -> PathBuf {
    let out = Command::new(env!("CARGO_BIN_EXE_nodeboot"))
        .args(["env", "new", "play-tester", "--dir"])
        .arg(dir.join("environments"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    dir.join("environments/play-tester.tfvars")
}

#[test]
fn down_refuses_without_the_name_and_runs_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let bin = fake_terraform(dir.path(), false);
    for args in [&[][..], &["--yes"], &["--confirm", "prod"]] {
        let out = down(dir.path(), &bin, &example_env(), args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(4), "{args:?}: {err}");
        assert!(err.contains("example"), "{err}");
    }
    let yes = stderr(&down(dir.path(), &bin, &example_env(), &["--yes"]));
    assert!(
        yes.contains("--yes is not enough") && yes.contains("--confirm example"),
        "{yes}"
    );
    assert!(runs(dir.path()).is_empty(), "terraform ran: {:?}", runs(dir.path()));
    assert!(
        !dir.path().join("build").exists(),
        "nothing prepared before the confirmation"
    );
}

#[test]
fn a_playground_goes_down_in_one_command() {
    let dir = tempfile::tempdir().unwrap();
    let bin = fake_terraform(dir.path(), false);
    let env = playground(dir.path());
    let record = env.with_extension("members.json");
    std::fs::write(&record, "{\"members\": []}\n").unwrap();
    let out = down(dir.path(), &bin, &env, &["--yes"]);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    let copy = dir.path().join("build/play-tester/down/terraform");
    let runs = runs(dir.path());
    assert_eq!(runs.len(), 2, "{runs:?}");
    let (init, destroy) = (&runs[0], &runs[1]);
    for run in &runs {
        assert_eq!(Path::new(&run[0]), copy.canonicalize().unwrap(), "in the copy: {run:?}");
        assert!(run[2].ends_with(OVERRIDE_FILE), "the override is there: {run:?}");
    }
    assert!(init[1].starts_with("init ") && init[1].contains("-backend-config=key=play-tester/terraform.tfstate"));
    assert!(
        destroy[1].starts_with("destroy -input=false -auto-approve -var-file=/"),
        "{destroy:?}"
    );
    assert!(destroy[1].ends_with("environments/play-tester.tfvars"), "{destroy:?}");
    assert!(!record.exists(), "the members' record goes with the members");
    assert!(err.contains("play-tester is down"), "{err}");
    assert!(
        !repo().join("terraform/modules/etcd").join(OVERRIDE_FILE).exists(),
        "the repository's tree is never changed"
    );
}

#[test]
fn a_real_environment_goes_down_with_its_name_typed_again_and_a_failure_says_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let bin = fake_terraform(dir.path(), true);
    let out = down(dir.path(), &bin, &example_env(), &["--confirm", "example"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(17), "{err}");
    assert!(
        err.contains("terraform destroy (a final snapshot of each member volume first) failed"),
        "{err}"
    );
    assert!(err.contains("run `nodeboot down` again"), "{err}");
    assert_eq!(runs(dir.path()).len(), 2);
}

#[test]
fn a_dry_run_prepares_the_copy_and_runs_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let bin = fake_terraform(dir.path(), false);
    let out = down(dir.path(), &bin, &example_env(), &["--confirm", "example", "--dry-run"]);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("terraform destroy -input=false -auto-approve"), "{err}");
    assert!(runs(dir.path()).is_empty());
    let copy = dir.path().join("build/example/down/terraform");
    assert!(copy.join("modules/etcd").join(OVERRIDE_FILE).exists());
    assert!(copy.join("main.tf").exists() && !copy.join(".terraform").exists());
}

/// Every resource of the tree with `prevent_destroy = true`, as `type.name`.
fn protected_in_the_tree(dir: &Path, found: &mut Vec<String>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if path.is_dir() && !name.starts_with('.') && !name.starts_with("tests_") {
            protected_in_the_tree(&path, found);
        } else if name.ends_with(".tf") {
            let mut resource = None;
            for line in std::fs::read_to_string(&path).unwrap().lines() {
                if let Some(rest) = line.strip_prefix("resource \"") {
                    let parts: Vec<&str> = rest.split('"').collect();
                    resource = Some(format!("{}.{}", parts[0], parts[2]));
                }
                if line.trim().replace(' ', "") == "prevent_destroy=true" {
                    found.push(resource.clone().expect("inside a resource"));
                }
            }
        }
    }
}

#[test]
fn down_lifts_every_prevent_destroy_of_the_tree() {
    let mut found = Vec::new();
    protected_in_the_tree(&repo().join("terraform"), &mut found);
    found.sort();
    let mut listed: Vec<String> = PROTECTED.iter().map(|s| s.to_string()).collect();
    listed.sort();
    assert_eq!(found, listed, "a new prevent_destroy needs its line in down::PROTECTED");
}
