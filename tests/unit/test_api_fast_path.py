"""The predict fast path answers exactly what the FastAPI routes answer, and only the plain case.

A body sent as ``application/json`` takes the fast path; the same body sent
as ``application/json; charset=utf-8`` goes to the route. Both must give the
same bytes, status and counters, for rows of numbers and of named fields,
single and batch, with the ids from the body, the X-Request-Id header or
generated; every error comes from the route, once.
"""

from __future__ import annotations

import asyncio
import re

import numpy as np
import pytest
from fastapi.testclient import TestClient

from learners.neural.learner import TorchLearner
from serving.api.app import create_app
from serving.api.fast_path import PredictFastPath
from serving.registry.file_backend import FileRegistry
from serving.registry.versions import Version
from serving.settings import ServingSettings
from stream.core.features import FeatureSchema, FieldSpec

FAST = {"content-type": "application/json"}
ROUTE = {"content-type": "application/json; charset=utf-8"}
SCHEMA = FeatureSchema(
    (
        FieldSpec("amount"),
        FieldSpec("is_new", "boolean"),
        FieldSpec("user", "categorical", buckets=256),
        FieldSpec("note", "text", buckets=64, max_tokens=3),
    )
)
GENERATED_ID = re.compile(rb'"[0-9a-f]{32}"')
NUMBER_BODIES = [
    ("/predict", b'{"x": [0.5, -1.0, 2.0]}'),
    ("/predict", b'{"x": [0.5, -1.0, 2.0], "id": "r-1"}'),
    ("/predict", b'{"x": [0.5, -1.0, 2.0], "id": 42}', {"x-request-id": "ignored: the body has one"}),
    ("/predict", b'{"x": [0.5, -1.0, 2.0]}', {"x-request-id": "from-the-header"}),
    ("/predict", b'{"x": [0.5, -1.0, 2.0]}', {"x-request-id": "h" * 201}),  # 422: too long
    ("/predict", b'{"x": [0.5, -1.0, 2.0], "id": true}'),  # 422: not a string or an integer
    ("/predict", b'{"x": [0.5, -1.0, 2.0], "id": ""}'),  # 422: empty
    ("/predict/batch", b'{"rows": [[0.5, -1.0, 2.0], [1, 2, 3]]}'),
    ("/predict/batch", b'{"rows": [[0.5, -1.0, 2.0], [1, 2, 3]], "ids": ["a", 7]}'),
    ("/predict/batch", b'{"rows": [[0.5, -1.0, 2.0], [1, 2, 3]], "ids": ["a"]}'),  # 422: one id short
    ("/predict/batch", b'{"rows": [[0.5, -1.0, 2.0], [1, 2, 3]], "ids": ["a", null]}'),  # 422: a null id
    ("/predict/batch", b'{"rows": []}'),
    ("/predict", b'{"x": [0.5, -1.0]}'),  # 422: wrong width
    ("/predict", b'{"x": [1e39, 0, 0]}'),  # 422: not finite in float32
    ("/predict", b'{"x": [0.5, -1.0, 2.0]'),  # 422: not JSON
    ("/predict/batch", b'{"rows": [[0, 0, 0], [0, 0, 0], [0, 0, 0]]}'),  # 413: over max_batch_rows
]
NAMED_BODIES = [
    ("/predict", b'{"x": {"amount": 3.5, "is_new": true, "user": "u_1", "note": "two words"}}'),
    ("/predict", b'{"x": {"amount": 1, "referrer": "ads"}}'),  # missing fields, one unknown
    ("/predict/batch", b'{"rows": [{"user": "u_2", "is_new": false, "amount": 0}, {"amount": 2}]}'),
    ("/predict", b'{"x": {"amount": "lots", "referrer": "ads"}}'),  # 422 after counting "referrer"
    ("/predict", b'{"x": [1, 2, 3, 4, 5, 6]}'),  # 422: the model takes named fields
]


def _publish(reg: FileRegistry, named: bool) -> None:
    width = SCHEMA.width if named else 3
    learner = TorchLearner(n_features=width, device="cpu", seed=0)
    rng = np.random.default_rng(0)
    X = rng.normal(size=(64, width)).astype(np.float32)
    learner.learn_batch(X, (X[:, 0] > 0).astype(np.int64))
    doc = {"n_features": width, "task": "classification", "n_classes": 2}
    if named:
        doc["features"] = SCHEMA.to_dict()
    reg.validate(reg.publish(learner.state_dict(), Version(number=0, schema=doc)).number)


def _run(tmp_path, named: bool, headers: dict, bodies) -> tuple[list, str, int]:
    reg = FileRegistry(tmp_path / ("fast" if headers is FAST else "route"))
    _publish(reg, named)
    app = create_app(ServingSettings(max_batch_rows=2), registry=reg)
    with TestClient(app) as client:
        # Count the requests that reach the routes (the fast path's fallback).
        routed = [0]
        for route in app.routes:
            if getattr(route, "path", "").startswith("/predict"):
                inner = route.app

                async def counting(scope, receive, send, inner=inner):
                    routed[0] += 1
                    await inner(scope, receive, send)

                route.app = counting
        answers = [
            # Generated ids differ from run to run: compared as a placeholder.
            (r.status_code, GENERATED_ID.sub(b'"<generated>"', r.content), r.headers.get("content-type"))
            for path, body, *extra in bodies
            for r in [client.post(path, content=body, headers={**headers, **(extra[0] if extra else {})})]
        ]
        # The counts; not the timings, nor the series' creation times.
        metrics = "\n".join(
            line
            for line in client.get("/metrics").text.splitlines()
            if not line.startswith("#") and "seconds" not in line and "_created" not in line
        )
    return answers, metrics, routed[0]


@pytest.mark.parametrize("named", [False, True], ids=["numbers", "named"])
def test_fast_path_and_routes_give_the_same_answers_and_counts(tmp_path, named):
    bodies = NAMED_BODIES if named else NUMBER_BODIES
    fast, fast_metrics, fast_routed = _run(tmp_path, named, FAST, bodies)
    routed, route_metrics, route_routed = _run(tmp_path, named, ROUTE, bodies)
    assert fast == routed
    assert fast_metrics == route_metrics
    ok = sum(status == 200 for status, *_ in fast)
    assert 0 < ok < len(bodies)  # both kinds of answers were compared
    # The fast path answered every 200 itself; each error reached a route exactly once.
    assert fast_routed == len(bodies) - ok and route_routed == len(bodies)
    if named:
        assert 'streamlearn_api_unknown_fields_total{field="referrer"} 2.0' in fast_metrics
    assert 'route="/predict",status="200"}' in fast_metrics
    if not named:
        answers = [content for status, content, _ in fast]
        assert answers[0].startswith(b'{"id":"<generated>","version":1,')
        assert answers[1].startswith(b'{"id":"r-1",') and answers[2].startswith(b'{"id":"42",')
        assert answers[3].startswith(b'{"id":"from-the-header",')
        assert [status for status, *_ in fast[4:7]] == [422, 422, 422]
        assert b'"loc":["header","x-request-id"]' in answers[4] and b"1 to 200 characters" in answers[4]
        assert b"not bool" in answers[5] and b"got 0" in answers[6]
        assert answers[7].startswith(b'{"ids":["<generated>","<generated>"],')
        assert answers[8].startswith(b'{"ids":["a","7"],')
        assert fast[9][0] == 422 and b"1 ids for 2 rows" in answers[9]
        assert fast[10][0] == 422 and b"not null" in answers[10]


def _call(app, path: str, messages: list[dict], headers=((b"content-length", b"2"),)):
    sent, pending = [], list(messages)

    async def receive():
        return pending.pop(0)

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": path, "headers": list(headers)}
    asyncio.run(app(scope, receive, send))
    return sent


async def _echo(scope, receive, send):
    """The route stand-in: answers 400 with every body chunk it receives, joined."""
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b"") if message["type"] == "http.request" else b"<gone>")
        if not message.get("more_body", False):
            break
    await send({"type": "http.response.start", "status": 400, "headers": []})
    await send({"type": "http.response.body", "body": b"|".join(chunks)})


def _refuse(raw, on_unknown, request_id):
    on_unknown({"referrer": 1})
    raise ValueError("not the plain case")


def test_a_request_handed_on_gets_its_whole_body_replayed_and_counts_nothing():
    counted = []
    fast = PredictFastPath(_echo, {"/predict": _refuse}, routes={}, on_unknown=counted.append)
    chunks = [
        {"type": "http.request", "body": b'{"x":', "more_body": True},
        {"type": "http.request", "body": b" [1]}", "more_body": False},
    ]
    sent = _call(fast, "/predict", chunks)
    assert sent[0]["status"] == 400 and sent[1]["body"] == b'{"x":| [1]}'
    assert counted == []  # the route counts unknown fields itself when it handles the request


def test_the_fast_path_answers_only_posts_with_a_declared_length_of_plain_json():
    answered = {"/predict": lambda raw, on_unknown, request_id: b'{"ok":1}'}
    fast = PredictFastPath(_echo, answered, routes={})
    body = [{"type": "http.request", "body": b"{}", "more_body": False}]
    assert _call(fast, "/predict", body)[0]["status"] == 200
    handed_on = [
        ("/predict", ((b"content-type", b"text/plain"), (b"content-length", b"2"))),
        ("/predict", ((b"content-type", b"application/json; charset=utf-8"), (b"content-length", b"2"))),
        ("/predict", ((b"transfer-encoding", b"chunked"),)),  # no length: the body limit counts it
        ("/models", ((b"content-length", b"2"),)),
    ]
    for path, headers in handed_on:
        assert _call(fast, path, list(body), headers)[0]["status"] == 400, (path, headers)
    gone = _call(fast, "/predict", [{"type": "http.disconnect"}])
    assert gone[1]["body"] == b"<gone>"
