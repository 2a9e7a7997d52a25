"""Helpers of the poison-stream integration tests: the CLI, producing every kind, reading letters back."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
import time

from kafka import KafkaConsumer

from stream.engine.checkpoint import CheckpointStore
from stream.engine.ledger import LearnLedger

GROUP_ENV = {"STREAMLEARN_KAFKA_SESSION_TIMEOUT_MS": "6000", "STREAMLEARN_KAFKA_HEARTBEAT_INTERVAL_MS": "500"}


def cli(*args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "stream.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **GROUP_ENV, **(env or {})},
    )


def produce(bootstrap: str, topic: str, stream) -> dict[tuple[int, int], object]:
    """Each record to partition ``lane``; returns {(partition, offset): poison record}.

    confluent-kafka, because kafka-python refuses to produce a record with
    neither key nor value -- which other producers send, so the engine must take it.
    """
    from confluent_kafka import Producer

    producer = Producer(
        {"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5, "message.max.bytes": 16 * 2**20}
    )
    placed: dict[tuple[int, int], object] = {}
    errors = []

    def delivered(err, msg, record):
        if err is not None:
            errors.append(err)
        else:
            placed[(msg.partition(), msg.offset())] = record

    for r in stream.records:
        producer.produce(
            topic,
            value=r.value,
            key=r.key,
            partition=r.lane,
            on_delivery=lambda err, msg, r=r: delivered(err, msg, r),
        )
        producer.poll(0)
    assert producer.flush(120) == 0 and not errors, errors[:3]
    assert len(placed) == len(stream.records)
    return placed


def read_dead_letters(
    topic: str, positions: set, settings: dict, group: str, deadline_s: float = 300
) -> list:
    """Every letter on ``topic`` until each source ``(partition, offset)`` in ``positions`` was seen.

    Dead letters are at-least-once, so a position may come more than once:
    the loop stops on coverage, not on a count (or at the deadline).
    """
    consumer = KafkaConsumer(topic, group_id=group, consumer_timeout_ms=3_000, **settings)
    letters, seen = [], set()
    deadline = time.monotonic() + deadline_s
    try:
        while not positions <= seen and time.monotonic() < deadline:
            for rec in consumer:
                letters.append(rec)
                doc = json.loads(rec.value)
                seen.add((doc["partition"], doc["offset"]))
                if positions <= seen:
                    break
    finally:
        consumer.close()
    return letters


def check_learned_once(checkpoint_dir, good_ids) -> None:
    ckpt = CheckpointStore(checkpoint_dir).latest()
    ledger = LearnLedger.from_snapshot(ckpt.ledger)
    missing = set(good_ids) - ledger.ids()
    extra = ledger.ids() - set(good_ids)
    assert not missing and not extra, (
        f"{len(missing)} good ids never learned, {len(extra)} unexpected ids learned"
    )
    assert not ledger.duplicated(), f"learned twice: {list(ledger.duplicated())[:5]}"


def check_letter(doc: dict, expected) -> None:
    assert doc["reason_kind"] == expected.expected, (expected.kind, doc["reason"])
    if expected.value is None:
        assert doc["value_b64"] is None
    else:
        assert doc["value_size"] == len(expected.value)
        assert doc["value_sha256"] == hashlib.sha256(expected.value).hexdigest()
        kept = base64.b64decode(doc["value_b64"])
        assert expected.value.startswith(kept) and doc["value_truncated"] == (len(kept) < len(expected.value))
