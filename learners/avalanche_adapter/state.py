"""Pickle-free state of Avalanche plugins: what EWC, replay, LwF, SI, GEM ... have learned.

Avalanche saves strategies with ``dill`` (pickle), which streamlearn never
loads: a checkpoint or a published model read from disk or Redis must not be
able to run code. Plugins keep what they learned in plain attributes --
tensors, Avalanche's ``ParamData``, dicts of them, a frozen copy of the model
(LwF), replay buffers that are Avalanche datasets -- so :func:`capture` walks
a plugin's attributes and encodes exactly those kinds into a state tree for
:mod:`learners.state_io`, and :func:`restore` writes them back into a freshly
built plugin of the same configuration.

What is not captured is configuration the plugin's constructor rebuilt
already (callables, the strategy it points to, selection strategies).
Objects are captured and rebuilt only for the few Avalanche classes that hold
learned state (:data:`ALLOWED_CLASSES`, named exactly); any other class name
in a state is refused -- a module prefix is not enough, since an attribute
path inside an allowed module reaches whatever that module imported
(``avalanche.training.storage_policy:random.Random``).
"""

from __future__ import annotations

import copy
import importlib
from collections import defaultdict
from typing import Any, Callable

import torch
from torch import nn

from stream.core.errors import SchemaMismatchError

__all__ = ["ALLOWED_CLASSES", "capture", "restore"]

#: The only classes whose objects are captured and rebuilt, as ``"module:qualname"``
#: (where the class is defined). They hold what the plugins learned: replay
#: buffers (Replay, GDumb, MIR, RAR) and LwF's regularizer with its frozen
#: model. Other attributes are configuration the plugin's constructor rebuilds.
ALLOWED_CLASSES = frozenset(
    {
        "avalanche.training.storage_policy:ReservoirSamplingBuffer",
        "avalanche.training.storage_policy:ExperienceBalancedBuffer",
        "avalanche.training.storage_policy:ClassBalancedBuffer",
        "avalanche.training.regularization:LearningWithoutForgetting",
    }
)
_DEFAULT_FACTORIES: dict[str, Callable[[], Any]] = {"dict": dict, "set": set, "list": list, "int": int}
_SKIP = object()


def _class_name(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def _resolve_class(name: Any) -> type:
    """The allow-listed class stored as ``name``; anything else is refused before any import.

    Raises
    ------
    SchemaMismatchError
        ``name`` is not on :data:`ALLOWED_CLASSES`, or this Avalanche
        version does not define that class under that name.

    Examples
    --------
    >>> _resolve_class("avalanche.training.storage_policy:random.Random")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    stream.core.errors.SchemaMismatchError: plugin state names class 'avalanche.training.storage_policy:random.Random', ...
    """
    if not isinstance(name, str) or name not in ALLOWED_CLASSES:
        raise SchemaMismatchError(
            f"plugin state names class {name!r}, which is not on the allow-list of Avalanche classes a plugin "
            f"state may rebuild ({', '.join(sorted(ALLOWED_CLASSES))}); refusing to build it"
        )
    module_name, _, qualname = name.partition(":")
    try:
        cls: Any = getattr(importlib.import_module(module_name), qualname)
    except (ImportError, AttributeError) as exc:
        raise SchemaMismatchError(
            f"plugin state names class {name!r}, which this Avalanche lacks: {exc}"
        ) from exc
    # INVARIANT: the class is defined under the stored name, so an allowed
    # name cannot stand for something the module merely imported.
    if not isinstance(cls, type) or _class_name(cls) != name:
        raise SchemaMismatchError(f"plugin state names class {name!r}, which is not a class defined there")
    return cls


def _is_dataset(value: Any) -> bool:
    from avalanche.benchmarks.utils.data import AvalancheDataset

    return isinstance(value, AvalancheDataset)


def _dataset_tensors(ds: Any) -> dict:
    xs, ys, ts = [], [], []
    for i in range(len(ds)):
        x, y, t = ds[i][:3]
        xs.append(torch.as_tensor(x))
        ys.append(int(y))
        ts.append(int(t))
    if not xs:
        return {"X": None, "y": None, "t": None}
    return {"X": torch.stack(xs).clone(), "y": torch.tensor(ys), "t": torch.tensor(ts)}


def _make_dataset(X: torch.Tensor | None, y: torch.Tensor | None, t: torch.Tensor | None) -> Any:
    from avalanche.benchmarks.utils.classification_dataset import (
        _make_taskaware_tensor_classification_dataset,
    )

    if X is None:
        X, y, t = torch.zeros(0, 1), torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long)
    return _make_taskaware_tensor_classification_dataset(X, y, task_labels=t.tolist(), targets=y)


def _encode(value: Any) -> Any:
    from avalanche.training.utils import ParamData

    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if isinstance(value, torch.Size):
        return {"__kind__": "size", "dims": list(value)}
    if isinstance(value, ParamData):
        return {"__kind__": "paramdata", "name": value.name, "data": value.data.detach().clone()}
    if isinstance(value, nn.Module):
        return {"__kind__": "module", "state": {k: v.detach().clone() for k, v in value.state_dict().items()}}
    if _is_dataset(value):
        return {"__kind__": "dataset", **_dataset_tensors(value)}
    if isinstance(value, dict):
        default = None
        if isinstance(value, defaultdict):
            default = getattr(value.default_factory, "__name__", None)
            if default not in _DEFAULT_FACTORIES:
                return _SKIP
        items = {}
        for k, v in value.items():
            if isinstance(k, bool) or not isinstance(k, (int, str)):
                return _SKIP
            enc = _encode(v)
            if enc is _SKIP:
                return _SKIP
            items[k] = enc
        return {"__kind__": "dict", "default": default, "items": items}
    if isinstance(value, (list, tuple, set)):
        encoded = [_encode(v) for v in value]
        if any(e is _SKIP for e in encoded):
            return _SKIP
        kind = "set" if isinstance(value, set) else type(value).__name__
        return {"__kind__": kind, "items": encoded}
    if _class_name(type(value)) in ALLOWED_CLASSES:
        return {"__kind__": "object", "class": _class_name(type(value)), "vars": capture(value)}
    return _SKIP


def capture(obj: Any) -> dict:
    """The learned state of ``obj`` (a plugin or a buffer): its capturable attributes, encoded.

    Examples
    --------
    >>> class Plugin:
    ...     def __init__(self):
    ...         self.counts = {0: torch.ones(2)}
    ...         self.callback = print           # configuration: not captured
    >>> sorted(capture(Plugin()))
    ['counts']
    """
    out = {}
    for name, value in vars(obj).items():
        enc = _encode(value)
        if enc is not _SKIP:
            out[name] = enc
    return out


def _decode(node: Any, current: Any, model: nn.Module) -> Any:
    if not isinstance(node, dict) or "__kind__" not in node:
        return node  # tensors and plain values
    kind = node["__kind__"]
    if kind == "size":
        return torch.Size(node["dims"])
    if kind == "paramdata":
        from avalanche.training.utils import ParamData

        data = node["data"]
        return ParamData(node["name"], init_tensor=data, device=data.device)
    if kind == "module":
        module = current if isinstance(current, nn.Module) else copy.deepcopy(model)
        module.load_state_dict(node["state"])
        return module
    if kind == "dataset":
        return _make_dataset(node["X"], node["y"], node["t"])
    if kind == "dict":
        items = {k: _decode(v, None, model) for k, v in node["items"].items()}
        if node["default"] is None:
            return items
        return defaultdict(_DEFAULT_FACTORIES[node["default"]], items)
    if kind in ("list", "tuple", "set"):
        items = [_decode(v, None, model) for v in node["items"]]
        return {"list": list, "tuple": tuple, "set": set}[kind](items)
    if kind == "object":
        cls = _resolve_class(node.get("class"))
        # Update the object the fresh plugin already has, so attributes that
        # were not captured (configuration) keep their constructed values.
        obj = current if type(current) is cls else cls.__new__(cls)
        restore(obj, node["vars"], model)
        return obj
    raise SchemaMismatchError(f"unknown plugin state kind {kind!r}")


def restore(obj: Any, state: dict, model: nn.Module) -> None:
    """Write a :func:`capture` of a plugin back into a freshly built one of the same configuration.

    ``model`` is the strategy's model: frozen model copies (LwF's previous
    model) are rebuilt from it and loaded with the captured weights.

    Raises
    ------
    SchemaMismatchError
        The state is malformed or names a class not on :data:`ALLOWED_CLASSES`.
    """
    if not isinstance(state, dict):
        raise SchemaMismatchError("plugin state must be a dict of attributes")
    for name, node in state.items():
        if not isinstance(name, str) or name.startswith("__"):
            # vars() of a plugin holds no dunder names; __class__ or __dict__ would rewrite the object itself.
            raise SchemaMismatchError(f"plugin state sets attribute {name!r}; refusing it")
        setattr(obj, name, _decode(node, getattr(obj, name, None), model))
