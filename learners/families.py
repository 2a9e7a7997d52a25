"""Learner families and what serving needs from each: an :class:`InferenceModel` built from a published state.

A published version holds a learner's ``state_dict()``. The state names the
family that made it (``state["config"]["family"]``: ``torch``, ``river``,
``avalanche``, ``hedge``), and :data:`FAMILIES` maps that name to the family's loader,
``(state, device) -> InferenceModel``. A new learner family is one new entry
here -- serving (:mod:`serving.api.model`) does not change.

Loaders are named by import path and imported on first use, so importing
this module (and serving) pulls in neither river nor avalanche.

States published before families were named carry no ``family``;
:func:`family_of` recognises them by their layout, in one place.

Examples
--------
>>> import numpy as np
>>> from learners.neural.learner import TorchLearner
>>> state = TorchLearner(n_features=2, device="cpu").state_dict()
>>> family_of(state)
'torch'
>>> model = load_inference_model(state)
>>> labels, proba = model.predict(np.zeros((3, 2), np.float32))
>>> model.n_features, model.classification, labels.shape, proba.shape
(2, True, (3,), (3, 2))
>>> legacy = {**state, "config": {k: v for k, v in state["config"].items() if k != "family"}}
>>> family_of(legacy)
'torch'
"""

from __future__ import annotations

import importlib
from typing import Any, Callable, Mapping, Protocol, runtime_checkable

import numpy as np

from stream.core.errors import RegistryError

__all__ = ["FAMILIES", "FAMILY_KEY", "InferenceModel", "family_of", "load_inference_model", "loader_for"]

#: Where a state names its family: ``state["config"][FAMILY_KEY]``.
FAMILY_KEY = "family"


@runtime_checkable
class InferenceModel(Protocol):
    """A published model, ready to predict; immutable once built (requests share it across threads)."""

    #: Features per row.
    n_features: int
    #: Classification (class indices and probabilities) or regression (values).
    classification: bool

    def predict(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """``(predictions, probabilities)`` for an (n, n_features) float32 matrix.

        Class indices and (n, n_classes) float32 probabilities, or regression
        values and ``None``.
        """
        ...


Loader = Callable[[Mapping[str, Any], str], InferenceModel]

#: Family name -> ``"module:function"`` of its loader ``(state, device) -> InferenceModel``.
FAMILIES: dict[str, str] = {
    "torch": "learners.neural.inference:load",
    "river": "learners.river_adapter.inference:load",
    "avalanche": "learners.avalanche_adapter.inference:load",
    "hedge": "learners.hedge.inference:load",
}


def family_of(state: Mapping[str, Any]) -> str:
    """The family that made ``state``: its recorded name, or (states from before names) its layout.

    Raises
    ------
    RegistryError
        The state is not a mapping with a config, or names an unknown family.
    """
    config = state.get("config") if isinstance(state, Mapping) else None
    if not isinstance(config, Mapping):
        raise RegistryError("the published state has no config: not a learner state")
    named = config.get(FAMILY_KEY)
    if named is not None:
        if named not in FAMILIES:
            raise RegistryError(
                f"the published state is of the learner family {named!r}, which this server does not "
                f"know (known: {', '.join(FAMILIES)})"
            )
        return str(named)
    # Fallback for unnamed (older) states: the layout each family's state had then.
    if "estimator" in config:
        return "river"
    if config.get("kind") == "avalanche":
        return "avalanche"
    return "torch"


def loader_for(family: str) -> Loader:
    """The loader registered for ``family`` (imported now)."""
    module, _, name = FAMILIES[family].partition(":")
    return getattr(importlib.import_module(module), name)


def load_inference_model(state: Mapping[str, Any], device: str = "cpu") -> InferenceModel:
    """Build the :class:`InferenceModel` of a published state, with its family's loader.

    Raises
    ------
    RegistryError
        The family is unknown, or its loader cannot build a model from the state.
    """
    return loader_for(family_of(state))(state, device)
