"""The prediction metrics, written once: accuracy, log loss, MAE, RMSE, and the one classification rule.

Every layer scores predictions the same way -- the engine's prequential
counters, the gate's holdout, the drift evidence, the backtest windows and the
benchmarks -- so they import from here (``stream.core`` sits below everything).

The rule for "is this classification?" is :func:`is_classification`: **labels
that are integer class indices are classification, anything else is
regression**. The codec emits integer class indices for a classification task
and floats for regression, so code that only holds the labels (the engine, the
gate) and code that holds the task name (:func:`task_of_labels` maps one to
the other) agree.

Sums (``correct``, squared error) are here too, for callers that accumulate
over batches and divide once.

>>> import numpy as np
>>> y = np.array([1, 0, 1, 1])
>>> accuracy(np.array([1, 1, 1, 0]), y)
0.5
>>> round(log_loss(np.array([[0.2, 0.8], [0.9, 0.1]]), np.array([1, 0])), 4)
0.1643
>>> mae(np.array([1.0, 3.0]), np.array([1.0, 1.0])), rmse(np.array([1.0, 3.0]), np.array([1.0, 1.0]))
(1.0, 1.4142135623730951)
>>> is_classification(y), is_classification(y.astype(np.float32)), task_of_labels(y)
(True, False, 'classification')
"""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "CLASSIFICATION",
    "REGRESSION",
    "EPS",
    "accuracy",
    "count_correct",
    "errors",
    "is_classification",
    "log_loss",
    "log_losses",
    "mae",
    "rmse",
    "rmse_from_sum",
    "squared_error",
    "task_of_labels",
]

CLASSIFICATION = "classification"
REGRESSION = "regression"
#: Probabilities are clipped to [EPS, 1] before the log, so a confident miss costs ~34.5, not infinity
#: (the value the backtest metrics have always used).
EPS = 1e-15


def is_classification(y: np.ndarray) -> bool:
    """The one rule: integer labels are class indices (classification); any other dtype is regression."""
    return bool(np.issubdtype(y.dtype, np.integer))


def task_of_labels(y: np.ndarray) -> str:
    """``"classification"`` or ``"regression"`` for these labels (see :func:`is_classification`)."""
    return CLASSIFICATION if is_classification(y) else REGRESSION


def count_correct(pred: np.ndarray, y: np.ndarray) -> int:
    """How many predicted classes equal the labels."""
    return int((np.asarray(pred) == y).sum())


def accuracy(pred: np.ndarray, y: np.ndarray) -> float:
    """The share of predicted classes equal to the labels (``nan`` for no labels)."""
    return float((np.asarray(pred) == y).mean()) if len(y) else math.nan


def log_losses(proba: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per-event negative log likelihood of the true class, from (n, n_classes) probabilities.

    A label beyond the probability columns (a class the model has not grown
    yet) is scored against the last column rather than raising.
    """
    proba = np.asarray(proba, dtype=np.float64)
    picked = proba[np.arange(len(y)), np.clip(y, 0, proba.shape[1] - 1)]
    return -np.log(np.clip(picked, EPS, 1.0))


def log_loss(proba: np.ndarray, y: np.ndarray) -> float:
    """Mean negative log likelihood of the true class (see :func:`log_losses`)."""
    return float(log_losses(proba, y).mean())


def errors(pred: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``pred - y`` as float64 (regression residuals)."""
    return np.asarray(pred, dtype=np.float64) - np.asarray(y, dtype=np.float64)


def squared_error(pred: np.ndarray, y: np.ndarray) -> float:
    """Sum of squared residuals (accumulate it, then :func:`rmse_from_sum`)."""
    err = errors(pred, y)
    return float(err @ err)


def rmse_from_sum(squared_error_sum: float, n: int) -> float | None:
    """Root mean squared error from an accumulated sum; ``None`` for no events."""
    return (squared_error_sum / n) ** 0.5 if n else None


def mae(pred: np.ndarray, y: np.ndarray) -> float:
    """Mean absolute error."""
    return float(np.abs(errors(pred, y)).mean())


def rmse(pred: np.ndarray, y: np.ndarray) -> float:
    """Root mean squared error."""
    err = errors(pred, y)
    return float(np.sqrt((err * err).mean()))
