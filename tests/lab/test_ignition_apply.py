"""The lab's Ignition applier (ignition_apply.py): what it applies, and
everything it refuses. Applying sets owners, so those tests need root;
the refusals do not."""

import base64
import gzip
import hashlib
import json
import os
import stat
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ignition_apply import IgnitionError, apply  # noqa: E402

UNIT = (
    "[Unit]\nDescription=x\n[Service]\nExecStart=/bin/true\n[Install]\nWantedBy=multi-user.target\n"
)


def need_root():
    if os.geteuid() != 0:
        if os.environ.get("NODEBOOT_SKIP_ROOT_TESTS") == "1":
            pytest.skip("sets file owners: needs root (skipped knowingly)")
        pytest.fail("sets file owners: needs root (or NODEBOOT_SKIP_ROOT_TESTS=1)", pytrace=False)


def b64(data):
    return "data:;base64," + base64.b64encode(data).decode()


def config(**parts):
    return {"ignition": {"version": "3.4.0"}, **parts}


@pytest.fixture
def root(tmp_path):
    r = tmp_path / "root"
    (r / "etc").mkdir(parents=True)
    (r / "etc/passwd").write_text(
        "root:x:0:0:root:/root:/bin/sh\nsvc:x:321:654::/nonexistent:/bin/false\n"
    )
    (r / "etc/group").write_text("root:x:0:\nsvcg:x:654:\n")
    (r / "etc/shadow").write_text("root:*:19000:0:99999:7:::\nsvc:*:19000:0:99999:7:::\n")
    (r / "etc/gshadow").write_text("root:*::\nsvcg:!::\n")
    (r / "usr/lib/systemd/system").mkdir(parents=True)
    (r / "usr/lib/systemd/system/shipped.service").write_text(UNIT.replace("multi-user", "timers"))
    return r


def test_files_are_written_with_their_mode_owner_and_decoded_contents(root):
    need_root()
    packed = gzip.compress(b"gzipped\n")
    files = [
        {"path": "/etc/a/plain", "mode": 0o600, "contents": {"source": "data:,hello%20world%0A"}},
        {
            "path": "/etc/a/b64",
            "contents": {"source": b64(b"\x00\x01binary")},
            "user": {"name": "svc"},
            "group": {"id": 654},
        },
        {
            "path": "/etc/a/gz",
            "mode": 0o640,
            "contents": {
                "source": b64(packed),
                "compression": "gzip",
                "verification": {"hash": "sha512-" + hashlib.sha512(packed).hexdigest()},
            },
        },
    ]
    apply(root, config(storage={"files": files}))
    assert (root / "etc/a/plain").read_text() == "hello world\n"
    assert stat.S_IMODE((root / "etc/a/plain").stat().st_mode) == 0o600
    assert stat.S_IMODE((root / "etc/a").stat().st_mode) == 0o755
    b = (root / "etc/a/b64").stat()
    assert (root / "etc/a/b64").read_bytes() == b"\x00\x01binary"
    assert (b.st_uid, b.st_gid, stat.S_IMODE(b.st_mode)) == (321, 654, 0o644)
    assert (root / "etc/a/gz").read_bytes() == b"gzipped\n"


def test_an_existing_file_is_replaced_only_with_overwrite(root):
    need_root()
    (root / "etc/kept").write_text("old")
    f = {"path": "/etc/kept", "contents": {"source": "data:,new"}}
    with pytest.raises(IgnitionError, match="exists and overwrite is false"):
        apply(root, config(storage={"files": [f]}))
    assert (root / "etc/kept").read_text() == "old"
    apply(root, config(storage={"files": [{**f, "overwrite": True}]}))
    assert (root / "etc/kept").read_text() == "new"


def test_directories_and_links(root):
    need_root()
    storage = {
        "directories": [{"path": "/etc/kubernetes/manifests", "mode": 0o750, "user": {"id": 321}}],
        "links": [{"path": "/etc/localtime", "target": "/usr/share/zoneinfo/UTC"}],
    }
    apply(root, config(storage=storage))
    d = (root / "etc/kubernetes/manifests").stat()
    assert (stat.S_IMODE(d.st_mode), d.st_uid) == (0o750, 321)
    assert os.readlink(root / "etc/localtime") == "/usr/share/zoneinfo/UTC"


def test_units_are_written_enabled_masked_and_given_dropins(root):
    need_root()
    units = [
        {
            "name": "a.service",
            "contents": UNIT,
            "enabled": True,
            "dropins": [{"name": "10-x.conf", "contents": "[Service]\nEnvironment=X=1\n"}],
        },
        {"name": "shipped.service", "enabled": True},
        {"name": "b.service", "mask": True},
        {"name": "c.service", "contents": UNIT, "enabled": False},
    ]
    apply(root, config(systemd={"units": units}))
    etc = root / "etc/systemd/system"
    assert (etc / "a.service").read_text() == UNIT
    assert (etc / "a.service.d/10-x.conf").read_text().endswith("X=1\n")
    assert os.readlink(etc / "b.service") == "/dev/null"
    # Enabled and disabled as Ignition does it: preset lines in config
    # order, no [Install] links (systemd makes them on the first boot).
    preset = root / "etc/systemd/system-preset/20-ignition.preset"
    assert preset.read_text() == "enable a.service\nenable shipped.service\ndisable c.service\n"
    assert stat.S_IMODE(preset.stat().st_mode) == 0o644
    assert not list(etc.glob("*.wants")) and not list(etc.glob("*.requires"))


def test_a_user_is_made_with_its_ssh_keys(root):
    need_root()
    keys = ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB core@lab", "ssh-rsa AAAAB3 other"]
    apply(root, config(passwd={"users": [{"name": "core", "sshAuthorizedKeys": keys}]}))
    entry = next(
        line.split(":")
        for line in (root / "etc/passwd").read_text().splitlines()
        if line.startswith("core:")
    )
    uid, home = int(entry[2]), entry[5]
    f = root / home.lstrip("/") / ".ssh/authorized_keys.d/ignition"
    assert f.read_text() == "".join(k + "\n" for k in keys)
    assert (stat.S_IMODE(f.stat().st_mode), f.stat().st_uid) == (0o600, uid)
    assert stat.S_IMODE(f.parent.parent.stat().st_mode) == 0o700


def test_a_pointer_config_is_fetched_checked_and_applied_instead(root):
    need_root()
    real = json.dumps(
        config(storage={"files": [{"path": "/etc/real", "contents": {"source": "data:,yes"}}]})
    ).encode()
    pointer = config()
    pointer["ignition"]["config"] = {
        "replace": {
            "source": "s3://bucket/etcd.ign",
            "verification": {"hash": "sha512-" + hashlib.sha512(real).hexdigest()},
        }
    }
    fetched = []
    apply(root, pointer, fetch=lambda url: fetched.append(url) or real)
    assert fetched == ["s3://bucket/etcd.ign"]
    assert (root / "etc/real").read_text() == "yes"
    with pytest.raises(IgnitionError, match="sha512 is"):
        apply(root, pointer, fetch=lambda url: real + b" ")


@pytest.mark.parametrize(
    ("cfg", "message"),
    [
        ({"ignition": {"version": "3.5.0"}}, r"ignition.version: '3.5.0'"),
        ({"ignition": {"version": "2.3.0"}}, r"ignition.version"),
        (config(kernelArguments={"shouldExist": ["x"]}), r"config.kernelArguments: not supported"),
        (config(storage={"disks": [{"device": "/dev/vdb"}]}), r"storage.disks: not supported"),
        (
            config(storage={"filesystems": [{"device": "/dev/vdb", "format": "ext4"}]}),
            r"storage.filesystems",
        ),
        (
            config(
                storage={
                    "files": [{"path": "/x", "contents": {"source": "https://example.invalid/x"}}]
                }
            ),
            r"files\[0\].contents: source .*only data URLs",
        ),
        (
            config(storage={"files": [{"path": "/x", "contents": {"source": "s3://b/k"}}]}),
            r"only data URLs",
        ),
        (
            config(
                storage={
                    "files": [
                        {"path": "/x", "contents": {"source": "data:,x", "compression": "zstd"}}
                    ]
                }
            ),
            r"compression: 'zstd'",
        ),
        (
            config(storage={"files": [{"path": "/x", "append": [{"source": "data:,x"}]}]}),
            r"files\[0\].append: not supported",
        ),
        (
            config(storage={"files": [{"path": "/x", "frobnicate": True}]}),
            r"files\[0\].frobnicate: not supported",
        ),
        (config(storage={"files": [{"path": "relative"}]}), r"is not absolute"),
        (config(storage={"files": [{"path": "/etc/../x"}]}), r"contains '..'"),
        (
            config(
                storage={
                    "files": [
                        {
                            "path": "/x",
                            "contents": {"source": "data:,x", "verification": {"hash": "md5-00"}},
                        }
                    ]
                }
            ),
            r"unsupported function 'md5'",
        ),
        (
            config(storage={"files": [{"path": "/x", "contents": {"source": "data:;base64,!!!"}}]}),
            r"bad base64",
        ),
        (
            config(
                systemd={
                    "units": [
                        {
                            "name": "a.service",
                            "contents": UNIT.replace("WantedBy", "Also"),
                            "enabled": True,
                        }
                    ]
                }
            ),
            r"\[Install\] Also= is not supported",
        ),
        (
            config(systemd={"units": [{"name": "nowhere.service", "enabled": True}]}),
            r"no contents and is not in the root",
        ),
        (
            config(systemd={"units": [{"name": "a.service", "contents": UNIT, "frob": 1}]}),
            r"units\[0\].frob: not supported",
        ),
        (
            config(passwd={"users": [{"name": "core", "passwordHash": "x"}]}),
            r"users\[0\].passwordHash: not supported",
        ),
        (config(passwd={"groups": [{"name": "g"}]}), r"passwd.groups: not supported"),
        (
            {"ignition": {"version": "3.4.0", "config": {"merge": [{"source": "s3://b/k"}]}}},
            r"config.merge: not supported",
        ),
        (
            {"ignition": {"version": "3.4.0", "config": {"replace": {"source": "s3://b/k"}}}},
            r"without verification",
        ),
        (
            config(
                storage={
                    "files": [
                        {
                            "path": "/x",
                            "contents": {"source": "data:,x", "httpHeaders": [{"name": "a"}]},
                        }
                    ]
                }
            ),
            r"httpHeaders: not supported",
        ),
        (
            {
                "ignition": {
                    "version": "3.4.0",
                    "security": {"tls": {"certificateAuthorities": [{"source": "data:,x"}]}},
                }
            },
            r"ignition.security: not supported",
        ),
    ],
)
def test_what_the_applier_does_not_understand_is_refused_by_name(tmp_path, cfg, message):
    root = tmp_path / "root"
    root.mkdir()
    with pytest.raises(IgnitionError, match=message):
        apply(root, cfg)
    if "files" in json.dumps(cfg) and "users" not in json.dumps(cfg):
        assert not (root / "x").exists(), "nothing is written for a refused file"
