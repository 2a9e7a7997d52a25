"""Request and response bodies of the prediction API (pydantic models, shown in /docs).

Feature values are strict, finite numbers: ``"1.5"`` (a string), ``true`` and
``NaN`` are rejected with 422 rather than silently coerced, because a model
fed a coerced value answers confidently and wrongly.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, Field

Number = Annotated[float, Field(strict=True, allow_inf_nan=False)]
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
