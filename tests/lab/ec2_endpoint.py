#!/usr/bin/env python3
"""The lab's EC2 API endpoint inside its VPC, as an interface endpoint would be.

    python3 tests/lab/ec2_endpoint.py --netns ROUTER --listen 10.80.0.10:80 --to 127.0.0.1:PORT
    # stdout: READY http://10.80.0.10:80

The emulator (tests/bed/aws_server.py) listens on the host's 127.0.0.1 only,
which a node's network namespace cannot reach, yet the stages run inside the
node (the etcd stage must: with --exec it becomes etcd, which binds the ENI's
address). This process listens in the router's namespace, which every node
reaches through its default route, and forwards each TCP connection to the
emulator in the host's namespace: a socket belongs to the namespace it was
created in, so the listening socket is made after setns(2) into the router,
and the process switches back before it accepts anything.

Same contract as the bed's servers (tests/bed/lifecycle.py): one READY line,
SIGTERM stops it, so does EOF on a stdin pipe. Standard library only.
"""

import argparse
import ctypes
import os
import socket
import socketserver
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bed"))
from lifecycle import claim_stdout, serve_until_stopped  # noqa: E402

CLONE_NEWNET = 0x40000000


def setns(fd):
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


def pump(src, dst):
    """Copy one direction until EOF, then pass the EOF on."""
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        try:
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass


class Forward(socketserver.BaseRequestHandler):
    def handle(self):
        try:
            upstream = socket.create_connection(self.server.target, timeout=10)
        except OSError as err:
            print(f"ec2_endpoint: cannot reach {self.server.target}: {err}", file=sys.stderr)
            return
        upstream.settimeout(None)
        back = threading.Thread(target=pump, args=(upstream, self.request), daemon=True)
        back.start()
        pump(self.request, upstream)
        back.join()
        upstream.close()


class Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


def parse_hostport(text):
    host, _, port = text.rpartition(":")
    return host, int(port)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--netns", required=True, help="network namespace to listen in")
    parser.add_argument("--listen", required=True, help="HOST:PORT in that namespace")
    parser.add_argument("--to", required=True, help="HOST:PORT in this process' namespace")
    args = parser.parse_args(argv)
    ready_out = claim_stdout()
    home = os.open("/proc/self/ns/net", os.O_RDONLY)
    there = os.open(f"/run/netns/{args.netns}", os.O_RDONLY)
    setns(there)
    try:
        server = Server(parse_hostport(args.listen), Forward)
    finally:
        setns(home)
        os.close(there)
        os.close(home)
    server.target = parse_hostport(args.to)
    host, port = server.server_address[:2]
    serve_until_stopped(server, f"http://{host}:{port}", ready_out)


if __name__ == "__main__":
    main()
