"""The predict endpoints' work, from body bytes to answer bytes: shared by the routes and the fast path.

:func:`answer_one` and :func:`answer_batch` validate the body (pydantic's
Rust JSON parser, straight from the bytes), fetch the served model, encode the
rows, predict and build the JSON answer with orjson. They raise what the
routes answer with -- :class:`~fastapi.exceptions.RequestValidationError` and
``HTTPException`` (422, 413, or 503 from ``served``) -- so the FastAPI routes
(:mod:`serving.api.app`) and the pure-ASGI fast path
(:mod:`serving.api.fast_path`) give the same bytes for the same body.

Side effects are the two counters passed in, and only as the routes had them:
``on_unknown`` hears of unknown named fields, ``on_rows`` of the rows answered.

Examples
--------
>>> from learners.neural.learner import TorchLearner
>>> from serving.api.model import ServedModel
>>> from serving.registry.versions import Version
>>> model = ServedModel.from_state(Version(number=4), TorchLearner(n_features=2, device="cpu").state_dict())
>>> answer_one(b'{"x": [0.5, 1.0]}', lambda: model)[:26]
b'{"version":4,"prediction":'
"""

from __future__ import annotations

from typing import Callable, Mapping

import orjson
from fastapi import HTTPException, status

from serving.api.inputs import check_finite, parse_body, rows_to_matrix
from serving.api.model import ServedModel
from serving.api.schemas import BatchPredictRequest, PredictRequest

__all__ = ["answer_batch", "answer_one"]

UnknownFields = Callable[[Mapping[str, int]], None]


def answer_one(
    raw: bytes,
    served: Callable[[], ServedModel],
    on_unknown: UnknownFields | None = None,
    on_rows: Callable[[int], None] | None = None,
) -> bytes:
    """The ``/predict`` answer to body ``raw`` (one row), predicted by the model ``served()`` returns."""
    body = parse_body(PredictRequest, raw)
    model = served()
    X = rows_to_matrix([body.x], model, ("body", "x"), on_unknown)
    labels, proba = model.predict(X)
    check_finite(labels if proba is None else proba, ("body", "x"), model, X)
    if on_rows is not None:
        on_rows(1)
    if proba is None:
        return orjson.dumps(
            {"version": model.version.number, "prediction": float(labels[0]), "probabilities": None}
        )
    return orjson.dumps(
        {
            "version": model.version.number,
            "prediction": model.label(int(labels[0])),
            "probabilities": proba[0].tolist(),
        }
    )


def answer_batch(
    raw: bytes,
    served: Callable[[], ServedModel],
    max_rows: int,
    on_unknown: UnknownFields | None = None,
    on_rows: Callable[[int], None] | None = None,
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
    if n == 0:
        return orjson.dumps({"version": model.version.number, "predictions": [], "probabilities": None})
    X = rows_to_matrix(body.rows, model, ("body", "rows"), on_unknown)
    labels, proba = model.predict(X)
    check_finite(labels if proba is None else proba, ("body", "rows"), model, X)
    if on_rows is not None:
        on_rows(n)
    if proba is None:
        preds = labels.astype(float).tolist()
        return orjson.dumps({"version": model.version.number, "predictions": preds, "probabilities": None})
    classes = model.classes
    preds = [classes[i] for i in labels] if classes else labels.tolist()
    return orjson.dumps(
        {"version": model.version.number, "predictions": preds, "probabilities": proba.tolist()}
    )
