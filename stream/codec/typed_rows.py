"""The first tier of JSON decoding: a whole poll of numeric rows through one typed msgspec decoder.

For a stream whose records are ``{"id", "ts", "x": [d numbers], "y"}`` (field names
as configured), :class:`TypedRows` decodes every value with a msgspec decoder of a
closed record type: the types, the dimension, the label range, the id length and
the event-time range are all checked in C while parsing, so no per-record Python
code runs for a good record. A record the type refuses for *any* reason is not
judged here: it is handed back as a leftover row, and the codec's other paths
(the orjson batch path, then the per-record reference) decide it -- with the
reason they have always given.

Why the type is closed (``forbid_unknown_fields``): msgspec skips unknown fields
more leniently than orjson parses them (invalid UTF-8 or a number beyond
float64 inside an ignored field passes msgspec, orjson refuses it), so a record
with a field this type does not name goes to the orjson paths, which judge it
exactly as before. Each value is decoded on its own (``map`` over the poll, one
C loop) rather than as one joined array: the join was measured no faster, and a
value such as ``{..},{..}`` would shift every later record in a joined array.

Examples
--------
>>> from stream.core.poll import PollColumns
>>> from stream.core.records import RawRecord
>>> from stream.codec.json_codec import CodecConfig
>>> typed = TypedRows.build(CodecConfig(), dimension=2, n_classes=2)
>>> cols = PollColumns.from_records([RawRecord("t", 0, 0, 5, None, b'{"id": 7, "x": [1, 2], "y": 1}'),
...                                  RawRecord("t", 0, 1, 6, None, b'{"x": [1], "y": 0}')])
>>> part = typed.decode(cols, max_record_bytes=1 << 20)
>>> part.result.events.ids.tolist(), part.result.events.ts.tolist(), part.leftover.tolist()
(['7'], [5], [1])
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import chain
from operator import attrgetter
from typing import Annotated, Any

import msgspec
import numpy as np

from stream.codec.result import DecodeResult
from stream.core.poll import PollColumns
from stream.core.records import Events

__all__ = ["TypedPart", "TypedRows"]

_F32_MAX = float(np.finfo(np.float32).max)
_I64_MIN, _I64_MAX = int(np.iinfo(np.int64).min), int(np.iinfo(np.int64).max)
#: Refused values: msgspec's own errors, a tombstone (``None``), and nesting beyond its depth.
_REFUSED = (msgspec.DecodeError, TypeError, RecursionError)
#: A poll whose first records all miss the type is a stream of another shape: stop trying it.
_GIVE_UP_AFTER = 16
_X, _Y, _TS, _ID = attrgetter("x"), attrgetter("y"), attrgetter("ts"), attrgetter("id")


@dataclass(frozen=True, slots=True)
class TypedPart:
    """What the typed tier made of a poll: events for the rows it decoded (``result.rows``: their
    poll rows), and the ``leftover`` poll rows it did not judge, in poll order."""

    result: DecodeResult
    leftover: np.ndarray


class TypedRows:
    """One closed msgspec record type for one stream layout; see the module docstring.

    ``n_classes=None`` means regression (a finite number label); otherwise labels
    must be integers in ``[0, n_classes)`` -- a new class or a bad label is a
    leftover row, so the label map only ever grows on the reference path.
    """

    def __init__(self, record_type: type, dimension: int, n_classes: int | None, *, named_x: bool) -> None:
        self._decode = msgspec.json.Decoder(record_type).decode
        self.dimension = dimension
        self.n_classes = n_classes
        self._named_x = named_x
        self._y_dtype = np.float32 if n_classes is None else np.int64

    @classmethod
    def build(cls, layout: Any, dimension: int, n_classes: int | None) -> TypedRows | None:
        """The typed decoder for ``layout`` (a :class:`~stream.codec.json_codec.CodecConfig`: field names,
        ``feature_names``, ``max_id_chars``), or ``None`` when msgspec cannot express it (e.g. two
        fields configured with one name): the codec then uses its other paths only."""
        names, max_id = layout.feature_names, layout.max_id_chars
        # str(int) must fit max_id_chars as the reference measures it (a minus sign counts).
        id_int = Annotated[
            int, msgspec.Meta(ge=max(_I64_MIN, 1 - 10 ** (max_id - 1)), le=min(_I64_MAX, 10**max_id - 1))
        ]
        id_type: Any = Annotated[str, msgspec.Meta(max_length=max_id)] | id_int | None
        ts_type: Any = Annotated[int, msgspec.Meta(ge=_I64_MIN, le=_I64_MAX)] | None
        y_type: Any = float if n_classes is None else Annotated[int, msgspec.Meta(ge=0, lt=n_classes)]
        try:
            if names is not None:
                x_type: Any = msgspec.defstruct(
                    "Features",
                    [(f"f{i}", float) for i in range(len(names))],
                    rename={f"f{i}": name for i, name in enumerate(names)},
                    forbid_unknown_fields=True,
                    gc=False,
                )
            else:
                x_type = Annotated[list[float], msgspec.Meta(min_length=dimension, max_length=dimension)]
            record = msgspec.defstruct(
                "Record",
                [("x", x_type), ("y", y_type), ("ts", ts_type, None), ("id", id_type, None)],
                rename={
                    "x": layout.x_field,
                    "y": layout.y_field,
                    "ts": layout.ts_field,
                    "id": layout.id_field,
                },
                forbid_unknown_fields=True,
                gc=False,  # nothing decoded here forms a cycle: keep it out of the collector's sight
            )
        except (TypeError, ValueError):
            return None
        return cls(record, dimension, n_classes, named_x=names is not None)

    def decode(self, cols: PollColumns, *, max_record_bytes: int) -> TypedPart:
        """Decode the rows of ``cols`` the type accepts; the others are left over (see the module docstring)."""
        values = cols.values
        n = len(values)
        try:
            # A tombstone (None) makes len() raise: the per-row loop leaves it over.
            if max(map(len, values)) > max_record_bytes:
                raise TypeError
            recs = list(map(self._decode, values))
            good = None
        except _REFUSED:
            recs, good = self._decode_rows(values, max_record_bytes)
        if not recs:
            return TypedPart(
                DecodeResult(Events.empty(self.dimension, self._y_dtype), rows=_NO_ROWS), np.arange(n)
            )
        k = len(recs)
        if self._named_x:
            flat = chain.from_iterable(map(msgspec.structs.astuple, map(_X, recs)))
        else:
            flat = chain.from_iterable(map(_X, recs))
        X64 = np.fromiter(flat, dtype=np.float64, count=k * self.dimension).reshape(k, self.dimension)
        # As the reference: within float32's range as float64 (1e39 must not round to a finite value).
        in_range = (np.abs(X64) <= _F32_MAX).all(axis=1)
        if not in_range.all():
            # A non-finite row is left to the reference, which names it; the rest stay here.
            rows = np.arange(n) if good is None else good
            good, recs = rows[in_range], [r for r, ok in zip(recs, in_range.tolist()) if ok]
            X64 = X64[in_range]
            k = len(recs)
        X = X64.astype(np.float32)
        if self.n_classes is None:
            with np.errstate(over="ignore"):  # a target beyond float32 becomes inf, as on the reference path
                y = np.fromiter(map(_Y, recs), dtype=np.float64, count=k).astype(np.float32)
        else:
            y = np.fromiter(map(_Y, recs), dtype=np.int64, count=k)
        rows = np.arange(n) if good is None else good
        ts, ids, own = self._envelope(recs, cols, rows)
        sub = slice(None) if good is None else rows
        events = Events(
            X=X,
            y=y,
            ts=ts,
            ids=ids,
            topic=cols.topic[sub],
            partition=cols.partition[sub],
            offset=cols.offset[sub],
        )
        leftover = _NO_ROWS if good is None else np.setdiff1d(np.arange(n), rows, assume_unique=True)
        return TypedPart(DecodeResult(events, rows=rows, own_ids=own), leftover)

    def _decode_rows(self, values: list, max_record_bytes: int) -> tuple[list, np.ndarray]:
        """Record by record: the decoded ones and their rows (a refused record is simply skipped)."""
        decode = self._decode
        recs: list = []
        rows: list[int] = []
        for i, value in enumerate(values):
            if i == _GIVE_UP_AFTER and not recs:
                break  # nothing fits the type: a stream of another shape, the orjson path's
            if value is None or len(value) > max_record_bytes:
                continue
            try:
                recs.append(decode(value))
            except _REFUSED:
                continue
            rows.append(i)
        return recs, np.array(rows, dtype=np.int64)

    def _envelope(
        self, recs: list, cols: PollColumns, rows: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Event times (the record's, else the client's), ids (own, else ``topic:partition:offset``), own-id flags."""
        raw_ts = list(map(_TS, recs))
        if None in raw_ts:
            client = cols.timestamps()[rows].tolist()
            raw_ts = [c if t is None else t for t, c in zip(raw_ts, client)]
        ts = np.array(raw_ts, dtype=np.int64)
        raw_ids = list(map(_ID, recs))
        if None not in raw_ids:
            return ts, np.array(list(map(str, raw_ids)), dtype=str), None
        topics, parts, offs = (c[rows].tolist() for c in (cols.topic, cols.partition, cols.offset))
        ids = [
            str(v) if v is not None else f"{t}:{p}:{o}" for v, t, p, o in zip(raw_ids, topics, parts, offs)
        ]
        own = np.array([v is not None for v in raw_ids], dtype=bool)
        return ts, np.array(ids, dtype=str), own


_NO_ROWS = np.empty(0, dtype=np.int64)
