"""Delayed labels on the real broker: SIGKILL the joining daemon repeatedly; each labelled event is learned once.

A prediction log (records as the API writes them, two served versions) and a
labels topic, two partitions each, arrive in time order: most labels come
within half the join's time-to-live before or after their prediction, some
far too late, some never. ``streamlearn run --labels-topic`` is killed with
SIGKILL at random instants while it learns, restarted, and finally run until
idle. The verdict comes from the checkpoint: its ledger (what the model
learned), its join state (what still waits) and the dead letters; and the live
accuracy the daemon recorded in the registry is recomputed offline.
"""

from __future__ import annotations

import base64
import os
import random
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from daemon_kills import kill_while_learning
from kafka import KafkaProducer

from serving.registry.file_backend import FileRegistry
from stream.core.feedback import Label, LoggedPrediction, encode_label, encode_prediction
from stream.engine.checkpoint import CheckpointStore
from stream.engine.feedback_loop import FeedbackLoop
from stream.engine.join import JoinConfig
from stream.engine.ledger import LearnLedger

N_PREDICTIONS = 40_000
TTL_MS = 20_000
MIN_KILLS = 5
START_MS = 1_760_000_000_000
pytestmark = pytest.mark.slow


def _stream(rng: random.Random) -> tuple[list[tuple[int, str, int, bytes]], dict]:
    """(time, topic kind, partition, value) in time order, and per id what was predicted and true."""
    timed, truth = [], {}
    for i in range(N_PREDICTIONS):
        at = START_MS + 20 * i
        x = [rng.uniform(-1, 1) for _ in range(3)]
        y = int(x[0] + x[1] > 0)
        version = 1 if i < N_PREDICTIONS // 2 else 2
        p1 = rng.uniform(0.05, 0.95)
        pred = int(p1 > 0.5)
        ident = f"p-{i}"
        log = LoggedPrediction(ident, x, version, pred, [1 - p1, p1], None, at)
        timed.append((at, "predictions", i % 2, encode_prediction(log)))
        fate = rng.random()
        if fate < 0.75:
            delay = rng.randint(-TTL_MS // 2 + 1, TTL_MS // 2 - 1)  # some before the prediction
        elif fate < 0.85:
            delay = 3 * TTL_MS + rng.randint(0, TTL_MS)  # far too late
        else:
            delay = None  # never
        if delay is not None:
            timed.append((at + delay, "labels", i % 2, encode_label(Label(ident, y))))
        truth[ident] = {"version": version, "prediction": pred, "y": y, "delay": delay}
    timed.sort(key=lambda t: t[0])
    return timed, truth


def _produce(bootstrap: str, topics: dict[str, str], timed) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, batch_size=256 * 1024)
    for at, kind, partition, value in timed:
        key = orjson.loads(value)["id"].encode()
        producer.send(topics[kind], value, key=key, partition=partition, timestamp_ms=at)
    producer.flush()
    producer.close()


def _daemon(
    bootstrap: str, topics: dict[str, str], where: Path, until_idle: float | None
) -> subprocess.Popen:
    cmd = [
        sys.executable, "-m", "stream.cli", "run",
        "--bootstrap", bootstrap,
        "--topic", topics["predictions"],
        "--labels-topic", topics["labels"],
        "--join-ttl", f"{TTL_MS // 1000}s",
        "--window", "count:300",
        "--checkpoint-dir", str(where / "ckpt"),
        "--checkpoint-every-batches", "2",
        "--max-poll-records", "500",
        "--ledger", "--quiet",
        "--dead-letter", f"file:{where / 'dead.jsonl'}",
        "--registry", str(where / "registry"),
        "--n-features", "3",
    ]  # fmt: skip
    if until_idle is not None:
        cmd += ["--until-idle", str(until_idle)]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _dead_lettered(path: Path) -> dict[str, set[str]]:
    """Per reason kind, the ids of the dead-lettered records."""
    out: dict[str, set[str]] = {}
    if path.exists():
        for line in path.read_bytes().splitlines():
            doc = orjson.loads(line)
            ident = orjson.loads(base64.b64decode(doc["value_b64"]))["id"]
            out.setdefault(doc["reason_kind"], set()).add(ident)
    return out


def test_sigkill_while_joining_neither_loses_nor_double_learns_a_labelled_event(
    kafka_bootstrap, make_topic, tmp_path
):
    rng = random.Random(int.from_bytes(os.urandom(4), "big"))
    topics = {"predictions": make_topic(partitions=2), "labels": make_topic(partitions=2)}
    timed, truth = _stream(rng)
    _produce(kafka_bootstrap, topics, timed)
    ckpt_dir = tmp_path / "ckpt"
    kills = kill_while_learning(
        lambda: _daemon(kafka_bootstrap, topics, tmp_path, until_idle=None), ckpt_dir, rng, kills=MIN_KILLS
    )
    assert len(kills) >= MIN_KILLS, f"only {len(kills)} kills before the deadline"
    print(f"SIGKILLs: {len(kills)}; events learned per the checkpoint at each kill: {kills}")
    assert max(kills) < 0.75 * N_PREDICTIONS, (
        f"every kill must land while the stream is being learned: {kills}"
    )

    final = _daemon(kafka_bootstrap, topics, tmp_path, until_idle=4)
    out, _ = final.communicate(timeout=600)
    assert final.returncode == 0, out.decode()
    assert b"labels joined" in out, out.decode()

    ckpt = CheckpointStore(ckpt_dir).latest()
    ledger = LearnLedger.from_snapshot(ckpt.ledger)
    learned, duplicated = ledger.ids(), ledger.duplicated()
    assert not duplicated, f"{len(duplicated)} events learned twice, e.g. {list(duplicated.items())[:5]}"
    labelled = {i for i, t in truth.items() if t["delay"] is not None}
    on_time = {i for i, t in truth.items() if t["delay"] is not None and abs(t["delay"]) < TTL_MS // 2}
    assert on_time <= learned <= labelled, f"not learned: {sorted(on_time - learned)[:5]}"
    # Nothing lost: a labelled event is learned, or its label is a dead letter (expired), or it still waits.
    feedback = FeedbackLoop(JoinConfig(topics["labels"]))
    feedback.restore(ckpt.components["feedback"])
    waiting = set(feedback.join._labels) | set(feedback.join._features)
    dead = _dead_lettered(tmp_path / "dead.jsonl")
    assert not dead.get("feedback record") and not dead.get("join evicted"), dead.keys()
    assert labelled - learned <= dead.get("join expired", set()) | waiting
    assert sum(ckpt.positions.values()) == len(timed)

    # Live accuracy per served version, as recorded in the registry, recomputed offline from the ledger.
    live = FileRegistry(tmp_path / "registry").live()
    for version in (1, 2):
        ids = [i for i in learned if truth[i]["version"] == version]
        correct = sum(truth[i]["prediction"] == truth[i]["y"] for i in ids)
        entry = live["served"][str(version)]
        assert entry["n"] == len(ids) and entry["correct"] == correct
        assert entry["accuracy"] == pytest.approx(correct / len(ids))
    assert live["join"]["joined"] == len(learned)
