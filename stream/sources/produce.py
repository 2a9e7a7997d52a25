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
import math
import random
import time
import uuid
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

import orjson

from stream.core.errors import ConfigError

GENERATORS = ("agrawal", "sea", "hyperplane", "rbf")
POISONS = ("label_flip", "scale")


def _generator(name: str, seed: int, variant: int, n_features: int):
    from river.datasets import synth

    if name == "agrawal":
        return synth.Agrawal(classification_function=variant % 10, seed=seed)
    if name == "sea":
        return synth.SEA(variant=variant % 4, seed=seed)
    if name == "hyperplane":
        return synth.Hyperplane(seed=seed + variant, n_features=n_features, mag_change=0.0)
    if name == "rbf":
        return synth.RandomRBFDrift(
            seed_model=seed + variant, seed_sample=seed, n_classes=2, n_features=n_features, change_speed=0.0
        )
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
    id_prefix: str = "",
) -> Iterator[dict]:
    """``n`` rows ``{"id", "ts", "x", "y"}`` (ids ``<id_prefix><i>``); the concept changes at ``drift_at`` if given."""
    stream = _generator(generator, seed, 0, n_features)
    if drift_at is not None:
        stream = _concept_drift(
            stream, _generator(generator, seed, 1, n_features), drift_at, max(1, drift_width), seed
        )
    for i, (x, y) in enumerate(itertools.islice(stream, n)):
        yield {
            "id": f"{id_prefix}{i}",
            "ts": start_ts_ms + i * interval_ms,
            "x": [float(v) for v in x.values()],
            "y": int(y),
        }


def _concept_drift(old, new, position: int, width: int, seed: int) -> Iterator:
    """River's ``ConceptDriftStream`` draw, with the sigmoid's exponent clamped.

    river 0.26 computes ``exp(-4 (i - position) / width)`` unclamped, which
    overflows for any row more than ~177 widths before the position (so an
    abrupt drift at row 20000 cannot be generated at all). Same RNG, same
    draws, same result wherever river's works.
    """
    rng = random.Random(seed)
    old_it, new_it = iter(old), iter(new)
    i = 0
    while True:
        i += 1
        v = min(700.0, -4.0 * (i - position) / width)
        p_new = 1.0 / (1.0 + math.exp(v))
        try:
            yield next(new_it) if rng.random() <= p_new else next(old_it)
        except StopIteration:
            return


def poisoned_rows(
    rows: Iterator[dict], kind: str, start: int, count: int, *, factor: float = 1000.0, n_classes: int = 2
) -> Iterator[dict]:
    """``rows`` with rows ``[start, start + count)`` corrupted: the bad batch a drift policy must undo.

    ``label_flip`` shifts each label to the next class; ``scale`` multiplies
    every feature by ``factor`` (a unit or sensor blow-up). The rows stay
    decodable: this is bad data, not undecodable data.

    >>> rows = [{"id": str(i), "ts": i, "x": [1.0], "y": 0} for i in range(4)]
    >>> [(r["x"][0], r["y"]) for r in poisoned_rows(iter(rows), "label_flip", 1, 2)]
    [(1.0, 0), (1.0, 1), (1.0, 1), (1.0, 0)]
    >>> [r["x"][0] for r in poisoned_rows(iter(rows), "scale", 3, 1)]
    [1.0, 1.0, 1.0, 1000.0]
    """
    if kind not in POISONS:
        raise ConfigError(f"unknown poison {kind!r}; choose one of {', '.join(POISONS)}")
    for i, row in enumerate(rows):
        if start <= i < start + count:
            row = dict(row)
            if kind == "label_flip":
                row["y"] = (int(row["y"]) + 1) % n_classes
            else:
                row["x"] = [v * factor for v in row["x"]]
        yield row


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


@dataclass(frozen=True)
class SyntheticStream:
    """What :func:`produce` writes: ``n`` rows of a river generator, optionally drifting, backdated or damaged.

    ``drift_at``/``drift_width`` switch the concept (see :func:`synthetic_rows`);
    ``corrupt_every=k`` makes every k-th record undecodable (to exercise the
    dead-letter path); ``poison=(kind, start, count)`` corrupts rows with
    :func:`poisoned_rows` (to exercise the drift policy's rollback).
    ``start_ts_ms`` backdates the stream: row ``i`` gets event time and Kafka
    record timestamp ``start_ts_ms + i * interval_ms`` (a history to replay by
    time); without it records carry the append time. Ids are
    ``<id_prefix><i>``; the default prefix is new on every :func:`produce`, so
    two calls never write the same id (the engine refuses a repeated id).

    >>> SyntheticStream(n=100, generator="sea", drift_at=50).drift_width
    1
    """

    n: int = 10_000
    generator: str = "hyperplane"
    seed: int = 42
    drift_at: int | None = None
    drift_width: int = 1
    n_features: int = 10
    corrupt_every: int | None = None
    poison: tuple[str, int, int] | None = None
    start_ts_ms: int | None = None
    interval_ms: int = 10
    id_prefix: str | None = None


def produce(
    bootstrap: str,
    topic: str,
    stream: SyntheticStream,
    *,
    partitions: int = 3,
    rate: float | None = None,
    serialize: Callable[[dict], bytes] = orjson.dumps,
    rows: Iterable[dict] | None = None,
) -> int:
    """Write ``stream``'s records round-robin over ``partitions`` of ``topic``; returns the count sent.

    ``rate`` caps records per second (default: as fast as the broker takes them);
    ``serialize`` writes a row's value (JSON by default; Avro or Protobuf through
    :func:`stream.codec.formats.serializer_for`). ``rows`` replaces the river
    generator's rows (e.g. the click stream of named fields); ``stream`` still
    sets their damage (``corrupt_every``) and their Kafka timestamps.
    """
    from kafka import KafkaProducer

    ensure_topic(bootstrap, topic, partitions)
    producer = KafkaProducer(
        bootstrap_servers=bootstrap,
        linger_ms=5,
        batch_size=256 * 1024,
        acks="all",
        bootstrap_timeout_ms=10_000,
    )
    started = time.monotonic()
    sent = 0
    try:
        start_ts_ms, corrupt_every = stream.start_ts_ms, stream.corrupt_every
        timing = (
            {} if start_ts_ms is None else {"start_ts_ms": start_ts_ms, "interval_ms": stream.interval_ms}
        )
        id_prefix = stream.id_prefix if stream.id_prefix is not None else f"{uuid.uuid4().hex[:8]}-"
        rows = (
            rows
            if rows is not None
            else synthetic_rows(
                stream.generator,
                stream.n,
                seed=stream.seed,
                drift_at=stream.drift_at,
                drift_width=stream.drift_width,
                n_features=stream.n_features,
                id_prefix=id_prefix,
                **timing,
            )
        )
        if stream.poison is not None:
            rows = poisoned_rows(rows, *stream.poison)
        for i, row in enumerate(rows):
            value = serialize(row)
            if corrupt_every and i % corrupt_every == corrupt_every - 1:
                value = value[: len(value) // 2]
            producer.send(
                topic,
                value=value,
                partition=i % partitions,
                timestamp_ms=row["ts"] if start_ts_ms is not None else None,
            )
            sent += 1
            if rate and sent % 100 == 0:
                ahead = sent / rate - (time.monotonic() - started)
                if ahead > 0:
                    time.sleep(ahead)
        producer.flush()
    finally:
        producer.close()
    return sent
