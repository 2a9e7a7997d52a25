"""What the batch stages share: the live model they act on and the record of one batch on its way through.

:class:`LiveModel` is the engine's learner and ledger, held in one place
because a stage may replace them (an adopted retrain swaps both).
:class:`BatchContext` is made once per micro-batch and filled in by the
stages of :mod:`stream.engine.stages` in order: the prediction, the drift
policy's decision, whether validation is held, the version published or
adopted, the learn report.

Examples
--------
>>> from stream.testing.doubles import make_batch
>>> ctx = BatchContext(make_batch(4, n_features=2), started=0.0)
>>> ctx.prediction is None and ctx.decision is None and not ctx.held
True
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from learners.base import Learner, LearnReport
from stream.core.records import MicroBatch
from stream.engine.ledger import LearnLedger

if TYPE_CHECKING:
    from drift.policy import Decision
    from serving.registry.versions import Version

__all__ = ["BatchContext", "LiveModel", "ScoredRows"]


@dataclass(slots=True)
class LiveModel:
    """The learner being trained and, with ``--ledger``, the ids it has learned."""

    learner: Learner | None = None
    ledger: LearnLedger | None = None


@dataclass(slots=True)
class BatchContext:
    """One micro-batch and what the stages did with it so far.

    ``prediction``: the live model's prediction on the batch before learning
    it (``None`` when not made, or when the learner changed since); with
    chunked test-then-train, each chunk's prediction before learning that
    chunk, and ``proba`` their class probabilities when an observer wants them.
    ``decision``: the drift policy's decision on this batch. ``alarm``: the
    signal of a drift alarm opened on it. ``held``: validation must not run
    on it (an alarm is open, a decision was taken, or a retrain was adopted).
    ``version``: the version the gate published with this batch as holdout,
    or the adopted retrain's. ``report``: what learning it did.
    ``started``/``observed``: when the engine took it up and the observer's
    own time on it (:func:`time.perf_counter` seconds), for the observer's
    engine-time figure.
    """

    batch: MicroBatch
    started: float
    prediction: np.ndarray | None = None
    decision: Decision | None = None
    alarm: dict[str, Any] | None = None
    held: bool = False
    version: Version | None = None
    report: LearnReport | None = None
    observed: float = 0.0
    proba: np.ndarray | None = None


class ScoredRows:
    """A batch's chunked prequential predictions, answering for those rows as a learner would.

    With chunked test-then-train the observer hears of the batch after the
    learner learned it; asking that learner would score rows it has just
    learned. It gets this instead: the predictions (and probabilities) made
    before each chunk was learned, for the rows of this batch only.

    >>> rows = ScoredRows(np.array([1, 0]), np.array([[0.2, 0.8], [0.6, 0.4]]))
    >>> rows.predict_batch(np.zeros((2, 3))).tolist(), rows.predict_proba_batch(np.zeros((2, 3))).shape
    ([1, 0], (2, 2))
    """

    __slots__ = ("prediction", "proba")

    def __init__(self, prediction: np.ndarray, proba: np.ndarray | None) -> None:
        self.prediction, self.proba = prediction, proba

    def _check(self, X: np.ndarray) -> None:
        if len(X) != len(self.prediction):
            raise ValueError(f"these predictions are for {len(self.prediction)} rows, not {len(X)}")

    def predict_batch(self, X: np.ndarray) -> np.ndarray:
        self._check(X)
        return self.prediction

    def predict_proba_batch(self, X: np.ndarray) -> np.ndarray:
        self._check(X)
        if self.proba is None:
            raise ValueError("no class probabilities were kept for this batch (regression)")
        return self.proba
