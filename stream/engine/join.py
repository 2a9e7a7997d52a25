"""Labels that come after their events: a features topic and a labels topic joined by id, inside the daemon.

``streamlearn run --topic predictions --labels-topic labels`` reads both
topics. A features record (a logged prediction, :mod:`stream.core.feedback`,
or any ``{"id", "x", "ts"}`` record) waits in the join state until a label
with its id arrives; a label that comes first waits for its features. A
matched pair becomes one training record (``{"id", "x", "y", "ts"}``, keyed
and positioned as the features record), which the engine decodes, windows and
learns like any labelled record.

Semantics, all per id:

- **Time-to-live, on record time.** Each side's *watermark* is the oldest,
  over that side's partitions read so far, of the newest record time (the
  broker timestamp, else the value's ``ts``) read on the partition -- the
  rule of Flink's per-partition watermarks, so a partition read ahead of the
  others expires nothing early. A waiting prediction expires once the labels'
  watermark is more than ``ttl`` past it, a waiting label once the features'
  watermark is: the outcome depends on the data, not on when or how often the
  daemon ran, so a restart or a slow daemon expires nothing that an
  uninterrupted one would join. Expiry walks each side in arrival order.
  Every assigned partition holds its side back from the start, read or not
  (a consumer drains one partition's fetch before the next one's). A
  partition that delivered nothing for :data:`PARTITION_IDLE_MS` of the
  engine's clock is *idle* and holds nothing back until it delivers again
  (Flink's ``withIdleness``); with every partition of a side idle, its
  watermark is the newest time read there. ``max_pending`` bounds the state
  whatever the watermarks do.
- **Expired, evicted and unreadable records are dead letters** with the reason
  (``join expired: ...``, ``join evicted: ...``, ``feedback record: ...``).
- **Bounded.** At most ``max_pending`` items wait; beyond it the oldest one is
  evicted and dead-lettered -- reported, never silent.
- **Idempotent.** The last ``remember_joined`` joined ids are remembered: a
  label (or a logged prediction) for an id already joined is ignored and
  counted, and so is a second one for an id still waiting: the first wins.

The state -- waiting records, watermarks, remembered ids, counters -- is a
checkpoint component saved with both topics' positions, so a crash at any
instant neither loses nor joins twice (:mod:`stream.engine.loop`).

Examples
--------
>>> from stream.core.records import RawRecord
>>> join = LabelJoin(JoinConfig(labels_topic="labels", ttl_ms=60_000))
>>> f = RawRecord("predictions", 0, 0, 1_000, b"a", b'{"id": "a", "x": [1.0], "version": 2, "prediction": 1}')
>>> l = RawRecord("labels", 0, 0, 2_000, b"a", b'{"id": "a", "y": 0}')
>>> out = join.feed([l])                                # the label first: it waits
>>> len(out.records), join.pending
(0, 1)
>>> out = join.feed([f])
>>> out.records[0].value, out.records[0].offset, join.pending
(b'{"id":"a","x":[1.0],"y":0,"ts":1000}', 0, 0)
>>> len(join.feed([l]).records), join.counters.repeated_labels   # the same label again: ignored
(0, 1)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import NamedTuple, Sequence

import numpy as np
import orjson

from stream.core.deadletter import DeadLetter
from stream.core.errors import ConfigError
from stream.core.feedback import (
    FeedbackFormatError,
    Label,
    LoggedPrediction,
    decode_label,
    decode_prediction,
    joined_record,
)
from stream.core.records import RawRecord
from stream.engine.dedup import RecentIds

#: A partition that delivered no record for this long (engine clock) no longer holds its side's watermark back.
PARTITION_IDLE_MS = 30_000

__all__ = ["JoinConfig", "JoinCounters", "JoinOutput", "Joined", "LabelJoin", "parse_ttl"]


def parse_ttl(text: str) -> int:
    """A time-to-live such as ``90s``, ``10m``, ``2h`` or ``7d``, in milliseconds.

    >>> parse_ttl("10m"), parse_ttl("1.5h")
    (600000, 5400000)
    >>> parse_ttl("ten minutes")
    Traceback (most recent call last):
    ...
    stream.core.errors.ConfigError: --join-ttl 'ten minutes': give a whole number of ms with a unit ms, s, m, h or d, e.g. 10m
    """
    from stream.window.spec import duration_ms

    try:
        return duration_ms(text)
    except ValueError:
        raise ConfigError(
            f"--join-ttl {text!r}: give a whole number of ms with a unit ms, s, m, h or d, e.g. 10m"
        ) from None


@dataclass(frozen=True)
class JoinConfig:
    """Where labels come from and how long, and how many, items may wait for their other half."""

    labels_topic: str
    ttl_ms: int = 3_600_000
    max_pending: int = 1_000_000
    remember_joined: int = 1_000_000

    def __post_init__(self) -> None:
        if not self.labels_topic:
            raise ConfigError("--labels-topic names the topic of labels, e.g. --labels-topic labels")
        if self.ttl_ms <= 0:
            raise ConfigError(f"the join time-to-live must be positive, got {self.ttl_ms} ms")
        if self.max_pending < 1:
            raise ConfigError(f"--join-max-pending must be at least 1, got {self.max_pending}")


@dataclass
class JoinCounters:
    """What the join did, since the checkpoint directory was new (checkpointed)."""

    joined: int = 0
    expired_features: int = 0
    expired_labels: int = 0
    evicted: int = 0
    repeated_labels: int = 0
    repeated_features: int = 0
    bad_records: int = 0


class Joined(NamedTuple):
    """A matched pair: the logged prediction (or features record) and its label."""

    prediction: LoggedPrediction
    label: Label


@dataclass(frozen=True)
class JoinOutput:
    """One poll's join: the training records made (in join order), the same pairs parsed, the dead letters."""

    records: list[RawRecord] = field(default_factory=list)
    pairs: list[Joined] = field(default_factory=list)
    letters: list[DeadLetter] = field(default_factory=list)
    #: The letters that are bad records (unreadable), not predictions or labels that found no other half:
    #: only these count in the engine's dead-letter rate.
    refused: list[DeadLetter] = field(default_factory=list)


class _Waiting(NamedTuple):
    record: RawRecord
    item: LoggedPrediction | Label
    time: int


def _record_time(record: RawRecord, ts: int | None) -> int:
    return record.timestamp if record.timestamp >= 0 else int(ts or 0)


def _duration(ms: int) -> str:
    for unit, size in (("h", 3_600_000), ("m", 60_000), ("s", 1_000)):
        if ms >= size and ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"


class LabelJoin:
    """The join state and its rules; see the module docstring."""

    def __init__(self, config: JoinConfig) -> None:
        self.config = config
        self.counters = JoinCounters()
        self._features: dict[str, _Waiting] = {}
        self._labels: dict[str, _Waiting] = {}
        self._joined = RecentIds(max(config.remember_joined, 10))
        # Per side, per (topic, partition): the newest record time read there.
        self._marks: dict[str, dict[tuple[str, int], int]] = {"features": {}, "labels": {}}
        # Per (topic, partition): when it last delivered, on the engine's clock (not checkpointed:
        # after a restart every partition holds back again until it is idle anew -- the safe side).
        self._delivered_at: dict[tuple[str, int], int] = {}
        self._now = 0
        self._bytes = 0

    # ------------------------------------------------------------ reading
    @property
    def pending(self) -> int:
        """Items waiting for their other half (predictions and labels)."""
        return len(self._features) + len(self._labels)

    @property
    def pending_bytes(self) -> int:
        """The waiting records' value and key bytes: the state's size, near enough."""
        return self._bytes

    def report(self) -> dict:
        """Counters and state size, as the live-metrics document's ``join`` section has them."""
        return {
            **asdict(self.counters),
            "pending_features": len(self._features),
            "pending_labels": len(self._labels),
            "pending_bytes": self._bytes,
        }

    # ------------------------------------------------------------ joining
    def assigned(self, partitions: Sequence[tuple[str, int]], now_ms: int = 0) -> None:
        """The partitions read from now on (``(topic, partition)``): each holds its side back until read or idle."""
        read = set(partitions)
        for marks in self._marks.values():
            # The join reads every partition of both topics at once: a restored mark of a partition not
            # read any more (a topic renamed, recreated smaller) would hold its side back for good.
            for gone in set(marks) - read:
                del marks[gone]
        for topic, partition in read:
            side = "labels" if topic == self.config.labels_topic else "features"
            self._marks[side].setdefault((topic, partition), -1)
            self._delivered_at[topic, partition] = now_ms

    def feed(self, records: Sequence[RawRecord], now_ms: int = 0) -> JoinOutput:
        """Take in one poll's records (both topics), in order, read at ``now_ms`` (engine clock); what joined,
        and the dead letters."""
        self._now = now_ms
        out = JoinOutput()
        joined_now: set[str] = set()
        features, labels = self._parse(records, out.refused)
        out.letters.extend(out.refused)
        self._take_features(features, joined_now, out)
        self._take_labels(labels, joined_now, out)
        if joined_now:
            self._joined.admit(np.array(sorted(joined_now)))
        self._expire(out.letters)
        self._evict(out.letters)
        return out

    def _parse(self, records: Sequence[RawRecord], letters: list[DeadLetter]) -> tuple[list, list]:
        features, labels = [], []
        for record in records:
            is_label = record.topic == self.config.labels_topic
            try:
                item = decode_label(record.value) if is_label else decode_prediction(record.value)
            except FeedbackFormatError as exc:
                self.counters.bad_records += 1
                letters.append(DeadLetter(record, f"feedback record: {exc}"))
                continue
            side = labels if is_label else features
            side.append(_Waiting(record, item, _record_time(record, item.ts)))
            marks = self._marks["labels" if is_label else "features"]
            where = (record.topic, record.partition)
            marks[where] = max(marks.get(where, -1), side[-1].time)
            self._delivered_at[where] = self._now
        return features, labels

    def watermark(self, side: str) -> int:
        """``side``'s watermark ("features" or "labels"): -1 before any record (see the module docstring)."""
        marks = self._marks[side]
        active = [
            mark
            for where, mark in marks.items()
            if self._now - self._delivered_at.get(where, self._now) <= PARTITION_IDLE_MS
        ]
        if active:
            return min(active)
        return max(marks.values(), default=-1)

    def _seen(self, ids: list[str], joined_now: set[str]) -> set[str]:
        """Which of ``ids`` were joined already (remembered, or earlier in this poll)."""
        if not ids:
            return set()
        hits = self._joined.contains(np.array(ids))
        return {i for i, hit in zip(ids, hits.tolist()) if hit} | (joined_now & set(ids))

    def _take_features(self, features: list[_Waiting], joined_now: set[str], out: JoinOutput) -> None:
        seen = self._seen([w.item.id for w in features], joined_now)
        for waiting in features:
            ident = waiting.item.id
            if ident in seen or ident in joined_now or ident in self._features:
                # At-least-once producers (predict after a crash, a client's retry) repeat a prediction:
                # the first one is the one joined, the others are counted.
                self.counters.repeated_features += 1
            elif ident in self._labels:
                self._emit(waiting, self._pop(self._labels, ident), joined_now, out)
            else:
                self._wait(self._features, waiting)

    def _take_labels(self, labels: list[_Waiting], joined_now: set[str], out: JoinOutput) -> None:
        seen = self._seen([w.item.id for w in labels], joined_now)
        for waiting in labels:
            ident = waiting.item.id
            if ident in seen or ident in joined_now or ident in self._labels:
                self.counters.repeated_labels += 1  # idempotent: the first label is the one learned
            elif ident in self._features:
                self._emit(self._pop(self._features, ident), waiting, joined_now, out)
            else:
                self._wait(self._labels, waiting)

    def _emit(self, features: _Waiting, label: _Waiting, joined_now: set[str], out: JoinOutput) -> None:
        prediction = features.item
        out.records.append(
            features.record._replace(value=joined_record(prediction, label.item, features.time))
        )
        out.pairs.append(Joined(prediction, label.item))
        joined_now.add(prediction.id)
        self.counters.joined += 1

    def _wait(self, side: dict[str, _Waiting], waiting: _Waiting) -> None:
        side[waiting.item.id] = waiting
        self._bytes += _size(waiting.record)

    def _pop(self, side: dict[str, _Waiting], ident: str) -> _Waiting:
        waiting = side.pop(ident)
        self._bytes -= _size(waiting.record)
        return waiting

    # ------------------------------------------------------------ bounding
    def _expire(self, letters: list[DeadLetter]) -> None:
        ttl = self.config.ttl_ms
        for side, other, what in (
            (self._features, "labels", "no label for id {!r} within {} of its prediction"),
            (self._labels, "features", "no prediction for id {!r} within {} of its label"),
        ):
            horizon = self.watermark(other) - ttl
            while side:
                ident, waiting = next(iter(side.items()))
                if waiting.time >= horizon:
                    break
                self._pop(side, ident)
                letters.append(
                    DeadLetter(waiting.record, "join expired: " + what.format(ident, _duration(ttl)))
                )
                if side is self._features:
                    self.counters.expired_features += 1
                else:
                    self.counters.expired_labels += 1

    def _evict(self, letters: list[DeadLetter]) -> None:
        cap = self.config.max_pending
        while self.pending > cap:
            oldest = [side for side in (self._features, self._labels) if side]
            side = min(oldest, key=lambda s: next(iter(s.values())).time)
            ident = next(iter(side))
            waiting = self._pop(side, ident)
            self.counters.evicted += 1
            kind = "prediction" if side is self._features else "label"
            letters.append(
                DeadLetter(
                    waiting.record,
                    f"join evicted: the join state is full ({cap} waiting, --join-max-pending); "
                    f"the {kind} for id {ident!r} was the oldest",
                )
            )

    # ------------------------------------------------------------ checkpoint
    def snapshot(self) -> dict:
        """Plain data for the checkpoint: waiting records packed into arrays, watermarks, ids, counters."""
        return {
            "features": _pack_waiting(self._features.values()),
            "labels": _pack_waiting(self._labels.values()),
            "marks": [[side, t, p, m] for side, marks in self._marks.items() for (t, p), m in marks.items()],
            "joined": self._joined.snapshot(),
            "counters": asdict(self.counters),
        }

    @classmethod
    def from_snapshot(cls, snap: dict | None, config: JoinConfig) -> LabelJoin:
        """The join as checkpointed (``None``: a new one); waiting records are parsed again."""
        join = cls(config)
        if not snap:
            return join
        join.counters = JoinCounters(**snap["counters"])
        for side, topic, partition, mark in snap["marks"]:
            join._marks[side][topic, int(partition)] = int(mark)
        join._joined = RecentIds.from_snapshot(snap["joined"], max(config.remember_joined, 10))
        for record, time in _unpack_waiting(snap["features"]):
            join._wait(join._features, _Waiting(record, decode_prediction(record.value), time))
        for record, time in _unpack_waiting(snap["labels"]):
            join._wait(join._labels, _Waiting(record, decode_label(record.value), time))
        return join


def _size(record: RawRecord) -> int:
    return len(record.value or b"") + len(record.key or b"")


def _pack_bytes(values: list[bytes | None]) -> dict:
    lengths = np.array([-1 if v is None else len(v) for v in values], dtype=np.int64)
    blob = b"".join(v for v in values if v)
    return {"blob": np.frombuffer(blob, dtype=np.uint8).copy(), "lengths": lengths}


def _unpack_bytes(packed: dict) -> list[bytes | None]:
    blob, pos, out = packed["blob"].tobytes(), 0, []
    for n in packed["lengths"].tolist():
        if n < 0:
            out.append(None)
        else:
            out.append(blob[pos : pos + n])
            pos += n
    return out


def _headers_bytes(headers) -> bytes | None:
    if not headers:
        return None
    return orjson.dumps([[name, None if value is None else bytes(value).hex()] for name, value in headers])


def _pack_waiting(items) -> dict:
    items = list(items)
    topics = sorted({w.record.topic for w in items})
    index = {t: i for i, t in enumerate(topics)}
    return {
        "topics": topics,
        "topic": np.array([index[w.record.topic] for w in items], dtype=np.int32),
        "partition": np.array([w.record.partition for w in items], dtype=np.int32),
        "offset": np.array([w.record.offset for w in items], dtype=np.int64),
        "timestamp": np.array([w.record.timestamp for w in items], dtype=np.int64),
        "time": np.array([w.time for w in items], dtype=np.int64),
        "key": _pack_bytes([w.record.key for w in items]),
        "value": _pack_bytes([w.record.value for w in items]),
        "headers": _pack_bytes([_headers_bytes(w.record.headers) for w in items]),
    }


def _unpack_waiting(packed: dict) -> list[tuple[RawRecord, int]]:
    topics = list(packed["topics"])
    keys, values = _unpack_bytes(packed["key"]), _unpack_bytes(packed["value"])
    headers = [
        () if h is None else tuple((n, None if v is None else bytes.fromhex(v)) for n, v in orjson.loads(h))
        for h in _unpack_bytes(packed["headers"])
    ]
    columns = zip(
        packed["topic"].tolist(),
        packed["partition"].tolist(),
        packed["offset"].tolist(),
        packed["timestamp"].tolist(),
        packed["time"].tolist(),
    )
    return [
        (RawRecord(topics[t], p, o, ts, keys[i], values[i], headers[i]), time)
        for i, (t, p, o, ts, time) in enumerate(columns)
    ]
