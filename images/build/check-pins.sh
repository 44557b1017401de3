#!/usr/bin/env bash
# check-pins.sh DOCKERFILE [DOCKER BUILD ARGS...]: refuses (exit 2), before
# anything is built, a build of DOCKERFILE whose *_SHA256 or *_DIGEST build
# argument is empty or malformed, naming each one. A value comes from the
# Dockerfile's ARG default unless the docker build arguments set it
# (`--build-arg NAME=VALUE`, or `--build-arg NAME` from the environment, as
# docker reads it). `make` runs it first (DOCKER_BUILD_ARGS).
set -euo pipefail

if [ $# -lt 1 ] || [ ! -f "$1" ]; then
  echo "usage: check-pins.sh DOCKERFILE [DOCKER BUILD ARGS...]" >&2
  exit 2
fi
dockerfile=$1
shift

declare -A value=()
while read -r line; do
  [[ $line =~ ^ARG[[:space:]]+([A-Z0-9_]+_(SHA256|DIGEST))(=(.*))?$ ]] || continue
  value[${BASH_REMATCH[1]}]=${BASH_REMATCH[4]}
done <"$dockerfile"
if [ ${#value[@]} -eq 0 ]; then
  echo "check-pins.sh: $dockerfile declares no *_SHA256 or *_DIGEST argument" >&2
  exit 2
fi

while [ $# -gt 0 ]; do
  arg=$1
  shift
  case $arg in
    --build-arg) [ $# -gt 0 ] || break; arg=$1; shift ;;
    --build-arg=*) arg=${arg#--build-arg=} ;;
    *) continue ;;
  esac
  name=${arg%%=*}
  [ -n "${value[$name]+set}" ] || continue
  if [[ $arg == *=* ]]; then
    value[$name]=${arg#*=}
  else
    value[$name]=${!name:-}
  fi
done

missing=()
for name in $(printf '%s\n' "${!value[@]}" | sort); do
  case $name in
    *_SHA256) pattern='^[0-9a-fA-F]{64}$' form="64 hex digits" ;;
    *_DIGEST) pattern='^sha256:[0-9a-f]{64}$' form="sha256:<64 hex digits>" ;;
  esac
  if ! [[ ${value[$name]} =~ $pattern ]]; then
    missing+=("$name")
    echo "check-pins.sh: $name is not pinned (got '${value[$name]}', want $form)." >&2
  fi
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "check-pins.sh: set them in $dockerfile (each comment says where upstream publishes the value)" >&2
  echo "check-pins.sh: or for one build: make DOCKER_BUILD_ARGS=\"--build-arg ${missing[0]}=...\"" >&2
  exit 2
fi
