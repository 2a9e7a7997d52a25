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
:class:`stream.sources.range.RangeSource`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Protocol, Sequence

from stream.core.errors import ConfigError
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

    A source may also offer ``poll_columns(timeout_ms, max_records) ->
    PollColumns`` (:mod:`stream.core.poll`): the same poll as columns, without a
    record object per record. The engine uses it when it is there
    (:class:`~stream.sources.confluent.ConfluentKafkaSource` has it).

    A source that talks to a broker may also offer ``outage() -> Outage |
    None``: the outage in progress, if any. While it lasts ``lag()`` is
    ``None`` and the engine neither stops as idle nor counts the time as idle.
    A source whose ``poll`` cannot go on raises
    :class:`~stream.core.errors.BrokerOutageError` instead; the engine polls again
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
