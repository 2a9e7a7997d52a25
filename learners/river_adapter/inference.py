"""The river family's :class:`~learners.families.InferenceModel`: a RiverLearner rebuilt from its state.

River models predict in Python, so the learner itself serves.

>>> import numpy as np
>>> from learners.river_adapter.learner import RiverLearner
>>> state = RiverLearner("river.linear_model.LinearRegression", n_features=2, task="regression").state_dict()
>>> model = load(state)
>>> model.classification, model.predict(np.zeros((2, 2), np.float32))[1] is None
(False, True)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from learners.river_adapter.learner import RiverLearner
from stream.core.errors import RegistryError, StreamlearnError

__all__ = ["RiverInference", "load"]


@dataclass(frozen=True)
class RiverInference:
    """A rebuilt :class:`RiverLearner`, used for prediction only."""

    learner: RiverLearner
    n_features: int
    classification: bool

    def predict(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        if not self.classification:
            return self.learner.predict_batch(X), None
        proba = self.learner.predict_proba_batch(X)
        return proba.argmax(axis=1), proba


def load(state: Mapping[str, Any], device: str = "cpu") -> RiverInference:
    """The river family's loader (``device`` is ignored: river runs on the CPU)."""
    try:
        learner = RiverLearner.from_state(state)
    except StreamlearnError as exc:
        raise RegistryError(f"the published river model cannot be rebuilt: {exc}") from exc
    config = learner.config()
    return RiverInference(learner, int(config["n_features"]), config["task"] == "classification")
