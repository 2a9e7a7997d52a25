"""Property-based fuzzing of the prediction API: a real `streamlearn serve` on loopback, driven by schemathesis.

schemathesis reads the server's own /openapi.json and sends generated
requests -- valid and deliberately invalid ones -- to every operation,
including the admin ones (with the token, so they get past auth). Whatever
it sends, the server must answer without a 5xx, with a documented status and
a body that fits the documented schema. Explicit cases follow for what a
schema-driven generator does not reach: oversized and chunked bodies, deep
JSON nesting, wrong content types and path tricks in version ids.

The server is one `streamlearn serve` subprocess per module, over a file
registry holding two validated versions; its stderr is checked at the end
for tracebacks, so an exception that was turned into a 4xx or swallowed
still fails the module.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    negative_data_rejection,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from learners.neural.learner import TorchLearner
from serving.registry.file_backend import FileRegistry
from serving.registry.versions import Version

N_FEATURES = 4
TOKEN = "fuzz-admin-token"
MAX_BODY_BYTES = 64 * 1024
SECRET = "streamlearn-fuzz-secret-7f3a"  # written beside the registry; no response may ever contain it
#: Examples per operation in the fuzzing phase; the whole module stays well under a minute on 2 cores.
MAX_EXAMPLES = 40
HTTP_TIMEOUT_S = 60  # generous: a response on a busy machine; a timeout would read as a server failure


@dataclass
class ServedAPI:
    url: str
    registry: Path
    log: Path


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _publish_validated(reg: FileRegistry, seed: int) -> Version:
    learner = TorchLearner(n_features=N_FEATURES, device="cpu", seed=seed)
    X = np.random.default_rng(seed).normal(size=(64, N_FEATURES)).astype(np.float32)
    learner.learn_batch(X, (X[:, 0] > 0).astype(np.int64))
    v = reg.publish(learner.state_dict(), Version(number=0, schema={"n_features": N_FEATURES}))
    return reg.validate(v.number, reason="fuzz fixture")


@pytest.fixture(scope="module")
def served_api(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("fuzz")
    (root / "secret.txt").write_text(SECRET)
    registry = root / "registry"
    reg = FileRegistry(registry)
    for seed in (1, 2):
        _publish_validated(reg, seed)
    port = _free_port()
    log = root / "serve.log"
    env = {
        **os.environ,
        "STREAMLEARN_SERVING_ADMIN_TOKEN": TOKEN,
        "STREAMLEARN_SERVING_MAX_BODY_BYTES": str(MAX_BODY_BYTES),
        "STREAMLEARN_SERVING_POLL_INTERVAL_S": "0.2",
    }
    # stderr to a file, not a pipe: a pipe nobody drains would block the server once full.
    with open(log, "wb") as sink:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "stream.cli",
                "serve",
                "--registry",
                str(registry),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--log-level",
                "warning",
            ],
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180  # generous: a cold interpreter on a busy machine
        while True:
            assert proc.poll() is None, log.read_text()
            try:
                if httpx.get(f"{url}/health/ready", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, f"serve did not become ready:\n{log.read_text()}"
            time.sleep(0.1)
        yield ServedAPI(url, registry, log)
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    text = log.read_text(errors="replace")
    assert "Traceback" not in text and "Exception in ASGI application" not in text, text[-4000:]


def _rows_fit_the_model(node):
    """Pin every array of numbers in the schema (a row) to ``N_FEATURES`` items, in place.

    The served schema cannot know the feature count (a hot swap may change
    it); without this, nearly every generated row has the wrong length, is
    422 before the model runs, and the fuzzer never reaches the forward pass.
    Negative cases still send other lengths, which must be 4xx.
    """
    if isinstance(node, dict):
        if (
            node.get("type") == "array"
            and isinstance(node.get("items"), dict)
            and node["items"].get("type") == "number"
        ):
            node["minItems"] = node["maxItems"] = N_FEATURES
        for value in node.values():
            _rows_fit_the_model(value)
    elif isinstance(node, list):
        for value in node:
            _rows_fit_the_model(value)


@pytest.fixture
def api_schema(served_api: ServedAPI):
    raw = httpx.get(f"{served_api.url}/openapi.json", timeout=HTTP_TIMEOUT_S).json()
    for path in ("/predict", "/predict/batch"):
        _rows_fit_the_model(raw["paths"][path]["post"]["requestBody"])
    loaded = schemathesis.openapi.from_dict(raw)
    loaded.config.update(base_url=served_api.url)
    return loaded


schema = schemathesis.pytest.from_fixture("api_schema")
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
]


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
)
def test_fuzzed_requests_never_get_a_server_error(case, served_api):
    response = case.call_and_validate(
        headers={"Authorization": f"Bearer {TOKEN}"}, checks=CHECKS, timeout=HTTP_TIMEOUT_S
    )
    assert SECRET not in response.text


# ----------------------------------------------------------------- explicit cases
def _predict(
    client: httpx.Client, content, content_type: str | None = "application/json", path: str = "/predict"
) -> httpx.Response:
    headers = {"content-type": content_type} if content_type else {}
    return client.post(path, content=content, headers=headers)


@pytest.fixture
def client(served_api: ServedAPI):
    with httpx.Client(base_url=served_api.url, timeout=HTTP_TIMEOUT_S) as c:
        yield c


def test_a_body_over_the_limit_is_413_before_it_is_read(client):
    row = b"0.5," * (MAX_BODY_BYTES // 4)
    for path in ("/predict", "/predict/batch", "/rollback"):
        declared = _predict(client, b'{"x": [' + row + b"0.5]}", path=path)
        assert declared.status_code == 413, declared.text
        assert f"limit of {MAX_BODY_BYTES} bytes" in declared.json()["detail"]

    def chunks():  # no Content-Length: Transfer-Encoding chunked, counted as it arrives
        yield b'{"rows": ['
        for _ in range(10_000):  # ~40 MB if the server read it all
            yield b"[0.5, 0.5, 0.5, 0.5]," * 200
        yield b"[0.5, 0.5, 0.5, 0.5]]}"

    started = time.monotonic()
    streamed = _predict(client, chunks(), path="/predict/batch")
    assert streamed.status_code == 413 and "larger than the limit" in streamed.json()["detail"]
    assert time.monotonic() - started < 10
    # The server is fine afterwards.
    assert _predict(client, b'{"x": [0.5, 0.5, 0.5, 0.5]}').status_code == 200


def test_deeply_nested_json_is_a_4xx(client):
    for depth in (3000, 100_000):
        nested = b"[" * depth + b"]" * depth
        for path, body in (
            ("/predict", b'{"x": ' + nested + b"}"),
            ("/predict/batch", b'{"rows": ' + nested + b"}"),
            ("/rollback", b'{"reason": ' + nested + b"}"),
        ):
            resp = client.post(
                path,
                content=body,
                headers={"content-type": "application/json", "Authorization": f"Bearer {TOKEN}"},
            )
            assert 400 <= resp.status_code < 500, (path, depth, resp.status_code, resp.text[:200])


@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data",
        "application/xml",
        "application/jsonx",
        "text/json",
    ],
)
def test_a_body_that_is_not_json_is_415(client, content_type):
    for path in ("/predict", "/predict/batch"):
        resp = _predict(client, b'{"x": [0.5, 0.5, 0.5, 0.5]}', content_type=content_type, path=path)
        assert resp.status_code == 415 and "application/json" in resp.json()["detail"], resp.text
    form = client.post("/predict", data={"x": "0.5"})
    assert form.status_code == 415
    files = client.post(
        "/predict", files={"x": ("x.json", b'{"x": [0.5, 0.5, 0.5, 0.5]}', "application/json")}
    )
    assert files.status_code == 415


def test_values_not_finite_in_float32_are_422_in_single_and_batch_predict(client):
    single = _predict(client, b'{"x": [1e39, 0, 0, 0]}')
    assert single.status_code == 422 and "finite in float32" in single.text
    batch = _predict(client, b'{"rows": [[0, 0, 0, 0], [0, -1e39, 0, 0]]}', path="/predict/batch")
    assert batch.status_code == 422 and batch.json()["detail"][0]["loc"][:3] == ["body", "rows", 1]
    for literal in (b"NaN", b"Infinity", b"-Infinity", b"1e400"):
        assert _predict(client, b'{"x": [' + literal + b", 0, 0, 0]}").status_code == 422


@pytest.mark.parametrize(
    "version",
    [
        "..%2f..%2fsecret.txt",
        "%2e%2e%2f%2e%2e%2fsecret.txt",
        "..",
        "%2e%2e",
        "1%00",
        "%00",
        "1%2f..%2f..",
        "9" * 5000,
        "-1",
        "0",
        "1e3",
        "%C2%B9",
        "%D9%A1",
        "%F0%9F%98%80",
        "%25",
        "%2F",
        "1;rm",
        "0x1",
    ],
)
def test_path_tricks_in_version_ids_are_4xx(client, served_api, version):
    before = sorted(p.name for p in served_api.registry.rglob("*"))
    resp = client.post(f"/models/{version}/promote", headers={"Authorization": f"Bearer {TOKEN}"})
    assert 400 <= resp.status_code < 500, (version, resp.status_code, resp.text[:200])
    assert SECRET not in resp.text
    assert sorted(p.name for p in served_api.registry.rglob("*")) == before


def test_raw_path_traversal_is_404(served_api):
    # httpx normalises "..": send the raw request line to be sure the server never sees a cleaned path.
    host, port = served_api.url.removeprefix("http://").split(":")
    for target in (
        "/models/../../secret.txt",
        "/../secret.txt",
        "/models/1/../../../secret.txt",
        "/%2e%2e/%2e%2e/secret.txt",
        "/models/1/promote/../../../../etc/passwd",
    ):
        with socket.create_connection((host, int(port)), timeout=HTTP_TIMEOUT_S) as sock:
            sock.sendall(f"GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
            raw = b""
            while chunk := sock.recv(65536):
                raw += chunk
        status = int(raw.split(b" ", 2)[1])
        assert 400 <= status < 500 and SECRET.encode() not in raw, (target, raw[:200])


def test_non_finite_event_bounds_are_422(client):
    for bound in ("nan", "inf", "-inf", "NaN", "Infinity", "1e400"):
        for name in ("since", "until"):
            resp = client.get("/events", params={name: bound})
            assert resp.status_code == 422 and "finite number of epoch seconds" in resp.text, resp.text
    for bound in ("1e308", "-1e308"):
        assert client.get("/events", params={"since": bound}).status_code == 200
        assert client.get("/events", params={"until": bound}).status_code == 200
