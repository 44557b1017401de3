//! `nodeboot down --env F`: the environment's Terraform resources, gone
//! (issue 23 item 7). A plain `terraform destroy` always stops at the
//! members' volumes, ENIs and address reservations (`prevent_destroy`); this
//! command lifts that guard only on explicit confirmation, and only in a
//! copy of the Terraform tree (`build/<env>/down/terraform`, beside a link
//! `build` to `./build`, where the tree reads the user data), never in the
//! repository's: an override file in the copy's `modules/etcd` sets
//! `prevent_destroy = false` on exactly those resources (Terraform merges a
//! `*_override.tf` file's `lifecycle` arguments into the resource). Then
//! `terraform init` (the same state as `up`) and `terraform destroy`. Each
//! member volume has `final_snapshot = true`, so the AWS provider takes a
//! last snapshot of it before deleting it. What Terraform does not own stays:
//! the KMS key, the state and secrets buckets (secrets, etcd backups), every
//! snapshot.

use std::path::{Path, PathBuf};

use super::load_env;
use super::up::{self, UpOptions};
use crate::operator::error::Error;

/// The resources of `modules/etcd` that carry `prevent_destroy = true`: a
/// member's data, its fixed address and that address's reservation.
/// `tests/down.rs` checks this list against the Terraform tree.
pub const PROTECTED: [&str; 3] = [
    "aws_ebs_volume.member",
    "aws_network_interface.member",
    "aws_ec2_subnet_cidr_reservation.member",
];

/// The override file's name in the copy's `modules/etcd`.
pub const OVERRIDE_FILE: &str = "nodeboot_down_override.tf";

/// Environments whose name starts with this are playgrounds (`env new`'s
/// default, `play-$USER`): `--yes` is confirmation enough.
pub const PLAYGROUND_PREFIX: &str = "play-";

#[derive(Debug, Clone)]
pub struct DownOptions {
    /// `--confirm NAME`: the environment's name, typed again.
    pub confirm: Option<String>,
    /// `--yes`: enough for a playground only.
    pub yes: bool,
    /// Prepare the copy and say what would run; run nothing.
    pub dry_run: bool,
    /// The repository's Terraform tree and the provider mirror.
    pub terraform: UpOptions,
}

/// Pure: whether the operator confirmed the destruction of `environment`'s
/// data; the error says what to pass.
pub fn confirmed(environment: &str, confirm: Option<&str>, yes: bool) -> Result<(), String> {
    let playground = environment.starts_with(PLAYGROUND_PREFIX);
    match confirm {
        Some(name) if name == environment => Ok(()),
        Some(name) => Err(format!(
            "--confirm {name} is not the environment's name {environment}: nothing was destroyed"
        )),
        None if yes && playground => Ok(()),
        None if yes => Err(format!(
            "{environment} is not a playground ({PLAYGROUND_PREFIX}*): --yes is not enough; \
             pass --confirm {environment} to delete its etcd members' volumes, ENIs and addresses"
        )),
        None => Err(format!(
            "down deletes every resource of {environment}, its etcd members' volumes (after a final \
             snapshot), ENIs and addresses included: pass --confirm {environment}{}",
            if playground {
                " (or --yes: it is a playground)"
            } else {
                ""
            }
        )),
    }
}

/// Pure: the override that lifts `prevent_destroy` on [`PROTECTED`].
pub fn override_file() -> String {
    let mut text = String::from(
        "# Written by `nodeboot down` into its copy of the Terraform tree, never into\n\
         # the repository's: lets `terraform destroy` delete the members' volumes\n\
         # (each after its final snapshot), ENIs and address reservations.\n",
    );
    for resource in PROTECTED {
        let (kind, name) = resource.split_once('.').expect("type.name");
        text.push_str(&format!(
            "\nresource \"{kind}\" \"{name}\" {{\n  lifecycle {{\n    prevent_destroy = false\n  }}\n}}\n"
        ));
    }
    text
}

/// Where `down` prepares its copy of the Terraform tree.
pub fn work_dir(environment: &str) -> PathBuf {
    Path::new("build").join(environment).join("down").join("terraform")
}

pub fn down(env_path: &Path, options: &DownOptions) -> Result<(), Error> {
    let env = load_env(env_path)?.env;
    confirmed(&env.name, options.confirm.as_deref(), options.yes).map_err(Error::Refused)?;
    let copy = work_dir(&env.name);
    let write = |path: &Path, source| Error::Write {
        path: path.display().to_string(),
        source,
    };
    if copy.exists() {
        std::fs::remove_dir_all(&copy).map_err(|e| write(&copy, e))?;
    }
    copy_tree(&options.terraform.terraform_dir, &copy)?;
    // The tree reads the user data from ../build/<env>/ignition (up renders
    // it there); destroy evaluates it too. The copy's ../build is this one.
    let ignition = up::build_dir(&env);
    if !ignition.join("etcd.ign").exists() {
        up::step(
            "render Ignition configs (Terraform reads them)",
            "see the message",
            || Ok(crate::operator::render::write(&env, &crate::shared::role::Role::ALL, &ignition).map(|_| ())?),
        )?;
    }
    let build = std::fs::canonicalize("build").map_err(|e| write(Path::new("build"), e))?;
    let link = copy.parent().expect("build/<env>/down").join("build");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(&build, &link).map_err(|e| write(&link, e))?;
    let override_path = copy.join("modules/etcd").join(OVERRIDE_FILE);
    std::fs::write(&override_path, override_file()).map_err(|e| write(&override_path, e))?;
    let var_file = std::fs::canonicalize(env_path).map_err(|e| write(env_path, e))?;
    let terraform = UpOptions {
        terraform_dir: copy.clone(),
        ..options.terraform.clone()
    };
    let destroy = vec![
        "destroy".to_string(),
        "-input=false".into(),
        "-auto-approve".into(),
        format!("-var-file={}", var_file.display()),
    ];
    eprintln!(
        "    {}: prevent_destroy lifted on {}",
        override_path.display(),
        PROTECTED.join(", ")
    );
    if options.dry_run {
        eprintln!("dry run: would run, in {}:", copy.display());
        eprintln!("    terraform {}", up::init_args(&env, &terraform).join(" "));
        eprintln!("    terraform {}", destroy.join(" "));
        return Ok(());
    }
    let hint = up::terraform_init_hint(&terraform);
    up::step("terraform init", &hint, || {
        up::terraform(&env, &terraform, &up::init_args(&env, &terraform))
    })?;
    up::step(
        "terraform destroy (a final snapshot of each member volume first)",
        "read Terraform's output above; run `nodeboot down` again: it goes on from where it stopped",
        || up::terraform(&env, &terraform, &destroy),
    )?;
    // The layout record guards zone changes of existing members; none exist now.
    let record = crate::operator::env::record_path(env_path);
    match std::fs::remove_file(&record) {
        Ok(()) => eprintln!("    removed {} (no member exists any more)", record.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(write(&record, e)),
    }
    eprintln!(
        "{} is down. Kept: the KMS key {}, the buckets {} (state) and {} (secrets, etcd backups), \
         every snapshot of the member volumes (tag nodeboot.io/snapshot-of = {}-etcd for the daily ones)",
        env.name, env.kms_master_id, env.terraform_bucket_name, env.secrets_bucket_name, env.name
    );
    Ok(())
}

/// Copies the Terraform tree, without what `terraform init` and the tests
/// leave in it (`.terraform/`, `tests_*/`, state files).
fn copy_tree(from: &Path, to: &Path) -> Result<(), Error> {
    let read = |path: &Path, source| Error::Write {
        path: path.display().to_string(),
        source,
    };
    std::fs::create_dir_all(to).map_err(|e| read(to, e))?;
    for entry in std::fs::read_dir(from).map_err(|e| read(from, e))? {
        let entry = entry.map_err(|e| read(from, e))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name == ".terraform" || name.starts_with("tests_") || name.contains(".tfstate") {
            continue;
        }
        let (source, target) = (entry.path(), to.join(&*name));
        if entry.file_type().map_err(|e| read(&source, e))?.is_dir() {
            copy_tree(&source, &target)?;
        } else {
            std::fs::copy(&source, &target).map_err(|e| read(&source, e))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_name_typed_again_confirms_a_real_environment() {
        assert_eq!(confirmed("prod", Some("prod"), false), Ok(()));
        assert_eq!(confirmed("prod", Some("prod"), true), Ok(()));
        let wrong = confirmed("prod", Some("staging"), false).unwrap_err();
        assert!(wrong.contains("not the environment's name prod"), "{wrong}");
        let yes = confirmed("prod", None, true).unwrap_err();
        assert!(
            yes.contains("--yes is not enough") && yes.contains("--confirm prod"),
            "{yes}"
        );
        let none = confirmed("prod", None, false).unwrap_err();
        assert!(none.contains("--confirm prod") && !none.contains("--yes"), "{none}");
    }

    #[test]
    fn a_playground_goes_with_yes_alone() {
        assert_eq!(confirmed("play-ada", None, true), Ok(()));
        assert_eq!(confirmed("play-ada", Some("play-ada"), false), Ok(()));
        let none = confirmed("play-ada", None, false).unwrap_err();
        assert!(none.contains("--confirm play-ada (or --yes"), "{none}");
        assert!(
            confirmed("play-ada", Some("play-bob"), true).is_err(),
            "a wrong name is never ignored"
        );
        assert!(confirmed("display-ada", None, true).is_err());
    }

    #[test]
    fn the_override_lifts_prevent_destroy_on_each_protected_resource_only() {
        let text = override_file();
        for resource in PROTECTED {
            let (kind, name) = resource.split_once('.').unwrap();
            assert!(text.contains(&format!("resource \"{kind}\" \"{name}\" {{")), "{text}");
        }
        assert_eq!(text.matches("prevent_destroy = false").count(), PROTECTED.len());
        assert_eq!(text.matches("resource ").count(), PROTECTED.len());
    }
}
