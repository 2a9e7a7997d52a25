"""The learner contract every incremental learner honours.

Verbs carry their cardinality (river's ``learn_one``/``learn_many`` shape):
``learn_batch`` consumes one micro-batch and returns a small
:class:`LearnReport`, never the model. State is plain data plus tensors, so it
can be written as safetensors and never needs pickle.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np


@dataclass(frozen=True, slots=True)
class LearnReport:
    """What one ``learn_batch`` call did.

    ``loss`` may be a 0-d device tensor: reading it forces a host sync, so the
    hot path stores it unread and only progress output calls :meth:`loss_value`.

    Examples
    --------
    >>> import torch
    >>> report = LearnReport(n_samples=3, loss=torch.tensor(0.25))
    >>> report.n_samples, report.loss_value()
    (3, 0.25)
    >>> LearnReport(n_samples=0).loss_value() is None
    True
    """

    n_samples: int
    loss: Any = None

    def loss_value(self) -> float | None:
        """The loss as a Python float (syncs with the device if it is a tensor)."""
        if self.loss is None:
            return None
        return float(self.loss)


@runtime_checkable
class Learner(Protocol):
    """An incremental model that learns from and predicts on micro-batches.

    Implementations store constructor arguments under the same name and keep
    runtime state in ``_private`` attributes; ``clone()`` returns a fresh,
    untrained learner with the same configuration.
    """

    def predict_batch(self, X: np.ndarray) -> np.ndarray:
        """Class indices (classification) or values (regression), shape (n,)."""
        ...

    def predict_proba_batch(self, X: np.ndarray) -> np.ndarray:
        """Class probabilities, shape (n, n_classes) (classification only)."""
        ...

    def learn_batch(self, X: np.ndarray, y: np.ndarray) -> LearnReport:
        """Update the model on one micro-batch; inputs are not mutated."""
        ...

    def state_dict(self) -> dict:
        """Model and optimizer state as nested dicts of tensors and plain data."""
        ...

    def load_state_dict(self, state: dict) -> None:
        """Restore what :meth:`state_dict` returned (from this or a clone)."""
        ...

    def clone(self) -> Learner:
        """A fresh learner with the same configuration and no learned state."""
        ...

    @property
    def n_learned(self) -> int:
        """Events learned since construction (or as restored by :meth:`load_state_dict`)."""
        ...


@runtime_checkable
class Consolidating(Protocol):
    """A learner with anchors on its past (EWC): the engine re-anchors on validated versions.

    Resolve it once (``isinstance(learner, Consolidating)``) when a loop
    starts; an ``isinstance`` on a runtime Protocol is too slow per batch.

    >>> from learners.neural.learner import TorchLearner
    >>> isinstance(TorchLearner(n_features=2, device="cpu"), Consolidating)
    True
    """

    def consolidate(self) -> int:
        """Anchor on the model as it is now; returns how many plugins did."""
        ...

    def reset_consolidation(self) -> int:
        """Forget every anchor (an adopted full retrain is the new reference); returns how many reset."""
        ...


@runtime_checkable
class Adaptable(Protocol):
    """A learner whose plasticity the drift policy can raise (optional; see TorchLearner.adapt)."""

    def adapt(self, *, ewc_factor: float = 0.1, replay_refresh: float = 0.5) -> dict:
        """Loosen what holds the past; return what changed (plain data for the audit trail)."""
        ...

    def restore_plasticity(self) -> dict:
        """Undo the temporary part of :meth:`adapt`; return what changed."""
        ...


@dataclass(frozen=True, slots=True)
class Prequential:
    """What one chunked test-then-train pass over a micro-batch returns.

    ``prediction``: each row predicted by the model before it learned that
    row's chunk, shape ``(n,)``. ``proba``: the same predictions' class
    probabilities ``(n, n_classes)`` when asked for, else ``None``.
    ``report``: what learning the batch did.
    """

    prediction: np.ndarray
    proba: np.ndarray | None
    report: LearnReport


@runtime_checkable
class Rehearsing(Protocol):
    """A learner that can spend spare time on extra steps over what it learned last (optional).

    The engine calls :meth:`rehearse` after a batch when it has time to spare
    (:class:`~stream.engine.config.EngineConfig` ``rehearse``). It learns no
    new event: only the model's parameters move.

    >>> from learners.neural.learner import TorchLearner
    >>> isinstance(TorchLearner(n_features=2, device="cpu"), Rehearsing)
    True
    """

    def rehearse(self) -> int:
        """Take the configured rehearsal steps; how many were taken (0: nothing to rehearse)."""
        ...


@runtime_checkable
class ChunkedPrequential(Protocol):
    """A learner that tests-then-trains inside a micro-batch, ``score_chunk`` rows at a time (optional).

    The engine resolves it once, when its learner first exists: with
    ``score_chunk`` set it scores and learns each batch in one call to
    :meth:`learn_prequential` instead of predicting the whole batch first.

    >>> from learners.neural.learner import TorchLearner
    >>> learner = TorchLearner(n_features=2, device="cpu", score_chunk=16)
    >>> isinstance(learner, ChunkedPrequential), learner.score_chunk
    (True, 16)
    """

    @property
    def score_chunk(self) -> int | None:
        """Rows per chunk (``None``: off; predict the whole batch, then learn it)."""
        ...

    def learn_prequential(self, X: np.ndarray, y: np.ndarray, *, proba: bool = False) -> Prequential:
        """Predict each chunk with the model updated on the chunks before it, then learn it."""
        ...


@runtime_checkable
class GrowsClasses(Protocol):
    """A classifier that can take more classes while it learns (optional): a stream met a new label.

    Resolve it once, like the other capabilities. After ``grow_classes(n)``
    the learner accepts labels ``0..n-1``, predicts ``n`` probabilities, and
    its state records ``n`` classes (a fresh learner built with ``n`` classes
    loads it).

    >>> from learners.neural.learner import TorchLearner
    >>> learner = TorchLearner(n_features=2, device="cpu")
    >>> isinstance(learner, GrowsClasses), learner.grow_classes(4), learner.n_classes
    (True, None, 4)
    """

    def grow_classes(self, n_classes: int) -> None:
        """Take ``n_classes`` classes from now on (at least the current count; the same count: no-op)."""
        ...
