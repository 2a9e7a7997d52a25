"""A full retrain's data: resolve the range once, read a shard straight from Kafka, decode it.

Reading goes through :class:`~stream.sources.range.KafkaRangeSource` (no
consumer group, nothing committed, the broker's offset answers verified) and
the daemon's :class:`~stream.codec.json_codec.JsonCodec`, so a retrain sees exactly the
events the daemon would: undecodable records are skipped and counted (the
daemon already dead-lettered them when it read them).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Iterator, Mapping

from stream.codec.json_codec import JsonCodec
from stream.core.errors import BrokerUnavailableError
from stream.core.poll import PollColumns
from stream.core.records import Events, TopicPartition
from stream.reconcile.shards import Shard
from stream.sources.base import NoPositions
from stream.sources.bounds import RangeBound, parse_bound
from stream.sources.kafka import KafkaSourceConfig
from stream.sources.range import KafkaRangeSource

__all__ = ["ShardData", "exact_bound", "read_shard", "read_spans", "resolve_range"]

# A shard read that makes no progress for this long is a stalled broker, not a slow one.
_STALL_S = 60.0


@dataclass(frozen=True)
class ShardData:
    """One shard's decoded events (in read order) and how many records could not be decoded."""

    index: int
    events: Events
    undecodable: int


def exact_bound(offsets: Mapping[TopicPartition, int], default: str) -> RangeBound:
    """A ``P:N`` bound naming every partition's offset exactly.

    >>> b = exact_bound({TopicPartition("t", 0): 5}, "latest")
    >>> b.kind, b.per_partition, b.default
    ('offset', {('t', 0): 5}, 'latest')
    """
    spec = ",".join(f"{tp.topic}:{tp.partition}:{n}" for tp, n in sorted(offsets.items()))
    return parse_bound(spec, default=default)


def resolve_range(config: KafkaSourceConfig, start: str, end: str) -> dict[TopicPartition, tuple[int, int]]:
    """``--from``/``--to`` specs -> per-partition ``[start, end)`` offsets (see :mod:`stream.sources.bounds`).

    Raises
    ------
    BrokerUnavailableError, TopicNotFoundError
        The broker does not answer or a topic does not exist.
    """
    source = KafkaRangeSource(config, parse_bound(start), parse_bound(end, default="latest"))
    try:
        source.open(NoPositions())
        return dict(source.ranges)
    finally:
        source.close()


def read_spans(
    config: KafkaSourceConfig, spans: Mapping[TopicPartition, tuple[int, int]], *, max_records: int = 20_000
) -> Iterator[PollColumns]:
    """The records of per-partition offset spans ``[lo, hi)``, as polls merged in timestamp order.

    No consumer group, nothing committed (``config``'s topics and group are
    ignored). Used by a retrain's shards and by the daemon's catch-up.

    Raises
    ------
    BrokerUnavailableError
        No record arrived for 60 s before the spans were complete.
    """
    source = KafkaRangeSource(
        replace(config, topics=(), partitions=tuple(sorted(spans)), group_id=None),
        exact_bound({tp: lo for tp, (lo, _) in spans.items()}, "earliest"),
        exact_bound({tp: hi for tp, (_, hi) in spans.items()}, "earliest"),
    )
    try:
        source.open(NoPositions())
        last_progress = time.monotonic()
        while not source.exhausted:
            poll = source.poll_columns(200, max_records)
            if len(poll):
                last_progress = time.monotonic()
                yield poll
            elif time.monotonic() - last_progress > _STALL_S:
                raise BrokerUnavailableError(
                    f"no record from {', '.join(f'{tp.topic}:{tp.partition}' for tp in sorted(spans))} for "
                    f"{_STALL_S:g}s (read {source.emitted:,} of {source.total:,})"
                )
    finally:
        source.close()


def read_shard(
    config: KafkaSourceConfig, shard: Shard, codec: JsonCodec, *, max_records: int = 20_000
) -> ShardData:
    """Read and decode every record of ``shard`` (its pieces in order).

    Raises
    ------
    BrokerUnavailableError
        No record arrived for 60 s before the shard was complete.
    """
    parts: list[Events] = []
    undecodable = 0
    for piece in shard.pieces:
        for poll in read_spans(config, {piece.partition: (piece.lo, piece.hi)}, max_records=max_records):
            decoded = codec.decode(poll)
            undecodable += len(decoded.dead_letters)
            if len(decoded.events):
                parts.append(decoded.events)
    events = Events.concat(parts) if parts else codec.empty_events()
    return ShardData(shard.index, events, undecodable)
