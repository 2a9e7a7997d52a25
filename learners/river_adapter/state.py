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

from learners.river_adapter.state_decode import from_plain
from learners.river_adapter.state_encode import to_plain
from learners.river_adapter.state_format import STATE_FORMAT, STDLIB_GLOBALS, resolve_global

# One import for the river learner, the drift detectors and the tests; the code is split by
# direction: state_format.py (shape, allow-list), state_encode.py, state_decode.py.
__all__ = ["STATE_FORMAT", "STDLIB_GLOBALS", "from_plain", "resolve_global", "to_plain"]
