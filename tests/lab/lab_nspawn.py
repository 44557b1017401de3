"""A lab machine: `systemd-nspawn --boot` of the cached Debian root
(lab_root.py), with systemd 252 as its PID 1.

    c = Container("t1234abcd-n1", workdir)      # workdir: upper/, work/, root/, console.log
    c.prepare()                                  # overlay over the cached root: c.root is writable
    ...write into c.root (lab: the Ignition applier)...
    c.boot(netns="nbl-t1234abcd-n1", binds=[("/host/file", "/opt/bin/x")])
    c.wait_running()                             # `systemctl is-system-running --wait`
    c.systemctl("is-active", "foo.service", check=False).stdout
    c.run("ip", "-o", "addr")                    # any command inside (nsenter -a)
    c.path("/run/nodeboot/claim.json")           # a path inside, read from the host
    c.kill()                                     # SIGKILL its PID 1: the machine is gone
    c.remove()                                   # kill, cgroups, overlay; idempotent

Facts measured here (systemd 252, no systemd as the host's PID 1, no system
bus): nspawn runs with `--register=no --keep-unit` from a cgroup of its own
(made here under nodeboot-lab/ in each hierarchy nspawn and the
container's systemd use); `machinectl` and `systemctl -M` cannot reach it,
so commands enter it with `nsenter -t LEADER -a`. With a network namespace
of the lab's, networkd needs CAP_NET_ADMIN; without one the container gets
a private network of its own. Boot to `running` takes under a second.
"""

import contextlib
import os
import re
import shutil
import signal
import time
from pathlib import Path

import lab_proc
import lab_root
from lab_proc import LabError, run

CGROUP_ROOT = Path("/sys/fs/cgroup")
CGROUP_DIR = "nodeboot-lab"
MACHINE_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")


def cgroup_hierarchies():
    """Where a container's cgroup goes: the unified hierarchy (cgroup v2),
    or the named systemd one plus the unified one of a hybrid host."""
    if (CGROUP_ROOT / "cgroup.controllers").exists():
        return [CGROUP_ROOT]
    found = [CGROUP_ROOT / "systemd"]
    if (CGROUP_ROOT / "unified/cgroup.procs").exists():
        found.append(CGROUP_ROOT / "unified")
    return found


def cgroups_of(machine):
    return [h / CGROUP_DIR / machine for h in cgroup_hierarchies()]


def cgroup_pids(path):
    pids = []
    for procs in Path(path).rglob("cgroup.procs"):
        try:
            pids += [int(p) for p in procs.read_text().split()]
        except OSError:
            pass
    return pids


def remove_cgroup(path):
    """Kills what is left in it and removes it, deepest first."""
    path = Path(path)
    if not path.exists():
        return
    deadline = time.monotonic() + 10
    while (pids := cgroup_pids(path)) and time.monotonic() < deadline:
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.05)
    for d in sorted((p for p in path.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
        try:
            d.rmdir()
        except OSError:
            pass
    try:
        path.rmdir()
    except OSError as err:
        raise LabError(f"cgroup {path} could not be removed: {err}") from None


def listed_cgroups():
    """Machine names with a cgroup under nodeboot-lab/ (in any hierarchy)."""
    names = set()
    for h in cgroup_hierarchies():
        d = h / CGROUP_DIR
        if d.is_dir():
            names |= {p.name for p in d.iterdir() if p.is_dir()}
    return sorted(names)


def is_mounted(path):
    path = os.path.realpath(path)
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        if line.split()[4].encode().decode("unicode_escape") == path:
            return True
    return False


class Container:
    """One booted machine. Its record (`state()`) holds every pid and path
    needed to remove it after a crash (`Container.from_state`)."""

    def __init__(self, machine, workdir, base=None):
        if not MACHINE_RE.fullmatch(machine):
            raise LabError(f"machine name {machine!r}: a-z, 0-9 and '-', at most 63")
        self.machine = machine
        self.dir = Path(workdir)
        self.base = Path(base) if base else None
        self.nspawn = None  # {"pid", "start"}
        self.leader = None  # {"pid", "start"}: the container's PID 1 (systemd)

    @property
    def root(self):
        return self.dir / "root"

    @property
    def console(self):
        return self.dir / "console.log"

    def state(self):
        return {
            "machine": self.machine,
            "dir": str(self.dir),
            "base": str(self.base) if self.base else None,
            "nspawn": self.nspawn,
            "leader": self.leader,
        }

    @classmethod
    def from_state(cls, s):
        c = cls(s["machine"], s["dir"], s.get("base"))
        c.nspawn, c.leader = s.get("nspawn"), s.get("leader")
        return c

    # --- before boot -------------------------------------------------------------

    def prepare(self):
        """The machine's own root: an overlay whose lower layer is the cached
        root (built on first use) and whose upper layer is this machine's
        disk, kept across reboots until remove().

        A new machine has no /etc/machine-id, as a Flatcar image has none:
        its first boot is then systemd's "first boot" (machine-id(5)), in
        which systemd 252 itself applies the presets, Ignition's
        `enable` lines among them (ignition_apply.py), and writes the id.
        Later boots keep it, as a Flatcar node's do."""
        if self.base is None:
            self.base = lab_root.ensure()
        new = not (self.dir / "upper").exists()
        for d in ("upper", "work", "root"):
            (self.dir / d).mkdir(parents=True, exist_ok=True)
        if not is_mounted(self.root):
            opts = f"lowerdir={self.base},upperdir={self.dir / 'upper'},workdir={self.dir / 'work'}"
            run(["mount", "-t", "overlay", "overlay", "-o", opts, self.root])
        if new:
            (self.root / "etc/machine-id").unlink(missing_ok=True)
        return self.root

    # --- boot ----------------------------------------------------------------------

    def boot(self, netns=None, binds=(), args=(), on_spawn=None, timeout=30):
        """Starts systemd-nspawn --boot in the background and waits until the
        container's PID 1 exists. binds: (host path, container path[, "rw"]).
        on_spawn(self) runs as soon as the pids are known (record them)."""
        if self.alive():
            raise LabError(f"machine {self.machine} is already running")
        if not is_mounted(self.root):
            self.prepare()
        self.nspawn = self.leader = None  # a previous boot's
        cgroups = cgroups_of(self.machine)
        for cg in cgroups:
            cg.mkdir(parents=True, exist_ok=True)
        net = [f"--network-namespace-path=/run/netns/{netns}"] if netns else ["--private-network"]
        bind_args = []
        for b in binds:
            flag = "--bind" if len(b) > 2 and b[2] == "rw" else "--bind-ro"
            bind_args.append(f"{flag}={b[0]}:{b[1]}")
        nspawn = [
            "systemd-nspawn",
            "--quiet",
            "--boot",
            f"--directory={self.root}",
            f"--machine={self.machine}",
            "--register=no",
            "--keep-unit",
            "--console=read-only",
            "--capability=CAP_NET_ADMIN",
            *net,
            *bind_args,
            *args,
        ]
        # The shell moves itself into the machine's cgroups, then becomes nspawn.
        wrapper = (
            'for f in "$@"; do [ "$f" = -- ] && break; echo $$ > "$f"; shift; done; '
            'shift; exec "$@"'
        )
        procs = [str(cg / "cgroup.procs") for cg in cgroups]
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "TERM": "dumb",
            "SYSTEMD_COLORS": "0",
        }
        self.nspawn = lab_proc.spawn(
            ["sh", "-c", wrapper, "sh", *procs, "--", *nspawn], log=self.console, env=env
        )
        if on_spawn:
            on_spawn(self)
        deadline = time.monotonic() + timeout
        while self.leader is None:
            pid = self._find_leader()
            if pid:
                self.leader = lab_proc.record(pid)
                break
            if not lab_proc.alive(self.nspawn):
                raise LabError(
                    f"systemd-nspawn for {self.machine} exited; {self.console}:\n"
                    f"{lab_proc.tail(self.console)}"
                )
            if time.monotonic() > deadline:
                raise LabError(f"machine {self.machine}: no PID 1 after {timeout}s")
            time.sleep(0.02)
        if on_spawn:
            on_spawn(self)
        return self.leader

    def _find_leader(self):
        """The child of nspawn that is PID 1 of its own PID namespace."""
        pid = self.nspawn["pid"]
        try:
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        except OSError:
            return None
        for child in children:
            try:
                status = Path(f"/proc/{child}/status").read_text()
            except OSError:
                continue
            m = re.search(r"^NSpid:\s+(.*)$", status, re.M)
            if m and m[1].split()[-1] == "1" and len(m[1].split()) > 1:
                return int(child)
        return None

    def alive(self):
        return lab_proc.alive(self.leader) or lab_proc.alive(self.nspawn)

    # --- inside ----------------------------------------------------------------------

    def _enter(self):
        if not lab_proc.alive(self.leader):
            raise LabError(f"machine {self.machine} is not running")
        return ["nsenter", "-t", str(self.leader["pid"]), "-a"]

    def run(self, *cmd, check=True, timeout=60, input=None):
        """A command inside the machine (all its namespaces), as root."""
        return run([*self._enter(), *cmd], check=check, timeout=timeout, input=input)

    def systemctl(self, *args, check=True, timeout=60):
        return self.run("systemctl", "--no-pager", *args, check=check, timeout=timeout)

    def journalctl(self, *args, check=True, timeout=60):
        return self.run("journalctl", "--no-pager", *args, check=check, timeout=timeout)

    def path(self, path):
        """A path inside the running machine, as the host sees it."""
        if not lab_proc.alive(self.leader):
            raise LabError(f"machine {self.machine} is not running")
        return Path(f"/proc/{self.leader['pid']}/root") / str(path).lstrip("/")

    def wait_running(self, timeout=120):
        """`systemctl is-system-running --wait`: the state once the boot's jobs
        are done ("running", or "degraded" when a unit failed)."""
        deadline = time.monotonic() + timeout
        while True:
            left = max(1, deadline - time.monotonic())
            out = self.systemctl("is-system-running", "--wait", check=False, timeout=left)
            state = out.stdout.strip()
            # "offline" (or nothing): PID 1 does not answer on its socket yet.
            if state not in ("offline", "") or time.monotonic() > deadline:
                return state
            time.sleep(0.05)

    def unit_property(self, unit, prop):
        out = self.systemctl("show", "--value", f"--property={prop}", unit)
        return out.stdout.strip()

    # --- the end -------------------------------------------------------------------------

    def kill(self):
        """SIGKILL the machine's PID 1: every process in it dies with it, its
        mounts go with its mount namespace. nspawn then exits."""
        if lab_proc.alive(self.leader):
            try:
                os.kill(self.leader["pid"], signal.SIGKILL)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 15
        while lab_proc.alive(self.leader) and time.monotonic() < deadline:
            time.sleep(0.02)
        lab_proc.kill(self.nspawn)
        for cg in cgroups_of(self.machine):
            remove_cgroup(cg)

    def poweroff(self, timeout=30):
        """A clean shutdown (SIGRTMIN+4 to systemd), SIGKILL after `timeout`."""
        if lab_proc.alive(self.leader):
            os.kill(self.leader["pid"], signal.SIGRTMIN + 4)
            deadline = time.monotonic() + timeout
            while lab_proc.alive(self.nspawn) and time.monotonic() < deadline:
                lab_proc.reap(self.nspawn)
                time.sleep(0.05)
        self.kill()

    def remove(self):
        """Everything of the machine but its files: processes, cgroups, the
        overlay mount. Idempotent; works from a record after a crash."""
        self.kill()
        if is_mounted(self.root):
            if run(["umount", self.root], check=False).returncode != 0:
                run(["umount", "--lazy", self.root], check=False)

    def leftovers(self):
        left = []
        if self.alive():
            left.append(f"machine {self.machine} (nspawn {self.nspawn})")
        left += [f"cgroup {cg}" for cg in cgroups_of(self.machine) if cg.exists()]
        if is_mounted(self.root):
            left.append(f"mount {self.root}")
        return left


def sweep(owned):
    """Removes the cgroups of every machine for which owned(name) is true
    (what a crash left unrecorded)."""
    for machine in listed_cgroups():
        if owned(machine):
            for cg in cgroups_of(machine):
                remove_cgroup(cg)


MACHINES = Path(os.environ.get("NODEBOOT_LAB_STATE_DIR", "/run/nodeboot-lab")) / "_machines"


@contextlib.contextmanager
def machine(name, setup=None, netns=None, binds=(), wait=True, timeout=120):
    """A booted machine for one test, removed (and its files deleted)
    however the block ends:

        with lab_nspawn.machine("t1234-chain", setup=write_units) as c:
            c.systemctl("is-active", "a.service", check=False)

    setup(root) writes into its root before the boot (units, files); with
    wait, the boot's jobs are done when the block starts (c.boot_state
    holds `is-system-running`). Without netns the machine has a private
    network with only lo."""
    c = Container(name, MACHINES / name)
    try:
        c.prepare()
        if setup:
            setup(c.root)
        c.boot(netns=netns, binds=binds)
        c.boot_state = c.wait_running(timeout) if wait else None
        yield c
    finally:
        c.remove()
        left = c.leftovers()
        shutil.rmtree(c.dir, ignore_errors=True)
        if left:
            raise LabError(f"machine {name}: could not remove {'; '.join(left)}")


def remove_all_machines(owned=lambda name: True):
    """Removes every bare machine that machine() left (its block was killed
    before its teardown ran); returns their names. For `lab.py down --all`."""
    removed = []
    for d in sorted(MACHINES.glob("*")) if MACHINES.is_dir() else []:
        if not owned(d.name):
            continue
        c = Container(d.name, d)
        c.remove()
        left = c.leftovers()
        if left:
            raise LabError(f"machine {d.name}: could not remove {'; '.join(left)}")
        shutil.rmtree(d, ignore_errors=True)
        removed.append(d.name)
    return removed
