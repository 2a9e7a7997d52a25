"""The torch family's :class:`~learners.families.InferenceModel`: the ``nn.Module`` of a TorchLearner state.

Builds the module once and loads the weights: no optimizer, no seeding (the
weights are overwritten anyway). A swap pays ~0.3 ms here instead of the
~4 ms of rebuilding a whole learner, all of it under the GIL that the
request handlers need too.

>>> import numpy as np
>>> from learners.neural.learner import TorchLearner
>>> model = load(TorchLearner(n_features=2, device="cpu").state_dict())
>>> model.predict(np.zeros((1, 2), np.float32))[1].shape
(1, 2)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn

from learners.neural.config import STATE_FORMAT
from learners.neural.models import build_model
from learners.neural.numpy_forward import NumpyForward, numpy_forward, softmax
from stream.core.errors import RegistryError, StreamlearnError

__all__ = ["TorchInference", "inference_module", "load"]


def inference_module(state: Mapping[str, Any], device: str = "cpu") -> tuple[nn.Module, dict]:
    """The ``nn.Module`` of a :meth:`TorchLearner.state_dict`, in eval mode, and its config.

    Raises
    ------
    RegistryError
        The state is not a TorchLearner state of a known format, or its weights do not build the model.
    """
    config = state.get("config") if isinstance(state, Mapping) else None
    if not isinstance(config, Mapping) or config.get("format") != STATE_FORMAT or "model" not in state:
        raise RegistryError("the published state is not a TorchLearner state of a known format")
    try:
        n_features = int(config["n_features"])
        n_outputs = int(config["n_classes"]) if config["task"] == "classification" else 1
        # A forked RNG: building draws initial weights, and the global RNG is not ours to move.
        with torch.random.fork_rng(devices=[]):
            module = build_model(config["model"], n_features, n_outputs, **(config.get("model_kwargs") or {}))
        module.load_state_dict(state["model"])
    except (KeyError, TypeError, ValueError, RuntimeError, StreamlearnError) as exc:
        raise RegistryError(f"the published weights do not build a model: {exc}") from exc
    return module.to(device).eval(), dict(config)


@dataclass(frozen=True)
class TorchInference:
    """A torch module in eval mode, predicting under ``inference_mode`` -- or in numpy, when it can.

    On the CPU, a model :func:`~learners.neural.numpy_forward.numpy_forward`
    knows (every zoo model) predicts small batches in numpy with the same
    weights: the same numbers within float32 rounding, without torch's fixed
    cost per op, which is most of a one-row forward (a logistic model: ~10 us
    instead of ~25). Batches larger than its ``max_rows`` go to torch.
    """

    module: nn.Module
    n_features: int
    classification: bool
    device: str = "cpu"
    #: The numpy forward of ``module``; ``None``: predict with torch.
    forward: NumpyForward | None = field(default=None, compare=False)

    def predict(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        if self.forward is not None and len(X) <= self.forward.max_rows:
            out = self.forward(np.asarray(X, dtype=np.float32))
            if not self.classification:
                return out[:, 0], None
            with np.errstate(all="ignore"):  # overflowed logits: NaN, which the caller turns into a 422
                proba = softmax(out)
            return proba.argmax(axis=1), proba
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32))
            if self.device != "cpu":  # even a no-op .to() costs a dispatch, ~15% of a one-row forward
                x = x.to(self.device, non_blocking=True)
            out = self.module(x)
            if not self.classification:
                return out.squeeze(-1).cpu().numpy(), None
            proba = torch.softmax(out, dim=-1).cpu().numpy()
        return proba.argmax(axis=1), proba


def load(state: Mapping[str, Any], device: str = "cpu") -> TorchInference:
    """The torch family's loader (see :data:`learners.families.FAMILIES`)."""
    module, config = inference_module(state, device)
    forward = numpy_forward(module) if device == "cpu" else None
    if forward is not None:
        # The served model's warm-up runs the numpy forward; batches beyond its
        # max_rows go to torch, whose first call pays for lazy initialisation.
        with torch.inference_mode():
            module(torch.zeros((1, int(config["n_features"])), device=device))
    return TorchInference(
        module, int(config["n_features"]), config["task"] == "classification", device, forward=forward
    )
