"""Issue 22 item 1: the pod network of the rendered Flannel config, run with
the real standard CNI plugins (Debian's containernetworking-plugins in
/usr/lib/cni: bridge, host-local, portmap, loopback).

`nodeboot render` of the example environment gives the Flannel ConfigMap
(`cni-conf.json`, the conflist the runtime reads; `net-conf.json`, the pod
network and its VXLAN backend) and the controller-manager's pod ranges.
Two "nodes" are network namespaces of this run's own names, joined by a veth
as two instances of one VPC subnet (MTU 9001, as EC2 gives). Each node gets
what flanneld would give it: a /24 of the pod network (the first and the
second, as the controller-manager's range allocator hands them out), a
subnet.env, and a VXLAN device on the rendered port with the route, neighbour
and FDB entry for the other node (flanneld's VXLAN backend; see
`vxlan_device`). Pods are network namespaces too; the test plays the
container runtime: the loopback plugin on `lo`, then the conflist's plugins
in order on `eth0` (CNI_COMMAND, CNI_CONTAINERID, CNI_NETNS, CNI_IFNAME,
CNI_PATH=/usr/lib/cni, the config on stdin, each plugin's result the next
one's prevResult), DEL in reverse order. Flannel's own plugin is not in
Debian: `flannel_plugin` is a double of what it documents doing.

Test-only additions to the rendered config, all options the flannel plugin
documents and all absent from the rendered one: `subnetFile` and `dataDir`
(per test, not the host's /run/flannel and /var/lib/cni/flannel) and an
`ipam` base with host-local's `dataDir` (per test, not
/var/lib/cni/networks). Each test builds its own network, so the tests run
in parallel (pytest -n), and tears it down, pass or fail: every namespace
and the per-test directory are removed, /var/lib/cni is left as it was, and
the teardown checks it.

Root only: without root every test fails and says why, unless
NODEBOOT_SKIP_ROOT_TESTS=1 (then they are skipped, visibly).
"""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml  # PyYAML: kubernetes-validate's (tests/requirements.txt)

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "environments" / "example.tfvars"
CNI_PATH = Path("/usr/lib/cni")  # Debian's containernetworking-plugins
VAR_LIB_CNI = Path("/var/lib/cni")
EC2_MTU = 9001  # an instance's interface inside a VPC (jumbo frames)
VXLAN_OVERHEAD = 50  # flanneld: the VXLAN device's MTU is the interface's less 50
# containerd brings up every sandbox's lo with the loopback plugin, as this
# network (go-cni's loopback network).
LOOPBACK = {"cniVersion": "0.3.1", "name": "cni-loopback", "plugins": [{"type": "loopback"}]}


# --- helpers --------------------------------------------------------------------


def run(*args, stdin=None, env=None, check=True, timeout=30) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [str(a) for a in args],
        input=stdin,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and done.returncode != 0:
        raise AssertionError(
            f"`{' '.join(map(str, args))}` exited {done.returncode}: "
            f"{done.stderr.strip()} {done.stdout.strip()}"
        )
    return done


def netns_exec(ns: str, *args, **kwargs) -> subprocess.CompletedProcess:
    return run("ip", "netns", "exec", ns, *args, **kwargs)


def link(ns: str, name: str) -> dict:
    (found,) = json.loads(run("ip", "-n", ns, "-d", "-s", "-j", "link", "show", name).stdout)
    return found


def addresses(ns: str, name: str) -> list[str]:
    """The IPv4 addresses of an interface."""
    shown = json.loads(run("ip", "-4", "-n", ns, "-j", "addr", "show", name).stdout)
    return [f"{a['local']}/{a['prefixlen']}" for i in shown for a in i["addr_info"]]


def ping(ns: str, address, size: int = 56) -> subprocess.CompletedProcess:
    """Three echo requests of `size` bytes, never fragmented (-M do)."""
    return netns_exec(
        ns, "ping", "-n", "-q", "-c", "3", "-i", "0.2", "-W", "2", "-M", "do", "-s", size, address,
        check=False,
    )  # fmt: skip


def require_root():
    if os.geteuid() != 0:
        if os.environ.get("NODEBOOT_SKIP_ROOT_TESTS") == "1":
            pytest.skip(
                "the pod network needs root (skipped knowingly: NODEBOOT_SKIP_ROOT_TESTS=1)"
            )
        pytest.fail(
            "the pod network test needs root (network namespaces, veths, VXLAN, iptables): "
            "run as root, or set NODEBOOT_SKIP_ROOT_TESTS=1 to skip it knowingly",
            pytrace=False,
        )
    for tool in ("ip", "ping", "iptables-save"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is missing (tests/setup installs it)", pytrace=False)


def nodeboot_binary() -> Path:
    """As the lab finds it: NODEBOOT_BIN, else the debug build of
    CARGO_TARGET_DIR, else the newest debug build of CI's or the clone's
    target directory."""
    if os.environ.get("NODEBOOT_BIN"):
        return Path(os.environ["NODEBOOT_BIN"])
    if os.environ.get("CARGO_TARGET_DIR"):
        return Path(os.environ["CARGO_TARGET_DIR"]) / "debug/nodeboot"
    found = [
        p
        for p in (Path("/var/cache/nodeboot/target/debug/nodeboot"), REPO / "target/debug/nodeboot")
        if p.exists()
    ]
    return max(found, key=lambda p: p.stat().st_mtime) if found else REPO / "target/debug/nodeboot"


def tree(path: Path) -> set[str]:
    return {str(p) for p in path.rglob("*")} if path.exists() else set()


# --- what nodeboot renders ------------------------------------------------------


@dataclass
class Rendered:
    conflist: dict  # cni-conf.json of the Flannel ConfigMap
    network: ipaddress.IPv4Network  # net-conf.json's Network
    vxlan_port: int
    vni: int
    ip_masq: bool  # flanneld runs with --ip-masq
    node_prefix: int  # the controller-manager's --node-cidr-mask-size
    node_subnet: ipaddress.IPv4Network  # where the example's compute nodes live

    def node_subnets(self) -> list[ipaddress.IPv4Network]:
        return list(self.network.subnets(new_prefix=self.node_prefix))


def flag(args: list[str], name: str) -> str:
    (value,) = [a.split("=", 1)[1] for a in args if a.startswith(f"{name}=")]
    return value


@functools.cache
def rendered() -> Rendered:
    """`nodeboot render` of the example environment, read back (once per
    process)."""
    binary = nodeboot_binary()
    if not binary.exists():
        pytest.fail(
            f"no nodeboot binary at {binary}: run `cargo build` (or set NODEBOOT_BIN)",
            pytrace=False,
        )
    out = Path(tempfile.mkdtemp(prefix="nodeboot-cni-render-"))
    try:
        run(binary, "render", "--env", EXAMPLE, "--out", out, timeout=120)
        objects = [
            doc
            for path in sorted((out / "manifests" / "addons").glob("*.yaml"))
            for doc in yaml.safe_load_all(path.read_text())
            if doc
        ]
        manager = yaml.safe_load((out / "manifests/etcd/kube-controller-manager.yaml").read_text())
    finally:
        shutil.rmtree(out)

    def named(kind, name):
        (found,) = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
        return found

    data = named("ConfigMap", "kube-flannel-cfg")["data"]
    net_conf = json.loads(data["net-conf.json"])
    pod_spec = named("DaemonSet", "kube-flannel-ds")["spec"]["template"]["spec"]
    (flanneld,) = [c for c in pod_spec["containers"] if c["name"] == "kube-flannel"]
    (manager_args,) = [c["command"] for c in manager["spec"]["containers"]]
    backend = net_conf["Backend"]
    assert backend["Type"] == "vxlan", "this test builds flanneld's VXLAN backend"
    assert flag(manager_args, "--cluster-cidr") == net_conf["Network"], (
        "the controller-manager hands out node ranges from another network than Flannel's"
    )
    compute = re.search(r'^compute_subnets\s*=\s*\["([^"]+)"', EXAMPLE.read_text(), re.M)
    return Rendered(
        conflist=json.loads(data["cni-conf.json"]),
        network=ipaddress.ip_network(net_conf["Network"]),
        vxlan_port=backend.get("Port", 8472),  # absent: flanneld leaves the kernel default
        vni=backend.get("VNI", 1),
        ip_masq="--ip-masq" in flanneld.get("args", []),
        node_prefix=int(flag(manager_args, "--node-cidr-mask-size")),
        node_subnet=ipaddress.ip_network(compute.group(1)),
    )


# --- the flannel CNI plugin's double ----------------------------------------------


def read_subnet_env(path: Path) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
    return {key.strip(): value.strip() for key, value in pairs}


def flannel_plugin(conf: dict, env: dict, node: str) -> dict:
    """What flannel's CNI plugin (flannel-io/cni-plugin) does, after its
    README ("Network configuration reference") and flannel_linux.go: on ADD
    it reads `subnetFile` (default /run/flannel/subnet.env, written by
    flanneld) and hands its `delegate` section to the delegate's `type`
    (default `bridge`), always setting `name` and `cniVersion` to its own
    and `ipam` to its own `ipam` section with `type` defaulting to
    `host-local`, `ranges` [[{subnet: FLANNEL_SUBNET's network}]] and
    `routes` + [{dst: FLANNEL_NETWORK}]; and, unless the delegate has them,
    `ipMasq` = not FLANNEL_IPMASQ, `mtu` = FLANNEL_MTU, and for the bridge
    `isGateway` = true. It keeps the delegate's config in `dataDir` (default
    /var/lib/cni/flannel) under the container's id, prints the delegate's
    result as its own, and on DEL hands that kept config to the delegate
    (nothing kept: success) and removes it."""
    kept = Path(conf.get("dataDir", "/var/lib/cni/flannel")) / env["CNI_CONTAINERID"]
    if env["CNI_COMMAND"] == "DEL":
        if not kept.exists():
            return {}
        delegate = json.loads(kept.read_text())
        result = invoke(delegate["type"], delegate, env, node)
        kept.unlink()
        return result
    subnet = read_subnet_env(Path(conf.get("subnetFile", "/run/flannel/subnet.env")))
    delegate = dict(conf.get("delegate", {}))
    delegate["name"] = conf["name"]
    delegate.setdefault("type", "bridge")
    delegate.setdefault("ipMasq", subnet["FLANNEL_IPMASQ"] != "true")
    delegate.setdefault("mtu", int(subnet["FLANNEL_MTU"]))
    if delegate["type"] == "bridge":
        delegate.setdefault("isGateway", True)
    delegate["cniVersion"] = conf["cniVersion"]
    ipam = dict(conf.get("ipam", {}))
    ipam.setdefault("type", "host-local")
    own_subnet = ipaddress.ip_interface(subnet["FLANNEL_SUBNET"]).network
    ipam["ranges"] = [[{"subnet": str(own_subnet)}]]
    ipam["routes"] = [*ipam.get("routes", []), {"dst": subnet["FLANNEL_NETWORK"]}]
    delegate["ipam"] = ipam
    kept.parent.mkdir(parents=True, exist_ok=True)
    kept.write_text(json.dumps(delegate))
    return invoke(delegate["type"], delegate, env, node)


# --- the runtime's side: plugins executed as libcni executes them ------------------


def invoke(plugin: str, conf: dict, env: dict, node: str) -> dict:
    """Executes one plugin in the node's network namespace (the runtime's),
    the config on stdin; a plugin's error (JSON on stdout) fails the test."""
    if plugin == "flannel":
        return flannel_plugin(conf, env, node)
    done = netns_exec(node, CNI_PATH / plugin, stdin=json.dumps(conf), env=env, check=False)
    if done.returncode != 0:
        raise AssertionError(
            f"{plugin} {env['CNI_COMMAND']} failed ({done.returncode}): "
            f"{done.stdout.strip()} {done.stderr.strip()}"
        )
    return json.loads(done.stdout) if done.stdout.strip() else {}


def run_network(
    command: str, conflist: dict, env: dict, node: str, runtime_config: dict
) -> dict | None:
    """libcni's AddNetworkList / DelNetworkList: each plugin gets the list's
    `name` and `cniVersion`, `runtimeConfig` for the capabilities it asks for
    and, on ADD, the previous plugin's result as `prevResult`; DEL runs the
    plugins in reverse order (before spec 0.4.0, without a prevResult)."""
    plugins = conflist["plugins"] if command == "ADD" else conflist["plugins"][::-1]
    result = None
    for plugin in plugins:
        conf = {**plugin, "name": conflist["name"], "cniVersion": conflist["cniVersion"]}
        wanted = {k: v for k, v in runtime_config.items() if plugin.get("capabilities", {}).get(k)}
        if wanted:
            conf["runtimeConfig"] = wanted
        if command == "ADD" and result is not None:
            conf["prevResult"] = result
        result = invoke(plugin["type"], conf, {**env, "CNI_COMMAND": command}, node)
    return result if command == "ADD" else None


@dataclass
class Pod:
    name: str  # its network namespace
    node: "Node"
    container_id: str
    port_mappings: list[dict]
    result: dict = field(default_factory=dict)

    @property
    def address(self) -> ipaddress.IPv4Interface:
        (ip,) = self.result["ips"]
        return ipaddress.ip_interface(ip["address"])

    @property
    def host_veth(self) -> str:
        """The node's end of the pod's veth (the bridge plugin's result lists
        the bridge, the host end, then the sandbox's interface)."""
        (veth,) = [
            i["name"]
            for i in self.result["interfaces"]
            if not i.get("sandbox") and i["name"] != self.node.bridge
        ]
        return veth


@dataclass
class Node:
    name: str  # its network namespace
    address: ipaddress.IPv4Interface
    subnet: ipaddress.IPv4Network  # its pod range
    subnet_env: Path
    flannel_dir: Path
    bridge: str = "cni0"  # the bridge plugin's default name
    vxlan: str = ""


class PodNetwork:
    """Two nodes of this run's own names and the pods the test adds."""

    def __init__(self, rendered: Rendered):
        self.rendered = rendered
        self.prefix = f"nbcni-{uuid.uuid4().hex[:10]}"
        self.workdir = Path(tempfile.mkdtemp(prefix=f"{self.prefix}-"))
        self.ipam_dir = self.workdir / "ipam"
        self.namespaces: list[str] = []
        self.pods: list[Pod] = []
        self.var_lib_cni = tree(VAR_LIB_CNI)
        hosts = list(rendered.node_subnet.hosts())
        subnets = rendered.node_subnets()
        self.nodes = [
            Node(
                name=f"{self.prefix}-{label}",
                address=ipaddress.ip_interface(f"{hosts[9 + i]}/{rendered.node_subnet.prefixlen}"),
                subnet=subnets[i],
                subnet_env=self.workdir / f"node-{label}" / "subnet.env",
                flannel_dir=self.workdir / f"node-{label}" / "flannel",
            )
            for i, label in enumerate("ab")
        ]

    @property
    def mtu(self) -> int:
        return EC2_MTU - VXLAN_OVERHEAD

    def conflist(self, node: Node) -> dict:
        """The rendered conflist with the per-test options (see the module's
        docstring); none of them overrides a rendered value."""
        conflist = json.loads(json.dumps(self.rendered.conflist))
        (flannel,) = [p for p in conflist["plugins"] if p["type"] == "flannel"]
        assert not {"subnetFile", "dataDir", "ipam"} & set(flannel), flannel
        flannel["subnetFile"] = str(node.subnet_env)
        flannel["dataDir"] = str(node.flannel_dir)
        flannel["ipam"] = {"dataDir": str(self.ipam_dir)}
        return conflist

    def netns_add(self, name: str):
        run("ip", "netns", "add", name)
        self.namespaces.append(name)
        run("ip", "-n", name, "link", "set", "lo", "up")

    # --- the nodes, as the instances and flanneld leave them

    def up(self):
        a, b = self.nodes
        for node in self.nodes:
            self.netns_add(node.name)
        run("ip", "-n", a.name, "link", "add", "eth0", "mtu", EC2_MTU, "type", "veth",
            "peer", "name", "eth0", "mtu", EC2_MTU, "netns", b.name)  # fmt: skip
        for node in self.nodes:
            run("ip", "-n", node.name, "addr", "add", node.address, "dev", "eth0")
            run("ip", "-n", node.name, "link", "set", "eth0", "up")
            self.vxlan_device(node)
            self.write_subnet_env(node)
        for node, peer in ((a, b), (b, a)):
            self.vxlan_peer(node, peer)

    def write_subnet_env(self, node: Node):
        """The file flanneld writes for the CNI plugin (flannel-io/cni-plugin's
        README): the pod network, the node's range (first address), the MTU
        and whether flanneld masquerades itself."""
        node.subnet_env.parent.mkdir(parents=True)
        node.subnet_env.write_text(
            f"FLANNEL_NETWORK={self.rendered.network}\n"
            f"FLANNEL_SUBNET={node.subnet[1]}/{node.subnet.prefixlen}\n"
            f"FLANNEL_MTU={self.mtu}\n"
            f"FLANNEL_IPMASQ={'true' if self.rendered.ip_masq else 'false'}\n"
        )

    def vxlan_device(self, node: Node):
        """flanneld's VXLAN backend (flannel-io/flannel pkg/backend/vxlan):
        a device flannel.<VNI> on the node's interface and the configured
        port, no learning, its address the node range's first (network)
        address as a /32. Chosen over host-gw routes because the rendered
        backend is VXLAN (Terraform opens only UDP 8472 between nodes, and
        nodes in different zones' subnets are not on one link), so the pod's
        MTU and the encapsulation on the rendered port are what a cluster
        runs."""
        node.vxlan = f"flannel.{self.rendered.vni}"
        run("ip", "-n", node.name, "link", "add", node.vxlan, "type", "vxlan",
            "id", self.rendered.vni, "local", node.address.ip, "dev", "eth0",
            "dstport", self.rendered.vxlan_port, "nolearning")  # fmt: skip
        run("ip", "-n", node.name, "addr", "add", f"{node.subnet.network_address}/32",
            "dev", node.vxlan)  # fmt: skip
        run("ip", "-n", node.name, "link", "set", node.vxlan, "up")

    def vxlan_peer(self, node: Node, peer: Node):
        """What flanneld adds on `node` for each other node (the backend's
        "How it works"): a route to the peer's range via its VTEP address on
        the device (onlink), a permanent neighbour entry for that address
        with the peer device's MAC, an FDB entry sending that MAC to the
        peer's node address."""
        mac = link(peer.name, peer.vxlan)["address"]
        vtep = peer.subnet.network_address
        run("ip", "-n", node.name, "neigh", "replace", vtep, "lladdr", mac,
            "dev", node.vxlan, "nud", "permanent")  # fmt: skip
        run("bridge", "-n", node.name, "fdb", "append", mac, "dev", node.vxlan,
            "dst", peer.address.ip, "self", "permanent")  # fmt: skip
        run("ip", "-n", node.name, "route", "replace", peer.subnet, "via", vtep,
            "dev", node.vxlan, "onlink")  # fmt: skip

    # --- pods, as containerd sets up a sandbox's network

    def env(self, pod: Pod, ifname: str) -> dict:
        base = {k: v for k, v in os.environ.items() if not k.startswith("CNI_")}
        return {
            **base,
            "CNI_CONTAINERID": pod.container_id,
            "CNI_NETNS": f"/run/netns/{pod.name}",
            "CNI_IFNAME": ifname,
            "CNI_PATH": str(CNI_PATH),
            "CNI_ARGS": (
                f"IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME={pod.name};"
                f"K8S_POD_INFRA_CONTAINER_ID={pod.container_id}"
            ),
        }

    def add_pod(self, node: Node, port_mappings=()) -> Pod:
        pod = Pod(
            name=f"{node.name}-p{len(self.pods)}",
            node=node,
            container_id=uuid.uuid4().hex + uuid.uuid4().hex,
            port_mappings=list(port_mappings),
        )
        self.netns_add(pod.name)
        run("ip", "-n", pod.name, "link", "set", "lo", "down")  # the runtime leaves it down
        self.pods.append(pod)
        run_network("ADD", LOOPBACK, self.env(pod, "lo"), node.name, {})
        pod.result = run_network(
            "ADD",
            self.conflist(node),
            self.env(pod, "eth0"),
            node.name,
            {"portMappings": pod.port_mappings},
        )
        return pod

    def del_pod(self, pod: Pod):
        """The runtime's teardown of a sandbox's network: the conflist on
        eth0, then loopback."""
        runtime = {"portMappings": pod.port_mappings}
        run_network("DEL", self.conflist(pod.node), self.env(pod, "eth0"), pod.node.name, runtime)
        run_network("DEL", LOOPBACK, self.env(pod, "lo"), pod.node.name, {})
        self.pods.remove(pod)

    # --- teardown

    def down(self) -> list[str]:
        """DEL every pod left (as the kubelet would), delete every namespace
        and the per-test directory; returns what is left behind."""
        problems = []
        for pod in list(self.pods):
            try:
                self.del_pod(pod)
            except AssertionError as e:  # keep tearing down; report it
                problems.append(f"DEL of {pod.name}: {e}")
        for ns in reversed(self.namespaces):
            run("ip", "netns", "delete", ns, check=False)
        shutil.rmtree(self.workdir, ignore_errors=True)
        listed = run("ip", "netns", "list").stdout
        problems += [f"network namespace {ns}" for ns in self.namespaces if ns in listed.split()]
        if self.workdir.exists():
            problems.append(str(self.workdir))
        problems += sorted(tree(VAR_LIB_CNI) - self.var_lib_cni)
        return problems


@contextlib.contextmanager
def pod_network():
    """A PodNetwork, up, and torn down however the test ends; the test fails
    when the teardown leaves anything behind."""
    require_root()
    needed = {p["type"] for p in LOOPBACK["plugins"]}
    for plugin in rendered().conflist["plugins"]:
        if plugin["type"] == "flannel":  # its delegate and IPAM, as flannel_plugin defaults them
            needed |= {plugin.get("delegate", {}).get("type", "bridge"), "host-local"}
        else:
            needed.add(plugin["type"])
    missing = sorted(p for p in needed if not (CNI_PATH / p).exists())
    if missing:
        pytest.fail(
            f"{missing} not in {CNI_PATH}: apt-get install containernetworking-plugins "
            "(tests/setup installs it)",
            pytrace=False,
        )
    net = PodNetwork(rendered())
    started = time.monotonic()
    try:
        net.up()
        yield net
    finally:
        left = net.down()
        print(f"{net.prefix}: up, test and teardown in {time.monotonic() - started:.2f} s")
        if left:
            print(f"{net.prefix}: the teardown left {left}")
    assert not left, f"the teardown left {left}"


# --- the tests -------------------------------------------------------------------


def test_the_rendered_chain_is_flannel_delegating_to_bridge_then_portmap():
    """What the tests below execute, read from the render (no root needed)."""
    chain = rendered().conflist["plugins"]
    assert [p["type"] for p in chain] == ["flannel", "portmap"]
    assert chain[0].get("delegate", {}).get("type", "bridge") == "bridge"
    assert chain[1]["capabilities"] == {"portMappings": True}
    assert rendered().node_prefix == 24 and rendered().network.prefixlen < 24


def test_a_pod_gets_an_address_of_its_nodes_range_and_reaches_its_gateway():
    with pod_network() as network:
        for node in network.nodes:
            pod = network.add_pod(node)
            gateway = node.subnet[1]
            assert pod.address.network == node.subnet, pod.result
            assert pod.address.ip not in (node.subnet.network_address, gateway)
            assert [ip["gateway"] for ip in pod.result["ips"]] == [str(gateway)]
            assert addresses(pod.name, "eth0") == [str(pod.address)]
            eth0 = link(pod.name, "eth0")
            assert eth0["mtu"] == network.mtu, "the pod's MTU is not flanneld's"
            routes = json.loads(run("ip", "-n", pod.name, "-j", "route", "show").stdout)
            assert {"dst": "default", "gateway": str(gateway)}.items() <= routes[0].items(), routes
            assert any(r["dst"] == str(network.rendered.network) for r in routes), routes
            # the node: the bridge holds the gateway, the pod's veth is its port, hairpin on
            assert str(gateway) in [a.split("/")[0] for a in addresses(node.name, node.bridge)]
            veth = link(node.name, pod.host_veth)
            assert veth["master"] == node.bridge
            assert veth["linkinfo"]["info_slave_data"]["hairpin"] is True
            # loopback: lo is up with 127.0.0.1
            assert "UP" in link(pod.name, "lo")["flags"]
            assert "127.0.0.1/8" in addresses(pod.name, "lo")
            assert ping(pod.name, "127.0.0.1").returncode == 0
            done = ping(pod.name, gateway)
            assert done.returncode == 0, done.stdout + done.stderr


def test_a_pod_reaches_a_pod_on_the_other_node_through_the_vxlan_device():
    with pod_network() as network:
        a, b = network.nodes
        pod_a, pod_b = network.add_pod(a), network.add_pod(b)
        sent_before = link(a.name, a.vxlan)["stats64"]["tx"]["packets"]
        # the largest packet the pod's MTU allows, not fragmented, both ways
        largest = network.mtu - 28
        for pod, peer in ((pod_a, pod_b), (pod_b, pod_a)):
            done = ping(pod.name, peer.address.ip, size=largest)
            assert done.returncode == 0, done.stdout + done.stderr
        assert link(a.name, a.vxlan)["stats64"]["tx"]["packets"] - sent_before >= 6, (
            "the packets did not leave node a through its VXLAN device"
        )


# A one-connection server in the pod that says whom it saw, and its client.
SERVER = """
import socket, sys
server = socket.create_server(("0.0.0.0", int(sys.argv[1])))
print("ready", flush=True)
conn, peer = server.accept()
conn.sendall(f"pod saw {peer[0]}".encode())
"""
CLIENT = """
import socket, sys
print(socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5).recv(100).decode())
"""


def test_portmap_forwards_a_node_port_to_the_pod():
    with pod_network() as network:
        a, b = network.nodes
        mapping = {"hostPort": 30080, "containerPort": 8080, "protocol": "tcp"}
        pod = network.add_pod(a, port_mappings=[mapping])
        server = subprocess.Popen(
            ["ip", "netns", "exec", pod.name, "python3", "-c", SERVER, "8080"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert server.stdout.readline().strip() == "ready", server.stderr.read()
            # from the other node to this node's address and host port
            done = netns_exec(b.name, "python3", "-c", CLIENT, a.address.ip, 30080)
            assert done.stdout.strip() == f"pod saw {b.address.ip}"
        finally:
            server.kill()
            server.wait(timeout=10)
        rules = netns_exec(a.name, "iptables-save", "-t", "nat").stdout
        assert pod.container_id in rules, "portmap left no rule naming the container"
        network.del_pod(pod)
        rules = netns_exec(a.name, "iptables-save", "-t", "nat").stdout
        assert pod.container_id not in rules, "DEL left the port mapping in place"


def test_del_releases_the_address_and_removes_the_pods_interfaces():
    with pod_network() as network:
        a, _ = network.nodes
        pod = network.add_pod(a)
        store = network.ipam_dir / network.rendered.conflist["name"]
        lease = store / str(pod.address.ip)
        assert lease.read_text().split()[0] == pod.container_id, "host-local's store has no lease"
        kept = a.flannel_dir / pod.container_id
        assert kept.exists(), "the flannel plugin kept no delegate config"
        host_veth = pod.host_veth
        network.del_pod(pod)
        assert not lease.exists(), "host-local still holds the address"
        assert not kept.exists()
        assert run("ip", "-n", a.name, "link", "show", host_veth, check=False).returncode != 0
        assert run("ip", "-n", pod.name, "link", "show", "eth0", check=False).returncode != 0
        assert not json.loads(
            run("ip", "-n", a.name, "-j", "link", "show", "master", a.bridge).stdout
        )
        # DEL again (the runtime retries): success, nothing to do
        network.pods.append(pod)
        network.del_pod(pod)
        # the address is free again: the next pod of the node may get it
        assert not [p for p in store.iterdir() if p.name == str(pod.address.ip)]
