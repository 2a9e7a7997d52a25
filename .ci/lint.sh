#!/usr/bin/env bash
# Lint and format check with ruff, at the version pyproject's dev extra pins
# (formatting differs between ruff releases); the rule set is in pyproject.toml.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON=${PYTHON:-python3}
ruff_pin=$(grep -o '"ruff==[^"]*"' pyproject.toml | tr -d '"')
[ -n "$ruff_pin" ] || { echo "pyproject.toml's dev extra must pin ruff (ruff==X.Y.Z)" >&2; exit 1; }
"$PYTHON" -m pip install -q "$ruff_pin"
echo "== ruff check ($ruff_pin)" >&2
"$PYTHON" -m ruff check .
echo "== ruff format --check" >&2
"$PYTHON" -m ruff format --check .
