"""Online feature standardisation as a model layer: running mean and variance on the device.

Tabular streams arrive unscaled (river's Agrawal has salaries near 150,000
beside ages near 40), and a gradient learner fed raw features barely learns.
:class:`InputStandardizer` keeps per-feature running statistics as module
*buffers*, so they travel with the weights: in checkpoints, in every published
version, and into the serving process, which builds the same module and
predicts with exactly the statistics the learner had.

Its ``forward`` is pure (it only applies the statistics); the learner calls
:meth:`InputStandardizer.update` once per arriving micro-batch, before its
gradient steps. Keeping the update out of ``forward`` means replayed samples
and repeated steps never count twice, and ``torch.func`` transforms (EWC's
per-sample Fisher) see a function without side effects.

Examples
--------
>>> import torch
>>> s = InputStandardizer(2)
>>> x = torch.tensor([[0.0, 100.0], [2.0, 300.0]])
>>> s(x).tolist()                      # no statistics yet: identity
[[0.0, 100.0], [2.0, 300.0]]
>>> s.update(x)
>>> s(x).tolist()
[[-1.0, -1.0], [1.0, 1.0]]
>>> s.update(torch.tensor([[4.0, 200.0]]))   # merged, not replaced
>>> round(float(s.mean[0]), 6), int(s.count)
(2.0, 3)
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["InputStandardizer", "MaskedStandardizer"]

# A feature whose running std is below this is treated as constant: centred,
# not divided (dividing by ~0 would turn float noise into huge inputs).
_MIN_STD = 1e-6


class _Moments:
    """The moments -> forward statistics part both standardisers share (count is a scalar or per column)."""

    count: torch.Tensor
    mean: torch.Tensor
    m2: torch.Tensor
    shift: torch.Tensor
    scale: torch.Tensor
    n_features: int

    @torch.no_grad()
    def set_moments(self, count: torch.Tensor, mean: torch.Tensor, m2: torch.Tensor) -> None:
        """Replace the statistics with moments computed elsewhere (a distributed full retrain's global ones).

        >>> s = InputStandardizer(1)
        >>> s.set_moments(torch.tensor(4.0), torch.tensor([1.0]), torch.tensor([16.0]))
        >>> s(torch.tensor([[3.0]])).tolist()
        [[1.0]]
        """
        self.count.copy_(count)
        self.mean.copy_(mean)
        self.m2.copy_(m2)
        self._refresh()

    def _refresh(self) -> None:
        """The float32 forward copies from the float64 moments."""
        std = (self.m2 / self.count.clamp_min(1)).sqrt()
        self.shift.copy_(self.mean)
        self.scale.copy_(
            torch.where(std > _MIN_STD, std.clamp_min(_MIN_STD).reciprocal(), torch.ones_like(std))
        )

    def extra_repr(self) -> str:
        return f"n_features={self.n_features}"


class InputStandardizer(_Moments, nn.Module):
    """``(x - mean) / std`` with mean and std accumulated over every batch passed to :meth:`update`.

    Statistics are exact over all data seen (Chan et al.'s pairwise merge of
    batch moments, in float64 on the module's device), never a window: a
    streaming model should not have its input scale drift under it between
    validations. Until the first update the layer is the identity.
    """

    def __init__(self, n_features: int) -> None:
        super().__init__()
        self.n_features = int(n_features)
        self.register_buffer("count", torch.zeros((), dtype=torch.float64))
        self.register_buffer("mean", torch.zeros(self.n_features, dtype=torch.float64))
        self.register_buffer("m2", torch.zeros(self.n_features, dtype=torch.float64))
        # float32 copies for forward: two elementwise ops, no dtype casts per call.
        self.register_buffer("shift", torch.zeros(self.n_features))
        self.register_buffer("scale", torch.ones(self.n_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.shift) * self.scale

    @torch.no_grad()
    def update(self, x: torch.Tensor) -> None:
        """Merge the moments of batch ``x`` (shape ``(b, n_features)``) into the running ones.

        Runs entirely on the device: no host synchronisation, so it is safe on
        the learner's hot path.
        """
        b = x.shape[0]
        if b == 0:
            return
        x64 = x.detach().to(torch.float64)
        batch_mean = x64.mean(dim=0)
        batch_m2 = (x64 - batch_mean).square().sum(dim=0)
        total = self.count + b
        delta = batch_mean - self.mean
        self.mean.add_(delta * (b / total))
        self.m2.add_(batch_m2 + delta.square() * (self.count * b / total))
        self.count.copy_(total)
        self._refresh()


class MaskedStandardizer(_Moments, nn.Module):
    """:class:`InputStandardizer` for columns with missing values (NaN): mean imputation after scaling.

    Each column counts only its present values (Chan's merge with a count per
    column), so a field missing in 90% of rows is scaled by the 10% that have
    it. ``forward`` maps NaN to 0 after standardising, i.e. to the running
    mean; the caller adds the missing indicators (:class:`~learners.neural.feature_input.FeatureInput`).

    >>> s = MaskedStandardizer(2)
    >>> x = torch.tensor([[0.0, float("nan")], [2.0, 5.0], [float("nan"), 7.0]])
    >>> s.update(x)
    >>> s.count.tolist(), s.mean.tolist()
    ([2.0, 2.0], [1.0, 6.0])
    >>> s(x).tolist()
    [[-1.0, 0.0], [1.0, -1.0], [0.0, 1.0]]
    """

    def __init__(self, n_features: int) -> None:
        super().__init__()
        self.n_features = int(n_features)
        self.register_buffer("count", torch.zeros(self.n_features, dtype=torch.float64))
        self.register_buffer("mean", torch.zeros(self.n_features, dtype=torch.float64))
        self.register_buffer("m2", torch.zeros(self.n_features, dtype=torch.float64))
        self.register_buffer("shift", torch.zeros(self.n_features))
        self.register_buffer("scale", torch.ones(self.n_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nan_to_num((x - self.shift) * self.scale, nan=0.0)

    @torch.no_grad()
    def update(self, x: torch.Tensor) -> None:
        """Merge the moments of the present values of batch ``x`` (no host synchronisation)."""
        if x.shape[0] == 0:
            return
        x64 = x.detach().to(torch.float64)
        present = ~torch.isnan(x64)
        b = present.sum(dim=0, dtype=torch.float64)
        batch_mean = torch.where(present, x64, 0.0).sum(dim=0) / b.clamp_min(1)
        batch_m2 = torch.where(present, x64 - batch_mean, 0.0).square().sum(dim=0)
        total = self.count + b
        # b / total is 0 for a column with nothing present: its moments stay as they were.
        frac = b / total.clamp_min(1)
        delta = batch_mean - self.mean
        self.mean.add_(delta * frac)
        self.m2.add_(batch_m2 + delta.square() * self.count * frac)
        self.count.copy_(total)
        self._refresh()
