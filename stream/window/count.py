"""Count windows: a batch every ``size`` events, in arrival order -- or sooner, when the
window has been open ``max_ms`` of processing time (count *or* time).

Examples
--------
>>> CountWindow(size=1000)
CountWindow(size=1000, max_ms=None)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping

from stream.core.clock import Clock, SystemClock
from stream.core.records import Events, MicroBatch
from stream.window.base import BaseWindower, WindowOutput, check_clock, positive_int, read_resume

__all__ = ["CountWindow", "CountWindower"]


@dataclass(frozen=True, slots=True)
class CountWindow:
    """Emit a batch every ``size`` events, in arrival order, or when the open one is ``max_ms`` old.

    Parameters
    ----------
    size : int
        Events per batch (>= 1). Without ``max_ms`` the last, partial batch
        stays pending until more events come or :meth:`CountWindower.flush` is called.
    max_ms : int or None
        Close a partial window once ``max_ms`` of ``clock`` time have passed
        since its first event was added (on the next ``add`` or ``tick``):
        what bounds an event's wait in the window when the stream is slow.
        ``None`` (the default): count only.
    clock : Clock
        Processing-time source of ``max_ms`` (the engine's injected clock: a
        replay's :class:`~stream.core.clock.DataClock`, a test's
        :class:`~stream.core.clock.ManualClock`).

    Raises
    ------
    ConfigError
        If ``size`` or ``max_ms`` is not a positive integer, or ``clock`` has no ``now_ms()``.

    Examples
    --------
    >>> from stream.core.records import Events
    >>> windower = CountWindow(size=2).build()
    >>> out = windower.add(Events.empty(n_features=1))
    >>> out.batches, windower.pending()
    ([], None)
    """

    kind: ClassVar[str] = "count"
    size: int
    max_ms: int | None = None
    clock: Clock = field(default_factory=SystemClock, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "size", positive_int("CountWindow", "size", self.size))
        if self.max_ms is not None:
            object.__setattr__(self, "max_ms", positive_int("CountWindow", "max_ms", self.max_ms))
        check_clock("CountWindow", self.clock)

    def build(self, resume_state: Mapping[str, Any] | None = None) -> CountWindower:
        """The runtime windower, fresh or resumed from a :meth:`CountWindower.snapshot`."""
        return CountWindower(self, resume_state)


class CountWindower(BaseWindower):
    """Runtime of :class:`CountWindow`: a batch every ``size`` events, or at ``max_ms``.

    ``add`` costs a few µs per emitted batch plus one copy of the events that
    straddle two ``add`` calls; full batches inside one chunk are zero-copy
    slices of it. With ``max_ms`` it also reads the clock once per ``add``.

    Examples
    --------
    >>> import numpy as np
    >>> from stream.core.clock import ManualClock
    >>> from stream.core.records import Events
    >>> ev = Events(X=np.zeros((7, 1), np.float32), y=np.zeros(7, np.int64),
    ...             ts=np.zeros(7, np.int64), ids=np.array(list("abcdefg")),
    ...             topic=np.array(["t"] * 7), partition=np.zeros(7, np.int32),
    ...             offset=np.arange(7, dtype=np.int64))
    >>> clock = ManualClock()
    >>> windower = CountWindow(3, max_ms=250, clock=clock).build()
    >>> [(b.seq, b.events.ids.tolist()) for b in windower.add(ev).batches]
    [(0, ['a', 'b', 'c']), (1, ['d', 'e', 'f'])]
    >>> windower.pending().ids.tolist()
    ['g']
    >>> resumed = CountWindow(3, max_ms=250, clock=clock).build(resume_state=windower.snapshot())
    >>> clock.advance(249); resumed.tick().batches
    249
    []
    >>> clock.advance(1); [(b.seq, b.events.ids.tolist()) for b in resumed.tick().batches]
    250
    [(2, ['g'])]
    """

    _kind = "count"

    def __init__(self, config: CountWindow, resume_state: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        self.config = config
        self._size = config.size
        self._max_ms = config.max_ms
        self._clock = config.clock
        # INVARIANT: _opened (clock ms when the residue's first event was added)
        # is None exactly when the residue is empty.
        self._opened: int | None = None
        if resume_state is not None:
            # A changed `size` is fine: a residue >= the new size is emitted by the next add.
            residue = self._base_restore(read_resume(resume_state, self._kind, ("size",)))
            if residue is not None:
                # Checkpoints written before max_ms existed lack "opened_ms": the wait starts now.
                opened = resume_state.get("opened_ms")
                self._opened = int(opened) if opened is not None else self._clock.now_ms()

    def add(self, events: Events) -> WindowOutput:
        n = len(events)
        if n == 0:
            return WindowOutput([])
        self._check_schema(events)
        now = self._clock.now_ms() if self._max_ms is not None else 0
        # A window that was due by time closes before these events join it:
        # they arrived after its deadline.
        batches = self._close_if_old(now)
        size = self._size
        need = size - self._residue.n
        if n < need:
            if self._residue.n == 0:
                self._opened = now
            self._residue.append(events)
            return WindowOutput(batches)
        if need <= 0:
            # Only after a restore with a smaller size: fold the residue in once.
            events = Events.concat(self._residue.chunks_with(events))
            n, need = len(events), size
        # INVARIANT: count batches are consecutive runs of the arrival order, each
        # of exactly `size` events; the residue is the (< size) tail.
        first = events.take(slice(0, need)) if n > need else events
        batches.append(self._emit(Events.concat(self._residue.chunks_with(first))))
        pos = need
        while n - pos >= size:
            batches.append(self._emit(events.take(slice(pos, pos + size))))
            pos += size
        self._opened = None
        if pos < n:
            self._residue.append(events.take(slice(pos, n)))
            self._opened = now
        return WindowOutput(batches)

    def tick(self, now_ms: int | None = None) -> WindowOutput:
        """Close the partial window if it is ``max_ms`` old at ``now_ms`` (default: the clock's now).

        Without ``max_ms`` count windows ignore time: always an empty output.
        """
        if self._max_ms is None or self._opened is None:
            return WindowOutput([])
        return WindowOutput(self._close_if_old(self._clock.now_ms() if now_ms is None else now_ms))

    def _close_if_old(self, now: int) -> list[MicroBatch]:
        opened = self._opened
        if self._max_ms is None or opened is None:
            return []
        if now < opened:
            # The wall clock stepped back: re-anchor, so the wait stays bounded by max_ms.
            self._opened = now
            return []
        if now - opened < self._max_ms:
            return []
        return self.flush()

    def flush(self) -> list[MicroBatch]:
        """Emit the partial tail (if any) as one short batch."""
        self._opened = None
        rest = self._residue.pop()
        return [] if rest is None else [self._emit(rest)]

    def snapshot(self) -> dict:
        state = self._base_snapshot()
        state["size"] = self._size
        state["max_ms"] = self._max_ms
        state["opened_ms"] = self._opened
        return state
