"""Decoding plain data back into a river estimator (:func:`from_plain`), importing only
allow-listed names and calling no stored callable.

The format and the security model are described in :mod:`learners.river_adapter.state`;
:func:`~learners.river_adapter.state_encode.to_plain` is the inverse.

Examples
--------
>>> from_plain({"format": STATE_FORMAT, "names": [], "layouts": [], "tensors": [],
...             "tree": '["l", 0, [1, ["t", [2, 3]]]]'})
[1, (2, 3)]
"""

from __future__ import annotations

import collections
import functools
import json
import random
import types
from typing import Any

import numpy as np
import torch

from learners.river_adapter.state_format import (
    CONTAINERS,
    IDENT,
    NATIVE_PREFIX,
    SCALARS,
    STATE_FORMAT,
    STDLIB_OBJECTS,
    resolve_global,
    slot_names,
)
from stream.core.errors import CheckpointError

__all__ = ["from_plain"]


class _Decoder:
    def __init__(self, names: Any, layouts: Any, tensors: Any) -> None:
        if not all(isinstance(v, (list, tuple)) for v in (names, layouts, tensors)):
            raise CheckpointError("river state has malformed name/layout/tensor tables")
        self.names, self.layouts, self.tensors = names, layouts, tensors
        self.resolved: dict[int, Any] = {}
        self.layout_info: dict[int, tuple] = {}
        self.memo: dict[int, Any] = {}

    def tensor(self, i: Any, dtype: torch.dtype | None = None) -> np.ndarray:
        t = self.tensors[i] if type(i) is int and 0 <= i < len(self.tensors) else None
        if not isinstance(t, torch.Tensor) or (dtype is not None and t.dtype != dtype):
            raise CheckpointError(f"river state refers to a missing or mistyped tensor #{i!r}")
        return t.detach().cpu().numpy()

    def glob(self, i: Any) -> Any:
        if i not in self.resolved:
            if type(i) is not int or not 0 <= i < len(self.names):
                raise CheckpointError(f"river state refers to unknown name #{i!r}")
            self.resolved[i] = resolve_global(self.names[i])
        return self.resolved[i]

    def new(self, n: Any, obj: Any) -> Any:
        if type(n) is not int or n in self.memo:
            raise CheckpointError(f"river state has a bad or duplicate object id {n!r}")
        self.memo[n] = obj
        return obj

    def dec(self, node: Any) -> Any:
        if type(node) in SCALARS:
            return node
        handler = _DECODERS.get(node[0]) if type(node) is list and node and type(node[0]) is str else None
        if handler is None:
            raise CheckpointError(f"river state has an unknown node {str(node)[:80]!r}")
        return handler(self, node)

    def values(self, nodes: list) -> list:
        dec, scalars = self.dec, SCALARS
        return [v if type(v) in scalars else dec(v) for v in nodes]

    def fill(self, target: Any, keys: list, values: list) -> Any:
        if len(keys) != len(values):
            raise CheckpointError("river state has a mapping whose keys and values differ in number")
        # Keys first, as encoded; item by item because Counter.update counts
        # and dict.update would bypass OrderedDict's own bookkeeping.
        for k, v in zip(self.values(keys), self.values(values)):
            target[k] = v
        return target

    def layout(self, i: Any) -> tuple:
        info = self.layout_info.get(i) if type(i) is int else None
        if info is None:
            layout = self.layouts[i] if type(i) is int and 0 <= i < len(self.layouts) else None
            if not isinstance(layout, list) or len(layout) != 3:
                raise CheckpointError(f"river state refers to unknown layout {i!r}")
            cls, keys, slots = self.glob(layout[0]), layout[1], layout[2]
            name = self.names[layout[0]]
            if not isinstance(cls, type) or not (name.startswith("river") or name in STDLIB_OBJECTS):
                raise CheckpointError(f"river state: {name!r} is not a river class")
            if keys is not None and not (isinstance(keys, list) and all(isinstance(k, str) for k in keys)):
                raise CheckpointError(f"river state has malformed attribute names for {name}")
            if not isinstance(slots, list) or not set(slots) <= set(slot_names(cls)):
                raise CheckpointError(f"river state has slots {slots!r} that {name} does not declare")
            info = self.layout_info[i] = (
                cls,
                keys,
                slots,
                getattr(cls, "__setstate__", None) is not None,
                name,
            )
        return info

    def object(self, node: list) -> Any:
        cls, keys, slots, has_setstate, name = self.layout(node[2])
        obj = self.new(node[1], cls.__new__(cls))
        # INVARIANT: children are decoded in the order the encoder visited them
        # (attributes, slots, items), so a ref never precedes its definition.
        if keys is not None and len(keys) != len(node[3]):
            raise CheckpointError(f"river state has a malformed {name} object")
        state = self.dec(node[3]) if keys is None else dict(zip(keys, self.values(node[3])))
        rest = node[4:]
        if slots or isinstance(obj, (dict, list)):
            values = self.values(rest.pop(0))
            if len(values) != len(slots):
                raise CheckpointError(f"river state has a malformed {name} object")
            for s, v in zip(slots, values):
                setattr(obj, s, v)
        if isinstance(obj, dict):
            self.fill(obj, *rest.pop(0))
        elif isinstance(obj, list):
            obj.extend(self.values(rest.pop(0)))
        if rest:
            raise CheckpointError(f"river state has extra data for a {name} object")
        if has_setstate:
            obj.__setstate__(state)  # river's own hook (e.g. defaults for states of older versions)
        elif isinstance(state, dict) and hasattr(obj, "__dict__"):
            obj.__dict__.update(state)
        elif state is not None:
            raise CheckpointError(f"river state: {name} cannot take the stored attributes")
        return obj

    def native(self, node: list) -> Any:
        cls = self.glob(node[2])
        if not isinstance(cls, type) or not cls.__module__.startswith(NATIVE_PREFIX):
            raise CheckpointError(f"river state: {self.names[node[2]]!r} is not a native river type")
        args, state = self.dec(node[4]), self.dec(node[5])
        try:
            obj = cls.__new__(cls, *args) if node[3] else cls(*args)
            if state is not None:
                obj.__setstate__(state)
        except Exception as exc:  # native errors surface as ValueError, TypeError or pyo3 panics
            raise CheckpointError(f"river state: {cls.__qualname__} refused its stored state: {exc}") from exc
        return self.new(node[1], obj)


def _dec_container(d: _Decoder, node: list) -> Any:
    tag = node[0]
    if tag in CONTAINERS:
        return d.fill(d.new(node[1], CONTAINERS[tag]()), node[2], node[3])
    if tag == "dd":
        out = d.new(node[1], collections.defaultdict())
        factory = d.dec(node[2])
        if factory is not None and not callable(factory):
            raise CheckpointError("river state has a defaultdict whose factory is not callable")
        out.default_factory = factory
        return d.fill(out, node[3], node[4])
    if tag == "q":
        if node[2] is not None and (type(node[2]) is not int or node[2] < 0):
            raise CheckpointError(f"river state has a deque with a bad maxlen {node[2]!r}")
        out = d.new(node[1], collections.deque(maxlen=node[2]))
        out.extend(d.values(node[3]))
        return out
    out = d.new(node[1], [] if tag == "l" else set())
    (out.extend if tag == "l" else out.update)(d.values(node[2]))
    return out


def _dec_value(d: _Decoder, node: list) -> Any:
    tag = node[0]
    if tag == "r":
        if type(node[1]) is not int or node[1] not in d.memo:
            raise CheckpointError(f"river state refers to unknown object id {node[1]!r}")
        return d.memo[node[1]]
    if tag == "f":
        if node[1] not in ("nan", "inf", "-inf"):
            raise CheckpointError(f"river state has a bad float {node[1]!r}")
        return float(node[1])
    if tag == "n":
        dtype = np.dtype(node[1])
        if dtype.kind not in "biufc":
            raise CheckpointError(f"river state has a numpy scalar of dtype {dtype}")
        return np.asarray(d.dec(node[2]), dtype=dtype)[()]
    if tag == "a":
        dtype, order, arr = np.dtype(node[2]), node[3], d.tensor(node[4])
        if dtype.kind not in "biufc" or order not in ("C", "F"):
            raise CheckpointError(f"river state has a malformed array (dtype {dtype}, order {order!r})")
        # .T of the stored C array is Fortran-ordered; the copy keeps that
        # order and never aliases (so never mutates) the caller's state.
        return d.new(node[1], (arr.T if order == "F" else arr).astype(dtype, order="K", copy=True))
    if tag == "b":
        return d.tensor(node[1], torch.uint8).tobytes()
    if tag == "rng":
        key = d.tensor(node[3], torch.int32)
        rng: Any = d.new(node[1], random.Random())
        state = (node[2], tuple(key.view(np.uint32).tolist()), d.dec(node[4]))
    elif tag == "nrs":
        rng = d.new(node[1], np.random.RandomState())
        state = d.dec(node[2])
    else:
        return random.Random()  # "rng0": an unseeded RNG stays unseeded
    try:
        rng.setstate(state) if tag == "rng" else rng.set_state(state)
    except (TypeError, ValueError, KeyError) as exc:
        raise CheckpointError(f"river state has an invalid RNG state: {exc}") from exc
    return rng


def _dec_callable(d: _Decoder, node: list) -> Any:
    if node[0] == "p":
        func, args, kwargs = d.dec(node[2]), d.dec(node[3]), d.dec(node[4])
        if not callable(func) or type(args) is not tuple or type(kwargs) is not dict:
            raise CheckpointError("river state has a malformed functools.partial")
        return d.new(node[1], functools.partial(func, *args, **kwargs))
    owner, name = d.dec(node[2]), node[3]
    method = (
        getattr(owner, name, None) if type(name) is str and IDENT.match(name) and name[:2] != "__" else None
    )
    if not isinstance(method, types.MethodType) or method.__self__ is not owner:
        raise CheckpointError(f"river state: {name!r} is not a method of the restored object")
    return d.new(node[1], method)


_DECODERS = {
    **dict.fromkeys(("l", "s", "q", "dd", *CONTAINERS), _dec_container),
    **dict.fromkeys(("r", "f", "n", "a", "b", "rng", "nrs", "rng0"), _dec_value),
    "p": _dec_callable,
    "m": _dec_callable,
    "t": lambda d, n: tuple(d.values(n[1])),
    "fs": lambda d, n: frozenset(d.values(n[1])),
    "g": lambda d, n: d.glob(n[1]),
    "x": _Decoder.native,
    "o": _Decoder.object,
}


def from_plain(state: Any) -> Any:
    """Rebuild what :func:`to_plain` encoded, importing only allow-listed names.

    Raises
    ------
    CheckpointError
        The state names something off the allow-list, is malformed, or was
        written in an unknown format.
    """
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        got = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(f"river state has format {got!r}; this version reads {STATE_FORMAT}")
    tree = state.get("tree")
    if isinstance(tree, torch.Tensor) and tree.dtype == torch.uint8 and tree.dim() == 1:
        tree = tree.cpu().numpy().tobytes()
    elif not isinstance(tree, str):  # str: hand-written states in tests and docs
        raise CheckpointError("river state has no tree (a uint8 tensor of JSON)")
    try:
        decoder = _Decoder(state.get("names"), state.get("layouts"), state.get("tensors"))
        return decoder.dec(json.loads(tree))
    except CheckpointError:
        raise
    except RecursionError as exc:
        raise CheckpointError("river state is nested too deeply") from exc
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
        raise CheckpointError(f"river state is malformed: {exc!r}") from exc
