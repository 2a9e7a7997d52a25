"""Growing a :class:`~learners.neural.learner.TorchLearner`'s classes when a stream brings a new label.

The output layer (the last ``nn.Linear`` with ``n_classes`` outputs) is
replaced by a wider one: the old classes keep their rows, so their logits --
and their probabilities relative to one another -- are unchanged. Each new
class's row starts as the mean of the old rows with its bias lowered by
``log(k)`` (``k`` old classes): its logit is the mean old logit minus
``log(k)``, never above the best old class's minus ``log(k)``, so on every
row a new class starts with at most ``1/k`` of the top class's probability
and never changes a prediction until it is learned -- yet it sits in the bulk
of the old logits, where a few steps on its first labels lift it.

The optimizer is rebuilt over the new parameters; every untouched parameter
keeps its state (Adam's moments and step), and the output layer's old rows
keep theirs (new rows start at zero). Plugins with per-class state follow
(:class:`~learners.neural.hooks.FollowsClasses`: EWC's anchors and Fisher,
class-balanced replay's slots). ``n_classes`` in the config grows too, so
checkpoints and published versions load at the new size.

>>> import numpy as np
>>> from learners.neural.learner import TorchLearner
>>> learner = TorchLearner("mlp", n_features=2, n_classes=2, device="cpu", model_kwargs={"hidden": [4]})
>>> learner.grow_classes(3)
>>> learner.n_classes, learner.config()["n_classes"], learner.predict_proba_batch(np.zeros((1, 2), np.float32)).shape
(3, 3, (1, 3))
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from learners.neural.config import build_optimizer
from learners.neural.hooks import PluginHooks
from learners.neural.split_optimizer import optimizer_parts
from stream.core.errors import ConfigError

__all__ = ["ClassGrowth", "grow_output_layer"]


def grow_output_layer(module: nn.Module, n_old: int, n_new: int) -> tuple[nn.Linear, nn.Linear]:
    """Replace ``module``'s output layer by one with ``n_new`` outputs (in place); ``(old, new)`` layers.

    Raises
    ------
    ConfigError
        No ``nn.Linear`` with ``n_old`` outputs (a user model with another head).
    """
    heads = [(name, m) for name, m in module.named_modules() if isinstance(m, nn.Linear)]
    if not heads or heads[-1][1].out_features != n_old:
        raise ConfigError(
            f"cannot grow the classes of this model: its last nn.Linear must have {n_old} outputs"
        )
    name, old = heads[-1]
    new = nn.Linear(old.in_features, n_new, bias=old.bias is not None)
    new = new.to(device=old.weight.device, dtype=old.weight.dtype)
    with torch.no_grad():
        new.weight[:n_old] = old.weight
        new.weight[n_old:] = old.weight.mean(dim=0)
        if old.bias is not None:
            new.bias[:n_old] = old.bias
            new.bias[n_old:] = old.bias.mean() - math.log(n_old)
    parent_name, _, attr = name.rpartition(".")
    setattr(module.get_submodule(parent_name) if parent_name else module, attr, new)
    return old, new


class ClassGrowth:
    """Mixed into :class:`~learners.neural.learner.TorchLearner` (it sets the attributes below)."""

    n_classes: int
    optimizer: str
    lr: float
    plugins: tuple
    _classify: bool
    _n_outputs: int
    _model: nn.Module
    _opt: Any
    _hooks: PluginHooks

    def grow_classes(self, n_classes: int) -> None:
        """Grow to ``n_classes`` classes (labels ``0..n_classes-1``); the same count is a no-op.

        Raises
        ------
        ConfigError
            Regression, fewer classes than now, or a model whose head cannot grow.
        """
        if not self._classify:
            raise ConfigError("grow_classes needs task='classification'")
        if isinstance(n_classes, bool) or not isinstance(n_classes, int) or n_classes < self.n_classes:
            raise ConfigError(
                f"grow_classes takes an integer >= {self.n_classes} (the classes now), got {n_classes!r}"
            )
        if n_classes == self.n_classes:
            return
        old, new = grow_output_layer(self._model, self.n_classes, n_classes)
        opt = build_optimizer(self._model, self.optimizer, self.lr)
        _carry_state(self._opt, opt, {old.weight: new.weight, old.bias: new.bias})
        for group in opt.param_groups:  # the lr in force (a retrain or the policy may have set it)
            group["lr"] = self._opt.param_groups[0]["lr"]
        self._opt = opt
        self.n_classes = self._n_outputs = int(n_classes)
        self._hooks.grow_classes(int(n_classes), self._model)


def _carry_state(old_opt: Any, new_opt: Any, replaced: dict) -> None:
    """Copy each parameter's optimizer state into ``new_opt``; a replaced (grown) one's into its first rows."""
    old_state = {}
    for part in optimizer_parts(old_opt):
        old_state.update(part.state)
    for part in optimizer_parts(new_opt):
        for group in part.param_groups:
            for p in group["params"]:
                src = next((o for o, n in replaced.items() if n is p), p)
                if src not in old_state:
                    continue
                state = {}
                for key, v in old_state[src].items():
                    if isinstance(v, torch.Tensor) and v.dim() and v.shape != p.shape:
                        grown = torch.zeros_like(p, dtype=v.dtype)
                        grown[: v.shape[0]] = v
                        v = grown
                    state[key] = v
                part.state[p] = state
