#!/usr/bin/env bash
# Validate docker-compose.yml with Compose itself (a CI step of tests/run_all.sh).
#
#   bash .ci/compose_check.sh                 # the repository's docker-compose.yml
#   bash .ci/compose_check.sh path/to/file.yml
#
# Uses the Compose v2 plugin (`docker compose`) when the docker CLI has it,
# else the standalone `docker-compose`; when neither exists, installs Debian's
# docker-compose package (1.29, offline-friendly: no plugin download). Runs
# `config -q` (schema, interpolation, references between services) and
# `config --services`; exits non-zero if either fails. Validation contacts no
# Docker engine and no registry: nothing is built, pulled or started.
#
# All output goes to stderr.
set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
file=${1:-$REPO_ROOT/docker-compose.yml}

log() { echo "compose_check.sh: $*" >&2; }
die() { echo "compose_check.sh: ERROR: $*" >&2; exit 1; }

[[ -f "$file" ]] || die "no such file: $file"

if docker compose version >/dev/null 2>&1; then
  compose=(docker compose)
else
  if ! command -v docker-compose >/dev/null; then
    command -v apt-get >/dev/null \
      || die "neither 'docker compose' nor 'docker-compose' found, and no apt-get to install one"
    log "installing docker-compose from Debian"
    # The lock that .ci/services.sh takes: concurrent apt runs on a shared machine would collide.
    exec 9>/tmp/streamlearn-services.lock
    flock 9
    status=0
    { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker-compose \
        || { apt-get update -qq \
             && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker-compose; }
    } >&2 || status=$?
    exec 9>&-
    ((status == 0)) || die "apt-get install docker-compose failed (exit $status)"
  fi
  compose=(docker-compose)
fi

version=$("${compose[@]}" version --short 2>/dev/null || "${compose[@]}" version 2>&1 | head -n 1)
# --project-directory: relative paths (build: .) resolve against the file's folder.
project_dir=$(cd "$(dirname "$file")" && pwd)
"${compose[@]}" -f "$file" --project-directory "$project_dir" config -q \
  || die "$file does not validate with ${compose[*]} $version"
services=$("${compose[@]}" -f "$file" --project-directory "$project_dir" config --services) \
  || die "${compose[*]} config --services failed on $file"
log "ok: $file validates with ${compose[*]} $version (services: $(echo $services))"
