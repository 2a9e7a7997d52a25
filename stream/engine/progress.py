"""Run statistics and the live progress line printed by ``streamlearn run``.

Examples
--------
>>> stats = RunStats()
>>> stats.observe_predictions(correct=9, total=10)
>>> round(stats.accuracy, 2)
0.9
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, TextIO

from stream.core import metrics

if TYPE_CHECKING:
    from stream.core.deadletter import SinkStatus
    from stream.engine.rejects import DeadLetterVerdict


@dataclass
class RunStats:
    """Counters of one engine; the cumulative ones are restored from checkpoints."""

    events_learned: int = 0
    batches_learned: int = 0
    events_read: int = 0
    late: int = 0
    checkpoints: int = 0
    correct: int = 0
    predicted: int = 0
    squared_error: float = 0.0
    last_loss: float | None = None
    dead_letters: dict[str, int] = field(default_factory=dict)
    #: Events refused because their id was taken in recently (dead-lettered or dropped).
    duplicates: int = 0
    #: Extra optimizer steps spent rehearsing recent data (not learning new events).
    rehearsal_steps: int = 0
    lag: int | None = None
    #: One line while the broker is out of reach, e.g. "broker unreachable for 12s, retrying".
    outage: str | None = None
    #: The dead-letter destination's health (``None`` with ``--dead-letter none``).
    dead_letter_status: SinkStatus | None = None
    #: This run's share of records not learned, against its threshold (set at each report).
    dead_letter_rate: DeadLetterVerdict | None = None
    #: With ``--labels-topic``: the join's counters and state size (:meth:`stream.engine.join.LabelJoin.report`).
    join: dict | None = None

    @property
    def accuracy(self) -> float | None:
        """Prequential (test-then-train) accuracy so far."""
        return self.correct / self.predicted if self.predicted else None

    @property
    def rmse(self) -> float | None:
        return metrics.rmse_from_sum(self.squared_error, self.predicted)

    def observe_predictions(self, *, correct: int = 0, total: int, squared_error: float = 0.0) -> None:
        self.correct += correct
        self.predicted += total
        self.squared_error += squared_error

    def counters(self) -> dict:
        """The cumulative part, as plain data for the checkpoint."""
        return {
            "events_learned": self.events_learned,
            "batches_learned": self.batches_learned,
            "late": self.late,
            "correct": self.correct,
            "predicted": self.predicted,
            "squared_error": self.squared_error,
            "dead_letters": dict(self.dead_letters),
            "duplicates": self.duplicates,
        }

    @classmethod
    def from_counters(cls, counters: dict) -> RunStats:
        return cls(
            events_learned=int(counters.get("events_learned", 0)),
            batches_learned=int(counters.get("batches_learned", 0)),
            late=int(counters.get("late", 0)),
            correct=int(counters.get("correct", 0)),
            predicted=int(counters.get("predicted", 0)),
            squared_error=float(counters.get("squared_error", 0.0)),
            dead_letters=dict(counters.get("dead_letters", {})),
            duplicates=int(counters.get("duplicates", 0)),
        )


class ProgressPrinter:
    """Prints one status line per call: rate since the last line, totals, loss, lag."""

    def __init__(self, stream: TextIO | None = None, extra: Callable[[], str | None] | None = None) -> None:
        self.stream = stream or sys.stderr
        self.extra = extra  # e.g. the demo's "serving v12"
        self._last_time = time.monotonic()
        self._last_events = None

    def __call__(self, stats: RunStats) -> None:
        now = time.monotonic()
        last = stats.events_learned if self._last_events is None else self._last_events
        rate = (stats.events_learned - last) / max(now - self._last_time, 1e-9)
        self._last_time, self._last_events = now, stats.events_learned
        parts = [
            f"learned {stats.events_learned:,}",
            f"{rate:,.0f} ev/s",
            f"batches {stats.batches_learned:,}",
            f"lag {stats.lag:,}" if stats.lag is not None else "lag ?",
        ]
        if stats.outage:
            parts.append(stats.outage)
        if stats.last_loss is not None:
            parts.append(f"loss {stats.last_loss:.4f}")
        if stats.accuracy is not None:
            parts.append(f"acc {stats.accuracy:.3f}")
        dead = sum(stats.dead_letters.values())
        if dead or stats.late:
            parts.append(f"dead-letter {dead:,} late {stats.late:,}")
        if stats.duplicates:
            parts.append(f"duplicates {stats.duplicates:,}")
        if stats.join is not None:
            j = stats.join
            parts.append(f"joined {j['joined']:,} waiting {j['pending_features'] + j['pending_labels']:,}")
        verdict = stats.dead_letter_rate
        if verdict is not None and verdict.exceeded:
            parts.append(f"WARNING dead-letter rate {verdict.rate:.1%} > {verdict.threshold:g}")
        if stats.dead_letter_status is not None and not stats.dead_letter_status.healthy:
            parts.append(f"WARNING {stats.dead_letter_status.describe()}")
        more = self.extra() if self.extra is not None else None
        if more:
            parts.append(more)
        print("[streamlearn] " + " | ".join(parts), file=self.stream, flush=True)
