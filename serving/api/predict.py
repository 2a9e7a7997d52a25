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

import os
import time
from typing import Any, Callable, Mapping, NamedTuple, Sequence

import numpy as np
import orjson
from fastapi import HTTPException, status

from serving.api.inputs import check_finite, parse_body, rows_to_matrix, unprocessable
from serving.api.model import ServedModel
from serving.api.schemas import BatchPredictRequest, PredictRequest
from serving.api.schemas import request_id as checked_id

__all__ = ["Answered", "answer_batch", "answer_one", "new_ids"]

UnknownFields = Callable[[Mapping[str, int]], None]


class Answered(NamedTuple):
    """What one predict request answered, for the prediction log: built after the answer, read elsewhere."""

    ids: Sequence[str]
    rows: Sequence[Any]
    model: ServedModel
    labels: np.ndarray
    probabilities: np.ndarray | None
    ts: int  # epoch ms


def new_ids(n: int) -> list[str]:
    """``n`` random (version 4) UUIDs in hex, from one ``os.urandom`` call.

    ``uuid.uuid4().hex`` costs ~2 us a row, 64-row batches ~180 us; this ~10 us.

    >>> import uuid
    >>> [uuid.UUID(i).version for i in new_ids(3)], len(set(new_ids(1000)))
    ([4, 4, 4], 1000)
    """
    if n == 1:  # the single-row request: no numpy
        b = bytearray(os.urandom(16))
        b[6], b[8] = (b[6] & 0x0F) | 0x40, (b[8] & 0x3F) | 0x80
        return [b.hex()]
    raw = np.frombuffer(os.urandom(16 * n), np.uint8).reshape(n, 16).copy()
    raw[:, 6] = (raw[:, 6] & 0x0F) | 0x40  # version 4
    raw[:, 8] = (raw[:, 8] & 0x3F) | 0x80  # the RFC 4122 variant
    text = raw.tobytes().hex()
    return [text[i : i + 32] for i in range(0, 32 * n, 32)]


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
    ident = body.id or (_header_id(request_id) if request_id is not None else new_ids(1)[0])
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
        ids = new_ids(n)
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
    preds, probabilities, _ = model.answers(labels, proba)
    payload = orjson.dumps(
        {"ids": ids, "version": model.version.number, "predictions": preds, "probabilities": probabilities}
    )
    if on_answer is not None:
        on_answer(Answered(ids, body.rows, model, labels, proba, int(time.time() * 1000)))
    return payload
