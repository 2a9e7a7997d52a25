"""The zoo's models as numpy functions, for serving small models on the CPU.

A torch call has a fixed cost of a few microseconds per op (dispatch,
autograd bookkeeping, tensor wrappers), so a logistic model's one-row
prediction (softmax included) takes ~25 us in torch and ~10 us in numpy. :func:`numpy_forward` reads the
weights of an eval-mode module once (when a version is loaded) and returns
``X -> outputs`` in numpy, the same arithmetic in float32: it equals the torch
forward within float32 rounding (tests/unit/test_numpy_forward.py checks every
model it claims against torch, named fields and missing values included).

Beyond a few dozen rows torch's kernels win (its fixed cost is spread over
the rows, numpy's LayerNorm and ``erf`` are slower), so :attr:`NumpyForward.max_rows`
says up to how many rows the numpy forward is the faster one, measured on
the zoo's default sizes: 256 rows for ``logistic`` and ``mlp``, 32 for models
with a ``LayerNorm`` (``resmlp``: 115 vs 140 us at 16 rows, 1,180 vs 360 us at 256).

It knows the zoo's building blocks -- ``Logistic``, ``MLP``, ``ResMLP``, their
input layers (``InputStandardizer``, ``FeatureInput``: standardiser, missing
indicators, embedding means) and ``Linear``, ``ReLU``, ``GELU``, ``LayerNorm``,
``Dropout``, ``Identity``, ``Sequential`` -- and returns ``None`` for any other
module, which then keeps predicting with torch.

Examples
--------
>>> import numpy as np, torch
>>> from learners.neural.models import build_model
>>> module = build_model("mlp", 3, 2, hidden=(4,)).eval()
>>> forward = numpy_forward(module)
>>> forward.max_rows
256
>>> X = np.array([[0.5, -1.0, 2.0]], np.float32)
>>> bool(np.allclose(forward(X), module(torch.from_numpy(X)).detach().numpy(), atol=1e-6))
True
>>> numpy_forward(torch.nn.Conv1d(1, 1, 1)) is None
True
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy.special import erf
from torch import nn

from learners.neural.feature_input import FeatureInput
from learners.neural.models import MLP, Logistic, ResidualBlock, ResMLP
from learners.neural.standardize import InputStandardizer

__all__ = ["Forward", "NumpyForward", "numpy_forward", "softmax"]

#: ``(n, in) float32 -> (n, out) float32``.
Forward = Callable[[np.ndarray], np.ndarray]

_SQRT_HALF = np.float32(math.sqrt(0.5))
#: Rows up to which numpy is faster than torch (see the module docstring).
MAX_ROWS = 256
MAX_ROWS_WITH_LAYER_NORM = 32


class _Unsupported(Exception):
    """A module this translation does not know: the caller keeps the torch forward."""


@dataclass(frozen=True)
class NumpyForward:
    """A module's forward as numpy steps; call it on an (n, in) float32 matrix."""

    steps: tuple[Forward, ...]
    #: Up to this many rows it is faster than the torch forward; beyond, use torch.
    max_rows: int

    def __call__(self, X: np.ndarray) -> np.ndarray:
        # Huge inputs may overflow float32; the caller checks the outputs, so no warnings.
        with np.errstate(all="ignore"):
            for step in self.steps:
                X = step(X)
        return X


def numpy_forward(module: nn.Module) -> NumpyForward | None:
    """``module``'s forward in numpy (float32, inference only), or ``None`` if it holds a layer it does not know.

    The numpy arrays share the module's memory (an embedding table is not
    held twice): build it from a loaded, eval-mode module that no one trains
    any more.
    """
    try:
        steps = tuple(_steps(module))
    except _Unsupported:
        return None
    normed = any(isinstance(m, nn.LayerNorm) for m in module.modules())
    return NumpyForward(steps, MAX_ROWS_WITH_LAYER_NORM if normed else MAX_ROWS)


def softmax(z: np.ndarray) -> np.ndarray:
    """Row-wise softmax, as ``torch.softmax(z, dim=-1)``.

    >>> softmax(np.array([[0.0, 0.0]], np.float32)).tolist()
    [[0.5, 0.5]]
    """
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


# ------------------------------------------------------------------ translation
def _array(tensor) -> np.ndarray:
    return np.asarray(tensor.detach().cpu().numpy(), dtype=np.float32)  # no copy for a CPU float32 tensor


def _steps(module: nn.Module) -> list[Forward]:
    """The module as a list of numpy steps applied in order."""
    if isinstance(module, Logistic):
        return [*_steps(module.scaler), *_steps(module.linear)]
    if isinstance(module, MLP):
        return [*_steps(module.scaler), *_steps(module.net)]
    if isinstance(module, ResMLP):
        return [
            *_steps(module.scaler),
            *_steps(module.proj),
            *_steps(module.blocks),
            *_steps(module.norm),
            *_steps(module.head),
        ]
    if isinstance(module, nn.Sequential):
        return [step for child in module for step in _steps(child)]
    if isinstance(module, (nn.Identity, nn.Dropout)):  # dropout is the identity in eval mode
        return []
    if isinstance(module, nn.Linear):
        return [_linear(module)]
    if isinstance(module, nn.ReLU):
        return [lambda x: np.maximum(x, np.float32(0))]
    if isinstance(module, nn.GELU) and module.approximate == "none":
        return [lambda x: x * np.float32(0.5) * (np.float32(1) + erf(x * _SQRT_HALF))]
    if isinstance(module, nn.LayerNorm):
        return [_layer_norm(module)]
    if isinstance(module, ResidualBlock):
        inner = [*_steps(module.norm), *_steps(module.fc1), *_steps(module.act), *_steps(module.drop)]
        inner += _steps(module.fc2)
        return [_residual(inner)]
    if isinstance(module, InputStandardizer):
        shift, scale = _array(module.shift), _array(module.scale)
        return [lambda x: (x - shift) * scale]
    if isinstance(module, FeatureInput):
        return [_feature_input(module)]
    raise _Unsupported(type(module).__name__)


def _linear(layer: nn.Linear) -> Forward:
    weight_t = np.ascontiguousarray(_array(layer.weight).T)
    if layer.bias is None:
        return lambda x: x @ weight_t
    bias = _array(layer.bias)
    return lambda x: x @ weight_t + bias


def _layer_norm(layer: nn.LayerNorm) -> Forward:
    if len(layer.normalized_shape) != 1:
        raise _Unsupported("LayerNorm over more than the last dimension")
    eps = np.float32(layer.eps)
    weight = _array(layer.weight) if layer.weight is not None else np.float32(1)
    bias = _array(layer.bias) if layer.bias is not None else np.float32(0)

    def norm(x: np.ndarray) -> np.ndarray:
        centred = x - x.mean(axis=-1, keepdims=True)
        var = np.square(centred).mean(axis=-1, keepdims=True)  # biased, as torch's
        return centred / np.sqrt(var + eps) * weight + bias

    return norm


def _residual(inner: list[Forward]) -> Forward:
    def block(x: np.ndarray) -> np.ndarray:
        h = x
        for step in inner:
            h = step(h)
        return x + h

    return block


def _feature_input(layer: FeatureInput) -> Forward:
    """Numeric block (standardised, NaN -> 0, missing indicators) and each table's embedding mean."""
    k = layer.n_numeric
    shift, scale = _array(layer.scaler.shift), _array(layer.scaler.scale)
    standardize = layer.standardize
    tables = [(_array(table.weight), a, b) for table, (a, b) in zip(layer.tables, layer._spans)]

    def forward(x: np.ndarray) -> np.ndarray:
        parts = []
        if k:
            num = x[:, :k]
            missing = np.isnan(num)
            scaled = (num - shift) * scale if standardize else num
            # torch.nan_to_num also maps +-inf to float32's extremes, and so does numpy's.
            parts += [np.nan_to_num(scaled, nan=0.0), missing.astype(np.float32)]
        for weight, a, b in tables:
            codes = x[:, a:b].astype(np.int64)  # truncation, as torch's .long()
            if b - a == 1:
                parts.append(weight[codes[:, 0]])
            else:
                used = np.maximum((codes != 0).sum(axis=1, keepdims=True), 1).astype(np.float32)
                parts.append(weight[codes].sum(axis=1) / used)
        return np.concatenate(parts, axis=1)

    return forward
