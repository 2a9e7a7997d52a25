"""Feature records -> logged predictions, one poll at a time: the work of ``streamlearn predict`` without Kafka.

A features record is a training record without its label
(``{"id": ..., "x": [...] or {...}, "ts": ...}``; a ``y`` is ignored). Each is
read by :func:`read_feature`, then :func:`predict_rows` predicts a whole poll as
one batch with the :class:`~serving.api.model.ServedModel` it is given and
checks every row exactly as the API does (the request schema's strict numbers,
then :func:`~serving.api.inputs.rows_to_matrix` and
:func:`~serving.api.inputs.check_finite`), so a row the API would answer with
422 is rejected here with the same message, as a dead-letter reason. Each
answered row becomes a :class:`~stream.core.feedback.LoggedPrediction` -- the
prediction log's format, which the daemon joins with labels -- written by
:func:`output_record` keyed by the input record's key (its id when keyless).

Examples
--------
>>> from learners.neural.learner import TorchLearner
>>> from serving.registry.versions import Version
>>> from stream.core.records import RawRecord
>>> model = ServedModel.from_state(Version(number=4), TorchLearner(n_features=2, device="cpu").state_dict())
>>> recs = [RawRecord("f", 0, 0, 1000, None, b'{"id": "a", "x": [0.5, 1.0], "ts": 7}'),
...         RawRecord("f", 0, 1, 1000, b"k", b'{"id": "b", "x": [1, 2, 3]}'),
...         RawRecord("f", 0, 2, 1000, None, b'{oops')]
>>> rows, bad = read_features(recs)
>>> [letter.reason_kind for letter in bad]
['bad json']
>>> out = predict_rows(model, rows)
>>> [(p.id, p.version, p.ts, len(p.probabilities)) for _, p in out.answered]
[('a', 4, 7, 2)]
>>> out.rejected[0].reason
'bad row: expected 2 features, got 3 (model version 4)'
>>> key, value = output_record(*out.answered[0])
>>> key, value[:30]
(b'a', b'{"id":"a","x":[0.5,1.0],"versi')
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Sequence

import numpy as np
import orjson
from fastapi import HTTPException
from fastapi.exceptions import RequestValidationError
from pydantic import TypeAdapter, ValidationError

from serving.api.inputs import body_errors, check_finite, rows_to_matrix
from serving.api.model import ServedModel
from serving.api.schemas import Row
from stream.core.deadletter import DeadLetter
from stream.core.feedback import MAX_ID_LENGTH, LoggedPrediction, encode_prediction
from stream.core.records import RawRecord

__all__ = ["FeatureRow", "Outcome", "output_record", "predict_rows", "read_feature", "read_features"]

#: The API's row schema: strict numbers finite in float32, or named fields of JSON scalars.
_ROW = TypeAdapter(Row)


@dataclass(frozen=True)
class FeatureRow:
    """One readable features record: its id, its row as sent, its time (epoch ms) and where it came from."""

    id: str
    x: Any
    ts: int
    record: RawRecord = field(repr=False)


@dataclass
class Outcome:
    """One poll's predictions (row, logged prediction) and its rejected rows as dead letters."""

    answered: list[tuple[FeatureRow, LoggedPrediction]] = field(default_factory=list)
    rejected: list[DeadLetter] = field(default_factory=list)


def read_feature(rec: RawRecord, now_ms: int | None = None) -> FeatureRow | str:
    """``rec`` as a :class:`FeatureRow`, or the reason it cannot be one (a dead-letter reason).

    The id is the record's ``id`` (a string or an integer), else
    ``topic:partition:offset`` as ``streamlearn run`` names an id-less event;
    the time is its ``ts`` (epoch ms or ISO-8601), else the Kafka timestamp, else now.

    >>> read_feature(RawRecord("f", 0, 3, 5, None, b'{"x": {"country": "FR"}}'))
    FeatureRow(id='f:0:3', x={'country': 'FR'}, ts=5)
    >>> read_feature(RawRecord("f", 0, 3, 5, None, b'{"id": "a", "x": ["1"]}'))
    'bad row: x.0: Input should be a valid number'
    """
    value = rec.value
    if not value:
        return "empty value: record has no payload"
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        return f"bad json: {exc}"
    if not isinstance(doc, dict):
        return f"bad json: expected an object, got {type(doc).__name__}"
    if "x" not in doc:
        return "missing features: no 'x' field"
    try:
        x = _ROW.validate_python(doc["x"])
    except ValidationError as exc:
        first = body_errors(exc.errors(include_input=False, include_url=False))[0]
        where = ".".join(str(part) for part in first["loc"][1:])
        return f"bad row: x{'.' + where if where else ''}: {first['msg']}"
    ident = doc.get("id")
    if ident is None:
        ident = f"{rec.topic}:{rec.partition}:{rec.offset}"
    elif isinstance(ident, bool) or not isinstance(ident, (str, int)):
        return f"bad id: must be a string or an integer, got {type(ident).__name__}"
    ident = str(ident)
    if not ident or len(ident) > MAX_ID_LENGTH:
        return f"bad id: must be 1 to {MAX_ID_LENGTH} characters, got {len(ident)}"
    return FeatureRow(ident, x, _time_of(doc.get("ts"), rec.timestamp, now_ms), rec)


def _time_of(ts: Any, record_ts: int, now_ms: int | None) -> int:
    """Epoch ms of the record's ``ts`` (a number, or ISO-8601 as ``run`` reads it), else the fallbacks.

    A ``ts`` that cannot be read is no reason to refuse a prediction: the row
    is still answered, stamped with the Kafka time.
    """
    if isinstance(ts, (int, float)) and not isinstance(ts, bool) and math.isfinite(ts) and abs(ts) < 2**62:
        return int(ts)
    if isinstance(ts, str):
        try:
            parsed = datetime.fromisoformat(ts)
        except ValueError:
            parsed = None
        if parsed is not None:
            return int((parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)).timestamp() * 1000)
    if record_ts is not None and record_ts >= 0:
        return int(record_ts)
    return now_ms if now_ms is not None else int(time.time() * 1000)


def read_features(records: Sequence[RawRecord]) -> tuple[list[FeatureRow], list[DeadLetter]]:
    """Every record of a poll read (:func:`read_feature`): the rows, and the unreadable ones as dead letters."""
    now_ms = int(time.time() * 1000)
    rows, letters = [], []
    for rec in records:
        row = read_feature(rec, now_ms)
        if isinstance(row, FeatureRow):
            rows.append(row)
        else:
            letters.append(DeadLetter(rec, row))
    return rows, letters


def _reason(exc: HTTPException | RequestValidationError) -> str:
    """The API's 422 message for one row, as a dead-letter reason (``bad row: <msg>``, with the field)."""
    detail = exc.errors() if isinstance(exc, RequestValidationError) else exc.detail
    first = detail[0] if isinstance(detail, list) and detail else {"loc": (), "msg": str(detail)}
    # The loc starts ("body", "x"): what follows names the field, when there is one.
    field_path = ".".join(str(part) for part in tuple(first.get("loc", ()))[2:])
    return f"bad row: {first['msg']}" + (f" (field {field_path})" if field_path else "")


def predict_rows(model: ServedModel, rows: Sequence[FeatureRow]) -> Outcome:
    """Predict ``rows`` as one batch with ``model``; rows it cannot take are rejected, one reason each.

    The whole batch is encoded at once (the API's batch path); only when that
    fails are the rows encoded one by one, to find which ones fail and why.
    """
    out = Outcome()
    if not rows:
        return out
    xs = [row.x for row in rows]
    try:
        X = rows_to_matrix(xs, model, ("body", "rows"))
        kept = list(rows)
    except (HTTPException, RequestValidationError):
        kept, parts = [], []
        for row in rows:
            try:
                parts.append(rows_to_matrix([row.x], model, ("body", "x")))
                kept.append(row)
            except (HTTPException, RequestValidationError) as exc:
                out.rejected.append(DeadLetter(row.record, _reason(exc)))
        if not kept:
            return out
        X = np.concatenate(parts)
    labels, proba = model.predict(X)
    values = (labels if proba is None else proba).reshape(len(kept), -1)
    finite = np.isfinite(values).all(axis=1)
    predictions, probabilities, classes = model.answers(labels, proba)
    version = model.version.number
    for i, row in enumerate(kept):
        if not finite[i]:
            try:
                check_finite(values[i : i + 1], ("body", "x"), model, X[i : i + 1])
            except HTTPException as exc:
                out.rejected.append(DeadLetter(row.record, _reason(exc)))
            continue
        answer = LoggedPrediction(
            row.id,
            row.x,
            version,
            predictions[i],
            None if probabilities is None else probabilities[i],
            classes,
            row.ts,
        )
        out.answered.append((row, answer))
    return out


def output_record(row: FeatureRow, prediction: LoggedPrediction) -> tuple[bytes, bytes]:
    """``(key, value)`` of the prediction record: the input's key (its id when keyless), the logged prediction."""
    key = row.record.key if row.record.key is not None else row.id.encode("utf-8")
    return key, encode_prediction(prediction)
