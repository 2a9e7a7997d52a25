"""Synthetic streams for demos, tests and benchmarks, written to Kafka as JSON records.

Built on river's synthetic generators; ``drift_at`` splices in a second
concept with :class:`river.datasets.synth.ConceptDriftStream` so drift
handling can be exercised at known positions.

Examples
--------
>>> rows = list(synthetic_rows("sea", 3, seed=1))
>>> [sorted(r) for r in rows][0]
['id', 'ts', 'x', 'y']
>>> rows[0]["id"], len(rows[0]["x"])
('0', 3)
"""

from __future__ import annotations

import itertools
import time
from typing import Iterator

import orjson

from stream.errors import ConfigError

GENERATORS = ("agrawal", "sea", "hyperplane", "rbf")


def _generator(name: str, seed: int, variant: int, n_features: int):
    from river.datasets import synth

    if name == "agrawal":
        return synth.Agrawal(classification_function=variant % 10, seed=seed)
    if name == "sea":
        return synth.SEA(variant=variant % 4, seed=seed)
    if name == "hyperplane":
        return synth.Hyperplane(seed=seed + variant, n_features=n_features, mag_change=0.0)
    if name == "rbf":
        return synth.RandomRBFDrift(seed_model=seed + variant, seed_sample=seed, n_classes=2,
                                    n_features=n_features, change_speed=0.0)
    raise ConfigError(f"unknown generator {name!r}; choose one of {', '.join(GENERATORS)}")


def synthetic_rows(
    generator: str,
    n: int,
    *,
    seed: int = 42,
    drift_at: int | None = None,
    drift_width: int = 1,
    n_features: int = 10,
    start_ts_ms: int = 1_700_000_000_000,
    interval_ms: int = 10,
) -> Iterator[dict]:
    """``n`` rows ``{"id", "ts", "x", "y"}``; the concept changes at ``drift_at`` if given."""
    stream = _generator(generator, seed, 0, n_features)
    if drift_at is not None:
        from river.datasets import synth

        stream = synth.ConceptDriftStream(
            stream=stream, drift_stream=_generator(generator, seed, 1, n_features),
            position=drift_at, width=max(1, drift_width), seed=seed,
        )
    for i, (x, y) in enumerate(itertools.islice(stream, n)):
        yield {"id": str(i), "ts": start_ts_ms + i * interval_ms, "x": [float(v) for v in x.values()], "y": int(y)}


def ensure_topic(bootstrap: str, topic: str, partitions: int) -> bool:
    """Create ``topic`` if missing; returns True when it was created."""
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic
    from kafka.errors import TopicAlreadyExistsError

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, bootstrap_timeout_ms=10_000)
    try:
        if topic in admin.list_topics():
            return False
        try:
            admin.create_topics([NewTopic(topic, partitions, 1)])
        except TopicAlreadyExistsError:
            return False
        return True
    finally:
        admin.close()


def produce(
    bootstrap: str,
    topic: str,
    n: int,
    *,
    generator: str = "hyperplane",
    partitions: int = 3,
    seed: int = 42,
    drift_at: int | None = None,
    drift_width: int = 1,
    n_features: int = 10,
    rate: float | None = None,
    corrupt_every: int | None = None,
) -> int:
    """Write ``n`` synthetic records round-robin over the partitions; returns the count sent.

    ``rate`` caps records per second; ``corrupt_every=k`` makes every k-th
    record undecodable (to exercise the dead-letter path).
    """
    from kafka import KafkaProducer

    ensure_topic(bootstrap, topic, partitions)
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, batch_size=256 * 1024, acks="all",
                             bootstrap_timeout_ms=10_000)
    started = time.monotonic()
    sent = 0
    try:
        for i, row in enumerate(synthetic_rows(generator, n, seed=seed, drift_at=drift_at,
                                               drift_width=drift_width, n_features=n_features)):
            value = orjson.dumps(row)
            if corrupt_every and i % corrupt_every == corrupt_every - 1:
                value = value[: len(value) // 2]
            producer.send(topic, value=value, partition=i % partitions)
            sent += 1
            if rate and sent % 100 == 0:
                ahead = sent / rate - (time.monotonic() - started)
                if ahead > 0:
                    time.sleep(ahead)
        producer.flush()
    finally:
        producer.close()
    return sent
