#!/usr/bin/env python3
"""A disk image on FUSE whose reads fail where told: a volume that cannot be read.

    python3 tests/bed/faulty_disk.py --mount DIR --size BYTES [--bad START:END ...] [--writes FILE]

Mounts a FUSE filesystem on DIR holding one file, `disk`, of BYTES bytes
that reads as zeros (a fresh EBS volume), except that any read touching
[START, END) fails with EIO, as a disk with bad sectors does. Writes are
kept in memory (reads of written bytes return them) and each is logged to
FILE as `OFFSET LENGTH`, so a test can prove nothing was written. A loop
device over DIR/disk is a block device whose reads fail in the kernel
(`Buffer I/O error`), what the device-mapper `error` target gives where
the kernel has device-mapper (this machine's has not).

Prints `READY DIR/disk` once mounted; unmounts and exits when its stdin
closes or on SIGTERM. Needs root and /dev/fuse. See tests/README.md.
"""

import argparse
import errno
import os
import signal
import stat
import subprocess
import sys
import threading

from fuse import FUSE, FuseOSError, Operations

BLOCK = 4096


class FaultyDisk(Operations):
    def __init__(self, size, bad, writes, ready):
        self.size = size
        self.bad = bad
        self.writes = writes
        self.ready = ready
        self.blocks = {}  # block index -> bytearray(BLOCK)
        self.mutex = threading.Lock()

    def init(self, path):
        self.ready()

    def getattr(self, path, fh=None):
        if path == "/":
            return {"st_mode": stat.S_IFDIR | 0o755, "st_nlink": 2}
        if path == "/disk":
            return {"st_mode": stat.S_IFREG | 0o600, "st_nlink": 1, "st_size": self.size}
        raise FuseOSError(errno.ENOENT)

    def readdir(self, path, fh):
        return [".", "..", "disk"]

    def open(self, path, flags):
        if path != "/disk":
            raise FuseOSError(errno.ENOENT)
        return 0

    def read(self, path, size, offset, fh):
        end = min(offset + size, self.size)
        if any(offset < b and end > a for a, b in self.bad):
            raise FuseOSError(errno.EIO)
        out = bytearray(max(0, end - offset))
        with self.mutex:
            for index in range(offset // BLOCK, (end + BLOCK - 1) // BLOCK):
                block = self.blocks.get(index)
                if block is None:
                    continue
                start = index * BLOCK
                lo, hi = max(start, offset), min(start + BLOCK, end)
                out[lo - offset : hi - offset] = block[lo - start : hi - start]
        return bytes(out)

    def write(self, path, data, offset, fh):
        if offset + len(data) > self.size:
            raise FuseOSError(errno.ENOSPC)
        with self.mutex:
            with open(self.writes, "a") as log:
                log.write(f"{offset} {len(data)}\n")
            for i, byte_offset in enumerate(range(offset, offset + len(data))):
                index, within = divmod(byte_offset, BLOCK)
                self.blocks.setdefault(index, bytearray(BLOCK))[within] = data[i]
        return len(data)

    def truncate(self, path, length, fh=None):
        raise FuseOSError(errno.EPERM)


def parse_range(text):
    start, end = (int(x) for x in text.split(":"))
    if not 0 <= start < end:
        raise argparse.ArgumentTypeError(f"{text}: want START:END with 0 <= START < END")
    return start, end


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mount", required=True)
    p.add_argument("--size", type=int, required=True)
    p.add_argument("--bad", type=parse_range, action="append", default=[])
    p.add_argument("--writes", default=os.devnull)
    args = p.parse_args()
    mount = os.path.abspath(args.mount)

    def ready():
        print(f"READY {mount}/disk", flush=True)

    def unmount(*_):
        subprocess.run(["umount", "-l", mount], check=False)

    def watch_stdin():
        sys.stdin.buffer.read()
        unmount()

    signal.signal(signal.SIGTERM, unmount)
    threading.Thread(target=watch_stdin, daemon=True).start()
    # direct_io: every read reaches this process, none is served from a cache.
    FUSE(FaultyDisk(args.size, args.bad, args.writes, ready), mount, foreground=True, direct_io=True, nothreads=False)


if __name__ == "__main__":
    main()
