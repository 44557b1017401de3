#!/usr/bin/env python3
"""A full-size etcd database in the lab (issue 24, part 3): backup, verify,
restore and blank-volume rejoin of 1 and 2 GiB databases.

    sudo python3 bench/etcd-large.py [--gib 1,2] [--skip rejoin]

Each row builds a lab (tests/lab: three systemd machines booted from
etcd.ign, real etcd 3.5, the emulator) with volumes large enough (sparse
loop files), loads about GIB GiB of values of Kubernetes objects' sizes
(uniform 1 to 20 KB, and one value of 1.0 to 1.4 MB every 2,000 keys: the
largest etcd takes under its 1.5 MiB request limit), random bytes, in
transactions of at most 1 MB through the JSON gateway, then measures:

  backup      the leader's service log line of the first backup at or past
              the loaded revision (seconds=), the sealed object's size;
  RSS         the backup service's peak RSS (VmHWM of its process, which
              the interval change restarted just before);
  temp disk   the most the etcd volume's used space grew over the backup
              (sampled every 0.1 s from the host through /proc/PID/root);
  upload      sealed bytes over the upload's time: with a temporary file
              (format 2) from the moment the sealed file stopped growing to
              its removal; streamed (format 3) the whole backup is upload;
  verify      `nodeboot etcd verify-backup` on the host: time and the peak
              RSS of the nodeboot process itself (not of its scratch etcd);
  restore     `nodeboot etcd restore` until every member is healthy at the
              backup's revision (the RTO);
  rejoin      member 0's node killed, its volume replaced by a blank one, a
              replacement booted: launch until every member is healthy;
  host disk   the most the used space of the lab's filesystem (its loop
              files, verify-backup's download) grew over the row.

NODEBOOT_BIN picks the binary (use a release build: a debug build seals and
hashes ten times slower). --boot-bin boots the lab with another binary and
then puts NODEBOOT_BIN in its place (bind-mounted over /opt/bin/nodeboot in
every node, the backup services restarted; the operator commands and any
node booted later run it too): the bytes path of a build measured on a lab
that boots, whatever the rest of that build does. Prints a table; asserts
nothing on time. Root. See bench/README.md.
"""

import argparse
import base64
import json
import os
import random
import re
import shutil
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests/lab"))

UNIT = "nodeboot-etcd-backup.service"
PREFIX = "/bench/large/"
TXN_BYTES = 1_000_000
TXN_OPS = 100


def load(args):
    """Runs in the lab's router namespace: puts about args.bytes of values."""
    import lab_writer

    gw = lab_writer.Gateway(args.endpoints.split(","), args.ca, args.cert, args.key)
    lab_writer.TIMEOUT = 60
    rng = random.Random(24)
    total, i, revision = 0, 0, 0
    batch, batch_bytes = [], 0

    def flush():
        nonlocal revision, batch, batch_bytes
        for attempt in range(20):
            try:
                answer = gw.call("/v3/kv/txn", {"success": batch})
                revision = int(answer["header"]["revision"])
                break
            except OSError as e:
                if attempt == 19:
                    raise
                print(f"retrying: {e}", file=sys.stderr)
                time.sleep(0.5)
        batch, batch_bytes = [], 0

    while total < args.bytes:
        size = rng.randint(1_000_000, 1_400_000) if i % 2000 == 1999 else rng.randint(1000, 20_000)
        if batch and (batch_bytes + size > TXN_BYTES or len(batch) >= TXN_OPS):
            flush()
        key = base64.b64encode(f"{args.prefix}{i:08}".encode()).decode()
        value = base64.b64encode(os.urandom(size)).decode()
        batch.append({"requestPut": {"key": key, "value": value}})
        batch_bytes += size
        total += size
        i += 1
    if batch:
        flush()
    print(f"loaded {i} {revision} {total}", flush=True)


def load_in_lab(lab, target_bytes):
    import lab_net

    pki = lab.etcd_pki
    cmd = [
        *lab_net.nsenter(lab.router), sys.executable, __file__, "load",
        "--endpoints", ",".join(lab.endpoints()), "--ca", str(pki / "ca.crt"),
        "--cert", str(pki / "client.crt"), "--key", str(pki / "client.key"),
        "--prefix", PREFIX, "--bytes", str(target_bytes),
    ]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=7200, check=True)
    _, keys, revision, total = out.stdout.split()
    return int(keys), int(revision), int(total)


def operator(lab, *args, timeout=3600):
    cmd = [lab.bin, *args, "--env", lab.state["env_file"]]
    return subprocess.run(
        cmd, capture_output=True, text=True, env=lab.operator_env(), timeout=timeout
    )


def etcd_nodes(lab):
    return [
        k for k, n in lab.state["nodes"].items() if n["state"] == "running" and n["role"] == "etcd"
    ]


def set_interval(lab, interval):
    import lab_node

    for node in etcd_nodes(lab):
        lab.node_path(node, lab_node.BACKUP_ENV).write_text(
            f"NODEBOOT_ETCD_BACKUP_INTERVAL={interval}\nNODEBOOT_ETCD_BACKUP_POLL=500ms\n"
        )
        lab.node_run(node, "systemctl", "restart", UNIT)


def status(lab, member):
    out = lab.etcdctl("endpoint", "status", "-w", "json", members=[member], command_timeout="30s")
    return json.loads(out.stdout)[0]["Status"]


def leader_node(lab):
    s = status(lab, 0)
    for m in range(lab.state["etcd_count"]):
        if status(lab, m)["header"]["member_id"] == s["leader"]:
            return lab.node_of_member(m)
    raise SystemExit("no leader")


def vm_hwm(pid):
    """Peak RSS in bytes of a live process (host pid), or None."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    m = re.search(r"VmHWM:\s+(\d+) kB", text)
    return int(m.group(1)) * 1024 if m else None


class VolumeSampler:
    """Samples the used bytes of the node's etcd volume and the backup's
    work directory every 0.1 s from the host."""

    def __init__(self, lab, node):
        self.root = lab.node_path(node, "/var/lib/etcd")
        self.samples = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        while not self.stop.is_set():
            try:
                st = os.statvfs(self.root)
                files = {}
                work = self.root / "nodeboot-backup"
                for p in work.iterdir() if work.exists() else []:
                    try:
                        files[p.name] = p.stat().st_size
                    except OSError:
                        pass
                used = (st.f_blocks - st.f_bfree) * st.f_frsize
                self.samples.append((time.monotonic(), used, files))
            except OSError:
                pass
            self.stop.wait(0.1)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()

    def grew(self):
        used = [u for _, u, _ in self.samples]
        return max(used) - used[0] if used else None

    def upload_seconds(self):
        """Format 2: from the sealed file's last growth to its removal."""
        sealed = [(t, f) for t, _, f in self.samples]
        sizes = [
            (t, next((s for n, s in f.items() if n.endswith(".sealed.tmp")), None))
            for t, f in sealed
        ]
        present = [(t, s) for t, s in sizes if s is not None]
        if not present:
            return None
        final = present[-1][1]
        start = next(t for t, s in present if s == final)
        end = next((t for t, s in sizes if t > present[-1][0] and s is None), present[-1][0])
        return end - start


class HostDisk:
    """The most the filesystem of the lab's files (its loop-file volumes)
    grew over the row, sampled every second: what a size needs of the host's
    disk. Other processes' writes on that filesystem count too."""

    def __init__(self, path):
        self.path = path
        self.base = self.used()
        self.peak = self.base
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def used(self):
        st = os.statvfs(self.path)
        return (st.f_blocks - st.f_bfree) * st.f_frsize

    def run(self):
        while not self.stop.wait(1.0):
            self.peak = max(self.peak, self.used())

    def grew(self):
        self.stop.set()
        self.thread.join()
        return self.peak - self.base


def take_backup(lab, revision):
    """The first backup at or past `revision`, measured on whichever member
    took it (the leader, or another voter: README, "etcd backups")."""
    nodes = etcd_nodes(lab)
    samplers = {node: VolumeSampler(lab, node) for node in nodes}
    for sampler in samplers.values():
        sampler.__enter__()
    try:
        set_interval(lab, "2s")
        pids = {}
        for node in nodes:
            show = lab.node_run(node, "systemctl", "show", "-p", "MainPID", "--value", UNIT)
            pids[node] = host_pid_of(lab, node, int(show.stdout))
        peaks = dict.fromkeys(nodes, 0)
        deadline = time.monotonic() + 3600
        found, seconds, taker = [], None, None
        while seconds is None:
            if time.monotonic() > deadline:
                raise SystemExit("no backup after an hour")
            for node in nodes:
                peaks[node] = max(peaks[node], vm_hwm(pids[node]) or 0)
            if not found:
                listed = json.loads(
                    operator(lab, "etcd", "backups", "--output", "json").stdout or "[]"
                )
                found = [b for b in listed if b["revision"] >= revision]
            else:  # the log line follows the upload
                for node in nodes:
                    for line in lab.unit_journal(node, UNIT).splitlines():
                        if found[0]["id"] in line and "seconds=" in line:
                            seconds = float(re.search(r'seconds="?([0-9.]+)', line).group(1))
                            taker = node
            time.sleep(0.5)
    finally:
        for sampler in samplers.values():
            sampler.__exit__()
    set_interval(lab, "24h")
    sampler = samplers[taker]
    upload = sampler.upload_seconds()
    print(f"# backup taken by {taker}", file=sys.stderr)
    return {
        "backup": found[0],
        "backup_s": seconds,
        "rss": peaks[taker],
        "temp": sampler.grew(),
        "upload_s": upload if upload is not None else seconds,
    }


def host_pid_of(lab, node, pid):
    """The host's pid of a process a machine knows as `pid`."""
    leader = lab.container(lab.node(node)).leader["pid"]
    ns = os.readlink(f"/proc/{leader}/ns/pid")
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            if os.readlink(p / "ns/pid") != ns:
                continue
            nspid = re.search(r"NSpid:\s+(.*)", (p / "status").read_text()).group(1).split()
            if int(nspid[-1]) == pid:
                return int(p.name)
        except (OSError, AttributeError):
            continue
    raise SystemExit(f"no host pid for {node}'s {pid}")


def timed_with_rss(cmd, env):
    t = time.monotonic()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = 0
    out = {}

    def read():
        out["stdout"], out["stderr"] = proc.communicate()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    while proc.poll() is None:
        peak = max(peak, vm_hwm(proc.pid) or 0)
        time.sleep(0.05)
    reader.join()
    if proc.returncode != 0:
        print(out["stderr"][-3000:], file=sys.stderr)
        return None, peak
    return time.monotonic() - t, peak


def rejoin(lab):
    victim = lab.node_of_member(0)
    zone = lab.node(victim)["zone"]
    lab.kill_node(victim)
    lab.replace_volume(0)
    lab.wait_healthy(members=[1, 2], timeout=600)
    t = time.monotonic()
    # The lab's boot timeout (180 s) is for an empty database: a learner
    # takes its snapshot of GIB GiB before the promote unit ends the boot.
    node = lab.launch(zone, "etcd")
    report = lab.boot(node, timeout=1800)
    print(f"# rejoin boot, seconds: {report['seconds']}", file=sys.stderr)
    lab.wait_healthy(timeout=1800)
    return time.monotonic() - t


def switch_binary(lab, binary):
    """NODEBOOT_BIN in every running node and for what the lab runs next."""
    inside = "/var/lib/nodeboot-bench/nodeboot"
    for node in etcd_nodes(lab):
        dest = lab.node_path(node, inside)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(binary, dest)
        lab.node_run(node, "mount", "--bind", inside, "/opt/bin/nodeboot")
        lab.node_run(node, "systemctl", "restart", UNIT)
    lab.state["binary"] = str(binary)
    lab.save()


def run_row(gib, skip, boot_bin):
    import lab as lablib

    # Sparse: the database, its WAL, and a restore's copies (the old data
    # kept aside, the restored data, format 2's sealed and opened files).
    lablib.VOLUME_MB = max(4096, int(gib * 1024 * 8))
    name = f"lg{uuid.uuid4().hex[:7]}"
    binary = lablib.nodeboot_binary()
    lablib.DATA_ROOT.mkdir(parents=True, exist_ok=True)
    disk = HostDisk(lablib.DATA_ROOT)
    if boot_bin:
        os.environ["NODEBOOT_BIN"] = boot_bin
    try:
        lab = lablib.Lab.up(name)
    except Exception:
        lablib.Lab.load(name).down()
        raise
    finally:
        os.environ["NODEBOOT_BIN"] = str(binary)
    try:
        if boot_bin:
            switch_binary(lab, binary)
        set_interval(lab, "24h")  # no backup while loading
        t = time.monotonic()
        keys, revision, loaded = load_in_lab(lab, int(gib * 2**30))
        load_s = time.monotonic() - t
        db = status(lab, 0)["dbSize"]
        print(
            f"# {gib} GiB: {keys} keys, {loaded} bytes of values, DB {db}, {load_s:.0f} s",
            file=sys.stderr,
        )
        row = {"gib": gib, "keys": keys, "db": db, "load_s": load_s}
        row.update(take_backup(lab, revision))
        print(f"# backup: {row}", file=sys.stderr, flush=True)
        etcd_bin = Path(lablib.ETCD).parent
        verify_cmd = [
            lab.bin, "etcd", "verify-backup", "--env", lab.state["env_file"],
            "--backup", row["backup"]["id"],
            f"--etcd={etcd_bin / 'etcd'}", f"--etcdutl={etcd_bin / 'etcdutl'}",
        ]  # fmt: skip
        row["verify_s"], row["verify_rss"] = timed_with_rss(verify_cmd, lab.operator_env())
        print(f"# verify: {row['verify_s']} s, {row['verify_rss']} B", file=sys.stderr, flush=True)
        row["restore_s"] = None
        if "restore" not in skip:
            t = time.monotonic()
            out = operator(
                lab, "etcd", "restore", "--backup", row["backup"]["id"], "--timeout", "3600s"
            )
            row["restore_s"] = time.monotonic() - t if out.returncode == 0 else None
            print(f"# restore: {row['restore_s']} s", file=sys.stderr)
            print(
                "\n".join(line for line in out.stderr.splitlines() if line.startswith("[")),
                file=sys.stderr,
            )
            lab.wait_healthy(timeout=600)
        row["rejoin_s"] = None if "rejoin" in skip else rejoin(lab)
        row["host_disk"] = disk.grew()
        print(f"# row: {row}", file=sys.stderr, flush=True)
        return row
    finally:
        lab.down()
        disk.stop.set()


def fmt(v, unit, scale=1.0, digits=1):
    return "not run" if v is None else f"{v / scale:.{digits}f} {unit}"


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "load":
        p = argparse.ArgumentParser()
        p.add_argument("mode")
        for name in ("--endpoints", "--ca", "--cert", "--key", "--prefix"):
            p.add_argument(name, required=True)
        p.add_argument("--bytes", type=int, required=True)
        return load(p.parse_args())
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--gib", default="1,2", help="database sizes in GiB, comma-separated")
    p.add_argument("--skip", default="", help="restore,rejoin: parts not to run")
    p.add_argument("--boot-bin", default="", help="the binary the lab boots with (see above)")
    a = p.parse_args()
    import lab as lablib

    problems = lablib.preflight()
    if problems:
        sys.exit("the lab cannot run here:\n  " + "\n  ".join(problems))
    print(f"# binary: {lablib.nodeboot_binary()}", file=sys.stderr)
    rows = [run_row(float(g), a.skip.split(","), a.boot_bin) for g in a.gib.split(",")]
    head = (
        "DB", "keys", "backup", "sealed", "service peak RSS", "temp disk on the volume",
        "upload", "verify-backup", "verify peak RSS", "restore (RTO)", "blank-volume rejoin",
        "host disk at most",
    )  # fmt: skip
    print("| " + " | ".join(head) + " |")
    print("|" + " --- |" * len(head))
    for r in rows:
        size = r["backup"]["bytes"]
        cells = (
            fmt(r["db"], "MiB", 2**20, 0),
            f"{r['keys']:,}",
            fmt(r["backup_s"], "s"),
            fmt(size, "MiB", 2**20, 0),
            fmt(r["rss"], "MiB", 2**20),
            fmt(r["temp"], "MiB", 2**20, 0),
            fmt(size / r["upload_s"] if r["upload_s"] else None, "MiB/s", 2**20),
            fmt(r["verify_s"], "s"),
            fmt(r["verify_rss"], "MiB", 2**20),
            fmt(r["restore_s"], "s"),
            fmt(r["rejoin_s"], "s"),
            fmt(r["host_disk"], "GB", 1e9),
        )
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
