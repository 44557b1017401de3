"""The lab's machines: Debian's systemd 252 booted by systemd-nspawn over the
cached root (lab_nspawn.py, lab_root.py), with a unit written by the
Ignition applier before the boot. Root only, like the rest of the lab."""

import os
import shutil
import sys
import uuid
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import ignition_apply  # noqa: E402
import lab_nspawn  # noqa: E402
from lab_proc import LabError  # noqa: E402


def require_root():
    if os.geteuid() != 0:
        if os.environ.get("NODEBOOT_SKIP_ROOT_TESTS") == "1":
            pytest.skip("lab machines need root (skipped knowingly: NODEBOOT_SKIP_ROOT_TESTS=1)")
        pytest.fail(
            "lab machines need root (systemd-nspawn, overlay mounts, cgroups): run as root, "
            "or set NODEBOOT_SKIP_ROOT_TESTS=1 to skip them knowingly",
            pytrace=False,
        )
    for tool in ("systemd-nspawn", "debootstrap", "nsenter"):
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
            pytest.fail(f"{tool} is missing (tests/setup installs it)", pytrace=False)


def name():
    return f"t{uuid.uuid4().hex[:8]}-m"


def data_url(text):
    return "data:," + text.replace("%", "%25").replace("\n", "%0A").replace(" ", "%20")


PROBE = """[Unit]
Description=lab probe: writes a file once the boot reaches multi-user
[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/sh -c 'stat -c %%a /etc/lab/probe.conf > /run/probe-saw'
[Install]
WantedBy=multi-user.target
"""


def ignition_setup(root):
    config = {
        "ignition": {"version": "3.4.0"},
        "storage": {
            "files": [
                {
                    "path": "/etc/lab/probe.conf",
                    "mode": 0o600,
                    "contents": {"source": data_url("x=1\n")},
                }
            ]
        },
        "systemd": {"units": [{"name": "lab-probe.service", "contents": PROBE, "enabled": True}]},
    }
    ignition_apply.apply(root, config)


def assert_gone(c):
    assert c.leftovers() == []
    assert c.machine not in lab_nspawn.listed_cgroups()
    assert not c.dir.exists()


def test_a_machine_boots_systemd_to_running_and_runs_the_units_the_applier_enabled():
    require_root()
    before = {}

    def setup(root):
        ignition_setup(root)
        before["machine-id"] = (root / "etc/machine-id").exists()
        before["links"] = sorted(p.name for p in (root / "etc/systemd/system").rglob("lab-probe*"))

    with lab_nspawn.machine(name(), setup=setup) as c:
        assert c.boot_state == "running", c.systemctl("--failed", check=False).stdout
        # Ignition enables by preset, not by link: systemd's first boot (no
        # machine id before it) applied the preset, as on a Flatcar node.
        assert before == {"machine-id": False, "links": ["lab-probe.service"]}
        assert c.systemctl("is-enabled", "lab-probe.service").stdout.strip() == "enabled"
        assert c.path("/etc/systemd/system/multi-user.target.wants/lab-probe.service").is_symlink()
        assert len(c.path("/etc/machine-id").read_text().strip()) == 32
        assert c.run("cat", "/proc/1/comm").stdout.strip() == "systemd"
        assert c.systemctl(
            "is-active", "lab-probe.service", "systemd-networkd.service"
        ).stdout.split() == ["active", "active"]
        # The unit ran inside, after the file was there with its mode.
        assert c.path("/run/probe-saw").read_text().strip() == "600"
        assert "lab probe" in c.journalctl("-u", "lab-probe.service").stdout
        machine = c
    assert_gone(machine)


def test_a_failing_block_still_removes_its_machine():
    require_root()
    seen = {}
    with pytest.raises(RuntimeError, match="the test failed"):
        with lab_nspawn.machine(name()) as c:
            seen["c"] = c
            assert c.leftovers(), "a running machine has a process, cgroups and a mount"
            raise RuntimeError("the test failed")
    assert_gone(seen["c"])


def test_a_killed_machine_stops_answering_and_is_still_removed_clean():
    require_root()
    with lab_nspawn.machine(name()) as c:
        c.kill()
        assert not c.alive()
        with pytest.raises(LabError, match="not running"):
            c.systemctl("is-system-running")
        machine = c
    assert_gone(machine)
