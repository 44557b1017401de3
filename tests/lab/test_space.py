"""Issue 21's "space, alarms" in the lab (real systemd 252, real etcd 3.5):
a small quota (the environment's etcd_quota_bytes at its lowest, 256 MiB,
rendered into node.json and the etcd stage's etcd.env) is filled by one key
that keeps changing until etcd refuses a put with "database space
exceeded"; `nodeboot etcd status` shows the NOSPACE alarm and exits 30;
then, without an operator, each node's backup service (its space
maintenance after every poll, 10 s as rendered) compacts, defragments and
disarms: a put succeeds again, the alarm is gone, every member is healthy.

The history of a changing key fills the quota, as a control plane's leases
and events do: compaction frees it, so an operator has nothing to delete.
(Live data that fills the quota is the case the service cannot fix: it says
so, and a human raises the quota or deletes keys.)

Root only, like every lab test; the test has its own lab and tears it down.
"""

import json
import os
import re
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import lab as lablib  # noqa: E402
import lab_net  # noqa: E402
from lab_proc import run  # noqa: E402
from test_backup import wait_for_backup  # noqa: E402

UNIT = "nodeboot-etcd-backup.service"
QUOTA = 256 * 1024 * 1024  # the smallest etcd_quota_bytes `validate` accepts
VALUE = "x" * 1_000_000  # under etcd's --max-request-bytes (1.5 MiB)
NOSPACE = "mvcc: database space exceeded"
BACK_WITHIN = 180  # seconds: a liveness bound, not a measure


@pytest.fixture
def cluster():
    lablib.require_lab()
    with lablib.session(prefix="q", boot=False) as lab:
        set_quota(lab, QUOTA)
        lab.boot_all()
        lab.wait_healthy()
        # The boot's first backup (one member, the bucket empty) is out of
        # the way before the fill: the next is an interval (15 min) away. A
        # backup running through the fill delays its node's maintenance
        # pass (the same loop), and every member's after it in the order,
        # by the backup's time: 91 s for 105 MB in one run here.
        wait_for_backup(lab, 1, timeout=120)
        yield lab


def set_quota(lab, quota):
    """The operator sets etcd_quota_bytes and renders again (before any node
    is launched: every node's Ignition config carries it)."""
    env_file = Path(lab.state["env_file"])
    text = re.sub(
        r"(?m)^etcd_quota_bytes\s*=.*$", f"etcd_quota_bytes = {quota}", env_file.read_text()
    )
    assert f"etcd_quota_bytes = {quota}" in text, text
    env_file.write_text(text)
    run([lab.bin, "validate", "--env", env_file])
    render = lab.dir / "render"
    run([lab.bin, "render", "--env", env_file, "--out", render])
    for role in lablib.ROLES:
        full = render / f"{role}.full.ign"
        if full.exists():
            os.replace(full, render / f"{role}.ign")


def put(lab, key, value):
    """etcdctl put, the value on stdin; the completed process."""
    pki = lab.etcd_pki
    cmd = [
        *lab_net.nsenter(lab.router),
        lablib.ETCDCTL,
        f"--endpoints={','.join(lab.endpoints())}",
        f"--cacert={pki / 'ca.crt'}",
        f"--cert={pki / 'client.crt'}",
        f"--key={pki / 'client.key'}",
        "--dial-timeout=2s",
        "--command-timeout=10s",
        "put",
        key,
    ]
    return run(cmd, check=False, timeout=30, env={**os.environ, "ETCDCTL_API": "3"}, input=value)


def fill_until_nospace(lab):
    """Overwrites /fill until a put fails for space; the number written."""
    for written in range(2 * QUOTA // len(VALUE)):
        out = put(lab, "/fill", VALUE)
        if out.returncode != 0:
            assert NOSPACE in out.stderr, f"put {written} failed, not for space: {out.stderr}"
            return written
    raise AssertionError(f"{2 * QUOTA} bytes written in a {QUOTA}-byte quota")


def alarms(lab):
    return lab.etcdctl("alarm", "list").stdout.strip()


def status(lab):
    return lab.operator(
        "etcd",
        "status",
        "--env",
        lab.state["env_file"],
        "--dir",
        lab.dir / "secrets",
        "--output",
        "json",
    )


def maintenance_lines(lab):
    out = []
    for node, n in lab.state["nodes"].items():
        if n["state"] == "running" and n["role"] == "etcd":
            out += [
                f"{node}: {line}"
                for line in lab.unit_journal(node, UNIT).splitlines()
                if "NOSPACE" in line
                or "defragmented" in line
                or "maintenance" in line
                or "space is back" in line
            ]
    return out


def test_a_full_quota_makes_etcd_read_only_and_the_maintenance_brings_writes_back(cluster):
    lab = cluster
    t0 = time.monotonic()
    written = fill_until_nospace(lab)
    full = time.monotonic()
    print(f"\nNOSPACE after {written} puts of {len(VALUE)} bytes, {full - t0:.1f}s")
    assert "NOSPACE" in alarms(lab)

    # etcd status shows the alarm, naming the member, and fails.
    seen = status(lab)
    assert seen.returncode == 30, (seen.stdout, seen.stderr)
    assert "NOSPACE" in seen.stdout + seen.stderr, (seen.stdout, seen.stderr)
    report = json.loads(seen.stdout)
    assert any("NOSPACE" in str(m.get("alarms")) for m in report["members"]), report

    # Nobody acts: the nodes' maintenance brings writes back.
    deadline = full + BACK_WITHIN
    while True:
        out = put(lab, "/after", "written")
        if out.returncode == 0:
            break
        assert NOSPACE in out.stderr or "alarm" in out.stderr.lower(), out.stderr
        assert time.monotonic() < deadline, (
            f"writes not back within {BACK_WITHIN}s: {out.stderr}\n"
            + "\n".join(maintenance_lines(lab))
        )
        time.sleep(1)
    back = time.monotonic()
    print(f"writes back {back - full:.1f}s after NOSPACE")
    print("\n".join(maintenance_lines(lab)))

    assert alarms(lab) == ""
    lab.wait_healthy(timeout=60)
    ok = status(lab)
    assert ok.returncode == 0, (ok.stdout, ok.stderr)
    assert lab.etcdctl("get", "/after", "--print-value-only").stdout.strip() == "written"
    lines = maintenance_lines(lab)
    assert any("etcd history is compacted" in line for line in lines), lines
    defragmented = {
        m.group(1) for line in lines if (m := re.search(r"defragmented etcd member (\S+):", line))
    }
    assert len(defragmented) == 3, lines
    assert any("space is back on every etcd member" in line for line in lines), lines
