"""Encoding a river estimator's object graph as plain data (:func:`to_plain`).

The format and the security model are described in :mod:`learners.river_adapter.state`;
:func:`~learners.river_adapter.state_decode.from_plain` is the inverse.

Examples
--------
>>> bytes(to_plain([1, "a", None])["tree"].numpy())
b'["l",0,[1,"a",null]]'
"""

from __future__ import annotations

import collections
import functools
import json
import math
import random
import types
from typing import Any

import numpy as np
import torch

from learners.river_adapter.state_format import (
    FRESH_RNG,
    FUNCTIONS,
    NATIVE_PREFIX,
    PLAIN,
    SCALARS,
    STATE_FORMAT,
    STDLIB_OBJECTS,
    distribution_class,
    is_allowed,
    slot_names,
)
from stream.core.errors import CheckpointError

__all__ = ["to_plain"]


class _EncodeError(CheckpointError):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason, self.path = reason, []


class _Encoder:
    def __init__(self) -> None:
        self.memo: dict[int, int] = {}
        self.keep: list[Any] = []  # keeps temporaries alive so that no id() is reused
        self.names: dict[str, int] = {}
        self.layouts: dict[tuple, int] = {}
        self.tensors: list[torch.Tensor] = []
        self.classes: dict[type, tuple[int, list[str], bool]] = {}

    def tensor(self, t: torch.Tensor) -> int:
        self.tensors.append(t)
        return len(self.tensors) - 1

    def name(self, obj: Any) -> int:
        module, qualname = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
        if not isinstance(module, str) or not isinstance(qualname, str) or not is_allowed(module, qualname):
            raise _EncodeError(
                f"{obj!r} ({module}.{qualname}) cannot be saved: only classes and functions defined "
                "at module level in river (or a few stdlib names) can; build the model without "
                "lambdas or custom classes"
            )
        return self.names.setdefault(f"{module}:{qualname}", len(self.names))

    def enc(self, obj: Any) -> Any:
        t = type(obj)
        if t in PLAIN:
            return obj
        if t is float:  # non-finite as text: NaN != NaN would make equal states compare unequal
            return obj if math.isfinite(obj) else ["f", repr(obj)]
        if obj is FRESH_RNG:
            return ["rng0"]
        if isinstance(obj, np.generic):
            return ["n", obj.dtype.str, self.enc(obj.item())]
        if t is tuple or t is frozenset:
            return [
                "t" if t is tuple else "fs",
                [self.enc(v) for v in obj] if t is tuple else self.sorted(obj),
            ]
        if t is bytes:
            return ["b", self.tensor(torch.frombuffer(bytearray(obj), dtype=torch.uint8))]
        if isinstance(obj, (type, *FUNCTIONS)):
            return ["g", self.name(obj)]
        ref = self.memo.get(id(obj))
        if ref is not None:
            return ["r", ref]
        n = self.memo[id(obj)] = len(self.memo)
        self.keep.append(obj)
        encoder = _ENCODERS.get(t)
        if encoder is not None:
            return encoder(self, obj, n)
        if (getattr(t, "__module__", "") or "").startswith(NATIVE_PREFIX):
            return self.native(obj, t, n)
        return self.object(obj, t, n)

    def sorted(self, items: Any) -> list:
        out = [self.enc(v) for v in items]
        # Set order depends on history, not content: sort scalars so equal sets
        # encode equally. Not nodes -- moving one could put a ref before its id.
        return sorted(out, key=repr) if all(type(v) in SCALARS for v in out) else out

    def values(self, mapping: Any, attrs: bool = False) -> list:
        # Scalars inline: a big tree is mostly floats and ints, and one call
        # per leaf would double the cost of saving it.
        out, enc, plain, isfinite = [], self.enc, PLAIN, math.isfinite
        try:
            for v in mapping.values():
                t = type(v)
                out.append(v if t in plain or (t is float and isfinite(v)) else enc(v))
        except _EncodeError as exc:
            k = list(mapping)[len(out)]
            exc.path.insert(0, f".{k}" if attrs else f"[{k!r}]")
            raise
        return out

    def pairs(self, mapping: Any) -> tuple[list, list]:
        keys = [
            k if type(k) in PLAIN else self.enc(k) for k in mapping
        ]  # INVARIANT: all keys, then all values
        return keys, self.values(mapping)

    def array(self, arr: np.ndarray, n: int) -> list:
        if arr.dtype.kind not in "biufc":
            raise _EncodeError(f"a numpy array of dtype {arr.dtype} cannot be saved (numeric and bool only)")
        # Memory order is state: river hands Fortran-ordered matrices to
        # in-place BLAS updates (BayesianLinearRegression) that would work on a
        # silent copy if the array came back C-ordered. Stored transposed.
        order = "F" if arr.ndim > 1 and arr.flags.f_contiguous and not arr.flags.c_contiguous else "C"
        native = np.ascontiguousarray(arr.T if order == "F" else arr).astype(
            arr.dtype.newbyteorder("="), copy=True
        )
        return ["a", n, arr.dtype.str, order, self.tensor(torch.from_numpy(native))]  # a copy: a snapshot

    def random(self, rng: random.Random, n: int) -> list:
        version, words, gauss = rng.getstate()  # 625 words as one tensor, not 625 JSON ints
        return [
            "rng",
            n,
            version,
            self.tensor(torch.tensor(np.array(words, np.uint32).view(np.int32))),
            self.enc(gauss),
        ]

    def native(self, obj: Any, t: type, n: int) -> list:
        # river's Rust types pickle as (cls, args) or as copyreg.__newobj__ +
        # __setstate__ bytes; only those shapes, for the object's own type.
        name, red = self.name(t), obj.__reduce_ex__(2)
        func, args = red[0], red[1]
        if func is t and not any(r is not None for r in red[2:]):
            return ["x", n, name, False, self.enc(tuple(args)), None]
        if (
            getattr(func, "__name__", "") == "__newobj__"
            and args
            and args[0] is t
            and not any(r is not None for r in red[3:])
        ):
            return ["x", n, name, True, self.enc(tuple(args[1:])), self.enc(red[2] if len(red) > 2 else None)]
        raise _EncodeError(f"native river type {t.__qualname__} reduces in an unsupported way ({func!r})")

    def class_info(self, t: type) -> tuple[int, list[str], bool]:
        info = self.classes.get(t)
        if info is None:
            name = self.name(t)
            if not (t.__module__.startswith("river") or f"{t.__module__}:{t.__qualname__}" in STDLIB_OBJECTS):
                raise _EncodeError(
                    f"an instance of {t.__module__}.{t.__qualname__} cannot be saved (only river objects can)"
                )
            if issubclass(t, (set, tuple, frozenset, collections.deque)):
                raise _EncodeError(f"{t.__qualname__} subclasses a builtin container, which cannot be saved")
            custom = getattr(t, "__getstate__", None) not in (None, object.__getstate__)
            info = self.classes[t] = (name, slot_names(t), custom)
        return info

    def object(self, obj: Any, t: type, n: int) -> list:
        name, all_slots, custom_getstate = self.class_info(t)
        state = obj.__getstate__() if custom_getstate else getattr(obj, "__dict__", None)
        if (
            type(state) is dict
            and "_rng" in state
            and state.get("seed") is None
            and type(state["_rng"]) is random.Random
            and isinstance(obj, distribution_class())
        ):
            state = {**state, "_rng": FRESH_RNG}  # see the module docstring
        slots = tuple(s for s in all_slots if hasattr(obj, s))
        keys = tuple(state) if type(state) is dict else None
        layout = self.layouts.get((name, keys, slots))
        if layout is None:
            if keys is not None and not all(type(k) is str for k in keys):
                keys = None
            layout = self.layouts.setdefault((name, keys, slots), len(self.layouts))
        node = ["o", n, layout, self.values(state, attrs=True) if keys is not None else self.enc(state)]
        if slots or isinstance(obj, (dict, list)):
            node.append(self.values({s: getattr(obj, s) for s in slots}, attrs=True))
        if isinstance(obj, dict):
            node.append(list(self.pairs(obj)))
        elif isinstance(obj, list):
            node.append([self.enc(v) for v in obj])
        return node


_ENCODERS = {
    list: lambda e, o, n: ["l", n, [e.enc(v) for v in o]],
    dict: lambda e, o, n: ["d", n, *e.pairs(o)],
    collections.Counter: lambda e, o, n: ["c", n, *e.pairs(o)],
    collections.OrderedDict: lambda e, o, n: ["od", n, *e.pairs(o)],
    collections.defaultdict: lambda e, o, n: ["dd", n, e.enc(o.default_factory), *e.pairs(o)],
    collections.deque: lambda e, o, n: ["q", n, o.maxlen, [e.enc(v) for v in o]],
    set: lambda e, o, n: ["s", n, e.sorted(o)],
    np.ndarray: lambda e, o, n: e.array(o, n),
    functools.partial: lambda e, o, n: ["p", n, e.enc(o.func), e.enc(o.args), e.enc(o.keywords)],
    types.MethodType: lambda e, o, n: ["m", n, e.enc(o.__self__), o.__func__.__name__],
    random.Random: lambda e, o, n: e.random(o, n),
    np.random.RandomState: lambda e, o, n: ["nrs", n, e.enc(o.get_state(legacy=False))],
}


def to_plain(obj: Any) -> dict:
    """Encode a river estimator (any graph of river objects) as plain data.

    Returns
    -------
    dict
        ``{"format", "names", "layouts", "tree", "tensors"}`` (see the module
        docstring): str, int, lists and tensors (copies), which
        :func:`~learners.state_io.dumps_state` accepts.

    Raises
    ------
    CheckpointError
        Something cannot be saved faithfully (a lambda, an object of a class
        outside river); the message names its attribute path.

    Examples
    --------
    >>> bytes(to_plain({"a": (1, 2.5)})["tree"].numpy())
    b'["d",0,["a"],[["t",[1,2.5]]]]'
    >>> to_plain({"f": lambda: 0})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    stream.core.errors.CheckpointError: cannot save river state at dict['f']: <function <lambda> ...
    """
    enc = _Encoder()
    try:
        tree = json.dumps(enc.enc(obj), separators=(",", ":"), allow_nan=False).encode()
    except _EncodeError as exc:
        raise CheckpointError(
            f"cannot save river state at {type(obj).__name__}{''.join(exc.path)}: {exc.reason}"
        ) from None
    except RecursionError as exc:
        raise CheckpointError("cannot save river state: the model's object graph is too deep") from exc
    layouts = [
        [name, None if keys is None else list(keys), list(slots)] for (name, keys, slots) in enc.layouts
    ]
    return {
        "format": STATE_FORMAT,
        "names": list(enc.names),
        "layouts": layouts,
        "tree": torch.frombuffer(bytearray(tree), dtype=torch.uint8),
        "tensors": enc.tensors,
    }
