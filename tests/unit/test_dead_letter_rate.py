"""The dead-letter rate alarm: a run that cannot learn most of its records says so, once, and its summary carries it."""

from __future__ import annotations

import io
import logging
import random

import orjson
import pytest

from learners.neural.learner import TorchLearner
from stream.codec.json_codec import CodecConfig, JsonCodec
from stream.core.errors import ConfigError
from stream.core.records import RawRecord
from stream.engine.checkpoint import CheckpointStore
from stream.engine.loop import Engine, EngineConfig
from stream.engine.progress import ProgressPrinter
from stream.engine.rejects import HINT, RejectTracker
from stream.testing.doubles import ListSource
from stream.testing.poison import N_FEATURES, poison_stream
from stream.window.count import CountWindow

LABEL_2 = "bad label: 2 is outside [0, 2)"


# ------------------------------------------------------------------ the tracker
def test_the_rate_is_judged_only_from_the_minimum_record_count_on():
    tracker = RejectTracker(threshold=0.05, min_records=200)
    tracker.observe(1, ["bad json: x"])  # 100% of one record
    assert not tracker.newly_exceeded() and not tracker.verdict().exceeded
    tracker.observe(198)
    assert not tracker.newly_exceeded()  # 199 records: still too few
    tracker.observe(1)
    assert tracker.newly_exceeded() is False  # 1 of 200 = 0.5%: judged, within
    tracker.observe(100, ["bad json: y"] * 20)
    assert tracker.newly_exceeded() is True  # 21 of 300 = 7%
    assert tracker.newly_exceeded() is False  # once per run
    assert tracker.verdict().alarmed


def test_the_threshold_is_strict_and_one_means_off():
    at = RejectTracker(threshold=0.5, min_records=10)
    at.observe(10, ["bad json: a"] * 5)
    assert not at.verdict().exceeded  # 50% is not above 50%
    off = RejectTracker(threshold=1.0, min_records=10)
    off.observe(10, ["bad json: a"] * 10)
    assert not off.newly_exceeded() and off.verdict().rate == 1.0
    strict = RejectTracker(threshold=0.0, min_records=10)
    strict.observe(1000, ["bad json: a"])
    assert strict.newly_exceeded()


def test_top_reasons_are_the_three_most_frequent_full_reasons_with_counts():
    tracker = RejectTracker(min_records=1)
    tracker.observe(
        1000, ["bad label: 4 is outside [0, 2)"] * 7 + ["bad json: a"] * 2 + ["missing label"] * 3
    )
    tracker.add("late: event time behind the closed window", 5)
    verdict = tracker.verdict()
    assert verdict.top_reasons == (
        ("bad label: 4 is outside [0, 2)", 7),
        ("late: event time behind the closed window", 5),
        ("missing label", 3),
    )
    assert verdict.rejected == 17
    assert "'bad label: 4 is outside [0, 2)' x 7" in verdict.describe()


def test_distinct_reasons_are_capped_but_counts_stay_exact():
    tracker = RejectTracker(min_records=1)
    tracker.observe(10_000, [f"bad json: unexpected character at {i}" for i in range(1_000)])
    verdict = tracker.verdict()
    assert verdict.rejected == 1_000
    assert verdict.top_reasons[0] == ("bad json: (other reasons)", 1_000 - 64)
    assert len(tracker._reasons) == 65


def test_engine_config_refuses_a_rate_outside_zero_to_one():
    with pytest.raises(ConfigError, match="between 0 and 1"):
        EngineConfig(max_dead_letter_rate=1.5)
    with pytest.raises(ConfigError, match="dead_letter_min_records"):
        EngineConfig(dead_letter_min_records=0)


# ------------------------------------------------------------------ the engine
def three_class_records(n: int) -> list[RawRecord]:
    """A 3-class stream (labels 0..2, a third each): read with 2 classes, every label 2 is dead-lettered."""
    rng = random.Random(0)
    out = []
    for i in range(n):
        x = [rng.uniform(-1, 1) for _ in range(N_FEATURES)]
        value = orjson.dumps({"id": f"e{i}", "x": x, "y": i % 3})
        out.append(RawRecord("t", 0, i, 1_000 + i, None, value))
    return out


def engine_over(records, tmp_path, *, n_classes=2, on_progress=None, **config) -> Engine:
    return Engine(
        source=ListSource(records, batch_size=100),
        codec=JsonCodec(CodecConfig(n_features=N_FEATURES, n_classes=n_classes)),
        window=CountWindow(100),
        learner_builder=lambda d: TorchLearner(n_features=d, n_classes=n_classes, model="logistic"),
        store=CheckpointStore(tmp_path / "ckpt"),
        config=EngineConfig(until_idle_seconds=0, **config),
        on_progress=on_progress,
    )


def alarms(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "records are not being learned" in r.getMessage()]


def test_a_stream_with_more_classes_than_configured_warns_once_and_the_summary_says_so(tmp_path, caplog):
    out = io.StringIO()
    engine = engine_over(three_class_records(1_200), tmp_path, on_progress=ProgressPrinter(stream=out))
    with caplog.at_level(logging.WARNING, logger="stream.engine.loop"):
        summary = engine.run()
    (warning,) = alarms(caplog)  # as soon as 200 records were read, and only then
    assert (
        "dead-letter rate 33.0% (66 of 200 records)" in warning and "--max-dead-letter-rate 0.05" in warning
    )
    assert f"'{LABEL_2}' x 66" in warning and HINT in warning
    verdict = summary.dead_letter_rate
    assert verdict.exceeded and verdict.alarmed
    assert (verdict.records, verdict.rejected) == (1_200, 400)
    assert verdict.top_reasons == ((LABEL_2, 400),)
    assert summary.events_learned == 800  # the run went on learning the rest
    assert "WARNING dead-letter rate 33.3% > 0.05" in out.getvalue()  # the final progress line


def test_the_same_stream_read_with_its_classes_raises_nothing(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="stream.engine.loop"):
        summary = engine_over(three_class_records(1_200), tmp_path, n_classes=3).run()
    assert not alarms(caplog)
    assert summary.dead_letter_rate.rejected == 0 and not summary.dead_letter_rate.exceeded


def test_a_poison_stream_of_a_few_percent_stays_within_the_default(tmp_path, caplog):
    stream = poison_stream(n_good=2_000, seed=3)  # ~40 bad kinds and 31 repeats among 2,000 good
    records = [RawRecord("t", 0, i, 1_000 + i, r.key, r.value) for i, r in enumerate(stream.records)]
    with caplog.at_level(logging.WARNING, logger="stream.engine.loop"):
        summary = engine_over(records, tmp_path).run()
    verdict = summary.dead_letter_rate
    assert not alarms(caplog) and not verdict.exceeded
    # Repeats of a learned id are not counted: their event was learned.
    assert verdict.rejected == len(stream.bad) - 31 > 0


def test_a_raised_threshold_keeps_the_alarm_quiet(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="stream.engine.loop"):
        summary = engine_over(three_class_records(1_200), tmp_path, max_dead_letter_rate=0.5).run()
    assert not alarms(caplog) and not summary.dead_letter_rate.exceeded
    assert summary.dead_letter_rate.rate == pytest.approx(1 / 3)


# ------------------------------------------------------------------ replay, in process
def test_replay_of_several_configurations_warns_once_and_fails_with_exit_1(tmp_path, caplog):
    from click.testing import CliRunner

    from stream.cli.main import main

    rows = tmp_path / "rows.jsonl"
    rows.write_bytes(b"\n".join(r.value for r in three_class_records(600)) + b"\n")
    (tmp_path / "a.yaml").write_text("name: a\nmodel: logistic\n")
    (tmp_path / "b.yaml").write_text("name: b\nmodel: logistic\nlr: 0.01\n")
    # --classes 2 on a 3-class stream: the mistake the issue describes (without it the classes are inferred).
    args = ["replay", "--file", str(rows), "--classes", "2", "--window", "count:100", "--quiet"]
    args += ["--out", str(tmp_path / "out")]
    configs = ["--config", str(tmp_path / "a.yaml"), "--config", str(tmp_path / "b.yaml")]
    with caplog.at_level(logging.WARNING, logger="stream.engine.loop"):
        result = CliRunner().invoke(main, args + configs)
    assert result.exit_code == 1, result.output
    assert len(alarms(caplog)) == 1  # both engines read the same records: one warning
    assert f"top reason: '{LABEL_2}' x 200" in result.stderr
    assert (tmp_path / "out" / "report.html").exists()
