"""What a :class:`~learners.neural.learner.TorchLearner` is configured with, checked: arguments, device, state fit.

The learner's constructor and :meth:`~learners.neural.learner.TorchLearner.load_state_dict`
call into here; the learner itself keeps the training and prediction paths.

>>> check_arguments(n_features=0, task="classification", n_classes=2, optimizer="adam", lr=0.1,
...                 steps_per_batch=1, minibatch_size=None, seed=0)
Traceback (most recent call last):
...
stream.core.errors.ConfigError: n_features must be a positive integer, got 0
>>> canonical([64, [1, 2]]) == canonical((64, (1, 2)))
True
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import numpy as np
import torch
from torch import nn

from learners.neural.feature_input import FeatureInput
from learners.neural.models import MLP, Logistic, ModelFactory, ResidualBlock, ResMLP, model_factory
from learners.neural.split_optimizer import SplitOptimizer, sparse_param_names
from learners.neural.standardize import InputStandardizer, MaskedStandardizer
from stream.core.errors import ConfigError, SchemaMismatchError

__all__ = [
    "COMPAT_KEYS",
    "OPTIMIZERS",
    "STATE_FORMAT",
    "TASKS",
    "canonical",
    "check_arguments",
    "build_optimizer",
    "check_compatible",
    "find_scalers",
    "make_factory",
    "mode_free",
    "resolve_device",
    "snapshot",
]

STATE_FORMAT = 1

OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "sgd": torch.optim.SGD,
}
TASKS = ("classification", "regression")

# Config entries that must match for a state to be loadable; lr, seed,
# steps_per_batch, minibatch_size, amp and device may change between runs.
COMPAT_KEYS = ("task", "n_features", "n_classes", "model", "model_kwargs", "optimizer")


def canonical(value: Any) -> Any:
    """Lists and tuples compare equal after a state round trip (hidden=[64] vs (64,))."""
    if isinstance(value, (list, tuple)):
        return tuple(canonical(v) for v in value)
    if isinstance(value, Mapping):
        return {k: canonical(v) for k, v in value.items()}
    return value


def snapshot(obj: Any) -> Any:
    """Deep copy of a state tree's containers and tensors (device stays, no sync)."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().clone()
    if isinstance(obj, Mapping):
        return {k: snapshot(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [snapshot(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(snapshot(v) for v in obj)
    return obj


def resolve_device(device: str | torch.device) -> torch.device:
    """``auto`` becomes ``cuda`` when available, else ``cpu``; an unusable device is a :class:`ConfigError`."""
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(f"device {device!r} is not a torch device; use auto, cpu, cuda or cuda:N") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            f"device {device!r} requested but CUDA is not available; use device='auto' or 'cpu'"
        )
    if dev.type not in ("cpu", "cuda"):
        raise ConfigError(f"device {device!r} is not supported; use auto, cpu, cuda or cuda:N")
    return dev


def check_arguments(
    *,
    n_features: Any,
    task: Any,
    n_classes: Any,
    optimizer: Any,
    lr: Any,
    steps_per_batch: Any,
    minibatch_size: Any,
    seed: Any,
) -> None:
    """Raise :class:`ConfigError` naming the first invalid constructor argument of a TorchLearner."""
    if isinstance(n_features, bool) or not isinstance(n_features, (int, np.integer)) or n_features < 1:
        raise ConfigError(f"n_features must be a positive integer, got {n_features!r}")
    if task not in TASKS:
        raise ConfigError(f"task must be one of {TASKS}, got {task!r}")
    if task == "classification" and (
        isinstance(n_classes, bool) or not isinstance(n_classes, (int, np.integer)) or n_classes < 2
    ):
        raise ConfigError(f"n_classes must be an integer >= 2 for classification, got {n_classes!r}")
    if optimizer not in OPTIMIZERS:
        raise ConfigError(f"unknown optimizer {optimizer!r}; choose one of: {', '.join(OPTIMIZERS)}")
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not lr > 0:
        raise ConfigError(f"lr must be a positive number, got {lr!r}")
    if isinstance(steps_per_batch, bool) or not isinstance(steps_per_batch, int) or steps_per_batch < 1:
        raise ConfigError(f"steps_per_batch must be an integer >= 1, got {steps_per_batch!r}")
    if minibatch_size is not None and (
        isinstance(minibatch_size, bool)
        or not isinstance(minibatch_size, (int, np.integer))
        or minibatch_size < 1
    ):
        raise ConfigError(f"minibatch_size must be a positive integer or None, got {minibatch_size!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ConfigError(f"seed must be an integer, got {seed!r}")


def check_compatible(state: Mapping[str, Any], ours: Mapping[str, Any], n_plugins_here: int) -> None:
    """Raise :class:`SchemaMismatchError` unless ``state`` fits a learner configured as ``ours``.

    ``n_plugins_here`` is how many plugins that learner has: a state holds one plugin state per plugin.
    """
    if not isinstance(state, Mapping) or not {"config", "model", "optimizer"} <= set(state):
        raise SchemaMismatchError(
            "learner state must be a dict with config, model and optimizer entries "
            "(as returned by TorchLearner.state_dict)"
        )
    theirs = state["config"]
    if not isinstance(theirs, Mapping):
        raise SchemaMismatchError("learner state has no config mapping")
    if theirs.get("format") != STATE_FORMAT:
        raise SchemaMismatchError(
            f"learner state has format {theirs.get('format')!r}; this version reads {STATE_FORMAT}"
        )
    diffs = [
        f"{k}: state has {theirs.get(k)!r}, learner has {ours[k]!r}"
        for k in COMPAT_KEYS
        if canonical(theirs.get(k)) != canonical(ours[k])
    ]
    if diffs:
        raise SchemaMismatchError(
            "learner state does not fit this learner (" + "; ".join(diffs) + "); configure the learner "
            "like the one that saved the state, or start from a fresh checkpoint/model"
        )
    n_plugins = len(state.get("plugins") or [])
    if n_plugins != n_plugins_here:
        raise SchemaMismatchError(
            f"learner state holds {n_plugins} plugin state(s), the learner has {n_plugins_here} plugin(s)"
        )


def check_score_chunk(score_chunk: Any) -> None:
    """Raise :class:`ConfigError` unless ``score_chunk`` is ``None`` or a positive integer."""
    if score_chunk is not None and (
        isinstance(score_chunk, bool) or not isinstance(score_chunk, (int, np.integer)) or score_chunk < 1
    ):
        raise ConfigError(f"score_chunk must be a positive integer or None (off), got {score_chunk!r}")


def make_factory(
    model: Any, model_kwargs: Mapping[str, Any] | None
) -> tuple[Callable[[int, int], nn.Module], str, dict]:
    """``(factory, name, kwargs)`` for a zoo model name or a user factory ``(n_features, n_outputs) -> nn.Module``."""
    if isinstance(model, str):
        factory = model_factory(model, **(model_kwargs or {}))
        return factory, factory.name, dict(factory.kwargs)
    if model_kwargs:
        raise ConfigError("model_kwargs only applies to a zoo model name; bake them into your factory")
    if isinstance(model, ModelFactory):
        return model, model.name, dict(model.kwargs)
    if callable(model):
        name = (
            f"{getattr(model, '__module__', '?')}.{getattr(model, '__qualname__', type(model).__qualname__)}"
        )
        return model, name, {}
    raise ConfigError(
        f"model must be a zoo model name or a factory (n_features, n_outputs) -> nn.Module, got {model!r}"
    )


def build_optimizer(module: nn.Module, name: str, lr: float) -> torch.optim.Optimizer | SplitOptimizer:
    """Optimizer ``name`` over ``module``'s parameters; fused when torch supports it here.

    A module with sparse embedding tables gets a :class:`SplitOptimizer`
    (``name`` on the dense parameters, SparseAdam on the tables), except with
    ``sgd``, which takes sparse gradients itself.
    """
    cls = OPTIMIZERS[name]
    sparse_names = sparse_param_names(module)
    if not sparse_names or name == "sgd":
        return _dense_optimizer(cls, list(module.parameters()), lr, fuse=not sparse_names)
    dense, sparse = [], []
    for pname, p in module.named_parameters():
        (sparse if pname in sparse_names else dense).append(p)
    return SplitOptimizer(_dense_optimizer(cls, dense, lr), torch.optim.SparseAdam(sparse, lr=float(lr)))


def _dense_optimizer(cls: type, params: list, lr: float, fuse: bool = True) -> torch.optim.Optimizer:
    if fuse and all(p.is_floating_point() for p in params):
        # Fused: one kernel per step instead of a Python loop over the
        # parameters -- about half of Adam's per-batch cost for a small
        # model on CPU, and one launch instead of many on CUDA.
        try:
            return cls(params, lr=float(lr), fused=True)
        except (RuntimeError, TypeError, ValueError):  # torch without fused support here
            pass
    return cls(params, lr=float(lr))


def find_scalers(module: nn.Module) -> tuple[nn.Module, ...]:
    """The modules whose input statistics the learner feeds once per arriving batch (``update(X)``).

    An :class:`InputStandardizer` or a :class:`FeatureInput` anywhere in the
    model (zoo or user factory); a FeatureInput feeds its own numeric scaler.
    """
    return tuple(m for m in module.modules() if isinstance(m, (InputStandardizer, FeatureInput)))


# Modules whose forward ignores ``training`` (dropout and batch norm do not).
_MODE_FREE = (
    nn.Linear, nn.ReLU, nn.GELU, nn.SiLU, nn.Tanh, nn.Sigmoid, nn.Identity, nn.Sequential, nn.LayerNorm,
    nn.Flatten, Logistic, MLP, ResMLP, ResidualBlock, InputStandardizer,
    nn.Embedding, nn.ModuleList, FeatureInput, MaskedStandardizer,
)  # fmt: skip


def mode_free(module: nn.Module) -> bool:
    """True when every submodule's forward is the same in train and eval mode: the learner can skip toggling.

    ``train()``/``eval()`` walk the whole module tree; on a small model that is
    ~15% of a 32-row update. A user module not listed here is assumed to care.

    >>> mode_free(nn.Sequential(nn.Linear(2, 2), nn.ReLU())), mode_free(nn.Sequential(nn.Dropout(0.1)))
    (True, False)
    """
    return all(type(m) in _MODE_FREE for m in module.modules())
