"""The root file system every lab node boots: Debian's minbase with systemd,
built once by debootstrap and cached outside the repository.

The cache's name holds a hash of the package list and of this file, so a
change to either builds a new root. Building takes a lock, works in a
temporary directory and renames it into place at the end: parallel tests
build it once, and a killed build leaves no half root behind.

The mirror and suite come from the machine's apt sources, read at run time.
"""

import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from lab_proc import LabError, run

CACHE = Path(os.environ.get("NODEBOOT_CACHE_DIR", "/var/cache/nodeboot"))
# ca-certificates: the AWS SDK refuses to start without a root store (Flatcar has one).
PACKAGES = [
    "systemd",
    "systemd-sysv",
    "dbus",
    "iproute2",
    "e2fsprogs",
    "util-linux",
    "ca-certificates",
]

# Flatcar's /usr/lib/systemd/network/zz-default.network (flatcar/init), with
# the lab's two differences: its `Driver=!veth` is gone, as the lab's NICs
# are veths (EC2's are ena), and IPv6 is off, as the lab's VPC has none
# (router advertisements never come, and network-online.target would wait
# for them).
ZZ_DEFAULT_NETWORK = """\
# Flatcar's zz-default.network for the lab (tests/lab/lab_root.py says what differs).
[Network]
DHCP=ipv4
KeepConfiguration=dhcp-on-stop
IPv6AcceptRA=no
LinkLocalAddressing=no

[Match]
Name=*
Type=!loopback dummy bridge tunnel vxlan wireguard

[DHCP]
UseMTU=true
UseDomains=true

[DHCPv4]
RoutesToDNS=false
"""

# Units of a Debian root that a lab node has no use for: they only slow its
# boot or fail in a container.
MASKED = [
    "console-getty.service",
    "getty@.service",
    "systemd-timesyncd.service",
    "apt-daily.timer",
    "apt-daily-upgrade.timer",
    "e2scrub_all.timer",
    "e2scrub_reap.service",
    "fstrim.timer",
]


def apt_source():
    """(mirror URL, suite) of the first Debian main archive in apt's sources."""
    entries = []
    for f in sorted(Path("/etc/apt/sources.list.d").glob("*.sources")):
        for stanza in re.split(r"\n\s*\n", f.read_text()):
            fields = dict(
                (k.strip().lower(), v.strip())
                for k, _, v in (line.partition(":") for line in stanza.splitlines())
                if v and not k.startswith("#")
            )
            if "deb" in fields.get("types", "").split():
                for uri in fields.get("uris", "").split():
                    for suite in fields.get("suites", "").split():
                        entries.append((uri, suite, fields.get("components", "").split()))
    lists = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*.list"))]
    for f in lists:
        if not f.exists():
            continue
        for line in f.read_text().splitlines():
            m = re.match(r"\s*deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+(\S+)\s+(.*)", line)
            if m:
                entries.append((m[1], m[2], m[3].split()))
    for uri, suite, components in entries:
        if "main" in components and "-" not in suite and "security" not in uri:
            return uri, suite
    raise LabError("no Debian main archive in /etc/apt/sources.list{,.d}: cannot debootstrap")


# Bump when build() changes what it makes; the cache key covers it and
# every input below, so a changed input builds a new root (and an edit that
# changes nothing built, a comment or formatting, does not).
RECIPE = 1


def key():
    inputs = [str(RECIPE), *PACKAGES, ZZ_DEFAULT_NETWORK, *MASKED]
    return hashlib.sha256("\0".join(inputs).encode()).hexdigest()[:12]


def path():
    return CACHE / f"nspawn-root-{key()}"


def ensure(log=sys.stderr):
    """The cached root's path, built first if missing (about a minute)."""
    root = path()
    if (root / ".complete").exists():
        return root
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / "nspawn-root.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (root / ".complete").exists():
            return root
        for old in CACHE.glob(f"{root.name}.tmp-*"):
            shutil.rmtree(old, ignore_errors=True)  # a build that was killed
        tmp = CACHE / f"{root.name}.tmp-{os.getpid()}"
        started = time.monotonic()
        print(f"lab: building the node root {root} (debootstrap, once)", file=log, flush=True)
        try:
            build(tmp)
            (tmp / ".complete").write_text(f"built in {time.monotonic() - started:.0f}s\n")
            os.rename(tmp, root)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        print(f"lab: node root built in {time.monotonic() - started:.0f}s", file=log, flush=True)
    return root


def build(tmp):
    mirror, suite = apt_source()
    out = subprocess.run(
        [
            "debootstrap",
            "--variant=minbase",
            f"--include={','.join(PACKAGES)}",
            suite,
            str(tmp),
            mirror,
        ],
        capture_output=True,
        text=True,
        timeout=1200,
    )
    if out.returncode != 0:
        tail = (out.stdout + out.stderr).strip()[-3000:]
        debootstrap_log = tmp / "debootstrap/debootstrap.log"
        if debootstrap_log.exists():
            tail += "\n" + debootstrap_log.read_text(errors="replace")[-3000:]
        raise LabError(f"debootstrap {suite} failed (exit {out.returncode}):\n{tail}")
    network = tmp / "usr/lib/systemd/network/zz-default.network"
    network.write_text(ZZ_DEFAULT_NETWORK)
    run(["systemctl", f"--root={tmp}", "enable", "systemd-networkd.service"])
    run(["systemctl", f"--root={tmp}", "mask", *MASKED])
    # Each node gets its own machine id (lab_node), as an instance does.
    (tmp / "etc/machine-id").write_text("")
    for d in ("var/cache/apt/archives", "var/lib/apt/lists"):
        for f in (tmp / d).glob("*"):
            if f.is_file():
                f.unlink()


if __name__ == "__main__":
    print(ensure())
