"""What the lab adds to a node's root besides its rendered Ignition config:
the test-only parts, each listed in tests/lab/README.md ("What the lab
adds to a node"). Everything else on a node is the rendered config,
applied by ignition_apply.py.
"""

import json
from pathlib import Path

# Where the lab's etcd binary appears inside a node (bind-mounted read-only).
ETCD_INSIDE = "/opt/lab/bin/etcd"
# etcdutl beside it: what a restore runs (node.json's etcd.backup.etcdutl).
ETCDUTL_INSIDE = "/opt/lab/bin/etcdutl"
# Test-only settings of the backup service, read by its drop-in
# (NODEBOOT_ETCD_BACKUP_INTERVAL, NODEBOOT_ETCD_BACKUP_POLL).
BACKUP_ENV = "/etc/nodeboot/lab-backup.env"
# The AMI's baked paths (images/ami/provision.sh, units/kubelet.service).
NODEBOOT_INSIDE = "/opt/bin/nodeboot"
KUBELET_INSIDE = "/opt/bin/kubelet"
KUBELET_RECORD = "/run/lab-kubelet/started"

MARK = "# Test-only, written by the lab (tests/lab/lab_node.py; tests/lab/README.md)."

# 1. The emulator instead of AWS's endpoints, and the credentials an instance
#    profile would give (the IMDS double serves no credentials).
AWS_CONF = """{mark}
[Manager]
DefaultEnvironment="AWS_ENDPOINT_URL={endpoint}"
DefaultEnvironment="AWS_ACCESS_KEY_ID=testing" "AWS_SECRET_ACCESS_KEY=testing"
"""

# 2. The one deviation from a Flatcar node: etcd-member.service runs the etcd
#    binary with the same environment file instead of `docker run` of the
#    etcd image (the lab has no docker and no registry). docker.service only
#    stands in for the unit etcd-member requires.
ETCD_DROPIN = """{mark}
# The etcd binary instead of the etcd container: same environment file.
[Service]
ExecStartPre=
ExecStart=
ExecStart={etcd}
ExecStop=
EnvironmentFile={env_file}
# The unit's sandbox fits docker's client (AF_UNIX only, nothing writable);
# the etcd binary needs what dockerd gives the container: the network and
# its data directory.
RestrictAddressFamilies=
ReadWritePaths=/var/lib/etcd
"""

DOCKER_STANDIN = """{mark}
[Unit]
Description=lab stand-in for docker.service (etcd-member runs the etcd binary)

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/true
"""

# 3. A kubelet stand-in at the AMI's path: it refuses to start without the
#    bootstrap kubeconfig the secrets stage writes (the kubelet writes its
#    own --kubeconfig after TLS bootstrap), records what it saw, stays up.
KUBELET_STANDIN = """#!/bin/sh
{mark}
# The kubelet stand-in: no kube-apiserver runs in the lab.
set -eu
bootstrap=
kubeconfig=
config=
for a in "$@"; do
  case $a in
    --bootstrap-kubeconfig=*) bootstrap=${{a#--bootstrap-kubeconfig=}} ;;
    --kubeconfig=*) kubeconfig=${{a#--kubeconfig=}} ;;
    --config=*) config=${{a#--config=}} ;;
  esac
done
if [ ! -s "$bootstrap" ]; then
  echo "kubelet stand-in: no bootstrap kubeconfig at '$bootstrap' (the secrets stage writes it)" >&2
  exit 1
fi
if [ ! -s "$config" ]; then
  echo "kubelet stand-in: no config at '$config' (Ignition writes it)" >&2
  exit 1
fi
mkdir -p "$(dirname {record})"
echo "bootstrap-kubeconfig=$bootstrap kubeconfig=$kubeconfig config=$config" > {record}
exec sleep infinity
"""

# 4. The add-on applier: `docker run` of upstream's kubectl image against a
#    kube-apiserver, neither of which the lab has. The stand-in checks what
#    kubectl would read (the add-on files the sync placed, the applier's
#    kubeconfig from the secrets stage), records the files, and succeeds.
ADDONS_DROPIN = """{mark}
# A kubectl stand-in instead of `docker run ... kubectl apply` (no apiserver).
[Service]
ExecStart=
ExecStart=/bin/sh -c 'test -s {secrets}/addons-applier.kubeconfig && ls {addons} | grep -q . && mkdir -p /run/lab-addons && ls {addons} > /run/lab-addons/applied'
RestrictAddressFamilies=
ReadWritePaths=/run
"""

# 5. The reboot: `systemctl reboot` of a machine may restart it inside
#    systemd-nspawn, where the lab cannot see it nor plug its volume again;
#    the reboot coordinator powers the machine off instead, and the lab
#    boots it again (Lab.reboot_node), as EC2 keeps the instance running.
REBOOT_DROPIN = """{mark}
[Service]
Environment=NODEBOOT_REBOOT_COMMAND="systemctl poweroff"
"""


# 5. The backup service's restore runs etcdutl from the lab's cache instead of
#    `docker run` of the etcd image (node.json's etcd.backup.etcdutl, the
#    setting an operator would use), and a test may shorten its interval.
BACKUP_DROPIN = """{mark}
# A test may set NODEBOOT_ETCD_BACKUP_INTERVAL and _POLL here.
[Service]
EnvironmentFile=-{env}
"""


def use_lab_etcdutl(root):
    """node.json's etcd.backup.etcdutl: the lab's etcdutl (etcd nodes only)."""
    path = Path(root) / "etc/nodeboot/node.json"
    if not path.exists():
        return []
    config = json.loads(path.read_text())
    if not config.get("etcd"):
        return []
    config["etcd"].setdefault("backup", {})["etcdutl"] = [ETCDUTL_INSIDE]
    path.write_text(json.dumps(config, indent=2))
    return ["/etc/nodeboot/node.json: etcd.backup.etcdutl"]


def install(root, endpoint_url, env_file="/run/nodeboot/etcd.env"):
    """Writes the lab's test-only files into a node's root (after Ignition)."""
    root = Path(root)
    written = []

    def put(path, text, mode=0o644):
        p = root / path.lstrip("/")
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
        p.chmod(mode)
        written.append(path)

    put(
        "/etc/systemd/system.conf.d/50-lab-aws.conf",
        AWS_CONF.format(mark=MARK, endpoint=endpoint_url),
    )
    put(
        "/etc/systemd/system/etcd-member.service.d/50-lab-etcd-binary.conf",
        ETCD_DROPIN.format(mark=MARK, etcd=ETCD_INSIDE, env_file=env_file),
    )
    put("/etc/systemd/system/docker.service", DOCKER_STANDIN.format(mark=MARK))
    put(
        "/etc/systemd/system/nodeboot-reboot.service.d/50-lab-poweroff.conf",
        REBOOT_DROPIN.format(mark=MARK),
    )
    put(
        "/etc/systemd/system/nodeboot-addons.service.d/50-lab-kubectl.conf",
        ADDONS_DROPIN.format(mark=MARK, secrets="/run/nodeboot/secrets", addons="/etc/kubernetes/addons"),
    )
    put(KUBELET_INSIDE, KUBELET_STANDIN.format(mark=MARK, record=KUBELET_RECORD), 0o755)
    put(
        "/etc/systemd/system/nodeboot-etcd-backup.service.d/50-lab-backup.conf",
        BACKUP_DROPIN.format(mark=MARK, env=BACKUP_ENV),
    )
    written += use_lab_etcdutl(root)
    return written


def binds(nodeboot, etcd):
    """The baked binaries: read-only bind mounts of the host's files."""
    etcdutl = Path(etcd).parent / "etcdutl"
    return [
        (str(nodeboot), NODEBOOT_INSIDE),
        (str(etcd), ETCD_INSIDE),
        (str(etcdutl), ETCDUTL_INSIDE),
    ]


ATTACH_BY_THE_LAB = """{mark}
# The bench replaces the attach stage (bench/etcd-replace.py): this unit
# waits until the claim file it writes exists.
[Service]
ExecStart=
ExecStart=/bin/sh -c 'while [ ! -s /run/nodeboot/claim.json ]; do sleep 0.1; done'
"""


def wait_for_claim(root):
    """Makes the node's attach unit wait for a claim the lab writes."""
    p = Path(root) / "etc/systemd/system/nodeboot-attach.service.d/60-lab-attach.conf"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(ATTACH_BY_THE_LAB.format(mark=MARK))
