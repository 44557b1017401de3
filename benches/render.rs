//! Render benchmark: prints a table, asserts nothing about time.
//!
//! - in-process: loading the example environment and rendering every role;
//! - as a process: `nodeboot --version` (start-up) and a whole
//!   `nodeboot render` of all roles, which is what Terraform's caller runs.
//!
//! Target (issue 2): a whole render as a process under 10 ms.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use nodeboot::operator::env;
use nodeboot::operator::render::{self, USER_DATA_LIMIT};
use nodeboot::shared::role::Role;

const RUNS: usize = 200;

fn main() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let example = repo.join("environments/example.tfvars");
    let out = tempfile::tempdir().unwrap();
    let bin = env!("CARGO_BIN_EXE_nodeboot");

    let rows = [
        (
            "load + validate example env (in-process)",
            measure(|| {
                env::load(&example).unwrap();
            }),
        ),
        ("render all roles (in-process, no I/O)", {
            let loaded = env::load(&example).unwrap();
            measure(|| {
                for role in Role::ALL {
                    std::hint::black_box(render::render_role(&loaded.env, role, USER_DATA_LIMIT));
                }
            })
        }),
        ("process: nodeboot --version", measure(|| run(bin, &["--version"]))),
        (
            "process: nodeboot render (all roles)",
            measure(|| {
                run(
                    bin,
                    &[
                        "render",
                        "--env",
                        example.to_str().unwrap(),
                        "--out",
                        out.path().to_str().unwrap(),
                    ],
                )
            }),
        ),
    ];

    println!("{:<45} {:>10} {:>10} {:>10}", "benchmark", "p50", "p99", "max");
    for (name, mut samples) in rows {
        samples.sort();
        let pct = |p: f64| samples[((samples.len() - 1) as f64 * p) as usize];
        println!(
            "{:<45} {:>10} {:>10} {:>10}",
            name,
            fmt(pct(0.5)),
            fmt(pct(0.99)),
            fmt(*samples.last().unwrap())
        );
    }
    println!("({RUNS} runs each; target: a whole render as a process under 10 ms)");
}

fn measure(mut f: impl FnMut()) -> Vec<Duration> {
    f(); // warm caches
    (0..RUNS)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed()
        })
        .collect()
}

fn run(bin: &str, args: &[&str]) {
    let status = Command::new(bin)
        .args(args)
        .env("NODEBOOT_LOG", "warn")
        .output()
        .unwrap()
        .status;
    assert!(status.success(), "{bin} {args:?} failed");
}

fn fmt(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}
