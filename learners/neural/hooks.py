"""The update-plugin interface of :class:`~learners.neural.learner.TorchLearner`, and its optional hooks.

Every plugin implements :class:`UpdatePlugin` (called on each ``learn_batch``).
Beyond that a plugin may declare capabilities the learner's *occasional*
verbs use -- each a small Protocol:

- :class:`Consolidates` (``consolidate() -> bool``): anchor on the model as it
  is now (EWC; the engine calls it when the gate validates a version);
- :class:`ResetsAnchors` (``reset()``): forget what was anchored (an adopted
  full retrain is the new reference);
- :class:`Relaxable` (``relax``, ``restore_strength``, ``effective_strength``):
  loosen a regulariser while the world changes (the drift policy's *adapt*);
- :class:`Refreshable` (``refresh(fraction) -> int``): evict part of a replay
  buffer so new data takes its place.

:class:`PluginHooks` sorts a learner's plugins by capability once, when the
learner is built, so no verb probes a plugin with ``hasattr``.

Examples
--------
>>> from learners.neural.ewc import EWC
>>> from learners.neural.rehearsal import ReservoirReplay
>>> hooks = PluginHooks.resolve([EWC(strength=100), ReservoirReplay(capacity=10)])
>>> len(hooks.consolidating), len(hooks.resetting), len(hooks.relaxable), len(hooks.refreshable)
(1, 1, 1, 1)
>>> hooks.adapt(ewc_factor=0.5, replay_refresh=0.5)
{'ewc_strength': [100.0, 50.0], 'replay_evicted': 0}
>>> hooks.restore_plasticity()
{'ewc_strength': [50.0, 100.0]}
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, Sequence, runtime_checkable

import torch
from torch import nn

__all__ = [
    "BasePlugin",
    "Consolidates",
    "FollowsClasses",
    "PluginHooks",
    "Refreshable",
    "Relaxable",
    "ResetsAnchors",
    "UpdatePlugin",
]


@runtime_checkable
class UpdatePlugin(Protocol):
    """A narrow hook into :meth:`TorchLearner.learn_batch` (EWC, replay, ...).

    Per ``learn_batch`` the learner calls, in order:

    1. ``X, y = plugin.before_update(X, y)`` for each plugin (device
       tensors; e.g. a rehearsal buffer concatenates replayed samples);
    2. for each gradient step, ``loss += plugin.penalty(model)`` for each
       plugin that returns a tensor (e.g. the EWC quadratic penalty);
    3. ``plugin.after_update(model, X, y)`` with the batch *as it arrived*
       (before step 1), e.g. to add it to a buffer.

    All hooks run on the hot path: they must not synchronise with the device
    and must not modify the tensors they are given in place. ``state_dict``
    must return plain data and tensors (it goes into the checkpoint via
    :mod:`learners.state_io`); ``clone`` returns a fresh plugin with the same
    configuration and no state.
    """

    def before_update(self, X: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the (possibly augmented) batch to learn from."""
        ...

    def penalty(self, model: nn.Module) -> torch.Tensor | None:
        """A 0-d tensor added to the loss of each step, or ``None``."""
        ...

    def after_update(self, model: nn.Module, X: torch.Tensor, y: torch.Tensor) -> None:
        """Observe the learned batch after the optimizer step(s)."""
        ...

    def state_dict(self) -> dict:
        """Plugin state (tensors and plain data) for checkpoints."""
        ...

    def load_state_dict(self, state: dict) -> None:
        """Restore what :meth:`state_dict` returned."""
        ...

    def clone(self) -> UpdatePlugin:
        """A fresh plugin with the same configuration and no state."""
        ...


class BasePlugin:
    """No-op implementations of every :class:`UpdatePlugin` hook; override what you need.

    Examples
    --------
    >>> import numpy as np
    >>> from learners.neural.learner import TorchLearner
    >>> class L2(BasePlugin):
    ...     def __init__(self, weight: float) -> None:
    ...         self.weight = weight
    ...     def penalty(self, model):
    ...         return self.weight * sum((p * p).sum() for p in model.parameters())
    ...     def clone(self):
    ...         return L2(self.weight)
    >>> learner = TorchLearner(n_features=3, device="cpu", plugins=[L2(1e-3)])
    >>> learner.learn_batch(np.zeros((4, 3), np.float32), np.array([0, 1, 0, 1])).n_samples
    4
    """

    def before_update(self, X: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return X, y

    def penalty(self, model: nn.Module) -> torch.Tensor | None:
        return None

    def after_update(self, model: nn.Module, X: torch.Tensor, y: torch.Tensor) -> None:
        return None

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        return None

    def clone(self) -> UpdatePlugin:
        raise NotImplementedError(
            f"{type(self).__name__} must implement clone() to be used in a clonable learner"
        )


@runtime_checkable
class Consolidates(Protocol):
    """A plugin that anchors on the model as it is now (EWC)."""

    def consolidate(self) -> bool:
        """Anchor now; ``False`` when there was nothing to anchor on (no batch seen yet)."""
        ...


@runtime_checkable
class ResetsAnchors(Protocol):
    """A plugin that can forget what it anchored (after an adopted full retrain)."""

    def reset(self) -> None: ...


@runtime_checkable
class Relaxable(Protocol):
    """A regulariser whose strength the drift policy can lower for a while, then restore."""

    @property
    def effective_strength(self) -> float: ...

    def relax(self, factor: float) -> None: ...

    def restore_strength(self) -> None: ...


@runtime_checkable
class Refreshable(Protocol):
    """A replay buffer that can evict part of its memory; returns how many rows went."""

    def refresh(self, fraction: float) -> int: ...


@runtime_checkable
class FollowsClasses(Protocol):
    """A plugin that holds per-class or per-output state (EWC's head anchors, a class-balanced buffer)."""

    def grow_classes(self, n_classes: int, model: nn.Module) -> None:
        """The learner now has ``n_classes`` classes and ``model`` its grown output layer."""
        ...


@dataclass(frozen=True)
class PluginHooks:
    """A learner's plugins sorted by optional capability, once (see the module docstring)."""

    consolidating: tuple[Consolidates, ...] = ()
    resetting: tuple[ResetsAnchors, ...] = ()
    relaxable: tuple[Relaxable, ...] = ()
    refreshable: tuple[Refreshable, ...] = ()
    growing: tuple[FollowsClasses, ...] = ()
    #: ``(plugin, relaxable, refreshable)`` in the learner's plugin order: :meth:`adapt` keeps that order.
    adapting: tuple[tuple[Any, bool, bool], ...] = ()

    @classmethod
    def resolve(cls, plugins: Sequence[object]) -> PluginHooks:
        return cls(
            consolidating=tuple(p for p in plugins if isinstance(p, Consolidates)),
            resetting=tuple(p for p in plugins if isinstance(p, ResetsAnchors)),
            relaxable=tuple(p for p in plugins if isinstance(p, Relaxable)),
            refreshable=tuple(p for p in plugins if isinstance(p, Refreshable)),
            growing=tuple(p for p in plugins if isinstance(p, FollowsClasses)),
            adapting=tuple(
                (p, isinstance(p, Relaxable), isinstance(p, Refreshable))
                for p in plugins
                if isinstance(p, (Relaxable, Refreshable))
            ),
        )

    def consolidate(self) -> int:
        """Ask every consolidating plugin to anchor; how many did."""
        return sum(1 for plugin in self.consolidating if plugin.consolidate())

    def grow_classes(self, n_classes: int, model: nn.Module) -> None:
        """Tell every plugin with per-class state that the learner grew to ``n_classes``."""
        for plugin in self.growing:
            plugin.grow_classes(n_classes, model)

    def reset(self) -> int:
        """Reset every anchoring plugin; how many."""
        for plugin in self.resetting:
            plugin.reset()
        return len(self.resetting)

    def adapt(self, *, ewc_factor: float, replay_refresh: float) -> dict:
        """Relax every regulariser by ``ewc_factor``, refresh every buffer by ``replay_refresh``; what changed."""
        changes: dict = {}
        for plugin, relax, refresh in self.adapting:
            if relax:
                before = plugin.effective_strength
                plugin.relax(ewc_factor)
                changes["ewc_strength"] = [before, plugin.effective_strength]
            if refresh:
                changes["replay_evicted"] = changes.get("replay_evicted", 0) + plugin.refresh(replay_refresh)
        return changes

    def restore_plasticity(self) -> dict:
        """Back to every regulariser's configured strength; what changed."""
        changes: dict = {}
        for plugin in self.relaxable:
            before = plugin.effective_strength
            plugin.restore_strength()
            changes["ewc_strength"] = [before, plugin.effective_strength]
        return changes
