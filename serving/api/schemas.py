"""Request and response bodies of the prediction API (pydantic models, shown in /docs).

Feature values are strict numbers, finite in float32 (the precision models
compute in): ``"1.5"`` (a string), ``true``, ``NaN`` and ``1e39`` (finite in
float64, infinite once cast) are rejected with 422 rather than silently
coerced, because a model fed a coerced value answers confidently and wrongly.

Examples
--------
>>> PredictRequest.model_validate_json('{"x": [1.5, -2]}').x
[1.5, -2.0]
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
from pydantic import BaseModel, Field

#: The largest finite float32; anything beyond it becomes inf when cast.
FLOAT32_MAX = float(np.finfo(np.float32).max)

# The range is checked by pydantic's Rust validator as it parses, so it costs
# nothing extra, points at the offending element and is documented in /openapi.json.
Number = Annotated[float, Field(strict=True, allow_inf_nan=False, ge=-FLOAT32_MAX, le=FLOAT32_MAX)]
Row = list[Number] | dict[str, Number]


class PredictRequest(BaseModel):
    """One row: ``x`` is a list of numbers in feature order, or ``{name: number}`` when the stream named them."""

    x: Row = Field(examples=[[0.1, 0.5, -0.3]])


class BatchPredictRequest(BaseModel):
    """Several rows (at most the server's ``max_batch_rows``)."""

    rows: list[Row] = Field(examples=[[[0.1, 0.5, -0.3], [0.2, 0.1, 0.0]]])


class Prediction(BaseModel):
    version: int = Field(description="The model version that produced this prediction.")
    prediction: Any
    probabilities: list[float] | None = None


class BatchPrediction(BaseModel):
    version: int = Field(description="The model version that produced these predictions.")
    predictions: list[Any]
    probabilities: list[list[float]] | None = None


class RollbackRequest(BaseModel):
    to: int | None = Field(None, description="Version to roll back to; default: the previous validated one.")
    reason: str = Field("manual rollback", max_length=500)


class PromoteRequest(BaseModel):
    reason: str = Field("promoted by an operator", max_length=500)
