"""Infer a feature schema from the first records of a stream, with a summary a user can read and save.

Each field's type comes from the values seen: numbers -> numeric, booleans ->
boolean, strings -> categorical (text when they are mostly several words).
An embedded field's table gets ``buckets`` sized from the distinct values seen,
with room to grow (x16, as a power of two between 2**10 and 2**18): the first
records under-count an id's cardinality, and a collision costs less than an
idle table row. The printed YAML is a starting point, meant to be edited and
passed back with ``--schema``.

Examples
--------
>>> xs = [{"amount": 1.5, "user": f"u{i}", "ok": i % 2 == 0, "note": "three short words"} for i in range(100)]
>>> schema, summary = infer_schema(xs)
>>> [(f.name, f.type) for f in schema.fields]
[('amount', 'numeric'), ('note', 'text'), ('ok', 'boolean'), ('user', 'categorical')]
>>> schema.fields[3].buckets
2048
>>> print(summary.splitlines()[0])
field   type              seen  distinct  example
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from stream.core.errors import ConfigError
from stream.core.features.schema import FeatureSchema, FieldSpec

__all__ = ["infer_schema"]

_MIN_BUCKETS, _MAX_BUCKETS = 1 << 10, 1 << 18
#: Distinct values tracked per field; beyond it a field is clearly high-cardinality.
_DISTINCT_CAP = 100_000


@dataclass
class _FieldStats:
    kinds: Counter = field(default_factory=Counter)
    distinct: set = field(default_factory=set)
    words: int = 0
    strings: int = 0
    example: Any = None

    def add(self, value: Any) -> None:
        if value is None:
            return
        kind = "boolean" if isinstance(value, bool) else "number" if isinstance(value, (int, float)) else (
            "string" if isinstance(value, str) else "other")  # fmt: skip
        self.kinds[kind] += 1
        if self.example is None and kind != "other":
            self.example = value
        if kind == "string":
            self.strings += 1
            self.words += len(value.split())
        if kind != "other" and len(self.distinct) < _DISTINCT_CAP:
            self.distinct.add(value)

    def spec(self, name: str) -> FieldSpec:
        # The majority decides: a few odd values become dead letters later, with their reason,
        # instead of one bad record among the first deciding a field's type.
        scalars = self.kinds["number"] + self.kinds["boolean"] + self.kinds["string"]
        if not scalars and self.kinds["other"]:
            raise ConfigError(
                f"cannot infer feature {name!r}: it holds lists or objects ({self.example!r}); "
                "declare a schema with --schema"
            )
        if self.kinds["string"] <= 0.05 * scalars:
            if self.kinds["boolean"] > self.kinds["number"]:
                return FieldSpec(name, "boolean")
            return FieldSpec(name, "numeric")
        if self.strings and self.words / self.strings > 2.0:
            return FieldSpec(name, "text", buckets=_buckets(len(self.distinct) * 4))
        return FieldSpec(name, "categorical", buckets=_buckets(len(self.distinct)))


def _buckets(distinct: int) -> int:
    target = max(distinct, 1) * 16
    return min(_MAX_BUCKETS, max(_MIN_BUCKETS, 1 << (target - 1).bit_length()))


def infer_schema(xs: Iterable[Mapping[str, Any]]) -> tuple[FeatureSchema, str]:
    """The schema the records ``xs`` suggest, fields in name order, and a printable summary.

    Raises
    ------
    ConfigError
        No record was a mapping, or a field holds lists/objects.
    """
    stats: dict[str, _FieldStats] = {}
    n = 0
    for x in xs:
        if not isinstance(x, Mapping):
            continue
        n += 1
        for name, value in x.items():
            stats.setdefault(str(name), _FieldStats()).add(value)
    if not n:
        raise ConfigError("cannot infer a feature schema: no record had x as an object of named fields")
    specs = [stats[name].spec(name) for name in sorted(stats)]
    schema = FeatureSchema(tuple(specs))
    return schema, _summary(schema, stats, n)


def _summary(schema: FeatureSchema, stats: dict[str, _FieldStats], n: int) -> str:
    rows = [("field", "type", "seen", "distinct", "example")]
    for spec in schema.fields:
        st = stats[spec.name]
        seen = sum(st.kinds.values())
        kind = spec.type + (f"/{spec.buckets}" if spec.embedded else "")
        distinct = f"{len(st.distinct)}{'+' if len(st.distinct) >= _DISTINCT_CAP else ''}"
        rows.append((spec.name, kind, f"{100 * seen / n:.0f}%", distinct, repr(st.example)[:30]))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)
