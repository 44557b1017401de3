#!/usr/bin/env python3
"""`systemd-analyze security` exposure of every unit nodeboot renders.

    python3 bench/unit-security.py [--env environments/example.tfvars] [--verbose]

Renders the environment with the nodeboot binary (`nodeboot render`), takes
each role's units out of its Ignition config and scores them with the real
systemd-analyze, offline (`--offline=yes`: the unit file alone, nothing
loaded into the running manager). Prints one table: role, unit, exposure
(0 = locked down, 10 = unrestricted) and systemd's verdict. Asserts nothing;
tests/render.rs holds the ceilings each unit must stay under.
"""

import argparse
import base64
import gzip
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def nodeboot_binary():
    if os.environ.get("NODEBOOT_BIN"):
        return Path(os.environ["NODEBOOT_BIN"])
    target = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
    for profile in ("debug", "release"):
        if (target / profile / "nodeboot").exists():
            return target / profile / "nodeboot"
    subprocess.run(["cargo", "build", "--quiet"], cwd=REPO, check=True)
    return target / "debug/nodeboot"


def unit_files(config):
    """(name, text) of every unit the config writes: the gzipped files in
    /etc/systemd/system (how nodeboot ships them) and inline contents."""
    for f in config.get("storage", {}).get("files", []):
        if f["path"].startswith("/etc/systemd/system/"):
            data = base64.b64decode(f["contents"]["source"].split(",", 1)[1])
            if f["contents"].get("compression") == "gzip":
                data = gzip.decompress(data)
            yield f["path"].rsplit("/", 1)[1], data.decode()
    for unit in config.get("systemd", {}).get("units", []):
        if unit.get("contents"):
            yield unit["name"], unit["contents"]


def exposure(unit_path):
    """The overall exposure and verdict systemd-analyze prints last."""
    run = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", "--no-pager", str(unit_path)],
        capture_output=True,
        text=True,
        cwd=unit_path.parent,
    )
    for line in reversed(run.stdout.splitlines()):
        if "Overall exposure level" in line:
            score, verdict = line.rsplit(":", 1)[1].split()[:2]
            return float(score), verdict, run.stderr.strip()
    raise SystemExit(f"systemd-analyze security {unit_path}: no score\n{run.stdout}\n{run.stderr}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default=str(REPO / "environments/example.tfvars"))
    parser.add_argument("--verbose", action="store_true", help="print systemd-analyze's warnings")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="nodeboot-unit-security-") as tmp:
        out = Path(tmp) / "out"
        subprocess.run([nodeboot_binary(), "render", "--env", args.env, "--out", out], check=True)
        rows = []
        for ign in sorted(out.glob("*.ign")):
            if ign.name.endswith(".full.ign"):
                continue
            full = out / ign.name.replace(".ign", ".full.ign")
            config = json.loads((full if full.exists() else ign).read_text())
            role = ign.stem
            for unit, text in unit_files(config):
                if not unit.endswith(".service"):
                    continue
                path = Path(tmp) / role / unit
                path.parent.mkdir(exist_ok=True)
                path.write_text(text)
                score, verdict, warnings = exposure(path)
                rows.append((role, unit, score, verdict))
                if args.verbose and warnings:
                    print(f"{role}/{unit}: {warnings}", file=sys.stderr)
    print(f"| {'role':<8} | {'unit':<28} | exposure | verdict   |")
    print(f"| {'-' * 8} | {'-' * 28} | -------- | --------- |")
    for role, name, score, verdict in rows:
        print(f"| {role:<8} | {name:<28} | {score:8.1f} | {verdict:<9} |")


if __name__ == "__main__":
    main()
