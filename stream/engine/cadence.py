"""When the engine checkpoints: every N batches, every N seconds of its clock, or when asked.

Seconds are read from the engine's injected clock
(:meth:`~stream.core.clock.Clock.monotonic_ms`): the machine's monotonic time
live, data time in a replay, a hand-moved clock in tests. A cadence set to
``None`` never comes due; with both off the engine checkpoints only on
request, on a partition revocation and at the end.

Examples
--------
>>> from stream.core.clock import ManualClock
>>> clock = ManualClock()
>>> cadence = CheckpointCadence(every_batches=None, every_seconds=2.0, clock=clock)
>>> cadence.start(batches_learned=0)
>>> cadence.due(batches_learned=50)
False
>>> _ = clock.advance(2_000)
>>> cadence.due(batches_learned=50)
True
"""

from __future__ import annotations

from stream.core.clock import Clock

__all__ = ["CheckpointCadence"]

_NEVER = float("inf")


class CheckpointCadence:
    """Counts batches since the last checkpoint (from the run's counter) and clock time since the last timed one.

    Only a checkpoint taken because the cadence was due restarts the timer
    (:meth:`timer_restarted`); any checkpoint restarts the batch count and
    serves a request (:meth:`checkpointed`).
    """

    __slots__ = ("_batches_at", "_clock", "_every_batches", "_every_ms", "_last_ms", "_now_ms", "_requested")

    def __init__(self, *, every_batches: int | None, every_seconds: float | None, clock: Clock) -> None:
        self._every_batches = _NEVER if every_batches is None else every_batches
        self._every_ms = _NEVER if every_seconds is None else every_seconds * 1000
        self._clock = clock
        self._batches_at = 0
        self._last_ms = self._now_ms = clock.monotonic_ms()
        self._requested = False

    def start(self, *, batches_learned: int) -> None:
        """The run starts (after a restore): count from here."""
        self._batches_at = batches_learned
        self._last_ms = self._clock.monotonic_ms()

    def request(self) -> None:
        """A checkpoint is wanted at the next check, whatever the cadence."""
        self._requested = True

    def due(self, *, batches_learned: int) -> bool:
        """Whether to checkpoint now: asked for, or a cadence has come round."""
        self._now_ms = now = self._clock.monotonic_ms()
        return (
            self._requested
            or batches_learned - self._batches_at >= self._every_batches
            or now - self._last_ms >= self._every_ms
        )

    def checkpointed(self, *, batches_learned: int) -> None:
        """A checkpoint was written (for any reason): the batch count restarts, a request is served."""
        self._batches_at = batches_learned
        self._requested = False

    def timer_restarted(self) -> None:
        """The checkpoint :meth:`due` called for was written: time counts from that reading."""
        self._last_ms = self._now_ms
