"""Exactly-once proof on the real broker: SIGKILL the daemon repeatedly, nothing lost or learned twice.

50,000 records with unique ids go to a 3-partition topic. ``streamlearn run``
runs as a subprocess and is killed with SIGKILL at random instants *while it
is learning* (after its first checkpoint appears, plus a random delay, so kills
land between and during checkpoint writes), then restarted. The window (300)
does not divide the poll size (500), so checkpoints carry a window residue. Finally it runs
until idle. The verdict comes from the learner's own ledger inside the
checkpoint -- what the restored model has actually learned -- not from the
producer's count.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from daemon_kills import kill_while_learning
from kafka import KafkaProducer

from stream.engine.checkpoint import CheckpointStore
from stream.engine.ledger import LearnLedger

N_EVENTS = 50_000
MIN_KILLS = 5
pytestmark = pytest.mark.slow


def _produce(bootstrap: str, topic: str, n: int) -> None:
    rng = random.Random(7)
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, batch_size=256 * 1024)
    for i in range(n):
        x = [rng.uniform(-1, 1) for _ in range(5)]
        doc = {"id": f"ev-{i}", "ts": 1_700_000_000_000 + i, "x": x, "y": int(x[0] + x[1] > 0)}
        producer.send(topic, orjson.dumps(doc), partition=i % 3)
    producer.flush()
    producer.close()


def _daemon(
    bootstrap: str, topic: str, group: str, ckpt_dir: Path, until_idle: float | None
) -> subprocess.Popen:
    cmd = [
        sys.executable,
        "-m",
        "stream.cli",
        "run",
        "--bootstrap",
        bootstrap,
        "--topic",
        topic,
        "--group",
        group,
        "--window",
        "count:300",
        "--checkpoint-dir",
        str(ckpt_dir),
        "--checkpoint-every-batches",
        "2",
        "--max-poll-records",
        "500",
        "--ledger",
        "--quiet",
        "--dead-letter",
        "none",
        "--n-features",
        "5",
    ]
    if until_idle is not None:
        cmd += ["--until-idle", str(until_idle)]
    env = {
        **os.environ,
        "STREAMLEARN_KAFKA_SESSION_TIMEOUT_MS": "6000",
        "STREAMLEARN_KAFKA_HEARTBEAT_INTERVAL_MS": "500",
    }
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def test_sigkill_at_random_instants_neither_loses_nor_double_learns(
    kafka_bootstrap, make_topic, unique_name, tmp_path
):
    topic = make_topic(partitions=3)
    _produce(kafka_bootstrap, topic, N_EVENTS)
    ckpt_dir = tmp_path / "ckpt"
    rng = random.Random(int.from_bytes(os.urandom(4), "big"))
    kills = kill_while_learning(
        lambda: _daemon(kafka_bootstrap, topic, unique_name, ckpt_dir, until_idle=None),
        ckpt_dir,
        rng,
        kills=MIN_KILLS,
    )
    assert len(kills) >= MIN_KILLS, f"only {len(kills)} kills before the deadline"
    print(f"SIGKILLs: {len(kills)}; events learned per the checkpoint at each kill: {kills}")
    assert 0 < max(kills) < N_EVENTS, f"every kill must land while the stream is being learned: {kills}"

    final = _daemon(kafka_bootstrap, topic, unique_name, ckpt_dir, until_idle=4)
    out, _ = final.communicate(timeout=600)
    assert final.returncode == 0, out.decode()

    ckpt = CheckpointStore(ckpt_dir).latest()
    ledger = LearnLedger.from_snapshot(ckpt.ledger)
    expected = {f"ev-{i}" for i in range(N_EVENTS)}
    lost = expected - ledger.ids()
    duplicated = ledger.duplicated()
    assert not lost, f"{len(lost)} events lost, e.g. {sorted(lost)[:5]}"
    assert not duplicated, f"{len(duplicated)} events learned twice, e.g. {list(duplicated.items())[:5]}"
    assert ledger.ids() == expected
    assert ckpt.counters["events_learned"] == N_EVENTS
    assert sum(ckpt.positions.values()) == N_EVENTS
