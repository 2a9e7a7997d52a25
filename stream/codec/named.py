"""Decode records whose ``x`` is named mixed-type fields, through a :class:`~stream.core.features.FeatureSchema`.

The record's envelope (id, event time, label) is read as for numeric rows; ``x``
goes to the schema's :class:`~stream.core.features.FeatureEncoder` as a batch,
so the matrix the learner gets is exactly what the API computes for the same
fields. Labels are read only for records whose features encoded, so a record
dead-lettered for its features never adds a class.

With no declared schema, the first poll that has records with an object ``x``
infers one (:func:`~stream.core.features.infer_schema`), logs its summary and
the YAML to save and edit, and locks it: it is part of every checkpoint and
published version from then on.

Examples
--------
>>> from stream.codec.json_codec import CodecConfig, JsonCodec
>>> from stream.core.features import FeatureSchema, FieldSpec
>>> from stream.core.records import RawRecord, TopicPartition
>>> schema = FeatureSchema((FieldSpec("amount"), FieldSpec("device", "categorical", buckets=64)))
>>> codec = JsonCodec(CodecConfig(n_classes=None, schema=schema))
>>> recs = [RawRecord("t", 0, i, 1000, None, v) for i, v in enumerate([
...     b'{"x": {"amount": 2.5, "device": "ios"}, "y": "click"}',
...     b'{"x": {"amount": null, "device": "web"}, "y": "skip"}',
...     b'{"x": {"amount": "a lot", "device": "ios"}, "y": "buy"}'])]
>>> out = codec.decode({TopicPartition("t", 0): recs})
>>> out.events.X.shape, out.events.y.tolist(), codec.labels.classes
((2, 2), [0, 1], ['click', 'skip'])
>>> out.dead_letters[0].reason
"bad features: feature 'amount': expected a number, got str 'a lot'"
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any, Callable, Protocol

import numpy as np

from stream.codec.result import DecodeResult, Reject
from stream.core.deadletter import DeadLetter
from stream.core.features import FeatureEncoder, FeatureSchema, infer_schema
from stream.core.records import Events, RawRecord


class RecordReader(Protocol):
    """What the named path needs of its codec (:class:`~stream.codec.json_codec.JsonCodec` is one)."""

    config: Any
    y_dtype: Any
    unknown_fields: Counter

    def envelope(self, rec: RawRecord, doc: dict) -> tuple[int, str | None]: ...

    def label(self, doc: dict) -> Any: ...

    def empty_events(self) -> Events: ...


log = logging.getLogger(__name__)

__all__ = ["NamedDecoder", "infer_from_docs"]


class NamedDecoder:
    """The named-field path of a :class:`~stream.codec.json_codec.JsonCodec` (which owns the label map)."""

    def __init__(self, codec: RecordReader, schema: FeatureSchema) -> None:
        self.codec = codec
        self.schema = schema
        self.encoder = FeatureEncoder(schema)

    def decode(self, records: list[RawRecord], docs: list[Any]) -> DecodeResult:
        """``docs[i]`` is record ``i`` parsed, or the :class:`str` reason it could not be."""
        codec, cfg = self.codec, self.codec.config
        letters: list[tuple[int, DeadLetter]] = []  # (poll row, letter): sent in poll order
        kept: list[int] = []
        xs: list[Any] = []
        metas: list[tuple[int, str | None]] = []
        for row, (rec, doc) in enumerate(zip(records, docs)):
            try:
                if isinstance(doc, str):
                    raise Reject(doc)
                x = doc.get(cfg.x_field)
                if x is None:
                    raise Reject(f"missing features: no {cfg.x_field!r} field")
                if not isinstance(x, dict):
                    raise Reject(
                        f"bad features: {cfg.x_field} must be an object of named fields for this "
                        f"stream's schema, got {type(x).__name__}"
                    )
                metas.append(codec.envelope(rec, doc))
            except Reject as reject:
                letters.append((row, DeadLetter(rec, str(reject))))
                continue
            kept.append(row)
            xs.append(x)
        encoded = self.encoder.encode(xs)
        codec.unknown_fields.update(encoded.unknown)
        for i, reason in encoded.errors.items():
            letters.append((kept[i], DeadLetter(records[kept[i]], f"bad features: {reason}")))
        rows: list[int] = []
        ys: list[Any] = []
        good: list[int] = []  # positions in the encoded matrix
        for j, i in enumerate(encoded.rows.tolist()):
            row = kept[i]
            try:
                ys.append(codec.label(docs[row]))
            except Reject as reject:
                letters.append((row, DeadLetter(records[row], str(reject))))
                continue
            rows.append(row)
            good.append(j)
        letters.sort(key=lambda pair: pair[0])
        dead = [letter for _, letter in letters]
        if not rows:
            return DecodeResult(codec.empty_events(), dead)
        meta_of = {row: metas[i] for i, row in enumerate(kept)}
        events, own = _events(records, rows, encoded.X[good], ys, [meta_of[r] for r in rows], codec.y_dtype)
        return DecodeResult(events, dead, rows=np.array(rows, dtype=np.int64), own_ids=own)


def _events(
    records: list[RawRecord], rows: list[int], X: np.ndarray, ys: list[Any],
    metas: list[tuple[int, str | None]], y_dtype: Any,
) -> tuple[Events, np.ndarray | None]:  # fmt: skip
    good = [records[r] for r in rows]
    ids = [
        rid if rid is not None else f"{r.topic}:{r.partition}:{r.offset}" for (_, rid), r in zip(metas, good)
    ]
    own = np.array([rid is not None for _, rid in metas], dtype=bool)
    events = Events(
        X=np.ascontiguousarray(X, dtype=np.float32),
        y=np.array(ys, dtype=y_dtype),
        ts=np.array([ts for ts, _ in metas], dtype=np.int64),
        ids=np.array(ids, dtype=str),
        topic=np.array([r.topic for r in good], dtype=str),
        partition=np.array([r.partition for r in good], dtype=np.int32),
        offset=np.array([r.offset for r in good], dtype=np.int64),
    )
    return events, None if own.all() else own


def infer_from_docs(
    docs: list[Any], x_field: str, on_inferred: Callable[[FeatureSchema, str], None]
) -> FeatureSchema | None:
    """The schema the object ``x`` values of ``docs`` suggest; ``None`` unless most ``x`` values are objects.

    The majority decides, as for a field's type: one record with an object ``x``
    in a stream of number lists is a dead letter, not a reason to read the whole
    stream as named fields (and the other way round).

    >>> infer_from_docs([{"x": [1.0]}, {"x": {"a": 1}}, {"x": [2.0]}], "x", print) is None
    True
    """
    xs = [d.get(x_field) for d in docs if isinstance(d, dict) and isinstance(d.get(x_field), dict)]
    lists = sum(1 for d in docs if isinstance(d, dict) and isinstance(d.get(x_field), list))
    if not xs or len(xs) <= lists:
        return None
    schema, summary = infer_schema(xs)
    on_inferred(schema, summary)
    return schema


def log_inferred(schema: FeatureSchema, summary: str) -> None:
    """Log an inferred schema's summary and YAML (what the user saves and passes back with ``--schema``)."""
    log.warning(
        "inferred a feature schema from the first records (save it and pass --schema FILE to fix it):\n%s\n"
        "--- schema.yaml ---\n%s",
        summary,
        schema.to_yaml(),
    )
