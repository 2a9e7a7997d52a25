"""The API's side of the feedback loop, in process: the prediction log, shadow scores, /feedback, live figures.

The producer is a fake (a list of what was sent, futures that succeed or
fail at once), injected through ``create_app(producer_factory=...)`` or
straight into :class:`PredictionLog`; the log's queue is driven by hand
(``drain_once``) where a test needs it deterministic. The real broker is
tests/integration/test_feedback_loop_services.py's.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from fastapi.testclient import TestClient

from learners.neural.learner import TorchLearner
from serving.api.app import create_app
from serving.api.live import LiveMetrics
from serving.api.model import ServedModel
from serving.api.predict import Answered
from serving.api.prediction_log import PredictionLog
from serving.registry.file_backend import FileRegistry
from serving.registry.versions import Version
from serving.settings import ServingSettings
from stream.core.feedback import decode_label, decode_prediction

N_FEATURES = 3
#: How long the log's thread may take to hand rows to the fake producer; reaching it is a failure.
DEADLINE_S = 30.0


class Future:
    def __init__(self, error: Exception | None = None) -> None:
        self.error = error

    def add_callback(self, fn):
        if self.error is None:
            fn(None)

    def add_errback(self, fn):
        if self.error is not None:
            fn(self.error)

    def get(self, timeout=None):
        if self.error is not None:
            raise self.error


class FakeProducer:
    """Keeps what it is sent; ``fail_send`` makes ``send`` raise, ``fail_delivery`` fails each future."""

    def __init__(self, fail_send: Exception | None = None, fail_delivery: Exception | None = None) -> None:
        self.sent: list[tuple[str, bytes, bytes]] = []
        self.fail_send, self.fail_delivery = fail_send, fail_delivery
        self.flushed = self.closed = False

    def send(self, topic, value=None, key=None):
        if self.fail_send is not None:
            raise self.fail_send
        self.sent.append((topic, key, value))
        return Future(self.fail_delivery)

    def flush(self, timeout=None):
        self.flushed = True

    def close(self, timeout=None):
        self.closed = True

    def on(self, topic: str) -> list[tuple[bytes, bytes]]:
        return [(key, value) for t, key, value in self.sent if t == topic]


def no_broker():
    raise ConnectionError("no broker at 127.0.0.1:1")


def publish(reg, *, seed=0, classes=("no", "yes")) -> Version:
    learner = TorchLearner(n_features=N_FEATURES, device="cpu", seed=seed)
    X = np.random.default_rng(seed).normal(size=(64, N_FEATURES)).astype(np.float32)
    learner.learn_batch(X, (X[:, seed % N_FEATURES] > 0).astype(np.int64))
    schema = {"n_features": N_FEATURES, "task": "classification", "classes": list(classes)}
    return reg.publish(learner.state_dict(), Version(number=0, schema=schema))


def wait_until(predicate, timeout=DEADLINE_S) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return False


@pytest.fixture
def reg(tmp_path):
    return FileRegistry(tmp_path / "registry")


def served(reg, number) -> ServedModel:
    return ServedModel.load(reg, number)


# ------------------------------------------------------------------ prediction log
def test_every_answered_row_is_logged_by_its_id_with_the_shadow_versions_answers(reg):
    shadow = publish(reg, seed=1)  # never validated: scored as a shadow only
    served_version = reg.validate(publish(reg, seed=2).number)
    producer = FakeProducer()
    settings = ServingSettings(prediction_log="preds", shadow=(shadow.number,))
    with TestClient(create_app(settings, registry=reg, producer_factory=lambda: producer)) as client:
        one = client.post("/predict", json={"x": [1, 2.5, -3], "id": "r-1"}).json()
        by_header = client.post("/predict", json={"x": {"a": 1}}, headers={"x-request-id": "h-1"})
        assert by_header.status_code == 422  # not logged: only answered rows are
        batch = client.post("/predict/batch", json={"rows": [[0, 0, 0], [5, 5, 5]], "ids": [7, "b"]}).json()
        generated = client.post("/predict", json={"x": [0.5, 0.5, 0.5]}).json()
        assert wait_until(lambda: len(producer.sent) == 4)
        health = client.get("/health").json()["prediction_log"]
    assert producer.flushed and producer.closed  # the lifespan flushed the log at shutdown
    assert health["status"] == "ok" and health["logged"] == 4 and health["dropped"] == 0
    records = {key: decode_prediction(value) for key, value in producer.on("preds")}
    assert sorted(records) == sorted([b"r-1", b"7", b"b", generated["id"].encode()])
    first = records[b"r-1"]
    # x exactly as the client sent it (numbers as JSON numbers), the answer exactly as answered.
    assert first.x == [1, 2.5, -3] and first.version == served_version.number == one["version"]
    assert (first.prediction, first.probabilities) == (one["prediction"], one["probabilities"])
    assert first.classes == ["no", "yes"] and first.ts > 1.7e12
    assert [records[b"7"].prediction, records[b"b"].prediction] == batch["predictions"]
    assert records[b"b"].x == [5, 5, 5] and records[b"b"].probabilities == batch["probabilities"][1]
    # The shadow version answered the same rows, as it would have if served.
    expected_labels, expected_proba = served(reg, shadow.number).predict(np.array([[1, 2.5, -3]], np.float32))
    answer = first.shadow[shadow.number]
    assert answer.prediction == ["no", "yes"][int(expected_labels[0])]
    assert answer.probabilities == pytest.approx(expected_proba[0].tolist())
    assert answer.classes == ["no", "yes"]
    assert all(shadow.number in r.shadow for r in records.values())


def _answered(model: ServedModel, ids) -> Answered:
    rows = [[0.1 * i, 0.2, 0.3] for i in range(len(ids))]
    labels, proba = model.predict(np.asarray(rows, np.float32))
    return Answered(tuple(ids), rows, model, labels, proba, 1_000)


def test_a_full_queue_drops_rows_and_counts_them_never_blocks(reg):
    model = served(reg, publish(reg).number)
    producer = FakeProducer()
    plog = PredictionLog("preds", lambda: producer, capacity_rows=3)  # no thread: driven by hand
    plog.offer(_answered(model, ["a", "b"]))
    plog.offer(_answered(model, ["c", "d"]))  # 4 rows would not fit in 3: both dropped
    plog.offer(_answered(model, ["e"]))
    plog.offer(_answered(model, ["f"]))  # the queue is full
    stats = plog.stats()
    assert (stats["queue_depth"], stats["dropped"], stats["status"]) == (3, 3, "degraded")
    assert plog.drain_once() == 3 and plog.drain_once() == 0
    assert [key for key, _ in producer.on("preds")] == [b"a", b"b", b"e"]
    assert plog.stats()["logged"] == 3 and plog.stats()["status"] == "ok"


def test_without_a_broker_requests_are_answered_and_rows_dropped(reg):
    reg.validate(publish(reg).number)
    settings = ServingSettings(prediction_log="preds", prediction_log_queue_rows=2)
    with TestClient(create_app(settings, registry=reg, producer_factory=no_broker)) as client:
        for i in range(5):
            assert client.post("/predict", json={"x": [0.1, 0.2, 0.3], "id": i}).status_code == 200
        health = client.get("/health").json()
        metrics = client.get("/metrics").text
    assert health["ready"] and health["prediction_log"]["status"] == "degraded"
    assert health["prediction_log"]["dropped"] == 3 and health["prediction_log"]["queue_depth"] == 2
    assert "no broker at 127.0.0.1:1" in health["prediction_log"]["last_error"]
    assert "streamlearn_prediction_log_dropped_total 3.0" in metrics
    assert "streamlearn_prediction_log_queue_depth 2.0" in metrics
    assert "streamlearn_prediction_log_up 0.0" in metrics


def test_send_and_delivery_failures_are_counted_as_send_errors(reg):
    model = served(reg, publish(reg).number)
    refusing = PredictionLog("preds", lambda: FakeProducer(fail_send=TimeoutError("no metadata")))
    refusing.offer(_answered(model, ["a", "b"]))
    assert refusing.drain_once() == 2
    assert refusing.stats()["send_errors"] == 2 and refusing.stats()["status"] == "degraded"
    undelivered = PredictionLog("preds", lambda: FakeProducer(fail_delivery=OSError("broker gone")))
    undelivered.offer(_answered(model, ["a"]))
    undelivered.drain_once()
    stats = undelivered.stats()
    assert (stats["send_errors"], stats["logged"], stats["in_flight"]) == (1, 0, 0)
    assert "broker gone" in stats["last_error"]


def test_shadow_scoring_is_skipped_and_counted_while_the_log_is_behind(reg):
    model = served(reg, publish(reg).number)
    shadow = served(reg, publish(reg, seed=1).number)
    producer = FakeProducer()
    plog = PredictionLog(
        "preds", lambda: producer, batch_rows=1, shadow_skip_rows=0, shadows=lambda: [shadow]
    )
    plog.offer(_answered(model, ["a"]))
    plog.offer(_answered(model, ["b"]))
    plog.drain_once()  # "b" still waits behind "a": no shadow for "a"
    plog.drain_once()
    records = {key: decode_prediction(value) for key, value in producer.on("preds")}
    assert records[b"a"].shadow == {} and shadow.version.number in records[b"b"].shadow
    assert (plog.stats()["shadow_skipped"], plog.stats()["shadow_scored"]) == (1, 1)


# ------------------------------------------------------------------ /feedback
@pytest.fixture
def labels_client(reg):
    producer = FakeProducer()
    settings = ServingSettings(labels_topic="labels", max_batch_rows=3)
    with TestClient(create_app(settings, registry=reg, producer_factory=lambda: producer)) as client:
        yield client, producer


def test_feedback_writes_labels_keyed_by_id_and_says_how_many(labels_client):
    client, producer = labels_client
    one = client.post("/feedback", json={"id": "r-1", "y": "yes", "ts": 1764547260000})
    assert one.status_code == 202 and one.json() == {"accepted": 1}
    several = client.post("/feedback", json={"labels": [{"id": 7, "y": 0}, {"id": "b", "y": 1.5}]})
    assert several.status_code == 202 and several.json() == {"accepted": 2}
    labels = [(key, decode_label(value)) for key, value in producer.on("labels")]
    assert [(key, label.id, label.y, label.ts) for key, label in labels] == [
        (b"r-1", "r-1", "yes", 1764547260000),
        (b"7", "7", 0, None),
        (b"b", "b", 1.5, None),
    ]


@pytest.mark.parametrize(
    "body, message",
    [
        ({"y": 1}, "Field required"),
        ({"id": "r", "y": None}, '"y" is the label'),
        ({"id": "r"}, "Field required"),
        ({"id": True, "y": 1}, "not bool"),
        ({"id": "x" * 201, "y": 1}, "1 to 200 characters"),
        ({"id": "r", "y": 1, "ts": "yesterday"}, "epoch milliseconds"),
        ({"id": "r", "y": 1, "ts": -5}, "not negative"),
        ({"id": "r", "y": 1, "ts": 1e20}, "below 2**62"),  # not a 503 to retry forever
        ({"labels": [{"id": "a", "y": 1}, {"id": "b"}]}, "Field required"),
        ({"labels": "a"}, "valid list"),
    ],
)
def test_bad_labels_are_422_with_a_message_and_nothing_is_written(labels_client, body, message):
    client, producer = labels_client
    resp = client.post("/feedback", json=body)
    assert resp.status_code == 422, resp.text
    assert message in " ".join(error["msg"] for error in resp.json()["detail"]), resp.text
    assert producer.sent == []


def test_feedback_limits_and_outages(reg, labels_client):
    client, _ = labels_client
    too_many = client.post("/feedback", json={"labels": [{"id": i, "y": 1} for i in range(4)]})
    assert too_many.status_code == 413 and "maximum of 3" in too_many.text
    assert (
        client.post(
            "/feedback", content=b"{not json", headers={"content-type": "application/json"}
        ).status_code
        == 422
    )
    with TestClient(create_app(ServingSettings(), registry=reg)) as off:
        resp = off.post("/feedback", json={"id": "r", "y": 1})
        assert resp.status_code == 404 and "--labels-topic" in resp.json()["detail"]
    for factory in (no_broker, lambda: FakeProducer(fail_delivery=TimeoutError("not acknowledged"))):
        with TestClient(
            create_app(ServingSettings(labels_topic="labels"), registry=reg, producer_factory=factory)
        ) as down:
            resp = down.post("/feedback", json={"id": "r", "y": 1})
            assert resp.status_code == 503 and "labels not recorded" in resp.json()["detail"], resp.text


# ------------------------------------------------------------------ live figures
LIVE = {
    "updated_at": 1.0,
    "served": {
        "1": {
            "n": 120,
            "task": "classification",
            "accuracy": 0.9,
            "log_loss": 0.25,
            "mae": None,
            "flagged": False,
        }
    },
    "shadow": {"2": {"n": 118, "accuracy": 0.95, "log_loss": None, "flagged": True, "flag_reason": "x"}},
}


def test_models_by_version_and_current_carry_the_live_figures(reg):
    first = reg.validate(publish(reg).number)
    second = publish(reg, seed=1)
    reg.record_live(LIVE)
    with TestClient(create_app(ServingSettings(), registry=reg)) as client:
        one = client.get(f"/models/{first.number}").json()
        assert one["number"] == first.number and one["status"] == "validated"
        assert one["live"] == LIVE["served"]["1"] and one["shadow_live"] is None
        two = client.get(f"/models/{second.number}").json()
        assert two["live"] is None and two["shadow_live"] == LIVE["shadow"]["2"]
        missing = client.get("/models/99")
        assert missing.status_code == 404 and "99" in missing.json()["detail"]
        current = client.get("/models/current").json()
        assert current["served"]["number"] == first.number and current["live"] == LIVE["served"]["1"]


def test_metrics_show_live_gauges_per_version_and_role(reg):
    reg.validate(publish(reg).number)
    reg.record_live(LIVE)
    with TestClient(create_app(ServingSettings(), registry=reg)) as client:
        lines = client.get("/metrics").text.splitlines()
    assert 'streamlearn_live_accuracy{role="served",version="1"} 0.9' in lines
    assert 'streamlearn_live_accuracy{role="shadow",version="2"} 0.95' in lines
    assert 'streamlearn_live_log_loss{role="served",version="1"} 0.25' in lines
    assert 'streamlearn_live_labelled_total{role="served",version="1"} 120.0' in lines
    assert 'streamlearn_live_flagged{role="shadow",version="2"} 1.0' in lines
    assert not any(line.startswith("streamlearn_live_mae{") for line in lines)  # null: not computed
    assert not any('role="shadow",version="2"' in line for line in lines if "log_loss" in line)


class FlakyRegistry:
    def __init__(self) -> None:
        self.reads, self.down = 0, False

    def live(self):
        self.reads += 1
        if self.down:
            raise ConnectionError("registry down")
        return LIVE


def test_live_document_is_read_at_most_once_per_ttl_and_kept_while_the_registry_is_down():
    now = [0.0]
    reg = FlakyRegistry()
    live = LiveMetrics(reg, ttl_s=1.0, clock=lambda: now[0])
    for _ in range(10):
        assert live.entry(1)["accuracy"] == 0.9
    assert reg.reads == 1
    reg.down, now[0] = True, 1.5
    assert live.entry(1)["accuracy"] == 0.9 and list(live.collect())  # the last good one, no error
    assert reg.reads == 2
