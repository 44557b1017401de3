"""The ENI's routing survives systemd-networkd (issue 13): etcd peers check
a caller's address against its certificate, which names the member's ENI
address, so etcd's connections to its peers must keep leaving from that
address after networkd renews a DHCP lease and after `networkctl reload`.

The lab's nodes run real systemd-networkd with Flatcar's default (every
interface on DHCP, `zz-default.network`) against the lab's DHCP server
(tests/lab/README.md). Root only, like the lab.
"""

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import lab as lablib  # noqa: E402

require_lab = lablib.require_lab


def cluster():
    return lablib.session(prefix="t")


def route_to(lab, node, peer):
    """What a new connection to `peer` does: the source the kernel picks, and
    the interface a packet from that source leaves by."""
    picked = json.loads(lab.node_run(node, "ip", "-j", "-4", "route", "get", peer).stdout)[0]
    source = picked.get("prefsrc")
    sent = lab.node_run(node, "ip", "-j", "-4", "route", "get", peer, "from", source).stdout
    return source, json.loads(sent)[0].get("dev")


def peer_sources(lab, node):
    """Local addresses of the node's established connections to etcd peers (:2380)."""
    out = lab.node_run(node, "ss", "-Htn", "state", "established", "( dport = :2380 )").stdout
    return {line.split()[2].rsplit(":", 1)[0] for line in out.splitlines() if line.strip()}


def wait_for(what, check, timeout=30):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what}: not within {timeout}s"
        time.sleep(0.2)


def test_etcd_peer_traffic_leaves_from_the_eni_address_after_a_lease_renewal_and_a_reload():
    require_lab()
    with cluster() as lab:
        node = lab.node_of_member(0)
        own = lab.member(member=0)["eni_ip"]
        peers = [lab.member(member=m)["eni_ip"] for m in (1, 2)]
        assert [route_to(lab, node, p) for p in peers] == [(own, "eth1")] * 2

        # What networkd does on its own, hours after the boot: renew the
        # leases (every DHCP interface; the ENI is not one any more), a reload
        # (any unit or admin may ask for one), reconfiguring the links (what a
        # carrier loss or a changed lease does) and a restart (an OS update).
        # With routes and rules added by `ip`, networkd 252 keeps them through
        # the renewal and the reload, but drops the rules when it reconfigures
        # eth0 and takes the ENI's address back to DHCP's when it reconfigures
        # eth1 or restarts (measured here; the test fails on that setup).
        n = lab.node(node)
        renewal = lab.renew_dhcp(node, "eth0")
        assert any("DHCPACK(" in x and n["primary_ip"] in x for x in renewal), renewal
        lab.node_run(node, "networkctl", "renew", "eth1", check=False)
        for disturbance in (
            ["networkctl", "reload"],
            ["networkctl", "reconfigure", "eth0"],
            ["networkctl", "reconfigure", "eth1"],
            ["systemctl", "restart", "systemd-networkd.service"],
        ):
            lab.node_run(node, *disturbance)
            time.sleep(2)  # networkd reconfigures after the command returns
            routes = [route_to(lab, node, p) for p in peers]
            rules = lab.node_run(node, "ip", "rule").stdout
            assert routes == [(own, "eth1")] * 2, (disturbance, routes, rules)
            assert f"from {own} lookup 1001" in rules, (disturbance, rules)

        # Real peer traffic: etcd restarted dials its peers anew, and they
        # accept it only from the address its certificate names.
        lab.node_run(node, "systemctl", "restart", "etcd-member.service")
        lab.wait_healthy(timeout=60)
        sources = wait_for(
            "peer connections from the restarted member", lambda: peer_sources(lab, node)
        )
        assert sources == {own}, sources
        # The primary interface still belongs to DHCP: its lease and route are networkd's.
        main = lab.node_run(node, "ip", "-4", "route", "show", "default").stdout
        assert "dev eth0 proto dhcp" in main, main
