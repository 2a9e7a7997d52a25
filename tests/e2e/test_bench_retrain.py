"""bench/retrain.py runs end to end on a small topic (the numbers it prints are not asserted: timings are not tests)."""

from __future__ import annotations

import json
import subprocess
import sys


def test_the_retrain_bench_prints_its_table(tmp_path):
    ran = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.retrain",
            "--events",
            "6000",
            "--epochs",
            "1",
            "--json",
            str(tmp_path / "rows.json"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert ran.returncode == 0, ran.stderr[-3000:]
    for row in (
        "incremental",
        "retrain in process",
        "since the change",
        "retrain torchrun x1 (gloo",
        "retrain torchrun x2 (gloo",
    ):
        assert row in ran.stdout, ran.stdout
    rows = json.loads((tmp_path / "rows.json").read_text())
    # Every model learned the same training range and was scored on the same holdout.
    assert len({r["events"] for r in rows if "since" not in r["model"]}) == 1
    assert all(0.5 < r["holdout"] <= 1.0 for r in rows), rows
