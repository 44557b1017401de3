#!/usr/bin/env bash
# Runs as root on the Packer builder instance (images/ami/flatcar.pkr.hcl):
# installs the uploaded nodeboot binary, checked against NODEBOOT_SHA256,
# into NODEBOOT_STORE with its recorded SHA-256 and a link at NODEBOOT_PATH;
# the boot check (verify-nodeboot, its unit and the drop-in that makes every
# nodeboot-*.service require it); the kubelet, checked against its SHA-512,
# with mode 0755; and the CNI plugins release, checked against its SHA-512,
# into CNI_BIN_DIR; and every container image the nodes run (IMAGES, one
# "<runtime> <repository:tag@sha256:...>" a line, from `nodeboot images`),
# pulled by its digest into the runtime that runs it (containerd's k8s.io
# namespace for the kubelet, docker for etcd and kubectl), listed in
# NODEBOOT_STORE/images. The template passes the paths: /opt/nodeboot, /opt/bin
# and /opt/cni/bin, because Flatcar's /usr is read-only. Everything is
# uploaded or downloaded and checked before anything is installed. DESTDIR
# prefixes every installed path (tests).
set -euo pipefail

die() {
  echo "provision.sh: $*" >&2
  exit 1
}

for var in NODEBOOT_UPLOAD NODEBOOT_SHA256 NODEBOOT_PATH NODEBOOT_STORE \
  BOOT_CHECK_UPLOAD BOOT_CHECK_UNIT BOOT_CHECK_DROPIN \
  KUBELET_URL KUBELET_SHA512 KUBELET_PATH \
  CNI_PLUGINS_URL CNI_PLUGINS_SHA512 CNI_BIN_DIR CNI_PLUGINS IMAGES \
  KERNEL_MODULES_CONF KERNEL_SYSCTL_CONF; do
  [ -n "${!var:-}" ] || die "$var is not set"
done
nodeboot_sum=${NODEBOOT_SHA256,,}
[[ $nodeboot_sum =~ ^[0-9a-f]{64}$ ]] || die "NODEBOOT_SHA256 is not 64 hex digits"
kubelet_sum=${KUBELET_SHA512,,}
[[ $kubelet_sum =~ ^[0-9a-f]{128}$ ]] || die "KUBELET_SHA512 is not 128 hex digits"
cni_sum=${CNI_PLUGINS_SHA512,,}
[[ $cni_sum =~ ^[0-9a-f]{128}$ ]] || die "CNI_PLUGINS_SHA512 is not 128 hex digits"
# Every image by digest, in a runtime that runs it: checked before anything
# is downloaded or installed.
while read -r runtime image extra; do
  [ -n "$runtime" ] || continue
  case $runtime in containerd | docker) ;; *) die "IMAGES: $runtime $image: the runtime is containerd or docker" ;; esac
  [[ -z "${extra:-}" && $image =~ ^[^@[:space:]]+:[^@/:[:space:]]+@sha256:[0-9a-f]{64}$ ]] \
    || die "IMAGES: $image is not repository:tag@sha256:<64 hex digits>"
done <<<"$IMAGES"
[ -f "$NODEBOOT_UPLOAD" ] || die "no nodeboot binary at $NODEBOOT_UPLOAD"
# The bake's check: the binary that arrived is the one `make ami` built and
# whose SHA-256 the AMI is tagged with.
echo "$nodeboot_sum  $NODEBOOT_UPLOAD" | sha256sum --check --strict --status - \
  || die "$NODEBOOT_UPLOAD does not match nodeboot_sha256 $nodeboot_sum (got $(sha256sum "$NODEBOOT_UPLOAD" | cut -d' ' -f1))"
for file in verify-nodeboot verify-nodeboot.service nodeboot-.service.d/10-verify-nodeboot.conf; do
  [ -f "$BOOT_CHECK_UPLOAD/$file" ] || die "no $file in $BOOT_CHECK_UPLOAD"
done

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# fetch URL FILE SHA512 NAME: download, or stop naming the variable to fix.
fetch() {
  curl --fail --silent --show-error --location --retry 5 --output "$2" "$1"
  echo "$3  $2" | sha512sum --check --strict --status - \
    || die "$1 does not match $4 (got $(sha512sum "$2" | cut -d' ' -f1))"
}
fetch "$KUBELET_URL" "$tmp/kubelet" "$kubelet_sum" kubelet_sha512
fetch "$CNI_PLUGINS_URL" "$tmp/cni-plugins.tgz" "$cni_sum" cni_plugins_sha512

# The release is a flat archive of static executables (and LICENSE, README.md).
mkdir "$tmp/cni"
tar -xzf "$tmp/cni-plugins.tgz" -C "$tmp/cni" --no-same-owner --no-same-permissions
read -r -a required <<<"$CNI_PLUGINS"
for plugin in "${required[@]}"; do
  if [ ! -f "$tmp/cni/$plugin" ] || [ -L "$tmp/cni/$plugin" ]; then
    die "$CNI_PLUGINS_URL has no $plugin plugin (CNI_PLUGINS: $CNI_PLUGINS)"
  fi
done

nodeboot="${DESTDIR:-}$NODEBOOT_PATH"
store="${DESTDIR:-}$NODEBOOT_STORE"
kubelet="${DESTDIR:-}$KUBELET_PATH"
cni_dir="${DESTDIR:-}$CNI_BIN_DIR"
install -D -m 0755 "$NODEBOOT_UPLOAD" "$store/nodeboot"
echo "$nodeboot_sum  nodeboot" >"$store/nodeboot.sha256"
chmod 0644 "$store/nodeboot.sha256"
install -m 0755 "$BOOT_CHECK_UPLOAD/verify-nodeboot" "$store/verify-nodeboot"
install -d -m 0755 "$(dirname "$nodeboot")"
# Relative, so that it leads to the store under DESTDIR too.
ln -s --relative --force --no-dereference "$store/nodeboot" "$nodeboot"
install -D -m 0644 "$BOOT_CHECK_UPLOAD/verify-nodeboot.service" "${DESTDIR:-}$BOOT_CHECK_UNIT"
install -D -m 0644 "$BOOT_CHECK_UPLOAD/nodeboot-.service.d/10-verify-nodeboot.conf" \
  "${DESTDIR:-}$BOOT_CHECK_DROPIN/10-verify-nodeboot.conf"
install -D -m 0755 "$tmp/kubelet" "$kubelet"
install -d -m 0755 "$cni_dir"
for file in "$tmp/cni"/*; do
  # Top-level regular files only; the documents stay out of the plugin path.
  if [ ! -f "$file" ] || [ -L "$file" ]; then continue; fi
  case ${file##*/} in LICENSE | *.md) continue ;; esac
  install -m 0755 "$file" "$cni_dir/"
done
rm -rf "$NODEBOOT_UPLOAD" "$BOOT_CHECK_UPLOAD"

# What the pod network needs of the kernel, at every boot (kubeadm's
# preflight checks the same): bridged pod traffic goes through iptables,
# where kube-proxy's Service rules are (br_netfilter), and nodes forward
# pods' packets. Flatcar loads neither by default; dockerd sets some of it
# when it starts, which workers do not run.
install -D -m 0644 /dev/stdin "${DESTDIR:-}$KERNEL_MODULES_CONF" <<'EOF_MODULES'
# nodeboot (images/ami/provision.sh): the pod network's kernel modules.
br_netfilter
overlay
EOF_MODULES
install -D -m 0644 /dev/stdin "${DESTDIR:-}$KERNEL_SYSCTL_CONF" <<'EOF_SYSCTL'
# nodeboot (images/ami/provision.sh): what the pod network needs.
net.bridge.bridge-nf-call-iptables = 1
net.bridge.bridge-nf-call-ip6tables = 1
net.ipv4.ip_forward = 1
EOF_SYSCTL

# All must run here, on Flatcar, before the image is taken: the boot check
# passes as it will at every boot, and a CNI plugin answers
# CNI_COMMAND=VERSION with the spec versions it supports.
"$store/verify-nodeboot" "$store" "$nodeboot"
"$nodeboot" --version
"$kubelet" --version
if [ -z "${DESTDIR:-}" ]; then
  systemctl restart systemd-modules-load.service systemd-sysctl.service
  for key in net.bridge.bridge-nf-call-iptables net.bridge.bridge-nf-call-ip6tables net.ipv4.ip_forward; do
    [ "$(sysctl --values "$key")" = 1 ] || die "$key is not 1 after systemd-sysctl"
  done
fi
for plugin in "${required[@]}"; do
  CNI_COMMAND=VERSION "$cni_dir/$plugin" </dev/null || die "$cni_dir/$plugin does not run"
done

# The images, by digest (a registry serving other bytes under the tag fails
# the pull). containerd's CRI looks an image up as repository@digest (it
# drops the tag of repository:tag@digest), so that is the name it is pulled
# under; docker keeps the digest among the image's RepoDigests. Both stores
# stay in the image (flatcar-reset --keep-paths), so no boot pulls.
[ -n "${DESTDIR:-}" ] || systemctl start containerd.service docker.service
while read -r runtime image; do
  [ -n "$runtime" ] || continue
  repository="${image%@*}"
  by_digest="${repository%:*}@${image##*@}"
  case $runtime in
    containerd)
      ctr --namespace k8s.io images pull --platform linux/amd64 "$by_digest" >/dev/null \
        || die "cannot pull $by_digest into containerd"
      ctr --namespace k8s.io images ls --quiet | grep --quiet --fixed-strings --line-regexp "$by_digest" \
        || die "containerd does not list $by_digest after the pull"
      ;;
    docker)
      docker pull --quiet "$by_digest" >/dev/null || die "cannot pull $by_digest into docker"
      docker image inspect "$by_digest" >/dev/null || die "docker does not have $by_digest after the pull"
      ;;
  esac
  echo "baked $runtime $image"
done <<<"$IMAGES"
# Every pod's sandbox runs containerd's own pause image (sandbox_image in
# Flatcar's containerd config, which the pinned flatcar_release fixes): it
# is pulled by that reference, as CRI asks for it, and its digest recorded.
sandbox=$(containerd config dump | sed -n 's/^ *sandbox_image = "\(.*\)"$/\1/p')
[ -n "$sandbox" ] || die "cannot read sandbox_image from containerd config dump"
ctr --namespace k8s.io images pull --platform linux/amd64 "$sandbox" >/dev/null \
  || die "cannot pull containerd's sandbox image $sandbox"
sandbox_digest=$(ctr --namespace k8s.io images ls | awk -v ref="$sandbox" '$1 == ref { print $3 }')
[[ $sandbox_digest =~ ^sha256:[0-9a-f]{64}$ ]] || die "containerd does not list $sandbox after the pull"
echo "baked containerd $sandbox ($sandbox_digest)"
install -d -m 0755 "$store"
printf '%s\n' "$IMAGES" | sed '/^$/d' >"$store/images"
echo "sandbox $sandbox@$sandbox_digest" >>"$store/images"
chmod 0644 "$store/images"
