"""The lab's network: one router namespace per lab, one namespace per node.

The router holds a bridge with every secure subnet's gateway (the VPC
router's `.1`) and forwards between them; nodes hang off the bridge by veth
pairs. Nothing is added to the host's own namespace, so labs never collide
with each other or with the host's routes.
"""

import json
import os
import signal
import time
from pathlib import Path

from lab_proc import LabError, run

BRIDGE = "br0"
# A bridge takes the lowest MAC of its ports unless given one, and every change
# flushes its neighbour table (permanent entries too) while the nodes keep the
# gateway's old MAC in their ARP caches: packets vanish until ARP re-resolves.
# A fixed, locally administered MAC keeps the gateway still.
BRIDGE_MAC = "0e:00:00:00:00:01"
NETNS_DIR = Path("/run/netns")


def ip(*args, ns=None, check=True):
    cmd = ["ip", *(("-n", ns) if ns else ()), *args]
    return run(cmd, check=check, timeout=30)


def nsenter(ns):
    """The prefix that runs a command in a namespace's network only: unlike
    `ip netns exec` it keeps the host's mount namespace, so mounts a stage
    makes stay visible to everyone."""
    return ["nsenter", f"--net={NETNS_DIR / ns}"]


def exists(ns):
    return (NETNS_DIR / ns).exists()


def listed():
    out = run(["ip", "-j", "netns", "list"], check=False).stdout.strip()
    return [n["name"] for n in json.loads(out or "[]")]


def add(ns):
    ip("netns", "add", ns)
    ip("link", "set", "lo", "up", ns=ns)


def pids(ns):
    out = run(["ip", "netns", "pids", ns], check=False).stdout
    return [int(p) for p in out.split()]


def delete(ns):
    """Kills what still runs in the namespace (all of it the lab's), then
    deletes it; its veths, and their peers on the router, go with it."""
    if not exists(ns):
        return
    for _ in range(50):
        left = pids(ns)
        if not left:
            break
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.05)
    ip("netns", "del", ns, check=False)
    if exists(ns):
        raise LabError(f"network namespace {ns} could not be deleted")


def sysctl(ns, key, value):
    run([*nsenter(ns), "sysctl", "-qw", f"{key}={value}"], timeout=30)


def make_router(ns, gateways, endpoint):
    """gateways: ["10.80.10.1/24", ...]; endpoint: the EC2 endpoint's address."""
    add(ns)
    ip("link", "add", BRIDGE, "address", BRIDGE_MAC, "type", "bridge", ns=ns)
    ip("link", "set", BRIDGE, "up", ns=ns)
    for gateway in gateways:
        ip("addr", "add", gateway, "dev", BRIDGE, ns=ns)
    ip("addr", "add", f"{endpoint}/32", "dev", "lo", ns=ns)
    sysctl(ns, "net.ipv4.ip_forward", 1)


def plug(router, router_if, node, node_if, mac):
    """A veth pair: `node_if` (with `mac`) in the node, `router_if` on the bridge.
    The node's end is left down, as a hot-plugged NIC appears."""
    if ip("link", "show", node_if, ns=node, check=False).returncode == 0:
        return
    # The kernel frees a deleted namespace's devices asynchronously: the
    # router's end of a restarted node's old pair may still be there.
    ip("link", "del", router_if, ns=router, check=False)
    ip("link", "add", router_if, "type", "veth", "peer", "name", node_if, "netns", node, ns=router)
    ip("link", "set", node_if, "address", mac, ns=node)
    ip("link", "set", router_if, "master", BRIDGE, "up", ns=router)


def configure_primary(node, address, gateway):
    """eth0 as the instance's DHCP would leave it: address, up, default route."""
    ip("addr", "replace", address, "dev", "eth0", ns=node)
    ip("link", "set", "eth0", "up", ns=node)
    ip("route", "replace", "default", "via", gateway, "dev", "eth0", ns=node)


def pin(router, address, mac):
    """The VPC knows which interface holds an address (it does not learn it by
    ARP): a permanent neighbour entry on the router says the same. Without
    it a node answering ARP for its ENI address on eth0 could draw the
    ENI's traffic to the wrong interface."""
    ip("neigh", "replace", address, "lladdr", mac, "dev", BRIDGE, "nud", "permanent", ns=router)


# --- DHCP: the VPC's DHCP server, dnsmasq on the router's bridge ------------------

# EC2's DHCP hands every interface its fixed private address. dnsmasq's
# shortest lease is two minutes: networkd renews at half of it (T1), so a
# renewal shows within a minute; `networkctl renew IFACE` asks for one now.
LEASE = "2m"


def dhcp_command(router, subnets, hosts_file, lease_file, log_file):
    """dnsmasq in the router namespace: DHCP only (no DNS), static leases
    from hosts_file (MAC,IP lines; re-read on SIGHUP), one range per subnet
    with its gateway as the router option."""
    cmd = [
        "ip", "netns", "exec", router,
        "dnsmasq",
        "--keep-in-foreground",
        "--conf-file=/dev/null",
        "--port=0",
        f"--interface={BRIDGE}",
        "--bind-interfaces",
        "--dhcp-authoritative",
        "--no-ping",
        "--user=root",
        "--group=root",
        "--log-dhcp",
        f"--log-facility={log_file}",
        f"--dhcp-hostsfile={hosts_file}",
        f"--dhcp-leasefile={lease_file}",
        "--pid-file=",
    ]  # fmt: skip
    for i, (network, gateway) in enumerate(subnets):
        cmd += [
            f"--dhcp-range=set:s{i},{network.network_address},static,{network.netmask},{LEASE}",
            f"--dhcp-option=tag:s{i},option:router,{gateway}",
        ]
    return cmd
