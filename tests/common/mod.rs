//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod bed;
pub mod etcd;
pub mod ignition_lint;
pub mod secrets_bed;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn example_env() -> PathBuf {
    repo().join("environments/example.tfvars")
}

/// The upstream Ignition schemas live in `../shared` beside the clone; they
/// are not copied into the repository.
pub fn ignition_schema(version: &str) -> serde_json::Value {
    let path = repo().join(format!("../shared/ignition-schema/ignition-v{version}.schema.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "cannot read the upstream Ignition schema at {}: {e}; the tests expect the shared/ folder beside the clone",
            path.display()
        )
    });
    serde_json::from_str(&text).expect("the upstream schema is JSON")
}

pub fn nodeboot(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nodeboot"))
        .args(args)
        .output()
        .expect("nodeboot runs")
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Writes `text` as an environment file named `name` in a fresh directory.
pub fn env_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// The example environment with `field = value` lines replaced (or added).
/// A multi-line list value is replaced whole.
pub fn example_with(replacements: &[(&str, &str)]) -> String {
    let mut text = std::fs::read_to_string(example_env()).unwrap();
    for (field, value) in replacements {
        let mut out = Vec::new();
        let mut found = false;
        let mut open_brackets = 0i32;
        for line in text.lines() {
            if open_brackets > 0 {
                open_brackets += bracket_balance(line);
                continue; // continuation of the value being replaced
            }
            let key = line.split('=').next().unwrap_or("").trim();
            if key == *field && !line.trim_start().starts_with('#') {
                found = true;
                open_brackets = bracket_balance(line);
                out.push(format!("{field} = {value}"));
            } else {
                out.push(line.to_string());
            }
        }
        text = out.join("\n") + "\n";
        if !found {
            text.push_str(&format!("{field} = {value}\n"));
        }
    }
    text
}

fn bracket_balance(line: &str) -> i32 {
    line.chars()
        .map(|c| match c {
            '[' => 1,
            ']' => -1,
            _ => 0,
        })
        .sum()
}

/// The example grown to 5 zones and 7 etcd members (two members share a
/// zone's subnet in two of them).
pub fn seven_members_in_five_zones() -> String {
    let zones = "[\"eu-west-1a\", \"eu-west-1b\", \"eu-west-1c\", \"eu-west-1d\", \"eu-west-1e\"]";
    let subnets = |third: u32| {
        format!(
            "[{}]",
            (0..5)
                .map(|z| format!("\"10.80.{}.0/24\"", third + z))
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    example_with(&[
        ("availability_zones", zones),
        ("secure_subnets", &subnets(10)),
        ("compute_subnets", &subnets(20)),
        ("elb_subnets", &subnets(100)),
        ("mgmt_subnets", &subnets(110)),
        ("etcd_count", "7"),
    ])
}

/// The 1-based line of `field = ...` in `text`.
pub fn line_of(text: &str, field: &str) -> usize {
    text.lines()
        .position(|l| l.split('=').next().unwrap_or("").trim() == field && !l.trim_start().starts_with('#'))
        .map(|i| i + 1)
        .unwrap_or_else(|| panic!("{field} not in text"))
}
