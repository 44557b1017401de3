"""Issue 21, "a renewal also after the certificates have expired", in the
lab: the etcd members' certificates end (issued with the PKI's test-only
validity, `pki --test-validity-secs`), the members refuse each other (real
etcd 3.5: Go's TLS checks the end) and the cluster is down; the operator
renews and uploads; each node's secrets sync finds that no member answers
with a leader and that the members serve ended certificates, and restarts
its etcd with the new ones at once, without the lock (one at a time would
wait for ever: the rule needs a healthy cluster, the lock a leader). The
cluster is healthy again, every key there, and no node rebooted.

Before the fix every node waited for ever ("the rest of the cluster is not
healthy"): the renewal could not recover the very case it exists for.

Root only (see test_lab.py); the test has its own lab and tears it down.
"""

import subprocess
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import lab as lablib  # noqa: E402
from lab_proc import run  # noqa: E402
from test_lab import lab_session, put_keys, read_keys, wait_for  # noqa: E402

SYNC = "nodeboot-secrets-sync.service"
# Long enough for three nodes to boot and the keys to be written on two busy
# cores; the test fails saying so if the boot took longer.
VALIDITY_SECS = 240


def not_after(path):
    """The certificate's end, Unix seconds (openssl's -enddate, as a date)."""
    out = subprocess.run(
        ["openssl", "x509", "-noout", "-enddate", "-in", path], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    end = out.stdout.strip().removeprefix("notAfter=")
    return int(subprocess.run(["date", "-d", end, "+%s"], capture_output=True, text=True).stdout)


def etcd_log(lab, node):
    return lab.node_run(
        node, "journalctl", "--no-pager", "-b", "-o", "cat", "-u", "etcd-member.service"
    ).stdout


def test_members_whose_certificates_ended_restart_together_after_a_renewal_without_a_reboot():
    lablib.require_lab()
    with lab_session(f"t{uuid.uuid4().hex[:8]}", boot=False) as lab:
        secrets = lab.dir / "secrets"
        env, env_file = lab.operator_env(), lab.state["env_file"]
        members = len(lab.state["members"])
        names = [f"etcd-member-{m}" for m in range(members)] + ["etcd-client"]
        rotate = [a for n in names for a in ("--rotate", n)]
        run(
            [lab.bin, "pki", "--env", env_file, "--dir", secrets, *rotate,
             "--test-validity-secs", str(VALIDITY_SECS)],
            env=env,
        )  # fmt: skip
        ends = max(not_after(secrets / f"secure/etcd/member-{m}.crt") for m in range(members))
        run(
            [lab.bin, "secrets", "upload", "--env", env_file, "--dir", secrets, "secure"],
            env=env,
            timeout=120,
        )
        lab.boot_all()
        lab.wait_healthy(timeout=180)
        written = put_keys(lab, "/expiry", 50)
        assert time.time() < ends, "booted after the certificates ended: raise VALIDITY_SECS"
        nodes = list(lab.state["nodes"])
        # A file in /run (a tmpfs every boot starts empty) tells a reboot.
        for n in nodes:
            lab.node_run(n, "touch", "/run/lab-before-expiry")

        # They end: the members refuse each other's certificates (etcd's own
        # log says why), and no member answers with a leader.
        time.sleep(max(0.0, ends - time.time()) + 1)
        wait_for(
            "every member refuses the others' ended certificates",
            lambda: all("certificate has expired" in etcd_log(lab, n) for n in nodes),
            timeout=120,
        )

        # The operator renews what ends within 21 days (all of them) and uploads.
        run([lab.bin, "pki", "--env", env_file, "--dir", secrets, "--renew"], env=env)
        assert not_after(secrets / "secure/etcd/member-0.crt") > time.time() + 86400
        assert not lab.healthy(), "the cluster is down until the members restart"
        t = time.monotonic()
        run(
            [lab.bin, "secrets", "upload", "--env", env_file, "--dir", secrets, "secure"],
            env=env,
            timeout=120,
        )
        # The next pass (a restart of the sync starts one at once instead of
        # waiting out the 60 s interval) fetches them and restarts etcd.
        for node in nodes:
            lab.node_run(node, "systemctl", "restart", "--no-block", SYNC)
        healthy_after = lab.wait_healthy(timeout=300)
        print(
            f"\n[lab] certificates ended; healthy again {time.monotonic() - t:.1f} s after the "
            f"upload ({healthy_after:.1f} s of waiting for health)"
        )
        for m in range(members):
            assert read_keys(lab, "/expiry/", m) == written, f"member {m}"
        for node in nodes:
            journal = lab.unit_journal(node, SYNC)
            assert "without the lock" in journal, (
                journal[-3000:] + "\n--- etcd:\n" + etcd_log(lab, node)[-3000:]
            )
        # No reboot: every machine ran throughout, its /run kept.
        for n in nodes:
            assert not lab.went_down(n), n
            kept = lab.node_run(n, "test", "-e", "/run/lab-before-expiry", check=False)
            assert kept.returncode == 0, n
