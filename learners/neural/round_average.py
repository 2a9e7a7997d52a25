"""One model from several learners after a round: event-weighted parameter averages, exact standardiser moments.

The members of a scale-out round (issue 22) start from the same model, each
learns its own events, then combine (LocalSGD): every floating parameter
becomes the average of the members' weighted by the events each learned, and
every input standardiser gets the moments of the shared start plus all the
members' events (:func:`learners.neural.moments.combine_round`), exactly, not
averaged. Communication is one sum across members per call
(``all_reduce_sum``, e.g. ``torch.distributed.all_reduce`` over gloo or NCCL),
so this module knows no transport and is tested with members in threads.

Optimizer state stays each member's own, as in LocalSGD.

Examples
--------
>>> import torch
>>> from torch import nn
>>> model = nn.Linear(1, 1, bias=False)
>>> with torch.no_grad():
...     _ = model.weight.fill_(2.0)
>>> alone = lambda t: t  # a round of one member: the sum over members is the tensor itself
>>> average_round(model, events=10, start=None, all_reduce_sum=alone)
10
>>> model.weight.item()
2.0
"""

from __future__ import annotations

from typing import Callable, Mapping

import torch
from torch import nn

from learners.neural.moments import Moments, merge, split

__all__ = ["average_round", "standardizer_moments"]

AllReduceSum = Callable[[torch.Tensor], torch.Tensor]


def standardizer_moments(module: nn.Module) -> dict[str, Moments]:
    """The running moments of every standardiser in ``module`` (any submodule with count/mean/m2 buffers), by name."""
    out = {}
    for name, sub in module.named_modules():
        if all(hasattr(sub, b) for b in ("count", "mean", "m2", "set_moments")):
            out[name] = (sub.count.detach().clone(), sub.mean.detach().clone(), sub.m2.detach().clone())
    return out


@torch.no_grad()
def average_round(
    module: nn.Module, *, events: int, start: Mapping[str, Moments] | None, all_reduce_sum: AllReduceSum
) -> int:
    """Combine this member's ``module`` with the other members' in place; the round's total events.

    ``events``: how many events this member learned in the round (its weight).
    ``start``: :func:`standardizer_moments` of the model every member started
    the round from (``None``: the start had none, e.g. the first round).
    Every member calls it with the same module structure, in the same order.
    A round where no member learned anything changes nothing.
    """
    params = [p for p in module.parameters() if p.is_floating_point()]
    device = params[0].device if params else torch.device("cpu")
    weight = float(events)
    flat = torch.cat(
        [p.detach().reshape(-1).to(torch.float64) * weight for p in params]
        + [torch.tensor([weight], dtype=torch.float64, device=device)]
    )
    flat = all_reduce_sum(flat)
    total = float(flat[-1])
    if total > 0:
        at = 0
        for p in params:
            n = p.numel()
            p.copy_((flat[at : at + n] / total).reshape(p.shape).to(p.dtype))
            at += n
    _combine_moments(module, start or {}, all_reduce_sum)
    return int(round(total))


def _combine_moments(module: nn.Module, start: Mapping[str, Moments], all_reduce_sum: AllReduceSum) -> None:
    """Every standardiser: start + the sum over members of (own moments - start), in three sums."""
    for name, (count, mean, m2) in standardizer_moments(module).items():
        base = start.get(name)
        if base is None:
            base = (torch.zeros_like(count), torch.zeros_like(mean), torch.zeros_like(m2))
        n, own_mean, own_m2 = split((count, mean, m2), base)
        # merge() over members, written as sums: n, n * mean, m2 + n * mean^2.
        sums = all_reduce_sum(
            torch.cat([n.reshape(-1), (n * own_mean).reshape(-1), own_m2 + n * own_mean**2])
        )
        width = n.numel()
        total_n = sums[:width].reshape(n.shape)
        safe = torch.where(total_n > 0, total_n, torch.ones_like(total_n))
        members_mean = sums[width : width + mean.numel()] / safe
        members_m2 = sums[width + mean.numel() :] - total_n * members_mean**2
        members = (total_n, torch.where(total_n > 0, members_mean, 0.0), members_m2.clamp(min=0))
        combined = merge([tuple(t.to(torch.float64) for t in base), members])
        dict(module.named_modules())[name].set_moments(*combined)
