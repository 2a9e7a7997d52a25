"""The predict endpoints' work, from body bytes to answer bytes: shared by the routes and the fast path.

:func:`answer_one` and :func:`answer_batch` validate the body (pydantic's
Rust JSON parser, straight from the bytes), fetch the served model, encode the
rows, predict and build the JSON answer with orjson. They raise what the
routes answer with -- :class:`~fastapi.exceptions.RequestValidationError` and
``HTTPException`` (422, 413, or 503 from ``served``) -- so the FastAPI routes
(:mod:`serving.api.app`) and the pure-ASGI fast path
(:mod:`serving.api.fast_path`) give the same bytes for the same body.

Every answered row has an id: the body's (``"id"``, ``"ids"``), else the
``X-Request-Id`` header's (single row), else a generated uuid4 hex.

Side effects are the callbacks passed in, and only for a request answered
200: ``on_unknown`` hears of unknown named fields, ``on_rows`` of the rows
answered, ``on_answer`` of what was answered (the prediction log, once the
answer is built: :class:`Answered`).

Examples
--------
>>> from learners.neural.learner import TorchLearner
>>> from serving.api.model import ServedModel
>>> from serving.registry.versions import Version
>>> model = ServedModel.from_state(Version(number=4), TorchLearner(n_features=2, device="cpu").state_dict())
>>> answer_one(b'{"x": [0.5, 1.0], "id": "r-1"}', lambda: model)[:37]
b'{"id":"r-1","version":4,"prediction":'
>>> answer_one(b'{"x": [0.5, 1.0]}', lambda: model, request_id="from-header")[:20]
b'{"id":"from-header",'
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Callable, Mapping, NamedTuple, Sequence

import numpy as np
import orjson
from fastapi import HTTPException, status

from serving.api.inputs import check_finite, parse_body, rows_to_matrix, unprocessable
from serving.api.model import ServedModel
from serving.api.schemas import BatchPredictRequest, PredictRequest
from serving.api.schemas import request_id as checked_id

__all__ = ["Answered", "answer_batch", "answer_one"]

UnknownFields = Callable[[Mapping[str, int]], None]


class Answered(NamedTuple):
    """What one predict request answered, for the prediction log: built after the answer, read elsewhere."""

    ids: Sequence[str]
    rows: Sequence[Any]
    model: ServedModel
    labels: np.ndarray
    probabilities: np.ndarray | None
    ts: int  # epoch ms


def _new_id() -> str:
    return uuid.uuid4().hex


def _header_id(value: str) -> str:
    try:
        return checked_id(value)
    except ValueError as exc:
        raise unprocessable(("header", "x-request-id"), str(exc)) from None


def answer_one(
    raw: bytes,
    served: Callable[[], ServedModel],
    on_unknown: UnknownFields | None = None,
    on_rows: Callable[[int], None] | None = None,
    *,
    request_id: str | None = None,
    on_answer: Callable[[Answered], None] | None = None,
) -> bytes:
    """The ``/predict`` answer to body ``raw`` (one row), predicted by the model ``served()`` returns.

    ``request_id`` is the ``X-Request-Id`` header, used when the body has no ``id``.
    """
    body = parse_body(PredictRequest, raw)
    ident = body.id or (_header_id(request_id) if request_id is not None else _new_id())
    model = served()
    X = rows_to_matrix([body.x], model, ("body", "x"), on_unknown)
    labels, proba = model.predict(X)
    check_finite(labels if proba is None else proba, ("body", "x"), model, X)
    if on_rows is not None:
        on_rows(1)
    if proba is None:
        payload = orjson.dumps(
            {
                "id": ident,
                "version": model.version.number,
                "prediction": float(labels[0]),
                "probabilities": None,
            }
        )
    else:
        payload = orjson.dumps(
            {
                "id": ident,
                "version": model.version.number,
                "prediction": model.label(int(labels[0])),
                "probabilities": proba[0].tolist(),
            }
        )
    if on_answer is not None:
        on_answer(Answered((ident,), (body.x,), model, labels, proba, int(time.time() * 1000)))
    return payload


def answer_batch(
    raw: bytes,
    served: Callable[[], ServedModel],
    max_rows: int,
    on_unknown: UnknownFields | None = None,
    on_rows: Callable[[int], None] | None = None,
    *,
    on_answer: Callable[[Answered], None] | None = None,
) -> bytes:
    """The ``/predict/batch`` answer to body ``raw`` (at most ``max_rows`` rows; more is 413)."""
    body = parse_body(BatchPredictRequest, raw)
    model = served()
    n = len(body.rows)
    if n > max_rows:
        raise HTTPException(
            status.HTTP_413_CONTENT_TOO_LARGE,
            detail=f"{n} rows is more than the maximum of {max_rows} per request; split the batch",
        )
    if body.ids is None:
        ids = [_new_id() for _ in range(n)]
    elif len(body.ids) != n:
        raise unprocessable(
            ("body", "ids"), f"{len(body.ids)} ids for {n} rows: send one id per row, or none"
        )
    else:
        ids = body.ids
    if n == 0:
        return orjson.dumps(
            {"ids": [], "version": model.version.number, "predictions": [], "probabilities": None}
        )
    X = rows_to_matrix(body.rows, model, ("body", "rows"), on_unknown)
    labels, proba = model.predict(X)
    check_finite(labels if proba is None else proba, ("body", "rows"), model, X)
    if on_rows is not None:
        on_rows(n)
    if proba is None:
        preds = labels.astype(float).tolist()
        payload = orjson.dumps(
            {"ids": ids, "version": model.version.number, "predictions": preds, "probabilities": None}
        )
    else:
        classes = model.classes
        preds = [classes[i] for i in labels] if classes else labels.tolist()
        payload = orjson.dumps(
            {
                "ids": ids,
                "version": model.version.number,
                "predictions": preds,
                "probabilities": proba.tolist(),
            }
        )
    if on_answer is not None:
        on_answer(Answered(ids, body.rows, model, labels, proba, int(time.time() * 1000)))
    return payload
