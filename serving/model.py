"""A loaded, ready-to-predict model version: what the API holds and swaps.

:class:`ServedModel` is immutable once built -- the learner inside is only
ever used for inference -- so a request that picked it up keeps a consistent
model even while a newer one is swapped in beside it.

Examples
--------
>>> import tempfile, numpy as np
>>> from learners.torch_learner import TorchLearner
>>> from serving.file_registry import FileRegistry
>>> from serving.versions import Version
>>> reg = FileRegistry(tempfile.mkdtemp())
>>> learner = TorchLearner(n_features=2, device="cpu")
>>> v = reg.publish(learner.state_dict(), Version(number=0, schema={"n_features": 2, "task": "classification"}))
>>> served = ServedModel.load(reg, v.number)
>>> labels, proba = served.predict(np.zeros((3, 2), np.float32))
>>> served.version.number, labels.shape, proba.shape
(1, (3,), (3, 2))
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from learners.torch_learner import TorchLearner
from serving.registry import ModelRegistry
from serving.versions import Version
from stream.errors import RegistryError, StreamlearnError


@dataclass(frozen=True)
class ServedModel:
    """One model version, loaded for inference."""

    version: Version
    learner: TorchLearner
    loaded_at: float = field(default_factory=time.time)

    @property
    def n_features(self) -> int:
        return int(self.learner.n_features)

    @property
    def classification(self) -> bool:
        return self.learner.task == "classification"

    @property
    def feature_names(self) -> list[str] | None:
        names = self.version.schema.get("feature_names")
        return list(names) if names else None

    @property
    def classes(self) -> list[Any] | None:
        """Class labels in index order, when the stream named them."""
        names = self.version.schema.get("classes")
        return list(names) if names else None

    @classmethod
    def load(cls, registry: ModelRegistry, number: int, *, device: str = "cpu") -> ServedModel:
        """Fetch version ``number``'s weights, rebuild its learner and warm it up.

        Raises
        ------
        RegistryError
            The version is unknown, its weights are gone or unusable.
        RegistryUnavailableError
            The registry cannot be reached.
        """
        version = registry.get(number)
        state = registry.load_state(number, device=device)
        return cls.from_state(version, state, device=device)

    @classmethod
    def from_state(cls, version: Version, state: Mapping[str, Any], *, device: str = "cpu") -> ServedModel:
        try:
            learner = TorchLearner.from_state(state, device=device)
        except StreamlearnError as exc:
            raise RegistryError(f"version {version.number} cannot be served: {exc}") from exc
        served = cls(version, learner)
        # Warm-up: the first forward pass pays for lazy initialisation (eval
        # mode switch, kernel selection); let the swapper thread pay it, not a request.
        served.predict(np.zeros((1, served.n_features), np.float32))
        return served

    def predict(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """``(predictions, probabilities)``: class indices and (n, n_classes) float32, or values and ``None``."""
        if not self.classification:
            return self.learner.predict_batch(X), None
        proba = self.learner.predict_proba_batch(X)
        return proba.argmax(axis=1), proba

    def label(self, index: int) -> Any:
        classes = self.classes
        return classes[index] if classes else int(index)

