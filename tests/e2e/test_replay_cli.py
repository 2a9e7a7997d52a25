"""``streamlearn run`` and ``streamlearn replay`` as CLI subprocesses over a file.

The in-process backtests are tests/unit/test_replay.py; the Kafka side is
tests/integration/test_replay_services.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace

import numpy as np
import orjson
import pytest

from stream.engine.checkpoint import CheckpointStore
from stream.replay.config import ReplayConfig
from stream.replay.driver import Backtest
from stream.sources.files import FileSource
from stream.sources.produce import synthetic_rows


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "stream.cli", *args], capture_output=True, text=True, timeout=300
    )


@pytest.fixture(scope="module")
def drifting_file(tmp_path_factory):
    """The same file as tests/unit/test_replay.py's: 10,000 Hyperplane rows, a new hyperplane from row 6,000."""
    path = tmp_path_factory.mktemp("data") / "hyperplane.jsonl"
    rows = synthetic_rows("hyperplane", 10_000, seed=7, drift_at=6000, n_features=5)
    path.write_bytes(b"\n".join(orjson.dumps(r) for r in rows) + b"\n")
    return path


def test_the_replayed_learner_is_the_one_streamlearn_run_learns(drifting_file, tmp_path):
    """Same window, learner and seed -> the same final weights: replay is the daemon's code path.

    Rehearsal is off in both: the daemon rehearses only while it is caught up
    (a full poll means it lags), a replay after every batch (deterministic).
    """
    ran = cli(
        "run",
        "--file",
        str(drifting_file),
        "--checkpoint-dir",
        str(tmp_path / "ck"),
        "--window",
        "count:250",
        "--registry",
        "none",
        "--drift-detector",
        "none",
        "--rehearse-steps",
        "0",
        "--quiet",
        "--until-idle",
        "0.5",
    )
    assert ran.returncode == 0, ran.stderr
    default = ReplayConfig.base()
    base = ReplayConfig.base(
        window="count:250",
        drift=default.drift.__class__(detectors=("none",)),
        learner=replace(default.learner, rehearse_steps=0),
    )
    Backtest(FileSource([drifting_file]), [base], str(tmp_path / "out"), progress=False).run()
    live = CheckpointStore(str(tmp_path / "ck")).latest()
    replayed = CheckpointStore(str(tmp_path / "out" / "configs" / "default" / "checkpoints")).latest()
    assert live.counters["events_learned"] == replayed.counters["events_learned"] == 10_000
    live_model, replayed_model = live.learner["model"], replayed.learner["model"]
    assert "net.0.weight" in live_model  # the default mlp
    assert set(live_model) == set(replayed_model)
    for key, tensor in live_model.items():
        np.testing.assert_array_equal(tensor.numpy(), replayed_model[key].numpy(), err_msg=key)


def test_cli_replays_a_row_range_of_a_file_and_writes_the_report(drifting_file, tmp_path):
    (tmp_path / "a.yaml").write_text("name: a\nlr: 0.05\n")
    (tmp_path / "b.yaml").write_text("name: b\nmodel: mlp\nlr: 0.01\nwindow: count:500\n")
    out = tmp_path / "report"
    ran = cli(
        "replay",
        "--file",
        str(drifting_file),
        "--from",
        "1000",
        "--to",
        "5000",
        "--config",
        str(tmp_path / "a.yaml"),
        "--config",
        str(tmp_path / "b.yaml"),
        "--window",
        "count:250",
        "--out",
        str(out),
        "--quiet",
    )
    assert ran.returncode == 0, ran.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["read"]["records"] == 4000
    assert {c["name"]: c["summary"]["batches"] for c in summary["configs"]} == {"a": 16, "b": 8}
    assert (out / "report.html").stat().st_size > 10_000 and (out / "metric.png").exists()
    assert "a " in ran.stdout and "b " in ran.stdout  # the comparison table
    refused = cli("replay", "--file", str(drifting_file), "--from", "-2h", "--out", str(tmp_path / "r2"))
    assert refused.returncode == 2 and "files are replayed by row number" in refused.stderr
