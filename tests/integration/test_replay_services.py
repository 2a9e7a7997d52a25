"""``streamlearn replay`` on the real broker: change points, one read for two configurations, time ranges.

Topics are backdated with ``produce --start-time`` so record timestamps are a
known history (one record every 100 ms or 1 s) and the replay's timestamp
merge across three partitions restores the produced order exactly.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime, timezone

import pytest

from stream.sources.produce import SyntheticStream, produce
from stream.testing.report import page_problems, screenshot

T0 = 1_790_000_000_000  # 2026-09-21T13:33:20Z
WINDOW = 500


def cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "stream.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=os.environ.copy(),
    )


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def replay(bootstrap: str, topic: str, out, *args: str) -> dict:
    ran = cli(
        "replay",
        "--bootstrap",
        bootstrap,
        "--topic",
        topic,
        "--window",
        f"count:{WINDOW}",
        "--out",
        str(out),
        "--quiet",
        *args,
    )
    assert ran.returncode == 0, ran.stderr[-3000:]
    return json.loads((out / "summary.json").read_text())


def test_alarms_fall_near_the_true_change_points(kafka_bootstrap, make_topic, tmp_path, chromium):
    """Hyperplane A -> B at 20,000 -> C at 40,000: an alarm within 3 windows of each change, none elsewhere."""
    topic = make_topic(partitions=3)
    produce(
        kafka_bootstrap,
        topic,
        SyntheticStream(
            n=40_000, generator="hyperplane", seed=42, drift_at=20_000, start_ts_ms=T0, interval_ms=100
        ),
    )
    produce(
        kafka_bootstrap,
        topic,
        SyntheticStream(
            n=20_000, generator="hyperplane", seed=50, start_ts_ms=T0 + 40_000 * 100, interval_ms=100
        ),
    )
    result = replay(kafka_bootstrap, topic, tmp_path / "report")
    assert result["read"]["records"] == result["source"]["records"] == 60_000
    (config,) = result["configs"]
    alarms = [m["event"] for m in config["markers"] if m["kind"] == "alarm"]
    for change in (20_000, 40_000):
        near = [a for a in alarms if change < a <= change + 3 * WINDOW]
        assert near, f"no alarm within 3 windows after the change at {change}: alarms at {alarms}"
    assert all(any(0 < a - c <= 3 * WINDOW for c in (20_000, 40_000)) for a in alarms), alarms
    decisions = [
        m["kind"] for m in config["markers"] if m["kind"] in ("rollback", "adapt", "drift_dismissed")
    ]
    assert "rollback" not in decisions and decisions.count("adapt") >= 1, decisions
    assert config["summary"]["alarms"] == len(alarms)
    # The report a person opens: rendered by a real browser, with its figures.
    image = screenshot(
        chromium, tmp_path / "report" / "report.html", tmp_path / "shot.png", size=(1200, 2400)
    )
    assert page_problems(image, n_configs=1) == []


def test_two_configurations_from_one_read_of_a_time_range_deterministically(
    kafka_bootstrap, make_topic, tmp_path
):
    topic = make_topic(partitions=3)
    produce(
        kafka_bootstrap,
        topic,
        SyntheticStream(n=6_000, generator="sea", seed=3, start_ts_ms=T0, interval_ms=1_000),
    )
    (tmp_path / "a.yaml").write_text("name: logistic\nlr: 0.05\n")
    (tmp_path / "b.yaml").write_text(
        "name: mlp\nmodel: mlp\nmodel_options: {hidden: [32]}\nlr: 0.01\nreplay: reservoir\n"
    )
    args = (
        "--from",
        iso(T0 + 1_000_000),
        "--to",
        iso(T0 + 5_000_000),
        "--config",
        str(tmp_path / "a.yaml"),
        "--config",
        str(tmp_path / "b.yaml"),
    )
    first = replay(kafka_bootstrap, topic, tmp_path / "one", *args)
    # Rows 1000..4999 (timestamps T0 + i s), written round-robin: row i is offset i // 3 of partition i % 3.
    expected = {f"{topic}:{p}": [(1000 - p + 2) // 3, (5000 - p + 2) // 3] for p in range(3)}
    assert first["source"]["partitions"] == expected
    assert first["read"]["records"] == 4_000  # read once ...
    assert [c["summary"]["events"] for c in first["configs"]] == [4_000, 4_000]  # ... learned by both
    logistic, mlp = first["configs"]
    assert logistic["windows"]["accuracy"] != mlp["windows"]["accuracy"]
    assert (
        logistic["windows"]["ts_start"][0] == T0 + 1_000_000
    )  # the first record of the range, in time order
    assert mlp["windows"]["ts_end"][-1] == T0 + 4_999_000
    # Same command, same seed: the same windows, whatever the fetch timing across partitions.
    second = replay(kafka_bootstrap, topic, tmp_path / "two", *args)
    for a, b in zip(first["configs"], second["configs"]):
        assert a["windows"]["accuracy"] == b["windows"]["accuracy"]
        assert a["windows"]["log_loss"] == b["windows"]["log_loss"]
        assert a["markers"] == b["markers"]


@pytest.mark.parametrize(
    "bounds, expected",
    [
        (("--from", "100", "--to", "0:200,1:300"), 100 + 200 + 1_900),  # offsets, per partition
        (("--from", "earliest", "--to", "latest"), 6_000),
    ],
)
def test_offset_bounds(kafka_bootstrap, make_topic, tmp_path, bounds, expected):
    topic = make_topic(partitions=3)
    produce(
        kafka_bootstrap,
        topic,
        SyntheticStream(n=6_000, generator="sea", seed=1, start_ts_ms=T0, interval_ms=1_000),
    )
    result = replay(kafka_bootstrap, topic, tmp_path / "r", *bounds, "--drift-detector", "none")
    assert result["read"]["records"] == expected == result["configs"][0]["summary"]["events"]


def test_a_missing_topic_is_one_line_and_exit_2(kafka_bootstrap, tmp_path):
    ran = cli(
        "replay",
        "--bootstrap",
        kafka_bootstrap,
        "--topic",
        "no-such-topic-here",
        "--out",
        str(tmp_path / "r"),
    )
    assert ran.returncode == 2 and "not found" in ran.stderr and "Traceback" not in ran.stderr
