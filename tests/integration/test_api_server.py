"""The prediction API through a real uvicorn server on loopback, with the real Redis registry.

Hot swap under load: concurrent clients call /predict while 50 versions are
published; no request fails and no client ever sees the version go backwards.
Redis outage: the container is stopped and started mid-run; the API keeps
answering with the model it has, reports degraded readiness, and reconnects.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import httpx
import numpy as np
import pytest

from learners.neural.learner import TorchLearner
from serving.api.app import create_app
from serving.api.server import BackgroundServer
from serving.registry.redis_backend import RedisRegistry
from serving.registry.versions import Version
from serving.settings import RegistrySettings, ServingSettings

N_FEATURES = 4
#: Generous deadlines: a request on a busy machine, the API following the registry. Reaching one is a
#: failure, never a shorter test.
HTTP_TIMEOUT_S = 60.0
EVENT_DEADLINE_S = 60.0


def publish_validated(reg, seed: int) -> Version:
    learner = TorchLearner(n_features=N_FEATURES, device="cpu", seed=seed)
    X = np.random.default_rng(seed).normal(size=(64, N_FEATURES)).astype(np.float32)
    learner.learn_batch(X, (X[:, 0] > 0).astype(np.int64))
    v = reg.publish(learner.state_dict(), Version(number=0, schema={"n_features": N_FEATURES}))
    return reg.validate(v.number, reason="test")


def wait_until(predicate, timeout=EVENT_DEADLINE_S, every=0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(every)
    return False


@dataclass
class ClientLog:
    versions: list[int] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


def hammer(url: str, stop: threading.Event, log: ClientLog) -> None:
    """One client on one keep-alive connection, predicting until told to stop."""
    with httpx.Client(base_url=url, timeout=HTTP_TIMEOUT_S) as client:
        while not stop.is_set():
            try:
                resp = client.post("/predict", json={"x": [0.5] * N_FEATURES})
            except httpx.HTTPError as exc:
                log.failures.append(f"{type(exc).__name__}: {exc}")
                continue
            if resp.status_code != 200:
                log.failures.append(f"{resp.status_code}: {resp.text[:200]}")
            else:
                log.versions.append(resp.json()["version"])


@pytest.fixture
def redis_registry(redis_url, unique_name):
    reg = RedisRegistry(redis_url, namespace=unique_name)
    yield reg
    reg.close()


@pytest.fixture
def server(redis_url, unique_name):
    app = create_app(
        ServingSettings(admin_token="adm", poll_interval_s=0.2),
        registry_settings=RegistrySettings(url=redis_url, namespace=unique_name),
    )
    with BackgroundServer(app, port=0) as srv:
        yield srv


def test_real_server_predicts_validates_and_names_versions(server, redis_registry):
    with httpx.Client(base_url=server.url, timeout=HTTP_TIMEOUT_S) as client:
        assert client.get("/health/ready").status_code == 503
        v = publish_validated(redis_registry, seed=1)
        assert wait_until(lambda: client.get("/health/ready").status_code == 200)
        assert client.post("/predict", json={"x": [1.0] * N_FEATURES}).json()["version"] == v.number
        bad = client.post("/predict", json={"x": [1.0]})
        assert bad.status_code == 422 and f"expected {N_FEATURES} features, got 1" in bad.text
        assert (
            client.post(
                "/predict", content=b'{"x": [NaN,1,1,1]}', headers={"content-type": "application/json"}
            ).status_code
            == 422
        )
        assert client.get("/models").json()["current"] == v.number
        assert "streamlearn_registry_up 1.0" in client.get("/metrics").text


def test_bad_input_is_a_4xx_with_the_redis_registry(server, redis_registry):
    """Non-finite or absurd /events bounds, float32-overflowing features and big bodies: never a 5xx."""
    v = publish_validated(redis_registry, seed=5)
    with httpx.Client(base_url=server.url, timeout=HTTP_TIMEOUT_S) as client:
        assert wait_until(lambda: client.get("/health").json()["model_version"] == v.number)
        for name in ("since", "until"):
            for bound in ("nan", "inf", "-inf", "1e400"):
                resp = client.get("/events", params={name: bound})
                assert resp.status_code == 422 and "finite number of epoch seconds" in resp.text, resp.text
        # Finite but outside Redis' stream-id range: clamped, not a 500 (OverflowError) or 409 (bad id).
        assert client.get("/events", params={"since": "1e308"}).json()["events"] == []
        assert client.get("/events", params={"until": "-1e308"}).json()["events"] == []
        everything = client.get("/events", params={"since": "-1e308", "until": "1e308"})
        assert everything.status_code == 200 and [e["kind"] for e in everything.json()["events"]] == [
            "validate",
            "publish",
        ]
        overflow = client.post("/predict", json={"x": [1e39] + [0.0] * (N_FEATURES - 1)})
        assert overflow.status_code == 422 and "finite in float32" in overflow.text
        batch = client.post("/predict/batch", json={"rows": [[0.0] * N_FEATURES, [-1e39] * N_FEATURES]})
        assert batch.status_code == 422 and batch.json()["detail"][0]["loc"][:3] == ["body", "rows", 1]
        too_big = client.post("/predict/batch", json={"rows": [[0.5] * N_FEATURES] * 60_000})  # ~1.3 MB
        assert too_big.status_code == 413 and "limit of 1048576 bytes" in too_big.json()["detail"]
        assert client.post("/predict", json={"x": [0.5] * N_FEATURES}).status_code == 200


def test_hot_swap_under_load_never_fails_and_never_goes_back(server, redis_registry):
    first = publish_validated(redis_registry, seed=0)
    with httpx.Client(base_url=server.url, timeout=HTTP_TIMEOUT_S) as probe:
        assert wait_until(lambda: probe.get("/health").json()["model_version"] == first.number)
    stop = threading.Event()
    logs = [ClientLog() for _ in range(6)]
    clients = [threading.Thread(target=hammer, args=(server.url, stop, log), daemon=True) for log in logs]
    for t in clients:
        t.start()
    published = [publish_validated(redis_registry, seed=i).number for i in range(1, 51)]
    with httpx.Client(base_url=server.url, timeout=HTTP_TIMEOUT_S) as probe:
        assert wait_until(lambda: probe.get("/health").json()["model_version"] == published[-1])
    # Every client has been answered by the last version (or the checks below say which did not).
    wait_until(lambda: all(log.versions and log.versions[-1] == published[-1] for log in logs))
    stop.set()
    for t in clients:
        t.join(HTTP_TIMEOUT_S)

    assert sum(len(log.failures) for log in logs) == 0, [log.failures[:3] for log in logs]
    for i, log in enumerate(logs):
        assert log.versions, f"client {i} made no request"
        backwards = [(a, b) for a, b in zip(log.versions, log.versions[1:]) if b < a]
        assert not backwards, f"client {i} saw versions go back: {backwards[:5]}"
        assert log.versions[-1] == published[-1]
    seen = set().union(*(set(log.versions) for log in logs))
    total = sum(len(log.versions) for log in logs)
    # Swaps really happened while requests were in flight.
    assert len(seen) >= 10, f"only saw versions {sorted(seen)} over {total} requests"


def test_redis_outage_keeps_serving_and_reconnects(server, redis_registry, redis_service):
    v1 = publish_validated(redis_registry, seed=3)
    with httpx.Client(base_url=server.url, timeout=HTTP_TIMEOUT_S) as client:
        assert wait_until(lambda: client.get("/health").json()["model_version"] == v1.number)
        stop = threading.Event()
        log = ClientLog()
        worker = threading.Thread(target=hammer, args=(server.url, stop, log), daemon=True)
        worker.start()
        try:
            redis_service.stop()
            assert wait_until(lambda: client.get("/health").json()["registry"] == "unreachable")
            health = client.get("/health").json()
            assert (
                health["status"] == "degraded"
                and health["ready"] is False
                and health["model_version"] == v1.number
            )
            assert client.get("/health/ready").status_code == 503
            models = client.get("/models")
            assert models.status_code == 503 and "registry unavailable" in models.json()["detail"]
            served_during_outage = len(log.versions)
            assert wait_until(lambda: len(log.versions) > served_during_outage), (
                "predictions stopped during the outage"
            )
        finally:
            redis_service.start()
        assert wait_until(lambda: client.get("/health").json()["registry"] == "ok")
        # The restarted Redis has no persistence: it is empty. The API keeps its
        # model until a new version is validated, then follows it.
        assert client.get("/health").json()["model_version"] == v1.number
        fresh = RedisRegistry(redis_service.url, namespace=redis_registry.namespace)
        try:
            v_new = publish_validated(fresh, seed=4)
            assert wait_until(lambda: client.get("/models/current").json()["in_sync"])
            served = client.get("/models/current").json()["served"]
            assert served["number"] == v_new.number and served["created_at"] == v_new.created_at
        finally:
            fresh.close()
        stop.set()
        worker.join(HTTP_TIMEOUT_S)
    assert log.failures == [], log.failures[:5]
    assert set(log.versions) <= {v1.number, v_new.number}
