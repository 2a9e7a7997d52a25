#!/usr/bin/env bash
# Lint and format check with ruff, at the version pyproject's dev extra pins
# (formatting differs between ruff releases); the rule set is in pyproject.toml.
# Then the architecture: the layering and no import cycles (import-linter, contracts under
# [tool.importlinter] in pyproject.toml) and the shape rules (.ci/shape_check.py: modules
# <= 600 lines, functions <= 10 parameters). docs/layout.md explains both.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON=${PYTHON:-python3}
ruff_pin=$(grep -o '"ruff==[^"]*"' pyproject.toml | tr -d '"')
[ -n "$ruff_pin" ] || { echo "pyproject.toml's dev extra must pin ruff (ruff==X.Y.Z)" >&2; exit 1; }
linter_pin=$(grep -o '"import-linter==[^"]*"' pyproject.toml | tr -d '"')
[ -n "$linter_pin" ] || { echo "pyproject.toml's dev extra must pin import-linter (import-linter==X.Y)" >&2; exit 1; }
"$PYTHON" -m pip install -q "$ruff_pin" "$linter_pin"
echo "== ruff check ($ruff_pin)" >&2
"$PYTHON" -m ruff check .
echo "== ruff format --check" >&2
"$PYTHON" -m ruff format --check .
echo "== lint-imports ($linter_pin): layers and import cycles" >&2
# The packages are imported from this checkout, not from an installed copy.
# (`lint-imports` through the chosen interpreter: importlinter has no `python -m` entry.)
PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" "$PYTHON" -c \
  'import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())'
echo "== shape check: module size and parameter count" >&2
"$PYTHON" .ci/shape_check.py
