"""The feedback loop's records: a logged prediction, a label, and the training record they join into.

The API (and ``streamlearn predict``) writes one :class:`LoggedPrediction` per
answered row to the prediction-log topic; labels arrive later on a labels topic
as :class:`Label`; the daemon joins the two by ``id`` (:mod:`stream.engine.join`)
and learns the joined record, the same JSON document a labelled stream carries.
Both sides import the wire format from here, so it is written once.

A logged prediction (JSON, keyed by its id)::

    {"id": "4f1c...", "x": [0.1, 0.5] | {"country": "FR", ...}, "version": 7,
     "prediction": "click" | 1.25, "probabilities": [0.2, 0.8] | null,
     "classes": ["no", "click"] | null, "ts": 1764547200123,
     "shadow": {"9": {"prediction": ..., "probabilities": [...], "classes": [...]}}}

``x`` is the row exactly as the client sent it; ``version`` is null for a plain features record; ``ts`` is epoch milliseconds;
``classes`` names the probabilities' order (null: class ``i`` is ``i``);
``shadow`` (optional) holds what shadow versions answered for the same row.
A label: ``{"id": "4f1c...", "y": "click", "ts": 1764547260000}`` (``ts`` optional).

Examples
--------
>>> p = LoggedPrediction(id="r1", x=[0.5, 1.0], version=3, prediction=1, probabilities=[0.3, 0.7], ts=10)
>>> decode_prediction(encode_prediction(p)) == p
True
>>> decode_label(b'{"id": "r1", "y": 1}')
Label(id='r1', y=1, ts=None)
>>> joined_record(p, Label("r1", 0, 12))
b'{"id":"r1","x":[0.5,1.0],"y":0,"ts":10}'
>>> decode_label(b'{"y": 1}')
Traceback (most recent call last):
...
stream.core.feedback.FeedbackFormatError: label has no "id" (a string or an integer)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import orjson

__all__ = [
    "FeedbackFormatError",
    "Label",
    "LoggedPrediction",
    "ShadowAnswer",
    "decode_label",
    "decode_prediction",
    "encode_label",
    "encode_prediction",
    "joined_record",
    "MAX_ID_LENGTH",
]

#: Ids longer than this are refused: they would be kept in join state and dedup memory.
MAX_ID_LENGTH = 200


class FeedbackFormatError(ValueError):
    """A prediction-log or label record that cannot be read; the message is the dead-letter reason."""


@dataclass(frozen=True)
class ShadowAnswer:
    """What one shadow version answered for a logged row."""

    prediction: Any
    probabilities: list[float] | None = None
    classes: list[Any] | None = None


@dataclass(frozen=True)
class LoggedPrediction:
    """One answered row, as the prediction log carries it (see the module docstring)."""

    id: str
    x: Any
    version: int | None
    prediction: Any
    probabilities: list[float] | None = None
    classes: list[Any] | None = None
    ts: int = 0
    shadow: Mapping[int, ShadowAnswer] = field(default_factory=dict)


@dataclass(frozen=True)
class Label:
    """The true value of an event, by its id; ``ts`` in epoch ms when the sender gave one."""

    id: str
    y: Any
    ts: int | None = None


def encode_prediction(p: LoggedPrediction) -> bytes:
    doc: dict[str, Any] = {
        "id": p.id,
        "x": p.x,
        "version": p.version,
        "prediction": p.prediction,
        "probabilities": p.probabilities,
        "classes": p.classes,
        "ts": p.ts,
    }
    if p.shadow:
        doc["shadow"] = {
            str(v): {"prediction": a.prediction, "probabilities": a.probabilities, "classes": a.classes}
            for v, a in p.shadow.items()
        }
    return orjson.dumps(doc)


def encode_label(label: Label) -> bytes:
    doc: dict[str, Any] = {"id": label.id, "y": label.y}
    if label.ts is not None:
        doc["ts"] = label.ts
    return orjson.dumps(doc)


def _document(raw: bytes | None, what: str) -> dict:
    if raw is None:
        raise FeedbackFormatError(f"{what} has no value (a tombstone)")
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise FeedbackFormatError(f"{what} is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise FeedbackFormatError(f"{what} must be a JSON object, not {type(doc).__name__}")
    return doc


def _id(doc: dict, what: str) -> str:
    value = doc.get("id")
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise FeedbackFormatError(f'{what} has no "id" (a string or an integer)')
    value = str(value)
    if not value or len(value) > MAX_ID_LENGTH:
        raise FeedbackFormatError(f"{what} id must be 1 to {MAX_ID_LENGTH} characters, got {len(value)}")
    return value


#: Times beyond this many epoch ms are refused: they would not fit int64 arithmetic downstream.
MAX_TS_MS = 2**62


def _ts(doc: dict, what: str) -> int | None:
    ts = doc.get("ts")
    if ts is None:
        return None
    if isinstance(ts, bool) or not isinstance(ts, (int, float)) or not abs(ts) < MAX_TS_MS:  # NaN fails too
        raise FeedbackFormatError(f'{what} "ts" must be epoch milliseconds, got {ts!r}')
    return int(ts)


def _number(value: Any) -> bool:
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and abs(value) <= 1.7976931348623157e308
    )


def _answer(doc: dict, where: str) -> tuple[Any, list[float] | None, list | None]:
    """A document's ``prediction``, ``probabilities`` and ``classes``, their shapes checked."""
    probabilities, classes = doc.get("probabilities"), doc.get("classes")
    if probabilities is not None and (
        not isinstance(probabilities, list) or not all(_number(p) for p in probabilities)
    ):
        raise FeedbackFormatError(f'{where}: "probabilities" must be a list of numbers or null')
    if classes is not None and not isinstance(classes, list):
        raise FeedbackFormatError(f'{where}: "classes" must be a list or null')
    if classes is not None and probabilities is not None and len(classes) != len(probabilities):
        raise FeedbackFormatError(f'{where}: {len(classes)} "classes" for {len(probabilities)} probabilities')
    return doc.get("prediction"), probabilities, classes


def decode_prediction(raw: bytes | None) -> LoggedPrediction:
    """Read a prediction-log record.

    A plain features record (``{"id", "x", "ts"}``, no ``version``) reads as a
    prediction of no version: it joins with its label but scores no version.

    Raises
    ------
    FeedbackFormatError
        Not a JSON object, no usable ``id`` or ``x``, a ``version`` that is not an integer, a ``ts``
        that is not epoch ms, or ``probabilities``, ``classes`` or ``shadow`` of the wrong shape.
    """
    what = "prediction-log record"
    doc = _document(raw, what)
    ident = _id(doc, what)
    if "x" not in doc:
        raise FeedbackFormatError(f'{what} {ident!r} has no "x"')
    version = doc.get("version")
    if version is not None and (isinstance(version, bool) or not isinstance(version, int)):
        raise FeedbackFormatError(f'{what} {ident!r}: "version" must be an integer, got {version!r}')
    where = f"{what} {ident!r}"
    shadows = doc.get("shadow")
    shadows = {} if shadows is None else shadows
    if not isinstance(shadows, dict):
        raise FeedbackFormatError(f'{where}: "shadow" must be an object of version -> answer')
    shadow = {}
    for key, answer in shadows.items():
        if not (isinstance(answer, dict) and key.isdigit()):
            raise FeedbackFormatError(f'{where}: "shadow" must be an object of version -> answer')
        shadow[int(key)] = ShadowAnswer(*_answer(answer, f"{where}, shadow version {key}"))
    prediction, probabilities, classes = _answer(doc, where)
    return LoggedPrediction(
        id=ident,
        x=doc["x"],
        version=version,
        prediction=prediction,
        probabilities=probabilities,
        classes=classes,
        ts=_ts(doc, what) or 0,
        shadow=shadow,
    )


def decode_label(raw: bytes | None) -> Label:
    """Read a label record.

    Raises
    ------
    FeedbackFormatError
        Not a JSON object, no usable ``id``, no ``y`` (or ``y`` null), or a bad ``ts``.
    """
    what = "label"
    doc = _document(raw, what)
    ident = _id(doc, what)
    if doc.get("y") is None:
        raise FeedbackFormatError(f'{what} {ident!r} has no "y"')
    return Label(ident, doc["y"], _ts(doc, what))


def joined_record(prediction: LoggedPrediction, label: Label, ts: int | None = None) -> bytes:
    """The training record a joined pair becomes: the row as served, its label, the prediction's time.

    ``ts`` stands in for a prediction that carried no time of its own (``ts`` 0).
    """
    when = prediction.ts or (ts if ts is not None else 0)
    return orjson.dumps({"id": prediction.id, "x": prediction.x, "y": label.y, "ts": when})
