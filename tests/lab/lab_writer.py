#!/usr/bin/env python3
"""A steady etcd writer for the lab: puts one key every INTERVAL through
etcd's JSON gateway (`POST /v3/kv/put`, TLS with the client certificate),
moving to the next endpoint when one fails, and reports every attempt.
Runs in the lab's router namespace (where the members' ENI addresses are
reachable); the test reads its lines.

    lab_writer.py put --endpoints URL,... --ca F --cert F --key F --prefix /w/ [--interval 0.05]
        stdout, one line per put: `ok KEY VALUE SECONDS` (acknowledged: etcd
        answered 200 with a header) or `fail KEY SECONDS REASON`; SECONDS is
        monotonic time at the answer. Stops on SIGTERM or stdin EOF.
    lab_writer.py load --endpoints ... --prefix /bench/ --count N [--size 100]
        puts N keys in transactions of 100, prints `loaded N REVISION`.

Standard library only. The host side is `Writer` (below)."""

import argparse
import base64
import http.client
import json
import os
import signal
import ssl
import subprocess
import sys
import threading
import time
import urllib.parse

TIMEOUT = 2.0  # seconds per request: an unanswered put counts as not acknowledged
TXN_OPS = 100  # etcd's --max-txn-ops defaults to 128


def b64(text):
    return base64.b64encode(text.encode()).decode()


class Gateway:
    """One keep-alive connection at a time, to the current endpoint."""

    def __init__(self, endpoints, ca, cert, key):
        self.endpoints = endpoints
        self.current = 0
        self.context = ssl.create_default_context(cafile=ca)
        self.context.load_cert_chain(cert, key)
        self.conn = None

    def _connect(self):
        url = urllib.parse.urlsplit(self.endpoints[self.current])
        self.conn = http.client.HTTPSConnection(
            url.hostname, url.port, context=self.context, timeout=TIMEOUT
        )

    def next_endpoint(self):
        if self.conn is not None:
            self.conn.close()
        self.conn = None
        self.current = (self.current + 1) % len(self.endpoints)

    def call(self, path, body):
        """The JSON answer; raises on any failure (then moves on)."""
        try:
            if self.conn is None:
                self._connect()
            self.conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
            r = self.conn.getresponse()
            data = r.read()
            if r.status != 200:
                raise OSError(f"HTTP {r.status}: {data[:200]!r}")
            answer = json.loads(data)
            if "header" not in answer:
                raise OSError(f"no header in {data[:200]!r}")
            return answer
        except (OSError, http.client.HTTPException, ValueError) as e:
            where = self.endpoints[self.current]
            self.next_endpoint()
            raise OSError(f"{where}: {e}") from e


def put_loop(gw, prefix, interval, stop):
    start = time.monotonic()
    i = 0
    while not stop.is_set():
        key, value = f"{prefix}{i:07}", f"v{i}-{os.urandom(4).hex()}"
        try:
            gw.call("/v3/kv/put", {"key": b64(key), "value": b64(value)})
            line = f"ok {key} {value} {time.monotonic():.3f}"
        except OSError as e:
            line = f"fail {key} {time.monotonic():.3f} {str(e).replace(chr(10), ' ')[:300]}"
        print(line, flush=True)
        i += 1
        delay = start + i * interval - time.monotonic()
        if delay > 0:
            stop.wait(delay)


def load(gw, prefix, count, size):
    value = b64("x" * size)
    done, revision = 0, 0
    while done < count:
        batch = range(done, min(count, done + TXN_OPS))
        ops = [{"requestPut": {"key": b64(f"{prefix}{i:07}"), "value": value}} for i in batch]
        for attempt in range(20):
            try:
                answer = gw.call("/v3/kv/txn", {"success": ops})
                revision = int(answer["header"]["revision"])
                break
            except OSError:
                if attempt == 19:
                    raise
                time.sleep(0.5)
        done += len(batch)
    print(f"loaded {done} {revision}", flush=True)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["put", "load"])
    p.add_argument("--endpoints", required=True)
    p.add_argument("--ca", required=True)
    p.add_argument("--cert", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--prefix", required=True)
    p.add_argument("--interval", type=float, default=0.05)
    p.add_argument("--count", type=int, default=0)
    p.add_argument("--size", type=int, default=100)
    a = p.parse_args()
    gw = Gateway(a.endpoints.split(","), a.ca, a.cert, a.key)
    if a.mode == "load":
        load(gw, a.prefix, a.count, a.size)
        return
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())

    def watch_stdin():
        sys.stdin.read()
        stop.set()

    threading.Thread(target=watch_stdin, daemon=True).start()
    put_loop(gw, a.prefix, a.interval, stop)


# --- the host side -------------------------------------------------------------


def command(lab, mode, members, prefix, *extra):
    pki = lab.etcd_pki
    import lab_net  # the host side only

    return [
        *lab_net.nsenter(lab.router),
        sys.executable,
        __file__,
        mode,
        "--endpoints",
        ",".join(lab.endpoints(members)),
        "--ca",
        str(pki / "ca.crt"),
        "--cert",
        str(pki / "client.crt"),
        "--key",
        str(pki / "client.key"),
        "--prefix",
        prefix,
        *map(str, extra),
    ]


def load_keys(lab, prefix, count, members=None, size=100):
    """Puts `count` keys under prefix (values of `size` bytes); returns the revision."""
    out = subprocess.run(
        command(lab, "load", members, prefix, "--count", count, "--size", size),
        capture_output=True,
        text=True,
        timeout=1800,
        check=True,
    )
    return int(out.stdout.split()[2])


class Writer:
    """A writer in the lab's router namespace; a context manager. After it
    stopped: `acked` {key: value} (etcd answered), `failed` (count), and
    `longest_gap()` (the longest time between two acknowledged puts, or
    from the start to the first one)."""

    def __init__(self, lab, members, prefix="/w/", interval=0.05):
        self.cmd = command(lab, "put", members, prefix, "--interval", interval)
        self.acked, self.failed, self.failures, self.times = {}, 0, [], []
        self.proc = None
        self.reader = None

    def __enter__(self):
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            self.cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        return self

    def _read(self):
        for line in self.proc.stdout:
            parts = line.split(" ", 3)
            if parts[0] == "ok":
                self.acked[parts[1]] = parts[2]
                self.times.append(float(parts[3]))
            elif parts[0] == "fail":
                self.failed += 1
                if len(self.failures) < 20:
                    self.failures.append(line.strip())

    def __exit__(self, *exc):
        self.stop()

    def stop(self):
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        self.reader.join(10)

    def count(self):
        return len(self.acked)

    def longest_gap(self):
        marks = [self.started, *self.times]
        return max((b - a for a, b in zip(marks, marks[1:], strict=False)), default=0.0)


if __name__ == "__main__":
    main()
