#!/usr/bin/env python3
"""Manifest sync against the test bed: `nodeboot sync manifests` and the seed's
`aws s3 sync` loop.

    python3 bench/secrets-sync.py [--interval 2] [--samples 20] [--idle-intervals 5]

Prints a table: change-propagation latency (p50, p99, max) from the moment a
changed object is in the bucket until the node's file has the new bytes, and
what an idle interval costs (S3 and KMS requests, CPU). Asserts nothing on
time. One emulator (tests/bed/aws_server.py), the example environment's key
and buckets made by `nodeboot prereqs`, 10 static-pod manifests plus the
one that changes. nodeboot reads its client-side envelopes; the aws CLI
reads the same manifests stored the seed's way (plain SSE-KMS), since it
cannot open an envelope. Talks to 127.0.0.1 only. See bench/README.md.
"""

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from attach import BED, REGION, REPO, Server, aws_cli, log, node_json, nodeboot_binary  # noqa: E402

ENV_FILE = REPO / "environments/example.tfvars"
PREFIX = "manifests/etcd/"
CHANGING = "bench.yaml"
STATIC_PODS = 10
CLK_TCK = os.sysconf("SC_CLK_TCK")


def content(k):
    """Version k of the changing manifest; every version has another size, so
    `aws s3 sync` (which compares size and time) sees every change."""
    pad = "x" * (1000 + k)
    return f"apiVersion: v1\nkind: Pod\nmetadata:\n  name: bench-{k}\n# {pad}\n".encode()


class Bed:
    def __init__(self, work):
        import boto3
        from botocore.config import Config

        self.server = Server([BED / "aws_server.py", "--port", 0, "--quiet"])
        self.env = {
            **os.environ,
            "AWS_ENDPOINT_URL": self.server.url,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_REGION": REGION,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
        }
        # The aws CLI needs path-style addressing; nodeboot does it by itself.
        config = work / "aws-config"
        config.write_text("[default]\ns3 =\n    addressing_style = path\n")
        self.env["AWS_CONFIG_FILE"] = str(config)
        self.env.pop("AWS_PROFILE", None)
        kw = dict(
            region_name=REGION,
            endpoint_url=self.server.url,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        self.s3 = boto3.client("s3", config=Config(s3={"addressing_style": "path"}), **kw)

    def bed(self, method, path):
        import urllib.request

        req = urllib.request.Request(
            self.server.url + path, method=method, data=b"" if method == "POST" else None
        )
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.load(r)


def cpu_seconds(pid):
    """User + system time of a process and of the children it has waited for."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(f) for f in fields[11:15]) / CLK_TCK


def wait_for(path, want, limit=120):
    start = time.monotonic()
    while True:
        try:
            if path.read_bytes() == want:
                return time.monotonic()
        except FileNotFoundError:
            pass
        if time.monotonic() - start > limit:
            raise RuntimeError(f"{path} never got the expected bytes")
        time.sleep(0.002)


def percentile(values, p):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered) + 0.5) - 1))]


def measure(bed, tool, put_version, target, proc, args):
    """Latency samples, then one idle window."""
    wait_for(target, content(0))
    latencies = []
    for k in range(1, args.samples + 1):
        # A random phase against the tool's own interval.
        time.sleep(random.uniform(0, args.interval))
        put_version(k)
        t0 = time.monotonic()
        latencies.append(wait_for(target, content(k)) - t0)
    time.sleep(args.interval)
    bed.bed("POST", "/_bed/calls/reset")
    cpu0, t0 = cpu_seconds(proc.pid), time.monotonic()
    time.sleep(args.interval * args.idle_intervals)
    cpu1, elapsed = cpu_seconds(proc.pid), time.monotonic() - t0
    calls = bed.bed("GET", "/_bed/calls")
    intervals = elapsed / args.interval
    return {
        "tool": tool,
        "p50": percentile(latencies, 50),
        "p99": percentile(latencies, 99),
        "max": max(latencies),
        "calls": {a: n / intervals for a, n in sorted(calls.items())},
        "cpu_ms": (cpu1 - cpu0) * 1000 / intervals,
    }


def run_nodeboot(bed, binary, work, args):
    local = work / "secrets/example" / PREFIX
    local.mkdir(parents=True, exist_ok=True)

    def upload(name, data):
        (local / name).write_bytes(data)
        subprocess.run(
            [binary, "secrets", "upload", "--force", "--env", ENV_FILE, PREFIX + name],
            cwd=work,
            env=bed.env,
            check=True,
            capture_output=True,
        )

    for i in range(STATIC_PODS):
        upload(f"pod-{i}.yaml", content(-1 - i))
    # Seal every version before the sync starts; the bench then only puts
    # ready objects, as an upload's last step does.
    versions = []
    for k in range(args.samples + 1):
        upload(CHANGING, content(k))
        obj = bed.s3.get_object(Bucket=BUCKET, Key=PREFIX + CHANGING)
        versions.append((obj["Body"].read(), obj["Metadata"]))

    def put_version(k):
        body, metadata = versions[k]
        bed.s3.put_object(Bucket=BUCKET, Key=PREFIX + CHANGING, Body=body, Metadata=metadata)
        write_index(bed)

    put_version(0)
    root = work / "node"
    config = node_json(binary)
    config["manifests"]["interval_seconds"] = args.interval
    (root / "etc/nodeboot").mkdir(parents=True)
    (root / "etc/nodeboot/node.json").write_text(json.dumps(config))
    proc = subprocess.Popen(
        [binary, "sync", "--root", root, "manifests", "--interval", f"{args.interval}s"],
        env={**bed.env, "NODEBOOT_LOG": "warn"},
        stderr=subprocess.DEVNULL,
    )
    try:
        target = root / config["manifests"]["dir"].lstrip("/") / CHANGING
        return measure(bed, "nodeboot sync manifests", put_version, target, proc, args)
    finally:
        proc.terminate()
        proc.wait()


def run_aws_loop(bed, aws, work, args):
    for i in range(STATIC_PODS):
        put_plain(bed, f"pod-{i}.yaml", content(-1 - i))

    def put_version(k):
        put_plain(bed, CHANGING, content(k))

    put_version(0)
    target = work / "aws-manifests"
    target.mkdir()
    loop = (
        f"while :; do {aws} s3 sync --only-show-errors s3://{BUCKET}/{PREFIX} {target}; "
        f"sleep {args.interval}; done"
    )
    # Its own process group, so stopping it stops the aws CLI it runs too.
    proc = subprocess.Popen(
        ["bash", "-c", loop], env=bed.env, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        return measure(bed, "aws s3 sync loop (seed)", put_version, target / CHANGING, proc, args)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait()


def write_index(bed):
    """What an upload does last: the prefix's index (src/shared/secrets/index.rs),
    written here from its description, after the object. Nodes poll it and
    list the prefix when it changed."""
    listed = bed.s3.list_objects_v2(Bucket=BUCKET, Prefix=PREFIX).get("Contents", [])
    objects = sorted(
        (
            {"key": o["Key"], "etag": o["ETag"], "size": o["Size"]}
            for o in listed
            if o["Key"].rsplit("/", 1)[-1] != ".nodeboot-index"
        ),
        key=lambda o: o["key"],
    )
    index = {
        "format": 1,
        "generation": f"{time.time_ns()}-{random.getrandbits(64):016x}",
        "objects": objects,
    }
    bed.s3.put_object(
        Bucket=BUCKET,
        Key=PREFIX + ".nodeboot-index",
        Body=json.dumps(index).encode(),
        Metadata={"nodeboot-index": "1"},
    )


def put_plain(bed, name, data):
    """The seed's way: S3 server-side encryption under the KMS key."""
    bed.s3.put_object(
        Bucket=BUCKET,
        Key=PREFIX + name,
        Body=data,
        ServerSideEncryption="aws:kms",
        SSEKMSKeyId="alias/example-nodeboot",
    )


def print_table(rows, args):
    def kinds(calls, kms):
        picked = {a: n for a, n in calls.items() if (a in KMS_ACTIONS) == kms}
        total = sum(picked.values())
        detail = ", ".join(f"{a} {n:.2f}" for a, n in picked.items() if n >= 0.005)
        return f"{total:.2f}" + (f" ({detail})" if detail else "")

    head = [
        "tool",
        "p50 s",
        "p99 s",
        "max s",
        "S3 req/interval",
        "KMS req/interval",
        "CPU ms/interval",
    ]
    body = [
        [
            r["tool"],
            f"{r['p50']:.2f}",
            f"{r['p99']:.2f}",
            f"{r['max']:.2f}",
            kinds(r["calls"], kms=False),
            kinds(r["calls"], kms=True),
            f"{r['cpu_ms']:.0f}",
        ]
        for r in rows
    ]
    widths = [max(len(row[i]) for row in [head, *body]) for i in range(len(head))]

    def line(cells):
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    print(
        f"interval {args.interval} s, {args.samples} changes per tool, "
        f"{STATIC_PODS + 1} manifests, idle cost over {args.idle_intervals} intervals"
    )
    print(line(head))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in body:
        print(line(row))


KMS_ACTIONS = {"Decrypt", "GenerateDataKey", "DescribeKey", "Encrypt"}
BUCKET = "example-nodeboot-secrets-eu-west-1"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--interval", type=int, default=2, help="seconds between passes")
    parser.add_argument("--samples", type=int, default=20, help="changes timed per tool")
    parser.add_argument("--idle-intervals", type=int, default=5)
    parser.add_argument("--tools", default="nodeboot,aws")
    args = parser.parse_args()
    binary = nodeboot_binary()
    aws = aws_cli() if "aws" in args.tools else None
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        bed = Bed(work)
        try:
            out = subprocess.run(
                [binary, "prereqs", "--env", ENV_FILE], env=bed.env, capture_output=True, text=True
            )
            if out.returncode != 0:
                raise RuntimeError(f"prereqs: {out.stderr}")
            if "nodeboot" in args.tools:
                log("timing nodeboot sync manifests")
                rows.append(run_nodeboot(bed, binary, work, args))
            if "aws" in args.tools:
                log("timing the aws s3 sync loop")
                rows.append(run_aws_loop(bed, aws, work, args))
        finally:
            bed.server.stop()
    print_table(rows, args)


if __name__ == "__main__":
    main()
