#!/usr/bin/env python3
"""A double of EC2's instance metadata service, IMDSv2 only.

    python3 tests/bed/imds.py --listen 127.0.0.1:0 --identity FILE [--fault MODE]

Prints `READY http://HOST:PORT` on stdout once listening, logs to stderr,
exits 0 on SIGTERM or when its stdin pipe closes. Works as well with
`--listen 169.254.169.254:80` inside a network namespace that has that
address. The identity FILE is re-read on every request, so a test can change
the node (add the MAC of a hot-plugged ENI, switch "fault") while it runs.
Standard library only. See tests/README.md for the identity shape.
"""

import argparse
import json
import os
import secrets
import sys
import threading
import time
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from lifecycle import claim_stdout, serve_until_stopped

FAULTS = ("none", "no-token", "garbage", "404", "slow")
TOKEN_PATH = "/latest/api/token"
TTL_HEADER = "X-aws-ec2-metadata-token-ttl-seconds"
TOKEN_HEADER = "X-aws-ec2-metadata-token"
MAX_TTL = 21600  # six hours, EC2's limit


class Tokens:
    """Session tokens and when they expire (monotonic clock)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.expiry = {}

    def issue(self, ttl):
        token = secrets.token_urlsafe(42)
        now = time.monotonic()
        with self.lock:
            self.expiry = {t: e for t, e in self.expiry.items() if e > now}  # drop the dead
            self.expiry[token] = now + ttl
        return token

    def valid(self, token):
        if not token:
            return False
        with self.lock:
            expiry = self.expiry.get(token)
            if expiry is not None and expiry <= time.monotonic():
                del self.expiry[token]
                expiry = None
        return expiry is not None


# --- the metadata tree, a pure function of the identity file ----------------

_DIRECTIONS = {
    "east": "e", "west": "w", "north": "n", "south": "s", "central": "c",
    "northeast": "ne", "northwest": "nw", "southeast": "se", "southwest": "sw",
}  # fmt: skip


def _zone_id(region, zone):
    """eu-west-1a -> euw1-az1. Real zone ids vary per account; tests may set one."""
    area, direction, number = region.split("-", 2)
    letter = zone[len(region) :] or "a"
    return f"{area}{_DIRECTIONS.get(direction, direction[:1])}{number}-az{ord(letter[0]) - 96}"


def _hostname(region, private_ip):
    domain = "ec2.internal" if region == "us-east-1" else f"{region}.compute.internal"
    return f"ip-{private_ip.replace('.', '-')}.{domain}"


def _interface_tree(interface):
    return {
        "device-number": str(interface["device_number"]),
        "interface-id": interface["interface_id"],
        "local-ipv4s": "\n".join(interface.get("local_ipv4s", [])),
        "mac": interface["mac"],
        "subnet-id": interface.get("subnet_id", ""),
        "subnet-ipv4-cidr-block": interface.get("subnet_ipv4_cidr_block", ""),
        "vpc-id": interface.get("vpc_id", ""),
    }


def _primary(interfaces):
    for interface in interfaces:
        if int(interface["device_number"]) == 0:
            return interface
    raise KeyError("no interface with device_number 0")


def identity_document(identity, region, private_ip, pending_time):
    """The JSON of /latest/dynamic/instance-identity/document, laid out as EC2's."""
    document = {
        "accountId": identity.get("account_id", "123456789012"),
        "architecture": identity.get("architecture", "x86_64"),
        "availabilityZone": identity["availability_zone"],
        "billingProducts": None,
        "devpayProductCodes": None,
        "marketplaceProductCodes": None,
        "imageId": identity.get("image_id", "ami-0123456789abcdef0"),
        "instanceId": identity["instance_id"],
        "instanceType": identity.get("instance_type", "t3.medium"),
        "kernelId": None,
        "pendingTime": identity.get("pending_time", pending_time),
        "privateIp": private_ip,
        "ramdiskId": None,
        "region": region,
        "version": "2017-09-30",
    }
    return json.dumps(document, indent=2, separators=(",", " : "))


def metadata_tree(identity, pending_time):
    """Directories are dicts, files are strings; keyed as under /latest/."""
    zone = identity["availability_zone"]
    region = identity.get("region") or zone[:-1]
    interfaces = identity.get("interfaces", [])
    primary = _primary(interfaces)
    private_ip = identity.get("private_ip") or primary["local_ipv4s"][0]
    hostname = identity.get("hostname") or _hostname(region, private_ip)
    tree = {
        "meta-data": {
            "ami-id": identity.get("image_id", "ami-0123456789abcdef0"),
            "hostname": hostname,
            "instance-id": identity["instance_id"],
            "instance-type": identity.get("instance_type", "t3.medium"),
            "local-hostname": hostname,
            "local-ipv4": private_ip,
            "mac": primary["mac"],
            "placement": {
                "availability-zone": zone,
                "availability-zone-id": identity.get("availability_zone_id")
                or _zone_id(region, zone),
                "region": region,
            },
            "network": {"interfaces": {"macs": {i["mac"]: _interface_tree(i) for i in interfaces}}},
        },
        "dynamic": {
            "instance-identity": {
                "document": identity_document(identity, region, private_ip, pending_time)
            }
        },
    }
    if identity.get("iam"):
        tree["meta-data"]["iam"] = iam_tree(identity, pending_time)
    return tree


def iam_tree(identity, pending_time):
    """The instance profile's role credentials, as EC2 serves them under
    meta-data/iam/ (the SDKs' default credential chain reads them)."""
    iam = identity["iam"]
    role = iam["role"]
    account = identity.get("account_id", "123456789012")
    expires = datetime.fromtimestamp(time.time() + MAX_TTL, timezone.utc)
    credentials = {
        "Code": "Success",
        "LastUpdated": pending_time,
        "Type": "AWS-HMAC",
        "AccessKeyId": iam["access_key_id"],
        "SecretAccessKey": iam["secret_access_key"],
        "Token": iam.get("token", ""),
        "Expiration": expires.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    info = {
        "Code": "Success",
        "LastUpdated": pending_time,
        "InstanceProfileArn": f"arn:aws:iam::{account}:instance-profile/{role}",
        "InstanceProfileId": iam.get("profile_id", "AIPAEXAMPLEPROFILE0001"),
    }
    return {
        "info": json.dumps(info, indent=2),
        "security-credentials": {role: json.dumps(credentials, indent=2)},
    }


def lookup(tree, path):
    """Text at a /latest/... path: a file's value or a directory listing; None if absent."""
    if path.rstrip("/") == "/latest":
        node = tree
    elif path.startswith("/latest/"):
        node = tree
        for part in filter(None, path[len("/latest/") :].split("/")):
            if not isinstance(node, dict) or part not in node:
                return None
            node = node[part]
    else:
        return None
    if isinstance(node, dict):
        # EC2 lists one key per line, sub-directories with a trailing slash.
        return "\n".join(k + "/" if isinstance(v, dict) else k for k, v in node.items())
    return node


# --- HTTP --------------------------------------------------------------------


class ImdsServer(ThreadingHTTPServer):
    daemon_threads = True  # a `slow` answer in flight must not delay exit

    def __init__(self, address, identity_path, fault, slow_seconds):
        super().__init__(address, ImdsHandler)
        self.identity_path = identity_path
        self.fault = fault
        self.slow_seconds = slow_seconds
        self.tokens = Tokens()
        self.pending_time = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")

    def read_identity(self):
        with open(self.identity_path, encoding="utf-8") as f:
            return json.load(f)


class ImdsHandler(BaseHTTPRequestHandler):
    # Headers and body go out in separate writes: without TCP_NODELAY each
    # answer on a kept-alive connection waits ~40 ms for Nagle's algorithm.
    disable_nagle_algorithm = True
    protocol_version = "HTTP/1.1"
    server_version = "EC2ws"
    sys_version = ""

    def reply(self, status, body=b"", headers=()):
        data = body.encode() if isinstance(body, str) else body
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(data)))
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def discard_body(self):
        # HTTP/1.1 keep-alive: an unread body would be parsed as the next request.
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)

    def begin(self):
        """Read the identity and apply the fault's delay; None after a 500."""
        self.discard_body()
        try:
            identity = self.server.read_identity()
        except (OSError, ValueError) as err:
            self.reply(500, f"identity file unreadable: {err}")
            return None
        fault = identity.get("fault") or self.server.fault
        if fault not in FAULTS:
            self.reply(500, f"unknown fault {fault!r}")
            return None
        if fault == "slow":
            time.sleep(self.server.slow_seconds)
        return identity, fault

    def do_PUT(self):
        begun = self.begin()
        if begun is None:
            return
        _, fault = begun
        if self.path != TOKEN_PATH:
            return self.reply(404, "Not Found")
        if fault == "no-token":
            return self.reply(403, "Forbidden")
        if "X-Forwarded-For" in self.headers:
            return self.reply(403, "Forbidden")  # EC2 refuses proxied token requests
        ttl = _parse_ttl(self.headers.get(TTL_HEADER))
        if ttl is None:
            return self.reply(400, "Bad Request")
        token = self.server.tokens.issue(ttl)
        self.reply(200, token, [(TTL_HEADER, str(ttl))])

    def do_GET(self):
        begun = self.begin()
        if begun is None:
            return
        identity, fault = begun
        if fault == "garbage":
            return self.reply(200, os.urandom(1 + secrets.randbelow(64)))
        if not self.server.tokens.valid(self.headers.get(TOKEN_HEADER)):
            return self.reply(401, "Unauthorized")
        if fault == "404":
            return self.reply(404, "Not Found")
        try:
            tree = metadata_tree(identity, self.server.pending_time)
        except (KeyError, IndexError, TypeError, ValueError) as err:
            return self.reply(500, f"identity file incomplete: {err!r}")
        body = lookup(tree, self.path.split("?", 1)[0])
        if body is None:
            return self.reply(404, "Not Found")
        self.reply(200, body)

    def refuse(self):
        self.discard_body()
        self.reply(405, "Method Not Allowed", [("Allow", "GET, PUT")])

    do_POST = do_DELETE = do_PATCH = refuse


def _parse_ttl(value):
    try:
        ttl = int(value)
    except (TypeError, ValueError):
        return None
    return ttl if 1 <= ttl <= MAX_TTL else None


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--listen", default="127.0.0.1:0", help="HOST:PORT, port 0 = free")
    parser.add_argument("--identity", required=True, help="JSON file, re-read per request")
    parser.add_argument("--fault", choices=FAULTS, default="none")
    parser.add_argument("--slow-seconds", type=float, default=30.0, help="how long `slow` stalls")
    args = parser.parse_args(argv)
    host, _, port = args.listen.rpartition(":")
    if not host or not port.isdigit():
        parser.error("--listen wants HOST:PORT")
    args.address = (host, int(port))
    return args


def main(argv=None):
    args = parse_args(argv if argv is not None else sys.argv[1:])
    ready_out = claim_stdout()
    server = ImdsServer(args.address, args.identity, args.fault, args.slow_seconds)
    host, port = server.server_address[:2]
    serve_until_stopped(server, f"http://{host}:{port}", ready_out)


if __name__ == "__main__":
    main()
