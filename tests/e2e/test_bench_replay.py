"""bench/replay.py runs end to end on a small topic (the numbers it prints are not asserted: timings are not tests)."""

from __future__ import annotations

import subprocess
import sys


def test_the_replay_bench_prints_its_table():
    ran = subprocess.run(
        [sys.executable, "-m", "bench.replay", "--events", "3000"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert ran.returncode == 0, ran.stderr[-3000:]
    for row in (
        "raw kafka-python read",
        "range read",
        "replay x1",
        "replay x3, one read",
        "replay x3, three reads",
        "river progressive_val_score",
    ):
        assert row in ran.stdout, ran.stdout
    assert "faster than three replays" in ran.stdout
