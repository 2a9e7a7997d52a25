"""The kafka-python :class:`KafkaSource` (the protocol it implements is in :mod:`stream.sources.base`).

Every source hands out poll batches shaped like kafka-python's
(``{TopicPartition: [RawRecord, ...]}``) and lets the engine decide where each
partition starts: on assignment it asks the engine's
:class:`RebalanceHandler` for checkpointed positions, and before a partition
is taken away it lets the engine checkpoint. Offsets committed to the consumer
group are for lag monitoring only; the checkpoint is the source of truth.

Backends: :class:`KafkaSource` (kafka-python, always installed),
:class:`stream.sources.confluent.ConfluentKafkaSource` (``pip install
'streamlearn[fast]'``) and :class:`stream.sources.files.FileSource`.

A broker that goes away mid-run is an :class:`Outage`, not an error and not an
idle topic: both Kafka clients reconnect on their own, so the sources keep
polling (each poll still waits its timeout: no busy loop), report the outage
through ``outage()``, answer ``lag() -> None`` (unknown, never a stale 0) and
skip the monitoring-only group commit. The engine reports the outage and never
counts it as idleness (:mod:`stream.engine.loop`).
"""

from __future__ import annotations

import logging
import socket
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from stream.core.errors import BrokerOutageError, BrokerUnavailableError, ConfigError, TopicNotFoundError
from stream.core.records import TopicPartition
from stream.sources.base import Outage, PollBatch, RebalanceHandler

log = logging.getLogger(__name__)

# KafkaSource.poll waits in slices of at most this long (see its comment).
_POLL_SLICE_MS = 10
# No broker connection for this long is an outage: shorter gaps happen when a
# client reconnects on its own (leader moves, idle connections closed).
_OUTAGE_GRACE_S = 2.0
# How often a poll looks at kafka-python's connection count.
_CONNECTION_CHECK_S = 0.25
# After a gap, connections must be seen open this long to count as back: a
# connection attempt is counted too while it lasts, refused or not.
_RECONNECTED_S = 0.5
# A group commit is monitoring only: it may hold up the loop this long at most.
_COMMIT_TIMEOUT_MS = 5_000


@dataclass(frozen=True)
class KafkaSourceConfig:
    """Connection and consumption settings shared by the Kafka backends.

    With ``group_id`` the source subscribes to ``topics`` as a consumer-group
    member; without it, it assigns ``partitions`` (or every partition of
    ``topics``) directly and commits nothing.
    """

    bootstrap: str
    topics: tuple[str, ...] = ()
    group_id: str | None = None
    partitions: tuple[TopicPartition, ...] = ()
    auto_offset_reset: str = "earliest"
    client_id: str = "streamlearn"
    # Group timeouts: Kafka's defaults make a restarted member wait ~45 s for
    # its predecessor's session to expire; a learner wants to resume sooner.
    session_timeout_ms: int = 10_000
    heartbeat_interval_ms: int = 1_000
    max_poll_interval_ms: int = 300_000
    fetch_max_wait_ms: int = 100
    max_partition_fetch_bytes: int = 8 << 20
    request_timeout_ms: int = 30_000
    # How long to wait for the first broker before calling it unreachable.
    bootstrap_timeout_ms: int = 10_000
    # Cap of the clients' own reconnect backoff. kafka-python's default (30 s)
    # can leave a daemon idle for half a minute after its broker came back.
    reconnect_backoff_max_ms: int = 5_000
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.bootstrap:
            raise ConfigError("bootstrap servers are required, e.g. --bootstrap localhost:9092")
        if not self.topics and not self.partitions:
            raise ConfigError("name at least one --topic (or --partition TOPIC:N)")
        if self.partitions and self.group_id:
            raise ConfigError(
                "explicit partitions and a consumer group are exclusive: drop --group or --partition"
            )
        if self.auto_offset_reset not in ("earliest", "latest"):
            raise ConfigError("auto_offset_reset must be 'earliest' or 'latest'")


def kafka_python_settings(cfg: KafkaSourceConfig) -> dict[str, Any]:
    """``KafkaConsumer`` keyword arguments for ``cfg`` (also what ``bench.pipeline`` gives its raw consumer)."""
    return dict(
        bootstrap_servers=cfg.bootstrap,
        group_id=cfg.group_id,
        client_id=cfg.client_id,
        enable_auto_commit=False,
        auto_offset_reset=cfg.auto_offset_reset,
        session_timeout_ms=cfg.session_timeout_ms,
        heartbeat_interval_ms=cfg.heartbeat_interval_ms,
        max_poll_interval_ms=cfg.max_poll_interval_ms,
        fetch_max_wait_ms=cfg.fetch_max_wait_ms,
        max_partition_fetch_bytes=cfg.max_partition_fetch_bytes,
        request_timeout_ms=cfg.request_timeout_ms,
        bootstrap_timeout_ms=cfg.bootstrap_timeout_ms,
        reconnect_backoff_max_ms=cfg.reconnect_backoff_max_ms,
        **dict(cfg.extra),
    )


def _listener(source: KafkaSource, handler: RebalanceHandler):
    """A kafka-python ConsumerRebalanceListener (its type is checked) that forwards to ``handler``."""
    from kafka import ConsumerRebalanceListener

    class _Listener(_ListenerMixin, ConsumerRebalanceListener):
        pass

    return _Listener(source, handler)


class _ListenerMixin:
    """Adapts kafka-python's rebalance callbacks to our RebalanceHandler."""

    def __init__(self, source: KafkaSource, handler: RebalanceHandler) -> None:
        self._source = source
        self._handler = handler

    def on_partitions_revoked(self, revoked) -> None:
        if revoked:
            self._handler.on_revoked([TopicPartition(tp.topic, tp.partition) for tp in revoked])

    def on_partitions_assigned(self, assigned) -> None:
        self._source._seek_to(
            self._handler.on_assigned([TopicPartition(tp.topic, tp.partition) for tp in assigned])
        )


class KafkaSource:
    """A :class:`Source` on kafka-python's ``KafkaConsumer``.

    Parameters
    ----------
    config : KafkaSourceConfig
        Where and what to consume.
    clock : callable, optional
        Monotonic seconds for outage timing (tests pass a fake).

    Raises
    ------
    BrokerUnavailableError
        The bootstrap servers do not answer when the source opens.
    TopicNotFoundError
        A configured topic does not exist.

    Notes
    -----
    kafka-python never raises from ``poll()`` when the brokers go away: it
    returns nothing and reconnects on its own, with backoff. The one public
    signal is its ``connection-count`` metric, so polls look at it (at most
    every 0.25 s; records prove nothing, they may come from the fetch buffer);
    no open connection for 2 s is an :class:`Outage`, connections seen open
    for 0.5 s end it (a connection attempt counts while it lasts). Its cause
    comes from one TCP connection attempt to the bootstrap servers, made when
    the outage begins. A broker that accepts connections but never answers is
    not seen this way: kafka-python drops such a connection after
    ``request_timeout_ms`` and then connects again.
    """

    def __init__(self, config: KafkaSourceConfig, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self._consumer = None
        self._clock = clock
        # Outage tracking (see _watch_connections): since when no broker
        # connection is open, the outage declared after the grace period.
        self._unconnected_since: float | None = None
        self._connected_since: float | None = None
        self._outage: Outage | None = None
        self._next_connection_check = 0.0
        self._commit_refused = False

    def open(self, handler: RebalanceHandler) -> None:
        from kafka import KafkaConsumer
        from kafka import TopicPartition as KafkaTP
        from kafka.errors import KafkaConnectionError, KafkaTimeoutError

        cfg = self.config
        try:
            self._consumer = KafkaConsumer(**kafka_python_settings(cfg))
        except (KafkaTimeoutError, KafkaConnectionError):
            raise BrokerUnavailableError(
                f"no Kafka broker answered at {cfg.bootstrap!r}: check --bootstrap and that the broker is up"
            ) from None
        topics = set(cfg.topics) | {tp.topic for tp in cfg.partitions}
        # partitions_for_topic answers from the metadata the client bootstrapped
        # with and asks the broker only about a topic it has not seen; topics()
        # always asks, and waits out the client's retry backoff (~0.1 s) to do so.
        missing = sorted(t for t in topics if not self._consumer.partitions_for_topic(t))
        if missing:
            self.close()
            raise TopicNotFoundError(
                f"topic(s) {', '.join(missing)} not found on {cfg.bootstrap}; "
                "create them first (e.g. `streamlearn produce`) or fix --topic"
            )
        if cfg.group_id:
            self._consumer.subscribe(list(cfg.topics), listener=_listener(self, handler))
            return
        partitions = list(cfg.partitions) or [
            TopicPartition(t, p)
            for t in cfg.topics
            for p in sorted(self._consumer.partitions_for_topic(t) or ())
        ]
        self._consumer.assign([KafkaTP(tp.topic, tp.partition) for tp in partitions])
        positions = handler.on_assigned(partitions)
        unpositioned = [KafkaTP(tp.topic, tp.partition) for tp in partitions if tp not in positions]
        if unpositioned:
            if cfg.auto_offset_reset == "earliest":
                self._consumer.seek_to_beginning(*unpositioned)
            else:
                self._consumer.seek_to_end(*unpositioned)
        self._seek_to(positions)

    def _seek_to(self, positions: Mapping[TopicPartition, int]) -> None:
        from kafka import TopicPartition as KafkaTP

        for tp, offset in positions.items():
            self._consumer.seek(KafkaTP(tp.topic, tp.partition), offset)

    def poll(self, timeout_ms: int, max_records: int) -> PollBatch:
        # kafka-python's ConsumerRecord has RawRecord's attributes (by name) and
        # its TopicPartition equals ours: hand the dict through without copying.
        #
        # The wait is sliced because of a race in kafka-python (3.0): when a
        # fetch response lands between poll() draining its buffer and arming
        # its wait, the completed fetch is no longer among the futures it waits
        # on, poll() believes nothing is in flight and sleeps
        # min(timeout_ms, retry_backoff_ms) -- 100 ms -- with the records
        # already buffered. A consumer that works between polls (we do) lands
        # in that window about once per 200k records; slices cap the stall at
        # _POLL_SLICE_MS and change nothing else (a poll with data returns at
        # once, an empty one still waits timeout_ms in total).
        deadline = time.monotonic() + timeout_ms / 1000
        while True:
            remaining_ms = max(0, int((deadline - time.monotonic()) * 1000))
            batch = self._consumer.poll(timeout_ms=min(remaining_ms, _POLL_SLICE_MS), max_records=max_records)
            if batch or remaining_ms == 0:
                break
        self._watch_connections()
        return batch

    def outage(self) -> Outage | None:
        """The broker outage in progress (see the class notes), ``None`` while a broker connection is open."""
        return self._outage

    def _watch_connections(self) -> None:
        now = self._clock()
        if now < self._next_connection_check:
            return
        self._next_connection_check = now + _CONNECTION_CHECK_S
        if self._open_connections() > 0:
            if self._unconnected_since is None:
                return
            if self._connected_since is None:
                self._connected_since = now
            elif now - self._connected_since >= _RECONNECTED_S:
                self._unconnected_since = self._connected_since = self._outage = None
                self._commit_refused = False
            return
        self._connected_since = None
        if self._unconnected_since is None:
            self._unconnected_since = now
        if self._outage is None and now - self._unconnected_since >= _OUTAGE_GRACE_S:
            self._outage = Outage(self._unconnected_since, connect_error(self.config.bootstrap))

    def _open_connections(self) -> int:
        """kafka-python's own count of open broker connections (1 if this version does not report it)."""
        count = self._consumer.metrics().get("consumer-metrics", {}).get("connection-count")
        return 1 if count is None else int(count)

    def commit(self, positions: Mapping[TopicPartition, int]) -> None:
        """Commit to the group (monitoring only) -- never while the broker is out of reach.

        Raises
        ------
        BrokerOutageError
            No broker connection is open (nothing was sent; said once per gap),
            or the coordinator did not confirm within 5 s. The engine logs it
            and goes on; the checkpoint already holds these positions.
        """
        if not self.config.group_id or not positions:
            return
        from kafka import TopicPartition as KafkaTP
        from kafka.errors import KafkaTimeoutError
        from kafka.structs import OffsetAndMetadata

        if self._unconnected_since is not None:
            # A synchronous commit would wait for a coordinator that is not
            # there. Raised once per gap (the engine logs it), skipped after.
            if not self._commit_refused:
                self._commit_refused = True
                raise BrokerOutageError(
                    "no broker connection; offsets are not committed to the group until "
                    "it is back (the checkpoint has them)"
                )
            return
        assigned = self._consumer.assignment()
        offsets = {
            KafkaTP(tp.topic, tp.partition): OffsetAndMetadata(pos, "", -1)
            for tp, pos in positions.items()
            if KafkaTP(tp.topic, tp.partition) in assigned
        }
        if not offsets:
            return
        timeout_ms = min(self.config.request_timeout_ms, _COMMIT_TIMEOUT_MS)
        try:
            self._consumer.commit(offsets, timeout_ms=timeout_ms)
        except KafkaTimeoutError:
            raise BrokerOutageError(
                f"the group coordinator did not confirm the commit within {timeout_ms} ms"
            ) from None

    def lag(self) -> int | None:
        from kafka.errors import KafkaError

        assigned = self._consumer.assignment() if self._consumer is not None else None
        # No partitions yet (a group still joining) or no broker connection
        # (highwater() would answer from before the outage): unknown, not 0.
        if not assigned or self._unconnected_since is not None:
            return None
        total = 0
        for tp in assigned:
            high = self._consumer.highwater(tp)
            if high is None:
                return None
            try:
                position = self._consumer.position(tp, timeout_ms=0)
            except KafkaError:  # position unknown mid-rebalance: lag is unknown, not an error
                return None
            if position is None:
                return None
            total += max(0, high - position)
        return total

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close(autocommit=False)
            self._consumer = None


def first_reachable(bootstrap: str, timeout_s: float = 1.0) -> tuple[str | None, list[str]]:
    """The first bootstrap server that accepts a TCP connection (or None), and why each one before it did not.

    >>> first_reachable("127.0.0.1:1")  # doctest: +ELLIPSIS
    (None, ['127.0.0.1:1: ...'])
    """
    causes = []
    for server in (s.strip() for s in bootstrap.split(",") if s.strip()):
        host, _, port = server.rpartition(":")
        host = host.strip("[]") or "localhost"
        try:
            with socket.create_connection((host, int(port)), timeout=timeout_s):
                return server, causes
        except (OSError, ValueError) as exc:
            causes.append(f"{server}: {exc}")
    return None, causes or [f"no bootstrap server in {bootstrap!r}"]


def connect_error(bootstrap: str, timeout_s: float = 1.0) -> str:
    """Why the bootstrap servers cannot be reached: one TCP connection attempt to each, until one succeeds.

    Only names a cause for an outage the client already reported; a server
    that accepts the connection is reported as such (the Kafka handshake, not
    the network, is then what fails).

    >>> connect_error("127.0.0.1:1")  # doctest: +ELLIPSIS
    '127.0.0.1:1: ...'
    """
    server, causes = first_reachable(bootstrap, timeout_s)
    if server is not None:
        return (
            f"{server} accepts TCP connections, but the Kafka client has none open "
            "(handshake or broker failing)"
        )
    return "; ".join(causes)
