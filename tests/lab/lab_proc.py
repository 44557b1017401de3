"""Commands and long-running processes of the lab.

A process the lab starts is recorded as {"pid", "start"} (the start time from
/proc/PID/stat), so `down` after a crash, or after a reboot that recycled the
pid, never signals a process that is not the one it started.
"""

import os
import signal
import subprocess
import time
from pathlib import Path

# Children started by this Python process, reaped after a kill so that no
# zombie outlives the test that made it.
_children = {}


class LabError(Exception):
    """Something the lab could not do; the message says what and why."""


def run(cmd, *, check=True, timeout=180, env=None, input=None):
    """Runs cmd, returns CompletedProcess (text). Raises LabError naming the command."""
    try:
        out = subprocess.run(
            [str(c) for c in cmd],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired as err:
        raise LabError(f"{' '.join(map(str, cmd))}: no answer within {timeout}s") from err
    if check and out.returncode != 0:
        raise LabError(
            f"{' '.join(map(str, cmd))}: exit {out.returncode}: "
            f"{(out.stderr or out.stdout).strip()[-2000:]}"
        )
    return out


def start_time(pid):
    """The process' start time in clock ticks, or None if it is gone (or a zombie)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def record(pid):
    return {"pid": pid, "start": start_time(pid)}


def alive(rec):
    return bool(rec) and rec.get("start") is not None and start_time(rec["pid"]) == rec["start"]


def kill(rec, sig=signal.SIGKILL, wait=10.0):
    """Signals the recorded process (and its process group, when it leads one)
    and waits until it is gone. A process that is not ours is left alone."""
    if not alive(rec):
        _reap(rec)
        return
    pid = rec["pid"]
    try:
        if os.getpgid(pid) == pid:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + wait
    while alive(rec) and time.monotonic() < deadline:
        _reap(rec)
        time.sleep(0.02)
    _reap(rec)
    if alive(rec):
        raise LabError(f"process {pid} survived signal {sig}")


def reap(rec):
    """Collects the exit status of a child of ours that has ended."""
    _reap(rec)


def _reap(rec):
    child = _children.get(rec.get("pid")) if rec else None
    if child is not None and child.poll() is not None:
        del _children[rec["pid"]]


def spawn(cmd, *, log, env=None, stdout=None):
    """Starts a process that outlives this one (own session, stdin /dev/null),
    output to `log`; returns its record."""
    with open(log, "ab") as err, open(stdout or log, "ab") as out:
        child = subprocess.Popen(
            [str(c) for c in cmd],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            env=env,
            start_new_session=True,
        )
    _children[child.pid] = child
    return record(child.pid)


def start_server(cmd, *, ready, log, on_spawn, timeout=60.0):
    """Starts a bed-style server (one `READY url` line on stdout) and returns
    its url. stdin is /dev/null, so it keeps running after the lab's command
    exits; `on_spawn(record)` is called at once, so that the record is saved
    before anything can crash, and `down` stops the server by it."""
    Path(ready).unlink(missing_ok=True)
    rec = spawn(cmd, log=log, stdout=ready)
    on_spawn(rec)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = Path(ready).read_text() if Path(ready).exists() else ""
        if line.startswith("READY ") and line.endswith("\n"):
            return line.split(" ", 1)[1].strip()
        if not alive(rec):
            break
        time.sleep(0.02)
    kill(rec)
    raise LabError(f"{' '.join(map(str, cmd))} did not get ready; its log:\n{tail(log)}")


def tail(path, lines=30):
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError as err:
        return f"({path}: {err})"


def exe(pid):
    try:
        return os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return None
