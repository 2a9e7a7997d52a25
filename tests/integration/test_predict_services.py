"""``streamlearn predict`` and ``inspect --registry`` on the real services: tansu and a Redis registry.

``streamlearn run`` learns a produced stream (every 50th record corrupt) and
publishes to Redis; ``predict`` reads the same topic as features (its ``y``
ignored) and writes the prediction log: one record per decodable input,
predicted as the Redis registry's validated version predicts, and the corrupt
ones on ``<topic>.dlq`` with their reason. ``inspect --registry`` reads the
live metrics back from Redis.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter

import numpy as np
import pytest
from kafka import KafkaConsumer, TopicPartition

pytestmark = pytest.mark.integration

GROUP_ENV = {"STREAMLEARN_KAFKA_SESSION_TIMEOUT_MS": "6000", "STREAMLEARN_KAFKA_HEARTBEAT_INTERVAL_MS": "500"}
N, CORRUPT_EVERY = 2000, 50


def cli(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "stream.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **GROUP_ENV},
    )


def read_all(bootstrap: str, topic: str, expected: int, deadline_s: float = 60) -> list:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
    assert parts, f"no topic {topic}"
    consumer.assign(parts)
    consumer.seek_to_beginning(*parts)
    out, deadline = [], time.monotonic() + deadline_s
    while len(out) < expected and time.monotonic() < deadline:
        for recs in consumer.poll(timeout_ms=500).values():
            out.extend(recs)
    consumer.close()
    return out


def test_predict_with_a_redis_registry_logs_every_record_and_dead_letters_the_corrupt(
    kafka_bootstrap, redis_url, unique_name, tmp_path
):
    from serving.api.model import ServedModel
    from serving.registry.factory import open_registry

    topic, out = unique_name, f"{unique_name}.predictions"
    made = cli("produce", "--bootstrap", kafka_bootstrap, "--topic", topic, "--events", str(N),
               "--corrupt-every", str(CORRUPT_EVERY))  # fmt: skip
    assert made.returncode == 0, made.stderr
    registry_options = ("--registry", redis_url, "--registry-namespace", unique_name)
    ran = cli("run", "--bootstrap", kafka_bootstrap, "--topic", topic, "--group", unique_name, "--window",
              "count:200", "--checkpoint-dir", str(tmp_path / "ckpt"), "--until-idle", "3",
              "--max-dead-letter-rate", "1", *registry_options)  # fmt: skip
    assert ran.returncode == 0, ran.stderr

    predicted = cli("predict", "--bootstrap", kafka_bootstrap, "--topic", topic, "--to", out, "--group",
                    f"{unique_name}-predict", "--until-idle", "3", "--no-wait", *registry_options)  # fmt: skip
    assert predicted.returncode == 0, predicted.stderr
    bad = N // CORRUPT_EVERY
    assert f"predicted {N - bad:,}" in predicted.stderr and f"dead letters {bad}" in predicted.stderr, (
        predicted.stderr
    )

    registry = open_registry(redis_url, namespace=unique_name)
    current = registry.current()
    model = ServedModel.load(registry, current.number)
    logged = [json.loads(r.value) for r in read_all(kafka_bootstrap, out, N - bad)]
    assert len(logged) == N - bad and len({p["id"] for p in logged}) == N - bad
    assert {p["version"] for p in logged} == {current.number}
    labels, proba = model.predict(np.asarray([p["x"] for p in logged], np.float32))
    assert [p["prediction"] for p in logged] == [model.label(int(i)) for i in labels]
    assert np.allclose([p["probabilities"] for p in logged], proba, atol=1e-6)

    letters = [json.loads(r.value) for r in read_all(kafka_bootstrap, f"{topic}.dlq", 2 * bad)]
    # `run` dead-lettered the corrupt records to the same topic too: each corrupt record twice, no other.
    assert len(letters) == 2 * bad
    assert set(Counter((d["partition"], d["offset"]) for d in letters).values()) == {2}
    assert {letter["reason_kind"] for letter in letters} <= {"bad json", "empty value"}, letters

    registry.record_live({"updated_at": time.time(), "served": {str(current.number): {
        "n": 40, "task": "classification", "accuracy": 0.75, "flagged": True, "flag_reason": "low"}}})  # fmt: skip
    shown = cli("inspect", *registry_options)
    assert shown.returncode == 0, shown.stderr
    assert f"served v{current.number}" in shown.stdout and "accuracy 0.7500 -- FLAGGED: low" in shown.stdout
