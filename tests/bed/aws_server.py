#!/usr/bin/env python3
"""moto's server (EC2, S3, KMS and every other service moto has) with EC2's rules.

    python3 tests/bed/aws_server.py --port 0 [--attach-delay-ms N] [--shutdown-delay-ms N]
        [--max-page N] [--rates FILE]

Binds 127.0.0.1, prints `READY http://127.0.0.1:PORT` on stdout once it
accepts connections, logs to stderr, exits 0 on SIGTERM or when its stdin pipe
closes. Clients: AWS_ENDPOINT_URL=http://127.0.0.1:PORT, any credentials,
region eu-west-1, S3 in path style. See tests/README.md.
"""

import argparse
import json
import logging
import os
import sys

from lifecycle import claim_stdout, serve_until_stopped


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument(
        "--attach-delay-ms",
        type=int,
        default=0,
        help="time a volume/ENI spends `attaching` (and `detaching`) before it settles",
    )
    parser.add_argument(
        "--shutdown-delay-ms",
        type=int,
        default=0,
        help="time an instance spends `shutting-down`/`stopping`, attachments kept",
    )
    parser.add_argument(
        "--max-page",
        type=int,
        default=0,
        help="at most this many items per DescribeVolumes/NetworkInterfaces/Instances page (0: no cap)",
    )
    parser.add_argument(
        "--rates",
        help="JSON file of request-rate quotas (token buckets, see rates.py); none by default",
    )
    parser.add_argument("--quiet", action="store_true", help="don't log each request")
    args = parser.parse_args(argv)
    if args.attach_delay_ms < 0 or args.shutdown_delay_ms < 0:
        parser.error("delays are >= 0 ms")
    if args.max_page < 0:
        parser.error("--max-page is >= 0")
    return args


def build_app(rates=None):
    # Imported here, after stdout is claimed: importing moto may print.
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        create_backend_app,
    )

    from control import BedControl

    return BedControl(DomainDispatcherApplication(create_backend_app), rates)


def main(argv=None):
    args = parse_args(argv if argv is not None else sys.argv[1:])
    ready_out = claim_stdout()
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="aws_server: %(message)s")
    if args.quiet:
        logging.getLogger("werkzeug").setLevel(logging.WARNING)

    import ec2_rules  # after claim_stdout: it imports moto

    ec2_rules.install(args.attach_delay_ms / 1000, args.shutdown_delay_ms / 1000, args.max_page)
    import s3_rules

    s3_rules.install()

    from werkzeug.serving import make_server

    rates = None
    if args.rates:
        with open(args.rates, encoding="utf-8") as f:
            rates = json.load(f)
    server = make_server("127.0.0.1", args.port, build_app(rates), threaded=True)
    port = server.server_port
    # moto builds some URLs (e.g. S3 presigned ones) from MOTO_PORT.
    os.environ["MOTO_PORT"] = str(port)
    serve_until_stopped(server, f"http://127.0.0.1:{port}", ready_out)


if __name__ == "__main__":
    main()
