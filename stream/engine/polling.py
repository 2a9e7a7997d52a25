"""The live loop: poll an engine's own source until idle, end of input, ``max_events`` or a stop.

:meth:`stream.engine.loop.Engine.run` is this loop over the engine's steps
(start, feed per poll, end of input, finish); a replay feeds its engines
itself instead.

A broker outage neither stops nor crashes the loop. The Kafka clients
reconnect by themselves; the source reports the outage (``outage()``) and the
loop keeps polling -- each poll still waits its timeout -- so learning simply
resumes from the positions it holds when the broker answers again: nothing is
lost or learned twice, and the last checkpoint stays the truth meanwhile (the
group commit is skipped). A poll that raises
:class:`~stream.core.errors.BrokerOutageError` is retried after a computed backoff.
:class:`~stream.sources.outage.OutageWatch` warns once with the cause, then at
widening intervals, puts ``broker unreachable for 12s, retrying`` on the
progress line and the outage into the run's summary. Idleness is decided by
:class:`~stream.engine.idle.IdleRule`.

The progress cadence (``progress_every_seconds``) reads the engine's clock;
outages and idleness are measured on the machine's :func:`time.monotonic`.

Examples
--------
>>> class Columnar:  # a source that hands out columns itself is asked for them
...     def poll_columns(self, timeout_ms, max_records): return f"up to {max_records} records as columns"
>>> poller(Columnar(), timeout_ms=0, max_records=3)()
'up to 3 records as columns'
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Callable, Protocol

from stream.core.clock import Clock
from stream.core.errors import BrokerOutageError
from stream.core.poll import PollColumns, as_columns
from stream.engine.config import EngineConfig, RunSummary
from stream.engine.idle import IdleRule
from stream.engine.progress import RunStats
from stream.sources.base import Source, source_extras
from stream.sources.outage import OutageWatch

__all__ = ["PolledEngine", "poll_until_done", "poller"]


class PolledEngine(Protocol):
    """The engine as the live loop drives it (:class:`~stream.engine.loop.Engine`)."""

    source: Source
    config: EngineConfig
    clock: Clock
    on_progress: Callable[[RunStats], None] | None

    @property
    def stats(self) -> RunStats: ...

    @property
    def stop_reason(self) -> str | None: ...

    @property
    def assigned_at(self) -> float | None: ...

    def start(self) -> None: ...

    def feed(self, poll: PollColumns) -> None: ...

    def end_of_input(self) -> None: ...

    def finish(self, reason: str) -> RunSummary: ...

    def close(self) -> None: ...

    def report_progress(self) -> None: ...


def poller(source: Source, *, timeout_ms: int, max_records: int) -> Callable[[], PollColumns]:
    """The loop's next-poll function: columns straight from the source when it offers them.

    Polling stays on the engine's thread on purpose. A prefetch thread (poll
    k+1 while poll k is decoded) was measured and dropped: kafka-python parses
    records in Python inside poll(), so the two threads only traded the GIL
    -- and starved the client's own network thread -- for a 25% loss;
    librdkafka already prefetches on its own threads. Rebalance callbacks
    also run inside poll(), and this way they run between batches, on the
    thread that owns the engine state.
    """
    poll_columns = source_extras(source).poll_columns
    if poll_columns is not None:
        return lambda: poll_columns(timeout_ms, max_records)
    return lambda: as_columns(source.poll(timeout_ms, max_records))


def poll_until_done(engine: PolledEngine, watch: OutageWatch) -> RunSummary:
    """Start ``engine``, feed it every poll until a reason to stop, finish it; its summary (with outages)."""
    cfg, source, clock = engine.config, engine.source, engine.clock
    extras = source_extras(source)  # capabilities resolved once, not per poll
    source_outage = extras.outage
    engine.start()
    idle = IdleRule(cfg.until_idle_seconds, source, now=time.monotonic())
    last_report = clock.monotonic_ms()
    reason = "stop requested"

    def report(now: float) -> None:
        nonlocal last_report
        tick = clock.monotonic_ms()
        if engine.on_progress is not None and tick - last_report >= cfg.progress_every_seconds * 1000:
            engine.stats.outage = watch.note(now)
            engine.report_progress()
            last_report = tick

    try:
        next_poll = poller(source, timeout_ms=cfg.poll_timeout_ms, max_records=cfg.max_poll_records)
        while engine.stop_reason is None:
            try:
                poll = next_poll()
            except BrokerOutageError as exc:
                # The source cannot poll at all: the checkpoint stays as it
                # is; poll again after a computed backoff, not at once.
                delay = watch.poll_failed(str(exc), now=time.monotonic())
                watch.wait(delay, stop=lambda: engine.stop_reason is not None)
                report(time.monotonic())
                continue
            now = time.monotonic()
            watch.observe(source_outage() if source_outage is not None else None, now)
            if len(poll):
                idle.data_arrived(now)
            engine.feed(poll)
            if (
                not len(poll)
                and cfg.until_idle_seconds is not None
                and idle.idle(now, assigned_at=engine.assigned_at, watch=watch)
            ):
                engine.end_of_input()
                reason = f"idle for {cfg.until_idle_seconds:g}s"
                break
            if not len(poll) and extras.bounded and source.exhausted:
                engine.end_of_input()
                reason = "end of input"
                break
            learned = engine.stats.events_learned
            if cfg.max_events is not None and learned >= cfg.max_events:
                reason = f"learned {learned} >= max_events"
                break
            report(now)
        else:
            reason = engine.stop_reason
    except BaseException:
        engine.close()
        raise
    engine.stats.outage = watch.note()
    return replace(engine.finish(reason), outage=watch.summary())
