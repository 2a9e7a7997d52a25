"""An open drift alarm: what fired, the evidence so far, and the wait for a burst to end.

A burst of corrupt data that is still going on looks like a change of the
world: the validated snapshot scores as badly as the live model on the bad
events, and the live model, learning them, even catches up. The two part
only when the burst ends -- the old world comes back, the snapshot is right
again and the live model, which learned the bad events, is clearly worse. So
after the evidence window an *adapt* verdict waits: :class:`OpenAlarm` keeps
scoring both models on the latest batches (:class:`RecentEvidence`) until the
burst is over (a rollback, or a dismissal if the live model held up) or the
anomaly has lasted ``burst_events`` -- then it is a change, and the policy
adapts. Everything here is plain data for the checkpoint.

Examples
--------
>>> import numpy as np
>>> recent = RecentEvidence("classification", min_events=300)
>>> y = np.zeros(200, dtype=int)
>>> for _ in range(4):
...     recent.add(y, live=1 - y, snapshot=y)
>>> window = recent.window()
>>> window.n, window.batches, window.snapshot_metric
(400, 2, 1.0)
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from drift.evidence import PairedEvidence

__all__ = ["OpenAlarm", "RecentEvidence"]


class RecentEvidence:
    """Paired evidence over the latest batches that hold at least ``min_events`` events."""

    def __init__(self, task: str, min_events: int, batches: list[PairedEvidence] | None = None) -> None:
        self.task = task
        self.min_events = min_events
        self._batches: deque[PairedEvidence] = deque(batches or [])

    def add(
        self, y: np.ndarray, live: np.ndarray, snapshot: np.ndarray, offsets: Mapping | None = None
    ) -> None:
        ev = PairedEvidence(self.task)
        ev.add(y, live, snapshot, offsets)
        self._batches.append(ev)
        # Keep the shortest run of latest batches that still holds min_events: the
        # end of a burst shows as soon as possible, not diluted by the burst itself.
        while len(self._batches) > 1 and self.events - self._batches[0].n >= self.min_events:
            self._batches.popleft()

    @property
    def events(self) -> int:
        return sum(b.n for b in self._batches)

    def window(self) -> PairedEvidence:
        """The latest batches' evidence, merged."""
        merged = PairedEvidence(self.task)
        for ev in self._batches:
            merged.absorb(ev)
        return merged

    def to_dict(self) -> list[dict]:
        return [ev.to_dict() for ev in self._batches]

    @classmethod
    def from_dict(cls, task: str, min_events: int, rows: list | None) -> RecentEvidence:
        return cls(task, min_events, [PairedEvidence.from_dict(r) for r in rows or []])


@dataclass
class OpenAlarm:
    """An open alarm: what fired, the level before it, and the evidence so far.

    ``evidence`` (and ``older``) cover the evidence window, the first batches
    after the alarm; ``recent`` (and ``recent_older``) the latest batches,
    which decide while the policy waits for a burst to end (``waiting``).
    ``after_events`` counts the events seen since the alarm.
    """

    signal: dict
    batch: int
    offsets: dict
    reference: float
    evidence: PairedEvidence
    recent: RecentEvidence
    snapshot_version: int | None = None
    at: float = field(default_factory=time.time)
    #: Live vs each older validated version (by number), scored on the same events.
    older: dict[int, PairedEvidence] = field(default_factory=dict)
    recent_older: dict[int, RecentEvidence] = field(default_factory=dict)
    waiting: bool = False
    after_events: int = 0

    def compare_older(self, numbers) -> None:
        """Score these older validated versions too, from now on."""
        self.older = {n: PairedEvidence(self.evidence.task) for n in numbers}
        self.recent_older = {n: RecentEvidence(self.recent.task, self.recent.min_events) for n in numbers}

    def record(
        self,
        y: np.ndarray,
        live: np.ndarray,
        snapshot: np.ndarray,
        older: Mapping[int, np.ndarray],
        offsets: Mapping,
    ) -> None:
        """One batch scored by every model: into the evidence window (until the wait) and the recent one."""
        self.after_events += len(y)
        if not self.waiting:
            self.evidence.add(y, live, snapshot, offsets)
            for number, pred in older.items():
                self.older[number].add(y, live, pred, offsets)
        self.recent.add(y, live, snapshot, offsets)
        for number, pred in older.items():
            self.recent_older[number].add(y, live, pred, offsets)

    def wait_details(self) -> dict[str, Any]:
        """What the wait for a burst's end saw (for the decision's evidence)."""
        recent = self.recent.window()
        return {
            "waited_events": self.after_events,
            "recent": {
                "live": _num(recent.live_metric),
                "snapshot": _num(recent.snapshot_metric),
                "events": recent.n,
            },
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "signal": self.signal,
            "batch": self.batch,
            "offsets": self.offsets,
            "reference": _num(self.reference),
            "evidence": self.evidence.to_dict(),
            "snapshot_version": self.snapshot_version,
            "at": self.at,
            "older": {str(n): e.to_dict() for n, e in self.older.items()},
            "recent": self.recent.to_dict(),
            "recent_older": {str(n): r.to_dict() for n, r in self.recent_older.items()},
            "waiting": self.waiting,
            "after_events": self.after_events,
        }

    @classmethod
    def from_dict(cls, a: Mapping[str, Any], min_events: int) -> OpenAlarm:
        """Restore :meth:`to_dict`; a checkpoint from before the wait existed starts with no recent evidence."""
        evidence = PairedEvidence.from_dict(a["evidence"])
        task = evidence.task
        older = {int(n): PairedEvidence.from_dict(e) for n, e in (a.get("older") or {}).items()}
        rows = a.get("recent_older") or {}
        return cls(
            signal=dict(a["signal"]),
            batch=int(a["batch"]),
            offsets=dict(a["offsets"]),
            reference=math.nan if a["reference"] is None else float(a["reference"]),
            evidence=evidence,
            recent=RecentEvidence.from_dict(task, min_events, a.get("recent")),
            snapshot_version=a.get("snapshot_version"),
            at=float(a["at"]),
            older=older,
            recent_older={n: RecentEvidence.from_dict(task, min_events, rows.get(str(n))) for n in older},
            waiting=bool(a.get("waiting", False)),
            after_events=int(a.get("after_events", evidence.n)),
        )


def _num(x: float) -> float | None:
    """JSON has no NaN: an undefined metric is null."""
    return None if math.isnan(x) else float(x)
