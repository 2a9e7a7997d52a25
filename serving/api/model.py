"""A loaded, ready-to-predict model version: what the API holds and swaps.

:class:`ServedModel` is immutable once built -- the model inside is only ever
used for inference -- so a request that picked it up keeps a consistent
model even while a newer one is swapped in beside it. What it predicts with
is the :class:`~learners.families.InferenceModel` of the version's learner
family (:func:`~learners.families.load_inference_model`): serving knows no
family by name.

Examples
--------
>>> import tempfile, numpy as np
>>> from learners.neural.learner import TorchLearner
>>> from serving.registry.file_backend import FileRegistry
>>> from serving.registry.versions import Version
>>> reg = FileRegistry(tempfile.mkdtemp())
>>> learner = TorchLearner(n_features=2, device="cpu")
>>> v = reg.publish(learner.state_dict(), Version(number=0, schema={"n_features": 2, "task": "classification"}))
>>> served = ServedModel.load(reg, v.number)
>>> labels, proba = served.predict(np.zeros((3, 2), np.float32))
>>> served.version.number, labels.shape, proba.shape, served.encoder
(1, (3,), (3, 2), None)

A version whose stream has named fields carries its feature schema; the
served model builds its encoder once, here, not per request:

>>> from stream.core.features import FeatureSchema, FieldSpec
>>> schema = FeatureSchema((FieldSpec("amount"), FieldSpec("country", "categorical")))
>>> learner = TorchLearner(n_features=schema.width, device="cpu")
>>> v = reg.publish(learner.state_dict(), Version(number=0, schema={
...     "n_features": schema.width, "task": "classification", "features": schema.to_dict()}))
>>> served = ServedModel.load(reg, v.number)
>>> served.encoder.schema == schema, served.encoder.encode_one({"country": "FR"}).shape
(True, (2,))
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from learners.families import InferenceModel, load_inference_model
from serving.registry.base import ModelRegistry
from serving.registry.versions import Version
from stream.core.errors import ConfigError, RegistryError
from stream.core.features import FeatureEncoder, FeatureSchema


@dataclass(frozen=True)
class ServedModel:
    """One model version, loaded for inference only."""

    version: Version
    model: InferenceModel
    device: str = "cpu"
    loaded_at: float = field(default_factory=time.time)
    #: Named fields -> the model's input, from the version's feature schema; ``None`` without one.
    encoder: FeatureEncoder | None = None
    #: The schema's field names, for the per-request test for unknown ones.
    field_names: frozenset[str] = frozenset()

    @property
    def n_features(self) -> int:
        return self.model.n_features

    @property
    def classification(self) -> bool:
        return self.model.classification

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
    def load(
        cls, registry: ModelRegistry, number: int, *, device: str = "cpu", version: Version | None = None
    ) -> ServedModel:
        """Fetch version ``number``'s weights, build its module and warm it up.

        Pass ``version`` when its metadata was just read, to skip reading it again.

        Raises
        ------
        RegistryError
            The version is unknown, its weights are gone or unusable.
        RegistryUnavailableError
            The registry cannot be reached.
        """
        version = version if version is not None else registry.get(number)
        state = registry.load_state(number, device=device)
        return cls.from_state(version, state, device=device)

    @classmethod
    def from_state(cls, version: Version, state: Mapping[str, Any], *, device: str = "cpu") -> ServedModel:
        """Build the served model of ``version`` from its published state (any learner family)."""
        try:
            model = load_inference_model(state, device)
        except RegistryError as exc:
            raise RegistryError(f"version {version.number} cannot be served: {exc}") from exc
        encoder = _encoder_of(version)
        served = cls(
            version,
            model,
            device,
            encoder=encoder,
            field_names=frozenset(encoder.schema.names if encoder else ()),
        )
        if encoder is not None and encoder.width != served.n_features:
            # Serving it would answer every request with a shape error; refuse it once, here.
            raise RegistryError(
                f"version {version.number} cannot be served: its feature schema encodes "
                f"{encoder.width} columns, its model takes {served.n_features}"
            )
        # Warm-up: the first forward pass pays for lazy initialisation (kernel
        # selection, allocator); let the swapper thread pay it, not a request.
        served.predict(np.zeros((1, served.n_features), np.float32))
        return served

    def predict(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """``(predictions, probabilities)``: class indices and (n, n_classes) float32, or values and ``None``."""
        return self.model.predict(X)

    def label(self, index: int) -> Any:
        classes = self.classes
        return classes[index] if classes else int(index)

    def answers(self, labels: np.ndarray, proba: np.ndarray | None) -> tuple[list, list | None, list | None]:
        """What :meth:`predict`'s output answers, per row: the predictions (class names when the stream named
        them, else indices; values for regression), the probabilities (``None`` for regression) and the
        classes naming their order (``None`` when class ``i`` is ``i``, and for regression)."""
        if proba is None:
            return labels.astype(float).tolist(), None, None
        classes = self.classes
        indices = labels.tolist()
        return ([classes[i] for i in indices] if classes else indices), proba.tolist(), classes


def _encoder_of(version: Version) -> FeatureEncoder | None:
    doc = version.schema.get("features")
    if doc is None:
        return None
    try:
        return FeatureEncoder(FeatureSchema.from_dict(doc))
    except (ConfigError, TypeError) as exc:
        raise RegistryError(f"version {version.number} cannot be served: its feature schema: {exc}") from exc
