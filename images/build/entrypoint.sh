#!/usr/bin/env bash
# The way into the build container, like the seed's run.kube and play.kube.
#
#   images/build/entrypoint.sh -e NAME [CMD...]    environment NAME (environments/NAME.tfvars must exist)
#   images/build/entrypoint.sh [--play] [CMD...]   the playground play-$USER; `nodeboot env new`
#                                                  writes its file from the defaults when missing
#
# On the host it starts the container (docker run) as the calling user, with
# the repository at /workspace and the AWS credentials: the AWS_* variables
# when AWS_ACCESS_KEY_ID is set (passed by name, so no secret is on a command
# line), else ~/.aws read-only with AWS_PROFILE=NAME: the profile is the
# environment's name, as in the seed. NODEBOOT_IMAGE overrides the image
# (default nodeboot/build:<version in Cargo.toml>, what `make` builds).
#
# In the container (the image's ENTRYPOINT, NODEBOOT_IN_CONTAINER=1) it checks
# or creates the environment file, exports NODEBOOT_ENV and ENV_FILE, and runs
# CMD, or an interactive shell with the helpers of images/build/bashrc.
set -euo pipefail

container_home=/home/nodeboot
workspace=${NODEBOOT_WORKSPACE:-/workspace}

usage() {
  sed -n '2,6s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"
}

die() {
  echo "entrypoint.sh: $2" >&2
  exit "$1"
}

# nodeboot's rule for an environment name (src/env/validate.rs).
valid_name() {
  [[ $1 =~ ^[a-z][a-z0-9-]{2,31}$ && $1 != *- ]]
}

# play-$USER, made a valid environment name (lower case, [a-z0-9-], 32 at most).
playground_name() {
  local user=${USER:-$(id -un 2>/dev/null || echo user)}
  user=$(printf '%s' "$user" | tr '[:upper:]' '[:lower:]' | tr -c 'a-z0-9-' '-')
  local name="play-$user"
  name=${name:0:32}
  while [[ $name == *- ]]; do name=${name%-}; done
  printf '%s\n' "$name"
}

name=""
play=0
while [ $# -gt 0 ]; do
  case $1 in
    -e | --env)
      [ $# -ge 2 ] || die 2 "$1 needs an environment name"
      name=$2
      shift 2
      ;;
    --env=*)
      name=${1#--env=}
      shift
      ;;
    -p | --play)
      play=1
      shift
      ;;
    -h | --help)
      usage
      exit 0
      ;;
    --)
      shift
      break
      ;;
    -*) die 2 "unknown option $1 (see --help)" ;;
    *) break ;;
  esac
done
if [ -z "$name" ]; then
  play=1
  name=$(playground_name)
fi
valid_name "$name" || die 2 "invalid environment name '$name': 3-32 lower-case letters, digits and '-', starting with a letter"

have_aws_files() {
  [ -e "$1/.aws/credentials" ] || [ -e "$1/.aws/config" ]
}

# --- on the host: start the container ----------------------------------------
if [ "${NODEBOOT_IN_CONTAINER:-0}" != 1 ]; then
  repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
  version=$(sed -n 's/^version = "\(.*\)"$/\1/p' "$repo/Cargo.toml" | head -n 1)
  image=${NODEBOOT_IMAGE:-nodeboot/build:${version:-dev}}

  args=(run --rm -i)
  if [ -t 0 ] && [ -t 1 ]; then args+=(-t); fi
  args+=(--user "$(id -u):$(id -g)" -v "$repo:$workspace" -w "$workspace")
  if [ -n "${AWS_ACCESS_KEY_ID:-}" ]; then
    [ -n "${AWS_SECRET_ACCESS_KEY:-}" ] || die 2 "AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY is not"
    for var in AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_SESSION_TOKEN; do
      if [ -n "${!var:-}" ]; then args+=(-e "$var"); fi
    done
  elif have_aws_files "$HOME"; then
    args+=(-v "$HOME/.aws:$container_home/.aws:ro" -e "AWS_PROFILE=$name")
  else
    echo "entrypoint.sh: no AWS credentials (neither AWS_ACCESS_KEY_ID nor ~/.aws): commands that call AWS will fail" >&2
  fi
  for var in AWS_REGION AWS_DEFAULT_REGION; do
    if [ -n "${!var:-}" ]; then args+=(-e "$var"); fi
  done
  args+=("$image" -e "$name")
  if [ "$play" = 1 ]; then args+=(--play); fi
  exec docker "${args[@]}" -- "$@"
fi

# --- in the container: the environment, then the shell or CMD ---------------
cd "$workspace"
env_file="environments/$name.tfvars"
if [ ! -f "$env_file" ]; then
  if [ "$play" != 1 ]; then
    die 2 "no environment file $env_file (nodeboot env new $name writes one; --play does it for a playground)"
  fi
  nodeboot env new "$name" --dir environments
  echo "--> Wrote $env_file from the defaults: set kms_master_id, the bucket names, the DNS zones and the access lists before 'run'" >&2
fi
export NODEBOOT_ENV="$name" ENV_FILE="$env_file"

if [ -z "${AWS_ACCESS_KEY_ID:-}" ] && ! have_aws_files "$HOME"; then
  echo "--> No AWS credentials: commands that call AWS will fail" >&2
fi
echo "--> Running nodeboot, with environment: $name" >&2

if [ $# -gt 0 ]; then
  exec "$@"
fi
exec bash --rcfile "${NODEBOOT_BASHRC:-/etc/nodeboot/bashrc}" -i
