"""Test doubles shipped with the package, for deterministic crash and replay tests.

:class:`ListSource` serves pre-built records over any number of partitions,
resumes from the positions the engine hands it, and can *abort*: raise
:class:`Abort` at a chosen poll, which is how tests crash an engine at a
precise instant without killing a process. Pair it with
:class:`stream.core.clock.ManualClock` for time windows. :class:`StallingSource`
(records wait, none arrive: a known lag > 0, or an unknown one) and
:class:`OutageSource` (the broker goes away for some polls) drive the idle
rule and the outage handling of :meth:`stream.engine.loop.Engine.run`.

Examples
--------
>>> recs = make_records(6, n_features=2, partitions=2)
>>> src = ListSource(recs, batch_size=2, abort_at_poll=1)
>>> src.open(NoPositions())
>>> sum(len(v) for v in src.poll(0, 10).values())
2
>>> src.poll(0, 10)  # doctest: +IGNORE_EXCEPTION_DETAIL
Traceback (most recent call last):
...
stream.testing.doubles.Abort: aborted at poll 1 (test sentinel)
"""

from __future__ import annotations

import random
import time
from typing import Mapping, Sequence

import numpy as np
import orjson

from stream.core.errors import BrokerOutageError
from stream.core.records import Events, MicroBatch, RawRecord, TopicPartition
from stream.sources.base import NoPositions, Outage, PollBatch, RebalanceHandler  # noqa: F401 -- NoPositions: the docstring examples


class Abort(Exception):
    """Raised by :class:`ListSource` at its abort sentinel: a simulated crash."""


def make_records(
    n: int,
    *,
    n_features: int = 4,
    partitions: int = 1,
    topic: str = "test",
    seed: int = 0,
    bad_every: int | None = None,
) -> list[RawRecord]:
    """``n`` JSON records with ids ``e<i>``, a linearly separable label, spread round-robin.

    With ``bad_every=k`` every k-th record is undecodable JSON (for dead-letter tests).
    """
    rng = random.Random(seed)
    next_offset = [0] * partitions
    out = []
    for i in range(n):
        p = i % partitions
        x = [rng.uniform(-1, 1) for _ in range(n_features)]
        if bad_every and i % bad_every == bad_every - 1:
            value = b'{"id": "e%d", "x": [' % i
        else:
            value = orjson.dumps({"id": f"e{i}", "ts": 1_000 * i, "x": x, "y": int(sum(x) > 0)})
        out.append(RawRecord(topic, p, next_offset[p], 1_000 * i, None, value))
        next_offset[p] += 1
    return out


def make_batch(
    n: int,
    *,
    n_features: int = 4,
    start_offset: int = 0,
    seed: int = 0,
    topic: str = "test",
    partition: int = 0,
    flip_labels: bool = False,
) -> MicroBatch:
    """A decoded micro-batch of ``n`` events with the same linearly separable rule as :func:`make_records`.

    ``flip_labels`` inverts every label (a corrupted batch for gate and drift tests).

    >>> b = make_batch(3, n_features=2, start_offset=10)
    >>> b.X.shape, b.events.offset.tolist()
    ((3, 2), [10, 11, 12])
    """
    rng = np.random.default_rng(seed + start_offset)
    X = rng.uniform(-1, 1, size=(n, n_features)).astype(np.float32)
    y = (X.sum(axis=1) > 0).astype(np.int64)
    if flip_labels:
        y = 1 - y
    offsets = np.arange(start_offset, start_offset + n, dtype=np.int64)
    events = Events(
        X=X,
        y=y,
        ts=offsets * 1_000,
        ids=np.array([f"e{o}" for o in offsets]),
        topic=np.array([topic] * n),
        partition=np.full(n, partition, dtype=np.int32),
        offset=offsets,
    )
    return MicroBatch(events=events, seq=0)


class ListSource:
    """An in-memory :class:`~stream.sources.base.Source` over fixed records.

    ``batch_size`` records per poll (interleaving partitions); ``abort_at_poll``
    raises :class:`Abort` on that poll number (0-based) of this instance.
    """

    def __init__(
        self, records: Sequence[RawRecord], *, batch_size: int = 100, abort_at_poll: int | None = None
    ) -> None:
        self.records = list(records)
        self.batch_size = batch_size
        self.abort_at_poll = abort_at_poll
        self.committed: dict[TopicPartition, int] = {}
        self._polls = 0
        self._queue: list[RawRecord] = []
        self.closed = False

    def open(self, handler: RebalanceHandler) -> None:
        parts = sorted({TopicPartition(r.topic, r.partition) for r in self.records})
        positions = handler.on_assigned(parts)
        self._queue = [
            r for r in self.records if r.offset >= positions.get(TopicPartition(r.topic, r.partition), 0)
        ]
        self._queue.reverse()  # pop() from the end is O(1)

    def poll(self, timeout_ms: int, max_records: int) -> PollBatch:
        if self.abort_at_poll is not None and self._polls == self.abort_at_poll:
            raise Abort(f"aborted at poll {self._polls} (test sentinel)")
        self._polls += 1
        batch: dict[TopicPartition, list[RawRecord]] = {}
        for _ in range(min(self.batch_size, max_records, len(self._queue))):
            rec = self._queue.pop()
            batch.setdefault(TopicPartition(rec.topic, rec.partition), []).append(rec)
        return batch

    def commit(self, positions: Mapping[TopicPartition, int]) -> None:
        self.committed.update(positions)

    def lag(self) -> int | None:
        return len(self._queue)

    def close(self) -> None:
        self.closed = True


class StallingSource(ListSource):
    """A :class:`ListSource` whose first ``stall_polls`` polls bring nothing although records wait.

    A stalled fetch: with ``lag_known`` the lag stays the number of waiting
    records (``> 0``); without, it is unknown (``None``), as before a group
    assigns partitions. An empty poll waits its timeout, as a client's does.

    >>> src = StallingSource(make_records(5, n_features=2), stall_polls=1, lag_known=False)
    >>> src.open(NoPositions())
    >>> src.poll(0, 10), src.lag()
    ({}, None)
    >>> sum(map(len, src.poll(0, 10).values())), src.lag()
    (5, 0)
    """

    def __init__(
        self, records: Sequence[RawRecord], *, stall_polls: int, lag_known: bool = True, batch_size: int = 100
    ) -> None:
        super().__init__(records, batch_size=batch_size)
        self.stall_polls = stall_polls
        self.lag_known = lag_known
        self.polls = 0

    def poll(self, timeout_ms: int, max_records: int) -> PollBatch:
        self.polls += 1
        if self.polls <= self.stall_polls:
            time.sleep(timeout_ms / 1000)
            return {}
        return super().poll(timeout_ms, max_records)

    def lag(self) -> int | None:
        if self.polls <= self.stall_polls and not self.lag_known:
            return None
        return super().lag()


class OutageSource(ListSource):
    """A :class:`ListSource` whose broker is away for the polls numbered ``down`` (1-based).

    During those polls nothing arrives, :meth:`outage` reports the outage
    and the lag is unknown -- kafka-python's way of living through one; with
    ``raises=True`` each of them raises :class:`~stream.core.errors.BrokerOutageError`
    instead (a source that cannot poll at all). An empty poll waits its
    timeout, as a client's does.

    >>> src = OutageSource(make_records(4, n_features=2), down=range(1, 3), batch_size=2)
    >>> src.open(NoPositions())
    >>> src.poll(0, 10), src.outage().cause, src.lag()
    ({}, 'test outage: connection refused', None)
    >>> _ = src.poll(0, 10); sum(map(len, src.poll(0, 10).values())), src.outage()
    (2, None)
    """

    def __init__(
        self,
        records: Sequence[RawRecord],
        *,
        down: range,
        raises: bool = False,
        cause: str = "test outage: connection refused",
        batch_size: int = 100,
    ) -> None:
        super().__init__(records, batch_size=batch_size)
        self.down = down
        self.raises = raises
        self.cause = cause
        self.polls = 0
        self._since: float | None = None

    def poll(self, timeout_ms: int, max_records: int) -> PollBatch:
        self.polls += 1
        if self.polls in self.down:
            if self._since is None:
                self._since = time.monotonic()
            if self.raises:
                raise BrokerOutageError(self.cause)
            time.sleep(timeout_ms / 1000)
            return {}
        self._since = None
        return super().poll(timeout_ms, max_records)

    def outage(self) -> Outage | None:
        if self._since is None or self.raises:
            return None
        return Outage(self._since, self.cause)

    def lag(self) -> int | None:
        return None if self._since is not None else super().lag()
