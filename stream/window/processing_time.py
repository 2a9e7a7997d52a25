"""Processing-time windows: events that arrive while the clock is in the same
``[k * length_ms, (k + 1) * length_ms)`` go together.

Examples
--------
>>> from stream.core.clock import ManualClock
>>> ProcessingTimeWindow(length_ms=5_000, clock=ManualClock()).length_ms
5000
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping

from stream.core.clock import Clock, SystemClock
from stream.core.errors import CheckpointError
from stream.core.records import Events, MicroBatch
from stream.window.base import BaseWindower, WindowOutput, check_clock, positive_int, read_resume

__all__ = ["ProcessingTimeWindow", "ProcessingTimeWindower"]


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
        Processing-time source; :class:`~stream.core.clock.ManualClock` in tests.

    Raises
    ------
    ConfigError
        If ``length_ms`` is not a positive integer or ``clock`` has no ``now_ms()``.

    Examples
    --------
    >>> from stream.core.clock import ManualClock
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
        object.__setattr__(
            self, "length_ms", positive_int("ProcessingTimeWindow", "length_ms", self.length_ms)
        )
        check_clock("ProcessingTimeWindow", self.clock)

    def build(self, resume_state: Mapping[str, Any] | None = None) -> ProcessingTimeWindower:
        """The runtime windower, fresh or resumed from a :meth:`ProcessingTimeWindower.snapshot`."""
        return ProcessingTimeWindower(self, resume_state)


class ProcessingTimeWindower(BaseWindower):
    """Runtime of :class:`ProcessingTimeWindow`.

    Events join the window open at the time they are added; the window opens
    with the first event (at ``floor(now / length_ms) * length_ms``) and closes
    on the first ``add``/``tick`` at or after its end. If the clock steps
    backwards, events join the open window: a closed window is never reopened.

    Examples
    --------
    >>> import numpy as np
    >>> from stream.core.clock import ManualClock
    >>> from stream.core.records import Events
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
            state = read_resume(resume_state, self._kind, ("window_start",))
            if self._base_restore(state) is not None:
                start = state["window_start"]
                if start is None:
                    raise CheckpointError(
                        "window resume state has a residue but no window_start; it is damaged"
                    )
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
