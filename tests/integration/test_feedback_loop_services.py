"""The API's side of the feedback loop against the real broker, through a real uvicorn server on loopback.

Predictions land on the prediction-log topic keyed by the ids the answers
carried, and ``POST /feedback`` lands on the labels topic. With no broker at
all (a closed port), ``/predict`` still answers every request and the rows
that do not fit the log's queue are counted as dropped; ``/feedback`` says 503.
"""

from __future__ import annotations

import socket
import time

import httpx
import numpy as np
import pytest
from kafka import KafkaConsumer

from learners.neural.learner import TorchLearner
from serving.api.app import create_app
from serving.api.server import BackgroundServer
from serving.registry.file_backend import FileRegistry
from serving.registry.versions import Version
from serving.settings import RegistrySettings, ServingSettings
from stream.core.feedback import decode_label, decode_prediction
from stream.core.settings import KafkaSettings

N_FEATURES = 4
#: Generous: a request on a busy machine, records reaching a consumer. Reaching one is a failure.
HTTP_TIMEOUT_S = 60.0
DEADLINE_S = 60.0


def _publish(reg: FileRegistry, seed: int, validate: bool = True) -> Version:
    learner = TorchLearner(n_features=N_FEATURES, device="cpu", seed=seed)
    X = np.random.default_rng(seed).normal(size=(64, N_FEATURES)).astype(np.float32)
    learner.learn_batch(X, (X[:, 0] > 0).astype(np.int64))
    v = reg.publish(learner.state_dict(), Version(number=0, schema={"n_features": N_FEATURES}))
    return reg.validate(v.number, reason="test") if validate else v


def _consume(settings: dict, topic: str, n: int) -> dict[bytes, bytes]:
    """The first ``n`` records of ``topic`` by key, waiting up to the deadline for them."""
    consumer = KafkaConsumer(topic, **settings)
    got: dict[bytes, bytes] = {}
    deadline = time.monotonic() + DEADLINE_S
    try:
        while len(got) < n and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                got.update((r.key, r.value) for r in records)
    finally:
        consumer.close()
    return got


def _closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens once this socket is closed


def test_predictions_and_labels_land_on_their_topics_keyed_by_the_answered_ids(
    tmp_path, kafka_bootstrap, make_topic, kafka_consumer_settings
):
    predictions, labels = make_topic(partitions=1), make_topic(partitions=1)
    reg = FileRegistry(tmp_path / "registry")
    shadow = _publish(reg, seed=3, validate=False)
    served = _publish(reg, seed=1)
    app = create_app(
        ServingSettings(prediction_log=predictions, labels_topic=labels, shadow=(shadow.number,)),
        registry_settings=RegistrySettings(url=str(tmp_path / "registry")),
        kafka_settings=KafkaSettings(bootstrap=kafka_bootstrap),
    )
    with (
        BackgroundServer(app, port=0) as server,
        httpx.Client(base_url=server.url, timeout=HTTP_TIMEOUT_S) as client,
    ):
        answers = [
            client.post("/predict", json={"x": [0.1, 0.2, 0.3, 0.4], "id": "r-1"}).json(),
            client.post("/predict", json={"x": [1, 2, 3, 4]}, headers={"X-Request-Id": "h-1"}).json(),
            client.post("/predict", json={"x": [-1, 0, 1, 2]}).json(),
        ]
        batch = client.post(
            "/predict/batch", json={"rows": [[0, 0, 0, 0], [9, 9, 9, 9]], "ids": [10, 11]}
        ).json()
        answered = {a["id"]: (a["prediction"], a["probabilities"]) for a in answers}
        answered.update(zip(batch["ids"], zip(batch["predictions"], batch["probabilities"])))
        assert {"10", "11", "h-1", "r-1"} < set(answered) and len(answered) == 5
        accepted = client.post("/feedback", json={"labels": [{"id": i, "y": 1} for i in answered]})
        assert accepted.status_code == 202 and accepted.json() == {"accepted": 5}
        single = client.post("/feedback", json={"id": "late", "y": 0, "ts": 1764547260000})
        assert single.status_code == 202, single.text
        logged = _consume(kafka_consumer_settings, predictions, 5)
        health = client.get("/health").json()["prediction_log"]
        metrics = client.get("/metrics").text
    records = {key.decode(): decode_prediction(value) for key, value in logged.items()}
    assert sorted(records) == sorted(answered)
    for ident, record in records.items():
        assert record.id == ident and record.version == served.number
        assert (record.prediction, record.probabilities) == answered[ident]
        assert shadow.number in record.shadow
    assert records["h-1"].x == [1, 2, 3, 4]
    assert health["status"] == "ok" and health["logged"] == 5 and health["dropped"] == 0
    assert "streamlearn_prediction_log_logged_total 5.0" in metrics
    written = {
        key.decode(): decode_label(value)
        for key, value in _consume(kafka_consumer_settings, labels, 6).items()
    }
    assert sorted(written) == sorted([*answered, "late"])
    assert written["late"].ts == 1764547260000 and written["r-1"].y == 1


@pytest.fixture
def no_broker_server(tmp_path):
    reg = FileRegistry(tmp_path / "registry")
    _publish(reg, seed=1)
    app = create_app(
        ServingSettings(prediction_log="predictions", labels_topic="labels", prediction_log_queue_rows=5),
        registry_settings=RegistrySettings(url=str(tmp_path / "registry")),
        kafka_settings=KafkaSettings(bootstrap=f"127.0.0.1:{_closed_port()}"),
    )
    with BackgroundServer(app, port=0) as server:
        yield server


def test_without_a_broker_predict_answers_every_request_and_the_log_counts_its_drops(no_broker_server):
    with httpx.Client(base_url=no_broker_server.url, timeout=HTTP_TIMEOUT_S) as client:
        assert all(
            client.post("/predict", json={"x": [0.5] * N_FEATURES, "id": i}).status_code == 200
            for i in range(20)
        )
        health = client.get("/health").json()
        feedback = client.post("/feedback", json={"id": "r", "y": 1})
        metrics = client.get("/metrics").text
    assert health["ready"] and health["status"] == "ok"  # serving is fine; only the log is degraded
    log = health["prediction_log"]
    assert log["status"] == "degraded" and log["logged"] == 0
    # Five rows wait in the queue for a broker; the other fifteen were dropped, not waited for.
    assert (log["queue_depth"], log["dropped"]) == (5, 15)
    assert "streamlearn_prediction_log_dropped_total 15.0" in metrics
    assert feedback.status_code == 503 and "cannot reach the broker" in feedback.json()["detail"]
