"""Request rows -> the served model's input matrix, and every 422 on the way, in the client's terms.

A row is a list of numbers in feature order, or an object: ``{name: number}``
for a model whose stream named its numeric features. The errors keep the
shape of FastAPI's own (``{"loc": [...], "msg": ..., "type": ...}``), so
clients parse one format whichever check failed.

Examples
--------
>>> from serving.api.schemas import PredictRequest
>>> try:
...     parse_body(PredictRequest, b'{"x": [1e39]}')
... except RequestValidationError as exc:
...     print(exc.errors()[0]["loc"], exc.errors()[0]["msg"][:40])
('body', 'x', 0) Input should be a number finite in float
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
from fastapi import HTTPException, status
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError

from serving.api.model import ServedModel
from serving.api.schemas import FLOAT32_MAX

__all__ = ["body_errors", "check_finite", "parse_body", "rows_to_matrix", "unprocessable"]

_FLOAT32_MSG = (
    f"Input should be a number finite in float32 (between -{FLOAT32_MAX:.8g} and {FLOAT32_MAX:.8g}): "
    "the model computes in float32, where this value is infinite"
)


#: pydantic's names for the two shapes of a row (list | dict), which it puts in an error's loc.
_ROW_SHAPES = ("list[constrained-float]", "dict[str,constrained-float]")


def body_errors(errors: list[dict]) -> list[dict]:
    """pydantic's errors for a body in the client's terms: ``loc`` from ``"body"``, one row shape, plain words.

    A row may be a list or a dict, so pydantic reports a failure under each
    shape; "should be a valid array" from the shape the client did not use is
    noise when the other one says what is really wrong, and the shape names
    are not part of the client's document.
    """
    inside = {
        tuple(e["loc"][:i]) for e in errors for i, part in enumerate(e["loc"][:-1]) if part in _ROW_SHAPES
    }
    out = []
    for err in errors:
        loc = tuple(err["loc"])
        if (
            loc
            and loc[-1] in _ROW_SHAPES
            and err["type"] in ("list_type", "dict_type")
            and loc[:-1] in inside
        ):
            continue
        err = {**err, "loc": ("body", *(part for part in loc if part not in _ROW_SHAPES))}
        bound = (err.get("ctx") or {}).get("le", (err.get("ctx") or {}).get("ge"))
        if (
            err["type"] in ("less_than_equal", "greater_than_equal")
            and bound is not None
            and abs(bound) == FLOAT32_MAX
        ):
            # pydantic's own message prints the bound as a 39-digit integer; say what is wrong instead.
            err["msg"] = _FLOAT32_MSG
        out.append(err)
    return out


def parse_body(schema: type[BaseModel], raw: bytes) -> Any:
    """Validate a JSON body against ``schema``; 422 in FastAPI's error format otherwise."""
    try:
        return schema.model_validate_json(raw)
    except ValidationError as exc:
        raise RequestValidationError(
            body_errors(exc.errors(include_input=False, include_url=False))
        ) from None


def unprocessable(loc: Sequence[Any], message: str) -> HTTPException:
    # Same shape as FastAPI's own validation errors, so clients parse one format.
    return HTTPException(
        status.HTTP_422_UNPROCESSABLE_CONTENT,
        detail=[{"loc": list(loc), "msg": message, "type": "value_error"}],
    )


def rows_to_matrix(
    rows: Sequence[list[float] | dict[str, float]], model: ServedModel, loc: Sequence[Any]
) -> np.ndarray:
    """Turn request rows into an (n, n_features) float32 matrix, or raise 422 saying what was expected."""
    d = model.n_features
    names = model.feature_names
    if rows and isinstance(rows[0], list):
        try:
            X = np.asarray(rows, dtype=np.float32)  # the common case, in one C call
        except (ValueError, TypeError):
            X = None  # ragged or mixed rows: the loop below says which row is wrong
        if X is not None and X.shape == (len(rows), d):
            return X
    X = np.empty((len(rows), d), np.float32)
    for i, row in enumerate(rows):
        where = [*loc, i] if len(rows) > 1 or loc[-1] == "rows" else list(loc)
        if isinstance(row, dict):
            if names is None:
                raise unprocessable(
                    where,
                    f"this model (version {model.version.number}) has unnamed features: "
                    f"send x as a list of {d} numbers",
                )
            missing = [n for n in names if n not in row]
            extra = sorted(set(row) - set(names))
            if missing or extra:
                raise unprocessable(
                    where, f"expected the {d} features {names}; missing {missing}, unknown {extra}"
                )
            X[i] = [row[n] for n in names]
        else:
            if len(row) != d:
                raise unprocessable(
                    where, f"expected {d} features, got {len(row)} (model version {model.version.number})"
                )
            X[i] = row
    return X


def check_finite(values: np.ndarray, loc: Sequence[Any], version: int) -> None:
    """422 if the model's output is not finite (inf/NaN), naming the first row it happened on.

    Inputs are all finite in float32, but a model's arithmetic can still
    overflow on huge ones; answering 200 with ``null`` probabilities would
    hand the client a prediction that means nothing.
    """
    flat = values.ravel()
    # A Python loop over a short row: a numpy ufunc here added ~13 us to a
    # ~100 us single-row /predict (measured in-process); batches take numpy.
    all_finite = all(map(math.isfinite, flat.tolist())) if flat.size <= 64 else bool(np.isfinite(flat).all())
    if all_finite:
        return
    finite = np.isfinite(values).reshape(len(values), -1)
    row = int(np.flatnonzero(~finite.all(axis=1))[0])
    where = [*loc, row] if loc[-1] == "rows" else list(loc)
    raise unprocessable(
        where,
        f"model version {version} overflows on this row (its output is not finite): "
        "the feature values are too large for it; send them on the scale it was trained on",
    )
