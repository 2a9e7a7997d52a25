"""The prediction API: serves the latest validated model and swaps to new ones without a failed request.

Build it with :func:`create_app`; ``streamlearn serve`` runs it under uvicorn,
and ``uvicorn --factory serving.api.app:app_from_env`` does the same from
environment settings (``STREAMLEARN_SERVING_*``, ``STREAMLEARN_REGISTRY_*``).

The lifespan opens the registry, loads its current version onto
``app.state.slot`` and starts the :class:`~serving.api.hot_swap.HotSwapper`.
Prediction handlers read the slot ONCE per request and answer with the
version they used, so a swap in the middle of a request is invisible to it.
They are ``async def`` on purpose: a forward pass of a tabular model takes
tens of microseconds, less than a hop to the thread pool would. The plain
predict request does not even reach them: :mod:`serving.api.fast_path`
answers it in pure ASGI with the same function (:mod:`serving.api.predict`)
and hands every other request -- every error included -- to the routes.

Endpoints: ``POST /predict``, ``POST /predict/batch``, ``GET /models``,
``GET /models/current``, ``GET /models/{version}``, ``POST /models/{version}/promote`` and
``POST /rollback`` (bearer admin token), ``GET /events``, ``GET /health``
(liveness, always 200), ``GET /health/ready`` (200 only with the registry
reachable and a model loaded, else 503), ``GET /metrics`` (Prometheus), and
``POST /feedback`` (:mod:`serving.api.feedback`).

The feedback loop (docs/serving.md#feedback-loop): with ``prediction_log``
set, every answered row is queued for the prediction log
(:mod:`serving.api.prediction_log`, which also scores the ``shadow``
versions); with ``labels_topic``, ``POST /feedback`` writes labels. Both
reach the broker of ``kafka_settings`` (``STREAMLEARN_KAFKA_BOOTSTRAP``).

Bad input is a 4xx, never a 500: a body over ``max_body_bytes`` is 413 before
it is parsed (:mod:`serving.api.body_limit`), a predict body that is not JSON is
415, a feature value that is not finite in float32 -- or a row the model's
arithmetic overflows on -- is 422, and so are non-finite ``/events`` bounds.

Examples
--------
>>> import tempfile
>>> from fastapi.testclient import TestClient
>>> app = create_app(ServingSettings(), registry_settings=RegistrySettings(url=tempfile.mkdtemp()))
>>> with TestClient(app) as client:
...     client.get("/health").json()["ready"], client.post("/predict", json={"x": [1.0]}).status_code
(False, 503)
"""

from __future__ import annotations

import asyncio
import logging
import math
import secrets
from contextlib import asynccontextmanager
from functools import lru_cache
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Query, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel

from serving.api import feedback
from serving.api.body_limit import BodySizeLimitMiddleware
from serving.api.fast_path import Answer, PredictFastPath
from serving.api.hot_swap import HotSwapper, ModelSlot, same_version
from serving.api.inputs import unprocessable
from serving.api.live import LiveMetrics
from serving.api.metrics import MetricsMiddleware, ServingMetrics
from serving.api.model import ServedModel
from serving.api.predict import answer_batch, answer_one
from serving.api.prediction_log import PredictionLog
from serving.api.producer import ProducerFactory, kafka_producer_factory
from serving.api.schemas import (
    BATCH_EXAMPLES,
    PREDICT_EXAMPLES,
    BatchPrediction,
    BatchPredictRequest,
    Prediction,
    PredictRequest,
    PromoteRequest,
    RollbackRequest,
)
from serving.api.shadow import ShadowModels
from serving.registry.base import ModelRegistry
from serving.registry.factory import open_registry
from serving.settings import RegistrySettings, ServingSettings
from stream.core.errors import ConfigError, RegistryError, RegistryUnavailableError, VersionNotFoundError
from stream.core.settings import KafkaSettings

log = logging.getLogger(__name__)

__all__ = ["create_app", "app_from_env"]


# ----------------------------------------------------------------- dependencies
# Dependencies are async on purpose: FastAPI runs a sync one in its thread
# pool, and that hop cost a third of a /predict request (measured, bench/serving.py).
async def get_settings(request: Request) -> ServingSettings:
    return request.app.state.settings


async def get_registry(request: Request) -> ModelRegistry:
    return request.app.state.registry


_bearer = HTTPBearer(auto_error=False, description="The admin token (STREAMLEARN_SERVING_ADMIN_TOKEN).")


async def require_admin(
    settings: Annotated[ServingSettings, Depends(get_settings)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    if settings.admin_token is None:
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            detail="admin endpoints are disabled: set STREAMLEARN_SERVING_ADMIN_TOKEN",
        )
    if credentials is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            detail="send 'Authorization: Bearer <admin token>'",
            headers={"WWW-Authenticate": "Bearer"},
        )
    if not secrets.compare_digest(
        credentials.credentials.encode(), settings.admin_token.get_secret_value().encode()
    ):
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail="wrong admin token")


RegistryDep = Annotated[ModelRegistry, Depends(get_registry)]
AdminDep = Depends(require_admin)


# ---------------------------------------------------------------- JSON bodies
async def _json_body(request: Request) -> bytes:
    """The raw body of a predict request, or 415 if it says it is not JSON.

    The predict handlers parse their bytes themselves, so without this check
    a ``text/plain`` or form body that happens to hold JSON would be accepted.
    No Content-Type at all is taken as JSON, as FastAPI does for its own bodies.
    """
    content_type = request.headers.get("content-type")
    if content_type is not None:
        media = content_type.partition(";")[0].strip().lower()
        if media != "application/json" and not (media.startswith("application/") and media.endswith("+json")):
            raise HTTPException(
                status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
                detail=f"send the body as JSON with 'Content-Type: application/json', not {media[:100]!r}",
            )
    return await request.body()


def _json(payload: bytes) -> Response:
    return Response(payload, media_type="application/json")


def _body_doc(schema: type[BaseModel], examples: dict) -> dict:
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": schema.model_json_schema(), "examples": examples}},
        }
    }


_ERROR_TEXT = {
    400: "the body cannot be decoded as JSON (not UTF-8, or nested too deep)",
    401: "no admin token was sent",
    403: "wrong admin token, or the admin endpoints are disabled",
    404: "no such model version",
    409: "the registry refused the transition (no weights any more, nothing to roll back to)",
    413: "the body is larger than max_body_bytes (or /predict/batch has more rows than max_batch_rows)",
    415: "the body is not JSON",
    422: "the rows do not fit the model: wrong count or shape, a value not finite in float32, a named "
    "field of the wrong kind (or unknown, where the schema rejects unknown fields)",
    503: "no validated model yet, or the registry is unreachable",
}


def _responses(*codes: int) -> dict[int | str, dict]:
    """The error answers of an endpoint, for /openapi.json: every one is ``{"detail": ...}``.

    Documented so that clients -- and the API fuzz test, which fails on an
    undocumented status -- know them. FastAPI documents 422 itself for
    endpoints with parameters; predict handlers, which parse their own body, list it here.
    """
    doc = {"content": {"application/json": {"schema": {"type": "object", "required": ["detail"]}}}}
    return {code: {"description": _ERROR_TEXT[code], **doc} for code in codes}


def _served(app: FastAPI) -> ServedModel:
    """The served model, read ONCE: this request uses it throughout, whatever swaps meanwhile."""
    model = app.state.slot.model
    if model is None:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            detail="no validated model yet: the daemon publishes one after its first validation window",
            headers={"Retry-After": "1"},
        )
    return model


def _producers(
    settings: ServingSettings, kafka: KafkaSettings | None, given: ProducerFactory | None
) -> tuple[ProducerFactory | None, ProducerFactory | None]:
    """The prediction log's producer factory (``acks=1``) and the labels' (``acks="all"``), where configured."""
    if not (settings.prediction_log or settings.labels_topic):
        return None, None
    if given is not None:
        return given, given
    kafka = kafka or KafkaSettings()
    if not kafka.bootstrap:
        raise ConfigError(
            "the prediction log and /feedback write to Kafka: give --bootstrap HOST:PORT "
            "(env STREAMLEARN_KAFKA_BOOTSTRAP)"
        )
    options = {"client_id": kafka.client_id, **kafka.client_options()}
    return (
        kafka_producer_factory(kafka.bootstrap, acks=1, options=options),
        kafka_producer_factory(kafka.bootstrap, acks="all", options={**options, "linger_ms": 2}),
    )


# -------------------------------------------------------------------------- app
def create_app(
    settings: ServingSettings | None = None,
    *,
    registry: ModelRegistry | None = None,
    registry_settings: RegistrySettings | None = None,
    kafka_settings: KafkaSettings | None = None,
    producer_factory: ProducerFactory | None = None,
) -> FastAPI:
    """The API. Pass ``registry`` to share one you own (it is not closed on shutdown).

    ``kafka_settings`` (default: from the environment) names the broker of the
    prediction log and the labels; ``producer_factory`` replaces the Kafka
    producers of both (tests).
    """
    settings = settings or ServingSettings()
    registry_settings = registry_settings or RegistrySettings()
    metrics = ServingMetrics()
    log_producers, label_producers = _producers(settings, kafka_settings, producer_factory)
    #: What the predict functions call with each answer: the prediction log's offer, while it runs.
    hooks: dict[str, Any] = {"on_answer": None}

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        owned = registry is None
        reg = (
            registry
            if registry is not None
            else open_registry(
                registry_settings.url,
                namespace=registry_settings.namespace,
                keep_states=registry_settings.keep_states,
            )
        )
        slot = ModelSlot()

        def on_swap(model: ServedModel) -> None:
            metrics.swaps.inc()
            metrics.model_version.set(model.version.number)

        swapper = HotSwapper(
            reg,
            slot,
            poll_interval=settings.poll_interval_s,
            device=settings.device,
            on_swap=on_swap,
            on_registry_state=lambda up: metrics.registry_up.set(1 if up else 0),
            on_load_failure=lambda n, exc: metrics.load_failures.inc(),
        )
        app.state.settings, app.state.registry, app.state.slot, app.state.swapper = (
            settings,
            reg,
            slot,
            swapper,
        )
        try:
            swapper.sync_now()
        except RegistryError as exc:
            # Start anyway: liveness is fine, readiness says why, the swapper retries.
            log.warning("starting without a model: %s", exc)
        swapper.start()
        app.state.live = metrics.extra["live"] = LiveMetrics(reg)
        app.state.prediction_log = app.state.labels = None
        if log_producers is not None and settings.prediction_log:
            shadows = ShadowModels(reg, settings.shadow, device=settings.device)
            shadows.load_missing()
            plog = PredictionLog(
                settings.prediction_log,
                log_producers,
                capacity_rows=settings.prediction_log_queue_rows,
                shadows=shadows,
            )
            plog.start()
            app.state.prediction_log = metrics.extra["prediction_log"] = plog
            hooks["on_answer"] = plog.offer
        if label_producers is not None and settings.labels_topic:
            app.state.labels = feedback.LabelWriter(
                settings.labels_topic, label_producers, timeout_s=settings.feedback_timeout_s
            )
        try:
            yield
        finally:
            hooks["on_answer"] = None
            swapper.stop()
            if app.state.prediction_log is not None:
                # Bounded: a broker that is gone costs shutdown at most this long.
                await asyncio.to_thread(app.state.prediction_log.close, 5.0)
                metrics.extra.pop("prediction_log", None)
            if app.state.labels is not None:
                app.state.labels.close()
            metrics.extra.pop("live", None)
            if owned:
                reg.close()

    app = FastAPI(
        title="streamlearn prediction API",
        version="1",
        summary="Serves the latest validated model version and hot-swaps to new ones.",
        lifespan=lifespan,
    )
    app.state.metrics = metrics
    # Filled in once the predict routes exist; read by the middleware from the first request on.
    fast_answers: dict[str, Answer] = {}
    fast_routes: dict[str, Any] = {}
    # Innermost: the fast path's answers are size-limited and counted like the routes' ones.
    app.add_middleware(
        PredictFastPath, answers=fast_answers, routes=fast_routes, on_unknown=metrics.count_unknown_fields
    )
    # Added before the metrics middleware so it sits inside it: a 413 is still counted.
    app.add_middleware(BodySizeLimitMiddleware, max_body_bytes=settings.max_body_bytes)
    app.add_middleware(MetricsMiddleware, metrics=metrics)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI's default echoes each offending "input": that breaks on NaN
        # (not JSON) and would echo whole 1000-row bodies. loc + msg say enough.
        detail = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
            for e in exc.errors()
        ]
        return JSONResponse({"detail": detail}, status_code=status.HTTP_422_UNPROCESSABLE_CONTENT)

    @app.exception_handler(VersionNotFoundError)
    async def _not_found(_: Request, exc: VersionNotFoundError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=status.HTTP_404_NOT_FOUND)

    @app.exception_handler(RegistryUnavailableError)
    async def _unavailable(_: Request, exc: RegistryUnavailableError) -> JSONResponse:
        return JSONResponse(
            {"detail": f"model registry unavailable: {exc}"},
            status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
            headers={"Retry-After": "1"},
        )

    @app.exception_handler(RegistryError)
    async def _conflict(_: Request, exc: RegistryError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=status.HTTP_409_CONFLICT)

    # --------------------------------------------------------------- predict
    # The predict handlers read and validate their body themselves (pydantic's
    # Rust JSON parser, straight from the bytes) and answer with orjson bytes,
    # instead of going through FastAPI's dependency solver, json.loads and
    # response-model validation: ~25% of a single-row request (bench/serving.py).
    # The schemas still document them in /docs. The plain case does not reach
    # them at all: PredictFastPath answers it with the same function.
    def served() -> ServedModel:
        return _served(app)

    def answer_predict(raw: bytes, on_unknown, request_id: str | None) -> bytes:
        return answer_one(
            raw,
            served,
            on_unknown,
            metrics.predicted_rows.inc,
            request_id=request_id,
            on_answer=hooks["on_answer"],
        )

    def answer_predict_batch(raw: bytes, on_unknown, request_id: str | None) -> bytes:
        return answer_batch(
            raw,
            served,
            settings.max_batch_rows,
            on_unknown,
            metrics.predicted_rows.inc,
            on_answer=hooks["on_answer"],
        )

    @app.post(
        "/predict",
        response_model=Prediction,
        tags=["predict"],
        openapi_extra=_body_doc(PredictRequest, PREDICT_EXAMPLES),
        responses=_responses(413, 415, 422, 503),
    )
    async def predict(request: Request) -> Response:
        """Predict one row; the answer names the model version that produced it, and the row's id."""
        raw = await _json_body(request)
        return _json(answer_predict(raw, metrics.count_unknown_fields, request.headers.get("x-request-id")))

    @app.post(
        "/predict/batch",
        response_model=BatchPrediction,
        tags=["predict"],
        openapi_extra=_body_doc(BatchPredictRequest, BATCH_EXAMPLES),
        responses=_responses(413, 415, 422, 503),
    )
    async def predict_batch(request: Request) -> Response:
        """Predict up to ``max_batch_rows`` rows with one model version."""
        return _json(answer_predict_batch(await _json_body(request), metrics.count_unknown_fields, None))

    fast_answers.update({"/predict": answer_predict, "/predict/batch": answer_predict_batch})
    fast_routes.update(
        {route.path: route for route in app.routes if getattr(route, "path", None) in fast_answers}
    )

    # ---------------------------------------------------------------- models
    @app.get("/models", tags=["models"], responses=_responses(503))
    def list_models(reg: RegistryDep, request: Request, limit: int = Query(50, ge=1, le=1000)) -> dict:
        """Versions, newest first, with the registry's current and this server's served version."""
        current, _ = reg.pointer()
        served = request.app.state.slot.model
        return {
            "current": current,
            "served": served.version.number if served else None,
            "versions": [v.to_dict() for v in reg.history(limit=limit)],
        }

    @app.get("/models/current", tags=["models"])
    def current_model(request: Request) -> dict:
        """The version this server answers with, and whether it is the registry's current one."""
        served = request.app.state.slot.model
        try:
            current = request.app.state.registry.current()
            registry_state = "ok"
        except RegistryUnavailableError:
            current, registry_state = None, "unreachable"
        # By identity, not number: an emptied-and-refilled registry reuses numbers.
        return {
            "served": served.version.to_dict() if served else None,
            "registry_current": current.number if current else None,
            "registry": registry_state,
            "in_sync": served is not None and current is not None and same_version(served, current),
            "live": request.app.state.live.entry(served.version.number) if served else None,
        }

    # After /models/current, and typed int: "current" never reaches it.
    @app.get("/models/{version}", tags=["models"], responses=_responses(404, 503))
    def model_version(version: int, reg: RegistryDep, request: Request) -> dict:
        """One version's registry document, with its live figures as served and as a shadow (null: none yet)."""
        doc = reg.get(version).to_dict()
        live: LiveMetrics = request.app.state.live
        return {**doc, "live": live.entry(version), "shadow_live": live.entry(version, "shadow")}

    @app.post(
        "/models/{version}/promote",
        tags=["admin"],
        dependencies=[AdminDep],
        responses=_responses(400, 401, 403, 404, 409, 413, 503),
    )
    def promote(version: int, reg: RegistryDep, request: Request, body: PromoteRequest | None = None) -> dict:
        """Serve this version from now on (it becomes validated); effective on this server at once."""
        promoted = reg.promote(version, reason=(body or PromoteRequest()).reason)
        request.app.state.swapper.sync_now()
        return {"promoted": promoted.to_dict(), "served": request.app.state.slot.model.version.number}

    @app.post(
        "/rollback",
        tags=["admin"],
        dependencies=[AdminDep],
        responses=_responses(400, 401, 403, 404, 409, 413, 503),
    )
    def rollback(reg: RegistryDep, request: Request, body: RollbackRequest | None = None) -> dict:
        """Go back to an earlier validated version (default: the previous one); effective at once."""
        body = body or RollbackRequest()
        target = reg.rollback(to=body.to, reason=body.reason)
        request.app.state.swapper.sync_now()
        return {"rolled_back_to": target.to_dict(), "served": request.app.state.slot.model.version.number}

    @app.get("/events", tags=["models"], responses=_responses(503))
    def events(
        reg: RegistryDep,
        kind: str | None = Query(
            None,
            description="publish, validate, reject, promote, rollback, "
            "drift_alarm, adapt, drift_dismissed, retrain_request, "
            "retrain_started, retrain_adopted, retrain_rejected, "
            "retrain_failed, retrain_unjudged",
        ),
        since: float | None = Query(None, description="epoch seconds, inclusive"),
        until: float | None = Query(None, description="epoch seconds, inclusive"),
        limit: int = Query(100, ge=1, le=10_000),
    ) -> dict:
        """The registry's audit trail, newest first: version lifecycle and drift decisions.

        Manual rollbacks (``POST /rollback``) and the drift policy's automatic
        ones are both ``kind=rollback``; ``details.automatic`` tells them apart.
        """
        for name, bound in (("since", since), ("until", until)):
            # float() parses "nan" and "inf"; no time is either, and a NaN
            # bound would silently compare false against every event.
            if bound is not None and not math.isfinite(bound):
                raise unprocessable(
                    ("query", name), f"{name} must be a finite number of epoch seconds, got {bound}"
                )
        if since is not None and until is not None and until < since:
            raise unprocessable(("query", "until"), f"until ({until}) is before since ({since})")
        return {"events": [e.to_dict() for e in reg.events(kind=kind, since=since, limit=limit, until=until)]}

    # ---------------------------------------------------------------- health
    def _health(request: Request) -> dict:
        swapper: HotSwapper = request.app.state.swapper
        model = request.app.state.slot.model
        registry_up = swapper.registry_up
        ready = registry_up and model is not None
        return {
            "status": "ok" if ready else ("degraded" if model is not None else "not_ready"),
            "live": True,
            "ready": ready,
            "registry": "ok" if registry_up else "unreachable",
            "model_version": model.version.number if model else None,
            "swaps": request.app.state.slot.swaps,
            "last_error": swapper.last_error,
            "prediction_log": plog.stats()
            if (plog := request.app.state.prediction_log)
            else {"status": "off"},
        }

    @app.get("/health", tags=["health"])
    async def health(request: Request) -> dict:
        """Liveness (always 200 while the process answers) with the readiness facts in the body."""
        return _health(request)

    @app.get("/health/ready", tags=["health"], responses={503: {"description": "not ready"}})
    async def ready(request: Request) -> JSONResponse:
        """Readiness: 200 only with the registry reachable and a model loaded."""
        body = _health(request)
        return JSONResponse(body, status_code=200 if body["ready"] else 503)

    # Sync, so in the thread pool: the live gauges read the registry (at most once a second).
    @app.get("/metrics", tags=["health"], include_in_schema=False)
    def prometheus() -> Response:
        payload, content_type = metrics.render()
        return Response(payload, media_type=content_type)

    app.include_router(feedback.router)
    return app


@lru_cache(maxsize=1)
def app_from_env() -> FastAPI:
    """The app from environment settings (``uvicorn --factory serving.api.app:app_from_env``)."""
    return create_app(ServingSettings(), registry_settings=RegistrySettings())
