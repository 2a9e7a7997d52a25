"""When to try an unavailable service again: backoff between attempts, and the outage's story.

The engine loop must never sleep waiting for Kafka or Redis: it keeps
learning and only *attempts* the failing I/O again once the backoff has
passed. :class:`RetryTimer` is that bookkeeping. The delays come from
redis-py's backoff policies (``compute(failures) -> seconds``, see
``redis/backoff.py``): they are generic, tested and already a dependency, so
Kafka and Redis I/O share one policy shape instead of ad-hoc sleep loops.

Examples
--------
>>> from redis.backoff import ExponentialBackoff
>>> timer = RetryTimer(ExponentialBackoff(cap=8, base=1))
>>> timer.ready(now=0.0), timer.down
(True, False)
>>> timer.failed("connection refused", now=0.0)
>>> timer.ready(now=0.5), timer.ready(now=1.0), timer.down
(False, True, True)
>>> timer.failed("connection refused", now=1.0)   # second failure: wait 2 s
>>> timer.ready(now=2.9), timer.ready(now=3.0), timer.down_for(now=3.0)
(False, True, 3.0)
>>> timer.succeeded(); timer.down, timer.failures
(False, 0)
"""

from __future__ import annotations

import time
from typing import Protocol


class Backoff(Protocol):
    """redis-py's backoff shape: seconds to wait after ``failures`` consecutive failures."""

    def compute(self, failures: int) -> float: ...


def default_backoff() -> Backoff:
    """0.5 s doubling to 30 s, half of it jittered (so many daemons do not retry in step)."""
    from redis.backoff import EqualJitterBackoff

    return EqualJitterBackoff(cap=30.0, base=0.5)


class RetryTimer:
    """Tracks consecutive failures of one service and when the next attempt is due.

    Parameters
    ----------
    backoff : Backoff, optional
        Delay policy; :func:`default_backoff` when omitted.
    clock : callable, optional
        Monotonic seconds (``time.monotonic``); tests pass ``now=`` instead.
    """

    def __init__(self, backoff: Backoff | None = None, clock=time.monotonic) -> None:
        self.backoff = backoff if backoff is not None else default_backoff()
        self._clock = clock
        self.failures = 0
        self.last_error: str | None = None
        self._down_since: float | None = None
        self._next_attempt = 0.0

    @property
    def down(self) -> bool:
        """True from the first failure until the next success."""
        return self._down_since is not None

    def ready(self, now: float | None = None) -> bool:
        """Whether an attempt is due (always, while the service is up)."""
        return self._down_since is None or self._now(now) >= self._next_attempt

    def failed(self, error: str, now: float | None = None) -> None:
        """Record a failed attempt; the next one waits ``backoff.compute(failures)``."""
        now = self._now(now)
        self.failures += 1
        self.last_error = error
        if self._down_since is None:
            self._down_since = now
        # compute(0) is the base delay in redis-py's policies: the first retry waits base.
        self._next_attempt = now + self.backoff.compute(self.failures - 1)

    def succeeded(self) -> None:
        """The service answered: forget the outage."""
        self.failures = 0
        self._down_since = None
        self._next_attempt = 0.0

    def down_for(self, now: float | None = None) -> float:
        """Seconds since the outage began (0 while up)."""
        return 0.0 if self._down_since is None else self._now(now) - self._down_since

    def _now(self, now: float | None) -> float:
        return self._clock() if now is None else now
