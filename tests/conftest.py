"""Test tiers, and the shared fixtures: real services (Kafka-protocol broker, Redis) and helpers.

Tiers
-----

Every test belongs to exactly one tier: its directory, marked by the
collection hook below (markers registered in pyproject.toml).

``unit`` -- tests/unit, plus every doctest of stream, learners, drift, serving and bench
    In process: no subprocesses, brokers, browsers or containers. A unit test
    (or its fixture) that starts a process fails and says so. The inner loop::

        pytest -m unit                 # ~1,000 tests with the doctests, about a minute

``e2e`` -- tests/e2e
    The CLI as subprocesses, the embedded broker, headless Chromium, torchrun
    workers, ``docker compose config``; and the heavy statistical scenarios
    (the drift policy over 40,000-event streams). The doctest of
    stream/sources/embedded_broker.py starts the embedded broker, so it is e2e too::

        pytest -m e2e

``integration`` -- tests/integration
    Real Kafka-protocol broker and Redis containers (Docker); skipped without
    an engine unless ``STREAMLEARN_REQUIRE_SERVICES=1``::

        pytest -m integration

``pytest`` with no arguments (pyproject.toml's testpaths: tests/ and the
packages, ``--doctest-modules`` in addopts) runs all three tiers and each
doctest once; so does ``bash tests/run_all.sh``, the README's command, after
installing everything and starting the services. ``pytest -m "not integration"``
is everything that needs no Docker. A test file outside the three directories,
a service fixture outside tests/integration, or a tier marker contradicting the
directory stops the collection with a message; tests/unit/test_tiers.py checks
the policy itself.

Services
--------

Integration tests run against real containers started through testcontainers,
one broker and one Redis per test session, with *host networking* on
127.0.0.1: the offline CI engine runs with ``--bridge=none`` (see
``.ci/services.sh``), so there is no port mapping, only free host ports.

Environment:

``STREAMLEARN_TEST_KAFKA_IMAGE``
    Broker image (default ``apache/kafka:3.9.0``; offline CI uses
    ``streamlearn-test/tansu:local`` built by ``.ci/services.sh``).
``STREAMLEARN_TEST_KAFKA_FLAVOR``
    ``tansu`` or ``apache``; by default ``tansu`` when the image name says so.
``STREAMLEARN_TEST_REDIS_IMAGE``
    Redis image (default ``redis:7.4``; offline ``streamlearn-test/redis:local``).
``STREAMLEARN_TEST_PULL``
    ``1`` lets the fixtures pull a missing image; off by default so that no
    test run reaches for a registry unasked.
``STREAMLEARN_REQUIRE_SERVICES``
    ``1`` (CI): a missing Docker engine fails the integration tests instead of
    skipping them, so a broken CI machine cannot pass by running nothing.

Unit tests need none of this: Docker, testcontainers and the service clients
are only touched when a test requests a service fixture.
"""

from __future__ import annotations

import os
import re
import socket
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

# Ryuk (testcontainers' reaper) is itself a container reached through a mapped
# port; neither exists offline, so it is off unless a user explicitly opts in.
# Must be set before testcontainers reads its configuration on import.
os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")

# One CPU thread for torch's (OpenMP) and numpy's (OpenBLAS) kernels, in this process and every
# CLI subprocess or torchrun worker a test starts: the daemon learns on one thread already
# (--torch-threads defaults to 1), and the tests' models are far too small to gain from more.
# On a shared 2-core machine, two spinning OpenMP threads per process made the tests up to 4x
# slower (tests/unit/test_drift_policy.py: 37 s with one thread, 115-240 s with two, under load).
# Set before anything imports torch or numpy; an explicit OMP_NUM_THREADS wins.
os.environ.setdefault("OMP_NUM_THREADS", "1")

if TYPE_CHECKING:
    from docker import DockerClient
    from kafka import KafkaAdminClient
    from testcontainers.core.container import DockerContainer

KAFKA_IMAGE = os.environ.get("STREAMLEARN_TEST_KAFKA_IMAGE", "apache/kafka:3.9.0")
REDIS_IMAGE = os.environ.get("STREAMLEARN_TEST_REDIS_IMAGE", "redis:7.4")
LOOPBACK = "127.0.0.1"
STARTUP_TIMEOUT_S = 60.0
# Containers are named after the pytest process that owns them so that a later
# session can remove the ones a killed session left behind (Ryuk is off).
CONTAINER_PREFIX = "streamlearn-test"

TESTS_DIR = Path(__file__).resolve().parent
#: The test tiers, each a marker (registered in pyproject.toml) and a directory under tests/.
TIERS = ("unit", "e2e", "integration")
TIER_DIRS = {tier: TESTS_DIR / tier for tier in TIERS}
SERVICE_FIXTURES = frozenset(
    {
        "kafka_service",
        "kafka_bootstrap",
        "kafka_admin",
        "make_topic",
        "kafka_consumer_settings",
        "redis_service",
        "redis_url",
        "secure_redis",
    }
)

# Group timings that work on both broker flavors. tansu answers the first
# JoinGroup of a new group only after about session_timeout_ms / 2 (measured:
# ~23 s at kafka-python's default 45 s, ~3 s at 6 s, ~1 s at 2 s), and Apache
# Kafka refuses sessions below group.min.session.timeout.ms = 6 s by default.
# 6 s also leaves the heartbeat thread room on a busy 2-core CI machine.
KAFKA_CONSUMER_TIMINGS: dict[str, Any] = {
    "session_timeout_ms": 6000,
    "heartbeat_interval_ms": 500,
    "max_poll_interval_ms": 30000,
}


class ServiceStartError(RuntimeError):
    """A service container started but never became ready; carries its logs."""


class _PortTaken(ServiceStartError):
    """The chosen free port was taken by someone else before the service bound it."""


# --------------------------------------------------------------------------- #
# Tiers: unit, e2e, integration
# --------------------------------------------------------------------------- #

#: Doctests that start a process (the module example of stream/sources/embedded_broker.py starts the embedded
#: broker): tier ``e2e``. Every other doctest is ``unit``.
E2E_DOCTESTS = frozenset({"stream.sources.embedded_broker"})

#: Programs that libraries run to look at the machine (ctypes.util.find_library, platform,
#: matplotlib's font cache, version lookups); a unit test may trigger these, not start others.
PROBE_PROGRAMS = frozenset(
    {"ldconfig", "file", "fc-list", "git", "hg", "uname", "gcc", "cc", "ld", "objdump"}
)
_SPAWN_EVENTS = frozenset(
    {"subprocess.Popen", "os.posix_spawn", "os.exec", "os.spawn", "os.system", "os.fork", "os.forkpty"}
)


def tier_of(item: pytest.Item) -> str | None:
    """The tier of a collected test: its directory under tests/; for a doctest ``unit``, or ``e2e``
    for those in :data:`E2E_DOCTESTS`.

    ``None`` for anything else (a test file outside the three tier directories).
    """
    if isinstance(item, pytest.DoctestItem):
        return "e2e" if item.name in E2E_DOCTESTS else "unit"
    path = item.path.resolve()
    for tier, directory in TIER_DIRS.items():
        if directory in path.parents:
            return tier
    return None


@pytest.hookimpl(tryfirst=True)  # before ``-m`` deselects by these markers
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test with its tier (see the module docstring); refuse tests that fit none.

    A test outside tests/unit, tests/e2e and tests/integration would silently
    drop out of every ``-m`` tier, a service fixture outside tests/integration
    would start containers in a unit or e2e run, and a tier marker other than
    the directory's would put a test in two tiers: each stops the collection
    with a message saying where the test belongs.
    """
    misplaced = []
    for item in items:
        tier = tier_of(item)
        if tier is None:
            misplaced.append(f"{item.nodeid}: not under tests/{{{','.join(TIERS)}}}/")
            continue
        services = sorted(SERVICE_FIXTURES.intersection(getattr(item, "fixturenames", ())))
        if services and tier != "integration":
            misplaced.append(f"{item.nodeid}: uses {', '.join(services)}; it belongs in tests/integration/")
        # An explicit tier marker may repeat the directory's (``pytestmark = pytest.mark.e2e``), not contradict it.
        declared = sorted({mark.name for mark in item.iter_markers() if mark.name in TIERS} - {tier})
        if declared:
            misplaced.append(f"{item.nodeid}: marked {', '.join(declared)} but in tests/{tier}/")
        item.add_marker(getattr(pytest.mark, tier))
    if misplaced:
        raise pytest.UsageError(
            "tests outside their tier (see tests/conftest.py's docstring):\n  " + "\n  ".join(misplaced)
        )


class _SpawnWatch:
    """Records the processes started while a unit test sets up and runs (a ``sys`` audit hook)."""

    def __init__(self) -> None:
        self.active = False
        self.started: list[str] = []

    def record(self, event: str, args: tuple[Any, ...]) -> None:
        program = _program(event, args)
        if Path(program).name not in PROBE_PROGRAMS:
            self.started.append(f"{event}: {program}")


def _program(event: str, args: tuple[Any, ...]) -> str:
    if event in {"os.fork", "os.forkpty"}:
        return "(a forked copy of the test process)"
    if event == "os.system":
        return str(args[0]).split(" ", 1)[0]
    if event == "os.spawn":  # (mode, path, args, env)
        return str(args[1])
    return os.fsdecode(args[0]) if args and args[0] is not None else repr(args[1:2])


_spawn_watch = _SpawnWatch()


def _audit(event: str, args: tuple[Any, ...], events: frozenset[str] = _SPAWN_EVENTS) -> None:
    # Called for every audit event of the process (millions a run): a plain function, cheapest test first.
    if event in events and _spawn_watch.active:
        _spawn_watch.record(event, args)


sys.addaudithook(_audit)  # cannot be removed; ~0.3 us per audit event, about 1 s of a unit run


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Iterator[None]:
    return (yield from _unit_runs_in_process(item))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    return (yield from _unit_runs_in_process(item))


def _unit_runs_in_process(item: pytest.Item) -> Iterator[None]:
    """Fail a ``unit`` test (or its fixtures) that starts a process: it belongs in tests/e2e."""
    if item.get_closest_marker("unit") is None:
        return (yield)
    outer = _spawn_watch.active, _spawn_watch.started  # restored: the tier test drives this itself
    _spawn_watch.active, _spawn_watch.started = True, []
    try:
        result = yield
    finally:
        started = _spawn_watch.started
        _spawn_watch.active, _spawn_watch.started = outer
    if started:
        pytest.fail(
            "a unit test runs in process, but this one started "
            + ", ".join(dict.fromkeys(started))
            + ": move it to tests/e2e (see tests/conftest.py's docstring)",
            pytrace=False,
        )
    return result


# --------------------------------------------------------------------------- #
# Services: skip or fail
# --------------------------------------------------------------------------- #


def _services_required() -> bool:
    return os.environ.get("STREAMLEARN_REQUIRE_SERVICES", "").strip().lower() in {"1", "true", "yes", "on"}


def _services_unavailable(reason: str) -> None:
    """Skip the requesting test, or fail it when CI requires real services."""
    hint = (
        'Start them with:  eval "$(bash .ci/services.sh)"  (installs and '
        "starts Docker, builds the offline images, prints the env vars)."
    )
    if _services_required():
        pytest.fail(
            f"STREAMLEARN_REQUIRE_SERVICES=1 but the test services are unavailable: {reason}\n{hint}",
            pytrace=False,
        )
    pytest.skip(f"integration services unavailable: {reason}. {hint}")


@pytest.fixture(scope="session")
def docker_engine() -> Iterator[DockerClient]:
    """A connected Docker SDK client, or skip/fail the test per the policy above.

    A session fixture that skips or fails is cached by pytest, so an absent
    engine is probed once per session, not once per test.
    """
    # Skip/fail outside the except blocks: the report then shows one clear
    # message instead of the connection error's whole exception chain.
    problem = None
    try:
        import docker
        import testcontainers  # noqa: F401  (imported lazily by the fixtures)
        from docker.errors import DockerException
    except ImportError as exc:  # the dev extra is not installed
        problem = f"python package missing ({exc.name}); pip install -e '.[dev]'"
    if problem:
        _services_unavailable(problem)
    try:
        client = docker.from_env(timeout=10)
        client.ping()
    except DockerException as exc:
        host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
        problem = f"no Docker engine answers at {host} ({exc})"
    if problem:
        _services_unavailable(problem)
    try:
        _remove_orphaned_containers(client)
        yield client
    finally:
        client.close()


def _remove_orphaned_containers(client: DockerClient) -> None:
    """Remove test containers whose owning pytest process no longer exists.

    Without Ryuk, a session killed by SIGKILL or a CI timeout leaks its
    containers (a JVM broker holds ~0.5 GiB). Names carry the owner's pid;
    containers of live processes (a colleague's concurrent run) are kept.
    """
    from docker.errors import NotFound

    pattern = re.compile(rf"^{CONTAINER_PREFIX}-(\d+)-")
    for container in client.containers.list(all=True, filters={"name": CONTAINER_PREFIX}):
        match = pattern.match(container.name)
        if match and not _pid_alive(int(match.group(1))):
            try:
                container.remove(force=True)
            except NotFound:  # another session reaped it first
                pass


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


# --------------------------------------------------------------------------- #
# Container plumbing
# --------------------------------------------------------------------------- #


def _free_port() -> int:
    """A port that is free on 127.0.0.1 right now (the container binds it next)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def _container_logs(container: DockerContainer, tail: int = 60) -> str:
    try:
        raw = container.get_wrapped_container().logs(tail=tail)
    except Exception as exc:  # logs are diagnostics; never mask the real error
        return f"<logs unavailable: {exc}>"
    return raw.decode(errors="replace")


def _new_container(image: str, role: str) -> DockerContainer:
    from testcontainers.core.container import DockerContainer

    # network="host" rather than network_mode="host": testcontainers only
    # skips its own network guess (find_host_network, which would override
    # network_mode when pytest itself runs inside a container) when a
    # "network" kwarg is given. docker-py turns it into NetworkMode=host.
    return (
        DockerContainer(image)
        .with_name(f"{CONTAINER_PREFIX}-{os.getpid()}-{role}-{uuid.uuid4().hex[:6]}")
        .with_kwargs(network="host")
    )


def _wait_ready(
    container: DockerContainer,
    probe: Callable[[], object],
    what: str,
    timeout_s: float = STARTUP_TIMEOUT_S,
) -> float:
    """Poll ``probe`` until it succeeds; return the seconds it took.

    Raises:
        _PortTaken: the container exited because its port was taken.
        ServiceStartError: the container exited or ``probe`` kept failing
            until the deadline; the message holds the last error and the logs.
    """
    start = time.monotonic()
    deadline = start + timeout_s
    last_error: BaseException | None = None
    while True:
        wrapped = container.get_wrapped_container()
        wrapped.reload()
        if wrapped.status in {"exited", "dead"}:
            logs = _container_logs(container)
            exc_type = (
                _PortTaken
                if "address in use" in logs.lower() or ("address already in use" in logs.lower())
                else ServiceStartError
            )
            raise exc_type(f"{what} container exited during startup; logs:\n{logs}")
        try:
            probe()
            return time.monotonic() - start
        except Exception as exc:  # any protocol error means "not ready yet"
            last_error = exc
        if time.monotonic() >= deadline:
            raise ServiceStartError(
                f"{what} not ready after {timeout_s:.0f}s; last error: {last_error!r}; "
                f"container logs:\n{_container_logs(container)}"
            )
        time.sleep(0.2)  # poll interval between protocol probes, not a readiness guess


def _start_with_free_port(
    start_once: Callable[[int], tuple[DockerContainer, float]], attempts: int = 3
) -> tuple[DockerContainer, int, float]:
    """Start a service on a fresh free port, retrying if another process grabs it.

    The port is free when chosen but only bound later by the container, and
    other test sessions on the same host pick ports concurrently.
    """
    for attempt in range(1, attempts + 1):
        port = _free_port()
        try:
            container, ready_s = start_once(port)
            return container, port, ready_s
        except _PortTaken:
            if attempt == attempts:
                raise
    raise AssertionError("unreachable")


# --------------------------------------------------------------------------- #
# Kafka
# --------------------------------------------------------------------------- #


def _kafka_flavor(image: str) -> str:
    flavor = os.environ.get("STREAMLEARN_TEST_KAFKA_FLAVOR") or (
        "tansu" if "tansu" in image.lower() else "apache"
    )
    if flavor not in {"tansu", "apache"}:
        pytest.fail(f"STREAMLEARN_TEST_KAFKA_FLAVOR={flavor!r}: expected 'tansu' or 'apache'", pytrace=False)
    return flavor


def _configure_tansu(container: DockerContainer, port: int) -> DockerContainer:
    url = f"tcp://{LOOPBACK}:{port}"
    # Memory storage (tansu's default): every session starts from an empty broker.
    return container.with_command(["broker", "--listener-url", url, "--advertised-listener-url", url])


def _configure_apache(container: DockerContainer, port: int) -> DockerContainer:
    controller_port = _free_port()
    env = {
        # Single-node KRaft: this process is both broker and controller.
        "KAFKA_NODE_ID": "1",
        "KAFKA_PROCESS_ROLES": "broker,controller",
        "CLUSTER_ID": "c3RyZWFtbGVhcm4tdGVzdA",  # any 22-char base64 id
        "KAFKA_LISTENERS": (f"PLAINTEXT://{LOOPBACK}:{port},CONTROLLER://{LOOPBACK}:{controller_port}"),
        "KAFKA_ADVERTISED_LISTENERS": f"PLAINTEXT://{LOOPBACK}:{port}",
        "KAFKA_CONTROLLER_LISTENER_NAMES": "CONTROLLER",
        "KAFKA_INTER_BROKER_LISTENER_NAME": "PLAINTEXT",
        "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "KAFKA_CONTROLLER_QUORUM_VOTERS": f"1@{LOOPBACK}:{controller_port}",
        # Internal topics default to replication 3, impossible on one node.
        "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR": "1",
        "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR": "1",
        "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR": "1",
        # Setting any KAFKA_* variable replaces the image's default config, log dirs included.
        "KAFKA_LOG_DIRS": "/tmp/kraft-combined-logs",
        # The default 3 s delay would add to every test's first group join.
        "KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS": "0",
        "KAFKA_HEAP_OPTS": "-Xms256m -Xmx768m",
    }
    return container.with_envs(**env)


def _probe_kafka(bootstrap: str) -> None:
    """One metadata round trip; raises until the broker serves metadata."""
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, bootstrap_timeout_ms=2000, request_timeout_ms=5000)
    try:
        admin.list_topics()
    finally:
        admin.close()


@dataclass
class KafkaService:
    """A running single-node Kafka-protocol broker on 127.0.0.1."""

    bootstrap: str
    flavor: str
    image: str
    startup_s: float
    _container: DockerContainer = field(repr=False)

    def logs(self, tail: int = 200) -> str:
        return _container_logs(self._container, tail)


@pytest.fixture(scope="session")
def kafka_service(docker_engine: DockerClient) -> Iterator[KafkaService]:
    """One broker for the whole session, ready once it answers a metadata request.

    Note (tansu): ListOffsets (kafka-python ``end_offsets``) reports the base
    offset of the last *batch* + 1 as the high watermark, not the last record's
    offset + 1, so it is too small once batches hold several records. Tests
    count consumed records and their offsets instead of trusting end_offsets.
    """
    flavor = _kafka_flavor(KAFKA_IMAGE)
    _ensure_image(docker_engine, KAFKA_IMAGE)
    configure = _configure_tansu if flavor == "tansu" else _configure_apache

    def start_once(port: int) -> tuple[DockerContainer, float]:
        container = configure(_new_container(KAFKA_IMAGE, "kafka"), port)
        try:
            container.start()
            return container, _wait_ready(
                container, lambda: _probe_kafka(f"{LOOPBACK}:{port}"), f"Kafka ({flavor})"
            )
        except BaseException:
            container.stop()
            raise

    container, port, ready_s = _start_with_free_port(start_once)
    try:
        yield KafkaService(f"{LOOPBACK}:{port}", flavor, KAFKA_IMAGE, ready_s, container)
    finally:
        container.stop()


def _ensure_image(client: DockerClient, image: str) -> None:
    """Use ``image`` if it is local; pull it only when ``STREAMLEARN_TEST_PULL=1``.

    Never pulling by default keeps a test run from reaching out to a registry
    (offline machines must not send traffic beyond loopback); the local images
    come from ``.ci/services.sh``, and users with a registry opt in to pulls.
    """
    from docker.errors import DockerException, ImageNotFound

    try:
        client.images.get(image)
        return
    except ImageNotFound:
        pass
    if os.environ.get("STREAMLEARN_TEST_PULL", "").strip() != "1":
        _services_unavailable(
            f"image {image!r} is not local; `docker pull {image}` or set STREAMLEARN_TEST_PULL=1 "
            "(with a registry), or point STREAMLEARN_TEST_*_IMAGE at local images"
        )
    try:
        client.images.pull(image)
        return
    except DockerException as exc:
        problem = f"image {image!r} is neither local nor pullable ({exc})"
    _services_unavailable(problem)


@pytest.fixture(scope="session")
def kafka_bootstrap(kafka_service: KafkaService) -> str:
    """``"127.0.0.1:PORT"`` of the session broker."""
    return kafka_service.bootstrap


@pytest.fixture(scope="session")
def kafka_admin(kafka_bootstrap: str) -> Iterator[KafkaAdminClient]:
    """A session-wide admin client (do not close it in tests)."""
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    try:
        yield admin
    finally:
        admin.close()


@pytest.fixture
def make_topic(kafka_admin: KafkaAdminClient, unique_name: str) -> Callable[..., str]:
    """Factory: ``make_topic(name=None, partitions=3) -> name``.

    Creates the topic and returns only once the broker's metadata lists every
    partition with a leader, so producers and consumers can use it at once.
    Without a name it uses the test's ``unique_name`` (plus a suffix when
    called more than once in a test).
    """
    made: list[str] = []

    def make(name: str | None = None, partitions: int = 3) -> str:
        if name is None:
            name = unique_name if not made else f"{unique_name}-{len(made)}"
        kafka_admin.create_topics({name: {"num_partitions": partitions, "replication_factor": 1}})
        kafka_admin.wait_for_topics([name], timeout_ms=30_000)
        (described,) = kafka_admin.describe_topics([name])
        if len(described["partitions"]) != partitions:
            raise RuntimeError(
                f"topic {name!r} has {len(described['partitions'])} partitions, asked for {partitions}"
            )
        made.append(name)
        return name

    return make


@pytest.fixture
def kafka_consumer_settings(kafka_bootstrap: str) -> dict[str, Any]:
    """Keyword arguments for ``KafkaConsumer`` against the session broker.

    A fresh dict per test, so tests may change it. Add ``group_id`` (e.g.
    ``unique_name``) to use a consumer group. CRC checks stay on: tansu's
    record batches verify (checked with plain and gzip batches).
    """
    return {
        "bootstrap_servers": kafka_bootstrap,
        "auto_offset_reset": "earliest",
        "enable_auto_commit": False,
        **KAFKA_CONSUMER_TIMINGS,
    }


# --------------------------------------------------------------------------- #
# Redis
# --------------------------------------------------------------------------- #


def _probe_redis(url: str) -> None:
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)
    try:
        client.ping()
    finally:
        client.close()


class RedisService:
    """A Redis container on a fixed 127.0.0.1 port that tests can stop and start.

    ``stop()``/``start()`` restart the *same* container on the *same* port,
    so clients holding ``url`` reconnect to it (outage tests). Persistence is
    off: a restart loses every key.
    """

    def __init__(self, container: DockerContainer, port: int, startup_s: float) -> None:
        self._container = container
        self.port = port
        self.url = f"redis://{LOOPBACK}:{port}/0"
        self.startup_s = startup_s

    @property
    def running(self) -> bool:
        wrapped = self._container.get_wrapped_container()
        wrapped.reload()
        return wrapped.status == "running"

    def stop(self, timeout_s: int = 5) -> None:
        """Stop the server (SIGTERM, then SIGKILL after ``timeout_s``).

        While stopped its port is free; in the unlikely case another process
        takes it meanwhile, ``start()`` raises with the container logs.
        """
        self._container.get_wrapped_container().stop(timeout=timeout_s)

    def start(self) -> float:
        """Start the stopped server again and wait for PING; return seconds taken."""
        self._container.get_wrapped_container().start()
        return _wait_ready(self._container, lambda: _probe_redis(self.url), "Redis")

    def ensure_running(self) -> None:
        """Restart the server if an earlier test left it stopped."""
        if not self.running:
            self.start()

    def logs(self, tail: int = 200) -> str:
        return _container_logs(self._container, tail)


def _start_redis(
    role: str,
    *,
    password: str | None = None,
    volume: tuple[str, str] | None = None,
    extra_args: Sequence[str] = (),
) -> tuple[DockerContainer, int, float]:
    """Start a Redis container on a free loopback port; wait for PING. Returns (container, port, seconds)."""

    def start_once(port: int) -> tuple[DockerContainer, float]:
        # Flags rather than a config file: the same command works for the
        # scratch image and the official redis image (whose entrypoint passes
        # arguments starting with "-" to redis-server).
        args = ["--port", str(port), "--bind", LOOPBACK, "--save", "", "--appendonly", "no"]
        if password is not None:
            args += ["--requirepass", password]
        container = _new_container(REDIS_IMAGE, role)
        if volume is not None:
            container = container.with_volume_mapping(volume[0], volume[1], "ro")
        container = container.with_command([*args, *extra_args])
        try:
            container.start()
            auth = f":{password}@" if password is not None else ""
            url = f"redis://{auth}{LOOPBACK}:{port}/0"
            return container, _wait_ready(container, lambda: _probe_redis(url), f"Redis ({role})")
        except BaseException:
            container.stop()
            raise

    return _start_with_free_port(start_once)


@pytest.fixture(scope="session")
def redis_service(docker_engine: DockerClient) -> Iterator[RedisService]:
    """One Redis server for the whole session, ready once it answers PING."""
    _ensure_image(docker_engine, REDIS_IMAGE)
    container, port, ready_s = _start_redis("redis")
    try:
        yield RedisService(container, port, ready_s)
    finally:
        container.stop()


@dataclass(frozen=True)
class SecureRedis:
    """A Redis that demands a password, on a plain port and a TLS port (self-signed CA)."""

    password: str
    plain_port: int
    tls_port: int
    ca_file: str

    def url(self, *, tls: bool, password: str | None = None) -> str:
        pw = self.password if password is None else password
        if tls:
            return f"rediss://:{pw}@{LOOPBACK}:{self.tls_port}/0?ssl_ca_certs={self.ca_file}"
        return f"redis://:{pw}@{LOOPBACK}:{self.plain_port}/0"


def _write_test_tls_files(directory: Path) -> None:
    """A throwaway CA and a server certificate for 127.0.0.1, valid for one day."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "streamlearn test CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, LOOPBACK)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(LOOPBACK))]), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    (directory / "ca.crt").write_bytes(ca_cert.public_bytes(pem))
    (directory / "server.crt").write_bytes(cert.public_bytes(pem))
    (directory / "server.key").write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption())
    )
    for name in ("ca.crt", "server.crt", "server.key"):
        (directory / name).chmod(0o644)  # the container's redis user must read them


@pytest.fixture(scope="session")
def secure_redis(
    docker_engine: DockerClient, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SecureRedis]:
    """Redis with ``requirepass`` on a plain port and TLS on another (for AUTH/TLS-through-URL tests)."""
    _ensure_image(docker_engine, REDIS_IMAGE)
    tls_dir = tmp_path_factory.mktemp("redis-tls")
    _write_test_tls_files(tls_dir)
    password = uuid.uuid4().hex
    tls_port = _free_port()

    container, port, _ = _start_redis(
        "redis-secure",
        password=password,
        volume=(str(tls_dir), "/tls"),
        extra_args=[
            "--tls-port",
            str(tls_port),
            "--tls-cert-file",
            "/tls/server.crt",
            "--tls-key-file",
            "/tls/server.key",
            "--tls-ca-cert-file",
            "/tls/ca.crt",
            "--tls-auth-clients",
            "no",
        ],
    )
    try:
        yield SecureRedis(password, port, tls_port, str(tls_dir / "ca.crt"))
    finally:
        container.stop()


@pytest.fixture
def redis_url(redis_service: RedisService) -> str:
    """``"redis://127.0.0.1:PORT/0"``, with the server running for this test.

    Function-scoped so that a test which stopped Redis and then failed does
    not take every later Redis test down with it.
    """
    redis_service.ensure_running()
    return redis_service.url


# --------------------------------------------------------------------------- #
# Generic helpers
# --------------------------------------------------------------------------- #

_UNSAFE_NAME_CHARS = re.compile(r"[^a-zA-Z0-9._-]+")


@pytest.fixture
def unique_name(request: pytest.FixtureRequest) -> str:
    """A per-test name, legal as a Kafka topic, consumer group or Redis key prefix.

    Kafka topic names allow ``[a-zA-Z0-9._-]`` up to 249 characters; the test
    name part keeps failures traceable to their test.
    """
    test_part = _UNSAFE_NAME_CHARS.sub("-", request.node.name)[:30].strip("-.")
    return f"t-{test_part}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(autouse=True)
def _isolated_registry(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Point the default model registry (``.streamlearn/registry`` in the CWD) at a temp dir.

    ``streamlearn run`` publishes to it by default; CLI subprocesses inherit
    the environment, so no test writes into the checkout.
    """
    monkeypatch.setenv("STREAMLEARN_REGISTRY_URL", str(tmp_path_factory.mktemp("registry")))


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's headless Chromium, for the report screenshot tests (tests/run_all.sh installs it)."""
    import shutil

    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        reason = "headless Chromium (chromium or chromium-browser on PATH) is needed for the screenshot tests"
        if _services_required():
            pytest.fail(
                f"STREAMLEARN_REQUIRE_SERVICES=1 but {reason}; apt-get install chromium", pytrace=False
            )
        pytest.skip(reason)
    return browser
