"""Online Elastic Weight Consolidation (EWC) as a :class:`~learners.neural.hooks.UpdatePlugin`.

EWC keeps what the model learned by penalising moves of the parameters that
mattered: ``penalty = strength / 2 * sum_i F_i (theta_i - theta*_i)^2`` where
``theta*`` are the parameters at the last consolidation and ``F`` is the
diagonal empirical Fisher information (mean squared per-sample gradient of
the data loss). *Online* EWC (Schwarz et al., 2018, "Progress & Compress")
keeps ONE running Fisher, ``F <- decay * F + (1 - decay) * F_new``, instead of
one per task, which suits a stream without task boundaries.

Consolidation happens every ``consolidate_every`` learned batches and whenever
:meth:`consolidate` is called (the engine does it at each validated version,
so the anchor is evidence-backed). Per-sample gradients come from
``torch.func`` (``vmap`` over ``grad``) on the consolidation batch, at most
``fisher_samples`` rows of it. Everything stays on the model's device; the
penalty is one fused expression per parameter, with no host synchronisation.

Examples
--------
>>> import numpy as np
>>> from learners.neural.learner import TorchLearner
>>> ewc = EWC(strength=10.0, consolidate_every=2)
>>> learner = TorchLearner(n_features=3, device="cpu", plugins=[ewc])
>>> X = np.random.default_rng(0).normal(size=(64, 3)).astype(np.float32)
>>> for _ in range(2):
...     _ = learner.learn_batch(X, (X[:, 0] > 0).astype(np.int64))
>>> ewc.consolidations, sorted(ewc.state_dict())
(1, ['anchors', 'batches', 'consolidations', 'fisher', 'plasticity'])
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from learners.neural.hooks import BasePlugin
from learners.neural.split_optimizer import sparse_param_names
from stream.core.errors import ConfigError

__all__ = ["EWC"]


class EWC(BasePlugin):
    """Online EWC; see the module docstring.

    Parameters
    ----------
    strength
        lambda: how hard consolidated parameters are held (0 disables the penalty).
    decay
        Weight of the old Fisher at each consolidation (gamma in online EWC).
    consolidate_every
        Consolidate after this many learned batches (``None``: only when
        :meth:`consolidate` is called).
    fisher_samples
        Rows of the batch used for the per-sample Fisher estimate.

    Raises
    ------
    ConfigError
        A parameter is out of range.
    """

    def __init__(
        self,
        strength: float = 100.0,
        decay: float = 0.9,
        consolidate_every: int | None = 50,
        fisher_samples: int = 256,
    ) -> None:
        if not strength >= 0:
            raise ConfigError(f"EWC strength must be >= 0, got {strength!r}")
        if not 0 <= decay < 1:
            raise ConfigError(f"EWC decay must be in [0, 1), got {decay!r}")
        if consolidate_every is not None and consolidate_every < 1:
            raise ConfigError(f"EWC consolidate_every must be >= 1 (or None), got {consolidate_every!r}")
        if fisher_samples < 1:
            raise ConfigError(f"EWC fisher_samples must be >= 1, got {fisher_samples!r}")
        self.strength = float(strength)
        self.decay = float(decay)
        self.consolidate_every = consolidate_every
        self.fisher_samples = int(fisher_samples)
        self._fisher: dict[str, torch.Tensor] = {}
        self._anchors: dict[str, torch.Tensor] = {}
        self._batches = 0
        self._consolidations = 0
        self._last: tuple[nn.Module, torch.Tensor, torch.Tensor] | None = None
        # The drift policy's lever: the penalty uses strength * _plasticity_scale.
        # It is learner state (checkpointed), the configured strength is not.
        self._plasticity_scale = 1.0

    @property
    def consolidations(self) -> int:
        return self._consolidations

    # ---------------------------------------------------------------- hooks
    def penalty(self, model: nn.Module) -> torch.Tensor | None:
        strength = self.effective_strength
        if not self._anchors or strength == 0:
            return None
        total = None
        for name, p in model.named_parameters():
            f = self._fisher.get(name)
            if f is None:
                continue
            term = (f * (p - self._anchors[name]).pow(2)).sum()
            total = term if total is None else total + term
        return None if total is None else 0.5 * strength * total

    def after_update(self, model: nn.Module, X: torch.Tensor, y: torch.Tensor) -> None:
        self._batches += 1
        # Keep a reference (not a copy) to the newest batch for an on-demand consolidation.
        self._last = (model, X, y)
        if self.consolidate_every is not None and self._batches % self.consolidate_every == 0:
            self.consolidate()

    def consolidate(self) -> bool:
        """Fold the newest batch's Fisher into the running one and re-anchor; False if no batch yet."""
        if self._last is None:
            return False
        model, X, y = self._last
        fisher = _empirical_fisher(model, X[: self.fisher_samples], y[: self.fisher_samples])
        with torch.no_grad():
            for name, f in fisher.items():
                old = self._fisher.get(name)
                self._fisher[name] = f if old is None else self.decay * old + (1 - self.decay) * f
            self._anchors = {name: p.detach().clone() for name, p in _dense_parameters(model)}
        self._consolidations += 1
        return True

    @property
    def effective_strength(self) -> float:
        """The strength in force: the configured one times any relaxation."""
        return self.strength * self._plasticity_scale

    def relax(self, factor: float) -> None:
        """Scale the strength in force by ``factor`` (< 1 raises plasticity; the drift policy's lever).

        Undone by :meth:`restore_strength`; both survive a checkpoint.
        """
        if not factor >= 0:
            raise ConfigError(f"EWC relax factor must be >= 0, got {factor!r}")
        self._plasticity_scale *= float(factor)

    def restore_strength(self) -> None:
        """Back to the configured strength (the end of a drift adaptation)."""
        self._plasticity_scale = 1.0

    def grow_classes(self, n_classes: int, model: nn.Module) -> None:
        """Fit anchors and Fisher to the grown output layer: its new rows start unanchored (Fisher 0)."""
        with torch.no_grad():
            for name, p in model.named_parameters():
                f = self._fisher.get(name)
                if f is None or f.shape == p.shape:
                    continue
                rows = f.shape[0]
                self._fisher[name] = torch.cat([f, f.new_zeros((p.shape[0] - rows, *f.shape[1:]))])
                self._anchors[name] = torch.cat([self._anchors[name], p.detach()[rows:].clone()])

    def reset(self) -> None:
        """Forget anchors and Fisher (after a full retrain is adopted)."""
        self._fisher, self._anchors, self._last = {}, {}, None

    # ---------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        return {
            "fisher": {k: v.detach().clone() for k, v in self._fisher.items()},
            "anchors": {k: v.detach().clone() for k, v in self._anchors.items()},
            "batches": self._batches,
            "consolidations": self._consolidations,
            "plasticity": self._plasticity_scale,
        }

    def load_state_dict(self, state: dict) -> None:
        self._fisher = dict(state.get("fisher") or {})
        self._anchors = dict(state.get("anchors") or {})
        self._batches = int(state.get("batches", 0))
        self._consolidations = int(state.get("consolidations", 0))
        self._plasticity_scale = float(state.get("plasticity", 1.0))
        self._last = None

    def clone(self) -> EWC:
        return EWC(self.strength, self.decay, self.consolidate_every, self.fisher_samples)

    def __repr__(self) -> str:
        return (
            f"EWC(strength={self.strength:g}, decay={self.decay:g}, "
            f"consolidate_every={self.consolidate_every}, fisher_samples={self.fisher_samples})"
        )


def _empirical_fisher(model: nn.Module, X: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    """Mean squared per-sample gradient of the data loss, per parameter (on the model's device)."""
    # Sparse tables stay out (functional_call reads them from the module): a dense
    # penalty gradient on a table breaks SparseAdam and costs O(table) per step.
    params = {k: v.detach() for k, v in _dense_parameters(model)}
    buffers = {k: v.detach() for k, v in model.named_buffers()}
    classify = not torch.is_floating_point(y)

    def sample_loss(p, b, x, target):
        out = functional_call(model, (p, b), (x.unsqueeze(0),))
        if classify:
            return nn.functional.cross_entropy(out, target.unsqueeze(0))
        return nn.functional.mse_loss(out.squeeze(-1), target.unsqueeze(0))

    was_training = model.training
    model.eval()  # dropout off: the Fisher of the model as it predicts
    try:
        # no_grad outside a torch.func transform holds only outside it: the tables the
        # module keeps (requires_grad) would otherwise chain the Fisher into the loss graph.
        with torch.no_grad():
            per_sample = vmap(grad(sample_loss), in_dims=(None, None, 0, 0), randomness="same")(
                params, buffers, X, y
            )
    finally:
        model.train(was_training)
    return {k: g.pow(2).mean(dim=0) for k, g in per_sample.items()}


def _dense_parameters(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """``model``'s named parameters except sparse embedding tables."""
    sparse = sparse_param_names(model)
    return [(k, p) for k, p in model.named_parameters() if k not in sparse]
