"""Test doubles for the columnar poll path (what :class:`~stream.sources.confluent.ConfluentKafkaSource` uses).

:class:`FakeMessage` has the accessor methods of a ``confluent_kafka.Message``
that streamlearn reads, and :class:`ColumnarListSource` is a
:class:`~stream.testing.doubles.ListSource` that hands its polls out as
:class:`~stream.core.poll.PollColumns` built from such messages -- interleaved
across partitions, as librdkafka returns them -- so the engine's columnar path
can be crash-tested without a broker.

Examples
--------
>>> from stream.sources.base import NoPositions
>>> from stream.testing.doubles import make_records
>>> src = ColumnarListSource(make_records(6, n_features=2, partitions=2), batch_size=4)
>>> src.open(NoPositions())
>>> cols = src.poll_columns(0, 10)
>>> len(cols), cols.partition.tolist(), cols.offset.tolist()
(4, [0, 1, 0, 1], [0, 0, 1, 1])
>>> cols.next_positions()
{TopicPartition(topic='test', partition=0): 2, TopicPartition(topic='test', partition=1): 2}
"""

from __future__ import annotations

from typing import Sequence

from stream.core.poll import PollColumns
from stream.core.records import RawRecord
from stream.testing.doubles import ListSource


class FakeMessage:
    """The parts of ``confluent_kafka.Message`` that streamlearn reads, over a :class:`RawRecord`."""

    __slots__ = ("_rec", "_error")

    def __init__(self, rec: RawRecord, error=None) -> None:
        self._rec = rec
        self._error = error

    def topic(self) -> str:
        return self._rec.topic

    def partition(self) -> int:
        return self._rec.partition

    def offset(self) -> int:
        return self._rec.offset

    def timestamp(self) -> tuple[int, int]:
        return (1, self._rec.timestamp)  # (TIMESTAMP_CREATE_TIME, ms)

    def key(self) -> bytes | None:
        return self._rec.key

    def value(self) -> bytes | None:
        return self._rec.value

    def headers(self) -> list | None:
        return list(self._rec.headers) or None  # confluent-kafka gives None when there are none

    def error(self):
        return self._error


def messages_from(records: Sequence[RawRecord]) -> list[FakeMessage]:
    return [FakeMessage(r) for r in records]


class ColumnarListSource(ListSource):
    """A :class:`ListSource` whose ``poll_columns`` returns :class:`PollColumns` of fake messages.

    The records of a poll come out in the order the list holds them
    (round-robin across partitions for :func:`~stream.testing.doubles.make_records`),
    not grouped by partition.
    """

    def __init__(self, records: Sequence[RawRecord], **kwargs) -> None:
        super().__init__(records, **kwargs)
        self._arrival = {(r.topic, r.partition, r.offset): i for i, r in enumerate(self.records)}

    def poll_columns(self, timeout_ms: int, max_records: int) -> PollColumns:
        batch = self.poll(timeout_ms, max_records)  # the abort sentinel and bookkeeping live there
        records = sorted(
            (r for recs in batch.values() for r in recs),
            key=lambda r: self._arrival[(r.topic, r.partition, r.offset)],
        )
        return PollColumns.from_messages(messages_from(records))
