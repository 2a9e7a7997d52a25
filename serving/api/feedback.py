"""``POST /feedback``: the true labels of answered rows, written to the labels topic for the daemon to join.

A label names the id a predict answer carried (``{"id": ..., "y": ...,
"ts": optional epoch ms}``, or ``{"labels": [...]}`` for up to
``max_batch_rows`` of them). Unlike the prediction log, the client needs to
know whether its labels were kept: :class:`LabelWriter` waits for the
broker's acknowledgement (``acks="all"``) for at most ``feedback_timeout_s``
and the answer is ``202 {"accepted": n}``, or 503 when the broker did not
acknowledge them all -- send them again: the daemon counts a repeated label
once (``repeated_labels``). Without ``--labels-topic`` the endpoint answers 404
saying so.

Examples
--------
>>> LabelIn.model_validate({"id": 7, "y": "click", "ts": 1764547260000.0})
LabelIn(id='7', y='click', ts=1764547260000)
>>> from pydantic import ValidationError
>>> try:
...     LabelIn.model_validate({"id": "r1", "y": None})
... except ValidationError as exc:
...     print(exc.errors()[0]["msg"])
Value error, "y" is the label: it must not be null
"""

from __future__ import annotations

import threading
import time
from typing import Annotated, Any, Sequence

import orjson
from fastapi import APIRouter, HTTPException, Request, status
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import AfterValidator, BaseModel, Field, ValidationError, WithJsonSchema

from serving.api.inputs import body_errors, unprocessable
from serving.api.producer import Producer, ProducerFactory
from serving.api.schemas import RequestId
from stream.core.feedback import MAX_TS_MS, Label, encode_label

__all__ = ["FeedbackUnavailableError", "LabelIn", "LabelWriter", "router"]

#: After the producer could not be made, answer 503 at once for this long instead of trying per request.
RETRY_S = 5.0


def _required(value: Any) -> Any:
    if value is None:
        raise ValueError('"id" must be a string or an integer, not null')
    return value


def _label(value: Any) -> Any:
    if value is None:
        raise ValueError('"y" is the label: it must not be null')
    return value


def _epoch_ms(value: Any) -> int | None:
    if value is None:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or value != value
        or value
        in (
            float("inf"),
            float("-inf"),
        )
    ):
        raise ValueError(f'"ts" must be epoch milliseconds (a finite number), got {value!r}')
    if value < 0:
        raise ValueError(f'"ts" must be epoch milliseconds, not negative: {value!r}')
    if value >= MAX_TS_MS:
        raise ValueError(f'"ts" must be epoch milliseconds, below 2**62: {value!r}')
    return int(value)


class LabelIn(BaseModel):
    """One label: the id of the answered row, its true value, and when it was known (optional)."""

    id: Annotated[RequestId, AfterValidator(_required)]
    y: Annotated[Any, AfterValidator(_label), WithJsonSchema({"description": "the true value; not null"})]
    ts: Annotated[
        Any, AfterValidator(_epoch_ms), WithJsonSchema({"type": ["number", "null"], "minimum": 0})
    ] = Field(None, description="epoch milliseconds")


class LabelBatch(BaseModel):
    labels: list[LabelIn]


class FeedbackUnavailableError(Exception):
    """The labels were not acknowledged by the broker (the message says why)."""


class LabelWriter:
    """Writes labels keyed by id to ``topic`` and waits, at most ``timeout_s``, for the broker to acknowledge them."""

    def __init__(self, topic: str, producer_factory: ProducerFactory, *, timeout_s: float = 5.0) -> None:
        self.topic, self.producer_factory, self.timeout_s = topic, producer_factory, timeout_s
        self._producer: Producer | None = None
        self._lock = threading.Lock()
        self._failed_at: float | None = None
        self._error = ""

    def _producer_now(self) -> Producer:
        with self._lock:
            if self._producer is None:
                if self._failed_at is not None and time.monotonic() - self._failed_at < RETRY_S:
                    raise FeedbackUnavailableError(self._error)
                try:
                    self._producer = self.producer_factory()
                except Exception as exc:  # noqa: BLE001 -- no broker, bad address: 503, and retry later
                    self._failed_at, self._error = time.monotonic(), f"cannot reach the broker: {exc}"
                    raise FeedbackUnavailableError(self._error) from None
            return self._producer

    def write(self, labels: Sequence[Label]) -> None:
        """Blocks until every label is acknowledged; raises :class:`FeedbackUnavailableError` otherwise."""
        producer = self._producer_now()
        deadline = time.monotonic() + self.timeout_s
        try:
            futures = [producer.send(self.topic, value=encode_label(x), key=x.id.encode()) for x in labels]
            for future in futures:
                if future is not None:
                    future.get(timeout=max(0.0, deadline - time.monotonic()))
        except Exception as exc:  # noqa: BLE001 -- timeout, broker gone, refused: the client must retry
            raise FeedbackUnavailableError(
                f"the broker did not acknowledge the labels within {self.timeout_s:g}s "
                f"({type(exc).__name__}: {exc}); send them again"
            ) from None

    def close(self, timeout_s: float = 2.0) -> None:
        if self._producer is not None:
            try:
                self._producer.close(timeout=timeout_s)
            except Exception:  # noqa: BLE001,S110 -- shutting down
                pass


def _detail(code: int, text: str) -> dict:
    return {code: {"description": text, "content": {"application/json": {"schema": {"type": "object"}}}}}


router = APIRouter(tags=["feedback"])

_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {"anyOf": [LabelIn.model_json_schema(), LabelBatch.model_json_schema()]},
                "examples": {
                    "one": {"value": {"id": "4f1c9a", "y": "click", "ts": 1764547260000}},
                    "several": {"value": {"labels": [{"id": "4f1c9a", "y": "click"}, {"id": 42, "y": "no"}]}},
                },
            }
        },
    }
}


@router.post(
    "/feedback",
    status_code=status.HTTP_202_ACCEPTED,
    openapi_extra=_BODY,
    responses={
        202: {"description": 'every label acknowledged by the broker: {"accepted": n}'},
        **_detail(404, "the server takes no labels: start it with --labels-topic"),
        **_detail(413, "more labels than max_batch_rows, or a body over max_body_bytes"),
        **_detail(422, "a label without id or y, a bad id or ts, or a body that is not JSON"),
        **_detail(503, "the broker did not acknowledge the labels in time; send them again"),
    },
)
async def feedback(request: Request) -> JSONResponse:
    """Record the true label of answered rows, by the ids their answers carried."""
    writer: LabelWriter | None = request.app.state.labels
    if writer is None:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND,
            detail="this server takes no labels: start `streamlearn serve` with --labels-topic TOPIC and "
            "--bootstrap HOST:PORT (env STREAMLEARN_SERVING_LABELS_TOPIC, STREAMLEARN_KAFKA_BOOTSTRAP)",
        )
    labels = _parse(await request.body(), request.app.state.settings.max_batch_rows)
    try:
        await run_in_threadpool(writer.write, labels)
    except FeedbackUnavailableError as exc:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            detail=f"labels not recorded: {exc}",
            headers={"Retry-After": "1"},
        ) from None
    return JSONResponse({"accepted": len(labels)}, status_code=status.HTTP_202_ACCEPTED)


def _parse(raw: bytes, max_rows: int) -> list[Label]:
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise unprocessable(("body",), f"the body is not JSON: {exc}") from None
    batch = isinstance(doc, dict) and "labels" in doc
    if batch and isinstance(doc["labels"], list) and len(doc["labels"]) > max_rows:
        raise HTTPException(
            status.HTTP_413_CONTENT_TOO_LARGE,
            detail=f"{len(doc['labels'])} labels is more than the maximum of {max_rows} per request; "
            "split the batch",
        )
    try:
        items = LabelBatch.model_validate(doc).labels if batch else [LabelIn.model_validate(doc)]
    except ValidationError as exc:
        raise RequestValidationError(
            body_errors(exc.errors(include_input=False, include_url=False))
        ) from None
    return [Label(item.id, item.y, item.ts) for item in items]
