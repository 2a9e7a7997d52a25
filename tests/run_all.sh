#!/usr/bin/env bash
# The whole test suite from a fresh machine: installs (pip + apt), real services, pytest.
#
#   bash tests/run_all.sh            # everything: unit (with doctests), e2e, integration, exactly-once
#   bash tests/run_all.sh -k codec   # extra arguments go to pytest
#
# The report test renders HTML in Debian's headless chromium (installed here).
# Integration tests run against real containers (tansu broker, redis-server)
# built offline by .ci/services.sh; STREAMLEARN_REQUIRE_SERVICES=1 makes a
# missing Docker engine a failure rather than a skip. .ci/compose_check.sh
# validates docker-compose.yml with Compose (installing Debian's
# docker-compose if there is no `docker compose`) before pytest runs.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON=${PYTHON:-python3}

echo "== installing streamlearn and its test dependencies" >&2
# Pin torch first: an unpinned resolve pulls the multi-GB CUDA build even on CPU machines.
"$PYTHON" -m pip install -q torch==2.13.0
"$PYTHON" -m pip install -q -e '.[dev,embedded,fast,avalanche,proto]' -c .ci/constraints.txt

echo "== starting the test services (docker engine, offline images)" >&2
eval "$(PYTHON="$PYTHON" bash .ci/services.sh)"
export STREAMLEARN_REQUIRE_SERVICES=1

echo "== headless browser for the report screenshot test (Debian's chromium)" >&2
if ! command -v chromium >/dev/null && ! command -v chromium-browser >/dev/null; then
  # The lock .ci/services.sh takes: concurrent apt runs on a shared machine collide.
  (
    flock 9
    { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium \
        || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }; } >&2
  ) 9>/tmp/streamlearn-services.lock
fi

echo "== validating docker-compose.yml (docker compose config)" >&2
bash .ci/compose_check.sh

echo "== pytest" >&2
set +e
# No paths: pyproject.toml's testpaths (tests/ and the packages) and addopts (--doctest-modules)
# collect every tier -- unit, e2e, integration -- and each doctest once.
"$PYTHON" -m pytest -p no:cacheprovider "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "pytest collected no tests: that is a failure, not a pass" >&2
  exit 1
fi
exit "$rc"
