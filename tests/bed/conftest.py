"""Fixtures: every test starts its own servers on free ports, so tests run in
parallel (pytest -n auto) and one test's state never leaks into another's."""

import pytest

from bed_harness import BedProcess, client, node_identity, write_identity


@pytest.fixture
def start_aws():
    """start_aws("--attach-delay-ms", "500") -> BedProcess running aws_server.py."""
    started = []

    def start(*args):
        server = BedProcess("aws_server.py", "--port", "0", "--quiet", *args)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def aws(start_aws):
    return start_aws()


@pytest.fixture
def ec2(aws):
    return client(aws.url, "ec2")


@pytest.fixture
def identity_file(tmp_path):
    path = tmp_path / "identity.json"
    write_identity(path, node_identity())
    return path


@pytest.fixture
def start_imds(identity_file):
    """start_imds("--fault", "404") -> BedProcess running imds.py on 127.0.0.1."""
    started = []

    def start(*args, listen="127.0.0.1:0", prefix=()):
        server = BedProcess(
            "imds.py",
            "--listen",
            listen,
            "--identity",
            str(identity_file),
            *args,
            prefix=prefix,
        )
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def imds(start_imds):
    return start_imds()
