"""Request and response bodies of the prediction API (pydantic models, shown in /docs).

A row is a list of numbers in feature order, or an object of named fields.
Numbers in a list are strict, finite in float32 (the precision models compute
in): ``"1.5"`` (a string), ``true``, ``NaN`` and ``1e39`` (finite in float64,
infinite once cast) are rejected with 422 rather than silently coerced,
because a model fed a coerced value answers confidently and wrongly. An
object's values are any JSON scalars here; what each field must hold depends
on the served version -- its feature schema, or numbers as above when it has
none -- and is checked against it (:mod:`serving.api.inputs`).

Examples
--------
>>> PredictRequest.model_validate_json('{"x": [1.5, -2]}').x
[1.5, -2.0]
>>> PredictRequest.model_validate_json('{"x": {"country": "FR", "age": null}}').x
{'country': 'FR', 'age': None}
>>> from pydantic import ValidationError
>>> try:
...     PredictRequest.model_validate_json('{"x": [1e39]}')
... except ValidationError as exc:
...     print(exc.errors()[0]["loc"], exc.errors()[0]["type"])
('x', 'list[constrained-float]', 0) less_than_equal
"""

from __future__ import annotations

from typing import Annotated, Any

import numpy as np
from pydantic import AfterValidator, BaseModel, Field, WithJsonSchema

from stream.core.feedback import MAX_ID_LENGTH

#: The largest finite float32; anything beyond it becomes inf when cast.
FLOAT32_MAX = float(np.finfo(np.float32).max)

# The range is checked by pydantic's Rust validator as it parses, so it costs
# nothing extra, points at the offending element and is documented in /openapi.json.
Number = Annotated[float, Field(strict=True, allow_inf_nan=False, ge=-FLOAT32_MAX, le=FLOAT32_MAX)]
# Any, not a union of scalar types: which values a field takes is the served
# version's to say, and the encoder's FieldError names the field, what it
# expected and what came; a union would answer with one error per scalar type.
FieldValue = Annotated[
    Any,
    WithJsonSchema(
        {
            "type": ["string", "number", "boolean", "null"],
            "description": "null or absent: missing; what each field takes is the served version's schema",
        }
    ),
]
Row = list[Number] | dict[str, FieldValue]


def request_id(value: Any) -> str | None:
    """A client's id for a row as the API keeps it: text of 1 to ``MAX_ID_LENGTH`` characters.

    A string or an integer (``42`` is kept as ``"42"``, as the label that
    joins it later will be); ``None`` is no id. Raises ``ValueError`` otherwise.

    >>> request_id(42), request_id("r-1"), request_id(None)
    ('42', 'r-1', None)
    >>> request_id(True)
    Traceback (most recent call last):
    ...
    ValueError: an id is a string or an integer, not bool
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ValueError(f"an id is a string or an integer, not {type(value).__name__}")
    text = value if isinstance(value, str) else str(value)
    if not 0 < len(text) <= MAX_ID_LENGTH:
        raise ValueError(f"an id is 1 to {MAX_ID_LENGTH} characters, got {len(text)}")
    return text


# Any + a validator, not StrictStr | StrictInt: a union answers a wrong id with one error per member.
RequestId = Annotated[
    Any,
    AfterValidator(request_id),
    WithJsonSchema(
        {
            "type": ["string", "integer"],
            "description": f"the row's id, 1 to {MAX_ID_LENGTH} characters; an integer is answered as text",
        }
    ),
]


def _not_null(value: Any) -> Any:
    if value is None:
        raise ValueError("an id in ids must be a string or an integer, not null")
    return value


#: An id that must be there: each element of a batch's ``ids``.
RequiredId = Annotated[RequestId, AfterValidator(_not_null)]

NAMED_ROW = {"user": "u_81723", "country": "FR", "amount": 12.5, "age": None, "is_new": True}
#: Request examples for /docs: both shapes of a row.
PREDICT_EXAMPLES = {
    "numbers": {"summary": "a list of numbers, in feature order", "value": {"x": [0.1, 0.5, -0.3]}},
    "named fields": {
        "summary": "named fields (a model published with a feature schema); null or absent: missing",
        "value": {"x": NAMED_ROW},
    },
}
BATCH_EXAMPLES = {
    "numbers": {"summary": "lists of numbers", "value": {"rows": [[0.1, 0.5, -0.3], [0.2, 0.1, 0.0]]}},
    "named fields": {
        "summary": "objects of named fields",
        "value": {"rows": [NAMED_ROW, {"user": "u_2", "country": "DE", "amount": 3.0}]},
    },
}


class PredictRequest(BaseModel):
    """One row: ``x`` is a list of numbers in feature order, or an object of named fields.

    Named fields are the served version's feature schema (any JSON scalar,
    ``null`` or absent for missing), or ``{name: number}`` for a version whose
    stream only named its numeric features; ``GET /models/current`` shows which.
    """

    x: Row = Field(examples=[[0.1, 0.5, -0.3], NAMED_ROW])
    id: RequestId = Field(
        None, description="The row's id (else the X-Request-Id header, else a generated one)."
    )


class BatchPredictRequest(BaseModel):
    """Several rows (at most the server's ``max_batch_rows``)."""

    rows: list[Row] = Field(examples=[[[0.1, 0.5, -0.3], [0.2, 0.1, 0.0]], [NAMED_ROW]])
    ids: list[RequiredId] | None = Field(None, description="One id per row, in order (else generated ones).")


class Prediction(BaseModel):
    id: str = Field(description="The row's id: the request's, or a generated one; labels join by it.")
    version: int = Field(description="The model version that produced this prediction.")
    prediction: Any
    probabilities: list[float] | None = None


class BatchPrediction(BaseModel):
    ids: list[str] = Field(description="One id per row, in order.")
    version: int = Field(description="The model version that produced these predictions.")
    predictions: list[Any]
    probabilities: list[list[float]] | None = None


class RollbackRequest(BaseModel):
    to: int | None = Field(None, description="Version to roll back to; default: the previous validated one.")
    reason: str = Field("manual rollback", max_length=500)


class PromoteRequest(BaseModel):
    reason: str = Field("promoted by an operator", max_length=500)
