"""Rehearsal buffers as :class:`~learners.neural.hooks.UpdatePlugin`s: reservoir and class-balanced.

Each learned batch is mixed with ``mix`` times as many samples replayed from
a buffer of past events, so the gradient keeps seeing the old distribution.
Buffers are preallocated device tensors (allocated at the first batch, when
the feature count and device are known) and every operation -- insertion,
sampling -- is a handful of tensor ops with no host synchronisation:

* :class:`ReservoirReplay`: uniform reservoir sampling over the whole stream
  (Vitter's algorithm R, vectorised: item ``k`` of the stream lands on slot
  ``floor(u * (k + 1))`` when that is below the capacity). The row at index
  ``capacity`` is a scratch row that absorbs the writes reservoir sampling
  discards, so an ``index_copy_`` needs no boolean mask (which would sync).
* :class:`ClassBalancedReplay`: one reservoir per class (``capacity //
  n_classes`` slots each), counts kept on the device, and sampling that picks
  a seen class uniformly first -- rare classes are rehearsed as often as
  common ones.

The buffer contents and counters are part of the learner's state, so they
travel in checkpoints and published versions.

Examples
--------
>>> import numpy as np
>>> from learners.neural.learner import TorchLearner
>>> replay = ReservoirReplay(capacity=100, mix=0.5, seed=0)
>>> learner = TorchLearner(n_features=2, device="cpu", plugins=[replay])
>>> X = np.random.default_rng(0).normal(size=(64, 2)).astype(np.float32)
>>> for _ in range(3):
...     _ = learner.learn_batch(X, (X[:, 0] > 0).astype(np.int64))
>>> replay.seen, replay.size
(192, 100)
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from learners.neural.hooks import BasePlugin
from stream.core.errors import ConfigError

__all__ = ["ReservoirReplay", "ClassBalancedReplay"]


class _Replay(BasePlugin):
    def __init__(self, capacity: int, mix: float, seed: int) -> None:
        if capacity < 1:
            raise ConfigError(f"replay capacity must be >= 1, got {capacity!r}")
        if not mix >= 0:
            raise ConfigError(f"replay mix must be >= 0 (replayed rows per new row), got {mix!r}")
        self.capacity = int(capacity)
        self.mix = float(mix)
        self.seed = int(seed)
        self._X: torch.Tensor | None = None
        self._y: torch.Tensor | None = None
        self._gen: torch.Generator | None = None
        self._seen = 0  # host int: batch sizes are known on the host, so this never syncs

    @property
    def seen(self) -> int:
        """Events offered to the buffer so far (since the last :meth:`refresh`, which lowers it)."""
        return self._seen

    def refresh(self, fraction: float) -> int:
        """Evict a random ``fraction`` of the stored rows; the next arrivals take their places.

        The drift policy's lever when the world changed: the buffer keeps
        ``1 - fraction`` of its memory and learns the new concept into the
        rest at once, instead of at the reservoir's slow ``capacity / seen``
        rate. Returns how many rows were evicted. Not on the hot path (it
        reads counts back from the device).
        """
        if not 0 <= fraction <= 1:
            raise ConfigError(f"replay refresh fraction must be in [0, 1], got {fraction!r}")
        if self._X is None or fraction == 0:
            return 0
        return self._evict(fraction)

    def _keep_random(self, start: int, filled: int, fraction: float) -> int:
        """Compact a random ``1 - fraction`` of rows ``[start, start + filled)`` to its front; returns the count kept."""
        keep = filled - int(round(fraction * filled))
        if keep < filled:
            order = torch.randperm(filled, generator=self._gen, device=self._X.device)[:keep] + start
            self._X[start : start + keep] = self._X[order].clone()
            self._y[start : start + keep] = self._y[order].clone()
        return keep

    def _evict(self, fraction: float) -> int:
        raise NotImplementedError

    def _allocate(self, X: torch.Tensor, y: torch.Tensor) -> None:
        # +1: the scratch row (see the module docstring).
        self._X = torch.zeros((self.capacity + 1, X.shape[1]), dtype=X.dtype, device=X.device)
        self._y = torch.zeros((self.capacity + 1,), dtype=y.dtype, device=y.device)
        self._gen = torch.Generator(device=X.device)
        self._gen.manual_seed(self.seed)

    def _rand(self, n: int) -> torch.Tensor:
        return torch.rand(n, generator=self._gen, device=self._X.device)

    def before_update(self, X: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        m = int(round(self.mix * X.shape[0]))
        if self._X is None or m == 0 or self._seen == 0:
            return X, y
        idx = self._sample(m)
        return torch.cat([X, self._X[idx]]), torch.cat([y, self._y[idx]])

    def after_update(self, model: nn.Module, X: torch.Tensor, y: torch.Tensor) -> None:
        if self._X is None:
            self._allocate(X, y)
        self._insert(X, y)
        self._seen += X.shape[0]

    def _sample(self, m: int) -> torch.Tensor:
        raise NotImplementedError

    def _insert(self, X: torch.Tensor, y: torch.Tensor) -> None:
        raise NotImplementedError

    def _base_state(self) -> dict[str, Any]:
        return {
            "X": None if self._X is None else self._X.clone(),
            "y": None if self._y is None else self._y.clone(),
            "rng": None if self._gen is None else self._gen.get_state(),
            "seen": self._seen,
        }

    def load_state_dict(self, state: dict) -> None:
        self._seen = int(state.get("seen", 0))
        if state.get("X") is None:
            self._X = self._y = self._gen = None
            return
        X, y = state["X"], state["y"]
        if X.shape[0] != self.capacity + 1:
            raise ConfigError(f"replay state holds {X.shape[0] - 1} slots, this buffer has {self.capacity}")
        self._X, self._y = X.clone(), y.clone()
        self._gen = torch.Generator(device=X.device)
        self._gen.set_state(state["rng"].cpu() if isinstance(state["rng"], torch.Tensor) else state["rng"])


class ReservoirReplay(_Replay):
    """Uniform reservoir over the whole stream; ``mix`` replayed rows per new row.

    Raises
    ------
    ConfigError
        ``capacity < 1`` or ``mix < 0``.
    """

    def __init__(self, capacity: int = 2000, mix: float = 1.0, seed: int = 0) -> None:
        super().__init__(capacity, mix, seed)

    @property
    def size(self) -> int:
        return min(self._seen, self.capacity)

    def _sample(self, m: int) -> torch.Tensor:
        return torch.randint(0, self.size, (m,), generator=self._gen, device=self._X.device)

    def _insert(self, X: torch.Tensor, y: torch.Tensor) -> None:
        k = torch.arange(self._seen, self._seen + X.shape[0], device=X.device)
        slot = torch.floor(self._rand(X.shape[0]) * (k + 1)).long()
        slot = torch.where(k < self.capacity, k, slot)  # the first `capacity` items fill the buffer
        slot = torch.where(slot < self.capacity, slot, self.capacity)  # discarded -> scratch row
        self._X.index_copy_(0, slot, X)
        self._y.index_copy_(0, slot, y)

    def _evict(self, fraction: float) -> int:
        size = self.size
        # The reservoir restarts its count at the rows kept: the next
        # `capacity - kept` arrivals fill the freed slots in order.
        self._seen = self._keep_random(0, size, fraction)
        return size - self._seen

    def state_dict(self) -> dict:
        return self._base_state()

    def clone(self) -> ReservoirReplay:
        return ReservoirReplay(self.capacity, self.mix, self.seed)

    def __repr__(self) -> str:
        return f"ReservoirReplay(capacity={self.capacity}, mix={self.mix:g})"


class ClassBalancedReplay(_Replay):
    """One reservoir per class and class-uniform sampling (classification only).

    Raises
    ------
    ConfigError
        ``n_classes < 2``, ``capacity < n_classes`` or ``mix < 0``.
    """

    def __init__(self, n_classes: int, capacity: int = 2000, mix: float = 1.0, seed: int = 0) -> None:
        if n_classes < 2:
            raise ConfigError(f"class-balanced replay needs n_classes >= 2, got {n_classes!r}")
        if capacity < n_classes:
            raise ConfigError(
                f"class-balanced replay needs capacity >= n_classes ({n_classes}), got {capacity}"
            )
        super().__init__(capacity - capacity % n_classes, mix, seed)
        # As asked for: a buffer grown to more classes rounds it as one built at that count would.
        self.requested_capacity = int(capacity)
        self.n_classes = int(n_classes)
        self._per_class = self.capacity // self.n_classes
        self._counts: torch.Tensor | None = None

    def _allocate(self, X: torch.Tensor, y: torch.Tensor) -> None:
        if torch.is_floating_point(y):
            raise ConfigError("class-balanced replay needs class labels; use ReservoirReplay for regression")
        super()._allocate(X, y)
        self._counts = torch.zeros(self.n_classes, dtype=torch.long, device=X.device)

    def _sample(self, m: int) -> torch.Tensor:
        filled = torch.clamp(self._counts, max=self._per_class)
        # Pick among classes seen so far, uniformly; seen > 0 guarantees one exists.
        cls = torch.multinomial((filled > 0).float(), m, replacement=True, generator=self._gen)
        within = torch.floor(self._rand(m) * filled[cls]).long()
        return cls * self._per_class + within

    def _insert(self, X: torch.Tensor, y: torch.Tensor) -> None:
        onehot = nn.functional.one_hot(y, self.n_classes)
        # Rank of each item among this batch's items of its class, then its
        # position in that class's stream.
        rank = (onehot.cumsum(dim=0) * onehot).sum(dim=1) - 1
        k = self._counts[y] + rank
        slot = torch.floor(self._rand(X.shape[0]) * (k + 1)).long()
        slot = torch.where(k < self._per_class, k, slot)
        slot = torch.where(slot < self._per_class, y * self._per_class + slot, self.capacity)
        self._X.index_copy_(0, slot, X)
        self._y.index_copy_(0, slot, y)
        self._counts += onehot.sum(dim=0)

    def _evict(self, fraction: float) -> int:
        filled = torch.clamp(self._counts, max=self._per_class).tolist()
        kept = [self._keep_random(c * self._per_class, n, fraction) for c, n in enumerate(filled)]
        self._counts = torch.tensor(kept, dtype=torch.long, device=self._counts.device)
        self._seen = sum(kept)
        return sum(filled) - self._seen

    def grow_classes(self, n_classes: int, model: nn.Module) -> None:
        """Re-slot the buffer for ``n_classes`` classes: each old class keeps its first ``capacity // n_classes`` rows.

        Not on the hot path (it reads the counts back from the device).

        Raises
        ------
        ConfigError
            The buffer has fewer slots than ``n_classes``.
        """
        if n_classes <= self.n_classes:
            return
        asked = self.requested_capacity
        if asked < n_classes:
            raise ConfigError(f"class-balanced replay needs capacity >= n_classes ({n_classes}), got {asked}")
        old_per, old_n = self._per_class, self.n_classes
        self.n_classes, self.capacity = int(n_classes), asked - asked % n_classes
        self._per_class = self.capacity // self.n_classes
        if self._X is None:
            return
        X, y = self._X, self._y
        self._X = X.new_zeros((self.capacity + 1, X.shape[1]))
        self._y = y.new_zeros((self.capacity + 1,))
        filled = torch.clamp(self._counts, max=old_per).tolist()
        for c, n in enumerate(filled):
            keep = min(n, self._per_class)
            src, dst = c * old_per, c * self._per_class
            self._X[dst : dst + keep] = X[src : src + keep]
            self._y[dst : dst + keep] = y[src : src + keep]
        # A class with more rows than its new share continues as a full reservoir at its count.
        grown = self._counts.new_zeros(self.n_classes)
        grown[:old_n] = self._counts
        self._counts = grown

    def class_counts(self) -> torch.Tensor:
        """Events seen per class (a device tensor; reading it syncs)."""
        return torch.zeros(self.n_classes, dtype=torch.long) if self._counts is None else self._counts

    def state_dict(self) -> dict:
        return {**self._base_state(), "counts": None if self._counts is None else self._counts.clone()}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        counts = state.get("counts")
        self._counts = None if counts is None else counts.clone()

    def clone(self) -> ClassBalancedReplay:
        return ClassBalancedReplay(self.n_classes, self.requested_capacity, self.mix, self.seed)

    def __repr__(self) -> str:
        return f"ClassBalancedReplay(n_classes={self.n_classes}, capacity={self.capacity}, mix={self.mix:g})"
