"""Distributed full retrain and reconciliation on the real broker.

- A 2-process gloo retrain through torchrun matches a single-process retrain
  of the same range and seed: weights within 1e-4 (absolute), the same
  predictions on the range. Only the order of floating-point sums differs.
- A daemon with ``--retrain-every-events`` adopts a retrain while records keep
  arriving, and its ledger proves every event learned exactly once across
  the swap (retrain range + catch-up + head-to-head + after).
- A retrain whose worker crashes is reported (``retrain_failed``) and the
  daemon learns on to the end of the stream.

The daemon tests wait on events, never on a clock: the stream lasts until the
audit event the test is about is in the registry, however long the retrain
takes on this machine; the daemon runs without ``--until-idle`` (a pause of
the stream -- a starved producer, a busy broker -- must not stop it before the
candidate is judged) and is stopped with SIGTERM once its checkpoint shows the
whole stream learned.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable

import numpy as np
import orjson
import pytest
from calibrated_learner import ONE_PASS_PER_WINDOW

from serving.registry.file_backend import FileRegistry
from stream.engine.checkpoint import CheckpointStore
from stream.reconcile.spec import RetrainSpec
from stream.reconcile.worker import retrain
from stream.sources.produce import SyntheticStream, produce, synthetic_rows

pytestmark = pytest.mark.slow

LEARNER = {
    "model": "mlp",
    "model_options": ("hidden=[16]",),
    "lr": 0.01,
    "device": "cpu",
    "seed": 5,
    "n_features": 10,
}
WEIGHT_TOLERANCE = 1e-4


def cli(*args: str, timeout: float = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "stream.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def test_two_process_gloo_retrain_matches_a_single_process_one(kafka_bootstrap, make_topic, tmp_path):
    topic = make_topic(partitions=3)
    produce(kafka_bootstrap, topic, SyntheticStream(n=12_000, generator="hyperplane", seed=11))
    base = RetrainSpec(
        bootstrap=kafka_bootstrap,
        topics=(topic,),
        end="3500",
        learner=LEARNER,
        epochs=2,
        batch_size=128,
        shards=4,
    )

    single = retrain(
        RetrainSpec(
            **{
                **json.loads(base.to_json()),
                "registry": str(tmp_path / "one"),
                "out_dir": str(tmp_path / "job-one"),
            }
        )
    )
    ran = cli(
        "retrain",
        "--bootstrap",
        kafka_bootstrap,
        "--topic",
        topic,
        "--to",
        "3500",
        "--nproc",
        "2",
        "--model",
        "mlp",
        "--model-option",
        "hidden=[16]",
        "--lr",
        "0.01",
        "--device",
        "cpu",
        "--seed",
        "5",
        "--n-features",
        "10",
        "--epochs",
        "2",
        "--batch-size",
        "128",
        "--shards",
        "4",
        "--registry",
        str(tmp_path / "two"),
        "--job-dir",
        str(tmp_path / "job-two"),
    )
    assert ran.returncode == 0, ran.stderr[-3000:]
    assert "2 process(es) (gloo" in ran.stderr
    double = json.loads((tmp_path / "job-two" / "result.json").read_text())

    assert single.world_size == 1 and double["world_size"] == 2 and double["backend"] == "gloo"
    assert single.events == double["events"] == 3 * 3500
    assert single.ranges == double["ranges"] == {f"{topic}:{p}": [0, 3500] for p in range(3)}
    a = FileRegistry(tmp_path / "one").load_state(single.version)
    b = FileRegistry(tmp_path / "two").load_state(double["version"])
    for name, tensor in a["model"].items():
        diff = (tensor.double() - b["model"][name].double()).abs().max().item()
        scale = max(1.0, tensor.double().abs().max().item())
        assert diff <= WEIGHT_TOLERANCE * scale, f"{name}: {diff}"
    assert abs(single.metrics["train_accuracy"] - double["metrics"]["train_accuracy"]) < 1e-3
    version = FileRegistry(tmp_path / "two").get(double["version"])
    assert version.status == "candidate" and version.offsets == {f"{topic}:{p}": (0, 3499) for p in range(3)}
    assert "full retrain" in version.note and version.events_learned == 10_500
    # A retrained model is a real model: it beats chance clearly on data it did not see.
    from learners.choice import LearnerChoice

    model = LearnerChoice(**{**LEARNER, "model_options": ("hidden=[16]",)}).factory()(10)
    model.load_state_dict(b)
    rows = list(_rows(12_000, seed=11))[11_000:]
    X = np.array([r["x"] for r in rows], np.float32)
    y = np.array([r["y"] for r in rows])
    assert (model.predict_batch(X) == y).mean() > 0.8


def _rows(n: int, seed: int):
    from stream.sources.produce import synthetic_rows

    return synthetic_rows("hyperplane", n, seed=seed)


class _Producer(threading.Thread):
    """Appends the hyperplane stream (ids 0, 1, 2, ...) round-robin over 3 partitions at a fixed rate.

    It runs until :meth:`stop_after` ends it; ``sent`` is the stream's length once the thread is joined.
    """

    def __init__(self, bootstrap: str, topic: str, rate: float) -> None:
        super().__init__(daemon=True)
        self.bootstrap, self.topic, self.rate = bootstrap, topic, rate
        self.sent = 0
        self.error: BaseException | None = None
        self._stop_at: int | None = None

    def stop_after(self, more: int, multiple: int = 1) -> None:
        """End the stream at least ``more`` records after those sent so far, at a multiple of ``multiple``."""
        self._stop_at = -(-(self.sent + more) // multiple) * multiple

    def run(self) -> None:
        from kafka import KafkaProducer

        try:
            producer = KafkaProducer(bootstrap_servers=self.bootstrap, linger_ms=5, acks="all")
            try:
                started = time.monotonic()
                for i, row in enumerate(synthetic_rows("hyperplane", 10**12, seed=21)):
                    if self._stop_at is not None and i >= self._stop_at:
                        break
                    producer.send(self.topic, value=orjson.dumps(row), partition=i % 3)
                    self.sent = i + 1
                    if self.sent % 100 == 0:
                        time.sleep(max(0.0, self.sent / self.rate - (time.monotonic() - started)))
                producer.flush()
            finally:
                producer.close()
        except BaseException as exc:  # noqa: BLE001 -- reported by the test
            self.error = exc


DAEMON_LOG = "daemon.log"
WINDOW = 300
#: How long a test waits for the audit event it needs (a retrain takes about 10-30 s on 2 cores), and then
#: for the daemon to learn the rest of the stream. Generous: reaching them is a failure, not a shorter test.
EVENT_DEADLINE_S = 600
LEARNED_DEADLINE_S = 600
AFTER_EVENT = 3_000  # records appended once that event is seen: learned after it


def _daemon(bootstrap: str, topic: str, tmp_path, *extra: str, env: dict | None = None) -> subprocess.Popen:
    # No --until-idle: the test stops the daemon (SIGTERM) when it has learned the whole stream.
    cmd = [
        sys.executable,
        "-m",
        "stream.cli",
        "-v",
        "run",
        "--bootstrap",
        bootstrap,
        "--topic",
        topic,
        "--window",
        f"count:{WINDOW}",
        # The learner these scenarios were calibrated with (the default before issue 18).
        "--model",
        "logistic",
        *ONE_PASS_PER_WINDOW,
        "--checkpoint-dir",
        str(tmp_path / "ckpt"),
        "--registry",
        str(tmp_path / "reg"),
        "--ledger",
        "--quiet",
        "--dead-letter",
        "none",
        "--n-features",
        "10",
        "--device",
        "cpu",
        "--publish-every-batches",
        "10",
        "--retrain-nproc",
        "2",
        "--retrain-epochs",
        "2",
        "--retrain-shards",
        "4",
        "--retrain-batch-size",
        "128",
        *extra,
    ]
    # stderr goes to a file: a pipe nobody reads while the daemon runs for minutes could fill and block it.
    with open(tmp_path / DAEMON_LOG, "w") as log:
        return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log, env={**os.environ, **(env or {})})


def _log(tmp_path) -> str:
    return Path(tmp_path, DAEMON_LOG).read_text()[-3000:]


def _learned(tmp_path) -> int:
    """Events learned per the daemon's newest checkpoint (written atomically; read without its lock)."""
    ckpt = CheckpointStore(tmp_path / "ckpt").latest() if (tmp_path / "ckpt").exists() else None
    return ckpt.counters["events_learned"] if ckpt is not None else 0


def _wait_for(what: str, seen: Callable[[], bool], producer: _Producer, daemon: subprocess.Popen, tmp_path):
    """Keep the stream going until ``seen()``; fail if the daemon or the producer stops first, or at the deadline.

    Returns the seconds waited.
    """
    started = time.monotonic()
    while not seen():
        if daemon.poll() is not None:
            pytest.fail(f"the daemon exited (rc {daemon.returncode}) before {what}:\n{_log(tmp_path)}")
        if not producer.is_alive():
            pytest.fail(f"the producer stopped before {what}: {producer.error!r}")
        if time.monotonic() - started > EVENT_DEADLINE_S:
            pytest.fail(f"no {what} within {EVENT_DEADLINE_S}s:\n{_log(tmp_path)}")
        time.sleep(0.5)
    return time.monotonic() - started


def _end_stream(producer: _Producer) -> int:
    """End the stream AFTER_EVENT records from now, at a window boundary; its length.

    A whole number of count windows: every record is learned without the end-of-input flush that only an
    idle stop performs (a SIGTERM checkpoints the open window's residue, unlearned).
    """
    producer.stop_after(AFTER_EVENT, multiple=WINDOW)
    producer.join(timeout=LEARNED_DEADLINE_S)
    assert not producer.is_alive(), "the producer did not finish the stream"
    assert producer.error is None, producer.error
    return producer.sent


def _stop_when_learned(daemon: subprocess.Popen, n: int, tmp_path) -> str:
    """Wait until the daemon's checkpoint shows all ``n`` events learned, SIGTERM it, check a clean exit; its log."""
    deadline = time.monotonic() + LEARNED_DEADLINE_S
    while _learned(tmp_path) < n:
        if daemon.poll() is not None:
            pytest.fail(
                f"the daemon exited (rc {daemon.returncode}) before learning {n:,}:\n{_log(tmp_path)}"
            )
        if time.monotonic() > deadline:
            pytest.fail(
                f"{_learned(tmp_path):,} of {n:,} learned after {LEARNED_DEADLINE_S}s:\n{_log(tmp_path)}"
            )
        time.sleep(0.5)
    daemon.send_signal(signal.SIGTERM)
    try:
        daemon.wait(timeout=120)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the daemon did not stop on SIGTERM:\n{_log(tmp_path)}")
    err = Path(tmp_path, DAEMON_LOG).read_text()
    assert daemon.returncode == 0, err[-3000:]
    assert "stopped (received SIGTERM)" in err, err[-3000:]
    return err


def _cleanup(producer: _Producer, daemon: subprocess.Popen) -> None:
    """After a failure: end the stream and the daemon (no-ops after a pass)."""
    producer.stop_after(0)
    producer.join(timeout=30)
    if daemon.poll() is None:
        daemon.kill()
        daemon.wait()


def test_an_adopted_retrain_learns_every_event_exactly_once_across_the_swap(
    kafka_bootstrap, make_topic, tmp_path
):
    topic = make_topic(partitions=3)
    # The stream lasts until the adoption is in the audit log: the candidate always meets a live stream for
    # its catch-up and head-to-head, and the adopted model learns the AFTER_EVENT records after the swap.
    producer = _Producer(kafka_bootstrap, topic, rate=1_500)
    producer.start()
    daemon = _daemon(
        kafka_bootstrap,
        topic,
        tmp_path,
        "--retrain-every-events",
        "6000",
        "--retrain-holdout-events",
        "1200",
        "--retrain-tolerance",
        "1.0",
    )
    registry = FileRegistry(tmp_path / "reg")
    try:
        waited = _wait_for(
            "retrain_adopted",
            lambda: bool(registry.events(kind="retrain_adopted")),
            producer,
            daemon,
            tmp_path,
        )
        n = _end_stream(producer)
        print(f"adoption seen after {waited:.1f}s; stream of {n:,} records")
        err = _stop_when_learned(daemon, n, tmp_path)
    finally:
        _cleanup(producer, daemon)

    adopted = registry.events(kind="retrain_adopted")
    assert adopted, (
        f"no retrain was adopted: {[e.to_dict() for e in registry.events(limit=50)]}\n{err[-3000:]}"
    )
    first = adopted[-1]  # newest first
    evidence = first.details
    assert evidence["catchup_events"] > 0 and evidence["holdout_events"] >= 1200, evidence
    assert evidence["retrain_events"] > 0 and evidence["processes"] == 2
    version = registry.get(first.version)
    assert version.parent == evidence["candidate"] and version.status in ("validated", "rolled_back")
    assert registry.get(evidence["candidate"]).note.startswith("daemon retrain")

    ran = cli("inspect", str(tmp_path / "ckpt"), "--json", "--ids")
    info = json.loads(ran.stdout)
    counts = dict(zip(info["ledger"]["ids"], info["ledger"]["counts"]))
    assert info["events_learned"] == n
    twice = {k: v for k, v in counts.items() if v != 1}
    missing = {str(i) for i in range(n)} - set(counts)
    assert not twice and not missing, (
        f"learned twice: {list(twice)[:10]}, never learned: {sorted(missing)[:10]}"
    )


def test_a_crashing_retrain_is_reported_and_the_daemon_keeps_learning(kafka_bootstrap, make_topic, tmp_path):
    topic = make_topic(partitions=3)
    producer = _Producer(kafka_bootstrap, topic, rate=1_500)
    producer.start()
    daemon = _daemon(
        kafka_bootstrap,
        topic,
        tmp_path,
        "--retrain-every-events",
        "3000",
        env={"STREAMLEARN_RETRAIN_FAULT": "1:3"},
    )  # rank 1 raises at its third step
    registry = FileRegistry(tmp_path / "reg")
    try:
        # The stream lasts until a crash is reported (not merely a job stopped because the daemon stopped).
        waited = _wait_for(
            "crash report",
            lambda: any(
                e.details.get("exit_code") is not None for e in registry.events(kind="retrain_failed")
            ),
            producer,
            daemon,
            tmp_path,
        )
        n = _end_stream(producer)
        print(f"crash report seen after {waited:.1f}s; stream of {n:,} records")
        err = _stop_when_learned(daemon, n, tmp_path)
    finally:
        _cleanup(producer, daemon)
    failed = registry.events(kind="retrain_failed")
    assert failed, err[-3000:]
    crashes = [e for e in failed if e.details.get("exit_code") is not None]
    assert crashes, [e.to_dict() for e in failed]
    crash = crashes[-1]
    assert crash.details["exit_code"] not in (0, None) and "injected fault" in crash.reason, crash.to_dict()
    assert os.path.exists(crash.details["log"])
    assert "failed" in err and "full retrains:" in err
    info = json.loads(cli("inspect", str(tmp_path / "ckpt"), "--json").stdout)
    assert info["events_learned"] == n  # the daemon learned to the end of the stream regardless


def test_two_launchers_meet_through_the_rendezvous_as_two_nodes(kafka_bootstrap, make_topic, tmp_path):
    """The README's multi-node command, with both "nodes" on this machine (the c10d store on 127.0.0.1)."""
    from stream.sources.embedded_broker import free_port

    topic = make_topic(partitions=3)
    produce(kafka_bootstrap, topic, SyntheticStream(n=3_000, generator="hyperplane", seed=4))
    port = free_port()
    node = [
        sys.executable,
        "-m",
        "stream.cli",
        "retrain",
        "--bootstrap",
        kafka_bootstrap,
        "--topic",
        topic,
        "--nproc",
        "1",
        "--nnodes",
        "2",
        "--rdzv-endpoint",
        f"127.0.0.1:{port}",
        "--rdzv-id",
        "test-nodes",
        "--device",
        "cpu",
        "--epochs",
        "1",
        "--registry",
        str(tmp_path / "reg"),
    ]
    env = {**os.environ, "GLOO_SOCKET_IFNAME": "lo"}  # two hosts would use their real interface
    nodes = [
        subprocess.Popen(
            [*node, "--job-dir", str(tmp_path / f"node{i}")],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(2)
    ]
    outputs = [p.communicate(timeout=240)[0] for p in nodes]
    assert [p.returncode for p in nodes] == [0, 0], outputs
    results = [json.loads((tmp_path / f"node{i}" / "result.json").read_text()) for i in range(2)]
    assert [r["world_size"] for r in results] == [2, 2]
    assert results[0]["version"] == results[1]["version"] is not None  # one candidate, known on both nodes
    assert len(FileRegistry(tmp_path / "reg").history()) == 1
