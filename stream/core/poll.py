"""One poll's records as columns: what the codec and the engine read, without per-record objects.

A :class:`~stream.sources.base.Source` hands out polls shaped like kafka-python's
(``{TopicPartition: [RawRecord, ...]}``). The codec and the engine only need
a few columns of them -- the values, where each came from, and the next
position per partition -- plus the whole record for the rare dead letter.
:class:`PollColumns` is that view: built from a mapping with C-level ``map``
calls (:meth:`PollColumns.from_mapping`), or straight from confluent-kafka
``Message`` objects (:meth:`PollColumns.from_messages`) so that no
``RawRecord`` is built for a record that decodes fine.

Row ``i`` of every column is one record, in poll order. For a mapping that
is partition-major (the mapping's order); for messages it is the order the
client returned them. Within a partition, poll order is offset order.

Examples
--------
>>> from stream.core.records import RawRecord, TopicPartition
>>> poll = {TopicPartition("t", 0): [RawRecord("t", 0, 5, 100, None, b"a"), RawRecord("t", 0, 6, 101, None, b"b")],
...         TopicPartition("t", 1): [RawRecord("t", 1, 9, 102, None, b"c")]}
>>> cols = PollColumns.from_mapping(poll)
>>> len(cols), cols.values, cols.offset.tolist()
(3, [b'a', b'b', b'c'], [5, 6, 9])
>>> cols.next_positions()
{TopicPartition(topic='t', partition=0): 7, TopicPartition(topic='t', partition=1): 10}
>>> cols.record(2).value, cols.timestamps().tolist()
(b'c', [100, 101, 102])
"""

from __future__ import annotations

from operator import attrgetter
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from stream.core.records import RawRecord, TopicPartition

_VALUE = attrgetter("value")
_OFFSET = attrgetter("offset")
_TIMESTAMP = attrgetter("timestamp")
_KEY = attrgetter("key")
_HEADERS = attrgetter("headers")
_EMPTY_STR = np.array([], dtype=str)


class PollColumns:
    """The records of one poll, column-wise (see the module docstring).

    Attributes
    ----------
    values : list of bytes or None
        Record values, in poll order.
    topic : (n,) str array
    partition : (n,) int32 array
    offset : (n,) int64 array
    """

    __slots__ = (
        "values",
        "topic",
        "partition",
        "offset",
        "_positions",
        "_record",
        "_timestamps",
        "_keys_headers",
    )

    def __init__(
        self,
        values: list[bytes | None],
        topic: np.ndarray,
        partition: np.ndarray,
        offset: np.ndarray,
        *,
        record: Callable[[int], Any],
        timestamps: Callable[[], np.ndarray],
        positions: dict[TopicPartition, int],
        keys_headers: Callable[[], tuple[list, list]] | None = None,
    ) -> None:
        self.values = values
        self.topic = topic
        self.partition = partition
        self.offset = offset
        self._record = record
        self._timestamps = timestamps
        self._positions = positions
        self._keys_headers = keys_headers

    def __len__(self) -> int:
        return len(self.values)

    def record(self, i: int) -> RawRecord:
        """Row ``i`` as a whole record (for dead letters); built on demand."""
        return self._record(int(i))

    def records(self) -> list[RawRecord]:
        """Every row as a record, in poll order (the codec's slow path)."""
        return [self._record(i) for i in range(len(self.values))]

    def keys_and_headers(self) -> tuple[list, list]:
        """Every row's key and headers, in poll order: one C-level pass where the client allows.

        The intake process ships them so the engine can dead-letter any row; building
        a whole record per row for that cost four times the poll and its decoding.

        >>> PollColumns.from_records([RawRecord("t", 0, 5, 100, b"k", b"v", (("h", b"1"),))]).keys_and_headers()
        ([b'k'], [(('h', b'1'),)])
        """
        if self._keys_headers is not None:
            return self._keys_headers()
        records = self.records()
        return [r.key for r in records], [r.headers for r in records]

    def timestamps(self) -> np.ndarray:
        """(n,) int64 client/broker timestamps in ms; computed on demand (rarely needed)."""
        return self._timestamps()

    def next_positions(self) -> dict[TopicPartition, int]:
        """Per partition, one past the offset of its last record in this poll.

        A client returns a partition's records in offset order, so its last
        row is its highest offset here: the engine's next position for it.
        """
        return self._positions

    def take(self, rows: np.ndarray) -> PollColumns:
        """The poll rows ``rows`` (ascending) as a poll of their own; its row ``i`` is row ``rows[i]`` here.

        >>> cols = PollColumns.from_records([RawRecord("t", 0, o, o, None, b"v") for o in (4, 5, 6)])
        >>> sub = cols.take(np.array([0, 2]))
        >>> sub.offset.tolist(), sub.record(1).offset, sub.timestamps().tolist(), sub.next_positions()
        ([4, 6], 6, [4, 6], {TopicPartition(topic='t', partition=0): 7})
        """
        index = rows.tolist()
        record, timestamps = self._record, self._timestamps
        topic, partition, offset = self.topic[rows], self.partition[rows], self.offset[rows]
        distinct = sorted(set(topic.tolist()))
        return PollColumns(
            [self.values[i] for i in index],
            topic,
            partition,
            offset,
            record=lambda i: record(index[i]),
            timestamps=lambda: timestamps()[rows],
            positions=_last_positions(distinct, topic, partition, offset) if index else {},
        )

    # ------------------------------------------------------------ builders
    @classmethod
    def empty(cls) -> PollColumns:
        return cls(
            [],
            _EMPTY_STR,
            np.empty(0, np.int32),
            np.empty(0, np.int64),
            record=_no_record,
            timestamps=lambda: np.empty(0, np.int64),
            positions={},
        )

    @classmethod
    def from_mapping(cls, poll: Mapping[TopicPartition, Sequence[Any]]) -> PollColumns:
        """Columns of a kafka-python-shaped poll; records keep their own objects (no copies)."""
        parts = [(tp, recs) for tp, recs in poll.items() if recs]
        if not parts:
            return cls.empty()
        if len(parts) == 1:
            records = list(parts[0][1])
        else:
            records = [r for _, recs in parts for r in recs]
        n = len(records)
        counts = [len(recs) for _, recs in parts]
        topic = np.repeat(np.array([tp[0] for tp, _ in parts], dtype=str), counts)
        partition = np.repeat(np.array([tp[1] for tp, _ in parts], dtype=np.int32), counts)
        offset = np.fromiter(map(_OFFSET, records), dtype=np.int64, count=n)
        # INVARIANT: a position is one past the last record handed on (the engine's rule).
        positions = {TopicPartition(tp[0], tp[1]): recs[-1].offset + 1 for tp, recs in parts}
        return cls(
            list(map(_VALUE, records)),
            topic,
            partition,
            offset,
            record=records.__getitem__,
            timestamps=lambda: np.fromiter(map(_TIMESTAMP, records), dtype=np.int64, count=n),
            positions=positions,
            keys_headers=lambda: (list(map(_KEY, records)), list(map(_HEADERS, records))),
        )

    @classmethod
    def from_messages(cls, messages: Sequence[Any]) -> PollColumns:
        """Columns of confluent-kafka ``Message`` objects that carry no error.

        Every column is read with one C-level ``map`` over the messages; a
        :class:`~stream.core.records.RawRecord` is built only when asked for.
        """
        n = len(messages)
        if n == 0:
            return cls.empty()
        msg_type = type(messages[0])
        topics = list(map(msg_type.topic, messages))
        distinct = sorted(set(topics))
        topic = np.full(n, distinct[0]) if len(distinct) == 1 else np.array(topics, dtype=str)
        partition = np.fromiter(map(msg_type.partition, messages), dtype=np.int32, count=n)
        offset = np.fromiter(map(msg_type.offset, messages), dtype=np.int64, count=n)

        def record(i: int) -> RawRecord:
            m = messages[i]
            return RawRecord(
                m.topic(), m.partition(), m.offset(), m.timestamp()[1], m.key(), m.value(), m.headers() or ()
            )

        return cls(
            list(map(msg_type.value, messages)),
            topic,
            partition,
            offset,
            record=record,
            timestamps=lambda: np.fromiter((m.timestamp()[1] for m in messages), dtype=np.int64, count=n),
            positions=_last_positions(distinct, topic, partition, offset),
            keys_headers=lambda: (
                list(map(msg_type.key, messages)),
                [h or () for h in map(msg_type.headers, messages)],
            ),
        )

    @classmethod
    def from_records(cls, records: Sequence[Any]) -> PollColumns:
        """Columns of records (``RawRecord`` or kafka-python ``ConsumerRecord``) in the order given.

        Unlike :meth:`from_mapping` the rows may interleave partitions -- a
        replay merges them in timestamp order -- as long as each partition's
        rows stay in offset order.

        >>> recs = [RawRecord("t", 1, 9, 100, None, b"c"), RawRecord("t", 0, 5, 101, None, b"a")]
        >>> cols = PollColumns.from_records(recs)
        >>> cols.partition.tolist(), cols.next_positions()[TopicPartition("t", 1)]
        ([1, 0], 10)
        """
        n = len(records)
        if n == 0:
            return cls.empty()
        topics = [r.topic for r in records]
        distinct = sorted(set(topics))
        topic = np.full(n, distinct[0]) if len(distinct) == 1 else np.array(topics, dtype=str)
        partition = np.fromiter((r.partition for r in records), dtype=np.int32, count=n)
        offset = np.fromiter(map(_OFFSET, records), dtype=np.int64, count=n)
        return cls(
            list(map(_VALUE, records)),
            topic,
            partition,
            offset,
            record=records.__getitem__,
            timestamps=lambda: np.fromiter(map(_TIMESTAMP, records), dtype=np.int64, count=n),
            positions=_last_positions(distinct, topic, partition, offset),
            keys_headers=lambda: (list(map(_KEY, records)), list(map(_HEADERS, records))),
        )

    def to_mapping(self) -> dict[TopicPartition, list[RawRecord]]:
        """The kafka-python-shaped poll (``{TopicPartition: [RawRecord, ...]}``), per-partition order kept."""
        out: dict[TopicPartition, list[RawRecord]] = {}
        for i in range(len(self.values)):
            rec = self._record(i)
            out.setdefault(TopicPartition(rec.topic, rec.partition), []).append(rec)
        return out


def as_columns(poll: PollColumns | Mapping[TopicPartition, Sequence[Any]]) -> PollColumns:
    """``poll`` as :class:`PollColumns` (returned as is when it already is)."""
    return poll if isinstance(poll, PollColumns) else PollColumns.from_mapping(poll)


def _no_record(i: int) -> RawRecord:
    raise IndexError(f"record {i} of an empty poll")


def _last_positions(
    topics: Sequence[str], topic: np.ndarray, partition: np.ndarray, offset: np.ndarray
) -> dict[TopicPartition, int]:
    """One past the offset of the *last* row of each (topic, partition), in row order.

    ``topics`` are the distinct values of ``topic`` (known to the caller, so
    no string sort is needed here).
    """
    out: dict[TopicPartition, int] = {}
    for t in topics:
        if len(topics) == 1:
            parts, offs = partition, offset
        else:
            rows = np.flatnonzero(topic == t)
            parts, offs = partition[rows], offset[rows]
        # The last occurrence of each partition is its first one in reversed order.
        uniq, first_rev = np.unique(parts[::-1], return_index=True)
        for p, o in zip(uniq.tolist(), offs[::-1][first_rev].tolist()):
            out[TopicPartition(t, p)] = o + 1
    return out
