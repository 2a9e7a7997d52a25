"""Run the API under uvicorn in a background thread (the demo, tests, benchmarks).

``streamlearn serve`` runs uvicorn in the foreground instead; this is for
processes that have other work on their main thread.

Examples
--------
>>> import tempfile, httpx
>>> from serving.api.app import create_app
>>> from serving.settings import RegistrySettings, ServingSettings
>>> app = create_app(ServingSettings(), registry_settings=RegistrySettings(url=tempfile.mkdtemp()))
>>> with BackgroundServer(app, port=0) as server:
...     httpx.get(f"{server.url}/health").status_code
200
"""

from __future__ import annotations

import socket
import threading
import time

import uvicorn
from fastapi import FastAPI

from stream.core.errors import ConfigError


def port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


class BackgroundServer:
    """uvicorn serving ``app`` on ``host:port`` from a daemon thread; ``port=0`` picks a free one."""

    def __init__(
        self,
        app: FastAPI,
        *,
        host: str = "127.0.0.1",
        port: int = 8000,
        startup_timeout: float = 30.0,
        log_level: str = "warning",
    ) -> None:
        self.host = host
        if port == 0:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.bind((host, 0))
                port = s.getsockname()[1]
        self.port = port
        self.startup_timeout = startup_timeout
        self._server = uvicorn.Server(
            uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=False, lifespan="on")
        )
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> BackgroundServer:
        """Start and wait until uvicorn accepts connections (and the app's lifespan ran).

        Raises
        ------
        ConfigError
            The port is taken, or the server did not start in time.
        """
        if not port_is_free(self.host, self.port):
            raise ConfigError(f"port {self.port} on {self.host} is already in use; choose another port")
        self._thread = threading.Thread(target=self._server.run, name="streamlearn-api", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + self.startup_timeout
        while not self._server.started:
            if not self._thread.is_alive():
                raise ConfigError(f"the API server on {self.url} exited during startup (see the log above)")
            if time.monotonic() > deadline:
                raise ConfigError(
                    f"the API server on {self.url} did not start within {self.startup_timeout:g}s"
                )
            time.sleep(0.02)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
