"""Plain data that flows through the pipeline: raw records, decoded events, micro-batches.

``TopicPartition`` equals (and hashes like) ``kafka.TopicPartition``;
``RawRecord`` has the attribute names of kafka-python's ``ConsumerRecord``
(not its tuple layout), so code reads records by attribute only.

Decoded data is columnar (:class:`Events`): one numpy array per field, so
windows and learners work on whole arrays rather than per-record objects.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np


class TopicPartition(NamedTuple):
    """A topic and partition; equal to (and hashes like) ``kafka.TopicPartition``."""

    topic: str
    partition: int


class RawRecord(NamedTuple):
    """One record as read from a source, before decoding.

    ``timestamp`` is the broker/producer timestamp in milliseconds since the
    epoch (-1 when unknown); the codec may prefer an event-time field inside
    ``value``. ``headers`` are the record's Kafka headers as ``(name, bytes)``
    pairs (kafka-python's and confluent-kafka's shape); dead letters keep them.
    """

    topic: str
    partition: int
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes | None], ...] | list = ()


_EMPTY_STR = np.array([], dtype=str)


@dataclass(frozen=True, slots=True, eq=False)
class Events:
    """Decoded events in columns; row ``i`` of every array is one event.

    Attributes
    ----------
    X : (n, d) float32 features.
    y : (n,) labels: int64 class indices, or float32 targets for regression.
    ts : (n,) int64 event time in ms since the epoch.
    ids : (n,) str event ids (the record's own id, or ``topic:partition:offset``).
    topic, partition, offset : (n,) where each event came from.

    Examples
    --------
    >>> e = Events.empty(n_features=3)
    >>> len(e), e.X.shape
    (0, (0, 3))
    """

    X: np.ndarray
    y: np.ndarray
    ts: np.ndarray
    ids: np.ndarray
    topic: np.ndarray
    partition: np.ndarray
    offset: np.ndarray

    def __len__(self) -> int:
        return int(self.ts.shape[0])

    @property
    def n_features(self) -> int:
        return int(self.X.shape[1])

    @classmethod
    def empty(cls, n_features: int, y_dtype: np.dtype | type = np.int64) -> Events:
        return cls(
            X=np.empty((0, n_features), dtype=np.float32),
            y=np.empty((0,), dtype=y_dtype),
            ts=np.empty((0,), dtype=np.int64),
            ids=_EMPTY_STR,
            topic=_EMPTY_STR,
            partition=np.empty((0,), dtype=np.int32),
            offset=np.empty((0,), dtype=np.int64),
        )

    @classmethod
    def concat(cls, parts: list[Events]) -> Events:
        """Concatenate in order; at least one part is required."""
        if len(parts) == 1:
            return parts[0]
        return cls(
            X=np.concatenate([p.X for p in parts]),
            y=np.concatenate([p.y for p in parts]),
            ts=np.concatenate([p.ts for p in parts]),
            ids=np.concatenate([p.ids for p in parts]),
            topic=np.concatenate([p.topic for p in parts]),
            partition=np.concatenate([p.partition for p in parts]),
            offset=np.concatenate([p.offset for p in parts]),
        )

    def take(self, index: np.ndarray | slice) -> Events:
        """Rows selected by a slice, boolean mask or integer index (order kept)."""
        return Events(
            X=self.X[index],
            y=self.y[index],
            ts=self.ts[index],
            ids=self.ids[index],
            topic=self.topic[index],
            partition=self.partition[index],
            offset=self.offset[index],
        )

    def offset_ranges(self) -> dict[TopicPartition, tuple[int, int]]:
        """Lowest and highest offset per partition present in these events."""
        ranges: dict[TopicPartition, tuple[int, int]] = {}
        if len(self) == 0:
            return ranges
        for topic in np.unique(self.topic):
            in_topic = self.topic == topic
            for partition in np.unique(self.partition[in_topic]):
                offs = self.offset[in_topic & (self.partition == partition)]
                ranges[TopicPartition(str(topic), int(partition))] = (int(offs.min()), int(offs.max()))
        return ranges

    def to_plain(self) -> dict:
        """JSON-able dict of the non-tensor columns plus arrays (for checkpoints)."""
        return {
            "X": self.X,
            "y": self.y,
            "ts": self.ts,
            "partition": self.partition,
            "offset": self.offset,
            "ids": self.ids.tolist(),
            "topic": self.topic.tolist(),
        }

    @classmethod
    def from_plain(cls, d: dict) -> Events:
        """Inverse of :meth:`to_plain`."""
        return cls(
            X=np.asarray(d["X"], dtype=np.float32),
            y=np.asarray(d["y"]),
            ts=np.asarray(d["ts"], dtype=np.int64),
            ids=np.asarray(d["ids"], dtype=str) if len(d["ids"]) else _EMPTY_STR,
            topic=np.asarray(d["topic"], dtype=str) if len(d["topic"]) else _EMPTY_STR,
            partition=np.asarray(d["partition"], dtype=np.int32),
            offset=np.asarray(d["offset"], dtype=np.int64),
        )


@dataclass(frozen=True, slots=True, eq=False)
class MicroBatch:
    """One window's worth of events, handed to the learner as a unit.

    ``window_start``/``window_end`` are the window bounds in ms for time
    windows (``None`` for count windows); ``seq`` numbers batches from 0 within
    one windower's life (it survives restarts through the window snapshot).
    """

    events: Events
    seq: int
    window_start: int | None = None
    window_end: int | None = None

    def __len__(self) -> int:
        return len(self.events)

    @property
    def X(self) -> np.ndarray:
        return self.events.X

    @property
    def y(self) -> np.ndarray:
        return self.events.y

    @property
    def ts(self) -> np.ndarray:
        return self.events.ts

    def offsets(self) -> dict[TopicPartition, tuple[int, int]]:
        """Lowest and highest offset per partition that this batch covers."""
        return self.events.offset_ranges()


def merge_ranges(ranges: dict[str, list[int]], events: Events) -> None:
    """Widen ``ranges`` (``"topic:partition" -> [lo, hi]``, inclusive) to cover ``events``' offsets.

    The gate, the drift policy and the reconciler all record which offsets a
    model version learned from in this plain, JSON-ready shape.

    >>> events = Events(X=np.zeros((2, 1), np.float32), y=np.zeros(2, np.int64),
    ...                 ts=np.zeros(2, np.int64), ids=np.array(["a", "b"]),
    ...                 topic=np.array(["t", "u"]), partition=np.zeros(2, np.int32),
    ...                 offset=np.array([12, 3], np.int64))
    >>> ranges = {"t:0": [5, 9]}
    >>> merge_ranges(ranges, events); ranges
    {'t:0': [5, 12], 'u:0': [3, 3]}
    """
    for tp, (lo, hi) in events.offset_ranges().items():
        key = f"{tp.topic}:{tp.partition}"
        known = ranges.get(key)
        ranges[key] = [lo, hi] if known is None else [min(known[0], lo), max(known[1], hi)]
