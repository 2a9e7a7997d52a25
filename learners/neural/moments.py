"""Running moments (count, mean, sum of squared deviations) merged and split exactly: the standardiser's statistics across learners.

Several learners that started from the same statistics and then each took
in their own events (the members of a scale-out round, issue 22) hold
``start + own events``. The statistics of ``start + every member's events``
are not an average of theirs: :func:`combine_round` removes the shared start
from each member (:func:`split`), merges what is left (:func:`merge`, Chan
et al.'s pairwise formula) and puts the start back, exactly -- the same
numbers, up to float64 rounding, as one learner that took in every event.

Moments are ``(count, mean, m2)`` tensors: ``count`` a scalar (every column
seen in every row) or one count per column (:class:`~learners.neural.standardize.MaskedStandardizer`,
missing values not counted). Arithmetic is float64 whatever the inputs.

Examples
--------
>>> import torch
>>> def moments(x):
...     return torch.tensor(float(len(x))), x.mean(0), ((x - x.mean(0)) ** 2).sum(0)
>>> start = torch.tensor([[1.0], [3.0]])
>>> a, b = torch.tensor([[10.0]]), torch.tensor([[4.0], [6.0]])
>>> members = [moments(torch.cat([start, a])), moments(torch.cat([start, b]))]
>>> count, mean, m2 = combine_round(moments(start), members)
>>> everything = moments(torch.cat([start, a, b]))
>>> float(count), round(float(mean[0]), 4), round(float(m2[0]), 4)
(5.0, 4.8, 46.8)
>>> float(everything[0]), round(float(everything[1][0]), 4), round(float(everything[2][0]), 4)
(5.0, 4.8, 46.8)
"""

from __future__ import annotations

from typing import Sequence

import torch

__all__ = ["Moments", "combine_round", "merge", "split"]

Moments = tuple[torch.Tensor, torch.Tensor, torch.Tensor]
"""``(count, mean, m2)``: ``count`` scalar or per column, ``mean`` and ``m2`` per column."""


def _f64(moments: Moments) -> Moments:
    return tuple(t.detach().to(torch.float64) for t in moments)  # type: ignore[return-value]


def merge(parts: Sequence[Moments]) -> Moments:
    """The moments of the union of disjoint sets of rows, from each set's moments (float64).

    Chan et al.: ``mean = sum(n_i mean_i) / n``, ``m2 = sum(m2_i + n_i (mean_i - mean)^2)``;
    an empty part (count 0) changes nothing.

    >>> import torch
    >>> merge([(torch.tensor(2.0), torch.tensor([2.0]), torch.tensor([2.0])),
    ...        (torch.tensor(0.0), torch.tensor([9.0]), torch.tensor([0.0]))])[1].tolist()
    [2.0]
    """
    parts = [_f64(p) for p in parts]
    count = sum(p[0] for p in parts)
    safe = torch.where(count > 0, count, torch.ones_like(count))
    mean = sum(p[0] * p[1] for p in parts) / safe
    m2 = sum(p[2] + p[0] * (p[1] - mean) ** 2 for p in parts)
    return count, torch.where(count > 0, mean, torch.zeros_like(mean)), m2


def split(whole: Moments, known: Moments) -> Moments:
    """The moments of ``whole``'s rows minus ``known``'s (which must be among them): :func:`merge` undone.

    >>> import torch
    >>> whole = (torch.tensor(3.0), torch.tensor([2.0]), torch.tensor([2.0]))      # rows 1, 2, 3
    >>> [round(float(t.reshape(-1)[0]), 6) for t in split(whole, (torch.tensor(1.0), torch.tensor([1.0]), torch.tensor([0.0])))]
    [2.0, 2.5, 0.5]
    """
    (n, mean, m2), (k, kmean, km2) = _f64(whole), _f64(known)
    rest = n - k
    safe = torch.where(rest > 0, rest, torch.ones_like(rest))
    rmean = (n * mean - k * kmean) / safe
    rm2 = m2 - km2 - k * (kmean - mean) ** 2 - rest * (rmean - mean) ** 2
    zero = rest <= 0
    return (
        rest.clamp(min=0),
        torch.where(zero, torch.zeros_like(rmean), rmean),
        torch.where(zero, torch.zeros_like(rm2), rm2.clamp(min=0)),  # rounding may dip a hair below 0
    )


def combine_round(start: Moments, members: Sequence[Moments]) -> Moments:
    """``start`` plus every member's own events, when each member holds ``start`` plus its own."""
    return merge([start, *(split(member, start) for member in members)])
