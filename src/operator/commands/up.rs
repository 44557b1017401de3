//! `nodeboot up` (the seed's `run`): the whole build, step by step —
//! validate → prerequisites check → pki (renewing what ends within 35 days,
//! warning about what ends within 45) → render → upload secrets,
//! manifests and full Ignition configs → `terraform init` and `apply`
//! (or `plan`). Every step says what it does and how long it took; a
//! failure names the step and what to do. `nodeboot outputs` prints the
//! Terraform outputs (the seed's `terraform.sh output`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use super::{load_env, operator_runtime};
use crate::operator::env::Environment;
use crate::operator::error::Error;
use crate::operator::render;
use crate::shared::cloud::aws::{Kms, S3};
use crate::shared::cloud::{Buckets, Keys, Objects};
use crate::shared::role::Role;

#[derive(Debug, Clone)]
pub struct UpOptions {
    /// Stop at `terraform plan`.
    pub plan: bool,
    pub write_kubeconfig: bool,
    pub terraform_dir: PathBuf,
    /// A local provider mirror for `terraform init -plugin-dir` (offline machines).
    pub plugin_dir: Option<PathBuf>,
}

/// Runs one step: prints its name, times it, and on failure says which
/// step failed and what to do.
pub(super) fn step<T>(name: &str, hint: &str, work: impl FnOnce() -> Result<T, Error>) -> Result<T, Error> {
    eprintln!("==> {name}");
    let start = Instant::now();
    match work() {
        Ok(v) => {
            eprintln!("    {name}: done in {:.1}s", start.elapsed().as_secs_f64());
            Ok(v)
        }
        Err(source) => Err(Error::Step {
            step: name.to_string(),
            hint: hint.to_string(),
            source: Box::new(source),
        }),
    }
}

/// Where `up` renders: Terraform reads `build/<env>/ignition/<role>.ign`.
pub fn build_dir(env: &Environment) -> PathBuf {
    Path::new("build").join(&env.name).join("ignition")
}

pub fn up(env_path: &Path, options: &UpOptions) -> Result<(), Error> {
    let env = step(
        "validate the environment",
        "fix what the messages name, then run again",
        || Ok(load_env(env_path)?.env),
    )?;
    let prereqs_hint = format!(
        "run `nodeboot prereqs --env {}` to create the KMS key and the buckets",
        env_path.display()
    );
    step(
        "check prerequisites (KMS key, state and secrets buckets)",
        &prereqs_hint,
        || check_prereqs(&env),
    )?;
    step(
        "check the etcd version against the cluster's",
        "change etcd_version by at most one minor version, never down",
        || super::etcd_backup::check_version(&env).map(|line| eprintln!("    {line}")),
    )?;
    let secrets = crate::shared::secrets::layout::default_dir(&env.name);
    step(
        "pki",
        "see the message; `nodeboot pki --env F` alone shows the same",
        || {
            let plan = crate::operator::pki::plan(&env);
            // Every run renews what ends within RENEW_DAYS, before the upload
            // below: an operator who runs `up` monthly never sees an end.
            let renew = crate::operator::pki::Options {
                renew: true,
                keep_cas: true,
                ..Default::default()
            };
            let outcome = crate::operator::pki::ensure_with(&secrets, &plan, &renew)?;
            for (id, days) in &outcome.renewed {
                eprintln!(
                    "    renewed {id}: it ended in {days} days (up renews what ends within {} days)",
                    crate::operator::pki::RENEW_DAYS
                );
            }
            for (id, days) in &outcome.cas_ending {
                eprintln!(
                    "    warning: the CA {id} ends in {days} days; up does not rotate a CA by itself (everything it signs changes at once): \
                     rotate it in a maintenance window with `nodeboot pki --rotate {id}` and `nodeboot secrets upload`"
                );
            }
            eprintln!(
                "    {} created, {} kept in {}",
                outcome.created.len(),
                outcome.kept.len(),
                secrets.display()
            );
            let items = crate::operator::pki::inventory(&secrets, &plan)?;
            if let Some(warning) = super::expiry_warning(&items) {
                eprintln!("    {warning}");
            }
            Ok(())
        },
    )?;
    let out = build_dir(&env);
    let written = step(
        "render Ignition configs and manifests",
        "check that the build directory is writable",
        || Ok(render::write(&env, &Role::ALL, &out)?),
    )?;
    step("upload secrets", "check the credentials and the secrets bucket", || {
        // The layout's folders only: `ca/` (CA keys, admin credentials) stays local.
        let folders: Vec<String> = ["common", "secure", "compute"].iter().map(|f| f.to_string()).collect();
        super::secrets::upload_for(&env, Some(secrets.clone()), &folders, false).map(|lines| print_indented(&lines))
    })?;
    step(
        "upload manifests",
        "check the credentials and the secrets bucket",
        || {
            super::secrets::manifests_upload_for(&env, &out.join("manifests"), true, false, false)
                .map(|lines| print_indented(&lines))
        },
    )?;
    step(
        "upload full Ignition configs",
        "check the credentials and the secrets bucket",
        || upload_full_configs(&env, &written),
    )?;
    let hint = terraform_init_hint(options);
    step("terraform init", &hint, || {
        terraform(&env, options, &init_args(&env, options))
    })?;
    let (name, verb) = if options.plan {
        ("terraform plan", "plan")
    } else {
        ("terraform apply", "apply")
    };
    let var_file = std::fs::canonicalize(env_path).map_err(|source| Error::Write {
        path: env_path.display().to_string(),
        source,
    })?;
    let args = vec![
        verb.to_string(),
        "-input=false".into(),
        format!("-var-file={}", var_file.display()),
    ];
    step(name, "read Terraform's output above", || {
        terraform(&env, options, &args)
    })?;
    if options.plan {
        eprintln!("plan only (--plan): nothing was applied");
        return Ok(());
    }
    // What validate checks the next zone list against.
    let record = crate::operator::env::write_record(env_path, &env).map_err(|source| Error::Write {
        path: env_path.display().to_string(),
        source,
    })?;
    eprintln!(
        "    recorded the etcd members' layout in {} (commit it with the environment file)",
        record.display()
    );
    if options.write_kubeconfig {
        step("write the admin kubeconfig", "see the message", || {
            super::kubeconfig::write_default(&env, &secrets).map(|l| eprintln!("    {l}"))
        })?;
    }
    Ok(())
}

fn print_indented(lines: &[String]) {
    for line in lines {
        eprintln!("    {line}");
    }
}

fn check_prereqs(env: &Environment) -> Result<(), Error> {
    operator_runtime(env, async |sdk| {
        let (s3, kms) = (S3::new(sdk), Kms::new(sdk));
        let mut missing = Vec::new();
        match kms.describe_key(&env.kms_master_id).await.map_err(Error::Cloud)? {
            Some(key) if key.state == "Enabled" => {}
            Some(key) => missing.push(format!("KMS key {} is {}", env.kms_master_id, key.state)),
            None => missing.push(format!("KMS key {} does not exist", env.kms_master_id)),
        }
        for bucket in [&env.terraform_bucket_name, &env.secrets_bucket_name] {
            if !s3.bucket_state(bucket).await.map_err(Error::Cloud)?.exists {
                missing.push(format!("bucket {bucket} does not exist"));
            }
        }
        match missing.is_empty() {
            true => Ok(()),
            false => Err(Error::Missing(missing.join("; "))),
        }
    })
}

fn upload_full_configs(env: &Environment, written: &[render::Written]) -> Result<(), Error> {
    operator_runtime(env, async |sdk| {
        let s3 = S3::new(sdk);
        for w in written {
            if let Some(full) = &w.full {
                let bytes = std::fs::read(full).map_err(|source| Error::Write {
                    path: full.display().to_string(),
                    source,
                })?;
                let key = render::full_config_key(w.role);
                s3.put(&env.secrets_bucket_name, &key, bytes, &Default::default())
                    .await
                    .map_err(Error::Cloud)?;
                eprintln!(
                    "    uploaded {} to {}",
                    full.display(),
                    render::full_config_url(env, w.role)
                );
            }
        }
        Ok(())
    })
}

pub(super) fn init_args(env: &Environment, options: &UpOptions) -> Vec<String> {
    let mut args = vec![
        "init".to_string(),
        "-input=false".into(),
        "-reconfigure".into(),
        format!("-backend-config=bucket={}", env.terraform_bucket_name),
        format!("-backend-config=key={}/terraform.tfstate", env.name),
        format!("-backend-config=region={}", env.region),
        "-backend-config=encrypt=true".into(),
        "-backend-config=use_lockfile=true".into(),
    ];
    if let Some(dir) = &options.plugin_dir {
        args.push(format!("-plugin-dir={}", dir.display()));
    }
    args
}

pub(super) fn terraform_init_hint(options: &UpOptions) -> String {
    let mut hint = String::from(
        "terraform init needs the AWS provider (from registry.terraform.io, or a local mirror given with --plugin-dir) \
         and the state bucket (S3 backend, reached with the environment's credentials)",
    );
    if options.plugin_dir.is_none() {
        hint.push_str("; on a machine without internet access pass --plugin-dir DIR with the hashicorp/aws provider");
    }
    hint
}

/// Runs terraform in the Terraform directory, streaming its output, with
/// the environment's profile unless credentials are already set.
pub(super) fn terraform(env: &Environment, options: &UpOptions, args: &[String]) -> Result<(), Error> {
    let mut cmd = Command::new("terraform");
    cmd.args(args)
        .current_dir(&options.terraform_dir)
        .env("TF_IN_AUTOMATION", "1");
    if std::env::var_os("AWS_ACCESS_KEY_ID").is_none() && std::env::var_os("AWS_PROFILE").is_none() {
        cmd.env("AWS_PROFILE", &env.aws_profile);
    }
    let rendered = format!("terraform {}", args.first().map(String::as_str).unwrap_or_default());
    let status = cmd.status().map_err(|e| Error::Terraform {
        command: rendered.clone(),
        detail: format!("cannot run terraform: {e}"),
    })?;
    if status.success() {
        Ok(())
    } else {
        Err(Error::Terraform {
            command: rendered,
            detail: format!("exited with {status}"),
        })
    }
}

/// `nodeboot outputs`: the Terraform outputs of the environment.
pub fn outputs(env_path: &Path, options: &UpOptions) -> Result<(), Error> {
    let env = load_env(env_path)?.env;
    terraform(&env, options, &init_args(&env, options)).map_err(|source| Error::Step {
        step: "terraform init".into(),
        hint: terraform_init_hint(options),
        source: Box::new(source),
    })?;
    terraform(&env, options, &["output".to_string()])
}
