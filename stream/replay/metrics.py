"""Per-window prequential metrics of one backtest configuration (an engine observer).

Every micro-batch is one window: before the engine learns it, the collector
scores it -- accuracy and log loss from the live model's class probabilities
for classification, MAE and RMSE for regression -- and counts per-class hits.
After it is learned, the collector notes the engine time it took, and what
happened on it: drift alarms, the drift policy's decisions and the versions
the validation gate published. :meth:`WindowMetrics.result` is the
configuration's part of the backtest result (see ``stream.replay.report``).

Examples
--------
>>> import numpy as np
>>> from learners.base import LearnReport
>>> from stream.engine.observer import BatchOutcome
>>> from stream.core.records import Events, MicroBatch
>>> class Half:   # predicts class 0 with probability 0.75
...     def predict_proba_batch(self, X): return np.tile([0.75, 0.25], (len(X), 1))
>>> ev = Events(X=np.zeros((4, 1), np.float32), y=np.array([0, 0, 1, 1]), ts=np.arange(4) * 1000,
...             ids=np.array(list("abcd")), topic=np.array(["t"] * 4), partition=np.zeros(4, np.int32),
...             offset=np.arange(4))
>>> m = WindowMetrics("classification", n_classes=2)
>>> m.before_learn(MicroBatch(ev, 0), np.zeros(4, np.int64), Half())
>>> m.after_learn(MicroBatch(ev, 0), BatchOutcome(LearnReport(4), None, None, None, seconds=0.001))
>>> w = m.result()["windows"]
>>> w["accuracy"], round(w["log_loss"][0], 4), m.result()["per_class"]["accuracy"]
([0.5], 0.837, [1.0, 0.0])
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from stream.core import metrics
from stream.core.records import MicroBatch
from stream.engine.observer import BatchOutcome

__all__ = ["WindowMetrics"]


class WindowMetrics:
    """Collects one configuration's windows and markers (see the module docstring)."""

    def __init__(self, task: str, n_classes: int | None) -> None:
        """``n_classes`` ``None``: inferred by the codec; the per-class tallies grow with the labels."""
        self.task = task
        self.n_classes = n_classes or 2
        self.columns: dict[str, list] = {
            k: []
            for k in (
                "end_event",
                "events",
                "ts_start",
                "ts_end",
                "accuracy",
                "log_loss",
                "mae",
                "rmse",
                "events_per_second",
            )
        }
        self.markers: list[dict[str, Any]] = []
        self.seen = 0
        self.engine_seconds = 0.0
        self.scoring_seconds = 0.0  # this collector's own time (class probabilities), not the engine's
        self._support = np.zeros(self.n_classes, np.int64)
        self._hits = np.zeros(self.n_classes, np.int64)
        self._sums = {"correct": 0, "log_loss": 0.0, "abs": 0.0, "sq": 0.0, "n": 0}
        self._pending: dict[str, Any] | None = None

    # ---------------------------------------------------------- observer API
    def before_learn(self, batch: MicroBatch, pred: np.ndarray | None, learner: Any) -> None:
        started = time.perf_counter()
        y = batch.y
        n = len(y)
        row: dict[str, Any] = {"accuracy": None, "log_loss": None, "mae": None, "rmse": None}
        if pred is None:
            pred = learner.predict_batch(batch.X)
        if self.task == "classification":
            correct = pred == y
            row["accuracy"] = metrics.accuracy(pred, y)
            loss = metrics.log_losses(learner.predict_proba_batch(batch.X), y)
            row["log_loss"] = float(loss.mean())
            if n and int(y.max()) >= self.n_classes:  # a class the label map grew to
                grow = int(y.max()) + 1 - self.n_classes
                self._support = np.concatenate([self._support, np.zeros(grow, np.int64)])
                self._hits = np.concatenate([self._hits, np.zeros(grow, np.int64)])
                self.n_classes += grow
            self._support += np.bincount(y, minlength=self.n_classes)[: self.n_classes]
            self._hits += np.bincount(y[correct], minlength=self.n_classes)[: self.n_classes]
            self._sums["correct"] += int(correct.sum())
            self._sums["log_loss"] += float(loss.sum())
        else:
            err = metrics.errors(pred, y)
            row["mae"] = metrics.mae(pred, y)
            row["rmse"] = metrics.rmse(pred, y)
            self._sums["abs"] += float(np.abs(err).sum())
            self._sums["sq"] += float(err @ err)
        self._sums["n"] += n
        self._pending = row
        self.scoring_seconds += time.perf_counter() - started

    def after_learn(self, batch: MicroBatch, outcome: BatchOutcome) -> None:
        row = self._pending or {"accuracy": None, "log_loss": None, "mae": None, "rmse": None}
        self._pending = None
        n = len(batch)
        self.seen += n
        self.engine_seconds += outcome.seconds
        ts = batch.ts
        cols = self.columns
        cols["end_event"].append(self.seen)
        cols["events"].append(n)
        cols["ts_start"].append(int(ts.min()) if n and ts.min() > 0 else None)
        cols["ts_end"].append(int(ts.max()) if n and ts.max() > 0 else None)
        for key, value in row.items():
            cols[key].append(value)
        cols["events_per_second"].append(n / outcome.seconds if outcome.seconds > 0 else None)
        where = {"event": self.seen, "batch": len(cols["events"]) - 1, "ts": cols["ts_end"][-1]}
        if outcome.alarm is not None:
            stats = outcome.alarm.get("evidence") or {}
            detail = f"{outcome.alarm.get('detector')} {outcome.alarm.get('level')}"
            if stats:
                detail += " (" + ", ".join(f"{k} {_short(v)}" for k, v in list(stats.items())[:4]) + ")"
            self.markers.append({"kind": "alarm", **where, "detail": detail})
        if outcome.decision is not None:
            d = outcome.decision
            version = f" (v{d.version.number})" if d.version is not None else ""
            self.markers.append({"kind": d.kind, **where, "detail": d.reason + version})
        if outcome.version is not None:
            v = outcome.version
            metrics = ", ".join(f"{k} {_short(x)}" for k, x in v.metrics.items())
            self.markers.append({"kind": v.status, **where, "detail": f"v{v.number}: {metrics}"})

    # --------------------------------------------------------------- result
    def result(self) -> dict[str, Any]:
        """Windows, per-class accuracy, markers and the overall metrics of this configuration."""
        s = self._sums
        n = s["n"]
        classification = self.task == "classification"
        overall = {
            "accuracy": s["correct"] / n if n and classification else None,
            "log_loss": s["log_loss"] / n if n and classification else None,
            "mae": s["abs"] / n if n and not classification else None,
            "rmse": metrics.rmse_from_sum(s["sq"], n) if not classification else None,
        }
        per_class = None
        if classification:
            per_class = {
                "classes": list(range(self.n_classes)),
                "support": self._support.tolist(),
                "accuracy": [float(h / c) if c else None for h, c in zip(self._hits, self._support)],
            }
        return {
            "windows": {k: list(v) for k, v in self.columns.items()},
            "per_class": per_class,
            "markers": list(self.markers),
            "overall": overall,
        }


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
