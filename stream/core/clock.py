"""Processing-time clocks: the system clock and a clock that tests move by hand.

Windows that depend on processing time (:class:`~stream.window.processing_time.ProcessingTimeWindow`
and the idle timeout of :class:`~stream.window.event_time.EventTimeWindow`) read time only
through a :class:`Clock`, so crash/replay tests can drive them deterministically
with :class:`ManualClock` instead of sleeping. The engine's cadences
(checkpoint and progress every N seconds) read the same clock's
:meth:`~Clock.monotonic_ms`, so one injected clock paces everything.

Examples
--------
>>> clock = ManualClock(start_ms=1_000)
>>> clock.advance(250)
1250
>>> clock.now_ms()
1250
"""

from __future__ import annotations

import time
from typing import Protocol, runtime_checkable


@runtime_checkable
class Clock(Protocol):
    """A source of processing time in integer milliseconds since the epoch."""

    def now_ms(self) -> int:
        """The current processing time in ms."""
        ...

    def monotonic_ms(self) -> int:
        """A reading that never goes back, in ms (only differences mean anything): cadences use it."""
        ...


class SystemClock:
    """Wall-clock time from :func:`time.time_ns`, in ms since the epoch.

    Wall-clock time (not :func:`time.monotonic`) so that processing-time
    windows line up with epoch multiples and with timestamps in logs; a step
    backwards never reopens a closed window (see ``ProcessingTimeWindow``).

    Examples
    --------
    >>> SystemClock().now_ms() > 1_600_000_000_000
    True
    """

    __slots__ = ()

    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000

    def monotonic_ms(self) -> int:
        """:func:`time.monotonic` in ms: a wall-clock step does not hurry or stall a cadence."""
        return time.monotonic_ns() // 1_000_000

    def __repr__(self) -> str:
        return "SystemClock()"


class ManualClock:
    """A clock that moves only when told to: the test double for processing time.

    Parameters
    ----------
    start_ms : int
        The initial time in ms.

    Examples
    --------
    >>> clock = ManualClock()
    >>> clock.now_ms()
    0
    >>> clock.advance(1_500)
    1500
    >>> clock.set(10_000)
    10000
    """

    __slots__ = ("_now",)

    def __init__(self, start_ms: int = 0) -> None:
        self._now = int(start_ms)

    def now_ms(self) -> int:
        return self._now

    def monotonic_ms(self) -> int:
        """The same hand-moved time (a test that :meth:`set` s it back models a broken clock)."""
        return self._now

    def advance(self, ms: int) -> int:
        """Move forward by ``ms`` (>= 0) and return the new time.

        Raises
        ------
        ValueError
            If ``ms`` is negative; use :meth:`set` to model a clock step backwards.
        """
        if ms < 0:
            raise ValueError(f"advance() takes a non-negative step, got {ms}; use set() to go back")
        self._now += int(ms)
        return self._now

    def set(self, ms: int) -> int:
        """Jump to ``ms`` (backwards too, to model a wall-clock step) and return it."""
        self._now = int(ms)
        return self._now

    def __repr__(self) -> str:
        return f"ManualClock(now_ms={self._now})"


class DataClock:
    """Time as the data tells it: the newest record timestamp seen so far.

    A replay drives processing-time windows and idle timeouts with it, so a
    backtest closes windows where the live daemon would have (records were
    processed about when they were appended) and does so identically on every
    run, however fast the replay reads.

    >>> clock = DataClock()
    >>> clock.observe(1_000); clock.observe(900); clock.now_ms()
    1000
    """

    def __init__(self, start_ms: int = 0) -> None:
        self._now = int(start_ms)

    def observe(self, ts_ms: int) -> None:
        """Move to ``ts_ms`` if it is newer (time never goes back)."""
        if ts_ms > self._now:
            self._now = int(ts_ms)

    def now_ms(self) -> int:
        return self._now

    def monotonic_ms(self) -> int:
        """Data time too: in a replay the data, not the machine, paces the engine's cadences."""
        return self._now

    def __repr__(self) -> str:
        return f"DataClock(now_ms={self._now})"
