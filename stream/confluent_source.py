"""A :class:`~stream.source.Source` on confluent-kafka (librdkafka), for speed.

Install with ``pip install 'streamlearn[fast]'`` and select with
``streamlearn run --backend confluent``. Behaviour matches
:class:`~stream.source.KafkaSource`: checkpointed positions win on assignment,
group commits are for monitoring only.
"""

from __future__ import annotations

from itertools import repeat
from operator import is_not
from typing import Mapping

from stream.errors import BrokerUnavailableError, ConfigError, TopicNotFoundError
from stream.poll import PollColumns
from stream.records import TopicPartition
from stream.source import KafkaSourceConfig, PollBatch, RebalanceHandler


_LIBRDKAFKA_2_4 = 0x020400FF  # librdkafka's version as an int (hex major.minor.revision, 0xff = release)


def _require_confluent():
    try:
        import confluent_kafka
    except ImportError:
        raise ConfigError(
            "the confluent backend needs confluent-kafka: pip install 'streamlearn[fast]'"
        ) from None
    return confluent_kafka


def confluent_conf(cfg: KafkaSourceConfig) -> dict:
    """librdkafka settings for ``cfg`` (also what ``bench.pipeline`` gives its raw consumer)."""
    conf = {
        "bootstrap.servers": cfg.bootstrap,
        "client.id": cfg.client_id,
        # Without a group librdkafka still wants an id; nothing is committed then.
        "group.id": cfg.group_id or f"{cfg.client_id}-unmanaged",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": cfg.auto_offset_reset,
        "session.timeout.ms": cfg.session_timeout_ms,
        "heartbeat.interval.ms": cfg.heartbeat_interval_ms,
        "max.poll.interval.ms": cfg.max_poll_interval_ms,
        "fetch.wait.max.ms": cfg.fetch_max_wait_ms,
        "max.partition.fetch.bytes": cfg.max_partition_fetch_bytes,
    }
    if _require_confluent().libversion()[1] >= _LIBRDKAFKA_2_4:
        # Once a partition's local queue passes queued.min.messages, librdkafka
        # (>= 2.4) stops fetching it for fetch.queue.backoff.ms -- 1 s by
        # default. A consumer that keeps up never notices; one that does real
        # work per record (ours) drains the queue within that second and then
        # sits idle until the backoff ends (~0.4 s stalls per 100k records).
        # Re-checking the queue every 20 ms keeps the prefetch going.
        conf["fetch.queue.backoff.ms"] = 20
    conf.update(dict(cfg.extra))
    return conf


class ConfluentKafkaSource:
    """A :class:`~stream.source.Source` backed by ``confluent_kafka.Consumer``."""

    def __init__(self, config: KafkaSourceConfig) -> None:
        self.config = config
        self._ck = _require_confluent()
        self._consumer = None
        self._handler: RebalanceHandler | None = None

    def _conf(self) -> dict:
        return confluent_conf(self.config)

    def open(self, handler: RebalanceHandler) -> None:
        ck = self._ck
        cfg = self.config
        self._handler = handler
        self._consumer = ck.Consumer(self._conf())
        try:
            metadata = self._consumer.list_topics(timeout=cfg.request_timeout_ms / 1000)
        except ck.KafkaException as exc:
            self.close()
            raise BrokerUnavailableError(
                f"no Kafka broker answered at {cfg.bootstrap!r} ({exc}): check --bootstrap"
            ) from None
        topics = set(cfg.topics) | {tp.topic for tp in cfg.partitions}
        missing = sorted(t for t in topics if t not in metadata.topics or metadata.topics[t].error)
        if missing:
            self.close()
            raise TopicNotFoundError(f"topic(s) {', '.join(missing)} not found on {cfg.bootstrap}")
        if cfg.group_id:
            self._consumer.subscribe(list(cfg.topics), on_assign=self._on_assign, on_revoke=self._on_revoke)
            return
        partitions = list(cfg.partitions) or [
            TopicPartition(t, p) for t in cfg.topics for p in sorted(metadata.topics[t].partitions)
        ]
        self._assign(partitions)

    def _assign(self, partitions: list[TopicPartition]) -> None:
        ck = self._ck
        positions = self._handler.on_assigned(partitions)
        reset = ck.OFFSET_BEGINNING if self.config.auto_offset_reset == "earliest" else ck.OFFSET_END
        default = ck.OFFSET_STORED if self.config.group_id else reset
        self._consumer.assign(
            [ck.TopicPartition(tp.topic, tp.partition, positions.get(tp, default)) for tp in partitions]
        )

    def _on_assign(self, consumer, partitions) -> None:
        self._assign([TopicPartition(p.topic, p.partition) for p in partitions])

    def _on_revoke(self, consumer, partitions) -> None:
        if partitions:
            self._handler.on_revoked([TopicPartition(p.topic, p.partition) for p in partitions])

    def poll(self, timeout_ms: int, max_records: int) -> PollBatch:
        return self.poll_columns(timeout_ms, max_records).to_mapping()

    def poll_columns(self, timeout_ms: int, max_records: int) -> PollColumns:
        """One poll as columns read straight from the ``Message`` objects (no ``RawRecord`` each).

        At C speed the client hands over a record in well under a microsecond,
        so a Python object per record would be a large share of the pipeline.
        """
        messages = self._consumer.consume(num_messages=max_records, timeout=timeout_ms / 1000)
        if messages and any(map(is_not, map(type(messages[0]).error, messages), repeat(None))):
            messages = self._without_partition_eof(messages)
        return PollColumns.from_messages(messages)

    def _without_partition_eof(self, messages: list) -> list:
        kept = []
        for m in messages:
            err = m.error()
            if err is None:
                kept.append(m)
            elif err.code() != self._ck.KafkaError._PARTITION_EOF:
                raise BrokerUnavailableError(f"Kafka error while consuming: {err}")
        return kept

    def commit(self, positions: Mapping[TopicPartition, int]) -> None:
        if not self.config.group_id or not positions:
            return
        ck = self._ck
        self._consumer.commit(
            offsets=[ck.TopicPartition(tp.topic, tp.partition, pos) for tp, pos in positions.items()],
            asynchronous=False,
        )

    def lag(self) -> int | None:
        total = 0
        for tp in self._consumer.assignment():
            _, high = self._consumer.get_watermark_offsets(tp, cached=True)
            (pos,) = self._consumer.position([tp])
            if high < 0 or pos.offset < 0:
                return None
            total += max(0, high - pos.offset)
        return total

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None
