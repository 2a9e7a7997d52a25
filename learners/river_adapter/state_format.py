"""The shape of a river state shared by its encoder and decoder: the format version, the
allow-list of names a state may reference, and the class facts (slots, river's
distribution base) both sides read.

:func:`resolve_global` is the one door from a stored name to live code; see
:mod:`learners.river_adapter.state` for the format and the security model.

Examples
--------
>>> is_allowed("river.tree", "HoeffdingTreeClassifier"), is_allowed("river.datasets", "Phishing")
(True, False)
>>> slot_names(type(object()))
[]
"""

from __future__ import annotations

import collections
import functools
import importlib
import re
import sys
import types
from typing import Any

from stream.core.errors import CheckpointError

__all__ = [
    "STATE_FORMAT",
    "STDLIB_GLOBALS",
    "STDLIB_OBJECTS",
    "NATIVE_PREFIX",
    "FUNCTIONS",
    "PLAIN",
    "SCALARS",
    "FRESH_RNG",
    "CONTAINERS",
    "IDENT",
    "is_allowed",
    "resolve_global",
    "slot_names",
    "distribution_class",
]

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
STDLIB_OBJECTS = frozenset({"statistics:NormalDist"})  # non-river classes whose instances are plain values
# river packages that download, read files, eval or unpickle: never referenced.
DENIED = (
    "river.datasets",
    "river.stream",
    "river.evaluate",
    "river.checks",
    "river.api",
    "river.compat",
    "river.bandit.datasets",
)
IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
NATIVE_PREFIX = "river._river_rust."
FUNCTIONS = (types.FunctionType, types.BuiltinFunctionType)
PLAIN = frozenset({str, int, bool, type(None)})
SCALARS = PLAIN | {float}  # in a decoded JSON tree every float is finite
FRESH_RNG = object()  # stands for an unseeded random.Random (see the module docstring)
CONTAINERS = {"d": dict, "c": collections.Counter, "od": collections.OrderedDict}


def is_allowed(module: str, qualname: str) -> bool:
    if f"{module}:{qualname}" in STDLIB_GLOBALS:
        return True
    parts = module.split(".")
    return (
        parts[0] == "river"
        and all(IDENT.match(p) for p in parts + qualname.split("."))
        and not any(module == d or module.startswith(d + ".") for d in DENIED)
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
    if not is_allowed(module, qualname):
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
    if not isinstance(obj, (type, *FUNCTIONS)) or (
        getattr(obj, "__module__", None),
        getattr(obj, "__qualname__", None),
    ) != (module, qualname):
        raise CheckpointError(f"river state names {name!r}, which is not a class or function defined there")
    return obj


def slot_names(cls: type) -> list[str]:
    names = []
    for klass in reversed(cls.__mro__):
        slots = klass.__dict__.get("__slots__", ())
        for s in (slots,) if isinstance(slots, str) else slots:
            if s not in ("__dict__", "__weakref__"):
                private = s.startswith("__") and not s.endswith("__")
                names.append(f"_{klass.__name__.lstrip('_')}{s}" if private else s)
    return names


@functools.cache
def distribution_class() -> type:
    from river.proba.base import Distribution

    return Distribution
