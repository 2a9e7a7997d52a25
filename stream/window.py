"""Tumbling windows that cut a stream of decoded :class:`~stream.records.Events` into
:class:`~stream.records.MicroBatch` es.

Three kinds, each a frozen config whose ``build(resume_state=None)`` returns the
runtime windower (bytewax's ``Windower.build`` shape):

- :class:`CountWindow` -- a batch every ``size`` events, in arrival order;
- :class:`ProcessingTimeWindow` -- events that arrive while the clock is in the
  same ``[k * length_ms, (k + 1) * length_ms)`` go together;
- :class:`EventTimeWindow` -- windows ``[k * length_ms, (k + 1) * length_ms)`` on
  ``events.ts``, closed by a watermark, with allowed lateness, late-event
  reporting and an optional idle timeout.

Every windower implements :class:`Windower`: ``add`` / ``tick`` return a
:class:`WindowOutput` (the batches that closed, and for event time the late
events, which the engine routes: count, drop or dead-letter); ``flush`` emits
everything pending at the end of a bounded replay or on shutdown (never on a
normal checkpoint); ``pending`` is the residue that a checkpoint must hold;
``snapshot`` returns plain data (numpy arrays, ints, strings, lists, ``None``)
that ``build(resume_state=...)`` turns back into an equivalent windower.

All work is on whole numpy arrays; Python loops run per batch or per chunk,
never per event. Emitted batches may share memory with the ``Events`` that were
added (slices, not copies): treat both as read-only.

Examples
--------
>>> import numpy as np
>>> from stream.records import Events
>>> def events(ts):
...     n = len(ts)
...     return Events(X=np.zeros((n, 1), np.float32), y=np.zeros(n, np.int64),
...                   ts=np.array(ts, np.int64), ids=np.array([str(t) for t in ts]),
...                   topic=np.array(["t"] * n), partition=np.zeros(n, np.int32),
...                   offset=np.arange(n, dtype=np.int64))
>>> windower = parse_window("event:10ms").build()
>>> out = windower.add(events([1, 5, 12, 3, 15]))   # 12 closes [0, 10); then 3 is late
>>> [(b.window_start, b.window_end, b.events.ids.tolist()) for b in out.batches]
[(0, 10, ['1', '5'])]
>>> out.late.ids.tolist(), windower.late_count
(['3'], 1)
>>> [(b.window_start, b.events.ids.tolist()) for b in windower.flush()]
[(10, ['12', '15'])]
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, ClassVar, Mapping, Protocol, runtime_checkable

import numpy as np

from stream.clock import Clock, SystemClock
from stream.errors import CheckpointError, ConfigError, SchemaMismatchError
from stream.records import Events, MicroBatch

__all__ = [
    "WindowOutput",
    "Windower",
    "WindowConfig",
    "CountWindow",
    "ProcessingTimeWindow",
    "EventTimeWindow",
    "CountWindower",
    "ProcessingTimeWindower",
    "EventTimeWindower",
    "parse_window",
]

# Version of the snapshot layout; bump when a key changes meaning.
_SNAPSHOT_FORMAT = 1

# "No watermark yet": far below any real timestamp, yet far enough above
# int64's minimum that subtracting a lateness or flooring cannot overflow.
_NO_TIME = int(np.iinfo(np.int64).min // 4)


# ----------------------------------------------------------------- contract
@dataclass(frozen=True, slots=True)
class WindowOutput:
    """What one ``add`` or ``tick`` produced.

    Attributes
    ----------
    batches : list of MicroBatch
        Windows that closed, in window (and ``seq``) order; often empty.
    late : Events or None
        Events that arrived after their window closed (event-time windows
        only), in arrival order; they are in no batch. The engine decides their
        fate (count and drop, or dead-letter).
    """

    batches: list[MicroBatch]
    late: Events | None = None


@runtime_checkable
class Windower(Protocol):
    """The runtime side of a window: events in, micro-batches out."""

    @property
    def late_count(self) -> int:
        """Events reported late over the windower's life (survives restore)."""
        ...

    @property
    def batches_emitted(self) -> int:
        """Batches emitted over the windower's life; also the next batch's ``seq``."""
        ...

    def add(self, events: Events) -> WindowOutput:
        """Accept events (in arrival order) and return the windows they closed."""
        ...

    def tick(self, now_ms: int | None = None) -> WindowOutput:
        """Close windows due at processing time ``now_ms`` (default: the clock's now)."""
        ...

    def flush(self) -> list[MicroBatch]:
        """Emit everything pending (end of a bounded replay, shutdown); nothing stays pending."""
        ...

    def pending(self) -> Events | None:
        """Events accepted but not yet emitted, in arrival order; ``None`` if none."""
        ...

    def snapshot(self) -> dict:
        """Plain data that ``build(resume_state=...)`` restores to an equivalent windower."""
        ...


# ------------------------------------------------------------------ configs
def _positive_int(owner: str, name: str, value: Any, *, minimum: int = 1) -> int:
    # bool is an int subclass; `True` as a window size is a bug, not a 1.
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ConfigError(f"{owner}.{name} must be an integer >= {minimum}, got {value!r}")
    if value < minimum:
        raise ConfigError(f"{owner}.{name} must be >= {minimum}, got {value}")
    return int(value)


def _check_clock(owner: str, clock: Any) -> None:
    if not callable(getattr(clock, "now_ms", None)):
        raise ConfigError(
            f"{owner}.clock must have a now_ms() method (e.g. stream.clock.SystemClock()), got {clock!r}"
        )


@dataclass(frozen=True, slots=True)
class CountWindow:
    """Emit a batch every ``size`` events, in arrival order.

    Parameters
    ----------
    size : int
        Events per batch (>= 1). The last, partial batch stays pending until
        more events come or :meth:`CountWindower.flush` is called.

    Raises
    ------
    ConfigError
        If ``size`` is not a positive integer.

    Examples
    --------
    >>> from stream.records import Events
    >>> windower = CountWindow(size=2).build()
    >>> out = windower.add(Events.empty(n_features=1))
    >>> out.batches, windower.pending()
    ([], None)
    """

    kind: ClassVar[str] = "count"
    size: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "size", _positive_int("CountWindow", "size", self.size))

    def build(self, resume_state: Mapping[str, Any] | None = None) -> CountWindower:
        """The runtime windower, fresh or resumed from a :meth:`CountWindower.snapshot`."""
        return CountWindower(self, resume_state)


@dataclass(frozen=True, slots=True)
class ProcessingTimeWindow:
    """Group events by the processing time at which they are added.

    Windows are ``[k * length_ms, (k + 1) * length_ms)`` of ``clock`` time. The
    open window closes on the first ``add`` or ``tick`` at or after its end;
    windows in which nothing arrived emit nothing (and use no ``seq``).

    Parameters
    ----------
    length_ms : int
        Window length in ms (>= 1).
    clock : Clock
        Processing-time source; :class:`~stream.clock.ManualClock` in tests.

    Raises
    ------
    ConfigError
        If ``length_ms`` is not a positive integer or ``clock`` has no ``now_ms()``.

    Examples
    --------
    >>> from stream.clock import ManualClock
    >>> clock = ManualClock(start_ms=1_200)
    >>> windower = ProcessingTimeWindow(length_ms=1_000, clock=clock).build()
    >>> windower.add(Events.empty(n_features=1)).batches   # nothing to close yet
    []
    >>> clock.advance(5_000); windower.tick().batches      # empty windows emit nothing
    6200
    []
    """

    kind: ClassVar[str] = "processing"
    length_ms: int
    clock: Clock = field(default_factory=SystemClock, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "length_ms", _positive_int("ProcessingTimeWindow", "length_ms", self.length_ms))
        _check_clock("ProcessingTimeWindow", self.clock)

    def build(self, resume_state: Mapping[str, Any] | None = None) -> ProcessingTimeWindower:
        """The runtime windower, fresh or resumed from a :meth:`ProcessingTimeWindower.snapshot`."""
        return ProcessingTimeWindower(self, resume_state)


@dataclass(frozen=True, slots=True)
class EventTimeWindow:
    """Tumbling windows on event time (``events.ts``), closed by a watermark.

    Window ``k`` is ``[k * length_ms, (k + 1) * length_ms)``. The watermark is
    ``max(ts seen) - allowed_lateness_ms``, updated event by event in arrival
    order and never moving back; a window *closes* (is emitted, if it holds any
    event) once ``watermark >= its end``. Several windows can be open at once;
    closed ones are emitted in window order. ``closed_until`` -- the largest
    multiple of ``length_ms`` that is ``<= watermark`` -- is the end of the
    newest closed window.

    An event is **late** iff its window had already closed when it arrived,
    i.e. ``ts < closed_until`` as of the events before it (in the same ``add``
    call too). Late events go into no batch; ``add`` returns them in
    :attr:`WindowOutput.late` and counts them in ``late_count``. Because this
    is decided per event in arrival order, the batches do not depend on how the
    stream is split into ``add`` calls.

    Idle timeout: if ``idle_timeout_ms`` of processing time passes with no
    event added, ``tick()`` raises the watermark to the end of the newest open
    window, closing them all, so the tail of a quiet stream is learned. The
    idle timer does not run while the process is down: a restored windower
    keeps the idle time accrued before its snapshot and no more.

    Parameters
    ----------
    length_ms : int
        Window length in ms (>= 1).
    allowed_lateness_ms : int
        How far behind the newest event a window stays open (>= 0).
    idle_timeout_ms : int or None
        Processing time without events after which ``tick()`` closes all open
        windows (>= 1), or ``None`` for never.
    clock : Clock or None
        Processing-time source for the idle timeout; ``None`` means
        :class:`~stream.clock.SystemClock` when one is needed.

    Raises
    ------
    ConfigError
        If a length or duration is out of range or ``clock`` has no ``now_ms()``.

    Examples
    --------
    >>> from stream.clock import ManualClock
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
        object.__setattr__(self, "length_ms", _positive_int("EventTimeWindow", "length_ms", self.length_ms))
        object.__setattr__(
            self,
            "allowed_lateness_ms",
            _positive_int("EventTimeWindow", "allowed_lateness_ms", self.allowed_lateness_ms, minimum=0),
        )
        if self.idle_timeout_ms is not None:
            object.__setattr__(
                self, "idle_timeout_ms", _positive_int("EventTimeWindow", "idle_timeout_ms", self.idle_timeout_ms)
            )
        if self.clock is not None:
            _check_clock("EventTimeWindow", self.clock)

    def build(self, resume_state: Mapping[str, Any] | None = None) -> EventTimeWindower:
        """The runtime windower, fresh or resumed from a :meth:`EventTimeWindower.snapshot`."""
        return EventTimeWindower(self, resume_state)


WindowConfig = CountWindow | ProcessingTimeWindow | EventTimeWindow
"""Any window configuration; ``config.build(resume_state)`` gives its :class:`Windower`."""


# ------------------------------------------------------------------ runtime
class _Residue:
    """Accepted, not yet emitted events as a list of chunks.

    Appending is O(1); the chunks are concatenated once, when the residue is
    read. Re-concatenating a growing residue on every ``add`` would be
    quadratic in the window size.
    """

    __slots__ = ("_chunks", "n")

    def __init__(self) -> None:
        self._chunks: list[Events] = []
        self.n = 0

    def append(self, events: Events) -> None:
        self._chunks.append(events)
        self.n += len(events)

    def events(self) -> Events | None:
        if not self._chunks:
            return None
        if len(self._chunks) > 1:
            self._chunks = [Events.concat(self._chunks)]
        return self._chunks[0]

    def pop(self) -> Events | None:
        merged = self.events()
        self._chunks = []
        self.n = 0
        return merged

    def chunks_with(self, events: Events) -> list[Events]:
        """The chunks followed by ``events``, and the residue emptied (for one concat)."""
        parts = self._chunks + [events]
        self._chunks = []
        self.n = 0
        return parts


def _residue_to_plain(events: Events | None) -> dict | None:
    if events is None:
        return None
    # Copies: the snapshot must not share memory with arrays that the caller
    # who added them might still hold and reuse.
    return {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in events.to_plain().items()}


def _read_resume(state: Mapping[str, Any], kind: str, keys: tuple[str, ...]) -> Mapping[str, Any]:
    """Validate a resume state's shape; raises CheckpointError / ConfigError."""
    if not isinstance(state, Mapping):
        raise CheckpointError(f"window resume state must be a dict, got {type(state).__name__}")
    if state.get("format") != _SNAPSHOT_FORMAT:
        raise CheckpointError(
            f"window resume state has format {state.get('format')!r}, this version reads {_SNAPSHOT_FORMAT}; "
            "the checkpoint was written by an incompatible streamlearn"
        )
    if state.get("kind") != kind:
        raise ConfigError(
            f"the checkpoint holds a {state.get('kind')!r} window but a {kind!r} window is configured; "
            "configure the same window kind, or start from a fresh checkpoint"
        )
    missing = [k for k in ("seq", "late_count", "pending", *keys) if k not in state]
    if missing:
        raise CheckpointError(f"window resume state lacks {', '.join(missing)}; the checkpoint is damaged")
    return state


class _BaseWindower:
    """Counters, residue and batch numbering shared by all windowers."""

    _kind: ClassVar[str]

    def __init__(self) -> None:
        self._residue = _Residue()
        self._seq = 0
        self._late_count = 0
        self._n_features: int | None = None

    # -- counters
    @property
    def late_count(self) -> int:
        return self._late_count

    @property
    def batches_emitted(self) -> int:
        return self._seq

    def pending(self) -> Events | None:
        return self._residue.events()

    # -- helpers
    def _check_schema(self, events: Events) -> None:
        d = events.X.shape[1] if events.X.ndim == 2 else -1
        if self._n_features is None:
            self._n_features = d
        elif d != self._n_features:
            raise SchemaMismatchError(
                f"events with {d} features added to a window holding {self._n_features}-feature events; "
                "the codec's feature dimension must not change while a window is open"
            )

    def _emit(self, events: Events, start: int | None = None, end: int | None = None) -> MicroBatch:
        # INVARIANT: seq numbers emitted batches 0, 1, 2, ... without gaps, and
        # continues across snapshot/restore (it is part of the snapshot).
        batch = MicroBatch(events=events, seq=self._seq, window_start=start, window_end=end)
        self._seq += 1
        return batch

    def _base_snapshot(self) -> dict:
        return {
            "format": _SNAPSHOT_FORMAT,
            "kind": self._kind,
            "seq": self._seq,
            "late_count": self._late_count,
            "pending": _residue_to_plain(self._residue.events()),
        }

    def _base_restore(self, state: Mapping[str, Any]) -> Events | None:
        self._seq = int(state["seq"])
        self._late_count = int(state["late_count"])
        if state["pending"] is None:
            return None
        residue = Events.from_plain(state["pending"])
        if len(residue) == 0:
            return None
        self._check_schema(residue)
        self._residue.append(residue)
        return residue


class CountWindower(_BaseWindower):
    """Runtime of :class:`CountWindow`: a batch every ``size`` events.

    ``add`` costs a few µs per emitted batch plus one copy of the events that
    straddle two ``add`` calls; full batches inside one chunk are zero-copy
    slices of it.

    Examples
    --------
    >>> import numpy as np
    >>> from stream.records import Events
    >>> ev = Events(X=np.zeros((7, 1), np.float32), y=np.zeros(7, np.int64),
    ...             ts=np.zeros(7, np.int64), ids=np.array(list("abcdefg")),
    ...             topic=np.array(["t"] * 7), partition=np.zeros(7, np.int32),
    ...             offset=np.arange(7, dtype=np.int64))
    >>> windower = CountWindow(3).build()
    >>> [(b.seq, b.events.ids.tolist()) for b in windower.add(ev).batches]
    [(0, ['a', 'b', 'c']), (1, ['d', 'e', 'f'])]
    >>> windower.pending().ids.tolist()
    ['g']
    >>> resumed = CountWindow(3).build(resume_state=windower.snapshot())
    >>> [(b.seq, b.events.ids.tolist()) for b in resumed.flush()]
    [(2, ['g'])]
    """

    _kind = "count"

    def __init__(self, config: CountWindow, resume_state: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        self.config = config
        self._size = config.size
        if resume_state is not None:
            # A changed `size` is fine: a residue >= the new size is emitted by the next add.
            self._base_restore(_read_resume(resume_state, self._kind, ("size",)))

    def add(self, events: Events) -> WindowOutput:
        n = len(events)
        if n == 0:
            return WindowOutput([])
        self._check_schema(events)
        size = self._size
        need = size - self._residue.n
        if n < need:
            self._residue.append(events)
            return WindowOutput([])
        if need <= 0:
            # Only after a restore with a smaller size: fold the residue in once.
            events = Events.concat(self._residue.chunks_with(events))
            n, need = len(events), size
        # INVARIANT: batches are consecutive runs of the arrival order, each of
        # exactly `size` events; the residue is the (< size) tail.
        first = events.take(slice(0, need)) if n > need else events
        batches = [self._emit(Events.concat(self._residue.chunks_with(first)))]
        pos = need
        while n - pos >= size:
            batches.append(self._emit(events.take(slice(pos, pos + size))))
            pos += size
        if pos < n:
            self._residue.append(events.take(slice(pos, n)))
        return WindowOutput(batches)

    def tick(self, now_ms: int | None = None) -> WindowOutput:
        """Count windows ignore time: always an empty output."""
        return WindowOutput([])

    def flush(self) -> list[MicroBatch]:
        """Emit the partial tail (if any) as one short batch."""
        rest = self._residue.pop()
        return [] if rest is None else [self._emit(rest)]

    def snapshot(self) -> dict:
        state = self._base_snapshot()
        state["size"] = self._size
        return state


class ProcessingTimeWindower(_BaseWindower):
    """Runtime of :class:`ProcessingTimeWindow`.

    Events join the window open at the time they are added; the window opens
    with the first event (at ``floor(now / length_ms) * length_ms``) and closes
    on the first ``add``/``tick`` at or after its end. If the clock steps
    backwards, events join the open window: a closed window is never reopened.

    Examples
    --------
    >>> import numpy as np
    >>> from stream.clock import ManualClock
    >>> from stream.records import Events
    >>> ev = Events(X=np.zeros((2, 1), np.float32), y=np.zeros(2, np.int64),
    ...             ts=np.zeros(2, np.int64), ids=np.array(["a", "b"]),
    ...             topic=np.array(["t", "t"]), partition=np.zeros(2, np.int32),
    ...             offset=np.arange(2, dtype=np.int64))
    >>> clock = ManualClock(start_ms=1_200)
    >>> windower = ProcessingTimeWindow(1_000, clock=clock).build()
    >>> windower.add(ev).batches
    []
    >>> clock.set(1_999); windower.tick().batches
    1999
    []
    >>> clock.set(2_000); [(b.window_start, b.window_end, len(b)) for b in windower.tick().batches]
    2000
    [(1000, 2000, 2)]
    """

    _kind = "processing"

    def __init__(self, config: ProcessingTimeWindow, resume_state: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        self.config = config
        self._length = config.length_ms
        self._clock = config.clock
        # INVARIANT: _start is None exactly when the residue is empty.
        self._start: int | None = None
        if resume_state is not None:
            state = _read_resume(resume_state, self._kind, ("window_start",))
            if self._base_restore(state) is not None:
                start = state["window_start"]
                if start is None:
                    raise CheckpointError("window resume state has a residue but no window_start; it is damaged")
                self._start = int(start)

    def add(self, events: Events) -> WindowOutput:
        now = self._clock.now_ms()
        batches = self._close_due(now)
        if len(events):
            self._check_schema(events)
            if self._start is None:
                self._start = now - now % self._length
            self._residue.append(events)
        return WindowOutput(batches)

    def tick(self, now_ms: int | None = None) -> WindowOutput:
        now = self._clock.now_ms() if now_ms is None else int(now_ms)
        return WindowOutput(self._close_due(now))

    def flush(self) -> list[MicroBatch]:
        return self._close_due(None)

    def _close_due(self, now: int | None) -> list[MicroBatch]:
        """Emit the open window if ``now`` has reached its end (always when ``now`` is None)."""
        start = self._start
        if start is None:
            return []
        end = start + self._length
        if now is not None and now < end:
            return []
        self._start = None
        return [self._emit(self._residue.pop(), start, end)]

    @property
    def window_start(self) -> int | None:
        """Start of the open window, or ``None`` when nothing is pending."""
        return self._start

    def snapshot(self) -> dict:
        state = self._base_snapshot()
        state.update(length_ms=self._length, window_start=self._start)
        return state


class EventTimeWindower(_BaseWindower):
    """Runtime of :class:`EventTimeWindow`; see that class for the semantics.

    Examples
    --------
    >>> import numpy as np
    >>> from stream.clock import ManualClock
    >>> from stream.records import Events
    >>> def events(ts):
    ...     n = len(ts)
    ...     return Events(X=np.zeros((n, 1), np.float32), y=np.zeros(n, np.int64),
    ...                   ts=np.array(ts, np.int64), ids=np.array([str(t) for t in ts]),
    ...                   topic=np.array(["t"] * n), partition=np.zeros(n, np.int32),
    ...                   offset=np.arange(n, dtype=np.int64))
    >>> clock = ManualClock()
    >>> windower = EventTimeWindow(100, allowed_lateness_ms=50, idle_timeout_ms=1_000,
    ...                            clock=clock).build()
    >>> windower.add(events([10, 120, 140])).batches     # watermark 90: nothing closed
    []
    >>> [(b.window_start, b.events.ids.tolist()) for b in windower.add(events([60, 150])).batches]
    [(0, ['10', '60'])]
    >>> clock.advance(1_000); [(b.window_start, len(b)) for b in windower.tick().batches]
    1000
    [(100, 3)]
    >>> windower.watermark, windower.closed_until
    (200, 200)
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
        # closed_until = floor(watermark / length) * length have been emitted.
        self._watermark: int | None = None
        # Window ids (start // length) spanned by the residue; None when empty.
        self._min_wid: int | None = None
        self._max_wid: int | None = None
        # Processing time of the last add with events (idle timeout only).
        self._last_event_ms: int | None = None
        if resume_state is not None:
            self._restore(resume_state)

    # -- observers
    @property
    def watermark(self) -> int | None:
        """``max(ts seen) - allowed_lateness_ms``, raised further by idle timeout / flush."""
        return self._watermark

    @property
    def closed_until(self) -> int | None:
        """End of the newest closed window; an arriving event with ``ts`` below it is late."""
        if self._watermark is None:
            return None
        return (self._watermark // self._length) * self._length

    # -- API
    def add(self, events: Events) -> WindowOutput:
        n = len(events)
        if n == 0:
            return WindowOutput([])
        self._check_schema(events)
        if self._idle is not None:
            self._last_event_ms = self._clock.now_ms()
        length = self._length
        ts = events.ts
        w0 = _NO_TIME if self._watermark is None else self._watermark
        # Watermark after each event, in arrival order.
        wm_after = np.maximum.accumulate(ts) - self._lateness
        np.maximum(wm_after, w0, out=wm_after)
        # INVARIANT: an event is late iff ts < closed_until as of the events
        # before it, so late events are exactly those older than already-closed
        # windows, and no accepted event falls into an emitted window. Judging
        # by the watermark *after* the event is the same test and saves a
        # shift: an event that raises the watermark gets ts >= ts - lateness
        # >= closed_until, so it can never make itself late.
        late = ts < (wm_after // length) * length
        late_events = None
        accepted = events
        n_late = int(np.count_nonzero(late))
        if n_late:
            late_events = events.take(late) if n_late < n else events
            accepted = events.take(~late) if n_late < n else None
            self._late_count += n_late
        self._watermark = int(wm_after[-1])
        if accepted is not None:
            wid = accepted.ts // length
            lo, hi = int(wid.min()), int(wid.max())
            self._min_wid = lo if self._min_wid is None else min(self._min_wid, lo)
            self._max_wid = hi if self._max_wid is None else max(self._max_wid, hi)
            self._residue.append(accepted)
        return WindowOutput(self._close_below(self._watermark // length), late_events)

    def tick(self, now_ms: int | None = None) -> WindowOutput:
        """Apply the idle timeout; ``now_ms`` must come from the same time base as the clock."""
        if self._idle is None or self._max_wid is None:
            return WindowOutput([])
        now = self._clock.now_ms() if now_ms is None else int(now_ms)
        if self._last_event_ms is None:  # restored with a residue the old config had no timer for
            self._last_event_ms = now
        if now - self._last_event_ms < self._idle:
            return WindowOutput([])
        return WindowOutput(self._force_close_all())

    def flush(self) -> list[MicroBatch]:
        """Emit every open window in order; the watermark moves past them, so later
        events for those windows are late."""
        if self._max_wid is None:
            return []
        return self._force_close_all()

    def snapshot(self) -> dict:
        state = self._base_snapshot()
        idle_elapsed = None
        if self._idle is not None and self._last_event_ms is not None:
            idle_elapsed = max(0, self._clock.now_ms() - self._last_event_ms)
        state.update(
            length_ms=self._length,
            allowed_lateness_ms=self._lateness,
            watermark=self._watermark,
            closed_until=self.closed_until,
            idle_elapsed_ms=idle_elapsed,
        )
        return state

    # -- internals
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
        state = _read_resume(
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
        residue = self._base_restore(state)
        if residue is not None:
            wid = residue.ts // self._length
            self._min_wid, self._max_wid = int(wid.min()), int(wid.max())
            if self._idle is not None:
                # The idle timer resumes where the snapshot left it: downtime is
                # not idleness (the backlog may hold events for open windows).
                elapsed = state["idle_elapsed_ms"]
                self._last_event_ms = self._clock.now_ms() - (0 if elapsed is None else int(elapsed))


# ------------------------------------------------------------------ parsing
_FORMS = (
    "accepted window specs: 'count:N' or 'N' (a batch every N events), "
    "'processing:DUR', 'event:DUR[,lateness=DUR][,idle=DUR]', where DUR is a number "
    "with a unit ms, s or m (e.g. 'count:1000', 'processing:5s', 'event:10s,lateness=2s,idle=5s')"
)
_COUNT = re.compile(r"[0-9]+")
_DURATION = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m)")
_UNIT_MS = {"ms": 1, "s": 1_000, "m": 60_000}


def _duration_ms(text: str, what: str, spec: str) -> int:
    match = _DURATION.fullmatch(text.strip().lower())
    if match is None:
        raise ConfigError(f"bad {what} {text.strip()!r} in window spec {spec!r}; {_FORMS}")
    try:
        value = Decimal(match[1]) * _UNIT_MS[match[2]]
    except InvalidOperation:  # pragma: no cover - the regex admits only plain decimals
        raise ConfigError(f"bad {what} {text.strip()!r} in window spec {spec!r}; {_FORMS}") from None
    if value != value.to_integral_value():
        raise ConfigError(f"{what} {text.strip()!r} in window spec {spec!r} is not a whole number of milliseconds")
    return int(value)


def parse_window(spec: str, clock: Clock | None = None) -> WindowConfig:
    """Parse a CLI window spec into a window config.

    Parameters
    ----------
    spec : str
        ``count:N`` or ``N``; ``processing:DUR``; ``event:DUR`` optionally
        followed by ``,lateness=DUR`` and/or ``,idle=DUR``. ``DUR`` is a number
        with a unit ``ms``, ``s`` or ``m`` (``1.5s`` is 1500 ms).
    clock : Clock or None
        Processing-time clock for processing windows (default
        :class:`~stream.clock.SystemClock`) and for the event-time idle timeout.

    Returns
    -------
    CountWindow, ProcessingTimeWindow or EventTimeWindow

    Raises
    ------
    ConfigError
        If the spec is malformed or a value is out of range; the message lists
        the accepted forms.

    Examples
    --------
    >>> parse_window("1000")
    CountWindow(size=1000)
    >>> parse_window("processing:5s").length_ms
    5000
    >>> parse_window("event:10s,lateness=2s,idle=1m")
    EventTimeWindow(length_ms=10000, allowed_lateness_ms=2000, idle_timeout_ms=60000, clock=None)
    """
    if not isinstance(spec, str):
        raise ConfigError(f"a window spec must be a string, got {type(spec).__name__}; {_FORMS}")
    text = spec.strip()
    kind, colon, rest = text.partition(":")
    if not colon:
        if _COUNT.fullmatch(text):
            return CountWindow(int(text))
        raise ConfigError(f"bad window spec {spec!r}; {_FORMS}")
    kind = kind.strip().lower()
    head, *options = [part.strip() for part in rest.split(",")]
    if kind == "count":
        if options or not _COUNT.fullmatch(head):
            raise ConfigError(f"bad count window spec {spec!r}; {_FORMS}")
        return CountWindow(int(head))
    if kind == "processing":
        if options:
            raise ConfigError(f"processing windows take no options, got {spec!r}; {_FORMS}")
        return ProcessingTimeWindow(_duration_ms(head, "length", spec), clock=clock or SystemClock())
    if kind == "event":
        length = _duration_ms(head, "length", spec)
        values: dict[str, int] = {}
        for option in options:
            key, eq, value = option.partition("=")
            key = key.strip().lower()
            if not eq or key not in ("lateness", "idle"):
                raise ConfigError(f"unknown option {option!r} in window spec {spec!r}; {_FORMS}")
            if key in values:
                raise ConfigError(f"option {key!r} given twice in window spec {spec!r}")
            values[key] = _duration_ms(value, key, spec)
        return EventTimeWindow(
            length,
            allowed_lateness_ms=values.get("lateness", 0),
            idle_timeout_ms=values.get("idle"),
            clock=clock,
        )
    raise ConfigError(f"unknown window kind {kind!r} in {spec!r}; {_FORMS}")
