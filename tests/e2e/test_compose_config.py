"""Compose itself accepts docker-compose.yml (``docker compose config``, or the standalone ``docker-compose``).

Skipped when neither is installed, a failure when ``STREAMLEARN_REQUIRE_SERVICES=1``
(CI), like the service fixtures in tests/conftest.py. ``.ci/compose_check.sh``
installs one in CI. The file's contents (in step with the CLI, service names,
volumes, ports) are checked in process by tests/unit/test_compose.py.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"


def _services() -> dict[str, dict[str, Any]]:
    return yaml.safe_load(COMPOSE.read_text())["services"]


# --------------------------------------------------------------------------- Compose itself


def _services_required() -> bool:  # same switch as tests/conftest.py
    return os.environ.get("STREAMLEARN_REQUIRE_SERVICES", "").strip().lower() in {"1", "true", "yes", "on"}


def _compose_command() -> list[str] | None:
    """``docker compose`` (v2 plugin) if the docker CLI has it, else ``docker-compose``, else None."""
    if shutil.which("docker"):
        try:
            probe = subprocess.run(["docker", "compose", "version"], capture_output=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            probe = None
        if probe is not None and probe.returncode == 0:
            return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return None


def test_compose_validates_the_file():
    command = _compose_command()
    if command is None:
        reason = (
            "neither `docker compose` nor `docker-compose` is installed; "
            "`bash .ci/compose_check.sh` installs Debian's docker-compose"
        )
        if _services_required():
            pytest.fail(f"STREAMLEARN_REQUIRE_SERVICES=1 but {reason}", pytrace=False)
        pytest.skip(reason)
    base = [*command, "-f", str(COMPOSE), "--project-directory", str(ROOT)]
    # An admin token in the caller's environment must not be what makes the file valid.
    env = {k: v for k, v in os.environ.items() if k != "STREAMLEARN_SERVING_ADMIN_TOKEN"}
    checked = subprocess.run([*base, "config", "-q"], capture_output=True, text=True, timeout=120, env=env)
    assert checked.returncode == 0, f"{' '.join(command)} config rejects {COMPOSE.name}:\n{checked.stderr}"
    listed = subprocess.run(
        [*base, "config", "--services"], capture_output=True, text=True, timeout=120, env=env
    )
    assert listed.returncode == 0, listed.stderr
    assert set(listed.stdout.split()) == set(_services())
