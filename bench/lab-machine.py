#!/usr/bin/env python3
"""What a lab machine costs: its own root (an overlay over the cached root,
against a plain copy) and the boot of systemd 252 to `running`.

    sudo python3 bench/lab-machine.py [--runs 5]

Each run gives a bare machine (tests/lab/lab_nspawn.py, private network)
its own root both ways, boots the overlay one and times `systemd-nspawn
--boot` until `systemctl is-system-running --wait` answers, then removes
it. The cached root is built first if missing (its build time is in the
table when it was built now, else read from its .complete file). Prints a
table of medians; asserts nothing on time. Root.
"""

import argparse
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests/lab"))
import lab_nspawn  # noqa: E402
import lab_proc  # noqa: E402
import lab_root  # noqa: E402


def du(path):
    total = 0
    for p in Path(path).rglob("*"):
        if p.is_file() and not p.is_symlink():
            total += p.stat().st_size
    return total


def one_run():
    name = f"b{uuid.uuid4().hex[:8]}-m"
    c = lab_nspawn.Container(name, lab_nspawn.MACHINES / name)
    row = {}
    try:
        t = time.monotonic()
        c.prepare()
        row["own root: overlay (s)"] = time.monotonic() - t
        with tempfile.TemporaryDirectory(dir=lab_root.CACHE) as tmp:
            t = time.monotonic()
            # cp -a, as a node's copy would be made (device nodes stay nodes).
            lab_proc.run(["cp", "-a", lab_root.path(), Path(tmp) / "root"], timeout=600)
            row["own root: copy (s)"] = time.monotonic() - t
        t = time.monotonic()
        c.boot()
        state = c.wait_running()
        row["boot to running (s)"] = time.monotonic() - t
        if state != "running":
            raise SystemExit(f"machine {name} booted to {state!r}")
        row["overlay upper after boot (MB)"] = du(c.dir / "upper") / 1e6
    finally:
        c.remove()
        shutil.rmtree(c.dir, ignore_errors=True)
    return row


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=5)
    args = p.parse_args()
    t = time.monotonic()
    built_now = not (lab_root.path() / ".complete").exists()
    root = lab_root.ensure()
    build = (
        f"{time.monotonic() - t:.0f} s (now)"
        if built_now
        else (root / ".complete").read_text().strip() + " (cached)"
    )
    rows = [one_run() for _ in range(args.runs)]
    print(f"cached root {root}: {du(root) / 1e6:.0f} MB, {build}")
    print(f"| measure | median | min | max | runs {args.runs} |")
    print("|---|---|---|---|---|")
    for key in rows[0]:
        values = [r[key] for r in rows]
        print(
            f"| {key} | {statistics.median(values):.3f} | {min(values):.3f} | {max(values):.3f} | |"
        )


if __name__ == "__main__":
    main()
