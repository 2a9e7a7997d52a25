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
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import repeat
from operator import itemgetter
from typing import Any, Iterator, Literal, Mapping, Sequence

import numpy as np
import orjson

from stream.core.deadletter import DeadLetter
from stream.core.errors import ConfigError
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
    n_classes: int = 2
    classes: tuple[str, ...] | None = None
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
        if self.classes is not None:
            object.__setattr__(self, "n_classes", len(self.classes))
        if self.task == "classification" and self.n_classes < 2:
            raise ConfigError(f"n_classes must be at least 2 for classification, got {self.n_classes}")
        if self.max_record_bytes <= 0 or self.max_id_chars <= 0:
            raise ConfigError("max_record_bytes and max_id_chars must be positive")

    @property
    def dimension(self) -> int | None:
        if self.feature_names is not None:
            return len(self.feature_names)
        return self.n_features


@dataclass(slots=True)
class DecodeResult:
    """Decoded events (in poll order) and the records that were dead-lettered.

    ``rows[i]`` is the poll row event ``i`` came from (so a later stage can
    dead-letter its original record). ``own_ids[i]`` says whether the record
    carried its own id; ``None`` means every one did. Events without one get
    ``topic:partition:offset``, which is unique by construction.
    """

    events: Events
    dead_letters: list[DeadLetter] = field(default_factory=list)
    rows: np.ndarray | None = None
    own_ids: np.ndarray | None = None

    def event_rows(self) -> np.ndarray:
        """``rows``, or ``0..n-1`` when every poll row became an event."""
        return self.rows if self.rows is not None else np.arange(len(self.events))


class _Reject(Exception):
    """Internal: one record is unusable; the message is the dead-letter reason."""


def _parse_ts(value: Any, fallback: int) -> int:
    if value is None:
        return fallback
    if isinstance(value, bool):
        raise _Reject(f"bad timestamp: {value!r}")
    if isinstance(value, (int, float)):
        if not math.isfinite(value) or not _TS_MIN <= value <= _TS_MAX:
            raise _Reject(f"bad timestamp: {value!r}")
        return int(value)
    if isinstance(value, str):
        try:
            parsed = _dt.datetime.fromisoformat(value)
        except ValueError:
            raise _Reject(f"bad timestamp: {value[:40]!r} is neither epoch ms nor ISO-8601") from None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=_dt.timezone.utc)
        return int(parsed.timestamp() * 1000)
    raise _Reject(f"bad timestamp: {type(value).__name__}")


class JsonCodec:
    """Decodes poll batches of JSON records; see the module docstring."""

    def __init__(self, config: CodecConfig | None = None, *, locked_dimension: int | None = None) -> None:
        self.config = config or CodecConfig()
        # The dimension in force: configured, restored from a checkpoint, or
        # locked by the first valid record.
        self._dimension = self.config.dimension or locked_dimension
        self._label_index = (
            {name: i for i, name in enumerate(self.config.classes)} if self.config.classes else None
        )
        self._y_dtype = np.int64 if self.config.task == "classification" else np.float32

    @property
    def n_features(self) -> int | None:
        """Feature dimension, or ``None`` until the first valid record fixes it."""
        return self._dimension

    def empty_events(self) -> Events:
        return Events.empty(self._dimension or 0, self._y_dtype)

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
            if self._dimension is not None:
                fast = self._decode_fast(cols)
                if fast is not None:
                    return fast
            return self._decode_slow(cols.records())

    # ------------------------------------------------------------ fast path
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
        with np.errstate(over="ignore"):  # overflow to inf is caught just below, per row
            X = X.astype(np.float32, copy=False)
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
        finite = np.isfinite(X).all(axis=1)
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
        if self._label_index is not None:
            return None  # string classes: the slow path maps them
        if y_raw.dtype.kind in "iu":
            y = y_raw.astype(np.int64)
        elif y_raw.dtype.kind == "f":
            if not np.isfinite(y_raw).all() or (y_raw != np.round(y_raw)).any():
                return None
            y = y_raw.astype(np.int64)
        else:
            return None
        if y.size and (y.min() < 0 or y.max() >= cfg.n_classes):
            return None
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
    def _decode_slow(self, records: list[RawRecord]) -> DecodeResult:
        good_records: list[RawRecord] = []
        rows: list[int] = []
        own_ids: list[bool] = []
        xs: list[list[float]] = []
        ys: list[Any] = []
        tss: list[int] = []
        ids: list[str] = []
        letters: list[DeadLetter] = []
        for row, rec in enumerate(records):
            try:
                x, y, ts, rid = self._decode_one(rec)
            except _Reject as reject:
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
            y=np.array(ys, dtype=self._y_dtype),
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

    def _decode_one(self, rec: RawRecord) -> tuple[list[float], Any, int, str | None]:
        cfg = self.config
        value = rec.value
        if value is None or len(value) == 0:
            raise _Reject("empty value: record has no payload")
        if len(value) > cfg.max_record_bytes:
            raise _Reject(f"oversize: {len(value)} bytes > limit {cfg.max_record_bytes}")
        try:
            doc = orjson.loads(value)
        except orjson.JSONDecodeError as exc:
            raise _Reject(f"bad json: {exc}") from None
        if not isinstance(doc, dict):
            raise _Reject(f"bad json: expected an object, got {type(doc).__name__}")
        x = self._features_one(doc)
        y = self._label_one(doc)
        ts = _parse_ts(doc.get(cfg.ts_field), rec.timestamp)
        rid = doc.get(cfg.id_field)
        if rid is None:
            return x, y, ts, None
        rid = str(rid)
        if len(rid) > cfg.max_id_chars:
            raise _Reject(f"bad id: {len(rid)} characters, more than {cfg.max_id_chars}")
        return x, y, ts, rid

    def _features_one(self, doc: dict) -> list[float]:
        cfg = self.config
        if cfg.x_field not in doc:
            raise _Reject(f"missing features: no {cfg.x_field!r} field")
        raw = doc[cfg.x_field]
        if isinstance(raw, dict):
            if cfg.feature_names is None:
                raise _Reject("bad features: x is an object but no feature_names are configured")
            missing = [n for n in cfg.feature_names if n not in raw]
            if missing:
                raise _Reject(f"missing feature: {missing[0]!r}")
            raw = [raw[n] for n in cfg.feature_names]
        elif not isinstance(raw, list):
            raise _Reject(f"bad features: x must be a list or object, got {type(raw).__name__}")
        # bool is an int subclass: JSON true/false count as 1/0, as numpy reads them.
        if not all(isinstance(v, (int, float)) for v in raw):
            raise _Reject("bad features: every feature must be a number")
        if self._dimension is None:
            if not raw:
                raise _Reject("wrong dimension: 0 features")
            self._dimension = len(raw)  # the first valid record locks the schema
        if len(raw) != self._dimension:
            raise _Reject(f"wrong dimension: {len(raw)} features, expected {self._dimension}")
        # Finite as float64 is not enough: 1e39 overflows to inf in float32.
        if not all(math.isfinite(v) and -_F32_MAX <= v <= _F32_MAX for v in raw):
            raise _Reject(_NON_FINITE)
        return raw

    def _label_one(self, doc: dict) -> Any:
        cfg = self.config
        y = doc.get(cfg.y_field)
        if y is None:
            raise _Reject(f"missing label: no {cfg.y_field!r} field")
        if cfg.task == "regression":
            if isinstance(y, bool) or not isinstance(y, (int, float)) or not math.isfinite(y):
                raise _Reject(f"bad label: regression target must be a finite number, got {y!r}")
            return float(y)
        if self._label_index is not None:
            if not isinstance(y, str) or y not in self._label_index:
                raise _Reject(f"bad label: {y!r} is not one of the configured classes")
            return self._label_index[y]
        if isinstance(y, bool):
            y = int(y)
        if isinstance(y, float) and y.is_integer():
            y = int(y)
        if not isinstance(y, int):
            raise _Reject(f"bad label: class label must be an integer, got {y!r}")
        if not 0 <= y < cfg.n_classes:
            raise _Reject(f"bad label: {y} is outside [0, {cfg.n_classes})")
        return y
