"""The avalanche family's :class:`~learners.families.InferenceModel`: the torch model inside its state.

The strategy and its plugins only matter for learning; serving runs the
model as the torch family does. Importing this module does not import
avalanche (only :mod:`learners.avalanche_adapter.learner`'s plain-data helper).
"""

from __future__ import annotations

from typing import Any, Mapping

from learners.avalanche_adapter.learner import torch_learner_state
from learners.neural import inference as torch_inference
from stream.core.errors import RegistryError, StreamlearnError

__all__ = ["load"]


def load(state: Mapping[str, Any], device: str = "cpu") -> torch_inference.TorchInference:
    """The avalanche family's loader."""
    try:
        net_state = torch_learner_state(state)
    except StreamlearnError as exc:
        raise RegistryError(str(exc)) from exc
    return torch_inference.load(net_state, device)
