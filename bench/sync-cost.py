#!/usr/bin/env python3
"""The steady-state cost of the nodes' polling: what `sync manifests` and
`sync secrets` ask S3 and KMS for, per node per hour, and what that costs a
fleet at list prices.

    python3 bench/sync-cost.py [--passes 20] [--latency-nodes 8] [--changes 20]

One emulator (tests/bed/aws_server.py) and the example environment as `nodeboot
up` fills its bucket: `prereqs`, `pki`, `secrets upload common secure compute`,
`render` and `manifests upload` of the rendered static pods and add-ons. Two
nodes, an etcd node (member 0) and a compute node, each a root directory with
the node.json `render` wrote for its role, after its boot's `stage secrets`.

Requests are counted by the emulator (`/_bed/calls`, per action) over real
passes of the real binary (`sync ... --once`, one process per pass, so what a
pass remembers must be on disk as on a node): `--passes` idle passes of each
sync on each node, and one pass made as if an hour had passed since the last
listing (the listings the sync remembers are aged by an hour: a sync lists
every prefix at least once an hour); per hour = the idle pass times the
passes an hour holds at the rendered intervals (manifests 10 s, secrets
60 s), one of them the hourly one. Then one change (a new manifest in each
role's prefix through `manifests upload`, a new file in common/ through
`secrets upload`) and the one pass of each sync that picks it up.

Then the time for a change to reach every node: `--latency-nodes` compute
nodes run `sync manifests --interval N` side by side, started together (a
fleet restarted at once) and then staggered over one interval (a fleet booted
over time); `manifests upload` changes their prefix `--changes` times at
random phases, and the table gives the time from the upload's end until the
first and the last node hold the new file.

Prices: S3 Standard and KMS list prices in us-east-1 (see PRICES). Prints
tables; asserts nothing on time. Talks to 127.0.0.1 only. See bench/README.md.
"""

import argparse
import base64
import gzip
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BED = REPO / "tests/bed"
# The example environment; `--env` for a binary of another version.
ENV_FILE = REPO / "environments/example.tfvars"
REGION = "eu-west-1"
# The rendered intervals (src/shared/node_config.rs): manifests every 10 s,
# secrets every 60 s.
INTERVALS = {"manifests": 10, "secrets": 60}
HOURS_A_MONTH = 730
# USD per request, S3 Standard and KMS in us-east-1 (the public price lists:
# LIST is priced with PUT, COPY and POST; GET with SELECT and every other
# request, HEAD included, and S3 bills a 304 or 404 answer as the request it
# answers; KMS symmetric requests $0.03 per 10,000).
PRICES = {
    "LIST": 0.005 / 1000,
    "GET": 0.0004 / 1000,
    "HEAD": 0.0004 / 1000,
    "KMS Decrypt": 0.03 / 10000,
}
KINDS = {
    "ListObjectsV2": "LIST",
    "ListObjects": "LIST",
    "GetObject": "GET",
    "HeadObject": "HEAD",
    "Decrypt": "KMS Decrypt",
}
# A fleet of 1,000 nodes: the control plane and the workers.
FLEET = {"etcd": 3, "compute": 997}


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def nodeboot_binary():
    """NODEBOOT_BIN, else the debug build (`cargo build --locked` when missing)."""
    if os.environ.get("NODEBOOT_BIN"):
        return Path(os.environ["NODEBOOT_BIN"])
    target = Path(os.environ.get("CARGO_TARGET_DIR", "/var/cache/nodeboot/target"))
    binary = target / "debug/nodeboot"
    if not binary.is_file():
        log("no debug binary: cargo build --locked --bin nodeboot")
        subprocess.run(
            ["cargo", "build", "--locked", "--bin", "nodeboot"],
            cwd=REPO,
            check=True,
            env={**os.environ, "CARGO_TARGET_DIR": str(target)},
        )
    return binary


class Server:
    """The emulator with stdin piped: it stops when the pipe closes."""

    def __init__(self):
        self.proc = subprocess.Popen(
            [sys.executable, str(BED / "aws_server.py"), "--port", "0", "--quiet"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        line = self.proc.stdout.readline().strip()
        if not line.startswith("READY "):
            self.stop()
            raise RuntimeError(f"aws_server.py said {line!r}, not READY")
        self.url = line.removeprefix("READY ")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def bed(self, method, path):
        req = urllib.request.Request(
            self.url + path, method=method, data=b"" if method == "POST" else None
        )
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.load(r)


class Bench:
    def __init__(self, binary, env_file, work, server):
        self.binary, self.env_file, self.work, self.server = binary, env_file, work, server
        self.env = {
            **os.environ,
            "AWS_ENDPOINT_URL": server.url,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_REGION": REGION,
            "AWS_CONFIG_FILE": "/dev/null",
            "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
            "AWS_EC2_METADATA_DISABLED": "true",
            "NODEBOOT_LOG": "warn",
        }
        self.env.pop("AWS_PROFILE", None)

    def run(self, *args, ok=(0,)):
        out = subprocess.run(
            [str(self.binary), *map(str, args)],
            cwd=self.work,
            env=self.env,
            capture_output=True,
            text=True,
        )
        if out.returncode not in ok:
            raise RuntimeError(
                f"nodeboot {' '.join(map(str, args))}: exit {out.returncode}\n{out.stderr}"
            )
        return out

    def calls(self):
        return self.server.bed("GET", "/_bed/calls")

    def reset(self):
        self.server.bed("POST", "/_bed/calls/reset")

    # --- the bucket, as `nodeboot up` fills it --------------------------------

    def fill_bucket(self):
        self.run("prereqs", "--env", self.env_file)
        self.run("pki", "--env", self.env_file)
        self.run("secrets", "upload", "--env", self.env_file, "common", "secure", "compute")
        self.run("render", "--env", self.env_file, "--out", self.work / "out")
        self.upload_manifests()

    def upload_manifests(self):
        self.run("manifests", "upload", "--env", self.env_file, self.work / "out/manifests")

    def manifests_dir(self, role):
        return self.work / "out/manifests" / role

    # --- nodes ----------------------------------------------------------------

    def node(self, role, name=None):
        root = self.work / (name or role)
        config = rendered_node_json(self.work / "out", role)
        # The add-ons' reload would start a unit on this machine: a no-op here.
        for synced in config.get("synced", []):
            synced["reload"] = ["true"]
        (root / "etc/nodeboot").mkdir(parents=True)
        (root / "etc/nodeboot/node.json").write_text(json.dumps(config))
        if role == "etcd":
            claim = {
                "member": 0,
                "instance_id": "i-0123456789abcdef0",
                "zone": "eu-west-1a",
                "volume_id": "vol-0",
                "device_name": "/dev/xvdf",
                "eni_id": "eni-0",
                "eni_ip": "10.80.10.10",
                "eni_mac": "02:00:00:00:00:01",
            }
            (root / "run/nodeboot").mkdir(parents=True)
            (root / "run/nodeboot/claim.json").write_text(json.dumps(claim))
        self.run("stage", "--root", root, "secrets")
        return root

    def sync_once(self, root, what):
        # A failed reader restart (there are none here) or a refused pass
        # still counts its requests; the tables say what each pass asked.
        return self.run("sync", "--root", root, what, "--once", ok=(0, 4, 16))


def rendered_node_json(out, role):
    """node.json exactly as `nodeboot render` put it into <role>.ign."""
    ign = out / f"{role}.full.ign"
    if not ign.exists():
        ign = out / f"{role}.ign"
    files = json.loads(ign.read_text())["storage"]["files"]
    entry = next(f for f in files if f["path"] == "/etc/nodeboot/node.json")
    header, _, data = entry["contents"]["source"].partition(",")
    raw = (
        base64.b64decode(data)
        if header.endswith(";base64")
        else urllib.parse.unquote_to_bytes(data)
    )
    if entry["contents"].get("compression") == "gzip":
        raw = gzip.decompress(raw)
    return json.loads(raw)


def by_kind(calls):
    """Calls per action -> requests per kind (other actions under their own name)."""
    out = {}
    for action, n in calls.items():
        kind = KINDS.get(action, action)
        out[kind] = out.get(kind, 0) + n
    return out


def cost(kinds):
    """USD for these requests; an action without a price is named, never dropped."""
    unpriced = [k for k in kinds if k not in PRICES]
    if unpriced:
        raise RuntimeError(f"no price for {unpriced}: add it to PRICES")
    return sum(PRICES[k] * n for k, n in kinds.items())


# --- measurements ---------------------------------------------------------------


# Where a sync keeps what its next pass may trust of each prefix (`poll`,
# beside its record): the static pods' and add-ons' on disk, the secrets' in
# /run. Binaries before the index keep nothing there.
REMEMBERED = {"manifests": "var/lib/nodeboot/sync", "secrets": "run/nodeboot"}


def age_remembered(root, what, seconds):
    """Makes every listing the sync remembers `seconds` older, as if that
    much time had passed since it listed."""
    for path in (root / REMEMBERED[what]).glob("*.listings"):
        seen = json.loads(path.read_text())
        for prefix in seen.values():
            prefix["listed_at"] -= seconds
        path.write_text(json.dumps(seen))


def idle(bench, nodes, passes):
    """Requests per hour of each sync on each node, the bucket unchanged:
    `passes` idle passes, and one made an hour after the last listing (a
    sync lists every prefix at least once an hour, whatever its index says),
    which stands for one pass of each hour."""
    rows = {}
    for role, root in nodes.items():
        for what in INTERVALS:
            bench.sync_once(root, what)  # whatever the first pass does
            bench.reset()
            for _ in range(passes):
                bench.sync_once(root, what)
            per_pass = by_kind(bench.calls())
            age_remembered(root, what, 3600)
            bench.reset()
            bench.sync_once(root, what)
            hourly = by_kind(bench.calls())
            an_hour = 3600 / INTERVALS[what]
            rows[(role, what)] = {
                k: per_pass.get(k, 0) / passes * (an_hour - 1) + hourly.get(k, 0)
                for k in {*per_pass, *hourly}
            }
    return rows


def one_change(bench, nodes):
    """The requests of the pass that picks a change up, per node and sync."""
    rows = {}
    stamp = time.time_ns()
    for role in nodes:
        (bench.manifests_dir(role) / "bench-change.yaml").write_text(
            f"apiVersion: v1\nkind: Pod\nmetadata:\n  name: bench-{stamp}\n"
        )
    bench.upload_manifests()
    secret = bench.work / "secrets/example/common/bench-change"
    secret.write_text(f"changed {stamp}\n")
    bench.run("secrets", "upload", "--env", bench.env_file, "common/bench-change")
    for role, root in nodes.items():
        for what in INTERVALS:
            bench.reset()
            bench.sync_once(root, what)
            rows[(role, what)] = by_kind(bench.calls())
        config = json.loads((root / "etc/nodeboot/node.json").read_text())
        manifest = root / config["manifests"]["dir"].lstrip("/") / "bench-change.yaml"
        placed = root / "run/nodeboot/secrets/bench-change"
        for path in (manifest, placed):
            if not path.is_file():
                raise RuntimeError(f"{role}: the change did not reach {path} in one pass")
    return rows


def latency(bench, args, start):
    """Seconds from the end of `manifests upload` until the first and the
    last of the compute nodes holds the change. `start`: the nodes' syncs
    start `together` (a fleet restarted at once) or `staggered` evenly over
    one interval (a fleet booted over time)."""
    roots = [bench.node("compute", f"{start}-{i}") for i in range(args.latency_nodes)]
    config = rendered_node_json(bench.work / "out", "compute")
    files = [r / config["manifests"]["dir"].lstrip("/") / "bench-latency.yaml" for r in roots]
    procs = []
    for i, root in enumerate(roots):
        if start == "staggered" and i:
            time.sleep(args.latency_interval / len(roots))
        procs.append(
            subprocess.Popen(
                [
                    str(bench.binary),
                    "sync",
                    "--root",
                    str(root),
                    "manifests",
                    "--interval",
                    f"{args.latency_interval}s",
                ],
                env=bench.env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
    samples = []
    try:
        for k in range(args.changes + 1):
            body = f"apiVersion: v1\nkind: Pod\nmetadata:\n  name: latency-{k}\n"
            (bench.manifests_dir("compute") / "bench-latency.yaml").write_text(body)
            bench.upload_manifests()
            t0 = time.monotonic()
            arrived = [None] * len(files)
            while None in arrived:
                for i, f in enumerate(files):
                    if arrived[i] is None and read(f) == body:
                        arrived[i] = time.monotonic() - t0
                if time.monotonic() - t0 > 20 * args.latency_interval + 60:
                    raise RuntimeError(f"change {k} never reached every node")
                time.sleep(0.005)
            if k > 0:  # the first one also waits for the nodes' first passes
                samples.append((min(arrived), max(arrived)))
            # The next change lands at a random phase of the nodes' passes.
            time.sleep(random.uniform(0, args.latency_interval))
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait()
    return samples


def read(path):
    try:
        return path.read_text()
    except (FileNotFoundError, UnicodeDecodeError):
        return None


# --- tables -----------------------------------------------------------------------


def table(head, rows):
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]

    def line(cells):
        return "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    print(line(head))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in rows:
        print(line(row))
    print()


def fmt(n):
    return f"{n:,.1f}" if n % 1 else f"{n:,.0f}"


def print_idle(rows):
    kinds = ["LIST", "GET", "HEAD", "KMS Decrypt"]
    others = sorted({k for r in rows.values() for k in r} - set(kinds))
    head = ["node", "sync", *kinds, *others, "USD/month per 1,000 nodes"]
    body = []
    per_role = {}
    for (role, what), per_hour in rows.items():
        month = cost(per_hour) * HOURS_A_MONTH * 1000
        total = per_role.setdefault(role, {})
        for k, n in per_hour.items():
            total[k] = total.get(k, 0) + n
        body.append(
            [
                role,
                f"{what} ({INTERVALS[what]} s)",
                *(fmt(per_hour.get(k, 0)) for k in kinds + others),
                f"{month:,.2f}",
            ]
        )
    for role, per_hour in per_role.items():
        month = cost(per_hour) * HOURS_A_MONTH * 1000
        body.append(
            [role, "both", *(fmt(per_hour.get(k, 0)) for k in kinds + others), f"{month:,.2f}"]
        )
    fleet = {}
    for role, n in FLEET.items():
        for k, v in per_role[role].items():
            fleet[k] = fleet.get(k, 0) + v * n / 1000
    label = " + ".join(f"{n} {r}" for r, n in FLEET.items())
    body.append(
        [
            f"fleet ({label})",
            "both",
            *(fmt(fleet.get(k, 0)) for k in kinds + others),
            f"{cost(fleet) * HOURS_A_MONTH * 1000:,.2f}",
        ]
    )
    print("Idle: requests per node per hour, and the monthly request cost of 1,000 such nodes")
    table(head, body)


def print_change(rows):
    kinds = ["LIST", "GET", "HEAD", "KMS Decrypt"]
    others = sorted({k for r in rows.values() for k in r} - set(kinds))
    head = ["node", "sync", *kinds, *others, "USD per change per 1,000 nodes"]
    body = [
        [role, what, *(fmt(r.get(k, 0)) for k in kinds + others), f"{cost(r) * 1000:,.4f}"]
        for (role, what), r in rows.items()
    ]
    print("One change: the requests of the pass that picks it up (a new manifest in the node's")
    print("prefix through `manifests upload`, a new file in common/ through `secrets upload`)")
    table(head, body)


def print_latency(runs, args):
    head = [
        "nodes started",
        "nodes",
        "interval s",
        "changes",
        "first node p50 s",
        "last node p50 s",
        "last node max s",
        "spread p50 s",
    ]
    body = []
    for start, samples in runs.items():
        firsts, lasts = [a for a, _ in samples], [b for _, b in samples]
        body.append(
            [
                start,
                args.latency_nodes,
                args.latency_interval,
                len(samples),
                f"{statistics.median(firsts):.2f}",
                f"{statistics.median(lasts):.2f}",
                f"{max(lasts):.2f}",
                f"{statistics.median(b - a for a, b in samples):.2f}",
            ]
        )
    print("A change to every node: seconds from the end of `manifests upload` until the first")
    print("and the last node holds it (spread: last minus first, per change)")
    table(head, body)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--passes", type=int, default=20, help="idle passes counted per sync and node"
    )
    parser.add_argument("--latency-nodes", type=int, default=8, help="0 skips the latency table")
    parser.add_argument("--latency-interval", type=float, default=2)
    parser.add_argument("--changes", type=int, default=20)
    parser.add_argument(
        "--env",
        default=ENV_FILE,
        help="the example environment file as the binary's version knows it (its commit's)",
    )
    args = parser.parse_args()
    binary = nodeboot_binary()
    log(f"binary {binary}")
    with tempfile.TemporaryDirectory(prefix="sync-cost-") as tmp:
        server = Server()
        try:
            bench = Bench(binary, Path(args.env).resolve(), Path(tmp), server)
            log("filling the bucket as `nodeboot up` does")
            bench.fill_bucket()
            nodes = {role: bench.node(role) for role in ("etcd", "compute")}
            log(f"counting {args.passes} idle passes per sync and node")
            idle_rows = idle(bench, nodes, args.passes)
            log("one change")
            change_rows = one_change(bench, nodes)
            runs = {}
            for start in ("together", "staggered") if args.latency_nodes > 0 else ():
                log(f"latency: {args.latency_nodes} nodes started {start}, {args.changes} changes")
                runs[start] = latency(bench, args, start)
        finally:
            server.stop()
    print_idle(idle_rows)
    print_change(change_rows)
    if runs:
        print_latency(runs, args)
    print(
        "Prices: S3 Standard, us-east-1: LIST $0.005 per 1,000, GET and HEAD $0.0004 per 1,000;"
        f" KMS $0.03 per 10,000 requests; {HOURS_A_MONTH} hours a month."
    )


if __name__ == "__main__":
    main()
