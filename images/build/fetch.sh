#!/usr/bin/env bash
# fetch.sh URL SHA256 FILE: downloads URL to FILE and checks it against the
# pinned SHA-256. Used by images/build/Dockerfile for every download.
#
# Fails, leaving no FILE behind, when SHA256 is empty or not 64 hex digits
# (an ARG left at its placeholder) or when the download does not match it.
# Only https is allowed, redirects included; FETCH_PROTO overrides that for
# the tests (file://).
set -euo pipefail

if [ $# -ne 3 ]; then
  echo "usage: fetch.sh URL SHA256 FILE" >&2
  exit 2
fi
url=$1
sum=${2,,}
out=$3

if ! [[ $sum =~ ^[0-9a-f]{64}$ ]]; then
  echo "fetch.sh: no SHA-256 pinned for $url (got '$2')." >&2
  echo "fetch.sh: set the *_SHA256 build argument; its comment in images/build/Dockerfile says where upstream publishes it." >&2
  exit 1
fi

part="$out.part"
trap 'rm -f "$part"' EXIT
proto=${FETCH_PROTO:-=https}
curl --fail --silent --show-error --location --retry 3 --tlsv1.2 \
  --proto "$proto" --proto-redir "$proto" --output "$part" "$url"

if ! echo "$sum  $part" | sha256sum --check --strict --status -; then
  echo "fetch.sh: $url does not match the pinned SHA-256 $sum (got $(sha256sum "$part" | cut -d' ' -f1))" >&2
  exit 1
fi
mv "$part" "$out"
echo "fetch.sh: $out ($sum)" >&2
