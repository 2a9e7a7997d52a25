"""What every source is: the :class:`Source` protocol, the engine's :class:`RebalanceHandler` side, and :class:`Outage`.

Every source hands out poll batches shaped like kafka-python's
(``{TopicPartition: [RawRecord, ...]}``) and lets the engine decide where each
partition starts: on assignment it asks the engine's
:class:`RebalanceHandler` for checkpointed positions, and before a partition
is taken away it lets the engine checkpoint. Offsets committed to the consumer
group are for lag monitoring only; the checkpoint is the source of truth.

Implementations: :class:`stream.sources.kafka.KafkaSource` (kafka-python),
:class:`stream.sources.confluent.ConfluentKafkaSource`,
:class:`stream.sources.files.FileSource` and
:class:`stream.sources.range.KafkaRangeSource`.

What a source offers beyond :class:`Source` is declared as a capability
Protocol -- :class:`ColumnPolling`, :class:`ReportsOutage`, :class:`Bounded`,
:class:`HasRanges` -- and :func:`source_extras` resolves them once, when a
loop starts, so the per-batch path never probes the source again.

>>> from stream.testing.doubles import ListSource, OutageSource
>>> extras = source_extras(ListSource([]))
>>> extras.poll_columns is None, extras.outage is None, extras.bounded
(True, True, False)
>>> source_extras(OutageSource([], down=range(1, 2))).outage is not None
True
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Protocol, Sequence, runtime_checkable

from stream.core.errors import ConfigError
from stream.core.poll import PollColumns
from stream.core.records import RawRecord, TopicPartition

PollBatch = Mapping[TopicPartition, Sequence[RawRecord]]


class RebalanceHandler(Protocol):
    """The engine's side of partition assignment."""

    def on_assigned(self, partitions: Sequence[TopicPartition]) -> Mapping[TopicPartition, int]:
        """Positions (next offset to read) to seek to; partitions left out use the group/reset policy."""
        ...

    def on_revoked(self, partitions: Sequence[TopicPartition]) -> None:
        """Called before ``partitions`` are released: checkpoint now."""
        ...


@dataclass(frozen=True)
class Outage:
    """The source cannot reach its broker(s) right now.

    ``since`` is when it lost them (``time.monotonic()`` seconds); ``cause``
    is what the client, or a connection attempt, said.

    >>> Outage(since=12.5, cause="127.0.0.1:9092: [Errno 111] Connection refused").cause
    '127.0.0.1:9092: [Errno 111] Connection refused'
    """

    since: float
    cause: str


class NoPositions:
    """A :class:`RebalanceHandler` without saved positions: a bounded read starts where its range starts."""

    def on_assigned(self, partitions: Sequence[TopicPartition]) -> Mapping[TopicPartition, int]:
        return {}

    def on_revoked(self, partitions: Sequence[TopicPartition]) -> None:
        return None


class Source(Protocol):
    """A stream of raw records with seekable, per-partition positions.

    A source may also have the capabilities below (:class:`ColumnPolling`,
    :class:`ReportsOutage`, :class:`Bounded`, :class:`HasRanges`). A source
    whose ``poll`` cannot go on raises
    :class:`~stream.core.errors.BrokerOutageError`; the engine polls again
    after a computed backoff.
    """

    def open(self, handler: RebalanceHandler) -> None: ...

    def poll(self, timeout_ms: int, max_records: int) -> PollBatch: ...

    def commit(self, positions: Mapping[TopicPartition, int]) -> None:
        """Record progress where monitoring tools see it (consumer-group offsets)."""
        ...

    def lag(self) -> int | None:
        """Records between the current positions and the end of the assigned partitions.

        ``None`` when unknown -- no partitions assigned yet, the broker out of
        reach, an end offset not fetched yet -- and never a guessed 0:
        ``--until-idle`` stops only on a lag known to be 0.
        """
        ...

    def close(self) -> None: ...


@runtime_checkable
class ColumnPolling(Protocol):
    """The same poll as :meth:`Source.poll`, as columns (:mod:`stream.core.poll`): no record object per record.

    The engine uses it when it is there
    (:class:`~stream.sources.confluent.ConfluentKafkaSource` and
    :class:`~stream.sources.range.KafkaRangeSource` have it).
    """

    def poll_columns(self, timeout_ms: int, max_records: int) -> PollColumns: ...


@runtime_checkable
class ReportsOutage(Protocol):
    """A source that talks to a broker and says when it cannot reach it.

    ``outage()`` is the outage in progress, if any. While it lasts ``lag()``
    is ``None`` and the engine neither stops as idle nor counts the time as idle.
    """

    def outage(self) -> Outage | None: ...


@runtime_checkable
class Bounded(Protocol):
    """A source with an end: a file, a resolved offset range.

    ``exhausted`` turns true once the last record was handed out; the engine
    then stops. ``partitions()`` and ``count_records()`` are asked after
    ``open``; ``record_timestamps`` says whether records carry a timestamp
    for a replay's clock.
    """

    record_timestamps: bool

    @property
    def exhausted(self) -> bool: ...

    def partitions(self) -> list[TopicPartition]: ...

    def count_records(self) -> int: ...


@runtime_checkable
class HasRanges(Protocol):
    """A source reading resolved offset ranges: per partition ``(start, end)``, known once ``open`` returns."""

    ranges: Mapping[TopicPartition, tuple[int, int]]


@dataclass(frozen=True)
class SourceExtras:
    """A source's optional capabilities, resolved once (see :func:`source_extras`).

    ``poll_columns`` and ``outage`` are the bound methods (``None`` when the
    source lacks them), so a loop calls them without a lookup per batch.
    """

    poll_columns: Callable[[int, int], PollColumns] | None
    outage: Callable[[], Outage | None] | None
    bounded: bool
    has_ranges: bool


def source_extras(source: object) -> SourceExtras:
    """Resolve ``source``'s capabilities; call it once when a loop starts, never per batch (isinstance on a
    runtime Protocol is slow)."""
    return SourceExtras(
        poll_columns=source.poll_columns if isinstance(source, ColumnPolling) else None,
        outage=source.outage if isinstance(source, ReportsOutage) else None,
        bounded=isinstance(source, Bounded),
        has_ranges=isinstance(source, HasRanges),
    )


def parse_partitions(specs: Sequence[str]) -> list[TopicPartition]:
    """Parse ``topic:partition`` strings (as given to ``--partition``).

    >>> parse_partitions(["events:0", "events:2"])
    [TopicPartition(topic='events', partition=0), TopicPartition(topic='events', partition=2)]
    """
    out = []
    for spec in specs:
        topic, sep, part = spec.rpartition(":")
        if not sep or not topic or not part.isdigit():
            raise ConfigError(f"partition {spec!r} must look like TOPIC:N, e.g. events:0")
        out.append(TopicPartition(topic, int(part)))
    return out
