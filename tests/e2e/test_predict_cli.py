"""``streamlearn predict`` end to end: a features topic in, the prediction log out, on the embedded broker.

Versions are published straight to a directory registry (a seeded model, so
the expected predictions are known); features are produced with kafka-python;
``predict`` runs as a subprocess, and the output topic is read back: one
record per input, keyed like it, carrying the version, and predicting what
the API predicts for the same rows. A version validated mid-run shows in the
later records; a restart goes on where the last run stopped; exactly once
reads each prediction once with read_committed.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import uuid

import orjson
import pytest
from cli_processes import cli, embedded_bootstrap

pytestmark = pytest.mark.e2e

D = 3


@pytest.fixture(scope="module")
def bootstrap():
    yield from embedded_bootstrap()


def publish(registry_dir, seed: int) -> int:
    """Publish and validate a seeded 3-feature classifier; its version number."""
    import torch

    from learners.neural.learner import TorchLearner
    from serving.registry.file_backend import FileRegistry
    from serving.registry.versions import Version

    torch.manual_seed(seed)
    reg = FileRegistry(registry_dir)
    schema = {"n_features": D, "task": "classification", "classes": ["no", "yes"]}
    version = reg.publish(TorchLearner(n_features=D, device="cpu", n_classes=2).state_dict(),
                          Version(number=0, schema=schema))  # fmt: skip
    reg.validate(version.number)
    return version.number


def new_topic(bootstrap: str, prefix: str, partitions: int = 1) -> str:
    from stream.sources.produce import ensure_topic

    topic = f"{prefix}-{uuid.uuid4().hex[:8]}"
    ensure_topic(bootstrap, topic, partitions)
    return topic


def produce(bootstrap: str, topic: str, records: list[tuple[bytes | None, bytes]]) -> None:
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap)
    for key, value in records:
        producer.send(topic, key=key, value=value)
    producer.flush()
    producer.close()


def features(start: int, n: int) -> list[tuple[bytes | None, bytes]]:
    """``n`` feature records, ids ``start``.., every third one keyed (``k<id>``), the rest keyless."""
    out = []
    for i in range(start, start + n):
        doc = {"id": f"r{i}", "x": [i % 7 / 7, (i % 5) - 2.0, i / 100], "ts": 1_700_000_000_000 + i}
        out.append((f"k{i}".encode() if i % 3 == 0 else None, orjson.dumps(doc)))
    return out


def read_topic(
    bootstrap: str, topic: str, at_least: int, *, committed_only: bool = False, wait_s: float = 30
):
    """Every record of ``topic`` as ``(key, decoded value)``, read until ``at_least`` came (or ``wait_s``)."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        isolation_level="read_committed" if committed_only else "read_uncommitted",
    )
    deadline = time.monotonic() + wait_s
    while not consumer.partitions_for_topic(topic):  # predict creates it: maybe not yet
        assert time.monotonic() < deadline, f"no topic {topic}"
        time.sleep(0.2)
    parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))]
    consumer.assign(parts)
    consumer.seek_to_beginning(*parts)
    out = []
    while time.monotonic() < deadline:
        for recs in consumer.poll(timeout_ms=500).values():
            out.extend((r.key, json.loads(r.value)) for r in recs)
        if len(out) >= at_least and consumer.poll(timeout_ms=500) == {}:
            break
    consumer.close()
    return out


def predict(bootstrap, topic, out, tmp_path, *extra):
    return cli("predict", "--bootstrap", bootstrap, "--topic", topic, "--to", out, "--registry", "registry",
               "--until-idle", "2", "--dead-letter", "file:dlq.jsonl", *extra, cwd=tmp_path)  # fmt: skip


def api_answers(registry_dir, number: int, rows: list) -> dict:
    from serving.api.model import ServedModel
    from serving.api.predict import answer_batch
    from serving.registry.file_backend import FileRegistry

    model = ServedModel.load(FileRegistry(registry_dir), number)
    return json.loads(answer_batch(orjson.dumps({"rows": rows}), lambda: model, max_rows=10_000))


def test_one_prediction_per_record_keyed_as_the_api_predicts_and_a_restart_goes_on(bootstrap, tmp_path):
    v1 = publish(tmp_path / "registry", seed=1)
    topic, out = new_topic(bootstrap, "features", partitions=2), f"preds-{uuid.uuid4().hex[:8]}"
    bad = [(None, b"{oops"), (b"wide", orjson.dumps({"id": "w", "x": [1.0, 2.0, 3.0, 4.0]}))]
    produce(bootstrap, topic, features(0, 60) + bad)

    ran = predict(bootstrap, topic, out, tmp_path)
    assert ran.returncode == 0, ran.stderr
    assert "predicted 60 (v1: 60), dead letters 2" in ran.stderr, ran.stderr
    got = read_topic(bootstrap, out, 60)
    assert len(got) == 60
    by_id = {value["id"]: (key, value) for key, value in got}
    assert sorted(by_id) == sorted(f"r{i}" for i in range(60))
    for i in range(60):
        key, value = by_id[f"r{i}"]
        assert key == (f"k{i}".encode() if i % 3 == 0 else f"r{i}".encode())
        assert value["version"] == v1 and value["classes"] == ["no", "yes"]
        assert value["ts"] == 1_700_000_000_000 + i
    rows = [by_id[f"r{i}"][1]["x"] for i in range(60)]
    api = api_answers(tmp_path / "registry", v1, rows)
    assert [by_id[f"r{i}"][1]["prediction"] for i in range(60)] == api["predictions"]
    for i in range(60):
        assert by_id[f"r{i}"][1]["probabilities"] == pytest.approx(api["probabilities"][i], abs=1e-6)
    letters = [json.loads(line) for line in (tmp_path / "dlq.jsonl").read_text().splitlines()]
    reasons = sorted(letter["reason"] for letter in letters)
    assert reasons[0].startswith("bad json") and "expected 3 features, got 4" in reasons[1], reasons

    # A restart reads on from the saved positions: the new records only, none skipped, none again.
    produce(bootstrap, topic, features(60, 25))
    again = predict(bootstrap, topic, out, tmp_path)
    assert again.returncode == 0 and "predicted 25 (v1: 25), dead letters 0" in again.stderr, again.stderr
    ids = sorted(value["id"] for _, value in read_topic(bootstrap, out, 85))
    assert ids == sorted(f"r{i}" for i in range(85))


def test_a_version_validated_mid_run_predicts_later_records_and_sigterm_stops(bootstrap, tmp_path):
    v1 = publish(tmp_path / "registry", seed=1)
    topic, out = new_topic(bootstrap, "features"), f"preds-{uuid.uuid4().hex[:8]}"
    cmd = [sys.executable, "-m", "stream.cli", "predict", "--bootstrap", bootstrap, "--topic", topic,
           "--to", out, "--registry", "registry", "--poll-interval", "0.2", "--dead-letter", "none",
           "--group", f"g-{topic}"]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=tmp_path, stderr=subprocess.PIPE, text=True)
    try:
        produce(bootstrap, topic, features(0, 20))
        first = read_topic(bootstrap, out, 20)
        assert len(first) == 20 and {v["version"] for _, v in first} == {v1}
        v2 = publish(tmp_path / "registry", seed=2)
        # Keep producing until a record comes back predicted by v2 (the swap's timing is the swapper's).
        n, seen = 20, first
        while not any(v["version"] == v2 for _, v in seen) and n < 2_000:
            produce(bootstrap, topic, features(n, 10))
            n += 10
            seen = read_topic(bootstrap, out, n, wait_s=5)
        versions = [v["version"] for _, v in sorted(seen, key=lambda kv: int(kv[1]["id"][1:]))]
        assert v2 in versions, versions
        swap = versions.index(v2)
        # One partition, one model per poll: v1 up to the swap, v2 from there on.
        assert set(versions[:swap]) == {v1} and set(versions[swap:]) == {v2}, versions
        assert len(versions) == n
    finally:
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    assert "stopped (received SIGTERM)" in stderr and "predicting with version 2" in stderr, stderr


def test_exactly_once_commits_predictions_and_offsets_together(bootstrap, tmp_path):
    publish(tmp_path / "registry", seed=1)
    topic, out = new_topic(bootstrap, "features"), f"preds-{uuid.uuid4().hex[:8]}"
    produce(bootstrap, topic, features(0, 30))
    group = f"eo-{topic}"
    ran = predict(bootstrap, topic, out, tmp_path, "--group", group, "--exactly-once")
    assert ran.returncode == 0 and "predicted 30" in ran.stderr, ran.stderr
    produce(bootstrap, topic, features(30, 10))
    again = predict(bootstrap, topic, out, tmp_path, "--group", group, "--exactly-once")
    assert again.returncode == 0 and "predicted 10 (v1: 10)" in again.stderr, again.stderr
    ids = sorted(v["id"] for _, v in read_topic(bootstrap, out, 40, committed_only=True))
    assert ids == sorted(f"r{i}" for i in range(40))


def test_no_version_yet_with_no_wait_is_one_line_and_exit_2(bootstrap, tmp_path):
    (tmp_path / "registry").mkdir()
    topic = new_topic(bootstrap, "features")
    ran = predict(bootstrap, topic, "preds", tmp_path, "--no-wait")
    assert ran.returncode == 2, ran.stderr
    lines = ran.stderr.strip().splitlines()
    assert len(lines) == 1 and "no validated version" in lines[0], ran.stderr


def test_a_killed_run_loses_nothing_on_restart(bootstrap, tmp_path):
    publish(tmp_path / "registry", seed=1)
    topic, out = new_topic(bootstrap, "features", partitions=2), f"preds-{uuid.uuid4().hex[:8]}"
    produce(bootstrap, topic, features(0, 3000))
    cmd = [sys.executable, "-m", "stream.cli", "predict", "--bootstrap", bootstrap, "--topic", topic,
           "--to", out, "--registry", "registry", "--max-poll-records", "50", "--dead-letter", "none"]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=tmp_path, stderr=subprocess.DEVNULL)
    try:
        read_topic(bootstrap, out, 1)  # killed once it has produced something, wherever it is then
    finally:
        proc.kill()
        proc.wait(30)
    again = predict(bootstrap, topic, out, tmp_path)
    assert again.returncode == 0, again.stderr
    ids = {value["id"] for _, value in read_topic(bootstrap, out, 3000)}
    # At least once: every record predicted (some perhaps twice, those of the poll the kill cut).
    assert ids == {f"r{i}" for i in range(3000)}
