"""The memory a torch model asks for, checked against a budget before anything is allocated.

An embedding table of ``buckets x dim`` floats is the dominant cost of a model
fed named features; an Adam-family optimizer keeps two moments per parameter,
so a model costs about 3x its parameters. :func:`check_model_budget` builds the
model on the ``meta`` device (shapes only, no memory), sums its parameters and
buffers, and raises before the learner allocates a table that cannot fit.

>>> from learners.neural.models import ModelFactory
>>> layout = {"numeric": 1, "tables": [[1 << 20, 16, 1]]}
>>> params_mb, optimizer_mb = model_megabytes(ModelFactory("logistic", {"layout": layout}), 2, 2, "adam")
>>> round(params_mb), round(optimizer_mb)
(64, 128)
>>> check_model_budget(ModelFactory("logistic", {"layout": layout}), 2, 2, "adam", max_mb=100.0)
Traceback (most recent call last):
...
stream.core.errors.ConfigError: the model needs 192 MB (64 MB of parameters + 128 MB of adam state) but --max-model-mb is 100; use fewer buckets or a smaller dim in the feature schema, or raise --max-model-mb
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from stream.core.errors import ConfigError

__all__ = ["OPTIMIZER_MOMENTS", "check_model_budget", "model_megabytes"]

#: Optimizer state per parameter, in parameter-sized tensors (SparseAdam keeps Adam's two).
OPTIMIZER_MOMENTS = {"adam": 2, "adamw": 2, "sgd": 0}
_MB = float(1 << 20)


def model_megabytes(
    factory: Callable[[int, int], nn.Module], n_features: int, n_outputs: int, optimizer: str
) -> tuple[float, float]:
    """``(parameters and buffers, optimizer state)`` in MiB of the model ``factory`` builds; allocates nothing."""
    with torch.random.fork_rng(devices=[]), torch.device("meta"):
        module = factory(int(n_features), int(n_outputs))
    params = sum(p.numel() * p.element_size() for p in module.parameters())
    buffers = sum(b.numel() * b.element_size() for b in module.buffers())
    return (params + buffers) / _MB, params * OPTIMIZER_MOMENTS.get(optimizer, 2) / _MB


def check_model_budget(
    factory: Callable[[int, int], nn.Module], n_features: int, n_outputs: int, optimizer: str, max_mb: float
) -> float:
    """The model's total MiB, or a one-line :class:`ConfigError` when it exceeds ``max_mb``."""
    params_mb, optimizer_mb = model_megabytes(factory, n_features, n_outputs, optimizer)
    total = params_mb + optimizer_mb
    if total > max_mb:
        raise ConfigError(
            f"the model needs {total:,.0f} MB ({params_mb:,.0f} MB of parameters + {optimizer_mb:,.0f} MB of "
            f"{optimizer} state) but --max-model-mb is {max_mb:g}; use fewer buckets or a smaller dim in the "
            "feature schema, or raise --max-model-mb"
        )
    return total
