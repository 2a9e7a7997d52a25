"""Named-field records -> the encoded float32 matrix every learner and the API see.

The encoding is a pure function of the schema (no learned state), so the codec
and the API compute the same matrix from the same record by construction; what
is learned from it (input statistics, embeddings) lives in the model.

Layout of a row: the numeric and boolean fields in schema order (``NaN`` when
missing and the field has no default), then each embedded field's codes:

- code 0: padding (an unused slot of a text field);
- code 1: missing;
- codes 2..buckets-1: ``2 + murmur3(value) % (buckets - 2)``, seeded per field so
  equal values of different fields land independently.

Codes are stored as float32, exact up to 2**24 (the schema's bucket limit).

Examples
--------
>>> from stream.core.features.schema import FeatureSchema, FieldSpec
>>> enc = FeatureEncoder(FeatureSchema((FieldSpec("amount"), FieldSpec("is_new", "boolean"),
...                                     FieldSpec("device", "categorical", buckets=16))))
>>> out = enc.encode([{"amount": 2.5, "is_new": True, "device": "ios"},
...                   {"amount": None, "device": None, "extra": 1},
...                   {"amount": "12"}])
>>> out.X.shape, out.X[1, :2].tolist(), float(out.X[1, 2])
((2, 3), [nan, nan], 1.0)
>>> out.rows.tolist(), out.errors
([0, 1], {2: "feature 'amount': expected a number, got str '12'"})
>>> dict(out.unknown)
{'extra': 1}
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import mmh3
import numpy as np

from stream.core.features.schema import RESERVED_CODES, FeatureSchema, FieldSpec

__all__ = ["Encoded", "FeatureEncoder", "FieldError", "hash_code"]

_F32_MAX = float(np.finfo(np.float32).max)
_NUMBER_KINDS = frozenset({int, float, bool, type(None)})
_SCALAR_KINDS = frozenset({str, int, float, bool})
_BOOLEANS: dict[Any, float] = {True: 1.0, False: 0.0, "true": 1.0, "false": 0.0, "True": 1.0, "False": 0.0}
_TOKEN = re.compile(r"\w+")
#: How many distinct unknown field names are tallied; the rest count under one key.
_UNKNOWN_NAMES_KEPT = 64


class FieldError(ValueError):
    """A field's value is of the wrong kind: ``field``, what was ``expected`` and what was received."""

    def __init__(self, field: str | None, expected: str, received: Any) -> None:
        self.field, self.expected, self.received = field, expected, _describe(received)
        where = f"feature {field!r}" if field is not None else "x"
        super().__init__(f"{where}: expected {expected}, got {self.received}")


def _describe(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text[:40] + '...' if len(text) > 40 else text}"


def hash_code(value: str, seed: int, buckets: int) -> int:
    """The code of ``value`` in a table of ``buckets`` rows (never a reserved code).

    >>> hash_code("FR", 7, 1024) == hash_code("FR", 7, 1024), 2 <= hash_code("FR", 7, 1024) < 1024
    (True, True)
    """
    return RESERVED_CODES + mmh3.hash(value, seed, signed=False) % (buckets - RESERVED_CODES)


@dataclass(slots=True)
class Encoded:
    """The rows that encoded (``X[i]`` came from input row ``rows[i]``), the rest's reasons, unknown names."""

    X: np.ndarray
    rows: np.ndarray
    errors: dict[int, str]
    unknown: Counter


class FeatureEncoder:
    """Encodes batches of ``x`` mappings against one :class:`FeatureSchema`; see the module docstring."""

    def __init__(self, schema: FeatureSchema) -> None:
        self.schema = schema
        self._names = frozenset(schema.names)
        self._numeric = schema.numeric
        self._embedded = schema.embedded
        # One seed per field, derived from its name: stable across processes (unlike hash()).
        self._seeds = {f.name: mmh3.hash(f.name, 0, signed=False) for f in self._embedded}

    @property
    def width(self) -> int:
        return self.schema.width

    def encode(self, xs: Sequence[Any]) -> Encoded:
        """Encode a batch; a row with any bad field is left out with the first field's reason."""
        n = len(xs)
        errors: dict[int, str] = {}
        unknown: Counter = Counter()
        X = np.empty((n, self.width), dtype=np.float32)
        rows = [x if isinstance(x, Mapping) else None for x in xs]
        for i, x in enumerate(rows):
            if x is None:
                errors[i] = str(FieldError(None, "an object of named fields", xs[i]))
            elif not self._names.issuperset(x):
                self._tally_unknown(x, unknown, self._names)
                if self.schema.unknown == "reject":
                    extra = sorted(k for k in x if k not in self._names)
                    errors[i] = f"unknown feature {extra[0]!r}: not in the schema (unknown: reject)"
        col = 0
        for spec in self._numeric:
            with np.errstate(over="ignore"):  # a value beyond float32 is an error row, left out below
                X[:, col] = self._numeric_column(spec, _column(rows, spec.name), errors)
            col += 1
        for spec in self._embedded:
            X[:, col : col + spec.width] = self._code_columns(spec, _column(rows, spec.name), errors)
            col += spec.width
        if not errors:
            return Encoded(X, np.arange(n), errors, unknown)
        keep = np.array([i not in errors for i in range(n)], dtype=bool)
        return Encoded(X[keep], np.flatnonzero(keep), errors, unknown)

    def encode_one(self, x: Any) -> np.ndarray:
        """One row, or :class:`FieldError` naming the first bad field (what the API answers 422 with).

        Unknown fields are ignored unless the schema rejects them. Equal to
        ``encode([x]).X[0]`` -- the batch path is the reference; this one only
        skips its per-column numpy calls for the common value types.

        >>> from stream.core.features.schema import FeatureSchema, FieldSpec
        >>> enc = FeatureEncoder(FeatureSchema((FieldSpec("amount"), FieldSpec("device", "categorical"))))
        >>> x = {"amount": 2.5, "device": "ios", "extra": [1]}
        >>> bool((enc.encode_one(x) == enc.encode([x]).X[0]).all()), enc.encode_one({}).tolist()[1]
        (True, 1.0)
        """
        row = self._row(x) if type(x) is dict else None
        if row is not None:
            return row
        out = self.encode([x])
        if out.errors:
            raise self.field_error(x)
        return out.X[0]

    def _row(self, x: dict) -> np.ndarray | None:
        """``x`` encoded value by value; ``None`` as soon as a value is not one of the plain cases.

        A single-row request spends ~35 us in :meth:`encode`'s per-column numpy
        calls and ~5 us here. Anything unusual (strings in boolean fields,
        out-of-range or wrong-kind values, unknown fields the schema rejects)
        returns ``None``, so :meth:`encode` decides it and says what is wrong:
        one place holds the rules for those.
        """
        if self.schema.unknown == "reject" and not self._names.issuperset(x):
            return None
        values: list[float] = []
        for spec in self._numeric:
            v = x.get(spec.name)
            kind = type(v)
            if kind is bool:
                values.append(1.0 if v else 0.0)
            elif kind is float or kind is int:
                # INVARIANT: the range test is False for NaN too, which encode() reads as missing.
                if not -_F32_MAX <= v <= _F32_MAX or (spec.type == "boolean" and v != 0 and v != 1):
                    return None
                values.append(float(v))
            elif v is None:
                values.append(np.nan if spec.default is None else float(spec.default))
            else:
                return None
        for spec in self._embedded:
            v = x.get(spec.name)
            if v is None:
                v = spec.default
            codes = [0.0] * spec.width
            if v is None or (spec.type == "text" and v == ""):
                codes[0] = 1.0
            elif spec.type == "text":
                if type(v) is not str:
                    return None
                seed, buckets = self._seeds[spec.name], int(spec.buckets)
                tokens = _TOKEN.findall(v.lower())[: spec.width] or [""]
                codes[: len(tokens)] = [hash_code(t, seed, buckets) for t in tokens]
            elif type(v) in _SCALAR_KINDS:
                text = v if type(v) is str else _scalar_text(v)
                codes[0] = hash_code(text, self._seeds[spec.name], int(spec.buckets))
            else:
                return None
            values.extend(codes)
        return np.array(values, dtype=np.float32)

    def field_error(self, x: Any) -> FieldError:
        """The :class:`FieldError` of the first bad field of ``x`` (``x`` must have one)."""
        if not isinstance(x, Mapping):
            return FieldError(None, "an object of named fields", x)
        for spec in self.schema.fields:
            error = _check_value(spec, x.get(spec.name))
            if error is not None:
                return error
        extra = sorted(k for k in x if k not in self._names)
        return FieldError(extra[0], "no such field (the schema rejects unknown fields)", x[extra[0]])

    # ----------------------------------------------------------------- columns
    def _numeric_column(self, spec: FieldSpec, values: list[Any], errors: dict[int, str]) -> np.ndarray:
        if spec.type == "boolean":
            col = [_BOOLEANS.get(v, v) if _hashable(v) else v for v in values]
            values = [np.nan if v is None else v for v in col]
            convert = _as_boolean
        else:
            convert = _as_number
        if _NUMBER_KINDS.issuperset(map(type, values)):
            with np.errstate(over="ignore"):
                out = np.array(values, dtype=np.float64)
            if spec.type == "boolean":
                bad = ~(np.isnan(out) | (out == 0.0) | (out == 1.0))
            else:
                bad = np.abs(out) > _F32_MAX
            for i in np.flatnonzero(bad):
                bad_value = FieldError(spec.name, "a valid value", values[i])
                errors.setdefault(int(i), str(_error_of(spec, values[i], convert, ok=bad_value)))
        else:
            out = np.empty(len(values), dtype=np.float64)
            for i, v in enumerate(values):
                try:
                    out[i] = convert(spec, v)
                except FieldError as exc:
                    errors.setdefault(i, str(exc))
                    out[i] = np.nan
        if spec.default is not None:
            out[np.isnan(out)] = float(spec.default)
        return out

    def _code_columns(self, spec: FieldSpec, values: list[Any], errors: dict[int, str]) -> np.ndarray:
        seed, buckets, width = self._seeds[spec.name], int(spec.buckets), spec.width
        out = np.zeros((len(values), width), dtype=np.float32)
        text = spec.type == "text"
        default = spec.default
        for i, v in enumerate(values):
            if v is None:
                v = default
            if v is None or (text and v == ""):
                out[i, 0] = 1.0
            elif text:
                if not isinstance(v, str):
                    errors.setdefault(i, str(FieldError(spec.name, "a string", v)))
                    continue
                tokens = _TOKEN.findall(v.lower())[:width] or [""]
                out[i, : len(tokens)] = [hash_code(t, seed, buckets) for t in tokens]
            elif isinstance(v, (str, int, float, bool)):
                out[i, 0] = hash_code(v if isinstance(v, str) else _scalar_text(v), seed, buckets)
            else:
                errors.setdefault(i, str(FieldError(spec.name, "a string, number or boolean", v)))
        return out

    @staticmethod
    def _tally_unknown(x: Mapping, unknown: Counter, known: frozenset) -> None:
        for key in x:
            if key in known:
                continue
            if key not in unknown and len(unknown) >= _UNKNOWN_NAMES_KEPT:
                key = "(other names)"
            unknown[key] += 1


def _column(rows: list[Mapping | None], name: str) -> list[Any]:
    return [None if x is None else x.get(name) for x in rows]


def _hashable(v: Any) -> bool:
    return not isinstance(v, (list, dict))


def _scalar_text(v: Any) -> str:
    # JSON 3 and 3.0 are different tokens; true/false spelled as JSON writes them.
    if isinstance(v, bool):
        return "true" if v else "false"
    return repr(v)


def _as_number(spec: FieldSpec, v: Any) -> float:
    if v is None or (isinstance(v, float) and v != v):  # NaN (Avro can carry one): missing, as null
        return np.nan
    if not isinstance(v, (int, float)) or isinstance(v, bool) and spec.type != "numeric":
        raise FieldError(spec.name, "a number", v)
    if not abs(v) <= _F32_MAX:  # also catches NaN
        raise FieldError(spec.name, "a finite number within float32 range", v)
    return float(v)


def _as_boolean(spec: FieldSpec, v: Any) -> float:
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return np.nan
    if isinstance(v, (int, float)) and not isinstance(v, bool) and v in (0, 1):
        return float(v)
    raise FieldError(spec.name, "a boolean (true/false, 0/1)", v)


def _error_of(
    spec: FieldSpec, v: Any, convert: Callable[[FieldSpec, Any], float], ok: FieldError | None = None
) -> FieldError | None:
    try:
        convert(spec, v)
    except FieldError as exc:
        return exc
    return ok


def _check_value(spec: FieldSpec, v: Any) -> FieldError | None:
    """The error one value of ``spec`` would raise, or ``None`` (the per-value reference of the columns)."""
    if v is None:
        return None
    if spec.type == "text":
        return None if isinstance(v, str) else FieldError(spec.name, "a string", v)
    if spec.type == "categorical":
        ok = isinstance(v, (str, int, float, bool))
        return None if ok else FieldError(spec.name, "a string, number or boolean", v)
    if spec.type == "boolean":
        v = _BOOLEANS.get(v, v) if _hashable(v) else v
    return _error_of(spec, v, _as_boolean if spec.type == "boolean" else _as_number, ok=None)
