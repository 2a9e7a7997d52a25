"""Prometheus metrics of a running daemon (``streamlearn run --metrics-port N``).

The serving API has its own ``/metrics``; this is the learning side's: events
learned and read, dead letters by reason, duplicates, lag, and -- the loud
parts -- whether the dead-letter destination is up, how many letters wait
in its on-disk spool, and whether the share of records not learned passed
``--max-dead-letter-rate``. Values are refreshed at every progress report
(``progress_every_seconds``), from the same :class:`~stream.engine.progress.RunStats`
the progress line prints.

Examples
--------
>>> from stream.engine.progress import RunStats
>>> from stream.core.deadletter import SinkStatus
>>> metrics = DaemonMetrics()
>>> stats = RunStats(events_learned=10, dead_letters={"bad json": 2})
>>> stats.dead_letter_status = SinkStatus("t.dlq", down_for_seconds=3.0, spooled=2)
>>> metrics.update(stats)
>>> text = metrics.render().decode()
>>> "streamlearn_dead_letter_destination_up 0.0" in text, "streamlearn_dead_letter_spooled 2.0" in text
(True, True)
>>> from stream.engine.rejects import DeadLetterVerdict
>>> stats.dead_letter_rate = DeadLetterVerdict(records=1000, rejected=700, threshold=0.05, min_records=200)
>>> metrics.update(stats)
>>> text = metrics.render().decode()
>>> "streamlearn_dead_letter_rate 0.7" in text, "streamlearn_dead_letter_rate_exceeded 1.0" in text
(True, True)
"""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Gauge, generate_latest

from stream.core.errors import ConfigError
from stream.engine.progress import ProgressPrinter, RunStats


class DaemonMetrics:
    """Gauges of one engine's :class:`RunStats`, in a registry of their own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self._learned = Gauge(
            "streamlearn_events_learned", "Events learned (cumulative, restored with checkpoints)", registry=r
        )
        self._read = Gauge("streamlearn_events_read", "Records read this run", registry=r)
        self._lag = Gauge("streamlearn_consumer_lag", "Known lag in records (-1: unknown)", registry=r)
        self._dead = Gauge(
            "streamlearn_dead_letters", "Dead letters by reason kind (cumulative)", ["reason"], registry=r
        )
        self._duplicates = Gauge(
            "streamlearn_duplicate_ids", "Records refused as repeats of a recent id", registry=r
        )
        self._rehearsal = Gauge(
            "streamlearn_rehearsal_steps",
            "Extra optimizer steps spent rehearsing recent data while caught up (this run)",
            registry=r,
        )
        self._dl_up = Gauge(
            "streamlearn_dead_letter_destination_up",
            "1 while the dead-letter destination accepts letters",
            registry=r,
        )
        self._dl_down_for = Gauge(
            "streamlearn_dead_letter_destination_down_seconds",
            "Seconds since the dead-letter destination went down (0 while up)",
            registry=r,
        )
        self._spooled = Gauge(
            "streamlearn_dead_letter_spooled", "Dead letters waiting on local disk", registry=r
        )
        self._spool_bytes = Gauge(
            "streamlearn_dead_letter_spool_bytes", "Size of the dead-letter spool", registry=r
        )
        self._dl_rate = Gauge(
            "streamlearn_dead_letter_rate",
            "Share of this run's records not learned (undecodable or late)",
            registry=r,
        )
        self._dl_rate_exceeded = Gauge(
            "streamlearn_dead_letter_rate_exceeded",
            "1 while that share is above --max-dead-letter-rate (judged from its minimum record count on)",
            registry=r,
        )
        self._undeliverable = Gauge(
            "streamlearn_dead_letter_undeliverable",
            "Dead letters the destination refused for good (kept locally)",
            registry=r,
        )

        self._join_pending = Gauge(
            "streamlearn_join_pending",
            "Items waiting in the join of delayed labels, by side (predictions, labels)",
            ["side"],
            registry=r,
        )
        self._join_bytes = Gauge(
            "streamlearn_join_pending_bytes", "Size of the records waiting in the join", registry=r
        )
        self._join_outcomes = Gauge(
            "streamlearn_join_outcomes",
            "What the join did (cumulative): joined, expired_features, expired_labels, evicted, repeated_labels, ...",
            ["outcome"],
            registry=r,
        )

    def update(self, stats: RunStats) -> None:
        self._learned.set(stats.events_learned)
        self._read.set(stats.events_read)
        self._lag.set(-1 if stats.lag is None else stats.lag)
        for reason, count in stats.dead_letters.items():
            self._dead.labels(reason=reason).set(count)
        self._duplicates.set(stats.duplicates)
        self._rehearsal.set(stats.rehearsal_steps)
        status = stats.dead_letter_status
        self._dl_up.set(0 if status is not None and status.down_for_seconds else 1)
        self._dl_down_for.set(status.down_for_seconds if status is not None else 0)
        self._spooled.set(status.spooled if status is not None else 0)
        self._spool_bytes.set(status.spool_bytes if status is not None else 0)
        self._undeliverable.set(status.undeliverable if status is not None else 0)
        verdict = stats.dead_letter_rate
        self._dl_rate.set(verdict.rate if verdict is not None else 0)
        self._dl_rate_exceeded.set(1 if verdict is not None and verdict.exceeded else 0)
        if stats.join is not None:
            self._update_join(stats.join)

    def _update_join(self, join: dict) -> None:
        self._join_pending.labels(side="predictions").set(join["pending_features"])
        self._join_pending.labels(side="labels").set(join["pending_labels"])
        self._join_bytes.set(join["pending_bytes"])
        for outcome, count in join.items():
            if not outcome.startswith("pending"):
                self._join_outcomes.labels(outcome=outcome).set(count)

    def render(self) -> bytes:
        """The exposition text (what ``GET /metrics`` answers)."""
        return generate_latest(self.registry)

    def serve(self, port: int, host: str = "127.0.0.1"):
        """Serve ``/metrics`` on ``host:port`` from a daemon thread; returns the server (``shutdown()`` stops it)."""
        from prometheus_client import start_http_server

        server, _thread = start_http_server(port, addr=host, registry=self.registry)
        return server


def progress_reporter(quiet: bool, metrics_port: int | None):
    """The progress line (unless ``quiet``) and, with a port, Prometheus gauges refreshed at the same pace.

    Raises
    ------
    ConfigError
        The port cannot be listened on.
    """
    printer = None if quiet else ProgressPrinter()
    if metrics_port is None:
        return printer
    metrics = DaemonMetrics()
    host = os.environ.get("STREAMLEARN_METRICS_HOST", "127.0.0.1")
    try:
        metrics.serve(metrics_port, host)
    except OSError as exc:
        raise ConfigError(
            f"--metrics-port {metrics_port}: cannot listen on {host}:{metrics_port} ({exc.strerror}); "
            "pick a free port"
        ) from None

    def report(stats) -> None:
        if printer is not None:
            printer(stats)
        metrics.update(stats)

    return report
