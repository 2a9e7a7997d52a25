"""Decode raw JSON records into columnar :class:`~stream.core.records.Events`.

A record looks like ``{"id": ..., "ts": ..., "x": [..] or {name: value}, "y": ...}``
(field names configurable). Anything that cannot be learned from -- bad JSON,
wrong dimension, a missing or out-of-range label, NaN/inf, an oversize or
empty value -- becomes a :class:`~stream.core.deadletter.DeadLetter` with its reason;
decoding never raises on bad data.

Decoding is per poll batch: a fast path builds whole arrays in one go and
checks them vectorised; only a batch that trips it is decoded record by record
(the slow path), which is also the reference the fast path is tested against.

Examples
--------
>>> from stream.core.records import RawRecord, TopicPartition
>>> codec = JsonCodec(CodecConfig(n_features=2))
>>> recs = [RawRecord("t", 0, 0, 1000, None, b'{"id": "a", "x": [1, 2], "y": 1}'),
...         RawRecord("t", 0, 1, 1001, None, b'{"x": [1], "y": 0}')]
>>> out = codec.decode({TopicPartition("t", 0): recs})
>>> out.events.X.tolist(), out.events.ids.tolist()
([[1.0, 2.0]], ['a'])
>>> out.dead_letters[0].reason
'wrong dimension: 1 features, expected 2'
"""

from __future__ import annotations

import datetime as _dt
import gc
import math
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import repeat
from operator import itemgetter
from typing import Any, Iterator, Literal, Mapping, Sequence

import numpy as np
import orjson

from stream.codec.named import NamedDecoder, infer_from_docs, log_inferred
from stream.codec.parsers import ParseError
from stream.codec.result import DecodeResult, Reject, merge_results
from stream.codec.typed_rows import TypedRows
from stream.codec.value_format import ValueFormat
from stream.core.deadletter import DeadLetter
from stream.core.errors import ConfigError, SchemaMismatchError
from stream.core.features import FeatureSchema, LabelError, LabelMap
from stream.core.poll import PollColumns, as_columns
from stream.core.records import Events, RawRecord, TopicPartition

Task = Literal["classification", "regression"]

_F32_MAX = float(np.finfo(np.float32).max)
_NON_FINITE = "non-finite feature: NaN, inf or beyond float32 range in x"
# Event times are int64 milliseconds; anything outside cannot be stored.
_TS_MIN, _TS_MAX = int(np.iinfo(np.int64).min), int(np.iinfo(np.int64).max)


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector (reference counting goes on); restore it after.

    It is re-enabled only if it was enabled on entry, so nesting and a
    caller's own ``gc.disable()`` are respected.
    """
    was_enabled = gc.isenabled()
    if was_enabled:
        gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


@dataclass(frozen=True)
class CodecConfig:
    """How to read features, label, event time and id out of a JSON record.

    ``n_features=None`` locks the dimension to the first valid record's (the
    lock is part of the checkpoint). ``feature_names`` is required when ``x``
    is an object; it fixes the column order. ``classes`` maps string labels to
    indices; otherwise classification labels must be integers in
    ``[0, n_classes)``.
    """

    x_field: str = "x"
    y_field: str = "y"
    ts_field: str = "ts"
    id_field: str = "id"
    n_features: int | None = None
    feature_names: tuple[str, ...] | None = None
    task: Task = "classification"
    #: ``None``: inferred from the labels and grown when a new class appears.
    n_classes: int | None = 2
    classes: tuple[str, ...] | None = None
    #: Named mixed-type fields (see :mod:`stream.core.features`); ``None`` with object
    #: ``x`` and no ``feature_names``: inferred from the first poll.
    schema: FeatureSchema | None = None
    #: How record values are written: JSON (``None``), or Avro/Protobuf (:mod:`stream.codec.formats`).
    value_format: ValueFormat | None = None
    max_record_bytes: int = 1 << 20
    #: Longer ids are refused: numpy pads every id of a batch to the longest,
    #: so one megabyte-long id would cost gigabytes.
    max_id_chars: int = 256

    def __post_init__(self) -> None:
        if self.task not in ("classification", "regression"):
            raise ConfigError(f"task must be 'classification' or 'regression', got {self.task!r}")
        if self.n_features is not None and self.n_features <= 0:
            raise ConfigError(f"n_features must be positive, got {self.n_features}")
        if self.feature_names is not None:
            if self.n_features not in (None, len(self.feature_names)):
                raise ConfigError("n_features disagrees with the number of feature_names")
        if self.schema is not None:
            if self.feature_names is not None:
                raise ConfigError("give either a feature schema or feature_names, not both")
            if self.n_features not in (None, self.schema.width):
                raise ConfigError(
                    f"n_features {self.n_features} disagrees with the schema's {self.schema.width}"
                )
        if self.classes is not None:
            object.__setattr__(self, "n_classes", len(self.classes))
        if self.task == "classification" and self.n_classes is not None and self.n_classes < 2:
            raise ConfigError(f"n_classes must be at least 2 for classification, got {self.n_classes}")
        if self.max_record_bytes <= 0 or self.max_id_chars <= 0:
            raise ConfigError("max_record_bytes and max_id_chars must be positive")

    @property
    def dimension(self) -> int | None:
        if self.schema is not None:
            return self.schema.width
        if self.feature_names is not None:
            return len(self.feature_names)
        return self.n_features


def _parse_ts(value: Any, fallback: int) -> int:
    if value is None:
        return fallback
    if isinstance(value, bool):
        raise Reject(f"bad timestamp: {value!r}")
    if isinstance(value, (int, float)):
        if not math.isfinite(value) or not _TS_MIN <= value <= _TS_MAX:
            raise Reject(f"bad timestamp: {value!r}")
        return int(value)
    if isinstance(value, str):
        try:
            parsed = _dt.datetime.fromisoformat(value)
        except ValueError:
            raise Reject(f"bad timestamp: {value[:40]!r} is neither epoch ms nor ISO-8601") from None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=_dt.timezone.utc)
        return int(parsed.timestamp() * 1000)
    raise Reject(f"bad timestamp: {type(value).__name__}")


class JsonCodec:
    """Decodes poll batches of JSON records; see the module docstring."""

    def __init__(
        self,
        config: CodecConfig | None = None,
        *,
        state: Mapping[str, Any] | None = None,
        locked_dimension: int | None = None,
    ) -> None:
        """``state``: a checkpoint's :meth:`schema_info` (the locks and maps learned so far)."""
        self.config = config or CodecConfig()
        state = state or {}
        # The dimension in force: configured, restored from a checkpoint, or
        # locked by the first valid record.
        self._dimension = self.config.dimension or locked_dimension or state.get("n_features")
        self.labels = restore_labels(self.config, state.get("labels"))
        self.y_dtype = np.int64 if self.config.task == "classification" else np.float32
        #: Fields met in records but not in the schema, by name (reported, never learned).
        self.unknown_fields: Counter = Counter(state.get("unknown_fields") or {})
        schema = restore_schema(self.config.schema, state.get("features"))
        self._named = NamedDecoder(self, schema) if schema is not None else None
        #: Called with (schema, summary) when a schema is inferred; logs them by default.
        self.on_inferred = log_inferred
        vf = self.config.value_format
        self._parser = _parser_for(vf) if vf is not None and vf.record_format != "json" else None
        self._typed: tuple[tuple, TypedRows | None] | None = None

    @property
    def n_features(self) -> int | None:
        """Feature dimension, or ``None`` until the first valid record fixes it."""
        return self._dimension

    @property
    def schema(self) -> FeatureSchema | None:
        """The feature schema in force (declared, restored or inferred), or ``None`` for numeric rows."""
        return self._named.schema if self._named is not None else None

    @property
    def n_classes(self) -> int | None:
        """Classes seen or configured (at least 2 once any label was seen); ``None`` for regression."""
        if self.labels is None:
            return None
        return max(2, self.labels.n_classes)

    def schema_info(self) -> dict[str, Any]:
        """What a prediction needs to know about the input: stored in checkpoints and every published version."""
        cfg, schema, labels = self.config, self.schema, self.labels
        return {
            "n_features": self._dimension,
            "task": cfg.task,
            "n_classes": self.n_classes,
            "feature_names": list(cfg.feature_names) if cfg.feature_names is not None else None,
            "classes": labels.classes if labels is not None else None,
            "features": schema.to_dict() if schema is not None else None,
            "labels": labels.to_dict() if labels is not None else None,
            "unknown_fields": dict(self.unknown_fields.most_common(64)),
        }

    def empty_events(self) -> Events:
        return Events.empty(self._dimension or 0, self.y_dtype)

    # ------------------------------------------------------------------ API
    def decode(self, poll: PollColumns | Mapping[TopicPartition, Sequence[RawRecord]]) -> DecodeResult:
        """Decode every record of one poll; bad records become dead letters.

        ``poll`` is a kafka-python-shaped mapping or its
        :class:`~stream.core.poll.PollColumns`; events come out in poll order.
        """
        cols = as_columns(poll)
        if not len(cols):
            return DecodeResult(self.empty_events())
        # The cyclic GC is paused while a poll is decoded: orjson builds tens of
        # thousands of short-lived containers per poll (a dict and a list per
        # record), and letting them trigger collections -- each of which walks
        # every young object and, now and then, the whole heap (torch's included)
        # -- cost more than orjson itself. Nothing decoded here forms a cycle, so
        # reference counting frees all of it; collection simply resumes after.
        with _gc_paused():
            if self._named is not None or self._may_be_named():
                named = self._decode_named(cols)
                if named is not None:
                    return named
            if self._dimension is not None and self._parser is None:
                return self._decode_numeric(cols)
            return self._decode_slow(cols.records())

    # ------------------------------------------------------------ fast paths
    def _decode_numeric(self, cols: PollColumns) -> DecodeResult:
        """Numeric rows of a known dimension, in up to three tiers, each judging only what the one before left.

        1. :class:`~stream.codec.typed_rows.TypedRows`: msgspec with the closed record
           type, for the rows that fit it exactly (the common case: all of them);
        2. :meth:`_decode_fast`: orjson over the rest as a batch (records with extra
           fields, float labels, ISO times...), all or nothing;
        3. :meth:`_decode_slow`: record by record, the reference, which names every bad record.
        """
        typed = self._typed_rows()
        if typed is not None:
            part = typed.decode(cols, max_record_bytes=self.config.max_record_bytes)
            left = part.leftover
            if not len(left):
                return part.result
            if len(left) < len(cols):
                rest = cols.take(left)
                fast = self._decode_fast(rest)
                return merge_results(
                    part.result, fast if fast is not None else self._decode_slow(rest.records()), left
                )
        fast = self._decode_fast(cols)
        return fast if fast is not None else self._decode_slow(cols.records())

    def _typed_rows(self) -> TypedRows | None:
        """The typed decoder for the current dimension and classes (rebuilt when a class is added)."""
        if self.labels is not None and self.labels.named is not False:
            return None  # string classes, or none seen yet: the label map is grown on the reference path
        key = (self._dimension, None if self.labels is None else self.labels.n_classes)
        if self._typed is None or self._typed[0] != key:
            self._typed = key, TypedRows.build(self.config, self._dimension, key[1])
        return self._typed[1]

    def _decode_fast(self, cols: PollColumns) -> DecodeResult | None:
        """All-good polls in a few C-level passes; ``None`` means use the slow path.

        Every column is read with ``map`` over the whole poll (no per-record
        Python code); any surprise -- bad JSON, a missing field, a string
        where a number belongs -- raises or shows in a dtype, and the poll
        goes to the slow path, which is the reference this must agree with.
        """
        cfg = self.config
        values = cols.values
        len(values)
        try:
            # A None value makes len() raise: the slow path names it.
            if max(map(len, values)) > cfg.max_record_bytes:
                return None
            docs = list(map(orjson.loads, values))
            # A document that is not an object fails itemgetter (TypeError).
            xs = list(map(itemgetter(cfg.x_field), docs))
            ys = list(map(itemgetter(cfg.y_field), docs))
            if cfg.feature_names is not None:
                names = cfg.feature_names
                xs = [[x[name] for name in names] for x in xs]
            X = np.array(xs)
            y_raw = np.array(ys)
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError, OverflowError):
            return None
        # Without an explicit dtype numpy reveals strings/None (kind U/O), which
        # the slow path rejects; casting first would silently parse "1.5".
        if X.dtype.kind not in "biuf":
            return None
        # Judged as float64, as the reference does: 3.40282352e38 is beyond float32's
        # range but would round to a finite float32. Out-of-range rows are dropped below.
        X64 = X.astype(np.float64, copy=False)
        finite = (np.abs(X64) <= _F32_MAX).all(axis=-1)
        with np.errstate(over="ignore"):
            X = X64.astype(np.float32)
        if X.ndim != 2 or X.shape[1] != self._dimension or y_raw.ndim != 1:
            return None
        y = self._labels_fast(y_raw)
        if y is None:
            return None
        ts = self._timestamps_fast(docs, cols)
        if ts is None:
            return None
        ids, own_ids = self._ids_fast(docs, cols)
        if ids is None:
            return None
        events = Events(
            X=X, y=y, ts=ts, ids=ids, topic=cols.topic, partition=cols.partition, offset=cols.offset
        )
        # Non-finite features are a per-row defect: drop just those rows.
        if finite.all():
            return DecodeResult(events, own_ids=own_ids)
        bad_rows = np.flatnonzero(~finite)
        letters = [DeadLetter(cols.record(i), _NON_FINITE) for i in bad_rows]
        return DecodeResult(
            events.take(finite),
            letters,
            rows=np.flatnonzero(finite),
            own_ids=None if own_ids is None else own_ids[finite],
        )

    def _labels_fast(self, y_raw: np.ndarray) -> np.ndarray | None:
        cfg = self.config
        if cfg.task == "regression":
            if y_raw.dtype.kind not in "iuf" or not np.isfinite(y_raw).all():
                return None
            return y_raw.astype(np.float32)
        if self.labels.named is not False or (self.labels.fixed and y_raw.dtype.kind not in "iuf"):
            return None  # named classes (or none seen yet): the slow path maps them, growing the map
        if y_raw.dtype.kind in "iu":
            y = y_raw.astype(np.int64)
        elif y_raw.dtype.kind == "f":
            if not np.isfinite(y_raw).all() or (y_raw != np.round(y_raw)).any():
                return None
            y = y_raw.astype(np.int64)
        else:
            return None
        if y.size and (y.min() < 0 or y.max() >= self.labels.n_classes):
            return None  # a new class (the slow path grows the map) or a bad label (it names it)
        return y

    def _timestamps_fast(self, docs: list[dict], cols: PollColumns) -> np.ndarray | None:
        raw = list(map(dict.get, docs, repeat(self.config.ts_field)))
        kinds = set(map(type, raw))
        if kinds == {int}:
            try:
                return np.array(raw, dtype=np.int64)
            except OverflowError:  # beyond int64: the slow path names it
                return None
        if kinds == {type(None)}:
            return cols.timestamps()
        return None

    def _ids_fast(self, docs: list[dict], cols: PollColumns) -> tuple[np.ndarray | None, np.ndarray | None]:
        raw = list(map(dict.get, docs, repeat(self.config.id_field)))
        if None not in raw:
            # str() of a str is the str itself: cheap for the common case.
            strs = list(map(str, raw))
            if max(map(len, strs)) > self.config.max_id_chars:
                return None, None  # the slow path names the over-long id
            return np.array(strs, dtype=str), None
        topics, partitions, offsets = cols.topic.tolist(), cols.partition.tolist(), cols.offset.tolist()
        strs = [
            str(v) if v is not None else f"{t}:{p}:{o}"
            for v, t, p, o in zip(raw, topics, partitions, offsets)
        ]
        if max(map(len, strs)) > self.config.max_id_chars:
            return None, None
        return np.array(strs, dtype=str), np.array([v is not None for v in raw], dtype=bool)

    # ------------------------------------------------------------ slow path
    def _decode_slow(self, records: list[RawRecord], docs: list[dict | str] | None = None) -> DecodeResult:
        if docs is None:
            docs = [self._parse(rec) for rec in records]
        good_records: list[RawRecord] = []
        rows: list[int] = []
        own_ids: list[bool] = []
        xs: list[list[float]] = []
        ys: list[Any] = []
        tss: list[int] = []
        ids: list[str] = []
        letters: list[DeadLetter] = []
        for row, (rec, doc) in enumerate(zip(records, docs)):
            try:
                x, y, ts, rid = self._decode_one(rec, doc)
            except Reject as reject:
                letters.append(DeadLetter(rec, str(reject)))
                continue
            except RecursionError:  # orjson refuses deep nesting itself; this guards any other walk
                letters.append(DeadLetter(rec, "bad json: nested too deeply"))
                continue
            good_records.append(rec)
            rows.append(row)
            own_ids.append(rid is not None)
            xs.append(x)
            ys.append(y)
            tss.append(ts)
            ids.append(rid if rid is not None else f"{rec.topic}:{rec.partition}:{rec.offset}")
        if not good_records:
            return DecodeResult(self.empty_events(), letters)
        n = len(good_records)
        events = Events(
            X=np.array(xs, dtype=np.float32).reshape(n, self._dimension),
            y=np.array(ys, dtype=self.y_dtype),
            ts=np.array(tss, dtype=np.int64),
            ids=np.array(ids, dtype=str),
            topic=np.array([r.topic for r in good_records], dtype=str),
            partition=np.array([r.partition for r in good_records], dtype=np.int32),
            offset=np.array([r.offset for r in good_records], dtype=np.int64),
        )
        own = np.array(own_ids, dtype=bool)
        return DecodeResult(
            events, letters, rows=np.array(rows, dtype=np.int64), own_ids=None if own.all() else own
        )

    def _decode_one(self, rec: RawRecord, doc: dict | str) -> tuple[list[float], Any, int, str | None]:
        if isinstance(doc, str):
            raise Reject(doc)
        x = self._features_one(doc)
        y = self._label_one(doc)
        ts, rid = self.envelope(rec, doc)
        return x, y, ts, rid

    def _features_one(self, doc: dict) -> list[float]:
        cfg = self.config
        if cfg.x_field not in doc:
            raise Reject(f"missing features: no {cfg.x_field!r} field")
        raw = doc[cfg.x_field]
        if isinstance(raw, dict):
            if cfg.feature_names is None:
                raise Reject("bad features: x is an object but no feature_names are configured")
            missing = [n for n in cfg.feature_names if n not in raw]
            if missing:
                raise Reject(f"missing feature: {missing[0]!r}")
            raw = [raw[n] for n in cfg.feature_names]
        elif not isinstance(raw, list):
            raise Reject(f"bad features: x must be a list or object, got {type(raw).__name__}")
        # bool is an int subclass: JSON true/false count as 1/0, as numpy reads them.
        if not all(isinstance(v, (int, float)) for v in raw):
            raise Reject("bad features: every feature must be a number")
        if self._dimension is None:
            if not raw:
                raise Reject("wrong dimension: 0 features")
            self._dimension = len(raw)  # the first valid record locks the schema
        if len(raw) != self._dimension:
            raise Reject(f"wrong dimension: {len(raw)} features, expected {self._dimension}")
        # Finite as float64 is not enough: 1e39 overflows to inf in float32.
        if not all(math.isfinite(v) and -_F32_MAX <= v <= _F32_MAX for v in raw):
            raise Reject(_NON_FINITE)
        return raw

    def _label_one(self, doc: dict) -> Any:
        cfg = self.config
        y = doc.get(cfg.y_field)
        if y is None:
            raise Reject(f"missing label: no {cfg.y_field!r} field")
        if cfg.task == "regression":
            if isinstance(y, bool) or not isinstance(y, (int, float)) or not math.isfinite(y):
                raise Reject(f"bad label: regression target must be a finite number, got {y!r}")
            return float(y)
        try:
            return self.labels.index(y)
        except LabelError as exc:
            raise Reject(str(exc)) from None

    # ------------------------------------------------------ named fields
    def label(self, doc: dict) -> Any:
        """The class index (growing the label map) or target of ``doc``; :class:`Reject` if unusable."""
        return self._label_one(doc)

    def envelope(self, rec: RawRecord, doc: dict) -> tuple[int, str | None]:
        """``(event time, own id or None)`` of a parsed record; :class:`Reject` if unusable."""
        cfg = self.config
        ts = _parse_ts(doc.get(cfg.ts_field), rec.timestamp)
        rid = doc.get(cfg.id_field)
        if rid is None:
            return ts, None
        rid = str(rid)
        if len(rid) > cfg.max_id_chars:
            raise Reject(f"bad id: {len(rid)} characters, more than {cfg.max_id_chars}")
        return ts, rid

    def _may_be_named(self) -> bool:
        """No schema, dimension or feature names yet: the first poll decides whether ``x`` is named."""
        return self._dimension is None and self.config.feature_names is None

    def _decode_named(self, cols: PollColumns) -> DecodeResult | None:
        """The named-field path; ``None`` when there is no schema and no record suggests one."""
        records = cols.records()
        docs = self._parse_all(records)
        if self._named is None:
            schema = infer_from_docs(docs, self.config.x_field, self.on_inferred)
            if schema is None:
                return None  # numeric rows: the dimension is locked as before
            self._named = NamedDecoder(self, schema)
            self._dimension = schema.width
        return self._named.decode(records, docs)

    def _parse_all(self, records: list[RawRecord]) -> list[dict | str]:
        """Every record's object or reason: one C-level pass when all are good JSON objects, else record by record."""
        if self._parser is None:
            try:
                values = [rec.value for rec in records]
                # len(None) raises TypeError: a tombstone takes the per-record path, which names it.
                if min(map(len, values)) > 0 and max(map(len, values)) <= self.config.max_record_bytes:
                    docs = list(map(orjson.loads, values))
                    if all(type(doc) is dict for doc in docs):
                        return docs
            except (orjson.JSONDecodeError, TypeError):
                pass
        return [self._parse(rec) for rec in records]

    def _parse(self, rec: RawRecord) -> dict | str:
        """The record's object, or the reason it has none.

        A Schema Registry that cannot be reached is not the record's fault:
        :class:`~stream.codec.schema_registry.RegistryUnreachable` propagates, and the
        engine retries the poll.
        """
        value = rec.value
        if value is None or len(value) == 0:
            return "empty value: record has no payload"
        if len(value) > self.config.max_record_bytes:
            return f"oversize: {len(value)} bytes > limit {self.config.max_record_bytes}"
        if self._parser is not None:
            try:
                return self._parser.parse(value)
            except ParseError as exc:
                return exc.reason
        try:
            doc = orjson.loads(value)
        except orjson.JSONDecodeError as exc:
            return f"bad json: {exc}"
        if not isinstance(doc, dict):
            return f"bad json: expected an object, got {type(doc).__name__}"
        return doc


def restore_labels(config: CodecConfig, saved: Mapping[str, Any] | None) -> LabelMap | None:
    """The label map in force: the configured classes (fixed), else a checkpoint's, else a new one that grows."""
    if config.task != "classification":
        return None
    if config.classes is not None:
        return LabelMap(config.classes, fixed=True)
    if config.n_classes is not None:
        return LabelMap(n_classes=config.n_classes, fixed=True)
    return LabelMap.from_dict(saved) if saved else LabelMap()


def restore_schema(declared: FeatureSchema | None, saved: Mapping[str, Any] | None) -> FeatureSchema | None:
    """The feature schema in force: declared and checkpointed must agree (the model's shape depends on it)."""
    restored = FeatureSchema.from_dict(saved) if saved else None
    if declared is not None and restored is not None and declared != restored:
        raise SchemaMismatchError(
            "the checkpoint was learned with a different feature schema than --schema gives; "
            "use a new --checkpoint-dir, or the checkpoint's schema (streamlearn inspect shows it)"
        )
    return declared or restored


def _parser_for(value_format: ValueFormat) -> Any:
    # Imported only when a binary format is configured: the parsers pull in fastavro,
    # protobuf and an HTTP client, which a JSON stream never needs.
    from stream.codec.formats import parser_for

    return parser_for(value_format)
