"""Smoke tests of the real test services and of the fixtures in tests/conftest.py.

They check the guarantees later integration tests build on: a topic is usable
as soon as ``make_topic`` returns, a consumer group reads back exactly what was
produced and resumes from its committed offsets, and Redis round-trips data,
pub/sub messages and a stop/start of the server.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import pytest
import redis
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer

PARTITIONS = 3
CONSUME_TIMEOUT_S = 60.0


def _produce(bootstrap: str, topic: str, values: Iterable[int]) -> dict[int, list[int]]:
    """Send each value to partition ``value % PARTITIONS``; return offsets per partition.

    linger_ms batches several records together, which is the case where
    tansu's ListOffsets under-reports the high watermark: the tests therefore
    check the offsets the broker assigned on produce and on fetch, never
    ``end_offsets``.
    """
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    try:
        futures = [
            producer.send(topic, key=str(v).encode(), value=str(v).encode(), partition=v % PARTITIONS)
            for v in values
        ]
        producer.flush(timeout=30)
        offsets: dict[int, list[int]] = defaultdict(list)
        for future in futures:
            meta = future.get(timeout=30)
            offsets[meta.partition].append(meta.offset)
        return dict(offsets)
    finally:
        producer.close()


def _consume(consumer: KafkaConsumer, expected: int) -> list[Any]:
    """Poll until ``expected`` records arrived, then once more to catch extras."""
    records: list[Any] = []
    deadline = time.monotonic() + CONSUME_TIMEOUT_S
    while len(records) < expected and time.monotonic() < deadline:
        for batch in consumer.poll(timeout_ms=500).values():
            records.extend(batch)
    # A duplicate or stray record would show up here and fail the exact count.
    for batch in consumer.poll(timeout_ms=1000).values():
        records.extend(batch)
    return records


def _by_partition(records: Iterable[Any]) -> dict[int, list[tuple[int, int]]]:
    """(offset, value) pairs per partition, in the order they were consumed."""
    out: dict[int, list[tuple[int, int]]] = defaultdict(list)
    for record in records:
        out[record.partition].append((record.offset, int(record.value)))
    return dict(out)


# --------------------------------------------------------------------------- #
# Kafka
# --------------------------------------------------------------------------- #


def test_created_topic_is_visible_in_metadata(
    make_topic: Callable[..., str], kafka_admin: KafkaAdminClient, kafka_bootstrap: str
) -> None:
    three = make_topic(partitions=3)
    one = make_topic(partitions=1)

    assert {three, one} <= set(kafka_admin.list_topics())
    # A separate client sees the same partitions through its own metadata request.
    consumer = KafkaConsumer(bootstrap_servers=kafka_bootstrap)
    try:
        assert consumer.partitions_for_topic(three) == {0, 1, 2}
        assert consumer.partitions_for_topic(one) == {0}
    finally:
        consumer.close()


def test_consumer_group_reads_back_exactly_what_was_produced(
    make_topic: Callable[..., str],
    kafka_bootstrap: str,
    kafka_consumer_settings: dict[str, Any],
    unique_name: str,
) -> None:
    topic = make_topic(partitions=PARTITIONS)
    n = 3000
    produced = _produce(kafka_bootstrap, topic, range(n))
    expected_counts = {p: len(range(p, n, PARTITIONS)) for p in range(PARTITIONS)}
    # Offsets are dense from 0 in every partition.
    assert produced == {p: list(range(c)) for p, c in expected_counts.items()}

    consumer = KafkaConsumer(topic, group_id=unique_name, **kafka_consumer_settings)
    try:
        records = _consume(consumer, n)
        assert len(records) == n
        per_partition = _by_partition(records)
        for p in range(PARTITIONS):
            # Per-partition order is preserved: offset k carries the k-th value
            # sent to that partition.
            assert per_partition[p] == list(enumerate(range(p, n, PARTITIONS)))

        consumer.commit()
        committed = {tp.partition: consumer.committed(tp) for tp in consumer.assignment()}
        assert committed == expected_counts
    finally:
        consumer.close()


def test_consumer_group_resumes_from_committed_offsets(
    make_topic: Callable[..., str],
    kafka_bootstrap: str,
    kafka_consumer_settings: dict[str, Any],
    unique_name: str,
) -> None:
    topic = make_topic(partitions=PARTITIONS)
    first, second = range(0, 300), range(300, 330)
    _produce(kafka_bootstrap, topic, first)

    consumer = KafkaConsumer(topic, group_id=unique_name, **kafka_consumer_settings)
    try:
        assert len(_consume(consumer, len(first))) == len(first)
        consumer.commit()
    finally:
        consumer.close()

    _produce(kafka_bootstrap, topic, second)
    # A new member of the same group starts at the committed offsets, so it
    # sees only the second batch, even with auto_offset_reset="earliest".
    consumer = KafkaConsumer(topic, group_id=unique_name, **kafka_consumer_settings)
    try:
        records = _consume(consumer, len(second))
    finally:
        consumer.close()
    assert sorted(int(r.value) for r in records) == list(second)
    for p, pairs in _by_partition(records).items():
        first_count = len(range(p, len(first), PARTITIONS))
        assert [offset for offset, _ in pairs] == list(range(first_count, first_count + len(pairs)))


# --------------------------------------------------------------------------- #
# Redis
# --------------------------------------------------------------------------- #


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url, socket_connect_timeout=10, socket_timeout=10)
    yield client
    client.close()


def test_redis_set_get_roundtrip(redis_client: redis.Redis, unique_name: str) -> None:
    key = f"{unique_name}:blob"
    payload = bytes(range(256)) * 64  # binary-safe: model weights travel as bytes
    assert redis_client.set(key, payload)
    assert redis_client.get(key) == payload
    assert redis_client.get(f"{unique_name}:missing") is None


def _next_message(pubsub, deadline_s: float = 60.0) -> dict | None:
    """The next pub/sub message, waiting up to a generous deadline (``get_message`` alone waits once)."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        message = pubsub.get_message(timeout=1.0)
        if message is not None:
            return message
    return None


def test_redis_publish_subscribe_roundtrip(
    redis_client: redis.Redis, redis_url: str, unique_name: str
) -> None:
    channel = f"{unique_name}:versions"
    pubsub = redis_client.pubsub(ignore_subscribe_messages=False)
    try:
        pubsub.subscribe(channel)
        # Publish only after the server confirmed the subscription, else the
        # message can be lost (pub/sub has no backlog).
        confirm = _next_message(pubsub)
        assert confirm is not None and confirm["type"] == "subscribe"

        publisher = redis.Redis.from_url(redis_url)
        try:
            assert publisher.publish(channel, b"v42") == 1  # exactly one subscriber
        finally:
            publisher.close()

        message = _next_message(pubsub)
        assert message is not None
        assert (message["type"], message["channel"], message["data"]) == ("message", channel.encode(), b"v42")
    finally:
        pubsub.close()


def test_redis_stop_start_restarts_same_server(redis_service: Any, unique_name: str) -> None:
    redis_service.ensure_running()
    url_before = redis_service.url
    # Generous timeouts: a stopped server refuses at once (host network), a busy one may answer late.
    client = redis.Redis.from_url(redis_service.url, socket_connect_timeout=10, socket_timeout=10)
    try:
        client.set(f"{unique_name}:k", b"v")

        redis_service.stop()
        with pytest.raises(redis.ConnectionError):
            client.ping()

        redis_service.start()
        assert redis_service.url == url_before  # same port: clients keep their URL
        assert client.ping()  # the same client object reconnects
        # Persistence is off, so an empty keyspace proves a real restart.
        assert client.get(f"{unique_name}:k") is None
    finally:
        client.close()
        redis_service.ensure_running()
