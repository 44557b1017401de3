#!/usr/bin/env bash
# Runs as root on the Packer builder instance (images/ami/flatcar.pkr.hcl):
# installs the uploaded nodeboot binary and the kubelet, checked against its
# SHA-512, with mode 0755. The template passes the paths: /opt/bin, because
# Flatcar's /usr is read-only. DESTDIR prefixes every installed path (tests).
set -euo pipefail

die() {
  echo "provision.sh: $*" >&2
  exit 1
}

for var in NODEBOOT_UPLOAD NODEBOOT_PATH KUBELET_URL KUBELET_SHA512 KUBELET_PATH; do
  [ -n "${!var:-}" ] || die "$var is not set"
done
sha512=${KUBELET_SHA512,,}
[[ $sha512 =~ ^[0-9a-f]{128}$ ]] || die "KUBELET_SHA512 is not 128 hex digits"
[ -f "$NODEBOOT_UPLOAD" ] || die "no nodeboot binary at $NODEBOOT_UPLOAD"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
curl --fail --silent --show-error --location --retry 5 --output "$tmp/kubelet" "$KUBELET_URL"
echo "$sha512  $tmp/kubelet" | sha512sum --check --strict --status - \
  || die "$KUBELET_URL does not match kubelet_sha512 (got $(sha512sum "$tmp/kubelet" | cut -d' ' -f1))"

nodeboot="${DESTDIR:-}$NODEBOOT_PATH"
kubelet="${DESTDIR:-}$KUBELET_PATH"
install -D -m 0755 "$NODEBOOT_UPLOAD" "$nodeboot"
install -D -m 0755 "$tmp/kubelet" "$kubelet"
rm -f "$NODEBOOT_UPLOAD"

# Both must run here, on Flatcar, before the image is taken.
"$nodeboot" --version
"$kubelet" --version
