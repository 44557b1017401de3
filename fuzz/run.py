#!/usr/bin/env python3
"""Runs every fuzz target and prints a table: target, executions, seconds,
findings.

    python3 fuzz/run.py                     # each target to 1,000,000 executions
    python3 fuzz/run.py --runs 20000        # a shorter run
    python3 fuzz/run.py --seconds 15        # each target for 15 s (CI: tests/run)
    python3 fuzz/run.py --targets env_file,sync_listing

Builds the targets once with cargo-fuzz (`cargo fuzz build -O`, AddressSanitizer
on; on a stable toolchain with RUSTC_BOOTSTRAP=1, since cargo-fuzz passes
-Z flags), then runs each binary from fuzz/seeds/<target> plus the working
corpus fuzz/corpus/<target> (not committed; it grows as libFuzzer finds new
paths). A crash, leak, timeout or out-of-memory input lands in
fuzz/artifacts/<target>/ and counts as a finding; copy it to
fuzz/regressions/<target>/ so the normal suite replays it
(tests/fuzz_corpus.rs). Exits 1 when any target had a finding.
"""

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

FUZZ = Path(__file__).resolve().parent
TARGETS = [
    "env_file",
    "secret_envelope",
    "imds_answers",
    "state_files",
    "sync_listing",
    "sync_index",
    "backup_envelope",
    "etcd_wal",
]
TRIPLE = "x86_64-unknown-linux-gnu"


def cargo_env():
    env = dict(os.environ)
    version = subprocess.run(["rustc", "--version"], capture_output=True, text=True).stdout
    if "nightly" not in version:
        # cargo-fuzz passes -Zsanitizer and friends; a stable rustc takes them
        # only with RUSTC_BOOTSTRAP=1 (measured with rustc 1.95).
        env["RUSTC_BOOTSTRAP"] = "1"
    return env


def build(targets, env):
    """`cargo fuzz build` takes one target or none (= all of them)."""
    for one in [[]] if sorted(targets) == sorted(TARGETS) else [[t] for t in targets]:
        cmd = ["cargo", "fuzz", "build", "-O", "--target", TRIPLE, *one]
        print("+ " + " ".join(cmd), file=sys.stderr)
        subprocess.run(cmd, cwd=FUZZ, env=env, check=True)


def binary(target):
    base = Path(os.environ.get("CARGO_TARGET_DIR", FUZZ / "target"))
    return base / TRIPLE / "release" / target


def run(target, runs, seconds):
    corpus = FUZZ / "corpus" / target
    artifacts = FUZZ / "artifacts" / target
    corpus.mkdir(parents=True, exist_ok=True)
    artifacts.mkdir(parents=True, exist_ok=True)
    before = set(artifacts.iterdir())
    limit = [f"-max_total_time={seconds}"] if seconds else [f"-runs={runs}"]
    cmd = [
        str(binary(target)),
        *limit,
        "-timeout=10",
        "-rss_limit_mb=2048",
        "-print_final_stats=1",
        f"-artifact_prefix={artifacts}/",
        str(corpus),
        str(FUZZ / "seeds" / target),
    ]
    start = time.monotonic()
    done = subprocess.run(cmd, capture_output=True, text=True)
    elapsed = time.monotonic() - start
    log = done.stderr
    (FUZZ / "artifacts" / f"{target}.log").write_text(log)
    execs = re.findall(r"stat::number_of_executed_units:\s*(\d+)", log)
    executions = int(execs[-1]) if execs else 0
    found = sorted(set(artifacts.iterdir()) - before)
    findings = len(found) or (1 if done.returncode != 0 else 0)
    return executions, elapsed, findings, found


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1_000_000, help="executions per target")
    parser.add_argument("--seconds", type=int, default=0, help="time per target instead of --runs")
    parser.add_argument("--targets", default=",".join(TARGETS))
    parser.add_argument("--no-build", action="store_true")
    args = parser.parse_args()
    targets = [t for t in args.targets.split(",") if t]
    env = cargo_env()
    if not args.no_build:
        build(targets, env)
    rows = []
    for target in targets:
        executions, elapsed, findings, found = run(target, args.runs, args.seconds)
        rows.append((target, executions, elapsed, findings))
        for path in found:
            print(f"{target}: finding {path}", file=sys.stderr)
    print(f"| {'target':<16} | {'executions':>12} | {'seconds':>8} | {'exec/s':>8} | findings |")
    print(f"| {'-' * 16} | {'-' * 12} | {'-' * 8} | {'-' * 8} | -------- |")
    for target, executions, elapsed, findings in rows:
        rate = executions / elapsed if elapsed else 0
        print(f"| {target:<16} | {executions:>12,} | {elapsed:>8.1f} | {rate:>8,.0f} | {findings:>8} |")
    sys.exit(1 if any(r[3] for r in rows) else 0)


if __name__ == "__main__":
    main()
