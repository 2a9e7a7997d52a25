"""Pickle-free state for river estimators: object graph <-> plain data.

:func:`to_plain` walks a river estimator -- its ``__dict__``/``__slots__``, the
containers, numpy arrays, RNGs and river's native (Rust) types it holds -- and
returns plain data that :func:`learners.state_io.dumps_state` accepts:

- ``tree``: the object graph as UTF-8 JSON in a uint8 tensor; every
  non-scalar node is a list led by a short tag (``["o", id, layout, values]``
  an object, ``["d", id, keys, values]`` a dict, ``["r", id]`` a repeated
  reference);
- ``names``: the ``"module:qualname"`` of every class and function used;
- ``layouts``: (class, attribute names, slot names) of every object shape, so
  a tree of thousands of nodes of a few classes stores each name once;
- ``tensors``: numpy arrays and byte strings, referenced by index.

JSON bytes, not a tree of small nodes, because the state writer then copies
them as one tensor instead of walking every node in Python (a 40k-node forest
saves ~10x faster), and tensor data, unlike the safetensors header, has no
100 MB size limit.

Security model -- a state read from Redis, Kafka or disk is untrusted:

- only names under ``river.`` (minus its I/O and test-helper packages) and a
  fixed list of stdlib names (:data:`STDLIB_GLOBALS`) are imported; the
  resolved object's own ``__module__``/``__qualname__`` must equal the stored
  name, so a river module that merely imports ``os`` is no bridge to it;
- instances are made with ``cls.__new__(cls)``, never ``__init__``, only for
  river classes (and ``statistics.NormalDist``), then given plain attributes;
- native types are rebuilt from their own ``__reduce__`` arguments and
  ``__setstate__`` bytes; no stored callable is called while decoding.

A name off the allow-list raises :class:`~stream.core.errors.CheckpointError` on
load; what cannot be encoded faithfully (a lambda, an object of a non-river
class) raises it on save, so a state is never silently partial.

The encoding is exact -- shared references, cycles and numpy memory order
included -- with one deliberate exception: the private RNG of a
``river.proba`` distribution built with ``seed=None`` serves only
``sample()``, which river's trees and naive Bayes never call. It is stored as
"fresh" and comes back as a new unseeded RNG, so identically seeded models
have identical states (and an ARF state loses ~2.5 kB per leaf estimator).

Examples
--------
>>> from river import linear_model
>>> model = linear_model.LinearRegression()
>>> model.learn_one({"a": 1.0}, 2.0)
>>> back = from_plain(to_plain(model))
>>> back.predict_one({"a": 1.0}) == model.predict_one({"a": 1.0})
True
>>> from_plain({"format": 2, "names": ["os:system"], "layouts": [], "tensors": [],
...             "tree": '["g", 0]'})  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
stream.core.errors.CheckpointError: river state names 'os:system', which is not on the allow-list ...
"""

from __future__ import annotations

import collections
import functools
import importlib
import json
import math
import random
import re
import sys
import types
from typing import Any

import numpy as np
import torch

from stream.core.errors import CheckpointError

__all__ = ["STATE_FORMAT", "STDLIB_GLOBALS", "from_plain", "resolve_global", "to_plain"]

STATE_FORMAT = 2

# The only non-river names a state may reference (defaultdict factories and
# the like); each builds or copies a value and runs no user code.
STDLIB_GLOBALS = frozenset(
    {
        "builtins:bool",
        "builtins:int",
        "builtins:float",
        "builtins:complex",
        "builtins:str",
        "builtins:tuple",
        "builtins:list",
        "builtins:dict",
        "builtins:set",
        "builtins:frozenset",
        "collections:Counter",
        "collections:OrderedDict",
        "collections:defaultdict",
        "collections:deque",
        "functools:partial",
        "copy:deepcopy",
        "statistics:NormalDist",
    }
)
_STDLIB_OBJECTS = frozenset({"statistics:NormalDist"})  # non-river classes whose instances are plain values
# river packages that download, read files, eval or unpickle: never referenced.
_DENIED = (
    "river.datasets",
    "river.stream",
    "river.evaluate",
    "river.checks",
    "river.api",
    "river.compat",
    "river.bandit.datasets",
)
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_NATIVE_PREFIX = "river._river_rust."
_FUNCTIONS = (types.FunctionType, types.BuiltinFunctionType)
_PLAIN = frozenset({str, int, bool, type(None)})
_SCALARS = _PLAIN | {float}  # in a decoded JSON tree every float is finite
_FRESH_RNG = object()  # stands for an unseeded random.Random (see the module docstring)
_CONTAINERS = {"d": dict, "c": collections.Counter, "od": collections.OrderedDict}


def _is_allowed(module: str, qualname: str) -> bool:
    if f"{module}:{qualname}" in STDLIB_GLOBALS:
        return True
    parts = module.split(".")
    return (
        parts[0] == "river"
        and all(_IDENT.match(p) for p in parts + qualname.split("."))
        and not any(module == d or module.startswith(d + ".") for d in _DENIED)
    )


def resolve_global(name: Any) -> Any:
    """Import the class or function ``"module:qualname"`` if the allow-list permits it.

    Raises
    ------
    CheckpointError
        ``name`` is malformed, not on the allow-list, or not a class/function
        defined under that very name.

    Examples
    --------
    >>> resolve_global("river.linear_model.log_reg:LogisticRegression").__name__
    'LogisticRegression'
    >>> resolve_global("builtins:eval")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    stream.core.errors.CheckpointError: river state names 'builtins:eval', which is not on the allow-list ...
    """
    if not isinstance(name, str) or name.count(":") != 1:
        raise CheckpointError(f"river state holds a malformed global name {name!r}")
    module, qualname = name.split(":")
    if not _is_allowed(module, qualname):
        raise CheckpointError(
            f"river state names {name!r}, which is not on the allow-list (river estimator "
            "packages and a few stdlib names); refusing to import it"
        )
    try:
        obj: Any = sys.modules.get(module) or importlib.import_module(module)
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise CheckpointError(f"river state names {name!r}, which this river version lacks: {exc}") from exc
    # INVARIANT: the object is defined under the stored name, so an allowed
    # module cannot hand out a name it merely imported (os.system).
    if not isinstance(obj, (type, *_FUNCTIONS)) or (
        getattr(obj, "__module__", None),
        getattr(obj, "__qualname__", None),
    ) != (module, qualname):
        raise CheckpointError(f"river state names {name!r}, which is not a class or function defined there")
    return obj


def _slot_names(cls: type) -> list[str]:
    names = []
    for klass in reversed(cls.__mro__):
        slots = klass.__dict__.get("__slots__", ())
        for s in (slots,) if isinstance(slots, str) else slots:
            if s not in ("__dict__", "__weakref__"):
                private = s.startswith("__") and not s.endswith("__")
                names.append(f"_{klass.__name__.lstrip('_')}{s}" if private else s)
    return names


@functools.cache
def _distribution_class() -> type:
    from river.proba.base import Distribution

    return Distribution


# ------------------------------------------------------------------ encoding
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
        if not isinstance(module, str) or not isinstance(qualname, str) or not _is_allowed(module, qualname):
            raise _EncodeError(
                f"{obj!r} ({module}.{qualname}) cannot be saved: only classes and functions defined "
                "at module level in river (or a few stdlib names) can; build the model without "
                "lambdas or custom classes"
            )
        return self.names.setdefault(f"{module}:{qualname}", len(self.names))

    def enc(self, obj: Any) -> Any:
        t = type(obj)
        if t in _PLAIN:
            return obj
        if t is float:  # non-finite as text: NaN != NaN would make equal states compare unequal
            return obj if math.isfinite(obj) else ["f", repr(obj)]
        if obj is _FRESH_RNG:
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
        if isinstance(obj, (type, *_FUNCTIONS)):
            return ["g", self.name(obj)]
        ref = self.memo.get(id(obj))
        if ref is not None:
            return ["r", ref]
        n = self.memo[id(obj)] = len(self.memo)
        self.keep.append(obj)
        encoder = _ENCODERS.get(t)
        if encoder is not None:
            return encoder(self, obj, n)
        if (getattr(t, "__module__", "") or "").startswith(_NATIVE_PREFIX):
            return self.native(obj, t, n)
        return self.object(obj, t, n)

    def sorted(self, items: Any) -> list:
        out = [self.enc(v) for v in items]
        # Set order depends on history, not content: sort scalars so equal sets
        # encode equally. Not nodes -- moving one could put a ref before its id.
        return sorted(out, key=repr) if all(type(v) in _SCALARS for v in out) else out

    def values(self, mapping: Any, attrs: bool = False) -> list:
        # Scalars inline: a big tree is mostly floats and ints, and one call
        # per leaf would double the cost of saving it.
        out, enc, plain, isfinite = [], self.enc, _PLAIN, math.isfinite
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
            k if type(k) in _PLAIN else self.enc(k) for k in mapping
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
            if not (
                t.__module__.startswith("river") or f"{t.__module__}:{t.__qualname__}" in _STDLIB_OBJECTS
            ):
                raise _EncodeError(
                    f"an instance of {t.__module__}.{t.__qualname__} cannot be saved (only river objects can)"
                )
            if issubclass(t, (set, tuple, frozenset, collections.deque)):
                raise _EncodeError(f"{t.__qualname__} subclasses a builtin container, which cannot be saved")
            custom = getattr(t, "__getstate__", None) not in (None, object.__getstate__)
            info = self.classes[t] = (name, _slot_names(t), custom)
        return info

    def object(self, obj: Any, t: type, n: int) -> list:
        name, all_slots, custom_getstate = self.class_info(t)
        state = obj.__getstate__() if custom_getstate else getattr(obj, "__dict__", None)
        if (
            type(state) is dict
            and "_rng" in state
            and state.get("seed") is None
            and type(state["_rng"]) is random.Random
            and isinstance(obj, _distribution_class())
        ):
            state = {**state, "_rng": _FRESH_RNG}  # see the module docstring
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


# ------------------------------------------------------------------ decoding
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
        if type(node) in _SCALARS:
            return node
        handler = _DECODERS.get(node[0]) if type(node) is list and node and type(node[0]) is str else None
        if handler is None:
            raise CheckpointError(f"river state has an unknown node {str(node)[:80]!r}")
        return handler(self, node)

    def values(self, nodes: list) -> list:
        dec, scalars = self.dec, _SCALARS
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
            if not isinstance(cls, type) or not (name.startswith("river") or name in _STDLIB_OBJECTS):
                raise CheckpointError(f"river state: {name!r} is not a river class")
            if keys is not None and not (isinstance(keys, list) and all(isinstance(k, str) for k in keys)):
                raise CheckpointError(f"river state has malformed attribute names for {name}")
            if not isinstance(slots, list) or not set(slots) <= set(_slot_names(cls)):
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
        if not isinstance(cls, type) or not cls.__module__.startswith(_NATIVE_PREFIX):
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
    if tag in _CONTAINERS:
        return d.fill(d.new(node[1], _CONTAINERS[tag]()), node[2], node[3])
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
        getattr(owner, name, None) if type(name) is str and _IDENT.match(name) and name[:2] != "__" else None
    )
    if not isinstance(method, types.MethodType) or method.__self__ is not owner:
        raise CheckpointError(f"river state: {name!r} is not a method of the restored object")
    return d.new(node[1], method)


_DECODERS = {
    **dict.fromkeys(("l", "s", "q", "dd", *_CONTAINERS), _dec_container),
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
