"""The hedge family's :class:`~learners.families.InferenceModel`: the members' modules and their weights.

Each member's ``nn.Module`` is rebuilt once from the ensemble's config and
loaded (:func:`learners.neural.inference.inference_module`); predictions are
the weighted mixture, as :class:`~learners.hedge.learner.HedgeLearner`
predicts. No optimizer is built.

>>> import numpy as np
>>> from learners.hedge.learner import HedgeLearner
>>> model = load(HedgeLearner(n_features=2, device="cpu").state_dict())
>>> model.predict(np.zeros((1, 2), np.float32))[1].shape
(1, 2)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn

from learners.hedge.learner import HEDGE_FORMAT, member_config
from learners.neural.inference import inference_module
from stream.core.errors import RegistryError

__all__ = ["HedgeInference", "load"]


@dataclass(frozen=True)
class HedgeInference:
    """The members in eval mode and their weights, predicting under ``inference_mode``."""

    modules: tuple[nn.Module, ...]
    weights: torch.Tensor  # (K,) float32, sums to 1
    n_features: int
    classification: bool
    device: str = "cpu"

    def predict(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32))
            if self.device != "cpu":
                x = x.to(self.device, non_blocking=True)
            outs = [m(x) for m in self.modules]
            if not self.classification:
                values = torch.tensordot(self.weights, torch.stack([o.squeeze(-1) for o in outs]), dims=1)
                return values.cpu().numpy(), None
            probs = torch.stack([torch.softmax(o, dim=-1) for o in outs])
            proba = torch.tensordot(self.weights, probs, dims=1).cpu().numpy()
        return proba.argmax(axis=1), proba


def load(state: Mapping[str, Any], device: str = "cpu") -> HedgeInference:
    """The hedge family's loader (see :data:`learners.families.FAMILIES`).

    Raises
    ------
    RegistryError
        The state is not a HedgeLearner state of a known format, or a member's weights do not fit.
    """
    config = state.get("config") if isinstance(state, Mapping) else None
    if not isinstance(config, Mapping) or config.get("format") != HEDGE_FORMAT or "model" not in state:
        raise RegistryError("the published state is not a HedgeLearner state of a known format")
    try:
        specs, members = config["members"], state["model"]
        if len(specs) != len(members):
            raise ValueError(f"{len(specs)} member specs but {len(members)} member states")
        modules = tuple(
            inference_module({"config": member_config(spec, config), "model": m["model"]}, device)[0]
            for spec, m in zip(specs, members)
        )
        weights = torch.as_tensor(state["weights"]).to(device=device, dtype=torch.float32)
    except (KeyError, TypeError, ValueError) as exc:
        raise RegistryError(f"the published hedge state does not build its members: {exc}") from exc
    classification = config["task"] == "classification"
    return HedgeInference(modules, weights, int(config["n_features"]), classification, device)
