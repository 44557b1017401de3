"""Issue 21, "a renewal also after the certificates have expired", in the
lab: the etcd members' certificates end (issued with the PKI's test-only
validity, `pki --test-validity-secs`), and the members refuse each other's
new connections (real etcd 3.5: Go's TLS checks the end; etcd's log says
"certificate has expired"); the operator renews and uploads. The cluster is
healthy again, every key there, every member serving its new certificate,
and no node rebooted.

What real etcd 3.5.16 does here decides how: etcd reads its certificate
files again at every new TLS handshake (etcd PR 7829, "reload TLS
certificates for every client requests"), so the files the secrets sync
writes are served at once, the members accept each other again, and the
sync's restarts go one at a time under the lock as usual. The issue's
premise (every node waits for ever, because the rule asks the others over
TLS) does not hold against it; the sync's restart of every member at once
when none answers with a leader and they serve ended certificates
(`disruption::down_for_ended_certificates`) stays a fallback for an etcd
that does not reload, and the test prints which way was taken.

Root only (see test_lab.py); the test has its own lab and tears it down.
"""

import subprocess
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import lab as lablib  # noqa: E402
import lab_net  # noqa: E402
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


def served_end(lab, ip):
    """The end (Unix seconds) of the certificate etcd serves on ip:2379,
    from the router; None while nothing answers."""
    pki = lab.etcd_pki
    out = subprocess.run(
        [*lab_net.nsenter(lab.router), "openssl", "s_client", "-connect", f"{ip}:2379",
         "-CAfile", pki / "ca.crt", "-cert", pki / "client.crt", "-key", pki / "client.key"],
        input="", capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    begin = out.stdout.find("-----BEGIN CERTIFICATE-----")
    if begin < 0:
        return None
    end = subprocess.run(
        ["openssl", "x509", "-noout", "-enddate"], input=out.stdout[begin:],
        capture_output=True, text=True,
    )  # fmt: skip
    date = end.stdout.strip().removeprefix("notAfter=")
    return int(subprocess.run(["date", "-d", date, "+%s"], capture_output=True, text=True).stdout)


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
        together = [n for n in nodes if "without the lock" in lab.unit_journal(n, SYNC)]
        print(f"[lab] nodes that restarted etcd without the lock (the fallback): {together}")
        for m in range(members):
            ip = lab.member(member=m)["eni_ip"]
            wait_for(
                f"member {m} serves its new certificate",
                lambda ip=ip: (served_end(lab, ip) or 0) > time.time() + 86400,
                timeout=120,
            )
        # No reboot: every machine ran throughout, its /run kept.
        for n in nodes:
            assert not lab.went_down(n), n
            kept = lab.node_run(n, "test", "-e", "/run/lab-before-expiry", check=False)
            assert kept.returncode == 0, n
