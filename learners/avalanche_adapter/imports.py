"""Import Avalanche on a CPU-only torch, where torchvision's compiled ops cannot load.

PyPI ships torchvision built against the CUDA torch only. Beside the CPU
torch build its C++ extension fails to load (it links ``libtorch_cuda.so``),
which torchvision tolerates, but its ``_meta_registrations`` module then
registers fake kernels for ops that do not exist and raises, so ``import
torchvision`` -- and with it ``import avalanche`` -- fails. Avalanche needs
torchvision only for dataset and transform classes, never for its C++ image
ops (nms, roi_align, ...), so :func:`import_avalanche` retries with those two
op-registration modules stubbed out and says so once. With a matching torch
and torchvision nothing is stubbed.
"""

from __future__ import annotations

import sys
import types
import warnings
from typing import Any

from stream.core.errors import ConfigError

__all__ = ["import_avalanche"]

_OP_REGISTRATIONS = ("torchvision._meta_registrations", "torchvision._autograd_registrations")


def _import_torchvision() -> None:
    try:
        import torchvision  # noqa: F401

        return
    except RuntimeError as exc:
        if "torchvision::" not in str(exc):
            raise
    # Drop the half-imported package, stub the op registrations, import again.
    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[name]
    for name in _OP_REGISTRATIONS:
        sys.modules[name] = types.ModuleType(name)
    import torchvision  # noqa: F401

    warnings.warn(
        "torchvision's C++ ops do not match this torch build (a CUDA torchvision wheel beside CPU torch); "
        "they are disabled. Avalanche's strategies do not use them.",
        RuntimeWarning,
        stacklevel=3,
    )


def import_avalanche() -> Any:
    """The ``avalanche.training`` module, importable on CPU-only torch too.

    Raises
    ------
    ConfigError
        Avalanche is not installed (the message says how to install it).
    """
    try:
        _import_torchvision()
        import avalanche.training as training
    except ImportError as exc:
        raise ConfigError(
            f"Avalanche strategies need avalanche-lib ({exc}); install it with "
            "pip install 'streamlearn[avalanche]' \"torchvision<0.29\" (a torchvision that matches torch 2.13, "
            "so pip does not replace torch)"
        ) from exc
    return training
