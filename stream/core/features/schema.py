"""A feature schema: the named fields of a record, their types, and how each becomes model input.

A schema is declared (YAML or JSON, see :func:`load_schema`) or inferred from
the first records of a stream (:mod:`stream.core.features.infer`). It is plain
data: it travels in checkpoints and in every published version as the dict of
:meth:`FeatureSchema.to_dict`, and the learner, the codec and the API all build
their part from that one value -- which is what keeps learning and serving from
transforming a record differently.

Field types
-----------
========== ============================================ =====================================
type       accepts                                      becomes
========== ============================================ =====================================
numeric    a number (``true``/``false`` count as 1/0)   one column; missing -> NaN, which the
                                                        model imputes (running mean) and flags
boolean    ``true``/``false``, 0/1, "true"/"false"      one column of 0/1; missing as numeric
categorical any scalar (strings, ids, numbers)          one hashed code into an embedding table
text       a string                                     up to ``max_tokens`` hashed word codes,
                                                        averaged by an embedding bag
========== ============================================ =====================================

``null`` or an absent field is a missing value, never an error; a value of the
wrong kind is (see :class:`FieldError`). ``text-hash`` is accepted for ``text``.

Examples
--------
>>> schema = FeatureSchema.from_dict({"fields": [
...     {"name": "amount", "type": "numeric"},
...     {"name": "user", "type": "categorical", "buckets": 1024, "dim": 4}]})
>>> schema.numeric_names, [f.name for f in schema.embedded]
(('amount',), ['user'])
>>> schema.width          # encoded columns: 1 numeric + 1 code
2
>>> FeatureSchema.from_dict(schema.to_dict()) == schema
True
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal, Mapping

from stream.core.errors import ConfigError

__all__ = ["FieldSpec", "FeatureSchema", "load_schema", "DEFAULT_BUCKETS", "DEFAULT_DIM", "MAX_BUCKETS"]

FieldType = Literal["numeric", "boolean", "categorical", "text"]
_TYPES = ("numeric", "boolean", "categorical", "text")
_ALIASES = {"text-hash": "text", "bool": "boolean", "category": "categorical", "number": "numeric"}

#: Hash buckets of a categorical field when the schema names none.
DEFAULT_BUCKETS = 1 << 16
#: Embedding size when the schema names none.
DEFAULT_DIM = 8
#: Codes travel as float32 in the encoded matrix, which holds integers exactly up to 2**24.
MAX_BUCKETS = 1 << 24
#: Codes 0 and 1 are reserved: padding (an unused text slot) and "missing".
RESERVED_CODES = 2
UNKNOWN_POLICIES = ("ignore", "reject")


@dataclass(frozen=True)
class FieldSpec:
    """One named field: its type and, for embedded fields, the table's size.

    ``default`` replaces a missing value before anything else sees it (for a
    numeric field that means no missing indicator fires); ``None`` keeps the
    value missing.
    """

    name: str
    type: FieldType = "numeric"
    buckets: int | None = None
    dim: int | None = None
    max_tokens: int | None = None
    default: Any = None

    def __post_init__(self) -> None:
        kind = _ALIASES.get(self.type, self.type)
        object.__setattr__(self, "type", kind)
        where = f"feature {self.name!r}"
        if not isinstance(self.name, str) or not self.name:
            raise ConfigError(f"every feature needs a non-empty string name, got {self.name!r}")
        if kind not in _TYPES:
            raise ConfigError(
                f"{where}: type must be one of {', '.join(_TYPES)} (or text-hash), got {kind!r}"
            )
        if self.embedded:
            buckets = DEFAULT_BUCKETS if self.buckets is None else self.buckets
            if not isinstance(buckets, int) or not RESERVED_CODES < buckets <= MAX_BUCKETS:
                raise ConfigError(f"{where}: buckets must be an integer in 3..{MAX_BUCKETS}, got {buckets!r}")
            dim = DEFAULT_DIM if self.dim is None else self.dim
            if not isinstance(dim, int) or not 1 <= dim <= 1024:
                raise ConfigError(f"{where}: dim must be an integer in 1..1024, got {dim!r}")
            tokens = (8 if kind == "text" else 1) if self.max_tokens is None else self.max_tokens
            if (
                not isinstance(tokens, int)
                or not 1 <= tokens <= 256
                or (kind == "categorical" and tokens != 1)
            ):
                raise ConfigError(f"{where}: max_tokens must be 1..256 (and 1 for a categorical field)")
            object.__setattr__(self, "buckets", buckets)
            object.__setattr__(self, "dim", dim)
            object.__setattr__(self, "max_tokens", tokens)
        elif self.buckets is not None or self.dim is not None or self.max_tokens is not None:
            raise ConfigError(f"{where}: buckets, dim and max_tokens apply to categorical and text fields")
        if self.default is not None:
            self._check_default(where)

    def _check_default(self, where: str) -> None:
        if self.type in ("numeric", "boolean") and not isinstance(self.default, (int, float, bool)):
            raise ConfigError(f"{where}: default must be a number, got {self.default!r}")
        if self.type in ("categorical", "text") and isinstance(self.default, (dict, list)):
            raise ConfigError(f"{where}: default must be a scalar, got {self.default!r}")

    @property
    def embedded(self) -> bool:
        """Hashed into an embedding table (categorical, text) rather than a numeric column."""
        return self.type in ("categorical", "text")

    @property
    def width(self) -> int:
        """Columns this field takes in the encoded matrix."""
        return int(self.max_tokens) if self.embedded else 1

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "type": self.type}
        for key in ("buckets", "dim", "max_tokens", "default"):
            value = getattr(self, key)
            if value is not None and not (key == "max_tokens" and self.type == "categorical"):
                out[key] = value
        return out


@dataclass(frozen=True)
class FeatureSchema:
    """The ordered fields of a record's ``x`` and what to do with fields not in it.

    ``unknown``: ``"ignore"`` (count and report them) or ``"reject"`` (dead-letter
    the record). The encoded matrix has the numeric and boolean fields first, in
    schema order, then each embedded field's codes, in schema order.
    """

    fields: tuple[FieldSpec, ...]
    unknown: str = "ignore"
    names: tuple[str, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        specs = tuple(self.fields)
        if not specs:
            raise ConfigError("a feature schema needs at least one field")
        names = tuple(f.name for f in specs)
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ConfigError(f"feature schema: duplicate field names {dup}")
        if self.unknown not in UNKNOWN_POLICIES:
            raise ConfigError(f"feature schema: unknown must be 'ignore' or 'reject', got {self.unknown!r}")
        object.__setattr__(self, "fields", specs)
        object.__setattr__(self, "names", names)

    @property
    def numeric(self) -> tuple[FieldSpec, ...]:
        """Numeric and boolean fields: the leading columns, in schema order."""
        return tuple(f for f in self.fields if not f.embedded)

    @property
    def numeric_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.numeric)

    @property
    def embedded(self) -> tuple[FieldSpec, ...]:
        """Categorical and text fields: their codes follow the numeric columns."""
        return tuple(f for f in self.fields if f.embedded)

    @property
    def width(self) -> int:
        """Columns of the encoded matrix."""
        return sum(f.width for f in self.fields)

    def embedding_params(self) -> int:
        """Floats in the embedding tables this schema asks for (the model's dominant memory)."""
        return sum(int(f.buckets) * int(f.dim) for f in self.embedded)

    def layout(self) -> dict[str, Any]:
        """What a model needs to know about its input: ``{"numeric": k, "tables": [[buckets, dim, width], ...]}``.

        >>> FeatureSchema((FieldSpec("a"), FieldSpec("t", "text", buckets=64, dim=2, max_tokens=3))).layout()
        {'numeric': 1, 'tables': [[64, 2, 3]]}
        """
        return {
            "numeric": len(self.numeric),
            "tables": [[int(f.buckets), int(f.dim), f.width] for f in self.embedded],
        }

    def with_fields(self, *specs: FieldSpec) -> FeatureSchema:
        """A copy with ``specs`` replacing the fields of the same names."""
        by_name = {s.name: s for s in specs}
        return replace(self, fields=tuple(by_name.get(f.name, f) for f in self.fields))

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON/YAML data; :meth:`from_dict` reads it back."""
        return {"fields": [f.to_dict() for f in self.fields], "unknown": self.unknown}

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> FeatureSchema:
        """Read a schema from its dict form; every mistake is one :class:`ConfigError` line."""
        if not isinstance(doc, Mapping) or not isinstance(doc.get("fields"), list):
            raise ConfigError("a feature schema is a mapping with a 'fields' list")
        allowed = {f.name for f in fields(FieldSpec)}
        specs = []
        for i, raw in enumerate(doc["fields"]):
            if not isinstance(raw, Mapping):
                raise ConfigError(f"feature schema: field #{i} must be a mapping, got {raw!r}")
            extra = sorted(set(raw) - allowed)
            if extra:
                raise ConfigError(
                    f"feature schema: field {raw.get('name', i)!r} has unknown keys {extra} "
                    f"(allowed: {sorted(allowed)})"
                )
            specs.append(FieldSpec(**raw))
        return cls(tuple(specs), unknown=doc.get("unknown", "ignore"))

    def to_yaml(self) -> str:
        """The schema as YAML, one field per line: what ``--infer-schema`` prints for the user to save."""
        lines = [f"unknown: {self.unknown}   # ignore | reject: what to do with fields not listed", "fields:"]
        for spec in self.fields:
            lines.append(f"  - {json.dumps(spec.to_dict())}")
        return "\n".join(lines) + "\n"


def load_schema(path: str | Path) -> FeatureSchema:
    """Read a declared schema from a ``.yaml``/``.yml`` or ``.json`` file.

    Raises
    ------
    ConfigError
        The file is missing, unreadable or not a valid schema.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read the feature schema {path}: {exc.strerror or exc}") from None
    import yaml

    try:
        doc = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        kind = "JSON" if path.suffix.lower() == ".json" else "YAML"
        raise ConfigError(f"the feature schema {path} is not valid {kind}: {exc}") from None
    try:
        return FeatureSchema.from_dict(doc)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    except TypeError as exc:
        raise ConfigError(f"{path}: not a feature schema: {exc}") from None
