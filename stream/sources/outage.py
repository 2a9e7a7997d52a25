"""Broker outages as the engine loop sees them: warnings at widening intervals, a progress note, totals.

The Kafka clients reconnect by themselves; what the loop needs is to *say* so
(once when it starts, now and then while it lasts, once when it ends), to
retry a poll that raised only after a backoff, and to count the outages for
the run summary. :class:`OutageWatch` is that bookkeeping;
:class:`OutageSummary` is what the summary prints.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from stream.core.retry import Backoff

if TYPE_CHECKING:
    from stream.sources.base import Outage

log = logging.getLogger("stream.engine.loop")  # the engine's voice: its outage warnings read as the daemon's


@dataclass(frozen=True)
class OutageSummary:
    """A run's broker outages: how many began, seconds out of reach in all, the last cause, one still on at the end."""

    count: int
    seconds: float
    last_cause: str | None
    ongoing: bool

    def describe(self) -> str:
        """One line for the run summary.

        >>> OutageSummary(2, 14.2, "127.0.0.1:9092: [Errno 111] Connection refused", False).describe()
        'broker unreachable 2 time(s), 14s in all (last cause: 127.0.0.1:9092: [Errno 111] Connection refused); \
learning resumed from the checkpointed positions each time'
        """
        head = f"broker unreachable {self.count} time(s), {self.seconds:.0f}s in all (last cause: {self.last_cause})"
        if self.ongoing:
            return head + "; still unreachable at the stop: the last checkpoint holds everything learned"
        return head + "; learning resumed from the checkpointed positions each time"


class OutageWatch:
    """Turns the source's broker state, seen once per loop turn, into warnings, a progress note and totals.

    An outage is what the source reports (``source.outage()``), or polls that
    raise :class:`~stream.core.errors.BrokerOutageError`. It begins with one
    warning naming the cause, is recalled by warnings spaced by
    ``remind_backoff`` (30 s, 60 s, ... 10 min: no log spam however long it
    lasts) and ends with one warning. A poll that raised is retried after
    ``retry_backoff``, never in a tight loop.

    Parameters
    ----------
    retry_backoff : Backoff, optional
        Wait before polling again after the n-th poll in a row raised;
        0.5 s doubling to 10 s, half of it jittered, by default.
    remind_backoff : Backoff, optional
        Spacing of the "still unreachable" warnings.
    clock : callable, optional
        Monotonic seconds, the clock of the loop's own timestamps.
    sleep : callable, optional
        How :meth:`wait` sleeps (tests pass a recorder).

    Examples
    --------
    >>> from redis.backoff import ConstantBackoff
    >>> from stream.sources.kafka import Outage
    >>> watch = OutageWatch(retry_backoff=ConstantBackoff(2.0), clock=lambda: 100.0)
    >>> watch.observe(Outage(since=88.0, cause="connection refused"), now=100.0)
    >>> watch.active, watch.note(now=100.0)
    (True, 'broker unreachable for 12s, retrying')
    >>> watch.observe(None, now=105.0)
    >>> watch.active, watch.ended_at, watch.summary(now=105.0).seconds
    (False, 105.0, 17.0)
    >>> watch.poll_failed("no route to host", now=106.0)  # the retry delay
    2.0
    """

    def __init__(
        self,
        *,
        retry_backoff: Backoff | None = None,
        remind_backoff: Backoff | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        from redis.backoff import EqualJitterBackoff, ExponentialBackoff

        self.retry_backoff = (
            retry_backoff if retry_backoff is not None else EqualJitterBackoff(cap=10.0, base=0.5)
        )
        self.remind_backoff = (
            remind_backoff if remind_backoff is not None else ExponentialBackoff(cap=600.0, base=30.0)
        )
        self._clock = clock
        self._sleep = sleep
        self._since: float | None = None
        self._cause: str | None = None
        self._count = 0
        self._total = 0.0
        self._ended_at: float | None = None
        self._failed_polls = 0
        self._reminders = 0
        self._next_reminder = 0.0

    @property
    def active(self) -> bool:
        """An outage is in progress: not idleness, whatever the time since the last record."""
        return self._since is not None

    @property
    def ended_at(self) -> float | None:
        """When the last outage ended (the idle clock restarts there)."""
        return self._ended_at

    def observe(self, outage: Outage | None, now: float | None = None) -> None:
        """The source's state after a poll that returned (``None``: the broker answers)."""
        now = self._now(now)
        if outage is None:
            self._failed_polls = 0
            if self._since is not None:
                self._end(now)
            return
        if self._since is None:
            self._begin(min(outage.since, now), outage.cause, now)
        else:
            self._going_on(outage.cause, now)

    def poll_failed(self, cause: str, now: float | None = None) -> float:
        """A poll raised: the outage goes on (or begins); returns the seconds to wait before the next poll."""
        now = self._now(now)
        if self._since is None:
            self._begin(now, cause, now)
        else:
            self._going_on(cause, now)
        delay = self.retry_backoff.compute(self._failed_polls)
        self._failed_polls += 1
        return delay

    def wait(self, seconds: float, stop: Callable[[], bool]) -> None:
        """Sleep ``seconds`` in slices of at most 0.1 s, returning early once ``stop()`` is true (a signal)."""
        deadline = self._clock() + seconds
        while not stop():
            left = deadline - self._clock()
            if left <= 0:
                return
            self._sleep(min(left, 0.1))

    def note(self, now: float | None = None) -> str | None:
        """The progress line's part while an outage lasts."""
        if self._since is None:
            return None
        return f"broker unreachable for {self._now(now) - self._since:.0f}s, retrying"

    def summary(self, now: float | None = None) -> OutageSummary | None:
        """The run's outages so far (``None`` if there was none)."""
        if not self._count:
            return None
        ongoing = self._since is not None
        seconds = self._total + (self._now(now) - self._since if ongoing else 0.0)
        return OutageSummary(self._count, seconds, self._cause, ongoing)

    def _begin(self, since: float, cause: str, now: float) -> None:
        self._since, self._cause = since, cause
        self._count += 1
        self._reminders = 0
        self._next_reminder = now + self.remind_backoff.compute(0)
        log.warning(
            "broker unreachable (%s): learning paused, the last checkpoint is kept; retrying with backoff",
            cause,
        )

    def _going_on(self, cause: str, now: float) -> None:
        self._cause = cause
        if now >= self._next_reminder:
            self._reminders += 1
            self._next_reminder = now + self.remind_backoff.compute(self._reminders)
            log.warning("broker still unreachable after %.0fs (%s); retrying", now - self._since, cause)

    def _end(self, now: float) -> None:
        down = now - self._since
        self._total += down
        self._since = None
        self._ended_at = now
        log.warning(
            "broker reachable again after %.0fs; learning resumes from the checkpointed positions", down
        )

    def _now(self, now: float | None) -> float:
        return self._clock() if now is None else now
