"""A :class:`~stream.sources.base.Source` on confluent-kafka (librdkafka), for speed.

Install with ``pip install 'streamlearn[fast]'`` and select with
``streamlearn run --backend confluent``. Behaviour matches
:class:`~stream.sources.kafka.KafkaSource`: checkpointed positions win on assignment,
group commits are for monitoring only, a broker outage is reported through
``outage()`` (see :class:`ConfluentKafkaSource`).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from itertools import repeat
from operator import is_not
from typing import Callable, Mapping

from stream.core.errors import BrokerOutageError, BrokerUnavailableError, ConfigError, TopicNotFoundError
from stream.core.poll import PollColumns
from stream.core.records import TopicPartition
from stream.sources.base import Outage, PollBatch, RebalanceHandler
from stream.sources.kafka import KafkaSourceConfig

log = logging.getLogger(__name__)


_LIBRDKAFKA_2_4 = 0x020400FF  # librdkafka's version as an int (hex major.minor.revision, 0xff = release)
# While the brokers are down, how long one reachability probe (a metadata request) may wait.
_PROBE_TIMEOUT_S = 1.0


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
        "reconnect.backoff.max.ms": cfg.reconnect_backoff_max_ms,
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
    """A :class:`~stream.sources.base.Source` backed by ``confluent_kafka.Consumer``.

    Parameters
    ----------
    config : KafkaSourceConfig
        Where and what to consume.
    backoff : object with ``compute(failures) -> seconds``, optional
        Spacing of the reachability probes during an outage (redis-py's
        backoff shape); 0.5 s doubling to 5 s by default.
    clock : callable, optional
        Monotonic seconds (tests pass a fake).

    Notes
    -----
    librdkafka reports a lost cluster to ``error_cb`` (``_ALL_BROKERS_DOWN``,
    then a ``_TRANSPORT`` error per failed connect, ~20 a second) but never
    says when it is back. So an outage starts at ``_ALL_BROKERS_DOWN``, its
    cause is the latest transport error, and it ends when a metadata request
    succeeds; those probes run after a poll, spaced by ``backoff``. librdkafka's own log lines go to the
    ``stream.sources.confluent.librdkafka`` logger; its repeated connect
    failures are dropped while the outage is known (the engine reports it).
    """

    def __init__(
        self, config: KafkaSourceConfig, *, backoff=None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.config = config
        self._ck = _require_confluent()
        self._consumer = None
        self._handler: RebalanceHandler | None = None
        if backoff is None:
            from redis.backoff import ExponentialBackoff

            backoff = ExponentialBackoff(cap=5.0, base=0.5)
        self.backoff = backoff
        self._clock = clock
        self._outage: Outage | None = None
        self._last_transport_error: str | None = None
        self._probes = 0
        self._next_probe = 0.0
        # Where each assigned partition starts when the engine gave no
        # position: librdkafka's position() is -1001 until a record is consumed.
        self._starts: dict[tuple[str, int], int] = {}
        self._log_filter = _DropConnectFailures(self)
        self._commits_failing = False
        self._commit_refused = False
        self._stale_failures_queued = False

    def _conf(self) -> dict:
        conf = confluent_conf(self.config)
        conf["error_cb"] = self._on_error
        conf["on_commit"] = self._on_commit
        _LIBRDKAFKA_LOG.addFilter(self._log_filter)
        conf["logger"] = _LIBRDKAFKA_LOG
        return conf

    def outage(self) -> Outage | None:
        """The broker outage in progress (see the class notes), ``None`` while the cluster answers."""
        return self._outage

    def _on_error(self, err) -> None:
        # Runs inside consume()/poll(), on the loop's thread.
        kafka_error = self._ck.KafkaError
        code = err.code()
        if code in (kafka_error._TRANSPORT, kafka_error._RESOLVE):
            self._last_transport_error = err.str()
            if self._outage is not None:
                self._outage = dataclasses.replace(self._outage, cause=err.str())
        elif code == kafka_error._ALL_BROKERS_DOWN and self._outage is None:
            now = self._clock()
            self._outage = Outage(now, self._last_transport_error or err.str())
            self._probes = 0
            self._next_probe = now + self.backoff.compute(0)

    def _probe(self) -> None:
        """While the brokers are down: one metadata request, when the backoff says so."""
        now = self._clock()
        if now < self._next_probe:
            return
        try:
            self._consumer.list_topics(topic=self._any_topic(), timeout=_PROBE_TIMEOUT_S)
        except self._ck.KafkaException as exc:
            self._probes += 1
            self._next_probe = self._clock() + self.backoff.compute(self._probes)
            log.debug(
                "broker still unreachable (%s); next probe in %.1fs", exc, self._next_probe - self._clock()
            )
            return
        self._outage = None
        self._commit_refused = False
        # librdkafka's connect failures from before this probe are still queued:
        # the next consume() delivers them, and the filter drops them then.
        self._stale_failures_queued = True

    def _any_topic(self) -> str:
        return (self.config.topics or tuple(tp.topic for tp in self.config.partitions))[0]

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
        self._starts = {(tp.topic, tp.partition): positions.get(tp, default) for tp in partitions}
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
        self._stale_failures_queued = False
        if messages and any(map(is_not, map(type(messages[0]).error, messages), repeat(None))):
            messages = self._without_partition_eof(messages)
        if self._outage is not None:
            # Records alone prove nothing: librdkafka hands out what it
            # prefetched before the brokers went away. Only a probe ends it.
            self._probe()
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
        """Commit to the group (monitoring only) -- never while the brokers are down.

        Raises
        ------
        BrokerOutageError
            The brokers are down: nothing was sent (the checkpoint has the positions).
        """
        if not self.config.group_id or not positions:
            return
        if self._outage is not None:
            # Raised once per outage (the engine logs it), skipped after.
            if not self._commit_refused:
                self._commit_refused = True
                raise BrokerOutageError(
                    f"brokers down ({self._outage.cause}); offsets are not committed to the "
                    "group until they are back (the checkpoint has them)"
                )
            return
        ck = self._ck
        # Asynchronous: a synchronous commit waits for the group coordinator,
        # and after the broker went away it was seen to wait for minutes --
        # a silent stall of the loop for a monitoring-only write. The outcome
        # comes to _on_commit; close() waits for commits still in flight.
        self._consumer.commit(
            offsets=[ck.TopicPartition(tp.topic, tp.partition, pos) for tp, pos in positions.items()],
            asynchronous=True,
        )

    def _on_commit(self, err, partitions) -> None:
        # Commits queued while the coordinator is gone all fail together: say
        # so once per failing streak, not once per checkpoint.
        if err is None:
            if self._commits_failing:
                log.info("offsets reach the consumer group again")
            self._commits_failing = False
        elif not self._commits_failing:
            self._commits_failing = True
            log.warning(
                "could not commit offsets to the consumer group (lag monitoring only; "
                "said once until a commit succeeds): %s",
                err,
            )

    def lag(self) -> int | None:
        """Records left to read, from the watermarks the last fetches brought (no broker round trip).

        ``None`` when unknown: nothing assigned yet, the brokers down (the
        cached watermarks would be from before), or an end offset not fetched yet.
        """
        if self._consumer is None or self._outage is not None:
            return None
        assigned = self._consumer.assignment()
        if not assigned:
            return None
        total = 0
        for tp, pos in zip(assigned, self._consumer.position(assigned)):
            low, high = self._consumer.get_watermark_offsets(tp, cached=True)
            start = pos.offset if pos.offset >= 0 else self._start_of(tp, low, high)
            if high < 0 or start is None or start < 0:
                return None
            total += max(0, high - start)
        return total

    def _start_of(self, tp, low: int, high: int) -> int | None:
        """Where a partition with nothing consumed yet starts reading (librdkafka's position is -1001 then)."""
        ck = self._ck
        key = (tp.topic, tp.partition)
        start = self._starts.get(key, ck.OFFSET_STORED)
        if start == ck.OFFSET_STORED:
            # The group's committed offset: asked once per assignment (a
            # broker round trip), and only for a partition that delivered nothing.
            try:
                (committed,) = self._consumer.committed([tp], timeout=_PROBE_TIMEOUT_S)
            except self._ck.KafkaException:
                return None
            earliest = self.config.auto_offset_reset == "earliest"
            start = (
                committed.offset
                if committed.offset >= 0
                else (ck.OFFSET_BEGINNING if earliest else ck.OFFSET_END)
            )
            self._starts[key] = start
        if start == ck.OFFSET_BEGINNING:
            return low
        if start == ck.OFFSET_END:
            return high
        return start

    def close(self) -> None:
        _LIBRDKAFKA_LOG.removeFilter(self._log_filter)
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None


_LIBRDKAFKA_LOG = logging.getLogger(f"{__name__}.librdkafka")


class _DropConnectFailures(logging.Filter):
    """Drops librdkafka's connect-failure lines (facility FAIL, ~20 a second) while ``source`` reports the outage.

    Also those still queued when the outage ended: librdkafka hands its log
    lines over inside ``consume()``, after they were written.
    """

    def __init__(self, source: ConfluentKafkaSource) -> None:
        super().__init__()
        self.source = source

    def filter(self, record: logging.LogRecord) -> bool:
        # confluent-kafka logs ("%s [%s] %s", facility, client name, message).
        facility = record.args[0] if isinstance(record.args, tuple) and record.args else None
        return facility != "FAIL" or (self.source.outage() is None and not self.source._stale_failures_queued)
