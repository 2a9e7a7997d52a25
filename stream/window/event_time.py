"""Event-time windows: tumbling windows on ``events.ts``, closed by a per-partition watermark,
with allowed lateness, late-event reporting and an optional idle timeout.

Examples
--------
>>> EventTimeWindow(length_ms=10_000, allowed_lateness_ms=2_000)
EventTimeWindow(length_ms=10000, allowed_lateness_ms=2000, idle_timeout_ms=None, clock=None)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping

import numpy as np

from stream.core.clock import Clock, SystemClock
from stream.core.errors import CheckpointError, ConfigError
from stream.core.records import Events, MicroBatch
from stream.window.base import BaseWindower, WindowOutput, check_clock, positive_int, read_resume

__all__ = ["EventTimeWindow", "EventTimeWindower"]

# "No watermark yet": far below any real timestamp, yet far enough above
# int64's minimum that subtracting a lateness or flooring cannot overflow.
_NO_TIME = int(np.iinfo(np.int64).min // 4)


@dataclass(frozen=True, slots=True)
class EventTimeWindow:
    """Tumbling windows on event time (``events.ts``), closed by per-partition watermarks.

    Window ``k`` is ``[k * length_ms, (k + 1) * length_ms)``. A window *closes*
    (is emitted, if it holds any event) once ``watermark >= its end``. Several
    windows can be open at once; closed ones are emitted in window order.
    ``closed_until`` -- the largest multiple of ``length_ms`` that is
    ``<= watermark`` -- is the end of the newest closed window.

    The watermark is tracked per source partition, as Flink does, because a
    Kafka poll hands over records *partition-major* (all of partition 0's new
    records, then all of partition 1's, ...): one global ``max(ts seen)``
    would let partition 0's newest events close windows that partitions 1 and
    2 still have unread events for. The rules:

    - each ``(topic, partition)`` keeps the largest ``ts`` it has sent;
    - the watermark is ``min(that max over the active partitions) -
      allowed_lateness_ms``, and never moves back;
    - it advances once per ``add`` call, *after* the call's events are
      accepted (a periodic watermark, like Flink's per-poll emission), and the
      windows it closed are emitted at the end of that call;
    - an event is **late** iff ``ts < closed_until`` as it stood when its
      ``add`` call began. Late events go into no batch; ``add`` returns them
      in :attr:`WindowOutput.late` and counts them in ``late_count``.

    So a stream whose partitions are each in event-time order loses nothing,
    however the partitions interleave inside a poll. The price: batches depend
    on how the stream is split into ``add`` calls (one call per poll in the
    engine), and a slow partition holds every window open.

    A partition seen for the first time joins the minimum from then on: it can
    hold the watermark back, not pull it back. Its events older than
    ``closed_until`` are late -- e.g. the history of a partition assigned
    after a rebalance, if the other partitions are far ahead.

    Idle timeout (``idle_timeout_ms``, processing time on ``clock``): a
    partition that sent nothing for that long leaves the minimum, so one quiet
    partition cannot stall every window forever (``add`` and ``tick`` apply
    it); it rejoins with its next event. Once *no* partition has sent anything
    for that long, ``tick()`` raises the watermark to the end of the newest
    open window, closing them all, so the tail of a quiet stream is learned.
    Without an idle timeout a partition that stops sending stalls the windows
    until :meth:`EventTimeWindower.flush`. Idle time does not run while the
    process is down: a restored windower keeps the idle time each partition
    had accrued at its snapshot, and no more.

    Parameters
    ----------
    length_ms : int
        Window length in ms (>= 1).
    allowed_lateness_ms : int
        How far behind the newest event a window stays open (>= 0).
    idle_timeout_ms : int or None
        Processing time without events after which a partition stops holding
        the watermark back, and after which, once every partition is that
        quiet, ``tick()`` closes all open windows (>= 1); ``None`` for never.
    clock : Clock or None
        Processing-time source for the idle timeout; ``None`` means
        :class:`~stream.core.clock.SystemClock` when one is needed.

    Raises
    ------
    ConfigError
        If a length or duration is out of range or ``clock`` has no ``now_ms()``.

    Examples
    --------
    >>> from stream.core.clock import ManualClock
    >>> window = EventTimeWindow(length_ms=10_000, allowed_lateness_ms=2_000,
    ...                          idle_timeout_ms=5_000, clock=ManualClock())
    >>> window.build().watermark is None
    True
    """

    kind: ClassVar[str] = "event"
    length_ms: int
    allowed_lateness_ms: int = 0
    idle_timeout_ms: int | None = None
    clock: Clock | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "length_ms", positive_int("EventTimeWindow", "length_ms", self.length_ms))
        object.__setattr__(
            self,
            "allowed_lateness_ms",
            positive_int("EventTimeWindow", "allowed_lateness_ms", self.allowed_lateness_ms, minimum=0),
        )
        if self.idle_timeout_ms is not None:
            object.__setattr__(
                self,
                "idle_timeout_ms",
                positive_int("EventTimeWindow", "idle_timeout_ms", self.idle_timeout_ms),
            )
        if self.clock is not None:
            check_clock("EventTimeWindow", self.clock)

    def build(self, resume_state: Mapping[str, Any] | None = None) -> EventTimeWindower:
        """The runtime windower, fresh or resumed from a :meth:`EventTimeWindower.snapshot`."""
        return EventTimeWindower(self, resume_state)


# More runs than this in one add() call and grouping by partition sorts first;
# a partition-major poll has one run per partition.
_MAX_RUNS = 64


def _run_starts(change: np.ndarray) -> np.ndarray:
    """Index of the first element of each run, given ``change[i]``: element ``i + 1`` starts one."""
    return np.flatnonzero(np.concatenate(([True], change)))


def _partition_maxima(events: Events) -> tuple[list[tuple[str, int]], np.ndarray]:
    """The ``(topic, partition)`` keys present in non-empty ``events``, and each one's largest ``ts``.

    Work per event is numpy; Python loops only over runs of one partition (at
    most ``_MAX_RUNS``; events interleaved more finely are sorted first).
    """
    ts, part, topic = events.ts, events.partition, events.topic
    n = ts.shape[0]
    change = part[1:] != part[:-1]
    if topic.dtype.kind == "U":
        # A poll is usually one topic. Comparing the raw fixed-width bytes is
        # one memcmp, several times faster than comparing strings elementwise.
        one_topic = topic.tobytes() == topic[:1].tobytes() * n
        if not one_topic:
            chars = np.ascontiguousarray(topic).view(np.uint32).reshape(n, -1)
            change |= np.any(chars[1:] != chars[:-1], axis=1)
    else:  # object arrays of str, built by hand
        topic_change = topic[1:] != topic[:-1]
        one_topic = not bool(np.any(topic_change))
        change |= topic_change
    starts = _run_starts(change)
    if starts.shape[0] <= _MAX_RUNS:
        keys = list(zip(topic[starts].tolist(), part[starts].tolist()))
        maxima = np.maximum.reduceat(ts, starts)
    else:
        if one_topic:
            code = part
        else:
            _, topic_idx = np.unique(topic, return_inverse=True)
            code = topic_idx.astype(np.int64) * (1 << 32) + part.astype(np.int64)
        order = np.argsort(code, kind="stable")
        code = code[order]
        starts = _run_starts(code[1:] != code[:-1])
        rows = order[starts]
        keys = list(zip(topic[rows].tolist(), part[rows].tolist()))
        maxima = np.maximum.reduceat(ts[order], starts)
    if len(set(keys)) < len(keys):  # a partition in several runs
        merged: dict[tuple[str, int], int] = {}
        for key, m in zip(keys, maxima.tolist()):
            merged[key] = max(m, merged.get(key, m))
        keys, maxima = list(merged), np.array(list(merged.values()), dtype=np.int64)
    return keys, maxima


class EventTimeWindower(BaseWindower):
    """Runtime of :class:`EventTimeWindow`; see that class for the semantics.

    Examples
    --------
    >>> import numpy as np
    >>> from stream.core.clock import ManualClock
    >>> from stream.core.records import Events
    >>> def events(ts, partition=0):
    ...     n = len(ts)
    ...     return Events(X=np.zeros((n, 1), np.float32), y=np.zeros(n, np.int64),
    ...                   ts=np.array(ts, np.int64), ids=np.array([str(t) for t in ts]),
    ...                   topic=np.array(["t"] * n), partition=np.full(n, partition, np.int32),
    ...                   offset=np.arange(n, dtype=np.int64))
    >>> clock = ManualClock()
    >>> windower = EventTimeWindow(100, allowed_lateness_ms=50, idle_timeout_ms=1_000,
    ...                            clock=clock).build()
    >>> windower.add(events([10, 120, 140])).batches     # watermark 90: nothing closed
    []
    >>> [(b.window_start, b.events.ids.tolist()) for b in windower.add(events([60, 150])).batches]
    [(0, ['10', '60'])]

    Partition 1 joins far behind: it holds the watermark (100) where it is, and
    its event older than ``closed_until`` is late.

    >>> out = windower.add(events([90, 110], partition=1))
    >>> out.late.ids.tolist(), out.batches, windower.watermark
    (['90'], [], 100)
    >>> windower.add(events([290])).batches              # partition 1 holds [100, 200) open
    []

    Once partition 1 has been quiet for the idle timeout it no longer holds the
    watermark back; once every partition is quiet, ``tick`` closes the tail.

    >>> clock.advance(1_000); [(b.window_start, len(b)) for b in windower.add(events([295])).batches]
    1000
    [(100, 4)]
    >>> clock.advance(1_000); [(b.window_start, len(b)) for b in windower.tick().batches]
    2000
    [(200, 2)]
    >>> windower.watermark, windower.closed_until
    (300, 300)
    """

    _kind = "event"

    def __init__(self, config: EventTimeWindow, resume_state: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        self.config = config
        self._length = config.length_ms
        self._lateness = config.allowed_lateness_ms
        self._idle = config.idle_timeout_ms
        self._clock: Clock = config.clock if config.clock is not None else SystemClock()
        # INVARIANT: the watermark never decreases; windows ending at or before
        # closed_until = floor(watermark / length) * length have been emitted,
        # so every pending event has ts >= closed_until.
        self._watermark: int | None = None
        # One row per (topic, partition) ever seen, in order of first appearance.
        # INVARIANT: _part_max[r] is the largest ts partition r has sent (late
        # events included); _part_seen[r] the processing time of its latest
        # event, kept only with an idle timeout.
        self._part_row: dict[tuple[str, int], int] = {}
        self._part_keys: list[tuple[str, int]] = []
        self._part_max = np.empty(0, np.int64)
        self._part_seen = np.empty(0, np.int64)
        # Window ids (start // length) spanned by the residue; None when empty.
        self._min_wid: int | None = None
        self._max_wid: int | None = None
        # Processing time of the last add with events, in any partition (idle timeout only).
        self._last_event_ms: int | None = None
        if resume_state is not None:
            self._restore(resume_state)

    # -- observers
    @property
    def watermark(self) -> int | None:
        """``min over active partitions of (max ts) - allowed_lateness_ms``, never lower
        than before; raised further by a whole-stream idle timeout or ``flush``."""
        return self._watermark

    @property
    def closed_until(self) -> int | None:
        """End of the newest closed window; an ``add`` call's events with ``ts`` below
        its value at the start of the call are late."""
        if self._watermark is None:
            return None
        return (self._watermark // self._length) * self._length

    @property
    def partition_max_ts(self) -> dict[tuple[str, int], int]:
        """The largest event time each ``(topic, partition)`` has sent."""
        return dict(zip(self._part_keys, self._part_max.tolist()))

    # -- API
    def add(self, events: Events) -> WindowOutput:
        n = len(events)
        if n == 0:
            return WindowOutput([])
        self._check_schema(events)
        late_events = None
        accepted: Events | None = events
        closed = self.closed_until
        if closed is not None:
            # INVARIANT: an event is late iff ts < closed_until as it stood when
            # this call began. The call's own events move the watermark only
            # afterwards, so partition 0's newest records in a poll cannot make
            # partition 1's older records of the same poll late.
            late = events.ts < closed
            n_late = int(np.count_nonzero(late))
            if n_late:
                late_events = events.take(late) if n_late < n else events
                accepted = events.take(~late) if n_late < n else None
                self._late_count += n_late
        now = self._clock.now_ms() if self._idle is not None else 0
        self._observe(events, now)
        if accepted is not None:
            wid = accepted.ts // self._length
            lo, hi = int(wid.min()), int(wid.max())
            self._min_wid = lo if self._min_wid is None else min(self._min_wid, lo)
            self._max_wid = hi if self._max_wid is None else max(self._max_wid, hi)
            self._residue.append(accepted)
        return WindowOutput(self._advance(now), late_events)

    def tick(self, now_ms: int | None = None) -> WindowOutput:
        """Apply the idle timeout; ``now_ms`` must come from the same time base as the clock.

        Partitions quiet for ``idle_timeout_ms`` stop holding the watermark
        back; once all are, every open window closes.
        """
        if self._idle is None or self._last_event_ms is None:
            return WindowOutput([])
        now = self._clock.now_ms() if now_ms is None else int(now_ms)
        if now - self._last_event_ms >= self._idle:
            # The whole stream is idle (every partition is): close the tail.
            return WindowOutput(self._force_close_all() if self._max_wid is not None else [])
        return WindowOutput(self._advance(now))

    def flush(self) -> list[MicroBatch]:
        """Emit every open window in order; the watermark moves past them, so later
        events for those windows are late."""
        if self._max_wid is None:
            return []
        return self._force_close_all()

    def snapshot(self) -> dict:
        state = self._base_snapshot()
        now = self._clock.now_ms() if self._idle is not None else None
        idle_elapsed = None
        if now is not None and self._last_event_ms is not None:
            idle_elapsed = max(0, now - self._last_event_ms)
        # Lists, not a dict keyed by (topic, partition): snapshots are plain data.
        partitions = [
            [topic, partition, max_ts, None if now is None else max(0, now - seen)]
            for (topic, partition), max_ts, seen in zip(
                self._part_keys, self._part_max.tolist(), self._part_seen.tolist()
            )
        ]
        state.update(
            length_ms=self._length,
            allowed_lateness_ms=self._lateness,
            watermark=self._watermark,
            closed_until=self.closed_until,
            idle_elapsed_ms=idle_elapsed,
            partitions=partitions,
        )
        return state

    # -- internals
    def _observe(self, events: Events, now: int) -> None:
        """Fold a non-empty chunk into the per-partition max ts (and last-seen times)."""
        keys, maxima = _partition_maxima(events)
        rows = []
        for key in keys:  # a handful of partitions per call, not one pass per event
            row = self._part_row.get(key)
            if row is None:
                row = self._part_row[key] = len(self._part_keys)
                self._part_keys.append(key)
            rows.append(row)
        grow = len(self._part_keys) - self._part_max.shape[0]
        if grow:
            self._part_max = np.concatenate([self._part_max, np.full(grow, _NO_TIME, np.int64)])
            self._part_seen = np.concatenate([self._part_seen, np.full(grow, now, np.int64)])
        idx = np.array(rows, dtype=np.intp)
        self._part_max[idx] = np.maximum(self._part_max[idx], maxima)
        if self._idle is not None:
            self._part_seen[idx] = now
            self._last_event_ms = now

    def _advance(self, now: int) -> list[MicroBatch]:
        """Raise the watermark to what the active partitions allow; emit the windows it closed."""
        part_max = self._part_max
        if self._idle is not None:
            # INVARIANT: a partition that sent nothing for idle_timeout_ms holds
            # nothing back, so one quiet partition cannot stall every window.
            part_max = part_max[now - self._part_seen < self._idle]
        if part_max.shape[0] == 0:
            return []
        # INVARIANT: the watermark is the slowest active partition's max ts
        # minus the lateness, and never moves back (a partition that appears
        # late or resumes after idling holds it, it does not lower it).
        mark = int(part_max.min()) - self._lateness
        if self._watermark is not None and mark <= self._watermark:
            return []  # nothing new closes: windows below closed_until are already out
        self._watermark = mark
        return self._close_below(mark // self._length)

    def _force_close_all(self) -> list[MicroBatch]:
        """Raise the watermark to the end of the newest open window and emit them all."""
        limit = self._max_wid + 1  # type: ignore[operator]  # callers check that a window is open
        self._watermark = max(_NO_TIME if self._watermark is None else self._watermark, limit * self._length)
        return self._close_below(limit)

    def _close_below(self, limit: int) -> list[MicroBatch]:
        """Emit, in window order, every pending window whose id is ``< limit``."""
        if self._min_wid is None or self._min_wid >= limit:
            return []
        length = self._length
        all_closed = self._max_wid < limit  # type: ignore[operator]
        events = self._residue.pop()
        wid = events.ts // length
        close = None if all_closed else wid < limit
        idx = None if all_closed else np.flatnonzero(close)
        sub = wid if idx is None else wid[idx]
        if sub.shape[0] > 1 and not bool(np.all(sub[1:] >= sub[:-1])):
            # INVARIANT: the stable sort keeps arrival order inside each window.
            order = np.argsort(sub, kind="stable")
            idx = order if idx is None else idx[order]
            sub = sub[order]
        closed = events if idx is None else events.take(idx)
        cuts = (np.flatnonzero(sub[1:] != sub[:-1]) + 1).tolist()
        bounds = [0, *cuts, int(sub.shape[0])]
        batches = []
        for a, b in zip(bounds[:-1], bounds[1:]):
            start = int(sub[a]) * length
            part = closed if (a == 0 and b == bounds[-1]) else closed.take(slice(a, b))
            batches.append(self._emit(part, start, start + length))
        if all_closed:
            self._min_wid = self._max_wid = None
        else:
            keep = ~close  # type: ignore[operator]
            self._residue.append(events.take(keep))
            self._min_wid = int(wid[keep].min())
        return batches

    def _restore(self, resume_state: Mapping[str, Any]) -> None:
        state = read_resume(
            resume_state, self._kind, ("length_ms", "allowed_lateness_ms", "watermark", "idle_elapsed_ms")
        )
        if int(state["length_ms"]) != self._length:
            raise ConfigError(
                f"the checkpoint's event-time windows are {state['length_ms']} ms long but length_ms="
                f"{self._length} is configured; windows on a different grid would overlap the emitted "
                "ones -- keep the old length, or start from a fresh checkpoint"
            )
        # A changed allowed lateness is fine: the watermark is kept and never moves back.
        self._watermark = None if state["watermark"] is None else int(state["watermark"])
        # A checkpoint from before per-partition watermarks has no "partitions":
        # its watermark carries over and partitions join the minimum as they send.
        try:
            rows = [
                (str(topic), int(partition), int(max_ts), None if elapsed is None else int(elapsed))
                for topic, partition, max_ts, elapsed in state.get("partitions") or []
            ]
        except (TypeError, ValueError):
            raise CheckpointError(
                "window resume state has malformed partitions (expected [topic, partition, max_ts, "
                "idle_elapsed_ms] rows); the checkpoint is damaged"
            ) from None
        # The idle timers resume where the snapshot left them: downtime is not
        # idleness (the backlog may hold events for open windows).
        now = self._clock.now_ms() if self._idle is not None else 0
        self._part_keys = [(topic, partition) for topic, partition, _, _ in rows]
        self._part_row = {key: row for row, key in enumerate(self._part_keys)}
        self._part_max = np.array([r[2] for r in rows], dtype=np.int64)
        self._part_seen = np.array([now - (r[3] or 0) for r in rows], dtype=np.int64)
        residue = self._base_restore(state)
        if residue is not None:
            wid = residue.ts // self._length
            self._min_wid, self._max_wid = int(wid.min()), int(wid.max())
        if self._idle is not None:
            elapsed = state["idle_elapsed_ms"]
            if elapsed is not None:
                self._last_event_ms = now - int(elapsed)
            elif residue is not None or rows:  # written without an idle timeout: start the timer now
                self._last_event_ms = now
