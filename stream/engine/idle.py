"""When ``--until-idle`` may stop the engine: quiet long enough, no outage, and a lag known to be 0.

``until_idle_seconds`` stops the loop only when no record arrived for that
long, counted from the latest of the last record, the last assignment and
the end of the last outage, *and* no outage is in progress *and* the source's
lag is known to be 0. An unknown lag (before the group assigned partitions, or
while the broker is out of reach) is not 0: the loop waits, and the progress
line shows ``lag ?``. An outage is never taken for an idle topic. Times are
:func:`time.monotonic` seconds, as the outage watch's.

Examples
--------
>>> from stream.sources.outage import OutageWatch
>>> class Drained:
...     def lag(self): return 0
>>> rule = IdleRule(0.5, Drained(), now=100.0)
>>> rule.idle(100.2, assigned_at=100.0, watch=OutageWatch())
False
>>> rule.idle(100.6, assigned_at=100.0, watch=OutageWatch())
True
"""

from __future__ import annotations

import logging

from stream.sources.base import Source
from stream.sources.outage import OutageWatch

log = logging.getLogger("stream.engine.loop")  # the engine's voice

__all__ = ["IdleRule"]


class IdleRule:
    """Tracks the last record and decides, after an empty poll, whether the source is idle."""

    __slots__ = ("_last_data", "_said_lagging", "seconds", "source")

    def __init__(self, seconds: float, source: Source, *, now: float) -> None:
        self.seconds, self.source = seconds, source
        self._last_data = now
        self._said_lagging = False

    def data_arrived(self, now: float) -> None:
        """A poll returned records at ``now``: the quiet time starts again."""
        self._last_data = now
        self._said_lagging = False

    def idle(self, now: float, *, assigned_at: float | None, watch: OutageWatch) -> bool:
        """After an empty poll at ``now``: quiet for ``seconds`` since data, assignment and outage, lag 0."""
        # An outage is not idleness, and neither is a slow group join: the
        # quiet time counts from the latest of the last record, the last
        # assignment and the end of the last outage.
        if (
            assigned_at is None
            or watch.active
            or now - max(self._last_data, assigned_at, watch.ended_at or 0.0) < self.seconds
        ):
            return False
        try:
            lag = self.source.lag()
        except Exception:  # noqa: BLE001 -- a lag that cannot be read is unknown
            lag = None
        if lag == 0:
            return True
        if not self._said_lagging:
            log.info(
                "no record for %gs, but the lag is %s: not idle yet",
                self.seconds,
                "unknown" if lag is None else f"{lag:,}",
            )
            self._said_lagging = True
        return False
