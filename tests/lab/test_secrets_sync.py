"""Issue 12, "certificates renew without a reboot", in the lab: a renewed
etcd member certificate reaches its running node through the secrets sync
(`nodeboot-secrets-sync.service`, real systemd, the emulated S3 and KMS)
and restarts that node's etcd exactly once; the other members keep running;
no node reboots; the member then serves the new certificate.

Root only (see test_lab.py); each test has its own lab and tears it down.
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
from test_lab import lab_session, wait_for  # noqa: E402

SYNC = "nodeboot-secrets-sync.service"


def served_serial(lab, ip):
    """The serial of the certificate etcd serves on ip:2379 (from the
    router); None while nothing listens there (etcd restarting)."""
    pki = lab.etcd_pki
    out = subprocess.run(
        [*lab_net.nsenter(lab.router), "openssl", "s_client", "-connect", f"{ip}:2379",
         "-CAfile", pki / "ca.crt", "-cert", pki / "client.crt", "-key", pki / "client.key"],
        input="", capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    if "-----BEGIN CERTIFICATE-----" not in out.stdout:
        return None
    cert = out.stdout[out.stdout.find("-----BEGIN CERTIFICATE-----") :]
    serial = subprocess.run(
        ["openssl", "x509", "-noout", "-serial"], input=cert, capture_output=True, text=True
    )
    assert serial.returncode == 0, (out.stdout[-2000:], out.stderr[-2000:])
    return serial.stdout.strip()


def file_serial(path):
    out = subprocess.run(
        ["openssl", "x509", "-noout", "-serial", "-in", path], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def etcd_starts(lab, node):
    """How many times etcd-member.service started in this boot (journal)."""
    text = lab.node_run(
        node, "journalctl", "--no-pager", "-b", "-o", "cat", "-u", "etcd-member.service"
    ).stdout
    return sum(1 for line in text.splitlines() if line.startswith("Started etcd-member.service"))


def test_a_renewed_member_certificate_restarts_only_its_etcd_once_without_a_reboot():
    lablib.require_lab()
    with lab_session(f"t{uuid.uuid4().hex[:8]}") as lab:
        lab.wait_healthy()
        by_member = {n["member"]: node for node, n in lab.state["nodes"].items()}
        node0 = by_member[0]
        ip0 = lab.member(member=0)["eni_ip"]
        boots = {
            node: lab.node_run(node, "cat", "/proc/sys/kernel/random/boot_id").stdout
            for node in by_member.values()
        }
        # The sync ran its first pass and adopted what every reader runs with.
        for node in by_member.values():
            wait_for(
                f"{node}: first pass",
                lambda node=node: (
                    lab.node_run(
                        node, "test", "-s", "/run/nodeboot/secrets-readers.json", check=False
                    ).returncode
                    == 0
                ),
            )
        starts = {node: etcd_starts(lab, node) for node in by_member.values()}
        assert all(n == 1 for n in starts.values()), starts
        old = served_serial(lab, ip0)
        assert old is not None

        # The operator renews member 0's certificate and uploads it.
        secrets = lab.dir / "secrets"
        env, env_file = lab.operator_env(), lab.state["env_file"]
        run(
            [lab.bin, "pki", "--env", env_file, "--dir", secrets, "--rotate", "etcd-member-0"],
            env=env,
        )
        new = file_serial(secrets / "secure/etcd/member-0.crt")
        assert new != old
        run(
            [lab.bin, "secrets", "upload", "--env", env_file, "--dir", secrets, "secure"],
            env=env,
            timeout=120,
        )

        # The next pass (a restart of the sync starts one at once instead of
        # waiting out the 60 s interval) fetches it and restarts etcd.
        for node in by_member.values():
            lab.node_run(node, "systemctl", "restart", SYNC)
        wait_for(
            "member 0 serves the new certificate",
            lambda: served_serial(lab, ip0) == new,
            timeout=120,
        )
        lab.wait_healthy()
        # Let the other nodes' passes finish too, then count.
        time.sleep(5)
        after = {node: etcd_starts(lab, node) for node in by_member.values()}
        assert after[node0] == 2, (after, lab.unit_journal(node0, SYNC))
        assert {n: c for n, c in after.items() if n != node0} == {
            n: 1 for n in by_member.values() if n != node0
        }, after
        # No reboot: the same boot ids.
        assert {
            node: lab.node_run(node, "cat", "/proc/sys/kernel/random/boot_id").stdout
            for node in by_member.values()
        } == boots
        journal = lab.unit_journal(node0, SYNC)
        assert "restarting it" in journal and "answers with a leader" in journal, journal
        # A further pass finds nothing to do: no second restart.
        lab.node_run(node0, "systemctl", "restart", SYNC)
        time.sleep(5)
        assert etcd_starts(lab, node0) == 2
