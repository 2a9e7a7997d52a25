"""The CLI end to end on the real broker: produce, run, inspect, dead letters, user errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from kafka import KafkaConsumer

from stream.sources.embedded_broker import free_port

GROUP_ENV = {"STREAMLEARN_KAFKA_SESSION_TIMEOUT_MS": "6000", "STREAMLEARN_KAFKA_HEARTBEAT_INTERVAL_MS": "500"}
#: Generous deadlines for events (dead letters read back, a server ready): reaching one is a failure.
DEADLINE_S = 180


def cli(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "stream.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **GROUP_ENV},
    )


def test_produce_run_inspect_with_dead_letters_on_the_dlq_topic(
    kafka_bootstrap, unique_name, tmp_path, kafka_consumer_settings
):
    topic = unique_name
    produced = cli(
        "produce",
        "--bootstrap",
        kafka_bootstrap,
        "--topic",
        topic,
        "--events",
        "3000",
        "--generator",
        "sea",
        "--corrupt-every",
        "100",
        "--partitions",
        "3",
    )
    assert produced.returncode == 0, produced.stderr
    ckpt = tmp_path / "ckpt"
    ran = cli(
        "run",
        "--bootstrap",
        kafka_bootstrap,
        "--topic",
        topic,
        "--group",
        unique_name,
        "--window",
        "count:200",
        "--checkpoint-dir",
        str(ckpt),
        "--until-idle",
        "3",
    )
    assert ran.returncode == 0, ran.stderr
    assert "learned 2,970 events" in ran.stderr and "dead letters 30" in ran.stderr
    assert "[streamlearn] learned" in ran.stderr  # live progress lines

    info = json.loads(cli("inspect", str(ckpt), "--json").stdout)
    assert info["events_learned"] == 2970
    assert info["dead_letters"] == {"bad json": 30}
    assert sum(info["offsets"].values()) == 3000
    assert sorted(info["offsets"]) == [f"{topic}:{p}" for p in range(3)]
    assert 0.5 < info["prequential_accuracy"] <= 1.0

    # The run published model versions to the (per-test) default registry.
    from serving.registry.factory import open_registry

    registry = open_registry(os.environ["STREAMLEARN_REGISTRY_URL"])
    versions = registry.history()
    assert versions and registry.current() is not None
    assert "model versions:" in ran.stderr and " validated" in ran.stderr
    assert all(v.schema["n_features"] == 3 for v in versions)

    # Read until the 30 letters are in, however long the group join takes (not until a quiet spell).
    consumer = KafkaConsumer(
        f"{topic}.dlq", group_id=f"{unique_name}-dlq", consumer_timeout_ms=3_000, **kafka_consumer_settings
    )
    try:
        letters = []
        deadline = time.monotonic() + DEADLINE_S
        while len(letters) < 30 and time.monotonic() < deadline:
            for rec in consumer:
                letters.append(rec)
                if len(letters) == 30:
                    break
    finally:
        consumer.close()
    assert len(letters) == 30
    headers = dict(letters[0].headers)
    assert headers["dlq.reason"].startswith(b"bad json") and headers["dlq.topic"] == topic.encode()
    assert all(int(dict(r.headers)["dlq.offset"]) % 1 == 0 for r in letters)


def test_missing_topic_is_a_one_line_error_with_exit_code_2(kafka_bootstrap, unique_name, tmp_path):
    ran = cli(
        "run",
        "--bootstrap",
        kafka_bootstrap,
        "--topic",
        f"{unique_name}-nope",
        "--checkpoint-dir",
        str(tmp_path),
    )
    assert ran.returncode == 2
    assert "not found" in ran.stderr and "Traceback" not in ran.stderr


def test_unreachable_broker_is_a_one_line_error_with_exit_code_2(tmp_path):
    ran = cli(
        "run", "--bootstrap", f"127.0.0.1:{free_port()}", "--topic", "t", "--checkpoint-dir", str(tmp_path)
    )
    assert ran.returncode == 2
    assert "cannot reach Kafka" in ran.stderr or "no Kafka broker answered" in ran.stderr
    assert "Traceback" not in ran.stderr


def test_bad_configuration_is_exit_code_2_before_touching_kafka(tmp_path):
    for args, message in [
        (["--window", "fortnightly"], "window"),
        (["--model", "transformer"], "transformer"),
        (["--partition", "no-number"], "TOPIC:N"),
    ]:
        ran = cli(
            "run",
            "--bootstrap",
            f"127.0.0.1:{free_port()}",
            "--topic",
            "t",
            "--checkpoint-dir",
            str(tmp_path),
            *args,
            timeout=60,
        )
        assert ran.returncode == 2, (args, ran.stderr)
        assert message in ran.stderr and "Traceback" not in ran.stderr


def test_run_without_any_source_explains_the_options(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "STREAMLEARN_KAFKA_BOOTSTRAP"}
    ran = subprocess.run(
        [sys.executable, "-m", "stream.cli", "run", "--topic", "t"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert ran.returncode == 2 and "--bootstrap" in ran.stderr and "streamlearn demo" in ran.stderr


def test_run_publishes_to_redis_and_serve_answers_with_the_validated_version(
    kafka_bootstrap, redis_url, unique_name, tmp_path
):
    """The deployed shape: `streamlearn run` -> Redis registry -> `streamlearn serve` (uvicorn subprocess)."""
    import httpx

    from serving.registry.factory import open_registry

    topic = unique_name
    assert (
        cli(
            "produce",
            "--bootstrap",
            kafka_bootstrap,
            "--topic",
            topic,
            "--events",
            "4000",
            "--generator",
            "agrawal",
        ).returncode
        == 0
    )
    ran = cli(
        "run",
        "--bootstrap",
        kafka_bootstrap,
        "--topic",
        topic,
        "--group",
        unique_name,
        "--window",
        "count:200",
        "--checkpoint-dir",
        str(tmp_path / "ckpt"),
        "--until-idle",
        "3",
        "--registry",
        redis_url,
        "--registry-namespace",
        unique_name,
        "--publish-every-batches",
        "4",
    )
    assert ran.returncode == 0, ran.stderr
    registry = open_registry(redis_url, namespace=unique_name)
    current = registry.current()
    assert current is not None and len(registry.history()) >= 3
    assert sum(hi - lo + 1 for lo, hi in registry.history()[0].offsets.values()) >= 3000

    port = free_port()
    env = {**os.environ, "STREAMLEARN_SERVING_ADMIN_TOKEN": "adm"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "stream.cli",
            "serve",
            "--registry",
            redis_url,
            "--registry-namespace",
            unique_name,
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + DEADLINE_S
        while True:
            try:
                if httpx.get(f"{url}/health/ready", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None, proc.stderr.read()
            assert time.monotonic() < deadline, f"serve not ready after {DEADLINE_S}s"
            time.sleep(0.2)
        resp = httpx.post(f"{url}/predict", json={"x": [0.0] * current.schema["n_features"]}, timeout=60)
        assert resp.status_code == 200 and resp.json()["version"] == current.number
        rolled = httpx.post(
            f"{url}/rollback",
            headers={"Authorization": "Bearer adm"},
            json={"reason": "cli test"},
            timeout=60,
        )
        assert rolled.status_code == 200
        after = httpx.post(f"{url}/predict", json={"x": [0.0] * current.schema["n_features"]}, timeout=60)
        assert after.json()["version"] == rolled.json()["served"] < current.number
    finally:
        proc.terminate()
        proc.wait(20)
        registry.close()


def test_serve_with_an_unreachable_registry_is_a_one_line_error():
    ran = cli(
        "serve", "--registry", f"redis://127.0.0.1:{free_port()}/0", "--port", str(free_port()), timeout=60
    )
    assert ran.returncode == 2 and "unreachable" in ran.stderr and "Traceback" not in ran.stderr


def test_unreadable_checkpoints_refuse_to_start_unless_a_fresh_start_is_asked_for(tmp_path):
    data = tmp_path / "rows.jsonl"
    data.write_text("\n".join(json.dumps({"id": i, "x": [i % 7, 1.0], "y": i % 2}) for i in range(300)))
    ckpt = tmp_path / "ck"
    args = (
        "run",
        "--file",
        str(data),
        "--checkpoint-dir",
        str(ckpt),
        "--until-idle",
        "0.5",
        "--window",
        "count:50",
        "--registry",
        "none",
        "--quiet",
    )
    assert cli(*args, timeout=120).returncode == 0
    damaged = sorted(ckpt.glob("ckpt-*.safetensors"))
    assert damaged
    for path in damaged:
        path.write_bytes(b"not a checkpoint")

    refused = cli(*args, timeout=120)
    assert refused.returncode == 2, refused.stderr
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("streamlearn: error: none of the"), refused.stderr
    assert str(ckpt) in lines[0] and "--on-unreadable-checkpoint fresh" in lines[0]
    assert sorted(ckpt.glob("ckpt-*.safetensors")) == damaged  # nothing learned, nothing moved

    fresh = cli(*args, "--on-unreadable-checkpoint", "fresh", timeout=120)
    assert fresh.returncode == 0, fresh.stderr
    assert "learned 300 events" in fresh.stderr
    assert sorted(p.name for p in ckpt.glob("*.unreadable")) == [p.name + ".unreadable" for p in damaged]
    assert json.loads(cli("inspect", str(ckpt), "--json").stdout)["events_learned"] == 300
