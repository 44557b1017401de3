#!/usr/bin/env python3
"""A newcomer's first run: fresh clone -> the README's commands, timed.

    python3 bench/first-run.py [--test build|full|none] [--release] [--rev REV] [--keep]

Clones the repository (committed state of REV, default HEAD) into a fresh
directory, fetches the crates (into the usual cargo home, untimed: the
crates are reused, the build is not), then runs with a fresh, empty
CARGO_TARGET_DIR:

1. the README's first command, exactly as written in its first `sh` block
   (the first render);
2. the README's test command: by default only its build
   (`cargo test --locked --all-targets --no-run`, the dev-profile build the
   suite runs on), `--test full` runs the command itself (needs root, takes
   long) with every cache the suite fills empty too, as on a new machine:
   the fuzz build's target directory (NODEBOOT_FUZZ_TARGET_DIR) and the
   downloaded etcd and lab machines' Debian root (NODEBOOT_CACHE_DIR);
   what tests/setup installs system-wide (Debian packages, pip packages,
   cargo-fuzz, the musl target) stays installed; `--test none` skips it;
3. with `--release`, the README's former first command
   (`cargo run --release -- render ...`, the AWS SDK in release with LTO),
   for comparison.

Prints a table: wall time, CPU time (user + sys of the whole tree: what
the step costs whatever else the machine runs), the largest single process's peak RSS
(`/usr/bin/time -v`), and the peak of the whole process tree's RSS, sampled
every 0.2 s from /proc (two rustc processes at once count together).
Asserts nothing on time. The load average at the start of each step is
printed: the figures depend on what else the machine runs.
"""

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PAGE = os.sysconf("SC_PAGE_SIZE")
TEST_BUILD = "cargo test --locked --all-targets --no-run"
OLD_FIRST = "cargo run --release -- render --env environments/example.tfvars --out out/example"


def readme_commands(readme: Path) -> list[str]:
    """The commands of the README's first ```sh block (comments left out)."""
    match = re.search(r"```sh\n(.*?)```", readme.read_text(), re.S)
    if not match:
        sys.exit(f"{readme}: no ```sh block")
    return [line.strip() for line in match.group(1).splitlines() if line.strip() and not line.lstrip().startswith("#")]


def tree_rss(root: int) -> int:
    """Bytes resident in `root` and all its descendants now."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        try:
            total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE
        except OSError:
            pass
        todo.extend(children.get(pid, []))
    return total


def timed(command: str, cwd: Path, env: dict) -> dict:
    """Runs `command` under /usr/bin/time -v while sampling the tree's RSS."""
    report = cwd / ".first-run-time"
    load = os.getloadavg()[0]
    start = time.monotonic()
    proc = subprocess.Popen(
        ["/usr/bin/time", "-v", "-o", str(report), "bash", "-c", command],
        cwd=cwd,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    peak = [0]

    def sample():
        while proc.poll() is None:
            peak[0] = max(peak[0], tree_rss(proc.pid))
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, err = proc.communicate()
    wall = time.monotonic() - start
    sampler.join()
    text = report.read_text() if report.exists() else ""
    largest = re.search(r"Maximum resident set size \(kbytes\): (\d+)", text)
    cpu = sum(float(m) for m in re.findall(r"(?:User|System) time \(seconds\): ([\d.]+)", text))
    return {
        "command": command,
        "ok": proc.returncode == 0,
        "wall": wall,
        "largest": int(largest.group(1)) * 1024 if largest else 0,
        "cpu": cpu,
        "tree": peak[0],
        "load": load,
        "stderr": err,
    }


def fmt_wall(seconds: float) -> str:
    return f"{int(seconds // 60)} min {seconds % 60:04.1f} s"


def fmt_bytes(n: int) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--test", choices=["build", "full", "none"], default="build")
    parser.add_argument("--release", action="store_true", help="also time the former first command (release, LTO)")
    parser.add_argument("--rev", default="HEAD")
    parser.add_argument("--workdir", type=Path, default=Path("/var/cache/nodeboot"), help="where the clone and its target dir go")
    parser.add_argument("--keep", action="store_true", help="keep the clone and its target directory")
    args = parser.parse_args()

    # The commit measured, resolved now: HEAD may move while this runs.
    rev = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short=12", args.rev], capture_output=True, text=True, check=True
    ).stdout.strip()
    args.workdir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="first-run-", dir=args.workdir))
    rows = []
    try:
        clone = work / "nodeboot"
        subprocess.run(["git", "clone", "--quiet", "--no-hardlinks", str(REPO), str(clone)], check=True)
        subprocess.run(["git", "-C", str(clone), "checkout", "--quiet", "--detach", rev], check=True)
        # The tests read ../shared (the upstream Ignition schemas) beside the clone, as CI has it.
        if (REPO.parent / "shared").is_dir():
            shutil.copytree(REPO.parent / "shared", work / "shared", symlinks=True)
        env = dict(
            os.environ,
            CARGO_TARGET_DIR=str(work / "target"),
            NODEBOOT_FUZZ_TARGET_DIR=str(work / "fuzz-target"),
            NODEBOOT_CACHE_DIR=str(work / "cache"),
            CARGO_TERM_COLOR="never",
        )
        env.pop("RUSTFLAGS", None)
        subprocess.run(["cargo", "fetch", "--locked"], cwd=clone, env=env, check=True, stderr=subprocess.DEVNULL)

        commands = readme_commands(clone / "README.md")
        if len(commands) < 2:
            sys.exit("README's first sh block should hold the first command and the test command")
        steps = [("first render (cold)", commands[0])]
        if args.test == "build":
            steps.append((f"test build (of `{commands[1]}`)", TEST_BUILD))
        elif args.test == "full":
            steps.append(("test command", commands[1]))
        steps.append(("first render again (warm)", commands[0]))
        if args.release:
            steps.append(("former first command (release, LTO)", OLD_FIRST))

        for name, command in steps:
            print(f"== {name}: {command}", file=sys.stderr, flush=True)
            row = timed(command, clone, env)
            row["step"] = name
            rows.append(row)
            log = args.workdir / f"{work.name}-step{len(rows)}.log"
            log.write_text(row["stderr"])
            print(f"   {fmt_wall(row['wall'])}, output in {log}", file=sys.stderr, flush=True)
            if not row["ok"]:
                print(row["stderr"][-3000:], file=sys.stderr)
    finally:
        if args.keep:
            print(f"kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)

    empty = "fresh CARGO_TARGET_DIR" + (", fuzz target dir and download caches" if args.test == "full" else "")
    print(f"\nnodeboot {rev}, {os.cpu_count()} cores, {empty}, crates already downloaded\n")
    print("| step | command | wall | CPU (user+sys) | peak RSS, largest process | peak RSS, whole tree | load at start | ok |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(
            f"| {r['step']} | `{r['command']}` | {fmt_wall(r['wall'])} | {fmt_wall(r['cpu'])} | {fmt_bytes(r['largest'])} "
            f"| {fmt_bytes(r['tree'])} | {r['load']:.1f} | {'yes' if r['ok'] else 'NO'} |"
        )
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
