"""The prediction API through FastAPI's TestClient, over a FileRegistry.

The same behaviours run against a real uvicorn server and Redis in
tests/integration/test_api_server.py.
"""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from fastapi.testclient import TestClient

from learners.neural.learner import TorchLearner
from serving.api.app import create_app
from serving.registry.file_backend import FileRegistry
from serving.registry.versions import Version
from serving.settings import ServingSettings

TOKEN = "t0ken"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}


def publish(reg, *, n_features=3, seed=0, validate=True, schema=None, trained=True) -> Version:
    learner = TorchLearner(n_features=n_features, device="cpu", seed=seed, lr=0.2)
    if trained:
        rng = np.random.default_rng(seed)
        X = rng.normal(size=(256, n_features)).astype(np.float32)
        for _ in range(20):
            learner.learn_batch(X, (X[:, 0] > 0).astype(np.int64))
    v = reg.publish(learner.state_dict(), Version(number=0, schema=schema or {"n_features": n_features}))
    return reg.validate(v.number) if validate else v


def wait_until(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


@pytest.fixture
def reg(tmp_path):
    return FileRegistry(tmp_path / "registry")


@pytest.fixture
def client(reg):
    app = create_app(ServingSettings(admin_token=TOKEN, poll_interval_s=0.05, max_batch_rows=8), registry=reg)
    with TestClient(app) as c:
        yield c


def test_predict_names_the_version_and_learned_something(reg, client):
    v = publish(reg)
    assert wait_until(lambda: client.get("/health").json()["model_version"] == v.number)
    pos = client.post("/predict", json={"x": [2.0, 0.0, 0.0]}).json()
    neg = client.post("/predict", json={"x": [-2.0, 0.0, 0.0]}).json()
    assert pos["version"] == neg["version"] == v.number
    assert (pos["prediction"], neg["prediction"]) == (1, 0)
    assert len(pos["probabilities"]) == 2 and abs(sum(pos["probabilities"]) - 1) < 1e-5


def test_batch_predict_and_its_limits(reg, client):
    publish(reg)
    assert wait_until(lambda: client.get("/health").json()["ready"])
    out = client.post("/predict/batch", json={"rows": [[2, 0, 0], [-2, 0, 0]]}).json()
    assert out["predictions"] == [1, 0] and len(out["probabilities"]) == 2
    assert client.post("/predict/batch", json={"rows": []}).json()["predictions"] == []
    too_many = client.post("/predict/batch", json={"rows": [[0, 0, 0]] * 9})
    assert too_many.status_code == 413 and "maximum of 8" in too_many.json()["detail"]


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"x": [1.0, 2.0]}, "expected 3 features, got 2"),
        ({"x": [1.0, 2.0, 3.0, 4.0]}, "expected 3 features, got 4"),
        ({"x": ["1.0", 2.0, 3.0]}, "valid number"),
        ({"x": [True, 2.0, 3.0]}, "valid number"),
        ({"x": {"a": 1.0}}, "unnamed features"),
        ({"y": [1.0, 2.0, 3.0]}, "Field required"),
    ],
)
def test_bad_rows_are_422_with_a_message(reg, client, body, needle):
    publish(reg)
    assert wait_until(lambda: client.get("/health").json()["ready"])
    resp = client.post("/predict", json=body)
    assert resp.status_code == 422
    assert needle in json.dumps(resp.json()["detail"])


def test_non_finite_values_are_422(reg, client):
    publish(reg)
    assert wait_until(lambda: client.get("/health").json()["ready"])
    resp = client.post(
        "/predict", content=b'{"x": [NaN, 1.0, 2.0]}', headers={"content-type": "application/json"}
    )
    assert resp.status_code == 422 and "finite number" in resp.text
    infinite = client.post(
        "/predict", content=b'{"x": [1e400, 1.0, 2.0]}', headers={"content-type": "application/json"}
    )
    assert infinite.status_code == 422
    batch = client.post("/predict/batch", json={"rows": [[1, 2, 3], [1, 2]]})
    assert batch.status_code == 422 and batch.json()["detail"][0]["loc"] == ["body", "rows", 1]


def test_values_not_finite_in_float32_are_422_everywhere(reg, client):
    # 1e39 is finite in float64 (JSON allows it) and inf once cast to float32.
    publish(reg, schema={"n_features": 3, "feature_names": ["a", "b", "c"]})
    assert wait_until(lambda: client.get("/health").json()["ready"])
    for body, path in (
        ({"x": [1e39, 0.0, 0.0]}, "/predict"),
        ({"x": [0.0, -1e39, 0.0]}, "/predict"),
        ({"x": {"a": 0.0, "b": 0.0, "c": 3.5e38}}, "/predict"),
        ({"rows": [[0, 0, 0], [0, 0, 1e39]]}, "/predict/batch"),
        ({"rows": [{"a": 0.0, "b": 0.0, "c": -1e300}]}, "/predict/batch"),
    ):
        resp = client.post(path, json=body)
        assert resp.status_code == 422, (body, resp.text)
        assert "finite in float32" in resp.json()["detail"][0]["msg"]
    located = client.post("/predict/batch", json={"rows": [[0, 0, 0], [0, 0, 1e39]]}).json()["detail"][0][
        "loc"
    ]
    assert located == ["body", "rows", 1, 2]
    # The largest finite float32 passes validation (this model may still overflow on it: that is another 422).
    largest = client.post("/predict", json={"x": [3.4028234663852886e38, 0.0, 0.0]})
    assert largest.status_code == 200 or "overflows" in largest.json()["detail"][0]["msg"], largest.text


def test_a_row_the_model_overflows_on_is_422_not_null_probabilities(reg, client):
    learner = TorchLearner(n_features=3, device="cpu", seed=0)
    state = learner.state_dict()
    state["model"]["linear.weight"].fill_(3e38)  # any sizeable input overflows to inf - inf = NaN
    reg.validate(reg.publish(state, Version(number=0, schema={"n_features": 3})).number)
    assert wait_until(lambda: client.get("/health").json()["ready"])
    single = client.post("/predict", json={"x": [1e3, 1e3, 1e3]})
    assert single.status_code == 422 and "overflows" in single.json()["detail"][0]["msg"], single.text
    batch = client.post("/predict/batch", json={"rows": [[0, 0, 0], [1e3, 1e3, 1e3]]})
    assert batch.status_code == 422 and batch.json()["detail"][0]["loc"] == ["body", "rows", 1], batch.text
    assert "null" not in client.post("/predict", json={"x": [0, 0, 0]}).text


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "application/xml"]
)
def test_predict_bodies_must_be_json(reg, client, content_type):
    publish(reg)
    assert wait_until(lambda: client.get("/health").json()["ready"])
    for path, body in (("/predict", b'{"x": [0, 0, 0]}'), ("/predict/batch", b'{"rows": [[0, 0, 0]]}')):
        resp = client.post(path, content=body, headers={"content-type": content_type})
        assert resp.status_code == 415 and "application/json" in resp.json()["detail"]
        for fine in ("application/json; charset=utf-8", "application/vnd.api+json", None):
            headers = {"content-type": fine} if fine else {}
            assert client.post(path, content=body, headers=headers).status_code == 200, fine


def test_bodies_over_the_limit_are_413_declared_or_streamed(reg):
    publish(reg)
    app = create_app(
        ServingSettings(admin_token=TOKEN, max_body_bytes=256, poll_interval_s=0.05), registry=reg
    )
    with TestClient(app) as c:
        assert wait_until(lambda: c.get("/health").json()["ready"])
        row = b"[0.5, 0.5, 0.5]"
        fits = b'{"rows": [' + b", ".join([row] * 10) + b"]}"
        assert len(fits) <= 256 and c.post("/predict/batch", content=fits).status_code == 200
        big = b'{"rows": [' + b", ".join([row] * 30) + b"]}"
        declared = c.post("/predict/batch", content=big)
        assert declared.status_code == 413
        assert declared.json()["detail"].startswith(
            f"the request body ({len(big)} bytes) is larger than the limit of 256 bytes"
        )
        assert declared.headers["connection"] == "close"

        def chunks():  # no Content-Length: the middleware counts as the body arrives
            yield b'{"rows": ['
            for _ in range(10_000):
                yield row + b", "
            yield row + b"]}"

        for path in ("/predict/batch", "/predict", "/rollback"):
            streamed = c.post(path, content=chunks(), headers=ADMIN)
            assert streamed.status_code == 413, (path, streamed.text)
            assert "larger than the limit of 256 bytes" in streamed.json()["detail"]
        text = c.get("/metrics").text
        # Counted either way: a declared length is refused before routing, hence "unmatched".
        assert (
            'route="unmatched",status="413"} 1.0' in text
            and 'route="/predict/batch",status="413"} 1.0' in text
        )


def test_non_finite_event_bounds_are_422_and_huge_ones_are_fine(reg, client):
    publish(reg)
    for name in ("since", "until"):
        for bound in ("nan", "inf", "-inf", "1e400"):
            resp = client.get("/events", params={name: bound})
            assert resp.status_code == 422, resp.text
            assert resp.json()["detail"][0] == {
                "loc": ["query", name],
                "type": "value_error",
                "msg": f"{name} must be a finite number of epoch seconds, got {float(bound)}",
            }
    assert client.get("/events", params={"since": 1e308}).json()["events"] == []
    assert client.get("/events", params={"until": -1e308}).json()["events"] == []
    assert len(client.get("/events", params={"since": -1e308, "until": 1e308}).json()["events"]) == 2


def test_named_features_and_class_labels(reg, client):
    publish(reg, schema={"n_features": 3, "feature_names": ["a", "b", "c"], "classes": ["no", "yes"]})
    assert wait_until(lambda: client.get("/health").json()["ready"])
    out = client.post("/predict", json={"x": {"c": 0.0, "a": 2.0, "b": 0.0}}).json()
    assert out["prediction"] == "yes"
    missing = client.post("/predict", json={"x": {"a": 1.0, "b": 0.0}})
    assert missing.status_code == 422 and "missing ['c']" in missing.text
    assert client.post("/predict/batch", json={"rows": [{"a": -2, "b": 0, "c": 0}]}).json()[
        "predictions"
    ] == ["no"]


def test_not_ready_without_a_model(client):
    assert client.get("/health").status_code == 200
    body = client.get("/health").json()
    assert body["ready"] is False and body["status"] == "not_ready" and body["registry"] == "ok"
    assert client.get("/health/ready").status_code == 503
    resp = client.post("/predict", json={"x": [0, 0, 0]})
    assert resp.status_code == 503 and "no validated model yet" in resp.json()["detail"]


def test_candidates_are_not_served(reg, client):
    v1 = publish(reg)
    assert wait_until(lambda: client.get("/health").json()["model_version"] == v1.number)
    publish(reg, seed=1, validate=False)
    time.sleep(0.3)
    assert client.post("/predict", json={"x": [0, 0, 0]}).json()["version"] == v1.number


def test_hot_swap_follows_the_registry(reg, client):
    v1 = publish(reg)
    assert wait_until(lambda: client.get("/health").json()["model_version"] == v1.number)
    v2 = publish(reg, seed=1)
    assert wait_until(lambda: client.post("/predict", json={"x": [0, 0, 0]}).json()["version"] == v2.number)
    models = client.get("/models").json()
    assert models["current"] == models["served"] == v2.number
    assert [v["number"] for v in models["versions"]] == [2, 1]
    current = client.get("/models/current").json()
    assert current["in_sync"] and current["served"]["number"] == v2.number


def test_admin_endpoints_need_the_token(reg, client):
    v1 = publish(reg)
    publish(reg, seed=1)
    assert client.post("/rollback").status_code == 401
    assert client.post("/rollback", headers={"Authorization": "Bearer nope"}).status_code == 403
    assert (
        client.post(f"/models/{v1.number}/promote", headers={"Authorization": "Bearer nope"}).status_code
        == 403
    )


def test_rollback_and_promote_take_effect_at_once(reg, client):
    v1 = publish(reg)
    v2 = publish(reg, seed=1)
    assert wait_until(lambda: client.get("/health").json()["model_version"] == v2.number)
    rolled = client.post("/rollback", headers=ADMIN, json={"reason": "bad batch upstream"})
    assert rolled.status_code == 200 and rolled.json()["served"] == v1.number
    # No waiting: the very next prediction uses the rolled-back version.
    assert client.post("/predict", json={"x": [0, 0, 0]}).json()["version"] == v1.number
    event = client.get("/events", params={"kind": "rollback"}).json()["events"][0]
    assert event["reason"] == "bad batch upstream" and event["details"] == {
        "from": v2.number,
        "to": v1.number,
    }
    promoted = client.post(f"/models/{v2.number}/promote", headers=ADMIN)
    assert promoted.status_code == 200 and promoted.json()["served"] == v2.number
    assert client.post("/models/99/promote", headers=ADMIN).status_code == 404
    nothing_before = client.post("/rollback", headers=ADMIN, json={"to": v2.number})
    assert nothing_before.status_code == 409


def test_admin_disabled_without_a_configured_token(reg):
    # A short poll interval only makes the hot-swap thread stop at once when the client closes.
    app = create_app(ServingSettings(poll_interval_s=0.05), registry=reg)
    with TestClient(app) as c:
        resp = c.post("/rollback", headers=ADMIN)
        assert resp.status_code == 403 and "STREAMLEARN_SERVING_ADMIN_TOKEN" in resp.json()["detail"]


def test_a_version_with_broken_weights_is_not_served(reg, client, tmp_path):
    v1 = publish(reg)
    assert wait_until(lambda: client.get("/health").json()["model_version"] == v1.number)
    bad = reg.publish({"not": "a learner"}, Version(number=0, schema={"n_features": 3}))
    reg.validate(bad.number)
    assert wait_until(lambda: "cannot be served" in (client.get("/health").json()["last_error"] or ""))
    assert client.post("/predict", json={"x": [0, 0, 0]}).json()["version"] == v1.number
    assert "streamlearn_model_load_failures_total 1.0" in client.get("/metrics").text


def test_metrics_count_requests_by_route(reg, client):
    publish(reg)
    assert wait_until(lambda: client.get("/health").json()["ready"])
    for _ in range(3):
        client.post("/predict", json={"x": [0, 0, 0]})
    client.post("/predict", json={"x": [0]})
    text = client.get("/metrics").text
    assert 'streamlearn_http_requests_total{method="POST",route="/predict",status="200"} 3.0' in text
    assert 'route="/predict",status="422"} 1.0' in text
    assert "streamlearn_model_version 1.0" in text and "streamlearn_registry_up 1.0" in text
    assert "streamlearn_predicted_rows_total 3.0" in text


def test_openapi_documents_the_endpoints(client):
    paths = client.get("/openapi.json").json()["paths"]
    for path in (
        "/predict",
        "/predict/batch",
        "/models",
        "/models/current",
        "/models/{version}/promote",
        "/rollback",
        "/health",
        "/health/ready",
        "/events",
    ):
        assert path in paths


def test_an_empty_admin_token_disables_admin(reg, monkeypatch):
    monkeypatch.setenv("STREAMLEARN_SERVING_ADMIN_TOKEN", "")
    assert ServingSettings().admin_token is None
    app = create_app(ServingSettings(poll_interval_s=0.05), registry=reg)
    with TestClient(app) as c:
        assert c.post("/rollback", headers={"Authorization": "Bearer "}).status_code in (401, 403)


def test_automatic_and_manual_rollbacks_both_show_in_events_and_the_served_version_follows(reg, client):
    from drift.detectors import DriftMonitor
    from drift.policy import DriftPolicy
    from drift.policy_config import PolicyConfig
    from drift.testing import ScriptedDetector
    from stream.engine.gate import ValidationGate
    from stream.testing.doubles import make_batch

    def trained(flip):
        learner = TorchLearner(n_features=3, device="cpu", lr=0.2)
        for i in range(20):
            b = make_batch(256, n_features=3, start_offset=i * 256, flip_labels=flip)
            learner.learn_batch(b.X, b.y)
        return learner

    good, bad = trained(False), trained(True)
    v1 = reg.validate(reg.publish(good.state_dict(), Version(0, schema={"n_features": 3})).number)
    v2 = reg.validate(reg.publish(bad.state_dict(), Version(0, schema={"n_features": 3})).number)
    assert wait_until(lambda: client.get("/health").json()["model_version"] == v2.number)
    t0 = time.time()

    # The drift policy finds v2 corrupted and v1 clearly better: the pointer moves back, the API follows.
    policy = DriftPolicy(
        DriftMonitor([ScriptedDetector(fire_at=[1])]),
        PolicyConfig(warmup_events=0),
        registry=reg,
        snapshot=ValidationGate(reg).validated,
    )
    live = trained(True)
    for i in range(100, 104):
        batch = make_batch(256, n_features=3, start_offset=i * 256)
        if policy.observe(live, batch, live.predict_batch(batch.X)):
            break
    assert reg.pointer()[0] == v1.number
    assert wait_until(
        lambda: client.post("/predict", json={"x": [0.5, 0.5, 0.5]}).json()["version"] == v1.number
    )

    # An operator promotes v2 by hand and rolls it back by hand: also kind=rollback.
    client.post(f"/models/{v2.number}/promote", headers=ADMIN)
    client.post("/rollback", headers=ADMIN, json={"to": v1.number, "reason": "operator"})
    events = client.get("/events", params={"kind": "rollback", "since": t0}).json()["events"]
    assert [e["details"].get("automatic", False) for e in events] == [False, True]
    assert events[1]["details"]["pointer_moved"] is True and events[1]["details"]["to"] == v1.number
    assert client.get("/models/current").json()["served"]["number"] == v1.number
    # Time filters: nothing before t0 is listed, `until` cuts the newest off, and a reversed range is a 422.
    only_auto = client.get(
        "/events", params={"kind": "rollback", "since": t0, "until": events[1]["at"]}
    ).json()
    assert [e["id"] for e in only_auto["events"]] == [events[1]["id"]]
    bad_range = client.get("/events", params={"since": 10, "until": 5})
    assert bad_range.status_code == 422 and "before since" in bad_range.text
    drift_kinds = {e["kind"] for e in client.get("/events", params={"since": t0}).json()["events"]}
    assert {"drift_alarm", "rollback", "promote"} <= drift_kinds
