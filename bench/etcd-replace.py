#!/usr/bin/env python3
"""Replacing a dead etcd node in the lab: nodeboot's boot and the seed's way.

    sudo python3 bench/etcd-replace.py [--runs 3] [--attach-delay-ms 1000]
                                       [--shutdown-delay-ms 3000] [--seed-interval 5]
                                       [--seed-timeout 30] [--rows all]

Each run builds a lab (tests/lab: three nodes in network namespaces, real
etcd, the emulator with the given delays), writes keys, kills the node of
member 0 and boots a replacement in its zone. It measures the time from the
replacement's launch to a healthy cluster (`etcdctl endpoint health` at every
member) and counts the AWS API calls of the replacement's boot: the calls
are reset (POST /_bed/calls/reset) before the launch, and the lab's own
calls (RunInstances, EC2's hot-plug looking at attachments) are left out.
Prints a table; asserts nothing on time.

The rows:
  nodeboot, stopped:     the dead instance is stopped (`stop-instances
                         --force`: it keeps its volume and ENI, as a crashed
                         or impaired instance does); the attach stage
                         detaches them from it and claims them.
  nodeboot, terminated:  the autoscaling group terminates it; EC2 detaches
                         both after --shutdown-delay-ms.
  seed, terminated / stopped: the attach stage replaced by the seed's way,
                         bench/seed-attach.sh (a rebuild of the seed's bash +
                         aws CLI loop: poll every --seed-interval seconds for
                         an `available` volume, one more describe per
                         candidate, attach without waiting; see the script).
                         It never detaches anything, so with a stopped
                         holder it polls until --seed-timeout (the seed
                         polled forever).
Both ways then run nodeboot's mount and etcd stages: only the claim differs.
The seed's script must reach EC2 and IMDS on 127.0.0.1, so it runs beside
the node, in the host's network namespace, with a second IMDS double on
127.0.0.1 serving the node's identity.

Root (the lab's namespaces, loop devices, mounts). Talks to 127.0.0.1 and
the lab's own namespaces only. See tests/lab/README.md.
"""

import argparse
import json
import os
import statistics
import sys
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests/lab"))
import lab as lablib  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import lab_ec2  # noqa: E402
import lab_proc  # noqa: E402
from attach import SHORT, aws_cli, log  # noqa: E402

SEED = REPO / "bench/seed-attach.sh"
ROWS = {
    "nodeboot-stopped": ("nodeboot", "stop"),
    "nodeboot-terminated": ("nodeboot", "terminate"),
    "seed-terminated": ("seed", "terminate"),
    "seed-stopped": ("seed", "stop"),
}


def prefer_release_binary():
    """The release build when it has the lab's commands (closer to a node's
    binary than the debug build), else the lab's choice."""
    if os.environ.get("NODEBOOT_BIN"):
        return
    target = Path(os.environ.get("CARGO_TARGET_DIR", "/var/cache/nodeboot/target"))
    release = target / "release/nodeboot"
    if release.is_file() and all(
        lab_proc.run([release, *a], check=False).returncode == 0
        for a in (["pki", "--help"], ["stage", "etcd", "--help"])
    ):
        os.environ["NODEBOOT_BIN"] = str(release)


def seed_attach(interval, timeout):
    """An attach step for Lab.boot: bench/seed-attach.sh, then the claim.json
    the later stages read (the glue the seed had between its units)."""

    def attach(lab, node):
        n = lab.node(node)
        imds = lab_proc.spawn(
            [
                sys.executable,
                REPO / "tests/bed/imds.py",
                "--listen",
                "127.0.0.1:0",
                "--identity",
                Path(n["dir"]) / "imds-identity.json",
            ],
            log=Path(n["dir"]) / "seed-imds.log",
            stdout=Path(n["dir"]) / "seed-imds.ready",
        )
        try:
            url = wait_ready(Path(n["dir"]) / "seed-imds.ready")
            env = {
                **os.environ,
                "AWS_ENDPOINT_URL": lab.state["aws"]["url"],
                "AWS_EC2_METADATA_SERVICE_ENDPOINT": url,
                "AWS_ACCESS_KEY_ID": "testing",
                "AWS_SECRET_ACCESS_KEY": "testing",
                "AWS_CLI": str(aws_cli()),
            }
            cmd = [
                "bash",
                SEED,
                "attach",
                "--root",
                n["root"],
                "--interval",
                interval,
                "--timeout",
                timeout,
            ]
            out = lab_proc.run(cmd, check=False, env=env, timeout=timeout + 120)
            with open(Path(n["dir"]) / "boot.log", "a") as f:
                f.write(f"== seed-attach.sh attach: exit {out.returncode}\n{out.stderr}")
            if out.returncode != 0:
                raise lablib.LabError(
                    (out.stderr.strip().splitlines() or ["?"])[-1].removeprefix("seed-attach: ")
                )
        finally:
            lab_proc.kill(imds)
        seed = dict(
            line.split("=", 1)
            for line in (Path(n["root"]) / "run/seed-attach.env").read_text().split()
        )
        member = lab.member(member=int(seed["MEMBER"]))
        claim = {
            "member": member["member"],
            "instance_id": n["instance_id"],
            "zone": n["zone"],
            "volume_id": seed["VOLUME_ID"],
            "device_name": "/dev/xvdf",
            "eni_id": seed["ENI_ID"],
            "eni_ip": member["eni_ip"],
            "eni_mac": member["eni_mac"],
        }
        # Into the node's own /run (its machine's tmpfs): its attach unit
        # waits for this file (tests/lab/lab_node.py, wait_for_claim).
        claim_file = lab.node_path(node, "/run/nodeboot/claim.json")
        claim_file.parent.mkdir(parents=True, exist_ok=True)
        lablib.write_json(claim_file, claim)

    return attach


def wait_ready(path, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = path.read_text() if path.exists() else ""
        if text.startswith("READY ") and text.endswith("\n"):
            return text.split(" ", 1)[1].strip()
        time.sleep(0.02)
    raise lablib.LabError(f"the seed's IMDS double did not get ready ({path})")


def one_run(args, row):
    way, how = ROWS[row]
    name = f"b{uuid.uuid4().hex[:8]}"
    lab = None
    try:
        lab = lablib.Lab.up(
            name, attach_delay_ms=args.attach_delay_ms, shutdown_delay_ms=args.shutdown_delay_ms
        )
        for i in range(20):
            lab.etcdctl("put", f"/bench/{i}", "x" * 100)
        victim = lab.node_of_member(0)
        zone = lab.node(victim)["zone"]
        lab.kill_node(victim, how)
        lab.wait_healthy(members=[1, 2])
        url = lab.state["aws"]["url"]
        lab_ec2.reset_calls(url)
        attach = seed_attach(args.seed_interval, args.seed_timeout) if way == "seed" else None
        started = time.monotonic()
        try:
            report = lab.boot_node(zone, attach=attach)
        except lablib.LabError as err:
            calls = getattr(err, "report", {}).get("api_calls", {})
            return {
                "ok": False,
                "why": str(err).splitlines()[0][:90],
                "seconds": time.monotonic() - started,
                "calls": calls,
            }
        etcd_to_healthy = lab.wait_healthy()
        total = time.monotonic() - started
        return {
            "ok": True,
            "seconds": total,
            # From discover done to attach done (systemd's timestamps; EC2's
            # hot-plug then overlaps the mount stage's wait for the device).
            "attach": report["seconds"]["nodeboot-attach"] - report["seconds"]["nodeboot-discover"],
            "etcd_to_healthy": etcd_to_healthy,
            # EC2's: the S3 and KMS calls of the secrets stage and of every
            # node's manifest sync are not the replacement's claim.
            "calls": {
                a: c for a, c in report["api_calls"].items() if a not in lab_ec2.S3_KMS_ACTIONS
            },
        }
    finally:
        lab = lab or lablib.Lab(name)
        if (lablib.STATE_ROOT / name / "state.json").exists():
            lab = lablib.Lab.load(name)
        lab.down()


def by_action(calls):
    return ", ".join(f"{SHORT.get(k, k)} {v}" for k, v in sorted(calls.items()) if v)


def summarise(row, runs):
    ok = [r for r in runs if r["ok"]]

    def med(key, rs):
        return f"{statistics.median(r[key] for r in rs):.2f}" if rs else "-"

    calls = ok[len(ok) // 2]["calls"] if ok else runs[0]["calls"]
    way, how = ROWS[row]
    failed = [r for r in runs if not r["ok"]]
    result = (
        "ok"
        if not failed
        else f"{len(failed)}/{len(runs)} never healthy: {failed[0]['why']} "
        f"({failed[0]['seconds']:.0f}s)"
    )
    return [
        way,
        {"stop": "stopped", "terminate": "terminated"}[how],
        med("seconds", ok),
        med("attach", ok),
        med("etcd_to_healthy", ok),
        str(sum(v for v in calls.values() if v > 0)),
        by_action(calls),
        result,
    ]


def print_table(rows, args):
    head = [
        "way",
        "old instance",
        "launch->healthy s",
        "attach s",
        "etcd->healthy s",
        "API calls",
        "by action",
        "result",
    ]
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]

    def line(cells):
        return "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    print(line(head))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows:
        print(line(r))
    print()
    print(
        f"Medians of {args.runs} run(s); emulator --attach-delay-ms {args.attach_delay_ms} "
        f"--shutdown-delay-ms {args.shutdown_delay_ms}; seed: bench/seed-attach.sh polling every "
        f"{args.seed_interval}s, given up after {args.seed_timeout}s "
        "(the seed polled every 120s, forever)."
    )
    print(
        "launch->healthy: RunInstances of the replacement to `endpoint health` OK at all "
        "three members; "
        "attach: the discover unit's end to the attach unit's (systemd's timestamps); "
        "etcd->healthy: from etcd's start."
    )
    print(
        "API calls: the replacement's own EC2 calls (its boot's units, or the seed's script), "
        "from GET /_bed/calls."
    )
    print(", ".join(f"{v} {k}" for k, v in SHORT.items()))
    print(f"binary: {lablib.nodeboot_binary()}")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--attach-delay-ms", type=int, default=1000)
    p.add_argument("--shutdown-delay-ms", type=int, default=3000)
    p.add_argument("--seed-interval", type=int, default=5)
    p.add_argument("--seed-timeout", type=int, default=30)
    p.add_argument("--rows", default="all", help=f"comma-separated, of {', '.join(ROWS)}")
    args = p.parse_args()
    rows = list(ROWS) if args.rows == "all" else args.rows.split(",")
    if not set(rows) <= set(ROWS):
        p.error(f"--rows: of {', '.join(ROWS)}")
    prefer_release_binary()
    problems = lablib.preflight()
    if problems:
        sys.exit("the lab cannot run here:\n  " + "\n  ".join(problems))
    table = []
    for row in rows:
        runs = []
        for i in range(args.runs):
            log(f"{row}: run {i + 1}/{args.runs}")
            runs.append(one_run(args, row))
            log(f"  {json.dumps(runs[-1])}")
        table.append(summarise(row, runs))
    print_table(table, args)


if __name__ == "__main__":
    main()
