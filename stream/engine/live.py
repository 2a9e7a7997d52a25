"""Live accuracy of the versions that actually served: scored from joined labels, per version, exactly once.

Each joined pair (:mod:`stream.engine.join`) says which version answered, what
it answered and, now, what was true. :class:`LiveScores` keeps sums per
version -- served, and shadow (scored beside it, never answered with) --
checkpointed with the join, so a label is scored once however often the
daemon restarts. :meth:`LiveScores.document` is what the daemon records in
the registry (``registry.record_live``) for the API, ``inspect`` and people.

A version is **flagged** when it does worse live than on its holdout: at
least ``min_labelled`` labels, and live accuracy more than ``tolerance``
below its holdout accuracy (classification), or live RMSE more than
``tolerance`` (relative) above its holdout RMSE (regression).

Classification is a prediction with probabilities: a hit is the label equal
to the prediction (numbers compare as numbers, anything else as text); the
log loss takes the label's probability by its place in ``classes`` (or its
value as an index when the version had no class names), clipped like every
metric here (:data:`stream.core.metrics.EPS`). A prediction without
probabilities is scored as regression (MAE, RMSE) when both are numbers.

Examples
--------
>>> from stream.core.feedback import Label, LoggedPrediction
>>> from stream.engine.join import Joined
>>> live = LiveScores()
>>> for pred, y in (("yes", "yes"), ("yes", "no"), ("no", "no")):
...     p = LoggedPrediction("i", [0.0], 3, pred, [0.2, 0.8] if pred == "yes" else [0.9, 0.1], ["no", "yes"])
...     live.add(Joined(p, Label("i", y)))
>>> doc = live.document(holdout=lambda v: {"holdout_accuracy": 0.95})
>>> s = doc["served"]["3"]
>>> s["n"], round(s["accuracy"], 3), round(s["log_loss"], 3), s["flagged"]
(3, 0.667, 0.646, False)
>>> LiveScores.from_snapshot(live.snapshot()).document()["served"]["3"]["correct"]
2
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Mapping

from stream.core.metrics import EPS
from stream.engine.join import Joined

__all__ = ["LiveScores", "VersionScore"]

#: Labels needed before a version can be flagged: fewer say little.
MIN_LABELLED = 200
#: How much worse than its holdout a version may do live before it is flagged.
TOLERANCE = 0.05

Holdout = Callable[[int], Mapping[str, float] | None]


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _same(a: Any, b: Any) -> bool:
    if _number(a) and _number(b):
        return float(a) == float(b)
    return str(a) == str(b)


def _label_index(y: Any, classes: list | None, k: int) -> int | None:
    if classes:
        return next((i for i, c in enumerate(classes) if _same(c, y)), None)
    if _number(y) and float(y).is_integer() and 0 <= int(y) < k:
        return int(y)
    return None


@dataclass
class VersionScore:
    """Sums of one version's live predictions (plain numbers: they are checkpointed as they are)."""

    n: int = 0
    classified: int = 0
    correct: int = 0
    with_probabilities: int = 0
    log_loss_sum: float = 0.0
    regressed: int = 0
    abs_error_sum: float = 0.0
    squared_error_sum: float = 0.0

    def add(self, prediction: Any, probabilities: list | None, classes: list | None, y: Any) -> None:
        self.n += 1
        if probabilities:
            self.classified += 1
            self.correct += int(_same(prediction, y))
            self.with_probabilities += 1
            at = _label_index(y, classes, len(probabilities))
            p = float(probabilities[at]) if at is not None else 0.0
            self.log_loss_sum += -math.log(min(max(p, EPS), 1.0))
        elif _number(prediction) and _number(y):
            self.regressed += 1
            error = float(prediction) - float(y)
            self.abs_error_sum += abs(error)
            self.squared_error_sum += error * error
        else:  # a label without probabilities: right or wrong is all there is to say
            self.classified += 1
            self.correct += int(_same(prediction, y))

    def summary(self) -> dict:
        c, r = self.classified, self.regressed
        return {
            "n": self.n,
            "task": "classification" if c >= r else "regression",
            "correct": self.correct,
            "accuracy": self.correct / c if c else None,
            "log_loss": self.log_loss_sum / self.with_probabilities if self.with_probabilities else None,
            "mae": self.abs_error_sum / r if r else None,
            "rmse": math.sqrt(self.squared_error_sum / r) if r else None,
        }


def _flag(summary: dict, holdout: Mapping[str, float] | None, min_labelled: int, tolerance: float) -> str:
    """Why a version does worse live than on its holdout ('' when it does not, or cannot be said yet)."""
    if not holdout or summary["n"] < min_labelled:
        return ""
    acc, base = summary["accuracy"], holdout.get("holdout_accuracy")
    if acc is not None and base is not None and acc < base - tolerance:
        return f"live accuracy {acc:.3f} over {summary['n']} labels is below its holdout accuracy {base:.3f}"
    rmse, base = summary["rmse"], holdout.get("holdout_rmse")
    if rmse is not None and base is not None and rmse > base * (1 + tolerance) + 1e-12:
        return f"live RMSE {rmse:.4g} over {summary['n']} labels is above its holdout RMSE {base:.4g}"
    return ""


class LiveScores:
    """Per-version live sums, served and shadow; see the module docstring."""

    def __init__(self) -> None:
        self.served: dict[int, VersionScore] = {}
        self.shadow: dict[int, VersionScore] = {}

    def add(self, pair: Joined) -> None:
        """Score one joined pair: its served version, and each shadow version that answered it."""
        p, y = pair.prediction, pair.label.y
        if p.version is not None:
            self.served.setdefault(p.version, VersionScore()).add(p.prediction, p.probabilities, p.classes, y)
        for version, answer in p.shadow.items():
            self.shadow.setdefault(version, VersionScore()).add(
                answer.prediction, answer.probabilities, answer.classes, y
            )

    def document(
        self,
        holdout: Holdout = lambda version: None,
        *,
        join: Mapping[str, int] | None = None,
        min_labelled: int = MIN_LABELLED,
        tolerance: float = TOLERANCE,
    ) -> dict:
        """The registry's live-metrics document: per version its figures, its holdout accuracy and its flag."""
        doc: dict[str, Any] = {"updated_at": time.time()}
        for role, scores in (("served", self.served), ("shadow", self.shadow)):
            entries = {}
            for version, score in sorted(scores.items()):
                summary = score.summary()
                metrics = holdout(version)
                reason = _flag(summary, metrics, min_labelled, tolerance)
                summary["holdout_accuracy"] = (metrics or {}).get("holdout_accuracy")
                summary["holdout_rmse"] = (metrics or {}).get("holdout_rmse")
                summary["flagged"], summary["flag_reason"] = bool(reason), reason
                entries[str(version)] = summary
            doc[role] = entries
        if join is not None:
            doc["join"] = dict(join)
        return doc

    def snapshot(self) -> dict:
        return {
            role: {str(v): asdict(s) for v, s in scores.items()}
            for role, scores in (("served", self.served), ("shadow", self.shadow))
        }

    @classmethod
    def from_snapshot(cls, snap: dict | None) -> LiveScores:
        live = cls()
        for role in ("served", "shadow"):
            for version, sums in (snap or {}).get(role, {}).items():
                getattr(live, role)[int(version)] = VersionScore(**sums)
        return live
