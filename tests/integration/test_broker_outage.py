"""The broker goes away mid-stream: ``streamlearn run`` neither exits nor hangs silently, and learns every event once.

The test takes its own broker away, so it starts a dedicated one instead of
using the session's. How the outage is made depends on the flavor:

- tansu keeps records in memory (its other storage engines need Postgres or
  S3), so a stopped tansu would come back empty. The daemon therefore reaches
  the broker through a tansu *proxy* container, and the outage is a real stop
  (``docker stop``) and start of that container: the daemon's connections are
  cut, then refused, exactly as when a broker process dies, while the records
  stay in the broker behind it.
- Apache Kafka keeps its log in the container's filesystem, which ``docker
  stop`` keeps: the broker container itself is stopped and started.

The daemon runs as a subprocess with ``--ledger``, in a consumer group (whose
session expires during the outage, so it also rejoins) and with
``--until-idle``, which must not take the outage for an idle topic. The
verdict comes from the ledger in the last checkpoint.

Nothing waits on a clock alone: the outage lasts ``OUTAGE_S`` *and* until the
daemon has reported it, and the daemon is frozen (SIGSTOP) while the broker
comes back and the second part is produced, so that part is in the topic
before the daemon can see the broker again. Otherwise a daemon that had
already fetched (and, during the outage, learned) the whole first part would
go idle ``IDLE_S`` after reconnecting whenever the producer is slower than
that: a race of the test, not a fault of the daemon.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import orjson
import pytest
from conftest import (
    KAFKA_IMAGE,
    LOOPBACK,
    _configure_apache,
    _configure_tansu,
    _ensure_image,
    _kafka_flavor,
    _new_container,
    _probe_kafka,
    _start_with_free_port,
    _wait_ready,
)
from kafka import KafkaAdminClient, KafkaProducer

from stream.engine.checkpoint import CheckpointStore
from stream.engine.ledger import LearnLedger

N_BEFORE = 30_000  # produced before the daemon starts; the outage hits while it learns these
N_AFTER = 10_000  # produced once the broker is back
OUTAGE_S = 12.0  # at least: longer than the group session (6 s), so the member also rejoins
IDLE_S = 5.0
#: Generous deadlines for events (the first checkpoint, the outage reported, the end of the run).
DEADLINE_S = 300
PARTITIONS = 3


@dataclass
class OutageBroker:
    """A dedicated broker whose ``stop()``/``start()`` make a real outage for ``bootstrap``.

    ``direct`` reaches the broker without the proxy (tansu); with Apache
    Kafka it is ``bootstrap`` itself.
    """

    bootstrap: str
    direct: str
    stop: Callable[[], None]
    start: Callable[[], float]


def _restartable(container, bootstrap: str, what: str, stop_timeout_s: int):
    wrapped = container.get_wrapped_container

    def stop() -> None:
        wrapped().stop(timeout=stop_timeout_s)

    def start() -> float:
        wrapped().start()
        return _wait_ready(container, lambda: _probe_kafka(bootstrap), what)

    return stop, start


@pytest.fixture
def outage_broker(docker_engine):
    flavor = _kafka_flavor(KAFKA_IMAGE)
    _ensure_image(docker_engine, KAFKA_IMAGE)
    started = []

    def start_once(configure, role: str, what: str):
        def once(port: int):
            container = configure(_new_container(KAFKA_IMAGE, role), port)
            try:
                container.start()
                return container, _wait_ready(container, lambda: _probe_kafka(f"{LOOPBACK}:{port}"), what)
            except BaseException:
                container.stop()
                raise

        return once

    try:
        broker, broker_port, _ = _start_with_free_port(
            start_once(
                _configure_tansu if flavor == "tansu" else _configure_apache,
                "kafka-outage",
                f"Kafka ({flavor})",
            )
        )
        started.append(broker)
        direct = f"{LOOPBACK}:{broker_port}"
        if flavor == "apache":
            # A graceful stop: the broker flushes and comes back with its log.
            yield OutageBroker(direct, direct, *_restartable(broker, direct, "Kafka (apache)", 10))
            return

        def configure_proxy(container, port: int):
            url = f"tcp://{LOOPBACK}:{port}"
            return container.with_command(
                [
                    "proxy",
                    "--listener-url",
                    url,
                    "--advertised-listener-url",
                    url,
                    "--origin-url",
                    f"tcp://{direct}",
                ]
            )

        proxy, proxy_port, _ = _start_with_free_port(
            start_once(configure_proxy, "kafka-proxy", "tansu proxy")
        )
        started.append(proxy)
        bootstrap = f"{LOOPBACK}:{proxy_port}"
        yield OutageBroker(bootstrap, direct, *_restartable(proxy, bootstrap, "tansu proxy", 0))
    finally:
        for container in reversed(started):
            container.stop()


def _produce(bootstrap: str, topic: str, ids: range) -> None:
    rng = random.Random(ids.start)
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, batch_size=256 * 1024)
    try:
        for i in ids:
            x = [rng.uniform(-1, 1) for _ in range(5)]
            doc = {"id": f"ev-{i}", "ts": 1_700_000_000_000 + i, "x": x, "y": int(x[0] + x[1] > 0)}
            producer.send(topic, orjson.dumps(doc), partition=i % PARTITIONS)
        producer.flush(timeout=60)
    finally:
        producer.close()


def _learned(ckpt_dir: Path) -> int:
    ckpt = CheckpointStore(ckpt_dir).latest() if ckpt_dir.exists() else None
    return ckpt.counters["events_learned"] if ckpt is not None else 0


def _outage_reported(out_path: Path) -> bool:
    """The daemon's output holds the outage warning and a progress line saying so (checked at the end)."""
    text = out_path.read_text(errors="replace")
    return "broker unreachable (" in text and "broker unreachable for " in text


@pytest.mark.parametrize("backend", ["kafka-python", "confluent"])
def test_daemon_survives_a_broker_outage_and_learns_every_event_once(
    backend, outage_broker, unique_name, tmp_path
):
    if backend == "confluent":
        pytest.importorskip("confluent_kafka")
    topic = unique_name
    admin = KafkaAdminClient(bootstrap_servers=outage_broker.direct)
    try:
        admin.create_topics({topic: {"num_partitions": PARTITIONS, "replication_factor": 1}})
        admin.wait_for_topics([topic], timeout_ms=30_000)
    finally:
        admin.close()
    _produce(outage_broker.direct, topic, range(N_BEFORE))

    ckpt_dir, out_path = tmp_path / "ckpt", tmp_path / "daemon.out"
    cmd = [
        sys.executable,
        "-m",
        "stream.cli",
        "run",
        "--bootstrap",
        outage_broker.bootstrap,
        "--topic",
        topic,
        "--group",
        unique_name,
        "--backend",
        backend,
        "--window",
        "count:300",
        "--checkpoint-dir",
        str(ckpt_dir),
        "--checkpoint-every-batches",
        "2",
        "--max-poll-records",
        "500",
        "--ledger",
        "--n-features",
        "5",
        "--dead-letter",
        f"file:{tmp_path / 'dead.jsonl'}",
        "--until-idle",
        str(IDLE_S),
    ]
    env = {
        **os.environ,
        "STREAMLEARN_KAFKA_SESSION_TIMEOUT_MS": "6000",
        "STREAMLEARN_KAFKA_HEARTBEAT_INTERVAL_MS": "500",
        "STREAMLEARN_KAFKA_MAX_POLL_INTERVAL_MS": "30000",
    }
    with open(out_path, "wb") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + DEADLINE_S
        while _learned(ckpt_dir) == 0 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert proc.poll() is None, f"daemon exited before learning:\n{out_path.read_text()}"
        assert _learned(ckpt_dir) > 0, f"no checkpoint after {DEADLINE_S}s:\n{out_path.read_text()}"
        outage_broker.stop()  # mid-stream: the daemon is learning the first part
        at_stop = _learned(ckpt_dir)
        assert at_stop < N_BEFORE, "the outage must begin while the stream is being learned"
        down_since = time.monotonic()
        while time.monotonic() - down_since < OUTAGE_S or not _outage_reported(out_path):
            assert proc.poll() is None, f"daemon exited during the outage:\n{out_path.read_text()}"
            assert time.monotonic() - down_since < DEADLINE_S, (
                f"the outage was not reported within {DEADLINE_S}s:\n{out_path.read_text()}"
            )
            time.sleep(0.2)
        proc.send_signal(signal.SIGSTOP)
        try:
            outage_broker.start()
            _produce(outage_broker.direct, topic, range(N_BEFORE, N_BEFORE + N_AFTER))
        finally:
            proc.send_signal(signal.SIGCONT)
        assert proc.poll() is None, f"daemon exited during the outage:\n{out_path.read_text()}"
        rc = proc.wait(timeout=DEADLINE_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    output = out_path.read_text()
    print(output[-4000:])
    assert rc == 0, output
    assert "broker unreachable (" in output  # the warning, with its cause
    assert "broker unreachable for " in output and "s, retrying" in output  # the progress line
    assert "broker reachable again after" in output
    assert "[streamlearn] broker unreachable 1 time(s)" in output  # the run summary
    assert f"stopped (idle for {IDLE_S:g}s)" in output

    ckpt = CheckpointStore(ckpt_dir).latest()
    ledger = LearnLedger.from_snapshot(ckpt.ledger)
    expected = {f"ev-{i}" for i in range(N_BEFORE + N_AFTER)}
    lost = expected - ledger.ids()
    duplicated = ledger.duplicated()
    assert not lost, f"{len(lost)} events lost, e.g. {sorted(lost)[:5]}"
    assert not duplicated, f"{len(duplicated)} events learned twice, e.g. {list(duplicated.items())[:5]}"
    assert ledger.ids() == expected
    assert ckpt.counters["events_learned"] == N_BEFORE + N_AFTER
    assert sum(ckpt.positions.values()) == N_BEFORE + N_AFTER
