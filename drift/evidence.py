"""The evidence behind a drift decision: two models scored on the same events, and a reference level.

:class:`PairedEvidence` accumulates, batch by batch, how the live model and
the validated snapshot did on the *same* events, with a one-sided paired test
of "the snapshot is better": McNemar's exact test on the discordant pairs for
classification (events exactly one of the two got right), a paired t-test on
squared errors for regression. :class:`RecentLevel` is the live model's
prequential metric over its last few batches before an alarm: the level a
"degraded" model has fallen from.

Metrics are accuracy (higher is better) for classification and RMSE (lower is
better) for regression; everything here is plain data, so it goes into the
checkpoint and into audit events as is.

Examples
--------
>>> import numpy as np
>>> ev = PairedEvidence("classification")
>>> y = np.array([0, 1] * 100)
>>> ev.add(y, live=1 - y, snapshot=y)             # live wrong everywhere, snapshot right
>>> ev.live_metric, ev.snapshot_metric, ev.p_snapshot_better() < 1e-10
(0.0, 1.0, True)
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np
from scipy import stats

from stream.core import metrics

__all__ = ["PairedEvidence", "RecentLevel", "batch_errors"]


def batch_errors(task: str, pred: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per-event errors: 1.0/0.0 for a wrong/right class, the absolute error for regression."""
    if task == metrics.CLASSIFICATION:
        return (np.asarray(pred) != y).astype(np.float64)
    return np.abs(metrics.errors(pred, y))


@dataclass
class PairedEvidence:
    """Live and snapshot predictions on the same events, accumulated (see the module docstring)."""

    task: str
    n: int = 0
    # Classification: correct counts and the discordant pairs.
    live_correct: int = 0
    snapshot_correct: int = 0
    only_snapshot_right: int = 0
    only_live_right: int = 0
    # Regression: squared-error sums and the moments of d = live_se - snapshot_se.
    live_se: float = 0.0
    snapshot_se: float = 0.0
    diff_sum: float = 0.0
    diff_sq: float = 0.0
    batches: int = 0
    offsets: dict = field(default_factory=dict)

    def add(
        self,
        y: np.ndarray,
        live: np.ndarray,
        snapshot: np.ndarray,
        offsets: Mapping[str, list[int]] | None = None,
    ) -> None:
        """Score one batch; ``offsets`` (``"topic:partition" -> [lo, hi]``) joins the evidence window."""
        self.n += len(y)
        self.batches += 1
        if self.task == "classification":
            lr, sr = np.asarray(live) == y, np.asarray(snapshot) == y
            self.live_correct += int(lr.sum())
            self.snapshot_correct += int(sr.sum())
            self.only_snapshot_right += int((sr & ~lr).sum())
            self.only_live_right += int((lr & ~sr).sum())
        else:
            yf = y.astype(np.float64)
            lse = (np.asarray(live, dtype=np.float64) - yf) ** 2
            sse = (np.asarray(snapshot, dtype=np.float64) - yf) ** 2
            d = lse - sse
            self.live_se += float(lse.sum())
            self.snapshot_se += float(sse.sum())
            self.diff_sum += float(d.sum())
            self.diff_sq += float(d @ d)
        for key, (lo, hi) in (offsets or {}).items():
            known = self.offsets.get(key)
            self.offsets[key] = [lo, hi] if known is None else [min(known[0], lo), max(known[1], hi)]

    def absorb(self, other: PairedEvidence) -> None:
        """Add ``other``'s events (scored on other batches) to this evidence."""
        for name in (
            "n", "batches", "live_correct", "snapshot_correct", "only_snapshot_right", "only_live_right",
            "live_se", "snapshot_se", "diff_sum", "diff_sq",
        ):  # fmt: skip
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for key, (lo, hi) in other.offsets.items():
            known = self.offsets.get(key)
            self.offsets[key] = [lo, hi] if known is None else [min(known[0], lo), max(known[1], hi)]

    def _metric(self, correct: int, se: float) -> float:
        if self.n == 0:
            return math.nan
        return correct / self.n if self.task == "classification" else math.sqrt(se / self.n)

    @property
    def live_metric(self) -> float:
        return self._metric(self.live_correct, self.live_se)

    @property
    def snapshot_metric(self) -> float:
        return self._metric(self.snapshot_correct, self.snapshot_se)

    def p_snapshot_better(self) -> float:
        """One-sided p-value of "the snapshot is better than the live model on these events"."""
        if self.task == "classification":
            discordant = self.only_snapshot_right + self.only_live_right
            if discordant == 0:
                return 1.0
            return float(
                stats.binomtest(self.only_snapshot_right, discordant, 0.5, alternative="greater").pvalue
            )
        if self.n < 2:
            return 1.0
        mean = self.diff_sum / self.n
        var = max(self.diff_sq / self.n - mean * mean, 0.0) * self.n / (self.n - 1)
        if var == 0:
            return 0.0 if mean > 0 else 1.0
        t = mean / math.sqrt(var / self.n)
        return float(stats.t.sf(t, df=self.n - 1))

    def to_dict(self) -> dict[str, Any]:
        """Plain data (the checkpoint and the audit trail)."""
        return {
            "task": self.task,
            "n": self.n,
            "batches": self.batches,
            "live_correct": self.live_correct,
            "snapshot_correct": self.snapshot_correct,
            "only_snapshot_right": self.only_snapshot_right,
            "only_live_right": self.only_live_right,
            "live_se": self.live_se,
            "snapshot_se": self.snapshot_se,
            "diff_sum": self.diff_sum,
            "diff_sq": self.diff_sq,
            "offsets": {k: list(v) for k, v in self.offsets.items()},
        }

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> PairedEvidence:
        return cls(
            **{**doc, "offsets": {str(k): [int(v[0]), int(v[1])] for k, v in doc.get("offsets", {}).items()}}
        )


class RecentLevel:
    """The live model's prequential metric over its last ``batches`` batches.

    Fed the per-event errors of :func:`batch_errors` (which the detectors
    get too), so a batch is compared with its labels once.

    >>> level = RecentLevel("classification", batches=2)
    >>> for wrong in (5, 1, 3):                       # accuracy 0.5, 0.9, 0.7
    ...     level.add(np.array([1.0] * wrong + [0.0] * (10 - wrong)))
    >>> round(level.metric, 2)
    0.8
    """

    def __init__(self, task: str, batches: int = 10) -> None:
        self.task = task
        self._window: deque[tuple[float, int]] = deque(maxlen=batches)

    def add(self, errors: np.ndarray) -> None:
        """One batch's errors: 0/1 (classification) or absolute errors (regression)."""
        if self.task == "classification":
            self._window.append((float(len(errors) - errors.sum()), len(errors)))
        else:
            self._window.append((float(errors @ errors), len(errors)))

    @property
    def metric(self) -> float:
        n = sum(k for _, k in self._window)
        if n == 0:
            return math.nan
        total = sum(s for s, _ in self._window)
        return total / n if self.task == "classification" else math.sqrt(total / n)

    @property
    def events(self) -> int:
        return sum(k for _, k in self._window)

    def clear(self) -> None:
        self._window.clear()

    def snapshot(self) -> list[list[float]]:
        return [[s, n] for s, n in self._window]

    def restore(self, rows: list) -> None:
        self._window.clear()
        for s, n in rows or []:
            self._window.append((float(s), int(n)))
