"""The whole loop on the real broker, as deployed: API traffic -> prediction log -> delayed labels -> the daemon.

``streamlearn serve`` (uvicorn) answers ``/predict/batch`` with client ids and
logs every answered row; labels are posted to ``/feedback`` some requests
later, some *before* their prediction, some never. ``streamlearn run
--labels-topic`` joins and learns them while it is SIGKILLed at random
instants, publishing versions the API hot-swaps mid-traffic. Then: every
labelled event was learned exactly once (the checkpoint's ledger), and the
live accuracy the API reports per version (``GET /models/{v}``) is what the
answers and labels give offline.
"""

from __future__ import annotations

import os
import random
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import orjson
import pytest
from daemon_kills import kill_while_learning

from stream.engine.checkpoint import CheckpointStore
from stream.engine.ledger import LearnLedger
from stream.sources.produce import synthetic_rows

N_BATCHES, BATCH = 60, 40
KILLS = 3
pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "stream.cli", *args]


def _seed_registry(registry: Path, tmp_path: Path) -> None:
    """A first validated version, learned from a file, for the API to serve."""
    rows = tmp_path / "seed.jsonl"
    rows.write_bytes(
        b"\n".join(orjson.dumps(r) for r in synthetic_rows("sea", 1_000, seed=3, id_prefix="s-"))
    )
    done = subprocess.run(
        _cli("run", "--file", str(rows), "--registry", str(registry), "--checkpoint-dir", str(tmp_path / "seed-ck"),
             "--window", "count:200", "--publish-every-batches", "2", "--quiet"),
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr


def _serve(registry: Path, bootstrap: str, topics: dict[str, str]) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    proc = subprocess.Popen(
        _cli("serve", "--registry", str(registry), "--host", "127.0.0.1", "--port", str(port), "--log-level",
             "warning", "--bootstrap", bootstrap, "--prediction-log", topics["predictions"],
             "--labels-topic", topics["labels"], "--poll-interval", "0.2"),
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{url}/health/ready", timeout=5).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        assert proc.poll() is None and time.monotonic() < deadline, "the server did not get ready"
        time.sleep(0.1)


def _daemon(
    bootstrap: str, topics: dict[str, str], tmp_path: Path, until_idle: float | None
) -> subprocess.Popen:
    cmd = _cli(
        "run", "--bootstrap", bootstrap, "--topic", topics["predictions"], "--labels-topic", topics["labels"],
        "--registry", str(tmp_path / "registry"), "--checkpoint-dir", str(tmp_path / "ckpt"),
        "--window", "count:100", "--checkpoint-every-batches", "1", "--publish-every-batches", "3",
        "--holdout-min-events", "50", "--ledger", "--quiet", "--dead-letter", f"file:{tmp_path / 'dead.jsonl'}",
    )  # fmt: skip
    if until_idle is not None:
        cmd += ["--until-idle", str(until_idle)]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


class Traffic:
    """Clients of the API: predictions with their own ids, and each label posted before, after or never."""

    def __init__(self, url: str, rng: random.Random) -> None:
        self.url, self.rng = url, rng
        self.answers: dict[
            str, tuple[int, object, list[float]]
        ] = {}  # id -> (version, prediction, probabilities)
        self.truth: dict[str, int] = {}
        self.labelled: set[str] = set()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._run()
        except BaseException as exc:  # reported by the test thread
            self.error = exc

    def _run(self) -> None:
        rows = list(synthetic_rows("sea", N_BATCHES * BATCH, seed=11, id_prefix="r-"))
        due: dict[int, list[dict]] = {}  # batch number -> labels to post then
        with httpx.Client(base_url=self.url, timeout=30) as client:
            for b in range(N_BATCHES):
                batch = rows[b * BATCH : (b + 1) * BATCH]
                early = []
                for row in batch:
                    self.truth[row["id"]] = row["y"]
                    fate = self.rng.random()
                    label = {"id": row["id"], "y": row["y"]}
                    if fate < 0.15:
                        early.append(label)  # before its prediction exists anywhere
                    elif fate < 0.85:
                        due.setdefault(b + self.rng.randint(0, 8), []).append(label)
                if early:
                    self._feedback(client, early)
                answer = client.post(
                    "/predict/batch", json={"rows": [r["x"] for r in batch], "ids": [r["id"] for r in batch]}
                )
                assert answer.status_code == 200, answer.text
                doc = answer.json()
                for i, ident in enumerate(doc["ids"]):
                    self.answers[ident] = (doc["version"], doc["predictions"][i], doc["probabilities"][i])
                if due.get(b):
                    self._feedback(client, due.pop(b))
                time.sleep(0.25)
            for labels in due.values():
                self._feedback(client, labels)

    def _feedback(self, client: httpx.Client, labels: list[dict]) -> None:
        answer = client.post("/feedback", json={"labels": labels})
        assert answer.status_code == 202, answer.text
        self.labelled.update(label["id"] for label in labels)


def test_api_traffic_delayed_labels_and_kills_learn_each_labelled_event_once_and_report_live_accuracy(
    kafka_bootstrap, make_topic, tmp_path
):
    rng = random.Random(int.from_bytes(os.urandom(4), "big"))
    topics = {"predictions": make_topic(partitions=2), "labels": make_topic(partitions=2)}
    registry = tmp_path / "registry"
    _seed_registry(registry, tmp_path)
    server, url = _serve(registry, kafka_bootstrap, topics)
    try:
        traffic = Traffic(url, rng)
        clients = threading.Thread(target=traffic.run, daemon=True)
        clients.start()
        kills = kill_while_learning(
            lambda: _daemon(kafka_bootstrap, topics, tmp_path, until_idle=None),
            tmp_path / "ckpt",
            rng,
            kills=KILLS,
            max_delay_s=1.0,
            go_on=clients.is_alive,
        )
        clients.join(300)
        assert traffic.error is None, traffic.error
        assert len(kills) == KILLS, "the traffic ended before every kill landed"

        final = _daemon(kafka_bootstrap, topics, tmp_path, until_idle=5)
        out, _ = final.communicate(timeout=600)
        assert final.returncode == 0, out.decode()

        health = httpx.get(f"{url}/health", timeout=10).json()["prediction_log"]
        assert health["dropped"] == 0 and health["logged"] == N_BATCHES * BATCH, health

        ledger = LearnLedger.from_snapshot(CheckpointStore(tmp_path / "ckpt").latest().ledger)
        assert not ledger.duplicated(), f"learned twice: {list(ledger.duplicated().items())[:5]}"
        # The time-to-live (1 h) is far longer than the test: every labelled event joins, whenever its label came.
        assert ledger.ids() == traffic.labelled, sorted(traffic.labelled ^ ledger.ids())[:5]

        versions = {version for version, _, _ in traffic.answers.values()}
        assert len(versions) >= 2, f"the API never hot-swapped a version the daemon published: {versions}"
        for version in versions:
            ids = [i for i in traffic.labelled if traffic.answers[i][0] == version]
            if not ids:
                continue
            correct = sum(traffic.answers[i][1] == traffic.truth[i] for i in ids)
            live = httpx.get(f"{url}/models/{version}", timeout=10).json()["live"]
            assert live["n"] == len(ids) and live["correct"] == correct, (version, live)
            assert live["accuracy"] == pytest.approx(correct / len(ids))
    finally:
        server.terminate()
        server.wait(30)
