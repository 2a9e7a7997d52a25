"""Prometheus metrics for the prediction API, in a registry of their own per app.

A pure ASGI middleware counts requests and times them by route template
(``/models/{version}/promote``, not one series per version number); it adds
about a microsecond per request, where Starlette's BaseHTTPMiddleware would
add a task and a copy of the body.

Examples
--------
>>> m = ServingMetrics()
>>> m.model_version.set(3)
>>> b"streamlearn_model_version 3.0" in m.render()[0]
True
>>> m.count_unknown_fields({"referrer": 2})
>>> b'streamlearn_api_unknown_fields_total{field="referrer"} 2.0' in m.render()[0]
True
"""

from __future__ import annotations

import time
from typing import Any, Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

# Buckets sized for a sub-10 ms API: most requests fall below 5 ms.
_LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
#: Unknown field names given a series of their own; the rest share OTHER_FIELDS. Names come
#: from clients, so without a bound one sending random keys would grow /metrics without end.
UNKNOWN_FIELD_SERIES = 32
OTHER_FIELDS = "(other names)"


class ServingMetrics:
    """The API's collectors."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "streamlearn_http_requests",
            "HTTP requests by route and status",
            ["route", "method", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "streamlearn_http_request_seconds",
            "HTTP request latency by route",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.predicted_rows = Counter("streamlearn_predicted_rows", "Rows predicted", registry=r)
        self.model_version = Gauge(
            "streamlearn_model_version", "Model version being served (0: none)", registry=r
        )
        self.swaps = Counter("streamlearn_model_swaps", "Hot swaps to a new model version", registry=r)
        self.load_failures = Counter(
            "streamlearn_model_load_failures", "Validated versions that failed to load", registry=r
        )
        self.registry_up = Gauge(
            "streamlearn_registry_up", "1 if the model registry is reachable", registry=r
        )

        self.unknown_fields = Counter(
            "streamlearn_api_unknown_fields",
            f"Fields of named rows not in the served version's schema, by name (the first "
            f"{UNKNOWN_FIELD_SERIES} names seen; later ones as {OTHER_FIELDS!r})",
            ["field"],
            registry=r,
        )
        self._unknown_series: dict[str, Counter] = {}
        #: Collectors added while the app runs (the prediction log, the live document), by name.
        self.extra: dict[str, Any] = {}
        r.register(_Extra(self.extra))

    def count_unknown_fields(self, counts: Mapping[str, int]) -> None:
        """Count unknown fields by name, giving at most ``UNKNOWN_FIELD_SERIES`` names their own series."""
        for name, n in counts.items():
            series = self._unknown_series.get(name)
            if series is None:
                if len(self._unknown_series) >= UNKNOWN_FIELD_SERIES:
                    series = self.unknown_fields.labels(OTHER_FIELDS)
                else:
                    series = self._unknown_series[name] = self.unknown_fields.labels(name[:100])
            series.inc(n)

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class _Extra:
    """The series of ``extra``'s collectors, as they are when scraped (a collector may come and go)."""

    def __init__(self, extra: Mapping[str, Any]) -> None:
        self.extra = extra

    def collect(self) -> Iterator[Any]:
        for collector in list(self.extra.values()):
            yield from collector.collect()


class MetricsMiddleware:
    """Pure ASGI middleware recording request count and latency by route template."""

    def __init__(self, app, metrics: ServingMetrics) -> None:
        self.app = app
        self.metrics = metrics
        self._children: dict[tuple, tuple] = {}

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = [500]

        async def send_wrapper(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            key = (template, scope["method"], status[0])
            children = self._children.get(key)
            if children is None:
                children = (
                    self.metrics.requests.labels(template, scope["method"], str(status[0])),
                    self.metrics.latency.labels(template),
                )
                self._children[key] = children
            children[0].inc()
            children[1].observe(time.perf_counter() - start)
