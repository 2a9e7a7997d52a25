"""The Kafka producer the feedback loop writes with, made by a factory so tests can hand in a fake.

The prediction log (:mod:`serving.api.prediction_log`) and ``POST /feedback``
(:mod:`serving.api.feedback`) each call their :data:`ProducerFactory` when
they need a producer, and again after a failure; anything with kafka-python's
``send``/``flush``/``close`` and futures with ``add_callback``/``add_errback``
(or ``get``) will do.

The settings bound every wait: making a producer gives up after
``bootstrap_timeout_ms`` (2 s) when no broker answers, and a ``send`` that
has no metadata or buffer space after ``max_block_ms`` (1 s); a record not
acknowledged within ``delivery_timeout_ms`` (30 s) fails.

Examples
--------
>>> make = kafka_producer_factory("127.0.0.1:9092", acks="all")
>>> make.config["acks"], make.config["linger_ms"]
('all', 20)
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Protocol

__all__ = ["Producer", "ProducerFactory", "kafka_producer_factory"]


class Producer(Protocol):
    """What the feedback loop uses of kafka-python's ``KafkaProducer``."""

    def send(self, topic: str, value: bytes | None = None, key: bytes | None = None) -> Any: ...

    def flush(self, timeout: float | None = None) -> None: ...

    def close(self, timeout: float | None = None) -> None: ...


ProducerFactory = Callable[[], Producer]


class _KafkaFactory:
    def __init__(self, config: Mapping[str, Any]) -> None:
        self.config = dict(config)

    def __call__(self) -> Producer:
        from kafka import KafkaProducer

        return KafkaProducer(**self.config)

    def __repr__(self) -> str:
        return f"kafka_producer_factory({self.config['bootstrap_servers']!r}, acks={self.config['acks']!r})"


def kafka_producer_factory(
    bootstrap: str, *, acks: int | str = 1, options: Mapping[str, Any] | None = None
) -> ProducerFactory:
    """A factory of ``KafkaProducer`` s for ``bootstrap``; ``options`` (security, client id) go in as given."""
    return _KafkaFactory(
        {
            "bootstrap_servers": bootstrap,
            "acks": acks,
            # Idempotence needs acks="all"; said here, kafka-python would warn that it turned it off.
            "enable_idempotence": acks in ("all", -1),
            # Batch by time as well as size: rows come one per request.
            "linger_ms": 20,
            "batch_size": 64 * 1024,
            "max_block_ms": 1_000,
            "bootstrap_timeout_ms": 2_000,
            "request_timeout_ms": 10_000,
            "delivery_timeout_ms": 30_000,
            **(options or {}),
        }
    )
