"""Request rows -> the served model's input matrix, and every 422 on the way, in the client's terms.

A row is a list of numbers in feature order, or an object: named fields of
any JSON scalar for a version published with a feature schema (encoded by
its :class:`~stream.core.features.FeatureEncoder`, built once when the version
is loaded), ``{name: number}`` for one whose stream only named its numeric
features. The errors keep the
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
from collections import Counter
from typing import Any, Callable, Mapping, Sequence

import numpy as np
from fastapi import HTTPException, status
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, TypeAdapter, ValidationError

from serving.api.model import ServedModel
from serving.api.schemas import FLOAT32_MAX, Number
from stream.core.features import FieldError

__all__ = ["body_errors", "check_finite", "named_matrix", "parse_body", "rows_to_matrix", "unprocessable"]

_NUMBER_ROW = TypeAdapter(dict[str, Number])

_FLOAT32_MSG = (
    f"Input should be a number finite in float32 (between -{FLOAT32_MAX:.8g} and {FLOAT32_MAX:.8g}): "
    "the model computes in float32, where this value is infinite"
)


#: pydantic's names for the two shapes of a row (list | dict), which it puts in an error's loc.
_ROW_SHAPES = ("list[constrained-float]", "dict[str,any]")


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
    rows: Sequence[list[float] | dict[str, Any]],
    model: ServedModel,
    loc: Sequence[Any],
    on_unknown: Callable[[Mapping[str, int]], None] | None = None,
) -> np.ndarray:
    """Turn request rows into an (n, n_features) float32 matrix, or raise 422 saying what was expected.

    A version with a feature schema takes named rows only (:func:`named_matrix`,
    which reports unknown field names to ``on_unknown``); others take lists of
    numbers, or ``{name: number}`` when their stream named its features.
    """
    if model.encoder is not None:
        return named_matrix(rows, model, loc, on_unknown)
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
            _check_numbers(row, where)
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


def _check_numbers(row: dict[str, Any], where: Sequence[Any]) -> None:
    """422 unless every value of a ``{name: number}`` row is a strict number finite in float32.

    Named rows parse with any JSON scalar (a feature schema may take strings);
    without a schema the values are numbers, with the same errors as a list row's.
    """
    try:
        _NUMBER_ROW.validate_python(row)
    except ValidationError as exc:
        errors = exc.errors(include_input=False, include_url=False)
        # body_errors adds "body" itself; ``where`` starts with it.
        raise RequestValidationError(
            body_errors([{**e, "loc": (*where[1:], *e["loc"])} for e in errors])
        ) from None


def named_matrix(
    rows: Sequence[Any],
    model: ServedModel,
    loc: Sequence[Any],
    on_unknown: Callable[[Mapping[str, int]], None] | None = None,
) -> np.ndarray:
    """Encode named rows with the served version's :class:`~stream.core.features.FeatureEncoder`.

    Missing and ``null`` fields are fine (the model imputes them). A value of
    the wrong kind is 422 at ``[..., "x", field]`` (``[..., "rows", i, field]``
    in a batch) saying what was expected and what came; so is an unknown field
    when the schema's ``unknown`` is ``"reject"``. Unknown fields are otherwise
    ignored, and their names reported to ``on_unknown``.
    """
    encoder = model.encoder
    batch = len(rows) > 1 or loc[-1] == "rows"
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise unprocessable(
                [*loc, i] if batch else list(loc),
                f"this model (version {model.version.number}) takes named fields: "
                f"{list(encoder.schema.names)}; send x as an object of them",
            )
    if not batch:
        # The hot path: one row, value by value (encode_one), and a set test for unknown names.
        x = rows[0]
        if on_unknown is not None and not model.field_names.issuperset(x):
            on_unknown(Counter(k for k in x if k not in model.field_names))
        try:
            return encoder.encode_one(x)[None, :]
        except FieldError as exc:
            raise _field_error(exc, loc, model) from None
    out = encoder.encode(rows)
    if out.unknown and on_unknown is not None:
        on_unknown(out.unknown)
    if out.errors:
        first = min(out.errors)
        raise _field_error(encoder.field_error(rows[first]), [*loc, first], model) from None
    return out.X


def _field_error(exc: FieldError, where: Sequence[Any], model: ServedModel) -> HTTPException:
    if exc.field in model.field_names:
        return unprocessable([*where, exc.field], f"expected {exc.expected}, got {exc.received}")
    return unprocessable(
        [*where, exc.field],
        f"unknown field {exc.field!r}: this model (version {model.version.number}) rejects fields "
        f"outside its schema: {list(model.encoder.schema.names)}",
    )


def check_finite(values: np.ndarray, loc: Sequence[Any], model: ServedModel, X: np.ndarray) -> None:
    """422 if the model's output is not finite (inf/NaN) on input ``X``, naming the first row it happened on.

    Inputs are all finite in float32, but a model's arithmetic can still
    overflow on huge ones; answering 200 with ``null`` probabilities would
    hand the client a prediction that means nothing. Missing named fields
    reach the model as NaN; one that does not impute them says so here.
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
    version = model.version.number
    if model.encoder is not None and np.isnan(X[row]).any():
        numeric = model.encoder.schema.numeric_names
        missing = [name for name, value in zip(numeric, X[row, : len(numeric)]) if math.isnan(value)]
        raise unprocessable(
            where,
            f"model version {version} gives no finite output for this row: it does not impute the "
            f"missing fields {missing}; send them",
        )
    raise unprocessable(
        where,
        f"model version {version} overflows on this row (its output is not finite): "
        "the feature values are too large for it; send them on the scale it was trained on",
    )
