"""Validation of a micro-batch's features and targets, shared by every learner.

Both checks run on the host before anything else happens, never write to
their inputs and raise ``ValueError`` with a message naming the fix.

Examples
--------
>>> import numpy as np
>>> check_features(np.zeros((2, 3)), 3).dtype
dtype('float32')
>>> check_targets(np.array([0, 2]), 2, classify=True, n_classes=2)
Traceback (most recent call last):
...
ValueError: label 2 is outside 0..1; this learner has n_classes=2 (set n_classes to the number of classes)
"""

from __future__ import annotations

import numpy as np

__all__ = ["check_features", "check_targets"]


def check_features(X: np.ndarray, n_features: int) -> np.ndarray:
    """``X`` as float32 ``(n, n_features)``, C-contiguous and writable (a copy only when needed)."""
    X = np.asarray(X)
    if X.ndim != 2 or X.shape[1] != n_features:
        raise ValueError(f"X must have shape (n, {n_features}), got {X.shape}")
    Xc = np.ascontiguousarray(X, dtype=np.float32)
    if not Xc.flags.writeable:  # torch.from_numpy needs a writable buffer
        Xc = Xc.copy()
    return Xc


def check_targets(y: np.ndarray, n: int, *, classify: bool, n_classes: int) -> np.ndarray:
    """``y`` checked against ``n`` rows: int64 class indices in ``0..n_classes-1``, or numeric targets as they are."""
    y = np.asarray(y)
    if y.shape != (n,):
        raise ValueError(f"y must have shape ({n},) to match X, got {y.shape}")
    if not classify:
        if y.dtype.kind not in "iuf":
            raise ValueError(f"regression targets must be numeric, got dtype {y.dtype}")
        return y
    if y.dtype.kind not in "iu":
        raise ValueError(
            f"classification labels must be integer class indices 0..{n_classes - 1}, got dtype {y.dtype}"
        )
    if n:
        lo, hi = int(y.min()), int(y.max())
        if lo < 0 or hi >= n_classes:
            bad = hi if hi >= n_classes else lo
            raise ValueError(
                f"label {bad} is outside 0..{n_classes - 1}; this learner has "
                f"n_classes={n_classes} (set n_classes to the number of classes)"
            )
    return y.astype(np.int64, copy=False)
