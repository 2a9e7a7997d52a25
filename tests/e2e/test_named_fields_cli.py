"""Named fields end to end through the CLI, as docs/features.md shows them: produce -> run -> serve -> predict.

One embedded broker (tansu) for the module. ``streamlearn produce --generator
clicks`` writes impressions as named fields (ids, categories, missing values);
``run`` infers the schema, learns and publishes; ``inspect`` shows the schema;
``streamlearn serve`` (uvicorn on a real socket) answers a named-field request
with the stream's labels and a wrong-kind field with a 422 naming it. The same
stream written as Avro through a schema file is learned just the same.
"""

from __future__ import annotations

import json
import re
import subprocess
import uuid

import httpx
import pytest
from cli_processes import cli, embedded_bootstrap, serving

pytestmark = pytest.mark.e2e

N = 4_000
AVRO_SCHEMA = {
    "type": "record",
    "name": "Impression",
    "fields": [
        {"name": "id", "type": "string"},
        {"name": "ts", "type": "long"},
        {
            "name": "x",
            "type": {
                "type": "record",
                "name": "Fields",
                "fields": [
                    {"name": "user", "type": "string"},
                    {"name": "ad", "type": "string"},
                    {"name": "device", "type": "string"},
                    {"name": "country", "type": "string"},
                    {"name": "amount", "type": ["null", "double"]},
                    {"name": "age", "type": ["null", "long"]},
                    {"name": "hour", "type": "long"},
                    {"name": "is_new", "type": "boolean"},
                ],
            },
        },
        {"name": "y", "type": "long"},
    ],
}


@pytest.fixture(scope="module")
def bootstrap():
    yield from embedded_bootstrap()


def produce_clicks(bootstrap: str, tmp_path, *extra: str) -> str:
    topic = f"clicks-{uuid.uuid4().hex[:8]}"
    made = cli("produce", "--bootstrap", bootstrap, "--topic", topic, "--generator", "clicks",
               "--events", str(N), "--partitions", "1", *extra, cwd=tmp_path)  # fmt: skip
    assert made.returncode == 0, made.stderr
    return topic


def learn(bootstrap: str, topic: str, tmp_path, *extra: str) -> subprocess.CompletedProcess:
    ran = cli("run", "--bootstrap", bootstrap, "--topic", topic, "--until-idle", "3", "--window", "count:100",
              "--registry", "registry", "--checkpoint-dir", "ckpt", "--group", f"g-{topic}", *extra, cwd=tmp_path)  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    assert f"learned {N:,} events" in ran.stderr, ran.stderr
    return ran


def current_features(tmp_path) -> dict:
    from serving.registry.file_backend import FileRegistry

    return FileRegistry(tmp_path / "registry").current().schema["features"]


def test_a_named_field_stream_is_learned_inspected_and_served(bootstrap, tmp_path):
    topic = produce_clicks(bootstrap, tmp_path)
    ran = learn(bootstrap, topic, tmp_path)
    assert "inferred a feature schema" in ran.stderr
    assert re.search(r"\n  - \{\"name\": \"user\", \"type\": \"categorical\"", ran.stderr), ran.stderr
    shown = cli("inspect", "ckpt", cwd=tmp_path)
    assert shown.returncode == 0 and '{"name": "ad", "type": "categorical"' in shown.stdout, shown.stdout
    assert "classes        : 2 (integer labels)" in shown.stdout
    # A full retrain reads the topic with the served version's schema and publishes a candidate that has it.
    retrained = cli("retrain", "--bootstrap", bootstrap, "--topic", topic, "--registry", "registry",
                    "--nproc", "2", "--shards", "2", "--epochs", "1", cwd=tmp_path)  # fmt: skip
    assert retrained.returncode == 0, retrained.stderr
    from serving.registry.file_backend import FileRegistry

    candidate = max(FileRegistry(tmp_path / "registry").history(), key=lambda v: v.number)
    assert candidate.status == "candidate" and candidate.schema["features"] == current_features(tmp_path)

    with serving(tmp_path / "registry") as url:
        row = {"user": "u_12", "ad": "a_7", "device": "ios", "country": "FR", "amount": 9.5, "age": None,
               "hour": 20, "is_new": False}  # fmt: skip
        ok = httpx.post(f"{url}/predict", json={"x": row}, timeout=10)
        assert ok.status_code == 200, ok.text
        body = ok.json()
        assert body["prediction"] in (0, 1) and abs(sum(body["probabilities"]) - 1) < 1e-5
        bad = httpx.post(f"{url}/predict", json={"x": {**row, "amount": "lots"}}, timeout=10)
        assert bad.status_code == 422
        detail = bad.json()["detail"][0]
        assert detail["loc"][-1] == "amount" and "expected a number" in detail["msg"], detail


def test_the_same_stream_as_avro_is_learned_the_same_way(bootstrap, tmp_path):
    schema = tmp_path / "impression.avsc"
    schema.write_text(json.dumps(AVRO_SCHEMA))
    topic = produce_clicks(bootstrap, tmp_path, "--format", "avro", "--value-schema", str(schema))
    ran = learn(bootstrap, topic, tmp_path, "--format", "avro", "--value-schema", str(schema))
    assert "dead letters 0" in ran.stderr, ran.stderr
    as_json = cli("run", "--bootstrap", bootstrap, "--topic", topic, "--until-idle", "3", "--window", "count:100",
                  "--registry", "none", "--checkpoint-dir", "ckpt-json", "--group", f"j-{topic}", cwd=tmp_path)  # fmt: skip
    # Read as JSON, the Avro bytes are dead letters with the reason -- never a crash -- and a
    # bounded run that dead-letters everything fails loudly (--max-dead-letter-rate).
    assert as_json.returncode == 1 and "Traceback" not in as_json.stderr, as_json.stderr
    assert "bad json" in as_json.stderr and "dead-letter rate 100.0%" in as_json.stderr, as_json.stderr
